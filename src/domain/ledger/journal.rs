//! The double-entry journal: accounts, entry kinds and the lines of an entry. A line's amount is
//! a debit when positive and a credit when negative, so an entry's lines sum to zero (the
//! database refuses any other; see migration 0012).

use rust_decimal::Decimal;

crate::closed_set! {
    /// An account of the journal. `LOAN_*` are the loan's own (receivables, and any
    /// overpayment owed back); the rest are the general ledger.
    pub enum Account {
        LoanPrincipal = "LOAN_PRINCIPAL",
        LoanInterest = "LOAN_INTEREST",
        LoanFees = "LOAN_FEES",
        LoanPenalties = "LOAN_PENALTIES",
        LoanOverpayment = "LOAN_OVERPAYMENT",
        Cash = "CASH",
        InterestIncome = "INTEREST_INCOME",
        FeeIncome = "FEE_INCOME",
        PenaltyIncome = "PENALTY_INCOME",
        WriteOffExpense = "WRITE_OFF_EXPENSE",
    }
}

crate::closed_set! {
    /// What an entry records.
    pub enum EntryKind {
        Disbursement = "DISBURSEMENT",
        Repayment = "REPAYMENT",
        Payoff = "PAYOFF",
        Fee = "FEE",
        InterestDue = "INTEREST_DUE",
        LateFee = "LATE_FEE",
        WriteOff = "WRITE_OFF",
        Recovery = "RECOVERY",
        Reversal = "REVERSAL",
        /// Money owed back to the customer after an overpayment, paid out.
        Refund = "REFUND",
    }
}

/// The lines of one entry, one per account (amounts for the same account are merged, and an
/// account that nets to zero has no line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lines(Vec<(Account, Decimal)>);

impl Lines {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `amount` (a debit when positive) to `account`.
    pub fn post(&mut self, account: Account, amount: Decimal) -> &mut Self {
        match self.0.iter_mut().find(|(a, _)| *a == account) {
            Some((_, total)) => *total += amount,
            None => self.0.push((account, amount)),
        }
        self.0.retain(|(_, total)| !total.is_zero());
        self
    }

    /// Debits `debit` and credits `credit` with `amount`.
    pub fn transfer(&mut self, debit: Account, credit: Account, amount: Decimal) -> &mut Self {
        self.post(debit, amount).post(credit, -amount)
    }

    pub fn is_balanced(&self) -> bool {
        self.0
            .iter()
            .map(|(_, amount)| *amount)
            .sum::<Decimal>()
            .is_zero()
    }

    /// The contra entry's lines.
    pub fn negated(&self) -> Self {
        Self(self.0.iter().map(|(a, x)| (*a, -*x)).collect())
    }

    /// How much the entry moves `account`.
    pub fn of(&self, account: Account) -> Decimal {
        self.0
            .iter()
            .filter(|(a, _)| *a == account)
            .map(|(_, x)| *x)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn accounts(&self) -> Vec<&'static str> {
        self.0.iter().map(|(a, _)| a.as_str()).collect()
    }

    pub fn amounts(&self) -> Vec<Decimal> {
        self.0.iter().map(|(_, x)| *x).collect()
    }

    pub fn from_rows(rows: impl IntoIterator<Item = (Account, Decimal)>) -> Self {
        let mut lines = Self::new();
        for (account, amount) in rows {
            lines.post(account, amount);
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_merge_per_account_drop_zeros_and_negate() {
        let mut lines = Lines::new();
        lines
            .post(Account::Cash, Decimal::new(100, 0))
            .post(Account::LoanInterest, Decimal::new(-30, 0))
            .post(Account::LoanPrincipal, Decimal::new(-65, 0))
            .transfer(
                Account::LoanInterest,
                Account::InterestIncome,
                Decimal::new(5, 0),
            )
            .post(Account::LoanInterest, Decimal::new(-5, 0));
        assert!(lines.is_balanced());
        assert_eq!(lines.of(Account::LoanInterest), Decimal::new(-30, 0));
        assert_eq!(lines.accounts().len(), 4);
        assert_eq!(lines.negated().of(Account::Cash), Decimal::new(-100, 0));
        assert!(!Lines::from_rows([(Account::Cash, Decimal::ONE)]).is_balanced());
    }
}
