//! Personal identifiers at rest: AES-256-GCM ciphertext, an HMAC-SHA256 look-up hash, and the
//! last four characters for masked display. Neither key ever reaches SQL text or a log.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::platform::config::PiiKeys;

mod registry;

pub use registry::{verify as verify_keys, KeyCheckError};

/// Leading byte of a ciphertext: its format. V1 is `[1][nonce][sealed]`, sealed with key 1; V2 is
/// `[2][key id][nonce][sealed]`, what the service writes.
const FORMAT_V1: u8 = 1;
const FORMAT_V2: u8 = 2;
const NONCE_LEN: usize = 12;
/// What each key's check MAC is computed over (see [`PiiCipher::key_checks`]).
const KEY_CHECK_INPUT: &[u8] = b"lakehouse-api pii key check v1";

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

/// Seals ID numbers with the current key and opens them with any configured one.
#[derive(Clone)]
pub struct PiiCipher {
    current: u8,
    /// Every configured encryption key by id, the current one first, with its check MAC.
    keys: Vec<(u8, Aes256Gcm, Vec<u8>)>,
    hash_key: Vec<u8>,
}

/// The id of the key a ciphertext was sealed with.
pub fn key_id(ciphertext: &[u8]) -> Option<u8> {
    match ciphertext {
        [FORMAT_V1, ..] => Some(1),
        [FORMAT_V2, id, ..] => Some(*id),
        _ => None,
    }
}

fn check_mac(key: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(KEY_CHECK_INPUT);
    mac.finalize().into_bytes().to_vec()
}

/// What a key check is about: an encryption key (by id) or the look-up hash key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    Encryption(u8),
    Hash,
}

impl PiiCipher {
    pub fn new(keys: &PiiKeys) -> Self {
        let aead = |secret: &crate::platform::config::Secret| {
            Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(secret.expose()))
        };
        let mut all = vec![(
            keys.encryption_key_id,
            aead(&keys.encryption),
            check_mac(keys.encryption.expose()),
        )];
        for (id, secret) in &keys.previous {
            all.push((*id, aead(secret), check_mac(secret.expose())));
        }
        Self {
            current: keys.encryption_key_id,
            keys: all,
            hash_key: keys.hash.expose().to_vec(),
        }
    }

    /// The id new ciphertexts carry.
    pub fn current_key_id(&self) -> u8 {
        self.current
    }

    /// For each key, a MAC of a constant under it: stored per key id the first time a key is
    /// used, so a different key under the same id is caught at start-up, not as a 500 per read.
    pub fn key_checks(&self) -> Vec<(KeyPurpose, Vec<u8>)> {
        let mut checks: Vec<(KeyPurpose, Vec<u8>)> = self
            .keys
            .iter()
            .map(|(id, _, mac)| (KeyPurpose::Encryption(*id), mac.clone()))
            .collect();
        checks.push((KeyPurpose::Hash, check_mac(&self.hash_key)));
        checks
    }

    /// `ciphertext` sealed again with the current key, or `None` when it already is.
    pub fn reseal(&self, ciphertext: &[u8], owner: Uuid) -> Result<Option<Vec<u8>>, DecryptError> {
        if key_id(ciphertext) == Some(self.current) {
            return Ok(None);
        }
        let clear = self.open(ciphertext, owner)?;
        let id = IdNumber::parse(&clear).map_err(|_| DecryptError)?;
        self.seal(&id, owner)
            .map(|sealed| Some(sealed.ciphertext))
            .map_err(|_| DecryptError)
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
        let (_, aead, _) = &self.keys[0];
        let sealed = aead.encrypt(&nonce, payload).map_err(|_| EncryptError)?;
        let mut ciphertext = Vec::with_capacity(2 + NONCE_LEN + sealed.len());
        ciphertext.push(FORMAT_V2);
        ciphertext.push(self.current);
        ciphertext.extend_from_slice(&nonce);
        ciphertext.extend_from_slice(&sealed);
        Ok(SealedIdNumber {
            ciphertext,
            hash: self.hash(id),
            last4: id.last4().to_owned(),
        })
    }

    pub fn open(&self, ciphertext: &[u8], owner: Uuid) -> Result<String, DecryptError> {
        let (id, rest) = match ciphertext {
            [FORMAT_V1, rest @ ..] => (1, rest),
            [FORMAT_V2, id, rest @ ..] => (*id, rest),
            _ => return Err(DecryptError),
        };
        if rest.len() <= NONCE_LEN {
            return Err(DecryptError);
        }
        let (_, aead, _) = self
            .keys
            .iter()
            .find(|(key_id, _, _)| *key_id == id)
            .ok_or(DecryptError)?;
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let payload = Payload {
            msg: sealed,
            aad: owner.as_bytes(),
        };
        let plain = aead
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| DecryptError)?;
        String::from_utf8(plain).map_err(|_| DecryptError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::config::Secret;

    fn cipher() -> PiiCipher {
        PiiCipher::new(&PiiKeys::new(
            Secret::new(vec![7; 32]),
            Secret::new(vec![9; 32]),
        ))
    }

    /// A cipher whose current key is `current` (id 2) and which still has key 1 (`[7; 32]`).
    fn rotated() -> PiiCipher {
        PiiCipher::new(&PiiKeys {
            encryption: Secret::new(vec![8; 32]),
            encryption_key_id: 2,
            previous: vec![(1, Secret::new(vec![7; 32]))],
            hash: Secret::new(vec![9; 32]),
        })
    }

    #[test]
    fn after_rotation_old_ciphertexts_open_and_new_ones_carry_the_new_key_id() {
        let id = IdNumber::parse("123456789").unwrap();
        let owner = Uuid::now_v7();
        let old = cipher().seal(&id, owner).unwrap().ciphertext;
        assert_eq!(key_id(&old), Some(1));
        let new = rotated();
        assert_eq!(new.open(&old, owner).unwrap(), "123456789");
        let resealed = new.reseal(&old, owner).unwrap().unwrap();
        assert_eq!(key_id(&resealed), Some(2));
        assert_eq!(new.open(&resealed, owner).unwrap(), "123456789");
        assert_eq!(new.reseal(&resealed, owner), Ok(None));
        // The old cipher alone cannot read what the new key sealed.
        assert_eq!(cipher().open(&resealed, owner), Err(DecryptError));
    }

    #[test]
    fn version_one_ciphertexts_are_read_as_key_one() {
        // [1][nonce][sealed], as the service wrote before key ids.
        let c = cipher();
        let owner = Uuid::now_v7();
        let v2 = c
            .seal(&IdNumber::parse("123456789").unwrap(), owner)
            .unwrap()
            .ciphertext;
        let mut v1 = vec![FORMAT_V1];
        v1.extend_from_slice(&v2[2..]);
        assert_eq!(key_id(&v1), Some(1));
        assert_eq!(c.open(&v1, owner).unwrap(), "123456789");
    }

    #[test]
    fn key_checks_differ_by_key_and_never_contain_it() {
        let a = cipher().key_checks();
        let b = rotated().key_checks();
        assert_eq!(a[0].0, KeyPurpose::Encryption(1));
        assert_eq!(b[0].0, KeyPurpose::Encryption(2));
        assert_eq!(
            b[1], a[0],
            "key 1 checks the same wherever it is configured"
        );
        assert_ne!(a[0].1, b[0].1);
        assert!(a
            .iter()
            .all(|(_, mac)| !mac.windows(8).any(|w| w == [7; 8])));
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
