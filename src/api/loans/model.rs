//! Loan request and response types.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::domain::contract::{Amortization, DayCount, Frequency, InterestMethod};
use crate::domain::ledger::{Overpayment, PaymentAllocation, Reamortisation};
use crate::domain::money::{Amount, Installment, Money};
use crate::platform::auth::Role;
use crate::platform::error::ApiError;

pub use crate::domain::ledger::model::LoanStatus;

/// A move in the lifecycle: APPLIED → APPROVED | REJECTED | CANCELLED; APPROVED → DISBURSED |
/// CANCELLED. DISBURSED ⇄ CLOSED through payments and reversals, DISBURSED ⇄ DEFAULTED through
/// servicing (and repayments that clear the arrears), DEFAULTED → WRITTEN_OFF by staff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Approve,
    Reject,
    Disburse,
    Cancel,
}

impl Transition {
    /// The statuses the move may start from, for a caller of `role`: customers withdraw only
    /// applications still undecided.
    pub fn allowed_from(self, role: Role) -> &'static [LoanStatus] {
        match self {
            Self::Approve | Self::Reject => &[LoanStatus::Applied],
            Self::Disburse => &[LoanStatus::Approved],
            Self::Cancel if role == Role::Customer => &[LoanStatus::Applied],
            Self::Cancel => &[LoanStatus::Applied, LoanStatus::Approved],
        }
    }

    pub fn to(self) -> LoanStatus {
        match self {
            Self::Approve => LoanStatus::Approved,
            Self::Reject => LoanStatus::Rejected,
            Self::Disburse => LoanStatus::Disbursed,
            Self::Cancel => LoanStatus::Cancelled,
        }
    }

    pub fn verb(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
            Self::Disburse => "disburse",
            Self::Cancel => "cancel",
        }
    }
}

/// Collateral pledged for a loan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"type": "MOTORBIKE", "value": "30000000.00"}))]
pub struct Collateral {
    /// MOTORBIKE, CAR, REAL_ESTATE, DEPOSIT, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Appraised value.
    pub value: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `POST /v1/loans`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"product_code": "PERSONAL_STD", "amount": "50000000.00", "term_months": 24,
                          "collateral_info": {"type": "MOTORBIKE", "value": "30000000.00"}}))]
pub struct ApplyLoanRequest {
    /// Required for staff; a customer applies for themself (their own id, or leave it out).
    pub customer_id: Option<Uuid>,
    pub product_code: String,
    /// In the product's currency: at most as many decimals as it has (none for VND).
    pub amount: Money,
    /// The number of monthly installments (monthly products; `term_periods` says the same).
    pub term_months: Option<i32>,
    /// The number of installments: required for BIWEEKLY and WEEKLY products.
    pub term_periods: Option<i32>,
    /// The first due date, for a broken first period (its interest by the product's day count):
    /// after today and within two periods. Later due dates follow it one period apart. If the
    /// loan is paid out on or after it, the first date of that series after the payout is used.
    pub first_repayment_date: Option<NaiveDate>,
    /// Staff only, for historical entries: when the application was made, no later than now
    /// and within the backdating limit (`BACKDATING_LIMIT_DAYS`, default 3650). Defaults to now.
    pub application_date: Option<DateTime<Utc>>,
    pub collateral_info: Option<Collateral>,
}

/// `POST /v1/loans/{id}/reject`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectLoanRequest {
    pub reason: String,
}

impl RejectLoanRequest {
    pub fn reason(&self) -> Result<&str, ApiError> {
        let reason = self.reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            Err(ApiError::invalid_field(
                "reason",
                "must be 1 to 500 characters",
            ))
        } else {
            Ok(reason)
        }
    }
}

/// Filters of `GET /v1/loans`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LoanListQuery {
    pub customer_id: Option<Uuid>,
    pub status: Option<LoanStatus>,
    pub product_type: Option<String>,
    /// Applied on or after this day (UTC).
    pub from: Option<NaiveDate>,
    /// Applied on or before this day (UTC).
    pub to: Option<NaiveDate>,
}

