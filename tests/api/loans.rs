use axum::http::{Method, StatusCode};
use chrono::Datelike;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{TestApp, TestResponse};

fn decimal(v: &Value) -> Decimal {
    v.as_str()
        .unwrap_or_else(|| panic!("{v} is not a decimal string"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_mobile_flow_runs_from_application_to_disbursement_and_schedule() {
    let app = TestApp::spawn().await;
    app.ensure_products().await;
    let customer = app.approved_customer("CUST100", "100100100").await;
    let token = app.customer(customer);

    let applied = app
        .apply(
            &token,
            json!({"product_code": "PERSONAL_STD", "amount": "50000000.00", "term_months": 24,
                              "collateral_info": {"type": "MOTORBIKE", "value": "30000000"}}),
        )
        .await;
    assert_eq!(applied.status, StatusCode::CREATED, "{}", applied.text());
    let loan = applied.json();
    let id = loan["loan_id"].as_str().unwrap().to_owned();
    assert_eq!(
        applied.header("location"),
        Some(format!("/v1/loans/{id}").as_str())
    );
    assert_eq!(loan["status"], "APPLIED");
    assert_eq!(loan["customer_id"], customer.to_string());
    assert_eq!(loan["interest_rate"], "0.1250", "the product's rate");
    let number = loan["loan_number"].as_str().unwrap();
    assert!(
        number.starts_with(&format!("LN{}", chrono::Utc::now().format("%Y"))) && number.len() == 14,
        "{number}"
    );
    assert_eq!(loan["risk_assessment"]["risk_category"], "LOW");
    assert_eq!(loan["risk_assessment"]["loan_to_value"], "1.6667");

    let approved = app.act(&app.staff(), &loan, "approve").await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text());
    assert_eq!(approved.json()["approved_by"], "local|test-staff|staff");
    let disbursed = app.act(&app.staff(), &loan, "disburse").await;
    assert_eq!(disbursed.status, StatusCode::OK, "{}", disbursed.text());
    let disbursed = disbursed.json();
    let paid_out: chrono::DateTime<chrono::Utc> = disbursed["disbursement_date"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let maturity = paid_out
        .date_naive()
        .checked_add_months(chrono::Months::new(24))
        .unwrap();
    assert_eq!(disbursed["maturity_date"], maturity.to_string());

    let seen = app.get(&format!("/v1/loans/{id}"), &token).await.json();
    assert_eq!(seen["status"], "DISBURSED");
    let by_number = app
        .get(&format!("/v1/loans/by-number/{number}"), &token)
        .await
        .json();
    assert_eq!(by_number["loan_id"], id.as_str());

    let payments = app
        .get(&format!("/v1/loans/{id}/payments"), &token)
        .await
        .json();
    let payments = payments["data"].as_array().unwrap();
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0]["payment_type"], "DISBURSEMENT");
    assert_eq!(payments[0]["status"], "COMPLETED");
    assert_eq!(payments[0]["amount"], "50000000.00");

    let schedule = app
        .get(&format!("/v1/loans/{id}/schedule"), &token)
        .await
        .json();
    assert_eq!(schedule["projected"], false);
    let installments = schedule["installments"].as_array().unwrap();
    assert_eq!(installments.len(), 24);
    let principal: Decimal = installments.iter().map(|i| decimal(&i["principal"])).sum();
    assert_eq!(principal, Decimal::new(5_000_000_000, 2));
    assert_eq!(installments[23]["remaining_balance"], "0.00");
    assert_eq!(
        installments[0]["due_date"],
        paid_out
            .date_naive()
            .checked_add_months(chrono::Months::new(1))
            .unwrap()
            .to_string()
    );
}

#[tokio::test]
async fn a_customer_cannot_apply_for_read_or_cancel_another_customers_loan() {
    let app = TestApp::spawn().await;
    let a = app.approved_customer("CUSTA10", "210210210").await;
    let b = app.approved_customer("CUSTB10", "220220220").await;
    let loan_b = app.loan_for(b, "10000000").await;
    let id_b = loan_b.id;
    let token_a = app.customer(a);
    let before = app.loan_count().await;

    let for_b = app
        .apply(&token_a, json!({"customer_id": b, "product_code": "PERSONAL_STD", "amount": "10000000", "term_months": 12}))
        .await;
    for_b.problem(StatusCode::NOT_FOUND);
    app.get(&format!("/v1/loans/{id_b}"), &token_a)
        .await
        .problem(StatusCode::NOT_FOUND);
    app.get(&format!("/v1/loans/{id_b}/schedule"), &token_a)
        .await
        .problem(StatusCode::NOT_FOUND);
    app.get(&format!("/v1/loans/{id_b}/payments"), &token_a)
        .await
        .problem(StatusCode::NOT_FOUND);
    app.act(&token_a, &loan_b, "cancel")
        .await
        .problem(StatusCode::NOT_FOUND);
    for verb in ["approve", "reject", "disburse"] {
        app.act(&token_a, &loan_b, verb)
            .await
            .problem(StatusCode::FORBIDDEN);
    }
    let listed = app.get("/v1/loans", &token_a).await.json();
    assert_eq!(listed["data"], json!([]));
    let filtered = app
        .get(&format!("/v1/loans?customer_id={b}"), &token_a)
        .await
        .json();
    assert_eq!(filtered["data"], json!([]));

    assert_eq!(app.loan_count().await, before, "nothing written");
    let status = app
        .get(&format!("/v1/loans/{id_b}"), &app.staff())
        .await
        .json()["status"]
        .clone();
    assert_eq!(status, "APPLIED");
}

#[tokio::test]
async fn applications_are_checked_against_the_product_and_the_caller() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUST120", "120120120").await;
    app.ensure_products().await;
    let staff = app.staff();
    let body = |amount: &str, term: i32| json!({"customer_id": customer, "product_code": "PERSONAL_STD", "amount": amount, "term_months": term});

    let field = |r: &TestResponse| {
        r.problem(StatusCode::UNPROCESSABLE_ENTITY)["errors"][0]["field"].clone()
    };
    assert_eq!(
        field(&app.apply(&staff, body("1000.00", 24)).await),
        "amount"
    );
    assert_eq!(
        field(&app.apply(&staff, body("10000000", 61)).await),
        "term_months"
    );
    let unknown = app.apply(&staff, json!({"customer_id": customer, "product_code": "NOPE", "amount": "10000000", "term_months": 12})).await;
    assert_eq!(field(&unknown), "product_code");
    let nobody = app.apply(&staff, json!({"customer_id": Uuid::now_v7(), "product_code": "PERSONAL_STD", "amount": "10000000", "term_months": 12})).await;
    assert_eq!(field(&nobody), "customer_id");
    let missing = app
        .apply(
            &staff,
            json!({"product_code": "PERSONAL_STD", "amount": "10000000", "term_months": 12}),
        )
        .await;
    assert_eq!(field(&missing), "customer_id");
    let float = app.apply(&staff, json!({"customer_id": customer, "product_code": "PERSONAL_STD", "amount": 10000000.5, "term_months": 12})).await;
    float.problem(StatusCode::UNPROCESSABLE_ENTITY);
    let backdated_by_customer = app
        .apply(&app.customer(customer), json!({"product_code": "PERSONAL_STD", "amount": "10000000", "term_months": 12, "application_date": "2020-01-01T00:00:00Z"}))
        .await;
    assert_eq!(field(&backdated_by_customer), "application_date");
    let mut ancient = body("10000000", 12);
    ancient["application_date"] = json!("1899-12-31T23:59:59Z");
    assert_eq!(field(&app.apply(&staff, ancient).await), "application_date");
    for role in ["analyst", "etl"] {
        app.apply(&app.token(role, None), body("10000000", 12))
            .await
            .problem(StatusCode::FORBIDDEN);
    }
    assert_eq!(app.loan_count().await, 0);
}

