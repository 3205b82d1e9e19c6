//! XChaCha20-Poly1305 sealing of secret values. The associated data binds a ciphertext to its secret's
//! name and version, so a row copied onto another name or version fails authentication.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use zeroize::Zeroizing;

use crate::error::VaultError;
use crate::key::MasterKey;

/// Nonce length of XChaCha20-Poly1305: random nonces of this size never realistically collide.
pub const NONCE_LEN: usize = 24;

const KEY_CHECK_PLAINTEXT: &[u8] = b"nanoclaw vault key check v1";
const KEY_CHECK_AD: &[u8] = b"nanoclaw-vault/key-check/v1";

fn cipher(key: &MasterKey) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.bytes().into())
}

/// Associated data of one secret version: a fixed prefix, the name, a separator, the version.
fn associated_data(name: &str, version: i64) -> Vec<u8> {
    let mut ad = Vec::with_capacity(32 + name.len());
    ad.extend_from_slice(b"nanoclaw-vault/secret/v1\0");
    ad.extend_from_slice(name.as_bytes());
    ad.push(0);
    ad.extend_from_slice(&version.to_be_bytes());
    ad
}

fn seal_raw(
    key: &MasterKey,
    plaintext: &[u8],
    ad: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), VaultError> {
    let nonce: [u8; NONCE_LEN] = rand::random();
    let ct = cipher(key)
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: ad,
            },
        )
        .map_err(|e| VaultError::Seal(e.to_string()))?;
    Ok((nonce.to_vec(), ct))
}

fn open_raw(key: &MasterKey, nonce: &[u8], ct: &[u8], ad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    // A nonce of any other length cannot convert, so it fails like a wrong key.
    let nonce = XNonce::try_from(nonce).ok()?;
    cipher(key)
        .decrypt(&nonce, Payload { msg: ct, aad: ad })
        .ok()
        .map(Zeroizing::new)
}

/// Seal version `version` of secret `name`: returns `(nonce, ciphertext)`.
pub fn seal(
    key: &MasterKey,
    name: &str,
    version: i64,
    value: &SecretString,
) -> Result<(Vec<u8>, Vec<u8>), VaultError> {
    seal_raw(
        key,
        value.expose_secret().as_bytes(),
        &associated_data(name, version),
    )
}

/// Open version `version` of secret `name`.
pub fn open(
    key: &MasterKey,
    name: &str,
    version: i64,
    nonce: &[u8],
    ciphertext: &[u8],
) -> Result<SecretString, VaultError> {
    let fail = || VaultError::Decrypt {
        name: name.to_owned(),
        version,
    };
    let plain =
        open_raw(key, nonce, ciphertext, &associated_data(name, version)).ok_or_else(fail)?;
    let text = std::str::from_utf8(&plain).map_err(|_| fail())?;
    Ok(SecretString::from(text))
}

/// The key check value stored in the vault: `nonce || ciphertext` of a known plaintext.
pub fn key_check(key: &MasterKey) -> Result<Vec<u8>, VaultError> {
    let (mut nonce, ct) = seal_raw(key, KEY_CHECK_PLAINTEXT, KEY_CHECK_AD)?;
    nonce.extend_from_slice(&ct);
    Ok(nonce)
}

/// Whether `check` (from [`key_check`]) was made with `key`.
pub fn key_matches(key: &MasterKey, check: &[u8]) -> bool {
    if check.len() < NONCE_LEN {
        return false;
    }
    let (nonce, ct) = check.split_at(NONCE_LEN);
    open_raw(key, nonce, ct, KEY_CHECK_AD).is_some_and(|p| p.as_slice() == KEY_CHECK_PLAINTEXT)
}

/// A keyed digest (SHA-256 over key || label || data) for values derived from the master key, such as
/// placeholders: stable across restarts, unguessable without the key.
pub fn derive(key: &MasterKey, label: &str, data: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(key.bytes());
    h.update(label.as_bytes());
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// Wrap raw key bytes.
pub(crate) fn secret_key(bytes: [u8; 32]) -> SecretBox<[u8; 32]> {
    SecretBox::new(Box::new(bytes))
}
