//! A group's egress policy: which hosts, methods and ports it may reach, and the address
//! ranges nobody may reach whatever the lists say.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::Method;

/// Ports a group may reach when it set none.
pub const DEFAULT_PORTS: &[u16] = &[80, 443];

/// A domain pattern: `api.example.com` (that host only) or `*.example.com` (any subdomain of
/// example.com at any depth, not example.com itself). An IP literal is an exact pattern too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainPattern {
    Exact(String),
    /// Stored with its leading dot: `.example.com`.
    Subdomains(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("egress pattern {pattern:?} is not valid: {why}")]
pub struct PatternError {
    pub pattern: String,
    pub why: String,
}

impl DomainPattern {
    /// Parses what an owner typed: case and a trailing dot are ignored; `*` alone, schemes,
    /// paths, ports and wildcards anywhere but a leading `*.` are refused.
    pub fn parse(input: &str) -> Result<DomainPattern, PatternError> {
        let err = |why: &str| PatternError {
            pattern: input.to_owned(),
            why: why.to_owned(),
        };
        let s = input.trim().to_ascii_lowercase();
        let s = s.strip_suffix('.').unwrap_or(&s);
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s == "*" || s == "*." {
            return Err(err(
                "`*` would allow every host; list the domains the group needs",
            ));
        }
        if s.contains("://") || s.contains('/') {
            return Err(err("give a host name, without scheme or path"));
        }
        if let Some(ip) = parse_ip_host(s) {
            return Ok(DomainPattern::Exact(ip.to_string()));
        }
        if s.contains(':') {
            return Err(err(
                "give a host name without a port (ports are set with `nanoclaw group egress ports`)",
            ));
        }
        let (wild, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if name.contains('*') {
            return Err(err("a wildcard is only allowed as a leading `*.`"));
        }
        if !is_host_name(name) {
            return Err(err(
                "a host name is dot-separated labels of letters, digits, '-' and '_' (1-63 each, 253 in all)",
            ));
        }
        if wild {
            if !name.contains('.') {
                return Err(err(
                    "`*.` needs at least two labels after it (e.g. `*.example.com`)",
                ));
            }
            Ok(DomainPattern::Subdomains(format!(".{name}")))
        } else {
            Ok(DomainPattern::Exact(name.to_owned()))
        }
    }

    /// Whether `host` (normalized: lower case, no trailing dot, IPv6 without brackets)
    /// matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            DomainPattern::Exact(h) => h == host,
            DomainPattern::Subdomains(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainPattern::Exact(h) => f.write_str(h),
            DomainPattern::Subdomains(s) => write!(f, "*{s}"),
        }
    }
}

fn is_host_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn parse_ip_host(s: &str) -> Option<IpAddr> {
    let inner = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    inner.parse().ok()
}

/// A request's target host, normalized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetHost {
    Name(String),
    Ip(IpAddr),
}

impl TargetHost {
    /// Normalizes a host from a request (URI authority or CONNECT target, port removed):
    /// lower case, trailing dot dropped, IPv6 brackets removed. Names that are not plain
    /// ASCII host names are refused (clients send IDNs as punycode).
    pub fn parse(host: &str) -> Option<TargetHost> {
        let lower = host.to_ascii_lowercase();
        let s = lower.strip_suffix('.').unwrap_or(&lower);
        if let Some(ip) = parse_ip_host(s) {
            return Some(TargetHost::Ip(ip));
        }
        // Shorthand forms like `127.1` or `0x7f.0.0.1` are IPv4 to some resolvers: refuse
        // all-numeric/hex last labels rather than guess how the system resolver reads them.
        let last = s.rsplit('.').next().unwrap_or("");
        let numeric_like = !last.is_empty()
            && (last.bytes().all(|b| b.is_ascii_digit())
                || (last.starts_with("0x") && last[2..].bytes().all(|b| b.is_ascii_hexdigit())));
        if numeric_like || !is_host_name(s) {
            return None;
        }
        Some(TargetHost::Name(s.to_owned()))
    }

    /// The form patterns match against.
    pub fn as_match_str(&self) -> String {
        match self {
            TargetHost::Name(n) => n.clone(),
            TargetHost::Ip(ip) => ip.to_string(),
        }
    }
}

