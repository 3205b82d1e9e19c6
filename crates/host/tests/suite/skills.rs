//! Skills wired into the host: enabled and disabled from the CLI while the host runs (the next
//! turn's agent has them, or not), mounted read-only and listed in the system prompt, paused
//! when their files change until the owner approves, and their declared egress allowed for the
//! enabling group only, with only the declared methods.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::common::*;
use nanoclaw_egress::{
    AddressGuard, EgressProxy, MemoryAudit, NoSecrets, StaticResolver, StorePolicySource,
};
use nanoclaw_store::{EgressSettings, NewGroup, Store};
use nanoclaw_test_support::scripted_model::{Matcher, Reply, Scenario, ScriptedModel};
use nanoclaw_test_support::{TestHome, eventually};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};

const SKILL_BODY: &str = "# Notes\n\nNOTES-SKILL-INSTRUCTIONS: keep notes in notes.txt.\n";

fn write_skill(root: &Path, name: &str, toml: &str) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("SKILL.md"),
        format!(
            "---\nname: {name}\ndescription: Keeps the family's notes. Use when asked to note things.\n---\n{SKILL_BODY}"
        ),
    )
    .unwrap();
    if !toml.is_empty() {
        std::fs::write(dir.join("skill.toml"), toml).unwrap();
    }
}

/// `nanoclaw ARGS` on `home` as the owner runs it: (success, stdout + stderr).
fn cli(home: &Path, args: &[&str]) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nanoclaw"));
    let out = nanoclaw_test_support::hermetic(cmd.args(args).env_clear())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("NANOCLAW_HOME", home)
        .env("NO_COLOR", "1")
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

async fn run_cli(home: &Path, args: &[&str]) -> (bool, String) {
    let home = home.to_owned();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&home, &args)
    })
    .await
    .unwrap()
}

/// The model: reads or writes the skill's SKILL.md when asked, says whether its system prompt
/// lists the skill, and echoes tool results.
fn scenario() -> Scenario {
    Scenario::new()
        .with_api_key(TEST_KEY)
        .rule(
            Matcher::LastIsToolResult,
            Reply::text("Tool said: {{last_tool_result}}"),
        )
        .rule(
            Matcher::last_user_text_contains("read the notes skill"),
            Reply::tool_call(
                "read_file",
                json!({"path": "/workspace/skills/notes/SKILL.md"}),
            ),
        )
        .rule(
            Matcher::last_user_text_contains("overwrite the notes skill"),
            Reply::tool_call(
                "write_file",
                json!({"path": "/workspace/skills/notes/SKILL.md", "content": "pwned"}),
            ),
        )
        .rule(
            Matcher::last_user_text_contains("Run the tool `notes__count`"),
            Reply::tool_call("notes__count", json!({"what": "apples"})),
        )
        .rule(
            Matcher::last_user_text_contains("NOTE-COMMAND-PROMPT"),
            Reply::text("COMMAND RAN: {{last_user_text}}"),
        )
        .rule(
            Matcher::system_contains(
                "- notes (/workspace/skills/notes): Keeps the family's notes.",
            ),
            Reply::text("SKILLS: notes"),
        )
        .rule(Matcher::Always, Reply::text("SKILLS: none"))
}

