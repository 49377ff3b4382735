//! Loans granted elsewhere, replayed here as their history happened: each is booked and paid out
//! on its disbursement day with the schedule its contract gives, and its repayments are applied
//! in time order by the ledger's own engine, each after the servicing every loan gets (interest
//! falling due, late fees, default) has run for the loan up to the repayment's day; then
//! servicing runs to today. An imported loan thus has the rows a loan made here has.
//!
//! Many loans go through each statement: a chunk's repayments are taken day by day, and a day's
//! repayments on distinct loans are serviced, applied and posted together. A loan whose history
//! the ledger refuses, or whose replayed balances differ from what the source says it owes by
//! more than the tolerance, is refused: the chunk is rolled back to its savepoint and replayed
//! without it. Nothing of a refused loan stays.

mod repo;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use self::repo::{HistoricalPayment, NewLoan, ProductTerms, Register, SAVEPOINT};
use super::journal::{Account, EntryKind, Lines};
use super::model::LoanStatus;
use super::repo::{LoanChange, LoanPlan, Movement};
use super::{Ledger, LedgerError, LockedLoan};
use crate::domain::money::Installment;
use crate::platform::error::ApiError;

/// A repayment of the source's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRepayment {
    pub paid_at: DateTime<Utc>,
    pub amount: Decimal,
}

/// What the source says the loan owes at cut-over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SourceBalances {
    pub principal: Decimal,
    pub interest: Decimal,
    pub fees: Decimal,
    pub penalties: Decimal,
}

/// A loan of the source, resolved against this system (its customer found, its line known).
#[derive(Debug, Clone)]
pub struct SourceLoan {
    pub line_number: i32,
    pub source_reference: String,
    pub customer_id: Uuid,
    pub product_code: String,
    pub amount: Decimal,
    pub interest_rate: Decimal,
    pub term_months: i32,
    pub term_periods: Option<i32>,
    pub first_repayment_date: Option<NaiveDate>,
    pub disbursed_at: DateTime<Utc>,
    /// In time order.
    pub repayments: Vec<SourceRepayment>,
    pub balances: SourceBalances,
}

/// What became of a source loan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Imported(Uuid),
    /// An earlier import booked it (the same source reference).
    AlreadyImported(Uuid),
    Refused(String),
}

/// One chunk's replay, by one principal, for today.
pub struct Replay<'a> {
    pub source_system: &'a str,
    pub batch_id: &'a str,
    pub today: NaiveDate,
    /// How far a replayed balance may be from the source's and still be imported.
    pub tolerance: Decimal,
}

