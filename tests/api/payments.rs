use std::sync::Arc;

use axum::http::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{TestApp, TestLoan};

/// Checks that the live allocations add up to what completed repayments brought in; returns it.
async fn allocations_match_repayments(app: &TestApp) -> Decimal {
    let (allocated, completed): (Decimal, Decimal) = sqlx::query_as(
        "SELECT (SELECT coalesce(sum(amount), 0) FROM core.payment_allocations WHERE reversed_at IS NULL), \
                (SELECT coalesce(sum(amount), 0) FROM core.payments WHERE payment_type = 'REPAYMENT' AND status = 'COMPLETED')",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(allocated, completed);
    completed
}

fn repayment(loan: &Value, amount: &str) -> Value {
    json!({"loan_id": loan["loan_id"], "payment_type": "REPAYMENT", "amount": amount, "payment_method": "CASH"})
}

pub fn key() -> String {
    Uuid::now_v7().to_string()
}

pub fn money(v: &Value) -> Decimal {
    v.as_str()
        .unwrap_or_else(|| panic!("{v} is not money"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_branch_flow_pays_fees_then_interest_then_principal_closes_and_reverses_exactly() {
    let app = TestApp::spawn().await;
    app.ensure_products().await;
    sqlx::raw_sql(
        "UPDATE core.products SET payment_allocation = 'FEES_FIRST' WHERE product_code = 'PERSONAL_STD'",
    )
    .execute(&app.owner)
    .await
    .unwrap();
    let customer = app.approved_customer("CUST500", "500500500").await;
    // 12,000,000 at 12.5% over 6 months.
    let loan = app
        .disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 6)
        .await;
    assert_eq!(loan["principal_outstanding"], "12000000.00");
    // Interest is receivable only as it falls due: none on the day of disbursement.
    assert_eq!(loan["interest_outstanding"], "0.00");
    let first_interest = Decimal::new(12_500_000, 2); // 12,000,000 × 0.125 / 12

    let fee = app
        .pay(
            &app.staff(),
            &key(),
            &json!({"loan_id": loan["loan_id"], "payment_type": "FEE", "amount": "50000"}),
        )
        .await;
    assert_eq!(fee.status, StatusCode::CREATED, "{}", fee.text());
    assert_eq!(app.loan(&loan).await["fees_outstanding"], "50000.00");

    let paid = app
        .pay(&app.staff(), &key(), &repayment(&loan, "1000000.00"))
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text());
    let paid = paid.json();
    assert_eq!(
        (paid["status"].as_str(), paid["channel"].as_str()),
        (Some("COMPLETED"), Some("BRANCH"))
    );
    let after = app.loan(&loan).await;
    assert_eq!(after["fees_outstanding"], "0.00", "fees first");
    // Then the first installment's interest, paid ahead of its due date: the payment made it
    // receivable and paid it, so none is left receivable.
    assert_eq!(after["interest_outstanding"], "0.00", "then interest");
    let principal_paid = Decimal::new(100_000_000, 2) - Decimal::new(5_000_000, 2) - first_interest;
    assert_eq!(
        money(&after["principal_outstanding"]),
        Decimal::new(1_200_000_000, 2) - principal_paid
    );
    assert_eq!(after["total_paid"], "1000000.00");
    assert!(after["next_due_date"].is_string());
    assert_eq!(after["days_past_due"], 0);

    // Pay off the rest: the loan closes in the same transaction.
    let rest = money(&after["principal_outstanding"]) + money(&after["interest_outstanding"]);
    let payoff = app
        .pay(&app.staff(), &key(), &repayment(&loan, &rest.to_string()))
        .await;
    assert_eq!(payoff.status, StatusCode::CREATED, "{}", payoff.text());
    let closed = app.loan(&loan).await;
    assert_eq!(closed["status"], "CLOSED");
    assert!(closed["closed_at"].is_string());
    assert_eq!(
        (
            closed["principal_outstanding"].as_str(),
            closed["interest_outstanding"].as_str()
        ),
        (Some("0.00"), Some("0.00"))
    );
    app.pay(&app.staff(), &key(), &repayment(&loan, "1.00"))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    // Nor does a fee reopen it: a closed loan takes no charges.
    let mut fee = repayment(&loan, "10.00");
    fee["payment_type"] = json!("FEE");
    app.pay(&app.staff(), &key(), &fee)
        .await
        .problem(StatusCode::CONFLICT);
    let still = app.loan(&loan).await;
    assert_eq!(
        (still["status"].as_str(), still["fees_outstanding"].as_str()),
        (Some("CLOSED"), Some("0.00"))
    );

    // Reversing the payoff undoes exactly what it did, and reopens the loan.
    let payoff_id = payoff.json()["payment_id"].as_str().unwrap().to_owned();
    let reversed = app
        .json(
            Method::POST,
            &format!("/v1/payments/{payoff_id}/reverse"),
            &app.staff(),
            &json!({"reason": "cheque bounced"}),
        )
        .await;
    assert_eq!(reversed.status, StatusCode::OK, "{}", reversed.text());
    assert_eq!(reversed.json()["status"], "REVERSED");
    let reopened = app.loan(&loan).await;
    assert_eq!(reopened["status"], "DISBURSED");
    for field in [
        "principal_outstanding",
        "interest_outstanding",
        "fees_outstanding",
        "total_paid",
        "next_due_date",
    ] {
        assert_eq!(reopened[field], after[field], "{field}");
    }
    app.json(
        Method::POST,
        &format!("/v1/payments/{payoff_id}/reverse"),
        &app.staff(),
        &json!({}),
    )
    .await
    .problem(StatusCode::CONFLICT);

    // The ledger adds up in SQL too.
    allocations_match_repayments(&app).await;
}

#[tokio::test]
async fn the_mobile_flow_waits_for_staff_to_confirm() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUST510", "510510510").await;
    let loan = app
        .disbursed_loan(customer, "ZERO_RATE", "1000000.00", 10)
        .await;
    let token = app.customer(customer);

    let started = app
        .pay(&token, &key(), &repayment(&loan, "100000.00"))
        .await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.text());
    let payment = started.json();
    assert_eq!(
        (payment["status"].as_str(), payment["channel"].as_str()),
        (Some("PENDING"), Some("MOBILE_APP"))
    );
    assert_eq!(
        app.loan(&loan).await["total_paid"],
        "0.00",
        "nothing applied yet"
    );
    let path = |verb: &str| {
        format!(
            "/v1/payments/{}/{verb}",
            payment["payment_id"].as_str().unwrap()
        )
    };

    for verb in ["confirm", "reverse", "fail"] {
        app.json(Method::POST, &path(verb), &token, &json!({}))
            .await
            .problem(StatusCode::FORBIDDEN);
    }
    let fee = app
        .pay(
            &token,
            &key(),
            &json!({"loan_id": loan["loan_id"], "payment_type": "FEE", "amount": "10"}),
        )
        .await;
    fee.problem(StatusCode::FORBIDDEN);
    app.json(Method::POST, &path("reverse"), &app.staff(), &json!({}))
        .await
        .problem(StatusCode::CONFLICT);

    let confirmed = app
        .json(Method::POST, &path("confirm"), &app.staff(), &json!({}))
        .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.text());
    assert_eq!(confirmed.json()["status"], "COMPLETED");
    assert_eq!(app.loan(&loan).await["principal_outstanding"], "900000.00");
    app.json(Method::POST, &path("confirm"), &app.staff(), &json!({}))
        .await
        .problem(StatusCode::CONFLICT);
    app.json(Method::POST, &path("fail"), &app.staff(), &json!({}))
        .await
        .problem(StatusCode::CONFLICT);

    let seen = app
        .get(
            &format!("/v1/payments/{}", payment["payment_id"].as_str().unwrap()),
            &token,
        )
        .await;
    assert_eq!(seen.json()["status"], "COMPLETED");

    let failing = app
        .pay(&token, &key(), &repayment(&loan, "5000.00"))
        .await
        .json();
    let failed = app
        .json(
            Method::POST,
            &format!(
                "/v1/payments/{}/fail",
                failing["payment_id"].as_str().unwrap()
            ),
            &app.staff(),
            &json!({"reason": "card declined"}),
        )
        .await;
    assert_eq!(failed.json()["status"], "FAILED");
    assert_eq!(failed.json()["status_reason"], "card declined");
    assert_eq!(app.loan(&loan).await["principal_outstanding"], "900000.00");
}

