//! The host's log files: JSON lines in `$NANOCLAW_HOME/logs/`, one file per UTC day
//! (`nanoclaw.2026-12-07.jsonl`), rotated by tracing-appender, the newest `[logs] keep_days`
//! kept, each file 0600 in the 0700 logs directory. `nanoclaw logs` reads them back.
//!
//! Reading: [`files`] lists them oldest first, [`Entry`] is one parsed line (time, level,
//! message, fields, the spans it ran in), [`Filter`] keeps what `--group` and `--since`
//! ask for, and [`Follower`] reads what is appended, across the daily rotation.

use std::io::{BufRead, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, NaiveDate, Utc};
use tracing_appender::rolling::{RollingFileAppender, Rotation};

/// Log file names: `nanoclaw.<YYYY-MM-DD>.jsonl`.
pub const PREFIX: &str = "nanoclaw";
pub const SUFFIX: &str = "jsonl";

/// The file holding day `day`'s log.
pub fn file_name(day: NaiveDate) -> String {
    format!("{PREFIX}.{}.{SUFFIX}", day.format("%Y-%m-%d"))
}

/// The day a log file name stands for, when it is one of ours.
fn day_of(name: &str) -> Option<NaiveDate> {
    let middle = name
        .strip_prefix(PREFIX)?
        .strip_prefix('.')?
        .strip_suffix(SUFFIX)?
        .strip_suffix('.')?;
    NaiveDate::parse_from_str(middle, "%Y-%m-%d").ok()
}

/// The daily log files in `dir`, oldest first. A missing directory has none.
pub fn files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found: Vec<(NaiveDate, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let day = day_of(&e.file_name().to_string_lossy())?;
            Some((day, e.path()))
        })
        .collect();
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Removes all but the newest `keep` daily files in `dir`.
pub fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    let all = files(dir)?;
    for old in all.iter().take(all.len().saturating_sub(keep)) {
        std::fs::remove_file(old)?;
    }
    Ok(())
}

/// Creates `path` 0600 if missing, and makes it 0600 if it is not.
fn make_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

fn today_number() -> i64 {
    Utc::now().timestamp().div_euclid(86_400)
}

/// The host's log writer: tracing-appender's daily files, each made 0600 before it is
/// written to (tracing-appender creates files with the process's default mode), the newest
/// `keep` kept. Pruning is ours, by the date in the name, at start and when the day turns:
/// tracing-appender's own counts a file it is about to create, so a host restarted on the
/// same day would keep one day fewer.
pub struct DailyFiles {
    inner: RollingFileAppender,
    dir: PathBuf,
    keep: usize,
    /// The day (days since 1970, UTC) whose file was last made private.
    day: AtomicI64,
}

impl DailyFiles {
    /// Opens today's file in `dir` (made 0700), keeping the newest `keep` files.
    pub fn open(dir: &Path, keep: usize) -> std::io::Result<DailyFiles> {
        crate::config::create_private_dir(dir)?;
        let keep = keep.max(1);
        make_private(&dir.join(file_name(Utc::now().date_naive())))?;
        prune(dir, keep)?;
        let inner = RollingFileAppender::builder()
            .rotation(Rotation::DAILY)
            .filename_prefix(PREFIX)
            .filename_suffix(SUFFIX)
            .build(dir)
            .map_err(std::io::Error::other)?;
        Ok(DailyFiles {
            inner,
            dir: dir.to_owned(),
            keep,
            day: AtomicI64::new(today_number()),
        })
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for DailyFiles {
    type Writer = <RollingFileAppender as tracing_subscriber::fmt::MakeWriter<'a>>::Writer;

    fn make_writer(&'a self) -> Self::Writer {
        let today = today_number();
        // Once a day: the new day's file exists, private, before tracing-appender opens it.
        // Should it win the race at midnight, the next line makes its file private.
        if self.day.swap(today, Ordering::Relaxed) != today {
            let day = DateTime::from_timestamp(today * 86_400, 0)
                .unwrap_or_default()
                .date_naive();
            let _ = make_private(&self.dir.join(file_name(day)));
            let _ = prune(&self.dir, self.keep);
        }
        self.inner.make_writer()
    }
}

/// One log line, parsed.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The line as written (what `--json` prints).
    pub raw: String,
    pub value: serde_json::Value,
}

impl Entry {
    /// `None` for a line that is not a JSON object (a torn write, another program's text).
    pub fn parse(line: &str) -> Option<Entry> {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        value.is_object().then(|| Entry {
            raw: line.to_owned(),
            value,
        })
    }

