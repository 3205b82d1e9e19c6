//! Is the sender who the `From` header says? Mail is the easiest channel to spoof, so the
//! channel reads the verdict the receiving server wrote in `Authentication-Results`
//! (RFC 8601) — DKIM, SPF and DMARC — and trusts only the header written by the server the
//! owner names (`trusted_authserv_id`, e.g. `mx.google.com`). A sender can put any header in
//! a message; the receiving server adds its own on top, so only the topmost header carrying
//! that server's id counts. A server that checks nothing gives nothing to trust: then the
//! owner chooses between refusing all mail (`sender_check = "required"`) and trusting the
//! `From` address (`"off"`, said plainly by `channel status` and the docs).

/// How a message's sender was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderCheck {
    /// The receiving server vouches for the `From` domain: `how` says by what
    /// (`dkim=pass header.d=example.org`, `dmarc=pass`, `spf=pass smtp.mailfrom=…`).
    Verified { how: String },
    /// The receiving server checked and the checks did not pass for the `From` domain.
    Failed { why: String },
    /// No verdict from the trusted server is in the message.
    Unchecked,
}

/// Checks `from` (an address) against the `Authentication-Results` headers (topmost first)
/// written by `trusted_authserv_id`.
pub fn check_sender(
    from: &str,
    authentication_results: &[String],
    trusted_authserv_id: &str,
) -> SenderCheck {
    let Some(from_domain) = from.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()) else {
        return SenderCheck::Failed {
            why: format!("{from:?} has no domain"),
        };
    };
    let Some(header) = authentication_results
        .iter()
        .find(|h| authserv_id(h).is_some_and(|id| id.eq_ignore_ascii_case(trusted_authserv_id)))
    else {
        return SenderCheck::Unchecked;
    };
    let mut seen = Vec::new();
    for result in header.split(';').skip(1) {
        let words: Vec<&str> = result.split_whitespace().collect();
        let Some((method, verdict)) = words.first().and_then(|w| w.split_once('=')) else {
            continue;
        };
        let method = method.to_ascii_lowercase();
        let verdict = verdict.to_ascii_lowercase();
        let property = |name: &str| {
            words.iter().find_map(|w| {
                let (k, v) = w.split_once('=')?;
                k.eq_ignore_ascii_case(name)
                    .then(|| v.trim_matches('"').to_ascii_lowercase())
            })
        };
        seen.push(format!("{method}={verdict}"));
        if verdict != "pass" {
            continue;
        }
        let vouched = match method.as_str() {
            "dmarc" => property("header.from").is_none_or(|d| d == from_domain),
            "dkim" => property("header.d").is_some_and(|d| aligned(&from_domain, &d)),
            "spf" => property("smtp.mailfrom")
                .map(|m| m.rsplit_once('@').map_or(m.clone(), |(_, d)| d.to_owned()))
                .is_some_and(|d| aligned(&from_domain, &d)),
            _ => false,
        };
        if vouched {
            return SenderCheck::Verified {
                how: result.trim().to_owned(),
            };
        }
    }
    SenderCheck::Failed {
        why: if seen.is_empty() {
            format!("{trusted_authserv_id} recorded no checks")
        } else {
            format!(
                "{trusted_authserv_id} found {} for a domain other than {from_domain} or not passing",
                seen.join(", ")
            )
        },
    }
}

/// The authserv-id: the header's first field, without a version number.
fn authserv_id(header: &str) -> Option<&str> {
    header
        .split(';')
        .next()?
        .split_whitespace()
        .next()
        .filter(|id| !id.is_empty())
}

/// Relaxed alignment (RFC 7489 3.1): the authenticated domain is the `From` domain or one of
/// its parents (never a bare top-level domain).
fn aligned(from_domain: &str, authenticated: &str) -> bool {
    let authenticated = authenticated.trim_end_matches('.');
    authenticated.contains('.')
        && (from_domain == authenticated || from_domain.ends_with(&format!(".{authenticated}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(from: &str, headers: &[&str]) -> SenderCheck {
        let headers: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
        check_sender(from, &headers, "mx.example.net")
    }

    #[test]
    fn dkim_for_the_from_domain_verifies() {
        let r = check(
            "ada@mail.example.org",
            &["mx.example.net; dkim=pass header.d=example.org header.s=s1"],
        );
        assert!(matches!(r, SenderCheck::Verified { .. }), "{r:?}");
    }

    #[test]
    fn dkim_for_another_domain_does_not() {
        let r = check(
            "ceo@bank.example",
            &["mx.example.net; dkim=pass header.d=attacker.example"],
        );
        assert!(matches!(r, SenderCheck::Failed { .. }), "{r:?}");
    }

    #[test]
    fn spf_pass_aligned_and_dmarc_pass_verify() {
        assert!(matches!(
            check(
                "a@example.org",
                &["mx.example.net; spf=pass smtp.mailfrom=bounce@example.org"]
            ),
            SenderCheck::Verified { .. }
        ));
        assert!(matches!(
            check(
                "a@example.org",
                &["mx.example.net; dkim=fail; dmarc=pass header.from=example.org"]
            ),
            SenderCheck::Verified { .. }
        ));
    }

    #[test]
    fn a_forged_header_from_another_server_is_not_trusted() {
        let r = check(
            "ceo@bank.example",
            &["evil.example; dkim=pass header.d=bank.example"],
        );
        assert_eq!(r, SenderCheck::Unchecked);
    }

    #[test]
    fn only_the_topmost_trusted_header_counts() {
        // The sender planted a passing header with our server's id below the real one.
        let r = check(
            "ceo@bank.example",
            &[
                "mx.example.net; dkim=none; spf=softfail smtp.mailfrom=x@attacker.example",
                "mx.example.net; dkim=pass header.d=bank.example",
            ],
        );
        assert!(matches!(r, SenderCheck::Failed { .. }), "{r:?}");
    }

    #[test]
    fn a_top_level_domain_never_aligns() {
        assert!(!aligned("example.org", "org"));
        assert!(aligned("a.example.org", "example.org"));
        assert!(!aligned("badexample.org", "example.org"));
    }
}
