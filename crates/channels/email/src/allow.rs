//! Who may write to the assistant by mail: an explicit list of addresses and `@domains`.
//! Empty means nobody (deny by default): mail reaches the host only from listed senders,
//! so a spammer's mail never becomes a turn or an "unknown sender" prompt.

/// The `allow_senders` setting, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    addresses: Vec<String>,
    domains: Vec<String>,
}

impl Allowlist {
    /// Reads the setting; an entry that is neither `user@domain` nor `@domain` is an error
    /// naming it.
    pub fn new(entries: &[String]) -> Result<Allowlist, String> {
        let mut list = Allowlist::default();
        for entry in entries {
            let e = entry.trim().to_ascii_lowercase();
            match e.split_once('@') {
                Some(("", domain)) if valid_domain(domain) => list.domains.push(domain.to_owned()),
                Some((local, domain))
                    if !local.is_empty()
                        && valid_domain(domain)
                        && !local.chars().any(|c| c.is_whitespace() || c == '@') =>
                {
                    list.addresses.push(e)
                }
                _ => {
                    return Err(format!(
                        "allow_senders entry {entry:?} is neither an address (ada@example.org) nor a domain (@example.org)"
                    ));
                }
            }
        }
        Ok(list)
    }

    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty() && self.domains.is_empty()
    }

    /// Whether `address` (already lowercased) may write.
    pub fn allows(&self, address: &str) -> bool {
        let Some((_, domain)) = address.rsplit_once('@') else {
            return false;
        };
        self.addresses.iter().any(|a| a == address) || self.domains.iter().any(|d| d == domain)
    }
}

fn valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.contains('.')
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        || domain == "localhost"
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn list(entries: &[&str]) -> Allowlist {
        Allowlist::new(&entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn addresses_and_domains_match_exactly() {
        let l = list(&["Ada@Example.org", "@team.example"]);
        assert!(l.allows("ada@example.org"));
        assert!(l.allows("bob@team.example"));
        assert!(!l.allows("eve@example.org"));
        assert!(!l.allows("bob@evil-team.example"));
        assert!(!l.allows("bob@sub.team.example"));
        assert!(!l.allows("no-at-sign"));
    }

    #[test]
    fn empty_allows_nobody() {
        assert!(!list(&[]).allows("ada@example.org"));
    }

    #[test]
    fn bad_entries_are_named() {
        let err = Allowlist::new(&["not an address".to_owned()]).unwrap_err();
        assert!(err.contains("not an address"), "{err}");
        assert!(Allowlist::new(&["@".to_owned()]).is_err());
    }
}
