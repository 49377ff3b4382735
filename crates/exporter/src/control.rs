//! Control totals: the lake's journal lines, summed per account and business date, against the
//! trial balance of every business date.
//!
//! The lake's side is read back from the journal lines table as the run is about to commit it:
//! every data file of its new snapshot, this run's and earlier runs'. The books' side is the
//! journal itself, up to the run's horizon. The lines must be as many on both sides, and for
//! every account and every business date D, the lake's sum of lines dated D or earlier must
//! equal the trial balance as of D.

use std::collections::{BTreeMap, BTreeSet};

use arrow_array::{Array, Date32Array, Decimal128Array, RecordBatch, StringArray};
use chrono::{Days, NaiveDate};
use futures_util::TryStreamExt;
use iceberg::table::Table;
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::columns::EPOCH;
use crate::Failure;

pub type Totals = BTreeMap<(String, NaiveDate), Decimal>;

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

/// The rows a table's current snapshot holds: its live data files' record counts, from its
/// manifests (0 before its first snapshot). The snapshot summary's `total-records` will not do:
/// the crate writes only the snapshot's own rows there.
pub async fn records(table: &Table) -> Result<u64, Failure> {
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(0);
    };
    let manifests = snapshot
        .load_manifest_list(table.file_io(), table.metadata())
        .await?;
    let mut records = 0;
    for manifest in manifests.entries() {
        for entry in manifest.load_manifest(table.file_io()).await?.entries() {
            if entry.is_alive() {
                records += entry.data_file().record_count();
            }
        }
    }
    Ok(records)
}

/// Every journal line in the lake table's current snapshot, read from its files: the sums, and
/// how many lines.
pub async fn scan(table: &Table) -> Result<(Totals, u64), Failure> {
    let mut totals = Totals::new();
    let mut lines = 0;
    if table.metadata().current_snapshot().is_none() {
        return Ok((totals, lines));
    }
    let mut batches = table
        .scan()
        .select(["account", "business_date", "amount"])
        .build()?
        .to_arrow()
        .await?;
    while let Some(batch) = batches.try_next().await? {
        add_batch(&mut totals, &batch)?;
        lines += batch.num_rows() as u64;
    }
    Ok((totals, lines))
}

/// The journal up to the horizon, per account and business date; fails unless it has `lines`
/// lines.
pub async fn books(conn: &mut PgConnection, horizon: &str, lines: u64) -> Result<Totals, Failure> {
    let rows: Vec<(String, NaiveDate, Decimal, i64)> = sqlx::query_as(
        "SELECT l.account, e.business_date, sum(l.amount), count(*)
         FROM core.journal_entries e JOIN core.journal_lines l ON l.entry_id = e.entry_id
         WHERE e.xact_id IS NULL OR e.xact_id < $1::text::xid8
         GROUP BY l.account, e.business_date",
    )
    .bind(horizon)
    .fetch_all(conn)
    .await?;
    let booked: i64 = rows.iter().map(|row| row.3).sum();
    if u64::try_from(booked).ok() != Some(lines) {
        return Err(Failure::ControlTotals(format!(
            "the lake holds {lines} journal lines, the books {booked}"
        )));
    }
    Ok(rows.into_iter().map(|(a, d, m, _)| ((a, d), m)).collect())
}

/// Every account's running balance, date by date, on both sides; the first difference fails.
/// Returns the number of business dates compared.
pub fn compare(books: &Totals, lake: &Totals) -> Result<usize, Failure> {
    let mut dates = BTreeSet::new();
    let mut accounts = BTreeSet::new();
    for (account, date) in books.keys().chain(lake.keys()) {
        dates.insert(*date);
        accounts.insert(account.as_str());
    }
    for account in &accounts {
        let (mut booked, mut held) = (Decimal::ZERO, Decimal::ZERO);
        for date in &dates {
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

/// Records the lake's checked totals (in the run's commit), for readers to reconcile against.
pub async fn record(
    conn: &mut PgConnection,
    catalog: &str,
    totals: &Totals,
) -> Result<(), Failure> {
    sqlx::query("DELETE FROM metadata.lake_account_totals WHERE catalog_name = $1")
        .bind(catalog)
        .execute(&mut *conn)
        .await?;
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
        "INSERT INTO metadata.lake_account_totals (catalog_name, account, business_date, amount)
             SELECT $1, a, d, m FROM unnest($2::text[], $3::date[], $4::numeric[]) AS u(a, d, m)",
    )
    .bind(catalog)
    .bind(&accounts)
    .bind(&dates)
    .bind(&amounts)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(rows: &[(&str, &str, &str)]) -> Totals {
        rows.iter()
            .map(|(a, d, m)| (((*a).to_owned(), d.parse().unwrap()), m.parse().unwrap()))
            .collect()
    }

    #[test]
    fn running_balances_are_compared_on_every_date_of_either_side() {
        let books = totals(&[
            ("CASH", "2026-01-01", "-100.00"),
            ("LOANS", "2026-01-01", "100.00"),
            ("CASH", "2026-01-05", "30.00"),
            ("LOANS", "2026-01-05", "-30.00"),
        ]);
        assert_eq!(compare(&books, &books.clone()).ok(), Some(2));

        // The same end balance, one day late: wrong as of the day between.
        let late = totals(&[
            ("CASH", "2026-01-01", "-100.00"),
            ("LOANS", "2026-01-01", "100.00"),
            ("CASH", "2026-01-06", "30.00"),
            ("LOANS", "2026-01-06", "-30.00"),
        ]);
        let failure = compare(&books, &late).unwrap_err().to_string();
        assert!(
            failure.contains("account CASH as of 2026-01-05"),
            "{failure}"
        );

        // An account the lake lacks, or holds and the books do not.
        let missing = totals(&[("CASH", "2026-01-01", "-100.00")]);
        assert!(compare(&books, &missing).is_err());
        assert!(compare(&missing, &books).is_err());

        // Lines that sum to zero on a day are a balance of zero, on either side.
        let zero = totals(&[("FEES", "2026-01-02", "0.00")]);
        assert_eq!(compare(&zero, &Totals::new()).ok(), Some(1));
    }
}
