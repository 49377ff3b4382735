//! SQL for customers. Every function runs inside the caller's request transaction, so row-level
//! security has already decided which rows exist.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use super::model::{Address, CustomerChanges, KycStatus, NewCustomer};
use crate::platform::pii::SealedIdNumber;

/// Whether a query may read the ID-number ciphertext. Analysts and the ETL role have no column
/// privilege on it, so their queries select NULL in its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PiiView {
    Clear,
    Masked,
}

impl PiiView {
    fn columns(self) -> &'static str {
        match self {
            Self::Clear => COLUMNS_CLEAR,
            Self::Masked => COLUMNS_MASKED,
        }
    }
}

macro_rules! customer_columns {
    ($ciphertext:literal) => {
        concat!(
            "customer_id, customer_code, full_name, ",
            $ciphertext,
            " AS id_number_ciphertext, id_number_last4, phone_number, email, date_of_birth, \
             address, kyc_status, kyc_decided_at, kyc_reason, credit_score, version, created_at, \
             updated_at, (SELECT o.code FROM core.offices o WHERE o.office_id = customers.branch_id) \
             AS branch"
        )
    };
}

const COLUMNS_CLEAR: &str = customer_columns!("id_number_ciphertext");
const COLUMNS_MASKED: &str = customer_columns!("NULL::bytea");

#[derive(Debug, sqlx::FromRow)]
pub struct CustomerRow {
    pub customer_id: Uuid,
    pub customer_code: String,
    pub full_name: String,
    pub id_number_ciphertext: Option<Vec<u8>>,
    pub id_number_last4: String,
    pub phone_number: Option<String>,
    pub email: Option<String>,
    pub date_of_birth: Option<NaiveDate>,
    pub address: Option<Json<Address>>,
    pub kyc_status: KycStatus,
    pub kyc_decided_at: Option<DateTime<Utc>>,
    pub kyc_reason: Option<String>,
    pub credit_score: Option<i32>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub branch: String,
}

pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    customer: &NewCustomer,
    sealed: &SealedIdNumber,
    view: PiiView,
) -> Result<CustomerRow, sqlx::Error> {
    let sql = format!(
        "INSERT INTO core.customers (customer_id, customer_code, full_name, id_number_ciphertext, \
         id_number_hash, id_number_last4, phone_number, email, date_of_birth, address, credit_score, \
         branch_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                 (SELECT office_id FROM core.offices WHERE code = $12)) \
         RETURNING {}",
        view.columns()
    );
    sqlx::query_as(&sql)
        .bind(id)
        .bind(&customer.customer_code)
        .bind(&customer.full_name)
        .bind(&sealed.ciphertext)
        .bind(&sealed.hash)
        .bind(&sealed.last4)
        .bind(&customer.phone_number)
        .bind(&customer.email)
        .bind(customer.date_of_birth)
        .bind(customer.address.as_ref().map(Json))
        .bind(customer.credit_score)
        .bind(customer.branch.as_deref())
        .fetch_one(conn)
        .await
}

/// Whether an office has this code (every role may read the office tree).
pub async fn office_exists(conn: &mut PgConnection, code: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM core.offices WHERE code = $1) AS "exists!""#,
        code
    )
    .fetch_one(conn)
    .await
}

pub async fn find(
    conn: &mut PgConnection,
    id: Uuid,
    view: PiiView,
) -> Result<Option<CustomerRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {} FROM core.customers WHERE customer_id = $1",
        view.columns()
    );
    sqlx::query_as(&sql).bind(id).fetch_optional(conn).await
}

/// Filters and position of one page of `list`.
pub struct ListFilter<'a> {
    pub kyc_status: Option<KycStatus>,
    pub city: Option<&'a str>,
    pub after: Option<Uuid>,
    /// Rows to fetch: the page size plus one.
    pub fetch: i64,
}

