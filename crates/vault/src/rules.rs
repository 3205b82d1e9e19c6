//! Validation and matching of secret names, host patterns, path prefixes and inject templates.

use crate::error::VaultError;

/// The marker an inject template puts the secret at.
pub const SECRET_MARKER: &str = "{secret}";

/// Secret names: `^[a-z0-9][a-z0-9_.-]{0,63}$`.
pub fn validate_secret_name(name: &str) -> Result<(), VaultError> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = bytes
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
    if !first_ok || !rest_ok || name.len() > 64 {
        return Err(VaultError::Invalid(format!(
            "secret name {name:?} must be 1-64 characters of a-z, 0-9, '_', '.' or '-', starting \
             with a letter or digit"
        )));
    }
    Ok(())
}

/// Host patterns: a lower-case DNS name (`api.example.com`) or `*.` followed by one (any subdomain,
/// not the bare domain). No ports, no schemes, no paths. Returns the normalised (lower-case) pattern.
pub fn validate_host_pattern(pattern: &str) -> Result<String, VaultError> {
    let lower = pattern.trim().to_ascii_lowercase();
    let bad = |why: &str| {
        VaultError::Invalid(format!(
            "host {pattern:?} {why}; give a host name such as api.example.com or *.example.com"
        ))
    };
    let domain = lower.strip_prefix("*.").unwrap_or(&lower);
    if domain.is_empty() || domain.len() > 253 {
        return Err(bad("is empty or too long"));
    }
    for label in domain.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(bad(
                "is not a valid host name (letters, digits, '-' and dots; no scheme, port or path)",
            ));
        }
    }
    if lower.starts_with("*.") && !domain.contains('.') {
        return Err(bad("is a wildcard over a whole top-level domain"));
    }
    Ok(lower)
}

/// Normalise a request host for matching: lower case, no port, no trailing dot, no IPv6 brackets.
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let host = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if host.matches(':').count() == 1 {
        host.split(':').next().unwrap_or(host)
    } else {
        host
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `host` (normalised) matches `pattern` (validated). `*.example.com` matches
/// `a.example.com` and `a.b.example.com`, not `example.com`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(domain) => {
            host.len() > domain.len() + 1
                && host.ends_with(domain)
                && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
        }
        None => pattern == host,
    }
}

/// How specific a matching pattern is (exact beats wildcard; longer beats shorter).
pub fn host_specificity(pattern: &str) -> usize {
    if pattern.starts_with("*.") {
        pattern.len()
    } else {
        usize::MAX / 2 + pattern.len()
    }
}

/// Path prefixes start with `/` and hold no control characters, `?` or `#`. Empty = any path.
pub fn validate_path_prefix(prefix: &str) -> Result<(), VaultError> {
    if prefix.is_empty() {
        return Ok(());
    }
    if !prefix.starts_with('/')
        || prefix
            .chars()
            .any(|c| c.is_control() || c == '?' || c == '#' || c == ' ')
    {
        return Err(VaultError::Invalid(format!(
            "path {prefix:?} must start with '/' and hold no spaces, control characters, '?' or '#'"
        )));
    }
    Ok(())
}

