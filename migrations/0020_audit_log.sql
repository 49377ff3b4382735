-- The application audit log: who changed which field of a customer, loan or payment, from what
-- to what, in which request. Personal data (a customer's name, ID number, contact details, date
-- of birth, address) is logged only as "changed", never as a value. Append-only: no role but the
-- owner has UPDATE, DELETE or TRUNCATE on it, and a trigger refuses them to the owner too.
-- Administrators read it.
CREATE SCHEMA audit;

CREATE TABLE audit.changes (
    change_id  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The principal (app.actor), or the database user for changes made outside the API.
    actor      text        NOT NULL,
    request_id text,
    db_role    text        NOT NULL DEFAULT current_user,
    entity     text        NOT NULL CHECK (entity IN ('customer', 'loan', 'payment')),
    entity_id  uuid        NOT NULL,
    operation  text        NOT NULL CHECK (operation IN ('UPDATE', 'DELETE')),
    -- {"field": {"before": …, "after": …}} for each field that changed; a personal field is
    -- {"field": "changed"}.
    changes    jsonb       NOT NULL
);
CREATE INDEX audit_changes_entity ON audit.changes (entity, entity_id, change_id);

REVOKE ALL ON audit.changes FROM PUBLIC;
GRANT USAGE ON SCHEMA audit TO lakehouse_admin_api;
GRANT SELECT ON audit.changes TO lakehouse_admin_api;

CREATE FUNCTION audit.refuse_change()
RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'audit.changes is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER changes_append_only BEFORE UPDATE OR DELETE ON audit.changes
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER changes_no_truncate BEFORE TRUNCATE ON audit.changes
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

-- One statement-level trigger per table and operation: one INSERT … SELECT per statement, so a
-- set-based update (servicing) writes its audit rows set-based too.
-- TG_ARGV: the entity, its key column, and its personal columns.
CREATE FUNCTION audit.record()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    entity   text   := TG_ARGV[0];
    key      text   := TG_ARGV[1];
    personal text[] := TG_ARGV[2]::text[];
BEGIN
    -- Static SQL (rows as jsonb, joined on the key's value), so PL/pgSQL keeps its plans.
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO audit.changes (actor, request_id, entity, entity_id, operation, changes)
        SELECT core.current_actor(), nullif(current_setting('app.request_id', true), ''),
               entity, (n.j ->> key)::uuid, 'UPDATE', d.changes
        FROM (SELECT to_jsonb(r) AS j FROM old_rows r) o
        JOIN (SELECT to_jsonb(r) AS j FROM new_rows r) n ON n.j -> key = o.j -> key
        CROSS JOIN LATERAL (
            SELECT jsonb_object_agg(f.key, CASE WHEN f.key = ANY (personal) THEN to_jsonb('changed'::text)
                                                ELSE jsonb_build_object('before', o.j -> f.key, 'after', f.value)
                                           END) AS changes
            FROM jsonb_each(n.j) f
            WHERE f.key NOT IN ('version', 'updated_at', 'updated_by')
              AND (o.j -> f.key) IS DISTINCT FROM f.value
        ) d
        WHERE d.changes IS NOT NULL;
    ELSE
        INSERT INTO audit.changes (actor, request_id, entity, entity_id, operation, changes)
        SELECT core.current_actor(), nullif(current_setting('app.request_id', true), ''),
               entity, (to_jsonb(r) ->> key)::uuid, 'DELETE', '{}'::jsonb
        FROM old_rows r;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER customers_audit_update AFTER UPDATE ON core.customers
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION audit.record('customer', 'customer_id',
        '{full_name,id_number_ciphertext,id_number_hash,id_number_last4,phone_number,email,date_of_birth,address}');
CREATE TRIGGER customers_audit_delete AFTER DELETE ON core.customers
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    EXECUTE FUNCTION audit.record('customer', 'customer_id', '{}');
CREATE TRIGGER loans_audit_update AFTER UPDATE ON core.loans
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION audit.record('loan', 'loan_id', '{}');
CREATE TRIGGER loans_audit_delete AFTER DELETE ON core.loans
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    EXECUTE FUNCTION audit.record('loan', 'loan_id', '{}');
CREATE TRIGGER payments_audit_update AFTER UPDATE ON core.payments
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION audit.record('payment', 'payment_id', '{}');
CREATE TRIGGER payments_audit_delete AFTER DELETE ON core.payments
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    EXECUTE FUNCTION audit.record('payment', 'payment_id', '{}');
