//! The leak guard: finds secret values in outbound text with one Aho-Corasick automaton over every live
//! secret version and the forms an agent might wrap it in (base64 at any alignment, URL-encoding).

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::vault::LiveSecret;

/// Raw values shorter than this are not searched for (they would match ordinary text).
pub const MIN_RAW_LEN: usize = 4;
/// Derived forms (encodings, fragments) shorter than this are not searched for.
pub const MIN_DERIVED_LEN: usize = 8;

/// A secret found in scanned text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Match {
    /// Index of the secret in the list the guard was built from.
    pub secret_index: usize,
    pub start: usize,
    pub end: usize,
}

/// Scans text for secrets. Build a new one after the vault changes (it is cheap to build).
pub struct LeakGuard {
    automaton: Option<AhoCorasick>,
    /// Pattern id → secret index.
    owner: Vec<usize>,
    names: Vec<String>,
}

impl std::fmt::Debug for LeakGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeakGuard")
            .field("secrets", &self.names)
            .field("patterns", &self.owner.len())
            .finish()
    }
}

impl LeakGuard {
    /// A guard over `secrets` (e.g. [`crate::Vault::live_values`]).
    pub fn new(secrets: &[LiveSecret]) -> LeakGuard {
        let mut patterns: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut owner = Vec::new();
        let mut seen: HashMap<Vec<u8>, ()> = HashMap::new();
        for (idx, s) in secrets.iter().enumerate() {
            let raw = s.value.expose_secret().as_bytes();
            if raw.len() < MIN_RAW_LEN {
                tracing::warn!(secret = %s.name, "leak guard: value too short to search for");
                continue;
            }
            let mut add = |p: Vec<u8>, min: usize| {
                let p = Zeroizing::new(p);
                if p.len() >= min && !seen.contains_key(p.as_slice()) {
                    seen.insert(p.to_vec(), ());
                    patterns.push(p);
                    owner.push(idx);
                }
            };
            add(raw.to_vec(), MIN_RAW_LEN);
            for form in variants(raw) {
                add(form, MIN_DERIVED_LEN);
            }
        }
        // The dedup map held copies of the patterns; wipe them.
        for (mut k, ()) in seen.drain() {
            zeroize::Zeroize::zeroize(&mut k);
        }
        let automaton = if patterns.is_empty() {
            None
        } else {
            match AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .build(patterns.iter().map(|p| p.as_slice()))
            {
                Ok(ac) => Some(ac),
                Err(e) => {
                    tracing::error!(error = %e, "leak guard: cannot build the automaton");
                    None
                }
            }
        };
        LeakGuard {
            automaton,
            owner,
            names: secrets.iter().map(|s| s.name.clone()).collect(),
        }
    }

    /// How many patterns (values and encoded forms) the automaton holds.
    pub fn pattern_count(&self) -> usize {
        self.owner.len()
    }

    /// Whether there is nothing to look for.
    pub fn is_empty(&self) -> bool {
        self.automaton.is_none()
    }

    /// The name of secret `index` (from a [`Match`]).
    pub fn secret_name(&self, index: usize) -> &str {
        self.names.get(index).map(String::as_str).unwrap_or("?")
    }

    /// Every (non-overlapping, leftmost-longest) occurrence of a secret or an encoded form of it.
    pub fn scan(&self, text: &[u8]) -> Vec<Match> {
        let Some(ac) = &self.automaton else {
            return Vec::new();
        };
        ac.find_iter(text)
            .map(|m| Match {
                secret_index: self.owner.get(m.pattern().as_usize()).copied().unwrap_or(0),
                start: m.start(),
                end: m.end(),
            })
            .collect()
    }

