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


-- The loan audit trigger's test of "a column other than the balances changed", column by column:
-- building two JSON documents of the whole row for every update cost each loan update about
-- 43 µs (2,000 updates: 142 ms with it, 56 ms without), on every repayment and servicing batch.
-- tests/api/audit.rs keeps the list equal to the table's columns but the balances'.
DROP TRIGGER loans_audit_update ON core.loans;
CREATE TRIGGER loans_audit_update AFTER UPDATE ON core.loans FOR EACH ROW
    WHEN (ROW(OLD.loan_id, OLD.loan_number, OLD.customer_id, OLD.product_code, OLD.product_type,
          OLD.loan_amount, OLD.interest_rate, OLD.term_months, OLD.status,
          OLD.application_date, OLD.approval_date, OLD.disbursement_date,
          OLD.maturity_date, OLD.collateral_info, OLD.risk_assessment, OLD.created_at,
          OLD.created_by, OLD.approved_by, OLD.rejected_at, OLD.rejected_by,
          OLD.rejection_reason, OLD.disbursed_by, OLD.cancelled_at, OLD.cancelled_by,
          OLD.closed_at, OLD.defaulted_at, OLD.written_off_at, OLD.written_off_by,
          OLD.written_off_amount, OLD.terms_version, OLD.term_periods,
          OLD.first_repayment_date, OLD.branch_id)
          IS DISTINCT FROM
          ROW(NEW.loan_id, NEW.loan_number, NEW.customer_id, NEW.product_code, NEW.product_type,
          NEW.loan_amount, NEW.interest_rate, NEW.term_months, NEW.status,
          NEW.application_date, NEW.approval_date, NEW.disbursement_date,
          NEW.maturity_date, NEW.collateral_info, NEW.risk_assessment, NEW.created_at,
          NEW.created_by, NEW.approved_by, NEW.rejected_at, NEW.rejected_by,
          NEW.rejection_reason, NEW.disbursed_by, NEW.cancelled_at, NEW.cancelled_by,
          NEW.closed_at, NEW.defaulted_at, NEW.written_off_at, NEW.written_off_by,
          NEW.written_off_amount, NEW.terms_version, NEW.term_periods,
          NEW.first_repayment_date, NEW.branch_id))
    EXECUTE FUNCTION audit.record_row('loan', 'loan_id', '{}',
        '{principal_outstanding,interest_outstanding,fees_outstanding,penalties_outstanding,total_paid,recovered_amount,next_due_date,serviced_through,version,updated_at,updated_by}');

