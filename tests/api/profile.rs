//! Self-service profile: a customer changes their own phone, e-mail and address, and nothing
//! else, held to it by the database too; the change is audited and emits an event.

use axum::http::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::TestApp;

#[tokio::test]
async fn a_customer_changes_their_contact_details_with_if_match_and_it_is_audited() {
    let app = TestApp::spawn().await;
    let id = app.customer_id("SELF01", "770707123456").await;
    let token = app.customer(id);
    let me = app.get("/v1/me", &token).await;
    let etag = me.header("etag").unwrap().to_owned();

    let patch = |body: serde_json::Value, headers: Vec<(&'static str, String)>| {
        let app = &app;
        let token = token.clone();
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.json_with(Method::PATCH, "/v1/me", &token, &body, &headers)
                .await
        }
    };
    // If-Match is required, and a stale one is refused.
    patch(json!({"phone_number": "0911111111"}), vec![])
        .await
        .problem(StatusCode::PRECONDITION_REQUIRED);
    patch(
        json!({"phone_number": "0911111111"}),
        vec![("If-Match", "\"99\"".into())],
    )
    .await
    .problem(StatusCode::PRECONDITION_FAILED);
    // Nothing but contact details.
    for body in [
        json!({"credit_score": 850}),
        json!({"full_name": "Someone Else"}),
        json!({"customer_code": "X"}),
    ] {
        patch(body.clone(), vec![("If-Match", etag.clone())])
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY);
    }

    let changed = patch(
        json!({"phone_number": "0911111111", "email": "new@example.com", "address": {"city": "Da Nang"}}),
        vec![("If-Match", etag.clone()), ("x-request-id", "req-self-1".into())],
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    let body = changed.json();
    assert_eq!(body["phone_number"], "+84911111111", "stored in E.164");
    assert_eq!(body["email"], "new@example.com");
    assert_ne!(changed.header("etag").unwrap(), etag);

    let (fields, request_id): (serde_json::Value, Option<String>) = sqlx::query_as(
        "SELECT changes, request_id FROM audit.changes WHERE entity = 'customer' AND entity_id = $1",
    )
    .bind(id)
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(request_id.as_deref(), Some("req-self-1"));
    assert_eq!(fields["phone_number"], "changed");
    assert!(!fields.to_string().contains("911111111"));

    let event: serde_json::Value = sqlx::query_scalar(
        "SELECT payload FROM metadata.outbox_events WHERE topic = 'customer_contact_changed' AND aggregate_id = $1",
    )
    .bind(id)
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(
        event["changed"],
        json!(["phone_number", "email", "address"])
    );
    assert_eq!(event["previous"]["phone_number"], "+84901234567");
    assert_eq!(event["previous"]["email"], "self01@example.com");

    // Staff have their own route; this one is the customer's.
    patch_as_staff(&app).await;
}

async fn patch_as_staff(app: &TestApp) {
    let response = app
        .json_with(
            Method::PATCH,
            "/v1/me",
            &app.staff(),
            &json!({"email": "x@example.com"}),
            &[("If-Match", "*")],
        )
        .await;
    response.problem(StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_database_allows_the_customer_role_only_its_contact_columns_on_its_own_row() {
    let app = TestApp::spawn().await;
    let me = app.customer_id("SELF02", "770707123457").await;
    let other = app.customer_id("SELF03", "770707123458").await;
    let mut conn = app.owner.acquire().await.unwrap();
    let as_customer = |sql: String| {
        format!(
            "BEGIN; SET LOCAL ROLE lakehouse_app_user; SET LOCAL app.current_customer_id = '{me}'; {sql}; COMMIT"
        )
    };
    let err = sqlx::raw_sql(&as_customer(format!(
        "UPDATE core.customers SET credit_score = 850 WHERE customer_id = '{me}'"
    )))
    .execute(&mut *conn)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await.ok();

    sqlx::raw_sql(&as_customer(format!(
        "UPDATE core.customers SET phone_number = '0999999999' WHERE customer_id IN ('{me}', '{other}')"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    let phones: Vec<(Uuid, Option<String>)> =
        sqlx::query_as("SELECT customer_id, phone_number FROM core.customers WHERE customer_id IN ($1, $2) ORDER BY customer_id = $1 DESC")
            .bind(me)
            .bind(other)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    assert_eq!(
        phones[0],
        (me, Some("+84999999999".to_owned())),
        "their own row changed"
    );
    assert_eq!(
        phones[1],
        (other, Some("+84901234567".to_owned())),
        "another customer's did not"
    );
}
