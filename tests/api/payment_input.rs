//! What a payment request may carry: server-assigned ids, unique client references, canonical
//! money strings and dates inside the window; a refusal writes nothing.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{repayment, TestApp};

fn field_of(problem: &Value) -> &str {
    problem["errors"][0]["field"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_client_chosen_transaction_id_is_refused_so_no_disbursement_can_be_blocked() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUSTH01", "901901901").await;
    let paying = app
        .disbursed_loan(customer, "ZERO_RATE", "1000000.00", 10)
        .await;
    let next = app.loan_for(customer, "10000000").await;
    let squatted = format!("DSB-{}", next.number);

    let mut body = repayment(&paying, "0.01");
    body["transaction_id"] = json!(squatted);
    let refused = app.pay(&app.customer(customer), "h01", &body).await;
    let problem = refused.problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_of(&problem), "transaction_id", "{problem}");
    let refused = app.pay(&app.staff(), "h01", &body).await;
    assert_eq!(
        field_of(&refused.problem(StatusCode::UNPROCESSABLE_ENTITY)),
        "transaction_id"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM core.payments WHERE payment_type = 'REPAYMENT'")
            .await,
        0
    );

    assert_eq!(
        app.act(&app.staff(), &next, "approve").await.status,
        StatusCode::OK
    );
    let disbursed = app.act(&app.staff(), &next, "disburse").await;
    assert_eq!(disbursed.status, StatusCode::OK, "{}", disbursed.text());
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM core.payments WHERE transaction_id = '{squatted}'"
        ))
        .await,
        1
    );
}

#[tokio::test]
async fn a_client_reference_is_unique_per_customer_and_finds_the_payment() {
    let app = TestApp::spawn().await;
    let alice = app.approved_customer("CUSTH02", "902902902").await;
    let bob = app.approved_customer("CUSTH03", "903903903").await;
    let alice_loan = app
        .disbursed_loan(alice, "ZERO_RATE", "1000000.00", 10)
        .await;
    let bob_loan = app.disbursed_loan(bob, "ZERO_RATE", "1000000.00", 10).await;

    let mut body = repayment(&alice_loan, "10.00");
    body["client_reference"] = json!("RCPT-0001");
    let paid = app.pay(&app.customer(alice), "h02-a", &body).await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text());
    let paid = paid.json();
    assert_eq!(paid["client_reference"], "RCPT-0001");
    assert!(paid["transaction_id"].as_str().unwrap().starts_with("TXN"));

    // The same reference again for Alice: 409 naming the field; for Bob it is his own.
    let again = app.pay(&app.customer(alice), "h02-b", &body).await;
    assert_eq!(
        field_of(&again.problem(StatusCode::CONFLICT)),
        "client_reference"
    );
    let mut bobs = repayment(&bob_loan, "20.00");
    bobs["client_reference"] = json!("RCPT-0001");
    assert_eq!(
        app.pay(&app.customer(bob), "h02-c", &bobs).await.status,
        StatusCode::CREATED
    );

    // Found by reference: a customer sees only their own; staff see both.
    let mine = app
        .get(
            "/v1/payments?client_reference=RCPT-0001",
            &app.customer(alice),
        )
        .await
        .json();
    let mine = mine["data"].as_array().unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["payment_id"], paid["payment_id"]);
    let all = app
        .get("/v1/payments?client_reference=RCPT-0001", &app.staff())
        .await
        .json();
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
    let alices = app
        .get(
            &format!("/v1/payments?client_reference=RCPT-0001&customer_id={alice}"),
            &app.staff(),
        )
        .await
        .json();
    assert_eq!(alices["data"].as_array().unwrap().len(), 1);

    for bad in ["", "has space", &"x".repeat(41)] {
        let mut body = repayment(&alice_loan, "1.00");
        body["client_reference"] = json!(bad);
        let refused = app
            .pay(&app.customer(alice), &format!("h02-{}", bad.len()), &body)
            .await;
        assert_eq!(
            field_of(&refused.problem(StatusCode::UNPROCESSABLE_ENTITY)),
            "client_reference"
        );
    }
}

