-- The lake export (crates/exporter): each exported table records which transaction wrote each
-- row version, the export keeps its position and its running control totals, and the Iceberg
-- SQL catalog lives here, so a run commits its tables, its position and its totals at once.
--
-- Position: `xact_id` is the writing transaction's id (xid8, never wraps). A run exports the row
-- versions written by transactions below the horizon `pg_snapshot_xmin(pg_current_snapshot())`
-- and at or above the last run's horizon. Every transaction below a horizon has finished, so a
-- late commit lands above the previous horizon and is exported by the next run: no gap, and no
-- version twice. (entry_number would skip late commits: it is drawn at insert.)
-- Rows written before this migration have no xact_id; the first run takes them.
--
-- Columns are added without a default and given one after, so existing rows are not rewritten.
ALTER TABLE core.journal_entries ADD COLUMN xact_id xid8;
ALTER TABLE core.journal_entries ALTER COLUMN xact_id SET DEFAULT pg_current_xact_id();
CREATE INDEX idx_journal_entries_xact ON core.journal_entries (xact_id);

ALTER TABLE core.loans ADD COLUMN xact_id xid8;
ALTER TABLE core.loans ALTER COLUMN xact_id SET DEFAULT pg_current_xact_id();
ALTER TABLE core.loan_installments ADD COLUMN xact_id xid8;
ALTER TABLE core.loan_installments ALTER COLUMN xact_id SET DEFAULT pg_current_xact_id();
ALTER TABLE core.payments ADD COLUMN xact_id xid8;
ALTER TABLE core.payments ALTER COLUMN xact_id SET DEFAULT pg_current_xact_id();

-- Updates restamp the version. No index on these: an index on a column every update changes
-- would end the heap-only updates that keep repayments and servicing cheap; the export scans
-- them whole (seconds at the bench volume).
CREATE FUNCTION core.stamp_xact() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.xact_id := pg_current_xact_id();
    RETURN NEW;
END
$$;
CREATE TRIGGER stamp_xact BEFORE UPDATE ON core.loans
    FOR EACH ROW EXECUTE FUNCTION core.stamp_xact();
CREATE TRIGGER stamp_xact BEFORE UPDATE ON core.loan_installments
    FOR EACH ROW EXECUTE FUNCTION core.stamp_xact();
CREATE TRIGGER stamp_xact BEFORE UPDATE ON core.payments
    FOR EACH ROW EXECUTE FUNCTION core.stamp_xact();

-- The audit log records what people changed, not the version stamp.
DROP TRIGGER payments_audit_update ON core.payments;
CREATE TRIGGER payments_audit_update AFTER UPDATE ON core.payments FOR EACH ROW
    EXECUTE FUNCTION audit.record_row('payment', 'payment_id', '{}', '{version,updated_at,updated_by,xact_id}');
