//! Bearer tokens to callers: the service's own HS256 tokens, a provider's signed ones, or (in
//! dev mode) both. The token's header only routes it: HS256 goes to the local secret, every
//! other algorithm to the provider, whose key then decides the algorithm.

use std::collections::HashSet;
use std::sync::Mutex;

use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use jsonwebtoken::Algorithm;
use sqlx::PgPool;

use super::links::{LinkDirectory, LinkProof};
use super::provider::{Provider, ProviderClaims};
use super::{is_valid_subject, Caller, JwtKeys, Role, TokenError};
use crate::platform::config::TokenConfig;
use crate::platform::error::ApiError;

/// A token of a machine client (client credentials) rather than a person's login: a Keycloak
/// service account, an Auth0 client-credentials grant, or a token with no session (`sid`) whose
/// subject is the client (`azp`, `client_id`, Okta's `cid`).
fn is_machine_client(claims: &ProviderClaims, subject: &str) -> bool {
    let text = |name: &str| claims.get(name).and_then(|v| v.as_str());
    // What names a machine whatever else the token holds: Keycloak's service accounts, Auth0's
    // grant type and client subjects.
    if text("preferred_username").is_some_and(|u| u.starts_with("service-account-"))
        || text("gty") == Some("client-credentials")
        || subject.ends_with("@clients")
    {
        return true;
    }
    !claims.contains_key("sid")
        && (text("azp") == Some(subject)
            || text("client_id") == Some(subject)
            || text("cid") == Some(subject))
}

/// The request header a new login sends, once, with the code that proves its pending identity
/// link.
pub const LINK_CODE_HEADER: &str = "identity-link-code";

pub struct Authenticator {
    local: Option<JwtKeys>,
    provider: Option<Provider>,
    links: Option<LinkDirectory>,
    /// Machine clients already warned about acting as staff.
    warned: Mutex<HashSet<String>>,
}

impl From<JwtKeys> for Authenticator {
    fn from(keys: JwtKeys) -> Self {
        Self {
            local: Some(keys),
            provider: None,
            links: None,
            warned: Mutex::default(),
        }
    }
}

impl Authenticator {
    pub fn new(config: &TokenConfig) -> Result<Self, String> {
        Ok(Self {
            local: config.local_secret.clone().map(JwtKeys::new),
            provider: config.provider.clone().map(Provider::new).transpose()?,
            links: None,
            warned: Mutex::default(),
        })
    }

    /// Looks up identity links on `pool` (the provider's customers without a customer claim).
    pub fn with_links(mut self, pool: PgPool) -> Self {
        if let Some(provider) = &self.provider {
            self.links = Some(LinkDirectory::new(pool, provider.config.link_cache_ttl));
        }
        self
    }

    /// Starts refreshing the provider's keys in the background (the first fetch at once).
    pub fn start_key_refresh(&self) -> Option<tokio::task::JoinHandle<()>> {
        let provider = self.provider.as_ref()?;
        Some(
            provider
                .keys
                .clone()
                .keep_fresh(provider.config.refresh_every),
        )
    }

    /// False while a provider is configured and none of its key sets has loaded yet.
    pub fn is_ready(&self) -> bool {
        self.provider.as_ref().is_none_or(|p| p.keys.is_loaded())
    }

    /// The configured provider's issuer.
    pub fn provider_issuer(&self) -> Option<&str> {
        self.provider.as_ref().map(|p| p.config.issuer.as_str())
    }

    /// Forgets a remembered identity link (after staff changed it).
    pub fn forget_link(&self, issuer: &str, subject: &str) {
        if let Some(links) = &self.links {
            links.forget(issuer, subject);
        }
    }

    /// The caller a request's bearer token names; the reason for a refusal is logged, never
    /// sent.
    pub async fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let header = headers
            .get(AUTHORIZATION)
            .ok_or(ApiError::Unauthorized("no Authorization header"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized(
                "Authorization is not a bearer token",
            ))?
            .trim();
        let refused = |e: TokenError| ApiError::Unauthorized(e.reason());
        let header = jsonwebtoken::decode_header(token).map_err(|e| refused(e.into()))?;
        match (header.alg, &self.local, &self.provider) {
            (Algorithm::HS256, Some(local), _) => {
                Caller::from_claims(local.verify(token).map_err(refused)?)
            }
            (Algorithm::HS256, None, _) | (_, _, None) => {
                Err(refused(TokenError::UnsupportedAlgorithm))
            }
            (_, _, Some(provider)) => {
                let now = chrono::Utc::now().timestamp();
                let claims = provider
                    .verify(token, &header, now)
                    .await
                    .map_err(refused)?;
                self.provider_caller(provider, &claims, headers).await
            }
        }
    }

