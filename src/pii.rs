//! Personal identifiers at rest: AES-256-GCM ciphertext, an HMAC-SHA256 look-up hash, and the
//! last four characters for masked display. Neither key ever reaches SQL text or a log.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::config::PiiKeys;

/// Leading byte of every ciphertext: the key/format version, so keys can be rotated later.
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;

/// A normalised national ID number: upper-case letters and digits, 6 to 20 of them.
#[derive(Clone, PartialEq, Eq)]
pub struct IdNumber(String);

impl IdNumber {
    /// Accepts spaces and dashes as separators and ignores letter case.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let normal: String = raw
            .chars()
            .filter(|c| !matches!(c, ' ' | '-'))
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if !(6..=20).contains(&normal.len()) {
            return Err("must have 6 to 20 letters or digits");
        }
        if !normal.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("may contain only letters, digits, spaces and dashes");
        }
        Ok(Self(normal))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn last4(&self) -> &str {
        &self.0[self.0.len() - 4..]
    }
}

impl std::fmt::Debug for IdNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&mask(self.last4()))
    }
}

/// How an ID number is shown to a caller who may not see it: `*****6789`.
pub fn mask(last4: &str) -> String {
    format!("*****{last4}")
}

/// What the database stores for one ID number.
pub struct SealedIdNumber {
    pub ciphertext: Vec<u8>,
    pub hash: Vec<u8>,
    pub last4: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecryptError;

/// AES-GCM refused to encrypt (it does only for messages beyond 64 GiB; an ID number is 20
/// bytes), so nothing may be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncryptError;

impl std::fmt::Display for EncryptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the ID number could not be encrypted")
    }
}

impl std::error::Error for EncryptError {}

/// Seals and opens ID numbers.
#[derive(Clone)]
pub struct PiiCipher {
    aead: Aes256Gcm,
    hash_key: Vec<u8>,
}

impl PiiCipher {
    pub fn new(keys: &PiiKeys) -> Self {
        Self {
            aead: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(keys.encryption.expose())),
            hash_key: keys.hash.expose().to_vec(),
        }
    }

    /// The keyed hash that makes ID numbers unique and searchable without decrypting.
    pub fn hash(&self, id: &IdNumber) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.hash_key)
            .unwrap_or_else(|_| unreachable!());
        mac.update(id.as_str().as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Encrypts for the row of `owner`: the customer id is authenticated data, so a ciphertext
    /// copied onto another customer's row does not decrypt.
    pub fn seal(&self, id: &IdNumber, owner: Uuid) -> Result<SealedIdNumber, EncryptError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: id.as_str().as_bytes(),
            aad: owner.as_bytes(),
        };
        let sealed = self
            .aead
            .encrypt(&nonce, payload)
            .map_err(|_| EncryptError)?;
        let mut ciphertext = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        ciphertext.push(FORMAT_V1);
        ciphertext.extend_from_slice(&nonce);
        ciphertext.extend_from_slice(&sealed);
        Ok(SealedIdNumber {
            ciphertext,
            hash: self.hash(id),
            last4: id.last4().to_owned(),
        })
    }

    pub fn open(&self, ciphertext: &[u8], owner: Uuid) -> Result<String, DecryptError> {
        let rest = match ciphertext.split_first() {
            Some((&FORMAT_V1, rest)) if rest.len() > NONCE_LEN => rest,
            _ => return Err(DecryptError),
        };
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let payload = Payload {
            msg: sealed,
            aad: owner.as_bytes(),
        };
        let plain = self
            .aead
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| DecryptError)?;
        String::from_utf8(plain).map_err(|_| DecryptError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn cipher() -> PiiCipher {
        PiiCipher::new(&PiiKeys {
            encryption: Secret::new(vec![7; 32]),
            hash: Secret::new(vec![9; 32]),
        })
    }

    #[test]
    fn id_numbers_are_normalised_before_anything_else() {
        assert_eq!(
            IdNumber::parse(" 123-456 789 ").unwrap().as_str(),
            "123456789"
        );
        assert_eq!(IdNumber::parse("ab123456").unwrap().as_str(), "AB123456");
        assert!(IdNumber::parse("12345").is_err());
        assert!(IdNumber::parse("1234567'; DROP").is_err());
    }

    #[test]
    fn sealing_round_trips_only_for_the_same_owner() {
        let c = cipher();
        let id = IdNumber::parse("123456789").unwrap();
        let owner = Uuid::now_v7();
        let sealed = c.seal(&id, owner).unwrap();
        assert_eq!(c.open(&sealed.ciphertext, owner).unwrap(), "123456789");
        assert_eq!(
            c.open(&sealed.ciphertext, Uuid::now_v7()),
            Err(DecryptError)
        );
        assert_eq!(sealed.last4, "6789");
    }

    #[test]
    fn the_ciphertext_never_contains_the_plaintext_and_differs_each_time() {
        let c = cipher();
        let id = IdNumber::parse("123456789").unwrap();
        let owner = Uuid::now_v7();
        let a = c.seal(&id, owner).unwrap();
        let b = c.seal(&id, owner).unwrap();
        assert_ne!(a.ciphertext, b.ciphertext);
        assert!(!a.ciphertext.windows(9).any(|w| w == b"123456789"));
        assert_eq!(a.hash, b.hash, "the look-up hash is deterministic");
    }

    #[test]
    fn masking_keeps_only_the_last_four() {
        let id = IdNumber::parse("987654321").unwrap();
        assert_eq!(mask(id.last4()), "*****4321");
        assert_eq!(format!("{id:?}"), "*****4321");
    }
}
