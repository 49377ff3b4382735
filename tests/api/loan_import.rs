//! A loan book granted elsewhere comes in through staging (`POST /v1/imports/loans`) and is
//! replayed through the ledger: each imported loan must be the loan the same history gives when
//! it is played through the API with the business day moved.

use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use chrono::{Datelike, Days, Months, NaiveDate};
use lakehouse_api::domain::jobs::{servicing, Session};
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::books::disagreements;
use crate::helpers::{customer_body, TestApp, TestLoan, TestResponse};
use crate::payments::{key, money};

/// One history: paid out `months` months ago (on a day of the month every month has), a term,
/// and which installments are paid when.
struct History {
    code: &'static str,
    months: u32,
    term: i32,
    amount: &'static str,
    /// (installment paid, days after its due date); `None` pays the rest off as one lump.
    paid: Vec<(usize, u64)>,
    /// A lump of principal paid ahead, (days after payout, amount).
    lump: Option<(u64, &'static str)>,
}

fn histories() -> Vec<History> {
    vec![
        // Pays every installment on its due date.
        History {
            code: "IMPA",
            months: 13,
            term: 24,
            amount: "24000000.00",
            paid: (0..12).map(|k| (k, 0)).collect(),
            lump: None,
        },
        // Pays two on time, the third 20 days late (a late fee), then stops: defaulted.
        History {
            code: "IMPB",
            months: 8,
            term: 12,
            amount: "12000000.00",
            paid: vec![(0, 0), (1, 0), (2, 20)],
            lump: None,
        },
        // Paid out three years ago over two years, every installment paid: closed.
        History {
            code: "IMPC",
            months: 36,
            term: 24,
            amount: "6000000.00",
            paid: (0..24).map(|k| (k, 0)).collect(),
            lump: None,
        },
        // Pays the first, then a lump of principal ahead (re-amortised), then the next.
        History {
            code: "IMPD",
            months: 4,
            term: 12,
            amount: "10000000.00",
            paid: vec![(0, 0), (1, 0)],
            lump: Some((40, "3000000.00")),
        },
        // Paid out a month ago, nothing paid yet.
        History {
            code: "IMPE",
            months: 1,
            term: 6,
            amount: "5000000.00",
            paid: vec![],
            lump: None,
        },
    ]
}

/// The payout day of a history: `months` before today, on a day every month has.
fn payout_day(today: NaiveDate, months: u32) -> NaiveDate {
    let back = today - Months::new(months);
    NaiveDate::from_ymd_opt(back.year(), back.month(), back.day().min(28)).unwrap()
}

impl TestApp {
    /// Moves a loan paid out today to `day`: its payout, due dates (a month apart from it),
    /// maturity and next due date.
    async fn paid_out_on(&self, loan: &TestLoan, day: NaiveDate) {
        sqlx::query(
            "UPDATE core.loan_installments \
             SET due_date = ($2::date + make_interval(months => installment_number))::date \
             WHERE loan_id = $1",
        )
        .bind(loan.id)
        .bind(day)
        .execute(&self.owner)
        .await
        .unwrap();
        sqlx::query(
            "UPDATE core.loans l SET disbursement_date = $2::date + time '03:00' AT TIME ZONE 'UTC', \
                 maturity_date = (SELECT max(due_date) FROM core.loan_installments i WHERE i.loan_id = l.loan_id), \
                 next_due_date = (SELECT min(due_date) FROM core.loan_installments i WHERE i.loan_id = l.loan_id) \
             WHERE loan_id = $1",
        )
        .bind(loan.id)
        .bind(day)
        .execute(&self.owner)
        .await
        .unwrap();
    }

    /// Services every loan for each business day from `from` to `to`, as the daily job does.
    async fn service_through(&self, from: NaiveDate, to: NaiveDate) {
        let mut start = from;
        while start <= to {
            let end = (start + Days::new(300)).min(to);
            let days = servicing::Days {
                from: start,
                to: end,
                rehearsal: false,
            };
            servicing::run(&Session::Owner(self.owner.clone()), days, 1)
                .await
                .unwrap();
            start = end + Days::new(1);
        }
    }

