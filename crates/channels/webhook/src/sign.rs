//! The two signing schemes, checked on the raw body before anything parses it.
//!
//! - **github**: `X-Hub-Signature-256: sha256=<hex>`, the HMAC-SHA256 of the raw body under
//!   the hook's secret (as GitHub sends it). It carries no timestamp: replays are caught by
//!   the delivery id (`X-GitHub-Delivery`) and by remembering recent signatures.
//! - **generic**: `X-Signature: t=<unix seconds>,v1=<hex>`, the HMAC-SHA256 of
//!   `"<t>.<raw body>"` under the hook's secret (Stripe's layout). `t` must be within the
//!   replay window of the receiver's clock; several `v1=` entries may be given (one for each
//!   secret during a rotation) and one matching is enough.
//!
//! Comparisons are constant-time (`Mac::verify_slice`).

use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Why a delivery's signature was refused (said in the 401's body: it names no secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("malformed {0} header")]
    Malformed(&'static str),
    #[error("signature timestamp outside the replay window")]
    Stale,
    #[error("signature does not match")]
    Mismatch,
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable_hmac(),
    }
}

#[cold]
fn unreachable_hmac() -> HmacSha256 {
    // Never reached (HMAC accepts every key length); an empty-key MAC keeps this total
    // without a panic path.
    <HmacSha256 as KeyInit>::new(&Default::default())
}

/// The header GitHub's scheme signs with.
pub const GITHUB_HEADER: &str = "x-hub-signature-256";
/// The header the generic scheme signs with.
pub const GENERIC_HEADER: &str = "x-signature";

/// Checks a GitHub `X-Hub-Signature-256` value against `body`.
pub fn verify_github(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing("X-Hub-Signature-256"))?;
    let hex_sig = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed("X-Hub-Signature-256"))?;
    let expected =
        hex::decode(hex_sig).map_err(|_| SignatureError::Malformed("X-Hub-Signature-256"))?;
    let mut mac = mac(secret);
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// The `X-Hub-Signature-256` value for `body` (for tests and tools).
pub fn sign_github(secret: &[u8], body: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a generic `X-Signature` value against `body` at `now` (unix seconds), allowing
/// `window` seconds either way.
pub fn verify_generic(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
    now: i64,
    window: i64,
) -> Result<(), SignatureError> {
    const NAME: &str = "X-Signature";
    let header = header.ok_or(SignatureError::Missing(NAME))?;
    let mut timestamp: Option<i64> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for item in header.split(',') {
        let (key, value) = item
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed(NAME))?;
        match key {
            "t" => {
                let t = value
                    .parse::<i64>()
                    .map_err(|_| SignatureError::Malformed(NAME))?;
                timestamp = Some(t);
            }
            "v1" => {
                signatures.push(hex::decode(value).map_err(|_| SignatureError::Malformed(NAME))?)
            }
            // Other schemes' entries (a future v2) are ignored, as Stripe's receivers do.
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed(NAME))?;
    if signatures.is_empty() || signatures.len() > 8 {
        return Err(SignatureError::Malformed(NAME));
    }
    if (now - t).abs() > window {
        return Err(SignatureError::Stale);
    }
    let mut base = mac(secret);
    base.update(t.to_string().as_bytes());
    base.update(b".");
    base.update(body);
    let ok = signatures
        .iter()
        .any(|sig| base.clone().verify_slice(sig).is_ok());
    if ok {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The `X-Signature` value for `body` signed at `t` (unix seconds).
pub fn sign_generic(secret: &[u8], body: &[u8], t: i64) -> String {
    let mut mac = mac(secret);
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_signatures_match_only_the_exact_body_and_secret() {
        // The example from GitHub's "Validating webhook deliveries" page.
        let sig = sign_github(b"It's a Secret to Everybody", b"Hello, World!");
        assert_eq!(
            sig,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        let secret = b"It's a Secret to Everybody";
        assert_eq!(verify_github(secret, b"Hello, World!", Some(&sig)), Ok(()));
        assert_eq!(
            verify_github(secret, b"Hello, World?", Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_github(b"other", b"Hello, World!", Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify_github(secret, b"Hello, World!", None),
            Err(SignatureError::Missing(_))
        ));
        assert!(matches!(
            verify_github(secret, b"x", Some("sha1=abcd")),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            verify_github(secret, b"x", Some("sha256=zz")),
            Err(SignatureError::Malformed(_))
        ));
    }

    #[test]
    fn generic_signatures_cover_the_timestamp_and_expire() {
        let now = 1_700_000_000;
        let sig = sign_generic(b"s", b"{\"a\":1}", now);
        assert_eq!(
            verify_generic(b"s", b"{\"a\":1}", Some(&sig), now, 300),
            Ok(())
        );
        assert_eq!(
            verify_generic(b"s", b"{\"a\":1}", Some(&sig), now + 299, 300),
            Ok(())
        );
        assert_eq!(
            verify_generic(b"s", b"{\"a\":1}", Some(&sig), now + 301, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_generic(b"s", b"{\"a\":1}", Some(&sig), now - 301, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_generic(b"s", b"{\"a\":2}", Some(&sig), now, 300),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed: moving it forward breaks the signature.
        let moved = sig.replace(&format!("t={now}"), &format!("t={}", now + 10));
        assert_eq!(
            verify_generic(b"s", b"{\"a\":1}", Some(&moved), now, 300),
            Err(SignatureError::Mismatch)
        );
        // One matching v1 among several is enough (secret rotation).
        let other = sign_generic(b"old", b"x", now);
        let v1_old = other.split_once(",v1=").unwrap().1;
        let good = sign_generic(b"s", b"x", now);
        let both = format!("{good},v1={v1_old}");
        assert_eq!(verify_generic(b"s", b"x", Some(&both), now, 300), Ok(()));
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz", "garbage"] {
            assert!(
                matches!(
                    verify_generic(b"s", b"x", Some(bad), now, 300),
                    Err(SignatureError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            verify_generic(b"s", b"x", None, now, 300),
            Err(SignatureError::Missing(_))
        ));
    }
}