DROP TRIGGER loans_audit_update ON core.loans;
CREATE TRIGGER loans_audit_update AFTER UPDATE ON core.loans FOR EACH ROW
    WHEN (old.loan_id IS DISTINCT FROM new.loan_id OR old.loan_number IS DISTINCT FROM new.loan_number
       OR old.customer_id IS DISTINCT FROM new.customer_id OR old.product_code IS DISTINCT FROM new.product_code
       OR old.product_type IS DISTINCT FROM new.product_type OR old.loan_amount IS DISTINCT FROM new.loan_amount
       OR old.interest_rate IS DISTINCT FROM new.interest_rate OR old.term_months IS DISTINCT FROM new.term_months
       OR old.status IS DISTINCT FROM new.status OR old.application_date IS DISTINCT FROM new.application_date
       OR old.approval_date IS DISTINCT FROM new.approval_date
       OR old.disbursement_date IS DISTINCT FROM new.disbursement_date
       OR old.maturity_date IS DISTINCT FROM new.maturity_date
       OR old.collateral_info IS DISTINCT FROM new.collateral_info
       OR old.risk_assessment IS DISTINCT FROM new.risk_assessment
       OR old.created_at IS DISTINCT FROM new.created_at OR old.created_by IS DISTINCT FROM new.created_by
       OR old.approved_by IS DISTINCT FROM new.approved_by OR old.rejected_at IS DISTINCT FROM new.rejected_at
       OR old.rejected_by IS DISTINCT FROM new.rejected_by
       OR old.rejection_reason IS DISTINCT FROM new.rejection_reason
       OR old.disbursed_by IS DISTINCT FROM new.disbursed_by OR old.cancelled_at IS DISTINCT FROM new.cancelled_at
       OR old.cancelled_by IS DISTINCT FROM new.cancelled_by OR old.closed_at IS DISTINCT FROM new.closed_at
       OR old.defaulted_at IS DISTINCT FROM new.defaulted_at
       OR old.written_off_at IS DISTINCT FROM new.written_off_at
       OR old.written_off_by IS DISTINCT FROM new.written_off_by
       OR old.written_off_amount IS DISTINCT FROM new.written_off_amount
       OR old.terms_version IS DISTINCT FROM new.terms_version OR old.term_periods IS DISTINCT FROM new.term_periods
       OR old.first_repayment_date IS DISTINCT FROM new.first_repayment_date
       OR old.branch_id IS DISTINCT FROM new.branch_id)
    EXECUTE FUNCTION audit.record_row('loan', 'loan_id', '{}', '{principal_outstanding,interest_outstanding,fees_outstanding,penalties_outstanding,total_paid,recovered_amount,next_due_date,serviced_through,version,updated_at,updated_by,xact_id}');

-- Apache Iceberg's SQL catalog, as pyiceberg's SqlCatalog, Iceberg's JdbcCatalog and Trino's
-- `jdbc` catalog read it (the JdbcCatalog's v1 layout, with iceberg_type).
CREATE TABLE metadata.iceberg_tables (
    catalog_name               varchar(255) NOT NULL,
    table_namespace            varchar(255) NOT NULL,
    table_name                 varchar(255) NOT NULL,
    metadata_location          varchar(1000),
    previous_metadata_location varchar(1000),
    iceberg_type               varchar(5) DEFAULT 'TABLE',
    PRIMARY KEY (catalog_name, table_namespace, table_name)
);
COMMENT ON TABLE metadata.iceberg_tables IS 'Iceberg SQL catalog: where each lake table''s current metadata file is';
CREATE TABLE metadata.iceberg_namespace_properties (
    catalog_name   varchar(255) NOT NULL,
    namespace      varchar(255) NOT NULL,
    property_key   varchar(255) NOT NULL,
    property_value varchar(1000),
    PRIMARY KEY (catalog_name, namespace, property_key)
);
COMMENT ON TABLE metadata.iceberg_namespace_properties IS 'Iceberg SQL catalog: the lake''s namespaces';

-- One row per lake (warehouse): the horizon the last committed run exported up to.
CREATE TABLE metadata.lake_exports (
    catalog_name varchar(255) PRIMARY KEY,
    warehouse    text NOT NULL,
    position     xid8 NOT NULL,
    exported_at  timestamptz NOT NULL DEFAULT now(),
    job_id       uuid NOT NULL
);
COMMENT ON TABLE metadata.lake_exports IS 'Each lake''s export position: the transaction horizon its last run reached';

-- What the lake holds, summed per account and business date: each run adds its lines and checks
-- the running totals against the trial balance of every business date before it commits.
CREATE TABLE metadata.lake_account_totals (
    catalog_name  varchar(255) NOT NULL REFERENCES metadata.lake_exports,
    account       text NOT NULL,
    business_date date NOT NULL,
    amount        numeric(17,2) NOT NULL,
    PRIMARY KEY (catalog_name, account, business_date)
);
COMMENT ON TABLE metadata.lake_account_totals IS 'Journal lines in each lake, summed per account and business date (the export''s control totals)';

-- Readers of the lake (Trino, pyiceberg) find the tables through the read-only login.
GRANT SELECT ON metadata.iceberg_tables, metadata.iceberg_namespace_properties,
    metadata.lake_exports, metadata.lake_account_totals TO lakehouse_read_only;
