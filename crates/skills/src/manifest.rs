//! skill.toml: what nanoclaw enforces for a skill (egress, secrets, tools, …). Every field is
//! optional and unknown fields are refused, so a typo never silently drops a restriction.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path};

use serde::Deserialize;

use crate::error::LoadError;
use crate::frontmatter::check_name;

/// HTTP methods an egress rule may name.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The manifest as written (before the typed checks).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    version: Option<String>,
    #[serde(default)]
    requires: BTreeMap<String, String>,
    #[serde(default)]
    egress: Vec<EgressRule>,
    #[serde(default)]
    secrets: Vec<SecretBinding>,
    #[serde(default)]
    mcp_servers: BTreeMap<String, McpServer>,
    #[serde(default)]
    packages: Vec<String>,
    #[serde(default)]
    schedules: Vec<ScheduleSpec>,
    #[serde(default)]
    commands: BTreeMap<String, CommandSpec>,
    #[serde(default)]
    tools: Vec<ToolSpec>,
}

/// A validated skill.toml. A skill without one has the default: no version, no requirements and
/// no grants at all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    /// The skill's version.
    pub version: Option<semver::Version>,
    /// Skills this one needs, by name, with the versions it accepts.
    pub requires: BTreeMap<String, semver::VersionReq>,
    /// Hosts the skill may reach, with the methods it may use.
    pub egress: Vec<EgressRule>,
    /// Vault secrets the skill uses, each bound to the hosts it may be sent to.
    pub secrets: Vec<SecretBinding>,
    /// stdio MCP servers run inside the sandbox, by name.
    pub mcp_servers: BTreeMap<String, McpServer>,
    /// What the sandbox image must provide.
    pub packages: Vec<String>,
    /// Scheduled prompts the skill suggests.
    pub schedules: Vec<ScheduleSpec>,
    /// Chat commands (`/name`), by name without the slash.
    pub commands: BTreeMap<String, CommandSpec>,
    /// Script-backed tools.
    pub tools: Vec<ToolSpec>,
}

/// One host the skill may reach.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRule {
    /// A host name (`api.example.com`) or `*.` and a domain (its subdomains).
    pub host: String,
    /// Allowed HTTP methods, upper case after loading.
    pub methods: Vec<String>,
}

/// A vault secret and the hosts it may be sent to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretBinding {
    /// The vault name.
    pub name: String,
    /// Hosts (each covered by an egress rule) the secret may be injected for.
    pub hosts: Vec<String>,
}

/// A stdio MCP server started inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    /// The program.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables set for it.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// A default scheduled prompt.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Unique within the skill.
    pub name: String,
    /// A cron expression (nanoclaw-schedule's syntax: 5 or 6 fields or an `@alias`).
    pub cron: String,
    /// The prompt run on schedule.
    pub prompt: String,
}

/// A chat command: runs a prompt or one of the skill's tools.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// What the command does, for help listings.
    pub description: Option<String>,
    /// The prompt sent when the command is used (exactly one of `prompt`, `tool`).
    pub prompt: Option<String>,
    /// The tool run when the command is used (one of this skill's `tools`).
    pub tool: Option<String>,
}

/// A tool backed by a script in the skill's `scripts/` folder.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    /// The tool's name as the model sees it.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// Path relative to the skill folder, under `scripts/`.
    pub script: String,
    /// JSON Schema of the input (an object schema).
    pub input_schema: serde_json::Value,
}

/// The vault's secret-name rule (`^[a-z0-9][a-z0-9_.-]{0,63}$`): a declared secret must be
/// one the vault can hold.
fn check_secret_name(name: &str) -> Result<(), String> {
    nanoclaw_vault::validate_secret_name(name).map_err(vault_message)
}

/// The vault's message without its leading noun (the manifest names the field instead).
fn vault_message(error: nanoclaw_vault::VaultError) -> String {
    let message = match error {
        nanoclaw_vault::VaultError::Invalid(message) => message,
        other => other.to_string(),
    };
    ["host ", "secret name "]
        .iter()
        .find_map(|noun| message.strip_prefix(noun))
        .map_or_else(|| message.clone(), str::to_owned)
}

