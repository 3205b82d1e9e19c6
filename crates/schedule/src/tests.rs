#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use std::path::Path;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn berlin() -> Tz {
    parse_tz("Europe/Berlin").unwrap()
}

/// Thursday 2026-11-26 10:00 in Berlin.
fn now() -> DateTime<Utc> {
    utc("2026-11-26T09:00:00Z")
}

fn parse(text: &str) -> Result<Schedule, ScheduleError> {
    Schedule::parse(text, now(), berlin())
}

fn parse_err(text: &str) -> String {
    match parse(text) {
        Ok(schedule) => panic!("{text:?} parsed as {schedule:?}, expected an error"),
        Err(error) => error.to_string(),
    }
}

fn cron(expr: &str) -> Schedule {
    Schedule::Cron {
        expr: expr.to_string(),
    }
}

fn every(secs: u64) -> Schedule {
    Schedule::Interval {
        every_secs: secs,
        anchor: now(),
    }
}

// ---- cron parsing ----

#[test]
fn parses_five_and_six_field_cron() {
    assert_eq!(parse("0 9 * * 1-5").unwrap(), cron("0 9 * * 1-5"));
    assert_eq!(parse("  */15   * * * *  ").unwrap(), cron("*/15 * * * *"));
    assert_eq!(parse("30 0 9 * * *").unwrap(), cron("30 0 9 * * *"));
    // The seconds field is honoured: 09:00:30 local.
    assert_eq!(
        parse("30 0 9 * * *").unwrap().next_after(now(), berlin()),
        Some(utc("2026-11-27T08:00:30Z"))
    );
}

#[test]
fn cron_prefix_is_optional() {
    assert_eq!(parse("cron: 0 9 * * 1-5").unwrap(), cron("0 9 * * 1-5"));
    assert_eq!(parse("CRON:*/5 * * * *").unwrap(), cron("*/5 * * * *"));
}

#[test]
fn weekday_names_work() {
    let schedule = parse("0 9 * * MON-FRI").unwrap();
    // From Friday evening the next run is Monday 09:00 CET.
    assert_eq!(
        schedule.next_after(utc("2026-11-27T18:00:00Z"), berlin()),
        Some(utc("2026-11-30T08:00:00Z"))
    );
}

#[test]
fn aliases_parse_and_fire() {
    let tz = berlin();
    let after = now(); // Thursday 2026-11-26 10:00 CET
    let next = |text: &str| parse(text).unwrap().next_after(after, tz).unwrap();
    assert_eq!(next("@hourly"), utc("2026-11-26T10:00:00Z"));
    assert_eq!(next("@daily"), utc("2026-11-26T23:00:00Z"));
    assert_eq!(next("@weekly"), utc("2026-11-28T23:00:00Z")); // Sunday 00:00
    assert_eq!(next("@monthly"), utc("2026-11-30T23:00:00Z"));
    assert_eq!(next("@yearly"), utc("2026-12-31T23:00:00Z"));
    assert_eq!(next("@annually"), next("@yearly"));
}

#[test]
fn wrong_field_count_is_explained() {
    let message = parse_err("0 9 * *");
    assert!(
        message.starts_with(
            "\"0 9 * *\" is not a cron expression: expected 5 or 6 fields (minute hour day-of-month month day-of-week), e.g. \"0 9 * * 1-5\""
        ),
        "{message}"
    );
    let message = parse_err("0 0 9 * * * 2026");
    assert!(message.contains("expected 5 or 6 fields"), "{message}");
    assert!(message.contains("found 7"), "{message}");
}

#[test]
fn bad_field_is_named() {
    let message = parse_err("0 25 * * *");
    assert!(message.contains("hour field \"25\""), "{message}");
    assert!(message.contains("e.g. \"0 9 * * 1-5\""), "{message}");
    let message = parse_err("61 * * * *");
    assert!(message.contains("minute field \"61\""), "{message}");
    let message = parse_err("0 9 * * 8");
    assert!(message.contains("day-of-week field \"8\""), "{message}");
    let message = parse_err("0 9 * * FUNDAY");
    assert!(message.contains("day-of-week field"), "{message}");
    let message = parse_err("5 0 25 * * *");
    assert!(message.contains("hour field \"25\""), "{message}");
}

