//! `/v1/ledger/…`: the books across every loan.

use axum::Json;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::ledger::journal::Account;
use crate::domain::money::Amount;
use crate::platform::auth::{Analysts, RequestTx};
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::AppQuery;
use crate::platform::routing::Tagged;
use crate::platform::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_trial_balance))
        .tagged("ledger")
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrialBalanceQuery {
    /// Entries of business days up to and including this one; default all.
    pub as_of: Option<NaiveDate>,
}

/// One account of the trial balance.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct TrialBalanceRow {
    pub account: Account,
    pub debits: Amount,
    pub credits: Amount,
    /// Debits minus credits.
    pub balance: Amount,
}

/// Every account's debits and credits; the totals are equal, so the balances sum to zero.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrialBalance {
    pub as_of: Option<NaiveDate>,
    pub accounts: Vec<TrialBalanceRow>,
    pub total_debits: Amount,
    pub total_credits: Amount,
    /// True when the total debits equal the total credits.
    pub balanced: bool,
}

/// The trial balance of the whole journal (analysts, administrators).
#[utoipa::path(
    get,
    path = "/v1/ledger/trial-balance",
    params(TrialBalanceQuery),
    responses((status = 200, description = "The trial balance", body = TrialBalance), responses::Common)
)]
async fn get_trial_balance(
    mut tx: RequestTx<Analysts>,
    AppQuery(query): AppQuery<TrialBalanceQuery>,
) -> Result<Json<TrialBalance>, ApiError> {
    let accounts: Vec<TrialBalanceRow> = sqlx::query_as!(
        TrialBalanceRow,
        r#"
        SELECT l.account AS "account: _",
        coalesce(sum(l.amount) FILTER (WHERE l.amount > 0), 0) AS "debits!",
        coalesce(-sum(l.amount) FILTER (WHERE l.amount < 0), 0) AS "credits!",
        sum(l.amount) AS "balance!"
        FROM core.journal_lines l
        WHERE $1::date IS NULL OR EXISTS (
        SELECT 1 FROM core.journal_entries e
        WHERE e.entry_id = l.entry_id AND e.business_date <= $1)
        GROUP BY l.account ORDER BY l.account
        "#,
        query.as_of,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let total_debits: Decimal = accounts.iter().map(|a| a.debits.0).sum();
    let total_credits: Decimal = accounts.iter().map(|a| a.credits.0).sum();
    Ok(Json(TrialBalance {
        as_of: query.as_of,
        accounts,
        total_debits: Amount(total_debits),
        total_credits: Amount(total_credits),
        balanced: total_debits == total_credits,
    }))
}
