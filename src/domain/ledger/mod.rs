//! Every money movement on a loan: disbursement, repayment, payoff, fee, reversal, write-off
//! and recovery, applied exactly under the loan's row lock and journaled in the same statement
//! as the balances they move. Servicing (interest falling due, late fees, default) is set-based
//! SQL over every loan (`servicing`). Loans and payments call it; it calls nothing above the
//! database layer.

mod engine;
pub mod journal;
pub mod model;
pub mod replay;
mod repo;
pub mod servicing;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

pub use self::engine::{
    Allocation, Applied, Balances, Component, InstallmentState, Ledger, LedgerError, Overpayment,
    PaymentAllocation, Quote, Reamortisation, ScheduleChange, Terms,
};
use self::journal::{Account, EntryKind, Lines};
use self::model::{LoanStatus, Payment, PaymentKind, PaymentStatus};
use self::repo::{InstallmentChange, LoanChange, Movement, NewPayment};
pub use self::repo::{LoanBalances, LockedLoan};
use crate::domain::contract::{check_units, Contract};
use crate::platform::db::errors::ResultExt;
use crate::platform::error::{ApiError, FieldError};

pub fn overpayment(outstanding: Decimal) -> ApiError {
    ApiError::Unprocessable {
        detail: format!("the amount is more than the {outstanding} it takes to pay the loan off"),
        errors: vec![FieldError::new("amount", "exceeds the payoff amount")],
    }
}

/// The API error for a refused movement.
pub fn error(error: LedgerError) -> ApiError {
    match error {
        LedgerError::Overpayment { outstanding } => overpayment(outstanding),
        LedgerError::NotAPayoff { payoff } => ApiError::Unprocessable {
            detail: format!(
                "the amount is more than the schedule takes; paying the loan off takes exactly {payoff}"
            ),
            errors: vec![FieldError::new("amount", "neither fits the schedule nor pays off")],
        },
        LedgerError::FeeAlreadyPaid => {
            ApiError::conflict("repayments have already paid this fee; reverse them first")
        }
        LedgerError::LaterPaymentsDepend => ApiError::conflict(
            "later payments paid installments this prepayment re-amortised; reverse them first",
        ),
    }
}

/// Locks `loan_id`'s row for a movement whose business day is that of `at`: the first step of
/// every balance change, and the only way to the [`LockedLoan`] the commands below take. A loan
/// the caller cannot see is 404. A loan an opened servicing day has not reached yet is serviced
/// first, so the movement comes after that day's servicing, as it would had the batch come first.
pub async fn lock_loan(
    conn: &mut PgConnection,
    loan_id: Uuid,
    at: DateTime<Utc>,
) -> Result<LockedLoan, ApiError> {
    let loan = repo::lock_loan(conn, loan_id, at)
        .await?
        .ok_or(ApiError::NotFound)?;
    if !loan.servicing_pending {
        return Ok(loan);
    }
    servicing::catch_up(conn, loan_id).await?;
    repo::lock_loan(conn, loan_id, at)
        .await?
        .ok_or(ApiError::NotFound)
}

/// A loan's balances read without the lock, for a payoff quote (404 if not visible).
pub async fn loan_balances(
    conn: &mut PgConnection,
    loan_id: Uuid,
) -> Result<LoanBalances, ApiError> {
    repo::loan_balances(conn, loan_id)
        .await?
        .ok_or(ApiError::NotFound)
}

/// The business day of `at`.
pub async fn business_date(
    conn: &mut PgConnection,
    at: DateTime<Utc>,
) -> Result<NaiveDate, ApiError> {
    Ok(repo::business_date(conn, at).await?)
}

/// A payment as its payer orders it; the ledger adds the loan, the customer and the status.
#[derive(Debug, Clone, Copy)]
pub struct PaymentOrder<'a> {
    pub transaction_id: &'a str,
    pub client_reference: Option<&'a str>,
    pub payment_type: PaymentKind,
    pub amount: Decimal,
    pub payment_method: Option<&'a str>,
    pub payment_date: DateTime<Utc>,
    pub channel: &'a str,
}

