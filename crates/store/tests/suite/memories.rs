//! The shared memory store: save, search (FTS5, bm25), list, forget, namespaces, limits, and
//! that one group never sees or removes another's memories.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use nanoclaw_store::{
    MAX_MEMORY_TEXT_BYTES, MAX_QUERY_BYTES, MemoryQuery, NewGroup, NewMemory, Store, StoreError,
};

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    store: Store,
    a: String,
    b: String,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nanoclaw.db");
    let store = Store::open(&path).unwrap();
    let mut ids = Vec::new();
    for folder in ["alpha", "beta"] {
        let g = store
            .ensure_group(NewGroup {
                name: folder.into(),
                folder: folder.into(),
                ..NewGroup::default()
            })
            .await
            .unwrap();
        ids.push(g.id);
    }
    let b = ids.pop().unwrap();
    let a = ids.pop().unwrap();
    Fixture {
        _dir: dir,
        path,
        store,
        a,
        b,
    }
}

async fn save(store: &Store, group: &str, ns: Option<&str>, text: &str) -> i64 {
    store
        .save_memory(NewMemory {
            group_id: group.into(),
            namespace: ns.map(str::to_owned),
            text: text.into(),
            now_ms: 1_000,
        })
        .await
        .unwrap()
}

async fn search(store: &Store, group: &str, ns: Option<&str>, query: &str) -> Vec<String> {
    store
        .search_memories(MemoryQuery {
            group_id: group.into(),
            query: query.into(),
            namespace: ns.map(str::to_owned),
            limit: 10,
        })
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.memory.text)
        .collect()
}

#[tokio::test]
async fn saved_memories_are_found_ranked_listed_and_forgotten() {
    let f = fixture().await;
    let s = &f.store;
    let birthday = save(s, &f.a, None, "Anna's birthday is on March 3rd.").await;
    save(s, &f.a, None, "The team meets on Mondays at 10.").await;
    let cafe = save(
        s,
        &f.a,
        None,
        "Favourite café: Zeit für Brot, Berlin. Birthday cakes there too.",
    )
    .await;
    assert!(birthday < cafe, "ids grow");

    // Stemming ("birthdays" finds "birthday") and bm25: the short memory about the
    // birthday ranks above the long one that mentions it in passing.
    let hits = search(s, &f.a, None, "birthdays").await;
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(hits[0].starts_with("Anna's birthday"), "{hits:?}");
    // Diacritics folded; several words must all match.
    assert_eq!(search(s, &f.a, None, "cafe berlin").await.len(), 1);
    // No memory has all the words: any word may match instead.
    let any = search(s, &f.a, None, "mondays dentist").await;
    assert_eq!(any, vec!["The team meets on Mondays at 10.".to_owned()]);
    assert!(search(s, &f.a, None, "zebra").await.is_empty());

    let listed = s.list_memories(f.a.clone(), None, None, 10).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].id, cafe, "most recent first");
    assert_eq!(listed[0].namespace, "shared");
    // Paging on from the last id of a page.
    let page2 = s
        .list_memories(f.a.clone(), None, Some(listed[1].id), 10)
        .await
        .unwrap();
    assert_eq!(
        page2.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![birthday]
    );
    assert_eq!(s.count_memories(f.a.clone()).await.unwrap(), 3);

    assert!(s.forget_memory(f.a.clone(), birthday).await.unwrap());
    assert!(
        !s.forget_memory(f.a.clone(), birthday).await.unwrap(),
        "already gone"
    );
    // The index forgot it too.
    let hits = search(s, &f.a, None, "anna").await;
    assert!(hits.is_empty(), "{hits:?}");
    assert_eq!(s.count_memories(f.a.clone()).await.unwrap(), 2);

    // A new memory never takes a forgotten one's id.
    let next = save(s, &f.a, None, "new").await;
    assert!(next > cafe);

    // Kept across a reopen, index included.
    drop(f.store);
    let s = Store::open(&f.path).unwrap();
    assert_eq!(search(&s, &f.a, None, "cafe").await.len(), 1);
}

#[tokio::test]
async fn fts_syntax_in_a_query_is_searched_for_not_run() {
    let f = fixture().await;
    let s = &f.store;
    save(s, &f.a, None, "Use OR between options and NEAR the end.").await;
    for query in [
        r#""a" OR b*"#,
        "NEAR(",
        "-x",
        ")",
        "(",
        "\"",
        "\"\"\"",
        "text:secret",
        "a AND",
        "NOT",
        "*",
        "^start",
        "{text}: x",
        "' OR 1=1 --",
        "\u{0}",
        "",
        "   ",
    ] {
        let result = s
            .search_memories(MemoryQuery {
                group_id: f.a.clone(),
                query: query.into(),
                namespace: None,
                limit: 10,
            })
            .await;
        assert!(result.is_ok(), "{query:?}: {result:?}");
    }
    // The operators are plain words: `OR` finds the memory that contains "or".
    assert_eq!(search(s, &f.a, None, "OR").await.len(), 1);
    assert_eq!(search(s, &f.a, None, "NEAR(").await.len(), 1);
    // A prefix star does not widen the search: "opt*" is the word "opt".
    assert!(search(s, &f.a, None, "opt*").await.is_empty());
}

