//! The money of one loan and how it moves, as plain data: the ledger loads a [`Ledger`] under
//! the loan's row lock, changes it here, and writes the changes and their journal entry back.
//!
//! **Interest** becomes receivable on its installment's due date (servicing posts it). Between
//! due dates the interest accrued so far is computed, not posted, day by day as the loan's day
//! count counts ([`Contract::accrued`]); the due date trues up the rest.
//!
//! **A repayment** pays fees, then penalties, then each installment in due order, interest
//! before principal. Paying an installment ahead of its due date pays its whole scheduled
//! interest, which that payment makes receivable itself (`posted`). **A payoff** is a repayment
//! of exactly [`Ledger::quote`]: the principal, interest due, interest accrued to the day, fees,
//! penalties and the product's prepayment fee; the interest of later periods is never charged.
//! A reversal gives back exactly what its payment took.

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::journal::{Account, Lines};
use crate::domain::contract::{Amortization, Contract, InterestMethod, YearFraction};

crate::closed_set! {
    /// What part of the debt a slice of a payment paid.
    pub enum Component {
        Fee = "FEE",
        Penalty = "PENALTY",
        Interest = "INTEREST",
        Principal = "PRINCIPAL",
        /// Principal paid ahead of the schedule, which is re-amortised.
        Prepayment = "PREPAYMENT",
        /// Money above the payoff, owed back to the customer.
        Overpayment = "OVERPAYMENT",
        /// Interest an installment no longer owes because principal was paid ahead during its
        /// period (interest recalculation): it had been paid, and now pays principal instead.
        InterestRebate = "INTEREST_REBATE",
    }
}

crate::closed_set! {
    /// What money above the payoff does (a product's choice).
    pub enum Overpayment {
        /// Refused (422).
        Refuse = "REFUSE",
        /// It pays the loan off, and the rest is owed back to the customer until refunded.
        Credit = "CREDIT",
    }
}

crate::closed_set! {
    /// Where a repayment goes first (a product's choice).
    pub enum PaymentAllocation {
        /// Fees, then late fees, then the installments due and the current one.
        FeesFirst = "FEES_FIRST",
        /// The installments due and the current one, then fees, then late fees: a payment that
        /// covers an installment always pays it.
        InstallmentsFirst = "INSTALLMENTS_FIRST",
    }
}

crate::closed_set! {
    /// What a partial prepayment does to the rest of the schedule (a product's choice).
    pub enum Reamortisation {
        /// The installment stays; the loan ends sooner.
        ShorterTerm = "SHORTER_TERM",
        /// The term stays; every later installment is lower.
        LowerInstallment = "LOWER_INSTALLMENT",
    }
}

/// What the loan's product and contract say about payments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    pub prepayment_fee_rate: Decimal,
    pub reamortisation: Reamortisation,
    pub allocation: PaymentAllocation,
    pub overpayment: Overpayment,
}

/// How a movement changed an installment's scheduled amounts (a re-amortisation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleChange {
    pub number: i32,
    pub principal_due: Decimal,
    pub interest_due: Decimal,
    /// What an interest recalculation added to the installment's `interest_reduction`.
    pub interest_reduction: Decimal,
    /// What it added to the installment's `prepaid_weight`.
    pub prepaid_weight: Decimal,
}

impl Component {
    /// The loan account the component is owed on, and the income account that earns it.
    fn accounts(self) -> (Account, Account) {
        match self {
            Self::Fee => (Account::LoanFees, Account::FeeIncome),
            Self::Penalty => (Account::LoanPenalties, Account::PenaltyIncome),
            Self::Interest => (Account::LoanInterest, Account::InterestIncome),
            Self::Principal | Self::Prepayment => (Account::LoanPrincipal, Account::Cash),
            Self::Overpayment => (Account::LoanOverpayment, Account::Cash),
            Self::InterestRebate => (Account::LoanInterest, Account::InterestIncome),
        }
    }
}

/// One slice of a payment: a component of an installment, or fees or penalties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// `None` for fees and penalties.
    pub installment: Option<i32>,
    pub component: Component,
    pub amount: Decimal,
    /// The part of `amount` this payment made receivable itself (interest paid ahead of its due
    /// date, interest accrued to a payoff, a prepayment fee): it goes straight to income.
    pub posted: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct InstallmentState {
    pub number: i32,
    pub due_date: NaiveDate,
    pub principal_due: Decimal,
    /// The scheduled interest.
    pub interest_due: Decimal,
    /// The part of `interest_due` that has become receivable.
    pub interest_posted: Decimal,
    pub principal_paid: Decimal,
    pub interest_paid: Decimal,
    /// How much interest recalculation took off its scheduled interest (`interest_due` is
    /// what is left).
    pub interest_reduction: Decimal,
    /// Σ principal paid ahead during its period × the year fraction from that day to its due
    /// date, in 1/`YearFraction::WEIGHT_UNITS` of a year (exact): what its interest is
    /// recalculated from.
    pub prepaid_weight: Decimal,
}

impl InstallmentState {
    fn is_paid(&self) -> bool {
        self.principal_paid == self.principal_due && self.interest_paid == self.interest_due
    }

    /// What is left to pay of its scheduled principal and interest.
    fn unpaid(&self) -> Decimal {
        self.principal_due - self.principal_paid + self.interest_due - self.interest_paid
    }
}

/// What a loan owes now: the balance columns of `core.loans`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balances {
    pub principal_outstanding: Decimal,
    /// Interest receivable: due (or paid ahead) and unpaid.
    pub interest_outstanding: Decimal,
    pub fees_outstanding: Decimal,
    pub penalties_outstanding: Decimal,
    pub next_due_date: Option<NaiveDate>,
}

impl Balances {
    pub fn total(&self) -> Decimal {
        self.principal_outstanding
            + self.interest_outstanding
            + self.fees_outstanding
            + self.penalties_outstanding
    }
}

