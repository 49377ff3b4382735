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

/// Services every active loan for each day from `from` to `to`, in order.
pub async fn run(session: &Session, from: NaiveDate, to: NaiveDate) -> Result<JobRun, ApiError> {
    let parameters = serde_json::json!({ "from": from, "to": to });
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