#[tokio::test]
async fn another_groups_memories_are_never_found_listed_or_forgotten() {
    let f = fixture().await;
    let s = &f.store;
    let secret = save(s, &f.a, None, "The safe's code is 4711.").await;
    save(s, &f.b, None, "Beta's own note.").await;

    assert!(search(s, &f.b, None, "safe code 4711").await.is_empty());
    assert!(search(s, &f.b, None, "safe").await.is_empty());
    let listed = s.list_memories(f.b.clone(), None, None, 100).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed.iter().all(|m| m.group_id == f.b));
    assert!(s.memory(f.b.clone(), secret).await.unwrap().is_none());

    // Group B names A's id: nothing happens, and it reads like a missing id.
    assert!(!s.forget_memory(f.b.clone(), secret).await.unwrap());
    assert_eq!(search(s, &f.a, None, "safe").await.len(), 1);
    assert!(s.memory(f.a.clone(), secret).await.unwrap().is_some());
}

#[tokio::test]
async fn search_covers_every_namespace_unless_one_is_named() {
    let f = fixture().await;
    let s = &f.store;
    save(
        s,
        &f.a,
        Some("skill:weather"),
        "Berlin forecast source: DWD.",
    )
    .await;
    save(s, &f.a, Some("skill:travel"), "Flight to Berlin on Friday.").await;
    save(s, &f.a, None, "Lives in Berlin.").await;

    assert_eq!(search(s, &f.a, None, "berlin").await.len(), 3);
    assert_eq!(
        search(s, &f.a, Some("skill:travel"), "berlin").await,
        vec!["Flight to Berlin on Friday.".to_owned()]
    );
    assert_eq!(search(s, &f.a, Some("shared"), "berlin").await.len(), 1);
    assert!(
        search(s, &f.a, Some("skill:news"), "berlin")
            .await
            .is_empty()
    );
    let weather = s
        .list_memories(f.a.clone(), Some("skill:weather".into()), None, 10)
        .await
        .unwrap();
    assert_eq!(weather.len(), 1);
    assert_eq!(weather[0].namespace, "skill:weather");

    for bad in ["Skill:x", "skill:", "skill:a b", "global", "skill:../x"] {
        let saved = s
            .save_memory(NewMemory {
                group_id: f.a.clone(),
                namespace: Some(bad.into()),
                text: "x".into(),
                now_ms: 1,
            })
            .await;
        assert!(
            matches!(saved, Err(StoreError::Invalid(_))),
            "{bad}: {saved:?}"
        );
        let searched = s
            .search_memories(MemoryQuery {
                group_id: f.a.clone(),
                query: "x".into(),
                namespace: Some(bad.into()),
                limit: 1,
            })
            .await;
        assert!(matches!(searched, Err(StoreError::Invalid(_))), "{bad}");
    }
}

#[tokio::test]
async fn limits_refuse_with_a_reason() {
    let f = fixture().await;
    let s = &f.store;
    let save_text = |text: String| {
        s.save_memory(NewMemory {
            group_id: f.a.clone(),
            namespace: None,
            text,
            now_ms: 1,
        })
    };
    assert!(save_text("x".repeat(MAX_MEMORY_TEXT_BYTES)).await.is_ok());
    let err = save_text("x".repeat(MAX_MEMORY_TEXT_BYTES + 1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("8192"), "{err}");
    let err = save_text("  \n ".into()).await.unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    let err = s
        .search_memories(MemoryQuery {
            group_id: f.a.clone(),
            query: "a ".repeat(MAX_QUERY_BYTES),
            namespace: None,
            limit: 10,
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("too long"), "{err}");

    // Results are capped, whatever limit is asked for.
    for i in 0..120 {
        save(s, &f.b, None, &format!("note number {i}")).await;
    }
    let hits = s
        .search_memories(MemoryQuery {
            group_id: f.b.clone(),
            query: "note".into(),
            namespace: None,
            limit: 10_000,
        })
        .await
        .unwrap();
    assert_eq!(hits.len(), nanoclaw_store::MAX_RESULTS);
    // Every one of them scores the same (three words, "note" once): the newest win, newest
    // first.
    let ids: Vec<i64> = hits.iter().map(|h| h.memory.id).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    assert_eq!(hits[0].memory.text, "note number 119");
    assert_eq!(hits[99].memory.text, "note number 20");
    let listed = s
        .list_memories(f.b.clone(), None, None, 10_000)
        .await
        .unwrap();
    assert_eq!(listed.len(), nanoclaw_store::MAX_RESULTS);
}

/// The per-group cap: a save at the cap is refused and names the cap; other groups are not
/// affected; forgetting one makes room. Filled with one SQL statement (100,000 saves through
/// the API would take minutes in a debug build).
#[tokio::test]
async fn a_full_group_refuses_new_memories_until_one_is_forgotten() {
    let f = fixture().await;
    let s = &f.store;
    let cap = nanoclaw_store::MAX_MEMORIES_PER_GROUP as i64;
    let a = f.a.clone();
    s.call(move |conn| {
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2)
             INSERT INTO memories (group_id, namespace, text, created_at, updated_at)
             SELECT ?1, 'shared', 'filler ' || i, 0, 0 FROM n",
            nanoclaw_store::rusqlite::params![a, cap],
        )
        .map_err(|e| StoreError::Invalid(e.to_string()))
    })
    .await
    .unwrap();
    assert_eq!(s.count_memories(f.a.clone()).await.unwrap(), cap as u64);
    let err = s
        .save_memory(NewMemory {
            group_id: f.a.clone(),
            namespace: None,
            text: "one more".into(),
            now_ms: 1,
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("100000"), "{err}");
    save(s, &f.b, None, "beta still has room").await;
    assert!(s.forget_memory(f.a.clone(), 1).await.unwrap());
    save(s, &f.a, None, "one more").await;
    assert_eq!(
        search(s, &f.a, None, "one more").await,
        vec!["one more".to_owned()]
    );
}
