//! Which Debian packages a runtime's sandboxes have: what a skill's `packages` are checked
//! against before it is enabled. Read from dpkg's own database (`/var/lib/dpkg/status`): the
//! host's for the native runtime (its sandboxes run the host's `/usr`), the image's for Docker.

use std::collections::BTreeSet;

/// Where dpkg keeps what is installed.
pub const DPKG_STATUS: &str = "/var/lib/dpkg/status";

/// The packages a sandbox has: each installed package's name, and the virtual names its
/// `Provides:` lists (`awk` from `mawk`), without version constraints.
pub fn parse_dpkg_status(text: &str) -> BTreeSet<String> {
    let mut installed = BTreeSet::new();
    for stanza in text.split("\n\n") {
        let mut name = None;
        let mut ok = false;
        let mut provides = Vec::new();
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package:") {
                name = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("Status:") {
                // "install ok installed"; "deinstall ok config-files" is gone but for its
                // configuration, "install ok half-configured" is broken.
                ok = v.split_whitespace().last() == Some("installed");
            } else if let Some(v) = line.strip_prefix("Provides:") {
                provides.extend(
                    v.split(',')
                        .filter_map(|p| p.split_whitespace().next())
                        .map(str::to_owned),
                );
            }
        }
        if let (Some(name), true) = (name, ok) {
            installed.insert(name);
            installed.extend(provides);
        }
    }
    installed
}

/// What of `wanted` is not in `installed`. A name may carry dpkg's architecture qualifier
/// (`libc6:amd64`), which is ignored.
pub fn missing<'a>(installed: &BTreeSet<String>, wanted: &'a [String]) -> Vec<&'a str> {
    wanted
        .iter()
        .map(String::as_str)
        .filter(|w| {
            let bare = w.split(':').next().unwrap_or(w);
            !installed.contains(bare)
        })
        .collect()
}

/// Checks that `name` is a Debian package name, optionally pinned (`jq`, `python3=3.11.2-1`,
/// `libc6:amd64`), so it can go on an `apt-get install` line unquoted. The error names it.
pub fn check_package_name(name: &str) -> Result<(), String> {
    let (package, version) = match name.split_once('=') {
        Some((p, v)) => (p, Some(v)),
        None => (name, None),
    };
    let (package, arch) = match package.split_once(':') {
        Some((p, a)) => (p, Some(a)),
        None => (package, None),
    };
    let package_ok = package.len() >= 2
        && package.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && package
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    let arch_ok = arch.is_none_or(|a| {
        !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    });
    let version_ok = version.is_none_or(|v| {
        v.starts_with(|c: char| c.is_ascii_digit())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".+~:-".contains(c))
    });
    if package_ok && arch_ok && version_ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a Debian package name (lowercase letters, digits and + - ., at least \
             two characters; optionally :arch and =version)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: bash\nEssential: yes\nStatus: install ok installed\nVersion: 5.2.15-2+b7\n\n\
Package: mawk\nStatus: install ok installed\nProvides: awk, awk-virtual (= 1.0)\nVersion: 1.3.4\n\n\
Package: nano\nStatus: deinstall ok config-files\nVersion: 7.2-1\n\n\
Package: broken\nStatus: install ok half-configured\n";

    #[test]
    fn installed_packages_and_what_they_provide_count_removed_and_broken_ones_do_not() {
        let installed = parse_dpkg_status(STATUS);
        let names: Vec<&str> = installed.iter().map(String::as_str).collect();
        assert_eq!(names, ["awk", "awk-virtual", "bash", "mawk"]);
        let wanted = [
            "bash".to_owned(),
            "nano".into(),
            "awk".into(),
            "bash:amd64".into(),
            "broken".into(),
        ];
        assert_eq!(missing(&installed, &wanted), ["nano", "broken"]);
    }

    #[test]
    fn package_names_are_checked_before_they_reach_an_install_line() {
        for ok in [
            "jq",
            "python3",
            "g++",
            "libc6:amd64",
            "python3=3.11.2-1+b1",
            "0ad",
        ] {
            assert_eq!(check_package_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "", "a", "Jq", "-jq", "jq;rm", "jq>x", "jq bash", "$(id)", "jq=", "jq=abc", "jq:",
        ] {
            let err = check_package_name(bad).unwrap_err();
            assert!(err.contains("not a Debian package name"), "{bad}: {err}");
        }
    }

    #[test]
    fn this_machines_dpkg_database_parses_when_there_is_one() {
        // The test machine is Debian: bash is essential there.
        if let Ok(text) = std::fs::read_to_string(DPKG_STATUS) {
            assert!(parse_dpkg_status(&text).contains("bash"));
        }
    }
}
