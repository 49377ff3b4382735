//! The `Consistency-Token`: a primary WAL position sealed with AES-256-GCM under a key every
//! instance shares, so that a client can hand it back but cannot read it, make one up or edit
//! one. A bare position told any customer how much the business writes, and a made-up one made
//! a read wait for nothing.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// What a token's plaintext says it is, so that a ciphertext of another purpose never opens.
const LABEL: &[u8] = b"lakehouse-api consistency token v1";

pub struct TokenSeal(Aes256Gcm);

impl TokenSeal {
    /// The seal under `key` (`CONSISTENCY_TOKEN_KEY`).
    pub fn new(key: &[u8; 32]) -> Self {
        Self(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)))
    }

    /// A key derived from another secret every instance shares (the PII look-up hash key,
    /// never rotated), for
    /// deployments that set no `CONSISTENCY_TOKEN_KEY`: different in purpose, the same on every
    /// instance.
    pub fn derived_from(shared: &[u8]) -> Self {
        let key: [u8; 32] = Sha256::new()
            .chain_update(LABEL)
            .chain_update(shared)
            .finalize()
            .into();
        Self::new(&key)
    }

    /// `position` sealed: 12 bytes of random nonce, then the ciphertext and its tag, base64url.
    pub fn seal(&self, position: u64) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut plain = LABEL.to_vec();
        plain.extend_from_slice(&position.to_be_bytes());
        let mut token = nonce.to_vec();
        // Encrypting a few bytes in memory does not fail; an empty token is refused on return.
        token.extend(self.0.encrypt(&nonce, plain.as_slice()).unwrap_or_default());
        URL_SAFE_NO_PAD.encode(token)
    }

    /// The position a token sealed; `None` for anything this key did not seal.
    pub fn open(&self, token: &str) -> Option<u64> {
        let bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
        if bytes.len() != 12 + LABEL.len() + 8 + 16 {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(12);
        let plain = self.0.decrypt(Nonce::from_slice(nonce), sealed).ok()?;
        let position = plain.strip_prefix(LABEL)?;
        Some(u64::from_be_bytes(position.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_only_under_its_key_and_only_unedited() {
        let seal = TokenSeal::new(&[7; 32]);
        let token = seal.seal(0x16_B374_D848);
        assert_eq!(seal.open(&token), Some(0x16_B374_D848));
        // Two tokens of one position look unrelated.
        assert_ne!(seal.seal(5), seal.seal(5));
        assert_eq!(TokenSeal::new(&[8; 32]).open(&token), None);
        let mut edited = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let last = edited.len() - 1;
        edited[last] ^= 1;
        assert_eq!(seal.open(&URL_SAFE_NO_PAD.encode(edited)), None);
        for bad in ["", "16/B374D848", "soon", "%%%"] {
            assert_eq!(seal.open(bad), None, "{bad}");
        }
        let derived = TokenSeal::derived_from(b"shared");
        assert_eq!(derived.open(&derived.seal(9)), Some(9));
        assert_eq!(
            TokenSeal::derived_from(b"other").open(&derived.seal(9)),
            None
        );
    }
}