impl<'a> PaymentOrder<'a> {
    fn row(&self, loan_id: Uuid, customer_id: Uuid, status: PaymentStatus) -> NewPayment<'a> {
        NewPayment {
            transaction_id: self.transaction_id,
            client_reference: self.client_reference,
            loan_id,
            customer_id,
            payment_type: self.payment_type,
            amount: self.amount,
            payment_method: self.payment_method,
            payment_date: self.payment_date,
            status,
            channel: self.channel,
        }
    }
}

/// Starts a customer's repayment of `loan_id`: PENDING, no balance moves and no lock is taken
/// until staff confirm it. The amount is checked against today's payoff now, and again under
/// the lock at confirmation.
pub async fn start_repayment(
    conn: &mut PgConnection,
    loan_id: Uuid,
    order: &PaymentOrder<'_>,
) -> Result<Payment, ApiError> {
    let loan = loan_balances(conn, loan_id).await?;
    check_units(
        "amount",
        order.amount,
        loan.contract().rounding,
        &loan.currency,
    )?;
    if !matches!(loan.status, LoanStatus::Disbursed | LoanStatus::Defaulted) {
        return Err(ApiError::conflict(format!(
            "a loan that is {} takes no payments",
            loan.status
        )));
    }
    let payoff = payoff_quote(conn, &loan, None).await?.quote.total;
    if order.amount > payoff && loan.overpayment == Overpayment::Refuse {
        return Err(overpayment(payoff));
    }
    let pending = order.row(loan.loan_id, loan.customer_id, PaymentStatus::Pending);
    insert_payment(conn, &pending).await
}

/// Marks a PENDING payment on `loan` (locked by the caller) failed: the money never arrived.
pub async fn fail(
    conn: &mut PgConnection,
    loan: &LockedLoan,
    payment: &Payment,
    reason: Option<&str>,
) -> Result<Payment, ApiError> {
    if payment.loan_id != loan.loan_id {
        return Err(ApiError::Internal(
            "a payment failed under another loan's lock".into(),
        ));
    }
    Ok(repo::set_status(conn, payment, PaymentStatus::Failed, reason).await?)
}

/// The books of a loan that has been paid out, from its stored installments.
pub async fn open(conn: &mut PgConnection, loan: &LockedLoan) -> Result<Ledger, ApiError> {
    let Some(disbursed_on) = loan.disbursed_on else {
        return Err(ApiError::conflict(format!(
            "a loan that is {} takes no payments",
            loan.status
        )));
    };
    books(
        conn,
        loan.loan_id,
        disbursed_on,
        loan.contract(),
        loan.fees_outstanding,
        loan.penalties_outstanding,
    )
    .await
}

/// A paid-out loan's books: its balance columns for fees and penalties, its stored installments.
async fn books(
    conn: &mut PgConnection,
    loan_id: Uuid,
    disbursed_on: NaiveDate,
    contract: Contract,
    fees_outstanding: Decimal,
    penalties_outstanding: Decimal,
) -> Result<Ledger, ApiError> {
    Ok(Ledger {
        disbursed_on,
        contract,
        fees_outstanding,
        penalties_outstanding,
        installments: repo::load_installments(conn, loan_id).await?,
    })
}

/// The status a loan moves to after its books changed to `after` on `on`, if it moves.
fn status_after(
    status: LoanStatus,
    after: &Ledger,
    on: NaiveDate,
    tolerance: Decimal,
) -> Option<LoanStatus> {
    match (status, after.is_settled()) {
        (LoanStatus::Disbursed | LoanStatus::Defaulted, true) => Some(LoanStatus::Closed),
        (LoanStatus::Closed | LoanStatus::Overpaid, false) => Some(LoanStatus::Disbursed),
        // Clearing every arrear cures a defaulted loan.
        (LoanStatus::Defaulted, false) if after.days_past_due(on, tolerance) == 0 => {
            Some(LoanStatus::Disbursed)
        }
        _ => None,
    }
}

