//! Portfolio at risk and aging (issue 29, point 1), against an independent recomputation from the
//! journal and the installments.

use axum::http::{Method, StatusCode};
use chrono::{Days, NaiveDate};
use lakehouse_api::domain::jobs::{loan_analytics, Session};
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::helpers::{customer_body, TestApp};

/// (product, loans, outstanding, PAR1, PAR30, PAR60, PAR90 amounts); product NULL is the total.
type ParFigures = (
    Option<String>,
    i64,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
);

fn dec(v: &Value) -> Decimal {
    v.as_str()
        .unwrap_or_else(|| panic!("{v} is not a decimal string"))
        .parse()
        .unwrap()
}

/// Moves loan `loan`'s schedule so that its first installment fell due `age` days ago, as if the
/// loan had been paid out earlier, and its next due date with it.
async fn age(app: &TestApp, loan: &str, age: u64) {
    let today = app.today().await;
    sqlx::query(
        "WITH first AS (SELECT min(due_date) AS d FROM core.loan_installments WHERE loan_id = $1::uuid) \
         UPDATE core.loan_installments i SET due_date = i.due_date - (first.d - $2::date) \
         FROM first WHERE i.loan_id = $1::uuid",
    )
    .bind(loan)
    .bind(today - Days::new(age))
    .execute(&app.owner)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE core.loans l SET next_due_date = (SELECT min(i.due_date) FROM core.loan_installments i \
             WHERE i.loan_id = l.loan_id \
               AND i.principal_due + i.interest_due > i.principal_paid + i.interest_paid) \
         WHERE l.loan_id = $1::uuid",
    )
    .bind(loan)
    .execute(&app.owner)
    .await
    .unwrap();
}

/// The same figures, from the raw journal (balances) and installments (days past due), by
/// product and in total (product NULL): (product, loans, outstanding, par1, par30, par60, par90).
async fn recomputed_par(app: &TestApp) -> Vec<ParFigures> {
    sqlx::query_as(
        "WITH book AS ( \
             SELECT l.loan_id, l.product_code, \
                    (SELECT coalesce(sum(j.amount), 0) FROM core.journal_lines j \
                     WHERE j.loan_id = l.loan_id AND j.account = 'LOAN_PRINCIPAL') AS principal, \
                    coalesce(core.business_date(now()) - ( \
                        SELECT min(i.due_date) FROM core.loan_installments i \
                        WHERE i.loan_id = l.loan_id AND i.due_date <= core.business_date(now()) \
                          AND i.principal_due + i.interest_due > i.principal_paid + i.interest_paid), 0) \
                        AS dpd \
             FROM core.loans l WHERE l.status IN ('DISBURSED', 'DEFAULTED')) \
         SELECT product_code, count(*), sum(principal), \
                coalesce(sum(principal) FILTER (WHERE dpd >= 1), 0), \
                coalesce(sum(principal) FILTER (WHERE dpd >= 31), 0), \
                coalesce(sum(principal) FILTER (WHERE dpd >= 61), 0), \
                coalesce(sum(principal) FILTER (WHERE dpd >= 91), 0) \
         FROM book GROUP BY ROLLUP (product_code) ORDER BY product_code NULLS LAST",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap()
}

fn par_line(line: &Value) -> ParFigures {
    (
        line["product_code"].as_str().map(str::to_owned),
        line["loans"].as_i64().unwrap(),
        dec(&line["outstanding"]),
        dec(&line["par1"]["amount"]),
        dec(&line["par30"]["amount"]),
        dec(&line["par60"]["amount"]),
        dec(&line["par90"]["amount"]),
    )
}

fn report_lines(report: &Value) -> Vec<ParFigures> {
    let mut lines: Vec<_> = report["by_product"]
        .as_array()
        .unwrap()
        .iter()
        .map(par_line)
        .collect();
    lines.push(par_line(&report["total"]));
    lines
}

/// Loans of two products, some paid, aged 0 to 200 days past due.
async fn book(app: &TestApp) -> Vec<String> {
    app.ensure_products().await;
    let mut loans = Vec::new();
    let cases = [
        ("PERSONAL_STD", "6000000.00", 6, None),
        ("PERSONAL_STD", "8000000.00", 12, Some(20)),
        ("PERSONAL_STD", "5000000.00", 6, Some(45)),
        ("PERSONAL_STD", "9000000.00", 12, Some(75)),
        ("BUSINESS_STD", "30000000.00", 24, Some(100)),
        ("BUSINESS_STD", "25000000.00", 12, Some(200)),
        ("BUSINESS_STD", "40000000.00", 24, None),
        ("PERSONAL_STD", "7000000.00", 6, Some(31)),
    ];
    for (i, (product, amount, term, aged)) in cases.into_iter().enumerate() {
        let customer = app
            .approved_customer(&format!("RPT-{i:02}"), &format!("61061061{i}"))
            .await;
        let loan = app.disbursed_loan(customer, product, amount, term).await;
        let id = loan["loan_id"].as_str().unwrap().to_owned();
        if i == 1 {
            let paid = app
                .pay(
                    &app.staff(),
                    "rpt-pay",
                    &json!({"loan_id": id, "payment_type": "REPAYMENT", "amount": "500000.00"}),
                )
                .await;
            assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text());
        }
        if let Some(days) = aged {
            age(app, &id, days).await;
        }
        loans.push(id);
    }
    loans
}

