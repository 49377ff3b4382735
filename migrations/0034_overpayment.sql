-- Overpayment (issue 27, point 7; docs/money.md). A product's `overpayment` term says what money
-- above the payoff does: REFUSE (the default, as before: 422) or CREDIT: it pays the loan off and
-- the rest is owed back to the customer on LOAN_OVERPAYMENT, the loan OVERPAID until staff refund
-- it (a REFUND entry), when it is CLOSED.

ALTER TABLE core.products ADD COLUMN overpayment text NOT NULL DEFAULT 'REFUSE',
    ADD CONSTRAINT products_overpayment_valid CHECK (overpayment IN ('REFUSE', 'CREDIT'));
ALTER TABLE core.loan_terms ADD COLUMN overpayment text NOT NULL DEFAULT 'REFUSE';
ALTER TABLE core.loan_terms ALTER COLUMN overpayment DROP DEFAULT;

ALTER TABLE core.loans
    DROP CONSTRAINT loans_status_valid,
    ADD CONSTRAINT loans_status_valid CHECK (status IN (
        'APPLIED', 'APPROVED', 'REJECTED', 'CANCELLED', 'DISBURSED', 'CLOSED', 'OVERPAID',
        'DEFAULTED', 'WRITTEN_OFF')),
    DROP CONSTRAINT loans_lifecycle_stamped,
    ADD CONSTRAINT loans_lifecycle_stamped CHECK (
        (status NOT IN ('APPROVED', 'DISBURSED', 'CLOSED', 'OVERPAID', 'DEFAULTED', 'WRITTEN_OFF')
         OR approval_date IS NOT NULL)
        AND (status NOT IN ('DISBURSED', 'CLOSED', 'OVERPAID', 'DEFAULTED', 'WRITTEN_OFF')
             OR (disbursement_date IS NOT NULL AND maturity_date IS NOT NULL))
        AND (status <> 'REJECTED' OR rejected_at IS NOT NULL)
        AND (status <> 'CANCELLED' OR cancelled_at IS NOT NULL)
        AND (status <> 'CLOSED' OR closed_at IS NOT NULL));

ALTER TABLE core.journal_entries
    DROP CONSTRAINT journal_entries_kind_valid,
    ADD CONSTRAINT journal_entries_kind_valid CHECK (kind IN (
        'DISBURSEMENT', 'REPAYMENT', 'PAYOFF', 'FEE', 'INTEREST_DUE', 'LATE_FEE', 'WRITE_OFF',
        'RECOVERY', 'REVERSAL', 'REFUND'));

ALTER TABLE core.payment_allocations
    DROP CONSTRAINT payment_allocations_component_valid,
    ADD CONSTRAINT payment_allocations_component_valid
        CHECK (component IN ('FEE', 'PENALTY', 'INTEREST', 'PRINCIPAL', 'PREPAYMENT',
                             'OVERPAYMENT')),
    DROP CONSTRAINT payment_allocations_target,
    ADD CONSTRAINT payment_allocations_target
        CHECK ((component IN ('FEE', 'PENALTY', 'PREPAYMENT', 'OVERPAYMENT'))
               = (installment_number IS NULL));