/// What changed in the installments between `before` and `after`. Written as amounts added,
/// so the statement says what the movement did (the loan's lock keeps anyone else out).
fn changed(before: &Ledger, after: &Ledger) -> Vec<InstallmentChange> {
    after
        .installments
        .iter()
        .zip(&before.installments)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| InstallmentChange {
            number: a.number,
            principal_due: a.principal_due - b.principal_due,
            interest_due: a.interest_due - b.interest_due,
            principal_paid: a.principal_paid - b.principal_paid,
            interest_paid: a.interest_paid - b.interest_paid,
            interest_posted: a.interest_posted - b.interest_posted,
            interest_reduction: a.interest_reduction - b.interest_reduction,
            prepaid_weight: a.prepaid_weight - b.prepaid_weight,
        })
        .collect()
}

/// Inserts a payment row; a client reference the customer used before is 409.
async fn insert_payment(
    conn: &mut PgConnection,
    payment: &NewPayment<'_>,
) -> Result<Payment, ApiError> {
    let inserted = repo::insert(conn, payment).await.on_constraint(
        "payment_directory_client_reference_key",
        || ApiError::Conflict {
            detail: "this customer has a payment with this client_reference".into(),
            errors: vec![FieldError::new("client_reference", "already used")],
        },
    )?;
    Ok(inserted)
}

/// Applies `amount` to `loan`'s books for the payment `payment_id` on the loan's business day,
/// and posts it.
async fn apply_repayment(
    conn: &mut PgConnection,
    loan: &LockedLoan,
    payment_id: Uuid,
    amount: Decimal,
) -> Result<(), ApiError> {
    let before = open(conn, loan).await?;
    let mut after = before.clone();
    let applied = after
        .apply(amount, loan.business_date, &loan.terms())
        .map_err(error)?;
    let movement = repayment(loan, &before, &after, &applied, payment_id, amount);
    repo::post(conn, &movement).await?;
    Ok(())
}

/// The movement of a repayment of `amount` that `applied` to `before`, leaving `after`, on the
/// loan's business day.
fn repayment<'a>(
    loan: &LockedLoan,
    before: &Ledger,
    after: &Ledger,
    applied: &'a Applied,
    payment_id: Uuid,
    amount: Decimal,
) -> Movement<'a> {
    let on = loan.business_date;
    Movement {
        loan_id: loan.loan_id,
        application_date: loan.application_date,
        customer_id: loan.customer_id,
        kind: if applied.payoff {
            EntryKind::Payoff
        } else {
            EntryKind::Repayment
        },
        business_date: on,
        payment_id: Some(payment_id),
        reverses: None,
        lines: &applied.lines,
        installments: changed(before, after),
        allocations: &applied.allocations,
        schedule: &applied.schedule,
        loan: LoanChange {
            total_paid: amount,
            recovered: Decimal::ZERO,
            next_due_date: after.balances().next_due_date,
            status: if applied.credit > Decimal::ZERO {
                Some(LoanStatus::Overpaid)
            } else {
                status_after(loan.status, after, on, loan.arrears_tolerance)
            },
        },
    }
}

/// A recovery: money received on a written-off loan, up to what was written off.
fn recovery_lines(loan: &LockedLoan, amount: Decimal) -> Result<Lines, ApiError> {
    let recoverable = loan.written_off_amount.unwrap_or_default() - loan.recovered_amount;
    if amount > recoverable {
        return Err(ApiError::Unprocessable {
            detail: format!("the amount is more than the {recoverable} left to recover"),
            errors: vec![FieldError::new("amount", "exceeds what was written off")],
        });
    }
    let mut lines = Lines::new();
    lines.transfer(Account::Cash, Account::WriteOffExpense, amount);
    Ok(lines)
}

/// A movement that touches no installment.
fn movement_without_installments<'a>(
    loan: &LockedLoan,
    kind: EntryKind,
    payment_id: Option<Uuid>,
    reverses: Option<Uuid>,
    lines: &'a Lines,
    change: LoanChange,
) -> Movement<'a> {
    Movement {
        loan_id: loan.loan_id,
        application_date: loan.application_date,
        customer_id: loan.customer_id,
        kind,
        business_date: loan.business_date,
        payment_id,
        reverses,
        lines,
        installments: Vec::new(),
        allocations: &[],
        schedule: &[],
        loan: change,
    }
}

