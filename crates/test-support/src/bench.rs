//! Latency figures for the benchmarks: iteration counts, percentile rows, timestamps that
//! compare across processes, and a line about the machine.

use std::path::PathBuf;
use std::time::Duration;

/// Iterations: `default`, or `$BENCH_N` when set (for quick or longer runs).
pub fn iterations(default: usize) -> usize {
    std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or(default)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// Prints a table's title and column heads (the columns of [`print_row`]).
pub fn print_header(title: &str) {
    println!();
    println!("## {title}");
    println!(
        "{:<44} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "measurement", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "mean ms"
    );
}

/// Prints one row: n, p50, p95, p99, max, mean (milliseconds).
pub fn print_row(name: &str, samples: &[Duration]) {
    if samples.is_empty() {
        println!("{name:<44} {:>5} (no samples)", 0);
        return;
    }
    if std::env::var_os("BENCH_DUMP").is_some() {
        let all: Vec<String> = samples.iter().map(|d| ms(*d)).collect();
        println!("{name}: samples in order (ms): {}", all.join(" "));
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let total: Duration = sorted.iter().sum();
    let mean = total / sorted.len() as u32;
    println!(
        "{:<44} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10}",
        name,
        sorted.len(),
        ms(percentile(&sorted, 50.0)),
        ms(percentile(&sorted, 95.0)),
        ms(percentile(&sorted, 99.0)),
        ms(sorted[sorted.len() - 1]),
        ms(mean)
    );
}

/// The agent runner the host puts in the sandbox: `$NANOCLAW_AGENT_BIN`, else the
/// release musl build when present (what ships), else the debug build the tests use.
pub fn agent_binary() -> PathBuf {
    if std::env::var_os("NANOCLAW_AGENT_BIN").is_none() {
        let release =
            crate::workspace_root().join("target/x86_64-unknown-linux-musl/release/nanoclaw-agent");
        if release.is_file() {
            return release;
        }
    }
    crate::agent_binary()
}

/// Nanoseconds since the Unix epoch (CLOCK_REALTIME, comparable across processes).
pub fn epoch_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or_default()
}

/// A difference of [`epoch_ns`] stamps as a duration (negative ones, clock skew, as zero).
pub fn duration_ns(ns: i128) -> Duration {
    Duration::from_nanos(ns.max(0) as u64)
}

/// A short description of the machine for the report.
pub fn print_machine() {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    println!("machine: {cores} cores, {cpu}, kernel {}", kernel.trim());
}