/// One keyset page in id order. Only the conditions in use are in the SQL, so each combination
/// gets its own plan instead of one generic plan full of `$n IS NULL OR …`.
pub async fn list(
    conn: &mut PgConnection,
    filter: &ListFilter<'_>,
    view: PiiView,
) -> Result<Vec<CustomerRow>, sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new("SELECT ");
    q.push(view.columns())
        .push(" FROM core.customers WHERE true");
    if let Some(after) = filter.after {
        q.push(" AND customer_id > ").push_bind(after);
    }
    if let Some(status) = filter.kyc_status {
        q.push(" AND kyc_status = ").push_bind(status.as_str());
    }
    if let Some(city) = filter.city {
        // Containment, so the GIN index on address answers it.
        q.push(" AND address @> jsonb_build_object('city', ")
            .push_bind(city)
            .push("::text)");
    }
    // A literal limit (validated), so generic plans still stop early.
    q.push(" ORDER BY customer_id LIMIT ").push(filter.fetch);
    q.build_query_as().fetch_all(conn).await
}

/// Search statements (staff and administrators, who see the ID number in clear). Each is one
/// index probe and a keyset page; public so that tests can `EXPLAIN` exactly these. `$2` is the
/// id the page starts after (the nil id for the first page).
pub const SEARCH_BY_CODE: &str = concat!(
    "SELECT ",
    customer_columns!("id_number_ciphertext"),
    " FROM core.customers WHERE customer_code = $1 AND customer_id > $2 ORDER BY customer_id"
);
pub const SEARCH_BY_ID_NUMBER_HASH: &str = concat!(
    "SELECT ",
    customer_columns!("id_number_ciphertext"),
    " FROM core.customers WHERE id_number_hash = $1 AND customer_id > $2 ORDER BY customer_id"
);
/// The phone number in the same E.164 form every write stores (`core.e164`).
pub const SEARCH_BY_PHONE: &str = concat!(
    "SELECT ",
    customer_columns!("id_number_ciphertext"),
    " FROM core.customers \
     WHERE phone_number = core.e164($1, (SELECT phone_country_code FROM core.business_settings)) \
       AND customer_id > $2 ORDER BY customer_id LIMIT $3"
);
/// Names without case or accents (`core.search_name`) that start with the query or resemble it
/// (pg_trgm's `%`, similarity above 0.3), through the trigram index. Prefix matches rank first,
/// then by similarity in millionths (an integer, so a cursor holds it exactly); `$2`/`$3` are
/// the rank and id the page starts after.
pub const SEARCH_BY_NAME: &str = concat!(
    "SELECT * FROM (SELECT ",
    customer_columns!("id_number_ciphertext"),
    ", (core.search_name(full_name) LIKE q.prefix)::int * 1000000 \
         + round(public.similarity(core.search_name(full_name), q.name) * 1000000)::int8 AS rank \
     FROM core.customers, \
          (SELECT core.search_name($1) AS name, \
                  replace(replace(replace(core.search_name($1), '\\', '\\\\'), '%', '\\%'), '_', '\\_') \
                  || '%' AS prefix) q \
     WHERE core.search_name(full_name) LIKE q.prefix \
        OR core.search_name(full_name) OPERATOR(public.%) q.name) m \
     WHERE m.rank < $2 OR (m.rank = $2 AND m.customer_id > $3) \
     ORDER BY m.rank DESC, m.customer_id LIMIT $4"
);

#[derive(Debug, sqlx::FromRow)]
pub struct RankedRow {
    #[sqlx(flatten)]
    pub row: CustomerRow,
    pub rank: i64,
}

/// Customers by a unique key (code or ID-number hash): at most one, after `after`.
pub async fn search_unique(
    conn: &mut PgConnection,
    statement: &'static str,
    key: impl for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + Send,
    after: Uuid,
) -> Result<Vec<CustomerRow>, sqlx::Error> {
    sqlx::query_as(statement)
        .bind(key)
        .bind(after)
        .fetch_all(conn)
        .await
}

