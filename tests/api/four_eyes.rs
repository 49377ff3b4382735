//! Four eyes (migration 0043): a decision that needs a checker is a proposal until another
//! person, with a limit that covers it and in the maker's office or above, approves it.

use axum::http::{Method, StatusCode};
use chrono::Days;
use lakehouse_api::domain::jobs::{servicing, Session};
use lakehouse_api::platform::config::FourEyesConfig;
use serde_json::{json, Value};

use crate::helpers::{Options, TestApp};

/// An app whose checkers are on for `actions` (the service's defaults with `None`).
async fn app_with(actions: Option<&[&'static str]>) -> TestApp {
    let four_eyes = match actions {
        None => FourEyesConfig::default(),
        Some(actions) => FourEyesConfig {
            actions: actions.to_vec(),
            ..FourEyesConfig::default()
        },
    };
    TestApp::spawn_with(Options {
        four_eyes,
        ..Options::default()
    })
    .await
}

/// A PERSONAL_STD loan that servicing has moved to DEFAULTED.
async fn defaulted_loan(app: &TestApp, code: &str, id_number: &str) -> String {
    app.ensure_products().await;
    sqlx::raw_sql(
        "UPDATE core.products SET default_after_days = 30 WHERE product_code = 'PERSONAL_STD'",
    )
    .execute(&app.owner)
    .await
    .unwrap();
    let customer = app.approved_customer(code, id_number).await;
    let loan = app
        .disbursed_loan(customer, "PERSONAL_STD", "6000000.00", 6)
        .await;
    let day = app.today().await;
    let days = servicing::Days {
        from: day + Days::new(80),
        to: day + Days::new(80),
        rehearsal: true,
    };
    servicing::run(&Session::Owner(app.owner.clone()), days, 2)
        .await
        .unwrap();
    let id = loan["loan_id"].as_str().unwrap().to_owned();
    assert_eq!(status_of(app, &id).await, "DEFAULTED");
    id
}

async fn status_of(app: &TestApp, loan: &str) -> String {
    app.get(&format!("/v1/loans/{loan}"), &app.staff())
        .await
        .json()["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn decide(
    app: &TestApp,
    token: &str,
    proposal: &Value,
    verb: &str,
) -> crate::helpers::TestResponse {
    let id = proposal["proposal_id"].as_str().unwrap();
    app.json(
        Method::POST,
        &format!("/v1/proposals/{id}/{verb}"),
        token,
        &json!({}),
    )
    .await
}

#[tokio::test]
async fn a_write_off_takes_effect_only_when_another_person_approves_it() {
    let app = app_with(None).await;
    let loan = defaulted_loan(&app, "FE-W-1", "810810810").await;
    let maker = app.token_for("maker-1", "staff", None);
    let path = format!("/v1/loans/{loan}/write-off");

    let proposed = app.json(Method::POST, &path, &maker, &json!({})).await;
    assert_eq!(proposed.status, StatusCode::ACCEPTED, "{}", proposed.text());
    let proposal = proposed.json();
    assert_eq!(
        proposed.header("location"),
        Some(
            format!(
                "/v1/proposals/{}",
                proposal["proposal_id"].as_str().unwrap()
            )
            .as_str()
        )
    );
    assert_eq!(proposal["action"], "WRITE_OFF");
    assert_eq!(proposal["status"], "PENDING");
    assert_eq!(proposal["maker"], "local|maker-1|staff");
    assert_eq!(
        status_of(&app, &loan).await,
        "DEFAULTED",
        "nothing happened yet"
    );
    // A second proposal for the same loan while one is pending: 409.
    app.json(Method::POST, &path, &maker, &json!({}))
        .await
        .problem(StatusCode::CONFLICT);
    // The pending list holds it.
    let pending = app.get("/v1/proposals", &app.staff()).await.json();
    assert_eq!(pending["data"][0]["proposal_id"], proposal["proposal_id"]);

    // The maker cannot check it, not even with another token of another role.
    let same_person = app.token_for("maker-1", "admin", None);
    for token in [&maker, &same_person] {
        decide(&app, token, &proposal, "approve")
            .await
            .problem(StatusCode::FORBIDDEN);
    }
    assert_eq!(status_of(&app, &loan).await, "DEFAULTED");

    let checker = app.token_for("checker-1", "staff", None);
    let approved = decide(&app, &checker, &proposal, "approve").await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text());
    let approved = approved.json();
    assert_eq!(approved["status"], "APPROVED");
    assert_eq!(approved["checker"], "local|checker-1|staff");
    assert_eq!(approved["outcome"]["status"], "WRITTEN_OFF");
    assert_eq!(status_of(&app, &loan).await, "WRITTEN_OFF");

    // Approving again changes nothing and answers the same; rejecting it now is 409.
    let entries = app
        .count(&format!(
            "SELECT count(*) FROM core.journal_entries WHERE loan_id = '{loan}'"
        ))
        .await;
    let again = decide(&app, &checker, &proposal, "approve").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json(), approved);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM core.journal_entries WHERE loan_id = '{loan}'"
        ))
        .await,
        entries
    );
    decide(&app, &checker, &proposal, "reject")
        .await
        .problem(StatusCode::CONFLICT);

    // Every step is on the append-only trail with both people, and on the outbox.
    let steps: Vec<(String, String, Option<String>, String)> = sqlx::query_as(
        "SELECT step, maker, checker, actor FROM audit.proposal_events \
         WHERE proposal_id = $1::uuid ORDER BY event_id",
    )
    .bind(proposal["proposal_id"].as_str().unwrap())
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert_eq!(
        steps,
        [
            (
                "PROPOSED".into(),
                "local|maker-1|staff".into(),
                None,
                "local|maker-1|staff".into()
            ),
            (
                "APPROVED".into(),
                "local|maker-1|staff".into(),
                Some("local|checker-1|staff".into()),
                "local|checker-1|staff".into()
            ),
        ]
    );
    let events = app
        .count(&format!(
            "SELECT count(*) FROM metadata.outbox_events WHERE aggregate_id = '{}' \
             AND topic IN ('proposal_made', 'proposal_decided')",
            proposal["proposal_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(events, 2);
}

#[tokio::test]
async fn postgresql_refuses_a_proposal_checked_by_its_maker() {
    let app = app_with(None).await;
    let loan = defaulted_loan(&app, "FE-D-1", "810810811").await;
    let maker = app.token_for("maker-2", "staff", None);
    let proposal = app
        .json(
            Method::POST,
            &format!("/v1/loans/{loan}/write-off"),
            &maker,
            &json!({}),
        )
        .await
        .json();
    // Below the API: the maker's own transaction approving it directly.
    let mut tx = app.owner.begin().await.unwrap();
    sqlx::raw_sql(
        "SET LOCAL ROLE lakehouse_staff; SET LOCAL app.branch = 'HO'; \
         SET LOCAL app.actor = 'local|maker-2|staff'",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let refused =
        sqlx::query("UPDATE core.proposals SET status = 'APPROVED' WHERE proposal_id = $1::uuid")
            .bind(proposal["proposal_id"].as_str().unwrap())
            .execute(&mut *tx)
            .await
            .unwrap_err();
    assert!(
        refused.to_string().contains("proposals_four_eyes"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_loan_above_the_limit_needs_a_checker_whose_limit_covers_it() {
    let app = app_with(None).await;
    app.ensure_products().await;
    let customer = app.approved_customer("FE-L-1", "810810812").await;
    let apply = |amount: &'static str| {
        let app = &app;
        async move {
            let applied = app
                .apply(
                    &app.staff(),
                    json!({"customer_id": customer, "product_code": "BUSINESS_STD",
                           "amount": amount, "term_months": 24}),
                )
                .await;
            assert_eq!(applied.status, StatusCode::CREATED, "{}", applied.text());
            applied.json()
        }
    };
    let maker = app.token_for("maker-3", "staff", None);
    // Within the staff limit (100,000,000): approved at once.
    let small = apply("90000000.00").await;
    let approved = app.act(&maker, &small, "approve").await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text());
    // Above it: a proposal for the amount.
    let large = apply("150000000.00").await;
    let proposed = app.act(&maker, &large, "approve").await;
    assert_eq!(proposed.status, StatusCode::ACCEPTED, "{}", proposed.text());
    let proposal = proposed.json();
    assert_eq!(proposal["action"], "LOAN_APPROVAL");
    assert_eq!(proposal["amount"], "150000000.00");
    let loan = large["loan_id"].as_str().unwrap();
    assert_eq!(status_of(&app, loan).await, "APPLIED");
    // A checker whose own limit (the directory's 120,000,000) does not cover it: 403.
    let admin = app.token("admin", None);
    let entry = app
        .json(
            Method::POST,
            "/v1/staff",
            &admin,
            &json!({"issuer": "local", "subject": "checker-3", "office": "HO",
                    "approval_limit": "120000000"}),
        )
        .await;
    assert_eq!(entry.status, StatusCode::CREATED, "{}", entry.text());
    let small_checker = app.token_for("checker-3", "staff", None);
    let refused = decide(&app, &small_checker, &proposal, "approve").await;
    assert!(refused.problem(StatusCode::FORBIDDEN)["detail"]
        .as_str()
        .unwrap()
        .contains("limit"),);
    assert_eq!(status_of(&app, loan).await, "APPLIED");
    // An administrator has no limit.
    let approved = decide(&app, &admin, &proposal, "approve").await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text());
    assert_eq!(status_of(&app, loan).await, "APPROVED");
    // A member whose directory limit covers the amount approves alone.
    let raised = app
        .json_with(
            Method::PATCH,
            &format!("/v1/staff/{}", entry.json()["staff_id"].as_str().unwrap()),
            &admin,
            &json!({"approval_limit": "200000000"}),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(raised.status, StatusCode::OK, "{}", raised.text());
    let another = apply("150000000.00").await;
    let alone = app.act(&small_checker, &another, "approve").await;
    assert_eq!(alone.status, StatusCode::OK, "{}", alone.text());
}

#[tokio::test]
async fn a_proposal_whose_object_changed_or_that_is_older_than_seven_days_is_refused() {
    let app = app_with(None).await;
    app.ensure_products().await;
    let maker = app.token_for("maker-4", "staff", None);
    let checker = app.token_for("checker-4", "staff", None);
    let change = |name: &'static str| {
        let app = &app;
        let maker = maker.clone();
        async move {
            let proposed = app
                .json_with(
                    Method::PATCH,
                    "/v1/products/PERSONAL_STD",
                    &maker,
                    &json!({"name": name}),
                    &[("if-match", "*")],
                )
                .await;
            assert_eq!(proposed.status, StatusCode::ACCEPTED, "{}", proposed.text());
            proposed.json()
        }
    };
    // A product change is checked at once (422 for a bad one), proposed only when valid.
    app.json_with(
        Method::PATCH,
        "/v1/products/PERSONAL_STD",
        &maker,
        &json!({"min_amount": "999999999999.00"}),
        &[("if-match", "*")],
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    let stale = change("Renamed once").await;
    // The product changes underneath (an owner's direct edit stands in for anything).
    sqlx::raw_sql(
        "UPDATE core.products SET version = version + 1 WHERE product_code = 'PERSONAL_STD'",
    )
    .execute(&app.owner)
    .await
    .unwrap();
    decide(&app, &checker, &stale, "approve")
        .await
        .problem(StatusCode::CONFLICT);
    let name: String =
        sqlx::query_scalar("SELECT name FROM core.products WHERE product_code = 'PERSONAL_STD'")
            .fetch_one(&app.owner)
            .await
            .unwrap();
    assert_ne!(name, "Renamed once");
    let rejected = decide(&app, &checker, &stale, "reject").await;
    assert_eq!(rejected.status, StatusCode::OK, "{}", rejected.text());
    assert_eq!(rejected.json()["status"], "REJECTED");

    // Eight days old: expired, and it says so once and for all.
    let old = change("Renamed late").await;
    let mut tx = app.owner.begin().await.unwrap();
    sqlx::raw_sql(&format!(
        "ALTER TABLE core.proposals DISABLE TRIGGER proposals_decided; \
         UPDATE core.proposals SET proposed_at = now() - interval '8 days', \
                expires_at = now() - interval '1 day' WHERE proposal_id = '{}'; \
         ALTER TABLE core.proposals ENABLE TRIGGER proposals_decided",
        old["proposal_id"].as_str().unwrap()
    ))
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let pending = app.get("/v1/proposals", &checker).await.json();
    assert_eq!(
        pending["data"],
        json!([]),
        "an expired proposal is not pending"
    );
    decide(&app, &checker, &old, "approve")
        .await
        .problem(StatusCode::CONFLICT);
    let expired = app
        .get(
            &format!("/v1/proposals/{}", old["proposal_id"].as_str().unwrap()),
            &checker,
        )
        .await
        .json();
    assert_eq!(expired["status"], "EXPIRED");

    // A fresh one goes through.
    let fresh = change("Renamed well").await;
    let approved = decide(&app, &checker, &fresh, "approve").await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text());
    assert_eq!(approved.json()["outcome"]["name"], "Renamed well");
}

#[tokio::test]
async fn configuration_decides_which_actions_need_a_checker() {
    // Off: a write-off takes effect at once.
    let app = app_with(Some(&[])).await;
    let loan = defaulted_loan(&app, "FE-C-1", "810810813").await;
    let done = app
        .json(
            Method::POST,
            &format!("/v1/loans/{loan}/write-off"),
            &app.staff(),
            &json!({}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    assert_eq!(status_of(&app, &loan).await, "WRITTEN_OFF");

    // On for reversals and disbursements only: those propose, a write-off does not.
    let app = app_with(Some(&["REVERSAL", "DISBURSEMENT"])).await;
    app.ensure_products().await;
    let customer = app.approved_customer("FE-C-2", "810810814").await;
    let applied = app
        .apply(
            &app.staff(),
            json!({"customer_id": customer, "product_code": "ZERO_RATE", "amount": "1000000.00",
                   "term_months": 10}),
        )
        .await
        .json();
    assert_eq!(
        app.act(&app.staff(), &applied, "approve").await.status,
        StatusCode::OK
    );
    let maker = app.token_for("maker-5", "staff", None);
    let checker = app.token_for("checker-5", "staff", None);
    let proposed = app.act(&maker, &applied, "disburse").await;
    assert_eq!(proposed.status, StatusCode::ACCEPTED, "{}", proposed.text());
    let loan = applied["loan_id"].as_str().unwrap();
    assert_eq!(status_of(&app, loan).await, "APPROVED");
    let approved = decide(&app, &checker, &proposed.json(), "approve").await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text());
    assert_eq!(status_of(&app, loan).await, "DISBURSED");

    let paid = app
        .pay(
            &app.staff(),
            "fe-c-2",
            &json!({"loan_id": loan, "payment_type": "REPAYMENT", "amount": "1000.00"}),
        )
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text());
    let payment = paid.json()["payment_id"].as_str().unwrap().to_owned();
    let reverse = app
        .json(
            Method::POST,
            &format!("/v1/payments/{payment}/reverse"),
            &maker,
            &json!({"reason": "keyed twice"}),
        )
        .await;
    assert_eq!(reverse.status, StatusCode::ACCEPTED, "{}", reverse.text());
    let reversal = reverse.json();
    assert_eq!(reversal["amount"], "1000.00");
    let before = app
        .get(&format!("/v1/payments/{payment}"), &app.staff())
        .await
        .json();
    assert_eq!(before["status"], "COMPLETED");
    let approved = decide(&app, &checker, &reversal, "approve").await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text());
    let after = app
        .get(&format!("/v1/payments/{payment}"), &app.staff())
        .await
        .json();
    assert_eq!(after["status"], "REVERSED");
    assert_eq!(after["status_reason"], "keyed twice");
}

#[tokio::test]
async fn a_checker_must_work_in_the_maker_s_office_or_above() {
    let app = app_with(None).await;
    let admin = app.token("admin", None);
    for (code, kind, parent) in [
        ("NORTH", "REGION", "HO"),
        ("HN01", "BRANCH", "NORTH"),
        ("HN02", "BRANCH", "NORTH"),
    ] {
        let made = app
            .json(
                Method::POST,
                "/v1/offices",
                &admin,
                &json!({"code": code, "name": code, "kind": kind, "parent": parent}),
            )
            .await;
        assert_eq!(made.status, StatusCode::CREATED, "{}", made.text());
    }
    app.ensure_products().await;
    let maker = app.token_at("maker-6", "staff", None, Some("HN01"));
    let product = app
        .json_with(
            Method::PATCH,
            "/v1/products/PERSONAL_STD",
            &maker,
            &json!({"name": "Branch idea"}),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(product.status, StatusCode::ACCEPTED, "{}", product.text());
    let proposal = product.json();
    let sibling = app.token_at("checker-hn02", "staff", None, Some("HN02"));
    decide(&app, &sibling, &proposal, "approve")
        .await
        .problem(StatusCode::NOT_FOUND);
    assert_eq!(
        app.get("/v1/proposals", &sibling).await.json()["data"],
        json!([])
    );
    let region = app.token_at("checker-north", "staff", None, Some("NORTH"));
    let approved = decide(&app, &region, &proposal, "approve").await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text());
}
