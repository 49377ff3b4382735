-- The lakehouse side: pre-aggregated analytics, job metadata and lineage, and the ETL staging area.

---------------------------------------------------------------------------------------------------
-- analytics
CREATE TABLE analytics.customer_metrics (
    metric_id           uuid          NOT NULL DEFAULT gen_random_uuid(),
    customer_id         uuid          NOT NULL,
    metric_date         date          NOT NULL,
    total_loans         integer       NOT NULL DEFAULT 0,
    active_loans        integer       NOT NULL DEFAULT 0,
    total_borrowed      numeric(15,2) NOT NULL DEFAULT 0,
    total_repaid        numeric(15,2) NOT NULL DEFAULT 0,
    current_outstanding numeric(15,2) NOT NULL DEFAULT 0,
    days_past_due       integer       NOT NULL DEFAULT 0,
    risk_score          numeric(5,2),
    ltv_ratio           numeric(7,4),
    created_at          timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT customer_metrics_pkey PRIMARY KEY (metric_id),
    CONSTRAINT customer_metrics_customer_date_key UNIQUE (customer_id, metric_date),
    CONSTRAINT customer_metrics_customer_id_fkey FOREIGN KEY (customer_id)
        REFERENCES core.customers (customer_id),
    CONSTRAINT customer_metrics_counts_nonnegative
        CHECK (total_loans >= 0 AND active_loans BETWEEN 0 AND total_loans AND days_past_due >= 0)
);
CREATE INDEX idx_customer_metrics_date ON analytics.customer_metrics (metric_date, customer_id);

ALTER TABLE analytics.customer_metrics ENABLE ROW LEVEL SECURITY;
CREATE POLICY customer_metrics_analyst ON analytics.customer_metrics FOR ALL TO lakehouse_analyst
    USING (true) WITH CHECK (true);
CREATE POLICY customer_metrics_staff ON analytics.customer_metrics FOR SELECT TO lakehouse_staff
    USING (true);
GRANT SELECT, INSERT, UPDATE ON analytics.customer_metrics TO lakehouse_analyst;
GRANT SELECT ON analytics.customer_metrics TO lakehouse_staff;

-- The guide declared its indexes inline (INDEX name (...)), which is MySQL, not PostgreSQL.
CREATE TABLE analytics.risk_indicators (
    indicator_id    uuid          NOT NULL DEFAULT gen_random_uuid(),
    entity_type     text          NOT NULL,
    entity_id       uuid          NOT NULL,
    indicator_type  text          NOT NULL,
    indicator_value numeric(10,4),
    threshold_value numeric(10,4),
    alert_level     text,
    calculated_at   timestamptz   NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    metadata        jsonb,
    CONSTRAINT risk_indicators_pkey PRIMARY KEY (indicator_id),
    CONSTRAINT risk_indicators_entity_type_valid CHECK (entity_type IN ('CUSTOMER', 'LOAN', 'PORTFOLIO')),
    CONSTRAINT risk_indicators_alert_level_valid
        CHECK (alert_level IN ('LOW', 'MEDIUM', 'HIGH', 'CRITICAL')),
    CONSTRAINT risk_indicators_expiry_after_calculation CHECK (expires_at > calculated_at)
);
CREATE INDEX idx_risk_indicators_entity ON analytics.risk_indicators (entity_type, entity_id);
CREATE INDEX idx_risk_indicators_alert_level ON analytics.risk_indicators (alert_level);
CREATE INDEX idx_risk_indicators_calculated_at ON analytics.risk_indicators (calculated_at);

GRANT SELECT, INSERT, UPDATE, DELETE ON analytics.risk_indicators TO lakehouse_analyst;
GRANT SELECT ON analytics.risk_indicators TO lakehouse_staff;

---------------------------------------------------------------------------------------------------
-- metadata
CREATE TABLE metadata.data_lineage (
    lineage_id           uuid         NOT NULL DEFAULT gen_random_uuid(),
    source_system        text         NOT NULL,
    source_table         text         NOT NULL,
    target_system        text         NOT NULL,
    target_table         text         NOT NULL,
    transformation_type  text,
    transformation_logic text,
    pipeline_id          text,
    job_id               uuid,
    execution_timestamp  timestamptz  NOT NULL DEFAULT now(),
    record_count         bigint,
    success_flag         boolean      NOT NULL DEFAULT true,
    error_message        text,
    created_at           timestamptz  NOT NULL DEFAULT now(),
    CONSTRAINT data_lineage_pkey PRIMARY KEY (lineage_id),
    CONSTRAINT data_lineage_record_count_nonnegative CHECK (record_count >= 0)
);
CREATE INDEX idx_data_lineage_target ON metadata.data_lineage (target_table, execution_timestamp DESC);
CREATE INDEX idx_data_lineage_job ON metadata.data_lineage (job_id);

