//! The lake's tables: an allow-list of columns each, and the statement that reads the row
//! versions one run exports.
//!
//! Nothing personal goes out: no name, phone, e-mail, address or ID number (they are in
//! `core.customers`, which is not exported), no free text a person typed (rejection and status
//! reasons, client references; a payment method outside the documented four is `OTHER`, and a
//! transaction id the server did not assign, from before migration 0011, is left out), and no
//! JSON column (collateral, risk assessment, payment metadata). Customers and the logins in
//! `*_by` columns are keyed tokens.
//!
//! Every statement takes `$1`, the last run's position (NULL on the first run), and `$2`, this
//! run's horizon, both as text; `{window}` is the position predicate on the version column.

use crate::columns::{optional, required, Column, Kind};

pub struct LakeTable {
    pub name: &'static str,
    pub columns: &'static [Column],
    /// The columns that name one row version, unique in the lake.
    pub key: &'static [&'static str],
    /// The version column the window applies to.
    pub position: &'static str,
    pub select: &'static str,
}

use Kind::{Date, Int, Long, Money, Rate, Text, Timestamp, Token};

pub const JOURNAL_ENTRIES: LakeTable = LakeTable {
    name: "journal_entries",
    columns: &[
        required("entry_id", Text),
        required("entry_number", Long),
        required("loan_id", Text),
        required("customer_token", Token),
        required("kind", Text),
        required("business_date", Date),
        optional("payment_id", Text),
        optional("installment_number", Int),
        optional("reverses", Text),
        required("posted_at", Timestamp),
        required("posted_by_token", Token),
        required("branch_id", Int),
        required("commit_position", Long),
    ],
    key: &["entry_id"],
    position: "e.xact_id",
    select: "SELECT e.entry_id::text, e.entry_number, e.loan_id::text, e.customer_id::text, e.kind,
                    e.business_date, e.payment_id::text, e.installment_number, e.reverses::text,
                    e.posted_at, e.posted_by, e.branch_id, coalesce(e.xact_id::text::bigint, 0)
             FROM core.journal_entries e WHERE {window}",
};

pub const JOURNAL_LINES: LakeTable = LakeTable {
    name: "journal_lines",
    columns: &[
        required("entry_id", Text),
        required("line_number", Int),
        required("loan_id", Text),
        required("customer_token", Token),
        required("account", Text),
        required("amount", Money),
        required("business_date", Date),
        required("branch_id", Int),
        required("commit_position", Long),
    ],
    key: &["entry_id", "line_number"],
    position: "e.xact_id",
    select: "SELECT l.entry_id::text, l.line_number::int, l.loan_id::text, l.customer_id::text,
                    l.account, l.amount, e.business_date, l.branch_id,
                    coalesce(e.xact_id::text::bigint, 0)
             FROM core.journal_entries e JOIN core.journal_lines l ON l.entry_id = e.entry_id
             WHERE {window}",
};

/// Slowly changing, type 2: one row per version; a version is valid from its `valid_from` until
/// the next version's of the same loan.
pub const LOANS: LakeTable = LakeTable {
    name: "loans",
    columns: &[
        required("loan_id", Text),
        required("loan_number", Text),
        required("customer_token", Token),
        required("product_code", Text),
        required("product_type", Text),
        required("loan_amount", Money),
        required("interest_rate", Rate),
        required("term_months", Int),
        optional("term_periods", Int),
        required("terms_version", Int),
        required("status", Text),
        required("application_date", Timestamp),
        optional("approval_date", Timestamp),
        optional("disbursement_date", Timestamp),
        optional("first_repayment_date", Date),
        optional("maturity_date", Date),
        optional("next_due_date", Date),
        optional("principal_outstanding", Money),
        optional("interest_outstanding", Money),
        required("fees_outstanding", Money),
        required("penalties_outstanding", Money),
        required("total_paid", Money),
        optional("defaulted_at", Timestamp),
        optional("written_off_at", Timestamp),
        optional("written_off_amount", Money),
        required("recovered_amount", Money),
        optional("closed_at", Timestamp),
        optional("cancelled_at", Timestamp),
        optional("rejected_at", Timestamp),
        optional("approved_by_token", Token),
        optional("disbursed_by_token", Token),
        optional("written_off_by_token", Token),
        required("branch_id", Int),
        required("version", Int),
        required("valid_from", Timestamp),
        required("commit_position", Long),
    ],
    key: &["loan_id", "commit_position"],
    position: "l.xact_id",
    select: "SELECT l.loan_id::text, l.loan_number, l.customer_id::text, l.product_code,
                    l.product_type, l.loan_amount, l.interest_rate, l.term_months, l.term_periods,
                    l.terms_version, l.status, l.application_date, l.approval_date,
                    l.disbursement_date, l.first_repayment_date, l.maturity_date, l.next_due_date,
                    l.principal_outstanding, l.interest_outstanding, l.fees_outstanding,
                    l.penalties_outstanding, l.total_paid, l.defaulted_at, l.written_off_at,
                    l.written_off_amount, l.recovered_amount, l.closed_at, l.cancelled_at,
                    l.rejected_at, l.approved_by, l.disbursed_by, l.written_off_by, l.branch_id,
                    l.version, l.updated_at, coalesce(l.xact_id::text::bigint, 0)
             FROM core.loans l WHERE {window}",
};

