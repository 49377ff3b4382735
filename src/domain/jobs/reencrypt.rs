//! Moves stored ID numbers to the current encryption key, in batches that commit on their own:
//! every table that holds their ciphertext (`core.customers`, `staging.customer_imports`). A run
//! that stops half way is resumed by running it again: it picks up the rows still under an
//! older key. Runs as the owner (`lakehouse-api jobs reencrypt-pii`).

use sqlx::PgConnection;
use uuid::Uuid;

use super::{Counts, JobRun, JobSpec, Session};
use crate::platform::error::ApiError;
use crate::platform::pii::PiiCipher;

pub const SPEC: JobSpec = JobSpec {
    name: "pii_reencrypt",
    source_system: "postgresql",
    source_table: "core.customers, staging.customer_imports",
    target_system: "postgresql",
    target_table: "core.customers, staging.customer_imports",
    transformation_type: "REENCRYPT",
    transformation_logic: "open each ID number sealed with an older key and seal it with the \
        current one (PII_ENCRYPTION_KEY_ID); the row's other columns are untouched",
};

/// The tables that hold ID-number ciphertext: (table, key column, owner column).
const TABLES: [(&str, &str, &str); 2] = [
    ("core.customers", "customer_id", "customer_id"),
    ("staging.customer_imports", "import_id", "customer_id"),
];

pub async fn run(session: &Session, cipher: &PiiCipher, batch: i64) -> Result<JobRun, ApiError> {
    let current = i32::from(cipher.current_key_id());
    let parameters = serde_json::json!({ "key_id": current, "batch": batch });
    let batches = session.clone();
    let cipher = cipher.clone();
    super::run_in_batches(session, &SPEC, parameters, None, move |_| async move {
        let mut counts = Counts::default();
        for table in TABLES {
            let mut after = Uuid::nil();
            loop {
                let mut tx = batches.begin().await?;
                let (read, written, failed, last) =
                    reencrypt_batch(&mut tx, &cipher, table, current, after, batch).await?;
                tx.commit().await?;
                counts.read += read;
                counts.written += written;
                counts.failed += failed;
                match last {
                    Some(last) => after = last,
                    None => break,
                }
            }
        }
        Ok(counts)
    })
    .await
}

/// One batch of rows after `after` still under an older key: (read, rewritten, not openable,
/// the last key read or `None` when there were none).
async fn reencrypt_batch(
    conn: &mut PgConnection,
    cipher: &PiiCipher,
    (table, key, owner): (&str, &str, &str),
    current: i32,
    after: Uuid,
    batch: i64,
) -> Result<(i64, i64, i64, Option<Uuid>), ApiError> {
    let rows: Vec<(Uuid, Uuid, Vec<u8>)> = sqlx::query_as(&format!(
        "SELECT {key}, {owner}, id_number_ciphertext FROM {table} \
         WHERE {key} > $1 AND id_number_ciphertext IS NOT NULL \
           AND core.pii_key_id(id_number_ciphertext) IS DISTINCT FROM $2 \
         ORDER BY {key} LIMIT $3"
    ))
    .bind(after)
    .bind(current)
    .bind(batch)
    .fetch_all(&mut *conn)
    .await?;
    let Some(last) = rows.last().map(|(k, _, _)| *k) else {
        return Ok((0, 0, 0, None));
    };
    let (mut keys, mut old, mut new, mut failed) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for (k, owner, ciphertext) in &rows {
        match cipher.reseal(ciphertext, *owner) {
            Ok(Some(sealed)) => {
                keys.push(*k);
                old.push(ciphertext.clone());
                new.push(sealed);
            }
            Ok(None) => {}
            Err(_) => failed += 1,
        }
    }
    // Only rows unchanged since they were read: a concurrent update wins, and is already sealed
    // with the current key.
    let written = sqlx::query(&format!(
        "UPDATE {table} t SET id_number_ciphertext = u.new \
         FROM unnest($1::uuid[], $2::bytea[], $3::bytea[]) AS u(k, old, new) \
         WHERE t.{key} = u.k AND t.id_number_ciphertext = u.old"
    ))
    .bind(&keys)
    .bind(&old)
    .bind(&new)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let written = i64::try_from(written).unwrap_or(i64::MAX);
    Ok((rows.len() as i64, written, failed, Some(last)))
}
