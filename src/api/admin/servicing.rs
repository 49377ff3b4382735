//! `POST /v1/admin/servicing`: run daily loan servicing for a day or catch up over a range
//! (administrators). The in-service scheduler runs the same job once a day.

use axum::extract::State;
use axum::Json;
use chrono::NaiveDate;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::domain::jobs::{self, JobRun};
use crate::domain::ledger;
use crate::platform::auth::{AdminOnly, Authorized};
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::AppJson;
use crate::platform::state::AppState;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServicingRequest {
    /// The first business day to service; default `to`.
    pub from: Option<NaiveDate>,
    /// The last business day to service; default today. Not after today.
    pub to: Option<NaiveDate>,
}

/// Service every active loan for each business day from `from` to `to`, in order: interest
/// falling due becomes receivable, late fees are charged, loans default past their product's
/// threshold and defaulted loans without arrears are cured. Running a day again changes
/// nothing. The run is recorded in `metadata.job_execution`.
#[utoipa::path(
    post,
    path = "/v1/admin/servicing",
    request_body = ServicingRequest,
    responses(
        (status = 200, description = "The run", body = JobRun),
        responses::Common, responses::JsonBody, responses::Unprocessable
    )
)]
pub async fn run_servicing(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<AdminOnly>,
    AppJson(request): AppJson<ServicingRequest>,
) -> Result<Json<JobRun>, ApiError> {
    let (_place, session) = jobs::requested_run(&state.jobs, caller)?;
    let today = {
        let mut tx = session.begin().await?;
        let today = ledger::servicing::today(&mut tx).await?;
        tx.commit().await?;
        today
    };
    let days = jobs::servicing::Days::new(request.from, request.to, today, false, "to")
        .map_err(|e| ApiError::invalid_field(e.field, e.reason))?;
    Ok(Json(
        jobs::servicing::run(&session, days, state.jobs.servicing_workers).await?,
    ))
}