impl fmt::Display for TargetHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetHost::Name(n) => f.write_str(n),
            TargetHost::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Why an address is never connected to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockedRange {
    Loopback,
    Private,
    LinkLocal,
    CloudMetadata,
    Cgnat,
    UniqueLocal,
    Multicast,
    Unspecified,
    /// Broadcast, documentation, benchmarking, "this network", IETF-reserved and deprecated
    /// IPv6 forms (IPv4-compatible, site-local).
    Reserved,
}

impl fmt::Display for BlockedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlockedRange::Loopback => "loopback",
            BlockedRange::Private => "private-network",
            BlockedRange::LinkLocal => "link-local",
            BlockedRange::CloudMetadata => "cloud-metadata",
            BlockedRange::Cgnat => "carrier-grade-NAT",
            BlockedRange::UniqueLocal => "unique-local",
            BlockedRange::Multicast => "multicast",
            BlockedRange::Unspecified => "unspecified",
            BlockedRange::Reserved => "reserved",
        })
    }
}

/// The range `ip` is in, if it is one nobody may reach. IPv6 forms that embed an IPv4
/// address (mapped, NAT64, 6to4) are judged by the IPv4 address.
pub fn blocked_range(ip: IpAddr) -> Option<BlockedRange> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn blocked_v4(ip: Ipv4Addr) -> Option<BlockedRange> {
    let [a, b, c, _] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) {
        return Some(BlockedRange::CloudMetadata);
    }
    Some(match (a, b) {
        _ if ip.is_unspecified() => BlockedRange::Unspecified,
        (0, _) => BlockedRange::Reserved,
        (127, _) => BlockedRange::Loopback,
        (10, _) | (192, 168) => BlockedRange::Private,
        (172, 16..=31) => BlockedRange::Private,
        (169, 254) => BlockedRange::LinkLocal,
        (100, 64..=127) => BlockedRange::Cgnat,
        (224..=239, _) => BlockedRange::Multicast,
        (240..=255, _) => BlockedRange::Reserved,
        (192, 0) if c == 0 || c == 2 => BlockedRange::Reserved,
        (198, 18..=19) => BlockedRange::Reserved,
        (198, 51) if c == 100 => BlockedRange::Reserved,
        (203, 0) if c == 113 => BlockedRange::Reserved,
        _ => return None,
    })
}

fn blocked_v6(ip: Ipv6Addr) -> Option<BlockedRange> {
    let seg = ip.segments();
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some(BlockedRange::CloudMetadata);
    }
    if ip.is_unspecified() {
        return Some(BlockedRange::Unspecified);
    }
    if ip.is_loopback() {
        return Some(BlockedRange::Loopback);
    }
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    // ::ffff:a.b.c.d (mapped) and 64:ff9b::a.b.c.d (NAT64): the IPv4 address is reached.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return blocked_v4(v4);
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return blocked_v4(embedded(seg[6], seg[7]));
    }
    // 2002:AABB:CCDD::/48 (6to4) embeds a.b.c.d in the next 32 bits.
    if seg[0] == 0x2002 {
        return blocked_v4(embedded(seg[1], seg[2]));
    }
    // ::a.b.c.d (IPv4-compatible, deprecated): never legitimate.
    if seg[..6] == [0; 6] {
        return Some(BlockedRange::Reserved);
    }
    Some(match seg[0] {
        s if s & 0xffc0 == 0xfe80 => BlockedRange::LinkLocal,
        s if s & 0xffc0 == 0xfec0 => BlockedRange::Reserved,
        s if s & 0xfe00 == 0xfc00 => BlockedRange::UniqueLocal,
        s if s & 0xff00 == 0xff00 => BlockedRange::Multicast,
        0x2001 if seg[1] == 0xdb8 => BlockedRange::Reserved,
        0x0100 if seg[1..4] == [0, 0, 0] => BlockedRange::Reserved,
        _ => return None,
    })
}

/// The address ranges that are refused whatever the domain lists say. The production
/// default refuses all of [`blocked_range`]; the only exception is a test switch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddressGuard {
    loopback_allowed_for_tests: bool,
}

