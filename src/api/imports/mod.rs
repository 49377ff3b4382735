//! `POST /v1/imports/customers`: the ETL pipeline loads customers through `staging`.
//!
//! The body (NDJSON or a JSON array) is read as a stream and staged a thousand records at a
//! time, each thousand committed on its own, so memory stays flat whatever its size and no
//! transaction stays open while the client sends. Each record is checked and its ID number
//! encrypted exactly as `POST /v1/customers` does; a bad record is staged with its error. Once the
//! body is whole, the batch's good lines move into `core.customers` a thousand lines at a time
//! (`ON CONFLICT DO NOTHING`), and lines that clashed with an existing customer get their error.
//! Lines already staged for the batch are skipped, so re-posting a batch creates nothing twice.
//!
//! One upload of a batch runs at a time. An upload that fails leaves no staged line behind (nor
//! does one that died: the next upload of its batch clears them first), and a failure while
//! loading leaves whole chunks: each loaded line is marked in the same commit as its customer.

pub mod loans;
pub mod records;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::Json;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json as SqlJson;
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use self::records::{Format, RawRecord, RecordChunks, Splitter};
use crate::domain::customer_record::{Address, CreateCustomerRequest, NewCustomer};
use crate::domain::jobs::{self, Counts, JobSpec, OneAtATime, Session};
use crate::platform::auth::RequestTx;
use crate::platform::auth::{Authorized, Caller, EtlOnly};
use crate::platform::error::{responses, ApiError, FieldError};
use crate::platform::extract::{from_json_value, AppPath};
use crate::platform::pii::{self, PiiCipher};
use crate::platform::routing::Tagged;
use crate::platform::state::AppState;

/// Records staged, and lines loaded, per transaction.
const CHUNK: usize = 1000;
/// The longest single record accepted.
const MAX_RECORD_BYTES: usize = 64 * 1024;

pub const SPEC: JobSpec = JobSpec {
    name: "customer_import",
    source_system: "etl",
    source_table: "staging.customer_imports",
    target_system: "postgresql",
    target_table: "core.customers",
    transformation_type: "LOAD",
    transformation_logic: "validate each staged record as POST /v1/customers does, encrypt the ID \
        number, insert new customers; duplicates and invalid rows keep their error in staging",
};

/// The upload route (long-running: no request retry, the job timeout).
pub fn upload_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(import_customers))
        .merge(loans::upload_router())
        .tagged("imports")
}

/// The report route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_import))
        .merge(loans::router())
        .tagged("imports")
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// Identifies the batch: 1 to 50 letters, digits, '.', '_' or '-'. Re-posting a batch adds
    /// only lines it did not have. Generated when absent.
    pub batch_id: Option<String>,
    /// Where the rows come from, recorded with them.
    pub source_system: Option<String>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ImportError {
    pub line_number: i32,
    pub error: String,
}

/// Where a batch stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportReport {
    pub batch_id: String,
    pub total_rows: i64,
    pub imported: i64,
    pub failed: i64,
    /// The first 1,000 errors, by line.
    pub errors: Vec<ImportError>,
    /// The run that produced this report (POST only).
    pub job_id: Option<Uuid>,
}

/// An upload let in: its place among the imports running, the deadline of its body, how its
/// records are framed, its batch and source, and the sender's session.
struct Upload {
    running: tokio::sync::OwnedSemaphorePermit,
    deadline: tokio::time::Instant,
    format: Format,
    batch: String,
    source: String,
    session: Session,
}