-- Servicing's balance updates name their loans' ids and partition keys as lists, and each
-- call is planned for its own lists: the partitions they name are the only ones read, and a
-- large one is probed by its key. Joined to a batch's figures alone, the planner, which cannot
-- see how few rows they are, read every loan of every partition to hash them: 224,000 rows for
-- each batch in the bench's book, about 180 ms a call (measured with auto_explain).
CREATE OR REPLACE FUNCTION core.service_locked(p_date date, p_ids uuid[], p_dates timestamptz[],
                                    OUT interest_entries integer, OUT late_fees integer,
                                    OUT defaulted integer, OUT cured integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    active uuid[];
    arrears_ids uuid[];
    arrears_dates timestamptz[];
    moving_ids uuid[];
    moving_dates timestamptz[];
    replaying boolean := core.replaying();
BEGIN
    -- What each loan needs, from its row as the movements that held it left it: interest falling
    -- due (an active loan with principal left: a loan paid off and charged a fee after owes no
    -- more interest), late fees (its oldest unpaid installment is past the grace days) and
    -- a status move (default past the loan's threshold, cure with no arrears left).
    SELECT coalesce(array_agg(b.loan_id) FILTER (WHERE l.accrues), '{}'),
           coalesce(array_agg(b.loan_id) FILTER (WHERE l.in_arrears), '{}'),
           coalesce(array_agg(b.application_date) FILTER (WHERE l.in_arrears), '{}'),
           coalesce(array_agg(b.loan_id) FILTER (WHERE l.moves), '{}'),
           coalesce(array_agg(b.application_date) FILTER (WHERE l.moves), '{}')
    INTO active, arrears_ids, arrears_dates, moving_ids, moving_dates
    FROM unnest(p_ids, p_dates) AS b(loan_id, application_date)
    CROSS JOIN LATERAL (
        SELECT l.principal_outstanding > 0 AS accrues,
               l.next_due_date + p.grace_days < p_date
                   AND (p.late_fee_amount > 0 OR p.late_fee_rate > 0) AS in_arrears,
               -- next_due_date is the oldest installment not paid in full: with no tolerance
               -- it is where the arrears start, and only a tolerance needs the installments.
               (l.status = 'DISBURSED' AND p_date - l.next_due_date > p.default_after_days
                AND (p.arrears_tolerance = 0
                     OR p_date - core.in_arrears_since(l.loan_id, p_date, p.arrears_tolerance)
                        > p.default_after_days))
               OR (l.status = 'DEFAULTED'
                   AND (l.next_due_date IS NULL OR l.next_due_date > p_date
                        OR (p.arrears_tolerance > 0
                            AND core.in_arrears_since(l.loan_id, p_date, p.arrears_tolerance)
                                IS NULL))) AS moves
        FROM core.loans l
        JOIN core.loan_terms p ON (p.product_code, p.terms_version) = (l.product_code, l.terms_version)
        WHERE l.loan_id = b.loan_id AND l.application_date = b.application_date
          AND l.status IN ('DISBURSED', 'DEFAULTED')
        LIMIT 1) l;

    -- Interest falling due.
    WITH due AS (
        SELECT gen_random_uuid() AS entry_id, i.loan_id, i.customer_id, i.installment_number,
               i.due_date, i.interest_due - i.interest_posted AS amount
        FROM core.loan_installments i
        WHERE i.loan_id = ANY (active) AND i.due_date <= p_date AND i.interest_posted < i.interest_due
    ), entries AS (
        INSERT INTO core.journal_entries (entry_id, loan_id, customer_id, kind, business_date,
                                          installment_number)
        SELECT entry_id, loan_id, customer_id, 'INTEREST_DUE', due_date, installment_number FROM due
    ), lines AS (
        INSERT INTO core.journal_lines (entry_id, line_number, loan_id, customer_id, account, amount)
        SELECT entry_id, v.n, loan_id, customer_id, v.account, v.amount
        FROM due CROSS JOIN LATERAL (VALUES (1, 'LOAN_INTEREST', due.amount),
                                            (2, 'INTEREST_INCOME', -due.amount)) AS v(n, account, amount)
    ), installments AS (
        UPDATE core.loan_installments i SET interest_posted = i.interest_due
        FROM due WHERE i.loan_id = ANY (active)
          AND i.loan_id = due.loan_id AND i.installment_number = due.installment_number
    ), totals AS (
        UPDATE core.loans l SET interest_outstanding = l.interest_outstanding + t.amount,
                                version = l.version + 1, updated_at = now(),
                                updated_by = core.current_actor()
        FROM (SELECT d.loan_id, b.application_date, sum(d.amount) AS amount
              FROM due d JOIN unnest(p_ids, p_dates) AS b(loan_id, application_date) ON b.loan_id = d.loan_id
              GROUP BY d.loan_id, b.application_date) t
        WHERE l.loan_id = ANY (active) AND l.application_date = ANY (p_dates)
          AND l.loan_id = t.loan_id AND l.application_date = t.application_date
    )
    SELECT count(*) INTO interest_entries FROM due;

    -- One late fee per installment past its grace days and not fully paid.
    WITH late AS MATERIALIZED (
        SELECT gen_random_uuid() AS entry_id, i.loan_id, a.application_date, i.customer_id,
               i.installment_number, i.due_date + l.grace_days + 1 AS charged_on,
               l.late_fee_amount + round(l.late_fee_rate * (i.principal_due - i.principal_paid
                                                            + i.interest_due - i.interest_paid),
                                         l.currency_digits) AS amount,
               l.loan_number, l.disbursement_date, l.grace_days, l.arrears_tolerance,
               i.principal_due - i.principal_paid + i.interest_due - i.interest_paid AS shortfall
        FROM unnest(arrears_ids, arrears_dates) AS a(loan_id, application_date)
        CROSS JOIN LATERAL (
            SELECT l.loan_number, l.disbursement_date, p.grace_days, p.late_fee_amount,
                   p.late_fee_rate, p.arrears_tolerance, p.currency_digits
            FROM core.loans l
            JOIN core.loan_terms p ON (p.product_code, p.terms_version) = (l.product_code, l.terms_version)
            WHERE l.loan_id = a.loan_id AND l.application_date = a.application_date
            LIMIT 1) l
        JOIN core.loan_installments i ON i.loan_id = a.loan_id
        WHERE i.due_date + l.grace_days < p_date
          AND i.principal_due - i.principal_paid + i.interest_due - i.interest_paid
              > l.arrears_tolerance
          AND NOT EXISTS (SELECT 1 FROM core.journal_entries e
                          WHERE e.loan_id = i.loan_id AND e.installment_number = i.installment_number
                            AND e.kind = 'LATE_FEE')
    ), charged AS (
        -- Short by more than the tolerance even counting back what the payments received for
        -- the installment (after the previous due date, up to the end of its grace days) paid on
        -- charges instead: no late fee because of an earlier one. Asked only of the few
        -- installments about to be charged.
        SELECT * FROM late
        WHERE amount > 0
          AND shortfall - core.paid_on_charges(loan_id,
                  coalesce((SELECT max(e.due_date) FROM core.loan_installments e
                            WHERE e.loan_id = late.loan_id
                              AND e.installment_number < late.installment_number),
                           core.business_date(disbursement_date) - 1),
                  charged_on - 1)
              > arrears_tolerance
    ), entries AS (
        INSERT INTO core.journal_entries (entry_id, loan_id, customer_id, kind, business_date,
                                          installment_number)
        SELECT entry_id, loan_id, customer_id, 'LATE_FEE', least(charged_on, p_date), installment_number
        FROM charged
    ), lines AS (
        INSERT INTO core.journal_lines (entry_id, line_number, loan_id, customer_id, account, amount)
        SELECT entry_id, v.n, loan_id, customer_id, v.account, v.amount
        FROM charged CROSS JOIN LATERAL (VALUES (1, 'LOAN_PENALTIES', charged.amount),
                                                (2, 'PENALTY_INCOME', -charged.amount)) AS v(n, account, amount)
    ), totals AS (
        UPDATE core.loans l SET penalties_outstanding = l.penalties_outstanding + t.amount,
                                version = l.version + 1, updated_at = now(),
                                updated_by = core.current_actor()
        FROM (SELECT loan_id, application_date, sum(amount) AS amount FROM charged
              GROUP BY loan_id, application_date) t
        WHERE l.loan_id = ANY (arrears_ids) AND l.application_date = ANY (arrears_dates)
          AND l.loan_id = t.loan_id AND l.application_date = t.application_date
    ), events AS (
        INSERT INTO metadata.outbox_events (topic, aggregate_id, payload)
        SELECT 'loan_fee_charged', loan_id,
               jsonb_build_object('loan_id', loan_id, 'loan_number', loan_number,
                                  'customer_id', customer_id, 'kind', 'LATE_FEE',
                                  'installment_number', installment_number,
                                  'amount', amount::text, 'charged_on', least(charged_on, p_date),
                                  'changed_at', statement_timestamp(), 'actor', core.current_actor())
        FROM charged
        WHERE NOT replaying
        RETURNING event_id
    )
    SELECT count(*) INTO late_fees FROM charged;

    defaulted := 0;
    cured := 0;
    IF cardinality(moving_ids) = 0
       OR (NOT replaying
           AND EXISTS (SELECT 1 FROM core.servicing_days d WHERE d.business_date > p_date)) THEN
        RETURN;
    END IF;
    WITH moved AS (
        UPDATE core.loans l
        SET status = CASE l.status WHEN 'DISBURSED' THEN 'DEFAULTED' ELSE 'DISBURSED' END,
            defaulted_at = CASE l.status WHEN 'DISBURSED' THEN now() END,
            version = l.version + 1, updated_at = now(), updated_by = core.current_actor()
        FROM unnest(moving_ids, moving_dates) AS m(loan_id, application_date)
        WHERE l.loan_id = ANY (moving_ids) AND l.application_date = ANY (moving_dates)
          AND l.loan_id = m.loan_id AND l.application_date = m.application_date
        RETURNING l.status AS new_status
    )
    SELECT count(*) FILTER (WHERE new_status = 'DEFAULTED'),
           count(*) FILTER (WHERE new_status = 'DISBURSED')
    INTO defaulted, cured FROM moved;
END $$;

ALTER FUNCTION core.service_locked(date, uuid[], timestamptz[]) SET jit = off;
ALTER FUNCTION core.service_locked(date, uuid[], timestamptz[]) SET plan_cache_mode = force_custom_plan;
