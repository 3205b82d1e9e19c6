//! Per-group skill state: enabling records the approved hash and the skill's grants, disabling
//! removes exactly them (never the owner's own rules), a paused skill's grants are suspended,
//! and one group's skills never grant anything to another.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use nanoclaw_store::{
    EgressAction, GroupSkillState, NewGrant, NewGroup, NewGroupSkill, SkillEgress, SkillSecret,
    Store, StoreError,
};

async fn groups(store: &Store) -> (String, String) {
    let mut ids = Vec::new();
    for folder in ["alpha", "beta"] {
        ids.push(
            store
                .ensure_group(NewGroup {
                    name: folder.into(),
                    folder: folder.into(),
                    ..NewGroup::default()
                })
                .await
                .unwrap()
                .id,
        );
    }
    (ids[0].clone(), ids[1].clone())
}

fn tracker() -> NewGroupSkill {
    NewGroupSkill {
        skill: "tracker".into(),
        source: "user".into(),
        content_hash: "aa".repeat(32),
        requested: true,
        egress: vec![SkillEgress {
            pattern: "api.tracker.example".into(),
            methods: vec!["GET".into()],
        }],
        secrets: vec![SkillSecret {
            secret_name: "tracker-token".into(),
            host: "api.tracker.example".into(),
        }],
    }
}

async fn add_secret(store: &Store, name: &str) {
    store
        .vault_add_version(
            name,
            false,
            Box::new(|_v: i64| -> Result<(Vec<u8>, Vec<u8>), StoreError> {
                Ok((vec![0u8; 24], vec![1u8; 16]))
            }),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn disabling_a_skill_removes_exactly_its_grants_and_never_the_owners() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("nanoclaw.db")).unwrap();
    let (a, b) = groups(&store).await;
    add_secret(&store, "tracker-token").await;
    // The owner's own rule and grant for the same host, made by hand.
    store
        .set_egress_rule(a.as_str(), "api.tracker.example", EgressAction::Allow)
        .await
        .unwrap();
    store
        .vault_add_grant(NewGrant {
            secret_name: "tracker-token".into(),
            group_folder: "alpha".into(),
            host: "api.tracker.example".into(),
            path_prefix: String::new(),
            inject: "header:authorization: Bearer {secret}".into(),
            needs_approval: false,
        })
        .await
        .unwrap();

    store
        .enable_skills(a.as_str(), vec![tracker()])
        .await
        .unwrap();
    let skills = store.group_skills(a.as_str()).await.unwrap();
    assert_eq!(skills.len(), 1);
    assert_eq!(skills[0].state, GroupSkillState::Enabled);
    assert_eq!(skills[0].content_hash, "aa".repeat(32));
    let rules = store.skill_egress_rules(a.as_str()).await.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].methods, ["GET"]);
    assert_eq!(store.skill_secret_grants("alpha").await.unwrap().len(), 1);
    // Nothing for the other group.
    assert!(
        store
            .skill_egress_rules(b.as_str())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.skill_secret_grants("beta").await.unwrap().is_empty());

    let removed = store
        .disable_skills(a.as_str(), vec!["tracker".into(), "never-enabled".into()])
        .await
        .unwrap();
    assert_eq!(removed, ["tracker"]);
    assert!(store.group_skills(a.as_str()).await.unwrap().is_empty());
    assert!(
        store
            .skill_egress_rules(a.as_str())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.skill_secret_grants("alpha").await.unwrap().is_empty());
    // The owner's rule and grant are still there.
    assert_eq!(store.egress_rules(a.as_str()).await.unwrap().len(), 1);
    assert_eq!(store.vault_group_grants("alpha").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_paused_skill_grants_nothing_until_enabled_again_with_a_new_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("nanoclaw.db")).unwrap();
    let (a, _) = groups(&store).await;
    add_secret(&store, "tracker-token").await;
    store
        .enable_skills(a.as_str(), vec![tracker()])
        .await
        .unwrap();

    let first = store
        .pause_skill(
            a.as_str(),
            "tracker",
            "its files changed",
            Some("bb".repeat(32)),
        )
        .await
        .unwrap();
    assert!(first, "the first pause is news");
    let again = store
        .pause_skill(
            a.as_str(),
            "tracker",
            "its files changed",
            Some("bb".repeat(32)),
        )
        .await
        .unwrap();
    assert!(
        !again,
        "pausing a paused skill is not news (the owner is told once)"
    );
    let s = &store.group_skills(a.as_str()).await.unwrap()[0];
    assert_eq!(s.state, GroupSkillState::Paused);
    assert_eq!(s.found_hash.as_deref(), Some("bb".repeat(32).as_str()));
    assert!(
        store
            .skill_egress_rules(a.as_str())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.skill_secret_grants("alpha").await.unwrap().is_empty());
    // Its recorded grants are kept while paused (shown to the owner).
    let (egress, secrets) = store
        .group_skill_grants(a.as_str(), "tracker")
        .await
        .unwrap();
    assert_eq!((egress.len(), secrets.len()), (1, 1));

    // Approval re-enables with the new hash and the new manifest's grants.
    let mut approved = tracker();
    approved.content_hash = "bb".repeat(32);
    approved.requested = false;
    approved.egress[0].methods = vec!["GET".into(), "POST".into()];
    store
        .enable_skills(a.as_str(), vec![approved])
        .await
        .unwrap();
    let s = &store.group_skills(a.as_str()).await.unwrap()[0];
    assert_eq!(s.state, GroupSkillState::Enabled);
    assert_eq!(s.content_hash, "bb".repeat(32));
    assert!(s.requested, "approval keeps that the owner asked for it");
    assert_eq!(s.paused_reason, None);
    let rules = store.skill_egress_rules(a.as_str()).await.unwrap();
    assert_eq!(rules[0].methods, ["GET", "POST"]);
}

#[tokio::test]
async fn enabling_checks_its_input_and_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("nanoclaw.db")).unwrap();
    let (a, _) = groups(&store).await;
    let err = store
        .enable_skills("no-such-group", vec![tracker()])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    let mut bad = tracker();
    bad.egress[0].methods = vec!["get".into()];
    let err = store
        .enable_skills(a.as_str(), vec![bad])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("upper-case HTTP method"), "{err}");
    assert!(store.group_skills(a.as_str()).await.unwrap().is_empty());
}