/// What paying a loan off on a day costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub principal: Decimal,
    /// Interest due and unpaid, plus interest accrued to the day.
    pub interest: Decimal,
    pub fees: Decimal,
    pub penalties: Decimal,
    pub prepayment_fee: Decimal,
    pub total: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ledger {
    /// The business day the loan was paid out: the start of the first installment's period.
    pub disbursed_on: NaiveDate,
    /// How its interest accrues and its amounts round.
    pub contract: Contract,
    pub fees_outstanding: Decimal,
    pub penalties_outstanding: Decimal,
    pub installments: Vec<InstallmentState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerError {
    /// More than the payoff amount of the day.
    Overpayment { outstanding: Decimal },
    /// Less than the payoff, but more than the schedule can take without paying the loan off.
    NotAPayoff { payoff: Decimal },
    /// A fee charge that repayments have already (partly) paid cannot be taken back.
    FeeAlreadyPaid,
    /// Reversing a prepayment would restore installments that later payments have paid.
    LaterPaymentsDepend,
}

/// A repayment applied: where the money went, whether it paid the loan off, and its journal
/// lines (cash in; receivables and income out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub allocations: Vec<Allocation>,
    pub payoff: bool,
    /// Money above the payoff, owed back to the customer (zero unless the terms credit it).
    pub credit: Decimal,
    pub lines: Lines,
    /// The re-amortisation a prepayment made.
    pub schedule: Vec<ScheduleChange>,
}

impl Ledger {
    /// The books of a loan just paid out on `disbursed_on` with `schedule`: nothing paid, nothing
    /// receivable yet.
    pub fn new(
        disbursed_on: NaiveDate,
        contract: Contract,
        schedule: &[crate::domain::money::Installment],
    ) -> Self {
        Self {
            disbursed_on,
            contract,
            fees_outstanding: Decimal::ZERO,
            penalties_outstanding: Decimal::ZERO,
            installments: schedule
                .iter()
                .map(|i| InstallmentState {
                    number: i32::try_from(i.number).unwrap_or(i32::MAX),
                    due_date: i.due_date,
                    principal_due: i.principal,
                    interest_due: i.interest,
                    interest_posted: Decimal::ZERO,
                    principal_paid: Decimal::ZERO,
                    interest_paid: Decimal::ZERO,
                    interest_reduction: Decimal::ZERO,
                    prepaid_weight: Decimal::ZERO,
                })
                .collect(),
        }
    }

    pub fn balances(&self) -> Balances {
        let (principal, interest) =
            self.installments
                .iter()
                .fold((Decimal::ZERO, Decimal::ZERO), |(p, i), s| {
                    (
                        p + s.principal_due - s.principal_paid,
                        i + s.interest_posted - s.interest_paid,
                    )
                });
        let settled = principal.is_zero() && interest.is_zero();
        Balances {
            principal_outstanding: principal,
            interest_outstanding: interest,
            fees_outstanding: self.fees_outstanding,
            penalties_outstanding: self.penalties_outstanding,
            next_due_date: if settled {
                None
            } else {
                self.installments
                    .iter()
                    .find(|s| !s.is_paid())
                    .map(|s| s.due_date)
            },
        }
    }

    /// Nothing owed: no principal and nothing receivable.
    pub fn is_settled(&self) -> bool {
        self.balances().total().is_zero()
    }

    /// Days since the oldest installment due on or before `on` that is not fully paid.
    pub fn days_past_due(&self, on: NaiveDate, tolerance: Decimal) -> i64 {
        if self.balances().principal_outstanding.is_zero() {
            return 0;
        }
        self.installments
            .iter()
            .find(|s| s.due_date <= on && s.unpaid() > tolerance)
            .map_or(0, |s| (on - s.due_date).num_days())
    }

    fn period_start(&self, index: usize) -> NaiveDate {
        match index {
            0 => self.disbursed_on,
            _ => self.installments[index - 1].due_date,
        }
    }

    /// The interest of installment `index` earned by the end of `on`: all of it from the due
    /// date, none before its period, and in between day by day as the contract's day count
    /// counts, rounded to the currency's unit.
    pub fn accrued(&self, index: usize, on: NaiveDate) -> Decimal {
        let s = &self.installments[index];
        self.contract
            .accrued(s.interest_due, self.period_start(index), s.due_date, on)
    }

    /// The interest each installment owes if the loan is paid off on `on`: what is
    /// receivable, or what has accrued, whichever is more.
    fn payoff_interest(&self, index: usize, on: NaiveDate) -> Decimal {
        let s = &self.installments[index];
        self.accrued(index, on).max(s.interest_posted)
    }

    /// What a payoff on `on` costs.
    pub fn quote(&self, on: NaiveDate, prepayment_fee_rate: Decimal) -> Quote {
        let mut principal = Decimal::ZERO;
        let mut prepaid = Decimal::ZERO;
        let mut interest = Decimal::ZERO;
        for (index, s) in self.installments.iter().enumerate() {
            let unpaid = s.principal_due - s.principal_paid;
            principal += unpaid;
            if s.due_date > on {
                prepaid += unpaid;
            }
            interest += self.payoff_interest(index, on) - s.interest_paid;
        }
        let prepayment_fee = self.contract.rounding.unit(prepaid * prepayment_fee_rate);
        Quote {
            principal,
            interest,
            fees: self.fees_outstanding,
            penalties: self.penalties_outstanding,
            prepayment_fee,
            total: principal
                + interest
                + self.fees_outstanding
                + self.penalties_outstanding
                + prepayment_fee,
        }
    }

    pub fn charge_fee(&mut self, amount: Decimal) -> Lines {
        self.fees_outstanding += amount;
        let mut lines = Lines::new();
        lines.transfer(Account::LoanFees, Account::FeeIncome, amount);
        lines
    }

    pub fn reverse_fee(&mut self, amount: Decimal) -> Result<(), LedgerError> {
        if self.fees_outstanding < amount {
            return Err(LedgerError::FeeAlreadyPaid);
        }
        self.fees_outstanding -= amount;
        Ok(())
    }