/// Records a COMPLETED repayment or fee on `loan` (locked by the caller). A repayment is applied
/// to the books (a recovery if the loan was written off); a fee is charged.
pub async fn record_completed(
    conn: &mut PgConnection,
    loan: &LockedLoan,
    order: &PaymentOrder<'_>,
) -> Result<Payment, ApiError> {
    check_units(
        "amount",
        order.amount,
        loan.contract().rounding,
        &loan.currency,
    )?;
    // Money cannot come back before it was lent, nor a charge fall before the loan began.
    match loan.disbursement_date {
        Some(disbursed) if order.payment_date < disbursed => {
            return Err(ApiError::invalid_field(
                "payment_date",
                "must not be before the loan's disbursement",
            ));
        }
        None if order.payment_date < loan.application_date => {
            return Err(ApiError::invalid_field(
                "payment_date",
                "must not be before the loan's application",
            ));
        }
        _ => {}
    }
    if loan.status == LoanStatus::Overpaid {
        return Err(ApiError::conflict(
            "the loan is paid off and owes the customer a refund: it takes no payments",
        ));
    }
    let payment = &order.row(loan.loan_id, loan.customer_id, PaymentStatus::Completed);
    match (payment.payment_type, loan.status) {
        (PaymentKind::Repayment, LoanStatus::WrittenOff) => {
            let lines = recovery_lines(loan, payment.amount)?;
            let inserted = insert_payment(conn, payment).await?;
            let change = LoanChange {
                total_paid: payment.amount,
                recovered: payment.amount,
                next_due_date: loan.next_due_date,
                status: None,
            };
            let movement = movement_without_installments(
                loan,
                EntryKind::Recovery,
                Some(inserted.payment_id),
                None,
                &lines,
                change,
            );
            repo::post(conn, &movement).await?;
            Ok(inserted)
        }
        (PaymentKind::Repayment, _) => {
            let inserted = insert_payment(conn, payment).await?;
            apply_repayment(conn, loan, inserted.payment_id, payment.amount).await?;
            Ok(inserted)
        }
        // A closed loan takes no charges: it leaves CLOSED only when its closing repayment is
        // reversed.
        (PaymentKind::Fee, LoanStatus::Disbursed | LoanStatus::Defaulted) => {
            let mut books = open(conn, loan).await?;
            let lines = books.charge_fee(payment.amount);
            let inserted = insert_payment(conn, payment).await?;
            let change = LoanChange {
                total_paid: Decimal::ZERO,
                recovered: Decimal::ZERO,
                next_due_date: books.balances().next_due_date,
                status: status_after(
                    loan.status,
                    &books,
                    loan.business_date,
                    loan.arrears_tolerance,
                ),
            };
            let movement = movement_without_installments(
                loan,
                EntryKind::Fee,
                Some(inserted.payment_id),
                None,
                &lines,
                change,
            );
            repo::post(conn, &movement).await?;
            Ok(inserted)
        }
        (PaymentKind::Fee, status) => Err(ApiError::conflict(format!(
            "a loan that is {status} takes no fees"
        ))),
        (PaymentKind::Disbursement, _) => Err(ApiError::Internal(
            "a disbursement is recorded by disburse".into(),
        )),
    }
}

/// Confirms a PENDING repayment on `loan` (locked by the caller, as of the payment's date): it
/// is applied as a completed one would be, against the books of now (422 if it is more than
/// the payoff by then).
pub async fn confirm(
    conn: &mut PgConnection,
    loan: &LockedLoan,
    payment: &Payment,
) -> Result<Payment, ApiError> {
    if loan.status == LoanStatus::WrittenOff {
        return Err(ApiError::conflict(
            "the loan was written off; record the money as a branch recovery",
        ));
    }
    let confirmed = repo::set_status(conn, payment, PaymentStatus::Completed, None).await?;
    apply_repayment(conn, loan, payment.payment_id, payment.amount.0).await?;
    Ok(confirmed)
}

