//! Schedule arithmetic for nanoclaw's scheduled tasks.
//!
//! A [`Schedule`] is one of three kinds, each evaluated for a task's IANA time zone:
//!
//! - **Cron**: a 5-field (`minute hour day-of-month month day-of-week`) or 6-field
//!   (seconds first) expression, or an alias (`@yearly`, `@monthly`, `@weekly`, `@daily`,
//!   `@hourly`), matched against the *local wall clock* of the zone. Field syntax is
//!   croner's: ranges, lists, steps (`*/15`, `1-5/2`), `MON-FRI`/`JAN-DEC` names, `L`
//!   (last day of month), `W`, `#`, and Quartz-style `0/15` meaning `*/15`. When both
//!   day-of-month and day-of-week are restricted a day matching *either* fires (Vixie
//!   cron); prefix day-of-week with `+` to require both. "0 0 31 * *" fires only in 31-day months, "0 0 L * *" on every
//!   month's last day, "0 12 29 2 *" only on 29 February of leap years. An expression
//!   that matches no date at all (e.g. "0 0 30 2 *") is rejected.
//! - **Interval**: every `every_secs` seconds (at least a minute) from an anchor instant:
//!   fires at `anchor + k*every` for k = 1, 2, … in real (UTC) time. It never drifts, since
//!   fire times come from the anchor rather than from when the last run finished, and
//!   it ignores DST: "every 1d" keeps the same UTC time, so its local time shifts by an
//!   hour across a DST change. Use cron for "every day at 09:00 local".
//! - **Once**: a single instant.
//!
//! # Daylight saving time (cron only)
//!
//! The rules follow ISC/Vixie cron. A job is **fixed-time** when its second (if given),
//! minute and hour fields contain no `*` and no `/` (e.g. "30 2 * * *", "0,30 9 * * *",
//! "0 2,14 * * *"); otherwise it is **periodic** (e.g. "0 * * * *", "*/15 * * * *",
//! "*/20 2 * * *", "0 */2 * * *").
//!
//! - **Spring forward (gap)**: a wall-clock time that does not exist that day (02:30 when
//!   clocks jump 02:00→03:00). A fixed-time job fires once at the first instant after the
//!   gap (03:00 local) instead of being skipped; several fire times in the same gap
//!   still give one fire, and a job at 03:00 as well still fires once at 03:00. A
//!   periodic job simply has no fires in the missing hour.
//! - **Fall back (overlap)**: a wall-clock time that happens twice (02:30 when clocks go
//!   03:00→02:00). A fixed-time job fires once, at the first (earlier) occurrence. A
//!   periodic job fires in both occurrences, so "*/15 * * * *" keeps firing every 15
//!   minutes of real time.
//!
//! These rules are applied here, around croner's wall-clock matching: croner 4 has DST
//! handling of its own but counts a job as fixed-time only when second, minute and
//! hour are each a single value, so it would skip "0,30 2 * * *" on spring-forward
//! days and fire "0 2,14 * * *" twice on fall-back days.
//!
//! [`Schedule::next_after`] is strictly after its argument and monotonic: feeding each
//! result back in walks every fire time in order, and starting from any later instant
//! (after a restart) neither skips a fire nor repeats a past one.
//!
//! # Text forms
//!
//! [`Schedule::parse`] reads what a user or model writes: cron expressions (optionally
//! prefixed "cron:"), "every 30m" / "every 2 hours" / "every 1h30m", "in 20 minutes",
//! RFC 3339 instants ("2026-11-27T09:00:00+01:00") and local date-times in the task's zone
//! ("2026-11-27 09:00", optionally prefixed "at "). A local time inside a DST gap is an
//! error naming the gap; one that happens twice means the earlier instant.
//!
//! The crate does no I/O except [`host_tz`], which reads the host's zone configuration.

mod cron;
mod error;
mod text;
mod zone;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
pub use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

pub use error::ScheduleError;
pub use text::parse_duration;
pub use zone::{format_local, host_tz, host_tz_from, parse_tz};

/// The shortest interval accepted, so a typo cannot start a task every second.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);

/// When a scheduled task fires. Serialised with a `kind` tag:
/// `{"kind":"cron","expr":"0 9 * * 1-5"}`, `{"kind":"interval","every_secs":1800,"anchor":"…"}`,
/// `{"kind":"once","at":"…"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// 5 fields (min hour dom month dow) or 6 (with seconds first), evaluated in the task's zone.
    Cron { expr: String },
    /// Every `every_secs` seconds from `anchor`: fires at anchor + k*every (k >= 1). Never
    /// drifts: computed from the anchor, not from when the last run finished.
    Interval {
        every_secs: u64,
        anchor: DateTime<Utc>,
    },
    /// Once at an instant.
    Once { at: DateTime<Utc> },
}