impl Replay<'_> {
    /// Replays `loans` in the caller's transaction; one outcome per loan, in order.
    pub async fn run(
        &self,
        conn: &mut PgConnection,
        loans: &[SourceLoan],
    ) -> Result<Vec<Outcome>, ApiError> {
        repo::start(conn).await?;
        let mut outcomes: Vec<Option<Outcome>> = vec![None; loans.len()];
        let references: Vec<String> = loans.iter().map(|l| l.source_reference.clone()).collect();
        let known: HashMap<String, Uuid> =
            repo::already_imported(conn, self.source_system, &references)
                .await?
                .into_iter()
                .collect();
        let mut first_line: HashMap<&str, i32> = HashMap::new();
        for (outcome, loan) in outcomes.iter_mut().zip(loans) {
            if let Some(loan_id) = known.get(&loan.source_reference) {
                *outcome = Some(Outcome::AlreadyImported(*loan_id));
            } else if let Some(line) = first_line.get(loan.source_reference.as_str()) {
                *outcome = Some(Outcome::Refused(format!(
                    "source_reference {} is also on line {line}",
                    loan.source_reference
                )));
            } else {
                first_line.insert(&loan.source_reference, loan.line_number);
            }
        }
        loop {
            let todo: Vec<usize> = (0..loans.len())
                .filter(|&i| outcomes[i].is_none())
                .collect();
            if todo.is_empty() {
                break;
            }
            repo::savepoint(conn, SAVEPOINT).await?;
            let attempt = self.attempt(conn, loans, &todo).await?;
            if attempt.refused.is_empty() {
                repo::check_keys(conn).await?;
                repo::savepoint(conn, repo::RELEASE).await?;
                for (i, loan_id) in attempt.imported {
                    outcomes[i] = Some(Outcome::Imported(loan_id));
                }
                break;
            }
            repo::savepoint(conn, repo::ROLLBACK).await?;
            for (i, why) in attempt.refused {
                outcomes[i] = Some(Outcome::Refused(why));
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Refused("not replayed".into())))
            .collect())
    }

    /// Books and replays the loans `todo`; what it imported, or what it refused (then the
    /// caller rolls it back).
    async fn attempt(
        &self,
        conn: &mut PgConnection,
        loans: &[SourceLoan],
        todo: &[usize],
    ) -> Result<Attempt, ApiError> {
        let mut refused = Vec::new();
        let planned = self.plan(conn, loans, todo, &mut refused).await?;
        if !refused.is_empty() || planned.is_empty() {
            return Ok(Attempt::refusing(refused));
        }
        let mut books = Books::pay_out(conn, loans, &planned, &mut refused).await?;
        if !refused.is_empty() {
            return Ok(Attempt::refusing(refused));
        }
        books.repay(conn, loans, &planned, &mut refused).await?;
        let live: Vec<usize> = (0..planned.len())
            .filter(|&p| !refused.iter().any(|(i, _)| *i == planned[p].index))
            .collect();
        let (ids, dates) = books.keys(&live);
        repo::service(conn, self.today, &ids, &dates).await?;
        let standings: HashMap<Uuid, repo::Standing> = repo::standings(conn, &ids, &dates)
            .await?
            .into_iter()
            .map(|s| (s.loan_id, s))
            .collect();
        for &p in &live {
            let plan = &planned[p];
            let source = &loans[plan.index];
            let Some(standing) = standings.get(&books.loan(p).loan_id) else {
                continue;
            };
            if let Some(why) = self.differs(&source.balances, standing) {
                refused.push((plan.index, why));
            }
        }
        if !refused.is_empty() {
            return Ok(Attempt::refusing(refused));
        }
        let register = Register {
            source_system: self.source_system,
            batch_id: self.batch_id,
            references: live
                .iter()
                .map(|&p| loans[planned[p].index].source_reference.as_str())
                .collect(),
            loan_ids: ids,
            customer_ids: live.iter().map(|&p| books.loan(p).customer_id).collect(),
            line_numbers: live
                .iter()
                .map(|&p| loans[planned[p].index].line_number)
                .collect(),
        };
        repo::register(conn, &register).await?;
        Ok(Attempt {
            imported: live
                .iter()
                .map(|&p| (planned[p].index, books.loan(p).loan_id))
                .collect(),
            refused,
        })
    }

    /// Each loan's terms, schedule and business days; refuses what cannot be booked.
    async fn plan(
        &self,
        conn: &mut PgConnection,
        loans: &[SourceLoan],
        todo: &[usize],
        refused: &mut Vec<(usize, String)>,
    ) -> Result<Vec<Planned>, ApiError> {
        let mut codes: Vec<String> = todo
            .iter()
            .map(|&i| loans[i].product_code.clone())
            .collect();
        codes.sort();
        codes.dedup();
        let products: HashMap<String, ProductTerms> = repo::product_terms(conn, &codes)
            .await?
            .into_iter()
            .map(|p| (p.product_code.clone(), p))
            .collect();
        let moments: Vec<DateTime<Utc>> = todo
            .iter()
            .flat_map(|&i| {
                std::iter::once(loans[i].disbursed_at)
                    .chain(loans[i].repayments.iter().map(|r| r.paid_at))
            })
            .collect();
        let mut days = repo::business_dates(conn, &moments).await?.into_iter();
        let mut planned = Vec::with_capacity(todo.len());
        for &i in todo {
            let loan = &loans[i];
            let disbursed_on = days.next().unwrap_or(self.today);
            let repayment_days: Vec<NaiveDate> = (0..loan.repayments.len())
                .map(|_| days.next().unwrap_or(self.today))
                .collect();
            let Some(product) = products.get(&loan.product_code) else {
                refused.push((i, format!("unknown product_code {}", loan.product_code)));
                continue;
            };
            match schedule(loan, product, disbursed_on) {
                Ok(schedule) => planned.push(Planned {
                    index: i,
                    product: product.clone(),
                    schedule,
                    disbursed_on,
                    repayment_days,
                }),
                Err(why) => refused.push((i, why)),
            }
        }
        Ok(planned)
    }

    /// Why the replayed balances are not the source's, if they are not (within the tolerance).
    fn differs(&self, source: &SourceBalances, replayed: &repo::Standing) -> Option<String> {
        let pairs = [
            (
                "principal",
                source.principal,
                replayed.principal_outstanding,
            ),
            ("interest", source.interest, replayed.interest_outstanding),
            ("fees", source.fees, replayed.fees_outstanding),
            (
                "penalties",
                source.penalties,
                replayed.penalties_outstanding,
            ),
        ];
        let off: Vec<String> = pairs
            .iter()
            .filter(|(_, source, replayed)| (source - replayed).abs() > self.tolerance)
            .map(|(name, source, replayed)| format!("{name} {replayed} (source {source})"))
            .collect();
        (!off.is_empty()).then(|| {
            format!(
                "the replayed balances differ from the source's by more than {}: {}",
                self.tolerance,
                off.join(", ")
            )
        })
    }
}