#[tokio::test]
async fn a_customer_cannot_pay_into_another_customers_loan() {
    let app = TestApp::spawn().await;
    let a = app.approved_customer("CUST520", "520520520").await;
    let b = app.approved_customer("CUST521", "521521521").await;
    let loan_b = app.disbursed_loan(b, "ZERO_RATE", "1000000.00", 10).await;
    let before = app.count("SELECT count(*) FROM core.payments").await;
    app.pay(&app.customer(a), &key(), &repayment(&loan_b, "1000.00"))
        .await
        .problem(StatusCode::NOT_FOUND);
    assert_eq!(
        app.count("SELECT count(*) FROM core.payments").await,
        before
    );
    let listed = app
        .get(
            &format!("/v1/payments?loan_id={}", loan_b.id),
            &app.customer(a),
        )
        .await
        .json();
    assert_eq!(listed["data"], json!([]));
}

#[tokio::test]
async fn idempotency_keys_replay_the_first_response_and_refuse_a_different_body() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUST530", "530530530").await;
    let loan = app
        .disbursed_loan(customer, "ZERO_RATE", "1000000.00", 10)
        .await;
    let staff = app.staff();

    app.json(
        Method::POST,
        "/v1/payments",
        &staff,
        &repayment(&loan, "100.00"),
    )
    .await
    .problem(StatusCode::BAD_REQUEST);

    let first = app.pay(&staff, "key-1", &repayment(&loan, "100.00")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = app.pay(&staff, "key-1", &repayment(&loan, "100.00")).await;
    assert_eq!((again.status, &again.body), (first.status, &first.body));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let different = app.pay(&staff, "key-1", &repayment(&loan, "200.00")).await;
    different.problem(StatusCode::UNPROCESSABLE_ENTITY);

    // Errors are stored too: a refused overpayment is refused the same way on retry.
    let too_much = app
        .pay(&staff, "key-2", &repayment(&loan, "5000000.00"))
        .await;
    let retried = app
        .pay(&staff, "key-2", &repayment(&loan, "5000000.00"))
        .await;
    too_much.problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        (retried.status, &retried.body),
        (too_much.status, &too_much.body)
    );

    // Keys belong to their caller: another caller's "key-1" is a new key.
    let other_staff = app.token("admin", None);
    assert_eq!(
        app.pay(&other_staff, "key-1", &repayment(&loan, "100.00"))
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.count("SELECT count(*) FROM core.payments WHERE payment_type = 'REPAYMENT'")
            .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_repayments_where_ten_fit_complete_exactly_ten() {
    let app = Arc::new(TestApp::spawn().await);
    let customer = app.approved_customer("CUST550", "550550550").await;
    // Interest-free: 1,000,000 owed in all, so exactly ten repayments of 100,000 fit.
    let loan = app
        .disbursed_loan(customer, "ZERO_RATE", "1000000.00", 10)
        .await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (app, body) = (app.clone(), repayment(&loan, "100000.00"));
            tokio::spawn(async move { app.pay(&app.staff(), &key(), &body).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNPROCESSABLE_ENTITY)
        .count();
    assert_eq!((created, refused), (10, 40), "{statuses:?}");
    let after = app.loan(&loan).await;
    assert_eq!(after["status"], "CLOSED");
    assert_eq!(after["principal_outstanding"], "0.00");
    assert_eq!(after["total_paid"], "1000000.00");
    let completed = app.count("SELECT count(*) FROM core.payments WHERE payment_type = 'REPAYMENT' AND status = 'COMPLETED'").await;
    assert_eq!(completed, 10);
}

#[tokio::test]
async fn a_backdated_payment_lands_in_its_months_partition_and_a_month_list_reads_only_it() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUST560", "560560560").await;
    app.ensure_products().await;
    let loan = app
        .apply(&app.staff(), json!({"customer_id": customer, "product_code": "ZERO_RATE", "amount": "1000000", "term_months": 10, "application_date": "2021-01-10T09:00:00Z"}))
        .await
        .json();
    app.act(&app.staff(), &loan, "approve").await;
    app.act(&app.staff(), &loan, "disburse").await;
    // The API pays a loan out now; this one stands as if paid out in February 2021, before the
    // backdated repayment, which may not precede its disbursement.
    sqlx::query(
        "UPDATE core.loans SET disbursement_date = '2021-02-01T10:00:00Z' WHERE loan_id = $1::uuid",
    )
    .bind(loan["loan_id"].as_str().unwrap())
    .execute(&app.owner)
    .await
    .unwrap();
    let missing: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('core.payments_2021_03')::text")
            .fetch_one(&app.owner)
            .await
            .unwrap();
    assert_eq!(missing, None);

    let mut body = repayment(&loan, "1000.00");
    body["payment_date"] = json!("2021-03-15T10:00:00Z");
    let paid = app.pay(&app.staff(), &key(), &body).await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text());
    let partition: String = sqlx::query_scalar(
        "SELECT tableoid::regclass::text FROM core.payments WHERE payment_id = $1::uuid",
    )
    .bind(paid.json()["payment_id"].as_str().unwrap())
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(partition, "core.payments_2021_03");

    let listed = app
        .get("/v1/payments?from=2021-03-01&to=2021-03-31", &app.staff())
        .await
        .json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);

    // The same statement the list runs, explained: one partition scanned.
    let from = "2021-03-01T00:00:00Z".parse().unwrap();
    let before = "2021-04-01T00:00:00Z".parse().unwrap();
    let filter = lakehouse_api::api::payments::repo::ListFilter {
        loan_id: None,
        customer_id: None,
        status: None,
        payment_type: None,
        client_reference: None,
        transaction_id: None,
        from: Some(from),
        before: Some(before),
        after: None,
        fetch: 51,
    };
    let mut query = lakehouse_api::api::payments::repo::list_query(&filter);
    let sql = format!("EXPLAIN (ANALYZE, FORMAT JSON) {}", query.sql());
    let plan: Value = sqlx::query_scalar(&sql)
        .bind(from)
        .bind(before)
        .fetch_one(&app.owner)
        .await
        .unwrap();
    let text = plan.to_string();
    let partitions: std::collections::BTreeSet<&str> = text
        .split("\"Relation Name\":\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    assert_eq!(
        partitions.into_iter().collect::<Vec<_>>(),
        ["payments_2021_03"],
        "{text}"
    );
    let _ = query.build();

    let future = app.pay(&app.staff(), &key(), &json!({"loan_id": loan["loan_id"], "payment_type": "REPAYMENT", "amount": "1.00", "payment_date": "2099-01-01T00:00:00Z"})).await;
    future.problem(StatusCode::UNPROCESSABLE_ENTITY);
    let before_loan = app.pay(&app.staff(), &key(), &json!({"loan_id": loan["loan_id"], "payment_type": "REPAYMENT", "amount": "1.00", "payment_date": "2020-12-01T00:00:00Z"})).await;
    before_loan.problem(StatusCode::UNPROCESSABLE_ENTITY);
}

