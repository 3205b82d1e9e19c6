//! Bounds what a sandbox can make the host log.
//!
//! Everything a sandbox sends is untrusted, including what ends up in the host's log: its
//! stderr, its `log` messages, the protocol lines the host rejects, tool summaries, error
//! texts. Each sandbox gets a [`LogBudget`] of bytes per minute; past it, records are
//! dropped and counted, and one "suppressed" record says how many when the minute is over
//! (or the sandbox is gone). Text is also cleaned of control characters, so a sandbox
//! cannot put terminal escape sequences or fake records into the log.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bytes of sandbox-originated text one sandbox may have logged per window.
pub const LOG_BYTES_PER_WINDOW: usize = 256 * 1024;
/// The budget's window.
pub const LOG_WINDOW: Duration = Duration::from_secs(60);
/// Longest piece of sandbox text put in one record.
pub const MAX_LOGGED_TEXT: usize = 2000;

#[derive(Debug)]
struct State {
    sandbox: String,
    window_start: Instant,
    used: usize,
    suppressed_lines: u64,
    suppressed_bytes: u64,
}

impl State {
    fn report_suppressed(&mut self) {
        if self.suppressed_lines > 0 {
            tracing::warn!(
                sandbox = %self.sandbox,
                lines = self.suppressed_lines,
                bytes = self.suppressed_bytes,
                "suppressed {} log lines ({} bytes) from the sandbox: over its budget of {} bytes per {} s",
                self.suppressed_lines,
                self.suppressed_bytes,
                LOG_BYTES_PER_WINDOW,
                LOG_WINDOW.as_secs()
            );
            self.suppressed_lines = 0;
            self.suppressed_bytes = 0;
        }
    }
}

impl State {
    fn roll_if_due(&mut self) {
        if self.window_start.elapsed() >= LOG_WINDOW {
            self.report_suppressed();
            self.window_start = Instant::now();
            self.used = 0;
        }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        self.report_suppressed();
    }
}

/// One sandbox's log budget. Cheap to clone; clones share the budget.
#[derive(Debug, Clone)]
pub struct LogBudget {
    state: Arc<Mutex<State>>,
}

impl LogBudget {
    pub fn new(sandbox: impl Into<String>) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                sandbox: sandbox.into(),
                window_start: Instant::now(),
                used: 0,
                suppressed_lines: 0,
                suppressed_bytes: 0,
            })),
        }
    }

    /// Whether a record carrying `bytes` of sandbox text may be logged now. A refusal is
    /// counted; the count is logged once when the window ends.
    pub fn admit(&self, bytes: usize) -> bool {
        let mut st = lock(&self.state);
        st.roll_if_due();
        // Every record costs something, so a flood of empty lines is bounded too.
        let cost = bytes.max(1) + 64;
        if st.used + cost > LOG_BYTES_PER_WINDOW {
            if st.suppressed_lines == 0 {
                // Say so at once, and count at the end of the window even if the sandbox
                // then stays quiet (or is gone: the count is logged when it is dropped).
                tracing::warn!(
                    sandbox = %st.sandbox,
                    "the sandbox is over its log budget of {} bytes per {} s; its log lines are suppressed until the window ends",
                    LOG_BYTES_PER_WINDOW,
                    LOG_WINDOW.as_secs()
                );
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    let state = Arc::downgrade(&self.state);
                    let wait = LOG_WINDOW.saturating_sub(st.window_start.elapsed());
                    runtime.spawn(async move {
                        tokio::time::sleep(wait).await;
                        if let Some(state) = state.upgrade() {
                            lock(&state).roll_if_due();
                        }
                    });
                }
            }
            st.suppressed_lines += 1;
            st.suppressed_bytes += bytes as u64;
            return false;
        }
        st.used += cost;
        true
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // A poisoned lock only means a panic elsewhere; the counters are still usable.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// `text` made safe for one log record: control characters (escape sequences, newlines,
/// carriage returns) shown escaped, and cut to [`MAX_LOGGED_TEXT`] characters.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_LOGGED_TEXT));
    for (count, c) in text.chars().enumerate() {
        if count >= MAX_LOGGED_TEXT {
            out.push_str(" […cut]");
            break;
        }
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_past_the_limit() {
        let budget = LogBudget::new("s");
        let mut admitted = 0usize;
        for _ in 0..10_000 {
            if budget.admit(1000) {
                admitted += 1;
            }
        }
        assert!(admitted * 1000 <= LOG_BYTES_PER_WINDOW, "{admitted}");
        assert!(admitted > 0);
        assert!(!budget.admit(1000), "still refused after the flood");
    }

    #[test]
    fn clean_escapes_control_characters_and_cuts() {
        assert_eq!(clean("a\u{1b}[31mb\nc"), "a\\u{1b}[31mb\\nc");
        let long = "x".repeat(MAX_LOGGED_TEXT + 10);
        assert!(clean(&long).ends_with("[…cut]"));
    }
}
