//! `GET /v1/loans/{id}/payoff`: what it costs to pay a loan off on a day.

use axum::Json;
use uuid::Uuid;

use super::model::{PayoffQuery, PayoffQuote};
use crate::domain::ledger;
use crate::domain::ledger::model::LoanStatus;
use crate::domain::money::Amount;
use crate::platform::auth::{LoanReaders, RequestTx};
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::{AppPath, AppQuery};

/// What it costs to pay the loan off on a day (default today): principal, interest due and
/// accrued to that day, fees, late fees and any prepayment fee, with the APR and the total cost
/// of credit. A repayment of exactly `total` on that day closes the loan.
#[utoipa::path(
    get,
    path = "/v1/loans/{id}/payoff",
    params(("id" = Uuid, Path, description = "Loan id"), PayoffQuery),
    responses(
        (status = 200, description = "The quote", body = PayoffQuote),
        responses::Common, responses::NotFound, responses::Conflict, responses::Unprocessable
    )
)]
pub(super) async fn get_payoff_quote(
    mut tx: RequestTx<LoanReaders>,
    AppPath(id): AppPath<Uuid>,
    AppQuery(query): AppQuery<PayoffQuery>,
) -> Result<Json<PayoffQuote>, ApiError> {
    let loan = ledger::loan_balances(&mut tx, id).await?;
    if !matches!(
        loan.status,
        LoanStatus::Disbursed | LoanStatus::Defaulted | LoanStatus::Closed
    ) {
        return Err(ApiError::conflict(format!(
            "a loan that is {} has no payoff",
            loan.status
        )));
    }
    let quote = ledger::payoff_quote(&mut tx, &loan, query.date).await?;
    tx.commit().await?;
    let apr = ledger::schedule_apr(loan.loan_amount, &quote.installments);
    Ok(Json(PayoffQuote {
        loan_id: id,
        date: quote.date,
        principal: Amount(quote.quote.principal),
        interest: Amount(quote.quote.interest),
        fees: Amount(quote.quote.fees),
        penalties: Amount(quote.quote.penalties),
        prepayment_fee: Amount(quote.quote.prepayment_fee),
        total: Amount(quote.quote.total),
        apr,
        total_cost_of_credit: Amount(loan.total_paid + quote.quote.total - loan.loan_amount),
    }))
}
