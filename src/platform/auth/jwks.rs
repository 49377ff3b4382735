//! The provider's signing keys: fetched from its key set, kept in memory, fetched again on a
//! schedule and, at a bounded rate, when a token names a key the set does not hold.
//!
//! Each key decides its own algorithm (RS256 for RSA, ES256 for P-256, EdDSA for Ed25519),
//! never the token. A fetch that fails keeps the last good set: tokens keep verifying while
//! the provider is unreachable, and a key leaves only when a fetched set no longer holds it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use url::Url;

use crate::platform::config::{check_transport, KeySource};

/// The largest discovery or key-set document read.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// How soon a failed scheduled fetch is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// One verifying key and the one algorithm it verifies.
pub struct VerifyingKey {
    pub algorithm: Algorithm,
    pub key: DecodingKey,
    /// SHA-256 of the key's parameters: a key replaced under the same `kid` has another.
    pub fingerprint: [u8; 32],
}

/// The usable keys of a key set, by `kid`.
#[derive(Default)]
pub struct KeySet {
    keys: HashMap<String, Arc<VerifyingKey>>,
}

impl KeySet {
    /// The signing keys of a JWKS document. Keys without a `kid`, for encryption, of another
    /// type or curve, or whose `alg` disagrees with their type are left out, not refused: a
    /// provider's set often holds keys for other uses.
    pub fn parse(document: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document =
            serde_json::from_slice(document).map_err(|e| format!("not a JWKS document: {e}"))?;
        let keys = document
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| usable(&jwk))
            .collect();
        Ok(Self { keys })
    }

    pub fn get(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        self.keys.get(kid).cloned()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn usable(jwk: &Jwk) -> Option<(String, Arc<VerifyingKey>)> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let kid = jwk.common.key_id.clone()?;
    let (algorithm, named) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            (Algorithm::EdDSA, KeyAlgorithm::EdDSA)
        }
        _ => return None,
    };
    if jwk.common.key_algorithm.is_some_and(|alg| alg != named) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    let fingerprint = Sha256::digest(serde_json::to_vec(&jwk.algorithm).ok()?).into();
    Some((
        kid,
        Arc::new(VerifyingKey {
            algorithm,
            key,
            fingerprint,
        }),
    ))
}

/// The provider's current key set, shared by every request.
pub struct KeyCache {
    source: KeySource,
    issuer: String,
    http: reqwest::Client,
    current: RwLock<Arc<KeySet>>,
    loaded: AtomicBool,
    /// When the last fetch started; held while fetching, so that fetches never overlap.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    unknown_kid_interval: Duration,
}

