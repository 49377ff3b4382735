-- The collection sheet (issue 29, point 1) reads the loans on the books whose next due date has
-- come, in that order: a range of this index, then each loan's unpaid installments by its key.
-- next_due_date moves only when an installment is paid in full or falls due, so most repayments
-- (and servicing days with nothing due) stay HOT updates.
CREATE INDEX idx_loans_collection ON core.loans (next_due_date, loan_id)
    WHERE status IN ('DISBURSED', 'DEFAULTED');
