//! `/v1/reports/borrowers`: every customer who borrowed, ranked by the total lent to them (the
//! seed's Lab 3 portfolio summary, in the shape of its "optimised customer loan summary": the
//! loans aggregated once per customer, then joined to the customers).

use axum::Json;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::money::Amount;
use crate::platform::auth::{RequestTx, RiskViewers};
use crate::platform::error::{responses, ApiError};
use crate::platform::pagination::{Page, PageQuery, PageRequest};

/// Where a page starts: after this customer in the ranking.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RankCursor {
    pub total: Decimal,
    pub customer: Uuid,
}

/// A customer's borrowing: every loan paid out to them (DISBURSED, CLOSED, OVERPAID, DEFAULTED,
/// WRITTEN_OFF).
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Borrower {
    /// 1 for the customer lent the most; customers lent the same share a rank.
    pub rank: i64,
    pub customer_id: Uuid,
    pub customer_code: String,
    pub loans: i64,
    pub total_borrowed: Amount,
    /// The mean of the loans' annual rates, to four decimals.
    #[schema(value_type = String, example = "0.1250")]
    pub average_rate: Decimal,
    /// The most recent loan by application date.
    pub latest_loan_number: String,
    pub latest_application_date: DateTime<Utc>,
    /// The loans' product types, comma-separated.
    pub product_types: String,
}

/// Every customer the caller sees who was lent money (a teller: their branches'), ranked by the
/// total lent, most first, with the number of loans, their mean rate and the latest loan;
/// keyset pages. Computed from the loans at each request.
#[utoipa::path(
    get,
    path = "/v1/reports/borrowers",
    operation_id = "borrowers_report",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of the ranking", body = Page<Borrower>),
        responses::Common
    )
)]
pub(super) async fn borrowers(
    mut tx: RequestTx<RiskViewers>,
    page: PageRequest<RankCursor>,
) -> Result<Json<Page<Borrower>>, ApiError> {
    let rows = ranking(&mut tx, page.after, page.fetch()).await?;
    tx.answer(page.page(rows, |b| RankCursor {
        total: b.total_borrowed.0,
        customer: b.customer_id,
    })?)
    .await
}

/// The ranking's page: $1, $2 the cursor's total and customer (NULL for the first page), $3
/// the rows. Public for the plan test.
pub const RANKING: &str = r#"
    WITH borrowed AS (
        SELECT l.customer_id, count(*) AS loans, sum(l.loan_amount) AS total,
               round(avg(l.interest_rate), 4) AS average_rate,
               max(l.application_date) AS latest_at,
               (array_agg(l.loan_number ORDER BY l.application_date DESC, l.loan_id DESC))[1]
                   AS latest_loan,
               string_agg(DISTINCT l.product_type, ', ' ORDER BY l.product_type) AS product_types
        FROM core.loans l
        WHERE l.status IN ('DISBURSED', 'CLOSED', 'OVERPAID', 'DEFAULTED', 'WRITTEN_OFF')
        GROUP BY l.customer_id
    ), ranked AS (
        SELECT b.*, rank() OVER (ORDER BY b.total DESC) AS rank FROM borrowed b
    )
    SELECT r.rank, r.customer_id, c.customer_code, r.loans, r.total AS total_borrowed,
           r.average_rate, r.latest_loan AS latest_loan_number,
           r.latest_at AS latest_application_date, r.product_types
    FROM ranked r JOIN core.customers c ON c.customer_id = r.customer_id
    WHERE $1::numeric IS NULL OR (r.total, r.customer_id) < ($1, $2::uuid)
    ORDER BY r.total DESC, r.customer_id DESC
    LIMIT $3
"#;

async fn ranking(
    conn: &mut PgConnection,
    after: Option<RankCursor>,
    fetch: i64,
) -> Result<Vec<Borrower>, sqlx::Error> {
    sqlx::query_as(RANKING)
        .bind(after.map(|a| a.total))
        .bind(after.map(|a| a.customer))
        .bind(fetch)
        .fetch_all(conn)
        .await
}
