//! HS256 JSON Web Tokens (RFC 7519), and nothing else.
//!
//! The service accepts exactly one algorithm, so the verifier is a few lines over the `hmac`
//! crate (which the PII hashing needs anyway) instead of a general JWT library: there is no
//! algorithm negotiation to get wrong (`alg: none`, RS/HS confusion) and no RSA stack to audit.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use crate::config::Secret;

type HmacSha256 = Hmac<Sha256>;

/// The claims this service issues and reads.
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
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// Why a token was refused; logged, never sent to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    UnsupportedAlgorithm,
    BadSignature,
    Expired,
}

impl TokenError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "malformed token",
            Self::UnsupportedAlgorithm => "token algorithm is not HS256",
            Self::BadSignature => "token signature does not verify",
            Self::Expired => "token expired",
        }
    }
}

/// Signs and verifies tokens with one shared secret.
#[derive(Clone)]
pub struct JwtKeys {
    secret: Secret,
}

const HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"; // {"alg":"HS256","typ":"JWT"}

impl JwtKeys {
    pub fn new(secret: Secret) -> Self {
        Self { secret }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail.
        HmacSha256::new_from_slice(self.secret.expose()).unwrap_or_else(|_| unreachable!())
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        let signing_input = format!("{HEADER_B64}.{}", URL_SAFE_NO_PAD.encode(payload));
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// Verifies signature, algorithm and expiry at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let (signing_input, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (header, payload) = signing_input
            .split_once('.')
            .filter(|(_, payload)| !payload.contains('.'))
            .ok_or(TokenError::Malformed)?;
        let header: Header = decode_json(header)?;
        if header.alg != "HS256" {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = decode_json(payload)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests {
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
        }
    }

    #[test]
    fn a_signed_token_verifies_and_round_trips_its_claims() {
        let k = keys("0123456789abcdef0123456789abcdef");
        let token = k.sign(&claims(2_000));
        assert_eq!(k.verify(&token, 1_000), Ok(claims(2_000)));
    }

    #[test]
    fn the_fixed_header_is_hs256() {
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(HEADER_B64).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "HS256", "typ": "JWT"}));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let k = keys("0123456789abcdef0123456789abcdef");
        let token = k.sign(&claims(1_000));
        assert_eq!(k.verify(&token, 1_000), Err(TokenError::Expired));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let token = keys("another-secret-another-secret-xx").sign(&claims(2_000));
        let k = keys("0123456789abcdef0123456789abcdef");
        assert_eq!(k.verify(&token, 1_000), Err(TokenError::BadSignature));
    }

    #[test]
    fn alg_none_is_refused_even_without_a_signature() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(2_000)).unwrap());
        let k = keys("0123456789abcdef0123456789abcdef");
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            assert!(k.verify(&token, 1_000).is_err(), "{token} was accepted");
        }
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let k = keys("0123456789abcdef0123456789abcdef");
        let token = k.sign(&claims(2_000));
        let mut forged = claims(2_000);
        forged.role = "admin".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = &forged_payload;
        assert_eq!(
            k.verify(&parts.join("."), 1_000),
            Err(TokenError::BadSignature)
        );
    }
}
