//! Money and the maths on it: exact decimals, never floats.

use std::fmt;

use chrono::NaiveDate;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// A positive amount with at most two decimals, in and out of JSON as a string (`"2500000.00"`):
/// a JSON number could already have been rounded through a float by the client's parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ToSchema)]
#[schema(value_type = String, example = "2500000.00")]
pub struct Money(Decimal);

impl Serialize for Money {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        as_cents(&self.0, serializer)
    }
}

impl Money {
    /// 9,999,999,999,999.99: what `numeric(15,2)` holds.
    pub fn max() -> Decimal {
        Decimal::new(999_999_999_999_999, 2)
    }

    /// Accepts only the canonical form: digits, optionally a dot and one or two digits. No sign,
    /// exponent, separator, whitespace, or leading or trailing dot: `"1e3"` or `".50"` is
    /// refused rather than read as a number the client may not have meant.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        const FORMAT: &str =
            "must be digits with at most two decimals, written as a string, like \"2500000.00\"";
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) if (1..=2).contains(&fraction.len()) => (whole, fraction),
            Some(_) => return Err(FORMAT),
            None => (text, ""),
        };
        let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) {
            return Err(FORMAT);
        }
        if whole.trim_start_matches('0').len() > 13 {
            return Err("is too large");
        }
        let value: Decimal = text.parse().map_err(|_| FORMAT)?;
        Self::try_from(value)
    }

    pub fn amount(self) -> Decimal {
        self.0
    }
}

impl TryFrom<Decimal> for Money {
    type Error = &'static str;

    fn try_from(value: Decimal) -> Result<Self, Self::Error> {
        if value.scale() > 2 && value != value.round_dp(2) {
            return Err("must have at most two decimals");
        }
        if value <= Decimal::ZERO {
            return Err("must be greater than zero");
        }
        if value > Self::max() {
            return Err("is too large");
        }
        let mut value = value.round_dp(2);
        value.rescale(2);
        Ok(Self(value))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Money::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Any amount of money, negative too (balances, totals, journal lines), read from PostgreSQL
/// `numeric` as is and written to JSON as a string with exactly two decimals (`"-12.50"`).
/// Response fields of this type need no serialisation attributes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, ToSchema, sqlx::Type,
)]
#[sqlx(transparent)]
#[schema(value_type = String, example = "2500000.00")]
pub struct Amount(pub Decimal);

impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        as_cents(&self.0, serializer)
    }
}

impl From<Decimal> for Amount {
    fn from(value: Decimal) -> Self {
        Self(value)
    }
}

/// Rounds to cents, half away from zero (the usual rule for money).
pub fn cents(value: Decimal) -> Decimal {
    let mut rounded = value.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(2);
    rounded
}

/// Serialises an amount as a string with exactly two decimals (PostgreSQL hands back a zero
/// `numeric(15,2)` without its scale).
pub fn as_cents<S: serde::Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buffer = [0_u8; CENTS_TEXT_MAX];
    match cents_text(*value, &mut buffer) {
        Some(text) => serializer.serialize_str(text),
        None => serializer.collect_str(&cents(*value)),
    }
}

/// "-" and 20 digits (a `u64` of cents) with the decimal point.
const CENTS_TEXT_MAX: usize = 22;

/// `value` to the cent as text, written into `buffer` without allocating; `None` for amounts
/// beyond a `u64` of cents. Amounts from the database and from [`cents`] already have two
/// decimals and skip the rounding: responses with many amounts (a schedule has four a month)
/// spent a twentieth of the service's CPU rescaling and formatting decimals.
fn cents_text(value: Decimal, buffer: &mut [u8; CENTS_TEXT_MAX]) -> Option<&str> {
    let value = if value.scale() == 2 {
        value
    } else {
        cents(value)
    };
    let mut rest = u64::try_from(value.mantissa().unsigned_abs()).ok()?;
    let mut at = buffer.len();
    for digit in 0.. {
        if digit == 2 {
            at -= 1;
            buffer[at] = b'.';
        }
        at -= 1;
        buffer[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 && digit >= 2 {
            break;
        }
    }
    if value.is_sign_negative() && !value.is_zero() {
        at -= 1;
        buffer[at] = b'-';
    }
    std::str::from_utf8(&buffer[at..]).ok()
}

/// One installment of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Installment {
    pub number: u32,
    pub due_date: NaiveDate,
    /// The days of its period as the loan's day count counts them.
    #[schema(example = 31)]
    pub days: i64,
    #[serde(serialize_with = "crate::domain::money::as_cents")]
    #[schema(value_type = String)]
    pub principal: Decimal,
    #[serde(serialize_with = "crate::domain::money::as_cents")]
    #[schema(value_type = String)]
    pub interest: Decimal,
    #[serde(serialize_with = "crate::domain::money::as_cents")]
    #[schema(value_type = String)]
    pub total: Decimal,
    /// Principal still owed after this installment.
    #[serde(serialize_with = "crate::domain::money::as_cents")]
    #[schema(value_type = String)]
    pub remaining_balance: Decimal,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn money_is_a_string_with_at_most_two_decimals() {
        let m: Money = serde_json::from_str("\"2500000.5\"").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"2500000.50\"");
        for bad in [
            "2500000.00",
            "\"0\"",
            "\"-1\"",
            "\"1.005\"",
            "\"abc\"",
            "\"99999999999999.99\"",
        ] {
            assert!(
                serde_json::from_str::<Money>(bad).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn only_the_canonical_form_is_money() {
        for good in ["5", "5.5", "5.50", "0.01", "007.10", "9999999999999.99"] {
            assert!(Money::parse(good).is_ok(), "{good} refused");
        }
        for bad in [
            "1e3", "1E3", "1_000", "1,000", "+5.00", "-5.00", ".50", "5.", " 5", "5 ", "5.0 ",
            "\u{a0}5", "0x10", "5.001", "NaN", "inf", "", ".", "1.2.3", "٥",
        ] {
            assert!(Money::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn amounts_are_written_to_the_cent() {
        let text = |v: Decimal| {
            serde_json::to_value(Installment {
                number: 1,
                due_date: NaiveDate::MIN,
                days: 30,
                principal: v,
                interest: v,
                total: v,
                remaining_balance: v,
            })
            .unwrap()["principal"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        for (value, expected) in [
            (Decimal::ZERO, "0.00"),
            (Decimal::new(5, 2), "0.05"),
            (Decimal::new(-5, 2), "-0.05"),
            (Decimal::new(250_000_050, 2), "2500000.50"),
            (Decimal::new(1005, 3), "1.01"),
            (Decimal::new(7, 0), "7.00"),
            (Decimal::new(999_999_999_999_999, 2), "9999999999999.99"),
            // Beyond a u64 of cents: formatted by rust_decimal instead.
            (
                Decimal::from_i128_with_scale(100_000_000_000_000_000_005, 2),
                "1000000000000000000.05",
            ),
        ] {
            assert_eq!(text(value), expected, "{value:?}");
        }
    }

    proptest! {
        #[test]
        fn cents_text_matches_decimal_formatting(mantissa in any::<i64>(), scale in 0u32..=6) {
            let value = Decimal::new(mantissa, scale);
            let mut buffer = [0_u8; CENTS_TEXT_MAX];
            let expected = cents(value).to_string();
            match cents_text(value, &mut buffer) {
                Some(text) => prop_assert_eq!(text, expected),
                None => prop_assert!(cents(value).mantissa().unsigned_abs() > u128::from(u64::MAX)),
            }
        }
    }
}
