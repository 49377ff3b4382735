//! Control totals: the lake's journal lines, summed per account and business date, against the
//! trial balance of every business date.
//!
//! The lake's side is what the run wrote (summed from the Arrow arrays that went into the
//! Parquet files) added to what earlier runs wrote (`metadata.lake_account_totals`). The books'
//! side is the journal itself, up to the run's horizon. For every account and every business
//! date D, the lake's sum of lines dated D or earlier must equal the trial balance as of D.

use std::collections::BTreeMap;

use arrow_array::{Array, Date32Array, Decimal128Array, RecordBatch, StringArray};
use chrono::{Days, NaiveDate};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::Failure;

pub type Totals = BTreeMap<(String, NaiveDate), Decimal>;

const EPOCH: NaiveDate = match NaiveDate::from_ymd_opt(1970, 1, 1) {
    Some(date) => date,
    None => panic!("1970-01-01 is a date"),
};

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, Failure> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Failure::ControlTotals(format!("the journal lines have no {name} column")))
}

/// Adds a batch of journal lines as written.
pub fn add_batch(totals: &mut Totals, batch: &RecordBatch) -> Result<(), Failure> {
    let accounts: &StringArray = column(batch, "account")?;
    let dates: &Date32Array = column(batch, "business_date")?;
    let amounts: &Decimal128Array = column(batch, "amount")?;
    for row in 0..batch.num_rows() {
        let days = u64::try_from(dates.value(row))
            .map_err(|_| Failure::ControlTotals("a business date before 1970".into()))?;
        let date = EPOCH
            .checked_add_days(Days::new(days))
            .ok_or_else(|| Failure::ControlTotals("a business date out of range".into()))?;
        let amount = Decimal::from_i128_with_scale(amounts.value(row), 2);
        *totals
            .entry((accounts.value(row).to_owned(), date))
            .or_default() += amount;
    }
    Ok(())
}

/// What earlier runs put in the lake.
pub async fn lake(conn: &mut PgConnection, catalog: &str) -> Result<Totals, Failure> {
    let rows: Vec<(String, NaiveDate, Decimal)> = sqlx::query_as(
        "SELECT account, business_date, amount FROM metadata.lake_account_totals
         WHERE catalog_name = $1",
    )
    .bind(catalog)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(a, d, m)| ((a, d), m)).collect())
}

/// The journal up to the horizon, per account and business date.
pub async fn books(conn: &mut PgConnection, horizon: &str) -> Result<Totals, Failure> {
    let rows: Vec<(String, NaiveDate, Decimal)> = sqlx::query_as(
        "SELECT l.account, e.business_date, sum(l.amount)
         FROM core.journal_entries e JOIN core.journal_lines l ON l.entry_id = e.entry_id
         WHERE e.xact_id IS NULL OR e.xact_id < $1::text::xid8
         GROUP BY l.account, e.business_date",
    )
    .bind(horizon)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(a, d, m)| ((a, d), m)).collect())
}

/// Every account's running balance, date by date, on both sides; the first difference fails.
/// Returns the number of business dates compared.
pub fn compare(books: &Totals, lake: &Totals) -> Result<usize, Failure> {
    let mut dates: BTreeMap<NaiveDate, ()> = BTreeMap::new();
    let mut accounts: BTreeMap<&str, ()> = BTreeMap::new();
    for (account, date) in books.keys().chain(lake.keys()) {
        dates.insert(*date, ());
        accounts.insert(account, ());
    }
    for account in accounts.keys() {
        let (mut booked, mut held) = (Decimal::ZERO, Decimal::ZERO);
        for date in dates.keys() {
            let key = ((*account).to_owned(), *date);
            booked += books.get(&key).copied().unwrap_or_default();
            held += lake.get(&key).copied().unwrap_or_default();
            if booked != held {
                return Err(Failure::ControlTotals(format!(
                    "account {account} as of {date}: the lake holds {held}, the trial balance {booked}"
                )));
            }
        }
    }
    Ok(dates.len())
}

/// Adds `more` into `into`.
pub fn merge(into: &mut Totals, more: &Totals) {
    for (key, amount) in more {
        *into.entry(key.clone()).or_default() += *amount;
    }
}

/// Adds a run's lines to the lake's totals (in the run's commit).
pub async fn store(conn: &mut PgConnection, catalog: &str, totals: &Totals) -> Result<(), Failure> {
    let (accounts, dates, amounts): (Vec<_>, Vec<_>, Vec<_>) = totals
        .iter()
        .map(|((account, date), amount)| (account.clone(), *date, *amount))
        .fold(
            (vec![], vec![], vec![]),
            |(mut a, mut d, mut m), (x, y, z)| {
                a.push(x);
                d.push(y);
                m.push(z);
                (a, d, m)
            },
        );
    sqlx::query(
            "INSERT INTO metadata.lake_account_totals AS t (catalog_name, account, business_date, amount)
             SELECT $1, a, d, m FROM unnest($2::text[], $3::date[], $4::numeric[]) AS u(a, d, m)
             ON CONFLICT (catalog_name, account, business_date)
             DO UPDATE SET amount = t.amount + excluded.amount",
        )
        .bind(catalog)
        .bind(&accounts)
        .bind(&dates)
        .bind(&amounts)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
