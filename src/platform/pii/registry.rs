//! The keys' check MACs in the database (`core.pii_keys`): a key id is registered the first time
//! the service runs with it, after proving the key against an ID number already stored under
//! it, and every later start compares. A wrong key stops the service at start-up with one line,
//! instead of a 500 on every read of an ID number.

use sqlx::PgConnection;

use super::{IdNumber, KeyPurpose, PiiCipher};

/// Why the configured keys cannot be used with this database.
#[derive(Debug)]
pub enum KeyCheckError {
    WrongKey(String),
    Database(sqlx::Error),
}

impl std::fmt::Display for KeyCheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::WrongKey(what) => f.write_str(what),
            Self::Database(e) => write!(f, "checking the PII keys: {e}"),
        }
    }
}

impl std::error::Error for KeyCheckError {}

impl From<sqlx::Error> for KeyCheckError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

fn describe(purpose: KeyPurpose, current: u8) -> String {
    match purpose {
        KeyPurpose::Encryption(id) if id == current => format!(
            "PII_ENCRYPTION_KEY is not the key this database knows as key id {id} \
             (PII_ENCRYPTION_KEY_ID)"
        ),
        KeyPurpose::Encryption(id) => format!(
            "PII_ENCRYPTION_PREVIOUS_KEYS: key id {id} is not the key this database knows by that id"
        ),
        KeyPurpose::Hash => {
            "PII_HASH_KEY is not the key this database's ID-number hashes were made with".into()
        }
    }
}

/// Compares every configured key with its registered check; registers the new ones once all
/// have passed.
pub async fn verify(conn: &mut PgConnection, cipher: &PiiCipher) -> Result<(), KeyCheckError> {
    let mut new = Vec::new();
    for (purpose, mac) in cipher.key_checks() {
        let (name, id) = names(purpose);
        let wrong = || KeyCheckError::WrongKey(describe(purpose, cipher.current_key_id()));
        let stored: Option<Vec<u8>> = sqlx::query_scalar!(
            r#"
                SELECT core.pii_key_registered($1, $2)
            "#,
            name,
            id,
        )
        .fetch_one(&mut *conn)
        .await?;
        match stored {
            Some(stored) if stored == mac => {}
            Some(_) => return Err(wrong()),
            None if proves(conn, cipher, purpose).await? => new.push((purpose, mac)),
            None => return Err(wrong()),
        }
    }
    for (purpose, mac) in new {
        let (name, id) = names(purpose);
        let registered: Vec<u8> = sqlx::query_scalar!(
            r#"
                SELECT core.pii_key_check($1, $2, $3) AS "check!"
            "#,
            name,
            id,
            &mac,
        )
        .fetch_one(&mut *conn)
        .await?;
        if registered != mac {
            return Err(KeyCheckError::WrongKey(describe(
                purpose,
                cipher.current_key_id(),
            )));
        }
    }
    Ok(())
}

fn names(purpose: KeyPurpose) -> (&'static str, i32) {
    match purpose {
        KeyPurpose::Encryption(id) => ("ENCRYPTION", i32::from(id)),
        KeyPurpose::Hash => ("HASH", 0),
    }
}

/// Whether a key not registered yet opens (or, for the hash key, hashes to) an ID number stored
/// under it; true when none is stored yet.
async fn proves(
    conn: &mut PgConnection,
    cipher: &PiiCipher,
    purpose: KeyPurpose,
) -> Result<bool, sqlx::Error> {
    let key_id = match purpose {
        KeyPurpose::Encryption(id) => Some(i32::from(id)),
        KeyPurpose::Hash => None,
    };
    let sample = sqlx::query!(
        r#"
        SELECT owner AS "owner!", ciphertext AS "ciphertext!", id_hash AS "id_hash!"
        FROM core.pii_key_sample($1)
        "#,
        key_id,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some((owner, ciphertext, hash)) = sample.map(|s| (s.owner, s.ciphertext, s.id_hash)) else {
        return Ok(true);
    };
    let clear = cipher.open(&ciphertext, owner);
    Ok(match purpose {
        KeyPurpose::Encryption(_) => clear.is_ok(),
        // The hash key is proven through an ID number some configured key opens; a sample no
        // configured key opens fails the encryption check first.
        KeyPurpose::Hash => clear
            .ok()
            .and_then(|clear| IdNumber::parse(&clear).ok())
            .is_none_or(|id| cipher.hash(&id) == hash),
    })
}