impl Upload {
    fn start(
        state: &AppState,
        caller: &Caller,
        query: ImportQuery,
        headers: &HeaderMap,
    ) -> Result<Self, ApiError> {
        // Each upload holds a pooled connection until its body has arrived: a few slow ones
        // must not drain the pool, so only so many run at once, and each body has a deadline.
        let Ok(running) = state.jobs.imports.clone().try_acquire_owned() else {
            return Err(ApiError::TooManyRequests {
                retry_after_secs: 5,
            });
        };
        let deadline = tokio::time::Instant::now() + state.jobs.import_read_timeout;
        let format = body_format(headers)?;
        let batch = query
            .batch_id
            .unwrap_or_else(|| format!("batch-{}", Uuid::now_v7().simple()));
        check_batch_id(&batch)?;
        let source = query.source_system.unwrap_or_else(|| "api".into());
        if source.is_empty() || source.len() > 100 {
            return Err(ApiError::BadRequest(
                "source_system must be 1 to 100 characters".into(),
            ));
        }
        let session = Session::Caller {
            pool: state.db.pool.clone(),
            caller: caller.clone(),
            statement_timeout_ms: state.jobs.statement_timeout.as_millis(),
        };
        Ok(Self {
            running,
            deadline,
            format,
            batch,
            source,
            session,
        })
    }
}

/// How an upload's records are framed, from its content type (415 for another).
fn body_format(headers: &HeaderMap) -> Result<Format, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/x-ndjson") {
        Ok(Format::NdJson)
    } else if content_type.starts_with("application/json") {
        Ok(Format::JsonArray)
    } else {
        Err(ApiError::UnsupportedMediaType(
            "send application/x-ndjson (one record per line) or application/json (an array)".into(),
        ))
    }
}

fn check_batch_id(batch: &str) -> Result<(), ApiError> {
    if (1..=50).contains(&batch.len())
        && batch
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "batch_id must be 1 to 50 letters, digits, '.', '_' or '-'".into(),
        ))
    }
}

/// Load customers (ETL). Send NDJSON (`application/x-ndjson`) or a JSON array
/// (`application/json`) of customer records shaped like `POST /v1/customers`. Good rows are
/// imported, bad rows reported with their line and error; nothing is imported twice.
#[utoipa::path(
    post,
    path = "/v1/imports/customers",
    params(ImportQuery),
    request_body(content = Vec<CreateCustomerRequest>, content_type = "application/json",
                 description = "A JSON array of customers; or send `application/x-ndjson` with one \
                                customer per line (same fields)"),
    responses(
        (status = 200, description = "The batch after this upload", body = ImportReport),
        responses::Common, responses::JsonBody, responses::Conflict, responses::Unprocessable
    )
)]
async fn import_customers(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<EtlOnly>,
    Query(query): Query<ImportQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ImportReport>, ApiError> {
    let Upload {
        running: _running,
        deadline,
        format,
        batch,
        source,
        session,
    } = Upload::start(&state, &caller, query, &headers)?;
    let limit = state.jobs.import_limit_bytes;
    let cipher = state.pii.clone();
    let parameters = serde_json::json!({"batch_id": batch, "source_system": source});
    let alone = OneAtATime {
        name: &format!("customer_import:{batch}"),
        busy: &format!(
            "batch {batch} is being uploaded by another request: send it again once that one has \
             answered"
        ),
    };
    let batch_for_job = batch.clone();
    let work_session = session.clone();
    let run = jobs::run_in_batches(
        &session,
        &SPEC,
        parameters,
        Some(alone),
        move |job_id| async move {
            let upload = CustomerUpload {
                session: &work_session,
                batch: &batch_for_job,
                source: &source,
                job_id,
                cipher: &cipher,
            };
            upload.run(body, format, limit, deadline).await
        },
    )
    .await?;

    upload_report(&state, caller, Lines::Customers, &batch, run.job_id).await
}

struct CustomerUpload<'a> {
    session: &'a Session,
    batch: &'a str,
    source: &'a str,
    job_id: Uuid,
    cipher: &'a PiiCipher,
}