CREATE TABLE metadata.job_execution (
    job_id            uuid        NOT NULL DEFAULT gen_random_uuid(),
    job_name          text        NOT NULL,
    status            text        NOT NULL DEFAULT 'RUNNING',
    parameters        jsonb,
    started_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    records_read      bigint,
    records_written   bigint,
    records_failed    bigint,
    error_message     text,
    triggered_by      text        NOT NULL DEFAULT core.current_actor(),
    CONSTRAINT job_execution_pkey PRIMARY KEY (job_id),
    CONSTRAINT job_execution_status_valid CHECK (status IN ('RUNNING', 'SUCCEEDED', 'FAILED')),
    CONSTRAINT job_execution_finished_when_done
        CHECK ((status = 'RUNNING') = (finished_at IS NULL)),
    CONSTRAINT job_execution_counts_nonnegative
        CHECK (records_read >= 0 AND records_written >= 0 AND records_failed >= 0)
);
CREATE INDEX idx_job_execution_name_started ON metadata.job_execution (job_name, started_at DESC);

CREATE TABLE metadata.catalog_info (
    catalog_id    uuid        NOT NULL DEFAULT gen_random_uuid(),
    schema_name   text        NOT NULL,
    table_name    text        NOT NULL,
    description   text,
    owner_team    text,
    contains_pii  boolean     NOT NULL DEFAULT false,
    refresh_cycle text,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT catalog_info_pkey PRIMARY KEY (catalog_id),
    CONSTRAINT catalog_info_table_key UNIQUE (schema_name, table_name)
);

INSERT INTO metadata.catalog_info (schema_name, table_name, description, owner_team, contains_pii, refresh_cycle)
VALUES
    ('core', 'customers', 'Customer master data; ID numbers encrypted', 'lending-core', true, 'real-time'),
    ('core', 'products', 'Loan products and their bounds', 'lending-core', false, 'real-time'),
    ('core', 'loans', 'Loan applications and lifecycle, yearly partitions', 'lending-core', false, 'real-time'),
    ('core', 'payments', 'Money movements, monthly partitions', 'lending-core', false, 'real-time'),
    ('analytics', 'customer_metrics', 'Daily per-customer aggregates', 'analytics', false, 'daily'),
    ('analytics', 'risk_indicators', 'Risk indicators with alert levels', 'analytics', false, 'daily'),
    ('staging', 'customer_imports', 'Raw customer rows from ETL batches', 'data-platform', true, 'per batch')
ON CONFLICT ON CONSTRAINT catalog_info_table_key DO NOTHING;

GRANT SELECT, INSERT, UPDATE ON metadata.data_lineage, metadata.job_execution
    TO lakehouse_analyst, lakehouse_etl_user;
GRANT SELECT ON metadata.catalog_info TO lakehouse_analyst, lakehouse_etl_user;

---------------------------------------------------------------------------------------------------
-- staging
CREATE TABLE staging.customer_imports (
    import_id     uuid        NOT NULL DEFAULT gen_random_uuid(),
    batch_id      text        NOT NULL,
    line_number   integer     NOT NULL,
    source_system text,
    raw_data      jsonb       NOT NULL,
    processed     boolean     NOT NULL DEFAULT false,
    customer_id   uuid,
    error_message text,
    imported_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT customer_imports_pkey PRIMARY KEY (import_id),
    -- Re-submitting a batch cannot stage a row twice.
    CONSTRAINT customer_imports_batch_line_key UNIQUE (batch_id, line_number),
    CONSTRAINT customer_imports_batch_id_format CHECK (batch_id ~ '^[A-Za-z0-9._-]{1,50}$')
);
CREATE INDEX idx_customer_imports_unprocessed ON staging.customer_imports (batch_id)
    WHERE NOT processed;

GRANT SELECT, INSERT, UPDATE ON staging.customer_imports TO lakehouse_etl_user;
