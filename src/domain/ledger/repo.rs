//! SQL of money movements: payment rows, a loan's installments and allocations, and the
//! balance columns they move, under the loan's row lock.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::engine::{
    Allocation, InstallmentState, Overpayment, PaymentAllocation, Reamortisation, ScheduleChange,
    Terms,
};
use super::journal::{Account, EntryKind, Lines};
use super::model::{LoanStatus, Payment, PaymentKind, PaymentStatus};
use crate::domain::contract::{
    Amortization, Contract, DayCount, Frequency, InterestMethod, Rounding,
};
use crate::domain::money::Installment;

/// A new payment row.
pub struct NewPayment<'a> {
    pub transaction_id: &'a str,
    pub client_reference: Option<&'a str>,
    pub loan_id: Uuid,
    pub customer_id: Uuid,
    pub payment_type: PaymentKind,
    pub amount: Decimal,
    pub payment_method: Option<&'a str>,
    pub payment_date: DateTime<Utc>,
    pub status: PaymentStatus,
    pub channel: &'a str,
}

pub async fn insert(conn: &mut PgConnection, p: &NewPayment<'_>) -> Result<Payment, sqlx::Error> {
    sqlx::query_as!(
        Payment,
        r#"
        INSERT INTO core.payments AS p (payment_id, transaction_id, client_reference, loan_id,
                                        customer_id, payment_type, amount, payment_method,
                                        payment_date, status, channel, status_changed_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now())
        RETURNING payment_id, transaction_id, client_reference, loan_id, customer_id,
                  payment_type AS "payment_type: _", amount AS "amount: _", payment_method,
                  payment_date, due_date, status AS "status: _", channel, status_changed_at,
                  status_changed_by, status_reason, created_by, created_at
        "#,
        Uuid::now_v7(),
        p.transaction_id,
        p.client_reference,
        p.loan_id,
        p.customer_id,
        p.payment_type.as_str(),
        p.amount,
        p.payment_method,
        p.payment_date,
        p.status.as_str(),
        p.channel,
    )
    .fetch_one(conn)
    .await
}

/// The payment that pays a loan out, completed at `at`.
pub async fn insert_disbursement(
    conn: &mut PgConnection,
    loan_id: Uuid,
    customer_id: Uuid,
    loan_number: &str,
    amount: Decimal,
    at: DateTime<Utc>,
) -> Result<Payment, sqlx::Error> {
    let transaction_id = format!("DSB-{loan_number}");
    let payment = NewPayment {
        transaction_id: &transaction_id,
        client_reference: None,
        loan_id,
        customer_id,
        payment_type: PaymentKind::Disbursement,
        amount,
        payment_method: Some("BANK_TRANSFER"),
        payment_date: at,
        status: PaymentStatus::Completed,
        channel: "SYSTEM",
    };
    insert(conn, &payment).await
}

/// The loan a payment moves, locked for the rest of the transaction. Every path that changes a
/// loan's balance or status takes this lock first, and only then touches payment rows, so
/// repayments, reversals and loan moves on one loan queue up instead of deadlocking.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LockedLoan {
    pub loan_id: Uuid,
    pub application_date: DateTime<Utc>,
    pub customer_id: Uuid,
    pub loan_number: String,
    pub status: LoanStatus,
    pub loan_amount: Decimal,
    pub interest_rate: Decimal,
    pub term_months: i32,
    pub disbursement_date: Option<DateTime<Utc>>,
    /// The business day of the disbursement.
    pub disbursed_on: Option<NaiveDate>,
    pub principal_outstanding: Option<Decimal>,
    pub interest_outstanding: Option<Decimal>,
    pub fees_outstanding: Decimal,
    pub penalties_outstanding: Decimal,
    pub next_due_date: Option<NaiveDate>,
    pub written_off_amount: Option<Decimal>,
    pub recovered_amount: Decimal,
    pub prepayment_fee_rate: Decimal,
    pub reamortisation: Reamortisation,
    pub allocation: PaymentAllocation,
    pub overpayment: Overpayment,
    /// How short an installment may be and still count as paid for aging.
    pub arrears_tolerance: Decimal,
    pub day_count: DayCount,
    pub amortization: Amortization,
    pub interest_method: InterestMethod,
    pub frequency: Frequency,
    pub currency: String,
    pub currency_digits: i16,
    pub installment_multiple: Decimal,
    /// The business day of the moment the caller asked about (`lock_loan`'s `at`).
    pub business_date: NaiveDate,
    /// An opened servicing day has not reached this loan yet.
    pub servicing_pending: bool,
}

