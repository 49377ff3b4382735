//! Keyed tokens: a customer or a login appears in the lake as HMAC-SHA-256 under the lake's own
//! key, the same token for the same person in every table and every run, and nothing a reader
//! can turn back into the id or the login without the key.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Failure;

#[derive(Clone)]
pub struct Tokens {
    key: Hmac<Sha256>,
}

impl Tokens {
    /// At least 32 bytes: a shorter key would make the tokens guessable from a list of ids.
    pub fn new(key: &[u8]) -> Result<Self, Failure> {
        if key.len() < 32 {
            return Err(Failure::Config(
                "LAKE_TOKEN_KEY must hold at least 32 bytes".into(),
            ));
        }
        let key = Hmac::<Sha256>::new_from_slice(key)
            .map_err(|e| Failure::Config(format!("LAKE_TOKEN_KEY: {e}")))?;
        Ok(Self { key })
    }

    pub fn token(&self, value: &str) -> String {
        let mut mac = self.key.clone();
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut text = String::with_capacity(digest.len() * 2);
        for byte in digest {
            text.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
            text.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
        }
        text
    }
}