struct Attempt {
    imported: Vec<(usize, Uuid)>,
    refused: Vec<(usize, String)>,
}

impl Attempt {
    /// An attempt that refused these loans: the caller rolls it back and tries without them.
    fn refusing(refused: Vec<(usize, String)>) -> Self {
        Self {
            imported: Vec::new(),
            refused,
        }
    }
}

/// A loan ready to book.
struct Planned {
    /// Its place in the chunk.
    index: usize,
    product: ProductTerms,
    schedule: Vec<Installment>,
    disbursed_on: NaiveDate,
    /// The business day of each repayment.
    repayment_days: Vec<NaiveDate>,
}

/// The schedule a loan's contract gives from its disbursement day, or why it cannot be booked.
fn schedule(
    loan: &SourceLoan,
    product: &ProductTerms,
    disbursed_on: NaiveDate,
) -> Result<Vec<Installment>, String> {
    let plan = LoanPlan {
        interest_rate: loan.interest_rate,
        day_count: product.day_count,
        amortization: product.amortization,
        interest_method: product.interest_method,
        frequency: product.frequency,
        currency_digits: product.currency_digits,
        installment_multiple: product.installment_multiple,
        periods: loan.term_periods.unwrap_or(loan.term_months),
        first_repayment_date: loan.first_repayment_date,
    };
    let rounding = plan.contract().rounding;
    if !rounding.allows(loan.amount) {
        return Err(format!(
            "amount: {} has more decimals than {} has",
            loan.amount, product.currency
        ));
    }
    if let Some(r) = loan.repayments.iter().find(|r| !rounding.allows(r.amount)) {
        return Err(format!(
            "repayments: {} has more decimals than {} has",
            r.amount, product.currency
        ));
    }
    if product.frequency.months_spanned(plan.periods) != loan.term_months {
        return Err(format!(
            "term_months: {} installments {} span {} months, not {}",
            plan.periods,
            product.frequency,
            product.frequency.months_spanned(plan.periods),
            loan.term_months
        ));
    }
    let schedule = super::schedule_of(&plan, loan.amount, disbursed_on)
        .ok_or_else(|| "term_periods must be positive".to_owned())?;
    if schedule.is_empty() {
        return Err("the contract gives no installments".into());
    }
    Ok(schedule)
}

/// The booked loans of an attempt, by their place among the planned ones.
struct Books {
    loans: Vec<LockedLoan>,
}

impl Books {
    fn loan(&self, p: usize) -> &LockedLoan {
        &self.loans[p]
    }

    fn keys(&self, live: &[usize]) -> (Vec<Uuid>, Vec<DateTime<Utc>>) {
        live.iter()
            .map(|&p| (self.loans[p].loan_id, self.loans[p].application_date))
            .unzip()
    }