    async fn view(&self, path: &str) -> Value {
        let response = self.get(path, &self.staff()).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{path}: {}",
            response.text()
        );
        response.json()
    }

    async fn import_loans(&self, batch: &str, records: &[Value]) -> TestResponse {
        let body: String = records.iter().map(|r| format!("{r}\n")).collect();
        let request = self
            .request(
                Method::POST,
                &format!("/v1/imports/loans?batch_id={batch}&source_system=oldcore"),
                Some(&self.token("etl", None)),
            )
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .body(Body::from(body))
            .unwrap();
        self.send(request).await
    }

    /// Rows of every table an import writes, and the outbox.
    async fn footprint(&self) -> Vec<i64> {
        let mut counts = Vec::new();
        for table in [
            "core.loans",
            "core.loan_installments",
            "core.payments",
            "core.payment_allocations",
            "core.journal_entries",
            "core.journal_lines",
            "core.imported_loans",
            "metadata.outbox_events",
        ] {
            counts.push(self.count(&format!("SELECT count(*) FROM {table}")).await);
        }
        counts
    }
}

/// A repayment of the twin's history: on a business day, an amount.
struct Paid {
    loan: usize,
    on: NaiveDate,
    amount: Decimal,
}

/// What the API shows of a loan that two loans with one history must share.
async fn shape(app: &TestApp, loan_id: &str) -> Value {
    let loan = app.view(&format!("/v1/loans/{loan_id}")).await;
    let schedule = app.view(&format!("/v1/loans/{loan_id}/schedule")).await;
    let installments = app.view(&format!("/v1/loans/{loan_id}/installments")).await;
    let journal = app.view(&format!("/v1/loans/{loan_id}/journal")).await;
    let entries: Vec<Value> = journal["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let lines: Vec<Value> = e["lines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| json!([l["account"], l["amount"]]))
                .collect();
            // The twin's payout entry keeps the day it was really made.
            let day = if e["kind"] == "DISBURSEMENT" {
                Value::Null
            } else {
                e["business_date"].clone()
            };
            json!([e["kind"], day, e["installment_number"], lines])
        })
        .collect();
    // Servicing that catches up over several days writes their entries in one statement, in
    // another order than day by day: the journals are compared as sets of entries.
    let mut entries = entries;
    entries.sort_by_key(|e| e.to_string());
    let mut fields = serde_json::Map::new();
    for field in [
        "status",
        "loan_amount",
        "interest_rate",
        "term_months",
        "maturity_date",
        "principal_outstanding",
        "interest_outstanding",
        "fees_outstanding",
        "penalties_outstanding",
        "total_paid",
        "next_due_date",
        "days_past_due",
    ] {
        fields.insert(field.into(), loan[field].clone());
    }
    json!({
        "loan": fields,
        "schedule": schedule["installments"],
        "installments": installments["installments"],
        "journal": entries,
    })
}

