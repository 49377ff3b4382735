//! SQL for loans. A loan known only by id or number is found through `core.loan_directory`
//! (one primary-key probe), which gives the partition key, so only one partition is searched.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use super::model::{Collateral, Loan, LoanStatus, Transition};
use crate::domain::credit_risk::RiskAssessment;
use crate::platform::pagination::TimeCursor;

const COLUMNS: &str = "l.loan_id, l.loan_number, l.customer_id, l.product_code, l.product_type, \
     l.loan_amount, l.interest_rate, l.term_months, \
     coalesce(l.term_periods, l.term_months) AS term_periods, l.first_repayment_date, l.status, l.application_date, l.approval_date, \
     l.approved_by, l.rejected_at, l.rejected_by, l.rejection_reason, l.disbursement_date, \
     l.disbursed_by, l.maturity_date, l.cancelled_at, l.cancelled_by, l.closed_at, \
     l.collateral_info, l.risk_assessment, l.principal_outstanding, l.interest_outstanding, \
     l.fees_outstanding, l.penalties_outstanding, l.total_paid, l.next_due_date, \
     CASE WHEN l.status IN ('DISBURSED', 'DEFAULTED') AND l.next_due_date < core.business_date(now()) \
          THEN coalesce(core.business_date(now()) - core.in_arrears_since(l.loan_id, \
                   core.business_date(now()), \
                   (SELECT t.arrears_tolerance FROM core.loan_terms t \
                    WHERE (t.product_code, t.terms_version) = (l.product_code, l.terms_version))), 0) \
          ELSE 0 END AS days_past_due, \
     l.defaulted_at, l.written_off_at, l.written_off_by, l.written_off_amount, l.recovered_amount, \
     (SELECT jsonb_build_object('terms_version', t.terms_version, 'grace_days', t.grace_days, \
                                'late_fee_amount', t.late_fee_amount::text, \
                                'late_fee_rate', t.late_fee_rate::text, \
                                'default_after_days', t.default_after_days, \
                                'prepayment_fee_rate', t.prepayment_fee_rate::text, \
                                'prepayment_reamortisation', t.prepayment_reamortisation, \
                                'arrears_tolerance', t.arrears_tolerance::text, \
                                'payment_allocation', t.payment_allocation, \
                                'overpayment', t.overpayment, 'day_count', t.day_count, \
                                'amortization', t.amortization, \
                                'interest_method', t.interest_method, 'frequency', t.frequency, \
                                'currency', t.currency, 'currency_digits', t.currency_digits, \
                                'installment_multiple', t.installment_multiple::text) \
      FROM core.loan_terms t \
      WHERE (t.product_code, t.terms_version) = (l.product_code, l.terms_version)) AS terms, \
     l.version, l.created_by, l.created_at, l.updated_at";

/// The primary key of a loan: its id and the partition key.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct LoanKey {
    pub loan_id: Uuid,
    pub application_date: DateTime<Utc>,
}

/// The statement that reads one loan by id (`by_number`: by number), exposed so tests can check
/// its plan. The directory lookup is a sub-select, so its result is a parameter of the scan on
/// the partitioned table: the executor prunes to the one partition that holds the loan and
/// probes one index there (a plain join would probe every partition's index for the id).
pub fn find_sql(by_number: bool) -> String {
    let key = if by_number { "loan_number" } else { "loan_id" };
    format!(
        "SELECT {COLUMNS} FROM core.loans l \
         WHERE (l.loan_id, l.application_date) = \
               (SELECT d.loan_id, d.application_date FROM core.loan_directory d WHERE d.{key} = $1)"
    )
}

pub async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<Loan>, sqlx::Error> {
    sqlx::query_as(&find_sql(false))
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn find_by_number(
    conn: &mut PgConnection,
    number: &str,
) -> Result<Option<Loan>, sqlx::Error> {
    sqlx::query_as(&find_sql(true))
        .bind(number)
        .fetch_optional(conn)
        .await
}

/// A checked application.
pub struct NewLoan<'a> {
    pub customer_id: Uuid,
    pub product_code: &'a str,
    pub product_type: &'a str,
    pub amount: Decimal,
    pub interest_rate: Decimal,
    pub term_months: i32,
    pub term_periods: i32,
    pub first_repayment_date: Option<NaiveDate>,
    pub application_date: DateTime<Utc>,
    pub collateral: Option<&'a Collateral>,
    pub risk: &'a RiskAssessment,
}

