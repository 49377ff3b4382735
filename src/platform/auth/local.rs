//! The service's own tokens: HS256 with `JWT_SECRET`, minted by `lakehouse-api token` and
//! `dev`, for development and tests.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use std::time::Duration;

use super::{Role, TokenError};
use crate::platform::config::Secret;
use crate::CliResult;

/// The claims of a local token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who is calling: a user name or service account; recorded as the actor of every change.
    pub sub: String,
    /// One of `customer`, `staff`, `analyst`, `etl`, `admin`.
    pub role: String,
    /// Required when `role` is `customer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<Uuid>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// A staff member's office (its code); without it, the staff directory decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// The head office's code (migration 0042): its staff see every branch.
pub const HEAD_OFFICE: &str = "HO";

/// Signs and verifies local tokens with one shared secret.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtKeys {
    pub fn new(secret: Secret) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret.expose()),
            decoding: DecodingKey::from_secret(secret.expose()),
            validation,
        }
    }

    pub fn sign(&self, claims: &Claims) -> String {
        // Signing with HMAC over a serialisable struct cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .unwrap_or_default()
    }

    /// Verifies the signature (HS256 only) and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(TokenError::from)
    }
}

/// A local token for `role`, living `ttl` (`90s`, `30m`, `1h`, `7d`): what `lakehouse-api token`
/// prints and `dev` hands out. A staff token works at `branch`, by default the head office
/// (every branch).
pub fn mint(
    keys: &JwtKeys,
    role: &str,
    customer_id: Option<Uuid>,
    ttl: &str,
    sub: Option<String>,
    branch: Option<String>,
) -> CliResult<String> {
    let role = Role::parse(role).ok_or_else(|| {
        format!("--role must be one of customer, staff, analyst, etl, admin (got {role:?})")
    })?;
    if role == Role::Customer && customer_id.is_none() {
        return Err("--role customer needs --customer-id".into());
    }
    let branch = match role {
        Role::Staff => Some(branch.unwrap_or_else(|| HEAD_OFFICE.to_owned())),
        _ => None,
    };
    if branch
        .as_deref()
        .is_some_and(|code| !super::is_office_code(code))
    {
        return Err("--branch must be an office code such as HO or HN01".into());
    }
    let ttl = parse_ttl(ttl)?;
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: sub.unwrap_or_else(|| default_subject(role, customer_id)),
        role: role.as_str().into(),
        customer_id: customer_id.filter(|_| role == Role::Customer),
        exp: now + i64::try_from(ttl.as_secs())?,
        iat: Some(now),
        branch,
    };
    Ok(keys.sign(&claims))
}

/// Every customer gets a subject of their own: a shared one would make them one actor.
fn default_subject(role: Role, customer_id: Option<Uuid>) -> String {
    match (role, customer_id) {
        (Role::Customer, Some(id)) => format!("customer-{id}"),
        _ => format!("local-{}", role.as_str()),
    }
}

pub fn parse_ttl(text: &str) -> CliResult<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("--ttl {text:?}: expected a number and a unit, like 30m or 1h"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" | "" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("--ttl {text:?}: unit must be s, m, h or d").into()),
    };
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    use super::*;

    fn keys(secret: &str) -> JwtKeys {
        JwtKeys::new(Secret::new(secret.as_bytes().to_vec()))
    }

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: "alice".into(),
            role: "staff".into(),
            customer_id: None,
            exp,
            iat: None,
            branch: None,
        }
    }

    fn later() -> i64 {
        chrono::Utc::now().timestamp() + 600
    }

    #[test]
    fn a_signed_token_verifies_and_round_trips_its_claims() {
        let k = keys("0123456789abcdef0123456789abcdef");
        let c = claims(later());
        assert_eq!(k.verify(&k.sign(&c)), Ok(c));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let k = keys("0123456789abcdef0123456789abcdef");
        let token = k.sign(&claims(chrono::Utc::now().timestamp() - 1));
        assert_eq!(k.verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let token = keys("another-secret-another-secret-xx").sign(&claims(later()));
        let k = keys("0123456789abcdef0123456789abcdef");
        assert_eq!(k.verify(&token), Err(TokenError::BadSignature));
    }

    #[test]
    fn alg_none_is_refused_even_without_a_signature() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(later())).unwrap());
        let k = keys("0123456789abcdef0123456789abcdef");
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            assert!(k.verify(&token).is_err(), "{token} was accepted");
        }
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let k = keys("0123456789abcdef0123456789abcdef");
        let token = k.sign(&claims(later()));
        let mut forged = claims(later());
        forged.role = "admin".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = &forged_payload;
        assert_eq!(k.verify(&parts.join(".")), Err(TokenError::BadSignature));
    }

    #[test]
    fn ttls_take_a_unit() {
        assert_eq!(parse_ttl("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_ttl("soon").is_err());
        assert!(parse_ttl("5y").is_err());
    }
}
