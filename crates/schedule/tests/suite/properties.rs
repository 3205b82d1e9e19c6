//! Property tests of the schedule arithmetic over zones with and without DST, including
//! southern-hemisphere DST (Sydney, Santiago), a half-hour offset (Kolkata) and a
//! 45-minute one (Chatham), at random instants from 2020 to 2035. Starts are often
//! placed just around a DST change, where the rules matter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, Offset, TimeDelta, TimeZone, Timelike, Utc, Weekday,
};
use nanoclaw_schedule::{Schedule, Tz, parse_tz};
use proptest::prelude::*;

const ZONES: [&str; 7] = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "America/Santiago",
    "UTC",
];

/// Crons covering fixed-time, periodic, lists, ranges, month ends and leap days.
const CRONS: [&str; 20] = [
    "* * * * *",
    "*/15 * * * *",
    "0 * * * *",
    "30 2 * * *",
    "0 2 * * *",
    "30 1 * * *",
    "0,30 1-3 * * *",
    "0 2,14 * * *",
    "*/20 2 * * *",
    "15 */2 * * *",
    "0 9 * * 1-5",
    "45 23 * * *",
    "30 0 * * *",
    "0 0 L * *",
    "0 0 31 * *",
    "0 12 29 2 *",
    "50 2 * * 0",
    "*/7 * * * *",
    "0-10 3 * * *",
    "0 3 * * *",
];

const START_2020: i64 = 1_577_836_800; // 2020-01-01T00:00:00Z
const END_2035: i64 = 2_082_758_400; // 2036-01-01T00:00:00Z

fn zone() -> impl Strategy<Value = Tz> {
    proptest::sample::select(&ZONES[..]).prop_map(|name| parse_tz(name).unwrap())
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (START_2020..END_2035, 0u32..1_000_000_000)
        .prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).unwrap())
}

fn offset_secs(tz: Tz, t: DateTime<Utc>) -> i32 {
    tz.offset_from_utc_datetime(&t.naive_utc())
        .fix()
        .local_minus_utc()
}

