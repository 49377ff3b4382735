-- An audit row names the role the request ran as (issue 28, point 7). The triggers that write
-- audit.changes are SECURITY DEFINER, so `current_user` there is the tables' owner: every row
-- said the owner did it. The request's role is the `role` setting its transaction set
-- (SET LOCAL ROLE), which a SECURITY DEFINER function does not change; outside the API (no SET
-- ROLE), the session's login.
ALTER TABLE audit.changes
    ALTER COLUMN db_role SET DEFAULT coalesce(nullif(current_setting('role', true), 'none'),
                                              session_user::text);

-- Product changes are audited too: a product's terms are the contract of every loan approved
-- under them. A product is keyed by its code, not a uuid.
ALTER TABLE audit.changes
    DROP CONSTRAINT changes_entity_check,
    ADD CONSTRAINT changes_entity_check CHECK (entity IN ('customer', 'loan', 'payment', 'product')),
    ALTER COLUMN entity_id DROP NOT NULL,
    ADD COLUMN entity_key text,
    ADD CONSTRAINT changes_entity_named CHECK (entity_id IS NOT NULL OR entity_key IS NOT NULL);

CREATE OR REPLACE FUNCTION audit.record_row()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    before   jsonb := to_jsonb(OLD);
    after    jsonb := to_jsonb(NEW);
    personal text[] := TG_ARGV[2]::text[];
    ignored  text[] := TG_ARGV[3]::text[];
    changes  jsonb;
BEGIN
    SELECT jsonb_object_agg(f.key, CASE WHEN f.key = ANY (personal) THEN to_jsonb('changed'::text)
                                        ELSE jsonb_build_object('before', before -> f.key, 'after', f.value) END)
    INTO changes
    FROM jsonb_each(after) f
    WHERE f.key <> ALL (ignored) AND (before -> f.key) IS DISTINCT FROM f.value;
    IF changes IS NOT NULL THEN
        INSERT INTO audit.changes (actor, request_id, entity, entity_id, entity_key, operation,
                                   changes)
        VALUES (core.current_actor(), nullif(current_setting('app.request_id', true), ''),
                TG_ARGV[0],
                CASE WHEN TG_ARGV[0] <> 'product' THEN (after ->> TG_ARGV[1])::uuid END,
                CASE WHEN TG_ARGV[0] = 'product' THEN after ->> TG_ARGV[1] END,
                'UPDATE', changes);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER products_audit_update AFTER UPDATE ON core.products FOR EACH ROW
    EXECUTE FUNCTION audit.record_row('product', 'product_code', '{}', '{version,updated_at}');