    async fn provider_caller(
        &self,
        provider: &Provider,
        claims: &ProviderClaims,
        headers: &HeaderMap,
    ) -> Result<Caller, ApiError> {
        let subject = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .filter(|s| is_valid_subject(s))
            .ok_or(ApiError::Unauthorized("unusable subject"))?;
        let role = provider.role(claims).map_err(ApiError::Unauthorized)?;
        let issuer = provider.config.issuer.as_str();
        if matches!(role, Role::Staff | Role::Admin) && is_machine_client(claims, subject) {
            if provider.config.refuse_shared_staff_clients {
                return Err(ApiError::Forbidden);
            }
            self.warn_once(subject);
        }
        let mut linked = false;
        let customer_id = match role {
            Role::Customer => Some(
                match provider
                    .customer_claim(claims)
                    .map_err(ApiError::Unauthorized)?
                {
                    Some(id) => id,
                    None => {
                        linked = true;
                        self.linked_customer(issuer, subject, claims, headers)
                            .await?
                            .ok_or(ApiError::Unauthorized(
                                "customer subject not linked to a customer",
                            ))?
                    }
                },
            ),
            _ => None,
        };
        let branch = provider
            .branch_claim(claims)
            .map_err(ApiError::Unauthorized)?;
        Ok(Caller {
            issuer: issuer.to_owned(),
            subject: subject.to_owned(),
            role,
            customer_id,
            request_id: None,
            expires_at: claims.get("exp").and_then(|exp| exp.as_i64()),
            linked,
            branch: super::staff_branch(role, branch)?,
        })
    }

    /// The customer (issuer, subject)'s active link names; else, if the request proves a
    /// pending link (its `Identity-Link-Code` header, or a verified e-mail or phone claim), the
    /// customer it activates.
    async fn linked_customer(
        &self,
        issuer: &str,
        subject: &str,
        claims: &ProviderClaims,
        headers: &HeaderMap,
    ) -> Result<Option<uuid::Uuid>, ApiError> {
        let Some(links) = &self.links else {
            return Ok(None);
        };
        if let Some(customer) = links.customer(issuer, subject).await? {
            return Ok(Some(customer));
        }
        let verified = |claim: &str, flag: &str| {
            claims
                .get(flag)
                .and_then(|v| v.as_bool())
                .filter(|v| *v)
                .and_then(|_| claims.get(claim))
                .and_then(|v| v.as_str())
        };
        let proof = LinkProof {
            code: headers
                .get(LINK_CODE_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|code| !code.is_empty() && code.len() <= 64),
            email: verified("email", "email_verified"),
            phone: verified("phone_number", "phone_number_verified"),
        };
        if proof.is_empty() {
            return Ok(None);
        }
        Ok(links.prove(issuer, subject, &proof).await?)
    }

    /// Warns, once per subject and instance, that a machine client acts as staff: every person
    /// using it is the same principal to the audit trail and to four eyes.
    fn warn_once(&self, subject: &str) -> bool {
        let Ok(mut warned) = self.warned.lock() else {
            return false;
        };
        let first = warned.len() < 10_000 && warned.insert(subject.to_owned());
        if first {
            tracing::warn!(
                subject,
                "a client-credentials token acts as staff: its users share one principal; give \
                 people their own logins (OIDC_REFUSE_SHARED_STAFF_CLIENTS=true refuses it)"
            );
            metrics::counter!("oidc_shared_staff_clients_total").increment(1);
        }
        first
    }

    /// Whether a caller whose customer came from an identity link still has it (a stream asks,
    /// and ends when it is gone); cached for the link TTL.
    pub async fn still_linked(&self, caller: &Caller) -> bool {
        let Some(links) = &self.links else {
            return true;
        };
        match links.customer(&caller.issuer, &caller.subject).await {
            Ok(customer) => customer == caller.customer_id,
            // A database hiccup does not end a stream; the next check decides.
            Err(_) => true,
        }
    }

    /// How long a link is remembered: how often a linked caller's stream checks its link.
    pub fn link_ttl(&self) -> Option<std::time::Duration> {
        self.provider.as_ref().map(|p| p.config.link_cache_ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(value: serde_json::Value) -> ProviderClaims {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_machine_client_is_told_from_a_person_and_warned_about_once() {
        let machine = claims(serde_json::json!({"sub": "branch-tool", "azp": "branch-tool"}));
        assert!(is_machine_client(&machine, "branch-tool"));
        let keycloak = claims(serde_json::json!({"sub": "5e1c", "azp": "branch-tool",
                                                 "preferred_username": "service-account-branch-tool"}));
        assert!(is_machine_client(&keycloak, "5e1c"));
        let person = claims(
            serde_json::json!({"sub": "teller-7", "azp": "branch-tool", "sid": "s1",
                                               "preferred_username": "teller.seven"}),
        );
        assert!(!is_machine_client(&person, "teller-7"));
        let with_session =
            claims(serde_json::json!({"sub": "branch-tool", "azp": "branch-tool", "sid": "s"}));
        assert!(!is_machine_client(&with_session, "branch-tool"));
        let auth = Authenticator::from(JwtKeys::new(crate::platform::config::Secret::new(
            b"0123456789abcdef0123456789abcdef".to_vec(),
        )));
        assert!(auth.warn_once("branch-tool"));
        assert!(!auth.warn_once("branch-tool"));
        assert!(auth.warn_once("etl-pipeline"));
    }
}
