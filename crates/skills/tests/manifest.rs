//! skill.toml: every key validated, unknown keys refused, messages name the field.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{fixtures, skill, write};
use nanoclaw_skills::{LoadError, Manifest, Skill, manifest};

/// Loads a skill `t` with this skill.toml and a `scripts/run.py`, expecting an error about
/// `field` containing each of `parts`.
fn expect_error(toml: &str, field: &str, parts: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let dir = skill(tmp.path(), "t", Some(toml));
    write(&dir, "scripts/run.py", "print('hi')\n");
    let err = Skill::load(&dir).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{}: ", dir.join("skill.toml").display())),
        "message should start with the file: {msg}"
    );
    if !field.is_empty() {
        assert_eq!(err.field(), Some(field), "field of {msg}");
    }
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} should contain {p:?}");
    }
    msg
}

fn load_ok(toml: &str) -> Manifest {
    let tmp = tempfile::tempdir().unwrap();
    let dir = skill(tmp.path(), "t", Some(toml));
    write(&dir, "scripts/run.py", "print('hi')\n");
    Skill::load(&dir).unwrap().manifest
}

#[test]
fn the_documented_example_loads_with_every_section() {
    let s = Skill::load(&fixtures().join("weekly-summary")).unwrap();
    let m = &s.manifest;
    assert_eq!(m.version.as_ref().unwrap().to_string(), "1.0.0");
    assert_eq!(m.requires["release-notes"].to_string(), "^1.2");
    assert_eq!(m.requires["csv-report"].to_string(), ">=2.0, <3");
    assert_eq!(m.egress.len(), 2);
    assert_eq!(m.egress[1].host, "*.cdn.tracker.example");
    assert_eq!(m.egress[1].methods, ["GET", "HEAD"]);
    assert_eq!(m.secrets[0].name, "tracker-token");
    assert_eq!(m.secrets[0].hosts, ["api.tracker.example"]);
    assert_eq!(m.mcp_servers["tracker"].command, "python3");
    assert_eq!(
        m.mcp_servers["tracker"].env["TRACKER_URL"],
        "https://api.tracker.example"
    );
    assert_eq!(m.packages, ["python3"]);
    assert_eq!(m.schedules[0].cron, "0 8 * * MON");
    assert_eq!(
        m.commands["weekly-summary"].prompt.as_deref(),
        Some("Write the weekly summary for the past seven days.")
    );
    assert_eq!(m.commands["issues"].tool.as_deref(), Some("tracker_issues"));
    assert_eq!(m.tools[0].script, "scripts/issues.py");
    assert_eq!(
        m.tools[0].input_schema["properties"]["since"]["type"],
        "string"
    );
}

#[test]
fn the_example_in_docs_skills_md_is_the_fixture() {
    // docs/SKILLS.md shows the fixture's skill.toml; keep them the same so the doc is tested.
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/SKILLS.md"))
            .unwrap();
    let fixture = std::fs::read_to_string(fixtures().join("weekly-summary/skill.toml")).unwrap();
    assert!(
        doc.contains(&format!("```toml\n{fixture}```")),
        "docs/SKILLS.md must contain the weekly-summary skill.toml verbatim"
    );
}

#[test]
fn no_skill_toml_means_no_grants() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = skill(tmp.path(), "bare", None);
    let s = Skill::load(&dir).unwrap();
    assert_eq!(s.manifest, Manifest::default());
    assert!(s.manifest.egress.is_empty() && s.manifest.secrets.is_empty());
}

#[test]
fn unknown_keys_are_refused() {
    expect_error(
        "[[egres]]\nhost = \"a.example\"\nmethods = [\"GET\"]\n",
        "",
        &["unknown field `egres`"],
    );
    expect_error(
        "[[egress]]\nhostname = \"a.example\"\nmethods = [\"GET\"]\n",
        "",
        &["unknown field `hostname`"],
    );
}

#[test]
fn version_must_be_semver() {
    expect_error(
        "version = \"1.0\"\n",
        "version",
        &["version \"1.0\" is not a semantic version", "\"1.2.0\""],
    );
}

#[test]
fn requires_names_and_ranges() {
    expect_error(
        "[requires]\nWeb-Search = \"^1\"\n",
        "requires.Web-Search",
        &["must be lowercase"],
    );
    expect_error(
        "[requires]\nweb-search = \"one point two\"\n",
        "requires.web-search",
        &["is not a version range"],
    );
}

