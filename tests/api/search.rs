//! Staff search for customers (by code, phone, national ID or name) and payments (by transaction
//! id or client reference): what it finds, who may search, and that every search is an index
//! probe on 100,000 customers.

use std::borrow::Cow;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use lakehouse_api::domain::customer_record::repo as customers_repo;
use lakehouse_api::platform::db::MIGRATOR;

use crate::helpers::{customer_body, TestApp};

async fn search(app: &TestApp, query: &str, body: Value) -> crate::helpers::TestResponse {
    app.json(
        Method::POST,
        &format!("/v1/customers/search{query}"),
        &app.staff(),
        &body,
    )
    .await
}

fn codes(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["customer_code"].as_str().unwrap().to_owned())
        .collect()
}

async fn create(app: &TestApp, code: &str, id_number: &str, name: &str, phone: &str) {
    let mut body = customer_body(code, id_number);
    body["full_name"] = json!(name);
    body["phone_number"] = json!(phone);
    let created = app
        .json(Method::POST, "/v1/customers", &app.staff(), &body)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
}

#[tokio::test]
async fn staff_find_customers_by_code_phone_national_id_and_name_in_pages() {
    let app = TestApp::spawn().await;
    create(
        &app,
        "SRCH01",
        "079012345601",
        "Nguyễn Văn An",
        "090-111-2222",
    )
    .await;
    create(
        &app,
        "SRCH02",
        "079012345602",
        "Nguyen Van Anh",
        "+84 90 111 2222",
    )
    .await;
    create(
        &app,
        "SRCH03",
        "079012345603",
        "Trần Thị Bình",
        "0084 912 333 444",
    )
    .await;
    create(
        &app,
        "SRCH04",
        "079012345604",
        "Ngyuen Van An",
        "0913000000",
    )
    .await;

    // Phones are stored in E.164, whatever form they were written in.
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT phone_number FROM core.customers WHERE customer_code LIKE 'SRCH%' ORDER BY customer_code",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert_eq!(
        stored,
        [
            "+84901112222",
            "+84901112222",
            "+84912333444",
            "+84913000000"
        ]
    );

    // By phone, in any form: both customers who share the number, one page at a time.
    let first = search(&app, "?limit=1", json!({"phone": "(090) 111 2222"})).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let first = first.json();
    assert_eq!(codes(&first), ["SRCH01"]);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let second = search(
        &app,
        &format!("?limit=1&cursor={cursor}"),
        json!({"phone": "+84901112222"}),
    )
    .await
    .json();
    assert_eq!(codes(&second), ["SRCH02"]);
    assert_eq!(second["next_cursor"], Value::Null);

    // By code (letter case ignored) and by national ID (through the blind index).
    let by_code = search(&app, "", json!({"customer_code": "srch03"}))
        .await
        .json();
    assert_eq!(codes(&by_code), ["SRCH03"]);
    let by_id = search(&app, "", json!({"national_id": "0790-1234-5603"}))
        .await
        .json();
    assert_eq!(codes(&by_id), ["SRCH03"]);
    assert_eq!(by_id["data"][0]["id_number"], "079012345603");
    let nobody = search(&app, "", json!({"national_id": "999999999999"}))
        .await
        .json();
    assert_eq!(codes(&nobody), Vec::<String>::new());

    // By name, without case or accents: names that start with it first, then names that
    // resemble it (a transposed letter), never an unrelated name.
    let by_name = search(&app, "", json!({"name": "NGUYEN VAN AN"}))
        .await
        .json();
    assert_eq!(codes(&by_name), ["SRCH01", "SRCH02", "SRCH04"]);
    let accented = search(&app, "", json!({"name": "trần thị"})).await.json();
    assert_eq!(codes(&accented), ["SRCH03"]);
    // Pages of a name search keep the rank order.
    let page1 = search(&app, "?limit=2", json!({"name": "nguyen van an"}))
        .await
        .json();
    assert_eq!(codes(&page1), ["SRCH01", "SRCH02"]);
    let cursor = page1["next_cursor"].as_str().unwrap().to_owned();
    let page2 = search(
        &app,
        &format!("?limit=2&cursor={cursor}"),
        json!({"name": "nguyen van an"}),
    )
    .await
    .json();
    assert_eq!(codes(&page2), ["SRCH04"]);
    // LIKE's wildcards in a query are literal characters.
    let wildcard = search(&app, "", json!({"name": "%%%"})).await.json();
    assert_eq!(codes(&wildcard), Vec::<String>::new());
}

