//! Daily loan servicing as a job: each day of a range in order (catching up). A day is opened
//! (its active loans queued) and `workers` tasks take batches off its queue, each batch a short
//! transaction of its own over loans nobody else holds, until the queue is empty. The run and its
//! counts are recorded like every job's.

use std::time::Duration;

use chrono::NaiveDate;

use super::{Counts, JobRun, JobSpec, Session};
use crate::domain::ledger::servicing::{self, Serviced};
use crate::platform::error::ApiError;

/// How long a run waits before it looks again for queued loans that other transactions held.
const HELD_LOANS_RETRY: Duration = Duration::from_millis(50);

pub const SPEC: JobSpec = JobSpec {
    name: "loan_servicing",
    source_system: "postgresql",
    source_table: "core.loans",
    target_system: "postgresql",
    target_table: "core.journal_entries",
    transformation_type: "SERVICE",
    transformation_logic: "per active loan and day: post interest falling due (INTEREST_DUE), \
        charge one late fee per installment past the product's grace days (LATE_FEE), default \
        past default_after_days, cure when no arrears are left",
};

/// The longest range one run catches up.
pub const MAX_DAYS: i64 = 366;

/// The business days a run services, in order. Never past the business day: servicing a day
/// ahead posts its interest, late fees and defaults, which nothing reverses. Only a rehearsal
/// (a copy of the database, a test) may run ahead, and its run says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Days {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub rehearsal: bool,
}

/// Why a range was refused: the field at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeError {
    pub field: &'static str,
    pub reason: String,
}

impl Days {
    /// `from` (default `to`) to `to` (default `today`, the business day). `to_field` names the
    /// field or flag that sets `to` in what the caller sent.
    pub fn new(
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
        today: NaiveDate,
        rehearsal: bool,
        to_field: &'static str,
    ) -> Result<Self, RangeError> {
        let to = to.unwrap_or(today);
        let from = from.unwrap_or(to);
        if to > today && !rehearsal {
            return Err(RangeError {
                field: to_field,
                reason: format!("{to} is after the business day {today}"),
            });
        }
        if from > to {
            return Err(RangeError {
                field: "from",
                reason: format!("{from} is after {to}"),
            });
        }
        if (to - from).num_days() >= MAX_DAYS {
            return Err(RangeError {
                field: "from",
                reason: format!("a run catches up at most {MAX_DAYS} days"),
            });
        }
        Ok(Self {
            from,
            to,
            rehearsal,
        })
    }
}

/// Services every active loan for each day of `days`, in order, with `workers` tasks taking
/// batches off each day's queue.
pub async fn run(session: &Session, days: Days, workers: usize) -> Result<JobRun, ApiError> {
    let Days {
        from,
        to,
        rehearsal,
    } = days;
    let parameters = if rehearsal {
        serde_json::json!({ "from": from, "to": to, "rehearsal": true })
    } else {
        serde_json::json!({ "from": from, "to": to })
    };
    let batches = session.clone();
    super::run_in_batches(session, &SPEC, parameters, None, move |_| async move {
        let session = batches;
        let mut total = Serviced::default();
        for day in from.iter_days().take_while(|d| *d <= to) {
            total += service_day(&session, day, workers).await?;
        }
        let counts = Counts {
            read: i64::from(total.loans),
            written: i64::from(total.interest_entries + total.late_fees)
                + i64::from(total.defaulted + total.cured),
            failed: 0,
        };
        Ok(counts)
    })
    .await
}

/// Opens `day` and services its queue until it is empty, then closes it.
async fn service_day(
    session: &Session,
    day: NaiveDate,
    workers: usize,
) -> Result<Serviced, ApiError> {
    let mut tx = session.begin().await?;
    servicing::open_day(&mut tx, day).await?;
    tx.commit().await?;
    let mut total = Serviced::default();
    loop {
        total += drain_with(session, day, workers).await?;
        let mut tx = session.begin().await?;
        let closed = servicing::close_day(&mut tx, day).await?;
        tx.commit().await?;
        if closed {
            return Ok(total);
        }
        // What is left was held by repayments or other batches: they finish in a moment.
        tokio::time::sleep(HELD_LOANS_RETRY).await;
    }
}

/// Lends `workers` tasks to a run another instance holds: they take batches off the queue of the
/// day it has open until it is empty (that run closes the day and records it). Returns what they
/// did.
pub async fn help(session: &Session, workers: usize) -> Result<Serviced, ApiError> {
    let mut tx = session.begin().await?;
    let day = servicing::open_day_in_progress(&mut tx).await?;
    tx.commit().await?;
    match day {
        Some(day) => drain_with(session, day, workers).await,
        None => Ok(Serviced::default()),
    }
}

/// `workers` tasks (at least one) taking `day`'s batches at once, until none is left to claim.
async fn drain_with(
    session: &Session,
    day: NaiveDate,
    workers: usize,
) -> Result<Serviced, ApiError> {
    let tasks: Vec<_> = (0..workers.max(1))
        .map(|_| tokio::spawn(drain(session.clone(), day)))
        .collect();
    let mut total = Serviced::default();
    for task in tasks {
        total += task
            .await
            .map_err(|e| ApiError::Internal(format!("servicing worker: {e}")))??;
    }
    Ok(total)
}

/// One worker: batches from the start of `day`'s queue to its end.
async fn drain(session: Session, day: NaiveDate) -> Result<Serviced, ApiError> {
    let mut total = Serviced::default();
    let mut after = None;
    loop {
        let mut tx = session.begin().await?;
        let batch = servicing::service_batch(&mut tx, day, after).await?;
        tx.commit().await?;
        total += batch.serviced;
        match batch.last {
            Some(last) => after = Some(last),
            None => return Ok(total),
        }
    }
}
