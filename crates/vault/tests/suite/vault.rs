//! The vault as its callers (CLI, proxy, host) use it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use nanoclaw_store::Store;
use nanoclaw_vault::{
    Audit, AuditEntry, Decision, ExposeSecret, GrantRequest, MasterKey, SecretString, Vault,
    VaultError, VerifyError,
};

fn s(v: &str) -> SecretString {
    SecretString::from(v)
}

async fn vault() -> (Vault, Store, MasterKey) {
    let store = Store::open_in_memory().unwrap();
    let key = MasterKey::generate();
    (
        Vault::open(store.clone(), key.clone()).await.unwrap(),
        store,
        key,
    )
}

fn grant(name: &str, host: &str, inject: &str) -> GrantRequest {
    GrantRequest {
        secret_name: name.into(),
        group_folder: "main".into(),
        host: host.into(),
        path_prefix: String::new(),
        inject: inject.into(),
        needs_approval: false,
    }
}

#[tokio::test]
async fn a_secret_round_trips_and_is_stored_only_as_ciphertext() {
    let (v, store, _) = vault().await;
    assert_eq!(
        v.set("anthropic", s("sk-ant-secret-value")).await.unwrap(),
        1
    );
    assert_eq!(
        v.reveal("anthropic").await.unwrap().expose_secret(),
        "sk-ant-secret-value"
    );
    let rows = store.vault_versions(None).await.unwrap();
    assert_eq!(rows[0].nonce.len(), 24);
    assert!(!rows[0].ciphertext.windows(6).any(|w| w == b"secret"));
    // A second `set` of the same name does not replace it.
    let err = v
        .set("anthropic", s("other"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("vault rotate anthropic"), "{err}");
    assert!(format!("{v:?}").find("sk-ant").is_none());
}

#[tokio::test]
async fn tampered_ciphertext_nonce_or_swapped_rows_fail_to_decrypt() {
    let (v, store, _) = vault().await;
    v.set("a-key", s("value-of-a")).await.unwrap();
    v.set("b-key", s("value-of-b")).await.unwrap();
    let sql = [
        "UPDATE vault_versions SET ciphertext = CAST(ciphertext || x'00' AS BLOB) WHERE name = 'a-key'",
        "UPDATE vault_versions SET nonce = zeroblob(24) WHERE name = 'a-key'",
        // Move b's sealed value onto a (associated data = name + version).
        "UPDATE vault_versions SET (nonce, ciphertext) = (SELECT nonce, ciphertext FROM vault_versions WHERE name = 'b-key') WHERE name = 'a-key'",
    ];
    for q in sql {
        v.remove("a-key").await.unwrap();
        v.set("a-key", s("value-of-a")).await.unwrap();
        store.call(move |c| Ok(c.execute(q, [])?)).await.unwrap();
        let err = v.reveal("a-key").await.unwrap_err();
        assert!(
            matches!(err, VaultError::Decrypt { ref name, version: 1 } if name == "a-key"),
            "{q}: {err}"
        );
    }
    // A version bumped in place (same name, other version) fails too.
    store
        .call(|c| {
            Ok(c.execute(
                "UPDATE vault_versions SET version = 2 WHERE name = 'b-key'; ",
                [],
            )?)
        })
        .await
        .unwrap();
    store
        .call(|c| {
            Ok(c.execute(
                "UPDATE vault_secrets SET current_version = 2 WHERE name = 'b-key'",
                [],
            )?)
        })
        .await
        .unwrap();
    assert!(matches!(
        v.reveal("b-key").await.unwrap_err(),
        VaultError::Decrypt { version: 2, .. }
    ));
}

#[tokio::test]
async fn a_wrong_master_key_is_refused_and_nothing_is_written() {
    let (v, store, _) = vault().await;
    v.set("anthropic", s("sk-ant-1")).await.unwrap();
    let dump = |store: Store| async move {
        store
            .call(|c| {
                let mut st = c.prepare("SELECT key, hex(value) FROM vault_meta UNION ALL SELECT name, hex(ciphertext) FROM vault_versions")?;
                let rows = st.query_map([], |r| Ok(format!("{}={}", r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
            .unwrap()
    };
    let before = dump(store.clone()).await;
    let err = Vault::open(store.clone(), MasterKey::generate())
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::WrongKey { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("does not match the one that encrypted this vault")
            && msg.contains("NANOCLAW_MASTER_KEY"),
        "{msg}"
    );
    assert_eq!(dump(store).await, before);
}

#[tokio::test]
async fn rotation_applies_to_the_next_lookup_and_keeps_the_old_version_retired() {
    let (v, _, _) = vault().await;
    v.set("openai", s("sk-old-000000")).await.unwrap();
    v.grant(grant(
        "openai",
        "api.openai.com",
        "header:Authorization: Bearer {secret}",
    ))
    .await
    .unwrap();
    let inj = v
        .injection_for("main", "api.openai.com", "/v1/chat")
        .await
        .unwrap()
        .unwrap();
    let (h, val) = inj.header.unwrap();
    assert_eq!(
        (h.as_str(), val.expose_secret()),
        ("authorization", "Bearer sk-old-000000")
    );
    let old_placeholder = v.placeholder_env("main").await.unwrap()[0].1.clone();

    // A second handle (as another process would) rotates.
    let other = v.clone();
    assert_eq!(other.rotate("openai", s("sk-new-111111")).await.unwrap(), 2);
    let inj = v
        .injection_for("main", "api.openai.com", "/v1/chat")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inj.version, 2);
    assert_eq!(
        inj.header.unwrap().1.expose_secret(),
        "Bearer sk-new-111111"
    );
    let list = v.list().await.unwrap();
    assert_eq!(
        (list[0].current_version, list[0].retired_versions.clone()),
        (2, vec![1])
    );
    assert!(list[0].rotated_at.is_some());
    // The leak guard still knows the old value.
    let live: Vec<String> = v
        .live_values()
        .await
        .unwrap()
        .iter()
        .map(|l| l.value.expose_secret().to_owned())
        .collect();
    assert_eq!(live, ["sk-old-000000", "sk-new-111111"]);
    // A sandbox still holding the old placeholder gets the new value.
    let got = v
        .resolve_placeholder("main", &old_placeholder, "api.openai.com", "/")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.expose_secret(), "sk-new-111111");
    assert!(matches!(
        v.rotate("nope", s("x")).await.unwrap_err(),
        VaultError::NoSuchSecret(_)
    ));
}

#[tokio::test]
async fn injections_follow_host_path_and_group() {
    let (v, _, _) = vault().await;
    v.set("anthropic", s("sk-ant-xyz")).await.unwrap();
    v.set("maps", s("maps-key-123")).await.unwrap();
    v.grant(grant(
        "anthropic",
        "api.anthropic.com",
        "header:x-api-key: {secret}",
    ))
    .await
    .unwrap();
    v.grant(GrantRequest {
        path_prefix: "/maps".into(),
        needs_approval: true,
        ..grant("maps", "*.googleapis.com", "query:key")
    })
    .await
    .unwrap();

    let inj = v
        .injection_for("main", "API.anthropic.com:443", "/v1/messages")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inj.header.as_ref().unwrap().0, "x-api-key");
    assert!(!inj.needs_approval);
    let inj = v
        .injection_for("main", "x.googleapis.com", "/maps/api?x=1")
        .await
        .unwrap()
        .unwrap();
    let (p, val) = inj.query.unwrap();
    assert_eq!((p.as_str(), val.expose_secret()), ("key", "maps-key-123"));
    assert!(inj.needs_approval);

    assert!(
        v.injection_for("main", "x.googleapis.com", "/other")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        v.injection_for("main", "googleapis.com", "/maps")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        v.injection_for("main", "api.anthropic.com.evil.net", "/")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        v.injection_for("other-group", "api.anthropic.com", "/")
            .await
            .unwrap()
            .is_none()
    );

    assert_eq!(v.revoke("anthropic", "main", None).await.unwrap(), 1);
    assert!(
        v.injection_for("main", "api.anthropic.com", "/")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn placeholders_stand_in_for_secrets_only_on_bound_hosts() {
    let (v, _, _) = vault().await;
    v.set("gh.token", s("ghp_realtoken")).await.unwrap();
    v.grant(grant(
        "gh.token",
        "api.github.com",
        "header:Authorization: token {secret}",
    ))
    .await
    .unwrap();
    let env = v.placeholder_env("main").await.unwrap();
    assert_eq!(env.len(), 1);
    let (name, ph) = &env[0];
    assert_eq!(name, "NANOCLAW_SECRET_GH_TOKEN");
    assert!(ph.starts_with("nanoclaw-placeholder-gh.token-") && !ph.contains("ghp_realtoken"));
    // Stable for the same version.
    assert_eq!(&v.placeholder_env("main").await.unwrap()[0].1, ph);
    assert_eq!(
        v.resolve_placeholder("main", ph, "api.github.com", "/")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        "ghp_realtoken"
    );
    assert!(
        v.resolve_placeholder("main", ph, "evil.example", "/")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        v.resolve_placeholder("other", ph, "api.github.com", "/")
            .await
            .unwrap()
            .is_none()
    );
    let forged = format!("{}0000000000000000", &ph[..ph.len() - 16]);
    assert!(
        v.resolve_placeholder("main", &forged, "api.github.com", "/")
            .await
            .unwrap()
            .is_none()
    );
    assert!(v.placeholder_env("other").await.unwrap().is_empty());
}

#[tokio::test]
async fn grants_are_validated_strictly() {
    let (v, _, _) = vault().await;
    v.set("k", s("value-12345")).await.unwrap();
    for (host, inject, path) in [
        ("api.x.com", "header:x-api-key: {secret}\r\nx: y", ""),
        ("api.x.com", "header:bad name: {secret}", ""),
        ("api.x.com", "header:x: no marker", ""),
        ("api.x.com", "query:a b", ""),
        ("http://api.x.com", "query:key", ""),
        ("*.com", "query:key", ""),
        ("api.x.com", "query:key", "no-slash"),
    ] {
        let err = v
            .grant(GrantRequest {
                path_prefix: path.into(),
                ..grant("k", host, inject)
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err, VaultError::Invalid(_)),
            "{host} {inject}: {err}"
        );
    }
    assert!(matches!(
        v.grant(grant("nope", "a.com", "query:k"))
            .await
            .unwrap_err(),
        VaultError::NoSuchSecret(_)
    ));
    v.grant(grant("k", "a.com", "query:k")).await.unwrap();
    assert!(
        v.grant(grant("k", "a.com", "query:k"))
            .await
            .unwrap_err()
            .to_string()
            .contains("already granted")
    );
}

#[tokio::test]
async fn the_audit_chain_verifies_and_a_tampered_row_is_named() {
    let (_, store, _) = vault().await;
    let audit = Audit::new(store.clone());
    assert_eq!(audit.verify().await.unwrap(), 0);
    for i in 0..5 {
        audit
            .record(AuditEntry {
                at: None,
                group_folder: "main".into(),
                method: "GET".into(),
                host: "api.example.com".into(),
                path: format!("/r/{i}"),
                status: Some(200),
                bytes_up: 10,
                bytes_down: 100,
                secret_name: (i % 2 == 0).then(|| "k".to_owned()),
                decision: if i % 2 == 0 {
                    Decision::Inject
                } else {
                    Decision::Allow
                },
                reason: "granted".into(),
            })
            .await
            .unwrap();
    }
    assert_eq!(audit.verify().await.unwrap(), 5);
    store
        .call(|c| Ok(c.execute("UPDATE audit SET status = 403 WHERE id = 3", [])?))
        .await
        .unwrap();
    match audit.verify().await.unwrap_err() {
        VerifyError::ChainBroken { id, why } => {
            assert!(id == 3 && why.contains("contents changed"), "{id} {why}")
        }
        e => panic!("{e}"),
    }
    store
        .call(|c| Ok(c.execute("DELETE FROM audit WHERE id = 3", [])?))
        .await
        .unwrap();
    match audit.verify().await.unwrap_err() {
        VerifyError::ChainBroken { id, why } => {
            assert!(id == 4 && why.contains("removed"), "{id} {why}")
        }
        e => panic!("{e}"),
    }
}

#[tokio::test]
async fn the_leak_guard_from_the_vault_sees_every_live_version() {
    use base64::Engine;
    let (v, _, _) = vault().await;
    v.set("anthropic", s("sk-ant-api03-abcdefgh"))
        .await
        .unwrap();
    v.rotate("anthropic", s("sk-ant-api03-newvalue"))
        .await
        .unwrap();
    let g = v.leak_guard().await.unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode("token=sk-ant-api03-abcdefgh");
    assert_eq!(g.scan(b64.as_bytes()).len(), 1);
    assert_eq!(
        g.redact("key sk-ant-api03-newvalue!"),
        "key [REDACTED:anthropic]!"
    );
    v.remove("anthropic").await.unwrap();
    assert!(v.leak_guard().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_cached_leak_guard_follows_every_rotation() {
    let (v, _, _) = vault().await;
    v.set("github", s("ghp_firstvalue12345")).await.unwrap();
    let before = v.leak_guard().await.unwrap();
    assert!(std::sync::Arc::ptr_eq(
        &before,
        &v.leak_guard().await.unwrap()
    ));
    assert!(before.scan(b"ghp_secondvalue6789").is_empty());
    v.rotate("github", s("ghp_secondvalue6789")).await.unwrap();
    let after = v.leak_guard().await.unwrap();
    assert_eq!(after.scan(b"x ghp_secondvalue6789 y").len(), 1);
    assert_eq!(after.scan(b"x ghp_firstvalue12345 y").len(), 1);
}

#[tokio::test]
async fn the_key_file_is_created_0600_once_and_reused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cfg/nanoclaw/master.key");
    // The key file only: the keyring has its own test (tests/keyring.rs).
    let sources = nanoclaw_vault::KeySources::file_only(&path);
    // Only meaningful without NANOCLAW_MASTER_KEY in this test process.
    if std::env::var_os(nanoclaw_vault::MASTER_KEY_ENV).is_some() {
        return;
    }
    assert!(MasterKey::load(&sources, false).unwrap().is_none());
    let store = Store::open_in_memory().unwrap();
    let v = Vault::open_default(store.clone(), &sources, true)
        .await
        .unwrap()
        .unwrap();
    v.set("x", s("value-x-1")).await.unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let before = std::fs::read(&path).unwrap();
    let v2 = Vault::open_default(store.clone(), &sources, true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v2.reveal("x").await.unwrap().expose_secret(), "value-x-1");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // The key file lost: a clear error, and no new key file is made over it.
    std::fs::remove_file(&path).unwrap();
    let err = Vault::open_default(store, &sources, true)
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::MissingKey { .. }), "{err}");
    assert!(!path.exists());
}

#[test]
fn master_keys_parse_from_hex_and_base64_only_at_32_bytes() {
    use nanoclaw_vault::KeyOrigin;
    MasterKey::parse(&"ab".repeat(32), KeyOrigin::Env).unwrap();
    MasterKey::parse(
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        KeyOrigin::Env,
    )
    .unwrap();
    let err = MasterKey::parse("c2hvcnQ=", KeyOrigin::Env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("NANOCLAW_MASTER_KEY") && err.contains("5 bytes"),
        "{err}"
    );
    assert!(MasterKey::parse("not a key!", KeyOrigin::Env).is_err());
    assert!(
        !format!(
            "{:?}",
            MasterKey::parse(&"ab".repeat(32), KeyOrigin::Env).unwrap()
        )
        .contains("abab")
    );
}

/// The on-disk format outlives crate upgrades: a value sealed before the move to chacha20poly1305 0.11
/// (by 0.10) still opens, and only under its own name and version.
#[test]
fn a_value_sealed_by_an_earlier_release_still_opens() {
    let key = MasterKey::from_bytes([7u8; 32]);
    let nonce = hex::decode("0e173ea7e48094e39c56b179b0bcccff09ed090c439d6716").unwrap();
    let sealed = hex::decode(
        "d3eb7aaf59178bfde3b70f0b03f1bd7b90484a4d46b5217c4f0de708c92aeba2f5428195d37129a2396c",
    )
    .unwrap();
    let value = nanoclaw_vault::open_sealed(&key, "golden", 3, &nonce, &sealed).unwrap();
    assert_eq!(value.expose_secret(), "sk-golden-value-0123456789");
    assert!(nanoclaw_vault::open_sealed(&key, "golden", 2, &nonce, &sealed).is_err());
    assert!(nanoclaw_vault::open_sealed(&key, "golden", 3, &nonce[..23], &sealed).is_err());
}
