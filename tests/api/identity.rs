//! Tokens from an identity provider whose key set is a file: every algorithm, the claim
//! checks, the role and customer mappings, key rotation and an unreachable key set. The same
//! against a real OpenID provider is in `oidc.rs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

use crate::helpers::TestApp;

pub const AUDIENCE: &str = "https://api.lakehouse.test";
const ISSUER: &str = "https://idp.lakehouse.test/realms/lakehouse";

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/oidc")
        .join(name)
}

/// The public JWKs of the fixture keys `kids`, as a provider publishes them.
pub fn public_jwks(kids: &[&str]) -> Value {
    let all: Value = serde_json::from_slice(&std::fs::read(fixture("keys.json")).unwrap()).unwrap();
    let keys: Vec<Value> = kids
        .iter()
        .map(|kid| {
            let key = all["keys"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["kid"] == *kid)
                .unwrap();
            let mut public = serde_json::Map::new();
            for name in ["kty", "kid", "alg", "use", "crv", "n", "e", "x", "y"] {
                if let Some(v) = key.get(name) {
                    public.insert(name.into(), v.clone());
                }
            }
            Value::Object(public)
        })
        .collect();
    json!({ "keys": keys })
}

/// A token signed with the fixture key `kid` by `alg`, with these claims.
pub fn sign(kid: &str, alg: Algorithm, claims: &Value) -> String {
    let pem = std::fs::read(fixture(&format!("{kid}.pem"))).unwrap();
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        other => panic!("no fixture for {other:?}"),
    }
    .unwrap();
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims a valid token of `role` carries.
fn claims(sub: &str, role: &str) -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now(), "exp": now() + 300,
        "realm_access": {"roles": [format!("lakehouse-{role}"), "offline_access"]},
        "branch": "HO",
    })
}

/// A JWKS file, replaced atomically, removed when dropped.
struct KeyFile(PathBuf);

impl KeyFile {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("lakehouse-jwks-{}.json", Uuid::now_v7())))
    }

    fn publish(&self, kids: &[&str]) {
        let temp = self.0.with_extension("tmp");
        std::fs::write(&temp, public_jwks(kids).to_string()).unwrap();
        std::fs::rename(temp, &self.0).unwrap();
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An app that accepts only the provider's tokens, its keys in `keys`, refreshed every second.
fn provider_env(keys: &KeyFile) -> Vec<(&'static str, String)> {
    vec![
        ("OIDC_ISSUER", ISSUER.into()),
        ("OIDC_AUDIENCE", AUDIENCE.into()),
        ("OIDC_JWKS_FILE", keys.path().into()),
        ("OIDC_ROLE_CLAIM", "realm_access.roles".into()),
        ("OIDC_ROLE_PREFIX", "lakehouse-".into()),
        ("OIDC_CUSTOMER_CLAIM", "customer_id".into()),
        ("OIDC_BRANCH_CLAIM", "branch".into()),
        ("OIDC_MAX_TOKEN_LIFETIME_SECS", "3600".into()),
        ("OIDC_LEEWAY_SECS", "30".into()),
        ("OIDC_JWKS_REFRESH_SECS", "1".into()),
        ("OIDC_JWKS_MIN_REFRESH_SECS", "1".into()),
    ]
}

fn with_provider(app: TestApp, keys: &KeyFile) -> TestApp {
    let env = provider_env(keys);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    app.with_tokens(&env)
}

async fn status(app: &TestApp, path: &str, token: &str) -> StatusCode {
    app.get(path, token).await.status
}

async fn refused(app: &TestApp, token: &str, case: &str) {
    let response = app.get("/v1/products", token).await;
    let problem = response.problem(StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json"),
        "{case}"
    );
    assert_eq!(problem["status"], 401, "{case}");
}

#[tokio::test]
async fn each_algorithm_from_the_key_set_gives_its_role_and_the_principal_carries_the_issuer() {
    let keys = KeyFile::new();
    keys.publish(&["rsa-a", "ec-a", "ed-a"]);
    let app = with_provider(TestApp::spawn().await, &keys);

    let staff = sign("rsa-a", Algorithm::RS256, &claims("branch-tool", "staff"));
    let etl = sign("ec-a", Algorithm::ES256, &claims("etl-pipeline", "etl"));
    let analyst = sign("ed-a", Algorithm::EdDSA, &claims("risk-job", "analyst"));
    assert_eq!(status(&app, "/v1/customers", &staff).await, StatusCode::OK);
    assert_eq!(
        status(&app, "/v1/analytics/customer-metrics", &staff).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(&app, "/v1/analytics/customer-metrics", &analyst).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&app, "/v1/customers", &analyst).await,
        StatusCode::OK
    );

    assert_eq!(
        created_by(&app, &etl, "OIDC-ETL-1", "900101-1234567").await,
        format!("{ISSUER}|etl-pipeline|etl")
    );
    // A subject with the principal's separator in it (Auth0's are `auth0|…`) is its own actor.
    let auth0 = sign("rsa-a", Algorithm::RS256, &claims("auth0|5f7c8ec7", "etl"));
    assert_eq!(
        created_by(&app, &auth0, "OIDC-ETL-2", "900101-1234568").await,
        format!("{ISSUER}|auth0%7C5f7c8ec7|etl")
    );
}