pub const INSTALLMENTS: LakeTable = LakeTable {
    name: "installments",
    columns: &[
        required("loan_id", Text),
        required("installment_number", Int),
        required("customer_token", Token),
        required("due_date", Date),
        required("principal_due", Money),
        required("interest_due", Money),
        required("principal_paid", Money),
        required("interest_paid", Money),
        required("interest_posted", Money),
        required("interest_reduction", Money),
        required("branch_id", Int),
        required("commit_position", Long),
    ],
    key: &["loan_id", "installment_number", "commit_position"],
    position: "i.xact_id",
    select: "SELECT i.loan_id::text, i.installment_number, i.customer_id::text, i.due_date,
                    i.principal_due, i.interest_due, i.principal_paid, i.interest_paid,
                    i.interest_posted, i.interest_reduction, i.branch_id,
                    coalesce(i.xact_id::text::bigint, 0)
             FROM core.loan_installments i WHERE {window}",
};

pub const PAYMENTS: LakeTable = LakeTable {
    name: "payments",
    columns: &[
        required("payment_id", Text),
        optional("transaction_id", Text),
        required("loan_id", Text),
        required("customer_token", Token),
        required("payment_type", Text),
        required("amount", Money),
        optional("payment_method", Text),
        required("payment_date", Timestamp),
        optional("due_date", Date),
        required("status", Text),
        optional("channel", Text),
        required("created_at", Timestamp),
        required("created_by_token", Token),
        optional("status_changed_at", Timestamp),
        optional("status_changed_by_token", Token),
        required("branch_id", Int),
        required("version", Int),
        required("valid_from", Timestamp),
        required("commit_position", Long),
    ],
    key: &["payment_id", "commit_position"],
    position: "p.xact_id",
    select: "SELECT p.payment_id::text,
                    CASE WHEN p.transaction_id ~ '^(TXN[0-9A-F]+|DSB-|IMP-)' THEN p.transaction_id END,
                    p.loan_id::text, p.customer_id::text, p.payment_type, p.amount,
                    CASE WHEN p.payment_method IN ('CASH', 'BANK_TRANSFER', 'CARD', 'E_WALLET')
                         THEN p.payment_method WHEN p.payment_method IS NOT NULL THEN 'OTHER' END,
                    p.payment_date, p.due_date,
                    p.status, p.channel, p.created_at, p.created_by, p.status_changed_at,
                    p.status_changed_by, p.branch_id, p.version, p.updated_at,
                    coalesce(p.xact_id::text::bigint, 0)
             FROM core.payments p WHERE {window}",
};

pub const ALL: [&LakeTable; 5] = [
    &JOURNAL_ENTRIES,
    &JOURNAL_LINES,
    &LOANS,
    &INSTALLMENTS,
    &PAYMENTS,
];

impl LakeTable {
    /// The statement for one run: from the last position (or from the start) to the horizon.
    pub fn statement(&self, first_run: bool) -> String {
        let column = self.position;
        let window = if first_run {
            format!("$1::text IS NULL AND ({column} IS NULL OR {column} < $2::text::xid8)")
        } else {
            format!("{column} >= $1::text::xid8 AND {column} < $2::text::xid8")
        };
        self.select.replace("{window}", &window)
    }
}
