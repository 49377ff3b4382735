use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{customer_body, TestApp};

#[tokio::test]
async fn staff_create_a_customer_and_read_it_back_with_its_etag() {
    let app = TestApp::spawn().await;
    let response = app
        .json(
            Method::POST,
            "/v1/customers",
            &app.staff(),
            &customer_body("CUST100", "079-123-456-789"),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text());
    let created = response.json();
    let id = created["customer_id"].as_str().unwrap();
    assert_eq!(
        response.header("location"),
        Some(format!("/v1/customers/{id}").as_str())
    );
    assert_eq!(response.header("etag"), Some("\"1\""));
    assert_eq!(created["id_number"], "079123456789");
    assert_eq!(created["kyc_status"], "PENDING");
    assert_eq!(created["address"]["city"], "Ho Chi Minh");

    let read = app.get(&format!("/v1/customers/{id}"), &app.staff()).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json(), created);
    assert_eq!(read.header("etag"), Some("\"1\""));
}

#[tokio::test]
async fn duplicate_customer_codes_and_id_numbers_are_409_naming_the_field() {
    let app = TestApp::spawn().await;
    app.create_customer("CUST200", "123456789").await;

    let same_code = app
        .json(
            Method::POST,
            "/v1/customers",
            &app.staff(),
            &customer_body("CUST200", "555555555"),
        )
        .await;
    assert_eq!(
        same_code.problem(StatusCode::CONFLICT)["errors"][0]["field"],
        "customer_code"
    );

    // The same ID number written differently is the same ID number.
    let same_id = app
        .json(
            Method::POST,
            "/v1/customers",
            &app.staff(),
            &customer_body("CUST201", "123 456-789"),
        )
        .await;
    assert_eq!(
        same_id.problem(StatusCode::CONFLICT)["errors"][0]["field"],
        "id_number"
    );

    assert_eq!(app.count("SELECT count(*) FROM core.customers").await, 1);
}

#[tokio::test]
async fn invalid_fields_are_422_listing_each_field_and_write_nothing() {
    let app = TestApp::spawn().await;
    let mut body = customer_body("x", "12");
    body["email"] = json!("nope");
    body["credit_score"] = json!(1000);
    body["date_of_birth"] = json!("2999-01-01");
    let response = app
        .json(Method::POST, "/v1/customers", &app.staff(), &body)
        .await;
    let problem = response.problem(StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "customer_code",
            "id_number",
            "email",
            "date_of_birth",
            "credit_score"
        ]
    );
    assert_eq!(app.count("SELECT count(*) FROM core.customers").await, 0);
}

