//! Partition upkeep as a job: loan and payment partitions around today exist before the first
//! row needs them (requests also create them on demand).

use super::{Counts, JobRun, JobSpec, Session};
use crate::platform::error::ApiError;

pub const SPEC: JobSpec = JobSpec {
    name: "partition_upkeep",
    source_system: "postgresql",
    source_table: "core.loans, core.payments",
    target_system: "postgresql",
    target_table: "core.loans, core.payments",
    transformation_type: "MAINTAIN",
    transformation_logic: "create the yearly loan and monthly payment partitions around now \
        (core.ensure_partitions_around)",
};

pub async fn run(session: &Session) -> Result<JobRun, ApiError> {
    super::run(
        session,
        &SPEC,
        serde_json::json!({}),
        |_, mut tx| async move {
            sqlx::query!(r#"SELECT core.ensure_partitions_around(now())"#)
                .fetch_one(&mut *tx)
                .await?;
            Ok((tx, Counts::default()))
        },
    )
    .await
}
