//! Which decisions need a second person (`FOUR_EYES_ACTIONS`), and how much one person may
//! approve alone (`APPROVAL_LIMIT_STAFF`).

use rust_decimal::Decimal;

use super::{parsed, ConfigError, Source};

/// Every decision that can be made to need a checker.
pub const CHECKABLE_ACTIONS: [&str; 8] = [
    "LOAN_APPROVAL",
    "DISBURSEMENT",
    "WRITE_OFF",
    "REVERSAL",
    "REFUND",
    "PRODUCT_CHANGE",
    "IDENTITY_LINK",
    "STAFF_CHANGE",
];

/// The decisions that need a checker unless configured otherwise. `LOAN_APPROVAL` means an
/// approval above the maker's limit: a limit is only a limit if it binds.
pub const DEFAULT_ACTIONS: [&str; 4] = [
    "LOAN_APPROVAL",
    "WRITE_OFF",
    "PRODUCT_CHANGE",
    "IDENTITY_LINK",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FourEyesConfig {
    /// The actions (of [`CHECKABLE_ACTIONS`]) that need a checker.
    pub actions: Vec<&'static str>,
    /// The largest amount a staff member may decide alone, unless their directory entry says
    /// otherwise. Administrators have none.
    pub staff_limit: Decimal,
}

impl Default for FourEyesConfig {
    fn default() -> Self {
        Self {
            actions: DEFAULT_ACTIONS.to_vec(),
            staff_limit: Decimal::new(100_000_000, 0),
        }
    }
}

impl FourEyesConfig {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let d = Self::default();
        let actions = match src.get("FOUR_EYES_ACTIONS") {
            None => d.actions,
            Some(list) if list.trim().eq_ignore_ascii_case("none") => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(|name| {
                    CHECKABLE_ACTIONS
                        .into_iter()
                        .find(|known| known.eq_ignore_ascii_case(name))
                        .ok_or_else(|| {
                            ConfigError(format!(
                                "FOUR_EYES_ACTIONS: {name:?} is not one of {}",
                                CHECKABLE_ACTIONS.join(", ")
                            ))
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let staff_limit: Decimal = parsed(src, "APPROVAL_LIMIT_STAFF", d.staff_limit, "an amount")?;
        if staff_limit.is_sign_negative() {
            return Err(ConfigError(
                "APPROVAL_LIMIT_STAFF must not be negative".into(),
            ));
        }
        Ok(Self {
            actions,
            staff_limit,
        })
    }

    /// Whether `action` needs a checker.
    pub fn requires(&self, action: &str) -> bool {
        self.actions.contains(&action)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Map(HashMap<&'static str, &'static str>);

    impl Source for Map {
        fn get(&self, key: &str) -> Option<String> {
            self.0.get(key).map(|v| (*v).to_owned())
        }
    }

    #[test]
    fn the_actions_are_a_list_of_known_names_or_none() {
        let config = FourEyesConfig::from_source(&Map(HashMap::new())).unwrap();
        assert_eq!(config, FourEyesConfig::default());
        assert!(config.requires("WRITE_OFF") && !config.requires("REVERSAL"));
        let env = Map(HashMap::from([
            ("FOUR_EYES_ACTIONS", "reversal, WRITE_OFF"),
            ("APPROVAL_LIMIT_STAFF", "5000000"),
        ]));
        let config = FourEyesConfig::from_source(&env).unwrap();
        assert_eq!(config.actions, ["REVERSAL", "WRITE_OFF"]);
        assert_eq!(config.staff_limit, Decimal::new(5_000_000, 0));
        let none = Map(HashMap::from([("FOUR_EYES_ACTIONS", "none")]));
        assert!(FourEyesConfig::from_source(&none)
            .unwrap()
            .actions
            .is_empty());
        for bad in [
            ("FOUR_EYES_ACTIONS", "WRITEOFF"),
            ("APPROVAL_LIMIT_STAFF", "-1"),
        ] {
            assert!(FourEyesConfig::from_source(&Map(HashMap::from([bad]))).is_err());
        }
    }
}
