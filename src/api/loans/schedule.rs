//! `GET /v1/loans/{id}/schedule`: the stored installments of a disbursed loan, or the projected
//! ones of an application.

use axum::Json;
use chrono::Utc;
use uuid::Uuid;

use super::model::LoanSchedule;
use super::repo;
use crate::domain::ledger;
use crate::domain::money::Amount;
use crate::platform::auth::{LoanReaders, RequestTx};
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::AppPath;

/// The schedule under the loan's contract (its day count, shape, interest method, frequency and
/// currency): each installment's period days, principal and interest, the last installment
/// absorbing rounding so the principal sums to the amount lent.
#[utoipa::path(
    get,
    path = "/v1/loans/{id}/schedule",
    params(("id" = Uuid, Path, description = "Loan id")),
    responses((status = 200, description = "The schedule", body = LoanSchedule), responses::Common, responses::NotFound)
)]
pub(super) async fn get_loan_schedule(
    mut tx: RequestTx<LoanReaders>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<LoanSchedule>, ApiError> {
    let loan = repo::find(&mut tx, id).await?.ok_or(ApiError::NotFound)?;
    let installments = match loan.disbursement_date {
        Some(paid_out) => {
            let on = ledger::business_date(&mut tx, paid_out).await?;
            ledger::stored_schedule(&mut tx, loan.loan_id, on).await?
        }
        None => {
            let today = ledger::business_date(&mut tx, Utc::now()).await?;
            ledger::schedule_from(&mut tx, loan.loan_id, loan.loan_amount.0, today).await?
        }
    };
    tx.answer(LoanSchedule {
        loan_id: loan.loan_id,
        loan_amount: loan.loan_amount,
        interest_rate: loan.interest_rate,
        term_months: loan.term_months,
        term_periods: loan.term_periods,
        day_count: loan.terms.day_count,
        projected: loan.disbursement_date.is_none(),
        total_interest: Amount(installments.iter().map(|i| i.interest).sum()),
        installments,
    })
    .await
}
