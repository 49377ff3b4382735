//! Every money movement on a loan: disbursement, repayment, fee and reversal, applied exactly
//! (fees first, then each installment in due order, interest before principal) under the
//! loan's row lock. Loans and payments call it; it calls nothing above the database layer.

mod engine;
pub mod model;
pub mod repo;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

pub use self::engine::{Allocation, Balances, Component, InstallmentState, Ledger, LedgerError};
use self::model::{LoanStatus, Payment, PaymentKind, PaymentStatus};
use self::repo::{LockedLoan, NewPayment};
use crate::db::errors::ResultExt;
use crate::error::{ApiError, FieldError};
use crate::money::annuity_schedule;

pub fn overpayment(outstanding: Decimal) -> ApiError {
    ApiError::Unprocessable {
        detail: format!("the amount is more than the {outstanding} outstanding on the loan"),
        errors: vec![FieldError::new("amount", "exceeds the outstanding balance")],
    }
}

/// The API error for a refused movement.
pub fn error(error: LedgerError) -> ApiError {
    match error {
        LedgerError::Overpayment { outstanding } => overpayment(outstanding),
        LedgerError::FeeAlreadyPaid => {
            ApiError::conflict("repayments have already paid this fee; reverse them first")
        }
    }
}

/// The ledger of a loan that can take payments (DISBURSED, or CLOSED with nothing owed).
/// Loans disbursed before schedules were stored get theirs written on first use.
pub async fn open(conn: &mut PgConnection, loan: &LockedLoan) -> Result<Ledger, ApiError> {
    let (Some(disbursed), LoanStatus::Disbursed | LoanStatus::Closed) =
        (loan.disbursement_date, loan.status)
    else {
        return Err(ApiError::conflict(format!(
            "a loan that is {} takes no payments",
            loan.status
        )));
    };
    let mut installments = repo::load_installments(conn, loan.loan_id).await?;
    if installments.is_empty() {
        write_schedule(
            conn,
            loan.loan_id,
            loan.customer_id,
            loan.loan_amount,
            loan.interest_rate,
            loan.term_months,
            disbursed,
        )
        .await?;
        installments = repo::load_installments(conn, loan.loan_id).await?;
    }
    Ok(Ledger {
        fees_outstanding: loan.fees_outstanding,
        installments,
    })
}

/// Writes a disbursed loan's schedule (installments) and returns its first due date and total
/// interest, for the loan's balance columns.
pub async fn write_schedule(
    conn: &mut PgConnection,
    loan_id: Uuid,
    customer_id: Uuid,
    amount: Decimal,
    rate: Decimal,
    term_months: i32,
    disbursed: DateTime<Utc>,
) -> Result<(Option<NaiveDate>, Decimal), ApiError> {
    let months = u32::try_from(term_months)
        .map_err(|_| ApiError::Internal(format!("loan {loan_id} has term {term_months}")))?;
    let schedule = annuity_schedule(amount, rate, months, disbursed);
    repo::insert_installments(conn, loan_id, customer_id, &schedule).await?;
    Ok((
        schedule.first().map(|i| i.due_date),
        schedule.iter().map(|i| i.interest).sum(),
    ))
}

/// Writes the ledger back: closes the loan when nothing is left, reopens it when a reversal
/// brings debt back to a closed loan.
pub async fn save(
    conn: &mut PgConnection,
    loan: &LockedLoan,
    before: &Ledger,
    after: &Ledger,
    paid: Decimal,
) -> Result<(), ApiError> {
    let cleared = after.balances().total().is_zero();
    let status = match (loan.status, cleared) {
        (LoanStatus::Disbursed, true) => Some(LoanStatus::Closed),
        (LoanStatus::Closed, false) => Some(LoanStatus::Disbursed),
        _ => None,
    };
    repo::save_ledger(conn, loan, before, after, paid, status).await?;
    Ok(())
}

