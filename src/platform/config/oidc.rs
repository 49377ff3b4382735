//! An OpenID Connect provider whose access tokens the service accepts (`OIDC_*`).

use std::time::Duration;

use url::Url;

use super::{parsed, required, ConfigError, Source};

/// Where the provider's signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// An OpenID discovery document, whose `jwks_uri` names the key set.
    Discovery(Url),
    /// A JWKS document.
    Jwks(Url),
    /// A JWKS file, read again at every refresh.
    File(std::path::PathBuf),
}

/// How the provider's tokens are checked and mapped to callers.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The `iss` every token must carry, and the issuer of its callers' principals.
    pub issuer: String,
    /// The `aud` every token must include: this API's identifier at the provider.
    pub audience: String,
    pub keys: KeySource,
    /// A claim name or dotted path (`realm_access.roles`) whose value names the role: a string
    /// (split at spaces, as `scope` is) or an array of strings.
    pub role_claim: Vec<String>,
    /// Prepended to this service's role names in that claim (`lakehouse-staff`).
    pub role_prefix: String,
    /// A claim holding a customer's id; without it (or without the claim in a token), the
    /// customer comes from the identity links staff make.
    pub customer_claim: Option<Vec<String>>,
    /// Where a staff token names its office code (`OIDC_BRANCH_CLAIM`); unset, the staff
    /// directory alone decides.
    pub branch_claim: Option<Vec<String>>,
    /// Allowed clock skew for `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// The longest a token may be valid, from `iat` (or `nbf`) to `exp`.
    pub max_lifetime: Duration,
    /// How often the key set is fetched again.
    pub refresh_every: Duration,
    /// At most one extra fetch per this interval, for tokens whose `kid` is unknown.
    pub unknown_kid_interval: Duration,
    /// How long an identity link looked up is remembered.
    pub link_cache_ttl: Duration,
    /// Refuse (403) a staff or admin token of a machine client (client credentials: no
    /// session, and its subject is the client) rather than warn once
    /// (`OIDC_REFUSE_SHARED_STAFF_CLIENTS`).
    pub refuse_shared_staff_clients: bool,
}

impl OidcConfig {
    /// `None` unless `OIDC_ISSUER` is set.
    pub fn from_source(src: &dyn Source) -> Result<Option<Self>, ConfigError> {
        let Some(issuer) = src.get("OIDC_ISSUER") else {
            return Ok(None);
        };
        let issuer = issuer.trim().to_owned();
        if issuer.len() > 255
            || !issuer
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'|' && b != b'\'')
        {
            return Err(ConfigError(
                "OIDC_ISSUER must be printable ASCII, at most 255 characters, without '|' or quotes".into(),
            ));
        }
        let audience = required(src, "OIDC_AUDIENCE").map_err(|_| {
            ConfigError(
                "OIDC_AUDIENCE is not set: tokens must be meant for this API (see .env.example)"
                    .into(),
            )
        })?;
        let keys = key_source(src, &issuer)?;
        let seconds = |key: &str, default: u64| -> Result<Duration, ConfigError> {
            parsed(src, key, default, "a whole number of seconds").map(Duration::from_secs)
        };
        let refresh_every = seconds("OIDC_JWKS_REFRESH_SECS", 300)?;
        let unknown_kid_interval = seconds("OIDC_JWKS_MIN_REFRESH_SECS", 30)?;
        if refresh_every.is_zero() || unknown_kid_interval.is_zero() {
            return Err(ConfigError(
                "OIDC_JWKS_REFRESH_SECS and OIDC_JWKS_MIN_REFRESH_SECS must be greater than zero"
                    .into(),
            ));
        }
        let max_lifetime = seconds("OIDC_MAX_TOKEN_LIFETIME_SECS", 86_400)?;
        if max_lifetime.is_zero() {
            return Err(ConfigError(
                "OIDC_MAX_TOKEN_LIFETIME_SECS must be greater than zero".into(),
            ));
        }
        Ok(Some(Self {
            issuer,
            audience: audience.trim().to_owned(),
            keys,
            role_claim: claim_path(src, "OIDC_ROLE_CLAIM")?.unwrap_or_else(|| vec!["role".into()]),
            role_prefix: src
                .get("OIDC_ROLE_PREFIX")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            customer_claim: claim_path(src, "OIDC_CUSTOMER_CLAIM")?,
            branch_claim: claim_path(src, "OIDC_BRANCH_CLAIM")?,
            leeway: seconds("OIDC_LEEWAY_SECS", 30)?,
            max_lifetime,
            refresh_every,
            unknown_kid_interval,
            link_cache_ttl: seconds("OIDC_LINK_CACHE_SECS", 60)?,
            refuse_shared_staff_clients: parsed(
                src,
                "OIDC_REFUSE_SHARED_STAFF_CLIENTS",
                false,
                "true or false",
            )?,
        }))
    }
}

