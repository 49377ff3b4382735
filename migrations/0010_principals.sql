-- The caller's principal: (issuer, subject, role, customer id), written once as text,
--     issuer|subject|role            e.g. local|local-staff|staff
--     issuer|subject|role|customer   e.g. local|customer-0193…|customer|0193…
-- The service sets it as app.actor; the *_by columns record it and idempotency keys are scoped
-- to it. Subjects and issuers never contain '|' (the service refuses tokens whose do), so the
-- text names exactly one principal. A value without '|' is a database user writing directly
-- (the seed, the lab data): core.current_actor() falls back to session_user.
--
-- Values written before principals existed were bare token subjects, with neither issuer nor
-- role. Every token then was signed with JWT_SECRET, so they become 'local|<subject>': two parts,
-- which no principal written from now on has. The ETL role's customers policy matches them
-- through core.current_legacy_actor() (issuer|subject of the caller), so every ETL caller sees
-- exactly the customers it saw before, plus the ones its principal creates from now on.

CREATE FUNCTION core.current_legacy_actor()
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN a LIKE '%|%|%' THEN split_part(a, '|', 1) || '|' || split_part(a, '|', 2) END
    FROM (SELECT current_setting('app.actor', true) AS a) s
$$;

-- A bare value is a legacy subject unless it names a database role (the session_user fallback).
CREATE FUNCTION pg_temp.legacy(value text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN value IS NULL OR value LIKE '%|%' OR EXISTS (SELECT 1 FROM pg_roles WHERE rolname = value)
            THEN value
        ELSE 'local|' || value
    END
$$;

UPDATE core.customers SET created_by = pg_temp.legacy(created_by),
                          updated_by = pg_temp.legacy(updated_by),
                          kyc_decided_by = pg_temp.legacy(kyc_decided_by);
UPDATE core.loans SET created_by = pg_temp.legacy(created_by),
                      updated_by = pg_temp.legacy(updated_by),
                      approved_by = pg_temp.legacy(approved_by),
                      rejected_by = pg_temp.legacy(rejected_by),
                      disbursed_by = pg_temp.legacy(disbursed_by),
                      cancelled_by = pg_temp.legacy(cancelled_by);
UPDATE core.payments SET created_by = pg_temp.legacy(created_by),
                         updated_by = pg_temp.legacy(updated_by),
                         status_changed_by = pg_temp.legacy(status_changed_by);
UPDATE metadata.job_execution SET triggered_by = pg_temp.legacy(triggered_by);

DROP POLICY customers_etl_select ON core.customers;
CREATE POLICY customers_etl_select ON core.customers FOR SELECT TO lakehouse_etl_user
    USING (created_by = core.current_actor() OR created_by = core.current_legacy_actor());

-- Idempotency keys: the actor column now holds the whole principal, so a key is scoped to
-- (issuer, subject, role, customer). Keys of the old scheme are kept 24 hours at most; those
-- of staff map to their principal directly, a customer's through the customer its stored
-- response names. A customer key whose customer cannot be told (an error response, or one
-- still in flight) is dropped: under the old scope it could not be attributed safely.
UPDATE core.idempotency_keys k
SET actor = 'local|' || k.actor || '|' || CASE k.db_role
        WHEN 'lakehouse_staff' THEN 'staff'
        WHEN 'lakehouse_admin_api' THEN 'admin'
        WHEN 'lakehouse_app_user' THEN 'customer|' || (convert_from(k.response_body, 'UTF8')::jsonb ->> 'customer_id')
    END
WHERE k.actor NOT LIKE '%|%'
  AND k.db_role IN ('lakehouse_staff', 'lakehouse_admin_api', 'lakehouse_app_user')
  AND (k.db_role <> 'lakehouse_app_user'
       OR (k.response_status BETWEEN 200 AND 299
           AND convert_from(k.response_body, 'UTF8')::jsonb ->> 'customer_id' IS NOT NULL));
DELETE FROM core.idempotency_keys WHERE actor NOT LIKE '%|%';
