//! Reading durations and date-times as users and models write them.

use std::time::Duration;

use chrono::{DateTime, Days, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use crate::ScheduleError;
use crate::cron::first_instant_after_gap;

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Reads a duration: "30m", "2 hours", "90 seconds", "1d", "1h30m", "1 hour and 30 minutes",
/// "1.5h", "an hour", or a bare unit ("hour" is one hour). Units: s, m, h, d, w and their
/// long forms; "m" is minutes (months are not a fixed length).
pub fn parse_duration(text: &str) -> Result<Duration, ScheduleError> {
    let invalid = |reason: String| ScheduleError::InvalidDuration {
        text: text.trim().to_string(),
        reason,
    };
    let tokens = tokenize(text).map_err(invalid)?;
    if tokens.is_empty() {
        return Err(invalid("it is empty".to_string()));
    }
    let mut total_nanos: u128 = 0;
    let mut index = 0;
    while index < tokens.len() {
        if tokens[index] == Token::Word("and".to_string()) && index > 0 {
            index += 1;
            continue;
        }
        let (amount, unit_index) = match &tokens[index] {
            Token::Number(amount) => (amount.clone(), index + 1),
            Token::Word(word) if matches!(word.as_str(), "a" | "an" | "one") => {
                (Decimal::ONE, index + 1)
            }
            // A bare unit alone, as in "every hour".
            Token::Word(_) if tokens.len() == 1 => (Decimal::ONE, index),
            Token::Word(word) => {
                return Err(invalid(format!("expected a number before {word:?}")));
            }
        };
        let unit = match tokens.get(unit_index) {
            Some(Token::Word(unit)) => unit,
            Some(Token::Number(_)) | None => {
                return Err(invalid(
                    "a number needs a unit (s, m, h, d or w), e.g. \"30m\"".to_string(),
                ));
            }
        };
        let unit_seconds = unit_seconds(unit).ok_or_else(|| {
            invalid(format!(
                "unknown unit {unit:?}; use seconds (s), minutes (m), hours (h), days (d) or weeks (w)"
            ))
        })?;
        let part = amount
            .nanos_times(unit_seconds)
            .ok_or_else(|| invalid("it is too large".to_string()))?;
        total_nanos = total_nanos
            .checked_add(part)
            .ok_or_else(|| invalid("it is too large".to_string()))?;
        index = unit_index + 1;
    }
    let seconds = u64::try_from(total_nanos / NANOS_PER_SECOND)
        .map_err(|_| invalid("it is too large".to_string()))?;
    let subsec = u32::try_from(total_nanos % NANOS_PER_SECOND)
        .map_err(|_| invalid("it is too large".to_string()))?;
    Ok(Duration::new(seconds, subsec))
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Number(Decimal),
    Word(String),
}

/// A non-negative decimal number as written: `mantissa / 10^scale`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Decimal {
    mantissa: u128,
    scale: u32,
}

impl Decimal {
    const ONE: Decimal = Decimal {
        mantissa: 1,
        scale: 0,
    };

