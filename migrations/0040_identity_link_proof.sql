-- Identity links done safely (issue 28, point 1). A link staff make is PENDING until the login
-- proves it is the customer's: it presents the single-use code staff were given (10 minutes,
-- stored hashed) in the `Identity-Link-Code` header, or carries a verified e-mail or phone claim
-- that matches the customer's record. Only an ACTIVE link makes a login act for its customer.
-- Staff may insert links, never activate one: the staff role has no UPDATE and may insert only
-- the columns of a proposal; activation is core.prove_identity_link, run by the service's login.
-- Every proposal, activation and unlink is on the append-only record audit.identity_link_events
-- (with the principal, the request and the role), and an activation or unlink emits
-- customer_identity_linked or customer_identity_unlinked, addressed to the customer's stored
-- contact. Links made before this migration stay ACTIVE, their proof unknown.

ALTER TABLE core.identity_links
    ADD COLUMN status text NOT NULL DEFAULT 'ACTIVE'
        CONSTRAINT identity_links_status_valid CHECK (status IN ('PENDING', 'ACTIVE')),
    ADD COLUMN proof text
        CONSTRAINT identity_links_proof_valid CHECK (proof IN ('CODE', 'VERIFIED_EMAIL', 'VERIFIED_PHONE')),
    ADD COLUMN code_hash bytea,
    ADD COLUMN code_expires_at timestamptz,
    ADD COLUMN activated_at timestamptz;
ALTER TABLE core.identity_links ALTER COLUMN status SET DEFAULT 'PENDING';

REVOKE INSERT ON core.identity_links FROM lakehouse_staff;
GRANT INSERT (link_id, issuer, subject, customer_id, code_hash, code_expires_at)
    ON core.identity_links TO lakehouse_staff;

CREATE OR REPLACE FUNCTION core.linked_customer(p_issuer text, p_subject text)
RETURNS uuid LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT customer_id FROM core.identity_links
    WHERE issuer = p_issuer AND subject = p_subject AND status = 'ACTIVE'
$$;

-- Activates (issuer, subject)'s pending link if the login proves it: the unexpired code, or a
-- verified e-mail or phone that matches the customer's record. The activation is the login's own
-- act, recorded under its principal. Returns the customer, or NULL.
CREATE FUNCTION core.prove_identity_link(p_issuer text, p_subject text, p_code text,
                                         p_email text, p_phone text)
RETURNS uuid LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pending uuid;
    linked  uuid;
BEGIN
    SELECT l.customer_id INTO pending FROM core.identity_links l
    WHERE l.issuer = p_issuer AND l.subject = p_subject AND l.status = 'PENDING';
    IF pending IS NULL THEN
        RETURN NULL;
    END IF;
    -- The principal as the service writes it (Caller::principal).
    PERFORM set_config('app.actor',
                       p_issuer || '|' || replace(replace(p_subject, '%', '%25'), '|', '%7C')
                       || '|customer|' || pending, true);
    UPDATE core.identity_links l
    SET status = 'ACTIVE', activated_at = now(), code_hash = NULL, code_expires_at = NULL,
        proof = CASE
            WHEN p_code IS NOT NULL AND l.code_expires_at > now()
                 AND l.code_hash = sha256(convert_to(p_code, 'UTF8')) THEN 'CODE'
            WHEN p_email IS NOT NULL AND lower(c.email) = lower(p_email) THEN 'VERIFIED_EMAIL'
            ELSE 'VERIFIED_PHONE' END
    FROM core.customers c
    WHERE l.issuer = p_issuer AND l.subject = p_subject AND l.status = 'PENDING'
      AND c.customer_id = l.customer_id
      AND ((p_code IS NOT NULL AND l.code_expires_at > now()
            AND l.code_hash = sha256(convert_to(p_code, 'UTF8')))
           OR (p_email IS NOT NULL AND lower(c.email) = lower(p_email))
           OR (p_phone IS NOT NULL AND c.phone_number = p_phone))
    RETURNING l.customer_id INTO linked;
    RETURN linked;
END $$;
REVOKE ALL ON FUNCTION core.prove_identity_link(text, text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION core.prove_identity_link(text, text, text, text, text)
    TO lakehouse_authenticator;

CREATE TABLE audit.identity_link_events (
    event_id    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    link_id     uuid        NOT NULL,
    customer_id uuid        NOT NULL,
    issuer      text        NOT NULL,
    subject     text        NOT NULL,
    action      text        NOT NULL CHECK (action IN ('PROPOSED', 'ACTIVATED', 'UNLINKED')),
    proof       text,
    actor       text        NOT NULL,
    request_id  text,
    db_role     text        NOT NULL
        DEFAULT coalesce(nullif(current_setting('role', true), 'none'), session_user::text)
);
CREATE INDEX identity_link_events_customer ON audit.identity_link_events (customer_id, event_id);
REVOKE ALL ON audit.identity_link_events FROM PUBLIC;
GRANT SELECT ON audit.identity_link_events TO lakehouse_admin_api;
CREATE TRIGGER identity_link_events_append_only BEFORE UPDATE OR DELETE
    ON audit.identity_link_events FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER identity_link_events_no_truncate BEFORE TRUNCATE
    ON audit.identity_link_events FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

CREATE FUNCTION audit.record_identity_link() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r      core.identity_links;
    action text;
    topic  text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        r := OLD; action := 'UNLINKED'; topic := 'customer_identity_unlinked';
    ELSIF TG_OP = 'INSERT' AND NEW.status = 'PENDING' THEN
        r := NEW; action := 'PROPOSED';
    ELSIF NEW.status = 'ACTIVE' AND (TG_OP = 'INSERT' OR OLD.status = 'PENDING') THEN
        r := NEW; action := 'ACTIVATED'; topic := 'customer_identity_linked';
    ELSE
        RETURN NULL;
    END IF;
    INSERT INTO audit.identity_link_events (link_id, customer_id, issuer, subject, action, proof,
                                            actor, request_id)
    VALUES (r.link_id, r.customer_id, r.issuer, r.subject, action, r.proof, core.current_actor(),
            nullif(current_setting('app.request_id', true), ''));
    IF topic IS NOT NULL THEN
        INSERT INTO metadata.outbox_events (topic, aggregate_id, customer_id, payload)
        SELECT topic, r.customer_id, r.customer_id,
               jsonb_build_object('customer_id', r.customer_id, 'link_id', r.link_id,
                                  'issuer', r.issuer, 'proof', r.proof,
                                  'notify', jsonb_build_object('email', c.email,
                                                               'phone_number', c.phone_number),
                                  'changed_at', statement_timestamp(),
                                  'actor', core.current_actor())
        FROM core.customers c WHERE c.customer_id = r.customer_id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER identity_links_record AFTER INSERT OR UPDATE OR DELETE ON core.identity_links
    FOR EACH ROW EXECUTE FUNCTION audit.record_identity_link();
