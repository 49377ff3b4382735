//! The development tooling's one test binary: the seed's generated volume and loan histories,
//! and the `lakehouse-dev` binary's commands. Building it also builds `lakehouse-dev`, which the
//! service's own tests (`tests/api/cli.rs`) run.

use std::process::Command;

use chrono::{DateTime, Duration, Utc};
use lakehouse_api::domain::ledger::journal::{Account, Lines};
use lakehouse_api::domain::ledger::{Component, Overpayment, PaymentAllocation, Reamortisation};
use lakehouse_devtools::seed::generated::{loans, uuid_v7, Rng};
use lakehouse_devtools::seed::history::{play, Terms};
use rust_decimal::Decimal;
use uuid::Uuid;

#[test]
fn the_development_binary_offers_dev_and_seed() {
    let output = Command::new(env!("CARGO_BIN_EXE_lakehouse-dev"))
        .arg("--help")
        .output()
        .expect("lakehouse-dev runs");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{help}");
    for command in ["dev", "seed"] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "{help}"
        );
    }
}

#[test]
fn loans_spread_over_eight_years_in_date_order() {
    let now = Utc::now();
    let mut rng = Rng::new(7);
    let customers: Vec<Uuid> = (0..200).map(|_| uuid_v7(now, &mut rng)).collect();
    let loans = loans(&customers, 10, now, &mut rng);
    assert_eq!(loans.len(), 2000);
    assert!(loans.windows(2).all(|w| w[0].applied_at <= w[1].applied_at));
    let years = |at: DateTime<Utc>| at.format("%Y").to_string();
    let mut loan_years: Vec<String> = loans.iter().map(|l| years(l.applied_at)).collect();
    loan_years.dedup();
    assert!(loan_years.len() >= 8, "{loan_years:?}");
    assert!(loans.iter().all(|l| l.id.get_version_num() == 7));
}

fn terms() -> Terms {
    Terms {
        annual_interest_rate: Decimal::new(1250, 4),
        prepayment_fee_rate: Decimal::new(1, 2),
        reamortisation: Reamortisation::ShorterTerm,
        allocation: PaymentAllocation::InstallmentsFirst,
        overpayment: Overpayment::Refuse,
    }
}

#[test]
fn histories_are_varied_replay_identically_and_their_journals_equal_their_books() {
    let now = Utc::now();
    let mut rng = Rng::new(11);
    let customers: Vec<Uuid> = (0..300).map(|_| uuid_v7(now, &mut rng)).collect();
    let loans = loans(&customers, 2, now, &mut rng);
    let earliest = now - Duration::days(790);
    let mut statuses = std::collections::BTreeMap::new();
    for loan in &loans {
        let h = play(loan, &terms(), now, earliest, 3);
        let again = play(loan, &terms(), now, earliest, 3);
        assert_eq!(h.books, again.books);
        assert_eq!(h.repayments.len(), again.repayments.len());
        *statuses.entry(h.status.as_str()).or_insert(0) += 1;
        let mut journal = Lines::new();
        for e in &h.entries {
            assert!(e.lines.is_balanced());
            journal = Lines::from_rows(
                Account::ALL
                    .iter()
                    .map(|a| (*a, journal.of(*a) + e.lines.of(*a))),
            );
        }
        let b = h.books.balances();
        assert_eq!(journal.of(Account::LoanPrincipal), b.principal_outstanding);
        assert_eq!(journal.of(Account::LoanInterest), b.interest_outstanding);
        assert_eq!(journal.of(Account::LoanPenalties), b.penalties_outstanding);
        let repaid: Decimal = h.repayments.iter().map(|r| r.amount).sum();
        assert_eq!(repaid, h.total_paid);
        for r in &h.repayments {
            let allocated: Decimal = r.allocations.iter().map(|a| a.amount).sum();
            assert_eq!(allocated, r.amount);
            assert!(r
                .allocations
                .iter()
                .all(|a| a.component != Component::Fee || a.installment.is_none()));
        }
    }
    for status in ["DISBURSED", "CLOSED"] {
        assert!(
            statuses.get(status).copied().unwrap_or(0) > 5,
            "{statuses:?}"
        );
    }
    // Defaults are the service's servicing's to make, once the seed has loaded the loans.
    assert_eq!(statuses.len(), 2, "{statuses:?}");
}
