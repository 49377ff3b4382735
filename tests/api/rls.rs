//! Row-level security proved in SQL, below the API: the service's own login, switched to the
//! customer role exactly as a request does.

use axum::http::{Method, StatusCode};
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use uuid::Uuid;

use crate::helpers::{Options, TestApp};

/// A transaction on the service's pool as `lakehouse_app_user`, with `customer` set (or not).
async fn as_customer(app: &TestApp, customer: Option<Uuid>) -> Transaction<'static, Postgres> {
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('role', 'lakehouse_app_user', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    if let Some(id) = customer {
        sqlx::query("SELECT set_config('app.current_customer_id', $1, true)")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx
}

/// Inserts a loan for `customer` as the owner (loans arrive with their own issue; RLS is here now).
async fn loan_for(app: &TestApp, customer: Uuid) -> Uuid {
    let id = Uuid::now_v7();
    app.ensure_products().await;
    sqlx::query(
        "INSERT INTO core.loans (loan_id, loan_number, customer_id, product_code, product_type, \
         loan_amount, interest_rate, term_months) \
         VALUES ($1, $2, $3, 'PERSONAL_STD', 'PERSONAL_LOAN', 1000000, 0.1, 12)",
    )
    .bind(id)
    .bind(format!("LN-{}", id.simple()))
    .bind(customer)
    .execute(&app.owner)
    .await
    .unwrap();
    id
}

#[tokio::test]
async fn with_customer_a_set_customer_b_cannot_be_selected_or_updated_in_sql() {
    let app = TestApp::spawn().await;
    let a = app.customer_id("CUSTA01", "111111111").await;
    let b = app.customer_id("CUSTB01", "222222222").await;
    let loan_b = loan_for(&app, b).await;

    let mut tx = as_customer(&app, Some(a)).await;
    let visible: Vec<Uuid> = sqlx::query_scalar("SELECT customer_id FROM core.customers")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(visible, [a]);
    let b_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM core.customers WHERE customer_id = $1")
            .bind(b)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(b_rows, 0);
    let updated = sqlx::query(
        "UPDATE core.loans SET status = 'CANCELLED', cancelled_at = now() WHERE loan_id = $1",
    )
    .bind(loan_b)
    .execute(&mut *tx)
    .await
    .unwrap();
    assert_eq!(
        updated.rows_affected(),
        0,
        "B's loan is invisible to the update"
    );
    tx.rollback().await.unwrap();

    // Writes the policies and grants refuse (42501), whatever the customer tries.
    for (why, sql, binds) in [
        (
            "beyond withdrawing an application, a customer changes no loan column",
            "UPDATE core.loans SET term_months = 6 WHERE loan_id = $1",
            vec![loan_b],
        ),
        (
            "the policy's WITH CHECK refuses a row for B",
            "INSERT INTO core.loans (loan_id, loan_number, customer_id, product_code, product_type, \
             loan_amount, interest_rate, term_months) \
             VALUES ($1, 'LN-FORGED', $2, 'PERSONAL_STD', 'PERSONAL_LOAN', 1, 0.1, 12)",
            vec![Uuid::now_v7(), b],
        ),
        (
            "the customer role updates no customer",
            "UPDATE core.customers SET full_name = 'x' WHERE customer_id = $1",
            vec![b],
        ),
    ] {
        let mut tx = as_customer(&app, Some(a)).await;
        let mut query = sqlx::query(sql);
        for bind in binds {
            query = query.bind(bind);
        }
        let refused = query.execute(&mut *tx).await.unwrap_err();
        assert_eq!(sql_state(&refused), "42501", "{why}: {refused}");
        tx.rollback().await.unwrap();
    }
    let term: i32 = sqlx::query_scalar("SELECT term_months FROM core.loans WHERE loan_id = $1")
        .bind(loan_b)
        .fetch_one(&app.owner)
        .await
        .unwrap();
    assert_eq!(term, 12);
}

#[tokio::test]
async fn with_no_customer_id_set_nothing_is_visible_and_nothing_errors() {
    let app = TestApp::spawn().await;
    let a = app.customer_id("CUSTA02", "333333333").await;
    loan_for(&app, a).await;

    for table in [
        "core.customers",
        "core.loans",
        "core.payments",
        "core.loan_directory",
    ] {
        let mut tx = as_customer(&app, None).await;
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
        assert_eq!(n, 0, "{table}");
        tx.rollback().await.unwrap();
    }

    // Once a connection has seen the setting it holds '' rather than nothing: still no rows.
    let mut tx = as_customer(&app, None).await;
    sqlx::query("SELECT set_config('app.current_customer_id', '', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM core.customers")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn settings_do_not_leak_to_the_next_request_on_a_pooled_connection() {
    let app = TestApp::spawn_with(Options {
        pool_size: 1,
        ..Options::default()
    })
    .await;
    let a = app.customer_id("CUSTA03", "444444444").await;
    let me = app.get("/v1/me", &app.customer(a)).await;
    assert_eq!(me.status, StatusCode::OK);

    // The pool has one connection, so this is the connection that served customer A.
    let mut conn = app.pool.acquire().await.unwrap();
    let (role, customer, actor): (String, String, String) = sqlx::query_as(
        "SELECT current_user::text, coalesce(current_setting('app.current_customer_id', true), ''), \
         coalesce(current_setting('app.actor', true), '')",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        (role.as_str(), customer.as_str(), actor.as_str()),
        ("lakehouse_authenticator", "", "")
    );

    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    sqlx::query("SELECT set_config('role', 'lakehouse_app_user', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM core.customers")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 0, "a request with no customer id sees no customer rows");
    tx.rollback().await.unwrap();
    drop(conn);

    // Through the API too: a customer token for an unknown id, on that same connection.
    let list = app
        .get("/v1/customers", &app.customer(Uuid::now_v7()))
        .await
        .json();
    assert_eq!(list["data"], serde_json::json!([]));
}

/// A read's transaction is not committed but rolled back in the same round trip as the pool's
/// check of the returned connection; it must still end before the connection idles.
#[tokio::test]
async fn a_read_leaves_no_transaction_open_on_its_connection() {
    let app = TestApp::spawn_with(Options {
        pool_size: 1,
        ..Options::default()
    })
    .await;
    let a = app.customer_id("CUSTA04", "444444445").await;
    assert_eq!(
        app.get("/v1/me", &app.customer(a)).await.status,
        StatusCode::OK
    );
    let states = format!(
        "SELECT count(*) FILTER (WHERE state = 'idle') * 10 \
                + count(*) FILTER (WHERE state <> 'idle') \
         FROM pg_stat_activity \
         WHERE usename = 'lakehouse_authenticator' AND datname = '{}'",
        app.database
    );
    let mut last = -1;
    for _ in 0..50 {
        last = app.count(&states).await;
        if last == 10 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(last, 10, "one connection, idle and outside any transaction");
}

#[tokio::test]
async fn the_service_login_is_not_superuser_owns_nothing_and_cannot_bypass_rls() {
    let app = TestApp::spawn().await;
    let (superuser, bypass, inherit, create_role, create_db): (bool, bool, bool, bool, bool) =
        sqlx::query_as(
            "SELECT rolsuper, rolbypassrls, rolinherit, rolcreaterole, rolcreatedb FROM pg_roles \
             WHERE rolname = 'lakehouse_authenticator'",
        )
        .fetch_one(&app.owner)
        .await
        .unwrap();
    assert!(!superuser && !bypass && !inherit && !create_role && !create_db);

    let owned: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pg_class WHERE relowner = r.oid) \
              + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid) \
              + (SELECT count(*) FROM pg_proc WHERE proowner = r.oid) \
         FROM pg_roles r WHERE r.rolname = 'lakehouse_authenticator'",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(owned, 0);

    // None of the roles a request can switch to may bypass RLS either.
    let bypassing: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'lakehouse%' AND (rolbypassrls OR rolsuper)",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(bypassing, 0);

    // And every table holding customer data has RLS on.
    let unprotected: Vec<String> = sqlx::query_scalar(
        "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid \
         WHERE a.attname = 'customer_id' AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
           AND c.relnamespace IN ('core'::regnamespace, 'analytics'::regnamespace) \
           AND NOT c.relrowsecurity",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert!(unprotected.is_empty(), "{unprotected:?}");
}

#[tokio::test]
async fn migrating_several_databases_at_once_on_one_cluster_succeeds() {
    let app = TestApp::spawn().await;
    let owner_url = app.owner.connect_options();
    let mut names = Vec::new();
    for _ in 0..4 {
        let name = format!("lakehouse_mig_{}", Uuid::now_v7().simple());
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&app.owner)
            .await
            .unwrap();
        names.push(name);
    }
    let migrate = |name: &String| {
        let options = (*owner_url).clone().database(name);
        async move {
            lakehouse_api::platform::db::migrate(&options, None)
                .await
                .map_err(|e| e.to_string())
        }
    };
    let results = tokio::join!(
        migrate(&names[0]),
        migrate(&names[1]),
        migrate(&names[2]),
        migrate(&names[3])
    );
    for result in [results.0, results.1, results.2, results.3] {
        assert!(result.is_ok(), "{result:?}");
    }
    // And again: migrations are idempotent.
    let options = (*owner_url).clone().database(&names[0]);
    lakehouse_api::platform::db::migrate(&options, None)
        .await
        .unwrap();
    let mut conn = PgConnection::connect_with(&options).await.unwrap();
    let policies: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_policies WHERE schemaname = 'core'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(policies >= 10);
    conn.close().await.unwrap();
    for name in names {
        sqlx::raw_sql(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&app.owner)
            .await
            .unwrap();
    }
}

