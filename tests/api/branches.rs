//! Branches under row-level security (migration 0042): staff see their office and the offices
//! below it, in every resource, list, search, report and stream, and PostgreSQL itself agrees.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::events::{EventStream, SOON};
use crate::helpers::{customer_body, TestApp};

/// Head office → NORTH → HN01, and head office → SOUTH → HCM01, made by an administrator.
async fn offices(app: &TestApp) {
    let admin = app.token("admin", None);
    for (code, kind, parent) in [
        ("NORTH", "REGION", "HO"),
        ("HN01", "BRANCH", "NORTH"),
        ("SOUTH", "REGION", "HO"),
        ("HCM01", "BRANCH", "SOUTH"),
    ] {
        let made = app
            .json(
                Method::POST,
                "/v1/offices",
                &admin,
                &json!({"code": code, "name": format!("Office {code}"), "kind": kind, "parent": parent}),
            )
            .await;
        assert_eq!(made.status, StatusCode::CREATED, "{}", made.text());
    }
}

/// A customer of `branch`, KYC approved, with a disbursed loan and one repayment, all made by a
/// teller of that branch. Returns (customer, loan, payment) ids.
async fn book(
    app: &TestApp,
    branch: &str,
    code: &str,
    id_number: &str,
) -> (String, String, String) {
    let teller = app.token_at(&format!("teller-{branch}"), "staff", None, Some(branch));
    let mut body = customer_body(code, id_number);
    body["branch"] = json!(branch);
    let created = app
        .json(Method::POST, "/v1/customers", &teller, &body)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    assert_eq!(created.json()["branch"], branch);
    let customer = created.json()["customer_id"].as_str().unwrap().to_owned();
    let kyc = app
        .json(
            Method::POST,
            &format!("/v1/customers/{customer}/kyc"),
            &teller,
            &json!({"decision": "APPROVE"}),
        )
        .await;
    assert_eq!(kyc.status, StatusCode::OK, "{}", kyc.text());
    app.ensure_products().await;
    let applied = app
        .apply(
            &teller,
            json!({"customer_id": customer, "product_code": "ZERO_RATE", "amount": "1000000.00", "term_months": 10}),
        )
        .await;
    assert_eq!(applied.status, StatusCode::CREATED, "{}", applied.text());
    let loan = applied.json();
    for verb in ["approve", "disburse"] {
        let acted = app.act(&teller, &loan, verb).await;
        assert_eq!(acted.status, StatusCode::OK, "{verb}: {}", acted.text());
    }
    let paid = app
        .pay(
            &teller,
            &format!("branch-{code}"),
            &json!({"loan_id": loan["loan_id"], "payment_type": "REPAYMENT", "amount": "1000.00"}),
        )
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text());
    (
        customer,
        loan["loan_id"].as_str().unwrap().to_owned(),
        paid.json()["payment_id"].as_str().unwrap().to_owned(),
    )
}