#[tokio::test]
async fn an_imported_loan_is_the_loan_its_history_gives_through_the_api_and_comes_in_once() {
    let app = TestApp::spawn().await;
    app.ensure_products().await;
    sqlx::raw_sql(
        "UPDATE core.products SET grace_days = 5, late_fee_amount = 50000, late_fee_rate = 0, \
         default_after_days = 60 WHERE product_code = 'PERSONAL_STD'",
    )
    .execute(&app.owner)
    .await
    .unwrap();
    let today = app.today().await;
    let histories = histories();

    // The twins: paid out today through the API, moved to their payout day, then played day by
    // day: the daily servicing job, and each repayment at the branch on its own day.
    // Every other borrower banks at a branch, so that each row's office is a choice to get right.
    let branch = |n: usize| if n % 2 == 1 { "HN01" } else { "HO" };
    sqlx::raw_sql(
        "INSERT INTO core.offices (code, name, kind, parent_id) \
         SELECT 'HN01', 'Hà Nội 01', 'BRANCH', office_id FROM core.offices WHERE code = 'HO'",
    )
    .execute(&app.owner)
    .await
    .unwrap();
    let mut twins = Vec::new();
    for (n, h) in histories.iter().enumerate() {
        let twin_customer = app
            .approved_customer(&format!("{}T", h.code), &format!("7700000{n}1"))
            .await;
        let mut importee = customer_body(&format!("{}I", h.code), &format!("7700000{n}2"));
        importee["branch"] = json!(branch(n));
        let created = app
            .json(Method::POST, "/v1/customers", &app.staff(), &importee)
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
        let kyc = app
            .json(
                Method::POST,
                &format!(
                    "/v1/customers/{}/kyc",
                    created.json()["customer_id"].as_str().unwrap()
                ),
                &app.staff(),
                &json!({"decision": "APPROVE"}),
            )
            .await;
        assert_eq!(kyc.status, StatusCode::OK, "{}", kyc.text());
        let twin = app
            .disbursed_loan(twin_customer, "PERSONAL_STD", h.amount, h.term)
            .await;
        app.paid_out_on(&twin, payout_day(today, h.months)).await;
        twins.push(twin);
    }
    let mut paid = Vec::new();
    for (n, h) in histories.iter().enumerate() {
        let rows = app
            .view(&format!("/v1/loans/{}/installments", twins[n].id))
            .await["installments"]
            .as_array()
            .unwrap()
            .clone();
        let due =
            |k: usize| -> NaiveDate { rows[k]["due_date"].as_str().unwrap().parse().unwrap() };
        let total = |k: usize| money(&rows[k]["principal_due"]) + money(&rows[k]["interest_due"]);
        for &(k, late) in &h.paid {
            paid.push(Paid {
                loan: n,
                on: due(k) + Days::new(late),
                amount: total(k),
            });
        }
        if let Some((after, amount)) = h.lump {
            paid.push(Paid {
                loan: n,
                on: payout_day(today, h.months) + Days::new(after),
                amount: amount.parse().unwrap(),
            });
        }
    }
    paid.sort_by_key(|p| (p.on, p.loan));
    assert!(
        paid.iter().all(|p| p.on < today),
        "every repayment is in the past"
    );
    let mut serviced_to = payout_day(today, 36);
    for p in &paid {
        if p.on > serviced_to {
            app.service_through(serviced_to + Days::new(1), p.on).await;
            serviced_to = p.on;
        }
        let mut body = crate::helpers::repayment(&twins[p.loan].body, &p.amount.to_string());
        body["payment_date"] = json!(format!("{}T12:00:00Z", p.on));
        let response = app.pay(&app.staff(), &key(), &body).await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text());
    }
    app.service_through(serviced_to + Days::new(1), today).await;

    // The same histories from the old core, with the balances it holds at cut-over.
    let mut records = Vec::new();
    for (n, h) in histories.iter().enumerate() {
        let twin = app.view(&format!("/v1/loans/{}", twins[n].id)).await;
        let repayments: Vec<Value> = paid
            .iter()
            .filter(|p| p.loan == n)
            .map(|p| json!({"paid_at": format!("{}T12:00:00Z", p.on), "amount": p.amount.to_string()}))
            .collect();
        records.push(json!({
            "source_reference": format!("OLD-{}", h.code),
            "customer_code": format!("{}I", h.code),
            "branch": branch(n),
            "product_code": "PERSONAL_STD",
            "amount": h.amount,
            "annual_interest_rate": "0.1250",
            "term_months": h.term,
            "disbursed_at": format!("{}T03:00:00Z", payout_day(today, h.months)),
            "repayments": repayments,
            "balances": {
                "principal": twin["principal_outstanding"],
                "interest": twin["interest_outstanding"],
                "fees": twin["fees_outstanding"],
                "penalties": twin["penalties_outstanding"],
            },
        }));
    }
    let last_event = app
        .count("SELECT coalesce(max(event_id), 0) FROM metadata.outbox_events")
        .await;
    let imported = app.import_loans("book-1", &records).await;
    assert_eq!(imported.status, StatusCode::OK, "{}", imported.text());
    let report = imported.json();
    assert_eq!(report["imported"], json!(histories.len()), "{report}");
    assert_eq!(report["failed"], json!(0), "{report}");

    for (n, h) in histories.iter().enumerate() {
        let loan_id: String = sqlx::query_scalar(
            "SELECT loan_id::text FROM core.imported_loans WHERE source_reference = $1",
        )
        .bind(format!("OLD-{}", h.code))
        .fetch_one(&app.owner)
        .await
        .unwrap();
        let imported = shape(&app, &loan_id).await;
        let twin = shape(&app, &twins[n].id.to_string()).await;
        assert_eq!(
            imported, twin,
            "{}: imported vs played through the API",
            h.code
        );
    }
    let statuses: Vec<String> = sqlx::query_scalar(
        "SELECT l.status FROM core.imported_loans i JOIN core.loans l USING (loan_id) \
         ORDER BY i.source_reference",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert_eq!(
        statuses,
        ["DISBURSED", "DEFAULTED", "CLOSED", "DISBURSED", "DISBURSED"],
        "the histories reach the states they were chosen for"
    );
    assert!(disagreements(&app.owner).await.is_empty());

    // Every row of the imported loans carries its customer's office: the replay names it
    // instead of having each row stamped (migration 0051).
    for table in [
        "core.loan_installments",
        "core.payments",
        "core.payment_directory",
        "core.payment_allocations",
        "core.schedule_changes",
        "core.journal_entries",
        "core.journal_lines",
    ] {
        let (rows, astray): (i64, i64) = sqlx::query_as(&format!(
            "SELECT count(*), count(*) FILTER (WHERE t.branch_id IS DISTINCT FROM c.branch_id)
             FROM {table} t JOIN core.customers c USING (customer_id)
             WHERE t.customer_id IN (SELECT customer_id FROM core.imported_loans)"
        ))
        .fetch_one(&app.owner)
        .await
        .unwrap();
        assert_eq!(
            astray, 0,
            "{table}: {astray} of {rows} rows in another office"
        );
        assert!(rows > 0 || table == "core.schedule_changes", "{table}");
    }
    let offices: i64 = app
        .count(
            "SELECT count(DISTINCT j.branch_id) FROM core.journal_lines j \
             WHERE j.customer_id IN (SELECT customer_id FROM core.imported_loans)",
        )
        .await;
    assert_eq!(offices, 2, "the imported loans' journal is in both offices");

    // One event per imported loan, none for its history.
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT topic FROM metadata.outbox_events WHERE event_id > $1 ORDER BY event_id",
    )
    .bind(last_event)
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert_eq!(events, vec!["loan_imported"; histories.len()], "{events:?}");

    // The same file again, as another batch: nothing changes; its lines name the loans booked.
    let before = app.footprint().await;
    let again = app.import_loans("book-2", &records).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    assert_eq!(again.json()["imported"], json!(histories.len()));
    assert_eq!(app.footprint().await, before);
    let reposted = app.import_loans("book-1", &records).await;
    assert_eq!(reposted.status, StatusCode::OK, "{}", reposted.text());
    assert_eq!(app.footprint().await, before);
}