impl KeyCache {
    pub fn new(
        source: KeySource,
        issuer: &str,
        unknown_kid_interval: Duration,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lakehouse-api/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            source,
            issuer: issuer.to_owned(),
            http,
            current: RwLock::new(Arc::new(KeySet::default())),
            loaded: AtomicBool::new(false),
            last_fetch: tokio::sync::Mutex::new(None),
            unknown_kid_interval,
        })
    }

    /// Whether a key set has been loaded since start.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    pub fn get(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        self.current.read().ok()?.get(kid)
    }

    /// The key `kid` names; when the set does not hold it, fetches the set again, unless a
    /// fetch started less than the unknown-kid interval ago (a stream of made-up `kid`s costs
    /// the provider one request per interval, not one each).
    pub async fn find(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        if let Some(key) = self.get(kid) {
            return Some(key);
        }
        let mut last = self.last_fetch.lock().await;
        if let Some(key) = self.get(kid) {
            return Some(key);
        }
        if last.is_some_and(|at| at.elapsed() < self.unknown_kid_interval) {
            metrics::counter!("oidc_unknown_kid_total", "refetched" => "no").increment(1);
            return None;
        }
        metrics::counter!("oidc_unknown_kid_total", "refetched" => "yes").increment(1);
        *last = Some(Instant::now());
        if let Err(error) = self.load().await {
            tracing::warn!(%error, "fetching the identity provider's keys failed");
        }
        self.get(kid)
    }

    /// Fetches the key set now and replaces the cached one.
    pub async fn refresh(&self) -> Result<usize, String> {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        self.load().await
    }

    async fn load(&self) -> Result<usize, String> {
        let fetched = self.fetch().await;
        let outcome = if fetched.is_ok() { "ok" } else { "failed" };
        metrics::counter!("oidc_jwks_fetches_total", "outcome" => outcome).increment(1);
        let set = fetched?;
        let count = set.len();
        metrics::gauge!("oidc_jwks_keys").set(count as f64);
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(set);
        }
        self.loaded.store(true, Ordering::Release);
        Ok(count)
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        match &self.source {
            KeySource::File(path) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                KeySet::parse(&bytes)
            }
            KeySource::Jwks(url) => KeySet::parse(&self.download(url).await?),
            KeySource::Discovery(url) => {
                #[derive(Deserialize)]
                struct Discovery {
                    issuer: String,
                    jwks_uri: String,
                }
                let discovery: Discovery = serde_json::from_slice(&self.download(url).await?)
                    .map_err(|e| format!("{url}: not a discovery document: {e}"))?;
                if discovery.issuer != self.issuer {
                    return Err(format!(
                        "{url} names issuer {:?}, not the configured {:?}",
                        discovery.issuer, self.issuer
                    ));
                }
                let jwks = Url::parse(&discovery.jwks_uri)
                    .map_err(|_| format!("{url}: jwks_uri is not a URL"))?;
                check_transport(&jwks).map_err(|why| format!("jwks_uri {jwks}: {why}"))?;
                KeySet::parse(&self.download(&jwks).await?)
            }
        }
    }

    async fn download(&self, url: &Url) -> Result<Vec<u8>, String> {
        let mut response = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("{url}: larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
        }
        Ok(body)
    }

    /// Fetches the key set every `every` (sooner again after a failure) until the process ends.
    pub fn keep_fresh(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let wait = match self.refresh().await {
                    Ok(_) => every,
                    Err(error) => {
                        tracing::warn!(%error, "fetching the identity provider's keys failed; keeping the last good set");
                        every.min(RETRY_AFTER_FAILURE)
                    }
                };
                tokio::time::sleep(wait).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The public parts of the test fixture's key `kid`, with `extra` fields set.
    fn fixture(kid: &str, extra: serde_json::Value) -> serde_json::Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/oidc/keys.json");
        let keys: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let key = keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap();
        let mut public = serde_json::Map::new();
        for name in ["kty", "kid", "crv", "n", "e", "x", "y"] {
            if let Some(value) = key.get(name) {
                public.insert(name.into(), value.clone());
            }
        }
        for (name, value) in extra.as_object().unwrap() {
            if value.is_null() {
                public.remove(name);
            } else {
                public.insert(name.clone(), value.clone());
            }
        }
        serde_json::Value::Object(public)
    }

    #[test]
    fn each_key_type_gets_its_algorithm_and_others_are_left_out() {
        let document = serde_json::json!({"keys": [
            fixture("rsa-a", serde_json::json!({})),
            fixture("rsa-b", serde_json::json!({"alg": "RS256", "use": "sig"})),
            fixture("ec-a", serde_json::json!({})),
            fixture("ed-a", serde_json::json!({"alg": "EdDSA"})),
            fixture("rsa-a", serde_json::json!({"kid": "rsa-ps", "alg": "PS256"})),
            fixture("rsa-a", serde_json::json!({"kid": "rsa-enc", "use": "enc"})),
            fixture("rsa-a", serde_json::json!({"kid": "rsa-as-es", "alg": "ES256"})),
            fixture("rsa-a", serde_json::json!({"kid": null})),
            fixture("ed-a", serde_json::json!({"kid": "x25519", "crv": "X25519"})),
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "weird", "kid": "w"}
        ]});
        let set = KeySet::parse(document.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 4);
        assert_eq!(set.get("rsa-a").unwrap().algorithm, Algorithm::RS256);
        assert_eq!(set.get("rsa-b").unwrap().algorithm, Algorithm::RS256);
        assert_eq!(set.get("ec-a").unwrap().algorithm, Algorithm::ES256);
        assert_eq!(set.get("ed-a").unwrap().algorithm, Algorithm::EdDSA);
        for left_out in ["rsa-ps", "rsa-enc", "rsa-as-es", "x25519", "hmac", "w"] {
            assert!(set.get(left_out).is_none(), "{left_out}");
        }
    }

    #[test]
    fn a_document_that_is_not_a_key_set_is_an_error() {
        assert!(KeySet::parse(b"{}").is_err());
        assert!(KeySet::parse(b"<html>").is_err());
    }
}
