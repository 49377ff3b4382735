-- The analytics side keeps its history and the catalog describes itself.
--
-- Risk indicators are kept by business date (`as_of`): a refresh replaces the day's own, and the
-- days before stay until retention (RISK_INDICATORS_RETENTION_DAYS) takes them.
ALTER TABLE analytics.risk_indicators ADD COLUMN as_of date;
UPDATE analytics.risk_indicators SET as_of = core.business_date(calculated_at);
ALTER TABLE analytics.risk_indicators
    ALTER COLUMN as_of SET NOT NULL,
    ALTER COLUMN as_of SET DEFAULT core.business_date(now());
DROP INDEX analytics.idx_risk_indicators_entity;
CREATE INDEX idx_risk_indicators_entity ON analytics.risk_indicators (entity_type, entity_id, as_of);
DROP INDEX analytics.idx_risk_indicators_level;
CREATE INDEX idx_risk_indicators_day ON analytics.risk_indicators (as_of, indicator_id);
CREATE INDEX idx_risk_indicators_level ON analytics.risk_indicators (as_of, alert_level, indicator_id);

-- Retention learns the loan imports' staged lines and the indicators' history.
CREATE OR REPLACE FUNCTION metadata.purge_batch(p_what text, p_older_than interval, p_limit integer)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    removed bigint;
    cutoff  timestamptz := now() - p_older_than;
BEGIN
    IF p_limit NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'batch size % is not between 1 and 100000', p_limit;
    END IF;
    CASE p_what
    WHEN 'idempotency_keys' THEN
        DELETE FROM core.idempotency_keys k
        USING (SELECT actor, idempotency_key, db_role FROM core.idempotency_keys
               WHERE created_at < now() - greatest(p_older_than, interval '24 hours')
               ORDER BY created_at LIMIT p_limit) old
        WHERE (k.actor, k.idempotency_key, k.db_role) = (old.actor, old.idempotency_key, old.db_role);
    WHEN 'outbox_events' THEN
        DELETE FROM metadata.outbox_events
        WHERE event_id IN (SELECT event_id FROM metadata.outbox_events
                           WHERE created_at < cutoff ORDER BY created_at LIMIT p_limit);
    WHEN 'staging_imports' THEN
        DELETE FROM staging.customer_imports
        WHERE import_id IN (
            SELECT s.import_id FROM staging.customer_imports s
            WHERE s.imported_at < cutoff
              AND NOT EXISTS (SELECT 1 FROM staging.customer_imports u
                              WHERE u.batch_id = s.batch_id
                                AND (NOT u.processed OR u.imported_at >= cutoff))
            ORDER BY s.imported_at LIMIT p_limit);
    WHEN 'loan_imports' THEN
        -- The lines of a batch whose upload is over, none staged since the cutoff.
        DELETE FROM staging.loan_imports
        WHERE (batch_id, line_number) IN (
            SELECT s.batch_id, s.line_number FROM staging.loan_imports s
            WHERE s.staged_at < cutoff
              AND NOT EXISTS (SELECT 1 FROM staging.loan_imports u
                              WHERE u.batch_id = s.batch_id AND u.staged_at >= cutoff)
            ORDER BY s.staged_at LIMIT p_limit);
    WHEN 'risk_indicators' THEN
        DELETE FROM analytics.risk_indicators
        WHERE indicator_id IN (SELECT indicator_id FROM analytics.risk_indicators
                               WHERE as_of < core.business_date(cutoff)
                               ORDER BY as_of LIMIT p_limit);
    WHEN 'job_runs' THEN
        WITH old AS (
            SELECT job_id FROM metadata.job_execution
            WHERE status <> 'RUNNING' AND finished_at < cutoff
            ORDER BY finished_at LIMIT p_limit
        ), lineage AS (
            DELETE FROM metadata.data_lineage d USING old WHERE d.job_id = old.job_id
        )
        DELETE FROM metadata.job_execution j USING old WHERE j.job_id = old.job_id;
    ELSE
        RAISE EXCEPTION 'unknown retention target %', p_what;
    END CASE;
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END
$$;


