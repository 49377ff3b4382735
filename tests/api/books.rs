//! The money core's books: the double-entry journal, daily servicing, payoff and write-off.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use chrono::{Days, NaiveDate};
use lakehouse_api::domain::jobs::{servicing, Session};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{TestApp, TestLoan};
use crate::payments::{key, money};

fn is_canonical_money(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        let s = s.strip_prefix('-').unwrap_or(s);
        let (whole, cents) = s.split_once('.').unwrap_or((s, ""));
        !whole.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && cents.len() == 2
            && cents.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Every way the books can disagree, over every loan: an entry whose lines do not sum to zero,
/// balance columns that differ from the journal, installments that differ from the balances
/// (for loans not written off), a negative balance, or an active loan with principal left whose
/// next due date is not its oldest unpaid installment's (servicing finds arrears by it). Empty when the books reconcile.
pub async fn disagreements(owner: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "WITH journal AS ( \
             SELECT loan_id, \
                    coalesce(sum(amount) FILTER (WHERE account = 'LOAN_PRINCIPAL'), 0) AS principal, \
                    coalesce(sum(amount) FILTER (WHERE account = 'LOAN_INTEREST'), 0) AS interest, \
                    coalesce(sum(amount) FILTER (WHERE account = 'LOAN_FEES'), 0) AS fees, \
                    coalesce(sum(amount) FILTER (WHERE account = 'LOAN_PENALTIES'), 0) AS penalties \
             FROM core.journal_lines GROUP BY loan_id), \
         schedule AS ( \
             SELECT loan_id, sum(principal_due - principal_paid) AS principal, \
                    sum(interest_posted - interest_paid) AS interest \
             FROM core.loan_installments GROUP BY loan_id) \
         SELECT format('entry %s sums to %s', entry_id, sum(amount)) FROM core.journal_lines \
             GROUP BY entry_id HAVING sum(amount) <> 0 \
         UNION ALL \
         SELECT format('%s (%s): columns %s/%s/%s/%s, journal %s/%s/%s/%s', l.loan_number, l.status, \
                       l.principal_outstanding, l.interest_outstanding, l.fees_outstanding, \
                       l.penalties_outstanding, j.principal, j.interest, j.fees, j.penalties) \
         FROM core.loans l LEFT JOIN journal j USING (loan_id) \
         WHERE l.disbursement_date IS NOT NULL AND ( \
             j.loan_id IS NULL OR l.principal_outstanding <> j.principal \
             OR l.interest_outstanding <> j.interest OR l.fees_outstanding <> j.fees \
             OR l.penalties_outstanding <> j.penalties \
             OR least(l.principal_outstanding, l.interest_outstanding, l.fees_outstanding, \
                      l.penalties_outstanding) < 0) \
         UNION ALL \
         SELECT format('%s (%s): balances %s/%s, installments %s/%s', l.loan_number, l.status, \
                       l.principal_outstanding, l.interest_outstanding, s.principal, s.interest) \
         FROM core.loans l LEFT JOIN schedule s USING (loan_id) \
         WHERE l.disbursement_date IS NOT NULL AND l.status <> 'WRITTEN_OFF' AND ( \
             s.loan_id IS NULL OR l.principal_outstanding <> s.principal \
             OR l.interest_outstanding <> s.interest) \
         UNION ALL \
         SELECT format('%s (%s): next due %s, oldest unpaid installment due %s', l.loan_number, \
                       l.status, l.next_due_date, u.due) \
         FROM core.loans l CROSS JOIN LATERAL ( \
             SELECT min(i.due_date) AS due FROM core.loan_installments i \
             WHERE i.loan_id = l.loan_id \
               AND (i.principal_paid < i.principal_due OR i.interest_paid < i.interest_due)) u \
         WHERE l.status IN ('DISBURSED', 'DEFAULTED') AND l.principal_outstanding > 0 \
           AND l.next_due_date IS DISTINCT FROM u.due",
    )
    .fetch_all(owner)
    .await
    .unwrap()
}

async fn assert_books_reconcile(app: &TestApp) {
    let problems = disagreements(&app.owner).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

impl TestApp {
    /// Services every loan for each day from `today + from` to `today + to`, as the job does,
    /// rehearsing days ahead of the business day (as `jobs servicing --rehearse` does).
    async fn service(&self, from: u64, to: u64) -> Value {
        let today = self.today().await;
        let days = servicing::Days {
            from: today + Days::new(from),
            to: today + Days::new(to),
            rehearsal: to > 0,
        };
        let run = servicing::run(&Session::Owner(self.owner.clone()), days, 2)
            .await
            .unwrap();
        serde_json::to_value(run).unwrap()
    }

    async fn set_terms(&self, terms: &str) {
        sqlx::raw_sql(&format!(
            "UPDATE core.products SET {terms} WHERE product_code = 'PERSONAL_STD'"
        ))
        .execute(&self.owner)
        .await
        .unwrap();
    }

    async fn loan_json(&self, loan: &Value) -> Value {
        self.get(
            &format!("/v1/loans/{}", loan["loan_id"].as_str().unwrap()),
            &self.staff(),
        )
        .await
        .json()
    }

    async fn journal(&self, loan: &Value, token: &str) -> crate::helpers::TestResponse {
        self.get(
            &format!("/v1/loans/{}/journal", loan["loan_id"].as_str().unwrap()),
            token,
        )
        .await
    }

    async fn reverse(&self, payment_id: &str) -> crate::helpers::TestResponse {
        self.json(
            Method::POST,
            &format!("/v1/payments/{payment_id}/reverse"),
            &self.staff(),
            &json!({}),
        )
        .await
    }

    async fn repay(&self, loan: &Value, amount: &str) -> crate::helpers::TestResponse {
        self.pay(
            &self.staff(),
            &key(),
            &json!({"loan_id": loan["loan_id"], "payment_type": "REPAYMENT", "amount": amount}),
        )
        .await
    }
}

/// Reproducible draws below `n` (a linear congruential generator from `seed`).
fn draws(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    }
}

