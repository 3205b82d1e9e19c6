//! Deny-by-default HTTP/HTTPS egress for sandboxes, through the host.
//!
//! Each running sandbox gets its own Unix socket (`proxy.sock` in its run dir, mounted
//! read-only at `/run/nanoclaw`); the socket a request arrives on is the sandbox's identity,
//! as for the model relay. Inside the sandbox the agent runner serves a loopback HTTP proxy
//! bridged byte-for-byte to that socket and points `HTTP_PROXY`/`HTTPS_PROXY` at it; the
//! sandbox has no other network.
//!
//! The proxy speaks HTTP/1.1 proxy: absolute-form `http://` requests are forwarded, and
//! `CONNECT host:port` is tunnelled after the checks. Checks ([`policy`]): the group's
//! allowed/denied domains (deny wins), methods and ports, then the RESOLVED addresses —
//! loopback, private, link-local, CGNAT, unique-local, multicast and cloud metadata are
//! refused whatever the lists say — and the proxy connects to exactly the checked address
//! (no second lookup, so DNS rebinding cannot swap it). Refusals are `403` with a body naming
//! the rule. Every decision goes to an [`EgressAudit`].
//!
//! TLS interception (`mitm.rs`): CONNECT to a host where the group has a credential grant is
//! answered by the proxy itself with a leaf certificate from the local CA ([`ca`]); each
//! request inside gets the credential set (header or query parameter), placeholders bound to
//! that host swapped for their real values, and goes on over real TLS (system roots, SNI =
//! the host) to the checked address. Request URLs, headers and bodies the proxy can see
//! (plain HTTP and intercepted HTTPS) are scanned by the leak guard: a secret going to a host
//! it is not granted for is refused. Tunnelled HTTPS is opaque and not scanned.
//!
//! A grant marked `needs_approval` is used only once the owner approved it: its first use
//! records a pending approval, the [`ApprovalNotifier`] asks the owner (the host posts to the
//! main chat) and the request gets a 403 saying so. Secrets with a rate limit are counted per
//! injection in a sliding minute ([`rate`]); over it, `429` with `retry-after`.
//!
//! Not yet: scanning responses, a TCP transport for VM runtimes.
//!
//! The model relay ([`relay`]) lives here too: it is the sandbox's other way out, to the model
//! provider, with the API key added on the host side. The vault-backed implementations of
//! [`EgressSecrets`] and [`EgressAudit`] are the host's (`nanoclaw_host::egress_vault`).

pub mod ca;
mod error;
mod mitm;
pub mod policy;
pub mod proxy;
pub mod rate;
pub mod relay;
pub mod resolve;
mod sni;
pub mod source;

use std::sync::{Arc, Mutex};

pub use ca::{
    CA_BUNDLE_ENV, CaError, CaMaterialError, LeafError, LocalCa, SANDBOX_CA_BUNDLE, SANDBOX_CA_CERT,
};
pub use error::{EgressError, PolicyError, SecretsError};
pub use mitm::{MAX_SCANNED_BODY, PLACEHOLDER_PREFIX};
pub use policy::{
    AddressGuard, BlockedRange, DEFAULT_PORTS, DomainPattern, EgressPolicy, PatternError, Refusal,
    RefusalRule, SkillRule, TargetHost, blocked_range,
};
pub use proxy::{EgressHandle, EgressProxy, Interception};
pub use resolve::{Resolve, StaticResolver, SystemResolver};
pub use source::{PolicySource, StaticPolicies, StorePolicySource};

/// Milliseconds since the Unix epoch (audit record times).
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Name of the proxy socket in a sandbox's run dir (next to `model.sock`).
pub const PROXY_SOCKET_NAME: &str = nanoclaw_protocol::contract::paths::EGRESS_SOCKET_NAME;
/// The variable the agent runner reads to find the socket inside the sandbox.
pub const EGRESS_SOCKET_ENV: &str = nanoclaw_protocol::contract::env::EGRESS_SOCKET;

/// Whether a request went out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressDecision {
    Allowed,
    Denied,
}