/// The next instant at or after `from` when `tz` changes its offset, within about a year.
fn next_transition(tz: Tz, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let hour = TimeDelta::hours(1);
    let mut t = from;
    for _ in 0..24 * 400 {
        if offset_secs(tz, t) != offset_secs(tz, t + hour) {
            // Bisect to the first second with the new offset.
            let (mut lo, mut hi) = (t, t + hour);
            while hi - lo > TimeDelta::seconds(1) {
                let mid = lo + (hi - lo) / 2;
                if offset_secs(tz, mid) == offset_secs(tz, t) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            return Some(hi);
        }
        t += hour;
    }
    None
}

/// A start instant: random, or (half the time) within a few hours around a DST change.
fn start() -> impl Strategy<Value = (Tz, DateTime<Utc>)> {
    (zone(), instant(), any::<bool>(), -240i64..=90).prop_map(|(tz, seed, near, shift_minutes)| {
        let start = if near {
            next_transition(tz, seed)
                .map(|t| {
                    t + TimeDelta::minutes(shift_minutes)
                        + TimeDelta::nanoseconds(i64::from(seed.timestamp_subsec_nanos()))
                })
                .unwrap_or(seed)
        } else {
            seed
        };
        (tz, start)
    })
}

/// Always near a DST change (where the zone has one).
fn start_near_transition() -> impl Strategy<Value = (Tz, DateTime<Utc>)> {
    (zone(), instant(), -240i64..=90).prop_map(|(tz, seed, shift_minutes)| {
        let start = next_transition(tz, seed)
            .map(|t| t + TimeDelta::minutes(shift_minutes))
            .unwrap_or(seed);
        (tz, start)
    })
}

fn cron(expr: &str) -> Schedule {
    Schedule::cron(expr).unwrap()
}

fn local(t: DateTime<Utc>, tz: Tz) -> chrono::NaiveDateTime {
    t.with_timezone(&tz).naive_local()
}

/// The documented rule: fixed-time unless second, minute or hour has `*` or `/`.
fn is_fixed_time(expr: &str) -> bool {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    fields[..fields.len() - 3]
        .iter()
        .all(|f| !f.contains('*') && !f.contains('/'))
}

/// Reference for a 5-field cron: scan real time minute by minute over (from, to] and apply
/// the DST rules directly, instead of walking the wall clock as the library does.
fn reference_fires(
    expr: &str,
    tz: Tz,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let matcher: croner::Cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .build()
        .parse(expr)
        .unwrap();
    let matches = |wall: chrono::NaiveDateTime| matcher.is_time_matching(&wall).unwrap();
    let fixed = is_fixed_time(expr);
    let minute = TimeDelta::minutes(1);
    let mut fires = Vec::new();
    let mut m =
        DateTime::from_timestamp(from.timestamp() - from.timestamp().rem_euclid(60), 0).unwrap();
    while m <= to {
        if m > from {
            let wall = local(m, tz);
            let mut fire = matches(wall)
                && match tz.from_local_datetime(&wall) {
                    LocalResult::Single(_) => true,
                    LocalResult::Ambiguous(earlier, _) => {
                        !fixed || earlier.with_timezone(&Utc) == m
                    }
                    LocalResult::None => unreachable!("a real instant has a wall time"),
                };
            let old_offset = offset_secs(tz, m - TimeDelta::seconds(1));
            let new_offset = offset_secs(tz, m);
            if !fire && fixed && new_offset > old_offset {
                // `m` ends a gap: fire if the pattern asked for any wall time inside it.
                let gap_minutes = i64::from(new_offset - old_offset) / 60;
                let gap_start = m.naive_utc() + TimeDelta::seconds(i64::from(old_offset));
                fire = (0..gap_minutes).any(|k| matches(gap_start + TimeDelta::minutes(k)));
            }
            if fire {
                fires.push(m);
            }
        }
        m += minute;
    }
    fires
}

fn fires_until(
    schedule: &Schedule,
    tz: Tz,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let mut fires = Vec::new();
    let mut cursor = from;
    while let Some(next) = schedule.next_after(cursor, tz) {
        if next > to {
            break;
        }
        fires.push(next);
        cursor = next;
    }
    fires
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn next_after_is_strictly_later_and_increasing(
        (tz, from) in start(),
        expr in proptest::sample::select(&CRONS[..]),
    ) {
        let schedule = cron(expr);
        let mut cursor = from;
        for _ in 0..200 {
            let next = schedule.next_after(cursor, tz).unwrap();
            prop_assert!(next > cursor, "{expr} in {tz}: {next} is not after {cursor}");
            cursor = next;
        }
    }

    #[test]
    fn cron_matches_real_time_reference_around_dst_changes(
        (tz, from) in start_near_transition(),
        expr in proptest::sample::select(&CRONS[..]),
    ) {
        let to = from + TimeDelta::hours(48);
        let expected = reference_fires(expr, tz, from, to);
        let got = fires_until(&cron(expr), tz, from, to);
        prop_assert_eq!(got, expected, "{} in {} from {}", expr, tz, from);
    }

    #[test]
    fn cron_is_restart_safe(
        (tz, from) in start(),
        expr in proptest::sample::select(&CRONS[..]),
        fractions in proptest::collection::vec(0.0f64..1.0, 30),
    ) {
        let schedule = cron(expr);
        let fires = schedule.upcoming(from, tz, 31);
        for (i, pair) in fires.windows(2).enumerate() {
            let (fire, next) = (pair[0], pair[1]);
            // Restarting anywhere in [fire, next) finds `next`: no skip, no repeat.
            let gap_nanos = (next - fire).num_nanoseconds().unwrap_or(i64::MAX);
            let p = fire + TimeDelta::nanoseconds((gap_nanos as f64 * fractions[i]) as i64);
            prop_assert_eq!(schedule.next_after(p, tz), Some(next), "{} in {} restarted at {}", expr, tz, p);
            // Restarting just before a fire still finds it.
            prop_assert_eq!(schedule.next_after(next - TimeDelta::nanoseconds(1), tz), Some(next));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn fixed_daily_cron_fires_once_per_local_day(
        (tz, from) in (zone(), instant()),
        hour in 0u32..24,
        minute in 0u32..60,
    ) {
        let expr = format!("{minute} {hour} * * *");
        let fires = cron(&expr).upcoming(from, tz, 366);
        prop_assert_eq!(fires.len(), 366);
        for (i, fire) in fires.iter().enumerate() {
            let date = local(*fire, tz).date();
            if i > 0 {
                let previous = local(fires[i - 1], tz).date();
                prop_assert_eq!(date, previous.succ_opt().unwrap(), "{} in {}: not one fire per day at {}", expr, tz, fire);
            }
            let wall = date.and_hms_opt(hour, minute, 0).unwrap();
            match tz.from_local_datetime(&wall) {
                LocalResult::Single(t) => prop_assert_eq!(*fire, t.with_timezone(&Utc)),
                LocalResult::Ambiguous(earlier, _) => prop_assert_eq!(*fire, earlier.with_timezone(&Utc)),
                LocalResult::None => {
                    // In a gap: the fire is the first instant after it, the same day.
                    let just_before = *fire - TimeDelta::seconds(1);
                    prop_assert!(offset_secs(tz, just_before) < offset_secs(tz, *fire), "{} in {}: {} is not a DST change", expr, tz, fire);
                    prop_assert!(local(just_before, tz) < wall && local(*fire, tz) > wall);
                }
            }
        }
    }

    #[test]
    fn step_minute_crons_are_evenly_spaced_in_real_time(
        (tz, from) in start_near_transition(),
        step in proptest::sample::select(&[1u32, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30][..]),
    ) {
        // Every zone here shifts by whole hours, so steps that divide an hour stay exact.
        let expr = format!("*/{step} * * * *");
        let fires = cron(&expr).upcoming(from, tz, 300);
        for pair in fires.windows(2) {
            prop_assert_eq!(pair[1] - pair[0], TimeDelta::minutes(i64::from(step)), "{} in {} at {}", expr, tz, pair[1]);
        }
        for fire in &fires {
            let wall = local(*fire, tz);
            prop_assert_eq!(wall.minute() % step, 0);
            prop_assert_eq!(wall.second(), 0);
        }
    }

    #[test]
    fn uneven_step_crons_never_exceed_the_step(
        (tz, from) in start_near_transition(),
        step in proptest::sample::select(&[7u32, 8, 9, 11, 13, 25, 45][..]),
    ) {
        let expr = format!("*/{step} * * * *");
        let fires = cron(&expr).upcoming(from, tz, 300);
        for pair in fires.windows(2) {
            let gap = pair[1] - pair[0];
            prop_assert!(gap >= TimeDelta::minutes(1) && gap <= TimeDelta::minutes(i64::from(step)), "{} in {}: {} between fires at {}", expr, tz, gap, pair[1]);
        }
        for fire in &fires {
            prop_assert_eq!(local(*fire, tz).minute() % step, 0);
        }
    }

    #[test]
    fn weekday_cron_fires_every_weekday_and_never_on_weekends((tz, from) in start()) {
        let fires = cron("0 9 * * 1-5").upcoming(from, tz, 100);
        for (i, fire) in fires.iter().enumerate() {
            let wall = local(*fire, tz);
            prop_assert!(!matches!(wall.weekday(), Weekday::Sat | Weekday::Sun), "fired on {wall} in {tz}");
            prop_assert_eq!((wall.hour(), wall.minute()), (9, 0));
            if i > 0 {
                let previous = local(fires[i - 1], tz).date();
                let expected_days = if previous.weekday() == Weekday::Fri { 3 } else { 1 };
                prop_assert_eq!((wall.date() - previous).num_days(), expected_days);
            }
        }
    }

    #[test]
    fn leap_day_cron_fires_only_on_february_29((tz, from) in start()) {
        let fires = cron("0 12 29 2 *").upcoming(from, tz, 4);
        prop_assert_eq!(fires.len(), 4);
        for (i, fire) in fires.iter().enumerate() {
            let wall = local(*fire, tz);
            prop_assert_eq!((wall.month(), wall.day(), wall.hour(), wall.minute()), (2, 29, 12, 0));
            prop_assert!(NaiveDate::from_ymd_opt(wall.year(), 2, 29).is_some());
            if i > 0 {
                prop_assert_eq!(wall.year() - local(fires[i - 1], tz).year(), 4);
            }
        }
        // The first one is the first 29 February (12:00 local) after the start.
        let start_year = local(from, tz).year();
        let first_year = local(fires[0], tz).year();
        prop_assert!(first_year - start_year <= 4);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn interval_fires_on_the_anchor_grid(
        every_secs in 60u64..=30 * 86_400,
        anchor in instant(),
        steps in -10.0f64..1000.0,
        tz in zone(),
        other_tz in zone(),
    ) {
        let schedule = Schedule::interval(std::time::Duration::from_secs(every_secs), anchor).unwrap();
        let after = anchor + TimeDelta::milliseconds((steps * every_secs as f64 * 1000.0) as i64);
        let next = schedule.next_after(after, tz).unwrap();
        prop_assert!(next > after);
        let since_anchor = next - anchor;
        prop_assert_eq!(since_anchor.subsec_nanos(), 0);
        let k = since_anchor.num_seconds() / every_secs as i64;
        prop_assert!(k >= 1);
        prop_assert_eq!(since_anchor.num_seconds() % every_secs as i64, 0);
        // The smallest such k: one step earlier is not after `after` (or is the anchor).
        prop_assert!(k == 1 || next - TimeDelta::seconds(every_secs as i64) <= after);
        // Intervals run in real time, whatever the zone.
        prop_assert_eq!(schedule.next_after(after, other_tz), Some(next));
    }

    #[test]
    fn interval_is_restart_safe(
        every_secs in 60u64..=2 * 86_400,
        anchor in instant(),
        restarts in proptest::collection::vec((0usize..20, 0.0f64..1.0), 10),
    ) {
        let schedule = Schedule::interval(std::time::Duration::from_secs(every_secs), anchor).unwrap();
        let every = TimeDelta::seconds(every_secs as i64);
        let fires = schedule.upcoming(anchor, Tz::UTC, 20);
        for (k, fire) in fires.iter().enumerate() {
            prop_assert_eq!(*fire, anchor + every * (k as i32 + 1));
        }
        for (index, fraction) in restarts {
            // Restart anywhere in [previous fire, next fire): the next fire is found.
            let previous = if index == 0 { anchor } else { fires[index - 1] };
            let p = previous + TimeDelta::milliseconds((every_secs as f64 * 1000.0 * fraction) as i64);
            prop_assert_eq!(schedule.next_after(p, Tz::UTC), Some(fires[index]));
        }
    }

    #[test]
    fn once_fires_only_while_ahead(at in instant(), after in instant(), tz in zone()) {
        let schedule = Schedule::Once { at };
        prop_assert_eq!(schedule.next_after(after, tz), (at > after).then_some(at));
    }
}
