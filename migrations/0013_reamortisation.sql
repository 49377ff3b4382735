-- Partial prepayments re-amortise the rest of the schedule, as the product says: a shorter term
-- (the installment stays, the loan ends sooner) or a lower installment (the term stays). What a
-- prepayment changed is kept, per installment, so that reversing it restores the schedule.

ALTER TABLE core.products
    ADD COLUMN prepayment_reamortisation text NOT NULL DEFAULT 'SHORTER_TERM',
    ADD CONSTRAINT products_prepayment_reamortisation_valid
        CHECK (prepayment_reamortisation IN ('SHORTER_TERM', 'LOWER_INSTALLMENT'));

ALTER TABLE core.payment_allocations
    DROP CONSTRAINT payment_allocations_component_valid,
    ADD CONSTRAINT payment_allocations_component_valid
        CHECK (component IN ('FEE', 'PENALTY', 'INTEREST', 'PRINCIPAL', 'PREPAYMENT')),
    DROP CONSTRAINT payment_allocations_target,
    ADD CONSTRAINT payment_allocations_target
        CHECK ((component IN ('FEE', 'PENALTY', 'PREPAYMENT')) = (installment_number IS NULL));

CREATE TABLE core.schedule_changes (
    payment_id         uuid          NOT NULL,
    installment_number integer       NOT NULL,
    loan_id            uuid          NOT NULL,
    customer_id        uuid          NOT NULL,
    principal_due      numeric(15,2) NOT NULL,
    interest_due       numeric(15,2) NOT NULL,
    created_at         timestamptz   NOT NULL DEFAULT now(),
    reversed_at        timestamptz,
    CONSTRAINT schedule_changes_pkey PRIMARY KEY (payment_id, installment_number),
    CONSTRAINT schedule_changes_payment_id_fkey FOREIGN KEY (payment_id)
        REFERENCES core.payment_directory (payment_id),
    CONSTRAINT schedule_changes_loan_id_fkey FOREIGN KEY (loan_id)
        REFERENCES core.loan_directory (loan_id)
);
CREATE INDEX idx_schedule_changes_loan ON core.schedule_changes (loan_id);

ALTER TABLE core.schedule_changes ENABLE ROW LEVEL SECURITY;
CREATE POLICY schedule_changes_self ON core.schedule_changes FOR SELECT TO lakehouse_app_user
    USING (customer_id = (SELECT core.current_customer_id()));
CREATE POLICY schedule_changes_staff ON core.schedule_changes FOR ALL TO lakehouse_staff
    USING (true) WITH CHECK (true);
CREATE POLICY schedule_changes_read_only ON core.schedule_changes FOR SELECT TO lakehouse_read_only
    USING (true);
GRANT SELECT ON core.schedule_changes TO lakehouse_app_user, lakehouse_read_only;
GRANT SELECT, INSERT, UPDATE ON core.schedule_changes TO lakehouse_staff;

-- Re-amortisation rewrites scheduled amounts, so an installment may become zero (a shorter term).
-- Its scheduled amounts change only with a prepayment, and what changed is in schedule_changes.