/// A small deterministic generator, so the sequence can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// Runs a seeded random sequence of repayments, fees and reversals on `loan`; returns its final
/// balances.
async fn random_sequence(app: &TestApp, loan: &Value, seed: u64) -> TestLoan {
    let mut rng = Lcg(seed);
    let mut completed: Vec<String> = Vec::new();
    for _ in 0..25 {
        match rng.next(4) {
            0 | 1 => {
                let amount = Decimal::new(1 + rng.next(40_000_000) as i64, 2);
                let r = app
                    .pay(&app.staff(), &key(), &repayment(loan, &amount.to_string()))
                    .await;
                assert!(
                    r.status == StatusCode::CREATED || r.status == StatusCode::UNPROCESSABLE_ENTITY,
                    "{}",
                    r.text()
                );
                if r.status == StatusCode::CREATED {
                    completed.push(r.json()["payment_id"].as_str().unwrap().to_owned());
                }
            }
            2 => {
                let amount = Decimal::new(1 + rng.next(2_000_000) as i64, 2);
                let r = app.pay(&app.staff(), &key(), &json!({"loan_id": loan["loan_id"], "payment_type": "FEE", "amount": amount.to_string()})).await;
                assert_eq!(r.status, StatusCode::CREATED);
                completed.push(r.json()["payment_id"].as_str().unwrap().to_owned());
            }
            _ if !completed.is_empty() => {
                let id = completed.remove(rng.next(completed.len() as u64) as usize);
                let r = app
                    .json(
                        Method::POST,
                        &format!("/v1/payments/{id}/reverse"),
                        &app.staff(),
                        &json!({}),
                    )
                    .await;
                assert!(
                    r.status == StatusCode::OK || r.status == StatusCode::CONFLICT,
                    "{}",
                    r.text()
                );
            }
            _ => {}
        }
        let now = app.loan(loan).await;
        for field in [
            "principal_outstanding",
            "interest_outstanding",
            "fees_outstanding",
            "total_paid",
        ] {
            assert!(
                money(&now[field]) >= Decimal::ZERO,
                "{field} went negative: {now}"
            );
        }
    }
    app.loan(loan).await
}

