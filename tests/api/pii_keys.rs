//! Rotating the ID-number encryption key: old ciphertexts still open, new ones carry the new
//! key id, the re-encryption job moves every table to the new key in resumable batches, and a
//! wrong key is refused at start-up with one clear line.

use axum::http::StatusCode;
use lakehouse_api::domain::jobs::{reencrypt, Session};
use lakehouse_api::platform::config::{PiiKeys, Secret};
use lakehouse_api::platform::pii::{self, PiiCipher};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::helpers::{pii_keys, TestApp};

/// Key 2 current, key 1 (the tests' usual key) still configured.
fn rotated() -> PiiKeys {
    let mut keys = pii_keys();
    keys.previous = vec![(1, keys.encryption.clone())];
    keys.encryption = Secret::new(vec![0x77; 32]);
    keys.encryption_key_id = 2;
    keys
}

/// Key 2 alone: what remains once the old key is retired.
fn retired() -> PiiKeys {
    let mut keys = rotated();
    keys.previous.clear();
    keys
}

async fn key_ids(app: &TestApp) -> Vec<(String, i32, i64)> {
    sqlx::query_as(
        "SELECT 'customers', core.pii_key_id(id_number_ciphertext), count(*) FROM core.customers \
         GROUP BY 2 UNION ALL \
         SELECT 'staging', core.pii_key_id(id_number_ciphertext), count(*) FROM staging.customer_imports \
         WHERE id_number_ciphertext IS NOT NULL GROUP BY 2 ORDER BY 1, 2",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap()
}

async fn id_number(app: &TestApp, customer: Uuid) -> (StatusCode, serde_json::Value) {
    let response = app
        .get(&format!("/v1/customers/{customer}"), &app.staff())
        .await;
    let status = response.status;
    (status, response.json()["id_number"].clone())
}

/// A staged import row sealed by `cipher`, as an import leaves it.
async fn stage(app: &TestApp, cipher: &PiiCipher, line: i32) {
    let owner = Uuid::now_v7();
    let id = pii::IdNumber::parse("880101234567").unwrap();
    let sealed = cipher.seal(&id, owner).unwrap();
    sqlx::query(
        "INSERT INTO staging.customer_imports (batch_id, line_number, raw_data, processed, customer_id, \
         customer_code, full_name, id_number_ciphertext, id_number_hash, id_number_last4) \
         VALUES ('rotation', $1, '{}', true, $2, 'STG', 'Staged', $3, $4, $5)",
    )
    .bind(line)
    .bind(owner)
    .bind(&sealed.ciphertext)
    .bind(&sealed.hash)
    .bind(&sealed.last4)
    .execute(&app.owner)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_rotated_key_opens_old_rows_and_the_job_moves_every_table_to_it() {
    let app = TestApp::spawn().await;
    let old_cipher = PiiCipher::new(&pii_keys());
    let mut customers = Vec::new();
    for n in 0..5 {
        customers.push(
            app.customer_id(&format!("ROT-{n}"), &format!("88010100{n:04}"))
                .await,
        );
    }
    stage(&app, &old_cipher, 1).await;
    assert_eq!(
        key_ids(&app).await,
        vec![("customers".into(), 1, 5), ("staging".into(), 1, 1)]
    );

    // Rotated: old rows open, new rows carry key 2.
    let app = app.with_pii_keys(&rotated());
    assert_eq!(
        id_number(&app, customers[0]).await,
        (StatusCode::OK, "880101000000".into())
    );
    let newer = app.customer_id("ROT-NEW", "880101009999").await;

    // The job, in batches of two, moves every row; run again, it finds nothing left.
    let cipher = PiiCipher::new(&rotated());
    let session = Session::Owner(app.owner.clone());
    let run = reencrypt::run(&session, &cipher, 2).await.unwrap();
    assert_eq!(
        (run.records_read, run.records_written, run.records_failed),
        (Some(6), Some(6), Some(0))
    );
    assert_eq!(
        key_ids(&app).await,
        vec![("customers".into(), 2, 6), ("staging".into(), 2, 1)]
    );
    let again = reencrypt::run(&session, &cipher, 2).await.unwrap();
    assert_eq!(again.records_written, Some(0));

    // A row sealed with the old key after the run (an instance not yet restarted) is picked up
    // by the next run: the job resumes from what is left, not from a cursor.
    stage(&app, &old_cipher, 2).await;
    let resumed = reencrypt::run(&session, &cipher, 2).await.unwrap();
    assert_eq!(
        (resumed.records_read, resumed.records_written),
        (Some(1), Some(1))
    );

    // The old key retired: everything still opens.
    let app = app.with_pii_keys(&retired());
    for customer in customers.iter().chain([&newer]) {
        let (status, value) = id_number(&app, *customer).await;
        assert_eq!(status, StatusCode::OK);
        assert!(value.as_str().unwrap().starts_with("880101"), "{value}");
    }
}

async fn owner_conn(app: &TestApp) -> sqlx::pool::PoolConnection<sqlx::Postgres> {
    app.owner.acquire().await.unwrap()
}

async fn verify(conn: &mut PgConnection, keys: &PiiKeys) -> Result<(), String> {
    pii::verify_keys(conn, &PiiCipher::new(keys))
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_wrong_key_is_refused_by_name_before_anything_is_served() {
    let app = TestApp::spawn().await;
    // A database with ID numbers sealed before key checks existed: the first check proves the
    // keys against a stored row before registering them.
    app.customer_id("KEY-1", "770101123456").await;
    let mut conn = owner_conn(&app).await;
    let wrong_key = PiiKeys::new(Secret::new(vec![0x13; 32]), pii_keys().hash);
    let err = verify(&mut conn, &wrong_key).await.unwrap_err();
    assert!(
        err.contains("PII_ENCRYPTION_KEY") && err.contains("key id 1"),
        "{err}"
    );
    let wrong_hash = PiiKeys::new(pii_keys().encryption, Secret::new(vec![0x31; 32]));
    let err = verify(&mut conn, &wrong_hash).await.unwrap_err();
    assert!(err.contains("PII_HASH_KEY"), "{err}");
    let registered: i64 = sqlx::query_scalar("SELECT count(*) FROM core.pii_keys")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(
        registered, 0,
        "a key that failed its proof is not registered"
    );

    verify(&mut conn, &pii_keys()).await.unwrap();
    verify(&mut conn, &pii_keys()).await.unwrap();
    // Registered now: a wrong key under id 1 is refused even where no row would show it.
    sqlx::query("DELETE FROM core.customers")
        .execute(&mut *conn)
        .await
        .unwrap();
    let err = verify(&mut conn, &wrong_key).await.unwrap_err();
    assert!(err.contains("PII_ENCRYPTION_KEY"), "{err}");
    // A new key id registers; a wrong previous key is named as such.
    verify(&mut conn, &rotated()).await.unwrap();
    let mut bad_previous = rotated();
    bad_previous.previous = vec![(1, Secret::new(vec![0x13; 32]))];
    let err = verify(&mut conn, &bad_previous).await.unwrap_err();
    assert!(
        err.contains("PII_ENCRYPTION_PREVIOUS_KEYS") && err.contains("key id 1"),
        "{err}"
    );
}