    /// Applies a repayment of `amount` made on `on`; refuses more than the day's payoff. Money
    /// beyond the installments due and the current one prepays principal, and the rest of the
    /// schedule is re-amortised as the product says.
    pub fn apply(
        &mut self,
        amount: Decimal,
        on: NaiveDate,
        terms: &Terms,
    ) -> Result<Applied, LedgerError> {
        let quote = self.quote(on, terms.prepayment_fee_rate);
        let credit = (amount - quote.total).max(Decimal::ZERO);
        if credit > Decimal::ZERO && terms.overpayment == Overpayment::Refuse {
            return Err(LedgerError::Overpayment {
                outstanding: quote.total,
            });
        }
        let payoff = amount >= quote.total;
        let mut next = self.clone();
        let (allocations, schedule) = if payoff {
            let mut allocations = next.pay_off(on, quote.prepayment_fee);
            push(
                &mut allocations,
                None,
                Component::Overpayment,
                credit,
                Decimal::ZERO,
            );
            (allocations, Vec::new())
        } else {
            // The installments due on the day, those whose interest is already receivable (as a
            // backdated payment finds those servicing posted since its day, or an earlier payment
            // paid ahead), and the current one: the first not yet due. Only what lies beyond
            // them is paid ahead as principal, so paying ahead in parts costs what paying the sum
            // at once does.
            let current = next.installments.iter().position(|s| s.due_date > on);
            let receivable = next
                .installments
                .iter()
                .rposition(|s| s.due_date <= on || !s.interest_posted.is_zero());
            let current = current
                .max(receivable)
                .map_or(next.installments.len(), |i| i + 1);
            let (mut allocations, mut left) = next.pay_in_order(amount, current, terms.allocation);
            let mut schedule = Vec::new();
            if left > Decimal::ZERO {
                if let Some(change) = next.recalculate(current, on, &mut left, &mut allocations) {
                    schedule.push(change);
                }
            }
            if left > Decimal::ZERO {
                schedule.extend(next.prepay(left, current, terms).ok_or(
                    LedgerError::NotAPayoff {
                        payoff: quote.total,
                    },
                )?);
                push(
                    &mut allocations,
                    None,
                    Component::Prepayment,
                    left,
                    Decimal::ZERO,
                );
            }
            (allocations, schedule)
        };
        *self = next;
        let mut lines = Lines::new();
        lines.post(Account::Cash, amount);
        for a in &allocations {
            let (owed_on, earned_by) = a.component.accounts();
            if a.component == Component::InterestRebate {
                // Interest income paid ahead is given back, and the money pays principal (its
                // share of the PREPAYMENT).
                lines.post(earned_by, a.amount);
                continue;
            }
            lines.post(owed_on, -(a.amount - a.posted));
            lines.post(earned_by, -a.posted);
        }
        Ok(Applied {
            allocations,
            payoff,
            credit,
            lines,
            schedule,
        })
    }

    /// The first `installments` installments' interest and principal in due order, and fees
    /// and penalties before them or after them as `allocation` says; returns where the money
    /// went and what is left.
    fn pay_in_order(
        &mut self,
        amount: Decimal,
        installments: usize,
        allocation: PaymentAllocation,
    ) -> (Vec<Allocation>, Decimal) {
        let mut left = amount;
        let mut allocations = Vec::new();
        match allocation {
            PaymentAllocation::FeesFirst => {
                self.pay_charges(&mut left, &mut allocations);
                self.pay_installments(&mut left, &mut allocations, installments);
            }
            PaymentAllocation::InstallmentsFirst => {
                self.pay_installments(&mut left, &mut allocations, installments);
                self.pay_charges(&mut left, &mut allocations);
            }
        }
        (allocations, left)
    }

    /// Fees, then penalties, out of `left`.
    fn pay_charges(&mut self, left: &mut Decimal, allocations: &mut Vec<Allocation>) {
        let fee = take(self.fees_outstanding, left);
        self.fees_outstanding -= fee;
        push(allocations, None, Component::Fee, fee, Decimal::ZERO);
        let penalty = take(self.penalties_outstanding, left);
        self.penalties_outstanding -= penalty;
        push(
            allocations,
            None,
            Component::Penalty,
            penalty,
            Decimal::ZERO,
        );
    }

    /// The first `installments` installments' interest and principal, oldest first, out of
    /// `left`.
    fn pay_installments(
        &mut self,
        left: &mut Decimal,
        allocations: &mut Vec<Allocation>,
        installments: usize,
    ) {
        for s in self.installments.iter_mut().take(installments) {
            if left.is_zero() {
                break;
            }
            let interest = take(s.interest_due - s.interest_paid, left);
            let posted = (s.interest_paid + interest - s.interest_posted).max(Decimal::ZERO);
            s.interest_paid += interest;
            s.interest_posted += posted;
            push(
                allocations,
                Some(s.number),
                Component::Interest,
                interest,
                posted,
            );
            let principal = take(s.principal_due - s.principal_paid, left);
            s.principal_paid += principal;
            push(
                allocations,
                Some(s.number),
                Component::Principal,
                principal,
                Decimal::ZERO,
            );
        }
    }

    /// Interest recalculation (day-count contracts, not `THIRTY_360_MONTHLY`): `left` is about to
    /// be paid ahead on `on`, during the period of the current installment (the last of the first
    /// `paid` installments, paid in full). That principal stops earning interest from `on`, so
    /// the installment's interest falls by rate × principal × the year fraction from `on` to its
    /// due date, and the interest it had been paid beyond that pays principal too
    /// (`INTEREST_REBATE`), which saves its own interest. Solved at once for all the principal
    /// paid ahead in the period, half up to the unit: paying ahead in parts costs what paying the
    /// sum at once does.
    fn recalculate(
        &mut self,
        paid: usize,
        on: NaiveDate,
        left: &mut Decimal,
        allocations: &mut Vec<Allocation>,
    ) -> Option<ScheduleChange> {
        if !self.contract.day_count.recalculates() {
            return None;
        }
        let index = paid.checked_sub(1)?;
        let start = self.period_start(index).max(on);
        let contract = self.contract;
        let s = self.installments.get_mut(index)?;
        if s.due_date <= on || !s.is_paid() || s.interest_paid != s.interest_posted {
            return None;
        }
        let fraction = contract.day_count.fraction(start, s.due_date, false);
        let rate = contract.annual_rate;
        let units = Decimal::from(YearFraction::WEIGHT_UNITS);
        let basis = s.interest_due + s.interest_reduction;
        // x·(1 − r·F) = (interest paid + money left) − basis + r·S, with S the weight so far.
        let cash = s.interest_paid + *left;
        let weighed = rate * s.prepaid_weight / units;
        let ahead = (cash - basis + weighed) / (Decimal::ONE - fraction.of(rate));
        let interest = contract
            .rounding
            .unit(basis - weighed - fraction.of(rate * ahead))
            .clamp(Decimal::ZERO, s.interest_paid);
        let rebate = s.interest_paid - interest;
        let weight = fraction.weight(*left + rebate);
        let change = ScheduleChange {
            number: s.number,
            principal_due: Decimal::ZERO,
            interest_due: -rebate,
            interest_reduction: rebate,
            prepaid_weight: weight,
        };
        s.interest_due -= rebate;
        s.interest_paid -= rebate;
        s.interest_posted -= rebate;
        s.interest_reduction += rebate;
        s.prepaid_weight += weight;
        *left += rebate;
        push(
            allocations,
            Some(s.number),
            Component::InterestRebate,
            rebate,
            Decimal::ZERO,
        );
        Some(change)
    }

