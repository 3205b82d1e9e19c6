//! Encrypted attachments (<https://spec.matrix.org/v1.12/client-server-api/#sending-encrypted-attachments>):
//! AES-256-CTR with a fresh key and IV per file, the key as a JWK, the ciphertext's SHA-256
//! checked before anything is decrypted.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use ctr::cipher::{KeyIvInit, StreamCipher};
use serde_json::{Value, json};
use sha2::Digest;
use zeroize::Zeroizing;

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// Why a downloaded file was not decrypted.
#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    #[error("the file object is malformed: {0}")]
    Malformed(&'static str),
    #[error("the file's SHA-256 does not match the one its message gave")]
    HashMismatch,
}

/// Base64 as Matrix writes it (unpadded), read padded or not.
fn decode(text: &str, url_safe: bool) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    if url_safe {
        URL_SAFE_NO_PAD.decode(text).ok()
    } else {
        STANDARD_NO_PAD.decode(text).ok()
    }
}

/// Decrypts `ciphertext` with the `file` object of its message (`key`, `iv`, `hashes`).
pub fn decrypt(file: &Value, ciphertext: &[u8]) -> Result<Vec<u8>, AttachmentError> {
    if file.pointer("/key/alg").and_then(Value::as_str) != Some("A256CTR") {
        return Err(AttachmentError::Malformed("key.alg is not A256CTR"));
    }
    let key = file
        .pointer("/key/k")
        .and_then(Value::as_str)
        .and_then(|k| decode(k, true))
        .map(Zeroizing::new)
        .filter(|k| k.len() == 32)
        .ok_or(AttachmentError::Malformed("key.k is not a 256-bit key"))?;
    let iv = file
        .get("iv")
        .and_then(Value::as_str)
        .and_then(|iv| decode(iv, false))
        .filter(|iv| iv.len() == 16)
        .ok_or(AttachmentError::Malformed("iv is not 16 bytes"))?;
    let want = file
        .pointer("/hashes/sha256")
        .and_then(Value::as_str)
        .and_then(|h| decode(h, false))
        .ok_or(AttachmentError::Malformed("hashes.sha256 is missing"))?;
    let got = sha2::Sha256::digest(ciphertext);
    if got.as_slice() != want.as_slice() {
        return Err(AttachmentError::HashMismatch);
    }
    let mut data = ciphertext.to_vec();
    let mut cipher = Aes256Ctr::new_from_slices(&key, &iv)
        .map_err(|_| AttachmentError::Malformed("key or iv length"))?;
    cipher.apply_keystream(&mut data);
    Ok(data)
}

/// Encrypts `data` for upload: the ciphertext and the `file` object (without `url`, which
/// the caller sets once the ciphertext is uploaded).
pub fn encrypt(data: &[u8]) -> (Vec<u8>, Value) {
    let key = Zeroizing::new(rand::random::<[u8; 32]>());
    // The spec's IV: 64 random bits, then a 64-bit counter starting at zero.
    let mut iv = [0u8; 16];
    iv[..8].copy_from_slice(&rand::random::<[u8; 8]>());
    let mut out = data.to_vec();
    let mut cipher = Aes256Ctr::new(key.as_ref().into(), &iv.into());
    cipher.apply_keystream(&mut out);
    let hash = sha2::Sha256::digest(&out);
    let file = json!({
        "v": "v2",
        "key": {
            "kty": "oct",
            "key_ops": ["encrypt", "decrypt"],
            "alg": "A256CTR",
            "k": URL_SAFE_NO_PAD.encode(key.as_ref()),
            "ext": true,
        },
        "iv": STANDARD_NO_PAD.encode(iv),
        "hashes": {"sha256": STANDARD_NO_PAD.encode(hash.as_slice())},
    });
    (out, file)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_file_comes_back_and_a_changed_one_is_refused() {
        let (mut cipher, file) = encrypt(b"secret report");
        assert_ne!(&cipher[..], b"secret report");
        assert_eq!(decrypt(&file, &cipher).unwrap(), b"secret report");
        cipher[0] ^= 1;
        assert!(matches!(
            decrypt(&file, &cipher),
            Err(AttachmentError::HashMismatch)
        ));
    }
}
