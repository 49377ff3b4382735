//! `analytics.customer_metrics` for one day, computed set-based, a chunk of customers per
//! transaction: each commits in well under a second at the bench volume, so the refresh never
//! holds the events' visibility horizon back for long.

use chrono::NaiveDate;
use uuid::Uuid;

use super::{Counts, JobRun, JobSpec, Session};
use crate::platform::error::ApiError;

pub const SPEC: JobSpec = JobSpec {
    name: "customer_metrics",
    source_system: "postgresql",
    source_table: "core.customers, core.loans, core.payments",
    target_system: "postgresql",
    target_table: "analytics.customer_metrics",
    transformation_type: "AGGREGATE",
    transformation_logic:
        "per customer as of the end of metric_date (UTC): loans applied, loans \
        disbursed and not closed (active), amount disbursed, completed repayments, outstanding on \
        active loans, worst days past due, risk score, loan-to-value of collateralised active loans",
};

/// The refresh: every customer registered by the end of `day`, upserted on
/// (customer_id, metric_date), so a re-run replaces the day's figures.
///
/// risk_score (0–100, higher is riskier) = (850 − credit score) / 5.5, an unrated customer
/// counting as 575, plus a third of the days past due up to 90; ltv_ratio = amount of active
/// loans with collateral / their collateral's value.
pub async fn refresh(session: &Session, day: NaiveDate) -> Result<JobRun, ApiError> {
    let parameters = serde_json::json!({ "metric_date": day });
    let chunks = session.clone();
    let alone = super::OneAtATime {
        name: "customer_metrics",
        busy: "a customer metrics refresh is under way: its result will be there when it ends",
    };
    super::run_in_batches(
        session,
        &SPEC,
        parameters,
        Some(alone),
        move |_| async move {
            let written = super::in_customer_ranges(&chunks, move |tx, after| {
                Box::pin(refresh_chunk(tx, day, after))
            })
            .await?;
            Ok(Counts {
                read: written,
                written,
                failed: 0,
            })
        },
    )
    .await
}

/// Customers a chunk refreshes (well under a second at the bench volume).
const CHUNK: i64 = 20_000;

/// Refreshes the next [`CHUNK`] customers after `after` (by id): the ids in (`after`, upper],
/// a range, so that the loans and payments are read with one range filter each. Returns how
/// many it wrote and the upper bound ([`Uuid::max`] for the last chunk).
async fn refresh_chunk(
    tx: &mut sqlx::PgConnection,
    day: NaiveDate,
    after: Uuid,
) -> Result<(i64, Uuid), sqlx::Error> {
    let chunk = sqlx::query!(
                r#"
                WITH cutoff AS (SELECT (($1::date + 1)::timestamp AT TIME ZONE (SELECT timezone FROM core.business_settings)) AS at),
                bounds AS (
                    SELECT $2::uuid AS lo,
                           coalesce((SELECT c.customer_id FROM core.customers c WHERE c.customer_id > $2
                                     ORDER BY c.customer_id OFFSET $3::bigint - 1 LIMIT 1),
                                    'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid) AS hi
                ),
                loan_stats AS (
                    SELECT l.customer_id,
                           count(*) AS total_loans,
                           count(*) FILTER (WHERE l.status IN ('DISBURSED', 'DEFAULTED') AND l.disbursement_date < cutoff.at) AS active_loans,
                           sum(l.loan_amount) FILTER (WHERE l.disbursement_date < cutoff.at) AS total_borrowed,
                           sum(coalesce(l.principal_outstanding, 0) + coalesce(l.interest_outstanding, 0) + l.fees_outstanding
                               + l.penalties_outstanding)
                               FILTER (WHERE l.status IN ('DISBURSED', 'DEFAULTED') AND l.disbursement_date < cutoff.at) AS outstanding,
                           max(greatest(0, $1::date - l.next_due_date))
                               FILTER (WHERE l.status IN ('DISBURSED', 'DEFAULTED') AND l.disbursement_date < cutoff.at) AS days_past_due,
                           sum(l.loan_amount)
                               FILTER (WHERE l.status IN ('DISBURSED', 'DEFAULTED') AND l.disbursement_date < cutoff.at
                                         AND (l.collateral_info->>'value')::numeric > 0) AS secured_amount,
                           sum((l.collateral_info->>'value')::numeric)
                               FILTER (WHERE l.status IN ('DISBURSED', 'DEFAULTED') AND l.disbursement_date < cutoff.at
                                         AND (l.collateral_info->>'value')::numeric > 0) AS collateral_value
                    FROM core.loans l, cutoff, bounds
                    WHERE l.application_date < cutoff.at
                      AND l.customer_id > bounds.lo AND l.customer_id <= bounds.hi
                    GROUP BY l.customer_id
                ),
                repaid AS (
                    SELECT p.customer_id, sum(p.amount) AS total_repaid
                    FROM core.payments p, cutoff, bounds
                    WHERE p.payment_type = 'REPAYMENT' AND p.status = 'COMPLETED' AND p.payment_date < cutoff.at
                      AND p.customer_id > bounds.lo AND p.customer_id <= bounds.hi
                    GROUP BY p.customer_id
                ),
                upserted AS (
                INSERT INTO analytics.customer_metrics AS m (customer_id, metric_date, total_loans, active_loans,
                    total_borrowed, total_repaid, current_outstanding, days_past_due, risk_score, ltv_ratio)
                SELECT c.customer_id, $1::date,
                       coalesce(s.total_loans, 0), coalesce(s.active_loans, 0), coalesce(s.total_borrowed, 0),
                       coalesce(r.total_repaid, 0), coalesce(s.outstanding, 0), coalesce(s.days_past_due, 0),
                       round(least(100, (850 - coalesce(c.credit_score, 575)) / 5.5
                                        + least(coalesce(s.days_past_due, 0), 90) / 3.0), 2),
                       CASE WHEN s.collateral_value > 0
                            THEN least(round(s.secured_amount / s.collateral_value, 4), 999.9999) END
                FROM core.customers c
                CROSS JOIN cutoff
                CROSS JOIN bounds
                LEFT JOIN loan_stats s ON s.customer_id = c.customer_id
                LEFT JOIN repaid r ON r.customer_id = c.customer_id
                WHERE c.created_at < cutoff.at AND c.customer_id > bounds.lo AND c.customer_id <= bounds.hi
                ON CONFLICT ON CONSTRAINT customer_metrics_customer_date_key DO UPDATE SET
                    total_loans = EXCLUDED.total_loans, active_loans = EXCLUDED.active_loans,
                    total_borrowed = EXCLUDED.total_borrowed, total_repaid = EXCLUDED.total_repaid,
                    current_outstanding = EXCLUDED.current_outstanding, days_past_due = EXCLUDED.days_past_due,
                    risk_score = EXCLUDED.risk_score, ltv_ratio = EXCLUDED.ltv_ratio, created_at = now()
                RETURNING 1
                )
                SELECT (SELECT count(*) FROM upserted) AS "written!", (SELECT hi FROM bounds) AS "upper!"
                "#,
                day,
                after,
                CHUNK,
            )
            .fetch_one(tx)
            .await?;
    Ok((chunk.written, chunk.upper))
}