#[test]
fn egress_hosts_and_methods() {
    expect_error(
        "[[egress]]\nhost = \"https://api.example.com\"\nmethods = [\"GET\"]\n",
        "egress[0].host",
        &["egress[0].host \"https://api.example.com\" is not a valid host name"],
    );
    expect_error(
        "[[egress]]\nhost = \"api.example.com:443\"\nmethods = [\"GET\"]\n",
        "egress[0].host",
        &["no scheme, port or path"],
    );
    expect_error(
        "[[egress]]\nhost = \"*.com\"\nmethods = [\"GET\"]\n",
        "egress[0].host",
        &["wildcard over a whole top-level domain"],
    );
    expect_error(
        "[[egress]]\nhost = \"169.254.169.254\"\nmethods = [\"GET\"]\n",
        "egress[0].host",
        &["is an IP address, not a host name"],
    );
    expect_error(
        "[[egress]]\nhost = \"api.example.com\"\nmethods = []\n",
        "egress[0].methods",
        &["is empty"],
    );
    expect_error(
        "[[egress]]\nhost = \"api.example.com\"\nmethods = [\"FETCH\"]\n",
        "egress[0].methods",
        &["\"FETCH\" is not an HTTP method"],
    );
    let m =
        load_ok("[[egress]]\nhost = \"API.Example.com\"\nmethods = [\"get\", \"GET\", \"post\"]\n");
    assert_eq!(m.egress[0].host, "api.example.com");
    assert_eq!(m.egress[0].methods, ["GET", "POST"]);
}

#[test]
fn secrets_are_bound_to_allowed_hosts() {
    let egress = "[[egress]]\nhost = \"*.example.com\"\nmethods = [\"GET\"]\n";
    let m = load_ok(&format!(
        "{egress}[[secrets]]\nname = \"api-key\"\nhosts = [\"api.example.com\"]\n"
    ));
    assert_eq!(m.secrets[0].hosts, ["api.example.com"]);
    expect_error(
        &format!("{egress}[[secrets]]\nname = \"api-key\"\nhosts = [\"example.com\"]\n"),
        "secrets[0].hosts",
        &["\"example.com\" is not allowed by any egress rule"],
    );
    expect_error(
        &format!("{egress}[[secrets]]\nname = \"api-key\"\nhosts = [\"evil.test\"]\n"),
        "secrets[0].hosts",
        &[
            "not allowed by any egress rule",
            "[[egress]] host = \"evil.test\"",
        ],
    );
    expect_error(
        &format!("{egress}[[secrets]]\nname = \"API_KEY\"\nhosts = [\"a.example.com\"]\n"),
        "secrets[0].name",
        &["\"API_KEY\" must be 1-64 characters of a-z"],
    );
    expect_error(
        &format!("{egress}[[secrets]]\nname = \"api-key\"\nhosts = []\n"),
        "secrets[0].hosts",
        &["is empty"],
    );
    expect_error(
        &format!(
            "{egress}[[secrets]]\nname = \"k\"\nhosts = [\"a.example.com\"]\n[[secrets]]\nname = \"k\"\nhosts = [\"b.example.com\"]\n"
        ),
        "secrets[1].name",
        &["listed twice"],
    );
}

#[test]
fn mcp_servers() {
    expect_error(
        "[mcp_servers.files]\ncommand = \" \"\n",
        "mcp_servers.files.command",
        &["is empty"],
    );
    expect_error(
        "[mcp_servers.files]\ncommand = \"npx\"\nenv = { \"1BAD\" = \"x\" }\n",
        "mcp_servers.files.env",
        &["\"1BAD\" is not an environment variable name"],
    );
    expect_error(
        "[mcp_servers.\"my server\"]\ncommand = \"npx\"\n",
        "mcp_servers.my server",
        &["server name \"my server\""],
    ); // A skill cannot reroute its server around the egress proxy.
    expect_error(
        "[mcp_servers.files]\ncommand = \"npx\"\nenv = { https_proxy = \"http://evil.example:8080\" }\n",
        "mcp_servers.files.env",
        &["https_proxy is set by nanoclaw"],
    );
}

#[test]
fn packages() {
    expect_error(
        "packages = [\"curl; rm -rf /\"]\n",
        "packages[0]",
        &["is not a package name"],
    );
    expect_error(
        "packages = [\"-y\"]\n",
        "packages[0]",
        &["not starting with '-'"],
    );
    assert_eq!(
        load_ok("packages = [\"python3\", \"libpq-dev\", \"pip:requests==2.32\"]\n")
            .packages
            .len(),
        3
    );
}

#[test]
fn schedules_use_the_scheduler_cron_syntax() {
    expect_error(
        "[[schedules]]\nname = \"x\"\ncron = \"61 * * * *\"\nprompt = \"p\"\n",
        "schedules[0].cron",
        &["schedules[0].cron \"61 * * * *\" is not a valid cron expression"],
    );
    expect_error(
        "[[schedules]]\nname = \"x\"\ncron = \"0 0 30 2 *\"\nprompt = \"p\"\n",
        "schedules[0].cron",
        &["is not a valid cron expression"],
    );
    expect_error(
        "[[schedules]]\nname = \"x\"\ncron = \"@daily\"\nprompt = \"p\"\n[[schedules]]\nname = \"x\"\ncron = \"@daily\"\nprompt = \"q\"\n",
        "schedules[1].name",
        &["used twice"],
    );
    expect_error(
        "[[schedules]]\nname = \"x\"\ncron = \"@daily\"\nprompt = \"\"\n",
        "schedules[0].prompt",
        &["is empty"],
    );
    assert_eq!(
        load_ok("[[schedules]]\nname = \"x\"\ncron = \"*/15 9-17 * * MON-FRI\"\nprompt = \"p\"\n")
            .schedules
            .len(),
        1
    );
}

