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
    let entry_id = Uuid::now_v7();
    let numbers: Vec<i32> = m.installments.iter().map(|s| s.number).collect();
    let principal_paid: Vec<Decimal> = m.installments.iter().map(|s| s.principal_paid).collect();
    let interest_paid: Vec<Decimal> = m.installments.iter().map(|s| s.interest_paid).collect();
    let interest_posted: Vec<Decimal> = m.installments.iter().map(|s| s.interest_posted).collect();
    let targets: Vec<Option<i32>> = m.allocations.iter().map(|a| a.installment).collect();
    let components: Vec<&str> = m.allocations.iter().map(|a| a.component.as_str()).collect();
    let amounts: Vec<Decimal> = m.allocations.iter().map(|a| a.amount).collect();
    let posted: Vec<Decimal> = m.allocations.iter().map(|a| a.posted).collect();
    let principal_due: Vec<Decimal> = m.installments.iter().map(|s| s.principal_due).collect();
    let interest_due: Vec<Decimal> = m.installments.iter().map(|s| s.interest_due).collect();
    let reduction: Vec<Decimal> = m
        .installments
        .iter()
        .map(|s| s.interest_reduction)
        .collect();
    let weight: Vec<Decimal> = m.installments.iter().map(|s| s.prepaid_weight).collect();
    let rescheduled: Vec<i32> = m.schedule.iter().map(|c| c.number).collect();
    let rescheduled_principal: Vec<Decimal> = m.schedule.iter().map(|c| c.principal_due).collect();
    let rescheduled_interest: Vec<Decimal> = m.schedule.iter().map(|c| c.interest_due).collect();
    let rescheduled_reduction: Vec<Decimal> =
        m.schedule.iter().map(|c| c.interest_reduction).collect();
    let rescheduled_weight: Vec<Decimal> = m.schedule.iter().map(|c| c.prepaid_weight).collect();
    sqlx::query!(
        r#"
        WITH entry AS (
            INSERT INTO core.journal_entries (entry_id, loan_id, customer_id, kind, business_date,
                                              payment_id, reverses)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
        ),
        lines AS (
            INSERT INTO core.journal_lines (entry_id, line_number, loan_id, customer_id, account, amount)
            SELECT $1, n, $2, $3, a, x
            FROM unnest($8::text[], $9::numeric[]) WITH ORDINALITY AS t(a, x, n)
        ),
        installments AS (
            UPDATE core.loan_installments i
            SET principal_paid = i.principal_paid + t.p, interest_paid = i.interest_paid + t.i,
                interest_posted = i.interest_posted + t.ip,
                principal_due = i.principal_due + t.pd, interest_due = i.interest_due + t.id,
                interest_reduction = i.interest_reduction + t.ir,
                prepaid_weight = i.prepaid_weight + t.w
            FROM unnest($10::int[], $11::numeric[], $12::numeric[], $13::numeric[],
                        $14::numeric[], $15::numeric[], $33::numeric[], $34::numeric[])
                 AS t(n, p, i, ip, pd, id, ir, w)
            WHERE i.loan_id = $2 AND i.installment_number = t.n
        ),
        rescheduled AS (
            INSERT INTO core.schedule_changes (payment_id, installment_number, loan_id, customer_id,
                                               principal_due, interest_due, interest_reduction,
                                               prepaid_weight)
            SELECT $6, n, $2, $3, pd, id, ir, w
            FROM unnest($16::int[], $17::numeric[], $18::numeric[], $35::numeric[],
                        $36::numeric[]) AS t(n, pd, id, ir, w)
        ),
        allocations AS (
            INSERT INTO core.payment_allocations (payment_id, loan_id, customer_id,
                                                  installment_number, component, amount, posted)
            SELECT $6, $2, $3, n, c, a, ps
            FROM unnest($19::int[], $20::text[], $21::numeric[], $22::numeric[]) AS t(n, c, a, ps)
        )
        UPDATE core.loans SET
            principal_outstanding = coalesce(principal_outstanding, 0) + $23,
            interest_outstanding = coalesce(interest_outstanding, 0) + $24,
            fees_outstanding = fees_outstanding + $25,
            penalties_outstanding = penalties_outstanding + $26,
            total_paid = total_paid + $27, recovered_amount = recovered_amount + $28,
            next_due_date = $29, status = coalesce($30, status),
            closed_at = CASE WHEN $30 = 'CLOSED' THEN now() WHEN $30 IS NOT NULL THEN NULL ELSE closed_at END,
            defaulted_at = CASE WHEN $30 = 'DISBURSED' THEN NULL ELSE defaulted_at END,
            written_off_at = CASE WHEN $30 = 'WRITTEN_OFF' THEN now() ELSE written_off_at END,
            written_off_by = CASE WHEN $30 = 'WRITTEN_OFF' THEN core.current_actor() ELSE written_off_by END,
            written_off_amount = CASE WHEN $30 = 'WRITTEN_OFF' THEN $31 ELSE written_off_amount END,
            version = version + 1, updated_at = now(), updated_by = core.current_actor()
        WHERE loan_id = $2 AND application_date = $32
        "#,
        // The entry ($1–$7) and its lines ($8–$9).
        entry_id,
        m.loan_id,
        m.customer_id,
        m.kind.as_str(),
        m.business_date,
        m.payment_id,
        m.reverses,
        &m.lines.accounts() as &[&str],
        &m.lines.amounts(),
        // Installments: number, paid, posted, and the due amounts a re-amortisation moves.
        &numbers,
        &principal_paid,
        &interest_paid,
        &interest_posted,
        &principal_due,
        &interest_due,
        // The re-amortisation kept for a reversal.
        &rescheduled,
        &rescheduled_principal,
        &rescheduled_interest,
        // Allocations: installment (none for fees), component, amount, interest posted.
        &targets as &[Option<i32>],
        &components as &[&str],
        &amounts,
        &posted,
        // The loan's balance columns move by the entry's lines on the loan accounts.
        m.lines.of(Account::LoanPrincipal),
        m.lines.of(Account::LoanInterest),
        m.lines.of(Account::LoanFees),
        m.lines.of(Account::LoanPenalties),
        m.loan.total_paid,
        m.loan.recovered,
        m.loan.next_due_date,
        m.loan.status.map(|s| s.as_str()),
        m.lines.of(Account::WriteOffExpense),
        // The loan's partition key.
        m.application_date,
        // Interest recalculation, on the installments ($33–$34) and kept for a reversal
        // ($35–$36).
        &reduction,
        &weight,
        &rescheduled_reduction,
        &rescheduled_weight,
    )
    .execute(conn)
    .await?;
    Ok(entry_id)
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
