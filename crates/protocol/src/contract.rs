//! The host ↔ sandbox contract beyond the stdio protocol: the environment variables the host
//! sets for the agent runner, where things appear inside every sandbox, and the markers both
//! sides recognise. Defined once here so the host that sets a name and the agent that reads it
//! cannot drift apart.

/// Environment variables the host sets in a sandbox (and the agent runner reads).
pub mod env {
    /// The model relay's Unix socket inside the sandbox (the default route).
    pub const MODEL_SOCKET: &str = "NANOCLAW_MODEL_SOCKET";
    /// The model relay as a TCP `host:port`, where no Unix socket crosses into the sandbox
    /// (a VM runtime). Comes with [`MODEL_TOKEN`].
    pub const MODEL_TCP: &str = "NANOCLAW_MODEL_TCP";
    /// The token a TCP relay connection presents after [`super::RELAY_PREAMBLE_PREFIX`].
    pub const MODEL_TOKEN: &str = "NANOCLAW_MODEL_TOKEN";
    /// The host's egress proxy socket inside the sandbox.
    pub const EGRESS_SOCKET: &str = "NANOCLAW_EGRESS_SOCKET";
    /// The CA bundle (system roots plus the host's interception CA) inside the sandbox, set
    /// when the host intercepts TLS to inject credentials.
    pub const CA_BUNDLE: &str = "NANOCLAW_CA_BUNDLE";
    /// The group's folder inside the sandbox (the agent's working directory and memory).
    pub const WORKSPACE: &str = "NANOCLAW_WORKSPACE";
    /// The read-only global memory folder inside the sandbox.
    pub const GLOBAL_DIR: &str = "NANOCLAW_GLOBAL_DIR";
    /// The agent runner's log filter (tracing `EnvFilter` syntax).
    pub const LOG: &str = "NANOCLAW_LOG";

    /// The proxy variables the agent sets for its tools and MCP servers (both spellings).
    pub const PROXY_VARS: &[&str] = &[
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ];
    /// The CA bundle variables, set when the host intercepts TLS so clients trust its local CA.
    pub const CA_BUNDLE_VARS: &[&str] = &[
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "GIT_SSL_CAINFO",
        "CURL_CA_BUNDLE",
    ];

    /// Whether `name` routes a sandbox's traffic through the host (nanoclaw's own variables, the
    /// proxy and CA bundle variables, in any case): an MCP server entry (a group's config, a
    /// skill's manifest) may not set it, and the agent never lets one through.
    pub fn is_routing_var(name: &str) -> bool {
        let upper = name.to_ascii_uppercase();
        upper.starts_with("NANOCLAW_")
            || PROXY_VARS
                .iter()
                .chain(CA_BUNDLE_VARS)
                .any(|v| v.eq_ignore_ascii_case(name))
    }
}

/// Where things appear inside every sandbox.
pub mod paths {
    /// The group's own folder, writable.
    pub const WORKSPACE: &str = "/workspace/group";
    /// Global memory, read-only.
    pub const GLOBAL: &str = "/workspace/global";
    /// Extra allowlisted folders appear under this, one per mount name.
    pub const EXTRA: &str = "/workspace/extra";
    /// Enabled skills, one read-only folder each: `/workspace/skills/<name>` (since 1.6).
    pub const SKILLS: &str = "/workspace/skills";
    /// The host's run dir for this sandbox (sockets, CA files), read-only.
    pub const RUN: &str = "/run/nanoclaw";
    /// File names inside [`RUN`].
    pub const MODEL_SOCKET_NAME: &str = "model.sock";
    pub const EGRESS_SOCKET_NAME: &str = "proxy.sock";
    pub const CA_CERT_NAME: &str = "ca.pem";
    pub const CA_BUNDLE_NAME: &str = "ca-bundle.pem";
}

/// What every TCP relay connection sends first, followed by the token and `\n`.
pub const RELAY_PREAMBLE_PREFIX: &str = "NANOCLAW-RELAY ";

/// Credential placeholders the agent sees instead of secrets start with this; the host's egress
/// proxy swaps them for the real value on the way out, only towards granted hosts.
pub const PLACEHOLDER_PREFIX: &str = "nanoclaw-placeholder-";