#[test]
fn cron_that_never_fires_is_rejected() {
    let message = parse_err("0 0 30 2 *");
    assert!(message.contains("never fires"), "{message}");
    assert!(Schedule::cron("0 0 31 4,6,9,11 *").is_err());
    // 29 February does happen.
    assert!(Schedule::cron("0 12 29 2 *").is_ok());
}

#[test]
fn unknown_alias_lists_the_known_ones() {
    let message = parse_err("@fortnightly");
    assert!(message.contains("@daily"), "{message}");
}

#[test]
fn typed_cron_constructor_normalises_whitespace() {
    assert_eq!(
        Schedule::cron(" 0  9 * * 1-5 ").unwrap(),
        cron("0 9 * * 1-5")
    );
    assert!(
        Schedule::cron("")
            .unwrap_err()
            .to_string()
            .contains("empty")
    );
}

// ---- intervals ----

#[test]
fn parses_intervals() {
    assert_eq!(parse("every 30m").unwrap(), every(1800));
    assert_eq!(parse("every 2 hours").unwrap(), every(7200));
    assert_eq!(parse("every 90 seconds").unwrap(), every(90));
    assert_eq!(parse("every 1d").unwrap(), every(86_400));
    assert_eq!(parse("every 1h30m").unwrap(), every(5400));
    assert_eq!(parse("Every 1 hour and 30 minutes").unwrap(), every(5400));
    assert_eq!(parse("every 1.5h").unwrap(), every(5400));
    assert_eq!(parse("every hour").unwrap(), every(3600));
    assert_eq!(parse("every 2w").unwrap(), every(14 * 86_400));
}

#[test]
fn interval_below_a_minute_is_rejected() {
    let message = parse_err("every 30 seconds");
    assert!(message.contains("30 second(s) is too short"), "{message}");
    assert!(message.contains("minimum is 1 minute"), "{message}");
    assert!(Schedule::interval(Duration::from_secs(59), now()).is_err());
    assert_eq!(
        Schedule::interval(Duration::from_secs(60), now()).unwrap(),
        every(60)
    );
    let message = Schedule::interval(Duration::from_millis(90_500), now())
        .unwrap_err()
        .to_string();
    assert!(message.contains("whole number of seconds"), "{message}");
}

#[test]
fn bad_durations_are_explained() {
    let message = parse_err("every 30 parsecs");
    assert!(message.contains("unknown unit \"parsecs\""), "{message}");
    let message = parse_err("every 30");
    assert!(message.contains("needs a unit"), "{message}");
    let message = parse_err("every");
    assert!(message.contains("could not read"), "{message}");
    let message = parse_err("every fortnight");
    assert!(message.contains("unknown unit"), "{message}");
    let message = parse_err("every day at 9am");
    assert!(
        message.contains("use cron, e.g. \"0 9 * * *\""),
        "{message}"
    );
}

#[test]
fn interval_fires_from_its_anchor() {
    let schedule = every(1800);
    assert_eq!(
        schedule.next_after(now(), berlin()),
        Some(utc("2026-11-26T09:30:00Z"))
    );
    // Before the anchor: the first fire is anchor + every.
    assert_eq!(
        schedule.next_after(utc("2020-01-01T00:00:00Z"), berlin()),
        Some(utc("2026-11-26T09:30:00Z"))
    );
    // Late (the previous run took 20 minutes): still on the anchor's grid.
    assert_eq!(
        schedule.next_after(utc("2026-11-26T10:20:00Z"), berlin()),
        Some(utc("2026-11-26T10:30:00Z"))
    );
    assert_eq!(
        schedule.next_after(utc("2026-11-26T10:30:00Z"), berlin()),
        Some(utc("2026-11-26T11:00:00Z"))
    );
}

// ---- one-off times ----

#[test]
fn parses_relative_once() {
    let once = |secs: i64| Schedule::Once {
        at: now() + TimeDelta::seconds(secs),
    };
    assert_eq!(parse("in 20 minutes").unwrap(), once(1200));
    assert_eq!(parse("in 2h").unwrap(), once(7200));
    assert_eq!(parse("in 1 day").unwrap(), once(86_400));
    assert_eq!(parse("in an hour").unwrap(), once(3600));
    assert!(parse_err("in 0 minutes").contains("longer than zero"));
}