    /// `text` with each occurrence replaced by `[REDACTED:<name>]`.
    pub fn redact(&self, text: &str) -> String {
        let matches = self.scan(text.as_bytes());
        if matches.is_empty() {
            return text.to_owned();
        }
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut last = 0;
        for m in matches {
            out.extend_from_slice(&bytes[last..m.start]);
            out.extend_from_slice(
                format!("[REDACTED:{}]", self.secret_name(m.secret_index)).as_bytes(),
            );
            last = m.end;
        }
        out.extend_from_slice(&bytes[last..]);
        // Patterns are whole UTF-8 strings or ASCII, so cuts fall on character boundaries; lossy is
        // only a guard.
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Encoded forms of `raw` worth looking for.
fn variants(raw: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        out.push(engine.encode(raw).into_bytes());
    }
    // Inside a larger base64 blob the secret starts at byte offset 0, 1 or 2 of a 3-byte group; keep
    // only the characters that depend on the secret's bytes alone.
    for shift in 1..3usize {
        let mut shifted = vec![0u8; shift];
        shifted.extend_from_slice(raw);
        for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
            out.push(stable_core(&engine.encode(&shifted), shift, shifted.len()));
        }
    }
    for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
        out.push(stable_core(&engine.encode(raw), 0, raw.len()));
    }
    if percent_encode(raw, false, true) != raw {
        for (plus, upper) in [(false, true), (false, false), (true, true), (true, false)] {
            out.push(percent_encode(raw, plus, upper));
        }
    }
    out
}

/// The part of an unpadded base64 encoding (of `total` bytes whose first `shift` are not the secret)
/// that is the same whatever bytes surround the secret.
fn stable_core(encoded: &str, shift: usize, total: usize) -> Vec<u8> {
    let skip = match shift {
        0 => 0,
        1 => 2,
        _ => 3,
    };
    // A trailing partial group's last character mixes in the following bytes.
    let trim = usize::from(!total.is_multiple_of(3));
    let bytes = encoded.as_bytes();
    if bytes.len() <= skip + trim {
        return Vec::new();
    }
    bytes[skip..bytes.len() - trim].to_vec()
}

fn percent_encode(raw: &[u8], plus_for_space: bool, upper: bool) -> Vec<u8> {
    let hex: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = Vec::with_capacity(raw.len() * 3);
    for &b in raw {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else if b == b' ' && plus_for_space {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[b'%', hex[usize::from(b >> 4)], hex[usize::from(b & 15)]]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn guard(values: &[(&str, &str)]) -> LeakGuard {
        let secrets: Vec<LiveSecret> = values
            .iter()
            .map(|(n, v)| LiveSecret {
                name: (*n).into(),
                version: 1,
                value: SecretString::from(*v),
            })
            .collect();
        LeakGuard::new(&secrets)
    }

    #[test]
    fn finds_a_secret_and_redacts_it() {
        let g = guard(&[
            ("anthropic", "sk-ant-abc123XYZ"),
            ("other", "zzzz-9999-yyyy"),
        ]);
        let text = "here: sk-ant-abc123XYZ and zzzz-9999-yyyy.";
        let m = g.scan(text.as_bytes());
        assert_eq!(m.len(), 2);
        assert_eq!(&text[m[0].start..m[0].end], "sk-ant-abc123XYZ");
        assert_eq!(g.secret_name(m[0].secret_index), "anthropic");
        assert_eq!(
            g.redact(text),
            "here: [REDACTED:anthropic] and [REDACTED:other]."
        );
        assert_eq!(g.redact("nothing here"), "nothing here");
    }

    #[test]
    fn finds_base64_at_every_alignment_and_url_encoded_forms() {
        let secret = "s3cr3t/value+with spaces&more";
        let g = guard(&[("k", secret)]);
        for prefix in ["", "a", "ab", "abc", "abcd"] {
            let blob = STANDARD.encode(format!("{prefix}{secret}tail-bytes"));
            assert!(
                !g.scan(blob.as_bytes()).is_empty(),
                "prefix {prefix:?}: {blob}"
            );
            let blob = URL_SAFE_NO_PAD.encode(format!("{prefix}{secret}"));
            assert!(
                !g.scan(blob.as_bytes()).is_empty(),
                "url-safe prefix {prefix:?}"
            );
        }
        let url = format!(
            "https://evil.example/?q={}",
            String::from_utf8(percent_encode(secret.as_bytes(), true, false)).unwrap()
        );
        assert!(!g.scan(url.as_bytes()).is_empty(), "{url}");
        let url = format!(
            "https://evil.example/?q={}",
            String::from_utf8(percent_encode(secret.as_bytes(), false, true)).unwrap()
        );
        assert_eq!(g.redact(&url), "https://evil.example/?q=[REDACTED:k]");
    }

    #[test]
    fn an_empty_guard_and_short_values_find_nothing() {
        let g = guard(&[]);
        assert!(g.is_empty() && g.scan(b"anything").is_empty());
        let g = guard(&[("pin", "12")]);
        assert!(g.scan(b"12 12 12").is_empty());
    }
}