impl LockedLoan {
    /// What the loan's balance columns (its journal) say it owes.
    pub fn outstanding(&self) -> Decimal {
        self.principal_outstanding.unwrap_or_default()
            + self.interest_outstanding.unwrap_or_default()
            + self.fees_outstanding
            + self.penalties_outstanding
    }

    /// How the loan's schedule is computed, from its pinned terms.
    pub fn contract(&self) -> Contract {
        contract(
            self.interest_rate,
            (
                self.day_count,
                self.amortization,
                self.interest_method,
                self.frequency,
            ),
            self.currency_digits,
            self.installment_multiple,
        )
    }

    /// What the loan's contract and product say about payments.
    pub fn terms(&self) -> Terms {
        Terms {
            prepayment_fee_rate: self.prepayment_fee_rate,
            reamortisation: self.reamortisation,
            allocation: self.allocation,
            overpayment: self.overpayment,
        }
    }
}

/// The business day of `at`.
pub async fn business_date(
    conn: &mut PgConnection,
    at: DateTime<Utc>,
) -> Result<NaiveDate, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT core.business_date($1) AS "business_date!""#, at)
        .fetch_one(conn)
        .await
}

/// Locks the loan; `at` is the moment whose business day the movement is for.
pub async fn lock_loan(
    conn: &mut PgConnection,
    loan_id: Uuid,
    at: DateTime<Utc>,
) -> Result<Option<LockedLoan>, sqlx::Error> {
    sqlx::query_as!(
        LockedLoan,
        r#"
        SELECT l.loan_id, l.application_date, l.customer_id, l.loan_number,
               l.status AS "status: _", l.loan_amount, l.interest_rate, l.term_months,
               l.disbursement_date, core.business_date(l.disbursement_date) AS disbursed_on,
               l.principal_outstanding, l.interest_outstanding, l.fees_outstanding,
               l.penalties_outstanding, l.next_due_date, l.written_off_amount,
               l.recovered_amount, p.prepayment_fee_rate,
               p.prepayment_reamortisation AS "reamortisation: _", p.arrears_tolerance,
               p.payment_allocation AS "allocation: _", p.overpayment AS "overpayment: _",
               p.day_count AS "day_count: _", p.amortization AS "amortization: _",
               p.interest_method AS "interest_method: _", p.frequency AS "frequency: _",
               p.currency, p.currency_digits, p.installment_multiple,
               core.business_date($2) AS "business_date!",
               core.servicing_pending(l.loan_id) AS "servicing_pending!"
        FROM core.loans l
        JOIN core.loan_terms p ON (p.product_code, p.terms_version) = (l.product_code, l.terms_version)
        WHERE (l.loan_id, l.application_date) =
              (SELECT d.loan_id, d.application_date FROM core.loan_directory d WHERE d.loan_id = $1)
        FOR UPDATE OF l
        "#,
        loan_id,
        at,
    )
    .fetch_optional(conn)
    .await
}