#[tokio::test]
async fn listing_filters_by_kyc_status_and_city_and_pages_with_a_cursor() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut body = customer_body(&format!("CUST30{i}"), &format!("30030030{i}"));
        if i % 2 == 1 {
            body["address"] = json!({"city": "Ha Noi"});
        }
        let response = app
            .json(Method::POST, "/v1/customers", &app.staff(), &body)
            .await;
        assert_eq!(response.status, StatusCode::CREATED);
        ids.push(response.json()["customer_id"].as_str().unwrap().to_owned());
    }
    let approve = json!({"decision": "APPROVE"});
    app.json(
        Method::POST,
        &format!("/v1/customers/{}/kyc", ids[0]),
        &app.staff(),
        &approve,
    )
    .await;

    // Pages of two, in id (creation) order, ending with a null cursor.
    let mut seen = Vec::new();
    let mut path = "/v1/customers?limit=2".to_owned();
    loop {
        let page = app.get(&path, &app.staff()).await.json();
        for c in page["data"].as_array().unwrap() {
            seen.push(c["customer_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/customers?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);

    let hanoi = app
        .get("/v1/customers?city=Ha%20Noi", &app.staff())
        .await
        .json();
    let hanoi_ids: Vec<&str> = hanoi["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["customer_id"].as_str().unwrap())
        .collect();
    assert_eq!(hanoi_ids, [ids[1].as_str(), ids[3].as_str()]);

    let approved = app
        .get("/v1/customers?kyc_status=APPROVED", &app.staff())
        .await
        .json();
    assert_eq!(approved["data"].as_array().unwrap().len(), 1);
    assert_eq!(approved["data"][0]["customer_id"], ids[0].as_str());

    let pending_in_hcm = app
        .get(
            "/v1/customers?kyc_status=PENDING&city=Ho%20Chi%20Minh",
            &app.staff(),
        )
        .await
        .json();
    assert_eq!(pending_in_hcm["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn patch_needs_the_current_etag_and_a_stale_one_is_412() {
    let app = TestApp::spawn().await;
    let id = app.customer_id("CUST400", "400400400").await;
    let path = format!("/v1/customers/{id}");
    let change = json!({"full_name": "New Name", "email": null});

    let missing = app.json(Method::PATCH, &path, &app.staff(), &change).await;
    missing.problem(StatusCode::PRECONDITION_REQUIRED);

    let ok = app
        .json_with(
            Method::PATCH,
            &path,
            &app.staff(),
            &change,
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    assert_eq!(ok.header("etag"), Some("\"2\""));
    let body = ok.json();
    assert_eq!(body["full_name"], "New Name");
    assert_eq!(body["email"], Value::Null);
    assert_eq!(
        body["phone_number"], "+84901234567",
        "absent fields are left alone"
    );

    let stale = app
        .json_with(
            Method::PATCH,
            &path,
            &app.staff(),
            &json!({"full_name": "Lost Update"}),
            &[("if-match", "\"1\"")],
        )
        .await;
    stale.problem(StatusCode::PRECONDITION_FAILED);
    let now = app.get(&path, &app.staff()).await.json();
    assert_eq!(now["full_name"], "New Name");

    let nobody = format!("/v1/customers/{}", Uuid::now_v7());
    app.json_with(
        Method::PATCH,
        &nobody,
        &app.staff(),
        &change,
        &[("if-match", "\"1\"")],
    )
    .await
    .problem(StatusCode::NOT_FOUND);
    app.json_with(
        Method::PATCH,
        &path,
        &app.staff(),
        &json!({"customer_code": "X1234"}),
        &[("if-match", "\"2\"")],
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn kyc_is_decided_once_by_staff_and_a_rejection_needs_a_reason() {
    let app = TestApp::spawn().await;
    let id = app.customer_id("CUST500", "500500500").await;
    let path = format!("/v1/customers/{id}/kyc");

    let as_customer = app
        .json(
            Method::POST,
            &path,
            &app.customer(id),
            &json!({"decision": "APPROVE"}),
        )
        .await;
    as_customer.problem(StatusCode::FORBIDDEN);

    let no_reason = app
        .json(
            Method::POST,
            &path,
            &app.staff(),
            &json!({"decision": "REJECT"}),
        )
        .await;
    no_reason.problem(StatusCode::UNPROCESSABLE_ENTITY);

    let approved = app
        .json(
            Method::POST,
            &path,
            &app.staff(),
            &json!({"decision": "APPROVE"}),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text());
    assert_eq!(approved.json()["kyc_status"], "APPROVED");
    assert!(approved.json()["kyc_decided_at"].is_string());

    let again = app
        .json(
            Method::POST,
            &path,
            &app.staff(),
            &json!({"decision": "REJECT", "reason": "late"}),
        )
        .await;
    again.problem(StatusCode::CONFLICT);
    let decided_by: String =
        sqlx::query_scalar("SELECT kyc_decided_by FROM core.customers WHERE customer_id = $1")
            .bind(id)
            .fetch_one(&app.owner)
            .await
            .unwrap();
    assert_eq!(
        decided_by, "local|test-staff|staff",
        "the acting principal is recorded"
    );
}

#[tokio::test]
async fn a_customer_sees_only_itself_through_every_route() {
    let app = TestApp::spawn().await;
    let me = app.customer_id("CUST600", "600600600").await;
    let other = app.customer_id("CUST601", "601601601").await;
    let token = app.customer(me);

    let own = app.get(&format!("/v1/customers/{me}"), &token).await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(
        own.json()["id_number"],
        "600600600",
        "customers see their own ID number"
    );

    let theirs = app.get(&format!("/v1/customers/{other}"), &token).await;
    let missing = app
        .get(&format!("/v1/customers/{}", Uuid::now_v7()), &token)
        .await;
    let (mut a, mut b) = (
        theirs.problem(StatusCode::NOT_FOUND),
        missing.problem(StatusCode::NOT_FOUND),
    );
    a["instance"] = Value::Null;
    b["instance"] = Value::Null;
    assert_eq!(
        a, b,
        "another customer's id looks exactly like one that does not exist"
    );

    let list = app.get("/v1/customers", &token).await.json();
    let listed: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["customer_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [me.to_string()]);

    let me_body = app.get("/v1/me", &token).await;
    assert_eq!(me_body.status, StatusCode::OK);
    assert_eq!(me_body.json()["customer_id"], me.to_string());

    app.json_with(
        Method::PATCH,
        &format!("/v1/customers/{other}"),
        &token,
        &json!({"full_name": "x"}),
        &[("if-match", "*")],
    )
    .await
    .problem(StatusCode::FORBIDDEN);
    app.get("/v1/me", &app.staff())
        .await
        .problem(StatusCode::FORBIDDEN);

    // A customer token for an id that has no row sees nothing at all.
    let ghost = app.customer(Uuid::now_v7());
    app.get("/v1/me", &ghost)
        .await
        .problem(StatusCode::NOT_FOUND);
    let list = app.get("/v1/customers", &ghost).await.json();
    assert_eq!(list["data"], json!([]));
}

#[tokio::test]
async fn id_numbers_are_masked_for_analysts_and_etl_and_clear_for_staff_and_admins() {
    let app = TestApp::spawn().await;
    let id = app.customer_id("CUST700", "700700123").await;
    let path = format!("/v1/customers/{id}");
    for (role, expected) in [
        ("staff", "700700123"),
        ("admin", "700700123"),
        ("analyst", "*****0123"),
    ] {
        let response = app.get(&path, &app.token(role, None)).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{role}: {}",
            response.text()
        );
        assert_eq!(response.json()["id_number"], expected, "{role}");
    }

    let created_by_etl = app
        .json(
            Method::POST,
            "/v1/customers",
            &app.token("etl", None),
            &customer_body("CUST701", "701701701"),
        )
        .await;
    assert_eq!(
        created_by_etl.status,
        StatusCode::CREATED,
        "{}",
        created_by_etl.text()
    );
    assert_eq!(created_by_etl.json()["id_number"], "*****1701");
    // The pipeline reads back what it created, masked, and nothing else.
    let etl = app.token("etl", None);
    let own_id = created_by_etl.json()["customer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let own = app.get(&format!("/v1/customers/{own_id}"), &etl).await;
    assert_eq!(own.json()["id_number"], "*****1701");
    app.get(&path, &etl).await.problem(StatusCode::NOT_FOUND);
    let listed = app.get("/v1/customers", &etl).await.json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn id_numbers_are_nowhere_in_plaintext_in_the_database() {
    let app = TestApp::spawn().await;
    let id = app.customer_id("CUST800", "800812345678").await;

    let row_text: String =
        sqlx::query_scalar("SELECT c::text FROM core.customers c WHERE customer_id = $1")
            .bind(id)
            .fetch_one(&app.owner)
            .await
            .unwrap();
    assert!(!row_text.contains("800812345678"), "{row_text}");
    // Nor hex-encoded, as bytea prints.
    assert!(!row_text.contains(&hex("800812345678")), "{row_text}");

    let (ciphertext, last4): (Vec<u8>, String) = sqlx::query_as(
        "SELECT id_number_ciphertext, id_number_last4 FROM core.customers WHERE customer_id = $1",
    )
    .bind(id)
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(app.cipher.open(&ciphertext, id).unwrap(), "800812345678");
    assert_eq!(last4, "5678");
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}