async fn partition_of(app: &TestApp, loan: &Value) -> String {
    sqlx::query_scalar("SELECT tableoid::regclass::text FROM core.loans WHERE loan_id = $1")
        .bind(loan["loan_id"].as_str().unwrap().parse::<Uuid>().unwrap())
        .fetch_one(&app.owner)
        .await
        .unwrap()
}

#[tokio::test]
async fn backdated_applications_land_in_their_years_partition() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUST130", "130130130").await;
    app.ensure_products().await;
    let year = chrono::Utc::now().year() - 7;
    let old = app
        .apply(&app.staff(), json!({"customer_id": customer, "product_code": "PERSONAL_STD", "amount": "10000000", "term_months": 12, "application_date": format!("{year}-03-01T10:00:00Z")}))
        .await;
    assert_eq!(old.status, StatusCode::CREATED, "{}", old.text());
    assert_eq!(
        partition_of(&app, &old.json()).await,
        format!("core.loans_{year}")
    );
    assert!(old.json()["loan_number"]
        .as_str()
        .unwrap()
        .starts_with(&format!("LN{year}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_applications_into_a_year_without_a_partition_all_succeed() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUST140", "140140140").await;
    app.ensure_products().await;
    // Nine years back: inside the backdating window, and older than any partition made ahead.
    let year = chrono::Utc::now().year() - 9;
    let missing: Option<String> =
        sqlx::query_scalar(&format!("SELECT to_regclass('core.loans_{year}')::text"))
            .fetch_one(&app.owner)
            .await
            .unwrap();
    assert_eq!(missing, None);

    let staff = app.staff();
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (app, staff) = (app.clone(), staff.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"customer_id": customer, "product_code": "PERSONAL_STD", "amount": "10000000",
                              "term_months": 12, "application_date": format!("{year}-06-{:02}T12:00:00Z", 1 + i % 28)});
            let r = app.apply(&staff, body).await;
            (r.status, r.text())
        }));
    }
    for task in tasks {
        let (status, text) = task.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{text}");
    }
    let in_year = app
        .count(&format!("SELECT count(*) FROM core.loans_{year}"))
        .await;
    assert_eq!(in_year, 50);
    let numbers = app
        .count("SELECT count(DISTINCT loan_number) FROM core.loans")
        .await;
    assert_eq!(numbers, 50);
}