impl AddressGuard {
    /// The guard the host uses: every blocked range refused.
    pub fn production() -> AddressGuard {
        AddressGuard::default()
    }

    /// Lets plain loopback (127.0.0.0/8 and ::1, not their mapped forms) through so tests
    /// and benchmarks can run upstream servers on 127.0.0.1. The host NEVER sets this: a
    /// sandbox reaching the host's loopback is exactly what the guard exists to stop.
    pub fn allow_loopback_for_tests() -> AddressGuard {
        AddressGuard {
            loopback_allowed_for_tests: true,
        }
    }

    pub fn loopback_allowed_for_tests(&self) -> bool {
        self.loopback_allowed_for_tests
    }

    /// `Err` with the range when `ip` must not be connected to.
    pub fn check(&self, ip: IpAddr) -> Result<(), BlockedRange> {
        match blocked_range(ip) {
            None => Ok(()),
            Some(BlockedRange::Loopback) if self.loopback_allowed_for_tests && ip.is_loopback() => {
                Ok(())
            }
            Some(range) => Err(range),
        }
    }
}

/// Which rule refused a request; the proxy turns it into a 403 (or 400/502) whose body is
/// [`Refusal::message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefusalRule {
    /// The host matches no allowed pattern.
    NotAllowed,
    /// The host matches this denied pattern.
    Denied(String),
    Method,
    Port,
    /// The host is, or resolves to, an address in a blocked range.
    BlockedAddress {
        ip: IpAddr,
        range: BlockedRange,
    },
    /// The request could not be understood (no host, bad authority, https in absolute form).
    BadRequest,
    /// The name did not resolve, or no address could be connected to.
    Unreachable,
}

impl RefusalRule {
    /// A short tag for audit records.
    pub fn tag(&self) -> &'static str {
        match self {
            RefusalRule::NotAllowed => "not_allowed",
            RefusalRule::Denied(_) => "denied_pattern",
            RefusalRule::Method => "method",
            RefusalRule::Port => "port",
            RefusalRule::BlockedAddress { .. } => "blocked_address",
            RefusalRule::BadRequest => "bad_request",
            RefusalRule::Unreachable => "unreachable",
        }
    }

    pub fn status(&self) -> http::StatusCode {
        match self {
            RefusalRule::BadRequest => http::StatusCode::BAD_REQUEST,
            RefusalRule::Unreachable => http::StatusCode::BAD_GATEWAY,
            _ => http::StatusCode::FORBIDDEN,
        }
    }
}

/// A refused request: the rule and a message for the agent (and its user) that names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub rule: RefusalRule,
    pub message: String,
}

impl Refusal {
    pub fn new(rule: RefusalRule, message: impl Into<String>) -> Refusal {
        Refusal {
            rule,
            message: format!("nanoclaw egress: {}", message.into()),
        }
    }
}

/// One group's egress policy.
#[derive(Clone, Debug)]
pub struct EgressPolicy {
    /// The group's folder, named in refusal messages.
    pub group: String,
    pub allow: Vec<DomainPattern>,
    /// Wins over `allow`.
    pub deny: Vec<DomainPattern>,
    /// `None`: every method.
    pub methods: Option<Vec<Method>>,
    pub ports: Vec<u16>,
    pub guard: AddressGuard,
    /// Hosts the group's enabled skills declared, each with the methods its skill allows. A
    /// host reached only through these may be used only with their methods; `deny` still wins.
    pub skill_allow: Vec<SkillRule>,
}

/// A host an enabled skill may reach, and the methods it declared.
#[derive(Clone, Debug)]
pub struct SkillRule {
    pub skill: String,
    pub pattern: DomainPattern,
    pub methods: Vec<Method>,
}

impl EgressPolicy {
    /// Nothing allowed: the policy of a group with no rules.
    pub fn deny_all(group: impl Into<String>) -> EgressPolicy {
        EgressPolicy {
            group: group.into(),
            allow: Vec::new(),
            deny: Vec::new(),
            methods: None,
            ports: DEFAULT_PORTS.to_vec(),
            guard: AddressGuard::production(),
            skill_allow: Vec::new(),
        }
    }

