//! The hand-off to the lakehouse: payment partitions older than N years move to the archive
//! schema once every loan with a payment in them is closed or written off; the journal and the
//! payment directory stay.

use axum::http::StatusCode;
use uuid::Uuid;

use crate::helpers::TestApp;

/// A COMPLETED repayment dated `at` on `loan`, as old data would hold it (owner SQL: the API
/// refuses dates beyond the backdating window).
async fn old_payment(app: &TestApp, loan: &serde_json::Value, at: &str) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query("SELECT core.ensure_payments_partition($1::timestamptz)")
        .bind(at)
        .execute(&app.owner)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO core.payments (payment_id, transaction_id, loan_id, customer_id, payment_type, \
         amount, payment_date, status, channel) \
         VALUES ($1, 'TXNOLD' || upper(replace($1::text, '-', '')), $2::uuid, $3::uuid, 'REPAYMENT', 10, \
                 $4::timestamptz, 'COMPLETED', 'BRANCH')",
    )
    .bind(id)
    .bind(loan["loan_id"].as_str().unwrap())
    .bind(loan["customer_id"].as_str().unwrap())
    .bind(at)
    .execute(&app.owner)
    .await
    .unwrap();
    id
}

#[tokio::test]
async fn old_partitions_of_closed_loans_move_to_the_archive_and_the_books_stay() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("ARCH01", "440101123456").await;
    let closed = app
        .disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 6)
        .await;
    let open = app
        .disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 6)
        .await;
    let archived_payment = old_payment(&app, &closed, "2015-03-10 10:00:00+00").await;
    let kept_payment = old_payment(&app, &open, "2015-04-10 10:00:00+00").await;
    sqlx::query(
        "UPDATE core.loans SET status = 'CLOSED', closed_at = now() WHERE loan_id = $1::uuid",
    )
    .bind(closed.id)
    .execute(&app.owner)
    .await
    .unwrap();
    let journal_before = app.count("SELECT count(*) FROM core.journal_lines").await;

    let report: Vec<(String, i64, bool, Option<String>)> =
        sqlx::query_as("SELECT * FROM core.archive_payment_partitions(5)")
            .fetch_all(&app.owner)
            .await
            .unwrap();
    assert_eq!(
        report,
        vec![
            ("payments_2015_03".to_owned(), 1, true, None),
            (
                "payments_2015_04".to_owned(),
                1,
                false,
                Some("1 loan(s) with payments in it are still open".to_owned())
            ),
        ],
        "only partitions older than five years, and only when their loans are closed"
    );

    // The archived month left core.payments (and the API), its directory row and the journal
    // stayed, and the open loan's month is untouched.
    let in_core = |id: Uuid| {
        let app = &app;
        async move {
            app.count(&format!(
                "SELECT count(*) FROM core.payments WHERE payment_id = '{id}'"
            ))
            .await
        }
    };
    assert_eq!(in_core(archived_payment).await, 0);
    assert_eq!(in_core(kept_payment).await, 1);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM archive.payments_2015_03 WHERE payment_id = '{archived_payment}'"
        ))
        .await,
        1
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM core.payment_directory WHERE payment_id = '{archived_payment}'"
        ))
        .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM core.journal_lines").await,
        journal_before
    );
    let gone = app
        .get(&format!("/v1/payments/{archived_payment}"), &app.staff())
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let journal = app
        .get(&format!("/v1/loans/{}/journal", closed.id), &app.staff())
        .await;
    assert_eq!(journal.status, StatusCode::OK, "{}", journal.text());

    // Analysts read the archive; a customer's or staff's role cannot.
    let mut conn = app.owner.acquire().await.unwrap();
    let read = |role: &'static str| {
        format!(
            "BEGIN; SET LOCAL ROLE {role}; SELECT count(*) FROM archive.payments_2015_03; ROLLBACK"
        )
    };
    sqlx::raw_sql(&read("lakehouse_analyst"))
        .execute(&mut *conn)
        .await
        .unwrap();
    for role in ["lakehouse_staff", "lakehouse_app_user"] {
        let err = sqlx::raw_sql(&read(role))
            .execute(&mut *conn)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("permission denied"),
            "{role}: {err}"
        );
        sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await.ok();
    }
}
