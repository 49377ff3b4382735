//! Access tokens of an OpenID Connect provider: verified against its key set, checked for
//! issuer, audience and lifetime, and mapped to this service's roles and customers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, Header, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::jwks::KeyCache;
use super::{Role, TokenError};
use crate::platform::config::OidcConfig;

/// A provider's verified claims.
pub type ProviderClaims = Map<String, Value>;

/// Tokens verified lately, by SHA-256 of the token: an app sends the same access token for
/// minutes, and a signature check costs 20–55 µs of CPU (RS256–ES256) against 1 µs for the hash.
/// An entry counts while its token is unexpired and the key that verified it is still in the
/// key set under its `kid`: the same key, not only the same `kid`.
struct Verified {
    claims: Arc<ProviderClaims>,
    kid: String,
    fingerprint: [u8; 32],
    exp: i64,
}

/// Tokens remembered at most; beyond it the expired ones go, then all.
const VERIFIED_CAPACITY: usize = 10_000;

pub struct Provider {
    pub config: OidcConfig,
    pub keys: Arc<KeyCache>,
    /// The checks for each algorithm a key may have, built once.
    validations: [(Algorithm, Validation); 3],
    verified: Mutex<HashMap<[u8; 32], Verified>>,
}

impl Provider {
    pub fn new(config: OidcConfig) -> Result<Self, String> {
        let keys = KeyCache::new(
            config.keys.clone(),
            &config.issuer,
            config.unknown_kid_interval,
        )?;
        let validation = |algorithm| {
            let mut v = Validation::new(algorithm);
            v.leeway = config.leeway.as_secs();
            v.validate_nbf = true;
            v.set_issuer(&[&config.issuer]);
            v.set_audience(&[&config.audience]);
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            (algorithm, v)
        };
        let validations = [
            validation(Algorithm::RS256),
            validation(Algorithm::ES256),
            validation(Algorithm::EdDSA),
        ];
        Ok(Self {
            config,
            keys: Arc::new(keys),
            validations,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Verifies `token` (whose header is `header`) with the key its `kid` names, by that key's
    /// algorithm, and checks its claims at `now` (Unix seconds); or finds it verified lately.
    pub async fn verify(
        &self,
        token: &str,
        header: &Header,
        now: i64,
    ) -> Result<Arc<ProviderClaims>, TokenError> {
        let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let leeway = i64::try_from(self.config.leeway.as_secs()).unwrap_or(i64::MAX);
        if let Some(claims) = self.remembered(&digest, now.saturating_sub(leeway)) {
            return Ok(claims);
        }
        let Some(key) = self.keys.find(kid).await else {
            return Err(if self.keys.is_loaded() {
                TokenError::UnknownKey
            } else {
                TokenError::KeysUnavailable
            });
        };
        let (_, validation) = self
            .validations
            .iter()
            .find(|(algorithm, _)| *algorithm == key.algorithm)
            .ok_or(TokenError::UnsupportedAlgorithm)?;
        let claims = jsonwebtoken::decode::<ProviderClaims>(token, &key.key, validation)?.claims;
        let exp = check_lifetime(&claims, now, &self.config)?;
        let claims = Arc::new(claims);
        self.remember(digest, &claims, (kid, key.fingerprint), exp, now);
        Ok(claims)
    }

    /// A token verified lately, unexpired at `not_before_exp`, whose key is still in the set.
    fn remembered(&self, digest: &[u8; 32], not_before_exp: i64) -> Option<Arc<ProviderClaims>> {
        let verified = self.verified.lock().ok()?;
        let entry = verified.get(digest)?;
        let same_key = self
            .keys
            .get(&entry.kid)
            .is_some_and(|key| key.fingerprint == entry.fingerprint);
        (entry.exp >= not_before_exp && same_key).then(|| entry.claims.clone())
    }

    fn remember(
        &self,
        digest: [u8; 32],
        claims: &Arc<ProviderClaims>,
        (kid, fingerprint): (&str, [u8; 32]),
        exp: i64,
        now: i64,
    ) {
        let Ok(mut verified) = self.verified.lock() else {
            return;
        };
        if verified.len() >= VERIFIED_CAPACITY {
            verified.retain(|_, v| v.exp >= now);
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
        }
        let entry = Verified {
            claims: claims.clone(),
            kid: kid.to_owned(),
            fingerprint,
            exp,
        };
        verified.insert(digest, entry);
    }

    /// The role the configured claim names, after the configured prefix. Exactly one of this
    /// service's roles must be there: none, or two, is a refusal, never a guess.
    pub fn role(&self, claims: &ProviderClaims) -> Result<Role, &'static str> {
        let value = claim_at(claims, &self.config.role_claim).ok_or("token has no role claim")?;
        let names: Vec<&str> = match value {
            Value::String(text) => text.split_whitespace().collect(),
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            _ => return Err("token role claim is neither a string nor a list"),
        };
        let mut roles = names
            .into_iter()
            .filter_map(|name| name.strip_prefix(self.config.role_prefix.as_str()))
            .filter_map(Role::parse);
        let role = roles.next().ok_or("token names no known role")?;
        if roles.any(|other| other != role) {
            return Err("token names more than one role");
        }
        Ok(role)
    }

    /// The customer id in the configured customer claim: `Ok(None)` when none is configured or
    /// the token lacks it (then the identity links decide).
    pub fn customer_claim(&self, claims: &ProviderClaims) -> Result<Option<Uuid>, &'static str> {
        let Some(path) = &self.config.customer_claim else {
            return Ok(None);
        };
        match claim_at(claims, path) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Uuid::parse_str(text)
                .map(Some)
                .map_err(|_| "token customer claim is not a UUID"),
            Some(_) => Err("token customer claim is not a UUID"),
        }
    }
}

