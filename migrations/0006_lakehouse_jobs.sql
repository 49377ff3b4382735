-- The lakehouse side: staged imports that never hold an ID number in clear, job bookkeeping, and
-- a read-only login for Trino.

-- Staged rows carry the ID number as the API stores it (ciphertext, keyed hash, last four) and
-- their raw JSON with the ID number masked, so the clear value never reaches the database.
ALTER TABLE staging.customer_imports
    ADD COLUMN job_id               uuid,
    ADD COLUMN customer_code        text,
    ADD COLUMN full_name            text,
    ADD COLUMN id_number_ciphertext bytea,
    ADD COLUMN id_number_hash       bytea,
    ADD COLUMN id_number_last4      text,
    ADD COLUMN phone_number         text,
    ADD COLUMN email                text,
    ADD COLUMN date_of_birth        date,
    ADD COLUMN address              jsonb,
    ADD COLUMN credit_score         integer,
    ADD CONSTRAINT customer_imports_valid_or_error CHECK (
        error_message IS NOT NULL
        OR (customer_id IS NOT NULL AND customer_code IS NOT NULL AND full_name IS NOT NULL
            AND id_number_ciphertext IS NOT NULL AND id_number_hash IS NOT NULL));

ALTER TABLE staging.customer_imports ENABLE ROW LEVEL SECURITY;
CREATE POLICY customer_imports_etl ON staging.customer_imports FOR ALL TO lakehouse_etl_user
    USING (true) WITH CHECK (true);

-- After an import's INSERT … ON CONFLICT DO NOTHING, the rows that were not inserted clashed
-- with an existing customer. The ETL role sees only the customers it created, so this runs as
-- the owner and says which key clashed, revealing nothing else.
CREATE FUNCTION staging.explain_import_conflicts(p_batch text)
RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH explained AS (
        UPDATE staging.customer_imports s
        SET error_message = CASE
                WHEN EXISTS (SELECT 1 FROM core.customers c WHERE c.customer_code = s.customer_code)
                    THEN 'duplicate customer_code: ' || s.customer_code || ' is already registered'
                ELSE 'duplicate id_number: a customer with this ID number is already registered'
            END
        WHERE s.batch_id = p_batch AND NOT s.processed AND s.error_message IS NULL
        RETURNING 1
    )
    SELECT count(*) FROM explained
$$;
REVOKE EXECUTE ON FUNCTION staging.explain_import_conflicts(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION staging.explain_import_conflicts(text) TO lakehouse_etl_user;

-- Jobs are read by analysts and administrators; analysts and ETL write their own runs.
GRANT USAGE ON SCHEMA metadata TO lakehouse_read_only;
GRANT SELECT ON metadata.job_execution, metadata.data_lineage TO lakehouse_read_only;

-- Metrics need the loans' balance columns and payments; risk indicators are replaced per run.
CREATE INDEX idx_customer_metrics_customer ON analytics.customer_metrics (customer_id, metric_date);
CREATE INDEX idx_risk_indicators_level ON analytics.risk_indicators (alert_level, indicator_id);

-- Trino's catalog logs in as this role: read-only, RLS applies (read_only sees every row but not
-- the ID-number ciphertext). `lakehouse-api migrate` gives it LOGIN when TRINO_DB_PASSWORD is set.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'lakehouse_trino') THEN
        CREATE ROLE lakehouse_trino NOLOGIN INHERIT NOBYPASSRLS;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;
DO $$
BEGIN
    IF NOT pg_catalog.pg_has_role('lakehouse_trino', 'lakehouse_read_only', 'MEMBER') THEN
        GRANT lakehouse_read_only TO lakehouse_trino;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation OR internal_error THEN
    NULL;
END $$;
