//! Daily loan servicing as a job: each day of a range in order (catching up), each in batches
//! of loans that commit on their own, so a repayment never waits for the whole book. The run
//! and its counts are recorded like every job's.

use chrono::NaiveDate;

use super::{Counts, JobRun, JobSpec, Session};
use crate::domain::ledger::servicing::{self, Serviced};
use crate::platform::error::ApiError;

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

/// Services every active loan for each day of `days`, in order.
pub async fn run(session: &Session, days: Days) -> Result<JobRun, ApiError> {
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
    super::run(session, &SPEC, parameters, move |_, tx| async move {
        // The first batch uses the job's transaction; every batch commits on its own.
        let mut tx = Some(tx);
        let mut total = Serviced::default();
        for day in from.iter_days().take_while(|d| *d <= to) {
            let mut after = None;
            loop {
                let mut batch = match tx.take() {
                    Some(tx) => tx,
                    None => batches.begin().await?,
                };
                let (serviced, last) = servicing::service_batch(&mut batch, day, after).await?;
                batch.commit().await?;
                total += serviced;
                match last {
                    Some(last) => after = Some(last),
                    None => break,
                }
            }
        }
        let tx = match tx {
            Some(tx) => tx,
            None => batches.begin().await?,
        };
        let counts = Counts {
            read: i64::from(total.loans),
            written: i64::from(total.interest_entries + total.late_fees)
                + i64::from(total.defaulted + total.cured),
            failed: 0,
        };
        Ok((tx, counts))
    })
    .await
}
