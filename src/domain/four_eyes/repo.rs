//! SQL for proposals. Row-level security shows staff the proposals of makers in their offices.

use rust_decimal::Decimal;
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Action, Proposal, ProposalStatus, Proposed};
use crate::domain::money::Amount;

pub async fn insert(conn: &mut PgConnection, p: &Proposed) -> Result<Proposal, sqlx::Error> {
    sqlx::query_as!(
        Proposal,
        r#"
        INSERT INTO core.proposals (proposal_id, action, object_id, object_version, amount,
                                    customer_id, payload)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        RETURNING proposal_id, action AS "action: Action", object_id, object_version,
                  amount AS "amount: Amount", payload, customer_id, maker, maker_subject,
                  status AS "status: ProposalStatus", proposed_at, expires_at, checker,
                  decided_at, reason, outcome, version
        "#,
        Uuid::now_v7(),
        p.action as Action,
        p.object_id,
        p.object_version,
        p.amount,
        p.customer_id,
        Json(&p.payload) as _,
    )
    .fetch_one(conn)
    .await
}

/// The proposal, locked until the transaction ends; `None` if the caller cannot see it.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<Proposal>, sqlx::Error> {
    sqlx::query_as!(
        Proposal,
        r#"
        SELECT proposal_id, action AS "action: Action", object_id, object_version,
               amount AS "amount: Amount", payload, customer_id, maker, maker_subject,
               status AS "status: ProposalStatus", proposed_at, expires_at, checker,
               decided_at, reason, outcome, version
        FROM core.proposals WHERE proposal_id = $1 FOR UPDATE
        "#,
        id
    )
    .fetch_optional(conn)
    .await
}

pub async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<Proposal>, sqlx::Error> {
    sqlx::query_as!(
        Proposal,
        r#"
        SELECT proposal_id, action AS "action: Action", object_id, object_version,
               amount AS "amount: Amount", payload, customer_id, maker, maker_subject,
               status AS "status: ProposalStatus", proposed_at, expires_at, checker,
               decided_at, reason, outcome, version
        FROM core.proposals WHERE proposal_id = $1
        "#,
        id
    )
    .fetch_optional(conn)
    .await
}

/// One page, oldest first, of the proposals in `status` (pending ones not yet expired).
pub async fn list(
    conn: &mut PgConnection,
    status: ProposalStatus,
    after: Option<Uuid>,
    fetch: i64,
) -> Result<Vec<Proposal>, sqlx::Error> {
    sqlx::query_as!(
        Proposal,
        r#"
        SELECT proposal_id, action AS "action: Action", object_id, object_version,
               amount AS "amount: Amount", payload, customer_id, maker, maker_subject,
               status AS "status: ProposalStatus", proposed_at, expires_at, checker,
               decided_at, reason, outcome, version
        FROM core.proposals
        WHERE status = $1 AND ($1 <> 'PENDING' OR expires_at > now())
          AND proposal_id > coalesce($2, '00000000-0000-0000-0000-000000000000'::uuid)
        ORDER BY proposal_id LIMIT $3
        "#,
        status as ProposalStatus,
        after,
        fetch,
    )
    .fetch_all(conn)
    .await
}

/// Decides a pending proposal: APPROVED or REJECTED (the checker is the request's principal,
/// set by the database) or EXPIRED.
pub async fn decide(
    conn: &mut PgConnection,
    id: Uuid,
    status: ProposalStatus,
    reason: Option<&str>,
) -> Result<Proposal, sqlx::Error> {
    sqlx::query_as!(
        Proposal,
        r#"
        UPDATE core.proposals SET status = $2, reason = $3
        WHERE proposal_id = $1 AND status = 'PENDING'
        RETURNING proposal_id, action AS "action: Action", object_id, object_version,
                  amount AS "amount: Amount", payload, customer_id, maker, maker_subject,
                  status AS "status: ProposalStatus", proposed_at, expires_at, checker,
                  decided_at, reason, outcome, version
        "#,
        id,
        status as ProposalStatus,
        reason,
    )
    .fetch_one(conn)
    .await
}

/// Records what taking effect returned.
pub async fn record_outcome(
    conn: &mut PgConnection,
    id: Uuid,
    outcome: &serde_json::Value,
) -> Result<Proposal, sqlx::Error> {
    sqlx::query_as!(
        Proposal,
        r#"
        UPDATE core.proposals SET outcome = $2
        WHERE proposal_id = $1
        RETURNING proposal_id, action AS "action: Action", object_id, object_version,
                  amount AS "amount: Amount", payload, customer_id, maker, maker_subject,
                  status AS "status: ProposalStatus", proposed_at, expires_at, checker,
                  decided_at, reason, outcome, version
        "#,
        id,
        Json(outcome) as _,
    )
    .fetch_one(conn)
    .await
}

/// The caller's limit from their directory entry, if it sets one.
pub async fn directory_limit(conn: &mut PgConnection) -> Result<Option<Decimal>, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT core.caller_approval_limit() AS "limit""#)
        .fetch_one(conn)
        .await
}
