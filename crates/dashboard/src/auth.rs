//! Who may use the dashboard: the owner, signed in by a one-time link that only someone who
//! can read the data directory's database (`nanoclaw dashboard`) can mint. The link opens a
//! session held in an `HttpOnly`, `SameSite=Strict` cookie; every request that changes
//! something must also carry the session's CSRF token in a header and come from the
//! dashboard's own origin; every request must name the dashboard's own address in `Host`
//! (a page elsewhere that re-points its DNS name at 127.0.0.1 is refused — DNS rebinding).
//! Only SHA-256 digests of the tokens are stored.

use std::net::SocketAddr;

use base64::Engine as _;
use nanoclaw_store::Store;
use rand::RngExt as _;
use sha2::{Digest as _, Sha256};

/// How long a login link works.
pub const LOGIN_TTL_MS: i64 = 10 * 60 * 1000;
/// How long a session lasts after signing in.
pub const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;
/// The header every changing request carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A fresh random token: 32 bytes, URL-safe base64.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the store keeps of a token.
pub fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Mints a one-time login token, valid for [`LOGIN_TTL_MS`]; the caller shows the link.
pub async fn mint_login(store: &Store, now_ms: i64) -> Result<String, nanoclaw_store::StoreError> {
    let token = new_token();
    store
        .dashboard_add_login(digest(&token), now_ms, now_ms + LOGIN_TTL_MS)
        .await?;
    Ok(token)
}

/// The cookie's name: per port, since browsers share cookies across a host's ports and two
/// nanoclaw homes may serve dashboards side by side.
pub fn cookie_name(addr: SocketAddr) -> String {
    format!("nanoclaw_session_{}", addr.port())
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// The `Host` values this dashboard answers to: its loopback address by number and as
/// `localhost`.
pub fn allowed_hosts(addr: SocketAddr) -> Vec<String> {
    let port = addr.port();
    let mut hosts = vec![format!("localhost:{port}")];
    match addr {
        SocketAddr::V4(v4) => hosts.push(format!("{}:{port}", v4.ip())),
        SocketAddr::V6(v6) => hosts.push(format!("[{}]:{port}", v6.ip())),
    }
    hosts
}

/// Whether `origin` (an `Origin` header) is this dashboard's own.
pub fn origin_allowed(origin: &str, hosts: &[String]) -> bool {
    origin
        .strip_prefix("http://")
        .is_some_and(|host| hosts.iter().any(|h| h.eq_ignore_ascii_case(host)))
}

/// Compares two tokens in time that does not depend on where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `listen` is a loopback address: the only kind the dashboard serves on (it speaks
/// plain HTTP; reach it from elsewhere through an SSH tunnel).
pub fn is_loopback(listen: &str) -> bool {
    listen
        .parse::<SocketAddr>()
        .is_ok_and(|addr| addr.ip().is_loopback())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_are_random_and_only_their_digest_is_kept() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(digest(&a).len(), 64);
        assert_ne!(digest(&a), a);
    }

    #[test]
    fn cookies_are_found_by_their_exact_name() {
        let h = "a=1; nanoclaw_session_80=xyz; nanoclaw_session_8080=other";
        assert_eq!(cookie_value(h, "nanoclaw_session_80"), Some("xyz"));
        assert_eq!(cookie_value(h, "nanoclaw_session_8080"), Some("other"));
        assert_eq!(cookie_value(h, "nanoclaw_session_8"), None);
    }

    #[test]
    fn only_the_dashboards_own_host_and_origin_pass() {
        let hosts = allowed_hosts("127.0.0.1:7433".parse().unwrap());
        assert!(origin_allowed("http://127.0.0.1:7433", &hosts));
        assert!(origin_allowed("http://localhost:7433", &hosts));
        assert!(!origin_allowed("http://127.0.0.1:7434", &hosts));
        assert!(!origin_allowed("http://evil.example:7433", &hosts));
        assert!(!origin_allowed("https://127.0.0.1:7433", &hosts));
        assert!(!origin_allowed("null", &hosts));
        let v6 = allowed_hosts("[::1]:9000".parse().unwrap());
        assert!(v6.contains(&"[::1]:9000".to_string()));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
    }

    #[test]
    fn only_loopback_addresses_are_served() {
        assert!(is_loopback("127.0.0.1:7433"));
        assert!(is_loopback("[::1]:7433"));
        assert!(!is_loopback("0.0.0.0:7433"));
        assert!(!is_loopback("192.168.1.2:7433"));
        assert!(
            !is_loopback("localhost:7433"),
            "names are not resolved: give the address"
        );
    }
}
