-- Payments: balances on the loan, the materialised schedule, allocations, idempotency keys.

ALTER TABLE core.loans
    ADD COLUMN principal_outstanding numeric(15,2),
    ADD COLUMN interest_outstanding  numeric(15,2),
    ADD COLUMN fees_outstanding      numeric(15,2) NOT NULL DEFAULT 0,
    ADD COLUMN total_paid            numeric(15,2) NOT NULL DEFAULT 0,
    ADD COLUMN next_due_date         date,
    ADD CONSTRAINT loans_balances_nonnegative CHECK (
        principal_outstanding >= 0 AND interest_outstanding >= 0
        AND fees_outstanding >= 0 AND total_paid >= 0);

ALTER TABLE core.payments
    ADD COLUMN status_changed_at timestamptz,
    ADD COLUMN status_changed_by text,
    ADD COLUMN status_reason     text;

-- A payment list over a date range, newest first, prunes to the months it covers.
CREATE INDEX idx_payments_date_id ON core.payments (payment_date DESC, payment_id DESC);

-- The repayment schedule of a disbursed loan, with what has been paid against each installment.
CREATE TABLE core.loan_installments (
    loan_id            uuid          NOT NULL,
    customer_id        uuid          NOT NULL,
    installment_number integer       NOT NULL,
    due_date           date          NOT NULL,
    principal_due      numeric(15,2) NOT NULL,
    interest_due       numeric(15,2) NOT NULL,
    principal_paid     numeric(15,2) NOT NULL DEFAULT 0,
    interest_paid      numeric(15,2) NOT NULL DEFAULT 0,
    CONSTRAINT loan_installments_pkey PRIMARY KEY (loan_id, installment_number),
    CONSTRAINT loan_installments_loan_id_fkey FOREIGN KEY (loan_id)
        REFERENCES core.loan_directory (loan_id),
    CONSTRAINT loan_installments_principal_paid_range CHECK (principal_paid BETWEEN 0 AND principal_due),
    CONSTRAINT loan_installments_interest_paid_range CHECK (interest_paid BETWEEN 0 AND interest_due),
    CONSTRAINT loan_installments_amounts_nonnegative CHECK (principal_due >= 0 AND interest_due >= 0)
);

ALTER TABLE core.loan_installments ENABLE ROW LEVEL SECURITY;
CREATE POLICY loan_installments_self ON core.loan_installments FOR SELECT TO lakehouse_app_user
    USING (customer_id = (SELECT core.current_customer_id()));
CREATE POLICY loan_installments_staff ON core.loan_installments FOR ALL TO lakehouse_staff
    USING (true) WITH CHECK (true);
CREATE POLICY loan_installments_read_only ON core.loan_installments FOR SELECT TO lakehouse_read_only
    USING (true);
GRANT SELECT ON core.loan_installments TO lakehouse_app_user, lakehouse_read_only;
GRANT SELECT, INSERT, UPDATE ON core.loan_installments TO lakehouse_staff;

-- Where each completed repayment went: fees, then each installment's interest, then principal.
-- A reversal stamps reversed_at on the payment's rows and gives the amounts back.
CREATE TABLE core.payment_allocations (
    allocation_id      bigint        GENERATED ALWAYS AS IDENTITY,
    payment_id         uuid          NOT NULL,
    loan_id            uuid          NOT NULL,
    customer_id        uuid          NOT NULL,
    installment_number integer,
    component          text          NOT NULL,
    amount             numeric(15,2) NOT NULL,
    created_at         timestamptz   NOT NULL DEFAULT now(),
    reversed_at        timestamptz,
    CONSTRAINT payment_allocations_pkey PRIMARY KEY (allocation_id),
    CONSTRAINT payment_allocations_payment_id_fkey FOREIGN KEY (payment_id)
        REFERENCES core.payment_directory (payment_id),
    CONSTRAINT payment_allocations_loan_id_fkey FOREIGN KEY (loan_id)
        REFERENCES core.loan_directory (loan_id),
    CONSTRAINT payment_allocations_component_valid CHECK (component IN ('FEE', 'INTEREST', 'PRINCIPAL')),
    CONSTRAINT payment_allocations_target CHECK ((component = 'FEE') = (installment_number IS NULL)),
    CONSTRAINT payment_allocations_amount_positive CHECK (amount > 0)
);
CREATE INDEX idx_payment_allocations_payment ON core.payment_allocations (payment_id);
CREATE INDEX idx_payment_allocations_loan ON core.payment_allocations (loan_id);

ALTER TABLE core.payment_allocations ENABLE ROW LEVEL SECURITY;
CREATE POLICY payment_allocations_self ON core.payment_allocations FOR SELECT TO lakehouse_app_user
    USING (customer_id = (SELECT core.current_customer_id()));
CREATE POLICY payment_allocations_staff ON core.payment_allocations FOR ALL TO lakehouse_staff
    USING (true) WITH CHECK (true);