#[tokio::test]
async fn par_and_aging_equal_a_recomputation_from_the_journal_and_installments() {
    let app = TestApp::spawn().await;
    book(&app).await;
    let analyst = app.token("analyst", None);
    let report = app.get("/v1/reports/portfolio-at-risk", &analyst).await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.text());
    let report = report.json();
    assert_eq!(report["source"], "LIVE");
    assert_eq!(report_lines(&report), recomputed_par(&app).await);
    // The figures are not all zero: the book has loans in every band.
    let total = &report["total"];
    assert_eq!(total["loans"], 8);
    assert!(dec(&total["par90"]["amount"]) > Decimal::ZERO, "{total}");
    assert!(dec(&total["par60"]["amount"]) > dec(&total["par90"]["amount"]));
    assert!(dec(&total["par1"]["amount"]) < dec(&total["outstanding"]));
    assert_eq!(
        dec(&total["par30"]["ratio"]),
        (dec(&total["par30"]["amount"]) / dec(&total["outstanding"])).round_dp(4)
    );

    // Aging: loans and balances by bucket, against the journal.
    let aging = app.get("/v1/reports/aging", &analyst).await.json();
    let expected: Vec<(String, i64, Decimal, Decimal, Decimal)> = sqlx::query_as(
        "WITH book AS ( \
             SELECT (SELECT coalesce(sum(j.amount), 0) FROM core.journal_lines j \
                     WHERE j.loan_id = l.loan_id AND j.account = 'LOAN_PRINCIPAL') AS principal, \
                    (SELECT coalesce(sum(j.amount), 0) FROM core.journal_lines j \
                     WHERE j.loan_id = l.loan_id AND j.account = 'LOAN_INTEREST') AS interest, \
                    (SELECT coalesce(sum(j.amount), 0) FROM core.journal_lines j \
                     WHERE j.loan_id = l.loan_id AND j.account = 'LOAN_PENALTIES') AS penalties, \
                    coalesce(core.business_date(now()) - ( \
                        SELECT min(i.due_date) FROM core.loan_installments i \
                        WHERE i.loan_id = l.loan_id AND i.due_date <= core.business_date(now()) \
                          AND i.principal_due + i.interest_due > i.principal_paid + i.interest_paid), 0) \
                        AS dpd \
             FROM core.loans l WHERE l.status IN ('DISBURSED', 'DEFAULTED')), \
         bands(name, lo, hi, n) AS (VALUES ('0', 0, 0, 1), ('1-30', 1, 30, 2), ('31-60', 31, 60, 3), \
             ('61-90', 61, 90, 4), ('91-180', 91, 180, 5), ('180+', 181, 100000, 6)) \
         SELECT b.name, count(k.dpd), coalesce(sum(k.principal), 0), coalesce(sum(k.interest), 0), \
                coalesce(sum(k.penalties), 0) \
         FROM bands b LEFT JOIN book k ON k.dpd BETWEEN b.lo AND b.hi GROUP BY b.name, b.n ORDER BY b.n",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap();
    let got: Vec<(String, i64, Decimal, Decimal, Decimal)> = aging["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["bucket"].as_str().unwrap().to_owned(),
                b["loans"].as_i64().unwrap(),
                dec(&b["principal"]),
                dec(&b["interest"]),
                dec(&b["penalties"]),
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert!(got.iter().filter(|b| b.1 > 0).count() >= 5, "{got:?}");
}

#[tokio::test]
async fn a_past_date_reads_its_snapshot_and_a_date_without_one_is_refused() {
    let app = TestApp::spawn().await;
    let loans = book(&app).await;
    let analyst = app.token("analyst", None);
    let today = app.today().await;
    let yesterday = today - Days::new(1);
    let path = |date: NaiveDate| format!("/v1/reports/portfolio-at-risk?date={date}");
    // No snapshot yet: any past date is before the first one.
    let refused = app.get(&path(yesterday), &analyst).await;
    assert_eq!(
        refused.problem(StatusCode::UNPROCESSABLE_ENTITY)["errors"][0]["field"],
        "date"
    );
    app.get(&path(today + Days::new(1)), &analyst)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);

    // The daily job's snapshot, dated yesterday (as yesterday's run would have left it).
    let run = loan_analytics::snapshot(&Session::Owner(app.owner.clone()), today)
        .await
        .unwrap();
    assert_eq!(run.records_written, Some(8));
    sqlx::query("UPDATE analytics.loan_analytics SET snapshot_date = $1")
        .bind(yesterday)
        .execute(&app.owner)
        .await
        .unwrap();
    let live = app.get(&path(today), &analyst).await.json();
    // Today moves on: one loan is paid off entirely after the snapshot.
    let quote = app
        .get(&format!("/v1/loans/{}/payoff", loans[0]), &app.staff())
        .await
        .json();
    let paid = app
        .pay(
            &app.staff(),
            "rpt-payoff",
            &json!({"loan_id": loans[0], "payment_type": "REPAYMENT", "amount": quote["total"]}),
        )
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text());
    let past = app.get(&path(yesterday), &analyst).await.json();
    assert_eq!(past["source"], "SNAPSHOT");
    assert_eq!(
        report_lines(&past),
        report_lines(&live),
        "yesterday as it was"
    );
    let now = app.get(&path(today), &analyst).await.json();
    assert_eq!(now["total"]["loans"], 7);
    // A day between the first snapshot and today that has none: refused, not guessed.
    sqlx::query("UPDATE analytics.loan_analytics SET snapshot_date = snapshot_date - 2")
        .execute(&app.owner)
        .await
        .unwrap();
    app.get(&path(yesterday), &analyst)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    let aging = app
        .get(
            &format!("/v1/reports/aging?date={}", yesterday - Days::new(2)),
            &analyst,
        )
        .await;
    assert_eq!(aging.status, StatusCode::OK, "{}", aging.text());
    assert_eq!(aging.json()["source"], "SNAPSHOT");
}

