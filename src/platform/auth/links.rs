//! Identity links: which customer a provider's (issuer, subject) is, as staff linked them
//! (`core.identity_links`). Looked up once per subject and then remembered for a short TTL,
//! so a customer's requests make no extra round trip in the common case.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use uuid::Uuid;

/// How long "not linked" is remembered: short, so a customer just linked gets in soon, even
/// through another instance than the one staff used.
const UNLINKED_TTL: Duration = Duration::from_secs(5);
/// Subjects remembered at most; beyond it the expired ones go, then all.
const CAPACITY: usize = 100_000;

/// (issuer, subject) to the customer linked (or none) and until when that is remembered.
type Remembered = HashMap<(String, String), (Option<Uuid>, Instant)>;

/// What a login offers to prove a pending link is its customer's.
#[derive(Debug, Default)]
pub struct LinkProof<'a> {
    /// The `Identity-Link-Code` header.
    pub code: Option<&'a str>,
    /// The token's `email`, when `email_verified` is true.
    pub email: Option<&'a str>,
    /// The token's `phone_number`, when `phone_number_verified` is true.
    pub phone: Option<&'a str>,
}

impl LinkProof<'_> {
    pub fn is_empty(&self) -> bool {
        self.code.is_none() && self.email.is_none() && self.phone.is_none()
    }
}

pub struct LinkDirectory {
    pool: PgPool,
    ttl: Duration,
    cache: Mutex<Remembered>,
}

impl LinkDirectory {
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        Self {
            pool,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The customer linked to (issuer, subject), if any.
    pub async fn customer(&self, issuer: &str, subject: &str) -> Result<Option<Uuid>, sqlx::Error> {
        let key = (issuer.to_owned(), subject.to_owned());
        if let Some((customer, until)) = self.cache.lock().ok().and_then(|c| c.get(&key).copied()) {
            if until > Instant::now() {
                return Ok(customer);
            }
        }
        let customer: Option<Uuid> = sqlx::query_scalar!(
            r#"
                SELECT core.linked_customer($1, $2)
            "#,
            issuer,
            subject,
        )
        .fetch_one(&self.pool)
        .await?;
        let ttl = if customer.is_some() {
            self.ttl
        } else {
            UNLINKED_TTL
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CAPACITY {
                let now = Instant::now();
                cache.retain(|_, (_, until)| *until > now);
                if cache.len() >= CAPACITY {
                    cache.clear();
                }
            }
            cache.insert(key, (customer, Instant::now() + ttl));
        }
        Ok(customer)
    }

    /// Activates (issuer, subject)'s pending link if the login proves it is the customer's: the
    /// link's code, or a verified e-mail or phone matching the customer's record. The customer,
    /// or `None`.
    pub async fn prove(
        &self,
        issuer: &str,
        subject: &str,
        proof: &LinkProof<'_>,
    ) -> Result<Option<Uuid>, sqlx::Error> {
        let customer: Option<Uuid> = sqlx::query_scalar!(
            r#"SELECT core.prove_identity_link($1, $2, $3, $4, $5)"#,
            issuer,
            subject,
            proof.code,
            proof.email,
            proof.phone,
        )
        .fetch_one(&self.pool)
        .await?;
        if customer.is_some() {
            self.forget(issuer, subject);
        }
        Ok(customer)
    }

    /// Forgets what this instance remembers of (issuer, subject): after staff link or unlink
    /// it here. Other instances learn within the TTL.
    pub fn forget(&self, issuer: &str, subject: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(&(issuer.to_owned(), subject.to_owned()));
        }
    }
}