    pub fn time(&self) -> Option<DateTime<Utc>> {
        let at = self.value.get("timestamp")?.as_str()?;
        DateTime::parse_from_rfc3339(at)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    pub fn level(&self) -> &str {
        self.value
            .get("level")
            .and_then(|l| l.as_str())
            .unwrap_or("")
    }

    /// The spans the event ran in, outermost first (each an object with `name` and fields).
    fn spans(&self) -> impl Iterator<Item = &serde_json::Map<String, serde_json::Value>> {
        self.value
            .get("spans")
            .and_then(|s| s.as_array())
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_object())
    }

    /// Whether the event, or a span it ran in, names group `folder` (its `group` or
    /// `folder` field: some lines name a group by its folder under either).
    pub fn has_group(&self, folder: &str) -> bool {
        let names = |v: Option<&serde_json::Value>| {
            v.is_some_and(|o| {
                ["group", "folder"]
                    .iter()
                    .any(|k| o.get(k).and_then(|g| g.as_str()) == Some(folder))
            })
        };
        names(self.value.get("fields"))
            || names(self.value.get("span"))
            || self
                .value
                .get("spans")
                .and_then(|s| s.as_array())
                .is_some_and(|spans| spans.iter().any(|s| names(Some(s))))
    }

    /// For people: `2026-12-07T10:00:00Z  INFO session{group=main}: target: message k=v`.
    /// Control characters are shown escaped: log text may come from a sandbox.
    pub fn human(&self, color: bool) -> String {
        let time = self
            .time()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_else(|| "-".into());
        let level = self.level();
        let painted = if color {
            let code = match level {
                "ERROR" => "31",
                "WARN" => "33",
                "INFO" => "32",
                "DEBUG" => "34",
                _ => "35",
            };
            format!("\x1b[{code}m{level:>5}\x1b[0m")
        } else {
            format!("{level:>5}")
        };
        let mut out = format!("{time} {painted} ");
        let spans: Vec<String> = self
            .spans()
            .map(|s| {
                let name = s.get("name").and_then(|n| n.as_str()).unwrap_or("span");
                let fields = key_values(s.iter().filter(|(k, _)| k.as_str() != "name"));
                if fields.is_empty() {
                    name.to_owned()
                } else {
                    format!("{name}{{{fields}}}")
                }
            })
            .collect();
        if !spans.is_empty() {
            out.push_str(&spans.join(":"));
            out.push_str(": ");
        }
        if let Some(target) = self.value.get("target").and_then(|t| t.as_str()) {
            out.push_str(target);
            out.push_str(": ");
        }
        let fields = self.value.get("fields").and_then(|f| f.as_object());
        if let Some(message) = fields
            .and_then(|f| f.get("message"))
            .and_then(|m| m.as_str())
        {
            out.push_str(message);
        }
        if let Some(fields) = fields {
            let rest = key_values(fields.iter().filter(|(k, _)| k.as_str() != "message"));
            if !rest.is_empty() {
                out.push(' ');
                out.push_str(&rest);
            }
        }
        escape_controls(&out, color)
    }
}

fn key_values<'a>(pairs: impl Iterator<Item = (&'a String, &'a serde_json::Value)>) -> String {
    pairs
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Control characters as `\u{..}`, except the colour codes this module added.
fn escape_controls(text: &str, keep_colour: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if keep_colour && c == '\x1b' && chars.peek() == Some(&'[') {
            // Only our own `ESC[<digits>m`: anything else from the text is escaped.
            let rest: String = chars.clone().take(4).collect();
            let ours = ["[0m", "[31m", "[32m", "[33m", "[34m", "[35m"]
                .iter()
                .any(|code| rest.starts_with(code));
            if ours {
                out.push(c);
                continue;
            }
        }
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Which entries `nanoclaw logs` shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub group: Option<String>,
    pub since: Option<DateTime<Utc>>,
}

impl Filter {
    pub fn keeps(&self, entry: &Entry) -> bool {
        if let Some(since) = self.since
            && entry.time().is_none_or(|t| t < since)
        {
            return false;
        }
        self.group.as_deref().is_none_or(|g| entry.has_group(g))
    }
}

/// `--since`: `90s`, `30m`, `1h`, `2d` ago, or a time — `2026-12-07T10:00` (local time),
/// `2026-12-07` (local midnight) or RFC 3339 with its offset.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "--since {text:?}: give a duration ago (90s, 30m, 1h, 2d) or a time \
             (2026-12-07T10:00, 2026-12-07, or RFC 3339 like 2026-12-07T10:00:00Z)"
        )
    };
    if let Some(unit) = t.chars().last().filter(|c| "smhd".contains(*c)) {
        let number = &t[..t.len() - 1];
        if let Ok(n) = number.parse::<i64>() {
            let secs = match unit {
                's' => n,
                'm' => n.saturating_mul(60),
                'h' => n.saturating_mul(3600),
                _ => n.saturating_mul(86_400),
            };
            if n < 0 {
                return Err(bad());
            }
            return chrono::Duration::try_seconds(secs)
                .and_then(|d| now.checked_sub_signed(d))
                .ok_or_else(bad);
        }
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(t) {
        return Ok(at.with_timezone(&Utc));
    }
    let local = |naive: chrono::NaiveDateTime| {
        use chrono::TimeZone;
        chrono::Local
            .from_local_datetime(&naive)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    };
    for format in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(t, format) {
            return local(naive).ok_or_else(bad);
        }
    }
    if let Ok(day) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return day.and_hms_opt(0, 0, 0).and_then(local).ok_or_else(bad);
    }
    Err(bad())
}

