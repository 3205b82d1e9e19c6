//! Behaviour tests on real SQLite files.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nanoclaw_store::{
    InboundStatus, NewGroup, NewInbound, NewOutbound, OutboundFile, OutboundKind, OutboundState,
    SCHEMA_VERSION, SessionMode, SessionScope, SessionStatus, Store, StoreError, Usage,
};

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("data").join("nanoclaw.db")
}

/// A store with one group, one chat wired to it and one shared session.
struct Fixture {
    store: Store,
    group_id: String,
    chat_id: i64,
    session_id: String,
}

async fn fixture(store: Store) -> Fixture {
    let group = store
        .ensure_group(NewGroup {
            name: "Main".into(),
            folder: "main".into(),
            is_main: true,
            ..NewGroup::default()
        })
        .await
        .unwrap();
    let chat = store
        .ensure_chat("telegram", "42", "Family", true)
        .await
        .unwrap();
    store
        .wire(
            chat.id,
            &group.id,
            nanoclaw_store::WiringOptions::new(true, SessionMode::Shared),
        )
        .await
        .unwrap();
    let session = store
        .resolve_session(&group.id, chat.id, None, SessionMode::Shared, 1_000)
        .await
        .unwrap();
    Fixture {
        store,
        group_id: group.id,
        chat_id: chat.id,
        session_id: session.id,
    }
}

fn msg(f: &Fixture, platform_msg_id: &str, received_at: i64) -> NewInbound {
    NewInbound {
        session_id: f.session_id.clone(),
        chat_id: f.chat_id,
        platform_msg_id: platform_msg_id.into(),
        sender: "u1".into(),
        sender_name: Some("Ann".into()),
        text: format!("hello {platform_msg_id}"),
        thread: None,
        received_at,
    }
}

