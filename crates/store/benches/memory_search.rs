//! Memory search latency over 100,000 memories in one group.
//!
//! The memories are generated text: words drawn from a 20,000-word vocabulary with Zipf
//! frequencies (as in prose: a few words in almost every memory, most words rare), 4 to 120
//! words long, spread over the shared namespace and five skills. Then searches, timed one at a
//! time through `Store::search_memories` (the call the host makes, reader thread hop
//! included), over a mix of queries: common words (in most memories), mid-frequency words,
//! rare words, two-word queries, and words in no memory (which also try the any-word fallback).
//!
//! Run: `cargo bench -p nanoclaw-store --bench memory_search`. `BENCH_N` sets the searches per
//! kind (default 200), `BENCH_MEMORIES` the number of memories (default 100,000).

// Benches are test code: a failed precondition should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use nanoclaw_store::{MemoryQuery, NewGroup, Store};
use nanoclaw_test_support::bench::{iterations, print_header, print_machine, print_row};

const VOCABULARY: usize = 20_000;

/// Makes one query of a kind.
type MakeQuery<'a> = Box<dyn Fn(&mut Rng) -> String + 'a>;

/// Deterministic xorshift: the same memories and queries every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The vocabulary, most frequent first: real common words, then made-up words of two to four
/// syllables (they tokenize and stem like real ones).
fn vocabulary() -> Vec<String> {
    const COMMON: &str = "the of and to a in is that for it as was with be on not he by are \
        this at from but have an they which or you one had all we there can were her been has \
        when who will more no if out so said what up its about into than them only other new \
        some could time these two may then do first any my now such like our over man me even \
        most made after also did many before must through back years where much your way well \
        down should because each just those people how too little state good very make world \
        still own see men work long get here between both life being under never day same \
        another know while last might us great old year off come since against go came right \
        used take three meeting birthday doctor appointment flight hotel dinner password \
        address phone email project deadline invoice budget report friday monday weekend";
    let mut words: Vec<String> = COMMON.split_whitespace().map(str::to_owned).collect();
    const ONSETS: &[&str] = &[
        "b", "br", "c", "ch", "d", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "pl", "r", "s",
        "st", "t", "tr", "v", "w", "z",
    ];
    const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ou", "ee"];
    const CODAS: &[&str] = &["", "n", "r", "l", "s", "t", "m", "nd", "rk"];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut seen: std::collections::HashSet<String> = words.iter().cloned().collect();
    while words.len() < VOCABULARY {
        let syllables = 2 + rng.below(3);
        let mut w = String::new();
        for _ in 0..syllables {
            w.push_str(ONSETS[rng.below(ONSETS.len())]);
            w.push_str(VOWELS[rng.below(VOWELS.len())]);
            w.push_str(CODAS[rng.below(CODAS.len())]);
        }
        if seen.insert(w.clone()) {
            words.push(w);
        }
    }
    words
}