#[test]
fn parses_absolute_once() {
    let at_8z = Schedule::Once {
        at: utc("2026-11-27T08:00:00Z"),
    };
    assert_eq!(parse("2026-11-27T09:00:00+01:00").unwrap(), at_8z);
    assert_eq!(parse("2026-11-27T08:00:00Z").unwrap(), at_8z);
    assert_eq!(parse("2026-11-27T09:00+01:00").unwrap(), at_8z);
    // Local times are in the task's zone (CET in November).
    assert_eq!(parse("2026-11-27 09:00").unwrap(), at_8z);
    assert_eq!(parse("2026-11-27T09:00").unwrap(), at_8z);
    assert_eq!(parse("2026-11-27T09:00:00").unwrap(), at_8z);
    assert_eq!(parse("at 2026-11-27 09:00").unwrap(), at_8z);
    assert_eq!(parse("once at 2026-11-27 09:00").unwrap(), at_8z);
    // Summer time: CEST is +02:00.
    assert_eq!(
        parse("2027-07-01 09:00").unwrap(),
        Schedule::Once {
            at: utc("2027-07-01T07:00:00Z")
        }
    );
    // The same text in another zone is another instant.
    assert_eq!(
        Schedule::parse(
            "2026-11-27 09:00",
            now(),
            parse_tz("America/New_York").unwrap()
        )
        .unwrap(),
        Schedule::Once {
            at: utc("2026-11-27T14:00:00Z")
        }
    );
}

#[test]
fn past_once_is_an_error_naming_the_time() {
    let message = parse_err("2026-11-26 09:00");
    assert!(
        message.contains("2026-11-26 09:00:00 CET (+01:00) is in the past"),
        "{message}"
    );
    assert!(
        message.contains("now is 2026-11-26 10:00:00 CET"),
        "{message}"
    );
    let message = Schedule::once(utc("2026-11-26T08:00:00Z"), now())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("2026-11-26 08:00:00 UTC (+00:00) is in the past"),
        "{message}"
    );
    assert!(Schedule::once(utc("2026-11-26T10:00:00Z"), now()).is_ok());
}

#[test]
fn local_time_in_dst_gap_is_an_error_naming_it() {
    let message = parse_err("2027-03-28 02:30");
    assert!(
        message.contains("2027-03-28 02:30 does not exist in Europe/Berlin"),
        "{message}"
    );
    assert!(message.contains("jump from 02:00 to 03:00"), "{message}");
    let message = Schedule::parse(
        "2027-03-14 02:15",
        now(),
        parse_tz("America/New_York").unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("does not exist in America/New_York"),
        "{message}"
    );
}

#[test]
fn local_time_in_dst_overlap_takes_the_earlier_instant() {
    // 2027-10-31 02:30 happens at 00:30Z (CEST) and 01:30Z (CET).
    assert_eq!(
        parse("2027-10-31 02:30").unwrap(),
        Schedule::Once {
            at: utc("2027-10-31T00:30:00Z")
        }
    );
}

#[test]
fn incomplete_or_impossible_date_times_are_explained() {
    let message = parse_err("09:00");
    assert!(message.contains("has no date"), "{message}");
    assert!(message.contains("2026-11-27 09:00"), "{message}");
    let message = parse_err("2026-11-27");
    assert!(message.contains("has no time of day"), "{message}");
    let message = parse_err("2026-02-30 09:00");
    assert!(message.contains("is not a date-time"), "{message}");
    let message = parse_err("at noon");
    assert!(message.contains("\"noon\" is not a date-time"), "{message}");
}

#[test]
fn unrecognised_text_lists_the_forms() {
    let message = parse_err("tomorrow morning please");
    assert!(message.contains("could not read"), "{message}");
    assert!(message.contains("\"0 9 * * 1-5\""), "{message}");
    assert!(message.contains("\"every 30m\""), "{message}");
    assert!(message.contains("\"in 20 minutes\""), "{message}");
    assert!(message.contains("Europe/Berlin"), "{message}");
}