/// Whether request `path` (which may carry a query) lies under `prefix`, segment-wise: `/v1` matches
/// `/v1`, `/v1/x` and `/v1?a=b` but not `/v10`.
pub fn path_matches(prefix: &str, path: &str) -> bool {
    if prefix.is_empty() || prefix == "/" {
        return true;
    }
    let path = path.split(['?', '#']).next().unwrap_or(path);
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// Where an inject template puts the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Template {
    /// Header `name`; its value is `value` with `SECRET_MARKER` replaced by the secret.
    Header { name: String, value: String },
    /// Query parameter `param` set to the secret.
    Query { param: String },
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl Template {
    /// Parse `header:NAME: VALUE-with-{secret}` or `query:PARAM`.
    pub fn parse(text: &str) -> Result<Template, VaultError> {
        let bad = |why: String| {
            VaultError::Invalid(format!(
                "inject template {text:?} {why}; use e.g. 'header:x-api-key: {{secret}}', \
                 'header:Authorization: Bearer {{secret}}' or 'query:key'"
            ))
        };
        if text.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
            return Err(bad("contains a line break or NUL".into()));
        }
        if let Some(rest) = text.strip_prefix("header:") {
            let Some((name, value)) = rest.split_once(':') else {
                return Err(bad(
                    "has no ':' between the header name and its value".into()
                ));
            };
            let name = name.trim();
            if name.is_empty() || !name.bytes().all(is_tchar) {
                return Err(bad(format!(
                    "has header name {name:?}, which is not an HTTP token (RFC 7230)"
                )));
            }
            let value = value.trim();
            if value.matches(SECRET_MARKER).count() != 1 {
                return Err(bad("must contain {secret} exactly once".into()));
            }
            if value.chars().any(|c| c.is_control() && c != '\t') {
                return Err(bad("has a control character in the header value".into()));
            }
            Ok(Template::Header {
                name: name.to_ascii_lowercase(),
                value: value.to_owned(),
            })
        } else if let Some(param) = text.strip_prefix("query:") {
            let param = param.trim();
            if param.is_empty()
                || !param
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'~'))
            {
                return Err(bad(format!(
                    "has query parameter {param:?}; use letters, digits, '_', '.', '-' or '~'"
                )));
            }
            if param.contains(SECRET_MARKER) {
                return Err(bad("puts {secret} in the parameter name".into()));
            }
            Ok(Template::Query {
                param: param.to_owned(),
            })
        } else {
            Err(bad("must start with 'header:' or 'query:'".into()))
        }
    }

    /// The canonical text stored in the database.
    pub fn to_text(&self) -> String {
        match self {
            Template::Header { name, value } => format!("header:{name}: {value}"),
            Template::Query { param } => format!("query:{param}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_pattern() {
        for good in ["anthropic", "a", "open-ai.key_2", &"x".repeat(64), "0day"] {
            validate_secret_name(good).unwrap();
        }
        for bad in [
            "",
            "Anthropic",
            "-x",
            ".x",
            "_x",
            "a b",
            "a/b",
            &"x".repeat(65),
            "ключ",
        ] {
            assert!(validate_secret_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_patterns_match_exactly_or_by_subdomain() {
        assert_eq!(
            validate_host_pattern("API.Example.com").unwrap(),
            "api.example.com"
        );
        let w = validate_host_pattern("*.example.com").unwrap();
        assert!(host_matches(&w, "a.example.com"));
        assert!(host_matches(&w, "a.b.example.com"));
        assert!(!host_matches(&w, "example.com"));
        assert!(!host_matches(&w, "badexample.com"));
        assert!(host_matches(
            "api.example.com",
            &normalize_host("API.example.com.:443")
        ));
        assert!(!host_matches("api.example.com", "api.example.com.evil.net"));
        for bad in [
            "",
            "*",
            "*.com",
            "a..b",
            "http://x.com",
            "x.com/path",
            "x.com:443",
            "*.*.x.com",
            "-a.com",
            "a b.com",
        ] {
            assert!(validate_host_pattern(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_match_by_segment() {
        assert!(path_matches("", "/anything"));
        assert!(path_matches("/v1", "/v1"));
        assert!(path_matches("/v1", "/v1/messages?x=1"));
        assert!(path_matches("/v1", "/v1?x=1"));
        assert!(!path_matches("/v1", "/v10"));
        assert!(path_matches("/v1/", "/v1/x"));
        assert!(validate_path_prefix("v1").is_err());
        assert!(validate_path_prefix("/v1?x").is_err());
    }

    #[test]
    fn templates_are_parsed_strictly() {
        assert_eq!(
            Template::parse("header:Authorization: Bearer {secret}").unwrap(),
            Template::Header {
                name: "authorization".into(),
                value: "Bearer {secret}".into()
            }
        );
        assert_eq!(
            Template::parse("query:key").unwrap(),
            Template::Query {
                param: "key".into()
            }
        );
        for bad in [
            "header:x-api-key: nothing",
            "header:x-api-key: {secret}{secret}",
            "header:x api key: {secret}",
            "header:x-api-key: {secret}\r\nEvil: 1",
            "header:: {secret}",
            "header x-api-key {secret}",
            "query:",
            "query:a&b",
            "cookie:x",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad:?}");
        }
    }
}
