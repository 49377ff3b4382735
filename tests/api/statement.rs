//! A loan's statement from its journal: balances that add up, JSON and CSV (escaped against
//! formula injection), row-level security, and a stream bounded in memory and in time.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use futures_util::StreamExt;
use rust_decimal::Decimal;
use serde_json::Value;
use tower::ServiceExt;
use uuid::Uuid;

use crate::helpers::{Options, TestApp};
use crate::payments::key;

fn amount(value: &Value) -> Decimal {
    value.as_str().unwrap().parse().unwrap()
}

async fn statement(app: &TestApp, loan_id: Uuid, query: &str, token: &str) -> Value {
    let response = app
        .get(&format!("/v1/loans/{loan_id}/statement{query}"), token)
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    response.json()
}

#[tokio::test]
async fn a_statement_opens_moves_and_closes_with_the_journal_in_json_and_escaped_csv() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("STMT01", "440101123456").await;
    let loan = app
        .disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 6)
        .await;
    let loan_id = loan.id;
    let staff = app.staff();
    for paid in ["1000000.00", "250000.00"] {
        let body =
            serde_json::json!({"loan_id": loan_id, "payment_type": "REPAYMENT", "amount": paid});
        let response = app.pay(&staff, &key(), &body).await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text());
    }
    let owner = app.customer(customer);
    let whole = statement(&app, loan_id, "", &owner).await;
    assert_eq!(whole["loan_number"], loan["loan_number"]);
    assert_eq!(
        amount(&whole["opening_balance"]["total_outstanding"]),
        Decimal::ZERO
    );
    let movements = whole["movements"].as_array().unwrap();
    let kinds: Vec<&str> = movements
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"DISBURSEMENT"));
    assert_eq!(kinds.iter().filter(|k| **k == "REPAYMENT").count(), 2);
    // Each movement's total is its columns' sum, and moves the running total by exactly that.
    let mut running = Decimal::ZERO;
    for m in movements {
        let columns: Decimal = ["principal", "interest", "fees", "penalties", "overpayment"]
            .iter()
            .map(|c| amount(&m[c]))
            .sum();
        assert_eq!(amount(&m["total"]), columns, "{m}");
        running += columns;
        assert_eq!(amount(&m["total_outstanding"]), running, "{m}");
    }
    // The closing balance is what the loan owes now.
    let now = app.loan(&loan).await;
    let owed = [
        "principal_outstanding",
        "interest_outstanding",
        "fees_outstanding",
        "penalties_outstanding",
    ]
    .iter()
    .map(|c| amount(&now[c]))
    .sum::<Decimal>();
    assert_eq!(amount(&whole["closing_balance"]["total_outstanding"]), owed);
    assert_eq!(
        amount(&whole["closing_balance"]["principal"]),
        amount(&now["principal_outstanding"])
    );

    // A range after the last movement: no movements, and it opens where it closes.
    let later = statement(&app, loan_id, "?from=2099-01-01&to=2099-12-31", &staff).await;
    assert_eq!(later["movements"], serde_json::json!([]));
    assert_eq!(later["opening_balance"], whole["closing_balance"]);
    assert_eq!(later["closing_balance"], whole["closing_balance"]);

    // CSV: OPENING, a MOVEMENT per entry, CLOSING; a negative amount would run as a formula in a
    // spreadsheet, so it is escaped.
    let csv = app
        .send(
            app.request(
                Method::GET,
                &format!("/v1/loans/{loan_id}/statement"),
                Some(&owner),
            )
            .header(header::ACCEPT, "text/csv")
            .body(Body::empty())
            .unwrap(),
        )
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let text = csv.text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("row,business_date,kind,"), "{text}");
    assert!(lines[1].starts_with("OPENING,"), "{text}");
    assert!(lines.last().unwrap().starts_with("CLOSING,"), "{text}");
    assert_eq!(lines.len(), 3 + movements.len(), "{text}");
    let repayment = lines.iter().find(|l| l.contains(",REPAYMENT,")).unwrap();
    assert!(
        repayment.contains(",'-"),
        "negative amounts are escaped: {repayment}"
    );
    assert!(
        !text.lines().any(|l| l
            .split(',')
            .any(|cell| cell.starts_with(['=', '+', '-', '@']))),
        "{text}"
    );

    // Another customer's loan does not exist for them; a backwards range is refused.
    let other = app.customer_id("STMT02", "440101123457").await;
    app.get(
        &format!("/v1/loans/{loan_id}/statement"),
        &app.customer(other),
    )
    .await
    .problem(StatusCode::NOT_FOUND);
    app.get(
        &format!("/v1/loans/{loan_id}/statement?from=2026-02-01&to=2026-01-01"),
        &staff,
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
}