/// Reverses a COMPLETED repayment, recovery or fee on `loan` (locked by the caller): a contra
/// entry undoes exactly what its entry did, reopening a loan it had closed.
pub async fn reverse(
    conn: &mut PgConnection,
    loan: &LockedLoan,
    payment: &Payment,
    reason: Option<&str>,
) -> Result<Payment, ApiError> {
    if payment.payment_type == PaymentKind::Disbursement {
        return Err(ApiError::conflict("a disbursement is not reversed"));
    }
    let (entry_id, kind, lines) = repo::payment_entry(conn, payment.payment_id)
        .await?
        .ok_or_else(|| {
            ApiError::Internal(format!(
                "payment {} has no journal entry",
                payment.payment_id
            ))
        })?;
    let contra = lines.negated();
    let before = open(conn, loan).await?;
    let mut after = before.clone();
    let mut change = LoanChange {
        total_paid: Decimal::ZERO,
        recovered: Decimal::ZERO,
        next_due_date: loan.next_due_date,
        status: None,
    };
    match kind {
        EntryKind::Fee => {
            if loan.status == LoanStatus::WrittenOff {
                return Err(ApiError::conflict("the loan was written off with this fee"));
            }
            after.reverse_fee(payment.amount.0).map_err(error)?;
        }
        EntryKind::Repayment | EntryKind::Payoff => {
            if loan.status == LoanStatus::WrittenOff {
                return Err(ApiError::conflict(
                    "the loan was written off after this repayment",
                ));
            }
            if !lines.of(Account::LoanOverpayment).is_zero() && loan.status != LoanStatus::Overpaid
            {
                return Err(ApiError::conflict(
                    "the credit this repayment left was refunded",
                ));
            }
            let allocations = repo::reverse_allocations(conn, payment.payment_id).await?;
            let schedule = repo::reverse_schedule_changes(conn, payment.payment_id).await?;
            after.reverse(&allocations, &schedule).map_err(error)?;
            change.total_paid = -payment.amount.0;
        }
        EntryKind::Recovery => {
            change.total_paid = -payment.amount.0;
            change.recovered = -payment.amount.0;
        }
        other => {
            return Err(ApiError::Internal(format!(
                "payment {} posted a {other} entry",
                payment.payment_id
            )))
        }
    }
    if loan.status != LoanStatus::WrittenOff {
        change.next_due_date = after.balances().next_due_date;
        change.status = status_after(
            loan.status,
            &after,
            loan.business_date,
            loan.arrears_tolerance,
        );
    }
    let reversed = repo::set_status(conn, payment, PaymentStatus::Reversed, reason).await?;
    let mut movement = movement_without_installments(
        loan,
        EntryKind::Reversal,
        Some(payment.payment_id),
        Some(entry_id),
        &contra,
        change,
    );
    movement.installments = changed(&before, &after);
    repo::post(conn, &movement).await?;
    Ok(reversed)
}

/// Writes off a DEFAULTED loan (locked by the caller): everything it owes moves to the
/// write-off expense, and the loan becomes WRITTEN_OFF. Returns the amount written off.
/// Pays the customer of an OVERPAID loan (locked by the caller) what it owes them: a REFUND entry
/// clears LOAN_OVERPAYMENT and the loan is CLOSED. Returns the amount refunded.
/// What an overpaid loan owes its customer (the credit on `LOAN_OVERPAYMENT`).
pub async fn credit_owed(conn: &mut PgConnection, loan_id: Uuid) -> Result<Decimal, ApiError> {
    Ok(-repo::account_balance(conn, loan_id, Account::LoanOverpayment).await?)
}

pub async fn refund(conn: &mut PgConnection, loan: &LockedLoan) -> Result<Decimal, ApiError> {
    if loan.status != LoanStatus::Overpaid {
        return Err(ApiError::conflict(format!(
            "a loan that is {} owes no refund",
            loan.status
        )));
    }
    let credit = -repo::account_balance(conn, loan.loan_id, Account::LoanOverpayment).await?;
    let mut lines = Lines::new();
    lines.transfer(Account::LoanOverpayment, Account::Cash, credit);
    let movement = movement_without_installments(
        loan,
        EntryKind::Refund,
        None,
        None,
        &lines,
        LoanChange {
            total_paid: Decimal::ZERO,
            recovered: Decimal::ZERO,
            next_due_date: None,
            status: Some(LoanStatus::Closed),
        },
    );
    repo::post(conn, &movement).await?;
    Ok(credit)
}