#[tokio::test]
async fn only_canonical_money_strings_are_accepted_and_a_refusal_writes_nothing() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUSTH07", "907907907").await;
    let loan = app
        .disbursed_loan(customer, "ZERO_RATE", "1000000.00", 10)
        .await;
    let bad: [Value; 12] = [
        json!("1e3"),
        json!("1_000"),
        json!("+5.00"),
        json!(".50"),
        json!("5."),
        json!(" 5.00"),
        json!("5.00 "),
        json!("-5.00"),
        json!("1,000"),
        json!("5.001"),
        json!(5),
        json!("0x10"),
    ];
    for (i, amount) in bad.iter().enumerate() {
        let body =
            json!({"loan_id": loan["loan_id"], "payment_type": "REPAYMENT", "amount": amount});
        let refused = app.pay(&app.staff(), &format!("money-{i}"), &body).await;
        let problem = refused.problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(field_of(&problem), "amount", "{amount}: {problem}");

        let application = json!({"customer_id": customer, "product_code": "PERSONAL_STD", "amount": amount, "term_months": 12});
        let refused = app.apply(&app.staff(), application).await;
        let problem = refused.problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(field_of(&problem), "amount", "{amount}: {problem}");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM core.payments WHERE payment_type = 'REPAYMENT'")
            .await,
        0
    );
    assert_eq!(app.count("SELECT count(*) FROM core.loans").await, 1);
    let ok = app
        .pay(&app.staff(), "money-ok", &repayment(&loan, "5"))
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text());
    assert_eq!(ok.json()["amount"], "5.00");
}

#[tokio::test]
async fn dates_outside_the_window_are_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUSTH08", "908908908").await;
    app.ensure_products().await;
    let application = |date: String| {
        json!({"customer_id": customer, "product_code": "PERSONAL_STD", "amount": "10000000",
               "term_months": 12, "application_date": date})
    };
    let now = chrono::Utc::now();
    let future = (now + chrono::Duration::days(2)).to_rfc3339();
    let ancient = (now - chrono::Duration::days(3660)).to_rfc3339();
    for date in [
        future.clone(),
        ancient.clone(),
        "1900-01-01T00:00:00Z".into(),
    ] {
        let refused = app.apply(&app.staff(), application(date)).await;
        let problem = refused.problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(field_of(&problem), "application_date");
    }
    assert_eq!(app.count("SELECT count(*) FROM core.loans").await, 0);
    let partitions = app
        .count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'core.loans'::regclass")
        .await;

    let loan = app
        .disbursed_loan(customer, "ZERO_RATE", "1000000.00", 10)
        .await;
    for (i, date) in [future, ancient].into_iter().enumerate() {
        let mut body = repayment(&loan, "1.00");
        body["payment_date"] = json!(date);
        let refused = app.pay(&app.staff(), &format!("date-{i}"), &body).await;
        let problem = refused.problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(field_of(&problem), "payment_date");
    }
    // Within the window but before the loan's application.
    let mut body = repayment(&loan, "1.00");
    body["payment_date"] = json!((now - chrono::Duration::days(30)).to_rfc3339());
    let refused = app.pay(&app.staff(), "date-early", &body).await;
    assert_eq!(
        field_of(&refused.problem(StatusCode::UNPROCESSABLE_ENTITY)),
        "payment_date"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM core.payments WHERE payment_type = 'REPAYMENT'")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'core.loans'::regclass")
            .await,
        partitions,
        "a refused date created no partition"
    );

    // Applied for 200 days ago and paid out today: neither a repayment nor a fee may be dated
    // between the two, before the money was lent.
    let loan = app
        .apply(
            &app.staff(),
            application((now - chrono::Duration::days(200)).to_rfc3339()),
        )
        .await
        .json();
    app.act(&app.staff(), &loan, "approve").await;
    app.act(&app.staff(), &loan, "disburse").await;
    for (i, kind) in ["REPAYMENT", "FEE"].into_iter().enumerate() {
        let mut body = repayment(&loan, "70.00");
        body["payment_type"] = json!(kind);
        body["payment_date"] = json!((now - chrono::Duration::days(100)).to_rfc3339());
        let refused = app.pay(&app.staff(), &format!("before-{i}"), &body).await;
        let problem = refused.problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(field_of(&problem), "payment_date", "{kind}");
        assert!(problem.to_string().contains("disbursement"), "{problem}");
    }
    let after = app.loan(&loan).await;
    assert_eq!(
        (
            after["principal_outstanding"].as_str(),
            after["total_paid"].as_str()
        ),
        (Some("10000000.00"), Some("0.00"))
    );
}