/// A record the import cannot take is reported on its line and books nothing; the good lines
/// of the same batch go in.
#[tokio::test]
async fn bad_lines_are_reported_and_book_nothing_and_only_etl_may_import() {
    let app = TestApp::spawn().await;
    app.ensure_products().await;
    app.approved_customer("IMPX", "880000001").await;
    let today = app.today().await;
    // One installment falls due by today: its interest is receivable.
    let payout = payout_day(today, 1);
    let good = json!({
        "source_reference": "OLD-GOOD", "customer_code": "IMPX", "product_code": "PERSONAL_STD",
        "amount": "12000000.00", "annual_interest_rate": "0.1250", "term_months": 12,
        "disbursed_at": format!("{payout}T03:00:00Z"), "repayments": [],
        "balances": {"principal": "12000000.00", "interest": "125000.00"},
    });
    let with = |field: &str, value: Value| {
        let mut record = good.clone();
        record[field] = value;
        record["source_reference"] = json!(format!("OLD-{field}"));
        record
    };
    let lines = vec![
        good.clone(),
        // The source says it owes a cent more than the history gives.
        with(
            "balances",
            json!({"principal": "12000000.01", "interest": "125000.00"}),
        ),
        with("product_code", json!("NO_SUCH")),
        with("customer_code", json!("NOBODY")),
        with("branch", json!("HN01")),
        with(
            "disbursed_at",
            json!(format!("{}T03:00:00Z", today + Days::new(2))),
        ),
        with(
            "repayments",
            json!([{"paid_at": format!("{}T03:00:00Z", payout - Days::new(1)), "amount": "100.00"}]),
        ),
        // More than the payoff.
        with(
            "repayments",
            json!([{"paid_at": format!("{payout}T09:00:00Z"), "amount": "99000000.00"}]),
        )
        .as_object()
        .map(|o| {
            let mut o = o.clone();
            o.insert("source_reference".into(), json!("OLD-overpaid"));
            Value::Object(o)
        })
        .unwrap(),
        with("amount", json!("12000000.001")),
        json!("not a loan"),
    ];
    let staff = app
        .send(
            app.request(Method::POST, "/v1/imports/loans", Some(&app.staff()))
                .header(header::CONTENT_TYPE, "application/x-ndjson")
                .body(Body::from(format!("{good}\n")))
                .unwrap(),
        )
        .await;
    assert_eq!(staff.status, StatusCode::FORBIDDEN, "{}", staff.text());

    let response = app.import_loans("mixed-1", &lines).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let report = response.json();
    assert_eq!(report["imported"], json!(1), "{report}");
    assert_eq!(report["failed"], json!(lines.len() - 1), "{report}");
    let errors: Vec<(i64, String)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line_number"].as_i64().unwrap(),
                e["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expect = [
        (
            2,
            "the replayed balances differ from the source's by more than 0: principal",
        ),
        (3, "unknown product_code NO_SUCH"),
        (4, "customer_code: no customer NOBODY"),
        (5, "branch: HN01 is not the office of customer IMPX (HO)"),
        (6, "disbursed_at: must not be in the future"),
        (7, "repayments[0].paid_at: between the disbursement and now"),
        (8, "repayment 1 of 99000000.00 on"),
        (9, "amount: 12000000.001 has more decimals than"),
        (10, "not a loan record"),
    ];
    assert_eq!(errors.len(), expect.len(), "{errors:?}");
    for ((line, error), (want_line, want)) in errors.iter().zip(expect) {
        assert_eq!(*line, want_line, "{errors:?}");
        assert!(
            error.contains(want),
            "line {line}: {error:?} should say {want:?}"
        );
    }
    // Only the good line's loan exists; nothing of the refused ones stayed.
    assert_eq!(app.count("SELECT count(*) FROM core.loans").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM core.imported_loans").await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM core.payments WHERE payment_type = 'REPAYMENT'")
            .await,
        0
    );
    assert!(disagreements(&app.owner).await.is_empty());
    let get = app
        .get("/v1/imports/loans/mixed-1", &app.token("etl", None))
        .await;
    assert_eq!(get.status, StatusCode::OK, "{}", get.text());
    assert_eq!(get.json()["failed"], report["failed"]);
    // The report reads staging.import_lines as its caller and for its own kind: the batch is
    // not another ETL principal's to read, nor a customer batch.
    app.get(
        "/v1/imports/loans/mixed-1",
        &app.token_for("etl-other", "etl", None),
    )
    .await
    .problem(StatusCode::NOT_FOUND);
    app.get("/v1/imports/mixed-1", &app.token("etl", None))
        .await
        .problem(StatusCode::NOT_FOUND);
}

