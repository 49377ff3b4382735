-- Interest recalculation (issue 27, point 3; docs/money.md#prepayment). Under a day-count contract
-- (every day count but THIRTY_360_MONTHLY), principal paid ahead during an installment's period
-- stops earning interest from its value date: the installment's interest falls by rate ×
-- principal × the year fraction to its due date. Each installment keeps how much its interest was
-- reduced and the weight it was recalculated from (Σ principal paid ahead × the year fraction from
-- that day to the due date, unrounded), and each payment's change to both is kept for its
-- reversal. Interest the installment had been paid beyond what it now owes pays principal instead:
-- an INTEREST_REBATE allocation. Added with zero defaults: no row is rewritten, nothing moves.

ALTER TABLE core.loan_installments
    ADD COLUMN interest_reduction numeric(15,2) NOT NULL DEFAULT 0,
    ADD COLUMN prepaid_weight numeric NOT NULL DEFAULT 0,
    ADD CONSTRAINT loan_installments_recalculation_nonnegative
        CHECK (interest_reduction >= 0 AND prepaid_weight >= 0);

ALTER TABLE core.schedule_changes
    ADD COLUMN interest_reduction numeric(15,2) NOT NULL DEFAULT 0,
    ADD COLUMN prepaid_weight numeric NOT NULL DEFAULT 0;

ALTER TABLE core.payment_allocations
    DROP CONSTRAINT payment_allocations_component_valid,
    ADD CONSTRAINT payment_allocations_component_valid
        CHECK (component IN ('FEE', 'PENALTY', 'INTEREST', 'PRINCIPAL', 'PREPAYMENT',
                             'OVERPAYMENT', 'INTEREST_REBATE')),
    DROP CONSTRAINT payment_allocations_target,
    ADD CONSTRAINT payment_allocations_target
        CHECK ((component IN ('FEE', 'PENALTY', 'PREPAYMENT', 'OVERPAYMENT'))
               = (installment_number IS NULL));