/// Inserts a payment row; a client reference the customer used before is 409.
pub async fn insert_payment(
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

/// Records a COMPLETED repayment or fee on `loan` (locked by the caller): a repayment is
/// allocated fees first, then installment by installment, interest before principal; a fee is
/// charged. The balances follow, closing the loan when nothing is left.
pub async fn record_completed(
    conn: &mut PgConnection,
    loan: &LockedLoan,
    payment: &NewPayment<'_>,
) -> Result<Payment, ApiError> {
    let mut books = open(conn, loan).await?;
    let before = books.clone();
    match payment.payment_type {
        PaymentKind::Repayment => {
            let allocations = books.allocate(payment.amount).map_err(error)?;
            let inserted = insert_payment(conn, payment).await?;
            repo::insert_allocations(conn, &inserted, &allocations).await?;
            save(conn, loan, &before, &books, payment.amount).await?;
            Ok(inserted)
        }
        PaymentKind::Fee => {
            books.charge_fee(payment.amount);
            let inserted = insert_payment(conn, payment).await?;
            save(conn, loan, &before, &books, Decimal::ZERO).await?;
            Ok(inserted)
        }
        PaymentKind::Disbursement => Err(ApiError::Internal(
            "a disbursement is recorded by disburse".into(),
        )),
    }
}

/// Confirms a PENDING repayment on `loan` (locked by the caller): it is applied as a completed
/// one would be, against the balances of now (422 if it is more than is owed by then).
pub async fn confirm(
    conn: &mut PgConnection,
    loan: &LockedLoan,
    payment: &Payment,
) -> Result<Payment, ApiError> {
    let mut books = open(conn, loan).await?;
    let before = books.clone();
    let amount = payment.amount.0;
    let allocations = books.allocate(amount).map_err(error)?;
    let confirmed = repo::set_status(conn, payment, PaymentStatus::Completed, None).await?;
    repo::insert_allocations(conn, &confirmed, &allocations).await?;
    save(conn, loan, &before, &books, amount).await?;
    Ok(confirmed)
}

/// Reverses a COMPLETED repayment or fee on `loan` (locked by the caller): exactly what it did
/// is undone, reopening a loan it had closed.
pub async fn reverse(
    conn: &mut PgConnection,
    loan: &LockedLoan,
    payment: &Payment,
    reason: Option<&str>,
) -> Result<Payment, ApiError> {
    let mut books = open(conn, loan).await?;
    let before = books.clone();
    let paid = match payment.payment_type {
        PaymentKind::Fee => {
            books.reverse_fee(payment.amount.0).map_err(error)?;
            Decimal::ZERO
        }
        PaymentKind::Repayment => {
            let allocations = repo::reverse_allocations(conn, payment.payment_id).await?;
            books.reverse(&allocations);
            -payment.amount.0
        }
        PaymentKind::Disbursement => {
            return Err(ApiError::conflict("a disbursement is not reversed"))
        }
    };
    let reversed = repo::set_status(conn, payment, PaymentStatus::Reversed, reason).await?;
    save(conn, loan, &before, &books, paid).await?;
    Ok(reversed)
}

/// A loan being paid out.
pub struct Disbursal<'a> {
    pub loan_id: Uuid,
    pub application_date: DateTime<Utc>,
    pub customer_id: Uuid,
    pub loan_number: &'a str,
    pub amount: Decimal,
    pub interest_rate: Decimal,
    pub term_months: i32,
}

/// Pays a loan out at `at`: writes its schedule and the DISBURSEMENT payment, and opens its
/// balances (the principal lent and the schedule's interest; nothing paid, no fees).
pub async fn disburse(
    conn: &mut PgConnection,
    loan: &Disbursal<'_>,
    at: DateTime<Utc>,
) -> Result<(), ApiError> {
    let (first_due, interest) = write_schedule(
        conn,
        loan.loan_id,
        loan.customer_id,
        loan.amount,
        loan.interest_rate,
        loan.term_months,
        at,
    )
    .await?;
    repo::insert_disbursement(
        conn,
        loan.loan_id,
        loan.customer_id,
        loan.loan_number,
        loan.amount,
        at,
    )
    .await?;
    repo::open_balances(
        conn,
        loan.loan_id,
        loan.application_date,
        loan.amount,
        interest,
        first_due,
    )
    .await?;
    Ok(())
}