impl Schedule {
    /// Parses what a user or model writes; `now` and `tz` resolve relative and local times.
    ///
    /// Accepts a 5- or 6-field cron expression or `@daily`-style alias (optionally prefixed
    /// "cron:"); `"every <duration>"` (anchored at `now`, at least a minute); `"in <duration>"`;
    /// an RFC 3339 instant; or a local date-time in `tz` ("2026-11-27 09:00",
    /// "2026-11-27T09:00", "2026-11-27T09:00:00"), optionally prefixed "at ". Durations are
    /// read by [`parse_duration`]. A one-off time before `now` is an error, and so is a local
    /// time in a DST gap; a local time that happens twice means the earlier instant.
    pub fn parse(text: &str, now: DateTime<Utc>, tz: Tz) -> Result<Schedule, ScheduleError> {
        let trimmed = text.trim();
        if let Some(expr) = strip_prefix_ignore_case(trimmed, "cron:") {
            return Schedule::cron(expr);
        }
        if trimmed.starts_with('@') {
            return Schedule::cron(trimmed);
        }
        if let Some(rest) = strip_word(trimmed, "every") {
            let every = parse_duration(rest).map_err(|error| match error {
                // "every day at 9", "every monday": a wall-clock time, which is cron's job.
                ScheduleError::InvalidDuration { text, reason } => ScheduleError::InvalidDuration {
                    text,
                    reason: format!(
                        "{reason}; for times of day or weekdays use cron, e.g. \"0 9 * * *\" (daily at 09:00) or \"0 9 * * 1\" (Mondays at 09:00)"
                    ),
                },
                other => other,
            })?;
            return Schedule::interval(every, now);
        }
        if let Some(rest) = strip_word(trimmed, "in") {
            let delay = parse_duration(rest)?;
            if delay.is_zero() {
                return Err(ScheduleError::InvalidDuration {
                    text: rest.trim().to_string(),
                    reason: "a delay must be longer than zero".to_string(),
                });
            }
            let at = TimeDelta::from_std(delay)
                .ok()
                .and_then(|delay| now.checked_add_signed(delay))
                .ok_or_else(|| ScheduleError::OutOfRange {
                    what: format!("\"in {}\"", rest.trim()),
                })?;
            return Ok(Schedule::Once { at });
        }
        let (said_at, time_text) = match strip_word(trimmed, "once") {
            Some(rest) => (true, strip_word(rest, "at").unwrap_or(rest)),
            None => match strip_word(trimmed, "at") {
                Some(rest) => (true, rest),
                None => (false, trimmed),
            },
        };
        if let Some(at) = text::parse_date_time(time_text, now, tz)? {
            return once_in_zone(at, now, tz);
        }
        if said_at {
            return Err(ScheduleError::InvalidTime {
                text: time_text.trim().to_string(),
                reason: format!(
                    "write YYYY-MM-DD HH:MM in {tz}, e.g. \"at 2026-11-27 09:00\", or RFC 3339 with an offset"
                ),
            });
        }
        if looks_like_cron(trimmed) {
            return Schedule::cron(trimmed);
        }
        Err(ScheduleError::Unrecognized {
            text: trimmed.to_string(),
            tz: tz.name().to_string(),
        })
    }

    /// A cron schedule, validated: it must parse and match at least one date.
    pub fn cron(expr: &str) -> Result<Schedule, ScheduleError> {
        cron::CronSpec::parse_checked(expr)?;
        Ok(Schedule::Cron {
            expr: cron::normalise(expr),
        })
    }

    /// An interval schedule of at least [`MIN_INTERVAL`] in whole seconds, first firing at
    /// `anchor + every`.
    pub fn interval(every: Duration, anchor: DateTime<Utc>) -> Result<Schedule, ScheduleError> {
        if every < MIN_INTERVAL {
            return Err(ScheduleError::IntervalTooShort {
                secs: every.as_secs(),
            });
        }
        if every.subsec_nanos() != 0 {
            return Err(ScheduleError::IntervalNotWholeSeconds {
                given: format!("{every:?}"),
            });
        }
        Ok(Schedule::Interval {
            every_secs: every.as_secs(),
            anchor,
        })
    }

