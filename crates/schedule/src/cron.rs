//! Cron evaluation in a time zone, with the DST rules described in the crate docs.
//!
//! croner finds wall-clock matches; this module maps each match to real instants.
//! croner 4 has its own DST handling, but it only treats a job as fixed-time when
//! seconds, minute and hour are each a single value, so "0,30 2 * * *" is skipped
//! on a spring-forward day and "0 2,14 * * *" fires twice on a fall-back day. We
//! follow Vixie cron instead (fixed unless a time field has `*` or `/`), so croner
//! is only asked about wall-clock times (`NaiveDateTime`), never about zones.

use std::cell::RefCell;
use std::collections::VecDeque;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::ScheduleError;

const FIELD_HELP: &str =
    "expected 5 or 6 fields (minute hour day-of-month month day-of-week), e.g. \"0 9 * * 1-5\"";

const FIELD_ORDER_HELP: &str = "fields are minute hour day-of-month month day-of-week (seconds first if 6), e.g. \"0 9 * * 1-5\"";

/// Name and allowed values of each field of a 6-field expression; 5 fields drop the first.
const FIELDS: [(&str, &str); 6] = [
    ("second", "0-59"),
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31, L or W forms"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 (0 and 7 are Sunday) or SUN-SAT"),
];

/// A parsed cron expression and how it behaves across DST changes.
#[derive(Debug, Clone)]
pub(crate) struct CronSpec {
    cron: Cron,
    /// Fixed-time jobs (no `*` or `/` in second, minute or hour) fire once on
    /// fall-back days and are moved past a spring-forward gap; the others fire in
    /// both copies of a repeated hour and not at all in a skipped one.
    fixed_time: bool,
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        // Accept "0/15" (Quartz style, common in model output) as "*/15".
        .sloppy_ranges(true)
        .build()
}

/// The field list of an `@alias`, or None if the alias is unknown.
fn expand_alias(alias: &str) -> Option<&'static str> {
    Some(match alias.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => return None,
    })
}