const TOOL: &str = "[[tools]]\nname = \"run\"\ndescription = \"Runs it.\"\nscript = \"scripts/run.py\"\ninput_schema = { type = \"object\" }\n";

#[test]
fn commands_run_a_prompt_or_one_of_the_tools() {
    let m = load_ok(&format!("{TOOL}[commands.go]\ntool = \"run\"\n"));
    assert_eq!(m.commands["go"].tool.as_deref(), Some("run"));
    expect_error(
        &format!("{TOOL}[commands.go]\ntool = \"run\"\nprompt = \"p\"\n"),
        "commands.go",
        &["exactly one of prompt"],
    );
    expect_error(
        "[commands.go]\ndescription = \"nothing\"\n",
        "commands.go",
        &["exactly one of prompt"],
    );
    expect_error(
        "[commands.go]\ntool = \"nope\"\n",
        "commands.go.tool",
        &["\"nope\" is not one of this skill's tools"],
    );
    expect_error(
        "[commands.Go]\nprompt = \"p\"\n",
        "commands.Go",
        &["command name \"Go\" must be lowercase"],
    );
}

#[test]
fn tools_names_and_schemas() {
    expect_error(
        &format!("{TOOL}{TOOL}"),
        "tools[1].name",
        &["\"run\" is used twice"],
    );
    expect_error(
        &TOOL.replace("name = \"run\"", "name = \"run it\""),
        "tools[0].name",
        &["\"run it\" must be 1-64 characters"],
    );
    expect_error(
        &TOOL.replace("Runs it.", ""),
        "tools[0].description",
        &["is empty"],
    );
    expect_error(
        &TOOL.replace("{ type = \"object\" }", "{ type = \"string\" }"),
        "tools[0].input_schema",
        &["JSON Schema object"],
    );
    expect_error(
        &TOOL.replace("{ type = \"object\" }", "\"object\""),
        "tools[0].input_schema",
        &["JSON Schema object"],
    );
}

#[test]
fn tool_scripts_must_be_real_files_under_scripts() {
    expect_error(
        &TOOL.replace("scripts/run.py", "scripts/missing.py"),
        "tools[0].script",
        &["\"scripts/missing.py\" does not exist"],
    );
    expect_error(
        &TOOL.replace("scripts/run.py", "scripts/../../etc/passwd"),
        "tools[0].script",
        &["must not contain \"..\""],
    );
    expect_error(
        &TOOL.replace("scripts/run.py", "/usr/bin/env"),
        "tools[0].script",
        &["must be relative"],
    );
    expect_error(
        &TOOL.replace("scripts/run.py", "SKILL.md"),
        "tools[0].script",
        &["must be a file under scripts/"],
    );
    expect_error(
        &TOOL.replace("scripts/run.py", "scripts"),
        "tools[0].script",
        &["must be a file under scripts/"],
    );
}

#[test]
fn a_symlinked_script_is_refused_by_the_manifest_and_the_loader() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = skill(tmp.path(), "t", None);
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    std::os::unix::fs::symlink("/bin/sh", dir.join("scripts/run.py")).unwrap();
    // The manifest check on its own names the symlink…
    let err = manifest::parse(TOOL, &dir, &dir.join("skill.toml")).unwrap_err();
    assert!(err.to_string().contains("goes through a symlink"), "{err}");
    // …and loading the skill refuses it before reading the manifest.
    write(&dir, "skill.toml", TOOL);
    let err = Skill::load(&dir).unwrap_err();
    assert!(matches!(err, LoadError::Refused { .. }), "{err:?}");
    // A symlinked scripts/ folder pointing outside is refused the same way.
    std::fs::remove_file(dir.join("scripts/run.py")).unwrap();
    std::fs::remove_dir(dir.join("scripts")).unwrap();
    let outside = tmp.path().join("outside");
    write(&outside, "run.py", "print(1)\n");
    std::os::unix::fs::symlink(&outside, dir.join("scripts")).unwrap();
    let err = manifest::parse(TOOL, &dir, &dir.join("skill.toml")).unwrap_err();
    assert!(err.to_string().contains("goes through a symlink"), "{err}");
    assert!(Skill::load(&dir).is_err());
}

#[test]
fn toml_syntax_errors_name_the_file() {
    let msg = expect_error("version = \n", "", &["not a valid skill.toml"]);
    assert!(msg.contains("line 1"), "{msg}");
}