#[tokio::test]
async fn every_illegal_transition_is_409_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUST150", "150150150").await;
    let staff = app.staff();
    // A loan in each status the API can reach.
    let applied = app.loan_for(customer, "10000000").await;
    let approved = app.loan_for(customer, "10000000").await;
    app.act(&staff, &approved, "approve").await;
    let rejected = app.loan_for(customer, "10000000").await;
    app.act(&staff, &rejected, "reject").await;
    let cancelled = app.loan_for(customer, "10000000").await;
    app.act(&staff, &cancelled, "cancel").await;
    let disbursed = app.loan_for(customer, "10000000").await;
    app.act(&staff, &disbursed, "approve").await;
    app.act(&staff, &disbursed, "disburse").await;

    let illegal: [(&Value, &[&str]); 5] = [
        (&applied, &["disburse"]),
        (&approved, &["approve", "reject"]),
        (&rejected, &["approve", "reject", "disburse", "cancel"]),
        (&cancelled, &["approve", "reject", "disburse", "cancel"]),
        (&disbursed, &["approve", "reject", "disburse", "cancel"]),
    ];
    for (loan, verbs) in illegal {
        let id = loan["loan_id"].as_str().unwrap();
        let before = app.get(&format!("/v1/loans/{id}"), &staff).await.json();
        for verb in verbs {
            let response = app.act(&staff, loan, verb).await;
            let problem = response.problem(StatusCode::CONFLICT);
            assert!(
                problem["detail"].as_str().unwrap().contains(verb),
                "{problem}"
            );
        }
        let after = app.get(&format!("/v1/loans/{id}"), &staff).await.json();
        assert_eq!(before, after, "{id} changed");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM core.payments").await,
        1,
        "one disbursement only"
    );
}

