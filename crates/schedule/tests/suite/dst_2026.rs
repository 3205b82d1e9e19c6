//! The 2026 DST transitions of Europe/Berlin, America/New_York and Australia/Sydney,
//! fire by fire. Expected instants are written in UTC (with the local time in a
//! comment) so they do not depend on the code under test to convert them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};
use nanoclaw_schedule::{Schedule, Tz, parse_tz};

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn zone(name: &str) -> Tz {
    parse_tz(name).unwrap()
}

/// The first fires of `expr` strictly after `after` (UTC), compared with `expected` (UTC).
fn assert_fires(expr: &str, tz: &str, after: &str, expected: &[&str]) {
    let got: Vec<String> = Schedule::cron(expr)
        .unwrap()
        .upcoming(utc(after), zone(tz), expected.len())
        .iter()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .collect();
    assert_eq!(got, expected, "{expr:?} in {tz} after {after}");
}

fn next(expr: &str, tz: &str, after: &str) -> String {
    Schedule::cron(expr)
        .unwrap()
        .next_after(utc(after), zone(tz))
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

// ---- Europe/Berlin, spring forward 2026-03-29: 02:00 CET -> 03:00 CEST at 01:00Z ----

#[test]
fn berlin_spring_fixed_job_in_gap_fires_once_after_it() {
    assert_fires(
        "30 2 * * *",
        "Europe/Berlin",
        "2026-03-28T12:00:00Z",
        &[
            "2026-03-29T01:00:00Z", // 03:00 CEST, the first instant after the gap
            "2026-03-30T00:30:00Z", // 02:30 CEST
        ],
    );
    // Both times of a list in the gap collapse into the one fire after it.
    assert_fires(
        "0,30 2 * * *",
        "Europe/Berlin",
        "2026-03-28T12:00:00Z",
        &[
            "2026-03-29T01:00:00Z", // 03:00 CEST
            "2026-03-30T00:00:00Z", // 02:00 CEST
            "2026-03-30T00:30:00Z", // 02:30 CEST
        ],
    );
    // A job at 03:00 and one moved to 03:00 from the gap fire once at 03:00.
    assert_fires(
        "30 2,3 * * *",
        "Europe/Berlin",
        "2026-03-28T12:00:00Z",
        &[
            "2026-03-29T01:00:00Z", // 02:30 moved to 03:00 CEST
            "2026-03-29T01:30:00Z", // 03:30 CEST
            "2026-03-30T00:30:00Z", // 02:30 CEST
        ],
    );
}

#[test]
fn berlin_spring_job_just_before_the_gap_is_not_repeated_after_it() {
    assert_fires(
        "30 1 * * *",
        "Europe/Berlin",
        "2026-03-28T12:00:00Z",
        &[
            "2026-03-29T00:30:00Z", // 01:30 CET
            "2026-03-29T23:30:00Z", // 01:30 CEST
        ],
    );
}

#[test]
fn berlin_spring_periodic_jobs_skip_the_missing_hour() {
    assert_fires(
        "*/15 * * * *",
        "Europe/Berlin",
        "2026-03-29T00:20:00Z", // 01:20 CET
        &[
            "2026-03-29T00:30:00Z", // 01:30 CET
            "2026-03-29T00:45:00Z", // 01:45 CET
            "2026-03-29T01:00:00Z", // 03:00 CEST
            "2026-03-29T01:15:00Z", // 03:15 CEST
        ],
    );
    assert_fires(
        "0 * * * *",
        "Europe/Berlin",
        "2026-03-28T23:30:00Z", // 00:30 CET
        &[
            "2026-03-29T00:00:00Z", // 01:00 CET
            "2026-03-29T01:00:00Z", // 03:00 CEST
            "2026-03-29T02:00:00Z", // 04:00 CEST
        ],
    );
    // Every 15 minutes of the 02:00 hour: that hour does not exist.
    assert_fires(
        "*/15 2 * * *",
        "Europe/Berlin",
        "2026-03-28T12:00:00Z",
        &["2026-03-30T00:00:00Z"], // 02:00 CEST the next day
    );
}

// ---- Europe/Berlin, fall back 2026-10-25: 03:00 CEST -> 02:00 CET at 01:00Z ----

#[test]
fn berlin_fall_fixed_job_fires_once_at_first_occurrence() {
    assert_fires(
        "30 2 * * *",
        "Europe/Berlin",
        "2026-10-24T12:00:00Z",
        &[
            "2026-10-25T00:30:00Z", // 02:30 CEST (not again at 02:30 CET)
            "2026-10-26T01:30:00Z", // 02:30 CET
        ],
    );
    // A two-times-a-day job does not get a third run.
    assert_fires(
        "0 2,14 * * *",
        "Europe/Berlin",
        "2026-10-24T12:00:00Z",
        &[
            "2026-10-25T00:00:00Z", // 02:00 CEST
            "2026-10-25T13:00:00Z", // 14:00 CET
            "2026-10-26T01:00:00Z", // 02:00 CET
        ],
    );
}

#[test]
fn berlin_fall_restart_in_second_pass_does_not_rerun_fixed_job() {
    // 02:15 CET (second pass): 02:30 CEST already happened and 02:30 CET is the repeat.
    assert_eq!(
        next("30 2 * * *", "Europe/Berlin", "2026-10-25T01:15:00Z"),
        "2026-10-26T01:30:00Z"
    );
    // 02:45 CEST, after the run: the next is tomorrow, not 02:30 CET.
    assert_eq!(
        next("30 2 * * *", "Europe/Berlin", "2026-10-25T00:45:00Z"),
        "2026-10-26T01:30:00Z"
    );
}

#[test]
fn berlin_fall_periodic_jobs_fire_in_both_copies_of_the_hour() {
    assert_fires(
        "0 * * * *",
        "Europe/Berlin",
        "2026-10-24T22:30:00Z", // 00:30 CEST
        &[
            "2026-10-24T23:00:00Z", // 01:00 CEST
            "2026-10-25T00:00:00Z", // 02:00 CEST
            "2026-10-25T01:00:00Z", // 02:00 CET
            "2026-10-25T02:00:00Z", // 03:00 CET
        ],
    );
    // From late in the first copy, the next fire is at the start of the second copy,
    // whose wall-clock time is earlier.
    assert_fires(
        "*/30 * * * *",
        "Europe/Berlin",
        "2026-10-25T00:45:00Z", // 02:45 CEST
        &[
            "2026-10-25T01:00:00Z", // 02:00 CET
            "2026-10-25T01:30:00Z", // 02:30 CET
            "2026-10-25T02:00:00Z", // 03:00 CET
        ],
    );
}

#[test]
fn berlin_hourly_job_counts_follow_the_length_of_the_day() {
    let tz = zone("Europe/Berlin");
    let count_local_day = |from: &str, to: &str| {
        Schedule::cron("0 * * * *")
            .unwrap()
            .upcoming(utc(from), tz, 30)
            .into_iter()
            .filter(|t| *t < utc(to))
            .count()
    };
    // Local midnight to midnight, the instant before midnight as the start.
    assert_eq!(
        count_local_day("2026-03-28T22:59:59Z", "2026-03-29T22:00:00Z"),
        23
    );
    assert_eq!(
        count_local_day("2026-10-24T21:59:59Z", "2026-10-25T23:00:00Z"),
        25
    );
}

// ---- America/New_York, spring forward 2026-03-08: 02:00 EST -> 03:00 EDT at 07:00Z ----

#[test]
fn new_york_spring() {
    assert_fires(
        "30 2 * * *",
        "America/New_York",
        "2026-03-07T12:00:00Z",
        &[
            "2026-03-08T07:00:00Z", // 03:00 EDT
            "2026-03-09T06:30:00Z", // 02:30 EDT
        ],
    );
    assert_fires(
        "*/20 * * * *",
        "America/New_York",
        "2026-03-08T06:30:00Z", // 01:30 EST
        &[
            "2026-03-08T06:40:00Z", // 01:40 EST
            "2026-03-08T07:00:00Z", // 03:00 EDT
            "2026-03-08T07:20:00Z", // 03:20 EDT
        ],
    );
}

// ---- America/New_York, fall back 2026-11-01: 02:00 EDT -> 01:00 EST at 06:00Z ----

#[test]
fn new_york_fall() {
    assert_fires(
        "30 1 * * *",
        "America/New_York",
        "2026-10-31T12:00:00Z",
        &[
            "2026-11-01T05:30:00Z", // 01:30 EDT, once
            "2026-11-02T06:30:00Z", // 01:30 EST
        ],
    );
    assert_fires(
        "*/30 * * * *",
        "America/New_York",
        "2026-11-01T04:45:00Z", // 00:45 EDT
        &[
            "2026-11-01T05:00:00Z", // 01:00 EDT
            "2026-11-01T05:30:00Z", // 01:30 EDT
            "2026-11-01T06:00:00Z", // 01:00 EST
            "2026-11-01T06:30:00Z", // 01:30 EST
            "2026-11-01T07:00:00Z", // 02:00 EST
        ],
    );
}

// ---- Australia/Sydney, fall back 2026-04-05: 03:00 AEDT -> 02:00 AEST at 16:00Z on the 4th ----

#[test]
fn sydney_fall() {
    assert_fires(
        "30 2 * * *",
        "Australia/Sydney",
        "2026-04-04T00:00:00Z",
        &[
            "2026-04-04T15:30:00Z", // 02:30 AEDT on the 5th, once
            "2026-04-05T16:30:00Z", // 02:30 AEST on the 6th
        ],
    );
    assert_fires(
        "0 * * * *",
        "Australia/Sydney",
        "2026-04-04T14:30:00Z", // 01:30 AEDT
        &[
            "2026-04-04T15:00:00Z", // 02:00 AEDT
            "2026-04-04T16:00:00Z", // 02:00 AEST
            "2026-04-04T17:00:00Z", // 03:00 AEST
        ],
    );
}

// ---- Australia/Sydney, spring forward 2026-10-04: 02:00 AEST -> 03:00 AEDT at 16:00Z on the 3rd ----

#[test]
fn sydney_spring() {
    assert_fires(
        "30 2 * * *",
        "Australia/Sydney",
        "2026-10-03T00:00:00Z",
        &[
            "2026-10-03T16:00:00Z", // 03:00 AEDT on the 4th
            "2026-10-04T15:30:00Z", // 02:30 AEDT on the 5th
        ],
    );
    assert_fires(
        "0 * * * *",
        "Australia/Sydney",
        "2026-10-03T14:30:00Z", // 00:30 AEST
        &[
            "2026-10-03T15:00:00Z", // 01:00 AEST
            "2026-10-03T16:00:00Z", // 03:00 AEDT
            "2026-10-03T17:00:00Z", // 04:00 AEDT
        ],
    );
}

// ---- zones with unusual offsets ----

#[test]
fn chatham_gap_moves_fixed_job_to_three_forty_five() {
    // Pacific/Chatham jumps 02:45 (+12:45) -> 03:45 (+13:45) on 2026-09-27, at 14:00Z on the 26th.
    assert_fires(
        "0 3 * * *",
        "Pacific/Chatham",
        "2026-09-25T00:00:00Z",
        &[
            "2026-09-25T14:15:00Z", // 03:00 +12:45 on the 26th
            "2026-09-26T14:00:00Z", // 03:45 +13:45 on the 27th, first instant after the gap
            "2026-09-27T13:15:00Z", // 03:00 +13:45 on the 28th
        ],
    );
}

#[test]
fn santiago_midnight_gap() {
    // America/Santiago jumps 00:00 (-04) -> 01:00 (-03) on 2026-09-06, at 04:00Z.
    assert_fires(
        "30 0 * * *",
        "America/Santiago",
        "2026-09-05T00:00:00Z",
        &[
            "2026-09-05T04:30:00Z", // 00:30 -04 on the 5th
            "2026-09-06T04:00:00Z", // 01:00 -03 on the 6th
            "2026-09-07T03:30:00Z", // 00:30 -03 on the 7th
        ],
    );
}