-- The read-only login (and Trino's, and analysts through it) reads the analytics tables and the
-- catalog, as the security guide says; staff keep their branch policies.
GRANT USAGE ON SCHEMA analytics, metadata TO lakehouse_read_only;
GRANT SELECT ON analytics.customer_metrics, analytics.risk_indicators, metadata.catalog_info
    TO lakehouse_read_only;
CREATE POLICY customer_metrics_read_only ON analytics.customer_metrics FOR SELECT
    TO lakehouse_read_only USING (true);
CREATE POLICY risk_indicators_read_only ON analytics.risk_indicators FOR SELECT
    TO lakehouse_read_only USING (true);

-- The catalog from the catalog: every table of the lakehouse's schemas, its description from
-- its COMMENT, and whether it holds personal data from its columns' comments ("Personal data: …").
COMMENT ON TABLE analytics.customer_metrics IS 'Daily per-customer aggregates of loans and payments';
COMMENT ON TABLE analytics.loan_analytics IS 'Each loan''s balances and days past due, one snapshot per business day';
COMMENT ON TABLE analytics.risk_indicators IS 'Days past due, loan-to-value and concentration indicators with alert levels, kept by business date';
COMMENT ON TABLE audit.changes IS 'Append-only log of changes to customers, loans, payments, products and staff (personal fields named, never valued)';
COMMENT ON TABLE audit.identity_link_events IS 'Append-only log of identity links made, proved and removed';
COMMENT ON TABLE audit.proposal_events IS 'Append-only log of four-eyes proposals and their decisions';
COMMENT ON TABLE core.business_settings IS 'The business''s time zone and phone country code';
COMMENT ON TABLE core.customers IS 'Customer master data; ID numbers encrypted';
COMMENT ON TABLE core.idempotency_keys IS 'Outcomes of keyed requests, kept a day for replays';
COMMENT ON TABLE core.identity_links IS 'Provider logins linked to customers';
COMMENT ON TABLE core.imported_loans IS 'Loans imported from other systems, by source reference';
COMMENT ON TABLE core.journal_entries IS 'Double-entry journal: one entry per money movement';
COMMENT ON TABLE core.journal_lines IS 'Double-entry journal: the lines of each entry, summing to zero';
COMMENT ON TABLE core.loan_directory IS 'Every loan''s id, number, customer and partition key';
COMMENT ON TABLE core.loan_installments IS 'Each loan''s schedule and what is paid and posted of it';
COMMENT ON TABLE core.loan_terms IS 'Every version of every product''s terms, as loans pin them';
COMMENT ON TABLE core.loans IS 'Loan applications and lifecycle, yearly partitions';
COMMENT ON TABLE core.offices IS 'The office tree: head office, regions, branches';
COMMENT ON TABLE core.payment_allocations IS 'Where each repayment went, component by component';
COMMENT ON TABLE core.payment_directory IS 'Every payment''s id, transaction id, customer and partition key';
COMMENT ON TABLE core.payments IS 'Money movements, monthly partitions';
COMMENT ON TABLE core.pii_keys IS 'Which key sealed which ID numbers (key ids, never keys)';
COMMENT ON TABLE core.products IS 'Loan products, their bounds and current terms';
COMMENT ON TABLE core.proposals IS 'Four-eyes proposals awaiting or past a checker';
COMMENT ON TABLE core.schedule_changes IS 'Re-amortisations made by prepayments, kept for their reversal';
COMMENT ON TABLE core.servicing_days IS 'Business days opened and closed by servicing';
COMMENT ON TABLE core.servicing_queue IS 'Loans queued for an opened servicing day';
COMMENT ON TABLE core.staff_members IS 'The staff directory: logins, offices and approval limits';
COMMENT ON TABLE metadata.catalog_info IS 'This catalog: every table, what it holds, whether it holds personal data';
COMMENT ON TABLE metadata.data_lineage IS 'Each job run''s source, target, transformation and row counts';
COMMENT ON TABLE metadata.job_execution IS 'Every job run: start, end, status, counts, error';
COMMENT ON TABLE metadata.outbox_events IS 'Events in commit order for streams and integrations';
COMMENT ON TABLE staging.customer_imports IS 'Customer rows from ETL batches, as sent and as checked';
COMMENT ON TABLE staging.loan_imports IS 'Loan records from ETL batches, with their outcome';

COMMENT ON COLUMN core.customers.full_name IS 'Personal data: the customer''s name';
COMMENT ON COLUMN core.customers.id_number_ciphertext IS 'Personal data: the national ID number, encrypted';
COMMENT ON COLUMN core.customers.id_number_hash IS 'Personal data: a keyed hash of the ID number, for lookups';
COMMENT ON COLUMN core.customers.id_number_last4 IS 'Personal data: the ID number''s last four characters';
COMMENT ON COLUMN core.customers.phone_number IS 'Personal data: the phone number';
COMMENT ON COLUMN core.customers.email IS 'Personal data: the e-mail address';
COMMENT ON COLUMN core.customers.date_of_birth IS 'Personal data: the date of birth';
COMMENT ON COLUMN core.customers.address IS 'Personal data: the postal address';
COMMENT ON COLUMN staging.customer_imports.raw_data IS 'Personal data: the row as sent (its ID number masked)';
COMMENT ON COLUMN staging.customer_imports.full_name IS 'Personal data: the customer''s name';
COMMENT ON COLUMN staging.customer_imports.phone_number IS 'Personal data: the phone number';
COMMENT ON COLUMN staging.customer_imports.email IS 'Personal data: the e-mail address';
COMMENT ON COLUMN staging.customer_imports.date_of_birth IS 'Personal data: the date of birth';
COMMENT ON COLUMN staging.customer_imports.address IS 'Personal data: the postal address';
COMMENT ON COLUMN staging.customer_imports.id_number_ciphertext IS 'Personal data: the national ID number, encrypted';
COMMENT ON COLUMN core.staff_members.display_name IS 'Personal data: the staff member''s name';
COMMENT ON COLUMN core.identity_links.subject IS 'Personal data: a provider''s subject, often an e-mail address';
COMMENT ON COLUMN metadata.outbox_events.payload IS 'Personal data: contact events carry phone numbers and e-mail addresses';

-- Every table of the lakehouse's schemas (not their partitions) gets a row; a row whose table
-- is gone goes. Owner team and refresh cycle are set once, by schema, and kept if edited.
CREATE FUNCTION metadata.refresh_catalog() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    described integer;
BEGIN
    CREATE TEMP TABLE catalog_tables ON COMMIT DROP AS
    SELECT n.nspname::text AS schema_name, c.relname::text AS table_name,
           obj_description(c.oid, 'pg_class') AS description,
           EXISTS (SELECT 1 FROM pg_attribute a
                   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                     AND col_description(c.oid, a.attnum) LIKE 'Personal data:%') AS contains_pii
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname IN ('core', 'analytics', 'metadata', 'staging', 'audit')
      AND c.relkind IN ('r', 'p') AND NOT c.relispartition;
    DELETE FROM metadata.catalog_info ci
    WHERE NOT EXISTS (SELECT 1 FROM catalog_tables t
                      WHERE (t.schema_name, t.table_name) = (ci.schema_name, ci.table_name));
    INSERT INTO metadata.catalog_info AS ci (schema_name, table_name, description, owner_team,
                                             contains_pii, refresh_cycle)
    SELECT t.schema_name, t.table_name, t.description,
           CASE t.schema_name WHEN 'core' THEN 'lending-core' WHEN 'analytics' THEN 'analytics'
                              ELSE 'data-platform' END,
           t.contains_pii,
           CASE t.schema_name WHEN 'core' THEN 'real-time' WHEN 'analytics' THEN 'daily'
                              WHEN 'staging' THEN 'per batch' ELSE 'per run' END
    FROM catalog_tables t
    ON CONFLICT ON CONSTRAINT catalog_info_table_key DO UPDATE
        SET description = EXCLUDED.description, contains_pii = EXCLUDED.contains_pii,
            updated_at = now()
        WHERE (ci.description, ci.contains_pii)
              IS DISTINCT FROM (EXCLUDED.description, EXCLUDED.contains_pii);
    SELECT count(*) INTO described FROM catalog_tables;
    DROP TABLE catalog_tables;
    RETURN described;
END $$;
REVOKE EXECUTE ON FUNCTION metadata.refresh_catalog() FROM PUBLIC;
SELECT metadata.refresh_catalog();

