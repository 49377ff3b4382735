-- The core schema: customers, products, loans (yearly partitions), payments (monthly partitions).
-- Departures from the seed guide, each on purpose:
--   * timestamptz everywhere (the guide's TIMESTAMP loses the offset);
--   * id_number is never stored in clear: AES-256-GCM ciphertext from the service, an HMAC-SHA256
--     hash that carries the uniqueness, and the last four characters for masked display;
--   * every constraint is named, because the service maps errors by constraint name;
--   * loan and payment numbers are unique across all partitions through a small directory table
--     (a partitioned table's own UNIQUE must include the partition key, so the guide's
--     UNIQUE (loan_number, application_date) allowed the same number twice in different years);
--     the directory also gives payments a real foreign key to their loan;
--   * indexes the guide defines twice (a single-column index that is the prefix of a composite
--     one) are created once.

---------------------------------------------------------------------------------------------------
-- Customers
CREATE TABLE core.customers (
    customer_id          uuid        NOT NULL,
    customer_code        text        NOT NULL,
    full_name            text        NOT NULL,
    id_number_ciphertext bytea       NOT NULL,
    id_number_hash       bytea       NOT NULL,
    id_number_last4      text        NOT NULL,
    phone_number         text,
    email                text,
    date_of_birth        date,
    address              jsonb,
    kyc_status           text        NOT NULL DEFAULT 'PENDING',
    kyc_decided_at       timestamptz,
    kyc_decided_by       text,
    kyc_reason           text,
    credit_score         integer,
    version              integer     NOT NULL DEFAULT 1,
    created_at           timestamptz NOT NULL DEFAULT now(),
    created_by           text        NOT NULL DEFAULT core.current_actor(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    updated_by           text        NOT NULL DEFAULT core.current_actor(),
    CONSTRAINT customers_pkey PRIMARY KEY (customer_id),
    CONSTRAINT customers_customer_code_key UNIQUE (customer_code),
    CONSTRAINT customers_id_number_hash_key UNIQUE (id_number_hash),
    CONSTRAINT customers_customer_code_format CHECK (customer_code ~ '^[A-Z0-9][A-Z0-9_-]{2,19}$'),
    CONSTRAINT customers_full_name_length CHECK (char_length(full_name) BETWEEN 1 AND 255),
    CONSTRAINT customers_id_number_hash_length CHECK (octet_length(id_number_hash) = 32),
    CONSTRAINT customers_id_number_last4_format CHECK (id_number_last4 ~ '^[A-Z0-9]{4}$'),
    CONSTRAINT customers_phone_number_format CHECK (phone_number ~ '^\+?[0-9]{8,15}$'),
    CONSTRAINT customers_email_format
        CHECK (char_length(email) <= 255 AND email ~ '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$'),
    CONSTRAINT customers_date_of_birth_range CHECK (date_of_birth >= DATE '1900-01-01'),
    CONSTRAINT customers_address_object CHECK (jsonb_typeof(address) = 'object'),
    CONSTRAINT customers_kyc_status_valid CHECK (kyc_status IN ('PENDING', 'APPROVED', 'REJECTED')),
    CONSTRAINT customers_kyc_decision_complete
        CHECK ((kyc_status = 'PENDING') = (kyc_decided_at IS NULL)),
    CONSTRAINT customers_credit_score_range CHECK (credit_score BETWEEN 300 AND 850),
    CONSTRAINT customers_version_positive CHECK (version > 0)
);

-- Keyset pages filtered by KYC status walk this index in id order.
CREATE INDEX idx_customers_kyc_status ON core.customers (kyc_status, customer_id);
CREATE INDEX idx_customers_created_at ON core.customers (created_at);
CREATE INDEX idx_customers_credit_score ON core.customers (credit_score DESC);
CREATE INDEX idx_customers_address_gin ON core.customers USING GIN (address);

ALTER TABLE core.customers ENABLE ROW LEVEL SECURITY;
CREATE POLICY customers_self ON core.customers FOR SELECT TO lakehouse_app_user
    USING (customer_id = (SELECT core.current_customer_id()));
CREATE POLICY customers_staff ON core.customers FOR ALL TO lakehouse_staff
    USING (true) WITH CHECK (true);
CREATE POLICY customers_etl ON core.customers FOR ALL TO lakehouse_etl_user
    USING (true) WITH CHECK (true);
CREATE POLICY customers_read_only ON core.customers FOR SELECT TO lakehouse_read_only
    USING (true);

GRANT SELECT ON core.customers TO lakehouse_app_user;
GRANT SELECT, INSERT, UPDATE ON core.customers TO lakehouse_staff;
-- Analysts and the ETL pipeline never read the ciphertext: every column but that one.
GRANT SELECT (customer_id, customer_code, full_name, id_number_hash, id_number_last4, phone_number,
              email, date_of_birth, address, kyc_status, kyc_decided_at, kyc_decided_by,
              kyc_reason, credit_score, version, created_at, created_by, updated_at, updated_by)
    ON core.customers TO lakehouse_read_only, lakehouse_etl_user;
GRANT INSERT ON core.customers TO lakehouse_etl_user;

---------------------------------------------------------------------------------------------------
-- Products
CREATE TABLE core.products (
    product_code         text          NOT NULL,
    name                 text          NOT NULL,
    product_type         text          NOT NULL,
    min_amount           numeric(15,2) NOT NULL,
    max_amount           numeric(15,2) NOT NULL,
    min_term_months      integer       NOT NULL,
    max_term_months      integer       NOT NULL,
    annual_interest_rate numeric(5,4)  NOT NULL,
    active               boolean       NOT NULL DEFAULT true,
    version              integer       NOT NULL DEFAULT 1,
    created_at           timestamptz   NOT NULL DEFAULT now(),
    updated_at           timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT products_pkey PRIMARY KEY (product_code),
    CONSTRAINT products_product_code_format CHECK (product_code ~ '^[A-Z0-9][A-Z0-9_-]{1,29}$'),
    CONSTRAINT products_name_length CHECK (char_length(name) BETWEEN 1 AND 200),
    CONSTRAINT products_product_type_format CHECK (product_type ~ '^[A-Z][A-Z_]{1,49}$'),
    CONSTRAINT products_amount_bounds CHECK (min_amount > 0 AND max_amount >= min_amount),
    CONSTRAINT products_term_bounds CHECK (min_term_months >= 1 AND max_term_months >= min_term_months
                                           AND max_term_months <= 600),
    CONSTRAINT products_rate_range CHECK (annual_interest_rate >= 0 AND annual_interest_rate < 1)
);

GRANT SELECT ON core.products TO lakehouse_app_user, lakehouse_read_only, lakehouse_etl_user;
GRANT SELECT, INSERT, UPDATE ON core.products TO lakehouse_staff;

---------------------------------------------------------------------------------------------------
-- Loans, partitioned by year of application_date (UTC years).
CREATE TABLE core.loans (
    loan_id           uuid          NOT NULL,
    loan_number       text          NOT NULL,
    customer_id       uuid          NOT NULL,
    product_code      text,
    product_type      text          NOT NULL,
    loan_amount       numeric(15,2) NOT NULL,
    interest_rate     numeric(5,4)  NOT NULL,
    term_months       integer       NOT NULL,
    status            text          NOT NULL DEFAULT 'APPLIED',
    application_date  timestamptz   NOT NULL DEFAULT now(),
    approval_date     timestamptz,
    disbursement_date timestamptz,
    maturity_date     date,
    collateral_info   jsonb,
    risk_assessment   jsonb,
    version           integer       NOT NULL DEFAULT 1,
    created_at        timestamptz   NOT NULL DEFAULT now(),
    created_by        text          NOT NULL DEFAULT core.current_actor(),
    updated_at        timestamptz   NOT NULL DEFAULT now(),
    updated_by        text          NOT NULL DEFAULT core.current_actor(),
    CONSTRAINT loans_pkey PRIMARY KEY (loan_id, application_date),
    CONSTRAINT loans_loan_number_per_partition_key UNIQUE (loan_number, application_date),
    CONSTRAINT loans_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES core.customers (customer_id),
    CONSTRAINT loans_product_code_fkey FOREIGN KEY (product_code) REFERENCES core.products (product_code),
    CONSTRAINT loans_loan_amount_positive CHECK (loan_amount > 0),
    CONSTRAINT loans_interest_rate_range CHECK (interest_rate >= 0 AND interest_rate < 1),
    CONSTRAINT loans_term_months_range CHECK (term_months BETWEEN 1 AND 600),
    CONSTRAINT loans_status_valid
        CHECK (status IN ('APPLIED', 'APPROVED', 'REJECTED', 'CANCELLED', 'DISBURSED', 'CLOSED', 'DEFAULTED')),
    CONSTRAINT loans_collateral_info_object CHECK (jsonb_typeof(collateral_info) = 'object'),
    CONSTRAINT loans_version_positive CHECK (version > 0)
) PARTITION BY RANGE (application_date);

-- The guide's idx_loans_customer (customer_id) is the prefix of this one and is not created.
CREATE INDEX idx_loans_customer_status_date ON core.loans (customer_id, status, application_date DESC);
CREATE INDEX idx_active_loans ON core.loans (customer_id, loan_amount)
    WHERE status IN ('APPROVED', 'DISBURSED');
CREATE INDEX idx_loans_amount_status ON core.loans (loan_amount DESC, status);

-- One row per loan, unpartitioned: global uniqueness of loan_id and loan_number, the partition key
-- of a loan known only by id or number, and a target for foreign keys from payments.
CREATE TABLE core.loan_directory (
    loan_id          uuid        NOT NULL,
    loan_number      text        NOT NULL,
    customer_id      uuid        NOT NULL,
    application_date timestamptz NOT NULL,
    CONSTRAINT loan_directory_pkey PRIMARY KEY (loan_id),
    CONSTRAINT loan_directory_loan_number_key UNIQUE (loan_number)
);
CREATE INDEX idx_loan_directory_customer ON core.loan_directory (customer_id);

CREATE FUNCTION core.loans_register()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO core.loan_directory (loan_id, loan_number, customer_id, application_date)
    VALUES (NEW.loan_id, NEW.loan_number, NEW.customer_id, NEW.application_date);
    RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION core.loans_register() FROM PUBLIC;

CREATE TRIGGER loans_register AFTER INSERT ON core.loans
    FOR EACH ROW EXECUTE FUNCTION core.loans_register();

-- The directory copies a loan's identity, so that identity never changes.
CREATE FUNCTION core.loans_identity_immutable()
RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.loan_id <> OLD.loan_id OR NEW.loan_number <> OLD.loan_number
       OR NEW.customer_id <> OLD.customer_id OR NEW.application_date <> OLD.application_date THEN
        RAISE EXCEPTION 'a loan''s id, number, customer and application date cannot change'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'loans_identity_immutable';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER loans_identity_immutable BEFORE UPDATE ON core.loans
    FOR EACH ROW EXECUTE FUNCTION core.loans_identity_immutable();

ALTER TABLE core.loans ENABLE ROW LEVEL SECURITY;
CREATE POLICY loans_self_select ON core.loans FOR SELECT TO lakehouse_app_user
    USING (customer_id = (SELECT core.current_customer_id()));
CREATE POLICY loans_self_insert ON core.loans FOR INSERT TO lakehouse_app_user
    WITH CHECK (customer_id = (SELECT core.current_customer_id()));
CREATE POLICY loans_self_update ON core.loans FOR UPDATE TO lakehouse_app_user
    USING (customer_id = (SELECT core.current_customer_id()))
    WITH CHECK (customer_id = (SELECT core.current_customer_id()));
CREATE POLICY loans_staff ON core.loans FOR ALL TO lakehouse_staff USING (true) WITH CHECK (true);
CREATE POLICY loans_read_only ON core.loans FOR SELECT TO lakehouse_read_only USING (true);

GRANT SELECT, INSERT, UPDATE ON core.loans TO lakehouse_app_user, lakehouse_staff;
GRANT SELECT ON core.loans TO lakehouse_read_only;

ALTER TABLE core.loan_directory ENABLE ROW LEVEL SECURITY;
CREATE POLICY loan_directory_self ON core.loan_directory FOR SELECT TO lakehouse_app_user
    USING (customer_id = (SELECT core.current_customer_id()));
CREATE POLICY loan_directory_staff ON core.loan_directory FOR SELECT TO lakehouse_staff USING (true);
CREATE POLICY loan_directory_read_only ON core.loan_directory FOR SELECT TO lakehouse_read_only
    USING (true);
GRANT SELECT ON core.loan_directory TO lakehouse_app_user, lakehouse_staff, lakehouse_read_only;

---------------------------------------------------------------------------------------------------
-- Payments, partitioned by month of payment_date (UTC months).
CREATE TABLE core.payments (
    payment_id     uuid          NOT NULL,
    transaction_id text          NOT NULL,
    loan_id        uuid          NOT NULL,
    customer_id    uuid          NOT NULL,
    payment_type   text          NOT NULL,
    amount         numeric(15,2) NOT NULL,
    payment_method text,
    payment_date   timestamptz   NOT NULL DEFAULT now(),
    due_date       date,
    status         text          NOT NULL DEFAULT 'PENDING',
    channel        text,
    metadata       jsonb,
    version        integer       NOT NULL DEFAULT 1,
    created_at     timestamptz   NOT NULL DEFAULT now(),
    created_by     text          NOT NULL DEFAULT core.current_actor(),
    updated_at     timestamptz   NOT NULL DEFAULT now(),
    updated_by     text          NOT NULL DEFAULT core.current_actor(),
    CONSTRAINT payments_pkey PRIMARY KEY (payment_id, payment_date),
    CONSTRAINT payments_transaction_id_per_partition_key UNIQUE (transaction_id, payment_date),
    CONSTRAINT payments_loan_id_fkey FOREIGN KEY (loan_id) REFERENCES core.loan_directory (loan_id),
    CONSTRAINT payments_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES core.customers (customer_id),
    CONSTRAINT payments_payment_type_valid CHECK (payment_type IN ('DISBURSEMENT', 'REPAYMENT', 'FEE')),
    CONSTRAINT payments_amount_positive CHECK (amount > 0),
    CONSTRAINT payments_status_valid CHECK (status IN ('PENDING', 'COMPLETED', 'FAILED', 'REVERSED')),
    CONSTRAINT payments_channel_valid CHECK (channel IN ('MOBILE_APP', 'BRANCH', 'BANK_TRANSFER', 'SYSTEM')),
    CONSTRAINT payments_metadata_object CHECK (jsonb_typeof(metadata) = 'object'),
    CONSTRAINT payments_version_positive CHECK (version > 0)
) PARTITION BY RANGE (payment_date);

-- The guide's idx_payments_loan (loan_id) is the prefix of the composite index and is not created.
CREATE INDEX idx_payments_loan_date_amount ON core.payments (loan_id, payment_date DESC, amount DESC);
CREATE INDEX idx_payments_customer ON core.payments (customer_id);
CREATE INDEX idx_payments_payment_date ON core.payments (payment_date);
CREATE INDEX idx_payments_status ON core.payments (status);

CREATE TABLE core.payment_directory (
    payment_id     uuid        NOT NULL,
    transaction_id text        NOT NULL,
    customer_id    uuid        NOT NULL,
    payment_date   timestamptz NOT NULL,
    CONSTRAINT payment_directory_pkey PRIMARY KEY (payment_id),
    CONSTRAINT payment_directory_transaction_id_key UNIQUE (transaction_id)
);

CREATE FUNCTION core.payments_register()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO core.payment_directory (payment_id, transaction_id, customer_id, payment_date)
    VALUES (NEW.payment_id, NEW.transaction_id, NEW.customer_id, NEW.payment_date);
    RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION core.payments_register() FROM PUBLIC;

CREATE TRIGGER payments_register AFTER INSERT ON core.payments
    FOR EACH ROW EXECUTE FUNCTION core.payments_register();

CREATE FUNCTION core.payments_identity_immutable()
RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.payment_id <> OLD.payment_id OR NEW.transaction_id <> OLD.transaction_id
       OR NEW.customer_id <> OLD.customer_id OR NEW.payment_date <> OLD.payment_date THEN
        RAISE EXCEPTION 'a payment''s id, transaction id, customer and date cannot change'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_identity_immutable';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER payments_identity_immutable BEFORE UPDATE ON core.payments
    FOR EACH ROW EXECUTE FUNCTION core.payments_identity_immutable();

ALTER TABLE core.payments ENABLE ROW LEVEL SECURITY;
CREATE POLICY payments_self_select ON core.payments FOR SELECT TO lakehouse_app_user
    USING (customer_id = (SELECT core.current_customer_id()));
CREATE POLICY payments_self_insert ON core.payments FOR INSERT TO lakehouse_app_user
    WITH CHECK (customer_id = (SELECT core.current_customer_id()));
CREATE POLICY payments_staff ON core.payments FOR ALL TO lakehouse_staff USING (true) WITH CHECK (true);
CREATE POLICY payments_read_only ON core.payments FOR SELECT TO lakehouse_read_only USING (true);

GRANT SELECT, INSERT ON core.payments TO lakehouse_app_user;
GRANT SELECT, INSERT, UPDATE ON core.payments TO lakehouse_staff;
GRANT SELECT ON core.payments TO lakehouse_read_only;

ALTER TABLE core.payment_directory ENABLE ROW LEVEL SECURITY;
CREATE POLICY payment_directory_self ON core.payment_directory FOR SELECT TO lakehouse_app_user
    USING (customer_id = (SELECT core.current_customer_id()));
CREATE POLICY payment_directory_staff ON core.payment_directory FOR SELECT TO lakehouse_staff
    USING (true);
CREATE POLICY payment_directory_read_only ON core.payment_directory FOR SELECT
    TO lakehouse_read_only USING (true);
GRANT SELECT ON core.payment_directory TO lakehouse_app_user, lakehouse_staff, lakehouse_read_only;

---------------------------------------------------------------------------------------------------
-- Partition upkeep. Both functions are safe to call from many transactions at once: an advisory
-- lock serialises creators, and a second look after the lock sees the winner's table. They run as
-- the owner (SECURITY DEFINER) because the service's roles own nothing and cannot create tables.
CREATE FUNCTION core.ensure_loans_partition(p_at timestamptz)
RETURNS regclass LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    y    integer := extract(year FROM p_at AT TIME ZONE 'UTC')::integer;
    name text    := format('loans_%s', y);
BEGIN
    IF y NOT BETWEEN 1900 AND 2100 THEN
        RAISE EXCEPTION 'application_date % is outside 1900-2100', p_at
            USING ERRCODE = 'datetime_field_overflow';
    END IF;
    IF to_regclass(format('core.%I', name)) IS NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('core.loans partitions'));
        IF to_regclass(format('core.%I', name)) IS NULL THEN
            EXECUTE format('CREATE TABLE core.%I PARTITION OF core.loans FOR VALUES FROM (%L) TO (%L)',
                           name, make_timestamptz(y, 1, 1, 0, 0, 0, 'UTC'),
                           make_timestamptz(y + 1, 1, 1, 0, 0, 0, 'UTC'));
        END IF;
    END IF;
    RETURN to_regclass(format('core.%I', name));
END $$;

CREATE FUNCTION core.ensure_payments_partition(p_at timestamptz)
RETURNS regclass LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    month_start timestamptz := date_trunc('month', p_at, 'UTC');
    y           integer     := extract(year FROM p_at AT TIME ZONE 'UTC')::integer;
    name        text        := format('payments_%s', to_char(p_at AT TIME ZONE 'UTC', 'YYYY_MM'));
BEGIN
    IF y NOT BETWEEN 1900 AND 2100 THEN
        RAISE EXCEPTION 'payment_date % is outside 1900-2100', p_at
            USING ERRCODE = 'datetime_field_overflow';
    END IF;
    IF to_regclass(format('core.%I', name)) IS NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('core.payments partitions'));
        IF to_regclass(format('core.%I', name)) IS NULL THEN
            EXECUTE format('CREATE TABLE core.%I PARTITION OF core.payments FOR VALUES FROM (%L) TO (%L)',
                           name, month_start, month_start + interval '1 month');
        END IF;
    END IF;
    RETURN to_regclass(format('core.%I', name));
END $$;

-- The window kept ready ahead of time: loans for last, this and next year; payments for the last
-- month and the next three. Called by `migrate` and by the service's maintenance task.
CREATE FUNCTION core.ensure_partitions_around(p_at timestamptz)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i integer;
BEGIN
    FOR i IN -1..1 LOOP
        PERFORM core.ensure_loans_partition(p_at + make_interval(years => i));
    END LOOP;
    FOR i IN -1..3 LOOP
        PERFORM core.ensure_payments_partition(date_trunc('month', p_at, 'UTC') + make_interval(months => i));
    END LOOP;
    RETURN 8;
END $$;

REVOKE EXECUTE ON FUNCTION core.ensure_loans_partition(timestamptz),
    core.ensure_payments_partition(timestamptz), core.ensure_partitions_around(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION core.ensure_loans_partition(timestamptz),
    core.ensure_payments_partition(timestamptz)
    TO lakehouse_app_user, lakehouse_staff, lakehouse_etl_user, lakehouse_authenticator;
GRANT EXECUTE ON FUNCTION core.ensure_partitions_around(timestamptz) TO lakehouse_authenticator;