pub async fn set_status(
    conn: &mut PgConnection,
    payment: &Payment,
    to: PaymentStatus,
    reason: Option<&str>,
) -> Result<Payment, sqlx::Error> {
    sqlx::query_as!(
        Payment,
        r#"
        UPDATE core.payments AS p
        SET status = $3, status_changed_at = now(), status_changed_by = core.current_actor(),
            status_reason = $4, version = version + 1, updated_at = now(),
            updated_by = core.current_actor()
        WHERE p.payment_id = $1 AND p.payment_date = $2
        RETURNING payment_id, transaction_id, client_reference, loan_id, customer_id,
                  payment_type AS "payment_type: _", amount AS "amount: _", payment_method,
                  payment_date, due_date, status AS "status: _", channel, status_changed_at,
                  status_changed_by, status_reason, created_by, created_at
        "#,
        payment.payment_id,
        payment.payment_date,
        to.as_str(),
        reason,
    )
    .fetch_one(conn)
    .await
}

/// A loan's status and what its payoff quote needs, read without the lock: what a payoff is
/// quoted from, and what a customer's repayment is checked against before staff confirm it
/// (the confirmation checks again, under the lock).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LoanBalances {
    pub loan_id: Uuid,
    pub customer_id: Uuid,
    pub status: LoanStatus,
    pub loan_amount: Decimal,
    pub total_paid: Decimal,
    pub fees_outstanding: Decimal,
    pub penalties_outstanding: Decimal,
    pub disbursed_on: Option<NaiveDate>,
    pub prepayment_fee_rate: Decimal,
    /// What money above the payoff does under the loan's terms.
    pub overpayment: Overpayment,
    pub interest_rate: Decimal,
    pub day_count: DayCount,
    pub amortization: Amortization,
    pub interest_method: InterestMethod,
    pub frequency: Frequency,
    pub currency: String,
    pub currency_digits: i16,
    pub installment_multiple: Decimal,
    pub business_date: NaiveDate,
}

impl LoanBalances {
    /// How the loan's interest accrues and its amounts round, from its pinned terms.
    pub fn contract(&self) -> Contract {
        contract(
            self.interest_rate,
            (
                self.day_count,
                self.amortization,
                self.interest_method,
                self.frequency,
            ),
            self.currency_digits,
            self.installment_multiple,
        )
    }
}

/// A loan's contract from its rate and the columns of `core.loan_terms` (which keep the digits
/// in 0..=2).
fn contract(
    annual_rate: Decimal,
    (day_count, amortization, interest_method, frequency): (
        DayCount,
        Amortization,
        InterestMethod,
        Frequency,
    ),
    digits: i16,
    multiple: Decimal,
) -> Contract {
    Contract {
        annual_rate,
        day_count,
        amortization,
        interest_method,
        frequency,
        rounding: Rounding {
            digits: u32::try_from(digits).unwrap_or(2),
            multiple,
        },
    }
}

/// What the journal holds on one of a loan's accounts.
pub async fn account_balance(
    conn: &mut PgConnection,
    loan_id: Uuid,
    account: Account,
) -> Result<Decimal, sqlx::Error> {
    sqlx::query_scalar!(
        r#"
        SELECT coalesce(sum(amount), 0) AS "balance!" FROM core.journal_lines
        WHERE loan_id = $1 AND account = $2
        "#,
        loan_id,
        account.as_str(),
    )
    .fetch_one(conn)
    .await
}

pub async fn loan_balances(
    conn: &mut PgConnection,
    loan_id: Uuid,
) -> Result<Option<LoanBalances>, sqlx::Error> {
    sqlx::query_as!(
        LoanBalances,
        r#"
        SELECT l.loan_id, l.customer_id, l.status AS "status: _", l.loan_amount, l.total_paid,
               l.fees_outstanding, l.penalties_outstanding,
               core.business_date(l.disbursement_date) AS disbursed_on,
               t.prepayment_fee_rate, t.overpayment AS "overpayment: _", l.interest_rate,
               t.day_count AS "day_count: _", t.amortization AS "amortization: _",
               t.interest_method AS "interest_method: _", t.frequency AS "frequency: _",
               t.currency, t.currency_digits, t.installment_multiple,
               core.business_date(now()) AS "business_date!"
        FROM core.loans l
        JOIN core.loan_terms t
          ON (t.product_code, t.terms_version) = (l.product_code, l.terms_version)
        WHERE (l.loan_id, l.application_date) =
              (SELECT d.loan_id, d.application_date FROM core.loan_directory d WHERE d.loan_id = $1)
        "#,
        loan_id,
    )
    .fetch_optional(conn)
    .await
}

