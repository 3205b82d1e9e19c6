//! Time zone names, the host's zone and how instants are shown to people.

use std::path::Path;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::ScheduleError;

/// Reads an IANA time zone name such as "Europe/Berlin" (case-insensitive).
pub fn parse_tz(name: &str) -> Result<Tz, ScheduleError> {
    let trimmed = name.trim();
    if let Ok(tz) = trimmed.parse::<Tz>() {
        return Ok(tz);
    }
    if let Some(tz) = chrono_tz::TZ_VARIANTS
        .iter()
        .find(|tz| tz.name().eq_ignore_ascii_case(trimmed))
    {
        return Ok(*tz);
    }
    // "Berlin" or "new york": suggest the zones whose city part matches.
    let city = trimmed.replace(' ', "_");
    let suggestions: Vec<&str> = chrono_tz::TZ_VARIANTS
        .iter()
        .map(|tz| tz.name())
        .filter(|full| {
            full.rsplit('/')
                .next()
                .is_some_and(|last| !city.is_empty() && last.eq_ignore_ascii_case(&city))
        })
        .take(3)
        .collect();
    let hint = if suggestions.is_empty() {
        "write an Area/City name from the tz database, e.g. \"Europe/Berlin\", \"America/New_York\" or \"UTC\"".to_string()
    } else {
        let quoted: Vec<String> = suggestions.iter().map(|s| format!("{s:?}")).collect();
        format!(
            "did you mean {}? Zones are named Area/City, e.g. \"Europe/Berlin\"",
            quoted.join(" or ")
        )
    };
    Err(ScheduleError::UnknownTimeZone {
        name: name.to_string(),
        hint,
    })
}

/// The host's time zone: `$TZ` if it names an IANA zone, else `/etc/timezone`, else
/// the target of the `/etc/localtime` symlink (`…/zoneinfo/Area/City`), else UTC.
pub fn host_tz() -> Tz {
    let env_tz = std::env::var("TZ").ok();
    let etc_timezone = std::fs::read_to_string("/etc/timezone").ok();
    let localtime_target = std::fs::read_link("/etc/localtime").ok();
    host_tz_from(
        env_tz.as_deref(),
        etc_timezone.as_deref(),
        localtime_target.as_deref(),
    )
}

/// [`host_tz`] with its three sources passed in, so the order can be tested.
pub fn host_tz_from(
    env_tz: Option<&str>,
    etc_timezone: Option<&str>,
    localtime_target: Option<&Path>,
) -> Tz {
    // POSIX lets TZ start with ':' and name a file, e.g. ":/usr/share/zoneinfo/Europe/Berlin".
    let from_env = env_tz.and_then(|value| {
        let value = value.trim().trim_start_matches(':');
        zone_from_name(value).or_else(|| zone_from_path(Path::new(value)))
    });
    let from_file = || etc_timezone.and_then(|text| zone_from_name(text.trim()));
    let from_link = || localtime_target.and_then(zone_from_path);
    from_env
        .or_else(from_file)
        .or_else(from_link)
        .unwrap_or(Tz::UTC)
}

fn zone_from_name(name: &str) -> Option<Tz> {
    if name.is_empty() {
        return None;
    }
    name.parse::<Tz>().ok()
}

/// The zone named by a path like "/usr/share/zoneinfo/Europe/Berlin".
fn zone_from_path(path: &Path) -> Option<Tz> {
    let text = path.to_str()?;
    let (_, name) = text.rsplit_once("zoneinfo/")?;
    // Some systems link into the "posix/" or "right/" copies of the database.
    let name = name
        .strip_prefix("posix/")
        .or_else(|| name.strip_prefix("right/"))
        .unwrap_or(name);
    zone_from_name(name)
}

/// An instant as people in `tz` read it: "2026-11-27 09:00:00 CET (+01:00)".
pub fn format_local(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S %Z (%:z)")
        .to_string()
}