/// Creates a customer with `token`; returns who the row says created it.
pub async fn created_by(app: &TestApp, token: &str, code: &str, id_number: &str) -> String {
    let body = crate::helpers::customer_body(code, id_number);
    let created = app.json(Method::POST, "/v1/customers", token, &body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let id: Uuid = created.json()["customer_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    sqlx::query_scalar("SELECT created_by FROM core.customers WHERE customer_id = $1")
        .bind(id)
        .fetch_one(&app.owner)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_bad_token_is_a_401_problem() {
    let keys = KeyFile::new();
    keys.publish(&["rsa-a", "ec-a", "ed-a"]);
    let app = with_provider(TestApp::spawn().await, &keys);
    let good = claims("branch-tool", "staff");
    assert_eq!(
        status(
            &app,
            "/v1/products",
            &sign("rsa-a", Algorithm::RS256, &good)
        )
        .await,
        StatusCode::OK
    );

    let with = |change: Value| {
        let mut c = good.clone();
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let rsa = |c: &Value| sign("rsa-a", Algorithm::RS256, c);
    // HS256 "signed" with the provider's RSA public key as the secret: the classic confusion.
    let public_pem = std::fs::read(fixture("rsa-a.pub.pem")).unwrap();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some("rsa-a".into());
    let confusion =
        jsonwebtoken::encode(&hs_header, &good, &EncodingKey::from_secret(&public_pem)).unwrap();
    // The header claims ES256 for an RSA key: the key decides, so this fails.
    let mut es_header = Header::new(Algorithm::ES256);
    es_header.kid = Some("rsa-a".into());
    let pem = std::fs::read(fixture("ec-a.pem")).unwrap();
    let alg_swap =
        jsonwebtoken::encode(&es_header, &good, &EncodingKey::from_ec_pem(&pem).unwrap()).unwrap();

    let cases = [
        (
            "wrong issuer",
            rsa(&with(json!({"iss": "https://evil.example"}))),
        ),
        ("no issuer", rsa(&with(json!({"iss": null})))),
        (
            "wrong audience",
            rsa(&with(json!({"aud": "https://other-api.example"}))),
        ),
        ("no audience", rsa(&with(json!({"aud": null})))),
        ("algorithm confusion", confusion),
        ("algorithm other than the key's", alg_swap),
        ("unknown kid", sign("rsa-x", Algorithm::RS256, &good)),
        (
            "expired",
            rsa(&with(json!({"exp": now() - 120, "iat": now() - 420}))),
        ),
        (
            "not yet valid",
            rsa(&with(json!({"nbf": now() + 600, "exp": now() + 900}))),
        ),
        (
            "issued in the future",
            rsa(&with(json!({"iat": now() + 600, "exp": now() + 900}))),
        ),
        (
            "over the lifetime limit",
            rsa(&with(json!({"exp": now() + 7200}))),
        ),
        ("no issue time", rsa(&with(json!({"iat": null})))),
        (
            "role claim missing",
            rsa(&with(json!({"realm_access": null}))),
        ),
        (
            "role unknown",
            rsa(&with(
                json!({"realm_access": {"roles": ["lakehouse-root"]}}),
            )),
        ),
        (
            "role without the prefix",
            rsa(&with(json!({"realm_access": {"roles": ["staff"]}}))),
        ),
        (
            "two roles",
            rsa(&with(
                json!({"realm_access": {"roles": ["lakehouse-staff", "lakehouse-admin"]}}),
            )),
        ),
        (
            "customer without a customer",
            rsa(&with(
                json!({"realm_access": {"roles": ["lakehouse-customer"]}}),
            )),
        ),
        (
            "customer claim not a uuid",
            rsa(&with(
                json!({"realm_access": {"roles": ["lakehouse-customer"]}, "customer_id": "CUST001"}),
            )),
        ),
        ("subject with a quote", rsa(&with(json!({"sub": "o'hara"})))),
        ("tampered", {
            let token = rsa(&good);
            let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
            parts[1] = base64_url(
                &with(json!({"realm_access": {"roles": ["lakehouse-admin"]}})).to_string(),
            );
            parts.join(".")
        }),
    ];
    for (case, token) in &cases {
        refused(&app, token, case).await;
    }
    // And the service's own HS256 tokens are not accepted beside a provider.
    refused(&app, &app.staff(), "local token").await;
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test]
async fn a_customer_comes_from_the_claim_or_from_a_link_staff_make() {
    let app = TestApp::spawn().await;
    let alice = app.customer_id("OIDC-C-1", "900101-2234567").await;
    let bob = app.customer_id("OIDC-C-2", "900101-2234568").await;
    let keys = KeyFile::new();
    keys.publish(&["rsa-a"]);
    let app = with_provider(app, &keys);
    let staff = sign("rsa-a", Algorithm::RS256, &claims("branch-tool", "staff"));

    let mut by_claim = claims("alice-at-idp", "customer");
    by_claim["customer_id"] = json!(alice.to_string());
    let by_claim = sign("rsa-a", Algorithm::RS256, &by_claim);
    let me = app.get(&format!("/v1/customers/{alice}"), &by_claim).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text());
    assert_eq!(
        status(&app, &format!("/v1/customers/{bob}"), &by_claim).await,
        StatusCode::NOT_FOUND
    );

    let unlinked = sign("rsa-a", Algorithm::RS256, &claims("bob-at-idp", "customer"));
    refused(&app, &unlinked, "not linked yet").await;

    let link = |issuer: &str, subject: &str| json!({"issuer": issuer, "subject": subject});
    let path = format!("/v1/customers/{bob}/identities");
    let wrong_issuer = app
        .json(
            Method::POST,
            &path,
            &staff,
            &link("https://evil.example", "bob-at-idp"),
        )
        .await;
    wrong_issuer.problem(StatusCode::UNPROCESSABLE_ENTITY);
    let bad_subject = app
        .json(Method::POST, &path, &staff, &link(ISSUER, "bob at idp"))
        .await;
    bad_subject.problem(StatusCode::UNPROCESSABLE_ENTITY);
    let nobody = app
        .json(
            Method::POST,
            &format!("/v1/customers/{}/identities", Uuid::now_v7()),
            &staff,
            &link(ISSUER, "x"),
        )
        .await;
    nobody.problem(StatusCode::NOT_FOUND);
    let customer_may_not = app
        .json(Method::POST, &path, &by_claim, &link(ISSUER, "bob-at-idp"))
        .await;
    customer_may_not.problem(StatusCode::FORBIDDEN);

    let linked = app
        .json(Method::POST, &path, &staff, &link(ISSUER, "bob-at-idp"))
        .await;
    assert_eq!(linked.status, StatusCode::CREATED, "{}", linked.text());
    let link_id = linked.json()["link_id"].as_str().unwrap().to_owned();
    assert_eq!(
        linked.json()["created_by"],
        format!("{ISSUER}|branch-tool|staff")
    );
    // Proposed, not yet acting: the login must prove it is bob's, with the code staff were
    // given (once) or a verified contact claim.
    assert_eq!(linked.json()["status"], "PENDING");
    let code = linked.json()["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 10);
    refused(&app, &unlinked, "proposed, not proved").await;
    let with_code = |code: &str| {
        app.request(
            Method::GET,
            &format!("/v1/customers/{bob}"),
            Some(&unlinked),
        )
        .header("identity-link-code", code)
        .body(axum::body::Body::empty())
        .unwrap()
    };
    let wrong = if code.starts_with('1') {
        "2222222222"
    } else {
        "1111111111"
    };
    assert_eq!(
        app.send(with_code(wrong)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let proved = app.send(with_code(&code)).await;
    assert_eq!(proved.status, StatusCode::OK, "{}", proved.text());
    // Single use: the code proves nothing again.
    let listed = app.get(&path, &staff).await.json();
    assert_eq!(listed["data"][0]["status"], "ACTIVE");
    assert_eq!(listed["data"][0]["proof"], "CODE");
    assert!(listed["data"][0].get("code").is_none());
    let again = app
        .json(
            Method::POST,
            &format!("/v1/customers/{alice}/identities"),
            &staff,
            &link(ISSUER, "bob-at-idp"),
        )
        .await;
    again.problem(StatusCode::CONFLICT);

    // Linked: the same token now acts for bob, and only for bob.
    assert_eq!(
        status(&app, &format!("/v1/customers/{bob}"), &unlinked).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&app, &format!("/v1/customers/{alice}"), &unlinked).await,
        StatusCode::NOT_FOUND
    );
    let list = app.get(&path, &staff).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.json()["data"].as_array().unwrap().len(), 1);

    let gone = app
        .send(
            app.request(Method::DELETE, &format!("{path}/{link_id}"), Some(&staff))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT, "{}", gone.text());
    refused(&app, &unlinked, "unlinked").await;
}

#[tokio::test]
async fn keys_rotate_without_a_restart_and_an_unreachable_key_set_keeps_the_last_good_one() {
    let keys = KeyFile::new();
    // The key set is missing at start: not ready, and tokens are refused, not a 5xx.
    let app = with_provider(TestApp::spawn().await, &keys);
    let old = sign("rsa-a", Algorithm::RS256, &claims("branch-tool", "staff"));
    let new = sign("rsa-b", Algorithm::RS256, &claims("branch-tool", "staff"));
    assert_eq!(readiness(&app).await, StatusCode::SERVICE_UNAVAILABLE);
    refused(&app, &old, "no keys yet").await;

    // It appears: the next fetch (within the refresh interval) makes the service ready.
    keys.publish(&["rsa-a"]);
    wait_for(|| async { status(&app, "/v1/products", &old).await == StatusCode::OK }).await;
    assert_eq!(readiness(&app).await, StatusCode::OK);

    // A new key appears beside the old: a token naming it is fetched for, without a restart.
    refused(&app, &new, "a kid the set does not hold").await;
    keys.publish(&["rsa-b", "rsa-a"]);
    wait_for(|| async { status(&app, "/v1/products", &new).await == StatusCode::OK }).await;
    assert_eq!(
        status(&app, "/v1/products", &old).await,
        StatusCode::OK,
        "the old key still counts"
    );

    // The old key leaves the set: its tokens stop working at the next refresh.
    keys.publish(&["rsa-b"]);
    wait_for(|| async { status(&app, "/v1/products", &old).await == StatusCode::UNAUTHORIZED })
        .await;
    assert_eq!(status(&app, "/v1/products", &new).await, StatusCode::OK);

    // The key set becomes unreachable: the last good one stays.
    drop(keys);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(status(&app, "/v1/products", &new).await, StatusCode::OK);
}

async fn readiness(app: &TestApp) -> StatusCode {
    let request = app.request(Method::GET, "/health/ready", None);
    app.send(request.body(axum::body::Body::empty()).unwrap())
        .await
        .status
}

#[tokio::test]
async fn a_token_verified_once_still_expires_and_dies_with_its_key() {
    let keys = KeyFile::new();
    keys.publish(&["rsa-a", "ec-a"]);
    let mut env = provider_env(&keys);
    env.retain(|(k, _)| *k != "OIDC_LEEWAY_SECS");
    env.push(("OIDC_LEEWAY_SECS", "0".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = TestApp::spawn().await.with_tokens(&env);
    let mut short = claims("branch-tool", "staff");
    short["exp"] = json!(now() + 2);
    let short = sign("ec-a", Algorithm::ES256, &short);
    // Verified, then served from memory: still refused once expired.
    assert_eq!(status(&app, "/v1/products", &short).await, StatusCode::OK);
    assert_eq!(status(&app, "/v1/products", &short).await, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    refused(&app, &short, "expired after it was verified").await;
}

/// Polls `ready` for up to ten seconds.
pub async fn wait_for<F, Fut>(ready: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if ready().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not within ten seconds");
}

/// A link proved by a verified e-mail claim that matches the record; every step (proposal by
/// staff, activation by the login itself, unlink) is on the append-only record with its
/// principal, activation and unlink are events addressed to the stored contact, and a live
/// stream of the unlinked login ends within the link cache's time.
#[tokio::test]
async fn a_link_is_proved_recorded_announced_and_its_stream_ends_when_it_goes() {
    let app = TestApp::spawn().await;
    let carol = app.customer_id("OIDC-C-3", "900101-2234569").await;
    let dave = app.customer_id("OIDC-C-4", "900101-2234570").await;
    let keys = KeyFile::new();
    keys.publish(&["rsa-a"]);
    let mut env = provider_env(&keys);
    env.push(("OIDC_LINK_CACHE_SECS", "1".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = app.with_tokens(&env);
    let staff = sign("rsa-a", Algorithm::RS256, &claims("branch-tool", "staff"));
    let path = format!("/v1/customers/{carol}/identities");
    let proposed = app
        .json(
            Method::POST,
            &path,
            &staff,
            &json!({"issuer": ISSUER, "subject": "carol-at-idp"}),
        )
        .await;
    assert_eq!(proposed.status, StatusCode::CREATED, "{}", proposed.text());
    let link_id = proposed.json()["link_id"].as_str().unwrap().to_owned();

    // An unverified e-mail proves nothing; a verified one matching the record does.
    let mut unverified = claims("carol-at-idp", "customer");
    unverified["email"] = json!("oidc-c-3@example.com");
    unverified["email_verified"] = json!(false);
    refused(
        &app,
        &sign("rsa-a", Algorithm::RS256, &unverified),
        "unverified e-mail",
    )
    .await;
    let mut other = claims("carol-at-idp", "customer");
    other["email"] = json!("someone@example.com");
    other["email_verified"] = json!(true);
    refused(
        &app,
        &sign("rsa-a", Algorithm::RS256, &other),
        "another e-mail",
    )
    .await;
    let mut verified = claims("carol-at-idp", "customer");
    verified["email"] = json!("OIDC-C-3@example.com");
    verified["email_verified"] = json!(true);
    let carol_token = sign("rsa-a", Algorithm::RS256, &verified);
    assert_eq!(status(&app, "/v1/me", &carol_token).await, StatusCode::OK);
    let plain = sign(
        "rsa-a",
        Algorithm::RS256,
        &claims("carol-at-idp", "customer"),
    );
    assert_eq!(
        status(&app, "/v1/me", &plain).await,
        StatusCode::OK,
        "active from now on"
    );

    // The stream of the linked login ends after the unlink.
    let response = app
        .router
        .clone()
        .oneshot(
            app.request(Method::GET, "/v1/me/events", Some(&plain))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    let gone = app
        .send(
            app.request(Method::DELETE, &format!("{path}/{link_id}"), Some(&staff))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT, "{}", gone.text());
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while body.next().await.is_some() {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream ended within the link cache's time"
    );
    refused(&app, &plain, "unlinked").await;

    // On record, with both principals, after the link is gone.
    let record: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT action, actor, proof FROM audit.identity_link_events \
         WHERE link_id = $1::uuid ORDER BY event_id",
    )
    .bind(&link_id)
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert_eq!(
        record,
        [
            (
                "PROPOSED".to_owned(),
                format!("{ISSUER}|branch-tool|staff"),
                None
            ),
            (
                "ACTIVATED".to_owned(),
                format!("{ISSUER}|carol-at-idp|customer|{carol}"),
                Some("VERIFIED_EMAIL".to_owned())
            ),
            (
                "UNLINKED".to_owned(),
                format!("{ISSUER}|branch-tool|staff"),
                Some("VERIFIED_EMAIL".to_owned())
            ),
        ]
    );
    let events: Vec<(String, Value)> = sqlx::query_as(
        "SELECT topic, payload FROM metadata.outbox_events \
         WHERE topic LIKE 'customer_identity_%' AND customer_id = $1 ORDER BY event_id",
    )
    .bind(carol)
    .fetch_all(&app.owner)
    .await
    .unwrap();
    let topics: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        ["customer_identity_linked", "customer_identity_unlinked"]
    );
    assert_eq!(events[0].1["notify"]["email"], "oidc-c-3@example.com");
    // Staff cannot activate a link themselves: they may only propose.
    let mut tx = app.owner.begin().await.unwrap();
    sqlx::raw_sql("SET LOCAL ROLE lakehouse_staff")
        .execute(&mut *tx)
        .await
        .unwrap();
    let forced = sqlx::query(
        "INSERT INTO core.identity_links (link_id, issuer, subject, customer_id, status) \
         VALUES (gen_random_uuid(), $1, 'mallory', $2, 'ACTIVE')",
    )
    .bind(ISSUER)
    .bind(carol)
    .execute(&mut *tx)
    .await;
    assert!(forced.is_err(), "staff may not insert an active link");
    tx.rollback().await.unwrap();

    // A contact staff changed lately proves nothing: a teller who set a customer's e-mail to
    // their own cannot then link their own login with it.
    let changed = app
        .json_with(
            Method::PATCH,
            &format!("/v1/customers/{dave}"),
            &staff,
            &json!({"email": "mallory@example.com"}),
            &[("If-Match", "*")],
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    let proposed = app
        .json(
            Method::POST,
            &format!("/v1/customers/{dave}/identities"),
            &staff,
            &json!({"issuer": ISSUER, "subject": "mallory-at-idp"}),
        )
        .await;
    assert_eq!(proposed.status, StatusCode::CREATED, "{}", proposed.text());
    let mut mallory = claims("mallory-at-idp", "customer");
    mallory["email"] = json!("mallory@example.com");
    mallory["email_verified"] = json!(true);
    refused(
        &app,
        &sign("rsa-a", Algorithm::RS256, &mallory),
        "a contact changed lately",
    )
    .await;
}

/// A client-credentials token (no session, its subject the client) acting as staff works, warned
/// about, by default; with `OIDC_REFUSE_SHARED_STAFF_CLIENTS=true` it is 403, while a teller's own
/// login (a session) is served, and so are machine clients of other roles.
#[tokio::test]
async fn a_shared_machine_client_acting_as_staff_is_refused_when_the_setting_says_so() {
    let app = TestApp::spawn().await;
    let keys = KeyFile::new();
    keys.publish(&["rsa-a"]);
    let mut machine = claims("branch-tool", "staff");
    machine["azp"] = json!("branch-tool");
    let machine = sign("rsa-a", Algorithm::RS256, &machine);
    let mut teller = claims("teller-7", "staff");
    teller["azp"] = json!("branch-tool");
    teller["sid"] = json!("session-1");
    let teller = sign("rsa-a", Algorithm::RS256, &teller);
    let mut etl = claims("etl-pipeline", "etl");
    etl["azp"] = json!("etl-pipeline");
    let etl = sign("rsa-a", Algorithm::RS256, &etl);

    let lenient = with_provider(TestApp::spawn().await, &keys);
    assert_eq!(
        status(&lenient, "/v1/products", &machine).await,
        StatusCode::OK
    );

    let mut env = provider_env(&keys);
    env.push(("OIDC_REFUSE_SHARED_STAFF_CLIENTS", "true".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let strict = app.with_tokens(&env);
    strict
        .get("/v1/products", &machine)
        .await
        .problem(StatusCode::FORBIDDEN);
    assert_eq!(
        status(&strict, "/v1/products", &teller).await,
        StatusCode::OK
    );
    assert_ne!(
        status(&strict, "/v1/imports/none", &etl).await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn a_link_a_second_person_approves_is_active_without_the_customer_s_proof() {
    let app = TestApp::spawn_with(crate::helpers::Options {
        four_eyes: lakehouse_api::platform::config::FourEyesConfig::default(),
        ..crate::helpers::Options::default()
    })
    .await;
    let erin = app.customer_id("OIDC-C-9", "900101-2234579").await;
    let keys = KeyFile::new();
    keys.publish(&["rsa-a"]);
    let app = with_provider(app, &keys);
    let maker = sign("rsa-a", Algorithm::RS256, &claims("teller-a", "staff"));
    let checker = sign("rsa-a", Algorithm::RS256, &claims("teller-b", "staff"));
    let proposed = app
        .json(
            Method::POST,
            &format!("/v1/customers/{erin}/identities"),
            &maker,
            &json!({"issuer": ISSUER, "subject": "erin-at-idp"}),
        )
        .await;
    assert_eq!(proposed.status, StatusCode::CREATED, "{}", proposed.text());
    let proposed = proposed.json();
    assert_eq!(proposed["status"], "PENDING");
    // No code: one the proposing teller held would let them activate the link alone.
    assert_eq!(proposed["code"], Value::Null);
    let proposal = &proposed["proposal"];
    assert_eq!(proposal["action"], "IDENTITY_LINK");
    assert_eq!(proposal["object_id"], proposed["link_id"]);
    let erin_token = sign(
        "rsa-a",
        Algorithm::RS256,
        &claims("erin-at-idp", "customer"),
    );
    refused(&app, &erin_token, "neither proved nor checked").await;

    let approve = |token: String| {
        let app = &app;
        let id = proposal["proposal_id"].as_str().unwrap().to_owned();
        async move {
            app.json(
                Method::POST,
                &format!("/v1/proposals/{id}/approve"),
                &token,
                &json!({}),
            )
            .await
        }
    };
    approve(maker.clone()).await.problem(StatusCode::FORBIDDEN);
    refused(&app, &erin_token, "its maker cannot check it").await;
    let approved = approve(checker).await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text());
    assert_eq!(approved.json()["outcome"]["status"], "ACTIVE");
    assert_eq!(approved.json()["outcome"]["proof"], "CHECKER");
    assert_eq!(status(&app, "/v1/me", &erin_token).await, StatusCode::OK);
    // The activation is on the link's own record, naming the checker, and announced to Erin.
    let (action, proof, actor): (String, Option<String>, String) = sqlx::query_as(
        "SELECT action, proof, actor FROM audit.identity_link_events \
         WHERE subject = 'erin-at-idp' ORDER BY event_id DESC LIMIT 1",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(
        (action.as_str(), proof.as_deref(), actor),
        (
            "ACTIVATED",
            Some("CHECKER"),
            format!("{ISSUER}|teller-b|staff")
        )
    );
}