    /// Books the loans, writes their schedules and pays them out on their disbursement day.
    async fn pay_out(
        conn: &mut PgConnection,
        loans: &[SourceLoan],
        planned: &[Planned],
        refused: &mut Vec<(usize, String)>,
    ) -> Result<Self, ApiError> {
        let new: Vec<NewLoan> = planned
            .iter()
            .map(|p| {
                let source = &loans[p.index];
                NewLoan {
                    loan_id: Uuid::now_v7(),
                    customer_id: source.customer_id,
                    product: &p.product,
                    amount: source.amount,
                    interest_rate: source.interest_rate,
                    term_months: source.term_months,
                    term_periods: source.term_periods,
                    first_repayment_date: source.first_repayment_date,
                    disbursed_at: source.disbursed_at,
                    maturity_date: p
                        .schedule
                        .last()
                        .map_or(p.disbursed_on, |last| last.due_date),
                }
            })
            .collect();
        let booked: HashMap<Uuid, (String, i32)> = repo::insert_loans(conn, &new)
            .await?
            .into_iter()
            .map(|(id, number, version)| (id, (number, version)))
            .collect();
        for (n, p) in new.iter().zip(planned) {
            let pinned = booked.get(&n.loan_id).map(|(_, version)| *version);
            if pinned != Some(p.product.terms_version) {
                refused.push((
                    p.index,
                    "the product's terms changed while the loan was booked: send it again".into(),
                ));
            }
        }
        if !refused.is_empty() {
            return Ok(Self { loans: Vec::new() });
        }
        let schedules: Vec<(Uuid, Uuid, &[Installment])> = new
            .iter()
            .zip(planned)
            .map(|(n, p)| (n.loan_id, n.customer_id, p.schedule.as_slice()))
            .collect();
        repo::insert_schedules(conn, &schedules).await?;
        let ids: Vec<Uuid> = new.iter().map(|n| n.loan_id).collect();
        let by_id: HashMap<Uuid, LockedLoan> = repo::loans(conn, &ids)
            .await?
            .into_iter()
            .map(|l| (l.loan_id, l))
            .collect();
        let loans: Vec<LockedLoan> = ids
            .iter()
            .map(|id| {
                by_id
                    .get(id)
                    .cloned()
                    .ok_or_else(|| ApiError::Internal(format!("booked loan {id} not found")))
            })
            .collect::<Result<_, _>>()?;
        let payments: Vec<HistoricalPayment> = loans
            .iter()
            .map(|l| HistoricalPayment {
                payment_id: Uuid::now_v7(),
                transaction_id: format!("DSB-{}", l.loan_number),
                loan_id: l.loan_id,
                customer_id: l.customer_id,
                payment_type: "DISBURSEMENT",
                amount: l.loan_amount,
                paid_at: l.disbursement_date.unwrap_or_default(),
            })
            .collect();
        repo::insert_payments(conn, &payments).await?;
        let lines: Vec<Lines> = loans
            .iter()
            .map(|l| {
                let mut lines = Lines::new();
                lines.transfer(Account::LoanPrincipal, Account::Cash, l.loan_amount);
                lines
            })
            .collect();
        let movements: Vec<Movement> = loans
            .iter()
            .zip(planned)
            .zip(&payments)
            .zip(&lines)
            .map(|(((l, p), payment), lines)| Movement {
                loan_id: l.loan_id,
                application_date: l.application_date,
                customer_id: l.customer_id,
                kind: EntryKind::Disbursement,
                business_date: p.disbursed_on,
                payment_id: Some(payment.payment_id),
                reverses: None,
                lines,
                installments: Vec::new(),
                allocations: &[],
                schedule: &[],
                loan: LoanChange {
                    total_paid: Decimal::ZERO,
                    recovered: Decimal::ZERO,
                    next_due_date: p.schedule.first().map(|i| i.due_date),
                    status: None,
                },
            })
            .collect();
        super::repo::post_many(conn, &movements).await?;
        Ok(Self { loans })
    }

