//! One run of the export: read every table's new row versions in one snapshot, write them as
//! Parquet data files, check the control totals, then commit the tables, the position, the
//! totals and the run's record in one short PostgreSQL transaction.
//!
//! Killed at any point before that transaction commits, a run leaves only data and metadata
//! files that no catalog entry points to; the next run starts from the same position.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use futures_util::TryStreamExt;
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::io::FileIO;
use iceberg::spec::{DataFile, DataFileFormat};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::catalog::{self, Staged, NAMESPACE};
use crate::columns::Builder;
use crate::control::{self, Totals};
use crate::tables::{LakeTable, ALL, JOURNAL_LINES};
use crate::tokens::Tokens;
use crate::Failure;

/// Rows per Arrow batch: a few megabytes of builders, whatever the table's size.
const BATCH_ROWS: usize = 32_768;
/// Rows per Parquet row group, which the writer holds in memory until it is full.
const ROW_GROUP_ROWS: usize = 262_144;

pub struct Export {
    /// The catalog's name in `metadata.iceberg_tables` (one per lake).
    pub catalog: String,
    /// Where the tables' files go: a local directory (path or `file://` URL).
    pub warehouse: String,
    pub file_io: FileIO,
    pub tokens: Tokens,
}

/// What a committed run did.
#[derive(Debug)]
pub struct Report {
    pub job_id: Uuid,
    /// The horizon the lake now reaches (a transaction id).
    pub position: String,
    /// Rows written per table, in `tables::ALL`'s order.
    pub rows: Vec<(&'static str, u64)>,
    /// Business dates whose trial balance the lake was checked against.
    pub dates_checked: usize,
}

/// A table's part of the run, ready to commit.
struct Written {
    lake_table: &'static LakeTable,
    previous_location: Option<String>,
    location: String,
    rows: u64,
}

impl Export {
    pub async fn run(&self, database_url: &str) -> Result<Report, Failure> {
        let file_io = &self.file_io;
        let mut conn = PgConnection::connect(database_url).await?;
        let locked: bool = sqlx::query_scalar(
            // The same key is the run's runner_lock in metadata.job_execution.
            "SELECT pg_try_advisory_lock(hashtextextended('lake_export:' || $1, 0))",
        )
        .bind(&self.catalog)
        .fetch_one(&mut conn)
        .await?;
        if !locked {
            return Err(Failure::Busy(format!(
                "an export of lake {} is running",
                self.catalog
            )));
        }
        let job_id = self.start_job(&mut conn).await?;
        match self.export(&mut conn, file_io, job_id).await {
            Ok(report) => Ok(report),
            Err(failure) => {
                let message = failure.to_string();
                // Out of the run's snapshot (read-only, or aborted) first. The run's own record:
                // a failure to write it must not hide the first one.
                let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
                let _ = sqlx::query(
                    "UPDATE metadata.job_execution
                     SET status = 'FAILED', finished_at = now(), error_message = $2
                     WHERE job_id = $1",
                )
                .bind(job_id)
                .bind(&message)
                .execute(&mut conn)
                .await;
                Err(failure)
            }
        }
    }

    /// Records the run; runs of this lake left RUNNING were killed (this one holds the lock).
    /// The run's record names that lock as its runner's, so the service's scheduler marks a
    /// killed run failed once its lock is gone (`metadata.fail_abandoned_jobs`).
    async fn start_job(&self, conn: &mut PgConnection) -> Result<Uuid, Failure> {
        sqlx::query(
            "UPDATE metadata.job_execution
             SET status = 'FAILED', finished_at = now(),
                 error_message = 'stopped before it committed; nothing of it is in the lake'
             WHERE job_name = 'lake_export' AND status = 'RUNNING' AND parameters ->> 'catalog' = $1",
        )
        .bind(&self.catalog)
        .execute(&mut *conn)
        .await?;
        let job_id: Uuid = sqlx::query_scalar(
            "INSERT INTO metadata.job_execution (job_name, parameters, runner_lock)
             VALUES ('lake_export', jsonb_build_object('catalog', $1::text, 'warehouse', $2::text),
                     hashtextextended('lake_export:' || $1, 0))
             RETURNING job_id",
        )
        .bind(&self.catalog)
        .bind(&self.warehouse)
        .fetch_one(&mut *conn)
        .await?;
        Ok(job_id)
    }