#[tokio::test]
async fn a_search_takes_exactly_one_valid_key_and_only_staff_may_search() {
    let app = TestApp::spawn().await;
    let id = app.customer_id("SRCH10", "079012345610").await;
    for body in [
        json!({}),
        json!({"phone": "0901234567", "name": "Customer"}),
        json!({"phone": "12"}),
        json!({"name": "ab"}),
        json!({"customer_code": "a b"}),
        json!({"national_id": "12"}),
        json!({"name": "abc\u{0}def"}),
    ] {
        search(&app, "", body)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY);
    }
    search(&app, "", json!({"email": "x@example.com"}))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    search(&app, "?cursor=garbage", json!({"name": "Customer"}))
        .await
        .problem(StatusCode::BAD_REQUEST);
    for token in [
        app.customer(id),
        app.token("analyst", None),
        app.token("etl", None),
    ] {
        app.json(
            Method::POST,
            "/v1/customers/search",
            &token,
            &json!({"customer_code": "SRCH10"}),
        )
        .await
        .problem(StatusCode::FORBIDDEN);
    }
    let admin = app
        .json(
            Method::POST,
            "/v1/customers/search",
            &app.token("admin", None),
            &json!({"customer_code": "SRCH10"}),
        )
        .await;
    assert_eq!(codes(&admin.json()), ["SRCH10"]);
}

#[tokio::test]
async fn staff_find_a_payment_by_transaction_id_and_by_client_reference() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("SRCH20", "079012345620").await;
    let loan = app
        .disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 6)
        .await;
    let loan_id = loan.id;
    let staff = app.staff();
    let paid = app
        .json_with(
            Method::POST,
            "/v1/payments",
            &staff,
            &json!({"loan_id": loan_id, "payment_type": "REPAYMENT", "amount": "1000.00",
                    "client_reference": "RCPT-77"}),
            &[("idempotency-key", "search-payment-1")],
        )
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text());
    let paid = paid.json();
    let txn = paid["transaction_id"].as_str().unwrap();

    let by_txn = app
        .get(&format!("/v1/payments?transaction_id={txn}"), &staff)
        .await
        .json();
    assert_eq!(by_txn["data"].as_array().unwrap().len(), 1);
    assert_eq!(by_txn["data"][0]["payment_id"], paid["payment_id"]);
    let by_reference = app
        .get("/v1/payments?client_reference=RCPT-77", &staff)
        .await
        .json();
    assert_eq!(by_reference["data"][0]["payment_id"], paid["payment_id"]);
    let none = app
        .get("/v1/payments?transaction_id=TXN-NOT-THERE", &staff)
        .await
        .json();
    assert_eq!(none["data"], json!([]));
}

/// True when the plan reads `core.customers` (or a partition of it) with a sequential scan.
fn seq_scans_customers(plan: &Value) -> bool {
    match plan {
        Value::Object(node) => {
            (node.get("Node Type") == Some(&json!("Seq Scan"))
                && node.get("Relation Name") == Some(&json!("customers")))
                || node.values().any(seq_scans_customers)
        }
        Value::Array(items) => items.iter().any(seq_scans_customers),
        _ => false,
    }
}