CREATE POLICY payment_allocations_read_only ON core.payment_allocations FOR SELECT
    TO lakehouse_read_only USING (true);
GRANT SELECT ON core.payment_allocations TO lakehouse_app_user, lakehouse_read_only;
GRANT SELECT, INSERT, UPDATE ON core.payment_allocations TO lakehouse_staff;

---------------------------------------------------------------------------------------------------
-- Idempotency keys (Stripe semantics), per caller: the database role and the token subject.
-- A key is claimed (IN_FLIGHT) in a transaction of its own before the work starts, so a
-- concurrent request with the same key sees the claim and gets 409; the response is stored in
-- the same transaction as the work, so a stored response always describes committed work.
CREATE TABLE core.idempotency_keys (
    db_role         text        NOT NULL,
    actor           text        NOT NULL,
    idempotency_key text        NOT NULL,
    request_hash    bytea       NOT NULL,
    state           text        NOT NULL DEFAULT 'IN_FLIGHT',
    response_status integer,
    response_body   bytea,
    response_location text,
    locked_at       timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (db_role, actor, idempotency_key),
    CONSTRAINT idempotency_keys_key_length CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    CONSTRAINT idempotency_keys_state_valid CHECK (state IN ('IN_FLIGHT', 'DONE')),
    CONSTRAINT idempotency_keys_done_has_response CHECK ((state = 'DONE') = (response_status IS NOT NULL))
);
CREATE INDEX idx_idempotency_keys_created ON core.idempotency_keys (created_at);

ALTER TABLE core.idempotency_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY idempotency_keys_own ON core.idempotency_keys FOR ALL
    TO lakehouse_app_user, lakehouse_staff
    USING (db_role = current_user AND actor = core.current_actor())
    WITH CHECK (db_role = current_user AND actor = core.current_actor());
GRANT SELECT, INSERT, UPDATE ON core.idempotency_keys TO lakehouse_app_user, lakehouse_staff;

-- Keys are kept at least 24 hours; the service's hourly upkeep removes older ones.
CREATE FUNCTION core.purge_idempotency_keys(p_older_than interval DEFAULT interval '24 hours')
RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (
        DELETE FROM core.idempotency_keys
        WHERE created_at < now() - greatest(p_older_than, interval '24 hours') RETURNING 1
    )
    SELECT count(*) FROM gone
$$;
REVOKE EXECUTE ON FUNCTION core.purge_idempotency_keys(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION core.purge_idempotency_keys(interval) TO lakehouse_authenticator;

-- Staff read customers' payments and allocations; customers start repayments (PENDING) only.
GRANT UPDATE ON core.payments TO lakehouse_staff;

---------------------------------------------------------------------------------------------------
-- Tighter customer policies (review): a customer's role may only start PENDING repayments on
-- their own loans, only apply (APPLIED) and withdraw (APPLIED → CANCELLED) loans, and change no
-- other loan column. The ETL role creates customers and sees only those it created.
DROP POLICY payments_self_insert ON core.payments;
CREATE POLICY payments_self_insert ON core.payments FOR INSERT TO lakehouse_app_user
    WITH CHECK (
        customer_id = (SELECT core.current_customer_id())
        AND payment_type = 'REPAYMENT' AND status = 'PENDING'
        AND EXISTS (SELECT 1 FROM core.loan_directory d
                    WHERE d.loan_id = payments.loan_id
                      AND d.customer_id = (SELECT core.current_customer_id())));

DROP POLICY loans_self_insert ON core.loans;
CREATE POLICY loans_self_insert ON core.loans FOR INSERT TO lakehouse_app_user
    WITH CHECK (customer_id = (SELECT core.current_customer_id()) AND status = 'APPLIED');
DROP POLICY loans_self_update ON core.loans;
CREATE POLICY loans_self_update ON core.loans FOR UPDATE TO lakehouse_app_user
    USING (customer_id = (SELECT core.current_customer_id()) AND status = 'APPLIED')
    WITH CHECK (customer_id = (SELECT core.current_customer_id()) AND status = 'CANCELLED');
REVOKE UPDATE ON core.loans FROM lakehouse_app_user;
GRANT UPDATE (status, cancelled_at, cancelled_by, version, updated_at, updated_by)
    ON core.loans TO lakehouse_app_user;

DROP POLICY customers_etl ON core.customers;
CREATE POLICY customers_etl_insert ON core.customers FOR INSERT TO lakehouse_etl_user
    WITH CHECK (true);
CREATE POLICY customers_etl_select ON core.customers FOR SELECT TO lakehouse_etl_user
    USING (created_by = core.current_actor());

-- Creating a partition takes strong locks on the parent and on referenced tables; wait at most
-- two seconds for them (then 504) rather than queueing every query behind the creation.
ALTER FUNCTION core.ensure_loans_partition(timestamptz) SET lock_timeout = '2s';
ALTER FUNCTION core.ensure_payments_partition(timestamptz) SET lock_timeout = '2s';