/// Every entry of the log files in `dir` that `filter` keeps, oldest first; only the last
/// `last` when given.
pub fn read_all(dir: &Path, filter: &Filter, last: Option<usize>) -> std::io::Result<Vec<Entry>> {
    let mut kept = std::collections::VecDeque::new();
    let all = files(dir)?;
    // Whole days before --since cannot hold a match (files are per UTC day).
    let first_day = filter.since.map(|t| t.date_naive());
    for path in all {
        if let (Some(first), Some(day)) = (
            first_day,
            path.file_name().and_then(|n| day_of(&n.to_string_lossy())),
        ) && day < first
        {
            continue;
        }
        let file = std::io::BufReader::new(std::fs::File::open(&path)?);
        for line in file.split(b'\n') {
            let line = line?;
            let Some(entry) = Entry::parse(&String::from_utf8_lossy(&line)) else {
                continue;
            };
            if filter.keeps(&entry) {
                kept.push_back(entry);
                if last.is_some_and(|n| kept.len() > n) {
                    kept.pop_front();
                }
            }
        }
    }
    Ok(kept.into())
}

/// Reads what is appended to the newest log file, moving on to the next day's file once
/// it appears (after the rest of the old one is read).
pub struct Follower {
    dir: PathBuf,
    current: Option<PathBuf>,
    offset: u64,
    /// A line read in part (its writer has not finished it yet).
    partial: Vec<u8>,
}