pub async fn write_off(conn: &mut PgConnection, loan: &LockedLoan) -> Result<Decimal, ApiError> {
    if loan.status != LoanStatus::Defaulted {
        return Err(ApiError::conflict(format!(
            "only a DEFAULTED loan is written off; this one is {}",
            loan.status
        )));
    }
    let mut lines = Lines::new();
    for (account, owed) in [
        (
            Account::LoanPrincipal,
            loan.principal_outstanding.unwrap_or_default(),
        ),
        (
            Account::LoanInterest,
            loan.interest_outstanding.unwrap_or_default(),
        ),
        (Account::LoanFees, loan.fees_outstanding),
        (Account::LoanPenalties, loan.penalties_outstanding),
    ] {
        lines.transfer(Account::WriteOffExpense, account, owed);
    }
    let change = LoanChange {
        total_paid: Decimal::ZERO,
        recovered: Decimal::ZERO,
        next_due_date: None,
        status: Some(LoanStatus::WrittenOff),
    };
    let movement =
        movement_without_installments(loan, EntryKind::WriteOff, None, None, &lines, change);
    repo::post(conn, &movement).await?;
    Ok(loan.outstanding())
}

/// A loan being paid out.
pub struct Disbursal<'a> {
    pub loan_id: Uuid,
    pub application_date: DateTime<Utc>,
    pub customer_id: Uuid,
    pub loan_number: &'a str,
    pub amount: Decimal,
}