/// A lower-case DNS name or `*.` and one: the vault's host-pattern rule (the egress proxy
/// matches these), and no IP address (grants name hosts). Returns the lower-cased pattern.
pub fn check_host(host: &str) -> Result<String, String> {
    let lower = nanoclaw_vault::validate_host_pattern(host).map_err(vault_message)?;
    let domain = lower.strip_prefix("*.").unwrap_or(&lower);
    // No top-level domain is all digits, so this is an IPv4 address: grants name hosts.
    if domain
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "{host:?} is an IP address, not a host name; give a host name such as api.example.com"
        ));
    }
    Ok(lower)
}

/// Whether `host` (a name or pattern) is reachable under one of the egress patterns.
fn covered(egress: &[EgressRule], host: &str) -> bool {
    egress.iter().any(|rule| {
        rule.host == host
            || rule.host.strip_prefix('*').is_some_and(|suffix| {
                // "*.example.com" covers "a.example.com" and "*.a.example.com", not the bare domain.
                host.ends_with(suffix) && host.len() > suffix.len()
            })
    })
}

/// Tool names as model APIs accept them: `^[A-Za-z0-9_-]{1,64}$`.
fn check_tool_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must be 1-64 characters of letters, digits, '_' or '-'"
        ))
    }
}

/// Checks that `rel` names a regular file inside `dir`, under `scripts/`, reached without `..`,
/// absolute parts or symlinks (so it cannot point outside the skill).
pub(crate) fn check_script_path(dir: &Path, rel: &str) -> Result<(), String> {
    let path = Path::new(rel);
    if rel.is_empty() || rel.contains('\\') || rel.contains('\0') {
        return Err(format!(
            "{rel:?} must be a relative path such as \"scripts/run.py\""
        ));
    }
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::ParentDir => {
                return Err(format!(
                    "{rel:?} must not contain \"..\"; scripts live in the skill's scripts/ folder"
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "{rel:?} must be relative to the skill folder, e.g. \"scripts/run.py\""
                ));
            }
            Component::CurDir => {}
        }
    }
    if parts.len() < 2 || parts[0] != "scripts" {
        return Err(format!(
            "{rel:?} must be a file under scripts/, e.g. \"scripts/run.py\""
        ));
    }
    let mut at = dir.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let meta = std::fs::symlink_metadata(&at)
            .map_err(|_| format!("{rel:?} does not exist; add the script or fix the path"))?;
        if meta.file_type().is_symlink() {
            return Err(format!(
                "{rel:?} goes through a symlink ({}); put the real file in the skill",
                at.display()
            ));
        }
        let last = i + 1 == parts.len();
        if last && !meta.is_file() {
            return Err(format!("{rel:?} is not a regular file"));
        }
    }
    Ok(())
}

