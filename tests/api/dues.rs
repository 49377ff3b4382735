//! What is due: installments with their status on the business day, and a customer's summary.

use axum::http::StatusCode;
use chrono::NaiveDate;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TestApp, TestLoan};

/// A six-month loan whose installments stand, on the business day: 1 overdue (due 30 days ago,
/// past the product's 5 grace days), 2 due (2 days ago), 3 partly paid ahead (due in 10 days),
/// 4 paid, 5 and 6 upcoming. (Dates and payments set below the API: a status test.)
async fn loan_in_every_state(app: &TestApp, customer: Uuid) -> (TestLoan, NaiveDate) {
    let loan = app
        .disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 6)
        .await;
    let today: NaiveDate = sqlx::query_scalar("SELECT core.business_date(now())")
        .fetch_one(&app.owner)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE core.loan_installments SET \
             due_date = CASE installment_number WHEN 1 THEN $2::date - 30 WHEN 2 THEN $2::date - 2 \
                             WHEN 3 THEN $2::date + 10 ELSE due_date END, \
             principal_paid = CASE installment_number WHEN 3 THEN 1000 WHEN 4 THEN principal_due ELSE 0 END, \
             interest_posted = CASE installment_number WHEN 4 THEN interest_due ELSE interest_posted END, \
             interest_paid = CASE installment_number WHEN 4 THEN interest_due ELSE 0 END \
         WHERE loan_id = $1::uuid",
    )
    .bind(loan.id)
    .bind(today)
    .execute(&app.owner)
    .await
    .unwrap();
    (loan, today)
}

#[tokio::test]
async fn installments_show_what_is_paid_and_due_on_the_business_day() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("DUE001", "330101123456").await;
    let (loan, today) = loan_in_every_state(&app, customer).await;
    let loan_id = loan.id;
    let path = format!("/v1/loans/{loan_id}/installments");
    let mine = app.get(&path, &app.customer(customer)).await;
    assert_eq!(mine.status, StatusCode::OK, "{}", mine.text());
    let body = mine.json();
    assert_eq!(body["business_date"], today.to_string());
    let statuses: Vec<&str> = body["installments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "OVERDUE",
            "DUE",
            "PARTIALLY_PAID",
            "PAID",
            "UPCOMING",
            "UPCOMING"
        ]
    );
    let third = &body["installments"][2];
    assert_eq!(third["principal_paid"], "1000.00");
    let due: f64 = third["principal_due"]
        .as_str()
        .unwrap()
        .parse::<f64>()
        .unwrap()
        + third["interest_due"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap();
    assert_eq!(
        third["remaining"].as_str().unwrap().parse::<f64>().unwrap(),
        due - 1000.0
    );
    assert_eq!(body["installments"][3]["remaining"], "0.00");

    // The schedule shows the same stored installments.
    let schedule = app
        .get(&format!("/v1/loans/{loan_id}/schedule"), &app.staff())
        .await
        .json();
    assert_eq!(
        schedule["installments"][0]["due_date"],
        body["installments"][0]["due_date"]
    );

    assert_eq!(app.get(&path, &app.staff()).await.status, StatusCode::OK);
    let other = app.approved_customer("DUE002", "330101123457").await;
    assert_eq!(
        app.get(&path, &app.customer(other)).await.status,
        StatusCode::NOT_FOUND
    );
    let nowhere = format!("/v1/loans/{}/installments", Uuid::now_v7());
    assert_eq!(
        app.get(&nowhere, &app.staff()).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_summary_gives_next_payment_due_now_arrears_and_outstanding() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("DUE003", "330101123458").await;
    let (loan, today) = loan_in_every_state(&app, customer).await;
    let installments = app
        .get(&format!("/v1/loans/{}/installments", loan.id), &app.staff())
        .await
        .json();
    let remaining = |n: usize| -> f64 {
        installments["installments"][n]["remaining"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let money = |v: &Value| -> f64 { v.as_str().unwrap().parse().unwrap() };

    let mine = app.get("/v1/me/summary", &app.customer(customer)).await;
    assert_eq!(mine.status, StatusCode::OK, "{}", mine.text());
    let summary = mine.json();
    assert_eq!(summary["customer_id"], customer.to_string());
    assert_eq!(summary["active_loans"], 1);
    assert_eq!(money(&summary["arrears"]), remaining(0));
    assert_eq!(
        money(&summary["amount_due_now"]),
        remaining(0) + remaining(1)
    );
    let next = &summary["next_payment"];
    assert_eq!(next["installment_number"], 3);
    assert_eq!(
        next["due_date"],
        (today + chrono::Days::new(10)).to_string()
    );
    assert_eq!(money(&next["amount"]), remaining(2));
    let stored: rust_decimal::Decimal = sqlx::query_scalar(
        "SELECT coalesce(principal_outstanding, 0) + coalesce(interest_outstanding, 0) \
         + fees_outstanding + penalties_outstanding FROM core.loans WHERE customer_id = $1",
    )
    .bind(customer)
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(summary["total_outstanding"], format!("{stored:.2}"));

    // Staff see any customer's; roles and unknown customers are refused.
    let staff = app
        .get(&format!("/v1/customers/{customer}/summary"), &app.staff())
        .await;
    assert_eq!(staff.json(), summary);
    let unknown = app
        .get(
            &format!("/v1/customers/{}/summary", Uuid::now_v7()),
            &app.staff(),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let as_customer = app
        .get(
            &format!("/v1/customers/{customer}/summary"),
            &app.customer(customer),
        )
        .await;
    assert_eq!(as_customer.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.get("/v1/me/summary", &app.staff()).await.status,
        StatusCode::FORBIDDEN
    );

    // A customer without loans: nothing due, no next payment.
    let idle = app.approved_customer("DUE004", "330101123459").await;
    let empty = app.get("/v1/me/summary", &app.customer(idle)).await.json();
    assert_eq!(empty["active_loans"], 0);
    assert_eq!(empty["amount_due_now"], "0.00");
    assert!(empty["next_payment"].is_null());
}