    async fn export(
        &self,
        conn: &mut PgConnection,
        file_io: &FileIO,
        job_id: Uuid,
    ) -> Result<Report, Failure> {
        // One snapshot for every table and both sides of the control totals. Read only: the
        // transaction takes no transaction id, so it holds back neither the event streams'
        // horizon nor the next run's.
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *conn)
            .await?;
        let previous: Option<(String, String)> = sqlx::query_as(
            "SELECT position::text, warehouse FROM metadata.lake_exports WHERE catalog_name = $1",
        )
        .bind(&self.catalog)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((_, warehouse)) = &previous {
            if warehouse != &self.warehouse {
                return Err(Failure::Config(format!(
                    "lake {} lives in {warehouse}, not {}",
                    self.catalog, self.warehouse
                )));
            }
        }
        let previous = previous.map(|(position, _)| position);
        let horizon: String =
            sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
                .fetch_one(&mut *conn)
                .await?;
        if let Some(previous) = &previous {
            // After a restore from a dump the transaction ids start lower: exporting from there
            // would skip versions and export others twice.
            if position(&horizon)? < position(previous)? {
                return Err(Failure::Config(format!(
                    "the database's transactions ({horizon}) are behind lake {}'s position \
                     ({previous}): was it restored from a dump? Export to a new lake",
                    self.catalog
                )));
            }
        }

        let staged = Staged::default();
        let mut written = Vec::new();
        let mut journal_lines = None;
        for lake_table in ALL {
            let found =
                catalog::load_or_create(conn, &self.catalog, &self.warehouse, file_io, lake_table)
                    .await?;
            let (files, rows) = self
                .write_table(conn, lake_table, &found.table, &previous, &horizon, job_id)
                .await?;
            let records_before = control::records(&found.table).await?;
            let table = if files.is_empty() {
                found.table
            } else {
                staged.hold(found.table.clone())?;
                let properties = HashMap::from([
                    ("lakehouse.position".to_owned(), horizon.clone()),
                    ("lakehouse.job-id".to_owned(), job_id.to_string()),
                ]);
                let tx = Transaction::new(&found.table);
                let append = tx
                    .fast_append()
                    .add_data_files(files)
                    .set_snapshot_properties(properties);
                append.apply(tx)?.commit(&staged).await?
            };
            // The table's snapshot chain: what it held, and what this run added.
            let records = control::records(&table).await?;
            if records != records_before + rows {
                return Err(Failure::ControlTotals(format!(
                    "lake table {} holds {records} rows after adding {rows} to {records_before}",
                    lake_table.name
                )));
            }
            if std::ptr::eq(lake_table, &JOURNAL_LINES) {
                journal_lines = Some(table.clone());
            }
            written.push(Written {
                lake_table,
                previous_location: found.previous_location,
                location: table.metadata_location_result()?.to_owned(),
                rows,
            });
        }

        // The lake as it will be once committed, read back from its files, against the books.
        let journal_lines =
            journal_lines.ok_or_else(|| Failure::ControlTotals("no journal lines table".into()))?;
        let (lake, lines) = control::scan(&journal_lines).await?;
        let books = control::books(conn, &horizon, lines).await?;
        let dates_checked = control::compare(&books, &lake)?;
        sqlx::query("COMMIT").execute(&mut *conn).await?;

        self.commit(conn, job_id, previous.as_deref(), &horizon, &written, &lake)
            .await?;
        Ok(Report {
            job_id,
            position: horizon,
            rows: written
                .iter()
                .map(|w| (w.lake_table.name, w.rows))
                .collect(),
            dates_checked,
        })
    }

    /// Streams one table's new row versions into Parquet data files.
    async fn write_table(
        &self,
        conn: &mut PgConnection,
        lake_table: &LakeTable,
        table: &Table,
        previous: &Option<String>,
        horizon: &str,
        job_id: Uuid,
    ) -> Result<(Vec<DataFile>, u64), Failure> {
        let schema = table.metadata().current_schema().clone();
        let arrow_schema: SchemaRef = Arc::new(schema_to_arrow_schema(&schema)?);
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_size(ROW_GROUP_ROWS)
            .build();
        let files = RollingFileWriterBuilder::new_with_default_file_size(
            ParquetWriterBuilder::new(properties, schema),
            table.file_io().clone(),
            DefaultLocationGenerator::new(table.metadata().clone())?,
            DefaultFileNameGenerator::new(job_id.to_string(), None, DataFileFormat::Parquet),
        );
        let mut writer = DataFileWriterBuilder::new(files).build(None).await?;

        let statement = lake_table.statement(previous.is_none());
        let mut rows = sqlx::query(&statement)
            .bind(previous)
            .bind(horizon)
            .fetch(&mut *conn);
        let kinds: Vec<_> = lake_table.columns.iter().map(|c| c.kind).collect();
        let mut builders = kinds
            .iter()
            .map(|k| Builder::new(*k))
            .collect::<Result<Vec<_>, _>>()?;
        let (mut pending, mut total) = (0usize, 0u64);
        loop {
            let row = rows.try_next().await?;
            if let Some(row) = &row {
                for (index, (builder, kind)) in builders.iter_mut().zip(&kinds).enumerate() {
                    builder.push(row, index, *kind, &self.tokens)?;
                }
                pending += 1;
            }
            if pending == BATCH_ROWS || (row.is_none() && pending > 0) {
                let columns = builders.iter_mut().map(Builder::finish).collect();
                let batch = RecordBatch::try_new(arrow_schema.clone(), columns)?;
                writer.write(batch).await?;
                total += pending as u64;
                pending = 0;
            }
            if row.is_none() {
                break;
            }
        }
        drop(rows);
        let files = writer.close().await?;
        Ok((files, total))
    }