#[test]
fn once_fires_only_if_still_ahead() {
    let at = utc("2026-11-27T08:00:00Z");
    let schedule = Schedule::Once { at };
    assert_eq!(schedule.next_after(now(), berlin()), Some(at));
    assert_eq!(schedule.next_after(at, berlin()), None);
    assert_eq!(schedule.upcoming(now(), berlin(), 3), vec![at]);
}

// ---- month ends and leap days ----

#[test]
fn day_31_fires_only_in_long_months() {
    let fires = cron("0 0 31 * *").upcoming(utc("2026-01-01T00:00:00Z"), Tz::UTC, 7);
    let months: Vec<u32> = fires.iter().map(chrono::Datelike::month).collect();
    assert_eq!(months, vec![1, 3, 5, 7, 8, 10, 12]);
}

#[test]
fn last_day_of_month() {
    let fires = cron("0 0 L * *").upcoming(utc("2027-12-15T00:00:00Z"), Tz::UTC, 4);
    let dates: Vec<String> = fires
        .iter()
        .map(|t| t.format("%m-%d").to_string())
        .collect();
    assert_eq!(dates, vec!["12-31", "01-31", "02-29", "03-31"]);
}

#[test]
fn leap_day_fires_in_leap_years_only() {
    let schedule = cron("0 12 29 2 *");
    let tz = berlin();
    let first = schedule.next_after(utc("2025-03-01T00:00:00Z"), tz);
    assert_eq!(first, Some(utc("2028-02-29T11:00:00Z")));
    assert_eq!(
        schedule.next_after(utc("2028-02-29T11:00:00Z"), tz),
        Some(utc("2032-02-29T11:00:00Z"))
    );
}

// ---- time zones ----

#[test]
fn parse_tz_accepts_iana_names() {
    assert_eq!(parse_tz("Europe/Berlin").unwrap(), Tz::Europe__Berlin);
    assert_eq!(parse_tz(" europe/berlin ").unwrap(), Tz::Europe__Berlin);
    assert_eq!(parse_tz("UTC").unwrap(), Tz::UTC);
}

#[test]
fn parse_tz_suggests_a_real_name() {
    let message = parse_tz("Berlin").unwrap_err().to_string();
    assert!(
        message.starts_with("\"Berlin\" is not an IANA time zone name"),
        "{message}"
    );
    assert!(
        message.contains("did you mean \"Europe/Berlin\""),
        "{message}"
    );
    let message = parse_tz("new york").unwrap_err().to_string();
    assert!(message.contains("\"America/New_York\""), "{message}");
    let message = parse_tz("Mars/Olympus_Mons").unwrap_err().to_string();
    assert!(message.contains("e.g. \"Europe/Berlin\""), "{message}");
}

#[test]
fn host_tz_prefers_env_then_etc_timezone_then_localtime_link() {
    let link = Path::new("/usr/share/zoneinfo/Asia/Kolkata");
    assert_eq!(
        host_tz_from(
            Some("Europe/Berlin"),
            Some("America/New_York\n"),
            Some(link)
        ),
        Tz::Europe__Berlin
    );
    assert_eq!(
        host_tz_from(Some(":Europe/Berlin"), None, None),
        Tz::Europe__Berlin
    );
    assert_eq!(
        host_tz_from(Some(":/usr/share/zoneinfo/Europe/Paris"), None, None),
        Tz::Europe__Paris
    );
    // A POSIX rule string is not an IANA name: fall through.
    assert_eq!(
        host_tz_from(
            Some("CET-1CEST,M3.5.0,M10.5.0/3"),
            Some("America/New_York\n"),
            Some(link)
        ),
        Tz::America__New_York
    );
    assert_eq!(
        host_tz_from(None, Some("\n"), Some(link)),
        Tz::Asia__Kolkata
    );
    assert_eq!(
        host_tz_from(
            None,
            None,
            Some(Path::new("../usr/share/zoneinfo/posix/Australia/Sydney"))
        ),
        Tz::Australia__Sydney
    );
    assert_eq!(
        host_tz_from(None, Some("garbage"), Some(Path::new("/etc/nowhere"))),
        Tz::UTC
    );
    assert_eq!(host_tz_from(None, None, None), Tz::UTC);
}