#[tokio::test]
async fn random_sequences_keep_the_books_balanced_and_replay_identically() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUST570", "570570570").await;
    let first = app
        .disbursed_loan(customer, "PERSONAL_STD", "6000000.00", 12)
        .await;
    let second = app
        .disbursed_loan(customer, "PERSONAL_STD", "6000000.00", 12)
        .await;
    let a = random_sequence(&app, &first, 7).await;
    let b = random_sequence(&app, &second, 7).await;
    for field in [
        "status",
        "principal_outstanding",
        "interest_outstanding",
        "fees_outstanding",
        "total_paid",
        "next_due_date",
    ] {
        assert_eq!(a[field], b[field], "{field}");
    }
    let completed = allocations_match_repayments(&app).await;
    let total_paid: Decimal = sqlx::query_scalar("SELECT sum(total_paid) FROM core.loans")
        .fetch_one(&app.owner)
        .await
        .unwrap();
    assert_eq!(total_paid, completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repayments_reversals_and_loan_moves_on_one_loan_never_deadlock() {
    let app = Arc::new(TestApp::spawn().await);
    let customer = app.approved_customer("CUST580", "580580580").await;
    let loan = app
        .disbursed_loan(customer, "PERSONAL_STD", "20000000.00", 24)
        .await;
    let mut earlier = Vec::new();
    for _ in 0..10 {
        let r = app
            .pay(&app.staff(), &key(), &repayment(&loan, "100000.00"))
            .await;
        earlier.push(r.json()["payment_id"].as_str().unwrap().to_owned());
    }
    let mut tasks = Vec::new();
    for i in 0..30 {
        let (app, loan) = (app.clone(), loan.clone());
        let reverse = earlier.get(i / 3).cloned().filter(|_| i % 3 == 1);
        tasks.push(tokio::spawn(async move {
            match (i % 3, reverse) {
                (1, Some(id)) => {
                    app.json(
                        Method::POST,
                        &format!("/v1/payments/{id}/reverse"),
                        &app.staff(),
                        &json!({}),
                    )
                    .await
                    .status
                }
                (2, _) => app.act(&app.staff(), &loan, "cancel").await.status,
                _ => {
                    app.pay(&app.staff(), &key(), &repayment(&loan, "50000.00"))
                        .await
                        .status
                }
            }
        }));
    }
    for t in tasks {
        let status = t.await.unwrap();
        assert!(
            [StatusCode::OK, StatusCode::CREATED, StatusCode::CONFLICT].contains(&status),
            "{status}"
        );
    }
    let after = app.loan(&loan).await;
    let completed = allocations_match_repayments(&app).await;
    assert_eq!(money(&after["total_paid"]), completed);
    assert_eq!(after["status"], "DISBURSED");
}