/// At most one of `OIDC_DISCOVERY_URL`, `OIDC_JWKS_URL`, `OIDC_JWKS_FILE`; none means the
/// issuer's own discovery document.
fn key_source(src: &dyn Source, issuer: &str) -> Result<KeySource, ConfigError> {
    let given: Vec<&str> = ["OIDC_DISCOVERY_URL", "OIDC_JWKS_URL", "OIDC_JWKS_FILE"]
        .into_iter()
        .filter(|key| src.get(key).is_some())
        .collect();
    if given.len() > 1 {
        return Err(ConfigError(format!("set only one of {}", given.join(", "))));
    }
    let url = |key: &str, text: String| -> Result<Url, ConfigError> {
        let url =
            Url::parse(text.trim()).map_err(|_| ConfigError(format!("{key} is not a URL")))?;
        check_transport(&url).map_err(|why| ConfigError(format!("{key}: {why}")))?;
        Ok(url)
    };
    if let Some(text) = src.get("OIDC_DISCOVERY_URL") {
        return Ok(KeySource::Discovery(url("OIDC_DISCOVERY_URL", text)?));
    }
    if let Some(text) = src.get("OIDC_JWKS_URL") {
        return Ok(KeySource::Jwks(url("OIDC_JWKS_URL", text)?));
    }
    if let Some(path) = src.get("OIDC_JWKS_FILE") {
        return Ok(KeySource::File(path.trim().into()));
    }
    let discovery = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    url("OIDC_ISSUER (its discovery document)", discovery).map(KeySource::Discovery)
}

/// Keys travel over https only, except to this machine: a key fetched in clear from elsewhere
/// could be anyone's.
pub fn check_transport(url: &Url) -> Result<(), &'static str> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err("http is allowed only to a loopback host; use https"),
        _ => Err("only https (or http to a loopback host) is allowed"),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A claim name, or a dotted path into nested objects.
fn claim_path(src: &dyn Source, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
    let Some(text) = src.get(key) else {
        return Ok(None);
    };
    let path: Vec<String> = text.trim().split('.').map(str::to_owned).collect();
    if path.iter().any(String::is_empty) {
        return Err(ConfigError(format!(
            "{key}={text:?} is not a claim name or dotted path"
        )));
    }
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> [(&'static str, &'static str); 2] {
        [
            ("OIDC_ISSUER", "https://idp.example/realms/lakehouse"),
            ("OIDC_AUDIENCE", "lakehouse-api"),
        ]
    }

    #[test]
    fn an_issuer_alone_means_its_discovery_document_and_the_defaults() {
        let config = OidcConfig::from_source(&base()).unwrap().unwrap();
        assert_eq!(
            config.keys,
            KeySource::Discovery(
                Url::parse("https://idp.example/realms/lakehouse/.well-known/openid-configuration")
                    .unwrap()
            )
        );
        assert_eq!(config.role_claim, vec!["role"]);
        assert_eq!(config.customer_claim, None);
        assert_eq!(config.max_lifetime, Duration::from_secs(86_400));
    }

    #[test]
    fn no_issuer_means_no_provider() {
        assert!(OidcConfig::from_source(&[("OIDC_AUDIENCE", "x")])
            .unwrap()
            .is_none());
    }

    #[test]
    fn the_audience_is_required() {
        let err = OidcConfig::from_source(&[("OIDC_ISSUER", "https://idp.example")]).unwrap_err();
        assert!(err.0.contains("OIDC_AUDIENCE"), "{err}");
    }

    #[test]
    fn keys_travel_over_https_or_to_loopback_only() {
        for (url, ok) in [
            ("https://idp.example/jwks", true),
            ("http://127.0.0.1:8080/jwks", true),
            ("http://[::1]/jwks", true),
            ("http://localhost/jwks", true),
            ("http://idp.example/jwks", false),
            ("http://127.0.0.1.nip.io/jwks", false),
            ("ftp://127.0.0.1/jwks", false),
        ] {
            let [issuer, audience] = base();
            let env = [issuer, audience, ("OIDC_JWKS_URL", url)];
            assert_eq!(OidcConfig::from_source(&env).is_ok(), ok, "{url}");
        }
    }

    #[test]
    fn one_key_source_at_most() {
        let [issuer, audience] = base();
        let env = [
            issuer,
            audience,
            ("OIDC_JWKS_URL", "https://a/jwks"),
            ("OIDC_JWKS_FILE", "/k.json"),
        ];
        let err = OidcConfig::from_source(&env).unwrap_err();
        assert!(err.0.contains("only one"), "{err}");
    }

    #[test]
    fn claim_paths_split_at_dots() {
        let [issuer, audience] = base();
        let env = [
            issuer,
            audience,
            ("OIDC_ROLE_CLAIM", "realm_access.roles"),
            ("OIDC_CUSTOMER_CLAIM", "ext.customer"),
        ];
        let config = OidcConfig::from_source(&env).unwrap().unwrap();
        assert_eq!(config.role_claim, vec!["realm_access", "roles"]);
        assert_eq!(
            config.customer_claim,
            Some(vec!["ext".to_owned(), "customer".to_owned()])
        );
        let env = [issuer, audience, ("OIDC_ROLE_CLAIM", "a..b")];
        assert!(OidcConfig::from_source(&env).is_err());
    }

    #[test]
    fn issuers_with_a_separator_or_quote_are_refused() {
        for issuer in ["https://a|b", "https://o'hara"] {
            let env = [("OIDC_ISSUER", issuer), ("OIDC_AUDIENCE", "x")];
            assert!(OidcConfig::from_source(&env).is_err(), "{issuer}");
        }
    }
}