/// What a loan's schedule is computed from: its pinned contract and its own term.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LoanPlan {
    pub interest_rate: Decimal,
    pub day_count: DayCount,
    pub amortization: Amortization,
    pub interest_method: InterestMethod,
    pub frequency: Frequency,
    pub currency_digits: i16,
    pub installment_multiple: Decimal,
    /// How many installments.
    pub periods: i32,
    pub first_repayment_date: Option<NaiveDate>,
}

impl LoanPlan {
    pub fn contract(&self) -> Contract {
        contract(
            self.interest_rate,
            (
                self.day_count,
                self.amortization,
                self.interest_method,
                self.frequency,
            ),
            self.currency_digits,
            self.installment_multiple,
        )
    }
}

pub async fn loan_plan(
    conn: &mut PgConnection,
    loan_id: Uuid,
) -> Result<Option<LoanPlan>, sqlx::Error> {
    sqlx::query_as!(
        LoanPlan,
        r#"
        SELECT l.interest_rate, t.day_count AS "day_count: _", t.amortization AS "amortization: _",
               t.interest_method AS "interest_method: _", t.frequency AS "frequency: _",
               t.currency_digits, t.installment_multiple,
               coalesce(l.term_periods, l.term_months) AS "periods!", l.first_repayment_date
        FROM core.loans l
        JOIN core.loan_terms t
          ON (t.product_code, t.terms_version) = (l.product_code, l.terms_version)
        WHERE (l.loan_id, l.application_date) =
              (SELECT d.loan_id, d.application_date FROM core.loan_directory d WHERE d.loan_id = $1)
        "#,
        loan_id,
    )
    .fetch_optional(conn)
    .await
}