/// One proxied request (or tunnel), as the audit sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EgressRecord {
    /// Unix milliseconds when the request arrived.
    pub time_ms: i64,
    /// The group folder the socket belongs to.
    pub group: String,
    pub method: String,
    pub host: String,
    pub port: u16,
    /// Plain HTTP only, without the query (which may hold credentials); `None` for CONNECT.
    pub path: Option<String>,
    /// What the client got: the upstream status, 200 for an opened tunnel, or the refusal's.
    pub status: u16,
    /// Request body bytes (tunnel: client → upstream).
    pub bytes_up: u64,
    /// Response body bytes (tunnel: upstream → client).
    pub bytes_down: u64,
    pub decision: EgressDecision,
    /// For an allowed request the pattern that allowed it; else the refusal rule's tag and
    /// message.
    pub reason: String,
    /// The secret injected into the request (intercepted HTTPS only).
    pub secret: Option<String>,
}

/// Where every egress decision is recorded (the vault's hash-chained audit log implements
/// this). Called on the proxy's tasks: keep it quick and non-blocking.
pub trait EgressAudit: Send + Sync {
    fn record(&self, entry: EgressRecord);
}

/// Logs each decision with `tracing` (the default until the vault's audit log is wired).
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingAudit;

impl EgressAudit for TracingAudit {
    fn record(&self, e: EgressRecord) {
        match e.decision {
            EgressDecision::Allowed => tracing::info!(
                group = %e.group, method = %e.method, host = %e.host, port = e.port,
                path = e.path.as_deref().unwrap_or(""), status = e.status,
                bytes_up = e.bytes_up, bytes_down = e.bytes_down, reason = %e.reason,
                "egress allowed"
            ),
            EgressDecision::Denied => tracing::warn!(
                group = %e.group, method = %e.method, host = %e.host, port = e.port,
                path = e.path.as_deref().unwrap_or(""), status = e.status, reason = %e.reason,
                "egress denied"
            ),
        }
    }
}

/// Keeps every record in memory (tests and benchmarks).
#[derive(Debug, Default)]
pub struct MemoryAudit {
    records: Mutex<Vec<EgressRecord>>,
}

impl MemoryAudit {
    pub fn records(&self) -> Vec<EgressRecord> {
        match self.records.lock() {
            Ok(r) => r.clone(),
            Err(e) => e.into_inner().clone(),
        }
    }
}

impl EgressAudit for MemoryAudit {
    fn record(&self, entry: EgressRecord) {
        match self.records.lock() {
            Ok(mut r) => r.push(entry),
            Err(e) => e.into_inner().push(entry),
        }
    }
}

/// What the proxy needs from the vault (the host's `VaultSecrets` is the real one). The proxy
/// refuses the request (fails closed) when an error comes back.
#[async_trait::async_trait]
pub trait EgressSecrets: Send + Sync {
    /// Whether `group` has any credential grant on `host` (then CONNECT to it is intercepted).
    async fn injects_for(&self, group: &str, host: &str) -> Result<bool, SecretsError>;
    /// The credential to set on a request from `group` to `host` + `path`, if any.
    async fn injection(
        &self,
        group: &str,
        host: &str,
        path: &str,
    ) -> Result<Option<nanoclaw_vault::Injection>, SecretsError>;
    /// The real value behind `placeholder`, only when it is bound to `host` and `path` (the
    /// grant's path prefix) for `group`.
    async fn resolve_placeholder(
        &self,
        group: &str,
        placeholder: &str,
        host: &str,
        path: &str,
    ) -> Result<Option<nanoclaw_vault::SecretString>, SecretsError>;
    /// Whether secret `name` is granted to `group` on `host` (then it may be sent there).
    async fn bound_to(&self, group: &str, name: &str, host: &str) -> Result<bool, SecretsError>;
    /// The leak guard over every live secret version; `None` when there is nothing to find.
    async fn leak_guard(&self) -> Result<Option<Arc<nanoclaw_vault::LeakGuard>>, SecretsError>;
    /// `NANOCLAW_SECRET_<NAME>` placeholders for the group's sandbox environment.
    async fn placeholder_env(&self, group: &str) -> Result<Vec<(String, String)>, SecretsError>;
    /// The owner's approval of grant `grant_id`; when there is none yet, records a pending one
    /// for `group` asking on `host`.
    async fn approval(
        &self,
        grant_id: i64,
        group: &str,
        host: &str,
    ) -> Result<Approval, SecretsError>;
    /// Injections of secret `name` allowed per minute; 0 = no limit.
    async fn rate_limit(&self, name: &str) -> Result<u32, SecretsError>;
}