impl Follower {
    /// Starts at the end of the newest file: only what is written from now on.
    pub fn at_end(dir: &Path) -> std::io::Result<Follower> {
        let current = files(dir)?.pop();
        let offset = match &current {
            Some(p) => std::fs::metadata(p)?.len(),
            None => 0,
        };
        Ok(Follower {
            dir: dir.to_owned(),
            current,
            offset,
            partial: Vec::new(),
        })
    }

    /// The complete lines written since the last call (possibly none).
    pub fn poll(&mut self) -> std::io::Result<Vec<String>> {
        let mut lines = Vec::new();
        loop {
            if let Some(path) = self.current.clone() {
                self.read_from(&path, &mut lines)?;
            }
            // A newer file: the old one is finished (read to its end just now).
            let newest = files(&self.dir)?.pop();
            match (&newest, &self.current) {
                (Some(n), Some(c)) if n > c => {}
                (Some(_), None) => {}
                _ => return Ok(lines),
            }
            self.current = newest;
            self.offset = 0;
            self.partial.clear();
        }
    }

    fn read_from(&mut self, path: &Path, lines: &mut Vec<String>) -> std::io::Result<()> {
        let mut file = match std::fs::File::open(path) {
            Ok(f) => f,
            // Pruned under us: the next file takes over.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if file.metadata()?.len() < self.offset {
            // Truncated (or replaced): read it again from the start.
            self.offset = 0;
            self.partial.clear();
        }
        file.seek(std::io::SeekFrom::Start(self.offset))?;
        let mut fresh = Vec::new();
        file.read_to_end(&mut fresh)?;
        self.offset += fresh.len() as u64;
        self.partial.extend_from_slice(&fresh);
        if let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') {
            let complete: Vec<u8> = self.partial.drain(..=end).collect();
            lines.extend(
                complete
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(|l| String::from_utf8_lossy(l).into_owned()),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(at: &str, group: Option<&str>, message: &str) -> String {
        let spans = match group {
            Some(g) => format!(r#","spans":[{{"name":"session","group":"{g}"}}]"#),
            None => String::new(),
        };
        format!(
            r#"{{"timestamp":"{at}","level":"INFO","fields":{{"message":"{message}","n":3}},"target":"nanoclaw_host::host"{spans}}}"#
        )
    }

    #[test]
    fn since_takes_durations_local_times_and_rfc3339_and_names_the_forms_when_wrong() {
        let now = DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |s: &str| parse_since(s, now).unwrap().to_rfc3339();
        assert_eq!(at("1h"), "2026-12-07T11:00:00+00:00");
        assert_eq!(at("30m"), "2026-12-07T11:30:00+00:00");
        assert_eq!(at("2d"), "2026-12-05T12:00:00+00:00");
        assert_eq!(at("2026-12-07T10:00:00+01:00"), "2026-12-07T09:00:00+00:00");
        // Local time: compare with chrono's own reading of it.
        use chrono::TimeZone;
        let local = chrono::Local
            .with_ymd_and_hms(2026, 12, 7, 10, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_since("2026-12-07T10:00", now).unwrap(), local);
        for bad in ["yesterday", "-1h", "1w", ""] {
            let err = parse_since(bad, now).unwrap_err();
            assert!(err.contains("--since") && err.contains("30m"), "{err}");
        }
    }

    #[test]
    fn entries_filter_on_group_and_time_and_read_for_people_without_control_characters() {
        let e = Entry::parse(&line(
            "2026-12-07T10:00:00.5Z",
            Some("family"),
            "turn finished",
        ))
        .unwrap();
        assert!(e.has_group("family"));
        assert!(!e.has_group("main"));
        let by_folder = Entry::parse(
            r#"{"timestamp":"2026-12-07T10:00:00Z","level":"WARN","fields":{"message":"x","folder":"main"}}"#,
        )
        .unwrap();
        assert!(by_folder.has_group("main"));
        let f = Filter {
            group: Some("family".into()),
            since: Some(
                DateTime::parse_from_rfc3339("2026-12-07T10:00:01Z")
                    .unwrap()
                    .with_timezone(&Utc),
            ),
        };
        assert!(!f.keeps(&e), "before --since");
        assert!(
            Filter {
                group: Some("family".into()),
                since: None
            }
            .keeps(&e)
        );
        assert_eq!(
            e.human(false),
            "2026-12-07T10:00:00.500Z  INFO session{group=family}: nanoclaw_host::host: turn finished n=3"
        );
        let hostile = Entry::parse(&line("2026-12-07T10:00:00Z", None, "a\\u001b[2Jb")).unwrap();
        let shown = hostile.human(true);
        assert!(!shown.contains("\x1b[2J"), "{shown:?}");
        assert!(shown.contains("a\\u{1b}[2Jb"), "{shown:?}");
        assert!(shown.contains("\x1b[32m INFO\x1b[0m"), "{shown:?}");
        assert!(Entry::parse("not json").is_none());
    }

    #[test]
    fn files_are_listed_by_day_pruned_to_the_newest_and_followed_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for day in ["2026-12-01", "2026-12-03", "2026-12-02"] {
            std::fs::write(d.join(format!("nanoclaw.{day}.jsonl")), "").unwrap();
        }
        std::fs::write(d.join("nanoclaw.log"), "other").unwrap();
        let names = |d: &Path| {
            files(d)
                .unwrap()
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(d),
            [
                "nanoclaw.2026-12-01.jsonl",
                "nanoclaw.2026-12-02.jsonl",
                "nanoclaw.2026-12-03.jsonl"
            ]
        );
        prune(d, 2).unwrap();
        assert_eq!(
            names(d),
            ["nanoclaw.2026-12-02.jsonl", "nanoclaw.2026-12-03.jsonl"]
        );
        assert!(
            d.join("nanoclaw.log").exists(),
            "other files are left alone"
        );

        let append = |name: &str, text: &str| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(d.join(name))
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        append("nanoclaw.2026-12-03.jsonl", "{\"old\":1}\n");
        let mut follow = Follower::at_end(d).unwrap();
        assert!(follow.poll().unwrap().is_empty(), "starts at the end");
        append("nanoclaw.2026-12-03.jsonl", "{\"a\":1}\n{\"b\":");
        assert_eq!(follow.poll().unwrap(), ["{\"a\":1}"], "a torn line waits");
        // The torn line is finished, then the day rotates.
        append("nanoclaw.2026-12-03.jsonl", "2}\n");
        append("nanoclaw.2026-12-04.jsonl", "{\"c\":3}\n");
        assert_eq!(follow.poll().unwrap(), ["{\"b\":2}", "{\"c\":3}"]);
        append("nanoclaw.2026-12-04.jsonl", "{\"d\":4}\n");
        assert_eq!(follow.poll().unwrap(), ["{\"d\":4}"]);
    }

    #[test]
    fn the_writer_makes_private_files_and_keeps_only_the_newest() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        crate::config::create_private_dir(&logs).unwrap();
        for day in ["2020-01-01", "2020-01-02", "2020-01-03"] {
            std::fs::write(logs.join(format!("nanoclaw.{day}.jsonl")), "").unwrap();
        }
        let writer = DailyFiles::open(&logs, 2).unwrap();
        {
            use std::io::Write;
            use tracing_subscriber::fmt::MakeWriter;
            writer.make_writer().write_all(b"{\"x\":1}\n").unwrap();
        }
        let all = files(&logs).unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
        let today = logs.join(file_name(Utc::now().date_naive()));
        assert_eq!(all[1], today);
        assert_eq!(std::fs::read_to_string(&today).unwrap(), "{\"x\":1}\n");
        let mode = std::fs::metadata(&today).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = std::fs::metadata(&logs).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