    /// This many units of `unit_seconds`, in nanoseconds (fractions below a nanosecond dropped).
    fn nanos_times(&self, unit_seconds: u64) -> Option<u128> {
        let scaled = self
            .mantissa
            .checked_mul(u128::from(unit_seconds))?
            .checked_mul(NANOS_PER_SECOND)?;
        Some(scaled / 10u128.checked_pow(self.scale)?)
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let lower = text.trim().to_ascii_lowercase();
    let mut tokens = Vec::new();
    let mut chars = lower.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() || c == ',' {
            chars.next();
        } else if c.is_ascii_digit() || c == '.' {
            let mut digits = String::new();
            while let Some(&d) = chars.peek() {
                if d.is_ascii_digit() || d == '.' {
                    digits.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(Token::Number(parse_decimal(&digits)?));
        } else if c.is_alphabetic() {
            let mut word = String::new();
            while let Some(&d) = chars.peek() {
                if d.is_alphabetic() {
                    word.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(Token::Word(word));
        } else {
            return Err(format!("unexpected character {c:?}"));
        }
    }
    Ok(tokens)
}

fn parse_decimal(digits: &str) -> Result<Decimal, String> {
    let bad = || format!("{digits:?} is not a number");
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') || fraction.len() > 9 {
        return Err(bad());
    }
    let mantissa = format!("{whole}{fraction}")
        .parse::<u128>()
        .map_err(|_| bad())?;
    let scale = u32::try_from(fraction.len()).map_err(|_| bad())?;
    Ok(Decimal { mantissa, scale })
}

fn unit_seconds(unit: &str) -> Option<u64> {
    Some(match unit {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "wk" | "wks" | "week" | "weeks" => 604_800,
        _ => return None,
    })
}

/// Local date-time layouts accepted, read in the task's zone.
const LOCAL_LAYOUTS: [&str; 4] = [
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
];

/// Layouts with an explicit offset but no seconds, which RFC 3339 requires.
const OFFSET_LAYOUTS: [&str; 2] = ["%Y-%m-%dT%H:%M%:z", "%Y-%m-%d %H:%M%:z"];

/// Reads an absolute date-time. `Ok(None)` means the text does not look like one at all.
pub(crate) fn parse_date_time(
    text: &str,
    now: DateTime<Utc>,
    tz: Tz,
) -> Result<Option<DateTime<Utc>>, ScheduleError> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(at.with_timezone(&Utc)));
    }
    for layout in OFFSET_LAYOUTS {
        if let Ok(at) = DateTime::parse_from_str(text, layout) {
            return Ok(Some(at.with_timezone(&Utc)));
        }
    }
    for layout in LOCAL_LAYOUTS {
        if let Ok(local) = NaiveDateTime::parse_from_str(text, layout) {
            return resolve_local(local, tz).map(Some);
        }
    }
    let example_date = now
        .with_timezone(&tz)
        .date_naive()
        .checked_add_days(Days::new(1))
        .unwrap_or_else(|| now.date_naive())
        .format("%Y-%m-%d")
        .to_string();
    let invalid = |reason: String| ScheduleError::InvalidTime {
        text: text.to_string(),
        reason,
    };
    if looks_like_date(text) {
        if chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok() {
            return Err(invalid(format!(
                "it has no time of day; write e.g. \"{text} 09:00\" (in {tz})"
            )));
        }
        return Err(invalid(format!(
            "write YYYY-MM-DD HH:MM in {tz}, e.g. \"{example_date} 09:00\", or RFC 3339 with an offset, e.g. \"{example_date}T09:00:00+01:00\"; check that the date and time exist"
        )));
    }
    if looks_like_time_of_day(text) {
        return Err(invalid(format!(
            "it has no date; write the date too, e.g. \"{example_date} {text}\" (in {tz})"
        )));
    }
    Ok(None)
}

/// Starts like "2026-11-27".
fn looks_like_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 8 && bytes[..4].iter().all(u8::is_ascii_digit) && bytes[4] == b'-'
}

/// Like "9:00", "09:00" or "09:00:30".
fn looks_like_time_of_day(text: &str) -> bool {
    let parts: Vec<&str> = text.split(':').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A local wall-clock time in `tz` as an instant: the earlier one when the time
/// happens twice, an error naming the gap when it does not happen at all.
pub(crate) fn resolve_local(local: NaiveDateTime, tz: Tz) -> Result<DateTime<Utc>, ScheduleError> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => Ok(at.with_timezone(&Utc)),
        LocalResult::None => {
            let gap_end =
                first_instant_after_gap(local, tz).ok_or_else(|| ScheduleError::OutOfRange {
                    what: local.to_string(),
                })?;
            let just_before = gap_end - TimeDelta::seconds(1);
            let old_offset = just_before.with_timezone(&tz).offset().fix();
            // The wall clock the old offset would have shown at the jump.
            let gap_start = gap_end.with_timezone(&old_offset);
            Err(ScheduleError::NonexistentLocalTime {
                local: short_wall_time(&local, "%Y-%m-%d %H:%M"),
                tz: tz.name().to_string(),
                gap_start: short_wall_time(&gap_start.naive_local(), "%H:%M"),
                gap_end: short_wall_time(&gap_end.with_timezone(&tz).naive_local(), "%H:%M"),
            })
        }
    }
}

/// Formats with `layout` (which ends in minutes), adding seconds only when there are some.
fn short_wall_time(wall: &NaiveDateTime, layout: &str) -> String {
    use chrono::Timelike;
    if wall.second() == 0 {
        wall.format(layout).to_string()
    } else {
        wall.format(&format!("{layout}:%S")).to_string()
    }
}

/// "30 minutes", "1 hour 30 minutes", "hour" (exactly one unit reads "every hour").
pub(crate) fn describe_seconds(secs: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    if let Some((_, name)) = UNITS.iter().find(|(size, _)| *size == secs) {
        return (*name).to_string();
    }
    let mut rest = secs;
    let mut parts = Vec::new();
    for (size, name) in UNITS {
        let count = rest / size;
        rest %= size;
        if count > 0 {
            let plural = if count == 1 { "" } else { "s" };
            parts.push(format!("{count} {name}{plural}"));
        }
    }
    if parts.is_empty() {
        "0 seconds".to_string()
    } else {
        parts.join(" ")
    }
}