/// A loan as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Loan {
    pub loan_id: Uuid,
    pub loan_number: String,
    pub customer_id: Uuid,
    pub product_code: String,
    pub product_type: String,
    pub loan_amount: Amount,
    /// Annual, as a fraction: "0.1250" is 12.5%.
    #[schema(value_type = String, example = "0.1250")]
    pub interest_rate: Decimal,
    /// The months the term spans (for monthly loans, the number of installments).
    pub term_months: i32,
    /// The number of installments.
    pub term_periods: i32,
    /// The first due date the application asked for, if any.
    pub first_repayment_date: Option<NaiveDate>,
    pub status: LoanStatus,
    pub application_date: DateTime<Utc>,
    pub approval_date: Option<DateTime<Utc>>,
    pub approved_by: Option<String>,
    pub rejected_at: Option<DateTime<Utc>>,
    pub rejected_by: Option<String>,
    pub rejection_reason: Option<String>,
    pub disbursement_date: Option<DateTime<Utc>>,
    pub disbursed_by: Option<String>,
    pub maturity_date: Option<NaiveDate>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub cancelled_by: Option<String>,
    pub closed_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<Object>)]
    pub collateral_info: Option<sqlx::types::JsonValue>,
    #[schema(value_type = Option<Object>)]
    pub risk_assessment: Option<sqlx::types::JsonValue>,
    /// Principal still owed; null until disbursed.
    pub principal_outstanding: Option<Amount>,
    /// Interest receivable: interest that has fallen due (or that a payment paid ahead) and
    /// is unpaid; null until disbursed. Interest of later installments is only in the schedule.
    pub interest_outstanding: Option<Amount>,
    pub fees_outstanding: Amount,
    /// Late fees charged by servicing and not yet paid.
    pub penalties_outstanding: Amount,
    /// Completed repayments, net of reversals.
    pub total_paid: Amount,
    /// Due date of the first installment not fully paid.
    pub next_due_date: Option<NaiveDate>,
    /// Days since the oldest installment short by more than the loan's arrears tolerance fell
    /// due, on today's business date; 0 when there is none (and for a loan that is not
    /// DISBURSED or DEFAULTED).
    pub days_past_due: i32,
    pub defaulted_at: Option<DateTime<Utc>>,
    pub written_off_at: Option<DateTime<Utc>>,
    pub written_off_by: Option<String>,
    /// What the write-off moved to the write-off expense.
    pub written_off_amount: Option<Amount>,
    /// Recovery payments received after the write-off, net of reversals.
    pub recovered_amount: Amount,
    /// The contract the loan is serviced under: its product's terms when it was approved (until
    /// then, the product's current terms). A later change to the product does not reach it.
    #[sqlx(json)]
    pub terms: LoanTerms,
    pub version: i32,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The terms a loan carries: one version of its product's servicing and prepayment terms.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoanTerms {
    /// The product's terms version the loan is pinned to.
    pub terms_version: i32,
    /// Days after a due date before an unpaid installment is late.
    pub grace_days: i32,
    /// The fixed part of a late fee.
    #[schema(value_type = String, example = "50000.00")]
    pub late_fee_amount: Decimal,
    /// The part of a late fee proportional to the installment's unpaid amount, as a fraction.
    #[schema(value_type = String, example = "0.000000")]
    pub late_fee_rate: Decimal,
    /// Days past due after which the loan is DEFAULTED.
    pub default_after_days: i32,
    /// The fee on principal prepaid, as a fraction.
    #[schema(value_type = String, example = "0.000000")]
    pub prepayment_fee_rate: Decimal,
    pub prepayment_reamortisation: Reamortisation,
    /// How short an installment may be and still count as paid for aging, late fees and
    /// default; the shortfall stays owed.
    #[schema(value_type = String, example = "1.00")]
    pub arrears_tolerance: Decimal,
    /// Where a repayment goes first: INSTALLMENTS_FIRST or FEES_FIRST.
    pub payment_allocation: PaymentAllocation,
    /// What money above the payoff does: REFUSE or CREDIT.
    pub overpayment: Overpayment,
    /// How a period's interest counts days.
    pub day_count: DayCount,
    pub amortization: Amortization,
    pub interest_method: InterestMethod,
    pub frequency: Frequency,
    /// ISO 4217.
    pub currency: String,
    /// Digits after the decimal point the loan's amounts have at most.
    pub currency_digits: i16,
    /// Every installment's total is a multiple of it (the last takes what is left).
    #[schema(value_type = String, example = "1000.00")]
    pub installment_multiple: Decimal,
}

/// A loan's repayment plan.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoanSchedule {
    pub loan_id: Uuid,
    pub loan_amount: Amount,
    #[schema(value_type = String)]
    pub interest_rate: Decimal,
    pub term_months: i32,
    pub term_periods: i32,
    /// The loan's day count: each installment's `days` are counted by it.
    pub day_count: DayCount,
    /// True until the loan is disbursed: due dates then count from today.
    pub projected: bool,
    pub total_interest: Amount,
    pub installments: Vec<Installment>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PayoffQuery {
    /// The business day of the payoff; default today. From the disbursement to a year ahead.
    pub date: Option<NaiveDate>,
}

/// What paying a loan off on a day costs: a repayment of exactly `total` on that day closes it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PayoffQuote {
    pub loan_id: Uuid,
    pub date: NaiveDate,
    /// Principal not yet repaid.
    pub principal: Amount,
    /// Interest due and unpaid, plus interest accrued in the current period up to `date`.
    pub interest: Amount,
    pub fees: Amount,
    /// Late fees.
    pub penalties: Amount,
    /// The product's prepayment fee on the principal not yet due.
    pub prepayment_fee: Amount,
    pub total: Amount,
    /// The annual percentage rate of the loan's schedule (monthly rate × 12), as a fraction.
    #[schema(value_type = String, example = "0.1250")]
    pub apr: Decimal,
    /// Everything paid and to pay beyond the principal lent, if the loan is paid off on `date`.
    pub total_cost_of_credit: Amount,
}

/// Why a loan is written off; optional.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteOffRequest {
    pub reason: Option<String>,
}
