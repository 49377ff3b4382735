//! `analytics.risk_indicators`: days past due and loan-to-value per loan and customer, and
//! concentration by product across the portfolio, kept by business date. Each run replaces the
//! day's own (an earlier run of the same day), a chunk of customers per transaction, then the
//! portfolio's, and leaves the days before for retention; every indicator carries its threshold,
//! alert level and a one-day expiry.

use uuid::Uuid;

use super::{Counts, JobRun, JobSpec, Session};
use crate::platform::error::ApiError;

pub const SPEC: JobSpec = JobSpec {
    name: "risk_indicators",
    source_system: "postgresql",
    source_table: "core.loans",
    target_system: "postgresql",
    target_table: "analytics.risk_indicators",
    transformation_type: "DERIVE",
    transformation_logic: "active loans: DAYS_PAST_DUE (threshold 30; LOW <1, MEDIUM <30, HIGH <90, \
        CRITICAL), LOAN_TO_VALUE (threshold 0.8; LOW <0.8, MEDIUM <1, HIGH <1.2, CRITICAL) per loan \
        and per customer; PRODUCT_CONCENTRATION, the product type's share of outstanding \
        (threshold 0.4; LOW <0.25, MEDIUM <0.4, HIGH <0.6, CRITICAL), for the portfolio",
};

/// The portfolio is one entity; its indicators use this id.
pub const PORTFOLIO_ID: Uuid = Uuid::nil();

pub async fn refresh(session: &Session) -> Result<JobRun, ApiError> {
    let chunks = session.clone();
    super::run_in_batches(
        session,
        &SPEC,
        serde_json::json!({}),
        Some(super::OneAtATime {
            name: "risk_indicators",
            busy: "a risk indicators refresh is under way: its result will be there when it ends",
        }),
        move |_| async move {
            // Each chunk of customers replaces its own indicators and commits: a reader sees
            // every customer's set whole, and no transaction of the refresh passes a second.
            let mut written = super::in_customer_ranges(&chunks, |tx, after| {
                Box::pin(refresh_customers(tx, after))
            })
            .await?;
            let mut tx = chunks.begin().await?;
            written += refresh_portfolio(&mut tx).await?;
            tx.commit().await?;
            Ok(Counts {
                read: written,
                written,
                failed: 0,
            })
        },
    )
    .await
}

/// Customers a chunk refreshes (about half a second at the bench volume).
const CHUNK: i64 = 20_000;

