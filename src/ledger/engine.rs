//! The balance of one loan and how money is applied to it, as plain data: the handlers load a
//! [`Ledger`] under the loan's row lock, change it here, and write the changes back.
//!
//! Repayments pay fees first, then each installment in due order, interest before principal
//! (the usual core-banking order). A reversal gives back exactly what its payment took.

use chrono::NaiveDate;
use rust_decimal::Decimal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    Fee,
    Interest,
    Principal,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fee => "FEE",
            Self::Interest => "INTEREST",
            Self::Principal => "PRINCIPAL",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Fee, Self::Interest, Self::Principal]
            .into_iter()
            .find(|c| c.as_str() == text)
    }
}

/// One slice of a payment: a component of an installment, or fees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// `None` for fees.
    pub installment: Option<i32>,
    pub component: Component,
    pub amount: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallmentState {
    pub number: i32,
    pub due_date: NaiveDate,
    pub principal_due: Decimal,
    pub interest_due: Decimal,
    pub principal_paid: Decimal,
    pub interest_paid: Decimal,
}

impl InstallmentState {
    fn unpaid(&self) -> Decimal {
        self.principal_due - self.principal_paid + self.interest_due - self.interest_paid
    }
}

/// What a loan owes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balances {
    pub principal_outstanding: Decimal,
    pub interest_outstanding: Decimal,
    pub fees_outstanding: Decimal,
    pub next_due_date: Option<NaiveDate>,
}