fn kinds(journal: &Value) -> Vec<&str> {
    journal["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn every_movement_is_a_balanced_immutable_entry_and_the_balances_are_the_journal() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUSTJ01", "710710710").await;
    let loan = app
        .disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 6)
        .await;
    let fee = app
        .pay(
            &app.staff(),
            &key(),
            &json!({"loan_id": loan["loan_id"], "payment_type": "FEE", "amount": "50000"}),
        )
        .await;
    assert_eq!(fee.status, StatusCode::CREATED, "{}", fee.text());
    // Charging the fee emitted its event, with the amount the journal booked.
    let event: Value = sqlx::query_scalar(
        "SELECT payload FROM metadata.outbox_events WHERE topic = 'loan_fee_charged'",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(
        (&event["kind"], &event["amount"], &event["loan_id"]),
        (&json!("FEE"), &json!("50000.00"), &loan["loan_id"]),
        "{event}"
    );
    let first = app.repay(&loan, "1000000.00").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    let first_id = first.json()["payment_id"].as_str().unwrap().to_owned();
    let reversed = app.reverse(&first_id).await;
    assert_eq!(reversed.status, StatusCode::OK, "{}", reversed.text());
    assert_eq!(
        app.repay(&loan, "500000.00").await.status,
        StatusCode::CREATED
    );

    let journal = app.journal(&loan, &app.staff()).await;
    assert_eq!(journal.status, StatusCode::OK, "{}", journal.text());
    let journal = journal.json();
    assert_eq!(
        kinds(&journal),
        ["DISBURSEMENT", "FEE", "REPAYMENT", "REVERSAL", "REPAYMENT"]
    );
    for entry in journal["entries"].as_array().unwrap() {
        let lines = entry["lines"].as_array().unwrap();
        assert!(lines.len() >= 2, "{entry}");
        assert!(
            lines.iter().all(|l| is_canonical_money(&l["amount"])),
            "{entry}"
        );
        let sum: Decimal = lines.iter().map(|l| money(&l["amount"])).sum();
        assert_eq!(sum, Decimal::ZERO, "{entry}");
    }
    // The reversal is the contra of the first repayment, line by line.
    let entries = journal["entries"].as_array().unwrap();
    assert_eq!(entries[3]["reverses"], entries[2]["entry_id"]);
    for (line, contra) in entries[2]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .zip(entries[3]["lines"].as_array().unwrap())
    {
        assert_eq!(line["account"], contra["account"]);
        assert_eq!(money(&line["amount"]), -money(&contra["amount"]));
    }
    // The loan's balance columns are its journal's balances.
    let now = app.loan_json(&loan).await;
    let balance = |account: &str| {
        journal["balances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["account"] == account)
            .map(|b| b["balance"].clone())
            .unwrap()
    };
    assert_eq!(balance("LOAN_PRINCIPAL"), now["principal_outstanding"]);
    assert_eq!(balance("LOAN_INTEREST"), now["interest_outstanding"]);
    assert_eq!(balance("LOAN_FEES"), now["fees_outstanding"]);
    assert_eq!(balance("LOAN_PENALTIES"), now["penalties_outstanding"]);
    assert_books_reconcile(&app).await;

    // The customer reads their own loan's journal; another customer is told it does not exist.
    let own = app.journal(&loan, &app.customer(customer)).await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(own.json()["entries"], journal["entries"]);
    let stranger = app.approved_customer("CUSTJ02", "720720720").await;
    app.journal(&loan, &app.customer(stranger))
        .await
        .problem(StatusCode::NOT_FOUND);
    let leaked: i64 = {
        let mut tx = app.owner.begin().await.unwrap();
        sqlx::raw_sql(&format!(
            "SET LOCAL ROLE lakehouse_app_user; SET LOCAL app.current_customer_id = '{stranger}'"
        ))
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM core.journal_entries) + (SELECT count(*) FROM core.journal_lines)",
        )
        .fetch_one(&mut *tx)
        .await
        .unwrap()
    };
    assert_eq!(
        leaked, 0,
        "row-level security keeps other customers' journals out"
    );

    // The trial balance sums to zero; analysts and administrators only.
    let trial = app
        .get("/v1/ledger/trial-balance", &app.token("analyst", None))
        .await;
    assert_eq!(trial.status, StatusCode::OK, "{}", trial.text());
    let trial = trial.json();
    assert_eq!(trial["balanced"], true);
    assert_eq!(trial["total_debits"], trial["total_credits"]);
    assert!(is_canonical_money(&trial["total_debits"]));
    let sum: Decimal = trial["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| money(&a["balance"]))
        .sum();
    assert_eq!(sum, Decimal::ZERO);
    assert_eq!(
        app.get("/v1/ledger/trial-balance", &app.customer(customer))
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    // Entries are immutable and balanced whoever writes: the database refuses the rest.
    for statement in [
        "UPDATE core.journal_lines SET amount = amount * 2",
        "DELETE FROM core.journal_entries",
        "INSERT INTO core.journal_entries (entry_id, loan_id, customer_id, kind, business_date) \
         SELECT gen_random_uuid(), loan_id, customer_id, 'FEE', current_date FROM core.loan_directory LIMIT 1; \
         INSERT INTO core.journal_lines (entry_id, line_number, loan_id, customer_id, account, amount) \
         SELECT entry_id, 1, loan_id, customer_id, 'LOAN_FEES', 10 FROM core.journal_entries WHERE kind = 'FEE' \
         ORDER BY posted_at DESC LIMIT 1",
    ] {
        let mut tx = app.owner.begin().await.unwrap();
        sqlx::raw_sql("SET LOCAL ROLE lakehouse_staff; SET LOCAL app.branch = 'HO'")
            .execute(&mut *tx)
            .await
            .unwrap();
        let refused = sqlx::raw_sql(statement).execute(&mut *tx).await;
        assert!(refused.is_err(), "{statement}");
    }
    // Balanced lines of an entry that was never posted are refused, even to the owner.
    let orphans = sqlx::query(
        "INSERT INTO core.journal_lines (entry_id, line_number, loan_id, customer_id, account, amount)
         SELECT e.id, v.n, d.loan_id, d.customer_id, v.account, v.amount
         FROM (SELECT gen_random_uuid() AS id) e,
              (SELECT loan_id, customer_id FROM core.loan_directory LIMIT 1) d,
              (VALUES (1, 'LOAN_FEES', 10), (2, 'FEE_INCOME', -10)) AS v(n, account, amount)",
    )
    .execute(&app.owner)
    .await
    .unwrap_err();
    let orphans = orphans.as_database_error().unwrap();
    assert_eq!(orphans.code().as_deref(), Some("23503"), "{orphans}");
    assert_eq!(orphans.constraint(), Some("journal_lines_entry_id_fkey"));
    assert_books_reconcile(&app).await;
}

/// A loan keeps the terms it was approved under: raising the product's late fee tenfold and
/// shortening its grace days afterwards changes neither the fee nor the day it is charged; a
/// loan approved after the change follows the new terms.
#[tokio::test]
async fn a_loan_keeps_the_terms_it_was_approved_under() {
    let app = TestApp::spawn().await;
    app.ensure_products().await;
    app.set_terms("grace_days = 5, late_fee_amount = 50000, late_fee_rate = 0")
        .await;
    let first = app.approved_customer("CUSTT01", "731731731").await;
    let before = app
        .disbursed_loan(first, "PERSONAL_STD", "12000000.00", 6)
        .await;
    app.set_terms("grace_days = 1, late_fee_amount = 500000")
        .await;
    let second = app.approved_customer("CUSTT02", "732732732").await;
    let after = app
        .disbursed_loan(second, "PERSONAL_STD", "12000000.00", 6)
        .await;

    let (old, new) = (app.loan_json(&before).await, app.loan_json(&after).await);
    assert_eq!(
        (
            old["terms"]["grace_days"].as_i64(),
            old["terms"]["late_fee_amount"].as_str()
        ),
        (Some(5), Some("50000.00"))
    );
    assert_eq!(
        (
            new["terms"]["grace_days"].as_i64(),
            new["terms"]["late_fee_amount"].as_str()
        ),
        (Some(1), Some("500000.00"))
    );
    assert_eq!(
        new["terms"]["terms_version"].as_i64().unwrap(),
        old["terms"]["terms_version"].as_i64().unwrap() + 1
    );

    // Both fall due on the same day; neither is paid.
    let due: NaiveDate = old["next_due_date"].as_str().unwrap().parse().unwrap();
    assert_eq!(new["next_due_date"], old["next_due_date"]);
    let days = u64::try_from((due - app.today().await).num_days()).unwrap();
    let fees = |loan: &Value| {
        let loan = loan.clone();
        let app = &app;
        async move {
            let journal = app.journal(&loan, &app.staff()).await.json();
            journal["entries"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["kind"] == "LATE_FEE")
                .map(|e| {
                    (
                        e["business_date"].as_str().unwrap().to_owned(),
                        e["lines"][0]["amount"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    // Two days after the due date: past the new grace day, within the old five.
    app.service(days + 2, days + 2).await;
    assert_eq!(fees(&before).await, []);
    assert_eq!(
        fees(&after).await,
        [((due + Days::new(2)).to_string(), "500000.00".to_owned())]
    );
    // Six days after: the first loan's own grace days are over, and its own fee is charged.
    app.service(days + 6, days + 6).await;
    assert_eq!(
        fees(&before).await,
        [((due + Days::new(6)).to_string(), "50000.00".to_owned())]
    );
    assert_eq!(fees(&after).await.len(), 1);
    assert_books_reconcile(&app).await;
}

#[tokio::test]
async fn servicing_posts_interest_charges_late_fees_defaults_and_changes_nothing_twice() {
    let app = TestApp::spawn().await;
    app.ensure_products().await;
    app.set_terms(
        "grace_days = 5, late_fee_amount = 50000, late_fee_rate = 0, default_after_days = 60",
    )
    .await;
    let customer = app.approved_customer("CUSTS01", "730730730").await;
    let loan = app
        .disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 6)
        .await;
    let first_interest = Decimal::new(12_500_000, 2);

    // 45 days on: the first installment fell due, unpaid, and is past its grace days.
    let run = app.service(45, 45).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let after = app.loan_json(&loan).await;
    assert_eq!(money(&after["interest_outstanding"]), first_interest);
    assert_eq!(after["penalties_outstanding"], "50000.00");
    assert_eq!(after["status"], "DISBURSED");
    let journal = app.journal(&loan, &app.staff()).await.json();
    assert_eq!(
        kinds(&journal),
        ["DISBURSEMENT", "INTEREST_DUE", "LATE_FEE"]
    );

    // Twice for the same day: nothing changes.
    app.service(45, 45).await;
    let again = app.loan_json(&loan).await;
    for field in [
        "interest_outstanding",
        "penalties_outstanding",
        "status",
        "version",
    ] {
        assert_eq!(again[field], after[field], "{field}");
    }
    assert_eq!(
        kinds(&app.journal(&loan, &app.staff()).await.json()).len(),
        3
    );

    // Catching up over a range: three installments due, each with its late fee, and more than
    // 60 days past due, so the loan defaults (events for the fees and the default).
    app.service(46, 100).await;
    let defaulted = app.loan_json(&loan).await;
    assert_eq!(defaulted["status"], "DEFAULTED", "{defaulted}");
    assert!(defaulted["defaulted_at"].is_string());
    assert_eq!(defaulted["penalties_outstanding"], "150000.00");
    let events = app
        .count("SELECT count(*) FROM metadata.outbox_events WHERE topic = 'loan_fee_charged'")
        .await;
    assert_eq!(events, 3);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM metadata.outbox_events WHERE topic = 'loan_status_changed' \
             AND payload->>'new_status' = 'DEFAULTED'"
        )
        .await,
        1
    );
    assert_books_reconcile(&app).await;

    // A defaulted loan keeps taking repayments; clearing its arrears cures it.
    let arrears =
        money(&defaulted["interest_outstanding"]) + money(&defaulted["penalties_outstanding"]);
    let principal_due: Decimal = sqlx::query_scalar(
        "SELECT sum(principal_due - principal_paid) FROM core.loan_installments \
         WHERE loan_id = $1 AND due_date <= core.business_date(now()) + 100",
    )
    .bind(loan.id)
    .fetch_one(&app.owner)
    .await
    .unwrap();
    let paid = app
        .repay(&loan, &(arrears + principal_due).to_string())
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text());
    let cured = app.loan_json(&loan).await;
    assert_eq!(cured["status"], "DISBURSED", "{cured}");
    assert_eq!(cured["penalties_outstanding"], "0.00");
    assert_books_reconcile(&app).await;

    // The administrators' route runs the same job for today, recorded like every job.
    let today = app
        .json(
            Method::POST,
            "/v1/admin/servicing",
            &app.token("admin", None),
            &json!({}),
        )
        .await;
    assert_eq!(today.status, StatusCode::OK, "{}", today.text());
    assert_eq!(today.json()["job_name"], "loan_servicing");
    app.json(
        Method::POST,
        "/v1/admin/servicing",
        &app.token("admin", None),
        &json!({"to": "2999-01-01"}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        app.json(
            Method::POST,
            "/v1/admin/servicing",
            &app.staff(),
            &json!({})
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn the_scheduler_runs_servicing_once_across_instances() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUSTS02", "740740740").await;
    app.disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 6)
        .await;
    let session = app.scheduler_session();
    let pool = app.state.db.pool.clone();
    let instances: Vec<_> = (0..4)
        .map(|_| {
            let (pool, session) = (pool.clone(), session.clone());
            tokio::spawn(async move {
                lakehouse_api::domain::jobs::scheduler::service_if_due(&pool, &session, 1).await
            })
        })
        .collect();
    let mut ran = 0;
    for instance in instances {
        if instance.await.unwrap().unwrap().is_some() {
            ran += 1;
        }
    }
    assert_eq!(ran, 1, "one instance runs the day's servicing");
    // Up to date now: a later check runs nothing.
    assert!(
        lakehouse_api::domain::jobs::scheduler::service_if_due(&pool, &session, 1)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM metadata.job_execution WHERE job_name = 'loan_servicing' \
             AND status = 'SUCCEEDED' AND triggered_by = 'system|scheduler|admin'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_payoff_of_the_quote_closes_the_loan_and_more_is_refused() {
    let app = TestApp::spawn().await;
    app.ensure_products().await;
    app.set_terms("prepayment_fee_rate = 0.01").await;
    let customer = app.approved_customer("CUSTP01", "750750750").await;
    let loan = app
        .disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 6)
        .await;
    let path = format!("/v1/loans/{}/payoff", loan.id);
    let quote = app.get(&path, &app.customer(customer)).await;
    assert_eq!(quote.status, StatusCode::OK, "{}", quote.text());
    let quote = quote.json();
    for field in [
        "principal",
        "interest",
        "fees",
        "penalties",
        "prepayment_fee",
        "total",
        "total_cost_of_credit",
    ] {
        assert!(is_canonical_money(&quote[field]), "{field}: {quote}");
    }
    assert_eq!(quote["principal"], "12000000.00");
    assert_eq!(quote["prepayment_fee"], "120000.00");
    assert_eq!(quote["apr"], "0.1250");
    assert_eq!(
        money(&quote["total_cost_of_credit"]),
        money(&quote["total"]) - Decimal::new(12_000_000, 0)
    );
    // A month ahead: the first installment's interest has fallen due.
    let later = app
        .get(
            &format!("{path}?date={}", app.today().await + Days::new(40)),
            &app.staff(),
        )
        .await
        .json();
    // A month and more ahead: the first installment's interest has fallen due, and some of the
    // second period's has accrued.
    assert!(
        money(&later["interest"]) > Decimal::new(12_500_000, 2),
        "{later}"
    );
    assert!(
        money(&later["interest"]) < Decimal::new(25_000_000, 2),
        "{later}"
    );
    app.get(&format!("{path}?date=1999-01-01"), &app.staff())
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);

    let too_much = money(&quote["total"]) + Decimal::new(1, 2);
    app.repay(&loan, &too_much.to_string())
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    let paid = app.repay(&loan, quote["total"].as_str().unwrap()).await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text());
    let closed = app.loan_json(&loan).await;
    assert_eq!(closed["status"], "CLOSED");
    assert_eq!(closed["principal_outstanding"], "0.00");
    assert_eq!(closed["interest_outstanding"], "0.00");
    let journal = app.journal(&loan, &app.staff()).await.json();
    assert_eq!(kinds(&journal), ["DISBURSEMENT", "PAYOFF"]);
    // Servicing never charges a paid-off loan the interest of later periods.
    app.service(200, 200).await;
    assert_eq!(app.loan_json(&loan).await["interest_outstanding"], "0.00");
    assert_books_reconcile(&app).await;
}

#[tokio::test]
async fn staff_write_off_a_defaulted_loan_and_recoveries_are_journaled() {
    let app = TestApp::spawn().await;
    app.ensure_products().await;
    app.set_terms("default_after_days = 30, late_fee_amount = 10000")
        .await;
    let customer = app.approved_customer("CUSTW01", "760760760").await;
    let loan = app
        .disbursed_loan(customer, "PERSONAL_STD", "6000000.00", 6)
        .await;
    let path = format!("/v1/loans/{}/write-off", loan.id);
    app.json(Method::POST, &path, &app.staff(), &json!({}))
        .await
        .problem(StatusCode::CONFLICT);
    app.service(80, 80).await;
    let defaulted = app.loan_json(&loan).await;
    assert_eq!(defaulted["status"], "DEFAULTED");
    let owed = money(&defaulted["principal_outstanding"])
        + money(&defaulted["interest_outstanding"])
        + money(&defaulted["penalties_outstanding"]);
    assert_eq!(
        app.json(Method::POST, &path, &app.customer(customer), &json!({}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let written = app
        .json(
            Method::POST,
            &path,
            &app.staff(),
            &json!({"reason": "uncollectable"}),
        )
        .await;
    assert_eq!(written.status, StatusCode::OK, "{}", written.text());
    let written = written.json();
    assert_eq!(written["status"], "WRITTEN_OFF");
    assert_eq!(money(&written["written_off_amount"]), owed);
    assert_eq!(written["principal_outstanding"], "0.00");

    let recovered = app.repay(&loan, "100000.00").await;
    assert_eq!(
        recovered.status,
        StatusCode::CREATED,
        "{}",
        recovered.text()
    );
    assert_eq!(app.loan_json(&loan).await["recovered_amount"], "100000.00");
    app.repay(&loan, &owed.to_string())
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    let recovery_id = recovered.json()["payment_id"].as_str().unwrap().to_owned();
    let reversed = app.reverse(&recovery_id).await;
    assert_eq!(reversed.status, StatusCode::OK, "{}", reversed.text());
    assert_eq!(app.loan_json(&loan).await["recovered_amount"], "0.00");
    let journal = app.journal(&loan, &app.staff()).await.json();
    let kinds = kinds(&journal);
    assert!(
        kinds.ends_with(&["WRITE_OFF", "RECOVERY", "REVERSAL"]),
        "{kinds:?}"
    );
    assert_books_reconcile(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_parallel_repayments_and_reversals_on_one_loan_leave_the_books_reconciled() {
    let app = Arc::new(TestApp::spawn().await);
    let customer = app.approved_customer("CUSTC01", "770770770").await;
    let loan = app
        .disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 12)
        .await;
    let payments: Vec<_> = (0..40)
        .map(|i| {
            let (app, loan) = (app.clone(), loan.clone());
            tokio::spawn(async move {
                let paid = app.repay(&loan, &format!("{}.37", 10_000 + i)).await;
                assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text());
                let id = paid.json()["payment_id"].as_str().unwrap().to_owned();
                if i % 3 == 0 {
                    let reversed = app.reverse(&id).await;
                    assert_eq!(reversed.status, StatusCode::OK, "{}", reversed.text());
                }
            })
        })
        .collect();
    for p in payments {
        p.await.unwrap();
    }
    let (reversed, completed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'REVERSED'), count(*) FILTER (WHERE status = 'COMPLETED') \
         FROM core.payments WHERE payment_type = 'REPAYMENT'",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!((reversed, completed), (14, 26));
    assert_books_reconcile(&app).await;
}

#[tokio::test]
async fn a_prepayment_re_amortises_the_schedule_as_the_product_says_and_reverses_exactly() {
    let app = TestApp::spawn().await;
    app.ensure_products().await;
    let customer = app.approved_customer("CUSTR01", "780780780").await;
    for (method, fewer_installments) in [("LOWER_INSTALLMENT", false), ("SHORTER_TERM", true)] {
        app.set_terms(&format!("prepayment_reamortisation = '{method}'"))
            .await;
        let loan = app
            .disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 12)
            .await;
        let path = format!("/v1/loans/{}/schedule", loan.id);
        let before = app.get(&path, &app.staff()).await.json();
        let rows = |schedule: &Value| schedule["installments"].as_array().unwrap().clone();
        let original = rows(&before);
        assert_eq!(original.len(), 12);
        let first = money(&original[0]["total"]);

        // The first installment, and 3,000,000 beyond it: a prepayment.
        let paid = app
            .repay(&loan, &(first + Decimal::new(3_000_000, 0)).to_string())
            .await;
        assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text());
        let after = app.get(&path, &app.staff()).await.json();
        let new_rows = rows(&after);
        let principal: Decimal = new_rows.iter().map(|i| money(&i["principal"])).sum();
        assert_eq!(
            principal,
            Decimal::new(12_000_000 - 3_000_000, 0),
            "the schedule holds what is left to pay after the prepayment"
        );
        let now = app.loan_json(&loan).await;
        assert_eq!(
            money(&now["principal_outstanding"]),
            Decimal::new(12_000_000 - 3_000_000, 0) - money(&original[0]["principal"])
        );
        let interest = |rows: &[Value]| rows.iter().map(|i| money(&i["interest"])).sum::<Decimal>();
        assert!(
            interest(&new_rows) < interest(&original),
            "{method}: less interest"
        );
        if fewer_installments {
            assert!(new_rows.len() < 12, "{method}: {}", new_rows.len());
            assert_eq!(
                new_rows[1]["total"], original[1]["total"],
                "{method}: same installment"
            );
        } else {
            assert_eq!(new_rows.len(), 12, "{method}");
            assert!(
                money(&new_rows[1]["total"]) < money(&original[1]["total"]),
                "{method}"
            );
        }
        let journal = app.journal(&loan, &app.staff()).await.json();
        assert_eq!(kinds(&journal).last(), Some(&"REPAYMENT"));
        assert_books_reconcile(&app).await;

        let id = paid.json()["payment_id"].as_str().unwrap().to_owned();
        let reversed = app.reverse(&id).await;
        assert_eq!(reversed.status, StatusCode::OK, "{}", reversed.text());
        let restored = app.get(&path, &app.staff()).await.json();
        assert_eq!(
            rows(&restored),
            original,
            "{method}: the schedule is restored"
        );
        assert_books_reconcile(&app).await;
    }
}

/// Random sequences of repayments (some large enough to prepay), fees, reversals, servicing
/// days and payoffs on two loans, under each day count (whole đồng in thousands, or cents under
/// the books' old convention): after every step the books reconcile with the journal and no
/// balance is negative (`disagreements` checks both, over every loan).
#[tokio::test]
async fn random_sequences_with_servicing_days_and_payoffs_keep_the_books() {
    use lakehouse_api::domain::contract::DayCount;
    let app = TestApp::spawn().await;
    app.ensure_products().await;
    let mut next = draws(0x5eed);
    let mut day = 0;
    for (n, day_count) in DayCount::ALL.iter().enumerate() {
        let (digits, multiple) = match day_count {
            DayCount::Thirty360Monthly => (2, "0.01"),
            _ => (0, "1000"),
        };
        app.set_terms(&format!(
            "late_fee_amount = 20000, late_fee_rate = 0.01, prepayment_fee_rate = 0.01, \
             day_count = '{day_count}', currency_digits = {digits}, \
             installment_multiple = {multiple}, arrears_tolerance = 0"
        ))
        .await;
        let customer = app
            .approved_customer(&format!("CUSTQ0{n}"), &format!("79079079{n}"))
            .await;
        let loans = [
            app.disbursed_loan(customer, "PERSONAL_STD", "6000000.00", 12)
                .await,
            app.disbursed_loan(customer, "PERSONAL_STD", "9000000.00", 24)
                .await,
        ];
        assert_eq!(
            app.loan_json(&loans[0]).await["terms"]["day_count"],
            day_count.as_str()
        );
        random_movements(&app, &loans, &mut next, &mut day, digits).await;
    }
}

/// Forty random steps on `loans`, amounts in `digits` decimals; the books are checked after each.
async fn random_movements(
    app: &TestApp,
    loans: &[TestLoan; 2],
    next: &mut impl FnMut(u64) -> u64,
    day: &mut u64,
    digits: u32,
) {
    let mut completed: Vec<String> = Vec::new();
    let mut steps = std::collections::BTreeMap::new();
    let in_units = |cents: u64| {
        Decimal::new(cents as i64, 2)
            .round_dp(digits)
            .max(Decimal::ONE)
    };
    for _ in 0..40 {
        let loan = &loans[next(2) as usize];
        let step = match next(6) {
            0 | 1 => {
                let amount = in_units(1 + next(300_000_000));
                let r = app.repay(loan, &amount.to_string()).await;
                assert!(
                    r.status == StatusCode::CREATED || r.status == StatusCode::UNPROCESSABLE_ENTITY,
                    "{}",
                    r.text()
                );
                if r.status == StatusCode::CREATED {
                    completed.push(r.json()["payment_id"].as_str().unwrap().to_owned());
                }
                "repayment"
            }
            2 => {
                let amount = in_units(1 + next(2_000_000));
                let r = app
                    .pay(
                        &app.staff(),
                        &key(),
                        &json!({"loan_id": loan["loan_id"], "payment_type": "FEE", "amount": amount.to_string()}),
                    )
                    .await;
                assert!(
                    r.status == StatusCode::CREATED || r.status == StatusCode::CONFLICT,
                    "{}",
                    r.text()
                );
                if r.status == StatusCode::CREATED {
                    completed.push(r.json()["payment_id"].as_str().unwrap().to_owned());
                }
                "fee"
            }
            3 if !completed.is_empty() => {
                let id = completed.remove(next(completed.len() as u64) as usize);
                let r = app.reverse(&id).await;
                assert!(
                    r.status == StatusCode::OK || r.status == StatusCode::CONFLICT,
                    "{}",
                    r.text()
                );
                "reversal"
            }
            4 => {
                *day += 1 + next(40);
                let run = app.service(*day, *day).await;
                assert_eq!(run["status"], "SUCCEEDED", "{run}");
                "servicing day"
            }
            _ => {
                let path = format!("/v1/loans/{}/payoff", loan.id);
                let quote = app.get(&path, &app.staff()).await;
                if quote.status == StatusCode::OK {
                    let total = quote.json()["total"].as_str().unwrap().to_owned();
                    if money(&json!(total)) > Decimal::ZERO {
                        let r = app.repay(loan, &total).await;
                        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
                        assert_eq!(app.loan_json(loan).await["status"], "CLOSED");
                        completed.push(r.json()["payment_id"].as_str().unwrap().to_owned());
                    }
                }
                "payoff"
            }
        };
        *steps.entry(step).or_insert(0) += 1;
        let problems = disagreements(&app.owner).await;
        assert!(
            problems.is_empty(),
            "after a {step}: {}",
            problems.join("\n")
        );
    }
    assert!(steps.len() >= 4, "{steps:?}");
}

/// Opens `day` for servicing, as a run does first: every active loan queued.
async fn open_day(app: &TestApp, day: NaiveDate) {
    sqlx::query("SELECT core.open_servicing_day($1)")
        .bind(day)
        .execute(&app.owner)
        .await
        .unwrap();
}

/// What a day's servicing and the movements on a loan left: its journal's kinds and balances.
async fn outcome(app: &TestApp, loan: &Value) -> (Vec<String>, Value) {
    let journal = app.journal(loan, &app.staff()).await.json();
    let loan = app.loan_json(loan).await;
    (
        kinds(&journal).iter().map(|k| (*k).to_owned()).collect(),
        json!([
            loan["principal_outstanding"],
            loan["interest_outstanding"],
            loan["penalties_outstanding"],
            loan["status"]
        ]),
    )
}

/// A servicing batch locks only the loans it claimed: a repayment on another loan commits while
/// the batch is open, and a loan the day has not reached yet is serviced first, inside the
/// repayment. A repayment on a loan of the batch waits for that batch, then comes after it. All
/// three end as the serial order (servicing, then the repayment) leaves a loan.
#[tokio::test]
async fn a_servicing_batch_holds_only_its_loans_and_a_queued_loan_is_serviced_before_its_repayment()
{
    let app = Arc::new(TestApp::spawn().await);
    app.ensure_products().await;
    app.set_terms(
        "grace_days = 5, late_fee_amount = 50000, late_fee_rate = 0, default_after_days = 60",
    )
    .await;
    let customer = app.approved_customer("CUSTS03", "750750750").await;
    let mut loans = Vec::new();
    for _ in 0..3 {
        loans.push(
            app.disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 6)
                .await,
        );
    }
    // Batches claim in loan id order.
    loans.sort_by_key(|l| l.id);
    let day = app.today().await + Days::new(45);
    open_day(&app, day).await;
    let mut batch = app.owner.begin().await.unwrap();
    let claimed: i32 = sqlx::query_scalar("SELECT loans FROM core.service_queued($1, NULL, 1)")
        .bind(day)
        .fetch_one(&mut *batch)
        .await
        .unwrap();
    assert_eq!(claimed, 1);

    let other = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        app.repay(&loans[1], "1000000.00"),
    )
    .await
    .expect("a repayment on a loan outside the batch does not wait for it");
    assert_eq!(other.status, StatusCode::CREATED, "{}", other.text());
    let (kinds_inline, _) = outcome(&app, &loans[1]).await;
    assert_eq!(
        kinds_inline,
        ["DISBURSEMENT", "INTEREST_DUE", "LATE_FEE", "REPAYMENT"],
        "the day's servicing came first, inline"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM core.servicing_queue WHERE loan_id = '{}'",
            loans[1].id
        ))
        .await,
        0
    );

    let waiting = {
        let (app, loan) = (app.clone(), loans[0].clone());
        tokio::spawn(async move { app.repay(&loan, "1000000.00").await })
    };
    let mut waited = false;
    for _ in 0..200 {
        let lock_waits = app
            .count(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .await;
        if lock_waits > 0 {
            waited = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        waited,
        "a repayment on the batch's loan waits for the batch"
    );
    assert!(!waiting.is_finished());
    batch.commit().await.unwrap();
    let after_batch = waiting.await.unwrap();
    assert_eq!(
        after_batch.status,
        StatusCode::CREATED,
        "{}",
        after_batch.text()
    );

    // The run goes on with the loan left, and the same repayment comes after it.
    let run = app.service(45, 45).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let serial = app.repay(&loans[2], "1000000.00").await;
    assert_eq!(serial.status, StatusCode::CREATED, "{}", serial.text());
    let expected = outcome(&app, &loans[2]).await;
    assert_eq!(
        expected.0,
        ["DISBURSEMENT", "INTEREST_DUE", "LATE_FEE", "REPAYMENT"]
    );
    for loan in &loans[..2] {
        assert_eq!(outcome(&app, loan).await, expected, "{}", loan.number);
    }
    assert_eq!(
        app.count("SELECT count(*) FROM core.servicing_queue").await,
        0
    );
    assert_books_reconcile(&app).await;
}

/// A day's servicing in batches of one loan, while four tellers make random repayments,
/// reversals and payoffs on the same loans (half of them under actual/365 in whole đồng): the
/// books reconcile, every loan was serviced for the day, and servicing the same day again, twice,
/// changes nothing the second time.
#[tokio::test]
async fn servicing_interleaved_with_random_movements_keeps_the_books_and_twice_changes_nothing() {
    let app = Arc::new(TestApp::spawn().await);
    app.ensure_products().await;
    app.set_terms(
        "grace_days = 3, late_fee_amount = 20000, late_fee_rate = 0.01, prepayment_fee_rate = 0.01",
    )
    .await;
    let mut loans = Vec::new();
    for (code, id_number) in [("CUSTR01", "760760760"), ("CUSTR02", "770770770")] {
        let customer = app.approved_customer(code, id_number).await;
        for _ in 0..5 {
            // Every other loan under actual/365 in whole đồng, the others under the old books'
            // twelfth of the rate in cents.
            app.set_terms(if loans.len() % 2 == 1 {
                "day_count = 'ACTUAL_365_FIXED', currency_digits = 0, installment_multiple = 1000"
            } else {
                "day_count = 'THIRTY_360_MONTHLY', currency_digits = 2, installment_multiple = 0.01"
            })
            .await;
            loans.push(
                app.disbursed_loan(customer, "PERSONAL_STD", "6000000.00", 12)
                    .await,
            );
        }
    }
    let loans = Arc::new(loans);
    let day = app.today().await + Days::new(40);
    open_day(&app, day).await;

    let servicing = {
        let owner = app.owner.clone();
        tokio::spawn(async move {
            let mut after: Option<uuid::Uuid> = None;
            loop {
                let mut tx = owner.begin().await.unwrap();
                let last: Option<uuid::Uuid> =
                    sqlx::query_scalar("SELECT last_loan FROM core.service_queued($1, $2, 1)")
                        .bind(day)
                        .bind(after)
                        .fetch_one(&mut *tx)
                        .await
                        .unwrap();
                tx.commit().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                match last {
                    Some(last) => after = Some(last),
                    None => {
                        let closed: bool =
                            sqlx::query_scalar("SELECT core.close_servicing_day($1)")
                                .bind(day)
                                .fetch_one(&owner)
                                .await
                                .unwrap();
                        if closed {
                            return;
                        }
                        after = None;
                    }
                }
            }
        })
    };
    let tellers: Vec<_> = (0..4u64)
        .map(|teller| {
            let (app, loans) = (app.clone(), loans.clone());
            tokio::spawn(async move {
                let mut next = draws(0x5eed + teller);
                let mut paid: Vec<String> = Vec::new();
                for _ in 0..8 {
                    let index = next(loans.len() as u64) as usize;
                    let loan = &loans[index];
                    let digits = if index % 2 == 1 { 0 } else { 2 };
                    match next(4) {
                        0 | 1 => {
                            let amount = Decimal::new(1 + next(150_000_000) as i64, 2)
                                .round_dp(digits)
                                .max(Decimal::ONE);
                            let r = app.repay(loan, &amount.to_string()).await;
                            assert!(
                                [
                                    StatusCode::CREATED,
                                    StatusCode::UNPROCESSABLE_ENTITY,
                                    StatusCode::CONFLICT
                                ]
                                .contains(&r.status),
                                "{}",
                                r.text()
                            );
                            if r.status == StatusCode::CREATED {
                                paid.push(r.json()["payment_id"].as_str().unwrap().to_owned());
                            }
                        }
                        2 if !paid.is_empty() => {
                            let id = paid.remove(next(paid.len() as u64) as usize);
                            let r = app.reverse(&id).await;
                            assert!(
                                r.status == StatusCode::OK || r.status == StatusCode::CONFLICT,
                                "{}",
                                r.text()
                            );
                        }
                        _ => {
                            let quote = app
                                .get(&format!("/v1/loans/{}/payoff", loan.id), &app.staff())
                                .await;
                            if quote.status == StatusCode::OK {
                                let total = quote.json()["total"].as_str().unwrap().to_owned();
                                // Servicing may post between the quote and the payment: then the
                                // quote is short or refused, never half applied.
                                let r = app.repay(loan, &total).await;
                                assert!(
                                    [
                                        StatusCode::CREATED,
                                        StatusCode::UNPROCESSABLE_ENTITY,
                                        StatusCode::CONFLICT
                                    ]
                                    .contains(&r.status),
                                    "{}",
                                    r.text()
                                );
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for teller in tellers {
        teller.await.unwrap();
    }
    servicing.await.unwrap();
    assert_books_reconcile(&app).await;
    // Every loan still active saw the day: its first installment's interest is posted.
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM core.loans l JOIN core.loan_installments i USING (loan_id) \
             WHERE l.status IN ('DISBURSED', 'DEFAULTED') AND i.installment_number = 1 \
               AND i.due_date <= '{day}' AND i.interest_posted < i.interest_due"
        ))
        .await,
        0
    );
    app.service(40, 40).await;
    let state = "SELECT (SELECT count(*) FROM core.journal_entries) * 1000000 \
                 + (SELECT sum(version) FROM core.loans)";
    let before = app.count(state).await;
    let run = app.service(40, 40).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(
        app.count(state).await,
        before,
        "the same day again changes nothing"
    );
    assert_books_reconcile(&app).await;
}

/// A batch never waits for a loan another transaction holds (a repayment in flight): it services
/// the others, leaves that one queued, and a later batch takes it up.
#[tokio::test]
async fn a_batch_skips_a_loan_another_transaction_holds_and_a_later_batch_takes_it_up() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUSTS04", "780780780").await;
    let mut loans = Vec::new();
    for _ in 0..2 {
        loans.push(
            app.disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 6)
                .await,
        );
    }
    let day = app.today().await + Days::new(45);
    open_day(&app, day).await;
    let mut holder = app.owner.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM core.loans WHERE loan_id = $1 FOR UPDATE")
        .bind(loans[0].id)
        .execute(&mut *holder)
        .await
        .unwrap();
    let batch = |after: Option<uuid::Uuid>| {
        let owner = app.owner.clone();
        async move {
            let (loans, skipped): (i32, i32) =
                sqlx::query_as("SELECT loans, skipped FROM core.service_queued($1, $2, 10)")
                    .bind(day)
                    .bind(after)
                    .fetch_one(&owner)
                    .await
                    .unwrap();
            (loans, skipped)
        }
    };
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), batch(None))
        .await
        .expect("the batch does not wait for the held loan");
    assert_eq!(first, (1, 1));
    let closed = "SELECT count(*) FROM core.servicing_days WHERE finished_at IS NOT NULL";
    sqlx::query("SELECT core.close_servicing_day($1)")
        .bind(day)
        .execute(&app.owner)
        .await
        .unwrap();
    assert_eq!(app.count(closed).await, 0, "a loan is still queued");
    holder.commit().await.unwrap();
    assert_eq!(batch(None).await, (1, 0));
    sqlx::query("SELECT core.close_servicing_day($1)")
        .bind(day)
        .execute(&app.owner)
        .await
        .unwrap();
    assert_eq!(app.count(closed).await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM core.journal_entries WHERE kind = 'INTEREST_DUE'")
            .await,
        2,
        "both loans serviced for the day"
    );
}

/// While one instance runs servicing (it holds the job's lock and has a day open), another
/// instance's scheduler round lends its workers: they take the day's batches, and the run's
/// day is left for that run to close and record.
#[tokio::test]
async fn another_instance_helps_with_the_day_a_running_servicing_has_open() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUSTS05", "790790791").await;
    for _ in 0..3 {
        app.disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 6)
            .await;
    }
    let day = app.today().await + Days::new(45);
    open_day(&app, day).await;
    let mut running = app.owner.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lakehouse_api::domain::jobs::scheduler::SERVICING_LOCK)
        .execute(&mut *running)
        .await
        .unwrap();
    let session = app.scheduler_session();
    let run =
        lakehouse_api::domain::jobs::scheduler::service_if_due(&app.state.db.pool, &session, 2)
            .await
            .unwrap();
    assert!(run.is_none(), "the other instance's run is the day's run");
    assert_eq!(
        app.count("SELECT count(*) FROM core.servicing_queue").await,
        0,
        "the helping workers took every batch"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM core.journal_entries WHERE kind = 'INTEREST_DUE'")
            .await,
        3
    );
    assert_eq!(
        app.count("SELECT count(*) FROM core.servicing_days WHERE finished_at IS NULL")
            .await,
        1,
        "closing the day is the run's"
    );
    running.rollback().await.unwrap();
}

impl TestApp {
    /// Moves a loan paid out today `months` months into the past (its payout, due dates and
    /// maturity), so that its first installments can be paid and serviced on their own days.
    async fn paid_out_months_ago(&self, loan: &Value, months: i32) {
        sqlx::query(
            "UPDATE core.loan_installments SET due_date = due_date - make_interval(months => $2) \
             WHERE loan_id = $1::uuid; \
             ",
        )
        .bind(loan["loan_id"].as_str().unwrap())
        .bind(months)
        .execute(&self.owner)
        .await
        .unwrap();
        sqlx::query(
            "UPDATE core.loans SET disbursement_date = disbursement_date - make_interval(months => $2), \
                 maturity_date = maturity_date - make_interval(months => $2), \
                 next_due_date = next_due_date - make_interval(months => $2) \
             WHERE loan_id = $1::uuid",
        )
        .bind(loan["loan_id"].as_str().unwrap())
        .bind(months)
        .execute(&self.owner)
        .await
        .unwrap();
    }

    /// Services every loan for each day from `from` to `to` (business days in the past).
    async fn service_days(&self, from: NaiveDate, to: NaiveDate) {
        let days = servicing::Days {
            from,
            to,
            rehearsal: false,
        };
        servicing::run(&Session::Owner(self.owner.clone()), days, 1)
            .await
            .unwrap();
    }

    /// A branch repayment of `amount` dated noon UTC of `on`.
    async fn repay_on(&self, loan: &Value, amount: Decimal, on: NaiveDate) {
        let mut body = crate::helpers::repayment(loan, &amount.to_string());
        body["payment_date"] = json!(format!("{on}T12:00:00Z"));
        let paid = self.pay(&self.staff(), &key(), &body).await;
        assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text());
    }

    /// The loan's late fees: (installment, business day, amount).
    async fn late_fees(&self, loan: &Value) -> Vec<(i64, String, String)> {
        let journal = self.journal(loan, &self.staff()).await.json();
        journal["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "LATE_FEE")
            .map(|e| {
                (
                    e["installment_number"].as_i64().unwrap(),
                    e["business_date"].as_str().unwrap().to_owned(),
                    e["lines"][0]["amount"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

/// The first installment of 50,000,000 at 12.5% over 24 months.
const FIRST_INSTALLMENT: &str = "2365365.41";

/// An installment short by no more than the loan's arrears tolerance counts as paid for late
/// fees, and the shortfall stays owed; with no tolerance the same shortfall is late.
#[tokio::test]
async fn an_installment_short_within_the_tolerance_draws_no_late_fee() {
    let app = TestApp::spawn().await;
    app.ensure_products().await;
    app.set_terms(
        "grace_days = 5, late_fee_amount = 50000, late_fee_rate = 0, arrears_tolerance = 1",
    )
    .await;
    let first = app.approved_customer("CUSTR01", "741741741").await;
    let tolerant = app
        .disbursed_loan(first, "PERSONAL_STD", "50000000.00", 24)
        .await;
    app.set_terms("arrears_tolerance = 0").await;
    let second = app.approved_customer("CUSTR02", "742742742").await;
    let strict = app
        .disbursed_loan(second, "PERSONAL_STD", "50000000.00", 24)
        .await;
    assert_eq!(
        app.loan_json(&tolerant).await["terms"]["arrears_tolerance"],
        "1.00"
    );
    for loan in [&tolerant, &strict] {
        app.paid_out_months_ago(loan, 3).await;
    }
    let due: NaiveDate = app.loan_json(&tolerant).await["next_due_date"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let whole_dong = Decimal::new(2_365_365, 0);
    assert_eq!(whole_dong, money(&json!(FIRST_INSTALLMENT)).trunc());
    for loan in [&tolerant, &strict] {
        app.repay_on(loan, whole_dong, due).await;
    }
    app.service_days(due, due + Days::new(6)).await;
    assert_eq!(app.late_fees(&tolerant).await, []);
    assert_eq!(
        app.late_fees(&strict).await,
        [(1, (due + Days::new(6)).to_string(), "50000.00".to_owned())]
    );
    // The 0.41 stays owed on the tolerant loan: its first installment is not paid.
    let installments = app
        .get(
            &format!(
                "/v1/loans/{}/installments",
                tolerant["loan_id"].as_str().unwrap()
            ),
            &app.staff(),
        )
        .await
        .json();
    assert_eq!(
        installments["installments"][0]["remaining"], "0.41",
        "{installments}"
    );
    assert_books_reconcile(&app).await;
}

/// No late fee on an installment that the payments received for it would have paid, had they
/// not gone to an earlier late fee (16 CFR 444.4): the first installment, paid late, draws its
/// fee; the second, paid in full on its due date, does not. Under FEES_FIRST the late payment
/// went to the fee first and the rule holds the second fee back; under INSTALLMENTS_FIRST the
/// late payment paid the installment and the fee stays owed. Paid short by more than the fee
/// took, the second installment does draw its fee.
#[tokio::test]
async fn a_late_fee_never_makes_the_next_installment_late() {
    let app = TestApp::spawn().await;
    app.ensure_products().await;
    let mut loans = Vec::new();
    for (allocation, code, id) in [
        ("FEES_FIRST", "CUSTP01", "751751751"),
        ("FEES_FIRST", "CUSTP02", "752752752"),
        ("INSTALLMENTS_FIRST", "CUSTP03", "753753753"),
    ] {
        app.set_terms(&format!(
            "grace_days = 5, late_fee_amount = 50000, late_fee_rate = 0, \
             payment_allocation = '{allocation}'"
        ))
        .await;
        let customer = app.approved_customer(code, id).await;
        let loan = app
            .disbursed_loan(customer, "PERSONAL_STD", "50000000.00", 24)
            .await;
        assert_eq!(
            app.loan_json(&loan).await["terms"]["payment_allocation"],
            allocation
        );
        app.paid_out_months_ago(&loan, 3).await;
        loans.push(loan);
    }
    let schedule = app
        .get(
            &format!(
                "/v1/loans/{}/installments",
                loans[0]["loan_id"].as_str().unwrap()
            ),
            &app.staff(),
        )
        .await
        .json();
    let rows = schedule["installments"].as_array().unwrap();
    let amount = |row: &Value| money(&row["principal_due"]) + money(&row["interest_due"]);
    let (first, second) = (amount(&rows[0]), amount(&rows[1]));
    let due = |row: &Value| -> NaiveDate { row["due_date"].as_str().unwrap().parse().unwrap() };
    let (d1, d2) = (due(&rows[0]), due(&rows[1]));

    // Nothing paid by the end of the grace days: the first installment's fee.
    app.service_days(d1, d1 + Days::new(6)).await;
    for loan in &loans {
        app.repay_on(loan, first, d1 + Days::new(7)).await;
    }
    app.service_days(d1 + Days::new(7), d2 - Days::new(1)).await;
    // The second installment in full on its day; one twin pays 100.00 less.
    for (loan, paid) in [
        (&loans[0], second),
        (&loans[1], second - Decimal::new(100, 0)),
        (&loans[2], second),
    ] {
        app.repay_on(loan, paid, d2).await;
    }
    app.service_days(d2, d2 + Days::new(6)).await;

    let fee_on_first = (1, (d1 + Days::new(6)).to_string(), "50000.00".to_owned());
    for loan in [&loans[0], &loans[2]] {
        assert_eq!(
            app.late_fees(loan).await,
            std::slice::from_ref(&fee_on_first)
        );
    }
    assert_eq!(
        app.late_fees(&loans[1]).await,
        [
            fee_on_first,
            (2, (d2 + Days::new(6)).to_string(), "50000.00".to_owned())
        ]
    );
    // Installments first: both installments are paid and the fee is still owed.
    let owed = app.loan_json(&loans[2]).await;
    assert_eq!(owed["penalties_outstanding"], "50000.00");
    assert_eq!(owed["next_due_date"], rows[2]["due_date"]);
    assert_books_reconcile(&app).await;
}

/// Under CREDIT terms a repayment above the payoff pays the loan off and leaves the rest owed
/// back on LOAN_OVERPAYMENT, the loan OVERPAID; the refund pays it out and closes the loan, once,
/// whatever the replays. Reversing the overpayment before the refund reopens the loan; after it,
/// the reversal is refused. Under REFUSE terms the same repayment is 422.
#[tokio::test]
async fn an_overpayment_is_a_credit_until_refunded() {
    let app = TestApp::spawn().await;
    app.ensure_products().await;
    app.set_terms("overpayment = 'CREDIT'").await;
    let mut loans = Vec::new();
    for (code, id) in [("CUSTO01", "761761761"), ("CUSTO02", "762762762")] {
        let customer = app.approved_customer(code, id).await;
        loans.push(
            app.disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 6)
                .await,
        );
    }
    app.set_terms("overpayment = 'REFUSE'").await;
    let customer = app.approved_customer("CUSTO03", "763763763").await;
    let refusing = app
        .disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 6)
        .await;
    let payoff = |loan: &Value| {
        let path = format!("/v1/loans/{}/payoff", loan["loan_id"].as_str().unwrap());
        let app = &app;
        async move { money(&app.get(&path, &app.staff()).await.json()["total"]) }
    };
    let credit = |loan: &Value| {
        let id = loan["loan_id"].as_str().unwrap().to_owned();
        let app = &app;
        async move {
            sqlx::query_scalar::<_, Decimal>(
                "SELECT coalesce(sum(amount), 0) FROM core.journal_lines \
                 WHERE loan_id = $1::uuid AND account = 'LOAN_OVERPAYMENT'",
            )
            .bind(id)
            .fetch_one(&app.owner)
            .await
            .unwrap()
        }
    };
    let extra = Decimal::new(10_000, 0);
    let mut paid = Vec::new();
    for loan in &loans {
        let total = payoff(loan).await + extra;
        let response = app
            .pay(
                &app.staff(),
                &key(),
                &crate::helpers::repayment(loan, &total.to_string()),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text());
        paid.push(response.json()["payment_id"].as_str().unwrap().to_owned());
        let after = app.loan_json(loan).await;
        assert_eq!(after["status"], "OVERPAID");
        assert_eq!(after["principal_outstanding"], "0.00");
        assert_eq!(credit(loan).await, -extra);
    }
    let over = payoff(&refusing).await + Decimal::ONE;
    app.pay(
        &app.staff(),
        &key(),
        &crate::helpers::repayment(&refusing, &over.to_string()),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);

    // The first loan: refunded, once, whatever the replays.
    let refund = |loan: &Value, key: &str| {
        let path = format!("/v1/loans/{}/refund", loan["loan_id"].as_str().unwrap());
        let key = key.to_owned();
        let app = &app;
        async move {
            let request = app
                .request(Method::POST, &path, Some(&app.staff()))
                .header("idempotency-key", key)
                .body(axum::body::Body::empty())
                .unwrap();
            app.send(request).await
        }
    };
    let first = refund(&loans[0], "refund-1").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    assert_eq!(first.json()["status"], "CLOSED");
    let replayed = refund(&loans[0], "refund-1").await;
    assert_eq!(
        (replayed.status, replayed.text()),
        (first.status, first.text())
    );
    refund(&loans[0], "refund-2")
        .await
        .problem(StatusCode::CONFLICT);
    assert_eq!(credit(&loans[0]).await, Decimal::ZERO);
    assert_eq!(
        app.count("SELECT count(*) FROM core.journal_entries WHERE kind = 'REFUND'")
            .await,
        1
    );
    let reverse = |payment: &str| {
        let path = format!("/v1/payments/{payment}/reverse");
        let app = &app;
        async move {
            app.json(
                Method::POST,
                &path,
                &app.staff(),
                &json!({"reason": "bounced"}),
            )
            .await
        }
    };
    reverse(&paid[0]).await.problem(StatusCode::CONFLICT);

    // The second loan takes no more money while it owes a refund; its overpaying repayment
    // reversed before any refund reopens it.
    app.pay(
        &app.staff(),
        &key(),
        &crate::helpers::repayment(&loans[1], "1.00"),
    )
    .await
    .problem(StatusCode::CONFLICT);
    let reversed = reverse(&paid[1]).await;
    assert_eq!(reversed.status, StatusCode::OK, "{}", reversed.text());
    let reopened = app.loan_json(&loans[1]).await;
    assert_eq!(reopened["status"], "DISBURSED");
    assert_eq!(reopened["principal_outstanding"], "12000000.00");
    assert_eq!(credit(&loans[1]).await, Decimal::ZERO);

    // A customer's own transfer above the payoff, on CREDIT terms: pending, then confirmed into
    // a credit.
    app.set_terms("overpayment = 'CREDIT'").await;
    let customer = app.approved_customer("CUSTO04", "764764764").await;
    let mobile = app
        .disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 6)
        .await;
    let total = payoff(&mobile).await + extra;
    let started = app
        .pay(
            &app.customer(customer),
            &key(),
            &crate::helpers::repayment(&mobile, &total.to_string()),
        )
        .await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.text());
    assert_eq!(started.json()["status"], "PENDING");
    let confirm = format!(
        "/v1/payments/{}/confirm",
        started.json()["payment_id"].as_str().unwrap()
    );
    let confirmed = app
        .json(Method::POST, &confirm, &app.staff(), &json!({}))
        .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.text());
    assert_eq!(app.loan_json(&mobile).await["status"], "OVERPAID");
    assert_eq!(credit(&mobile).await, -extra);
    assert_books_reconcile(&app).await;
}

/// A product created with the defaults: actual days over 365, whole đồng, a tolerance of one
/// đồng, installments first; a late fee of 50,000 after 5 grace days.
async fn market_product(app: &TestApp, code: &str, extra: Value) -> Value {
    let mut body = json!({
        "product_code": code, "name": "Personal loan", "product_type": "PERSONAL_LOAN",
        "min_amount": "1000000", "max_amount": "500000000", "min_term_months": 1,
        "max_term_months": 60, "annual_interest_rate": "0.1250", "grace_days": 5,
        "late_fee_amount": "50000"
    });
    for (field, value) in extra.as_object().unwrap() {
        body[field] = value.clone();
    }
    let created = app
        .json(Method::POST, "/v1/products", &app.staff(), &body)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    created.json()
}

/// Half up to the đồng.
fn whole_dong(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
}

/// A customer who pays exactly the installment shown, in whole đồng, on every due date is never
/// in arrears: 50,000,000 at 12.5% over 24 months under ACTUAL_365_FIXED, twelve installments
/// paid and every day serviced, draws no late fee and ends current. Its twin, paying one đồng
/// more short than the tolerance allows, draws the fee exactly once per installment. The
/// schedule is checked against actual/365 computed here: each period's interest is its opening
/// balance × 12.5% × its actual days / 365, half up to the đồng.
#[tokio::test]
async fn paying_the_installment_shown_on_every_due_date_is_never_late() {
    let app = TestApp::spawn().await;
    let product = market_product(&app, "VND_ACT365", json!({})).await;
    for (field, expected) in [
        ("day_count", json!("ACTUAL_365_FIXED")),
        ("currency", json!("VND")),
        ("currency_digits", json!(0)),
        ("installment_multiple", json!("1.00")),
        ("arrears_tolerance", json!("1.00")),
        ("payment_allocation", json!("INSTALLMENTS_FIRST")),
    ] {
        assert_eq!(product[field], expected, "{field}: {product}");
    }
    let exact_customer = app.approved_customer("CUSTV01", "761761761").await;
    let short_customer = app.approved_customer("CUSTV02", "762762762").await;
    let exact = app
        .disbursed_loan(exact_customer, "VND_ACT365", "50000000", 24)
        .await;
    let short = app
        .disbursed_loan(short_customer, "VND_ACT365", "50000000", 24)
        .await;
    let shown = app
        .get(&format!("/v1/loans/{}/schedule", exact.id), &app.staff())
        .await
        .json();
    assert_eq!(shown["day_count"], "ACTUAL_365_FIXED");
    let rows = shown["installments"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 24);
    let (mut balance, mut start) = (Decimal::from(50_000_000), app.today().await);
    for row in &rows {
        let due: NaiveDate = row["due_date"].as_str().unwrap().parse().unwrap();
        let days = (due - start).num_days();
        assert_eq!(row["days"], json!(days), "{row}");
        let interest =
            whole_dong(balance * Decimal::new(125, 3) * Decimal::from(days) / Decimal::from(365));
        assert_eq!(money(&row["interest"]), interest, "{row}");
        assert!(money(&row["total"]).fract().is_zero(), "{row}");
        balance -= money(&row["principal"]);
        (start, balance) = (due, balance);
    }
    assert_eq!(balance, Decimal::ZERO);
    // Level: every total but the last is the same whole đồng.
    assert!(
        rows[..23].iter().all(|r| r["total"] == rows[0]["total"]),
        "{shown}"
    );

    for loan in [&exact, &short] {
        app.paid_out_months_ago(loan, 13).await;
    }
    let installments = app
        .get(
            &format!("/v1/loans/{}/installments", exact.id),
            &app.staff(),
        )
        .await
        .json()["installments"]
        .as_array()
        .unwrap()
        .clone();
    let due = |k: usize| -> NaiveDate {
        installments[k]["due_date"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let total = |k: usize| {
        money(&installments[k]["principal_due"]) + money(&installments[k]["interest_due"])
    };
    for k in 0..12 {
        app.repay_on(&exact, total(k), due(k)).await;
        app.repay_on(&short, total(k) - Decimal::from(2), due(k))
            .await;
        let last_day = if k < 11 {
            due(k + 1) - Days::new(1)
        } else {
            due(k) + Days::new(6)
        };
        app.service_days(due(k), last_day).await;
    }
    let today = app.today().await;
    if due(12) < today {
        app.repay_on(&exact, total(12), due(12)).await;
    }

    assert_eq!(app.late_fees(&exact).await, []);
    let loan = app.loan_json(&exact).await;
    assert_eq!(
        (
            &loan["status"],
            &loan["days_past_due"],
            &loan["penalties_outstanding"]
        ),
        (&json!("DISBURSED"), &json!(0), &json!("0.00")),
        "{loan}"
    );
    let paid = app
        .get(
            &format!("/v1/loans/{}/installments", exact.id),
            &app.staff(),
        )
        .await
        .json();
    for row in &paid["installments"].as_array().unwrap()[..12] {
        assert_eq!(row["status"], "PAID", "{row}");
    }
    let fees = app.late_fees(&short).await;
    assert_eq!(
        fees.iter().map(|f| f.0).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>(),
        "one fee per installment: {fees:?}"
    );
    assert!(fees.iter().all(|f| f.2 == "50000.00"), "{fees:?}");
    assert_eq!(app.loan_json(&short).await["status"], "DISBURSED");
    assert_books_reconcile(&app).await;

    // The đồng has no minor unit: an amount with decimals is 422, naming it.
    let cents = app.repay(&exact, "100000.50").await;
    assert_eq!(
        cents.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        cents.text()
    );
    assert_eq!(cents.json()["errors"][0]["field"], "amount");
    let applied = app
        .apply(
            &app.staff(),
            json!({"customer_id": exact_customer, "product_code": "VND_ACT365",
                   "amount": "50000000.50", "term_months": 24}),
        )
        .await;
    assert_eq!(
        applied.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        applied.text()
    );
    assert_eq!(applied.json()["errors"][0]["field"], "amount");
    assert_books_reconcile(&app).await;
}

/// The other shapes over the API: a weekly product of equal principal at a flat rate, with a
/// broken first period ten days long. Its schedule shows each period's days, interest on the
/// amount lent by actual/365, equal principal, and totals in thousands of đồng; term and first
/// date are checked against the product.
#[tokio::test]
async fn a_weekly_equal_principal_flat_loan_with_a_broken_first_period() {
    let app = TestApp::spawn().await;
    let product = market_product(
        &app,
        "VND_WEEKLY",
        json!({"frequency": "WEEKLY", "amortization": "EQUAL_PRINCIPAL",
               "interest_method": "FLAT", "installment_multiple": "1000"}),
    )
    .await;
    assert_eq!(product["arrears_tolerance"], "1000.00", "{product}");
    let refused = app
        .json(
            Method::POST,
            "/v1/products",
            &app.staff(),
            &json!({"product_code": "BAD_WEEKLY", "name": "x", "product_type": "PERSONAL_LOAN",
                    "min_amount": "1000000", "max_amount": "500000000", "min_term_months": 1,
                    "max_term_months": 60, "annual_interest_rate": "0.1250",
                    "frequency": "WEEKLY", "day_count": "THIRTY_360_MONTHLY"}),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text()
    );
    assert_eq!(refused.json()["errors"][0]["field"], "day_count");

    let customer = app.approved_customer("CUSTW01", "771771771").await;
    let today = app.today().await;
    let first = today + Days::new(10);
    let staff = app.staff();
    let apply = |body: Value| {
        let mut full =
            json!({"customer_id": customer, "product_code": "VND_WEEKLY", "amount": "10000000"});
        for (field, value) in body.as_object().unwrap() {
            full[field] = value.clone();
        }
        app.apply(&staff, full)
    };
    for (body, field) in [
        (json!({"term_months": 3}), "term_months"),
        (json!({"term_periods": 0}), "term_periods"),
        (
            json!({"term_periods": 10, "first_repayment_date": today.to_string()}),
            "first_repayment_date",
        ),
        (
            json!({"term_periods": 10, "first_repayment_date": (today + Days::new(15)).to_string()}),
            "first_repayment_date",
        ),
        (json!({"term_periods": 10000}), "term_periods"),
    ] {
        let r = apply(body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text()
        );
        assert_eq!(r.json()["errors"][0]["field"], field, "{body}");
    }
    let loan = apply(json!({"term_periods": 10, "first_repayment_date": first.to_string()})).await;
    assert_eq!(loan.status, StatusCode::CREATED, "{}", loan.text());
    let loan = loan.json();
    assert_eq!(
        (&loan["term_periods"], &loan["term_months"]),
        (&json!(10), &json!(3)),
        "{loan}"
    );
    assert_eq!(loan["terms"]["frequency"], "WEEKLY");
    let id = loan["loan_id"].as_str().unwrap();
    let shown = app
        .get(&format!("/v1/loans/{id}/schedule"), &app.staff())
        .await
        .json();
    let rows = shown["installments"].as_array().unwrap();
    assert_eq!(rows.len(), 10);
    let mut start = today;
    for (k, row) in rows.iter().enumerate() {
        let due: NaiveDate = row["due_date"].as_str().unwrap().parse().unwrap();
        assert_eq!(due, first + Days::new(7 * k as u64), "{row}");
        let days = (due - start).num_days();
        assert_eq!(row["days"], json!(days), "{row}");
        // Flat: on the amount lent, whatever has been repaid.
        let interest = whole_dong(
            Decimal::from(10_000_000) * Decimal::new(125, 3) * Decimal::from(days)
                / Decimal::from(365),
        );
        assert_eq!(money(&row["interest"]), interest, "{row}");
        if k < 9 {
            // 1,000,000 a week plus the interest, to the thousand.
            let total = money(&row["total"]);
            assert_eq!(total % Decimal::from(1000), Decimal::ZERO, "{row}");
            assert!(
                (total - interest - Decimal::from(1_000_000)).abs() <= Decimal::from(500),
                "{row}"
            );
        }
        start = due;
    }
    assert_eq!(rows[0]["days"], json!(10));
    let lent: Decimal = rows.iter().map(|r| money(&r["principal"])).sum();
    assert_eq!(lent, Decimal::from(10_000_000));

    // A product that changes frequency between an application and its approval: the approval,
    // which pins the new terms, is 409 rather than a loan of 12 months paid out as 12 weeks.
    market_product(&app, "VND_SWITCH", json!({})).await;
    let monthly = app
        .apply(
            &staff,
            json!({"customer_id": customer, "product_code": "VND_SWITCH", "amount": "10000000",
                   "term_months": 12}),
        )
        .await;
    assert_eq!(monthly.status, StatusCode::CREATED, "{}", monthly.text());
    let switched = app
        .json_with(
            Method::PATCH,
            "/v1/products/VND_SWITCH",
            &staff,
            &json!({"frequency": "WEEKLY"}),
            &[("If-Match", "*")],
        )
        .await;
    assert_eq!(switched.status, StatusCode::OK, "{}", switched.text());
    app.act(&staff, &monthly.json(), "approve")
        .await
        .problem(StatusCode::CONFLICT);
}
