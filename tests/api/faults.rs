//! PostgreSQL stops while requests flow, then comes back: the service answers 503 meanwhile (not
//! 500, not a hang), recovers by itself, and everything it acknowledged is in the database.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use sqlx::{Connection, PgConnection};

use crate::helpers::{customer_body, send_via, OwnCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_service_answers_503_while_postgres_is_down_and_recovers_by_itself() {
    // A cluster of its own: stopping the shared one would fail every other test.
    let Some(own) =
        OwnCluster::start("faults", Duration::from_secs(2), Duration::from_secs(3)).await
    else {
        return;
    };
    let OwnCluster {
        cluster,
        owner,
        router,
        staff: token,
    } = own;

    // A client writing customers one after another, logging each answer.
    let writer = tokio::spawn({
        let (router, token) = (router.clone(), token.clone());
        async move {
            let mut log = Vec::new();
            let started = Instant::now();
            let mut n = 0;
            while started.elapsed() < Duration::from_secs(9) {
                n += 1;
                let code = format!("FLT{n:05}");
                let request = axum::http::Request::builder()
                    .method(Method::POST)
                    .uri("/v1/customers")
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(
                        customer_body(&code, &format!("{:09}", 100_000_000 + n)).to_string(),
                    ))
                    .unwrap();
                let asked = Instant::now();
                let response = send_via(&router, request).await;
                log.push((code, response.status, asked, asked.elapsed()));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            log
        }
    });

    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.stop().unwrap();
    let stopped_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarting_at = Instant::now();
    cluster.restart().unwrap();
    let restarted_at = Instant::now();
    let log = writer.await.unwrap();

    let statuses: Vec<StatusCode> = log.iter().map(|l| l.1).collect();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::SERVICE_UNAVAILABLE),
        "only 201 or 503: {statuses:?}"
    );
    assert!(
        log.iter().all(|l| l.3 < Duration::from_secs(4)),
        "no request hung"
    );
    let during: Vec<StatusCode> = log
        .iter()
        .filter(|l| l.2 > stopped_at && l.2 + l.3 < restarting_at)
        .map(|l| l.1)
        .collect();
    assert!(
        !during.is_empty() && during.iter().all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{during:?}"
    );
    let recovered = log
        .iter()
        .find(|l| l.2 >= restarted_at && l.1 == StatusCode::CREATED)
        .expect("recovered after the restart without a service restart");
    let recovery = (recovered.2 + recovered.3).duration_since(restarted_at);
    eprintln!(
        "FAULT: {} requests; {} answered 503 while PostgreSQL was down; first 2xx {recovery:.2?} after it was back",
        log.len(),
        during.len(),
    );
    assert!(log
        .iter()
        .filter(|l| l.2 > restarted_at)
        .any(|l| l.1 == StatusCode::CREATED));

    // Every acknowledged write is there.
    let mut conn = PgConnection::connect_with(&owner).await.unwrap();
    let stored: Vec<String> = sqlx::query_scalar("SELECT customer_code FROM core.customers")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    for (code, status, ..) in &log {
        if *status == StatusCode::CREATED {
            assert!(
                stored.contains(code),
                "{code} was acknowledged but is not stored"
            );
        }
    }
    conn.close().await.unwrap();
}

/// A session the server ended for idling in a transaction (SQLSTATE 25P03) is a 503 with
/// Retry-After, like any lost connection: nothing of that transaction committed.
#[tokio::test]
async fn a_session_ended_for_idling_in_a_transaction_is_503() {
    let app = crate::helpers::TestApp::spawn().await;
    let mut tx = app.owner.begin().await.unwrap();
    sqlx::raw_sql("SET LOCAL idle_in_transaction_session_timeout = '100ms'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let error = sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap_err();
    let code = error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("25P03"), "{error:?}");
    let api = lakehouse_api::platform::error::ApiError::from(error);
    assert_eq!(api.status(), StatusCode::SERVICE_UNAVAILABLE, "{api:?}");
}