/// `count` interest entries on a loan, posted straight into the journal (a long history).
async fn long_history(app: &TestApp, loan_id: &str, count: i32) {
    sqlx::query(
        "WITH e AS ( \
             INSERT INTO core.journal_entries (entry_id, loan_id, customer_id, kind, business_date) \
             SELECT gen_random_uuid(), l.loan_id, l.customer_id, 'INTEREST_DUE', current_date \
             FROM core.loans l, generate_series(1, $2) WHERE l.loan_id = $1::uuid \
             RETURNING entry_id, loan_id, customer_id) \
         INSERT INTO core.journal_lines (entry_id, line_number, loan_id, customer_id, account, amount) \
         SELECT entry_id, v.n, loan_id, customer_id, v.account, v.amount FROM e, \
                (VALUES (1::smallint, 'LOAN_INTEREST', 0.01), (2::smallint, 'INTEREST_INCOME', -0.01)) \
                AS v(n, account, amount)",
    )
    .bind(loan_id)
    .bind(count)
    .execute(&app.owner)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_long_statement_streams_in_chunks_and_a_stalled_reader_is_cut_off_at_the_deadline() {
    let app = TestApp::spawn_with(Options {
        statement_timeout: Duration::from_millis(1000),
        ..Options::default()
    })
    .await;
    let customer = app.approved_customer("STMT10", "440101123460").await;
    let loan = app
        .disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 6)
        .await;
    let loan_id = loan.id;
    long_history(&app, &loan_id.to_string(), 30_000).await;
    let request = || {
        app.request(
            Method::GET,
            &format!("/v1/loans/{loan_id}/statement"),
            Some(&app.staff()),
        )
        .body(Body::empty())
        .unwrap()
    };

    // Read promptly: the whole statement, in many chunks (never one buffer).
    let response = app.router.clone().oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut chunks = 0;
    let mut body = Vec::new();
    let mut stream = response.into_body().into_data_stream();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.expect("a prompt reader gets every chunk"));
        chunks += 1;
    }
    let whole: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(whole["movements"].as_array().unwrap().len(), 30_001);
    assert!(chunks > 10, "{chunks} chunks");

    // Compressed as it streams, for a client that asks.
    let gzipped = app
        .send(
            app.request(
                Method::GET,
                &format!("/v1/loans/{loan_id}/statement"),
                Some(&app.staff()),
            )
            .header(header::ACCEPT_ENCODING, "gzip")
            .body(Body::empty())
            .unwrap(),
        )
        .await;
    assert_eq!(gzipped.header("content-encoding"), Some("gzip"));
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&gzipped.body[..]),
        &mut unzipped,
    )
    .unwrap();
    assert_eq!(unzipped, body);
    assert!(
        gzipped.body.len() * 4 < body.len(),
        "{} of {}",
        gzipped.body.len(),
        body.len()
    );

    // Stall after the first chunk, past the deadline (twice the statement timeout): the body
    // ends in an error, not in a statement that looks whole, and the connection is released.
    let response = app.router.clone().oneshot(request()).await.unwrap();
    let mut stream = response.into_body().into_data_stream();
    assert!(stream.next().await.unwrap().is_ok());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut ended_in_error = false;
    while let Some(chunk) = stream.next().await {
        if chunk.is_err() {
            ended_in_error = true;
            break;
        }
    }
    assert!(
        ended_in_error,
        "a reader stalled past the deadline is cut off"
    );
    let after = app.get(&format!("/v1/loans/{loan_id}"), &app.staff()).await;
    assert_eq!(after.status, StatusCode::OK);
}
