//! Credit risk: the assessment written on every application, and the score thresholds of the
//! seed guide's categories, which the high-risk views filter by.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::money::Money;

/// Stored as `risk_assessment` JSONB.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RiskAssessment {
    pub credit_score: Option<i32>,
    /// HIGH (< 600), MEDIUM (< 700), LOW, or UNRATED without a credit score.
    pub risk_category: &'static str,
    /// Loan amount / collateral value, 4 decimals; absent without collateral.
    #[schema(value_type = Option<String>)]
    pub loan_to_value: Option<Decimal>,
    pub collateral_type: Option<String>,
    pub assessed_at: DateTime<Utc>,
}

/// Credit scores below this are high risk.
pub const HIGH_RISK_BELOW: i32 = 600;
/// Credit scores below this (and not high risk) are medium risk.
pub const MEDIUM_RISK_BELOW: i32 = 700;

pub fn category(credit_score: Option<i32>) -> &'static str {
    match credit_score {
        None => "UNRATED",
        Some(s) if s < HIGH_RISK_BELOW => "HIGH",
        Some(s) if s < MEDIUM_RISK_BELOW => "MEDIUM",
        Some(_) => "LOW",
    }
}

/// Pledged collateral: its kind and appraised value.
pub struct Pledge<'a> {
    pub kind: &'a str,
    pub value: Money,
}

pub fn assess(
    credit_score: Option<i32>,
    amount: Decimal,
    collateral: Option<Pledge<'_>>,
    at: DateTime<Utc>,
) -> RiskAssessment {
    RiskAssessment {
        credit_score,
        risk_category: category(credit_score),
        loan_to_value: collateral
            .as_ref()
            .map(|c| (amount / c.value.amount()).round_dp(4)),
        collateral_type: collateral.map(|c| c.kind.to_owned()),
        assessed_at: at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_follow_the_seed_thresholds() {
        assert_eq!(category(Some(599)), "HIGH");
        assert_eq!(category(Some(600)), "MEDIUM");
        assert_eq!(category(Some(699)), "MEDIUM");
        assert_eq!(category(Some(700)), "LOW");
        assert_eq!(category(None), "UNRATED");
    }

    #[test]
    fn loan_to_value_is_amount_over_collateral() {
        let collateral = Pledge {
            kind: "MOTORBIKE",
            value: Money::parse("30000000").unwrap(),
        };
        let r = assess(
            Some(750),
            Decimal::new(50_000_000, 0),
            Some(collateral),
            Utc::now(),
        );
        assert_eq!(r.loan_to_value, Some(Decimal::new(16667, 4)));
        assert_eq!(r.collateral_type.as_deref(), Some("MOTORBIKE"));
    }
}