#[tokio::test]
async fn a_teller_s_reports_hold_their_branch_s_loans_only() {
    let app = TestApp::spawn().await;
    book(&app).await;
    let admin = app.token("admin", None);
    let office = json!({"code": "HN01", "name": "Ha Noi", "kind": "BRANCH", "parent": "HO"});
    assert_eq!(
        app.json(Method::POST, "/v1/offices", &admin, &office)
            .await
            .status,
        StatusCode::CREATED
    );
    let teller = app.token_at("teller-rpt", "staff", None, Some("HN01"));
    let mut body = customer_body("RPT-HN", "610610699");
    body["branch"] = json!("HN01");
    let customer = app
        .json(Method::POST, "/v1/customers", &teller, &body)
        .await
        .json();
    let id = customer["customer_id"].as_str().unwrap();
    let kyc = app
        .json(
            Method::POST,
            &format!("/v1/customers/{id}/kyc"),
            &teller,
            &json!({"decision": "APPROVE"}),
        )
        .await;
    assert_eq!(kyc.status, StatusCode::OK);
    let applied = app
        .apply(
            &teller,
            json!({"customer_id": id, "product_code": "PERSONAL_STD", "amount": "6000000.00", "term_months": 6}),
        )
        .await
        .json();
    for verb in ["approve", "disburse"] {
        assert_eq!(
            app.act(&teller, &applied, verb).await.status,
            StatusCode::OK
        );
    }
    let mine = app
        .get("/v1/reports/portfolio-at-risk", &teller)
        .await
        .json();
    assert_eq!(mine["total"]["loans"], 1);
    assert_eq!(mine["total"]["outstanding"], "6000000.00");
    let all = app.get("/v1/reports/aging", &app.staff()).await.json();
    let loans: i64 = all["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["loans"].as_i64().unwrap())
        .sum();
    assert_eq!(loans, 9, "the head office sees every branch");
    app.get("/v1/reports/aging", &app.customer(id.parse().unwrap()))
        .await
        .problem(StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_registers_list_a_range_s_payments_with_its_totals_page_by_page() {
    let app = TestApp::spawn().await;
    book(&app).await;
    let today = app.today().await;
    let analyst = app.token("analyst", None);
    let expected: (i64, Decimal) = sqlx::query_as(
        "SELECT count(*), sum(amount) FROM core.payments \
         WHERE payment_type = 'DISBURSEMENT' AND status = 'COMPLETED'",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(expected.0, 8);
    // Three pages of three: every disbursement once, each page with the range's totals.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/reports/disbursements?from={today}&to={today}&limit=3");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = app.get(&path, &analyst).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        let page = page.json();
        assert_eq!(page["count"], expected.0);
        assert_eq!(dec(&page["total"]), expected.1);
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["payment_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let distinct: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!((seen.len(), distinct.len()), (8, 8));
    let repayments = app
        .get(
            &format!("/v1/reports/repayments?from={today}&to={today}"),
            &analyst,
        )
        .await
        .json();
    assert_eq!(
        (repayments["count"].as_i64(), repayments["total"].as_str()),
        (Some(1), Some("500000.00"))
    );
    // Yesterday has none; a reversed range and a range over a year are refused.
    let yesterday = today - Days::new(1);
    let none = app
        .get(
            &format!("/v1/reports/repayments?from={yesterday}&to={yesterday}"),
            &analyst,
        )
        .await
        .json();
    assert_eq!(
        (none["count"].as_i64(), none["total"].as_str()),
        (Some(0), Some("0.00"))
    );
    for (from, to) in [(today, yesterday), (today - Days::new(400), today)] {
        app.get(
            &format!("/v1/reports/disbursements?from={from}&to={to}"),
            &analyst,
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    }
}

/// Whether an executed plan read any partition of the table named `table` whole (runtime
/// pruning leaves the partitions outside a range unexecuted).
fn seq_scans(plan: &Value, table: &str) -> bool {
    match plan {
        Value::Object(node) => {
            (node.get("Node Type").and_then(Value::as_str) == Some("Seq Scan")
                && node
                    .get("Actual Loops")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    > 0
                && node
                    .get("Relation Name")
                    .and_then(Value::as_str)
                    .is_some_and(|r| r.starts_with(table)))
                || node.values().any(|v| seq_scans(v, table))
        }
        Value::Array(items) => items.iter().any(|v| seq_scans(v, table)),
        _ => false,
    }
}

#[tokio::test]
async fn the_registers_read_a_range_of_the_payments_date_index() {
    use lakehouse_api::api::reports::repo::{REGISTER_PAGE, REGISTER_TOTALS};
    let app = TestApp::spawn().await;
    book(&app).await;
    // Enough payments over two years that reading a table whole would show in the plan.
    sqlx::raw_sql(
        "SELECT core.ensure_payments_partition(date_trunc('month', now()) - make_interval(months => m)) \
         FROM generate_series(0, 24) m; \
         INSERT INTO core.payments (payment_id, transaction_id, loan_id, customer_id, payment_type, \
             amount, payment_date, status) \
         SELECT gen_random_uuid(), 'BULK-' || i, p.loan_id, p.customer_id, 'REPAYMENT', 1000, \
                now() - make_interval(days => i % 720), 'COMPLETED' \
         FROM generate_series(1, 60000) i, \
              (SELECT loan_id, customer_id FROM core.payments LIMIT 1) p; \
         ANALYZE core.payments;",
    )
    .execute(&app.owner)
    .await
    .unwrap();
    let today = app.today().await;
    let from = today - Days::new(7);
    let explain = |sql: &str| format!("EXPLAIN (ANALYZE, FORMAT JSON) {sql}");
    let mut conn = app.owner.acquire().await.unwrap();
    let page: Value = sqlx::query_scalar(&explain(REGISTER_PAGE))
        .bind("REPAYMENT")
        .bind(from)
        .bind(today)
        .bind(None::<chrono::DateTime<chrono::Utc>>)
        .bind(None::<uuid::Uuid>)
        .bind(51i64)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let totals: Value = sqlx::query_scalar(&explain(REGISTER_TOTALS))
        .bind("REPAYMENT")
        .bind(from)
        .bind(today)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    for (name, plan) in [("page", &page), ("totals", &totals)] {
        assert!(!seq_scans(plan, "payments"), "{name}: {plan:#}");
        // Each month's copy of idx_payments_date_id, read over the range.
        let text = plan.to_string();
        assert!(
            text.contains("payment_date_payment_id_idx"),
            "{name}: {plan:#}"
        );
        assert!(text.contains("Index Cond"), "{name}: {plan:#}");
    }
}

#[tokio::test]
async fn the_collection_sheet_lists_every_installment_due_and_unpaid_page_by_page() {
    let app = TestApp::spawn().await;
    book(&app).await;
    let expected: Vec<(String, i32, Decimal)> = sqlx::query_as(
        "SELECT l.loan_number, i.installment_number, \
                i.principal_due - i.principal_paid + i.interest_due - i.interest_paid \
         FROM core.loans l JOIN core.loan_installments i ON i.loan_id = l.loan_id \
         WHERE l.status IN ('DISBURSED', 'DEFAULTED') AND i.due_date <= core.business_date(now()) \
           AND i.principal_due + i.interest_due > i.principal_paid + i.interest_paid \
         ORDER BY 1, 2",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert!(expected.len() > 10, "{expected:?}");
    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/v1/reports/collection-sheet?limit=4".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = app.get(&path, &app.staff()).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        let page = page.json();
        pages += 1;
        for line in page["data"].as_array().unwrap() {
            assert_eq!(
                line["phone_number"], "+84901234567",
                "staff see it in clear"
            );
            assert_eq!(
                dec(&line["to_collect"]),
                dec(&line["principal"]) + dec(&line["interest"])
            );
            got.push((
                line["loan_number"].as_str().unwrap().to_owned(),
                i32::try_from(line["installment_number"].as_i64().unwrap()).unwrap(),
                dec(&line["to_collect"]),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert!(pages > 2);
    got.sort();
    assert_eq!(got, expected);

    // Analysts see the phone masked; CSV has a header and a line per installment.
    let analyst = app.token("analyst", None);
    let masked = app
        .get("/v1/reports/collection-sheet?limit=1", &analyst)
        .await
        .json();
    assert_eq!(masked["data"][0]["phone_number"], "*********567");
    let csv = app
        .send(
            app.request(
                Method::GET,
                "/v1/reports/collection-sheet?limit=200",
                Some(&app.staff()),
            )
            .header("accept", "text/csv")
            .body(axum::body::Body::empty())
            .unwrap(),
        )
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let text = csv.text();
    let mut lines = text.lines();
    assert!(lines
        .next()
        .unwrap()
        .starts_with("loan_number,installment_number,due_date"));
    assert_eq!(lines.count(), expected.len());
}

#[tokio::test]
async fn the_collection_sheet_reads_a_range_of_the_loans_next_due_dates() {
    use lakehouse_api::api::reports::repo::SHEET;
    let app = TestApp::spawn().await;
    let loans = book(&app).await;
    // 50,000 more loans on the books whose next due date is weeks ahead.
    sqlx::query(
        "INSERT INTO core.loans \
         SELECT (jsonb_populate_record(l, jsonb_build_object( \
                    'loan_id', gen_random_uuid(), 'loan_number', 'LNX' || lpad(i::text, 9, '0'), \
                    'next_due_date', core.business_date(now()) + 30 + i % 300))).* \
         FROM core.loans l, generate_series(1, 50000) i WHERE l.loan_id = $1::uuid",
    )
    .bind(&loans[6])
    .execute(&app.owner)
    .await
    .unwrap();
    // And their first installments, falling due with them.
    sqlx::raw_sql(
        "INSERT INTO core.loan_installments (loan_id, customer_id, installment_number, due_date, \
             principal_due, interest_due) \
         SELECT loan_id, customer_id, 1, next_due_date, 100000, 1000 FROM core.loans \
         WHERE loan_number LIKE 'LNX%'",
    )
    .execute(&app.owner)
    .await
    .unwrap();
    sqlx::raw_sql("ANALYZE core.loans; ANALYZE core.loan_installments")
        .execute(&app.owner)
        .await
        .unwrap();
    let plan: Value = sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {SHEET}"))
        .bind(app.today().await)
        .bind(None::<NaiveDate>)
        .bind(None::<uuid::Uuid>)
        .bind(None::<i32>)
        .bind(51i64)
        .fetch_one(&app.owner)
        .await
        .unwrap();
    let text = plan.to_string();
    assert!(text.contains("next_due_date_loan_id_idx"), "{plan:#}");
    assert!(!reads_many(&plan), "{plan:#}");
}

/// Whether any scan of an executed plan went through more than a thousand rows (those it
/// returned and those its filter removed): the sheet must not read the book whole.
fn reads_many(plan: &Value) -> bool {
    match plan {
        Value::Object(node) => {
            let count = |key: &str| node.get(key).and_then(Value::as_f64).unwrap_or(0.0);
            let loops = count("Actual Loops").max(1.0);
            let scan = node
                .get("Node Type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("Scan"));
            (scan && (count("Actual Rows") + count("Rows Removed by Filter")) * loops > 1000.0)
                || node.values().any(reads_many)
        }
        Value::Array(items) => items.iter().any(reads_many),
        _ => false,
    }
}

/// The seed's Lab 3 ranking: every customer lent money, by the total lent, against a
/// recomputation from the loans, page by page; an application never paid out does not count.
#[tokio::test]
async fn borrowers_are_ranked_by_total_borrowed_as_a_recomputation_ranks_them() {
    use lakehouse_api::api::reports::borrowers::RANKING;
    let app = TestApp::spawn().await;
    book(&app).await;
    // A second loan for the first customer lifts them up the ranking; an application that is
    // only approved lends nothing.
    let first: uuid::Uuid =
        sqlx::query_scalar("SELECT customer_id FROM core.customers WHERE customer_code = 'RPT-00'")
            .fetch_one(&app.owner)
            .await
            .unwrap();
    app.disbursed_loan(first, "BUSINESS_STD", "45000000.00", 12)
        .await;
    let pending = app
        .apply(
            &app.staff(),
            json!({"customer_id": first, "product_code": "PERSONAL_STD", "amount": "9000000.00", "term_months": 6}),
        )
        .await
        .json();
    assert_eq!(
        app.act(&app.staff(), &pending, "approve").await.status,
        StatusCode::OK
    );

    let expected: Vec<(String, i64, String, String)> = sqlx::query_as(
        "SELECT c.customer_code, count(*), sum(l.loan_amount)::text, \
                round(avg(l.interest_rate), 4)::text \
         FROM core.loans l JOIN core.customers c USING (customer_id) \
         WHERE l.disbursement_date IS NOT NULL \
         GROUP BY c.customer_id, c.customer_code ORDER BY sum(l.loan_amount) DESC, c.customer_id DESC",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert_eq!(expected.len(), 8);
    assert_eq!(expected[0].0, "RPT-00", "{expected:?}");

    let mut got = Vec::new();
    let mut path = "/v1/reports/borrowers?limit=3".to_owned();
    loop {
        let page = app.get(&path, &app.token("analyst", None)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        let page = page.json();
        for row in page["data"].as_array().unwrap() {
            got.push((
                row["customer_code"].as_str().unwrap().to_owned(),
                row["loans"].as_i64().unwrap(),
                row["total_borrowed"].as_str().unwrap().to_owned(),
                row["average_rate"].as_str().unwrap().to_owned(),
                row["rank"].as_i64().unwrap(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/reports/borrowers?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    let got_figures: Vec<(String, i64, String, String)> = got
        .iter()
        .map(|g| (g.0.clone(), g.1, g.2.clone(), g.3.clone()))
        .collect();
    assert_eq!(got_figures, expected);
    assert_eq!(got[0].4, 1);
    assert_eq!(got[0].1, 2, "the approved application does not count");
    assert!(got.windows(2).all(|w| w[0].4 <= w[1].4));

    // The plan the seed documents for its optimised summary: the loans read once and
    // aggregated per customer, then joined to the customers; no subquery per customer.
    let plan: Value = sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {RANKING}"))
        .bind(None::<Decimal>)
        .bind(None::<uuid::Uuid>)
        .bind(51i64)
        .fetch_one(&app.owner)
        .await
        .unwrap();
    assert!(!plan.to_string().contains("SubPlan"), "{plan:#}");
    assert!(aggregates_loans_once(&plan), "{plan:#}");
}

/// Whether an aggregate node reads every scan of the loans below it exactly once.
fn aggregates_loans_once(plan: &Value) -> bool {
    fn loan_scans(node: &Value, loops: &mut Vec<f64>) {
        if let Value::Object(map) = node {
            if map
                .get("Relation Name")
                .and_then(Value::as_str)
                .is_some_and(|r| r.starts_with("loans"))
            {
                loops.push(
                    map.get("Actual Loops")
                        .and_then(Value::as_f64)
                        .unwrap_or(0.0),
                );
            }
            for child in map
                .get("Plans")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                loan_scans(child, loops);
            }
        } else if let Value::Array(items) = node {
            items.iter().for_each(|i| loan_scans(i, loops));
        }
    }
    match plan {
        Value::Object(map) => {
            let is_aggregate = map.get("Node Type").and_then(Value::as_str) == Some("Aggregate");
            let mut loops = Vec::new();
            loan_scans(plan, &mut loops);
            (is_aggregate && !loops.is_empty() && loops.iter().all(|l| *l <= 1.0))
                || map.values().any(aggregates_loans_once)
        }
        Value::Array(items) => items.iter().any(aggregates_loans_once),
        _ => false,
    }
}