impl Provider {
    /// The office code in the configured branch claim, if one is configured and present.
    pub fn branch_claim(&self, claims: &ProviderClaims) -> Result<Option<String>, &'static str> {
        let Some(path) = &self.config.branch_claim else {
            return Ok(None);
        };
        match claim_at(claims, path) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(code)) => Ok(Some(code.clone())),
            Some(_) => Err("token branch claim is not an office code"),
        }
    }
}

/// The value at a dotted claim path.
fn claim_at<'a>(claims: &'a ProviderClaims, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(claims.get(first)?, |value, name| value.get(name))
}

/// A token must say when it was issued (`iat`, else `nbf`), not in the future, and live no
/// longer than the configured maximum: a stolen long-lived token is a long-lived door. Returns
/// `exp`.
fn check_lifetime(
    claims: &ProviderClaims,
    now: i64,
    config: &OidcConfig,
) -> Result<i64, TokenError> {
    let number = |name: &str| claims.get(name).and_then(Value::as_i64);
    let exp = number("exp").ok_or(TokenError::MissingClaim)?;
    let start = number("iat")
        .or_else(|| number("nbf"))
        .ok_or(TokenError::MissingClaim)?;
    let leeway = i64::try_from(config.leeway.as_secs()).unwrap_or(i64::MAX);
    if start > now.saturating_add(leeway) {
        return Err(TokenError::IssuedInTheFuture);
    }
    let max = i64::try_from(config.max_lifetime.as_secs()).unwrap_or(i64::MAX);
    if exp.saturating_sub(start) > max {
        return Err(TokenError::LifetimeTooLong);
    }
    Ok(exp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(extra: &[(&str, &str)]) -> Provider {
        let mut env = vec![
            ("OIDC_ISSUER".to_owned(), "https://idp.example".to_owned()),
            ("OIDC_AUDIENCE".to_owned(), "api".to_owned()),
            ("OIDC_JWKS_FILE".to_owned(), "/nonexistent".to_owned()),
        ];
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let config = OidcConfig::from_source(&env).unwrap().unwrap();
        Provider::new(config).unwrap()
    }

    fn claims(value: serde_json::Value) -> ProviderClaims {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn the_role_comes_from_a_nested_path_after_the_prefix() {
        let p = provider(&[
            ("OIDC_ROLE_CLAIM", "realm_access.roles"),
            ("OIDC_ROLE_PREFIX", "lakehouse-"),
        ]);
        let c = claims(
            serde_json::json!({"realm_access": {"roles": ["offline_access", "lakehouse-staff"]}}),
        );
        assert_eq!(p.role(&c), Ok(Role::Staff));
        let bare = claims(serde_json::json!({"realm_access": {"roles": ["staff"]}}));
        assert!(p.role(&bare).is_err(), "a role without the prefix counts");
    }

    #[test]
    fn the_role_comes_from_a_scope_string() {
        let p = provider(&[
            ("OIDC_ROLE_CLAIM", "scope"),
            ("OIDC_ROLE_PREFIX", "lakehouse:"),
        ]);
        let c = claims(serde_json::json!({"scope": "openid lakehouse:etl api"}));
        assert_eq!(p.role(&c), Ok(Role::Etl));
    }

    #[test]
    fn no_role_an_unknown_one_or_two_are_refused() {
        let p = provider(&[]);
        for c in [
            serde_json::json!({}),
            serde_json::json!({"role": "superuser"}),
            serde_json::json!({"role": 7}),
            serde_json::json!({"role": ["staff", "admin"]}),
        ] {
            assert!(p.role(&claims(c.clone())).is_err(), "{c}");
        }
        assert_eq!(
            p.role(&claims(serde_json::json!({"role": ["staff", "staff"]}))),
            Ok(Role::Staff)
        );
    }

    #[test]
    fn the_customer_claim_must_be_a_uuid_when_present() {
        let p = provider(&[("OIDC_CUSTOMER_CLAIM", "ext.customer")]);
        let id = Uuid::now_v7();
        let c = claims(serde_json::json!({"ext": {"customer": id.to_string()}}));
        assert_eq!(p.customer_claim(&c), Ok(Some(id)));
        assert_eq!(p.customer_claim(&claims(serde_json::json!({}))), Ok(None));
        assert!(p
            .customer_claim(&claims(serde_json::json!({"ext": {"customer": "x"}})))
            .is_err());
        assert_eq!(provider(&[]).customer_claim(&c), Ok(None));
    }

    #[test]
    fn lifetimes_are_bounded_and_start_no_later_than_now() {
        let p = provider(&[
            ("OIDC_MAX_TOKEN_LIFETIME_SECS", "3600"),
            ("OIDC_LEEWAY_SECS", "30"),
        ]);
        let check = |v: serde_json::Value| check_lifetime(&claims(v), 1_000_000, &p.config);
        assert_eq!(
            check(serde_json::json!({"iat": 1_000_000, "exp": 1_003_600})),
            Ok(1_003_600)
        );
        assert_eq!(
            check(serde_json::json!({"nbf": 1_000_000, "exp": 1_003_600})),
            Ok(1_003_600)
        );
        assert_eq!(
            check(serde_json::json!({"iat": 1_000_000, "exp": 1_003_601})),
            Err(TokenError::LifetimeTooLong)
        );
        assert_eq!(
            check(serde_json::json!({"exp": 1_003_600})),
            Err(TokenError::MissingClaim)
        );
        assert_eq!(
            check(serde_json::json!({"iat": 1_000_031, "exp": 1_001_000})),
            Err(TokenError::IssuedInTheFuture)
        );
    }

    /// A token verified with a key is forgotten once the provider replaces that key under the
    /// same `kid`: verified again, against the new key, it is refused.
    #[tokio::test]
    async fn a_remembered_token_dies_with_its_key() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/oidc");
        let all: serde_json::Value =
            serde_json::from_slice(&std::fs::read(format!("{fixtures}/keys.json")).unwrap())
                .unwrap();
        let public = |name: &str| {
            let mut key = all["keys"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["kid"] == name)
                .unwrap()
                .clone();
            key["kid"] = "signing".into();
            serde_json::json!({ "keys": [key] }).to_string()
        };
        let file = std::env::temp_dir().join(format!("lakehouse-jwks-{}.json", Uuid::now_v7()));
        std::fs::write(&file, public("rsa-a")).unwrap();
        let env = [
            ("OIDC_ISSUER", "https://idp.example"),
            ("OIDC_AUDIENCE", "api"),
            ("OIDC_JWKS_FILE", file.to_str().unwrap()),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec();
        let p = Provider::new(OidcConfig::from_source(&env).unwrap().unwrap()).unwrap();
        p.keys.refresh().await.unwrap();
        let now = chrono::Utc::now().timestamp();
        let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
        header.kid = Some("signing".into());
        let pem = std::fs::read(format!("{fixtures}/rsa-a.pem")).unwrap();
        let token = jsonwebtoken::encode(
            &header,
            &serde_json::json!({"iss": "https://idp.example", "aud": "api", "sub": "teller-1",
                                "exp": now + 600, "iat": now}),
            &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
        )
        .unwrap();
        assert!(p.verify(&token, &header, now).await.is_ok());
        assert!(p.verify(&token, &header, now).await.is_ok(), "remembered");
        std::fs::write(&file, public("rsa-b")).unwrap();
        p.keys.refresh().await.unwrap();
        assert!(p.verify(&token, &header, now).await.is_err());
        std::fs::remove_file(&file).ok();
    }
}