fn reply(f: &Fixture, key: &str, in_reply_to: Option<i64>) -> NewOutbound {
    NewOutbound {
        session_id: Some(f.session_id.clone()),
        chat_id: f.chat_id,
        in_reply_to,
        idempotency_key: key.into(),
        text: format!("reply {key}"),
        kind: OutboundKind::Reply,
        files: Vec::new(),
    }
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn migrations_apply_and_reopen_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
        fixture(store).await;
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    let groups = store.list_groups().await.unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].folder, "main");
    let journal: String = store
        .call(|c| Ok(c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(journal, "wal");
    let fk: i64 = store
        .call(|c| Ok(c.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(fk, 1);
}

#[tokio::test]
async fn newer_schema_is_refused_and_file_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE x(y); PRAGMA user_version = 99;")
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("schema version 99 is newer than this nanoclaw")
            && text.contains(&format!("knows {SCHEMA_VERSION}"))
            && text.contains("upgrade nanoclaw"),
        "{text}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[tokio::test]
async fn creates_private_directory_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b").join("nanoclaw.db");
    let store = Store::open(&path).unwrap();
    fixture(store.clone()).await;
    assert_eq!(mode_of(&dir.path().join("a")), 0o700);
    assert_eq!(mode_of(&dir.path().join("a").join("b")), 0o700);
    assert_eq!(mode_of(&path), 0o600);

    // A pre-existing world-readable file is tightened.
    let loose = dir.path().join("loose.db");
    drop(
        rusqlite::Connection::open(&loose)
            .unwrap()
            .execute_batch("CREATE TABLE t(x)"),
    );
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    Store::open(&loose).unwrap();
    assert_eq!(mode_of(&loose), 0o600);
}

#[tokio::test]
async fn an_existing_empty_database_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"").unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("backup"), "{err}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

#[tokio::test]
async fn group_folder_is_validated() {
    let store = Store::open_in_memory().unwrap();
    let long_ok = "a".repeat(64);
    let too_long = "a".repeat(65);
    for bad in [
        "",
        "global",
        "Global",
        "-x",
        "_x",
        "a/b",
        "..",
        "a b",
        "é",
        too_long.as_str(),
    ] {
        let err = store
            .ensure_group(NewGroup {
                name: "x".into(),
                folder: bad.into(),
                ..NewGroup::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{bad:?} → {err:?}");
    }
    for good in ["a", "Work_2", "team-x", long_ok.as_str()] {
        store
            .ensure_group(NewGroup {
                name: "x".into(),
                folder: good.into(),
                ..NewGroup::default()
            })
            .await
            .unwrap();
    }
    assert_eq!(store.list_groups().await.unwrap().len(), 4);
}

#[tokio::test]
async fn ensure_group_returns_existing_without_overwriting() {
    let store = Store::open_in_memory().unwrap();
    let first = store
        .ensure_group(NewGroup {
            name: "Work".into(),
            folder: "work".into(),
            ..NewGroup::default()
        })
        .await
        .unwrap();
    assert_eq!(first.trigger, "@Andy");
    assert!(!first.is_main);
    let again = store
        .ensure_group(NewGroup {
            name: "Other name".into(),
            folder: "work".into(),
            trigger: Some("@Bob".into()),
            is_main: true,
            provider: Some("openai".into()),
            model: None,
        })
        .await
        .unwrap();
    assert_eq!(again, first);

    let mut edited = first.clone();
    edited.trigger = "@Bob".into();
    edited.model = Some("claude-x".into());
    store.update_group(&edited).await.unwrap();
    assert_eq!(store.group(&first.id).await.unwrap(), Some(edited.clone()));
    assert_eq!(store.group_by_folder("work").await.unwrap(), Some(edited));
    assert_eq!(store.group("nope").await.unwrap(), None);

    let other = store
        .ensure_group(NewGroup {
            name: "Home".into(),
            folder: "home".into(),
            ..NewGroup::default()
        })
        .await
        .unwrap();
    let mut clash = other.clone();
    clash.folder = "work".into();
    assert!(matches!(
        store.update_group(&clash).await,
        Err(StoreError::Invalid(_))
    ));
    let mut ghost = other;
    ghost.id = "grp-missing".into();
    assert!(matches!(
        store.update_group(&ghost).await,
        Err(StoreError::NotFound { .. })
    ));
}

#[tokio::test]
async fn chats_and_wirings() {
    let f = fixture(Store::open_in_memory().unwrap()).await;
    let s = &f.store;
    let again = s
        .ensure_chat("telegram", "42", "Family (renamed)", true)
        .await
        .unwrap();
    assert_eq!(again.id, f.chat_id);
    assert_eq!(again.name, "Family (renamed)");
    assert_eq!(s.chat(f.chat_id).await.unwrap(), Some(again.clone()));
    assert_eq!(
        s.chat_by_platform("telegram", "42").await.unwrap(),
        Some(again)
    );
    assert_eq!(s.chat_by_platform("whatsapp", "42").await.unwrap(), None);

    // Upsert: re-wiring changes options, not the row count.
    let w = s
        .wire(
            f.chat_id,
            &f.group_id,
            nanoclaw_store::WiringOptions::new(false, SessionMode::PerThread),
        )
        .await
        .unwrap();
    assert!(!w.requires_trigger());
    assert_eq!(w.session_mode, SessionMode::PerThread);
    let wired = s.wirings_for_chat(f.chat_id).await.unwrap();
    assert_eq!(wired.len(), 1);
    assert_eq!(wired[0].0, w);
    assert_eq!(wired[0].1.id, f.group_id);

    assert!(matches!(
        s.wire(
            9999,
            &f.group_id,
            nanoclaw_store::WiringOptions::new(true, SessionMode::Shared)
        )
        .await,
        Err(StoreError::NotFound { what: "chat", .. })
    ));
    assert!(matches!(
        s.wire(
            f.chat_id,
            "grp-missing",
            nanoclaw_store::WiringOptions::new(true, SessionMode::Shared)
        )
        .await,
        Err(StoreError::NotFound { what: "group", .. })
    ));
    assert!(s.unwire(f.chat_id, &f.group_id).await.unwrap());
    assert!(s.wirings_for_chat(f.chat_id).await.unwrap().is_empty());
}

#[tokio::test]
async fn sessions_resolve_per_mode() {
    let f = fixture(Store::open_in_memory().unwrap()).await;
    let s = &f.store;
    let shared = s
        .resolve_session(
            &f.group_id,
            f.chat_id,
            Some("t1".into()),
            SessionMode::Shared,
            2_000,
        )
        .await
        .unwrap();
    assert_eq!(shared.id, f.session_id, "shared mode ignores the thread");
    assert_eq!(shared.thread, None);
    assert_eq!(shared.last_active, 2_000);

    let t1 = s
        .resolve_session(
            &f.group_id,
            f.chat_id,
            Some("t1".into()),
            SessionMode::PerThread,
            3_000,
        )
        .await
        .unwrap();
    let t2 = s
        .resolve_session(
            &f.group_id,
            f.chat_id,
            Some("t2".into()),
            SessionMode::PerThread,
            3_000,
        )
        .await
        .unwrap();
    let t1_again = s
        .resolve_session(
            &f.group_id,
            f.chat_id,
            Some("t1".into()),
            SessionMode::PerThread,
            4_000,
        )
        .await
        .unwrap();
    assert_ne!(t1.id, t2.id);
    assert_ne!(t1.id, f.session_id);
    assert_eq!(t1_again.id, t1.id);
    assert_eq!(t1.thread.as_deref(), Some("t1"));

    assert!(s.close_session(&f.session_id, 5_000).await.unwrap());
    assert_eq!(
        s.session(&f.session_id).await.unwrap().unwrap().status,
        SessionStatus::Closed
    );
    let fresh = s
        .resolve_session(&f.group_id, f.chat_id, None, SessionMode::Shared, 6_000)
        .await
        .unwrap();
    assert_ne!(fresh.id, f.session_id);
    assert_eq!(s.sessions_for_group(&f.group_id).await.unwrap().len(), 4);
}

#[tokio::test]
async fn redelivered_inbound_is_stored_once() {
    let f = fixture(Store::open_in_memory().unwrap()).await;
    let first = f.store.insert_inbound(msg(&f, "m1", 10)).await.unwrap();
    assert!(!first.duplicate);
    let second = f.store.insert_inbound(msg(&f, "m1", 11)).await.unwrap();
    assert!(second.duplicate);
    assert_eq!(second.id, first.id);
    let rows = f.store.inbound_for_session(&f.session_id).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, InboundStatus::Pending);
    assert_eq!(rows[0].tries, 0);
    assert_eq!(rows[0].sender_name.as_deref(), Some("Ann"));
}

#[tokio::test]
async fn claim_takes_oldest_due_and_marks_processing() {
    let f = fixture(Store::open_in_memory().unwrap()).await;
    for (id, at) in [("b", 20), ("a", 10), ("c", 30), ("later", 500)] {
        f.store.insert_inbound(msg(&f, id, at)).await.unwrap();
    }
    let got = f.store.claim_pending(&f.session_id, 100, 2).await.unwrap();
    let ids: Vec<_> = got.iter().map(|m| m.platform_msg_id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert!(
        got.iter()
            .all(|m| m.status == InboundStatus::Processing && m.tries == 1)
    );
    let rest = f.store.claim_pending(&f.session_id, 100, 10).await.unwrap();
    assert_eq!(rest.len(), 1, "'later' is not due yet");
    assert_eq!(rest[0].platform_msg_id, "c");
    assert!(
        f.store
            .claim_pending(&f.session_id, 100, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn concurrent_claims_never_share_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let f = fixture(Store::open(&path).unwrap()).await;
    for i in 0..120 {
        f.store
            .insert_inbound(msg(&f, &format!("m{i}"), i))
            .await
            .unwrap();
    }
    // A second open of the same file: another process's connection.
    let other = Store::open(&path).unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = if t % 2 == 0 {
            f.store.clone()
        } else {
            other.clone()
        };
        let session = f.session_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store.claim_pending(&session, 1_000_000, 3).await.unwrap();
                if got.is_empty() {
                    break mine;
                }
                mine.extend(got.into_iter().map(|m| m.id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().copied().collect();
    assert_eq!(all.len(), 120, "every row claimed exactly once");
    assert_eq!(unique.len(), 120);
    let rows = f.store.inbound_for_session(&f.session_id).await.unwrap();
    assert!(
        rows.iter()
            .all(|r| r.status == InboundStatus::Processing && r.tries == 1)
    );
}

#[tokio::test]
async fn complete_turn_queues_replies_and_finishes_inbound_atomically() {
    let f = fixture(Store::open_in_memory().unwrap()).await;
    let a = f.store.insert_inbound(msg(&f, "a", 1)).await.unwrap().id;
    let b = f.store.insert_inbound(msg(&f, "b", 2)).await.unwrap().id;
    f.store.claim_pending(&f.session_id, 10, 10).await.unwrap();

    // A reply to an unknown chat violates a foreign key: nothing of the turn may be kept.
    let mut broken = reply(&f, "turn1-bad", Some(a));
    broken.chat_id = 9999;
    let err = f
        .store
        .complete_turn(vec![a, b], vec![reply(&f, "turn1-0", Some(a)), broken], 20)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Sqlite {
                op: "insert outbound",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        f.store
            .outbound_for_chat(f.chat_id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        f.store.inbound(a).await.unwrap().unwrap().status,
        InboundStatus::Processing
    );

    let out = f
        .store
        .complete_turn(
            vec![a, b],
            vec![reply(&f, "turn1-0", Some(a)), reply(&f, "turn1-1", Some(b))],
            30,
        )
        .await
        .unwrap();
    assert_eq!(out.len(), 2);
    assert!(
        out.iter()
            .all(|o| o.state == OutboundState::Pending && o.created_at == 30)
    );
    assert_eq!(
        f.store.inbound(a).await.unwrap().unwrap().status,
        InboundStatus::Done
    );
    assert_eq!(
        f.store.inbound(b).await.unwrap().unwrap().status,
        InboundStatus::Done
    );

    // Replaying the same turn (e.g. after a crash between commit and ack) adds nothing.
    let replay = f
        .store
        .complete_turn(vec![a, b], vec![reply(&f, "turn1-0", Some(a))], 40)
        .await
        .unwrap();
    assert!(replay.is_empty());
    assert_eq!(f.store.outbound_for_chat(f.chat_id).await.unwrap().len(), 2);
    assert!(
        f.store
            .insert_outbound(reply(&f, "turn1-1", None))
            .await
            .unwrap()
            .is_none()
    );
}

fn file(name: &str, size: u64) -> OutboundFile {
    OutboundFile {
        file_name: name.into(),
        path: format!("/outbox/x/{name}"),
        mime_type: Some("text/plain".into()),
        size,
    }
}

#[tokio::test]
async fn outbound_files_are_kept_in_order_with_their_message_and_only_once() {
    let f = fixture(Store::open_in_memory().unwrap()).await;
    let a = f.store.insert_inbound(msg(&f, "a", 1)).await.unwrap().id;
    f.store.claim_pending(&f.session_id, 10, 10).await.unwrap();
    let mut with_files = reply(&f, "msg-1", Some(a));
    with_files.files = vec![file("b.txt", 2), file("a.txt", 1)];
    let row = f
        .store
        .insert_outbound(with_files.clone())
        .await
        .unwrap()
        .unwrap();
    let plain = f
        .store
        .complete_turn(vec![a], vec![reply(&f, "turn-a", Some(a))], 20)
        .await
        .unwrap();
    assert_eq!(
        f.store.outbound_files(row.id).await.unwrap(),
        vec![file("b.txt", 2), file("a.txt", 1)]
    );
    assert!(
        f.store
            .outbound_files(plain[0].id)
            .await
            .unwrap()
            .is_empty()
    );

    // The same key again (a retried turn) stores neither a row nor its files.
    with_files.files = vec![file("other.txt", 3)];
    assert!(f.store.insert_outbound(with_files).await.unwrap().is_none());
    assert_eq!(f.store.outbound_files(row.id).await.unwrap().len(), 2);

    // Only files of undelivered messages must be kept.
    let mut pending = f.store.pending_outbound_file_paths().await.unwrap();
    pending.sort();
    assert_eq!(pending, vec!["/outbox/x/a.txt", "/outbox/x/b.txt"]);
    assert_eq!(f.store.pending_outbound_file_bytes().await.unwrap(), 3);
    f.store.mark_delivered(row.id, None, 30).await.unwrap();
    assert_eq!(f.store.pending_outbound_file_bytes().await.unwrap(), 0);
    assert!(
        f.store
            .pending_outbound_file_paths()
            .await
            .unwrap()
            .is_empty()
    );
    // The record of what was sent stays.
    assert_eq!(f.store.outbound_files(row.id).await.unwrap().len(), 2);
}

#[tokio::test]
async fn retry_backs_off_then_fails_with_exactly_one_notice() {
    let f = fixture(Store::open_in_memory().unwrap()).await;
    let s = &f.store;
    let a = s.insert_inbound(msg(&f, "a", 0)).await.unwrap().id;
    let b = s.insert_inbound(msg(&f, "b", 0)).await.unwrap().id;
    let notice = NewOutbound {
        kind: OutboundKind::Error,
        files: Vec::new(),
        ..reply(&f, "failed-notice-session", None)
    };
    let (max_tries, base) = (3, 1_000);

    // try 1 at t=0 → due at 0 + 1000
    assert_eq!(s.claim_pending(&f.session_id, 0, 1).await.unwrap()[0].id, a);
    let r = s
        .retry_or_fail(
            vec![a],
            "model 529",
            max_tries,
            base,
            0,
            Some(notice.clone()),
        )
        .await
        .unwrap();
    assert_eq!((r.retried, r.failed, r.notice), (vec![a], vec![], None));
    let row = s.inbound(a).await.unwrap().unwrap();
    assert_eq!(row.status, InboundStatus::Pending);
    assert_eq!(row.process_after, 1_000);
    assert_eq!(row.last_error.as_deref(), Some("model 529"));
    assert_eq!(s.next_due_time().await.unwrap(), Some(0), "b is still due");

    // b goes straight through; now only a's retry is outstanding.
    let got = s.claim_pending(&f.session_id, 0, 5).await.unwrap();
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), vec![b]);
    assert_eq!(s.next_due_time().await.unwrap(), Some(1_000));
    assert!(s.sessions_with_due_work(999).await.unwrap().is_empty());
    assert_eq!(
        s.sessions_with_due_work(1_000).await.unwrap(),
        vec![f.session_id.clone()]
    );
    assert!(
        s.claim_pending(&f.session_id, 999, 5)
            .await
            .unwrap()
            .is_empty()
    );

    // try 2 at t=1000 → due at 1000 + 2000
    assert_eq!(
        s.claim_pending(&f.session_id, 1_000, 5).await.unwrap()[0].tries,
        2
    );
    s.retry_or_fail(
        vec![a],
        "model 529",
        max_tries,
        base,
        1_000,
        Some(notice.clone()),
    )
    .await
    .unwrap();
    assert_eq!(s.inbound(a).await.unwrap().unwrap().process_after, 3_000);

    // try 3 → failed, notice queued.
    assert_eq!(
        s.claim_pending(&f.session_id, 3_000, 5).await.unwrap()[0].tries,
        3
    );
    let r = s
        .retry_or_fail(
            vec![a],
            "model 529",
            max_tries,
            base,
            3_000,
            Some(notice.clone()),
        )
        .await
        .unwrap();
    assert_eq!(r.failed, vec![a]);
    let n = r.notice.unwrap();
    assert_eq!(n.kind, OutboundKind::Error);
    assert_eq!(
        s.inbound(a).await.unwrap().unwrap().status,
        InboundStatus::Failed
    );
    assert_eq!(s.next_due_time().await.unwrap(), None);

    // b fails for good too (max_tries 1): same notice key → no second notice.
    let r = s
        .retry_or_fail(vec![b], "boom", 1, base, 4_000, Some(notice.clone()))
        .await
        .unwrap();
    assert_eq!((r.failed, r.notice), (vec![b], None));
    // Repeating on an already failed row changes nothing.
    let r = s
        .retry_or_fail(vec![a], "again", max_tries, base, 5_000, Some(notice))
        .await
        .unwrap();
    assert!(r.retried.is_empty() && r.failed.is_empty() && r.notice.is_none());
    let errors: Vec<_> = s
        .outbound_for_chat(f.chat_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|o| o.kind == OutboundKind::Error)
        .collect();
    assert_eq!(errors.len(), 1);
}

#[tokio::test]
async fn recover_interrupted_requeues_and_keeps_tries() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let (session_id, id) = {
        let f = fixture(Store::open(&path).unwrap()).await;
        let id = f.store.insert_inbound(msg(&f, "a", 0)).await.unwrap().id;
        f.store.claim_pending(&f.session_id, 0, 5).await.unwrap();
        (f.session_id, id)
        // "crash": the store is dropped with the row still processing.
    };
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.inbound(id).await.unwrap().unwrap().status,
        InboundStatus::Processing
    );
    assert_eq!(store.recover_interrupted(100).await.unwrap(), 1);
    assert_eq!(store.recover_interrupted(100).await.unwrap(), 0);
    let row = store.inbound(id).await.unwrap().unwrap();
    assert_eq!((row.status, row.tries), (InboundStatus::Pending, 1));
    let again = store.claim_pending(&session_id, 100, 5).await.unwrap();
    assert_eq!(again[0].tries, 2);
}

#[tokio::test]
async fn only_the_exhausted_row_of_a_batch_fails_the_others_keep_their_tries() {
    let f = fixture(Store::open_in_memory().unwrap()).await;
    let max_tries = 2;
    // "a" was claimed by three host runs that each died (three claims: one over the cap).
    let a = f.store.insert_inbound(msg(&f, "a", 0)).await.unwrap().id;
    for _ in 0..2 {
        f.store.claim_pending(&f.session_id, 0, 10).await.unwrap();
        f.store.recover_interrupted(0).await.unwrap();
    }
    // "b" and "c" arrived since; the next claim batches them with "a".
    let b = f.store.insert_inbound(msg(&f, "b", 1)).await.unwrap().id;
    let c = f.store.insert_inbound(msg(&f, "c", 2)).await.unwrap().id;
    let batch = f.store.claim_pending(&f.session_id, 10, 10).await.unwrap();
    let tries: Vec<_> = batch.iter().map(|m| (m.id, m.tries)).collect();
    assert_eq!(tries, [(a, 3), (b, 1), (c, 1)]);

    let notice = reply(&f, "error:a", Some(a));
    let out = f
        .store
        .fail_exhausted(
            vec![a, b, c],
            max_tries,
            "gave up",
            20,
            Some(notice.clone()),
        )
        .await
        .unwrap();
    assert_eq!(out.failed, [a]);
    assert_eq!(out.retried, [b, c]);
    assert!(out.notice.is_some());
    let row = |id| {
        let store = f.store.clone();
        async move { store.inbound(id).await.unwrap().unwrap() }
    };
    assert_eq!(row(a).await.status, InboundStatus::Failed);
    for id in [b, c] {
        let r = row(id).await;
        assert_eq!(
            (r.status, r.tries, r.process_after),
            (InboundStatus::Pending, 0, r.received_at)
        );
    }
    // Claimed again at once, on their first try; the notice exists once.
    let again = f.store.claim_pending(&f.session_id, 20, 10).await.unwrap();
    let tries: Vec<_> = again.iter().map(|m| (m.id, m.tries)).collect();
    assert_eq!(tries, [(b, 1), (c, 1)]);
    let replay = f
        .store
        .fail_exhausted(vec![a], max_tries, "gave up", 30, Some(notice))
        .await
        .unwrap();
    assert!(replay.failed.is_empty() && replay.notice.is_none());
    assert_eq!(f.store.outbound_for_chat(f.chat_id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn deferring_a_claim_waits_without_spending_a_try() {
    let f = fixture(Store::open_in_memory().unwrap()).await;
    let s = &f.store;
    let id = s.insert_inbound(msg(&f, "a", 0)).await.unwrap().id;
    let claimed = s.claim_pending(&f.session_id, 0, 5).await.unwrap();
    assert_eq!(claimed[0].tries, 1);
    assert_eq!(
        s.defer_claimed(vec![id], 5_000, "engine down", 10)
            .await
            .unwrap(),
        1
    );
    let row = s.inbound(id).await.unwrap().unwrap();
    assert_eq!((row.status, row.tries), (InboundStatus::Pending, 0));
    assert_eq!(row.last_error.as_deref(), Some("engine down"));
    assert!(
        s.claim_pending(&f.session_id, 4_999, 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.next_due_time().await.unwrap(), Some(5_000));
    let again = s.claim_pending(&f.session_id, 5_000, 5).await.unwrap();
    assert_eq!(again[0].tries, 1);
}

#[tokio::test]
async fn delivery_is_recorded_once() {
    let f = fixture(Store::open_in_memory().unwrap()).await;
    let s = &f.store;
    let o1 = s
        .insert_outbound(reply(&f, "k1", None))
        .await
        .unwrap()
        .unwrap();
    let o2 = s
        .insert_outbound(reply(&f, "k2", None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.pending_outbound(10).await.unwrap().len(), 2);
    assert_eq!(
        s.pending_outbound(1).await.unwrap()[0].id,
        o1.id,
        "oldest first"
    );

    assert!(
        s.mark_delivered(o1.id, Some("tg-1".into()), 50)
            .await
            .unwrap()
    );
    assert!(
        !s.mark_delivered(o1.id, Some("tg-2".into()), 60)
            .await
            .unwrap()
    );
    let d = s.outbound(o1.id).await.unwrap().unwrap();
    assert_eq!(d.state, OutboundState::Delivered);
    assert_eq!(d.platform_message_id.as_deref(), Some("tg-1"));
    assert_eq!(d.delivered_at, Some(50));

    assert_eq!(
        s.mark_delivery_failed(o2.id, "429", 2).await.unwrap(),
        OutboundState::Pending
    );
    assert_eq!(
        s.mark_delivery_failed(o2.id, "429", 2).await.unwrap(),
        OutboundState::Failed
    );
    let failed = s.outbound(o2.id).await.unwrap().unwrap();
    assert_eq!(
        (failed.tries, failed.last_error.as_deref()),
        (2, Some("429"))
    );
    assert!(!s.mark_delivered(o2.id, None, 70).await.unwrap());
    assert_eq!(
        s.mark_delivery_failed(o1.id, "late", 2).await.unwrap(),
        OutboundState::Delivered,
        "a delivered row is not touched"
    );
    assert!(s.pending_outbound(10).await.unwrap().is_empty());
    assert!(
        s.pending_outbound_for_chat(f.chat_id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        s.mark_delivery_failed(12345, "x", 2).await,
        Err(StoreError::NotFound { .. })
    ));
}

#[tokio::test]
async fn usage_is_summed() {
    let f = fixture(Store::open_in_memory().unwrap()).await;
    let u = Usage {
        input_tokens: 100,
        output_tokens: 20,
        cache_read: 5,
        cache_creation: 1,
    };
    f.store.record_usage(&f.session_id, u, 1).await.unwrap();
    f.store.record_usage(&f.session_id, u, 2).await.unwrap();
    f.store.record_usage("ses-other", u, 3).await.unwrap();
    let total = f.store.usage_totals().await.unwrap();
    assert_eq!(
        (total.turns, total.input_tokens, total.output_tokens),
        (3, 300, 60)
    );
    assert_eq!((total.cache_read, total.cache_creation), (15, 3));
    assert_eq!(
        f.store
            .usage_for_session(&f.session_id)
            .await
            .unwrap()
            .turns,
        2
    );
}

#[tokio::test]
async fn enums_round_trip_and_reject_unknown_text() {
    assert_eq!(
        "per-thread".parse::<SessionMode>().unwrap(),
        SessionMode::PerThread
    );
    assert_eq!(SessionMode::PerThread.as_str(), "per-thread");
    assert_eq!(
        serde_json::to_string(&SessionMode::PerThread).unwrap(),
        "\"per-thread\""
    );
    for s in InboundStatus::ALL {
        assert_eq!(s.as_str().parse::<InboundStatus>().unwrap(), *s);
    }
    let err = "sent".parse::<OutboundState>().unwrap_err().to_string();
    assert!(err.contains("pending, delivered, failed"), "{err}");
}

#[tokio::test]
async fn panicking_call_errors_and_store_keeps_working() {
    // A call that panics on the owner thread yields an error; the store keeps working afterwards.
    let store = Store::open_in_memory().unwrap();
    let err = store
        .call(|_c| -> Result<(), StoreError> { panic!("boom") })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Closed));
    assert!(store.list_groups().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_from_handles_and_a_second_process_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let f = fixture(Store::open(&path).unwrap()).await;
    const TASKS: usize = 12;
    const PER_TASK: usize = 40;

    // "Another process": its own Store::open of the same file, on its own thread and runtime.
    let other_path = path.clone();
    let other_session = f.session_id.clone();
    let (chat_id, group_id) = (f.chat_id, f.group_id.clone());
    let other = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let store = Store::open(&other_path).unwrap();
            let mut tasks = Vec::new();
            for t in 0..4 {
                let store = store.clone();
                let session = other_session.clone();
                let group_id = group_id.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..PER_TASK {
                        store
                            .insert_inbound(NewInbound {
                                session_id: session.clone(),
                                chat_id,
                                platform_msg_id: format!("p2-{t}-{i}"),
                                sender: "u".into(),
                                sender_name: None,
                                text: "x".into(),
                                thread: None,
                                received_at: i as i64,
                            })
                            .await?;
                        store
                            .record_usage(
                                &session,
                                Usage {
                                    input_tokens: 1,
                                    ..Usage::default()
                                },
                                0,
                            )
                            .await?;
                        // Both processes race to create the same per-thread session.
                        store
                            .resolve_session(
                                &group_id,
                                chat_id,
                                Some(format!("thread-{i}")),
                                SessionMode::PerThread,
                                0,
                            )
                            .await?;
                    }
                    Ok::<_, StoreError>(())
                }));
            }
            for t in tasks {
                t.await.unwrap()?;
            }
            Ok::<_, StoreError>(())
        })
    });

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = f.store.clone();
        let session = f.session_id.clone();
        let (chat_id, group_id) = (f.chat_id, f.group_id.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                let ins = store
                    .insert_inbound(NewInbound {
                        session_id: session.clone(),
                        chat_id,
                        platform_msg_id: format!("p1-{t}-{i}"),
                        sender: "u".into(),
                        sender_name: None,
                        text: "x".into(),
                        thread: None,
                        received_at: i as i64,
                    })
                    .await?;
                store
                    .complete_turn(
                        vec![ins.id],
                        vec![NewOutbound {
                            session_id: Some(session.clone()),
                            chat_id,
                            in_reply_to: Some(ins.id),
                            idempotency_key: format!("r-{t}-{i}"),
                            text: "ok".into(),
                            kind: OutboundKind::Reply,
                            files: Vec::new(),
                        }],
                        i as i64,
                    )
                    .await?;
                store
                    .record_usage(
                        &session,
                        Usage {
                            input_tokens: 1,
                            ..Usage::default()
                        },
                        0,
                    )
                    .await?;
                store
                    .resolve_session(
                        &group_id,
                        chat_id,
                        Some(format!("thread-{i}")),
                        SessionMode::PerThread,
                        0,
                    )
                    .await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for t in tasks {
        t.await
            .unwrap()
            .expect("no write may fail (no 'database is locked')");
    }
    other
        .join()
        .unwrap()
        .expect("the second process's writes may not fail either");

    let rows = f.store.inbound_for_session(&f.session_id).await.unwrap();
    assert_eq!(rows.len(), TASKS * PER_TASK + 4 * PER_TASK);
    assert_eq!(
        f.store.outbound_for_chat(f.chat_id).await.unwrap().len(),
        TASKS * PER_TASK
    );
    assert_eq!(
        f.store.usage_totals().await.unwrap().turns as usize,
        TASKS * PER_TASK + 4 * PER_TASK
    );
    let sessions = f.store.sessions_for_group(&f.group_id).await.unwrap();
    assert_eq!(
        sessions.len(),
        1 + PER_TASK,
        "one session per thread, despite the race"
    );
}

#[tokio::test]
async fn simultaneous_first_opens_migrate_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (path, barrier) = (path.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                Store::open(&path)
            })
        })
        .collect();
    for h in handles {
        let store = h.join().unwrap().expect("every concurrent open succeeds");
        assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    }
}

