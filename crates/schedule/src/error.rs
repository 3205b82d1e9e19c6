//! What can go wrong when reading a schedule or a time zone. Every message says
//! what was wrong and what to write instead, because users and models read them.

/// Why a schedule, duration, time or time zone was rejected.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ScheduleError {
    /// The text is not a valid 5- or 6-field cron expression.
    #[error("{expr:?} is not a cron expression: {reason}")]
    InvalidCron { expr: String, reason: String },

    /// The cron expression is valid but matches no date at all (e.g. 30 February).
    #[error(
        "cron expression {expr:?} never fires: no date matches its day-of-month, month and day-of-week fields (e.g. \"0 0 30 2 *\" asks for 30 February); check those fields"
    )]
    CronNeverFires { expr: String },

    /// A duration ("30m", "1h30m", "2 hours") could not be read.
    #[error(
        "{text:?} is not a duration: {reason}; write e.g. \"30m\", \"2 hours\", \"1h30m\" or \"1 day\""
    )]
    InvalidDuration { text: String, reason: String },

    /// An interval shorter than the one-minute minimum.
    #[error(
        "an interval of {secs} second(s) is too short: the minimum is 1 minute; write e.g. \"every 1m\" or \"every 5 minutes\""
    )]
    IntervalTooShort { secs: u64 },

    /// An interval with a sub-second part: intervals are whole seconds.
    #[error("an interval of {given} is not a whole number of seconds; round it to whole seconds")]
    IntervalNotWholeSeconds { given: String },

    /// A one-off time that is already over.
    #[error("{time} is in the past (now is {now}); give a later time, e.g. \"in 20 minutes\"")]
    InPast { time: String, now: String },

    /// A local wall-clock time that does not exist because the clocks jump over it (DST gap).
    #[error(
        "{local} does not exist in {tz}: that day the clocks jump from {gap_start} to {gap_end}; write {gap_end} or later, or give an explicit offset (RFC 3339)"
    )]
    NonexistentLocalTime {
        local: String,
        tz: String,
        gap_start: String,
        gap_end: String,
    },

    /// A date-time that could not be read.
    #[error("{text:?} is not a date-time: {reason}")]
    InvalidTime { text: String, reason: String },

    /// Text that matches none of the schedule forms.
    #[error(
        "could not read {text:?} as a schedule: write a cron expression (\"0 9 * * 1-5\"), an interval (\"every 30m\"), a delay (\"in 20 minutes\") or a date-time (\"2026-11-27 09:00\" in {tz}, or RFC 3339 \"2026-11-27T09:00:00+01:00\")"
    )]
    Unrecognized { text: String, tz: String },

    /// Not an IANA time zone name.
    #[error("{name:?} is not an IANA time zone name: {hint}")]
    UnknownTimeZone { name: String, hint: String },

    /// A computed time fell outside what can be represented.
    #[error("{what} is out of the supported range of dates")]
    OutOfRange { what: String },
}