    /// Applies every repayment in time order, a day (and, for two on one loan, a turn) at a
    /// time, each after servicing the loan to its day.
    async fn repay(
        &mut self,
        conn: &mut PgConnection,
        loans: &[SourceLoan],
        planned: &[Planned],
        refused: &mut Vec<(usize, String)>,
    ) -> Result<(), ApiError> {
        // (day, turn) → (planned loan, repayment): a loan's second repayment on a day comes in
        // the day's second turn.
        let mut steps: BTreeMap<(NaiveDate, usize), Vec<(usize, usize)>> = BTreeMap::new();
        for (p, plan) in planned.iter().enumerate() {
            let mut turn = 0;
            let mut last = None;
            for (r, day) in plan.repayment_days.iter().enumerate() {
                turn = if last == Some(*day) { turn + 1 } else { 0 };
                last = Some(*day);
                steps.entry((*day, turn)).or_default().push((p, r));
            }
        }
        let mut failed = vec![false; planned.len()];
        for ((day, _), step) in steps {
            let step: Vec<(usize, usize)> = step.into_iter().filter(|(p, _)| !failed[*p]).collect();
            if step.is_empty() {
                continue;
            }
            let (ids, dates): (Vec<Uuid>, Vec<DateTime<Utc>>) = step
                .iter()
                .map(|(p, _)| (self.loans[*p].loan_id, self.loans[*p].application_date))
                .unzip();
            repo::service(conn, day, &ids, &dates).await?;
            let standings: HashMap<Uuid, repo::Standing> = repo::standings(conn, &ids, &dates)
                .await?
                .into_iter()
                .map(|s| (s.loan_id, s))
                .collect();
            let mut installments: HashMap<Uuid, Vec<super::InstallmentState>> = HashMap::new();
            for (loan_id, state) in repo::installments(conn, &ids).await? {
                installments.entry(loan_id).or_default().push(state);
            }
            let mut applied = Vec::with_capacity(step.len());
            for (p, r) in step {
                let repayment = loans[planned[p].index].repayments[r];
                let loan = &mut self.loans[p];
                let Some(standing) = standings.get(&loan.loan_id) else {
                    continue;
                };
                loan.status = standing.status;
                loan.fees_outstanding = standing.fees_outstanding;
                loan.penalties_outstanding = standing.penalties_outstanding;
                loan.business_date = day;
                let before = Ledger {
                    disbursed_on: planned[p].disbursed_on,
                    contract: loan.contract(),
                    fees_outstanding: standing.fees_outstanding,
                    penalties_outstanding: standing.penalties_outstanding,
                    installments: installments.remove(&loan.loan_id).unwrap_or_default(),
                };
                let refusal = |why: String| {
                    format!(
                        "repayment {} of {} on {day}: {why}",
                        r + 1,
                        repayment.amount
                    )
                };
                if !matches!(loan.status, LoanStatus::Disbursed | LoanStatus::Defaulted) {
                    failed[p] = true;
                    refused.push((
                        planned[p].index,
                        refusal(format!("the loan is {} by then", loan.status)),
                    ));
                    continue;
                }
                let mut after = before.clone();
                match after.apply(repayment.amount, day, &loan.terms()) {
                    Ok(done) => applied.push((p, r, before, after, done)),
                    Err(error) => {
                        failed[p] = true;
                        refused.push((planned[p].index, refusal(describe(error))));
                    }
                }
            }
            let payments: Vec<HistoricalPayment> = applied
                .iter()
                .map(|(p, r, ..)| {
                    let loan = &self.loans[*p];
                    HistoricalPayment {
                        payment_id: Uuid::now_v7(),
                        transaction_id: format!("IMP-{}-{}", loan.loan_number, r + 1),
                        loan_id: loan.loan_id,
                        customer_id: loan.customer_id,
                        payment_type: "REPAYMENT",
                        amount: loans[planned[*p].index].repayments[*r].amount,
                        paid_at: loans[planned[*p].index].repayments[*r].paid_at,
                    }
                })
                .collect();
            repo::insert_payments(conn, &payments).await?;
            let movements: Vec<Movement> = applied
                .iter()
                .zip(&payments)
                .map(|((p, _, before, after, done), payment)| {
                    super::repayment(
                        &self.loans[*p],
                        before,
                        after,
                        done,
                        payment.payment_id,
                        payment.amount,
                    )
                })
                .collect();
            super::repo::post_many(conn, &movements).await?;
        }
        Ok(())
    }
}

fn describe(error: LedgerError) -> String {
    match error {
        LedgerError::Overpayment { outstanding } => {
            format!("more than the {outstanding} it took to pay the loan off")
        }
        LedgerError::NotAPayoff { payoff } => {
            format!("more than the schedule takes, and not the payoff of {payoff}")
        }
        LedgerError::FeeAlreadyPaid | LedgerError::LaterPaymentsDepend => {
            "refused by the ledger".into()
        }
    }
}