    /// Takes `amount` off the principal of the installments from index `from` on, and
    /// re-amortises them over their due dates; `None` if it is more than their principal.
    fn prepay(
        &mut self,
        amount: Decimal,
        from: usize,
        terms: &Terms,
    ) -> Option<Vec<ScheduleChange>> {
        let future = self.installments.get(from..).unwrap_or_default();
        let remaining: Decimal = future
            .iter()
            .map(|s| s.principal_due - s.principal_paid)
            .sum();
        if amount > remaining || future.iter().any(|s| s.interest_posted > Decimal::ZERO) {
            return None;
        }
        let level = match terms.reamortisation {
            Reamortisation::LowerInstallment => None,
            // The installment stays: its total, or under equal principal its principal.
            Reamortisation::ShorterTerm => {
                future.first().map(|s| match self.contract.amortization {
                    Amortization::Annuity => s.principal_due + s.interest_due,
                    Amortization::EqualPrincipal => s.principal_due,
                })
            }
        };
        let rows = if self.contract.interest_method == InterestMethod::Flat {
            flat_prepaid(future, amount, terms.reamortisation, self.contract.rounding)
        } else {
            let due_dates: Vec<NaiveDate> = future.iter().map(|s| s.due_date).collect();
            self.contract.amortise(
                remaining - amount,
                self.period_start(from),
                &due_dates,
                true,
                level,
            )
        };
        let future = self.installments.get_mut(from..).unwrap_or_default();
        let mut changes = Vec::new();
        for (s, (principal, interest)) in future.iter_mut().zip(rows) {
            let change = ScheduleChange {
                number: s.number,
                principal_due: principal + s.principal_paid - s.principal_due,
                interest_due: interest - s.interest_due,
                interest_reduction: Decimal::ZERO,
                prepaid_weight: Decimal::ZERO,
            };
            s.principal_due += change.principal_due;
            s.interest_due += change.interest_due;
            if !change.principal_due.is_zero() || !change.interest_due.is_zero() {
                changes.push(change);
            }
        }
        Some(changes)
    }

    /// Pays everything the payoff quote of `on` holds.
    fn pay_off(&mut self, on: NaiveDate, prepayment_fee: Decimal) -> Vec<Allocation> {
        let mut allocations = Vec::new();
        push(
            &mut allocations,
            None,
            Component::Fee,
            self.fees_outstanding + prepayment_fee,
            prepayment_fee,
        );
        self.fees_outstanding = Decimal::ZERO;
        push(
            &mut allocations,
            None,
            Component::Penalty,
            self.penalties_outstanding,
            Decimal::ZERO,
        );
        self.penalties_outstanding = Decimal::ZERO;
        for index in 0..self.installments.len() {
            let target = self.payoff_interest(index, on);
            let s = &mut self.installments[index];
            let posted = target - s.interest_posted;
            push(
                &mut allocations,
                Some(s.number),
                Component::Interest,
                target - s.interest_paid,
                posted,
            );
            s.interest_posted = target;
            s.interest_paid = target;
            push(
                &mut allocations,
                Some(s.number),
                Component::Principal,
                s.principal_due - s.principal_paid,
                Decimal::ZERO,
            );
            s.principal_paid = s.principal_due;
        }
        allocations
    }

    /// Gives back what `allocations` took, takes back what they made receivable, and undoes the
    /// re-amortisation `schedule` made; refused if later payments paid what it would restore.
    pub fn reverse(
        &mut self,
        allocations: &[Allocation],
        schedule: &[ScheduleChange],
    ) -> Result<(), LedgerError> {
        let mut next = self.clone();
        for a in allocations {
            match (a.component, a.installment) {
                (Component::Fee, _) => next.fees_outstanding += a.amount - a.posted,
                (Component::Penalty, _) => next.penalties_outstanding += a.amount,
                (Component::Prepayment | Component::Overpayment, _) => {}
                (Component::InterestRebate, Some(number)) => {
                    if let Some(s) = next.installments.iter_mut().find(|s| s.number == number) {
                        s.interest_paid += a.amount;
                        s.interest_posted += a.amount;
                    }
                }
                (component, Some(number)) => {
                    if let Some(s) = next.installments.iter_mut().find(|s| s.number == number) {
                        if component == Component::Interest {
                            s.interest_paid -= a.amount;
                            s.interest_posted -= a.posted;
                        } else {
                            s.principal_paid -= a.amount;
                        }
                    }
                }
                (_, None) => {}
            }
        }
        for change in schedule {
            if let Some(s) = next
                .installments
                .iter_mut()
                .find(|s| s.number == change.number)
            {
                s.principal_due -= change.principal_due;
                s.interest_due -= change.interest_due;
                s.interest_reduction -= change.interest_reduction;
                s.prepaid_weight -= change.prepaid_weight;
                if s.principal_paid > s.principal_due || s.interest_posted > s.interest_due {
                    return Err(LedgerError::LaterPaymentsDepend);
                }
            }
        }
        // A later payment's interest recalculation gave back interest this payment paid.
        if next
            .installments
            .iter()
            .any(|s| s.interest_paid < Decimal::ZERO || s.interest_posted < Decimal::ZERO)
        {
            return Err(LedgerError::LaterPaymentsDepend);
        }
        *self = next;
        Ok(())
    }
}

