//! A group's MCP servers from the host's configuration, end to end: the host hands them to the
//! agent in `hello`, the agent starts them inside the sandbox — native, and Docker on a Debian
//! agent image built here without any registry — (the reference `mcp-server-time` and
//! `mcp-server-fetch` from PyPI, in a virtual environment the group mounts read-only), and the
//! scripted model calls their tools; fetch's network goes through the group's egress proxy. A
//! skill's declared MCP server comes and goes with the skill.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use nanoclaw_sandbox::image::ImageKind;
use nanoclaw_store::{NewGroup, Store};
use nanoclaw_test_support::TestHome;
use nanoclaw_test_support::scripted_model::{Matcher, Reply, Scenario, ScriptedModel};
use serde_json::{Value, json};

use super::common::*;

/// Where `scripts/prerequisites --tests` installs the MCP servers; `NANOCLAW_MCP_VENV`
/// overrides it.
const MCP_VENV: &str = "/opt/nanoclaw-tests/mcp";

fn venv() -> PathBuf {
    let venv = std::env::var_os("NANOCLAW_MCP_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(MCP_VENV));
    assert!(
        venv.join("bin/mcp-server-time").exists(),
        "the MCP test servers are not installed at {}: run scripts/prerequisites --tests",
        venv.display()
    );
    std::fs::canonicalize(venv).unwrap()
}

/// The Docker test's agent image: the Debian one (the Containerfile installs bookworm's
/// python3, the interpreter the venv was made with), under a tag of the tests' own.
const MCP_DOCKER_IMAGE: &str = "nanoclaw-agent-mcp-test:debian";

/// The sandbox runtime the daemon runs agents in.
#[derive(Clone, Copy)]
enum McpRuntime {
    Native,
    /// Docker with this agent image.
    Docker(&'static str),
}

impl McpRuntime {
    /// The value of `NANOCLAW_RUNTIME`.
    fn name(self) -> &'static str {
        match self {
            McpRuntime::Native => "native",
            McpRuntime::Docker(_) => "docker",
        }
    }

    /// The config.toml that pins this runtime (before the group's part).
    fn config_toml(self) -> String {
        match self {
            McpRuntime::Native => NATIVE_CONFIG_TOML.to_string(),
            McpRuntime::Docker(image) => docker_config_toml(image),
        }
    }
}

/// A daemon on `home` running agents on `runtime`, whose main group mounts the MCP venv
/// read-only at `/workspace/extra/mcp` (through the allowlist) and has `group_config` in its
/// config.toml.
async fn host_with_mcp_venv(
    home: &TestHome,
    model: &ScriptedModel,
    runtime: McpRuntime,
    group_config: &str,
) -> (KillOnDrop, tempfile::TempDir) {
    let allow_dir = tempfile::tempdir().unwrap();
    let allowlist = allow_dir.path().join("mount-allowlist.toml");
    let venv = venv();
    std::fs::write(
        &allowlist,
        format!("[[allow]]\npath = {:?}\n", venv.display()),
    )
    .unwrap();

    // The venv is mounted at /workspace/extra/mcp; its python finds its packages from there.
    // That path exists only inside the sandbox, so the server cannot have run anywhere else.
    std::fs::write(
        home.path().join("config.toml"),
        format!("{}\n{group_config}", runtime.config_toml()),
    )
    .unwrap();
    let store = Store::open(&home.path().join("nanoclaw.db")).unwrap();
    store
        .ensure_group(NewGroup {
            name: "main".into(),
            folder: "main".into(),
            is_main: true,
            ..NewGroup::default()
        })
        .await
        .unwrap();
    drop(store);

    let out = nanoclaw_command(
        home.path(),
        model,
        Some(TEST_KEY),
        &[
            "group",
            "mount",
            "add",
            "main",
            &venv.display().to_string(),
            "--name",
            "mcp",
        ],
    )
    .env("NANOCLAW_MOUNT_ALLOWLIST", &allowlist)
    .env("NANOCLAW_RUNTIME", runtime.name())
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let daemon = KillOnDrop(
        daemon_command(
            home.path(),
            model,
            TEST_KEY,
            &nanoclaw_test_support::agent_binary(),
        )
        .env("NANOCLAW_RUNTIME", runtime.name())
        .env("NANOCLAW_LOG", "debug")
        .env("NANOCLAW_MOUNT_ALLOWLIST", &allowlist)
        .spawn()
        .unwrap(),
    );
    (daemon, allow_dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_mcp_servers_run_in_the_sandbox_and_their_network_goes_through_the_proxy() {
    groups_mcp_servers_answer_through_the_proxy(McpRuntime::Native).await;
}

/// The same on the Docker runtime, in the Debian agent image made by debootstrap (no registry;
/// built only when missing or outdated). Skips (loudly) only when no engine answers; CI has one.
/// The group mount needs nothing of its own on Docker: it is a read-only bind mount at the same
/// `/workspace/extra/mcp`; the venv (root's, folders 0755, files 0644) is readable by the
/// container's unprivileged user, so the host leaves its owner alone; and the venv's
/// `bin/python3`, a link to `/usr/bin/python3`, resolves inside the container to the image's
/// bookworm python3, the interpreter the venv was made with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_docker_a_groups_mcp_servers_run_in_the_container_and_their_network_goes_through_the_proxy()
 {
    if ensure_agent_image(MCP_DOCKER_IMAGE, ImageKind::Debootstrap, false)
        .await
        .is_err()
    {
        eprintln!("SKIPPED the MCP test on Docker: no Docker engine answers here");
        return;
    }
    groups_mcp_servers_answer_through_the_proxy(McpRuntime::Docker(MCP_DOCKER_IMAGE)).await;
}

/// The group's time and fetch servers on `runtime`: the model is offered their tools, the time
/// server's answer reaches it, and fetch's request is refused by the egress proxy.
async fn groups_mcp_servers_answer_through_the_proxy(runtime: McpRuntime) {
    let home = TestHome::new();
    let scenario = Scenario::new()
        .with_api_key(TEST_KEY)
        .rule(
            Matcher::LastIsToolResult,
            Reply::text("TIME[{{last_tool_result}}]"),
        )
        .rule(
            Matcher::LastUserTextContains("Tokyo".into()),
            Reply::tool_call("time__get_current_time", json!({"timezone": "Asia/Tokyo"})),
        )
        .rule(
            Matcher::LastUserTextContains("fetch".into()),
            Reply::tool_call(
                "fetch__fetch",
                json!({"url": "http://ungranted.example/page"}),
            ),
        )
        .rule(Matcher::Always, Reply::text("nothing to do"));
    let model = ScriptedModel::start(scenario).await.unwrap();
    let (_daemon, _allow) = host_with_mcp_venv(
        &home,
        &model,
        runtime,
        "[groups.main.mcp_servers.time]
command = \"/workspace/extra/mcp/bin/python3\"
args = [\"-m\", \"mcp_server_time\", \"--local-timezone\", \"UTC\"]
[groups.main.mcp_servers.fetch]
command = \"/workspace/extra/mcp/bin/python3\"
args = [\"-m\", \"mcp_server_fetch\", \"--ignore-robots-txt\"]
",
    )
    .await;
    let mut client = connect_client(home.path()).await;
    let (kind, reply) = ask(&mut client, "what time is it in Tokyo?").await;
    let log = std::fs::read_to_string(home.path().join("daemon.log")).unwrap_or_default();
    assert_eq!(kind, "reply", "{reply}\n{log}");
    // The runtime under test ran the agent (an explicit runtime never falls back, but a test
    // that passed on the wrong one would prove nothing): the daemon names it when ready.
    assert!(
        log.contains(&format!("runtime=\"{}\"", runtime.name())),
        "{log}"
    );
    let json_start = reply
        .find('{')
        .unwrap_or_else(|| panic!("no JSON in {reply:?}\n{log}"));
    let answer: Value = serde_json::from_str(reply[json_start..].trim_end_matches(']'))
        .unwrap_or_else(|e| panic!("{e}: {reply}"));
    assert_eq!(answer["timezone"], "Asia/Tokyo", "{reply}");
    assert!(
        answer["datetime"]
            .as_str()
            .is_some_and(|d| d.ends_with("+09:00")),
        "{reply}"
    );

    // The model was offered the server's tools next to the built-in ones.
    let first = &model.requests()[0];
    let tools: Vec<&str> = first.body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        tools.contains(&"time__get_current_time")
            && tools.contains(&"fetch__fetch")
            && tools.contains(&"bash"),
        "{tools:?}"
    );

    // The fetch server's request goes through the group's egress proxy, which refuses a host
    // nobody granted; the model reads the refusal as the tool's error.
    let (kind, reply) = ask(&mut client, "please fetch that page").await;
    let log = std::fs::read_to_string(home.path().join("daemon.log")).unwrap_or_default();
    assert_eq!(kind, "reply", "{reply}\n{log}");
    assert!(reply.starts_with("TIME["), "{reply}");
    // Without the proxy there would be no answer at all (the sandbox has no network): a 403
    // is the proxy's deny-by-default answer.
    assert!(
        reply.contains("403"),
        "the proxy's refusal reaches the model: {reply}\n{log}"
    );
}

/// `nanoclaw ARGS` on `home` as the owner runs it, while the daemon runs: (success, output).
fn owner_cli(home: &std::path::Path, model: &ScriptedModel, args: &[&str]) -> (bool, String) {
    let out = nanoclaw_command(home, model, Some(TEST_KEY), args)
        .env("NANOCLAW_RUNTIME", "native")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The tools the model was offered in its latest request.
fn offered_tools(model: &ScriptedModel) -> Vec<String> {
    let requests = model.requests();
    let last = requests.last().expect("the model was asked");
    last.body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}

/// An MCP server declared by a skill (`[mcp_servers]` in its skill.toml): enabled from the CLI
/// while the host runs, the next turn's agent starts it in the sandbox and the model calls it as
/// `<server>__<tool>`; disabled, the next turn no longer offers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skills_mcp_server_comes_and_goes_with_the_skill() {
    let home = TestHome::new();
    let skill = home.path().join("skills/clock");
    std::fs::create_dir_all(&skill).unwrap();
    std::fs::write(
        skill.join("SKILL.md"),
        "---\nname: clock\ndescription: Tells the time anywhere. Use when asked what time it is.\n---\nCall clock__get_current_time.\n",
    )
    .unwrap();
    std::fs::write(
        skill.join("skill.toml"),
        "version = \"1.0.0\"\n\n[mcp_servers.clock]\ncommand = \"/workspace/extra/mcp/bin/python3\"\nargs = [\"-m\", \"mcp_server_time\", \"--local-timezone\", \"UTC\"]\n",
    )
    .unwrap();
    let scenario = Scenario::new()
        .with_api_key(TEST_KEY)
        .rule(
            Matcher::LastIsToolResult,
            Reply::text("CLOCK[{{last_tool_result}}]"),
        )
        .rule(
            Matcher::LastUserTextContains("Sydney".into()),
            Reply::tool_call(
                "clock__get_current_time",
                json!({"timezone": "Australia/Sydney"}),
            ),
        )
        .rule(Matcher::Always, Reply::text("nothing to do"));
    let model = ScriptedModel::start(scenario).await.unwrap();
    let (_daemon, _allow) = host_with_mcp_venv(&home, &model, McpRuntime::Native, "").await;
    let mut client = connect_client(home.path()).await;

    let (_, reply) = ask(&mut client, "hello").await;
    assert_eq!(reply, "nothing to do");
    assert!(
        !offered_tools(&model)
            .iter()
            .any(|t| t.starts_with("clock__"))
    );

    let (ok, out) = owner_cli(home.path(), &model, &["skills", "enable", "clock"]);
    assert!(ok, "{out}");
    assert!(out.contains("clock"), "enable names the MCP server: {out}");
    let (kind, reply) = ask(&mut client, "what time is it in Sydney?").await;
    let log = std::fs::read_to_string(home.path().join("daemon.log")).unwrap_or_default();
    assert_eq!(kind, "reply", "{reply}\n{log}");
    assert!(reply.starts_with("CLOCK["), "{reply}\n{log}");
    assert!(reply.contains("Australia/Sydney"), "{reply}");
    assert!(
        reply.contains("+10:00") || reply.contains("+11:00"),
        "the real server's answer: {reply}"
    );

    let (ok, out) = owner_cli(home.path(), &model, &["skills", "disable", "clock"]);
    assert!(ok, "{out}");
    let (_, reply) = ask(&mut client, "hello again").await;
    assert_eq!(reply, "nothing to do");
    let tools = offered_tools(&model);
    assert!(
        !tools.iter().any(|t| t.starts_with("clock__")),
        "gone after disable: {tools:?}"
    );
}