#[tokio::test]
async fn the_wal_is_checkpointed_in_the_background_and_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let f = fixture(Store::open(&path).unwrap()).await;
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    // 3,000 back-to-back commits of a few 4 KiB pages each: ~40 MiB of WAL if it were
    // never copied back and started over.
    for i in 0..3_000 {
        f.store
            .insert_inbound(msg(&f, &format!("wal-{i}"), 1_000 + i))
            .await
            .unwrap();
    }
    let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert!(size < 24 * 1024 * 1024, "the WAL grew to {size} bytes");
    assert_eq!(
        f.store
            .inbound_for_session(&f.session_id)
            .await
            .unwrap()
            .len(),
        3_000
    );
}

#[tokio::test]
async fn a_message_is_stored_in_its_session_in_one_step_and_once() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(Store::open(&db_path(&dir)).unwrap()).await;
    let in_thread = |id: &str, thread: Option<&str>| NewInbound {
        thread: thread.map(str::to_owned),
        ..msg(&f, id, 2_000)
    };
    // Shared: the chat's one session, whatever the thread.
    let (s1, first) = f
        .store
        .insert_inbound_for_group(&f.group_id, SessionMode::Shared, in_thread("a", Some("t1")))
        .await
        .unwrap();
    assert_eq!(s1.id, f.session_id);
    assert!(!first.duplicate);
    let (_, again) = f
        .store
        .insert_inbound_for_group(&f.group_id, SessionMode::Shared, in_thread("a", Some("t1")))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.id, first.id);
    // Per thread: a session per thread, made on first use.
    let (t1, _) = f
        .store
        .insert_inbound_for_group(
            &f.group_id,
            SessionMode::PerThread,
            in_thread("b", Some("t1")),
        )
        .await
        .unwrap();
    let (t2, _) = f
        .store
        .insert_inbound_for_group(
            &f.group_id,
            SessionMode::PerThread,
            in_thread("c", Some("t2")),
        )
        .await
        .unwrap();
    assert_ne!(t1.id, t2.id);
    assert_ne!(t1.id, f.session_id);
    assert_eq!(t1.thread.as_deref(), Some("t1"));
    assert_eq!(
        f.store
            .inbound_for_session(t2.id.clone())
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn agent_shared_chats_share_one_session_and_each_turn_answers_one_place() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(Store::open(&db_path(&dir)).unwrap()).await;
    let other = f
        .store
        .ensure_chat("slack", "C1", "Work", true)
        .await
        .unwrap();
    let at = |chat_id: i64, id: &str, thread: Option<&str>, t: i64| NewInbound {
        chat_id,
        thread: thread.map(str::to_owned),
        ..msg(&f, id, t)
    };
    let shared = SessionMode::AgentShared;
    let (s1, _) = f
        .store
        .insert_inbound_for_group(&f.group_id, shared, at(f.chat_id, "a1", None, 2_000))
        .await
        .unwrap();
    let (s2, _) = f
        .store
        .insert_inbound_for_group(&f.group_id, shared, at(other.id, "b1", Some("ts9"), 2_001))
        .await
        .unwrap();
    let (s3, _) = f
        .store
        .insert_inbound_for_group(&f.group_id, shared, at(other.id, "b2", Some("ts9"), 2_002))
        .await
        .unwrap();
    let (s4, _) = f
        .store
        .insert_inbound_for_group(&f.group_id, shared, at(f.chat_id, "a2", None, 2_003))
        .await
        .unwrap();
    // One conversation for the group, apart from the chat's own `shared` session.
    assert_eq!(s1.id, s2.id);
    assert_eq!(
        (s3.id.as_str(), s4.id.as_str()),
        (s1.id.as_str(), s1.id.as_str())
    );
    assert_ne!(s1.id, f.session_id);
    assert_eq!(s1.scope, SessionScope::Group);

    // Turns come in order, one place at a time: a1 | b1+b2 (Slack thread ts9) | a2.
    let claim = || f.store.claim_pending(s1.id.clone(), 10_000, 10);
    let texts = |batch: &[nanoclaw_store::Inbound]| -> Vec<String> {
        batch.iter().map(|m| m.platform_msg_id.clone()).collect()
    };
    let first = claim().await.unwrap();
    assert_eq!(texts(&first), ["a1"]);
    let second = claim().await.unwrap();
    assert_eq!(texts(&second), ["b1", "b2"]);
    let third = claim().await.unwrap();
    assert_eq!(texts(&third), ["a2"]);

    // A reply goes to the thread of the message it answers.
    let answer = f
        .store
        .complete_turn(
            second.iter().map(|m| m.id).collect(),
            vec![NewOutbound {
                session_id: Some(s1.id.clone()),
                chat_id: other.id,
                in_reply_to: second.last().map(|m| m.id),
                idempotency_key: "reply:b".into(),
                text: "both answered".into(),
                kind: OutboundKind::Reply,
                files: Vec::new(),
            }],
            10_001,
        )
        .await
        .unwrap();
    assert_eq!(answer[0].thread.as_deref(), Some("ts9"));
    // A reply in a chat session of shared mode goes to the chat, not a thread.
    let plain = f
        .store
        .insert_outbound(reply(&f, "plain", None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(plain.thread, None);
    // Platforms number messages per chat: the same id in another chat is another message.
    let (_, same_id_elsewhere) = f
        .store
        .insert_inbound_for_group(&f.group_id, shared, at(other.id, "a1", None, 2_004))
        .await
        .unwrap();
    assert!(!same_id_elsewhere.duplicate);
    let (_, again) = f
        .store
        .insert_inbound_for_group(&f.group_id, shared, at(other.id, "a1", None, 2_005))
        .await
        .unwrap();
    assert!(again.duplicate, "a re-delivery is still stored once");
}

#[tokio::test]
async fn a_version_8_database_upgrades_with_its_messages_wirings_and_reply_threads() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    {
        // The schema as nanoclaw 0.1 stop 19 left it, with a little of everything in it.
        let conn = rusqlite::Connection::open(&path).unwrap();
        for sql in [
            include_str!("../../migrations/0001_initial.sql"),
            include_str!("../../migrations/0002_group_mounts.sql"),
            include_str!("../../migrations/0003_vault.sql"),
            include_str!("../../migrations/0004_egress_policy.sql"),
            include_str!("../../migrations/0005_grant_approvals.sql"),
            include_str!("../../migrations/0006_tasks.sql"),
            include_str!("../../migrations/0007_channels.sql"),
            include_str!("../../migrations/0008_chat_wiring.sql"),
        ] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "PRAGMA user_version = 8;
             INSERT INTO agent_groups (id, name, folder, created_at) VALUES ('g', 'G', 'g', 1);
             INSERT INTO chats (id, channel, platform_id, name, created_at) VALUES (7, 'slack', 'C', 'C', 1);
             INSERT INTO wirings (chat_id, group_id, trigger_rule, session_mode, created_at)
                 VALUES (7, 'g', 'mention', 'per-thread', 1);
             INSERT INTO sessions (id, group_id, chat_id, thread, created_at, last_active)
                 VALUES ('s', 'g', 7, 'ts1', 1, 1);
             INSERT INTO inbound (id, session_id, chat_id, platform_msg_id, sender, text, thread,
                                  received_at, process_after, updated_at)
                 VALUES (3, 's', 7, 'm1', 'u', 'hi', 'ts1', 1, 1, 1);
             INSERT INTO outbound (session_id, chat_id, in_reply_to, idempotency_key, text, kind, created_at)
                 VALUES ('s', 7, 3, 'k', 'hello', 'reply', 2);",
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    let (wiring, _) = &store.wirings_for_chat(7).await.unwrap()[0];
    assert_eq!(wiring.session_mode, SessionMode::PerThread);
    assert_eq!(wiring.trigger_rule, nanoclaw_store::TriggerRule::Mention);
    // A queued reply learned its thread from its session.
    let queued = store.outbound_for_chat(7).await.unwrap();
    assert_eq!(queued[0].thread.as_deref(), Some("ts1"));
    // The stored message is kept, and still deduplicates a re-delivery.
    let (session, again) = store
        .insert_inbound_for_group(
            "g",
            SessionMode::PerThread,
            NewInbound {
                session_id: String::new(),
                chat_id: 7,
                platform_msg_id: "m1".into(),
                sender: "u".into(),
                sender_name: None,
                text: "hi".into(),
                thread: Some("ts1".into()),
                received_at: 5,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (session.id.as_str(), again.id, again.duplicate),
        ("s", 3, true)
    );
    assert_eq!(session.scope, SessionScope::Chat);
}

#[tokio::test]
async fn replies_for_a_routed_chat_are_queued_for_its_target() {
    let f = fixture(Store::open_in_memory().unwrap()).await;
    let hook = f
        .store
        .ensure_chat("webhook", "hook:ci", "webhook ci", false)
        .await
        .unwrap();
    assert!(
        f.store
            .set_reply_route(hook.id, Some(hook.id))
            .await
            .is_err()
    );
    f.store
        .set_reply_route(hook.id, Some(f.chat_id))
        .await
        .unwrap();
    assert_eq!(
        f.store.reply_routes().await.unwrap(),
        vec![(hook.id, f.chat_id)]
    );
    let mut answer = reply(&f, "routed", None);
    answer.chat_id = hook.id;
    answer.text = "build is green".into();
    let row = f
        .store
        .insert_outbound(answer.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.chat_id, f.chat_id);
    assert_eq!(row.text, "[webhook ci] build is green");
    assert_eq!(row.in_reply_to, None);
    // Still once per key.
    assert!(f.store.insert_outbound(answer).await.unwrap().is_none());
    // Cleared: replies stay in the chat again.
    f.store.set_reply_route(hook.id, None).await.unwrap();
    let mut direct = reply(&f, "direct", None);
    direct.chat_id = hook.id;
    let row = f.store.insert_outbound(direct).await.unwrap().unwrap();
    assert_eq!(row.chat_id, hook.id);
    assert_eq!(row.text, "reply direct");
    assert!(f.store.reply_routes().await.unwrap().is_empty());
}

#[tokio::test]
async fn old_channel_state_is_forgotten_by_prefix_and_age_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_path(&dir)).unwrap();
    for (channel, key) in [
        ("webhook", "seen:old"),
        ("webhook", "seen:new"),
        ("webhook", "cursor"),
        ("webhook", "seenx"),
        ("email", "seen:old"),
        ("webhook", "50%:old"),
        ("webhook", "500:old"),
    ] {
        store.set_channel_state(channel, key, "v").await.unwrap();
    }
    // Every "…old" entry was written a year ago.
    store
        .call(|c| {
            Ok(c.execute(
                "UPDATE channel_state SET updated_at = updated_at - 365 * 86400000
                 WHERE key LIKE '%old' OR key = 'cursor' OR key = 'seenx'",
                [],
            )?)
        })
        .await
        .unwrap();
    let thirty_days_ago = nanoclaw_store::now_ms() - 30 * 86_400_000;
    let forgotten = store
        .forget_channel_state_before("webhook", "seen:", thirty_days_ago)
        .await
        .unwrap();
    assert_eq!(forgotten, 1);
    assert_eq!(
        store.channel_state("webhook", "seen:old").await.unwrap(),
        None
    );
    // A recent one, other prefixes, near-miss keys and other channels stay.
    for (channel, key) in [
        ("webhook", "seen:new"),
        ("webhook", "cursor"),
        ("webhook", "seenx"),
        ("email", "seen:old"),
    ] {
        assert!(
            store.channel_state(channel, key).await.unwrap().is_some(),
            "{channel}/{key} was forgotten"
        );
    }
    // A prefix is literal text, not a LIKE pattern.
    store
        .forget_channel_state_before("webhook", "50%", thirty_days_ago)
        .await
        .unwrap();
    assert_eq!(
        store.channel_state("webhook", "50%:old").await.unwrap(),
        None
    );
    assert!(
        store
            .channel_state("webhook", "500:old")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn status_counts_what_is_queued_what_failed_since_a_time_and_approvals_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(Store::open(&db_path(&dir)).unwrap()).await;
    let s = &f.store;
    for (id, at) in [("a", 0), ("b", 1), ("c", 2)] {
        s.insert_inbound(msg(&f, id, at)).await.unwrap();
    }
    // a: in a turn, then given up at t=5000 (its last try); b: in a turn; c: waiting.
    let a = s.claim_pending(&f.session_id, 0, 1).await.unwrap()[0].id;
    s.retry_or_fail(vec![a], "boom", 1, 1_000, 5_000, None)
        .await
        .unwrap();
    s.claim_pending(&f.session_id, 10, 1).await.unwrap();
    let first = s
        .insert_outbound(reply(&f, "r1", None))
        .await
        .unwrap()
        .unwrap();
    s.insert_outbound(reply(&f, "r2", None)).await.unwrap();
    s.mark_delivery_failed(first.id, "chat gone", 1)
        .await
        .unwrap();

    let q = s.queue_counts().await.unwrap();
    assert_eq!((q.pending, q.processing, q.outbound), (1, 1, 1));
    let since_start = s.failures_since(5_000).await.unwrap();
    assert_eq!((since_start.messages, since_start.deliveries), (1, 1));
    assert_eq!(since_start.total(), 2);
    // The message failed at t=5000: not counted from a later time on.
    let later = s.failures_since(5_001).await.unwrap();
    assert_eq!(later.messages, 0);
    assert_eq!(s.pending_approval_count().await.unwrap(), 0);
}

#[tokio::test]
async fn the_pause_survives_a_reopen_and_a_second_pause_keeps_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.paused().await.unwrap(), None);
        assert_eq!(
            store
                .set_paused(Some("chat terminal:local".into()), 1_000)
                .await
                .unwrap(),
            None
        );
        // Pausing again says since when, and keeps who paused first.
        let before = store
            .set_paused(Some("chat telegram:42".into()), 2_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (before.by.as_str(), before.since),
            ("chat terminal:local", 1_000)
        );
    }
    let store = Store::open(&path).unwrap();
    let paused = store.paused().await.unwrap().unwrap();
    assert_eq!(
        (paused.by.as_str(), paused.since),
        ("chat terminal:local", 1_000)
    );
    assert!(store.set_paused(None, 3_000).await.unwrap().is_some());
    assert_eq!(store.paused().await.unwrap(), None);
    assert_eq!(store.set_paused(None, 4_000).await.unwrap(), None);
}

