use super::*;
use nanoclaw_store::GroupSkill;

fn write_skill(root: &std::path::Path, name: &str, toml: &str) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("SKILL.md"),
        format!(
            "---\nname: {name}\ndescription: The {name} skill. Use it for {name}.\n---\n# {name}\n"
        ),
    )
    .unwrap();
    if !toml.is_empty() {
        std::fs::write(dir.join("skill.toml"), toml).unwrap();
    }
}

fn row(catalog: &Catalog, name: &str) -> GroupSkill {
    let skill = catalog.skill(name).unwrap();
    GroupSkill {
        group_id: "g".into(),
        skill: name.into(),
        source: "user".into(),
        content_hash: skill.content_hash().into(),
        state: GroupSkillState::Enabled,
        requested: true,
        paused_reason: None,
        found_hash: None,
        enabled_at: 0,
        updated_at: 0,
    }
}

const APP: &str = "version = \"1.0.0\"\n[requires]\nhttp = \"^1\"\n\n[[egress]]\nhost = \"api.app.example\"\nmethods = [\"GET\"]\n\n[[secrets]]\nname = \"app-token\"\nhosts = [\"api.app.example\"]\n\n[mcp_servers.app]\ncommand = \"app-mcp\"\n";

#[test]
fn enabling_resolves_requirements_and_lists_what_it_grants() {
    let dir = tempfile::tempdir().unwrap();
    write_skill(dir.path(), "app", APP);
    write_skill(dir.path(), "http", "version = \"1.2.0\"\n");
    let catalog = Catalog::load(&[Source::user(dir.path())]);
    let plan = plan_enable(&catalog, &["app".to_owned()]).unwrap();
    assert_eq!(plan.added, ["http"]);
    let names: Vec<&str> = plan.rows.iter().map(|r| r.skill.as_str()).collect();
    assert_eq!(names, ["http", "app"], "dependencies first");
    assert!(plan.rows[1].requested && !plan.rows[0].requested);
    assert_eq!(plan.rows[1].egress[0].pattern, "api.app.example");
    assert_eq!(plan.rows[1].egress[0].methods, ["GET"]);
    assert_eq!(plan.rows[1].secrets[0].secret_name, "app-token");
    assert!(plan.secrets.contains("app-token"));
    let text = plan.grants.join("\n");
    assert!(
        text.contains("app: may reach api.app.example (GET)"),
        "{text}"
    );
    assert!(
        text.contains("app: may use secret app-token on api.app.example"),
        "{text}"
    );
    assert!(text.contains("MCP server app"), "{text}");
    assert_eq!(
        dependents(&catalog, &["app".into(), "http".into()], "http"),
        ["app"]
    );

    // A missing requirement or a cycle is refused with the library's message.
    write_skill(dir.path(), "lonely", "[requires]\nghost = \"*\"\n");
    write_skill(dir.path(), "a", "[requires]\nb = \"*\"\n");
    write_skill(dir.path(), "b", "[requires]\na = \"*\"\n");
    let catalog = Catalog::load(&[Source::user(dir.path())]);
    let err = plan_enable(&catalog, &["lonely".to_owned()]).unwrap_err();
    assert!(
        err.contains("\"ghost\"") && err.contains("not installed"),
        "{err}"
    );
    let err = plan_enable(&catalog, &["a".to_owned()]).unwrap_err();
    assert!(err.contains("a → b → a"), "{err}");
    let err = plan_enable(&catalog, &["nope".to_owned()]).unwrap_err();
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn a_changed_or_vanished_skill_is_paused_and_left_out_of_the_agents_set() {
    let dir = tempfile::tempdir().unwrap();
    write_skill(dir.path(), "app", APP);
    write_skill(dir.path(), "http", "version = \"1.2.0\"\n");
    write_skill(dir.path(), "gone", "");
    let catalog = Catalog::load(&[Source::user(dir.path())]);
    let rows = vec![
        row(&catalog, "app"),
        row(&catalog, "http"),
        row(&catalog, "gone"),
    ];
    let (prepared, pauses) = check(&catalog, &rows);
    assert!(pauses.is_empty(), "{pauses:?}");
    let names: Vec<&str> = prepared.skills.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["http", "app", "gone"],
        "dependencies first, then by name"
    );
    assert_eq!(prepared.skills[1].path, "/workspace/skills/app");
    assert_eq!(prepared.mcp_servers.len(), 1);
    assert_eq!(prepared.mcp_servers[0].skill.as_deref(), Some("app"));
    assert!(prepared.mounts.iter().all(|m| !m.writable));
    let before = prepared.fingerprint.clone();

    // One changed byte in app, and gone removed.
    std::fs::write(
        dir.path().join("app/SKILL.md"),
        "---\nname: app\ndescription: Changed. Use it.\n---\n",
    )
    .unwrap();
    std::fs::remove_dir_all(dir.path().join("gone")).unwrap();
    let catalog = Catalog::load(&[Source::user(dir.path())]);
    let (prepared, pauses) = check(&catalog, &rows);
    let names: Vec<&str> = prepared.skills.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["http"]);
    assert!(prepared.mcp_servers.is_empty());
    assert_ne!(prepared.fingerprint, before);
    assert_eq!(pauses.len(), 2);
    let app = pauses.iter().find(|p| p.skill == "app").unwrap();
    assert!(app.reason.contains("files changed"), "{}", app.reason);
    assert_eq!(
        app.found_hash.as_deref(),
        Some(catalog.skill("app").unwrap().content_hash())
    );
    let gone = pauses.iter().find(|p| p.skill == "gone").unwrap();
    assert!(
        gone.reason.contains("no longer installed"),
        "{}",
        gone.reason
    );
    assert_eq!(gone.found_hash, None);

    // A paused row stays out without a new pause.
    let mut paused = rows.clone();
    paused[0].state = GroupSkillState::Paused;
    paused.truncate(2);
    let (prepared, pauses) = check(&catalog, &paused);
    assert!(pauses.is_empty());
    assert_eq!(prepared.skills.len(), 1);
}

#[test]
fn a_groups_own_folder_overrides_and_lives_outside_its_workspace() {
    let home = tempfile::tempdir().unwrap();
    let paths = Paths::new(home.path());
    let gdir = group_dir(&paths, "family");
    assert!(!gdir.starts_with(paths.group_dir("family")));
    write_skill(&user_dir(&paths), "notes", "");
    write_skill(&gdir, "notes", "version = \"2.0.0\"\n");
    let catalog = load_catalog(&paths, "family");
    let entry = catalog.get("notes").unwrap();
    assert_eq!(entry.source, SourceKind::Group("family".into()));
    assert_eq!(entry.shadowed.len(), 1);
    // Another group sees only the user's copy.
    let other = load_catalog(&paths, "work");
    assert_eq!(other.get("notes").unwrap().source, SourceKind::User);
}