/// The schedule `loan_id` has if it is paid out on `on`, under its pinned contract: `periods`
/// installments, the first on its first repayment date (or, if that has passed, on the first of
/// that series of dates after `on`), else one period after `on`.
pub async fn schedule_from(
    conn: &mut PgConnection,
    loan_id: Uuid,
    amount: Decimal,
    on: NaiveDate,
) -> Result<Vec<crate::domain::money::Installment>, ApiError> {
    let plan = repo::loan_plan(conn, loan_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    schedule_of(&plan, amount, on)
        .ok_or_else(|| ApiError::Internal(format!("loan {loan_id} has {} periods", plan.periods)))
}

/// The schedule of `amount` under `plan` paid out on `on` (`None` for a plan of no periods).
fn schedule_of(
    plan: &repo::LoanPlan,
    amount: Decimal,
    on: NaiveDate,
) -> Option<Vec<crate::domain::money::Installment>> {
    let periods = u32::try_from(plan.periods).ok()?;
    let contract = plan.contract();
    let first_due = plan.first_repayment_date.map(|first| {
        (0..)
            .map(|n| contract.frequency.nth_due_date(first, n))
            .find(|due| *due > on)
            .unwrap_or(NaiveDate::MAX)
    });
    Some(contract.schedule(amount, on, first_due, periods))
}

/// At approval, which pins the product's current terms: 409 if they no longer fit what the
/// application asked for (the product changed frequency or currency digits since), rather than
/// a loan paid out weekly that was applied for in months, or owing an amount it cannot repay.
pub async fn check_contract_fits(
    conn: &mut PgConnection,
    loan_id: Uuid,
    amount: Decimal,
    term_months: i32,
) -> Result<(), ApiError> {
    let plan = repo::loan_plan(conn, loan_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let contract = plan.contract();
    let fits = contract.rounding.allows(amount)
        && plan.frequency.months_spanned(plan.periods) == term_months;
    if fits {
        return Ok(());
    }
    Err(ApiError::conflict(
        "the product's contract changed since the application (its frequency or its currency's \
         digits): cancel the application and apply again",
    ))
}

/// Pays a loan out at `at`: writes its schedule (due dates count from the business day) and
/// the DISBURSEMENT payment, and posts the principal lent (interest becomes receivable only as
/// it falls due).
pub async fn disburse(
    conn: &mut PgConnection,
    loan: &Disbursal<'_>,
    at: DateTime<Utc>,
) -> Result<(), ApiError> {
    let on = repo::business_date(conn, at).await?;
    let schedule = schedule_from(conn, loan.loan_id, loan.amount, on).await?;
    if let Some(last) = schedule.last() {
        repo::set_maturity(conn, loan.loan_id, loan.application_date, last.due_date).await?;
    }
    repo::insert_installments(conn, loan.loan_id, loan.customer_id, &schedule).await?;
    let payment = repo::insert_disbursement(
        conn,
        loan.loan_id,
        loan.customer_id,
        loan.loan_number,
        loan.amount,
        at,
    )
    .await?;
    let mut lines = Lines::new();
    lines.transfer(Account::LoanPrincipal, Account::Cash, loan.amount);
    let movement = Movement {
        loan_id: loan.loan_id,
        application_date: loan.application_date,
        customer_id: loan.customer_id,
        kind: EntryKind::Disbursement,
        business_date: on,
        payment_id: Some(payment.payment_id),
        reverses: None,
        lines: &lines,
        installments: Vec::new(),
        allocations: &[],
        schedule: &[],
        loan: LoanChange {
            total_paid: Decimal::ZERO,
            recovered: Decimal::ZERO,
            next_due_date: schedule.first().map(|i| i.due_date),
            status: None,
        },
    };
    repo::post(conn, &movement).await?;
    Ok(())
}

/// The stored schedule of a paid-out loan, as the API shows it.
pub async fn stored_schedule(
    conn: &mut PgConnection,
    loan_id: Uuid,
    disbursed_on: NaiveDate,
) -> Result<Vec<crate::domain::money::Installment>, ApiError> {
    let plan = repo::loan_plan(conn, loan_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let installments = repo::load_installments(conn, loan_id).await?;
    let mut remaining: Decimal = installments.iter().map(|s| s.principal_due).sum();
    let mut period_start = disbursed_on;
    let mut regular = plan.first_repayment_date.is_none();
    // A prepayment that shortened the term leaves the installments it removed at zero.
    Ok(installments
        .into_iter()
        .filter(|s| !(s.principal_due.is_zero() && s.interest_due.is_zero()))
        .map(|s| {
            remaining -= s.principal_due;
            let days = plan
                .day_count
                .period_days(period_start, s.due_date, regular);
            (period_start, regular) = (s.due_date, true);
            crate::domain::money::Installment {
                number: u32::try_from(s.number).unwrap_or_default(),
                due_date: s.due_date,
                days,
                principal: s.principal_due,
                interest: s.interest_due,
                total: s.principal_due + s.interest_due,
                remaining_balance: remaining,
            }
        })
        .collect())
}

/// A payoff quote for a day, with the installments it was computed from.
pub struct PayoffQuote {
    pub date: NaiveDate,
    pub quote: Quote,
    pub installments: Vec<InstallmentState>,
}

/// What paying `loan` (read by `repo::loan_balances`) off on `date` (default today) costs.
pub async fn payoff_quote(
    conn: &mut PgConnection,
    loan: &repo::LoanBalances,
    date: Option<NaiveDate>,
) -> Result<PayoffQuote, ApiError> {
    let Some(disbursed_on) = loan.disbursed_on else {
        return Err(ApiError::conflict("the loan has not been paid out"));
    };
    let date = date.unwrap_or(loan.business_date);
    let horizon = loan.business_date + chrono::Days::new(366);
    if date < disbursed_on || date > horizon {
        return Err(ApiError::invalid_field(
            "date",
            "must be between the disbursement and a year from today",
        ));
    }
    let books = books(
        conn,
        loan.loan_id,
        disbursed_on,
        loan.contract(),
        loan.fees_outstanding,
        loan.penalties_outstanding,
    )
    .await?;
    Ok(PayoffQuote {
        date,
        quote: books.quote(date, loan.prepayment_fee_rate),
        installments: books.installments,
    })
}

/// The annual percentage rate of a schedule: the monthly rate at which its installments are
/// worth the amount lent, times twelve, to four places (bisection; a rate, not money).
pub fn schedule_apr(amount: Decimal, installments: &[InstallmentState]) -> Decimal {
    let value_at = |monthly: Decimal| {
        let factor = Decimal::ONE / (Decimal::ONE + monthly);
        let mut discount = Decimal::ONE;
        let mut value = Decimal::ZERO;
        for s in installments {
            discount *= factor;
            value += (s.principal_due + s.interest_due) * discount;
        }
        value
    };
    let (mut low, mut high) = (Decimal::ZERO, Decimal::ONE);
    for _ in 0..60 {
        let mid = (low + high) / Decimal::TWO;
        if value_at(mid) > amount {
            low = mid;
        } else {
            high = mid;
        }
    }
    (low * Decimal::from(12)).round_dp(4)
}