/// Zipf(1) sampling over ranks `0..n` by inverse CDF on the harmonic numbers.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|r| {
                total += 1.0 / r as f64;
                total
            })
            .collect::<Vec<_>>();
        let cumulative = cumulative.into_iter().map(|c| c / total).collect();
        Zipf { cumulative }
    }
    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cumulative.partition_point(|c| *c < u)
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let memories: usize = std::env::var("BENCH_MEMORIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let n = iterations(200);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("nanoclaw.db")).unwrap();
    let group = store
        .ensure_group(NewGroup {
            name: "Main".into(),
            folder: "main".into(),
            is_main: true,
            ..NewGroup::default()
        })
        .await
        .unwrap();
    let words = vocabulary();
    let zipf = Zipf::new(words.len());
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let namespaces = [
        "shared",
        "shared",
        "skill:weather",
        "skill:calendar",
        "skill:travel",
        "skill:finance",
        "skill:news",
    ];
    let mut rows = Vec::with_capacity(memories);
    for _ in 0..memories {
        // Mostly short notes, some long ones: 4..=120 words, skewed short.
        let len = 4 + (rng.unit().powi(2) * 116.0) as usize;
        let text: Vec<&str> = (0..len)
            .map(|_| words[zipf.sample(&mut rng)].as_str())
            .collect();
        let ns = namespaces[rng.below(namespaces.len())];
        rows.push((ns, text.join(" ")));
    }
    let filling = Instant::now();
    let group_id = group.id.clone();
    // One transaction through the same table and triggers `save_memory` uses (a save each
    // would spend the setup on 100,000 commits).
    store
        .call(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut insert = tx.prepare(
                    "INSERT INTO memories (group_id, namespace, text, created_at, updated_at)
                     VALUES (?1, ?2, ?3, 0, 0)",
                )?;
                for (ns, text) in &rows {
                    insert.execute(nanoclaw_store::rusqlite::params![group_id, ns, text])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
        .unwrap();
    // The store checkpoints every few dozen calls; after this one big call the whole database
    // would still sit in the WAL, which no running host's would.
    store
        .call(|conn| Ok(conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?))
        .await
        .unwrap();
    println!(
        "{memories} memories stored in {:.1} s",
        filling.elapsed().as_secs_f64()
    );
    assert_eq!(
        store.count_memories(group.id.clone()).await.unwrap(),
        memories as u64
    );

    let kinds: Vec<(&str, MakeQuery<'_>)> = vec![
        (
            "common word (top 20)",
            Box::new(|r: &mut Rng| words[r.below(20)].clone()),
        ),
        (
            "mid word (rank 100-1,000)",
            Box::new(|r: &mut Rng| words[100 + r.below(900)].clone()),
        ),
        (
            "rare word (rank 5,000-20,000)",
            Box::new(|r: &mut Rng| words[5_000 + r.below(15_000)].clone()),
        ),
        (
            "two words (common + mid)",
            Box::new(|r: &mut Rng| format!("{} {}", words[r.below(20)], words[100 + r.below(900)])),
        ),
        (
            "two words (mid + mid)",
            Box::new(|r: &mut Rng| {
                format!(
                    "{} {}",
                    words[100 + r.below(900)],
                    words[100 + r.below(900)]
                )
            }),
        ),
        (
            "no hits (two unknown words)",
            Box::new(|r: &mut Rng| format!("qqxz{} vvkj{}", r.below(1000), r.below(1000))),
        ),
    ];

    print_machine();
    print_header(&format!(
        "memory search, {memories} memories in one group, limit 10 (across namespaces)"
    ));
    let mut all: Vec<Duration> = Vec::new();
    let mut hits_total = 0usize;
    for (name, make) in &kinds {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let query = make(&mut rng);
            let started = Instant::now();
            let hits = store
                .search_memories(MemoryQuery {
                    group_id: group.id.clone(),
                    query,
                    namespace: None,
                    limit: 10,
                })
                .await
                .unwrap();
            samples.push(started.elapsed());
            hits_total += hits.len();
        }
        print_row(name, &samples);
        all.extend(samples);
    }
    print_row("all kinds together", &all);
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let query = words[100 + rng.below(900)].clone();
        let started = Instant::now();
        store
            .search_memories(MemoryQuery {
                group_id: group.id.clone(),
                query,
                namespace: Some("skill:travel".into()),
                limit: 10,
            })
            .await
            .unwrap();
        samples.push(started.elapsed());
    }
    print_row("mid word, one namespace", &samples);
    println!("(results returned: {hits_total})");
    let mut sorted = all.clone();
    sorted.sort();
    let p99 = sorted[((sorted.len() as f64 * 0.99).ceil() as usize).clamp(1, sorted.len()) - 1];
    println!(
        "target p99 < 5 ms over the mix: {} ({:.3} ms)",
        if p99 < Duration::from_millis(5) {
            "met"
        } else {
            "NOT met"
        },
        p99.as_secs_f64() * 1000.0
    );
}
