//! Four eyes: a decision that needs a checker is recorded as a proposal by its maker and takes
//! effect only when another person approves it, one whose approval limit covers its amount and
//! who works in the maker's office or above it (migration 0043).
//!
//! A resource asks [`needs_checker`] before it acts, and if so [`propose`]s instead; the
//! proposals resource decides, and runs the resource's own [`Execute`] for the action, which the
//! router wires in (`Executors`), so that no resource imports another.

pub mod repo;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::money::Amount;
use crate::platform::auth::{Caller, Role};
use crate::platform::config::FourEyesConfig;
use crate::platform::error::ApiError;
use crate::platform::state::AppState;

/// A decision that can be made to need a checker (`FOUR_EYES_ACTIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Approving a loan above the maker's approval limit.
    LoanApproval,
    Disbursement,
    WriteOff,
    Reversal,
    Refund,
    ProductChange,
    IdentityLink,
    StaffChange,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoanApproval => "LOAN_APPROVAL",
            Self::Disbursement => "DISBURSEMENT",
            Self::WriteOff => "WRITE_OFF",
            Self::Reversal => "REVERSAL",
            Self::Refund => "REFUND",
            Self::ProductChange => "PRODUCT_CHANGE",
            Self::IdentityLink => "IDENTITY_LINK",
            Self::StaffChange => "STAFF_CHANGE",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProposalStatus {
    Pending,
    Approved,
    Rejected,
    Expired,
}

/// A decision waiting for (or given) a checker's word.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Proposal {
    pub proposal_id: Uuid,
    pub action: Action,
    /// What it acts on: a loan or payment id, a product code, an identity link or directory
    /// entry id.
    pub object_id: String,
    /// The object's version when proposed: approving it after the object changed is 409.
    pub object_version: i32,
    /// The money it moves or commits; the checker's approval limit must cover it.
    pub amount: Option<Amount>,
    /// What the maker asked for (a product's fields, a directory entry).
    #[schema(value_type = Object)]
    pub payload: Value,
    pub customer_id: Option<Uuid>,
    /// The maker's principal.
    pub maker: String,
    #[serde(skip)]
    pub maker_subject: String,
    pub status: ProposalStatus,
    pub proposed_at: DateTime<Utc>,
    /// Seven days after it was proposed; unapproved by then, it has expired.
    pub expires_at: DateTime<Utc>,
    /// The checker's principal, once decided.
    pub checker: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    /// What taking effect returned (the loan, the product, the link…).
    #[schema(value_type = Option<Object>)]
    pub outcome: Option<Value>,
    pub version: i32,
}

impl Proposal {
    /// The object as a UUID (a loan, payment, link or directory entry).
    pub fn object_uuid(&self) -> Result<Uuid, ApiError> {
        self.object_id
            .parse()
            .map_err(|_| ApiError::Internal(format!("proposal {} names no id", self.proposal_id)))
    }
}

/// What a maker asks for.
pub struct Proposed {
    pub action: Action,
    pub object_id: String,
    pub object_version: i32,
    pub amount: Option<Decimal>,
    pub customer_id: Option<Uuid>,
    pub payload: Value,
}

/// Whether `action` needs a checker under `config`.
pub fn needs_checker(config: &FourEyesConfig, action: Action) -> bool {
    config.requires(action.as_str())
}

/// The largest amount `caller` may decide alone: their directory entry's limit, else their
/// role's; `None` for administrators (no limit).
pub async fn approval_limit(
    conn: &mut PgConnection,
    caller: &Caller,
    config: &FourEyesConfig,
) -> Result<Option<Decimal>, ApiError> {
    match caller.role {
        Role::Admin => Ok(None),
        Role::Staff => Ok(Some(
            repo::directory_limit(conn)
                .await?
                .unwrap_or(config.staff_limit),
        )),
        _ => Ok(Some(Decimal::ZERO)),
    }
}

/// Records the proposal (409 while another for the same action and object is pending).
pub async fn propose(conn: &mut PgConnection, proposed: Proposed) -> Result<Proposal, ApiError> {
    use crate::platform::db::errors::ResultExt;
    Ok(repo::insert(conn, &proposed)
        .await
        .on_constraint("proposals_one_pending", || {
            ApiError::conflict(format!(
                "a {} proposal for {} is pending already",
                proposed.action.as_str(),
                proposed.object_id
            ))
        })?)
}

/// The maker's answer: 202 Accepted, the proposal, and where to follow it.
pub fn accepted(proposal: &Proposal) -> Response {
    let location = format!("/v1/proposals/{}", proposal.proposal_id);
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(proposal),
    )
        .into_response()
}

/// 409 when the object is no longer at the version the maker saw.
pub fn check_version(proposal: &Proposal, current: i32) -> Result<(), ApiError> {
    if proposal.object_version == current {
        Ok(())
    } else {
        Err(ApiError::conflict(format!(
            "the {} changed since it was proposed (version {} then, {current} now): reject this \
             proposal and propose again",
            object_name(proposal.action),
            proposal.object_version
        )))
    }
}

fn object_name(action: Action) -> &'static str {
    match action {
        Action::LoanApproval | Action::Disbursement | Action::WriteOff | Action::Refund => "loan",
        Action::Reversal => "payment",
        Action::ProductChange => "product",
        Action::IdentityLink => "identity link",
        Action::StaffChange => "directory entry",
    }
}

/// A future an [`Execute`] returns.
pub type Effect<'a> = Pin<Box<dyn Future<Output = Result<Value, ApiError>> + Send + 'a>>;

/// What makes an approved proposal take effect, in the checker's transaction and under their
/// rights; what it returns is the proposal's outcome.
pub type Execute = for<'a> fn(&'a mut PgConnection, &'a AppState, &'a Proposal) -> Effect<'a>;

/// The [`Execute`] of each action, wired by the router.
#[derive(Clone, Default)]
pub struct Executors(HashMap<Action, Execute>);

impl Executors {
    pub fn with(mut self, action: Action, execute: Execute) -> Self {
        self.0.insert(action, execute);
        self
    }

    pub fn get(&self, action: Action) -> Result<Execute, ApiError> {
        self.0
            .get(&action)
            .copied()
            .ok_or_else(|| ApiError::Internal(format!("no executor for {}", action.as_str())))
    }
}

/// The part `key` of what the maker sent (`create`, `update`), if the proposal has it.
pub fn requested<T: serde::de::DeserializeOwned>(
    proposal: &Proposal,
    key: &str,
) -> Result<Option<T>, ApiError> {
    proposal
        .payload
        .get(key)
        .map(|part| serde_json::from_value(part.clone()))
        .transpose()
        .map_err(|e| ApiError::Internal(format!("proposal {}: {e}", proposal.proposal_id)))
}

/// The JSON of what took effect.
pub fn outcome(value: impl Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::Internal(e.to_string()))
}