    /// The methods `host` (its match string) may be used with when only enabled skills allow
    /// it: the union of the matching skills' methods. `None` when the group's own rules allow
    /// the host, or no skill names it.
    pub fn skill_methods(&self, host: &str) -> Option<Vec<Method>> {
        if self.allow.iter().any(|p| p.matches(host)) {
            return None;
        }
        let mut methods: Vec<Method> = Vec::new();
        let mut any = false;
        for rule in self.skill_allow.iter().filter(|r| r.pattern.matches(host)) {
            any = true;
            for m in &rule.methods {
                if !methods.contains(m) {
                    methods.push(m.clone());
                }
            }
        }
        any.then_some(methods)
    }

    /// The skills whose rules allow `host`, in rule order.
    pub fn skills_allowing(&self, host: &str) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for rule in self.skill_allow.iter().filter(|r| r.pattern.matches(host)) {
            if !names.contains(&rule.skill.as_str()) {
                names.push(&rule.skill);
            }
        }
        names
    }

    /// Builder-style: allow `patterns` (for tests and embedding).
    pub fn allowing(mut self, patterns: &[&str]) -> Result<EgressPolicy, PatternError> {
        for p in patterns {
            self.allow.push(DomainPattern::parse(p)?);
        }
        Ok(self)
    }

    /// Builder-style: deny `patterns`.
    pub fn denying(mut self, patterns: &[&str]) -> Result<EgressPolicy, PatternError> {
        for p in patterns {
            self.deny.push(DomainPattern::parse(p)?);
        }
        Ok(self)
    }

    /// The checks that need no DNS: address literal ranges, deny, allow, method, port — in
    /// that order, so the message names the most fundamental rule that refused.
    /// `method` is `CONNECT` for tunnels.
    pub fn check_target(
        &self,
        method: &Method,
        host: &TargetHost,
        port: u16,
    ) -> Result<(), Refusal> {
        let g = &self.group;
        if let TargetHost::Ip(ip) = host
            && let Err(range) = self.guard.check(*ip)
        {
            return Err(Refusal::new(
                RefusalRule::BlockedAddress { ip: *ip, range },
                format!("{ip} is a {range} address; these are always refused"),
            ));
        }
        let name = host.as_match_str();
        if let Some(p) = self.deny.iter().find(|p| p.matches(&name)) {
            return Err(Refusal::new(
                RefusalRule::Denied(p.to_string()),
                format!(
                    "{host} matches {p} in group {g}'s denied domains (nanoclaw group egress rm {g} {p})"
                ),
            ));
        }
        let skill_methods = self.skill_methods(&name);
        if skill_methods.is_none() && !self.allow.iter().any(|p| p.matches(&name)) {
            return Err(Refusal::new(
                RefusalRule::NotAllowed,
                format!(
                    "{host} is not in group {g}'s allowed domains (nanoclaw group egress allow {g} {host})"
                ),
            ));
        }
        if let Some(methods) = &self.methods {
            let list = methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if method == Method::CONNECT {
                // Inside a tunnel the method cannot be seen until TLS inspection exists.
                return Err(Refusal::new(
                    RefusalRule::Method,
                    format!(
                        "group {g} allows only {list} requests, and an HTTPS tunnel to {host} \
                         cannot be checked for its method (nanoclaw group egress methods {g} all)"
                    ),
                ));
            }
            if !methods.contains(method) {
                return Err(Refusal::new(
                    RefusalRule::Method,
                    format!(
                        "group {g} allows only {list} requests; {method} {host} was refused \
                         (nanoclaw group egress methods {g} all)"
                    ),
                ));
            }
        }
        // A skill's methods can be seen on plain HTTP and inside an intercepted tunnel (the
        // proxy intercepts skill-only hosts when it can, and checks each request there).
        if let Some(allowed) = &skill_methods
            && method != Method::CONNECT
            && !allowed.contains(method)
        {
            let list = allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let skills = self.skills_allowing(&name).join(", ");
            return Err(Refusal::new(
                RefusalRule::Method,
                format!(
                    "{host} is allowed for group {g} only by skill {skills}, which declares                      {list}; {method} was refused (change the skill's skill.toml egress methods)"
                ),
            ));
        }
        if !self.ports.contains(&port) {
            let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
            let list = ports.join(", ");
            let suggested = ports.join(",");
            return Err(Refusal::new(
                RefusalRule::Port,
                format!(
                    "port {port} of {host} is not in group {g}'s allowed ports ({list}) \
                     (nanoclaw group egress ports {g} {suggested},{port})"
                ),
            ));
        }
        Ok(())
    }

    /// Checks every address `host` resolved to; one blocked address refuses the whole name
    /// (a name that points anywhere private is not to be trusted). Returns the addresses to
    /// connect to — exactly these, never a second lookup.
    pub fn check_resolved(&self, host: &TargetHost, addrs: &[SocketAddr]) -> Result<(), Refusal> {
        if addrs.is_empty() {
            return Err(Refusal::new(
                RefusalRule::Unreachable,
                format!("{host} did not resolve to any address"),
            ));
        }
        for addr in addrs {
            let ip = addr.ip();
            if let Err(range) = self.guard.check(ip) {
                return Err(Refusal::new(
                    RefusalRule::BlockedAddress { ip, range },
                    format!("{host} resolves to {ip}, a {range} address; these are always refused"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn patterns_parse_normalize_and_match() {
        let exact = DomainPattern::parse("API.GitHub.com.").unwrap();
        assert_eq!(exact.to_string(), "api.github.com");
        assert!(exact.matches("api.github.com"));
        assert!(!exact.matches("x.api.github.com"));
        assert!(!exact.matches("github.com"));

        let wild = DomainPattern::parse("*.example.com").unwrap();
        assert!(wild.matches("a.example.com"));
        assert!(wild.matches("a.b.example.com"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("badexample.com"));
        assert!(!wild.matches("example.com.evil.org"));

        assert_eq!(
            DomainPattern::parse("[2606:4700::1]").unwrap().to_string(),
            "2606:4700::1"
        );
        for bad in [
            "",
            "*",
            "*.",
            "*.com",
            "a.*.com",
            "ex*.com",
            "https://a.com",
            "a.com/x",
            "a.com:443",
            "a b.com",
            "ünï.com",
        ] {
            assert!(DomainPattern::parse(bad).is_err(), "{bad:?}");
        }
        let err = DomainPattern::parse("*").unwrap_err();
        assert!(err.to_string().contains("every host"), "{err}");
    }

    #[test]
    fn target_hosts_are_normalized_and_numeric_shorthands_refused() {
        assert_eq!(
            TargetHost::parse("Example.COM."),
            Some(TargetHost::Name("example.com".into()))
        );
        assert_eq!(TargetHost::parse("[::1]"), Some(TargetHost::Ip(ip("::1"))));
        assert_eq!(
            TargetHost::parse("10.0.0.1"),
            Some(TargetHost::Ip(ip("10.0.0.1")))
        );
        for bad in ["127.1", "0x7f.1", "2130706433", "", "a..b", "a b"] {
            assert_eq!(TargetHost::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_blocked_range_is_refused_and_public_addresses_pass() {
        let cases = [
            ("127.0.0.1", BlockedRange::Loopback),
            ("127.255.0.9", BlockedRange::Loopback),
            ("::1", BlockedRange::Loopback),
            ("10.1.2.3", BlockedRange::Private),
            ("172.16.0.1", BlockedRange::Private),
            ("172.31.255.255", BlockedRange::Private),
            ("192.168.1.1", BlockedRange::Private),
            ("169.254.1.1", BlockedRange::LinkLocal),
            ("169.254.169.254", BlockedRange::CloudMetadata),
            ("fd00:ec2::254", BlockedRange::CloudMetadata),
            ("100.64.0.1", BlockedRange::Cgnat),
            ("100.127.255.254", BlockedRange::Cgnat),
            ("fe80::1", BlockedRange::LinkLocal),
            ("febf::1", BlockedRange::LinkLocal),
            ("fc00::1", BlockedRange::UniqueLocal),
            ("fdff::1", BlockedRange::UniqueLocal),
            ("224.0.0.1", BlockedRange::Multicast),
            ("ff02::1", BlockedRange::Multicast),
            ("0.0.0.0", BlockedRange::Unspecified),
            ("::", BlockedRange::Unspecified),
            ("255.255.255.255", BlockedRange::Reserved),
            ("0.1.2.3", BlockedRange::Reserved),
            // IPv4-mapped, NAT64 and 6to4 forms are judged by the IPv4 address inside.
            ("::ffff:127.0.0.1", BlockedRange::Loopback),
            ("::ffff:10.0.0.1", BlockedRange::Private),
            ("::ffff:169.254.169.254", BlockedRange::CloudMetadata),
            ("::ffff:100.64.1.1", BlockedRange::Cgnat),
            ("::ffff:0.0.0.0", BlockedRange::Unspecified),
            ("64:ff9b::a00:1", BlockedRange::Private),
            ("2002:7f00:1::", BlockedRange::Loopback),
            ("::127.0.0.1", BlockedRange::Reserved),
        ];
        for (s, range) in cases {
            assert_eq!(blocked_range(ip(s)), Some(range), "{s}");
            assert_eq!(AddressGuard::production().check(ip(s)), Err(range), "{s}");
        }
        for ok in [
            "93.184.216.34",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:93.184.216.34",
        ] {
            assert_eq!(blocked_range(ip(ok)), None, "{ok}");
        }
    }

    #[test]
    fn the_test_switch_lets_only_plain_loopback_through() {
        let g = AddressGuard::allow_loopback_for_tests();
        assert!(g.check(ip("127.0.0.1")).is_ok());
        assert!(g.check(ip("::1")).is_ok());
        assert!(g.check(ip("::ffff:127.0.0.1")).is_err());
        assert!(g.check(ip("10.0.0.1")).is_err());
        assert!(g.check(ip("169.254.169.254")).is_err());
        assert!(!AddressGuard::production().loopback_allowed_for_tests());
    }

    fn policy() -> EgressPolicy {
        EgressPolicy::deny_all("main")
            .allowing(&["*.example.com", "api.github.com"])
            .unwrap()
            .denying(&["evil.example.com"])
            .unwrap()
    }

    fn name(s: &str) -> TargetHost {
        TargetHost::parse(s).unwrap()
    }

    #[test]
    fn deny_wins_and_unlisted_hosts_are_refused_with_the_rule_named() {
        let p = policy();
        assert!(
            p.check_target(&Method::GET, &name("a.example.com"), 443)
                .is_ok()
        );
        assert!(
            p.check_target(&Method::CONNECT, &name("api.github.com"), 443)
                .is_ok()
        );

        let r = p
            .check_target(&Method::GET, &name("evil.example.com"), 80)
            .unwrap_err();
        assert_eq!(r.rule, RefusalRule::Denied("evil.example.com".into()));
        assert!(r.message.contains("denied domains"), "{}", r.message);

        let r = p
            .check_target(&Method::GET, &name("api.evil.com"), 443)
            .unwrap_err();
        assert_eq!(r.rule, RefusalRule::NotAllowed);
        assert_eq!(
            r.message,
            "nanoclaw egress: api.evil.com is not in group main's allowed domains \
             (nanoclaw group egress allow main api.evil.com)"
        );
        // Nothing at all is allowed by default.
        let r = EgressPolicy::deny_all("g")
            .check_target(&Method::GET, &name("example.com"), 443)
            .unwrap_err();
        assert_eq!(r.rule, RefusalRule::NotAllowed);
    }

    #[test]
    fn a_skill_host_takes_only_its_methods_and_the_owners_rules_still_win() {
        let mut p = policy();
        p.skill_allow.push(SkillRule {
            skill: "tracker".into(),
            pattern: DomainPattern::parse("api.tracker.example").unwrap(),
            methods: vec![Method::GET],
        });
        // A skill naming a host the owner already allows does not narrow it.
        p.skill_allow.push(SkillRule {
            skill: "gh".into(),
            pattern: DomainPattern::parse("api.github.com").unwrap(),
            methods: vec![Method::GET],
        });
        assert!(
            p.check_target(&Method::GET, &name("api.tracker.example"), 443)
                .is_ok()
        );
        // The tunnel passes the policy; its requests are checked where they can be seen.
        assert!(
            p.check_target(&Method::CONNECT, &name("api.tracker.example"), 443)
                .is_ok()
        );
        let r = p
            .check_target(&Method::POST, &name("api.tracker.example"), 80)
            .unwrap_err();
        assert_eq!(r.rule, RefusalRule::Method);
        assert!(
            r.message.contains("only by skill tracker") && r.message.contains("GET"),
            "{}",
            r.message
        );
        assert!(
            p.check_target(&Method::POST, &name("api.github.com"), 443)
                .is_ok()
        );
        assert_eq!(p.skill_methods("api.github.com"), None);
        assert_eq!(
            p.skill_methods("api.tracker.example"),
            Some(vec![Method::GET])
        );
        // Undeclared hosts stay refused; the owner's deny wins over a skill.
        assert_eq!(
            p.check_target(&Method::GET, &name("other.tracker.example"), 443)
                .unwrap_err()
                .rule,
            RefusalRule::NotAllowed
        );
        p.deny
            .push(DomainPattern::parse("api.tracker.example").unwrap());
        assert!(matches!(
            p.check_target(&Method::GET, &name("api.tracker.example"), 443)
                .unwrap_err()
                .rule,
            RefusalRule::Denied(_)
        ));
    }

    #[test]
    fn methods_and_ports_restrict() {
        let mut p = policy();
        assert_eq!(
            p.check_target(&Method::GET, &name("a.example.com"), 8080)
                .unwrap_err()
                .rule,
            RefusalRule::Port
        );
        p.methods = Some(vec![Method::GET, Method::HEAD]);
        assert!(
            p.check_target(&Method::HEAD, &name("a.example.com"), 80)
                .is_ok()
        );
        let r = p
            .check_target(&Method::POST, &name("a.example.com"), 80)
            .unwrap_err();
        assert_eq!(r.rule, RefusalRule::Method);
        assert!(r.message.contains("only GET, HEAD"), "{}", r.message);
        // A tunnel's method cannot be seen, so a method-restricted group gets no tunnels.
        assert_eq!(
            p.check_target(&Method::CONNECT, &name("a.example.com"), 443)
                .unwrap_err()
                .rule,
            RefusalRule::Method
        );
    }

    #[test]
    fn ip_literals_in_blocked_ranges_are_refused_even_when_listed() {
        let p = EgressPolicy::deny_all("main")
            .allowing(&["169.254.169.254", "10.0.0.1", "[fe80::1]"])
            .unwrap();
        for (host, range) in [
            ("169.254.169.254", BlockedRange::CloudMetadata),
            ("10.0.0.1", BlockedRange::Private),
            ("[fe80::1]", BlockedRange::LinkLocal),
            ("[::ffff:127.0.0.1]", BlockedRange::Loopback),
        ] {
            let r = p.check_target(&Method::GET, &name(host), 80).unwrap_err();
            assert!(
                matches!(r.rule, RefusalRule::BlockedAddress { range: got, .. } if got == range),
                "{host}: {r:?}"
            );
        }
    }

    #[test]
    fn a_name_resolving_to_any_blocked_address_is_refused() {
        let p = policy();
        let host = name("rebind.example.com");
        let public: SocketAddr = "93.184.216.34:443".parse().unwrap();
        assert!(p.check_resolved(&host, &[public]).is_ok());
        for bad in [
            "127.0.0.1:443",
            "10.0.0.7:443",
            "[::ffff:192.168.0.1]:443",
            "[fd00:ec2::254]:443",
        ] {
            let r = p
                .check_resolved(&host, &[public, bad.parse().unwrap()])
                .unwrap_err();
            assert_eq!(r.rule.tag(), "blocked_address", "{bad}");
            assert!(
                r.message.contains("rebind.example.com resolves to"),
                "{}",
                r.message
            );
        }
        assert_eq!(
            p.check_resolved(&host, &[]).unwrap_err().rule,
            RefusalRule::Unreachable
        );
    }
}
