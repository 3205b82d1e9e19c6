//! Leak-guard throughput: ~64 MB of text scanned for 50 secrets (and their encoded forms) on one core.
//! Run with `cargo bench -p nanoclaw-vault --bench leak_scan`; prints MB/s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use nanoclaw_vault::{LeakGuard, LiveSecret, SecretString};

const TEXT_BYTES: usize = 64 * 1024 * 1024;
const SECRETS: usize = 50;
const RUNS: usize = 5;

/// Deterministic xorshift so every run scans the same text.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fn token(rng: &mut Rng, len: usize) -> String {
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len)
        .map(|_| ALNUM[(rng.next() % ALNUM.len() as u64) as usize] as char)
        .collect()
}

fn main() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let secrets: Vec<LiveSecret> = (0..SECRETS)
        .map(|i| LiveSecret {
            name: format!("secret-{i}"),
            version: 1,
            value: SecretString::from(format!("sk-{}", token(&mut rng, 40))),
        })
        .collect();
    let build = Instant::now();
    let guard = LeakGuard::new(&secrets);
    let build_ms = build.elapsed().as_secs_f64() * 1000.0;

    // Text like tool output and chat: words, code-ish punctuation, ids and base64-looking tokens.
    let words = [
        "the",
        "assistant",
        "ran",
        "git",
        "status",
        "and",
        "found",
        "fn",
        "main()",
        "{",
        "}",
        "let",
        "x",
        "=",
        "sk-",
        "key",
        "token:",
        "Bearer",
        "https://api.example.com/v1/items?id=",
        "error:",
        "warning",
        "200",
        "OK",
        "\n",
        "json",
        "\"name\":",
        "value",
        "path/to/file.rs",
    ];
    let mut text = String::with_capacity(TEXT_BYTES + 1024);
    let mut planted = 0;
    while text.len() < TEXT_BYTES {
        if rng.next().is_multiple_of(16) {
            text.push_str(&token(&mut rng, 24));
        } else {
            text.push_str(rng.pick(&words));
        }
        text.push(' ');
        // A real leak now and then (about one per MB).
        if rng.next().is_multiple_of(200_000) {
            use secrecy::ExposeSecret;
            text.push_str(secrets[planted % SECRETS].value.expose_secret());
            planted += 1;
        }
    }
    let mb = text.len() as f64 / (1024.0 * 1024.0);

    let mut best = f64::MAX;
    let mut found = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        found = guard.scan(text.as_bytes()).len();
        best = best.min(start.elapsed().as_secs_f64());
    }
    assert_eq!(
        found, planted,
        "every planted secret is found, nothing else"
    );

    let redact_start = Instant::now();
    let redacted = guard.redact(&text);
    let redact_s = redact_start.elapsed().as_secs_f64();
    assert!(redacted.len() <= text.len() + planted * 32);

    println!(
        "leak_scan: {mb:.1} MB, {SECRETS} secrets ({} patterns), build {build_ms:.1} ms, \
         scan best of {RUNS}: {:.3} s = {:.0} MB/s ({found} matches), redact {:.0} MB/s",
        guard.pattern_count(),
        best,
        mb / best,
        mb / redact_s
    );
}