#[tokio::test]
async fn every_search_is_an_index_probe_at_100k_customers() {
    let app = TestApp::spawn().await;
    sqlx::raw_sql(
        "INSERT INTO core.customers (customer_id, customer_code, full_name, id_number_ciphertext, \
             id_number_hash, id_number_last4, phone_number) \
         SELECT gen_random_uuid(), 'BULK' || i, \
                (ARRAY['Nguyễn','Trần','Lê','Phạm','Hoàng'])[1 + i % 5] || ' ' || \
                (ARRAY['Văn','Thị','Minh','Hữu'])[1 + i % 4] || ' ' || md5(i::text), \
                '\\x00'::bytea, sha256(i::text::bytea), '0000', \
                '09' || lpad((i % 50000)::text, 8, '0') \
         FROM generate_series(1, 100000) i; \
         ANALYZE core.customers;",
    )
    .execute(&app.owner)
    .await
    .unwrap();
    let mut conn = app.owner.acquire().await.unwrap();
    let explain = |sql: &str| format!("EXPLAIN (FORMAT JSON) {sql}");
    let nil = Uuid::nil();
    let plans: Vec<(&str, Value)> = vec![
        (
            "code",
            sqlx::query_scalar(&explain(customers_repo::SEARCH_BY_CODE))
                .bind("BULK77")
                .bind(nil)
                .fetch_one(&mut *conn)
                .await
                .unwrap(),
        ),
        (
            "national id",
            sqlx::query_scalar(&explain(customers_repo::SEARCH_BY_ID_NUMBER_HASH))
                .bind(vec![0u8; 32])
                .bind(nil)
                .fetch_one(&mut *conn)
                .await
                .unwrap(),
        ),
        (
            "phone",
            sqlx::query_scalar(&explain(customers_repo::SEARCH_BY_PHONE))
                .bind("0900001234")
                .bind(nil)
                .bind(51i64)
                .fetch_one(&mut *conn)
                .await
                .unwrap(),
        ),
        (
            "name",
            sqlx::query_scalar(&explain(customers_repo::SEARCH_BY_NAME))
                .bind("nguyen van")
                .bind(i64::MAX)
                .bind(nil)
                .bind(51i64)
                .fetch_one(&mut *conn)
                .await
                .unwrap(),
        ),
    ];
    for (search, plan) in &plans {
        assert!(!seq_scans_customers(plan), "{search} search: {plan:#}");
        assert!(
            plan.to_string().contains("Index"),
            "{search} search: {plan:#}"
        );
    }
}

#[tokio::test]
async fn migrating_writes_existing_phone_numbers_in_e164_without_events_or_audit_rows() {
    let app = TestApp::spawn().await;
    let database = format!("lakehouse_phones_{}", Uuid::now_v7().simple());
    sqlx::raw_sql(&format!("CREATE DATABASE {database}"))
        .execute(&app.owner)
        .await
        .unwrap();
    let url = crate::helpers::database_url(&app.owner_url, &database);
    let mut conn = PgConnection::connect(&url).await.unwrap();
    // The schema as it was before phone numbers were normalised (migration 0025).
    let before = sqlx::migrate::Migrator {
        migrations: Cow::Owned(
            MIGRATOR
                .iter()
                .filter(|m| m.version < 25)
                .cloned()
                .collect(),
        ),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    };
    before.run(&mut conn).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO core.customers (customer_id, customer_code, full_name, id_number_ciphertext, \
             id_number_hash, id_number_last4, phone_number) VALUES \
         (gen_random_uuid(), 'OLD1', 'A', '\\x00', sha256('1'), '0001', '0901234567'), \
         (gen_random_uuid(), 'OLD2', 'B', '\\x00', sha256('2'), '0002', '0084912345678'), \
         (gen_random_uuid(), 'OLD3', 'C', '\\x00', sha256('3'), '0003', '+84923456789'), \
         (gen_random_uuid(), 'OLD4', 'D', '\\x00', sha256('4'), '0004', NULL)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    MIGRATOR.run(&mut conn).await.unwrap();
    let phones: Vec<Option<String>> =
        sqlx::query_scalar("SELECT phone_number FROM core.customers ORDER BY customer_code")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        phones,
        [
            Some("+84901234567".to_owned()),
            Some("+84912345678".to_owned()),
            Some("+84923456789".to_owned()),
            None
        ]
    );
    let (events, audits): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM metadata.outbox_events), (SELECT count(*) FROM audit.changes)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((events, audits), (0, 0));
    conn.close().await.unwrap();
    sqlx::raw_sql(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .execute(&app.owner)
        .await
        .unwrap();
}