/// A flat loan's later installments after `amount` of their principal is paid ahead: flat
/// interest is charged on the amount lent, so each installment keeps its interest. Under
/// SHORTER_TERM the last installments' principal is repaid first and an installment left with
/// none drops out, its interest with it; under LOWER_INSTALLMENT the principal left is spread
/// evenly (to the unit, the last taking the rest). Each row is (unpaid principal, interest).
fn flat_prepaid(
    future: &[InstallmentState],
    amount: Decimal,
    reamortisation: Reamortisation,
    rounding: crate::domain::contract::Rounding,
) -> Vec<(Decimal, Decimal)> {
    let unpaid: Vec<Decimal> = future
        .iter()
        .map(|s| s.principal_due - s.principal_paid)
        .collect();
    match reamortisation {
        Reamortisation::ShorterTerm => {
            let mut left = amount;
            let mut rows: Vec<(Decimal, Decimal)> = future
                .iter()
                .zip(&unpaid)
                .map(|(s, p)| (*p, s.interest_due))
                .collect();
            for row in rows.iter_mut().rev() {
                let cut = take(row.0, &mut left);
                row.0 -= cut;
                if row.0.is_zero() {
                    row.1 = Decimal::ZERO;
                }
            }
            rows
        }
        Reamortisation::LowerInstallment => {
            let rest: Decimal = unpaid.iter().sum::<Decimal>() - amount;
            let count = Decimal::from(future.len().max(1));
            let share = rounding.unit(rest / count).min(rest);
            let mut left = rest;
            future
                .iter()
                .enumerate()
                .map(|(index, s)| {
                    let principal = if index + 1 == future.len() {
                        left
                    } else {
                        share.min(left)
                    };
                    left -= principal;
                    (principal, s.interest_due)
                })
                .collect()
        }
    }
}

/// Up to `available` out of `left` (nothing if either is not positive).
fn take(available: Decimal, left: &mut Decimal) -> Decimal {
    let taken = available.min(*left).max(Decimal::ZERO);
    *left -= taken;
    taken
}