/// Replaces the loan and customer indicators of the next [`CHUNK`] customers after `after`: the
/// ids in (`after`, upper], a range, so that their loans are read with one range filter. Returns
/// how many it wrote and the upper bound ([`Uuid::max`] for the last chunk).
async fn refresh_customers(
    tx: &mut sqlx::PgConnection,
    after: Uuid,
) -> Result<(i64, Uuid), sqlx::Error> {
    let upper = sqlx::query_scalar!(
        r#"
        SELECT coalesce((SELECT customer_id FROM core.customers WHERE customer_id > $1
                         ORDER BY customer_id OFFSET $2::bigint - 1 LIMIT 1),
                        'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid) AS "upper!"
        "#,
        after,
        CHUNK,
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!(
        r#"
        DELETE FROM analytics.risk_indicators r
        WHERE r.as_of = core.business_date(now())
          AND ((r.entity_type = 'CUSTOMER' AND r.entity_id > $1 AND r.entity_id <= $2)
               OR (r.entity_type = 'LOAN'
                   AND r.entity_id IN (SELECT l.loan_id FROM core.loans l
                                       WHERE l.customer_id > $1 AND l.customer_id <= $2)))
        "#,
        after,
        upper,
    )
    .execute(&mut *tx)
    .await?;
    let written = sqlx::query!(
        r#"
        WITH active AS (
            SELECT l.loan_id, l.customer_id, l.loan_amount,
                   greatest(0, core.business_date(now()) - l.next_due_date) AS dpd,
                   nullif((l.collateral_info->>'value')::numeric, 0) AS collateral
            FROM core.loans l
            WHERE l.status IN ('DISBURSED', 'DEFAULTED') AND l.customer_id > $1 AND l.customer_id <= $2
        ),
        measured AS (
            SELECT 'LOAN' AS entity_type, loan_id AS entity_id, 'DAYS_PAST_DUE' AS indicator_type,
                   coalesce(dpd, 0)::numeric AS value FROM active
            UNION ALL
            SELECT 'LOAN', loan_id, 'LOAN_TO_VALUE', round(loan_amount / collateral, 4) FROM active
            WHERE collateral IS NOT NULL
            UNION ALL
            SELECT 'CUSTOMER', customer_id, 'DAYS_PAST_DUE', coalesce(max(dpd), 0) FROM active
            GROUP BY customer_id
            UNION ALL
            SELECT 'CUSTOMER', customer_id, 'LOAN_TO_VALUE', round(sum(loan_amount) / sum(collateral), 4)
            FROM active WHERE collateral IS NOT NULL GROUP BY customer_id
        )
        INSERT INTO analytics.risk_indicators (entity_type, entity_id, indicator_type, indicator_value,
            threshold_value, alert_level, calculated_at, expires_at, metadata)
        SELECT entity_type, entity_id, indicator_type, least(value, 999999.9999), t.threshold,
               CASE WHEN value < t.low THEN 'LOW' WHEN value < t.medium THEN 'MEDIUM'
                    WHEN value < t.high THEN 'HIGH' ELSE 'CRITICAL' END,
               now(), now() + interval '1 day', NULL
        FROM measured
        JOIN (VALUES ('DAYS_PAST_DUE', 30::numeric, 1::numeric, 30::numeric, 90::numeric),
                     ('LOAN_TO_VALUE', 0.8, 0.8, 1.0, 1.2))
             AS t(indicator_type, threshold, low, medium, high) USING (indicator_type)
        WHERE value IS NOT NULL
        "#,
        after,
        upper,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok((i64::try_from(written).unwrap_or(i64::MAX), upper))
}

/// Replaces the portfolio's concentration by product type; returns how many it wrote.
async fn refresh_portfolio(tx: &mut sqlx::PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query!(
        "DELETE FROM analytics.risk_indicators \
         WHERE entity_type = 'PORTFOLIO' AND as_of = core.business_date(now())"
    )
    .execute(&mut *tx)
    .await?;
    let written = sqlx::query!(
        r#"
        WITH shares AS (
            SELECT l.product_type,
                   round(sum(coalesce(l.principal_outstanding, l.loan_amount) + coalesce(l.interest_outstanding, 0)
                             + l.fees_outstanding + l.penalties_outstanding)
                         / nullif(sum(sum(coalesce(l.principal_outstanding, l.loan_amount)
                                          + coalesce(l.interest_outstanding, 0)
                                          + l.fees_outstanding + l.penalties_outstanding)) OVER (), 0), 4) AS value
            FROM core.loans l WHERE l.status IN ('DISBURSED', 'DEFAULTED')
            GROUP BY l.product_type
        )
        INSERT INTO analytics.risk_indicators (entity_type, entity_id, indicator_type, indicator_value,
            threshold_value, alert_level, calculated_at, expires_at, metadata)
        SELECT 'PORTFOLIO', $1::uuid, 'PRODUCT_CONCENTRATION', value, 0.4,
               CASE WHEN value < 0.25 THEN 'LOW' WHEN value < 0.4 THEN 'MEDIUM'
                    WHEN value < 0.6 THEN 'HIGH' ELSE 'CRITICAL' END,
               now(), now() + interval '1 day', jsonb_build_object('product_type', product_type)
        FROM shares WHERE value IS NOT NULL
        "#,
        PORTFOLIO_ID,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(i64::try_from(written).unwrap_or(i64::MAX))
}