/// Whitespace-normalised form of an expression, the form stored in a [`crate::Schedule`].
pub(crate) fn normalise(expr: &str) -> String {
    expr.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl CronSpec {
    /// Parses an expression without checking that it ever fires.
    pub(crate) fn parse(expr: &str) -> Result<CronSpec, ScheduleError> {
        let invalid = |reason: String| ScheduleError::InvalidCron {
            expr: expr.to_string(),
            reason,
        };
        let trimmed = expr.trim();
        if trimmed.is_empty() {
            return Err(invalid(format!("it is empty; {FIELD_HELP}")));
        }
        let expanded = if trimmed.starts_with('@') {
            expand_alias(trimmed).ok_or_else(|| {
                invalid(
                    "unknown alias; use @yearly, @monthly, @weekly, @daily or @hourly, or 5 fields like \"0 9 * * 1-5\""
                        .to_string(),
                )
            })?
        } else {
            trimmed
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 && fields.len() != 6 {
            return Err(invalid(format!("{FIELD_HELP}; found {}", fields.len())));
        }
        let field_specs = &FIELDS[6 - fields.len()..];
        let cron = parser().parse(&fields.join(" ")).map_err(|whole_error| {
            // Say which field is wrong: parse each one alone among wildcards.
            for (index, field) in fields.iter().enumerate() {
                let mut probe = vec!["*"; fields.len()];
                probe[index] = field;
                if let Err(field_error) = parser().parse(&probe.join(" ")) {
                    let (name, allowed) = field_specs[index];
                    return invalid(format!(
                        "its {name} field {field:?} is invalid ({}); {name} takes {allowed}; {FIELD_ORDER_HELP}",
                        croner_reason(&field_error)
                    ));
                }
            }
            invalid(format!("{}; {FIELD_ORDER_HELP}", croner_reason(&whole_error)))
        })?;
        let time_fields = &fields[..fields.len() - 3];
        let fixed_time = time_fields
            .iter()
            .all(|field| !field.contains('*') && !field.contains('/'));
        Ok(CronSpec { cron, fixed_time })
    }

    /// [`CronSpec::parse`] through a small per-thread cache: croner's parser is slow
    /// enough (hundreds of microseconds unoptimised) to dominate a loop of
    /// `next_after` calls on the same expression.
    pub(crate) fn parse_cached(expr: &str) -> Result<CronSpec, ScheduleError> {
        const CAPACITY: usize = 16;
        thread_local! {
            static RECENT: RefCell<VecDeque<(String, CronSpec)>> = const { RefCell::new(VecDeque::new()) };
        }
        RECENT.with(|recent| {
            let mut recent = recent.borrow_mut();
            if let Some((_, spec)) = recent.iter().find(|(cached, _)| cached == expr) {
                return Ok(spec.clone());
            }
            let spec = Self::parse(expr)?;
            if recent.len() == CAPACITY {
                recent.pop_back();
            }
            recent.push_front((expr.to_string(), spec.clone()));
            Ok(spec)
        })
    }

    /// Parses an expression and rejects one that matches no date at all.
    pub(crate) fn parse_checked(expr: &str) -> Result<CronSpec, ScheduleError> {
        let spec = Self::parse(expr)?;
        // Any year has all months and weekdays, but 29 February needs a leap
        // year: croner searches far enough ahead (to year 5000) to find one.
        let epoch = NaiveDateTime::default();
        if spec.cron.find_next_occurrence(&epoch, true).is_err() {
            return Err(ScheduleError::CronNeverFires {
                expr: expr.to_string(),
            });
        }
        Ok(spec)
    }

    /// The first fire time strictly after `after`, following the crate's DST rules.
    pub(crate) fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        // Every wall-clock time earlier than `start` maps to instants <= `after`.
        // The smallest nearby offset matters: just before a fall-back, the second
        // copy of the repeated hour has wall times earlier than `after`'s.
        let lowest_offset = [after, after.checked_add_signed(TimeDelta::hours(6))?]
            .iter()
            .map(|instant| offset_seconds(tz, *instant))
            .min()?;
        let start = after
            .naive_utc()
            .checked_add_signed(TimeDelta::seconds(i64::from(lowest_offset)))?
            .with_nanosecond(0)?;

        let mut cursor = start;
        let mut inclusive = true;
        let mut best: Option<DateTime<Utc>> = None;
        // Matches are walked in wall-clock order. The smallest instant a match can
        // map to never decreases along that order, so once it reaches the best
        // candidate nothing later can beat it. The cap only guards against bugs.
        for _ in 0..1_000_000 {
            let wall = self.cron.find_next_occurrence(&cursor, inclusive).ok()?;
            inclusive = false;
            cursor = wall;
            let mapped = self.instants_of(wall, tz)?;
            for candidate in mapped.fires.into_iter().flatten() {
                if candidate > after && best.is_none_or(|b| candidate < b) {
                    best = Some(candidate);
                }
            }
            if let Some(best) = best
                && mapped.lower_bound >= best
            {
                return Some(best);
            }
        }
        best
    }

    /// The real instants at which the matching wall-clock time `wall` fires.
    fn instants_of(&self, wall: NaiveDateTime, tz: Tz) -> Option<MappedWallTime> {
        Some(match tz.from_local_datetime(&wall) {
            LocalResult::Single(t) => {
                let t = t.with_timezone(&Utc);
                MappedWallTime {
                    fires: [Some(t), None],
                    lower_bound: t,
                }
            }
            LocalResult::Ambiguous(earlier, later) => {
                let earlier = earlier.with_timezone(&Utc);
                let later = (!self.fixed_time).then(|| later.with_timezone(&Utc));
                MappedWallTime {
                    fires: [Some(earlier), later],
                    lower_bound: earlier,
                }
            }
            LocalResult::None => {
                let after_gap = first_instant_after_gap(wall, tz)?;
                MappedWallTime {
                    fires: [self.fixed_time.then_some(after_gap), None],
                    lower_bound: after_gap,
                }
            }
        })
    }
}

struct MappedWallTime {
    fires: [Option<DateTime<Utc>>; 2],
    /// No instant of this or any later wall-clock time is earlier than this.
    lower_bound: DateTime<Utc>,
}

fn offset_seconds(tz: Tz, instant: DateTime<Utc>) -> i32 {
    tz.offset_from_utc_datetime(&instant.naive_utc())
        .fix()
        .local_minus_utc()
}

/// The instant at which the DST gap containing `wall` ends (its local time is the
/// first wall-clock time after the gap, e.g. 03:00 when clocks jump 02:00->03:00).
pub(crate) fn first_instant_after_gap(wall: NaiveDateTime, tz: Tz) -> Option<DateTime<Utc>> {
    // Gaps are whole minutes long in every zone in use and rarely longer than an
    // hour; a day of minutes is a generous bound.
    let mut minute = wall.with_second(0)?.with_nanosecond(0)?;
    let mut found = None;
    for _ in 0..24 * 60 {
        minute = minute.checked_add_signed(TimeDelta::minutes(1))?;
        if tz.from_local_datetime(&minute).earliest().is_some() {
            found = Some(minute);
            break;
        }
    }
    let mut first = found?;
    // The gap could end inside that minute (historical offsets had seconds).
    for _ in 0..59 {
        let earlier = first.checked_sub_signed(TimeDelta::seconds(1))?;
        if earlier <= wall || tz.from_local_datetime(&earlier).earliest().is_none() {
            break;
        }
        first = earlier;
    }
    tz.from_local_datetime(&first)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// The croner error in words, without its type-name prefixes.
fn croner_reason(error: &croner::errors::CronError) -> String {
    use croner::errors::CronError;
    let text = match error {
        CronError::InvalidPattern(message)
        | CronError::IllegalCharacters(message)
        | CronError::ComponentError(message) => message
            .trim_end_matches('.')
            .replace("CronPattern contains", "contains"),
        other => other.to_string().trim_end_matches('.').to_string(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}