fn sql_state(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()).unwrap_or_default(),
        other => format!("not a database error: {other}"),
    }
}

#[tokio::test]
async fn the_request_transaction_switches_role_and_settings_for_itself_only() {
    use lakehouse_api::platform::auth::{Caller, Role};
    let app = TestApp::spawn_with(Options {
        pool_size: 1,
        ..Options::default()
    })
    .await;
    let customer = Uuid::now_v7();
    let caller = Caller {
        issuer: "local".into(),
        subject: "mobile-user".into(),
        role: Role::Customer,
        customer_id: Some(customer),
        request_id: None,
        expires_at: None,
        linked: false,
        branch: None,
    };
    let mut tx = app
        .pool
        .begin_with(lakehouse_api::platform::auth::begin_statement(
            &caller, true, 1234,
        ))
        .await
        .unwrap();
    let inside: (String, String, String, String, String) = sqlx::query_as(
        "SELECT current_user::text, current_setting('app.current_customer_id'), \
         current_setting('app.actor'), current_setting('statement_timeout'), \
         current_setting('transaction_read_only')",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(
        inside,
        (
            "lakehouse_app_user".into(),
            customer.to_string(),
            format!("local|mobile-user|customer|{customer}"),
            "1234ms".into(),
            "on".into()
        )
    );
    tx.commit().await.unwrap();

    let after: (String, String) =
        sqlx::query_as("SELECT current_user::text, current_setting('statement_timeout')")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(after, ("lakehouse_authenticator".into(), "0".into()));
}

#[tokio::test]
async fn legacy_actor_values_keep_what_the_etl_role_sees() {
    let app = TestApp::spawn().await;
    // A customer created before principals existed, by an ETL token with subject "nightly":
    // the migration turned its created_by into "local|nightly".
    let etl = app.token_for("nightly", "etl", None);
    let created = app
        .json(
            Method::POST,
            "/v1/customers",
            &etl,
            &crate::helpers::customer_body("CUSTH06", "906906906"),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.json()["customer_id"].as_str().unwrap().to_owned();
    sqlx::query(
        "UPDATE core.customers SET created_by = 'local|nightly' WHERE customer_id = $1::uuid",
    )
    .bind(&id)
    .execute(&app.owner)
    .await
    .unwrap();
    assert_eq!(
        app.get(&format!("/v1/customers/{id}"), &etl).await.status,
        StatusCode::OK
    );
    // Another ETL subject never saw it, and still does not.
    let other = app.token_for("weekly", "etl", None);
    assert_eq!(
        app.get(&format!("/v1/customers/{id}"), &other).await.status,
        StatusCode::NOT_FOUND
    );
}