impl CustomerUpload<'_> {
    /// Stages and loads the body; on failure, discards what it staged.
    async fn run(
        &self,
        body: Body,
        format: Format,
        limit: usize,
        deadline: tokio::time::Instant,
    ) -> Result<Counts, ApiError> {
        // A batch is its sender's: another principal's batch id is refused, asked under the
        // batch's lock so that two senders cannot both find it free.
        if self.taken().await? {
            return Err(ApiError::Conflict {
                detail: format!("batch {} was sent by another principal", self.batch),
                errors: vec![FieldError::new(
                    "batch_id",
                    "is another principal's: choose another",
                )],
            });
        }
        // What an upload of this batch that died left staged (none is running: we hold its lock).
        self.discard_unloaded().await?;
        let staged = self.stage(body, format, limit, deadline).await;
        let outcome = match staged {
            Ok(read) => self.load().await.map(|(written, failed)| Counts {
                read,
                written,
                failed,
            }),
            Err(error) => Err(error),
        };
        if outcome.is_err() {
            if let Err(error) = self.discard_unloaded().await {
                tracing::warn!(
                    ?error,
                    batch = self.batch,
                    "discarding a failed upload's lines"
                );
            }
        }
        outcome
    }

    /// Reads the body and stages its records, a chunk per transaction; returns how many it read.
    async fn stage(
        &self,
        body: Body,
        format: Format,
        limit: usize,
        deadline: tokio::time::Instant,
    ) -> Result<i64, ApiError> {
        let splitter = Splitter::new(format, MAX_RECORD_BYTES);
        let mut records = RecordChunks::new(body, splitter, limit, deadline, CHUNK);
        while let Some(chunk) = records.next().await? {
            let rows: Vec<Staged> = chunk.into_iter().map(|r| stage(r, self.cipher)).collect();
            self.insert_staged(&rows).await?;
        }
        Ok(records.read())
    }

    /// Whether another principal has sent lines under this batch id.
    async fn taken(&self) -> Result<bool, ApiError> {
        let mut tx = self.session.begin().await?;
        let taken =
            sqlx::query_scalar!(r#"SELECT staging.batch_taken($1) AS "taken!""#, self.batch)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(taken)
    }

    /// Removes the lines of this batch that no successful upload loaded or judged, a chunk at a
    /// time.
    async fn discard_unloaded(&self) -> Result<(), ApiError> {
        loop {
            let mut tx = self.session.begin().await?;
            let gone = sqlx::query_scalar!(
                r#"SELECT staging.discard_unloaded($1, $2) AS "gone!""#,
                self.batch,
                CHUNK as i32,
            )
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            if gone < CHUNK as i64 {
                return Ok(());
            }
        }
    }

    /// Stages `rows` in a transaction of their own.
    async fn insert_staged(&self, rows: &[Staged]) -> Result<(), ApiError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.session.begin().await?;
        let text = |f: fn(&Staged) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
        fn valid(r: &Staged) -> Option<&Valid> {
            r.valid.as_ref()
        }
        sqlx::query!(
            r#"
            INSERT INTO staging.customer_imports (batch_id, source_system, job_id, line_number,
                raw_data, error_message, customer_id, customer_code, full_name,
                id_number_ciphertext, id_number_hash, id_number_last4, phone_number, email,
                date_of_birth, address, credit_score)
            SELECT $1, $2, $3, t.*
            FROM unnest($4::int[], $5::jsonb[], $6::text[], $7::uuid[], $8::text[], $9::text[],
                        $10::bytea[], $11::bytea[], $12::text[], $13::text[], $14::text[],
                        $15::date[], $16::jsonb[], $17::int[]) AS t
            ON CONFLICT ON CONSTRAINT customer_imports_batch_line_key DO NOTHING
            "#,
            // The batch.
            self.batch,
            self.source,
            self.job_id,
            // Each line as sent, and its error if it was refused.
            &rows.iter().map(|r| r.line).collect::<Vec<i32>>(),
            &rows.iter().map(|r| r.raw.clone()).collect::<Vec<_>>(),
            &text(|r| r.error.clone()) as &[Option<String>],
            // The checked, sealed record of a line that passed (NULL otherwise).
            &rows
                .iter()
                .map(|r| valid(r).map(|v| v.customer_id))
                .collect::<Vec<_>>() as &[Option<Uuid>],
            &text(|r| valid(r).map(|v| v.customer.customer_code.clone())) as &[Option<String>],
            &text(|r| valid(r).map(|v| v.customer.full_name.clone())) as &[Option<String>],
            &rows
                .iter()
                .map(|r| valid(r).map(|v| v.ciphertext.clone()))
                .collect::<Vec<_>>() as &[Option<Vec<u8>>],
            &rows
                .iter()
                .map(|r| valid(r).map(|v| v.hash.clone()))
                .collect::<Vec<_>>() as &[Option<Vec<u8>>],
            &text(|r| valid(r).map(|v| v.last4.clone())) as &[Option<String>],
            &text(|r| valid(r).and_then(|v| v.customer.phone_number.clone()))
                as &[Option<String>],
            &text(|r| valid(r).and_then(|v| v.customer.email.clone())) as &[Option<String>],
            &rows
                .iter()
                .map(|r| valid(r).and_then(|v| v.customer.date_of_birth))
                .collect::<Vec<_>>() as &[Option<NaiveDate>],
            &rows
                .iter()
                .map(|r| valid(r).and_then(|v| v.customer.address.as_ref().map(SqlJson)))
                .collect::<Vec<_>>() as &[Option<SqlJson<&Address>>],
            &rows
                .iter()
                .map(|r| valid(r).and_then(|v| v.customer.credit_score))
                .collect::<Vec<_>>() as &[Option<i32>],
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves the batch's good, unprocessed lines into `core.customers`, a chunk of lines per
    /// transaction; returns how many were inserted and how many lines of the batch failed.
    async fn load(&self) -> Result<(i64, i64), ApiError> {
        let mut inserted = 0;
        let mut after = 0;
        loop {
            let mut tx = self.session.begin().await?;
            let (count, through) = load_chunk(&mut tx, self.batch, after).await?;
            tx.commit().await?;
            inserted += count;
            match through {
                Some(through) => after = through,
                None => break,
            }
        }
        let mut tx = self.session.begin().await?;
        let failed: i64 = sqlx::query_scalar!(
            r#"
                SELECT count(*) AS "failed!" FROM staging.customer_imports
                WHERE batch_id = $1 AND error_message IS NOT NULL
            "#,
            self.batch,
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((inserted, failed))
    }
}

/// Loads the next [`CHUNK`] lines of `batch` after line `after`: inserts their good, unprocessed
/// rows (`ON CONFLICT DO NOTHING`), marks those inserted, and gives the rest their conflict.
/// Returns how many were inserted and the chunk's last line (`None` past the end).
async fn load_chunk(
    conn: &mut PgConnection,
    batch: &str,
    after: i32,
) -> Result<(i64, Option<i32>), ApiError> {
    let chunk = sqlx::query!(
        r#"
            WITH chunk AS (
                SELECT * FROM staging.customer_imports
                WHERE batch_id = $1 AND line_number > $2
                ORDER BY line_number LIMIT $3),
            inserted AS (
                INSERT INTO core.customers (customer_id, customer_code, full_name,
                    id_number_ciphertext, id_number_hash, id_number_last4, phone_number, email,
                    date_of_birth, address, credit_score)
                SELECT customer_id, customer_code, full_name, id_number_ciphertext, id_number_hash,
                    id_number_last4, phone_number, email, date_of_birth, address, credit_score
                FROM chunk
                WHERE NOT processed AND error_message IS NULL
                ORDER BY line_number
                ON CONFLICT DO NOTHING
                RETURNING customer_id),
            marked AS (
                UPDATE staging.customer_imports s SET processed = true
                FROM inserted i JOIN chunk c ON c.customer_id = i.customer_id
                WHERE s.batch_id = $1 AND s.line_number = c.line_number
                RETURNING 1)
            SELECT (SELECT count(*) FROM marked) AS "inserted!",
                   (SELECT max(line_number) FROM chunk) AS through
        "#,
        // The batch, the line the chunk starts after, and its size.
        batch,
        after,
        CHUNK as i64,
    )
    .fetch_one(&mut *conn)
    .await?;
    if let Some(through) = chunk.through {
        sqlx::query!(
            r#"
                SELECT staging.explain_import_conflicts($1, $2, $3)
            "#,
            batch,
            after,
            through,
        )
        .fetch_one(conn)
        .await?;
    }
    Ok((chunk.inserted, chunk.through))
}

/// A checked, sealed record ready to stage.
struct Valid {
    customer_id: Uuid,
    customer: NewCustomer,
    ciphertext: Vec<u8>,
    hash: Vec<u8>,
    last4: String,
}

struct Staged {
    line: i32,
    /// The record as received, its ID number masked.
    raw: Value,
    error: Option<String>,
    valid: Option<Valid>,
}

/// The fields of an import record; all optional here so a missing one is named in the error.
#[derive(Deserialize)]
struct ImportRecord {
    customer_code: Option<String>,
    full_name: Option<String>,
    id_number: Option<String>,
    phone_number: Option<String>,
    email: Option<String>,
    date_of_birth: Option<String>,
    address: Option<Address>,
    credit_score: Option<i32>,
}

fn stage(record: RawRecord, cipher: &PiiCipher) -> Staged {
    let mut raw: Value = match serde_json::from_slice(&record.bytes) {
        Ok(v) => v,
        Err(e) => {
            return Staged {
                line: record.number,
                raw: Value::String("<not JSON>".into()),
                error: Some(format!("not valid JSON: {e}")),
                valid: None,
            }
        }
    };
    if holds_nul(&raw) {
        return Staged {
            line: record.number,
            raw: Value::String("<contains NUL>".into()),
            error: Some("contains a NUL character (\\u0000), which cannot be stored".into()),
            valid: None,
        };
    }
    if let Some(id) = raw.get_mut("id_number") {
        *id = masked_id_number(id);
    }
    let result = check(&record.bytes, cipher);
    match result {
        Ok(valid) => Staged {
            line: record.number,
            raw,
            error: None,
            valid: Some(valid),
        },
        Err(error) => Staged {
            line: record.number,
            raw,
            error: Some(error),
            valid: None,
        },
    }
}

/// The staged copy of an ID number in whatever form it came (a string, a number, an array, an
/// object): its last four letters or digits behind the mask, never more.
fn masked_id_number(value: &Value) -> Value {
    let text = match value {
        Value::Null => return Value::Null,
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let alphanumeric: Vec<char> = text.chars().filter(char::is_ascii_alphanumeric).collect();
    let tail: String = alphanumeric[alphanumeric.len().saturating_sub(4)..]
        .iter()
        .collect();
    Value::String(pii::mask(&tail))
}

/// Whether any key or string holds U+0000, which PostgreSQL's text and jsonb cannot store.
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

fn check(bytes: &[u8], cipher: &PiiCipher) -> Result<Valid, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let record: ImportRecord = from_json_value(value).map_err(|error| match error {
        // The field and what was wrong, without the value serde would quote.
        ApiError::Unprocessable { errors, .. } if !errors.is_empty() => {
            format!(
                "not a customer record: {}: {}",
                errors[0].field, errors[0].message
            )
        }
        _ => "not a customer record".to_owned(),
    })?;
    let required = |name: &str, value: Option<String>| value.ok_or(format!("missing field {name}"));
    let date_of_birth = record
        .date_of_birth
        .map(|d| {
            NaiveDate::parse_from_str(&d, "%Y-%m-%d")
                .map_err(|_| format!("date_of_birth: {d:?} is not a date (YYYY-MM-DD)"))
        })
        .transpose()?;
    let request = CreateCustomerRequest {
        customer_code: required("customer_code", record.customer_code)?,
        full_name: required("full_name", record.full_name)?,
        id_number: required("id_number", record.id_number)?,
        phone_number: record.phone_number,
        email: record.email,
        date_of_birth,
        address: record.address,
        credit_score: record.credit_score,
        branch: None,
    };
    let customer = NewCustomer::try_from(request).map_err(|e| match e {
        ApiError::Unprocessable { errors, detail } if !errors.is_empty() => {
            let _ = detail;
            errors
                .iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect::<Vec<_>>()
                .join("; ")
        }
        other => format!("{other:?}"),
    })?;
    let customer_id = Uuid::now_v7();
    let sealed = cipher
        .seal(&customer.id_number, customer_id)
        .map_err(|e| e.to_string())?;
    Ok(Valid {
        customer_id,
        customer,
        ciphertext: sealed.ciphertext,
        hash: sealed.hash,
        last4: sealed.last4,
    })
}

/// Which staging a batch's lines are in: the `kind` of `staging.import_lines`.
#[derive(Debug, Clone, Copy)]
enum Lines {
    Customers,
    Loans,
}

impl Lines {
    fn as_str(self) -> &'static str {
        match self {
            Lines::Customers => "customers",
            Lines::Loans => "loans",
        }
    }
}

async fn report(
    conn: &mut PgConnection,
    lines: Lines,
    batch: &str,
) -> Result<ImportReport, ApiError> {
    let counts = sqlx::query!(
        r#"
        SELECT count(*) AS "total!", count(*) FILTER (WHERE processed) AS "imported!",
               count(*) FILTER (WHERE error_message IS NOT NULL) AS "failed!"
        FROM staging.import_lines WHERE kind = $1 AND batch_id = $2
        "#,
        lines.as_str(),
        batch,
    )
    .fetch_one(&mut *conn)
    .await?;
    let errors: Vec<ImportError> = sqlx::query_as!(
        ImportError,
        r#"
        SELECT line_number AS "line_number!", error_message AS "error!"
        FROM staging.import_lines
        WHERE kind = $1 AND batch_id = $2 AND error_message IS NOT NULL
        ORDER BY line_number LIMIT 1000
        "#,
        lines.as_str(),
        batch,
    )
    .fetch_all(conn)
    .await?;
    Ok(ImportReport {
        batch_id: batch.to_owned(),
        total_rows: counts.total,
        imported: counts.imported,
        failed: counts.failed,
        errors,
        job_id: None,
    })
}

/// What an upload answers: the batch after it, and the run that staged it.
async fn upload_report(
    state: &AppState,
    caller: Caller,
    lines: Lines,
    batch: &str,
    job_id: Uuid,
) -> Result<Json<ImportReport>, ApiError> {
    let mut tx = RequestTx::<EtlOnly>::begin(&state.db, caller, true).await?;
    let report = report(&mut tx, lines, batch).await?;
    tx.answer(ImportReport {
        job_id: Some(job_id),
        ..report
    })
    .await
}

/// A batch as it stands; 404 when none of its lines is the caller's.
async fn stored_report(
    mut tx: RequestTx<EtlOnly>,
    lines: Lines,
    batch: &str,
) -> Result<Json<ImportReport>, ApiError> {
    check_batch_id(batch)?;
    let report = report(&mut tx, lines, batch).await?;
    if report.total_rows == 0 {
        return Err(ApiError::NotFound);
    }
    tx.answer(report).await
}

/// Where a batch stands: rows, imported, failed, and the errors by line (ETL).
#[utoipa::path(
    get,
    path = "/v1/imports/{batch_id}",
    params(("batch_id" = String, Path, description = "The batch id")),
    responses(
        (status = 200, description = "The batch", body = ImportReport),
        responses::Common, responses::NotFound
    )
)]
async fn get_import(
    tx: RequestTx<EtlOnly>,
    AppPath(batch): AppPath<String>,
) -> Result<Json<ImportReport>, ApiError> {
    stored_report(tx, Lines::Customers, &batch).await
}