/// Inserts an application; the loan number is generated from the application year and a
/// sequence.
pub async fn insert(conn: &mut PgConnection, loan: &NewLoan<'_>) -> Result<Loan, sqlx::Error> {
    let sql = format!(
        "INSERT INTO core.loans AS l (loan_id, loan_number, customer_id, product_code, product_type, \
         loan_amount, interest_rate, term_months, term_periods, first_repayment_date, \
         application_date, collateral_info, risk_assessment) \
         VALUES ($1, 'LN' || to_char($2 AT TIME ZONE 'UTC', 'YYYY') \
                     || (SELECT lpad(n, greatest(8, length(n)), '0') \
                         FROM (SELECT nextval('core.loan_number_seq')::text AS n) s), \
                 $3, $4, $5, $6, $7, $8, $11, $12, $2, $9, $10) \
         RETURNING {COLUMNS}"
    );
    sqlx::query_as(&sql)
        .bind(Uuid::now_v7())
        .bind(loan.application_date)
        .bind(loan.customer_id)
        .bind(loan.product_code)
        .bind(loan.product_type)
        .bind(loan.amount)
        .bind(loan.interest_rate)
        .bind(loan.term_months)
        .bind(loan.collateral.map(Json))
        .bind(Json(loan.risk))
        .bind(loan.term_periods)
        .bind(loan.first_repayment_date)
        .fetch_one(conn)
        .await
}

/// Moves a loan along the lifecycle if it is still in status `from` (and, to approve, if its
/// customer's KYC is approved). `None` when the conditions do not hold; the caller reads the
/// loan to say why. Under READ COMMITTED a concurrent move on the same loan makes this wait,
/// then re-check the status, so of two racing moves exactly one succeeds.
pub async fn transition(
    conn: &mut PgConnection,
    key: LoanKey,
    transition: Transition,
    from: LoanStatus,
    reason: Option<&str>,
) -> Result<Option<Loan>, sqlx::Error> {
    let stamps = match transition {
        Transition::Approve => "approval_date = now(), approved_by = core.current_actor()",
        Transition::Reject => {
            "rejected_at = now(), rejected_by = core.current_actor(), rejection_reason = $4"
        }
        Transition::Disburse => {
            "disbursement_date = now(), disbursed_by = core.current_actor(), \
             maturity_date = (core.business_date(now()) + make_interval(months => term_months))::date"
        }
        Transition::Cancel => "cancelled_at = now(), cancelled_by = core.current_actor()",
    };
    let kyc = if transition == Transition::Approve {
        " AND EXISTS (SELECT 1 FROM core.customers c WHERE c.customer_id = l.customer_id \
                        AND c.kyc_status = 'APPROVED')"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE core.loans AS l SET status = '{to}', {stamps}, version = version + 1, \
         updated_at = now(), updated_by = core.current_actor() \
         WHERE l.loan_id = $1 AND l.application_date = $2 AND l.status = $3{kyc} \
         RETURNING {COLUMNS}",
        to = transition.to().as_str(),
    );
    let mut query = sqlx::query_as(&sql)
        .bind(key.loan_id)
        .bind(key.application_date)
        .bind(from.as_str());
    if transition == Transition::Reject {
        query = query.bind(reason);
    }
    query.fetch_optional(conn).await
}

/// Filters and position of one page of `list`.
pub struct ListFilter<'a> {
    pub customer_id: Option<Uuid>,
    pub status: Option<LoanStatus>,
    pub product_type: Option<&'a str>,
    pub from: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
    pub after: Option<TimeCursor>,
    pub fetch: i64,
}

/// Newest first. A date range limits the partitions scanned to the years it covers.
pub async fn list(
    conn: &mut PgConnection,
    filter: &ListFilter<'_>,
) -> Result<Vec<Loan>, sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new("SELECT ");
    q.push(COLUMNS).push(" FROM core.loans l WHERE true");
    if let Some(customer) = filter.customer_id {
        q.push(" AND l.customer_id = ").push_bind(customer);
    }
    if let Some(status) = filter.status {
        q.push(" AND l.status = ").push_bind(status.as_str());
    }
    if let Some(kind) = filter.product_type {
        q.push(" AND l.product_type = ").push_bind(kind);
    }
    if let Some(from) = filter.from {
        q.push(" AND l.application_date >= ").push_bind(from);
    }
    if let Some(before) = filter.before {
        q.push(" AND l.application_date < ").push_bind(before);
    }
    if let Some(after) = &filter.after {
        q.push(" AND (l.application_date, l.loan_id) < (")
            .push_bind(after.at)
            .push(", ")
            .push_bind(after.id)
            .push(")");
    }
    // A literal limit (validated), so generic plans still stop early; see payments::repo.
    q.push(" ORDER BY l.application_date DESC, l.loan_id DESC LIMIT ")
        .push(filter.fetch);
    q.build_query_as().fetch_all(conn).await
}

/// The customer's credit score, if the caller may see the customer.
pub async fn credit_score(
    conn: &mut PgConnection,
    customer: Uuid,
) -> Result<Option<Option<i32>>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"
            SELECT credit_score FROM core.customers WHERE customer_id = $1
        "#,
        customer,
    )
    .fetch_optional(conn)
    .await
}
