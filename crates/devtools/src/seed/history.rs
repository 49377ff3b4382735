//! A generated loan's life, played through the ledger's own engine as the service would have
//! recorded it: the schedule and the repayments (most borrowers current, some in arrears, some
//! paying off early, a few defaulting). Servicing through today is left to the service's own
//! servicing, which the seed runs once the loans are loaded. The same loan always plays out the same way: its random choices come from its
//! own id, so the seed can replay a loan to write its rows table by table.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::generated::{uuid_v7, Loan, Rng};
use lakehouse_api::domain::contract::Contract;
use lakehouse_api::domain::ledger::journal::{Account, EntryKind, Lines};
use lakehouse_api::domain::ledger::model::LoanStatus;
use lakehouse_api::domain::ledger::{
    Allocation, Ledger, Overpayment, PaymentAllocation, Reamortisation, Terms as LoanTerms,
};

/// What the product charges, as `core.products` has it.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Terms {
    pub annual_interest_rate: Decimal,
    pub prepayment_fee_rate: Decimal,
    pub reamortisation: Reamortisation,
    pub allocation: PaymentAllocation,
    pub overpayment: Overpayment,
}

impl Terms {
    fn of_loan(&self) -> LoanTerms {
        LoanTerms {
            prepayment_fee_rate: self.prepayment_fee_rate,
            reamortisation: self.reamortisation,
            allocation: self.allocation,
            overpayment: self.overpayment,
        }
    }
}

/// Months every generated loan runs.
pub const TERM_MONTHS: u32 = 24;

/// A journal entry of the history.
pub struct Entry {
    pub id: Uuid,
    pub kind: EntryKind,
    pub business_date: NaiveDate,
    pub posted_at: DateTime<Utc>,
    pub payment_id: Option<Uuid>,
    pub installment: Option<i32>,
    pub lines: Lines,
}

/// A repayment of the history and where its money went.
pub struct Repayment {
    pub id: Uuid,
    pub number: u32,
    pub paid_at: DateTime<Utc>,
    pub amount: Decimal,
    pub allocations: Vec<Allocation>,
}

pub struct History {
    pub books: Ledger,
    pub repayments: Vec<Repayment>,
    pub entries: Vec<Entry>,
    pub status: LoanStatus,
    pub closed_at: Option<DateTime<Utc>>,
    pub total_paid: Decimal,
}

impl History {
    pub fn disbursed_at(loan: &Loan) -> DateTime<Utc> {
        loan.applied_at + Duration::days(1)
    }
}

/// How a borrower behaves.
enum Conduct {
    /// Pays every installment by its due date.
    Current,
    /// Stops paying `missed` installments before today.
    InArrears { missed: usize },
    /// Pays some installments, then pays the loan off on a day.
    PaysOff,
    /// Pays at most one installment, then never again.
    Defaults,
}