/// The constraint that refused a statement, or `Ok`.
fn outcome<T>(result: Result<T, sqlx::Error>) -> Result<(), String> {
    result.map(|_| ()).map_err(|e| {
        e.as_database_error()
            .and_then(|d| d.constraint())
            .unwrap_or_default()
            .to_owned()
    })
}

/// A replay defers four keys and checks them when a chunk is done (migration 0052). They stay
/// keys: checked at once unless a transaction defers them, and a row that breaks one is refused
/// when they are checked. A statement's payments all reach the directory, whose keys still hold.
#[tokio::test]
async fn the_keys_a_replay_defers_still_hold_and_each_payment_reaches_the_directory() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("DEFER", "880000009").await;
    let loan = app
        .disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 12)
        .await;
    let deferrable = app
        .count(
            "SELECT count(*) FROM pg_constraint
             WHERE conrelid IN ('core.loans'::regclass, 'core.loan_installments'::regclass)
               AND conname IN ('loans_customer_id_fkey', 'loans_product_code_fkey',
                               'loans_terms_fkey', 'loan_installments_loan_id_fkey')
               AND condeferrable AND NOT condeferred",
        )
        .await;
    assert_eq!(deferrable, 4, "deferrable, and checked at once by default");

    let orphan = format!(
        "INSERT INTO core.loan_installments (loan_id, customer_id, installment_number, due_date,
                                             principal_due, interest_due)
         VALUES ('{}', '{customer}', 1, current_date, 1, 0)",
        uuid::Uuid::now_v7()
    );
    let key = "loan_installments_loan_id_fkey";
    let mut tx = app.owner.begin().await.unwrap();
    let at_once = outcome(sqlx::query(&orphan).execute(&mut *tx).await);
    tx.rollback().await.unwrap();
    assert_eq!(at_once, Err(key.into()), "the counter's check is immediate");

    let mut tx = app.owner.begin().await.unwrap();
    for statement in [
        "SET CONSTRAINTS core.loan_installments_loan_id_fkey DEFERRED",
        orphan.as_str(),
    ] {
        sqlx::query(statement).execute(&mut *tx).await.unwrap();
    }
    let checked = outcome(
        sqlx::query("SET CONSTRAINTS core.loan_installments_loan_id_fkey IMMEDIATE")
            .execute(&mut *tx)
            .await,
    );
    tx.rollback().await.unwrap();
    assert_eq!(checked, Err(key.into()), "a deferred key is checked");

    // Payments inserted by one statement, each (transaction id, client reference, seconds
    // before now): the statement's outcome, and how many of them the directory holds.
    let insert = |rows: &'static str| {
        let (app, loan) = (&app, &loan);
        async move {
            let mut tx = app.owner.begin().await.unwrap();
            let inserted = outcome(
                sqlx::query(&format!(
                    "INSERT INTO core.payments (payment_id, transaction_id, client_reference,
                                                loan_id, customer_id, payment_type, amount,
                                                payment_date, status, channel)
                     SELECT gen_random_uuid(), v.t, v.r, '{}', '{customer}', 'REPAYMENT', 1000,
                            now() - v.s * interval '1 second', 'COMPLETED', 'BRANCH'
                     FROM (VALUES {rows}) AS v(t, r, s)",
                    loan.id
                ))
                .execute(&mut *tx)
                .await,
            );
            let registered: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM core.payment_directory d JOIN core.payments p
                     USING (payment_id)
                 WHERE d.transaction_id LIKE 'DEFER-%'
                   AND (d.transaction_id, d.client_reference, d.customer_id, d.payment_date,
                        d.branch_id)
                       IS NOT DISTINCT FROM (p.transaction_id, p.client_reference,
                                             p.customer_id, p.payment_date, p.branch_id)",
            )
            .fetch_one(&mut *tx)
            .await
            .unwrap_or(-1);
            tx.rollback().await.unwrap();
            (inserted, registered)
        }
    };
    assert_eq!(
        insert("('DEFER-T1', NULL, 0), ('DEFER-T2', 'R1', 0)").await,
        (Ok(()), 2),
        "each payment of the statement is in the directory"
    );
    // The payments' own key allows one transaction id on two dates; the directory's does not.
    assert_eq!(
        insert("('DEFER-T3', NULL, 0), ('DEFER-T3', NULL, 1)")
            .await
            .0,
        Err("payment_directory_transaction_id_key".into())
    );
    assert_eq!(
        insert("('DEFER-T4', 'R2', 0), ('DEFER-T5', 'R2', 0)")
            .await
            .0,
        Err("payment_directory_client_reference_key".into()),
        "a customer's client reference once (409 at the counter)"
    );
}