/// Parses and validates skill.toml text; `dir` is the skill folder (tool scripts must exist in
/// it) and `file` the manifest's path for messages.
pub fn parse(text: &str, dir: &Path, file: &Path) -> Result<Manifest, LoadError> {
    let raw: Raw = toml::from_str(text).map_err(|e| LoadError::Syntax {
        file: file.to_path_buf(),
        message: format!(
            "not a valid skill.toml: {}",
            e.to_string().trim_end().replace('\n', "\n  ")
        ),
    })?;
    let bad = |field: String, message: String| LoadError::invalid(file, field, message);

    let version = match &raw.version {
        None => None,
        Some(v) => Some(semver::Version::parse(v).map_err(|e| {
            bad(
                "version".into(),
                format!("version {v:?} is not a semantic version ({e}); write e.g. \"1.2.0\""),
            )
        })?),
    };

    let mut requires = BTreeMap::new();
    for (name, range) in &raw.requires {
        check_name(name).map_err(|m| {
            bad(
                format!("requires.{name}"),
                format!("requires: skill name {m}"),
            )
        })?;
        let req = semver::VersionReq::parse(range).map_err(|e| {
            bad(
                format!("requires.{name}"),
                format!(
                    "requires.{name} = {range:?} is not a version range ({e}); write e.g. \"^1.2\" \
                     or \"*\""
                ),
            )
        })?;
        requires.insert(name.clone(), req);
    }

    let mut egress = Vec::new();
    for (i, rule) in raw.egress.iter().enumerate() {
        let host = check_host(&rule.host)
            .map_err(|m| bad(format!("egress[{i}].host"), format!("egress[{i}].host {m}")))?;
        if rule.methods.is_empty() {
            return Err(bad(
                format!("egress[{i}].methods"),
                format!("egress[{i}].methods is empty; list the methods, e.g. [\"GET\"]"),
            ));
        }
        let mut methods = Vec::new();
        for m in &rule.methods {
            let upper = m.to_ascii_uppercase();
            if !METHODS.contains(&upper.as_str()) {
                return Err(bad(
                    format!("egress[{i}].methods"),
                    format!(
                        "egress[{i}].methods: {m:?} is not an HTTP method; use {}",
                        METHODS.join(", ")
                    ),
                ));
            }
            if !methods.contains(&upper) {
                methods.push(upper);
            }
        }
        egress.push(EgressRule { host, methods });
    }

    let mut secrets = Vec::new();
    let mut secret_names = BTreeSet::new();
    for (i, s) in raw.secrets.iter().enumerate() {
        check_secret_name(&s.name).map_err(|m| {
            bad(
                format!("secrets[{i}].name"),
                format!("secrets[{i}].name {m}"),
            )
        })?;
        if !secret_names.insert(s.name.clone()) {
            return Err(bad(
                format!("secrets[{i}].name"),
                format!(
                    "secrets[{i}].name {:?} is listed twice; list each secret once with all its hosts",
                    s.name
                ),
            ));
        }
        if s.hosts.is_empty() {
            return Err(bad(
                format!("secrets[{i}].hosts"),
                format!("secrets[{i}].hosts is empty; bind the secret to the hosts it is sent to"),
            ));
        }
        let mut hosts = Vec::new();
        for h in &s.hosts {
            let host = check_host(h).map_err(|m| {
                bad(
                    format!("secrets[{i}].hosts"),
                    format!("secrets[{i}].hosts: {m}"),
                )
            })?;
            // Fail closed: a secret bound to a host the skill cannot reach is a mistake.
            if !covered(&egress, &host) {
                return Err(bad(
                    format!("secrets[{i}].hosts"),
                    format!(
                        "secrets[{i}].hosts: {host:?} is not allowed by any egress rule; add \
                         [[egress]] host = {host:?} or bind the secret to an allowed host"
                    ),
                ));
            }
            hosts.push(host);
        }
        secrets.push(SecretBinding {
            name: s.name.clone(),
            hosts,
        });
    }

    for (name, server) in &raw.mcp_servers {
        check_tool_name(name).map_err(|m| {
            bad(
                format!("mcp_servers.{name}"),
                format!("mcp_servers: server name {m}"),
            )
        })?;
        if server.command.trim().is_empty() || server.command.contains('\0') {
            return Err(bad(
                format!("mcp_servers.{name}.command"),
                format!("mcp_servers.{name}.command is empty; give the program to run"),
            ));
        }
        for key in server.env.keys() {
            let ok = key
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err(bad(
                    format!("mcp_servers.{name}.env"),
                    format!(
                        "mcp_servers.{name}.env: {key:?} is not an environment variable name \
                         (letters, digits, '_', not starting with a digit)"
                    ),
                ));
            }
            if nanoclaw_protocol::contract::env::is_routing_var(key) {
                return Err(bad(
                    format!("mcp_servers.{name}.env"),
                    format!(
                        "mcp_servers.{name}.env: {key} is set by nanoclaw for every sandbox (it \
                         routes traffic through the host) and cannot be changed by a skill"
                    ),
                ));
            }
        }
    }

    for (i, p) in raw.packages.iter().enumerate() {
        let ok = !p.is_empty()
            && p.len() <= 128
            && !p.starts_with('-')
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-._:=<>~@/".contains(&b));
        if !ok {
            return Err(bad(
                format!("packages[{i}]"),
                format!(
                    "packages[{i}] {p:?} is not a package name (letters, digits and + - . _ : = < > ~ @ /, \
                     no spaces, not starting with '-')"
                ),
            ));
        }
    }

    let mut schedule_names = BTreeSet::new();
    for (i, s) in raw.schedules.iter().enumerate() {
        check_name(&s.name).map_err(|m| {
            bad(
                format!("schedules[{i}].name"),
                format!("schedules[{i}].name {m}"),
            )
        })?;
        if !schedule_names.insert(s.name.clone()) {
            return Err(bad(
                format!("schedules[{i}].name"),
                format!(
                    "schedules[{i}].name {:?} is used twice; names must be unique",
                    s.name
                ),
            ));
        }
        nanoclaw_schedule::Schedule::cron(&s.cron).map_err(|e| {
            bad(
                format!("schedules[{i}].cron"),
                format!(
                    "schedules[{i}].cron {:?} is not a valid cron expression: {e}",
                    s.cron
                ),
            )
        })?;
        if s.prompt.trim().is_empty() {
            return Err(bad(
                format!("schedules[{i}].prompt"),
                format!("schedules[{i}].prompt is empty; give the prompt to run"),
            ));
        }
    }

    let mut tool_names = BTreeSet::new();
    for (i, t) in raw.tools.iter().enumerate() {
        check_tool_name(&t.name)
            .map_err(|m| bad(format!("tools[{i}].name"), format!("tools[{i}].name {m}")))?;
        if !tool_names.insert(t.name.clone()) {
            return Err(bad(
                format!("tools[{i}].name"),
                format!(
                    "tools[{i}].name {:?} is used twice; tool names must be unique",
                    t.name
                ),
            ));
        }
        if t.description.trim().is_empty() {
            return Err(bad(
                format!("tools[{i}].description"),
                format!("tools[{i}].description is empty; tell the model what the tool does"),
            ));
        }
        check_script_path(dir, &t.script).map_err(|m| {
            bad(
                format!("tools[{i}].script"),
                format!("tools[{i}].script {m}"),
            )
        })?;
        let is_object_schema = t
            .input_schema
            .as_object()
            .is_some_and(|o| o.get("type").and_then(|v| v.as_str()) == Some("object"));
        if !is_object_schema {
            return Err(bad(
                format!("tools[{i}].input_schema"),
                format!(
                    "tools[{i}].input_schema must be a JSON Schema object with type = \"object\" \
                     (e.g. [tools.input_schema] type = \"object\")"
                ),
            ));
        }
    }

    for (name, c) in &raw.commands {
        check_name(name).map_err(|m| {
            bad(
                format!("commands.{name}"),
                format!("commands: command name {m}"),
            )
        })?;
        match (&c.prompt, &c.tool) {
            (Some(p), None) if !p.trim().is_empty() => {}
            (None, Some(tool)) => {
                if !tool_names.contains(tool) {
                    return Err(bad(
                        format!("commands.{name}.tool"),
                        format!(
                            "commands.{name}.tool {tool:?} is not one of this skill's tools; \
                             add it to [[tools]] or use a prompt"
                        ),
                    ));
                }
            }
            _ => {
                return Err(bad(
                    format!("commands.{name}"),
                    format!(
                        "commands.{name} must have exactly one of prompt = \"…\" or tool = \"…\""
                    ),
                ));
            }
        }
    }

    Ok(Manifest {
        version,
        requires,
        egress,
        secrets,
        mcp_servers: raw.mcp_servers,
        packages: raw.packages,
        schedules: raw.schedules,
        commands: raw.commands,
        tools: raw.tools,
    })
}