#[test]
fn format_local_shows_abbreviation_and_offset() {
    assert_eq!(
        format_local(utc("2026-11-27T08:00:00Z"), berlin()),
        "2026-11-27 09:00:00 CET (+01:00)"
    );
    assert_eq!(
        format_local(utc("2026-07-01T07:00:00Z"), berlin()),
        "2026-07-01 09:00:00 CEST (+02:00)"
    );
    assert_eq!(
        format_local(
            utc("2026-07-01T07:00:00Z"),
            parse_tz("Asia/Kolkata").unwrap()
        ),
        "2026-07-01 12:30:00 IST (+05:30)"
    );
}

// ---- describe and serde ----

#[test]
fn describe_reads_well() {
    let tz = berlin();
    assert_eq!(
        cron("0 9 * * 1-5").describe(tz),
        "cron 0 9 * * 1-5 (Europe/Berlin)"
    );
    assert_eq!(every(1800).describe(tz), "every 30 minutes");
    assert_eq!(every(3600).describe(tz), "every hour");
    assert_eq!(every(5400).describe(tz), "every 1 hour 30 minutes");
    assert_eq!(every(90).describe(tz), "every 1 minute 30 seconds");
    assert_eq!(every(2 * 86_400).describe(tz), "every 2 days");
    let once = Schedule::Once {
        at: utc("2026-11-27T08:00:00Z"),
    };
    assert_eq!(once.describe(tz), "once at 2026-11-27 09:00 CET");
    let once = Schedule::Once {
        at: utc("2026-11-27T08:00:05Z"),
    };
    assert_eq!(once.describe(tz), "once at 2026-11-27 09:00:05 CET");
}

#[test]
fn interval_descriptions_parse_back() {
    for secs in [60, 90, 1800, 3600, 5400, 86_400, 90_061, 7 * 86_400] {
        let described = every(secs).describe(Tz::UTC);
        assert_eq!(
            parse(&described).unwrap(),
            every(secs),
            "{described:?} did not parse back"
        );
    }
}

#[test]
fn serde_form_is_tagged_by_kind() {
    let json = serde_json::to_value(cron("0 9 * * 1-5")).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"kind": "cron", "expr": "0 9 * * 1-5"})
    );
    let json = serde_json::to_value(every(1800)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"kind": "interval", "every_secs": 1800, "anchor": "2026-11-26T09:00:00Z"})
    );
    let once = Schedule::Once {
        at: utc("2026-11-27T08:00:00Z"),
    };
    let json = serde_json::to_value(&once).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"kind": "once", "at": "2026-11-27T08:00:00Z"})
    );
    let back: Schedule = serde_json::from_value(json).unwrap();
    assert_eq!(back, once);
}

#[test]
fn validate_catches_bad_deserialised_schedules() {
    let bad: Schedule =
        serde_json::from_value(serde_json::json!({"kind": "cron", "expr": "0 9 * *"})).unwrap();
    assert!(bad.validate().is_err());
    assert_eq!(bad.next_after(now(), berlin()), None);
    let zero: Schedule = serde_json::from_value(
        serde_json::json!({"kind": "interval", "every_secs": 0, "anchor": "2026-11-26T09:00:00Z"}),
    )
    .unwrap();
    assert!(zero.validate().is_err());
    assert_eq!(zero.next_after(now(), berlin()), None);
    assert!(cron("0 9 * * 1-5").validate().is_ok());
}

#[test]
fn quartz_style_start_step_is_accepted() {
    // Models often write "0/15" for "*/15".
    let schedule = parse("0/15 * * * *").unwrap();
    assert_eq!(
        schedule.next_after(utc("2026-11-26T09:01:00Z"), berlin()),
        Some(utc("2026-11-26T09:15:00Z"))
    );
}

#[test]
fn parse_duration_is_exact() {
    assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
    assert_eq!(
        parse_duration("1 week").unwrap(),
        Duration::from_secs(604_800)
    );
    assert_eq!(parse_duration("0.5s").unwrap(), Duration::from_millis(500));
    assert_eq!(
        parse_duration("2 days, 3 hours").unwrap(),
        Duration::from_secs(183_600)
    );
    assert!(parse_duration("1..5h").is_err());
    assert!(
        parse_duration("-5m")
            .unwrap_err()
            .to_string()
            .contains("unexpected character")
    );
}