#[tokio::test]
async fn a_stopped_turn_is_done_for_good_and_a_restart_does_not_bring_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(Store::open(&db_path(&dir)).unwrap()).await;
    let a = f.store.insert_inbound(msg(&f, "a", 10)).await.unwrap().id;
    let b = f.store.insert_inbound(msg(&f, "b", 11)).await.unwrap().id;
    let claimed = f.store.claim_pending(&f.session_id, 100, 1).await.unwrap();
    assert_eq!(claimed.iter().map(|m| m.id).collect::<Vec<_>>(), vec![a]);
    assert_eq!(
        f.store
            .stop_turn(vec![a, b], "stopped by the owner", 200)
            .await
            .unwrap(),
        1,
        "only the claimed row is ended"
    );
    assert_eq!(f.store.recover_interrupted(300).await.unwrap(), 0);
    let a_row = f.store.inbound(a).await.unwrap().unwrap();
    assert_eq!(a_row.status, InboundStatus::Done);
    assert_eq!(a_row.last_error.as_deref(), Some("stopped by the owner"));
    let b_row = f.store.inbound(b).await.unwrap().unwrap();
    assert_eq!(
        b_row.status,
        InboundStatus::Pending,
        "the queued message still waits"
    );
    assert!(
        f.store
            .outbound_for_chat(f.chat_id)
            .await
            .unwrap()
            .is_empty(),
        "no reply for a stopped turn"
    );
}