fn last_system_prompt(model: &ScriptedModel) -> String {
    let requests = model.requests();
    let body: &Value = &requests.last().expect("the model was asked").body;
    match &body["system"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skills_enabled_from_the_cli_reach_the_next_turn_read_only_and_pause_when_changed() {
    let home = TestHome::new();
    let model = ScriptedModel::start(scenario()).await.unwrap();
    let host = start_host(home.path(), &model, config_for_tests()).await;
    let mut client = connect_client(home.path()).await;
    let user_skills = home.path().join("skills");
    write_skill(
        &user_skills,
        "notes",
        "[commands.note-it]\ndescription = \"Note something\"\nprompt = \"NOTE-COMMAND-PROMPT: note this.\"\n",
    );

    // Installed but not enabled: the agent is not told about it.
    let (_, text) = ask(&mut client, "hello").await;
    assert_eq!(text, "SKILLS: none");
    assert!(!last_system_prompt(&model).contains("# Skills"));

    // Enabled while the host runs: the next turn's agent has it (the warm agent is replaced).
    let (ok, out) = run_cli(home.path(), &["skills", "enable", "notes"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("enabled notes for group main"), "{out}");
    assert!(out.contains("next turn"), "{out}");
    let (_, text) = ask(&mut client, "hello again").await;
    assert_eq!(text, "SKILLS: notes", "{}", last_system_prompt(&model));
    let prompt = last_system_prompt(&model);
    assert!(prompt.contains("read its SKILL.md"), "{prompt}");
    // Progressive disclosure: the body is not in the prompt; the agent reads it.
    assert!(!prompt.contains("NOTES-SKILL-INSTRUCTIONS"), "{prompt}");
    let (_, text) = ask(&mut client, "read the notes skill").await;
    assert!(text.contains("NOTES-SKILL-INSTRUCTIONS"), "{text}");

    // The skill's chat command becomes its prompt (with the arguments) for this group.
    let (_, text) = ask(&mut client, "/note-it buy milk").await;
    assert!(
        text.starts_with("COMMAND RAN:") && text.contains("buy milk"),
        "{text}"
    );

    // The owner's `/skills` and `/skill-graph` are answered by the host, not the agent.
    let asked = model.requests().len();
    client.send("/skills").await.unwrap();
    client.send("/skill-graph").await.unwrap();
    let (_, chat) = main_and_terminal(host.store()).await;
    let store = host.store().clone();
    let answers = eventually(30, "the skills commands' answers", || {
        let store = store.clone();
        async move {
            let texts: Vec<String> = store
                .outbound_for_chat(chat.id)
                .await
                .ok()?
                .into_iter()
                .map(|o| o.text)
                .collect();
            let list = texts
                .iter()
                .find(|t| t.starts_with("Skills by group"))?
                .clone();
            let graph = texts
                .iter()
                .find(|t| !t.starts_with("Skills by group") && t.contains("[enabled] notes"))?
                .clone();
            Some((list, graph))
        }
    })
    .await;
    assert!(answers.0.contains("notes [enabled]"), "{}", answers.0);
    assert_eq!(model.requests().len(), asked, "no agent saw them");

    // Mounted read-only: the agent cannot change what the host trusts.
    let (_, text) = ask(&mut client, "overwrite the notes skill").await;
    assert!(
        text.starts_with("Tool said:") && text.contains("cannot write"),
        "{text}"
    );
    let on_disk = std::fs::read_to_string(user_skills.join("notes/SKILL.md")).unwrap();
    assert!(on_disk.contains("NOTES-SKILL-INSTRUCTIONS"), "{on_disk}");

    // Its files change: the next turn pauses it (not given to the agent) and tells the owner.
    std::fs::write(user_skills.join("notes/references.md"), "new file").unwrap();
    let (_, text) = ask(&mut client, "hello after the change").await;
    assert_eq!(text, "SKILLS: none");
    // Its command is gone with it: an ordinary message now.
    let (_, text) = ask(&mut client, "/note-it buy bread").await;
    assert_eq!(text, "SKILLS: none");
    let (_, text) = ask(&mut client, "one more turn").await;
    assert_eq!(text, "SKILLS: none");
    let (ok, out) = run_cli(home.path(), &["skills", "list", "--json"]).await;
    assert!(ok, "{out}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    // The bundled skills are listed too; find ours by name.
    let notes = listed["skills"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "notes")
        .unwrap();
    assert_eq!(notes["state"], "paused", "{listed}");
    let notices: Vec<String> = host
        .store()
        .outbound_for_chat(chat.id)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.text)
        .filter(|t| t.contains("Skill notes of group main is paused"))
        .collect();
    assert_eq!(notices.len(), 1, "told once: {notices:?}");
    assert!(
        notices[0].contains("nanoclaw skills approve notes --group main"),
        "{notices:?}"
    );
    // Enabling again does not approve the change behind the owner's back.
    let (ok, out) = run_cli(home.path(), &["skills", "enable", "notes"]).await;
    assert!(!ok && out.contains("skills approve notes"), "{out}");

    // Approved: back on the next turn.
    let (ok, out) = run_cli(home.path(), &["skills", "approve", "notes"]).await;
    assert!(ok, "{out}");
    let (_, text) = ask(&mut client, "hello after approval").await;
    assert_eq!(text, "SKILLS: notes");

    // Disabled: gone from the next turn.
    let (ok, out) = run_cli(home.path(), &["skills", "disable", "notes"]).await;
    assert!(ok, "{out}");
    let (_, text) = ask(&mut client, "hello after disabling").await;
    assert_eq!(text, "SKILLS: none");
    host.shutdown().await;
}

/// An HTTP upstream that answers 200 with the method and path it saw.
async fn upstream() -> SocketAddr {
    let app = axum::Router::new().fallback(|req: axum::extract::Request| async move {
        format!("{} {}", req.method(), req.uri())
    });
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// One plain-HTTP proxy request through `socket`; the answer's status.
async fn status(socket: &Path, method: &str, host: &str, port: u16) -> u16 {
    let mut s = UnixStream::connect(socket).await.unwrap();
    let raw = format!(
        "{method} http://{host}:{port}/items HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the proxy answered")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skills_declared_host_is_reachable_for_the_enabling_group_only_with_its_methods() {
    let home = TestHome::new();
    let store = Store::open(&home.path().join("nanoclaw.db")).unwrap();
    let up = upstream().await;
    let mut ids = Vec::new();
    for (folder, is_main) in [("main", true), ("other", false)] {
        let g = store
            .ensure_group(NewGroup {
                name: folder.into(),
                folder: folder.into(),
                is_main,
                ..NewGroup::default()
            })
            .await
            .unwrap();
        // The test upstream's port, for both groups alike.
        store
            .set_egress_settings(
                g.id.as_str(),
                EgressSettings {
                    methods: None,
                    ports: Some(vec![up.port()]),
                },
            )
            .await
            .unwrap();
        ids.push(g.id);
    }
    write_skill(
        &home.path().join("skills"),
        "tracker",
        "[[egress]]\nhost = \"api.tracker.test\"\nmethods = [\"GET\"]\n",
    );
    let (ok, out) = run_cli(
        home.path(),
        &["skills", "enable", "tracker", "--group", "main"],
    )
    .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("tracker: may reach api.tracker.test (GET)"),
        "{out}"
    );

    let local: IpAddr = "127.0.0.1".parse().unwrap();
    let resolver = StaticResolver::new()
        .with("api.tracker.test", &[local])
        .with("undeclared.test", &[local]);
    let source = Arc::new(
        StorePolicySource::new(store.clone())
            .with_guard_for_tests(AddressGuard::allow_loopback_for_tests()),
    );
    let proxy = EgressProxy::build(
        source,
        Arc::new(resolver),
        Arc::new(MemoryAudit::default()),
        Arc::new(NoSecrets),
    );
    let dir = tempfile::tempdir().unwrap();
    let (main_sock, other_sock) = (dir.path().join("main.sock"), dir.path().join("other.sock"));
    let _main = proxy.serve(&main_sock, "main").unwrap();
    let _other = proxy.serve(&other_sock, "other").unwrap();

    assert_eq!(
        status(&main_sock, "GET", "api.tracker.test", up.port()).await,
        200
    );
    // Declared GET only.
    assert_eq!(
        status(&main_sock, "POST", "api.tracker.test", up.port()).await,
        403
    );
    // Undeclared stays denied.
    assert_eq!(
        status(&main_sock, "GET", "undeclared.test", up.port()).await,
        403
    );
    // The group that did not enable it is refused the declared host.
    assert_eq!(
        status(&other_sock, "GET", "api.tracker.test", up.port()).await,
        403
    );

    // Disabled: refused again, on the running proxy (its policy is re-read within a second).
    let (ok, out) = run_cli(
        home.path(),
        &["skills", "disable", "tracker", "--group", "main"],
    )
    .await;
    assert!(ok, "{out}");
    eventually(30, "the disabled skill's host to be refused", || {
        let sock = main_sock.clone();
        async move {
            (status(&sock, "GET", "api.tracker.test", up.port()).await == 403).then_some(())
        }
    })
    .await;
    assert!(
        store
            .skill_egress_rules(ids[0].as_str())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skills_secret_is_usable_by_placeholder_on_its_hosts_for_the_enabling_group_only() {
    use nanoclaw_vault::{ExposeSecret, MasterKey, SecretString, Vault};

    let home = TestHome::new();
    let store = Store::open(&home.path().join("nanoclaw.db")).unwrap();
    for (folder, is_main) in [("main", true), ("other", false)] {
        store
            .ensure_group(NewGroup {
                name: folder.into(),
                folder: folder.into(),
                is_main,
                ..NewGroup::default()
            })
            .await
            .unwrap();
    }
    let vault = Vault::open(store.clone(), MasterKey::from_bytes([42u8; 32]))
        .await
        .unwrap();
    write_skill(
        &home.path().join("skills"),
        "tracker",
        "[[egress]]\nhost = \"api.tracker.test\"\nmethods = [\"GET\"]\n\n\
         [[secrets]]\nname = \"tracker-token\"\nhosts = [\"api.tracker.test\"]\n",
    );
    // Declared but not in the vault yet: enabled, with a warning naming the fix.
    let (ok, out) = run_cli(home.path(), &["skills", "enable", "tracker"]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("secret tracker-token is not in the vault yet")
            && out.contains("nanoclaw vault set tracker-token"),
        "{out}"
    );
    assert!(vault.placeholder_env("main").await.unwrap().is_empty());

    vault
        .set("tracker-token", SecretString::from("s3cret-value"))
        .await
        .unwrap();
    let env = vault.placeholder_env("main").await.unwrap();
    let (name, placeholder) = env.first().cloned().expect("a placeholder for main");
    assert_eq!(name, "NANOCLAW_SECRET_TRACKER_TOKEN");
    assert!(vault.placeholder_env("other").await.unwrap().is_empty());
    let on = |group: &'static str, host: &'static str| {
        let (vault, placeholder) = (vault.clone(), placeholder.clone());
        async move {
            vault
                .resolve_placeholder(group, &placeholder, host, "/items")
                .await
                .unwrap()
                .map(|s| s.expose_secret().to_owned())
        }
    };
    assert_eq!(
        on("main", "api.tracker.test").await.as_deref(),
        Some("s3cret-value")
    );
    assert_eq!(
        on("main", "evil.test").await,
        None,
        "only its declared hosts"
    );
    assert_eq!(
        on("other", "api.tracker.test").await,
        None,
        "only the enabling group"
    );
    // A skill grant never injects by itself (skill.toml names no injection).
    assert!(
        vault
            .injection_for("main", "api.tracker.test", "/items")
            .await
            .unwrap()
            .is_none()
    );

    let (ok, out) = run_cli(home.path(), &["skills", "disable", "tracker"]).await;
    assert!(ok, "{out}");
    assert!(vault.placeholder_env("main").await.unwrap().is_empty());
    assert_eq!(on("main", "api.tracker.test").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enabling_pulls_in_requirements_and_schedules_and_disabling_respects_dependents() {
    let home = TestHome::new();
    let model = ScriptedModel::start(scenario()).await.unwrap();
    let host = start_host(home.path(), &model, config_for_tests()).await;
    let skills = home.path().join("skills");
    write_skill(
        &skills,
        "report",
        "version = \"1.0.0\"\n[requires]\nfetch = \"^2\"\n\n[[schedules]]\nname = \"monday\"\ncron = \"0 8 * * MON\"\nprompt = \"Write the weekly report.\"\n",
    );
    write_skill(&skills, "fetch", "version = \"2.1.0\"\n");
    write_skill(&skills, "loop-a", "[requires]\nloop-b = \"*\"\n");
    write_skill(&skills, "loop-b", "[requires]\nloop-a = \"*\"\n");

    // A cycle is refused with the library's message, and nothing is enabled.
    let (ok, out) = run_cli(home.path(), &["skills", "enable", "loop-a"]).await;
    assert!(!ok && out.contains("loop-a → loop-b → loop-a"), "{out}");

    let (ok, out) = run_cli(home.path(), &["skills", "enable", "report", "--json"]).await;
    assert!(ok, "{out}");
    let done: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(done["added"], json!(["fetch"]));
    let main = host.store().group_by_folder("main").await.unwrap().unwrap();
    let tasks = host
        .store()
        .list_tasks(Some(main.id.clone()))
        .await
        .unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].created_by, "skill:report:monday");
    assert_eq!(tasks[0].prompt, "Write the weekly report.");
    // Enabling again adds no second task.
    let (ok, out) = run_cli(home.path(), &["skills", "enable", "report"]).await;
    assert!(ok, "{out}");
    assert_eq!(
        host.store()
            .list_tasks(Some(main.id.clone()))
            .await
            .unwrap()
            .len(),
        1
    );

    let (ok, out) = run_cli(home.path(), &["skills", "graph", "--format", "mermaid"]).await;
    assert!(ok && out.contains("graph TD"), "{out}");
    let (ok, out) = run_cli(home.path(), &["skills", "graph"]).await;
    assert!(ok && out.contains("[enabled] report 1.0.0"), "{out}");

    // fetch is still needed by report.
    let (ok, out) = run_cli(home.path(), &["skills", "disable", "fetch"]).await;
    assert!(!ok && out.contains("report requires fetch"), "{out}");
    let (ok, out) = run_cli(
        home.path(),
        &["skills", "disable", "fetch", "--with-dependents", "--json"],
    )
    .await;
    assert!(ok, "{out}");
    let done: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(done["disabled"], json!(["fetch", "report"]));
    let tasks = host
        .store()
        .list_tasks(Some(main.id.clone()))
        .await
        .unwrap();
    assert_eq!(tasks[0].status, nanoclaw_store::TaskStatus::Cancelled);
    assert!(
        host.store()
            .group_skills(main.id.as_str())
            .await
            .unwrap()
            .is_empty()
    );
    host.shutdown().await;
}

/// A bundled skill end to end: the built-in `web-research` enabled from the CLI, its script tool
/// run by the agent inside the sandbox (as the sandbox user, also when the host is root: the
/// scripts are two folders deep in a read-only mount), its request through the egress proxy,
/// which refuses a host the skill did not declare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundled_skills_script_tool_runs_in_the_sandbox_through_the_proxy() {
    let home = TestHome::new();
    let scenario = Scenario::new()
        .with_api_key(TEST_KEY)
        .rule(
            Matcher::LastIsToolResult,
            Reply::text("Tool said: {{last_tool_result}}"),
        )
        .rule(
            Matcher::last_user_text_contains("read the page"),
            Reply::tool_call(
                "web-research__fetch_page",
                json!({"url": "http://undeclared.example/secret-plans"}),
            ),
        )
        .rule(Matcher::Always, Reply::text("nothing to do"));
    let model = ScriptedModel::start(scenario).await.unwrap();
    let host = start_host(home.path(), &model, config_for_tests()).await;
    let mut client = connect_client(home.path()).await;

    let (ok, out) = run_cli(home.path(), &["skills", "enable", "web-research"]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("html.duckduckgo.com"),
        "enable lists the grants: {out}"
    );
    let (_, text) = ask(&mut client, "read the page for me").await;
    assert!(text.starts_with("Tool said:"), "{text}");
    // The script ran (its own message format) and the proxy refused the undeclared host.
    assert!(
        text.contains("HTTP 403") && text.contains("http://undeclared.example/secret-plans"),
        "{text}"
    );
    assert!(!text.contains("Permission denied"), "{text}");
    let prompt = last_system_prompt(&model);
    assert!(
        prompt.contains("- web-research (/workspace/skills/web-research)"),
        "{prompt}"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_enables_disables_and_approves_from_the_main_chat_and_a_paused_requirement_pauses_what_needs_it()
 {
    let home = TestHome::new();
    let model = ScriptedModel::start(scenario()).await.unwrap();
    let host = start_host(home.path(), &model, config_for_tests()).await;
    let mut client = connect_client(home.path()).await;
    let user_skills = home.path().join("skills");
    write_skill(&user_skills, "base", "version = \"1.2.0\"\n");
    write_skill(
        &user_skills,
        "notes",
        "[requires]\nbase = \"^1\"\n\n[commands.count]\ndescription = \"Count things\"\ntool = \"count\"\n\n\
         [[tools]]\nname = \"count\"\ndescription = \"Counts things.\"\nscript = \"scripts/count.sh\"\n\
         input_schema = { type = \"object\", properties = { what = { type = \"string\" } } }\n",
    );
    std::fs::create_dir_all(user_skills.join("notes/scripts")).unwrap();
    std::fs::write(
        user_skills.join("notes/scripts/count.sh"),
        "#!/bin/sh\nread -r input\necho \"COUNTED $input\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        user_skills.join("notes/scripts/count.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let store = host.store().clone();
    let (_, chat) = main_and_terminal(&store).await;
    let asked = model.requests().len();

    // Enabled from the chat, with what it requires; answered by the host, no agent asked.
    let answer = owner_command(&mut client, &store, chat.id, "/skills enable notes").await;
    assert!(answer.contains("enabled notes for group main"), "{answer}");
    assert!(
        answer.contains("also enabled, because they are required: base"),
        "{answer}"
    );
    assert_eq!(model.requests().len(), asked, "no agent saw the command");
    let (_, text) = ask(&mut client, "hello").await;
    assert_eq!(text, "SKILLS: notes");
    // A tool-backed command: the agent is asked to run that tool, which runs in the sandbox.
    let (_, text) = ask(&mut client, "/count apples please").await;
    assert!(
        text.starts_with("Tool said:") && text.contains("COUNTED") && text.contains("apples"),
        "{text}"
    );

    // The requirement's files change: it is paused, and so is what requires it (notes' own
    // files did not change, but it would run without what it was approved with).
    std::fs::write(user_skills.join("base/extra.md"), "changed").unwrap();
    let (_, text) = ask(&mut client, "hello after the change").await;
    assert_eq!(text, "SKILLS: none");
    let rows = store
        .group_skills(chat_main_group(&store).await)
        .await
        .unwrap();
    let state = |name: &str| {
        rows.iter()
            .find(|r| r.skill == name)
            .map(|r| {
                (
                    r.state.as_str().to_owned(),
                    r.paused_reason.clone().unwrap_or_default(),
                )
            })
            .unwrap()
    };
    assert_eq!(state("base").0, "paused");
    assert_eq!(state("notes").0, "paused");
    assert!(
        state("notes").1.contains("requires base"),
        "{:?}",
        state("notes")
    );
    let notices: Vec<String> = store
        .outbound_for_chat(chat.id)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.text)
        .filter(|t| t.contains("is paused"))
        .collect();
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(
        notices.iter().any(|n| n.contains("/skills approve base")),
        "{notices:?}"
    );

    // Approved from the chat: both resume.
    let answer = owner_command(&mut client, &store, chat.id, "/skills approve base").await;
    assert!(answer.contains("approved base for group main"), "{answer}");
    assert!(
        answer.contains("resumed with it (they require it): notes"),
        "{answer}"
    );
    let (_, text) = ask(&mut client, "hello after approval").await;
    assert_eq!(text, "SKILLS: notes");

    // Disabling a requirement is refused while something needs it, then done with it.
    let answer = owner_command(&mut client, &store, chat.id, "/skills disable base").await;
    assert!(answer.contains("notes requires base"), "{answer}");
    let (_, text) = ask(&mut client, "still there?").await;
    assert_eq!(text, "SKILLS: notes");
    let answer = owner_command(
        &mut client,
        &store,
        chat.id,
        "/skills disable base --with-dependents",
    )
    .await;
    assert!(
        answer.contains("disabled base, notes for group main"),
        "{answer}"
    );
    let (_, text) = ask(&mut client, "hello after disabling").await;
    assert_eq!(text, "SKILLS: none");
    let answer = owner_command(&mut client, &store, chat.id, "/skills frobnicate").await;
    assert!(answer.contains("Usage: /skills"), "{answer}");

    // Every change, the refusal and the pauses are in the hash-chained audit log.
    let audit = store
        .audit_rows(0, Some("main".into()), 1000)
        .await
        .unwrap();
    let admin: Vec<(String, String, String)> = audit
        .iter()
        .filter(|r| r.method == "ADMIN" && r.path.starts_with("/groups/main/skills/"))
        .map(|r| (r.path.clone(), r.decision.clone(), r.reason.clone()))
        .collect();
    let has = |path: &str, decision: &str, words: &str| {
        admin
            .iter()
            .any(|(p, d, r)| p == path && d == decision && r.contains(words))
    };
    assert!(
        has(
            "/groups/main/skills/notes",
            "allow",
            "skills enable notes by chat terminal:local"
        ),
        "{admin:?}"
    );
    assert!(
        has(
            "/groups/main/skills/base",
            "deny",
            "skill base paused: its files changed"
        ),
        "{admin:?}"
    );
    assert!(
        has(
            "/groups/main/skills/notes",
            "deny",
            "skill notes paused: it requires base"
        ),
        "{admin:?}"
    );
    assert!(
        has("/groups/main/skills/base", "allow", "skills approve base"),
        "{admin:?}"
    );
    assert!(
        has(
            "/groups/main/skills/base",
            "deny",
            "refused: cannot disable"
        ),
        "{admin:?}"
    );
    assert!(
        has(
            "/groups/main/skills/base",
            "allow",
            "skills disable base notes"
        ),
        "{admin:?}"
    );
    host.shutdown().await;
}

async fn chat_main_group(store: &Store) -> String {
    store
        .group_by_folder("main")
        .await
        .unwrap()
        .unwrap()
        .id
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skill_whose_packages_the_sandbox_lacks_is_refused_naming_them() {
    let home = TestHome::new();
    let model = ScriptedModel::start(scenario()).await.unwrap();
    let host = start_host(home.path(), &model, config_for_tests()).await;
    let mut client = connect_client(home.path()).await;
    let user_skills = home.path().join("skills");
    // bash is essential on Debian; the other exists nowhere.
    write_skill(
        &user_skills,
        "needy",
        "packages = [\"bash\", \"nanoclaw-no-such-package\"]\n",
    );
    write_skill(&user_skills, "shell", "packages = [\"bash\"]\n");
    let store = host.store().clone();
    let (_, chat) = main_and_terminal(&store).await;
    let group = chat_main_group(&store).await;

    let needy = owner_command(&mut client, &store, chat.id, "/skills enable needy").await;
    let shell = owner_command(&mut client, &store, chat.id, "/skills enable shell").await;
    let enabled: Vec<String> = store
        .group_skills(group.clone())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.skill)
        .collect();
    // The native runtime's sandboxes run this machine's /usr: its dpkg database says.
    if Path::new("/var/lib/dpkg/status").exists() {
        assert!(
            needy.contains(
                "the native sandboxes lack packages: needy needs nanoclaw-no-such-package."
            ) && needy.contains("install them on this machine"),
            "{needy}"
        );
        assert!(!needy.contains("needs bash"), "{needy}");
        assert!(shell.contains("enabled shell for group main"), "{shell}");
        assert_eq!(enabled, ["shell"]);
        let refused = store
            .audit_rows(0, Some("main".into()), 1000)
            .await
            .unwrap()
            .into_iter()
            .any(|r| {
                r.path == "/groups/main/skills/needy"
                    && r.decision == "deny"
                    && r.reason.contains("lack packages")
            });
        assert!(refused, "the refusal is audited");
    } else {
        // A machine without dpkg cannot tell: enabled, with the warning.
        assert!(needy.contains("cannot tell whether"), "{needy}");
        assert_eq!(enabled.len(), 2);
    }
    host.shutdown().await;
}