    /// A one-off schedule; `at` before `now` is an error (named in UTC).
    pub fn once(at: DateTime<Utc>, now: DateTime<Utc>) -> Result<Schedule, ScheduleError> {
        once_in_zone(at, now, Tz::UTC)
    }

    /// Checks a schedule that did not come through a constructor (e.g. deserialised):
    /// the cron expression parses and fires, the interval is at least a minute. A past
    /// one-off time is fine here; it just has no next fire.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        match self {
            Schedule::Cron { expr } => cron::CronSpec::parse_checked(expr).map(|_| ()),
            Schedule::Interval { every_secs, anchor } => {
                Schedule::interval(Duration::from_secs(*every_secs), *anchor).map(|_| ())
            }
            Schedule::Once { .. } => Ok(()),
        }
    }

    /// The first fire time strictly after `after`, in UTC. None when there is none: a
    /// one-off time already passed, a cron expression that never matches again (or is
    /// invalid), or a time beyond the supported range.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron { expr } => cron::CronSpec::parse_cached(expr)
                .ok()?
                .next_after(after, tz),
            Schedule::Interval { every_secs, anchor } => {
                interval_next_after(*every_secs, *anchor, after)
            }
            Schedule::Once { at } => (*at > after).then_some(*at),
        }
    }

    /// The next `count` fire times after `after`, in order (fewer if the schedule ends).
    pub fn upcoming(&self, after: DateTime<Utc>, tz: Tz, count: usize) -> Vec<DateTime<Utc>> {
        let mut fires = Vec::with_capacity(count);
        let mut cursor = after;
        while fires.len() < count {
            let Some(next) = self.next_after(cursor, tz) else {
                break;
            };
            fires.push(next);
            cursor = next;
        }
        fires
    }

    /// For people: "cron 0 9 * * 1-5 (Europe/Berlin)", "every 30 minutes",
    /// "once at 2026-11-27 09:00 CET".
    pub fn describe(&self, tz: Tz) -> String {
        match self {
            Schedule::Cron { expr } => format!("cron {expr} ({})", tz.name()),
            Schedule::Interval { every_secs, .. } => {
                format!("every {}", text::describe_seconds(*every_secs))
            }
            Schedule::Once { at } => {
                let local = at.with_timezone(&tz);
                let layout = if local.second() == 0 {
                    "%Y-%m-%d %H:%M %Z"
                } else {
                    "%Y-%m-%d %H:%M:%S %Z"
                };
                format!("once at {}", local.format(layout))
            }
        }
    }
}

fn once_in_zone(at: DateTime<Utc>, now: DateTime<Utc>, tz: Tz) -> Result<Schedule, ScheduleError> {
    if at < now {
        return Err(ScheduleError::InPast {
            time: format_local(at, tz),
            now: format_local(now, tz),
        });
    }
    Ok(Schedule::Once { at })
}

/// anchor + k*every for the smallest k >= 1 that is after `after`.
fn interval_next_after(
    every_secs: u64,
    anchor: DateTime<Utc>,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if every_secs == 0 {
        return None;
    }
    let every_nanos = i128::from(every_secs) * 1_000_000_000;
    let elapsed = after.signed_duration_since(anchor);
    let elapsed_nanos =
        i128::from(elapsed.num_seconds()) * 1_000_000_000 + i128::from(elapsed.subsec_nanos());
    let k = if elapsed_nanos < 0 {
        1
    } else {
        elapsed_nanos / every_nanos + 1
    };
    let offset_secs = i64::try_from(k.checked_mul(i128::from(every_secs))?).ok()?;
    anchor.checked_add_signed(TimeDelta::try_seconds(offset_secs)?)
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| text[prefix.len()..].trim_start())
}

/// `text` without a leading `word` followed by whitespace (case-insensitive).
fn strip_word<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    let rest = strip_prefix_ignore_case(text, word)?;
    let after_word = &text[word.len()..];
    after_word.starts_with(char::is_whitespace).then_some(rest)
}

/// Whether `text` is plausibly meant as a cron expression, so its errors are cron errors.
fn looks_like_cron(text: &str) -> bool {
    let fields: Vec<&str> = text.split_whitespace().collect();
    fields.len() >= 2
        && fields.first().is_some_and(|first| {
            first
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit() || c == '*' || c == '?')
        })
        && fields.iter().all(|field| {
            field
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "*/,-?#+".contains(c))
        })
}

#[cfg(test)]
mod tests;