/// Plays `loan` out until `now`; repayments before `earliest` are made late, on a day after
/// it (the payments' partitions cover only the recent months).
pub fn play(
    loan: &Loan,
    terms: &Terms,
    now: DateTime<Utc>,
    earliest: DateTime<Utc>,
    max_payments: u32,
) -> History {
    let today = now.date_naive();
    let mut rng = Rng::new((loan.id.as_u128() as u64) ^ 0x5eed_1e55);
    let disbursed_at = History::disbursed_at(loan);
    let disbursed_on = disbursed_at.date_naive();
    // The generated products keep the contract of the books before conventions (the seed's
    // products say so).
    let contract = Contract::legacy(terms.annual_interest_rate);
    let schedule = contract.schedule(loan.amount, disbursed_on, None, TERM_MONTHS);
    let mut books = Ledger::new(disbursed_on, contract, &schedule);
    let mut entries = Vec::new();
    let mut disbursement = Lines::new();
    disbursement.transfer(Account::LoanPrincipal, Account::Cash, loan.amount);
    entries.push(Entry {
        id: uuid_v7(disbursed_at, &mut rng),
        kind: EntryKind::Disbursement,
        business_date: disbursed_on,
        posted_at: disbursed_at,
        payment_id: None,
        installment: None,
        lines: disbursement,
    });

    let due: Vec<usize> = (0..books.installments.len())
        .filter(|&i| books.installments[i].due_date <= today)
        .collect();
    let conduct = match rng.below(100) {
        0..=4 => Conduct::Defaults,
        5..=19 => Conduct::InArrears {
            missed: 1 + rng.below(2) as usize,
        },
        20..=29 => Conduct::PaysOff,
        _ => Conduct::Current,
    };
    let paying = match conduct {
        Conduct::Current | Conduct::PaysOff => due.len(),
        Conduct::InArrears { missed } => due.len().saturating_sub(missed),
        Conduct::Defaults => due.len().min(1),
    };
    // The installments paid, in at most `max_payments` payments, each on the due date of the
    // last installment it covers (or late, after `earliest`).
    let groups = (max_payments as usize).max(1).min(paying.max(1));
    let mut repayments = Vec::new();
    let mut paid = 0;
    for group in 0..groups {
        let until = paying * (group + 1) / groups;
        if until == paid {
            continue;
        }
        let amount: Decimal = books.installments[paid..until]
            .iter()
            .map(|s| s.principal_due + s.interest_due)
            .sum();
        let due_on = books.installments[until - 1].due_date;
        let at = at_time(due_on, &mut rng)
            .max(last_paid(&repayments, disbursed_at))
            .max(earliest + Duration::minutes(rng.below(60 * 24 * 30)));
        if at > now {
            break;
        }
        paid = until;
        pay(
            &mut books,
            &mut repayments,
            &mut entries,
            &mut rng,
            at,
            amount,
            terms,
        );
    }
    if let Conduct::PaysOff = conduct {
        let since = last_paid(&repayments, disbursed_at).max(earliest);
        let span = (now - since).num_minutes().max(1);
        let at = since + Duration::minutes(rng.below(span as u64));
        if at <= now {
            let amount = books
                .quote(at.date_naive(), terms.prepayment_fee_rate)
                .total;
            pay(
                &mut books,
                &mut repayments,
                &mut entries,
                &mut rng,
                at,
                amount,
                terms,
            );
        }
    }

    // Servicing (interest falling due, late fees, default) is the service's own: the seed runs
    // it for today over every loan once they are loaded.
    let settled = books.is_settled();
    let status = if settled {
        LoanStatus::Closed
    } else {
        LoanStatus::Disbursed
    };
    History {
        closed_at: settled.then_some(last_paid(&repayments, disbursed_at)),
        total_paid: repayments.iter().map(|r| r.amount).sum(),
        books,
        repayments,
        entries,
        status,
    }
}

fn at_time(day: NaiveDate, rng: &mut Rng) -> DateTime<Utc> {
    day.and_hms_opt(8, 0, 0).unwrap_or_default().and_utc() + Duration::minutes(rng.below(60 * 10))
}

/// When the last repayment was made (the disbursement, before any).
fn last_paid(repayments: &[Repayment], disbursed_at: DateTime<Utc>) -> DateTime<Utc> {
    repayments.last().map_or(disbursed_at, |r| r.paid_at)
}

/// One repayment through the engine, with its entry; nothing if the engine refuses it.
fn pay(
    books: &mut Ledger,
    repayments: &mut Vec<Repayment>,
    entries: &mut Vec<Entry>,
    rng: &mut Rng,
    at: DateTime<Utc>,
    amount: Decimal,
    terms: &Terms,
) {
    if amount <= Decimal::ZERO {
        return;
    }
    let Ok(applied) = books.apply(amount, at.date_naive(), &terms.of_loan()) else {
        return;
    };
    let id = uuid_v7(at, rng);
    entries.push(Entry {
        id: uuid_v7(at, rng),
        kind: if applied.payoff {
            EntryKind::Payoff
        } else {
            EntryKind::Repayment
        },
        business_date: at.date_naive(),
        posted_at: at,
        payment_id: Some(id),
        installment: None,
        lines: applied.lines,
    });
    repayments.push(Repayment {
        id,
        number: repayments.len() as u32 + 1,
        paid_at: at,
        amount,
        allocations: applied.allocations,
    });
}