    /// The run lands: catalog pointers, position, control totals, lineage and the run's record,
    /// in one transaction, each change conditional on the state the run started from.
    async fn commit(
        &self,
        conn: &mut PgConnection,
        job_id: Uuid,
        previous: Option<&str>,
        horizon: &str,
        written: &[Written],
        lake_totals: &Totals,
    ) -> Result<(), Failure> {
        let moved = || {
            Failure::Busy(format!(
                "another run moved lake {}'s position",
                self.catalog
            ))
        };
        let mut tx = conn.begin().await?;
        let advanced = match previous {
            None => sqlx::query(
                "INSERT INTO metadata.lake_exports (catalog_name, warehouse, position, job_id)
                 VALUES ($1, $2, $3::text::xid8, $4) ON CONFLICT DO NOTHING",
            )
            .bind(&self.catalog)
            .bind(&self.warehouse)
            .bind(horizon)
            .bind(job_id)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            Some(previous) => sqlx::query(
                "UPDATE metadata.lake_exports
                 SET position = $3::text::xid8, exported_at = now(), job_id = $4
                 WHERE catalog_name = $1 AND position = $2::text::xid8",
            )
            .bind(&self.catalog)
            .bind(previous)
            .bind(horizon)
            .bind(job_id)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        if advanced != 1 {
            return Err(moved());
        }
        sqlx::query(
            "INSERT INTO metadata.iceberg_namespace_properties
             VALUES ($1, $2, 'exists', 'true') ON CONFLICT DO NOTHING",
        )
        .bind(&self.catalog)
        .bind(NAMESPACE)
        .execute(&mut *tx)
        .await?;
        for table in written {
            if table.previous_location.as_deref() == Some(table.location.as_str()) {
                continue;
            }
            let pointed = sqlx::query(
                "INSERT INTO metadata.iceberg_tables AS t (catalog_name, table_namespace,
                     table_name, metadata_location, previous_metadata_location)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (catalog_name, table_namespace, table_name) DO UPDATE
                 SET metadata_location = excluded.metadata_location,
                     previous_metadata_location = excluded.previous_metadata_location
                 WHERE t.metadata_location = excluded.previous_metadata_location",
            )
            .bind(&self.catalog)
            .bind(NAMESPACE)
            .bind(table.lake_table.name)
            .bind(&table.location)
            .bind(&table.previous_location)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if pointed != 1 {
                return Err(moved());
            }
            sqlx::query(
                "INSERT INTO metadata.data_lineage (source_system, source_table, target_system,
                     target_table, transformation_type, transformation_logic, pipeline_id, job_id,
                     record_count)
                 VALUES ('postgresql', $1, 'iceberg', $2, 'incremental',
                         'the row versions, as of the run, of transactions in [last position, horizon)',
                         'lake_export', $3, $4)",
            )
            .bind(format!("core.{}", table.lake_table.name))
            .bind(format!(
                "{}.{NAMESPACE}.{}",
                self.catalog, table.lake_table.name
            ))
            .bind(job_id)
            .bind(i64::try_from(table.rows).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        }
        control::record(&mut tx, &self.catalog, lake_totals).await?;
        // The service's requests this run answers: those whose every earlier commit is below
        // the horizon. One made while a transaction older than the run was open waits for the
        // next run.
        sqlx::query(
            "UPDATE metadata.lake_export_requests SET job_id = $1, taken_at = now()
             WHERE catalog_name = $2 AND job_id IS NULL AND requested_xmax <= $3::text::xid8",
        )
        .bind(job_id)
        .bind(&self.catalog)
        .bind(horizon)
        .execute(&mut *tx)
        .await?;
        let rows: u64 = written.iter().map(|w| w.rows).sum();
        sqlx::query(
            "UPDATE metadata.job_execution
             SET status = 'SUCCEEDED', finished_at = now(), records_read = $2, records_written = $2
             WHERE job_id = $1",
        )
        .bind(job_id)
        .bind(i64::try_from(rows).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// A transaction id (xid8's text) as a number.
fn position(text: &str) -> Result<u64, Failure> {
    text.parse()
        .map_err(|_| Failure::Config(format!("{text} is not a transaction position")))
}