#[tokio::test]
async fn approval_needs_the_customers_kyc_approved() {
    let app = TestApp::spawn().await;
    let pending = app.customer_id("CUST160", "160160160").await;
    let loan = app.loan_for(pending, "10000000").await;
    let problem = app
        .act(&app.staff(), &loan, "approve")
        .await
        .problem(StatusCode::CONFLICT);
    assert!(
        problem["detail"].as_str().unwrap().contains("KYC"),
        "{problem}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approve_and_a_cancel_racing_on_one_loan_have_exactly_one_winner() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let customer = app.approved_customer("CUST170", "170170170").await;
    for _ in 0..10 {
        let loan = app.loan_for(customer, "10000000").await;
        let approve = tokio::spawn({
            let (app, loan) = (app.clone(), loan.clone());
            async move { app.act(&app.staff(), &loan, "approve").await.status }
        });
        let cancel = tokio::spawn({
            let (app, loan) = (app.clone(), loan.clone());
            async move {
                app.act(&app.customer(customer), &loan, "cancel")
                    .await
                    .status
            }
        });
        let (approve, cancel) = (approve.await.unwrap(), cancel.await.unwrap());
        let final_status = app
            .get(&format!("/v1/loans/{}", loan.id), &app.staff())
            .await
            .json()["status"]
            .clone();
        match (approve, cancel) {
            (StatusCode::OK, StatusCode::CONFLICT) => assert_eq!(final_status, "APPROVED"),
            (StatusCode::CONFLICT, StatusCode::OK) => assert_eq!(final_status, "CANCELLED"),
            other => panic!("both or neither won: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_zero_rate_loan_has_no_interest_and_exact_principal() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUST180", "180180180").await;
    app.ensure_products().await;
    let loan = app
        .apply(&app.staff(), json!({"customer_id": customer, "product_code": "ZERO_RATE", "amount": "1000000.00", "term_months": 7}))
        .await
        .json();
    let schedule = app
        .get(
            &format!("/v1/loans/{}/schedule", loan["loan_id"].as_str().unwrap()),
            &app.staff(),
        )
        .await
        .json();
    assert_eq!(schedule["projected"], true);
    assert_eq!(schedule["total_interest"], "0.00");
    let installments = schedule["installments"].as_array().unwrap();
    let principal: Decimal = installments.iter().map(|i| decimal(&i["principal"])).sum();
    assert_eq!(principal, Decimal::new(100_000_000, 2));
    assert_eq!(installments[0]["principal"], "142857.14");
    assert_eq!(
        installments[6]["principal"], "142857.16",
        "the last absorbs the rounding"
    );
}

#[tokio::test]
async fn loans_list_by_filters_newest_first_with_a_cursor() {
    let app = TestApp::spawn().await;
    let a = app.approved_customer("CUST190", "190190190").await;
    let b = app.approved_customer("CUST191", "191191191").await;
    app.ensure_products().await;
    let mut ids = Vec::new();
    for (i, year) in [2018, 2020, 2022, 2024].into_iter().enumerate() {
        let customer = if i % 2 == 0 { a } else { b };
        let loan = app
            .apply(&app.staff(), json!({"customer_id": customer, "product_code": "BUSINESS_STD", "amount": "50000000", "term_months": 24, "application_date": format!("{year}-02-01T00:00:00Z")}))
            .await
            .json();
        ids.push(loan["loan_id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut path = "/v1/loans?limit=3".to_owned();
    loop {
        let page = app.get(&path, &app.staff()).await.json();
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["loan_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/loans?limit=3&cursor={c}"),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest application first, every loan once");

    let ranged = app
        .get("/v1/loans?from=2019-01-01&to=2022-12-31", &app.staff())
        .await
        .json();
    assert_eq!(ranged["data"].as_array().unwrap().len(), 2);
    let of_a = app
        .get(
            &format!("/v1/loans?customer_id={a}&product_type=BUSINESS_LOAN&status=APPLIED"),
            &app.staff(),
        )
        .await
        .json();
    assert_eq!(of_a["data"].as_array().unwrap().len(), 2);
    app.get("/v1/loans?status=LOST", &app.staff())
        .await
        .problem(StatusCode::BAD_REQUEST);
    app.get("/v1/loans?from=2022-01-01&to=2020-01-01", &app.staff())
        .await
        .problem(StatusCode::BAD_REQUEST);
}

/// The high-risk listing pages riskiest customers first (unrated last), each customer's loans
/// together in id order, with nothing repeated or skipped across pages, even when customers'
/// loans were made interleaved.
#[tokio::test]
async fn high_risk_loans_page_riskiest_customers_first_a_customer_at_a_time() {
    let app = TestApp::spawn().await;
    let mut customers = Vec::new();
    for (code, id_number, score) in [
        ("CUST401", "401401401", Some(720)),
        ("CUST402", "402402402", Some(560)),
        ("CUST403", "403403403", None),
        ("CUST404", "404404404", Some(560)),
    ] {
        let customer = app.approved_customer(code, id_number).await;
        sqlx::query("UPDATE core.customers SET credit_score = $2 WHERE customer_id = $1")
            .bind(customer)
            .bind(score)
            .execute(&app.owner)
            .await
            .unwrap();
        customers.push((score.unwrap_or(1000), customer));
    }
    let mut expected = Vec::new();
    for amount in ["10000000", "20000000"] {
        for &(score, customer) in customers.iter().rev() {
            let loan = app.loan_for(customer, amount).await;
            app.act(&app.staff(), &loan, "approve").await;
            let loan_id: Uuid = loan["loan_id"].as_str().unwrap().parse().unwrap();
            expected.push((score, customer, loan_id));
        }
    }
    expected.sort();
    assert_eq!(walk_high_risk(&app, "").await, expected);
    for (category, score) in [("HIGH_RISK", 560), ("LOW_RISK", 720), ("UNRATED", 1000)] {
        let only: Vec<_> = expected.iter().filter(|e| e.0 == score).cloned().collect();
        assert_eq!(
            walk_high_risk(&app, &format!("&risk_category={category}")).await,
            only,
            "{category}"
        );
    }
    assert!(walk_high_risk(&app, "&risk_category=MEDIUM_RISK")
        .await
        .is_empty());
    app.get(
        "/v1/analytics/high-risk-loans?risk_category=SHAKY",
        &app.staff(),
    )
    .await
    .problem(StatusCode::BAD_REQUEST);
}

/// Every page of the high-risk listing, 3 loans a page: (score or 1000, customer, loan).
async fn walk_high_risk(app: &TestApp, filter: &str) -> Vec<(i32, Uuid, Uuid)> {
    let mut seen = Vec::new();
    let mut path = format!("/v1/analytics/high-risk-loans?limit=3{filter}");
    loop {
        let page = app.get(&path, &app.staff()).await.json();
        for row in page["data"].as_array().unwrap() {
            seen.push((
                row["credit_score"].as_i64().map_or(1000, |s| s as i32),
                row["customer_id"]
                    .as_str()
                    .unwrap()
                    .parse::<Uuid>()
                    .unwrap(),
                row["loan_id"].as_str().unwrap().parse::<Uuid>().unwrap(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!("/v1/analytics/high-risk-loans?limit=3{filter}&cursor={cursor}")
            }
            None => return seen,
        }
    }
}

#[tokio::test]
async fn portfolio_and_high_risk_views_follow_the_seed_queries() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUST200", "200200200").await;
    sqlx::query("UPDATE core.customers SET credit_score = 580 WHERE customer_id = $1")
        .bind(customer)
        .execute(&app.owner)
        .await
        .unwrap();
    let first = app.loan_for(customer, "10000000").await;
    app.loan_for(customer, "20000000").await;
    app.act(&app.staff(), &first, "approve").await;

    let portfolio = app
        .get(
            &format!("/v1/customers/{customer}/portfolio"),
            &app.token("analyst", None),
        )
        .await
        .json();
    assert_eq!(portfolio["total_loans"], 2);
    assert_eq!(
        portfolio["total_borrowed"], "0.00",
        "nothing is paid out yet"
    );
    assert_eq!(portfolio["average_interest_rate"], "0.1250");
    assert_eq!(portfolio["product_types"], json!(["PERSONAL_LOAN"]));

    let risky = app
        .get("/v1/analytics/high-risk-loans", &app.staff())
        .await
        .json();
    let data = risky["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "only approved or disbursed loans");
    assert_eq!(data[0]["risk_category"], "HIGH_RISK");
    assert_eq!(data[0]["loan_id"], first["loan_id"]);

    app.get("/v1/analytics/high-risk-loans", &app.customer(customer))
        .await
        .problem(StatusCode::FORBIDDEN);
    app.get(
        &format!("/v1/customers/{}/portfolio", Uuid::now_v7()),
        &app.staff(),
    )
    .await
    .problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn staff_manage_products_and_everyone_reads_them() {
    let app = TestApp::spawn().await;
    app.ensure_products().await;
    let listed = app
        .get("/v1/products", &app.customer(Uuid::now_v7()))
        .await
        .json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 3);

    let body = json!({"product_code": "AUTO_STD", "name": "Car loan", "product_type": "AUTO_LOAN", "min_amount": "50000000",
                      "max_amount": "2000000000", "min_term_months": 12, "max_term_months": 84, "annual_interest_rate": "0.0990"});
    app.json(
        Method::POST,
        "/v1/products",
        &app.customer(Uuid::now_v7()),
        &body,
    )
    .await
    .problem(StatusCode::FORBIDDEN);
    let created = app
        .json(Method::POST, "/v1/products", &app.staff(), &body)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    // A new product's contract terms: installments before charges, no credit for overpayment,
    // an arrears tolerance of one installment multiple, version 1; the market's conventions
    // (actual days over 365, whole đồng).
    let terms = |p: &Value| {
        (
            p["payment_allocation"].clone(),
            p["overpayment"].clone(),
            p["arrears_tolerance"].clone(),
            p["terms_version"].clone(),
        )
    };
    assert_eq!(
        terms(&created.json()),
        (
            json!("INSTALLMENTS_FIRST"),
            json!("REFUSE"),
            json!("1.00"),
            json!(1)
        )
    );
    let conventions = |p: &Value| {
        [
            "day_count",
            "amortization",
            "interest_method",
            "frequency",
            "currency",
            "currency_digits",
            "installment_multiple",
        ]
        .map(|f| p[f].clone())
    };
    assert_eq!(
        conventions(&created.json()),
        [
            json!("ACTUAL_365_FIXED"),
            json!("ANNUITY"),
            json!("DECLINING_BALANCE"),
            json!("MONTHLY"),
            json!("VND"),
            json!(0),
            json!("1.00")
        ]
    );
    // Amounts the currency cannot hold, and an unknown or unsupported currency, are 422.
    for (field, value) in [
        ("min_amount", json!("50000000.50")),
        ("installment_multiple", json!("0.50")),
        ("currency", json!("vnd")),
        ("currency", json!("KWD")),
        ("currency_digits", json!(3)),
    ] {
        let mut bad = body.clone();
        bad["product_code"] = json!("AUTO_Y");
        bad[field] = value;
        let refused = app
            .json(Method::POST, "/v1/products", &app.staff(), &bad)
            .await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}: {}",
            refused.text()
        );
        assert_eq!(
            refused.json()["errors"][0]["field"],
            field,
            "{}",
            refused.text()
        );
    }
    app.json(Method::POST, "/v1/products", &app.staff(), &body)
        .await
        .problem(StatusCode::CONFLICT);

    let mut bad = body.clone();
    bad["product_code"] = json!("AUTO_X");
    bad["max_amount"] = json!("1000");
    app.json(Method::POST, "/v1/products", &app.staff(), &bad)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);

    let retire = json!({"active": false});
    let updated = app
        .json_with(
            Method::PATCH,
            "/v1/products/AUTO_STD",
            &app.staff(),
            &retire,
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text());
    assert_eq!(updated.json()["active"], false);
    // Retiring the product changed no term: the same terms version. Changing a term makes the
    // next one, which is what loans approved from then on are pinned to.
    assert_eq!(updated.json()["terms_version"], 1);
    let stricter = app
        .json_with(
            Method::PATCH,
            "/v1/products/AUTO_STD",
            &app.staff(),
            &json!({"overpayment": "CREDIT", "arrears_tolerance": "1000"}),
            &[("if-match", "\"2\"")],
        )
        .await;
    assert_eq!(stricter.status, StatusCode::OK, "{}", stricter.text());
    assert_eq!(
        terms(&stricter.json()),
        (
            json!("INSTALLMENTS_FIRST"),
            json!("CREDIT"),
            json!("1000.00"),
            json!(2)
        )
    );
    assert_eq!(
        app.count("SELECT count(*) FROM core.loan_terms WHERE product_code = 'AUTO_STD'")
            .await,
        2
    );
    app.json_with(
        Method::PATCH,
        "/v1/products/AUTO_STD",
        &app.staff(),
        &retire,
        &[("if-match", "\"1\"")],
    )
    .await
    .problem(StatusCode::PRECONDITION_FAILED);
    let listed = app.get("/v1/products", &app.staff()).await.json();
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        3,
        "retired products are hidden by default"
    );

    let customer = app.approved_customer("CUST210", "210000210").await;
    let applied = app
        .apply(&app.staff(), json!({"customer_id": customer, "product_code": "AUTO_STD", "amount": "60000000", "term_months": 24}))
        .await;
    applied.problem(StatusCode::UNPROCESSABLE_ENTITY);
}