impl Balances {
    pub fn total(&self) -> Decimal {
        self.principal_outstanding + self.interest_outstanding + self.fees_outstanding
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ledger {
    pub fees_outstanding: Decimal,
    pub installments: Vec<InstallmentState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerError {
    /// More than everything owed.
    Overpayment { outstanding: Decimal },
    /// A fee charge that repayments have already (partly) paid cannot be taken back.
    FeeAlreadyPaid,
}

impl Ledger {
    pub fn balances(&self) -> Balances {
        let (principal, interest) =
            self.installments
                .iter()
                .fold((Decimal::ZERO, Decimal::ZERO), |(p, i), s| {
                    (
                        p + s.principal_due - s.principal_paid,
                        i + s.interest_due - s.interest_paid,
                    )
                });
        Balances {
            principal_outstanding: principal,
            interest_outstanding: interest,
            fees_outstanding: self.fees_outstanding,
            next_due_date: self
                .installments
                .iter()
                .find(|s| s.unpaid() > Decimal::ZERO)
                .map(|s| s.due_date),
        }
    }

    pub fn charge_fee(&mut self, amount: Decimal) {
        self.fees_outstanding += amount;
    }

    pub fn reverse_fee(&mut self, amount: Decimal) -> Result<(), LedgerError> {
        if self.fees_outstanding < amount {
            return Err(LedgerError::FeeAlreadyPaid);
        }
        self.fees_outstanding -= amount;
        Ok(())
    }

    /// Applies `amount` and returns where it went; refuses more than is owed.
    pub fn allocate(&mut self, amount: Decimal) -> Result<Vec<Allocation>, LedgerError> {
        let outstanding = self.balances().total();
        if amount > outstanding {
            return Err(LedgerError::Overpayment { outstanding });
        }
        let mut left = amount;
        let mut allocations = Vec::new();
        let take = |available: Decimal, left: &mut Decimal| {
            let taken = available.min(*left);
            *left -= taken;
            taken
        };
        let fee = take(self.fees_outstanding, &mut left);
        if fee > Decimal::ZERO {
            self.fees_outstanding -= fee;
            allocations.push(Allocation {
                installment: None,
                component: Component::Fee,
                amount: fee,
            });
        }
        for s in &mut self.installments {
            if left.is_zero() {
                break;
            }
            let interest = take(s.interest_due - s.interest_paid, &mut left);
            if interest > Decimal::ZERO {
                s.interest_paid += interest;
                allocations.push(Allocation {
                    installment: Some(s.number),
                    component: Component::Interest,
                    amount: interest,
                });
            }
            let principal = take(s.principal_due - s.principal_paid, &mut left);
            if principal > Decimal::ZERO {
                s.principal_paid += principal;
                allocations.push(Allocation {
                    installment: Some(s.number),
                    component: Component::Principal,
                    amount: principal,
                });
            }
        }
        Ok(allocations)
    }

    /// Gives back what `allocations` took.
    pub fn reverse(&mut self, allocations: &[Allocation]) {
        for a in allocations {
            match (a.component, a.installment) {
                (Component::Fee, _) => self.fees_outstanding += a.amount,
                (component, Some(number)) => {
                    if let Some(s) = self.installments.iter_mut().find(|s| s.number == number) {
                        match component {
                            Component::Interest => s.interest_paid -= a.amount,
                            _ => s.principal_paid -= a.amount,
                        }
                    }
                }
                (_, None) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::annuity_schedule;
    use proptest::prelude::*;

    fn ledger(amount: i64, rate_bp: u32, months: u32) -> Ledger {
        let start = "2024-01-15T00:00:00Z".parse().unwrap();
        let schedule = annuity_schedule(
            Decimal::new(amount, 2),
            Decimal::new(rate_bp.into(), 4),
            months,
            start,
        );
        Ledger {
            fees_outstanding: Decimal::ZERO,
            installments: schedule
                .into_iter()
                .map(|i| InstallmentState {
                    number: i.number as i32,
                    due_date: i.due_date,
                    principal_due: i.principal,
                    interest_due: i.interest,
                    principal_paid: Decimal::ZERO,
                    interest_paid: Decimal::ZERO,
                })
                .collect(),
        }
    }

    #[test]
    fn fees_then_interest_then_principal_in_due_order() {
        let mut l = ledger(1_200_000, 1200, 12); // 12,000 at 12%: first interest 120.00
        l.charge_fee(Decimal::new(5000, 2));
        let a = l.allocate(Decimal::new(30000, 2)).unwrap();
        assert_eq!(
            a[0],
            Allocation {
                installment: None,
                component: Component::Fee,
                amount: Decimal::new(5000, 2)
            }
        );
        assert_eq!(
            a[1],
            Allocation {
                installment: Some(1),
                component: Component::Interest,
                amount: Decimal::new(12000, 2)
            }
        );
        assert_eq!(
            a[2],
            Allocation {
                installment: Some(1),
                component: Component::Principal,
                amount: Decimal::new(13000, 2)
            }
        );
        assert_eq!(l.balances().next_due_date, Some(l.installments[0].due_date));
    }

    #[test]
    fn more_than_is_owed_is_refused_and_changes_nothing() {
        let mut l = ledger(100_000, 0, 2);
        let before = l.clone();
        assert_eq!(
            l.allocate(Decimal::new(100_001, 2)),
            Err(LedgerError::Overpayment {
                outstanding: Decimal::new(100_000, 2)
            })
        );
        assert_eq!(l, before);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Repay(i64),
        Fee(i64),
        Reverse(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1i64..=500_000).prop_map(Op::Repay),
            (1i64..=20_000).prop_map(Op::Fee),
            (0usize..20).prop_map(Op::Reverse),
        ]
    }

    /// Runs `ops`, returning the ledger and the completed (not reversed) amounts and allocations.
    fn run(ops: &[Op]) -> (Ledger, Decimal, Decimal) {
        let mut l = ledger(2_000_000, 1500, 12);
        let mut repayments: Vec<(Decimal, Vec<Allocation>, bool)> = Vec::new();
        let mut fees: Vec<(Decimal, bool)> = Vec::new();
        for op in ops {
            match op {
                Op::Repay(cents) => {
                    let amount = Decimal::new(*cents, 2);
                    if let Ok(a) = l.allocate(amount) {
                        repayments.push((amount, a, true));
                    }
                }
                Op::Fee(cents) => {
                    let amount = Decimal::new(*cents, 2);
                    l.charge_fee(amount);
                    fees.push((amount, true));
                }
                Op::Reverse(i) => {
                    if let Some((_, a, live)) = repayments.get_mut(*i) {
                        if *live {
                            l.reverse(a);
                            *live = false;
                        }
                    } else if let Some((amount, live)) = fees.get_mut(*i - repayments.len().min(*i))
                    {
                        if *live && l.reverse_fee(*amount).is_ok() {
                            *live = false;
                        }
                    }
                }
            }
            let b = l.balances();
            assert!(b.principal_outstanding >= Decimal::ZERO);
            assert!(b.interest_outstanding >= Decimal::ZERO);
            assert!(b.fees_outstanding >= Decimal::ZERO);
            for s in &l.installments {
                assert!(s.principal_paid >= Decimal::ZERO && s.principal_paid <= s.principal_due);
                assert!(s.interest_paid >= Decimal::ZERO && s.interest_paid <= s.interest_due);
            }
        }
        let completed: Decimal = repayments.iter().filter(|r| r.2).map(|r| r.0).sum();
        let allocated: Decimal = repayments
            .iter()
            .filter(|r| r.2)
            .flat_map(|r| r.1.iter().map(|a| a.amount))
            .sum();
        (l, completed, allocated)
    }

    proptest! {
        #[test]
        fn allocations_add_up_never_go_negative_and_replay_identically(ops in prop::collection::vec(op(), 0..60)) {
            let (ledger, completed, allocated) = run(&ops);
            prop_assert_eq!(completed, allocated);
            let (again, _, _) = run(&ops);
            prop_assert_eq!(ledger, again);
        }
    }
}
