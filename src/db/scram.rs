//! SCRAM-SHA-256 password verifiers (RFC 5802, RFC 7677), in PostgreSQL's storage format.
//!
//! `ALTER ROLE … PASSWORD 'SCRAM-SHA-256$…'` stores a verifier as given, so the service can set
//! its login password without the clear text ever reaching the server or its statement log.

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::OsRng;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const ITERATIONS: u32 = 4096;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256>>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA256 with one 32-byte output block.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &first);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        out.iter_mut().zip(u).for_each(|(o, x)| *o ^= x);
    }
    out
}

fn verifier_with_salt(password: &[u8], salt: &[u8]) -> String {
    let salted = salted_password(password, salt, ITERATIONS);
    let stored_key = Sha256::digest(hmac(&salted, b"Client Key"));
    let server_key = hmac(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

/// A verifier for `password` with a fresh random salt.
pub fn verifier(password: &[u8]) -> String {
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    verifier_with_salt(password, &salt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_matches_the_rfc_7914_test_vector() {
        // RFC 7914 §11: PBKDF2-HMAC-SHA256, P="passwd", S="salt", c=1, first 32 bytes.
        let out = salted_password(b"passwd", b"salt", 1);
        assert_eq!(out[..8], [0x55, 0xac, 0x04, 0x6e, 0x56, 0xe3, 0x08, 0x9f]);
    }

    #[test]
    fn the_verifier_has_postgres_storage_format() {
        let v = verifier_with_salt(b"pencil", b"0123456789abcdef");
        let (head, keys) = v.split_once('$').unwrap().1.split_once('$').unwrap();
        assert_eq!(head, "4096:MDEyMzQ1Njc4OWFiY2RlZg==");
        assert_eq!(keys.split(':').count(), 2);
        assert!(v.starts_with("SCRAM-SHA-256$"));
    }
}