fn push(
    allocations: &mut Vec<Allocation>,
    installment: Option<i32>,
    component: Component,
    amount: Decimal,
    posted: Decimal,
) {
    if amount > Decimal::ZERO {
        allocations.push(Allocation {
            installment,
            component,
            amount,
            posted,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::contract::{DayCount, InterestMethod, Rounding};
    use proptest::prelude::*;

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    fn ledger(amount: i64, rate_bp: u32, months: u32) -> Ledger {
        ledger_under(DayCount::Thirty360Monthly, amount, rate_bp, months)
    }

    /// A ledger in cents under `day_count`.
    fn ledger_under(day_count: DayCount, amount: i64, rate_bp: u32, months: u32) -> Ledger {
        let start = day("2024-01-15");
        let contract = Contract {
            day_count,
            ..Contract::legacy(Decimal::new(rate_bp.into(), 4))
        };
        let schedule = contract.schedule(Decimal::new(amount, 2), start, None, months);
        Ledger::new(start, contract, &schedule)
    }

    fn money(cents: i64) -> Decimal {
        Decimal::new(cents, 2)
    }

    fn terms(fee_rate: Decimal, reamortisation: Reamortisation) -> Terms {
        Terms {
            prepayment_fee_rate: fee_rate,
            reamortisation,
            allocation: PaymentAllocation::FeesFirst,
            overpayment: Overpayment::Refuse,
        }
    }

    fn plain() -> Terms {
        terms(Decimal::ZERO, Reamortisation::ShorterTerm)
    }

    #[test]
    fn fees_then_interest_then_principal_in_due_order() {
        let mut l = ledger(1_200_000, 1200, 12); // 12,000 at 12%: first interest 120.00
        l.charge_fee(money(5000));
        let applied = l.apply(money(30000), day("2024-02-15"), &plain()).unwrap();
        let a = &applied.allocations;
        assert_eq!((a[0].component, a[0].amount), (Component::Fee, money(5000)));
        assert_eq!(
            (a[1].component, a[1].amount),
            (Component::Interest, money(12000))
        );
        assert_eq!(
            (a[2].component, a[2].amount),
            (Component::Principal, money(13000))
        );
        assert!(!applied.payoff);
        assert!(applied.lines.is_balanced());
        // Paid on its due date, the first installment's interest had not been posted yet
        // (servicing had not run): the payment posts it itself, straight to income.
        assert_eq!(a[1].posted, money(12000));
        assert_eq!(applied.lines.of(Account::InterestIncome), money(-12000));
        assert_eq!(l.balances().next_due_date, Some(l.installments[0].due_date));
    }

    /// Twin loans of 5,000.00 over 6 months at 12%, paid ahead on the same day: one repayment
    /// of 1,000.00, or two of 500.00. The first installment is 862.74 (50.00 interest), so both
    /// leave 4,050.00 of principal; the second 500.00 used to pay installment 2's interest
    /// (41.87) before its period began, leaving 4,091.87.
    #[test]
    fn paying_ahead_in_two_parts_leaves_what_paying_the_sum_at_once_does() {
        let on = day("2024-01-25");
        let mut once = ledger(500_000, 1200, 6);
        once.apply(money(100_000), on, &plain()).unwrap();
        let mut twice = ledger(500_000, 1200, 6);
        twice.apply(money(50_000), on, &plain()).unwrap();
        twice.apply(money(50_000), on, &plain()).unwrap();
        assert_eq!(once.balances().principal_outstanding, money(405_000));
        assert_eq!(twice.balances(), once.balances());
        assert_eq!(twice.installments, once.installments);
    }

    /// Installments first: the current installment is paid whole, then the fee, then the late
    /// fee; fees first takes the same payment for the charges before the installment.
    #[test]
    fn installments_first_pays_the_installment_before_the_charges() {
        let on = day("2024-02-14");
        let installment = money(12000) + money(94_619); // 12,000 at 12% over 12 months
        for (allocation, left_on_installment) in [
            (PaymentAllocation::InstallmentsFirst, Decimal::ZERO),
            (PaymentAllocation::FeesFirst, money(7000)),
        ] {
            let mut l = ledger(1_200_000, 1200, 12);
            assert_eq!(
                l.installments[0].principal_due + l.installments[0].interest_due,
                installment
            );
            l.charge_fee(money(3000));
            l.penalties_outstanding = money(5000);
            let t = Terms {
                allocation,
                ..plain()
            };
            l.apply(installment + money(1000), on, &t).unwrap();
            let first = &l.installments[0];
            assert_eq!(
                first.principal_due + first.interest_due
                    - first.principal_paid
                    - first.interest_paid,
                left_on_installment,
                "{allocation}"
            );
            if allocation == PaymentAllocation::InstallmentsFirst {
                // What is left after the installment goes to the fee.
                assert_eq!(
                    (l.fees_outstanding, l.penalties_outstanding),
                    (money(2000), money(5000))
                );
            }
        }
    }

    #[test]
    fn interest_accrues_evenly_over_the_period_and_is_whole_on_the_due_date() {
        let l = ledger(1_200_000, 1200, 12);
        // 2024-01-15 .. 2024-02-15 is 31 days; 10 of them earn 120.00 × 10 / 31 = 38.71.
        assert_eq!(l.accrued(0, day("2024-01-25")), money(3871));
        assert_eq!(l.accrued(0, day("2024-02-15")), money(12000));
        assert_eq!(l.accrued(1, day("2024-02-15")), Decimal::ZERO);
    }

    #[test]
    fn a_payoff_of_exactly_the_quote_closes_the_loan_and_charges_no_later_interest() {
        let mut l = ledger(1_200_000, 1200, 12);
        let on = day("2024-01-25");
        let quote = l.quote(on, Decimal::new(1, 2)); // 1% prepayment fee
        assert_eq!(quote.principal, money(1_200_000));
        assert_eq!(quote.interest, money(3871));
        assert_eq!(quote.prepayment_fee, money(12000));
        assert_eq!(quote.total, money(1_200_000 + 3871 + 12000));
        let applied = l
            .apply(
                quote.total,
                on,
                &terms(Decimal::new(1, 2), Reamortisation::ShorterTerm),
            )
            .unwrap();
        assert!(applied.payoff);
        assert!(l.is_settled());
        assert!(applied.lines.is_balanced());
        assert_eq!(applied.lines.of(Account::InterestIncome), money(-3871));
        assert_eq!(applied.lines.of(Account::FeeIncome), money(-12000));
        assert_eq!(applied.lines.of(Account::LoanPrincipal), money(-1_200_000));
    }

    #[test]
    fn more_than_the_payoff_is_refused_and_changes_nothing() {
        let mut l = ledger(100_000, 0, 2);
        let before = l.clone();
        assert_eq!(
            l.apply(
                money(100_001),
                day("2024-01-20"),
                &terms(Decimal::ZERO, Reamortisation::ShorterTerm)
            ),
            Err(LedgerError::Overpayment {
                outstanding: money(100_000)
            })
        );
        assert_eq!(l, before);
    }

    /// Under CREDIT terms, money above the payoff pays the loan off and the rest is owed back on
    /// LOAN_OVERPAYMENT; reversing the payment undoes both.
    #[test]
    fn more_than_the_payoff_is_a_credit_when_the_terms_say_so() {
        let mut l = ledger(100_000, 0, 2);
        let before = l.clone();
        let credit = Terms {
            overpayment: Overpayment::Credit,
            ..terms(Decimal::ZERO, Reamortisation::ShorterTerm)
        };
        let applied = l.apply(money(101_000), day("2024-01-20"), &credit).unwrap();
        assert!(applied.payoff && l.is_settled());
        assert_eq!(applied.credit, money(1000));
        assert!(applied.lines.is_balanced());
        assert_eq!(applied.lines.of(Account::LoanOverpayment), money(-1000));
        assert_eq!(applied.lines.of(Account::Cash), money(101_000));
        l.reverse(&applied.allocations, &applied.schedule).unwrap();
        assert_eq!(l, before);
    }

    #[test]
    fn days_past_due_count_from_the_oldest_unpaid_installment() {
        let mut l = ledger(1_200_000, 1200, 12);
        assert_eq!(l.days_past_due(day("2024-02-15"), Decimal::ZERO), 0);
        assert_eq!(l.days_past_due(day("2024-03-20"), Decimal::ZERO), 34);
        let first = l.installments[0].principal_due + l.installments[0].interest_due;
        // Short of the first installment by a cent: in arrears, unless within a tolerance.
        l.apply(first - money(1), day("2024-03-20"), &plain())
            .unwrap();
        assert_eq!(l.days_past_due(day("2024-03-20"), Decimal::ZERO), 34);
        assert_eq!(l.days_past_due(day("2024-03-20"), money(1)), 5);
        l.apply(money(1), day("2024-03-20"), &plain()).unwrap();
        assert_eq!(l.days_past_due(day("2024-03-20"), Decimal::ZERO), 5);
    }

    #[test]
    fn a_prepayment_re_amortises_the_rest_as_the_product_says_and_reverses_exactly() {
        let on = day("2024-01-20");
        for (method, last_nonzero, level_kept) in [
            (Reamortisation::ShorterTerm, false, true),
            (Reamortisation::LowerInstallment, true, false),
        ] {
            let mut l = ledger(1_200_000, 1200, 12);
            let before = l.clone();
            let level = l.installments[1].principal_due + l.installments[1].interest_due;
            let first = l.installments[0].principal_due + l.installments[0].interest_due;
            let t = terms(Decimal::ZERO, method);
            let applied = l.apply(first + money(300_000), on, &t).unwrap();
            let prepaid = applied
                .allocations
                .iter()
                .find(|a| a.component == Component::Prepayment)
                .unwrap();
            assert_eq!(prepaid.amount, money(300_000));
            assert_eq!(
                applied.lines.of(Account::LoanPrincipal),
                -(l.installments[0].principal_due + money(300_000))
            );
            // Principal owed is the schedule's, less the prepayment.
            assert_eq!(
                l.balances().principal_outstanding,
                money(1_200_000) - l.installments[0].principal_due - money(300_000)
            );
            let second = l.installments[1].principal_due + l.installments[1].interest_due;
            assert_eq!(second == level, level_kept, "{method:?}");
            assert_eq!(
                !l.installments[11].principal_due.is_zero(),
                last_nonzero,
                "{method:?}"
            );
            let total_interest: Decimal = l.installments.iter().map(|s| s.interest_due).sum();
            let before_interest: Decimal = before.installments.iter().map(|s| s.interest_due).sum();
            assert!(
                total_interest < before_interest,
                "a prepayment saves interest"
            );
            l.reverse(&applied.allocations, &applied.schedule).unwrap();
            assert_eq!(l, before, "{method:?}");
        }
    }

    #[test]
    fn a_reversal_that_would_undo_what_later_payments_paid_is_refused_and_changes_nothing() {
        let mut l = ledger(1_200_000, 1200, 12);
        let raised = ScheduleChange {
            number: 2,
            principal_due: money(1000),
            interest_due: Decimal::ZERO,
            interest_reduction: Decimal::ZERO,
            prepaid_weight: Decimal::ZERO,
        };
        l.installments[1].principal_paid = l.installments[1].principal_due;
        let before = l.clone();
        assert_eq!(
            l.reverse(&[], &[raised]),
            Err(LedgerError::LaterPaymentsDepend)
        );
        assert_eq!(l, before);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Repay(i64),
        Fee(i64),
        Reverse(usize),
        Wait(u16),
        PayOff,
        Prepay(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1i64..=500_000).prop_map(Op::Repay),
            1 => (1i64..=20_000).prop_map(Op::Fee),
            2 => (0usize..20).prop_map(Op::Reverse),
            2 => (1u16..=60).prop_map(Op::Wait),
            1 => Just(Op::PayOff),
            1 => (100_000i64..=1_000_000).prop_map(Op::Prepay),
        ]
    }

    /// Runs `ops`, checking after each that the journal lines posted so far equal the books.
    fn run(
        ops: &[Op],
        method: Reamortisation,
        allocation: PaymentAllocation,
        day_count: DayCount,
    ) -> Ledger {
        let t = Terms {
            allocation,
            ..terms(Decimal::new(2, 2), method)
        };
        let rate = t.prepayment_fee_rate;
        let mut l = ledger_under(day_count, 2_000_000, 1500, 12);
        let mut on = l.disbursed_on;
        let mut journal = Lines::new();
        journal.transfer(Account::LoanPrincipal, Account::Cash, money(2_000_000));
        let mut repayments: Vec<(Lines, Vec<Allocation>, Vec<ScheduleChange>, bool)> = Vec::new();
        let mut fees: Vec<(Lines, Decimal, bool)> = Vec::new();
        for op in ops {
            match op {
                Op::Repay(cents) | Op::Prepay(cents) => {
                    if let Ok(a) = l.apply(money(*cents), on, &t) {
                        journal = Lines::from_rows(journal_rows(&journal, &a.lines));
                        repayments.push((a.lines, a.allocations, a.schedule, true));
                    }
                }
                Op::PayOff => {
                    let quote = l.quote(on, rate);
                    if quote.total > Decimal::ZERO {
                        let a = l.apply(quote.total, on, &t).unwrap();
                        assert!(a.payoff && l.is_settled());
                        journal = Lines::from_rows(journal_rows(&journal, &a.lines));
                        repayments.push((a.lines, a.allocations, a.schedule, true));
                    }
                }
                Op::Fee(cents) => {
                    let lines = l.charge_fee(money(*cents));
                    journal = Lines::from_rows(journal_rows(&journal, &lines));
                    fees.push((lines, money(*cents), true));
                }
                Op::Wait(days) => on += chrono::TimeDelta::days(i64::from(*days)),
                Op::Reverse(i) => {
                    if let Some((lines, a, schedule, live)) = repayments.get_mut(*i) {
                        if *live && l.reverse(a, schedule).is_ok() {
                            journal = Lines::from_rows(journal_rows(&journal, &lines.negated()));
                            *live = false;
                        }
                    } else if let Some((lines, amount, live)) = fees.get_mut(*i - repayments.len())
                    {
                        if *live && l.reverse_fee(*amount).is_ok() {
                            journal = Lines::from_rows(journal_rows(&journal, &lines.negated()));
                            *live = false;
                        }
                    }
                }
            }
            let b = l.balances();
            assert!(journal.is_balanced());
            assert_eq!(journal.of(Account::LoanPrincipal), b.principal_outstanding);
            assert_eq!(journal.of(Account::LoanInterest), b.interest_outstanding);
            assert_eq!(journal.of(Account::LoanFees), b.fees_outstanding);
            assert!(b.principal_outstanding >= Decimal::ZERO);
            assert!(b.interest_outstanding >= Decimal::ZERO);
            assert!(b.fees_outstanding >= Decimal::ZERO);
            for s in &l.installments {
                assert!(s.principal_paid >= Decimal::ZERO && s.principal_paid <= s.principal_due);
                assert!(s.interest_paid >= Decimal::ZERO && s.interest_paid <= s.interest_posted);
                assert!(s.interest_posted <= s.interest_due);
            }
        }
        l
    }

    fn journal_rows(journal: &Lines, more: &Lines) -> Vec<(Account, Decimal)> {
        Account::ALL
            .iter()
            .map(|a| (*a, journal.of(*a) + more.of(*a)))
            .collect()
    }

    /// `amount` cut at `cuts` (taken modulo it) into positive parts that sum to it.
    fn split(amount: i64, cuts: &[i64]) -> Vec<i64> {
        let mut points: Vec<i64> = cuts.iter().map(|c| c.rem_euclid(amount)).collect();
        points.push(0);
        points.push(amount);
        points.sort_unstable();
        points.dedup();
        points.windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[test]
    fn a_flat_loan_paid_ahead_keeps_its_interest_on_the_amount_lent() {
        // 12,000.00 flat at 12% over 12 months under the old books' twelfth: 120.00 of interest
        // every month, on the amount lent, whatever is repaid.
        let start = day("2024-01-15");
        let contract = Contract {
            interest_method: InterestMethod::Flat,
            ..Contract::legacy(Decimal::new(12, 2))
        };
        let schedule = contract.schedule(money(1_200_000), start, None, 12);
        assert!(schedule.iter().all(|i| i.interest == money(12000)));
        for method in [
            Reamortisation::ShorterTerm,
            Reamortisation::LowerInstallment,
        ] {
            let mut l = Ledger::new(start, contract, &schedule);
            let first = l.installments[0].principal_due + l.installments[0].interest_due;
            let applied = l
                .apply(
                    first + money(300_000),
                    day("2024-01-20"),
                    &terms(Decimal::ZERO, method),
                )
                .unwrap();
            let left: Decimal = l
                .installments
                .iter()
                .map(|s| s.principal_due - s.principal_paid)
                .sum();
            assert_eq!(
                left,
                money(1_200_000) - money(100_000) - money(300_000),
                "{method:?}"
            );
            match method {
                // The last three installments (1,000.00 of principal each) are repaid and drop
                // out with their interest; the others keep 120.00.
                Reamortisation::ShorterTerm => {
                    assert!(l.installments[1..9]
                        .iter()
                        .all(|s| s.interest_due == money(12000)));
                    assert!(l.installments[9..]
                        .iter()
                        .all(|s| s.principal_due.is_zero() && s.interest_due.is_zero()));
                }
                // 8,000.00 over the eleven left, interest unchanged.
                Reamortisation::LowerInstallment => {
                    assert!(l.installments[1..]
                        .iter()
                        .all(|s| s.interest_due == money(12000)));
                    assert_eq!(l.installments[1].principal_due, money(72727));
                }
            }
            let before = {
                let mut b = Ledger::new(start, contract, &schedule);
                b.apply(first, day("2024-01-20"), &terms(Decimal::ZERO, method))
                    .unwrap();
                b
            };
            assert_ne!(l, before);
            l.reverse(&applied.allocations, &applied.schedule).unwrap();
            assert_eq!(l, Ledger::new(start, contract, &schedule), "{method:?}");
        }
    }

    #[test]
    fn principal_paid_ahead_stops_earning_interest_from_its_value_date() {
        // 12,000.00 at 12% under actual/365 from 15 January: the first period is 31 days,
        // 12,000 × 0.12 × 31/365 = 122.30. Paid on 25 January with 1,000.00 more, 21 days
        // before the due date: the principal paid ahead, x, earns nothing for those 21 days, so
        // the installment owes 122.30 − x × 0.12 × 21/365, and what it had been paid beyond
        // that is principal too. x = 1,006.95 and the interest 115.35 satisfy both.
        let mut l = ledger_under(DayCount::Actual365Fixed, 1_200_000, 1200, 12);
        assert_eq!(l.installments[0].interest_due, money(12230));
        let first = l.installments[0].principal_due + l.installments[0].interest_due;
        let before = l.clone();
        let on = day("2024-01-25");
        let applied = l.apply(first + money(100_000), on, &plain()).unwrap();
        let s = &l.installments[0];
        assert_eq!(
            (s.interest_due, s.interest_reduction),
            (money(11535), money(695))
        );
        let ahead: Decimal = applied
            .allocations
            .iter()
            .filter(|a| a.component == Component::Prepayment)
            .map(|a| a.amount)
            .sum();
        assert_eq!(ahead, money(100_695));
        let defined = Rounding::CENTS.unit(
            money(12230) - ahead * Decimal::new(12, 2) * Decimal::from(21) / Decimal::from(365),
        );
        assert_eq!(s.interest_due, defined);
        assert!(applied.lines.is_balanced());
        assert_eq!(
            applied.lines.of(Account::InterestIncome),
            -(money(11535)),
            "the interest paid ahead, net of the rebate"
        );
        // The next period starts from the lower balance; the reversal restores everything.
        l.reverse(&applied.allocations, &applied.schedule).unwrap();
        assert_eq!(l, before);
        // The old books' convention does not recalculate.
        let mut old = ledger(1_200_000, 1200, 12);
        let first = old.installments[0].principal_due + old.installments[0].interest_due;
        old.apply(first + money(100_000), on, &plain()).unwrap();
        assert_eq!(old.installments[0].interest_reduction, Decimal::ZERO);
    }

    proptest! {
        /// Any split of an amount paid ahead into parts on one day leaves the books, the
        /// schedule included, exactly as one payment of the sum would, whatever the day, the
        /// re-amortisation and the day count (whose interest recalculation is solved for all
        /// the principal paid ahead in the period).
        #[test]
        fn paying_in_parts_on_one_day_equals_paying_the_sum(
            amount in 1i64..900_000,
            cuts in prop::collection::vec(1i64..1_000_000, 0..5),
            offset in 0u64..200,
            shorter in any::<bool>(),
            day_count in prop::sample::select(DayCount::ALL),
        ) {
            let method = if shorter { Reamortisation::ShorterTerm } else { Reamortisation::LowerInstallment };
            let terms = terms(Decimal::ZERO, method);
            let on = day("2024-01-15") + chrono::Days::new(offset);
            let mut once = ledger_under(day_count, 1_000_000, 1200, 12);
            let fits = once.quote(on, Decimal::ZERO).total > money(amount);
            prop_assume!(fits);
            once.apply(money(amount), on, &terms).unwrap();
            let mut parts = ledger_under(day_count, 1_000_000, 1200, 12);
            for part in split(amount, &cuts) {
                parts.apply(money(part), on, &terms).unwrap();
            }
            prop_assert_eq!(parts.balances(), once.balances());
            prop_assert_eq!(&parts.installments, &once.installments);
        }

        #[test]
        fn the_books_equal_the_journal_never_go_negative_and_replay_identically(ops in prop::collection::vec(op(), 0..60)) {
            for day_count in [DayCount::Thirty360Monthly, DayCount::Actual365Fixed, DayCount::ActualActualIsda] {
                for method in [Reamortisation::ShorterTerm, Reamortisation::LowerInstallment] {
                    for allocation in [PaymentAllocation::FeesFirst, PaymentAllocation::InstallmentsFirst] {
                        let ledger = run(&ops, method, allocation, day_count);
                        prop_assert_eq!(ledger, run(&ops, method, allocation, day_count));
                    }
                }
            }
        }
    }
}