/// Where the owner's approval of a grant stands, as the proxy needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Approval {
    Approved,
    Denied,
    /// Not decided yet; `newly_requested` when this request is the first to ask (then the
    /// owner is to be told).
    Pending {
        newly_requested: bool,
    },
}

/// A grant's first use, waiting for the owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalRequest {
    pub grant_id: i64,
    /// The group whose agent asked.
    pub group: String,
    pub secret: String,
    pub host: String,
}

/// Tells the owner a grant waits for approval (the host posts to the main chat). Called once
/// per grant, when the pending approval is recorded.
#[async_trait::async_trait]
pub trait ApprovalNotifier: Send + Sync {
    async fn approval_requested(&self, request: ApprovalRequest);
}

/// Only logs (the proxy's default until the host gives it a notifier).
#[derive(Debug, Default, Clone, Copy)]
pub struct LogNotifier;

#[async_trait::async_trait]
impl ApprovalNotifier for LogNotifier {
    async fn approval_requested(&self, r: ApprovalRequest) {
        tracing::warn!(
            grant = r.grant_id, group = %r.group, secret = %r.secret, host = %r.host,
            "a grant waits for the owner's approval (`nanoclaw vault approve {}`)", r.grant_id
        );
    }
}

/// Keeps every request in memory (tests).
#[derive(Debug, Default)]
pub struct MemoryNotifier {
    requests: Mutex<Vec<ApprovalRequest>>,
}

impl MemoryNotifier {
    pub fn requests(&self) -> Vec<ApprovalRequest> {
        match self.requests.lock() {
            Ok(r) => r.clone(),
            Err(e) => e.into_inner().clone(),
        }
    }
}

#[async_trait::async_trait]
impl ApprovalNotifier for MemoryNotifier {
    async fn approval_requested(&self, request: ApprovalRequest) {
        match self.requests.lock() {
            Ok(mut r) => r.push(request),
            Err(e) => e.into_inner().push(request),
        }
    }
}

/// No secrets: every allowed host is tunnelled untouched and nothing is scanned.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSecrets;

#[async_trait::async_trait]
impl EgressSecrets for NoSecrets {
    async fn injects_for(&self, _group: &str, _host: &str) -> Result<bool, SecretsError> {
        Ok(false)
    }
    async fn injection(
        &self,
        _group: &str,
        _host: &str,
        _path: &str,
    ) -> Result<Option<nanoclaw_vault::Injection>, SecretsError> {
        Ok(None)
    }
    async fn resolve_placeholder(
        &self,
        _group: &str,
        _placeholder: &str,
        _host: &str,
        _path: &str,
    ) -> Result<Option<nanoclaw_vault::SecretString>, SecretsError> {
        Ok(None)
    }
    async fn bound_to(&self, _group: &str, _name: &str, _host: &str) -> Result<bool, SecretsError> {
        Ok(false)
    }
    async fn leak_guard(&self) -> Result<Option<Arc<nanoclaw_vault::LeakGuard>>, SecretsError> {
        Ok(None)
    }
    async fn placeholder_env(&self, _group: &str) -> Result<Vec<(String, String)>, SecretsError> {
        Ok(Vec::new())
    }
    async fn approval(
        &self,
        _grant_id: i64,
        _group: &str,
        _host: &str,
    ) -> Result<Approval, SecretsError> {
        // There are no grants to approve.
        Ok(Approval::Denied)
    }
    async fn rate_limit(&self, _name: &str) -> Result<u32, SecretsError> {
        Ok(0)
    }
}