pub async fn search_by_phone(
    conn: &mut PgConnection,
    phone: &str,
    after: Uuid,
    fetch: i64,
) -> Result<Vec<CustomerRow>, sqlx::Error> {
    sqlx::query_as(SEARCH_BY_PHONE)
        .bind(phone)
        .bind(after)
        .bind(fetch)
        .fetch_all(conn)
        .await
}

pub async fn search_by_name(
    conn: &mut PgConnection,
    name: &str,
    after: (i64, Uuid),
    fetch: i64,
) -> Result<Vec<RankedRow>, sqlx::Error> {
    sqlx::query_as(SEARCH_BY_NAME)
        .bind(name)
        .bind(after.0)
        .bind(after.1)
        .bind(fetch)
        .fetch_all(conn)
        .await
}

/// The outcome of a conditional write.
pub enum Conditional {
    Done(Box<CustomerRow>),
    /// The row exists but its version is not the expected one.
    Stale,
    Missing,
}

/// Applies `changes` if the row is still at `expected_version` (`None`: any version).
pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    expected_version: Option<i32>,
    changes: &CustomerChanges,
    view: PiiView,
) -> Result<Conditional, sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "UPDATE core.customers SET version = version + 1, updated_at = now(), \
         updated_by = core.current_actor()",
    );
    if let Some(name) = &changes.full_name {
        q.push(", full_name = ").push_bind(name);
    }
    if let Some(phone) = &changes.phone_number {
        q.push(", phone_number = ").push_bind(phone);
    }
    if let Some(email) = &changes.email {
        q.push(", email = ").push_bind(email);
    }
    if let Some(dob) = changes.date_of_birth {
        q.push(", date_of_birth = ").push_bind(dob);
    }
    if let Some(address) = &changes.address {
        q.push(", address = ").push_bind(address.as_ref().map(Json));
    }
    if let Some(score) = changes.credit_score {
        q.push(", credit_score = ").push_bind(score);
    }
    q.push(" WHERE customer_id = ").push_bind(id);
    if let Some(version) = expected_version {
        q.push(" AND version = ").push_bind(version);
    }
    q.push(" RETURNING ").push(view.columns());
    let row = q.build_query_as().fetch_optional(&mut *conn).await?;
    conditional_outcome(conn, id, row).await
}

/// Records a KYC decision on a customer whose KYC is still pending.
pub async fn decide_kyc(
    conn: &mut PgConnection,
    id: Uuid,
    outcome: KycStatus,
    reason: Option<&str>,
    view: PiiView,
) -> Result<Conditional, sqlx::Error> {
    let sql = format!(
        "UPDATE core.customers SET kyc_status = $2, kyc_reason = $3, kyc_decided_at = now(), \
         kyc_decided_by = core.current_actor(), version = version + 1, updated_at = now(), \
         updated_by = core.current_actor() \
         WHERE customer_id = $1 AND kyc_status = 'PENDING' RETURNING {}",
        view.columns()
    );
    let row = sqlx::query_as(&sql)
        .bind(id)
        .bind(outcome.as_str())
        .bind(reason)
        .fetch_optional(&mut *conn)
        .await?;
    conditional_outcome(conn, id, row).await
}

/// Tells "no such row" from "the condition failed" after a conditional UPDATE matched nothing.
async fn conditional_outcome(
    conn: &mut PgConnection,
    id: Uuid,
    row: Option<CustomerRow>,
) -> Result<Conditional, sqlx::Error> {
    if let Some(row) = row {
        return Ok(Conditional::Done(Box::new(row)));
    }
    let exists: Option<i32> = sqlx::query_scalar!(
        r#"
                SELECT 1 AS "found!" FROM core.customers WHERE customer_id = $1
            "#,
        id,
    )
    .fetch_optional(conn)
    .await?;
    Ok(if exists.is_some() {
        Conditional::Stale
    } else {
        Conditional::Missing
    })
}
