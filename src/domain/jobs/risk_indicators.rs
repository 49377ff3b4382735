//! `analytics.risk_indicators`: days past due and loan-to-value per loan and customer, and
//! concentration by product across the portfolio. Each run replaces the previous one; every
//! indicator carries its threshold, alert level and a one-day expiry.

use sqlx::{Postgres, Transaction};
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
    super::run(
        session,
        &SPEC,
        serde_json::json!({}),
        move |_, mut tx: Transaction<'static, Postgres>| async move {
            let replaced = sqlx::query!(
                r#"
                DELETE FROM analytics.risk_indicators
                "#,
            )
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let written = sqlx::query!(
                r#"
                WITH active AS (
                    SELECT l.loan_id, l.customer_id, l.product_type, l.loan_amount,
                           greatest(0, core.business_date(now()) - l.next_due_date) AS dpd,
                           nullif((l.collateral_info->>'value')::numeric, 0) AS collateral,
                           coalesce(l.principal_outstanding, l.loan_amount) + coalesce(l.interest_outstanding, 0)
                               + l.fees_outstanding + l.penalties_outstanding AS outstanding
                    FROM core.loans l WHERE l.status IN ('DISBURSED', 'DEFAULTED')
                ),
                measured AS (
                    SELECT 'LOAN' AS entity_type, loan_id AS entity_id, 'DAYS_PAST_DUE' AS indicator_type,
                           coalesce(dpd, 0)::numeric AS value, NULL::jsonb AS metadata FROM active
                    UNION ALL
                    SELECT 'LOAN', loan_id, 'LOAN_TO_VALUE', round(loan_amount / collateral, 4), NULL FROM active
                    WHERE collateral IS NOT NULL
                    UNION ALL
                    SELECT 'CUSTOMER', customer_id, 'DAYS_PAST_DUE', coalesce(max(dpd), 0), NULL FROM active
                    GROUP BY customer_id
                    UNION ALL
                    SELECT 'CUSTOMER', customer_id, 'LOAN_TO_VALUE', round(sum(loan_amount) / sum(collateral), 4), NULL
                    FROM active WHERE collateral IS NOT NULL GROUP BY customer_id
                    UNION ALL
                    SELECT 'PORTFOLIO', $1::uuid, 'PRODUCT_CONCENTRATION',
                           round(sum(outstanding) / nullif(sum(sum(outstanding)) OVER (), 0), 4),
                           jsonb_build_object('product_type', product_type)
                    FROM active GROUP BY product_type
                )
                INSERT INTO analytics.risk_indicators (entity_type, entity_id, indicator_type, indicator_value,
                    threshold_value, alert_level, calculated_at, expires_at, metadata)
                SELECT entity_type, entity_id, indicator_type, CASE WHEN value > 999999.9999 THEN 999999.9999 ELSE value END,
                       t.threshold,
                       CASE WHEN value < t.low THEN 'LOW' WHEN value < t.medium THEN 'MEDIUM'
                            WHEN value < t.high THEN 'HIGH' ELSE 'CRITICAL' END,
                       now(), now() + interval '1 day', metadata
                FROM measured
                JOIN (VALUES ('DAYS_PAST_DUE', 30::numeric, 1::numeric, 30::numeric, 90::numeric),
                             ('LOAN_TO_VALUE', 0.8, 0.8, 1.0, 1.2),
                             ('PRODUCT_CONCENTRATION', 0.4, 0.25, 0.4, 0.6))
                     AS t(indicator_type, threshold, low, medium, high) USING (indicator_type)
                WHERE value IS NOT NULL
                "#,
                PORTFOLIO_ID,
            )
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let _ = replaced;
            Ok((
                tx,
                Counts {
                    read: i64::try_from(written).unwrap_or(i64::MAX),
                    written: i64::try_from(written).unwrap_or(i64::MAX),
                    failed: 0,
                },
            ))
        },
    )
    .await
}