/// A paid-out loan matures on its last due date.
pub async fn set_maturity(
    conn: &mut PgConnection,
    loan_id: Uuid,
    application_date: DateTime<Utc>,
    maturity: NaiveDate,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE core.loans SET maturity_date = $3 \
         WHERE loan_id = $1 AND application_date = $2 AND maturity_date IS DISTINCT FROM $3",
        loan_id,
        application_date,
        maturity,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes a disbursed loan's schedule.
pub async fn insert_installments(
    conn: &mut PgConnection,
    loan_id: Uuid,
    customer_id: Uuid,
    schedule: &[Installment],
) -> Result<(), sqlx::Error> {
    let numbers: Vec<i32> = schedule.iter().map(|i| i.number as i32).collect();
    let due: Vec<NaiveDate> = schedule.iter().map(|i| i.due_date).collect();
    let principal: Vec<Decimal> = schedule.iter().map(|i| i.principal).collect();
    let interest: Vec<Decimal> = schedule.iter().map(|i| i.interest).collect();
    sqlx::query!(
        r#"
        INSERT INTO core.loan_installments (loan_id, customer_id, installment_number, due_date,
                                            principal_due, interest_due)
        SELECT $1, $2, n, d, p, i
        FROM unnest($3::int[], $4::date[], $5::numeric[], $6::numeric[]) AS t(n, d, p, i)
        ON CONFLICT DO NOTHING
        "#,
        loan_id,
        customer_id,
        &numbers,
        &due,
        &principal,
        &interest,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn load_installments(
    conn: &mut PgConnection,
    loan_id: Uuid,
) -> Result<Vec<InstallmentState>, sqlx::Error> {
    sqlx::query_as!(
        InstallmentState,
        r#"
        SELECT installment_number AS number, due_date, principal_due, interest_due,
               interest_posted, principal_paid, interest_paid, interest_reduction, prepaid_weight
        FROM core.loan_installments WHERE loan_id = $1 ORDER BY installment_number
        "#,
        loan_id,
    )
    .fetch_all(conn)
    .await
}

/// A loan's row as a movement leaves it.
pub struct LoanChange {
    pub total_paid: Decimal,
    pub recovered: Decimal,
    pub next_due_date: Option<NaiveDate>,
    /// The new status, if it changes.
    pub status: Option<LoanStatus>,
}

/// One money movement, written in one statement: the journal entry and its lines, the
/// installments it changed, the payment's allocations, and the loan's balance columns, which
/// move by exactly the entry's lines on the loan accounts (so they always equal the journal).
pub struct Movement<'a> {
    pub loan_id: Uuid,
    pub application_date: DateTime<Utc>,
    pub customer_id: Uuid,
    pub kind: EntryKind,
    pub business_date: NaiveDate,
    pub payment_id: Option<Uuid>,
    pub reverses: Option<Uuid>,
    pub lines: &'a Lines,
    /// What changed on each installment it touched: the amounts are added.
    pub installments: Vec<InstallmentChange>,
    pub allocations: &'a [Allocation],
    /// The re-amortisation a prepayment made, kept for its reversal.
    pub schedule: &'a [ScheduleChange],
    pub loan: LoanChange,
}

/// What a movement adds to an installment's amounts (negative for a reversal): paid and
/// posted, and scheduled when a prepayment re-amortises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstallmentChange {
    pub number: i32,
    pub principal_due: Decimal,
    pub interest_due: Decimal,
    pub principal_paid: Decimal,
    pub interest_paid: Decimal,
    pub interest_posted: Decimal,
    pub interest_reduction: Decimal,
    pub prepaid_weight: Decimal,
}

pub async fn post(conn: &mut PgConnection, m: &Movement<'_>) -> Result<Uuid, sqlx::Error> {
    let posted = post_many(conn, std::slice::from_ref(m)).await?;
    Ok(posted.first().copied().unwrap_or_default())
}

/// The columns of many movements, flattened for one statement: each installment, line,
/// allocation and re-amortisation row carries the index (from 1) of its movement.
#[derive(Default)]
struct Flat {
    entry_ids: Vec<Uuid>,
    loan_ids: Vec<Uuid>,
    application_dates: Vec<DateTime<Utc>>,
    customer_ids: Vec<Uuid>,
    kinds: Vec<&'static str>,
    business_dates: Vec<NaiveDate>,
    payment_ids: Vec<Option<Uuid>>,
    reverses: Vec<Option<Uuid>>,
    on_accounts: [Vec<Decimal>; 5],
    total_paid: Vec<Decimal>,
    recovered: Vec<Decimal>,
    next_due_dates: Vec<Option<NaiveDate>>,
    statuses: Vec<Option<&'static str>>,
    line_of: Vec<i32>,
    line_numbers: Vec<i32>,
    line_accounts: Vec<&'static str>,
    line_amounts: Vec<Decimal>,
    installment_of: Vec<i32>,
    installment_numbers: Vec<i32>,
    /// principal paid, interest paid, interest posted, principal due, interest due, interest
    /// reduction, prepaid weight.
    installment_changes: [Vec<Decimal>; 7],
    allocation_of: Vec<i32>,
    allocation_installments: Vec<Option<i32>>,
    allocation_components: Vec<&'static str>,
    /// amount, posted.
    allocation_amounts: [Vec<Decimal>; 2],
    rescheduled_of: Vec<i32>,
    rescheduled_numbers: Vec<i32>,
    /// principal due, interest due, interest reduction, prepaid weight.
    rescheduled_amounts: [Vec<Decimal>; 4],
}

/// The loan accounts whose lines move the loan's balance columns, in the statement's order.
const BALANCE_ACCOUNTS: [Account; 5] = [
    Account::LoanPrincipal,
    Account::LoanInterest,
    Account::LoanFees,
    Account::LoanPenalties,
    Account::WriteOffExpense,
];

impl Flat {
    fn of(movements: &[Movement<'_>]) -> Self {
        let mut flat = Self::default();
        for (index, m) in movements.iter().enumerate() {
            let k = i32::try_from(index + 1).unwrap_or(i32::MAX);
            flat.entry_ids.push(Uuid::now_v7());
            flat.loan_ids.push(m.loan_id);
            flat.application_dates.push(m.application_date);
            flat.customer_ids.push(m.customer_id);
            flat.kinds.push(m.kind.as_str());
            flat.business_dates.push(m.business_date);
            flat.payment_ids.push(m.payment_id);
            flat.reverses.push(m.reverses);
            for (column, account) in flat.on_accounts.iter_mut().zip(BALANCE_ACCOUNTS) {
                column.push(m.lines.of(account));
            }
            flat.total_paid.push(m.loan.total_paid);
            flat.recovered.push(m.loan.recovered);
            flat.next_due_dates.push(m.loan.next_due_date);
            flat.statuses.push(m.loan.status.map(|s| s.as_str()));
            for (n, (account, amount)) in m
                .lines
                .accounts()
                .into_iter()
                .zip(m.lines.amounts())
                .enumerate()
            {
                flat.line_of.push(k);
                flat.line_numbers
                    .push(i32::try_from(n + 1).unwrap_or(i32::MAX));
                flat.line_accounts.push(account);
                flat.line_amounts.push(amount);
            }
            for c in &m.installments {
                flat.installment_of.push(k);
                flat.installment_numbers.push(c.number);
                let amounts = [
                    c.principal_paid,
                    c.interest_paid,
                    c.interest_posted,
                    c.principal_due,
                    c.interest_due,
                    c.interest_reduction,
                    c.prepaid_weight,
                ];
                for (column, amount) in flat.installment_changes.iter_mut().zip(amounts) {
                    column.push(amount);
                }
            }
            for a in m.allocations {
                flat.allocation_of.push(k);
                flat.allocation_installments.push(a.installment);
                flat.allocation_components.push(a.component.as_str());
                flat.allocation_amounts[0].push(a.amount);
                flat.allocation_amounts[1].push(a.posted);
            }
            for c in m.schedule {
                flat.rescheduled_of.push(k);
                flat.rescheduled_numbers.push(c.number);
                let amounts = [
                    c.principal_due,
                    c.interest_due,
                    c.interest_reduction,
                    c.prepaid_weight,
                ];
                for (column, amount) in flat.rescheduled_amounts.iter_mut().zip(amounts) {
                    column.push(amount);
                }
            }
        }
        flat
    }
}

/// Posts many movements in one statement, on distinct loans (a loan's movements are posted one
/// statement after another); returns their entries' ids in order.
pub async fn post_many(
    conn: &mut PgConnection,
    movements: &[Movement<'_>],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let f = Flat::of(movements);
    let (changes, allocated) = (&f.installment_changes, &f.allocation_amounts);
    let rescheduled = &f.rescheduled_amounts;
    sqlx::query!(
        r#"
        WITH m AS (
            SELECT m.*, c.branch_id FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[],
                        $4::uuid[], $5::text[], $6::date[], $7::uuid[], $8::uuid[], $33::numeric[],
                        $34::numeric[], $35::numeric[], $36::numeric[], $37::numeric[],
                        $38::numeric[], $39::date[], $40::text[], $41::numeric[])
                 WITH ORDINALITY AS m(entry_id, loan_id, application_date, customer_id, kind,
                                      business_date, payment_id, reverses, dp, di, df, dpen, paid,
                                      recovered, next_due, status, written_off, k)
            -- The office a replay names instead of a stamp per row (migration 0051).
            LEFT JOIN core.customers c ON c.customer_id = m.customer_id
        ),
        entry AS (
            INSERT INTO core.journal_entries (entry_id, loan_id, customer_id, branch_id, kind, business_date, payment_id, reverses)
            SELECT entry_id, loan_id, customer_id, branch_id, kind, business_date, payment_id, reverses FROM m
        ),
        lines AS (
            INSERT INTO core.journal_lines (entry_id, line_number, loan_id, customer_id, branch_id, account, amount)
            SELECT m.entry_id, t.n, m.loan_id, m.customer_id, m.branch_id, t.a, t.x
            FROM unnest($9::int[], $10::int[], $11::text[], $12::numeric[]) AS t(k, n, a, x)
            JOIN m ON m.k = t.k
        ),
        installments AS (
            UPDATE core.loan_installments i
            SET principal_paid = i.principal_paid + t.p, interest_paid = i.interest_paid + t.i,
                interest_posted = i.interest_posted + t.ip, principal_due = i.principal_due + t.pd,
                interest_due = i.interest_due + t.id, prepaid_weight = i.prepaid_weight + t.w,
                interest_reduction = i.interest_reduction + t.ir
            FROM unnest($13::int[], $14::int[], $15::numeric[], $16::numeric[], $17::numeric[],
                        $18::numeric[], $19::numeric[], $20::numeric[], $21::numeric[])
                 AS t(k, n, p, i, ip, pd, id, ir, w)
            JOIN m ON m.k = t.k
            WHERE i.loan_id = m.loan_id AND i.installment_number = t.n
        ),
        rescheduled AS (
            INSERT INTO core.schedule_changes (payment_id, installment_number, loan_id,
                customer_id, branch_id, principal_due, interest_due, interest_reduction, prepaid_weight)
            SELECT m.payment_id, t.n, m.loan_id, m.customer_id, m.branch_id, t.pd, t.id, t.ir, t.w
            FROM unnest($22::int[], $23::int[], $24::numeric[], $25::numeric[], $26::numeric[],
                        $27::numeric[]) AS t(k, n, pd, id, ir, w)
            JOIN m ON m.k = t.k
        ),
        allocations AS (
            INSERT INTO core.payment_allocations (payment_id, loan_id, customer_id, branch_id,
                                                  installment_number, component, amount, posted)
            SELECT m.payment_id, m.loan_id, m.customer_id, m.branch_id, t.n, t.c, t.a, t.ps
            FROM unnest($28::int[], $29::int[], $30::text[], $31::numeric[], $32::numeric[])
                 AS t(k, n, c, a, ps)
            JOIN m ON m.k = t.k
        )
        UPDATE core.loans l SET
            principal_outstanding = coalesce(l.principal_outstanding, 0) + t.dp,
            interest_outstanding = coalesce(l.interest_outstanding, 0) + t.di,
            fees_outstanding = l.fees_outstanding + t.df,
            penalties_outstanding = l.penalties_outstanding + t.dpen,
            total_paid = l.total_paid + t.paid, recovered_amount = l.recovered_amount + t.recovered,
            next_due_date = t.next_due, status = coalesce(t.status, l.status),
            closed_at = CASE WHEN t.status = 'CLOSED' THEN now() WHEN t.status IS NOT NULL THEN NULL ELSE l.closed_at END,
            defaulted_at = CASE WHEN t.status = 'DISBURSED' THEN NULL ELSE l.defaulted_at END,
            written_off_at = CASE WHEN t.status = 'WRITTEN_OFF' THEN now() ELSE l.written_off_at END,
            written_off_by = CASE WHEN t.status = 'WRITTEN_OFF' THEN core.current_actor() ELSE l.written_off_by END,
            written_off_amount = CASE WHEN t.status = 'WRITTEN_OFF' THEN t.written_off ELSE l.written_off_amount END,
            version = l.version + 1, updated_at = now(), updated_by = core.current_actor()
        FROM m t
        WHERE l.application_date BETWEEN $42 AND $43
          AND l.loan_id = t.loan_id AND l.application_date = t.application_date
        "#,
        // The entries ($1–$8), a row per movement.
        &f.entry_ids,
        &f.loan_ids,
        &f.application_dates,
        &f.customer_ids,
        &f.kinds as &[&str],
        &f.business_dates,
        &f.payment_ids as &[Option<Uuid>],
        &f.reverses as &[Option<Uuid>],
        // Their lines: movement, line number, account, amount.
        &f.line_of,
        &f.line_numbers,
        &f.line_accounts as &[&str],
        &f.line_amounts,
        // Installments: movement, number, paid, posted, and the due amounts a re-amortisation
        // or an interest recalculation moves.
        &f.installment_of,
        &f.installment_numbers,
        &changes[0],
        &changes[1],
        &changes[2],
        &changes[3],
        &changes[4],
        &changes[5],
        &changes[6],
        // The re-amortisation kept for a reversal.
        &f.rescheduled_of,
        &f.rescheduled_numbers,
        &rescheduled[0],
        &rescheduled[1],
        &rescheduled[2],
        &rescheduled[3],
        // Allocations: movement, installment (none for fees), component, amount, interest posted.
        &f.allocation_of,
        &f.allocation_installments as &[Option<i32>],
        &f.allocation_components as &[&str],
        &allocated[0],
        &allocated[1],
        // The loans' balance columns move by the entries' lines on the loan accounts.
        &f.on_accounts[0],
        &f.on_accounts[1],
        &f.on_accounts[2],
        &f.on_accounts[3],
        &f.total_paid,
        &f.recovered,
        &f.next_due_dates as &[Option<NaiveDate>],
        &f.statuses as &[Option<&str>],
        &f.on_accounts[4],
        // The loans' partition keys, first and last, as two scalars: the partitions outside
        // them are pruned before the scan (a repayment touches its loan's partition alone);
        // `= ANY` of the array would not prune.
        f.application_dates.iter().min(),
        f.application_dates.iter().max(),
    )
    .execute(conn)
    .await?;
    Ok(f.entry_ids)
}

/// The entry a payment posted (not a reversal), with its lines.
pub async fn payment_entry(
    conn: &mut PgConnection,
    payment_id: Uuid,
) -> Result<Option<(Uuid, EntryKind, Lines)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"
        SELECT e.entry_id, e.kind AS "kind: EntryKind", l.account AS "account: Account", l.amount
        FROM core.journal_entries e JOIN core.journal_lines l ON l.entry_id = e.entry_id
        WHERE e.payment_id = $1 AND e.kind <> 'REVERSAL' ORDER BY l.line_number
        "#,
        payment_id,
    )
    .fetch_all(conn)
    .await?;
    let rows: Vec<(Uuid, EntryKind, Account, Decimal)> = rows
        .into_iter()
        .map(|r| (r.entry_id, r.kind, r.account, r.amount))
        .collect();
    Ok(rows.first().map(|(entry_id, kind, _, _)| {
        (
            *entry_id,
            *kind,
            Lines::from_rows(
                rows.iter()
                    .map(|(_, _, account, amount)| (*account, *amount)),
            ),
        )
    }))
}

/// Marks a payment's re-amortisation reversed and returns it.
pub async fn reverse_schedule_changes(
    conn: &mut PgConnection,
    payment_id: Uuid,
) -> Result<Vec<ScheduleChange>, sqlx::Error> {
    sqlx::query_as!(
        ScheduleChange,
        r#"
        UPDATE core.schedule_changes SET reversed_at = now()
        WHERE payment_id = $1 AND reversed_at IS NULL
        RETURNING installment_number AS number, principal_due, interest_due, interest_reduction,
                  prepaid_weight
        "#,
        payment_id,
    )
    .fetch_all(conn)
    .await
}

/// Marks a payment's live allocations reversed and returns them.
pub async fn reverse_allocations(
    conn: &mut PgConnection,
    payment_id: Uuid,
) -> Result<Vec<Allocation>, sqlx::Error> {
    sqlx::query_as!(
        Allocation,
        r#"
        UPDATE core.payment_allocations SET reversed_at = now()
        WHERE payment_id = $1 AND reversed_at IS NULL
        RETURNING installment_number AS installment, component AS "component: _", amount, posted
        "#,
        payment_id,
    )
    .fetch_all(conn)
    .await
}
