//! A group's own MCP servers, from the host's configuration:
//!
//! ```toml
//! [groups.main.mcp_servers.time]
//! command = "/opt/mcp/bin/mcp-server-time"
//! args = ["--local-timezone", "Europe/Berlin"]
//! env = { TZ_HINT = "Berlin" }
//! ```
//!
//! The agent starts each inside the group's sandbox (docs/MCP.md); the host only checks the
//! entries at load and hands them over in `hello.mcp_servers`.

use std::collections::BTreeMap;

use nanoclaw_protocol::McpServer;
use serde::{Deserialize, Serialize};

/// Longest server name: the protocol's limit.
const MAX_NAME: usize = 64;
/// Servers one group may declare.
const MAX_SERVERS: usize = 16;
/// Longest command, argument or environment value.
const MAX_VALUE: usize = 4096;

/// `[groups.<folder>]`: settings of one agent group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupSection {
    /// `[groups.<folder>.mcp_servers.<name>]`: stdio MCP servers the group's agent starts.
    pub mcp_servers: BTreeMap<String, McpServerSection>,
}

/// One MCP server: a program in the sandbox speaking MCP on its stdin/stdout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerSection {
    /// The program, as the sandbox sees it: an absolute path or a name on the sandbox's PATH.
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Variables added to the server's environment (not secrets: this file is plain text).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Checks every group's servers; the message names the setting and says what is allowed.
pub fn validate(groups: &BTreeMap<String, GroupSection>) -> Result<(), String> {
    for (folder, group) in groups {
        nanoclaw_store::validate_folder(folder).map_err(|e| format!("[groups.{folder:?}]: {e}"))?;
        if group.mcp_servers.len() > MAX_SERVERS {
            return Err(format!(
                "groups.{folder}.mcp_servers: {} servers; at most {MAX_SERVERS} per group",
                group.mcp_servers.len()
            ));
        }
        for (name, server) in &group.mcp_servers {
            let at = format!("groups.{folder}.mcp_servers.{name}");
            validate_server(name, server).map_err(|e| format!("{at}: {e}"))?;
        }
    }
    Ok(())
}

fn validate_server(name: &str, server: &McpServerSection) -> Result<(), String> {
    let name_ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !name_ok {
        return Err(format!(
            "the server name {name:?} must be 1-{MAX_NAME} letters, digits, '_' or '-' (its tools \
             are offered as <name>__<tool>)"
        ));
    }
    if server.command.trim().is_empty() {
        return Err("`command` is empty: give the program to run in the sandbox".into());
    }
    if server.command != server.command.trim() {
        return Err(format!(
            "`command` = {:?} has surrounding spaces; put arguments in `args`",
            server.command
        ));
    }
    for (what, value) in std::iter::once(("command", &server.command))
        .chain(server.args.iter().map(|a| ("an argument", a)))
        .chain(server.env.values().map(|v| ("an env value", v)))
    {
        if value.len() > MAX_VALUE || value.chars().any(|c| c == '\0') {
            return Err(format!(
                "{what} is longer than {MAX_VALUE} bytes or contains a NUL character"
            ));
        }
    }
    for key in server.env.keys() {
        let mut chars = key.chars();
        let ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(format!(
                "env: {key:?} is not a variable name (letters, digits and '_', not starting \
                 with a digit)"
            ));
        }
        if nanoclaw_protocol::contract::env::is_routing_var(key) {
            return Err(format!(
                "env: {key} is set by nanoclaw for every sandbox and cannot be changed here"
            ));
        }
    }
    Ok(())
}

/// The MCP servers group `folder` declares, in name order, as `hello` carries them.
pub fn group_mcp_servers(groups: &BTreeMap<String, GroupSection>, folder: &str) -> Vec<McpServer> {
    groups
        .get(folder)
        .map(|g| {
            g.mcp_servers
                .iter()
                .map(|(name, s)| McpServer {
                    name: name.clone(),
                    command: s.command.clone(),
                    args: s.args.clone(),
                    env: s.env.clone(),
                    skill: None,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> BTreeMap<String, GroupSection> {
        #[derive(Deserialize)]
        struct Doc {
            groups: BTreeMap<String, GroupSection>,
        }
        toml::from_str::<Doc>(toml_text).unwrap().groups
    }

    #[test]
    fn a_groups_servers_are_read_in_name_order() {
        let groups = parse(
            r#"
[groups.main.mcp_servers.time]
command = "/opt/mcp/bin/mcp-server-time"
args = ["--local-timezone", "UTC"]
[groups.main.mcp_servers.fetch]
command = "mcp-server-fetch"
env = { USER_AGENT = "nanoclaw" }
"#,
        );
        validate(&groups).unwrap();
        let servers = group_mcp_servers(&groups, "main");
        assert_eq!(
            servers.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["fetch", "time"]
        );
        assert_eq!(servers[1].args, ["--local-timezone", "UTC"]);
        assert_eq!(servers[0].env["USER_AGENT"], "nanoclaw");
        assert!(servers.iter().all(|s| s.skill.is_none()));
        assert!(group_mcp_servers(&groups, "other").is_empty());
    }

    #[test]
    fn bad_entries_are_refused_naming_the_setting() {
        let cases = [
            (
                "[groups.main.mcp_servers.\"my server\"]\ncommand = \"x\"",
                "groups.main.mcp_servers.my server: the server name",
            ),
            (
                "[groups.main.mcp_servers.t]\ncommand = \"  \"",
                "`command` is empty",
            ),
            (
                "[groups.main.mcp_servers.t]\ncommand = \"x --flag \"",
                "put arguments in `args`",
            ),
            (
                "[groups.main.mcp_servers.t]\ncommand = \"x\"\nenv = { HTTPS_PROXY = \"http://a\" }",
                "HTTPS_PROXY is set by nanoclaw",
            ),
            (
                "[groups.main.mcp_servers.t]\ncommand = \"x\"\nenv = { \"1A\" = \"b\" }",
                "is not a variable name",
            ),
            (
                "[groups.\"../etc\".mcp_servers.t]\ncommand = \"x\"",
                "group folder",
            ),
        ];
        for (text, expected) in cases {
            let err = validate(&parse(text)).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
        let unknown = toml::from_str::<GroupSection>("[mcp_servers.t]\ncommand = \"x\"\nargv = []");
        assert!(unknown.unwrap_err().to_string().contains("argv"));
    }
}