fn ids(page: &Value, field: &str) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data in {page}"))
        .iter()
        .map(|row| row[field].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_teller_sees_their_branch_a_region_its_branches_and_head_office_everything() {
    let app = TestApp::spawn().await;
    offices(&app).await;
    let (a_customer, a_loan, a_payment) = book(&app, "HN01", "BR-A-1", "500100200").await;
    let (b_customer, b_loan, b_payment) = book(&app, "HCM01", "BR-B-1", "500100201").await;

    let teller = app.token_at("teller-2", "staff", None, Some("HN01"));
    for path in [
        format!("/v1/customers/{b_customer}"),
        format!("/v1/customers/{b_customer}/summary"),
        format!("/v1/customers/{b_customer}/portfolio"),
        format!("/v1/loans/{b_loan}"),
        format!("/v1/loans/{b_loan}/schedule"),
        format!("/v1/loans/{b_loan}/journal"),
        format!("/v1/payments/{b_payment}"),
    ] {
        app.get(&path, &teller).await.problem(StatusCode::NOT_FOUND);
    }
    for path in [
        format!("/v1/customers/{a_customer}"),
        format!("/v1/loans/{a_loan}"),
        format!("/v1/payments/{a_payment}"),
    ] {
        assert_eq!(
            app.get(&path, &teller).await.status,
            StatusCode::OK,
            "{path}"
        );
    }
    // Nor can the teller act on B's rows: to them they do not exist.
    app.json(
        Method::PATCH,
        &format!("/v1/customers/{b_customer}"),
        &teller,
        &json!({"email": "x@example.com"}),
    )
    .await
    .problem(StatusCode::PRECONDITION_REQUIRED);
    app.json_with(
        Method::PATCH,
        &format!("/v1/customers/{b_customer}"),
        &teller,
        &json!({"email": "x@example.com"}),
        &[("if-match", "*")],
    )
    .await
    .problem(StatusCode::NOT_FOUND);
    app.pay(
        &teller,
        "into-b",
        &json!({"loan_id": b_loan, "payment_type": "REPAYMENT", "amount": "1000.00"}),
    )
    .await
    .problem(StatusCode::NOT_FOUND);

    // Lists and searches hold only A's rows.
    let listed = |path: &'static str, field: &'static str, token: String| {
        let app = &app;
        async move { ids(&app.get(path, &token).await.json(), field) }
    };
    assert_eq!(
        listed("/v1/customers", "customer_id", teller.clone()).await,
        [a_customer.as_str()]
    );
    assert_eq!(
        listed("/v1/loans", "loan_id", teller.clone()).await,
        [a_loan.as_str()]
    );
    let payments = listed("/v1/payments", "payment_id", teller.clone()).await;
    assert!(
        payments.contains(&a_payment) && !payments.contains(&b_payment),
        "{payments:?}"
    );
    // Both customers share a phone number and a name prefix; the teller finds only theirs.
    for search in [
        json!({"name": "Customer BR"}),
        json!({"phone": "0901234567"}),
    ] {
        let found = app
            .json(Method::POST, "/v1/customers/search", &teller, &search)
            .await
            .json();
        assert_eq!(
            ids(&found, "customer_id"),
            [a_customer.as_str()],
            "{search}"
        );
    }
    let found = app
        .json(
            Method::POST,
            "/v1/customers/search",
            &teller,
            &json!({"customer_code": "BR-B-1"}),
        )
        .await
        .json();
    assert_eq!(found["data"], json!([]));

    // Reports: the portfolio's risk report lists the teller's loan only; analysts see both.
    let report = listed("/v1/analytics/high-risk-loans", "loan_id", teller.clone()).await;
    assert_eq!(report, [a_loan.as_str()]);
    let all = listed(
        "/v1/analytics/high-risk-loans",
        "loan_id",
        app.token("analyst", None),
    )
    .await;
    assert_eq!(all.len(), 2, "analysts see every branch");

    // The region sees its branch; the head office and administrators see both.
    let north = app.token_at("regional", "staff", None, Some("NORTH"));
    assert_eq!(
        listed("/v1/customers", "customer_id", north).await,
        [a_customer.as_str()]
    );
    for token in [app.staff(), app.token("admin", None)] {
        let mut both = listed("/v1/customers", "customer_id", token).await;
        both.sort();
        let mut expected = vec![a_customer.clone(), b_customer.clone()];
        expected.sort();
        assert_eq!(both, expected);
    }

    // A staff token naming no office, or one that does not exist, sees nobody.
    for token in [
        app.token_at("nowhere", "staff", None, None),
        app.token_at("lost", "staff", None, Some("XX99")),
    ] {
        assert_eq!(
            listed("/v1/customers", "customer_id", token.clone()).await,
            Vec::<String>::new()
        );
        app.get(&format!("/v1/customers/{a_customer}"), &token)
            .await
            .problem(StatusCode::NOT_FOUND);
    }
    // A teller cannot open a customer in another branch; by default one opens in their own.
    let mut body = customer_body("BR-A-2", "500100202");
    body["branch"] = json!("HCM01");
    app.json(Method::POST, "/v1/customers", &teller, &body)
        .await
        .problem(StatusCode::FORBIDDEN);
    body.as_object_mut().unwrap().remove("branch");
    let own = app
        .json(Method::POST, "/v1/customers", &teller, &body)
        .await;
    assert_eq!(own.status, StatusCode::CREATED, "{}", own.text());
    assert_eq!(own.json()["branch"], "HN01");
    body["customer_code"] = json!("BR-A-3");
    body["id_number"] = json!("500100203");
    body["branch"] = json!("NOPE1");
    let unknown = app
        .json(Method::POST, "/v1/customers", &app.staff(), &body)
        .await;
    assert_eq!(
        unknown.problem(StatusCode::UNPROCESSABLE_ENTITY)["errors"][0]["field"],
        "branch"
    );
}

#[tokio::test]
async fn a_teller_s_stream_carries_only_their_branch_s_events() {
    let app = TestApp::spawn().await;
    offices(&app).await;
    let hanoi = app.token_at("teller-stream", "staff", None, Some("HN01"));
    let mut stream = EventStream::open_at(&app, "/v1/events/loans", &hanoi, None).await;
    let (_, b_loan, _) = book(&app, "HCM01", "BR-S-2", "500100301").await;
    let (_, a_loan, _) = book(&app, "HN01", "BR-S-1", "500100300").await;
    let mut seen = Vec::new();
    // B's events committed first; the stream must skip them and carry A's, in order.
    while let Some((_, topic, event)) = stream.next_event(SOON).await {
        let loan = event["loan_id"].as_str().map(str::to_owned);
        assert_ne!(loan.as_deref(), Some(b_loan.as_str()), "{event}");
        seen.push(event);
        if topic == "payment_recorded" {
            break;
        }
    }
    assert!(
        seen.iter().all(|e| e["loan_id"] == a_loan.as_str()),
        "{seen:?}"
    );
    assert!(seen.len() >= 3, "{seen:?}");
    // And nothing of B's follows.
    while let Some((_, _, event)) = stream.next_event(Duration::from_millis(500)).await {
        assert_eq!(event["loan_id"], a_loan.as_str(), "{event}");
    }
}

#[tokio::test]
async fn postgresql_itself_scopes_the_staff_role_by_the_branch_setting() {
    let app = TestApp::spawn().await;
    offices(&app).await;
    let (a_customer, ..) = book(&app, "HN01", "BR-Q-1", "500100400").await;
    book(&app, "HCM01", "BR-Q-2", "500100401").await;
    const COUNTS: &str = "SELECT (SELECT count(*) FROM core.customers), \
        (SELECT count(*) FROM core.loans), (SELECT count(*) FROM core.payments), \
        (SELECT count(*) FROM core.loan_installments), \
        (SELECT count(DISTINCT customer_id) FROM core.journal_lines), \
        (SELECT count(DISTINCT customer_id) FROM metadata.outbox_events \
         WHERE customer_id IS NOT NULL)";
    let scoped = |setting: &'static str| {
        let app = &app;
        async move {
            let mut tx = app.owner.begin().await.unwrap();
            sqlx::raw_sql(&format!("SET LOCAL ROLE lakehouse_staff; {setting}"))
                .execute(&mut *tx)
                .await
                .unwrap();
            let counts: (i64, i64, i64, i64, i64, i64) =
                sqlx::query_as(COUNTS).fetch_one(&mut *tx).await.unwrap();
            let customers: Vec<Uuid> = sqlx::query_scalar("SELECT customer_id FROM core.customers")
                .fetch_all(&mut *tx)
                .await
                .unwrap();
            (counts, customers)
        }
    };
    let (hanoi, customers) = scoped("SET LOCAL app.branch = 'HN01'").await;
    assert_eq!(customers, [a_customer.parse::<Uuid>().unwrap()]);
    // One customer, one loan, its disbursement and repayment, ten installments, and the journal
    // and events of that customer alone.
    assert_eq!(hanoi, (1, 1, 2, 10, 1, 1));
    let (head_office, _) = scoped("SET LOCAL app.branch = 'HO'").await;
    assert_eq!(head_office, (2, 2, 4, 20, 2, 2));
    let (nobody, _) = scoped("SET LOCAL app.actor = 'local|unlisted|staff'").await;
    assert_eq!(nobody, (0, 0, 0, 0, 0, 0));
    // The scope is worked out once per transaction, from the request's own settings.
    let mut tx = app.owner.begin().await.unwrap();
    sqlx::raw_sql("SET LOCAL ROLE lakehouse_staff; SET LOCAL app.branch = 'NORTH'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let scope: Vec<i32> = sqlx::query_scalar("SELECT unnest(core.visible_offices())")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    let expected: Vec<i32> = sqlx::query_scalar(
        "SELECT office_id FROM core.offices WHERE code IN ('NORTH', 'HN01') ORDER BY office_id",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert_eq!(scope, expected);
}

#[tokio::test]
async fn the_staff_directory_places_a_login_without_a_branch_claim() {
    let app = TestApp::spawn().await;
    offices(&app).await;
    let (a_customer, ..) = book(&app, "HN01", "BR-D-1", "500100500").await;
    let (b_customer, ..) = book(&app, "HCM01", "BR-D-2", "500100501").await;
    let admin = app.token("admin", None);
    let listed_by = |token: String| {
        let app = &app;
        async move {
            ids(
                &app.get("/v1/customers", &token).await.json(),
                "customer_id",
            )
        }
    };
    let dana = app.token_at("dana", "staff", None, None);
    assert!(
        listed_by(dana.clone()).await.is_empty(),
        "not in the directory: nobody"
    );

    let entry = app
        .json(
            Method::POST,
            "/v1/staff",
            &admin,
            &json!({"issuer": "local", "subject": "dana", "display_name": "Dana", "office": "HCM01",
                    "approval_limit": "50000000"}),
        )
        .await;
    assert_eq!(entry.status, StatusCode::CREATED, "{}", entry.text());
    let entry = entry.json();
    assert_eq!(entry["office"], "HCM01");
    assert_eq!(entry["approval_limit"], "50000000.00");
    assert_eq!(listed_by(dana.clone()).await, [b_customer.as_str()]);
    // A claim wins over the directory.
    let claimed = app.token_at("dana", "staff", None, Some("HN01"));
    assert_eq!(listed_by(claimed).await, [a_customer.as_str()]);

    // Moved to the north: the next request sees the north's customers.
    let id = entry["staff_id"].as_str().unwrap();
    let moved = app
        .json_with(
            Method::PATCH,
            &format!("/v1/staff/{id}"),
            &admin,
            &json!({"office": "NORTH"}),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.text());
    assert_eq!(listed_by(dana.clone()).await, [a_customer.as_str()]);
    // A stale version is 412; an unknown office 422; a second entry for one login 409.
    app.json_with(
        Method::PATCH,
        &format!("/v1/staff/{id}"),
        &admin,
        &json!({"active": false}),
        &[("if-match", "\"1\"")],
    )
    .await
    .problem(StatusCode::PRECONDITION_FAILED);
    let unknown = app
        .json_with(
            Method::PATCH,
            &format!("/v1/staff/{id}"),
            &admin,
            &json!({"office": "NOPE"}),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(
        unknown.problem(StatusCode::UNPROCESSABLE_ENTITY)["errors"][0]["field"],
        "office"
    );
    app.json(
        Method::POST,
        "/v1/staff",
        &admin,
        &json!({"issuer": "local", "subject": "dana", "office": "HO"}),
    )
    .await
    .problem(StatusCode::CONFLICT);
    // Deactivated: nobody again.
    let off = app
        .json_with(
            Method::PATCH,
            &format!("/v1/staff/{id}"),
            &admin,
            &json!({"active": false}),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.text());
    assert!(listed_by(dana).await.is_empty());
    // The move is on the audit trail, naming the administrator.
    let audited: (String, String) = sqlx::query_as(
        "SELECT actor, db_role FROM audit.changes WHERE entity = 'staff_member' \
         AND changes ? 'office_id' ORDER BY change_id LIMIT 1",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(
        audited,
        (
            "local|test-admin|admin".into(),
            "lakehouse_admin_api".into()
        )
    );
    // Only administrators keep the directory and the offices.
    for token in [app.staff(), app.token("analyst", None)] {
        app.get("/v1/staff", &token)
            .await
            .problem(StatusCode::FORBIDDEN);
        app.json(
            Method::POST,
            "/v1/offices",
            &token,
            &json!({"code": "X1", "name": "X", "kind": "BRANCH", "parent": "HO"}),
        )
        .await
        .problem(StatusCode::FORBIDDEN);
    }
    let tree = app.get("/v1/offices", &app.staff()).await.json();
    let codes: Vec<&str> = tree["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["HO", "NORTH", "HN01", "SOUTH", "HCM01"]);
    assert_eq!(tree["data"][2]["path"], json!(["HO", "NORTH", "HN01"]));
    // A branch has nothing below it.
    let below = app
        .json(
            Method::POST,
            "/v1/offices",
            &admin,
            &json!({"code": "HN01A", "name": "Desk", "kind": "BRANCH", "parent": "HN01"}),
        )
        .await;
    assert_eq!(
        below.problem(StatusCode::UNPROCESSABLE_ENTITY)["errors"][0]["field"],
        "parent"
    );
}

/// A row about a customer takes the customer's office whatever the statement names: the stamp
/// corrects a wrong one. Only a replay (a loan-book import, `app.replaying`) names its rows'
/// office itself (migration 0051): what it names is checked once per statement and a wrong one
/// refused; a row that names none is stamped.
#[tokio::test]
async fn a_row_takes_its_customer_s_office_and_a_replay_may_name_only_that_one() {
    let app = TestApp::spawn().await;
    offices(&app).await;
    let (customer, loan, _) = book(&app, "HN01", "BR-S-1", "500100500").await;
    let office = |code: &'static str| {
        let app = &app;
        async move {
            app.count(&format!(
                "SELECT office_id::bigint FROM core.offices WHERE code = '{code}'"
            ))
            .await
        }
    };
    let (hanoi, saigon) = (office("HN01").await, office("HCM01").await);
    // An interest entry naming `named`, in a transaction of its own (rolled back), replaying
    // or not: the office it was written with, or the database's refusal.
    let write = |named: Option<i64>, replaying: bool| {
        let (app, customer, loan) = (&app, &customer, &loan);
        async move {
            let mut tx = app.owner.begin().await.unwrap();
            if replaying {
                sqlx::query("SELECT set_config('app.replaying', 'on', true)")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            let written = sqlx::query_scalar::<_, i64>(&format!(
                "INSERT INTO core.journal_entries (entry_id, loan_id, customer_id, branch_id,
                                                   kind, business_date)
                 VALUES (gen_random_uuid(), '{loan}', '{customer}', {}, 'INTEREST_DUE',
                         current_date)
                 RETURNING branch_id::bigint",
                named.map_or("NULL".to_owned(), |n| n.to_string())
            ))
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| {
                e.as_database_error()
                    .and_then(|d| d.code())
                    .unwrap_or_default()
                    .into_owned()
            });
            tx.rollback().await.unwrap();
            written
        }
    };
    assert_eq!(
        write(Some(saigon), false).await,
        Ok(hanoi),
        "a wrong office is corrected"
    );
    assert_eq!(write(None, false).await, Ok(hanoi));
    assert_eq!(
        write(Some(hanoi), true).await,
        Ok(hanoi),
        "a replay names its office"
    );
    assert_eq!(
        write(None, true).await,
        Ok(hanoi),
        "a replay that names none is stamped"
    );
    assert_eq!(
        write(Some(saigon), true).await,
        Err("23514".to_owned()),
        "a replay that names another office is refused"
    );

    // The logins that reach SQL without the service write none of the tables a replay names
    // the office of, not even a column; the roles that do write them log in only as the
    // service does.
    let writable: Vec<String> = sqlx::query_scalar(
        "SELECT r || ' ' || t FROM unnest(ARRAY['lakehouse_read_only', 'lakehouse_analyst',
                                               'lakehouse_etl_user', 'lakehouse_trino']) r,
                                 unnest(ARRAY['core.loan_installments', 'core.payments',
                                              'core.payment_directory', 'core.payment_allocations',
                                              'core.schedule_changes', 'core.journal_entries',
                                              'core.journal_lines']) t
         WHERE has_any_column_privilege(r, t, 'INSERT')",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert_eq!(writable, Vec::<String>::new());
    let logins: i64 = app
        .count(
            "SELECT count(*) FROM pg_roles WHERE rolcanlogin AND rolname IN \
             ('lakehouse_staff', 'lakehouse_admin_api', 'lakehouse_app_user')",
        )
        .await;
    assert_eq!(logins, 0);
}
