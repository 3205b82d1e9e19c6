//! The shared memory store: short texts an agent keeps for later, per agent group, in
//! namespaces (`shared`, or `skill:<name>` for one skill), found again by full-text search
//! (SQLite FTS5, bm25 ranking).
//!
//! Everything here is scoped by a group id the caller decides (the host takes it from the
//! agent's session, never from the request): no call reads or removes another group's
//! memories. Search text is untrusted: it is reduced to quoted terms, so FTS5 syntax in it
//! (`OR`, `NEAR(`, `*`, `-`, `"`, column filters) is searched for as words, never run.

use rusqlite::{Connection, Row, params};
use serde::{Deserialize, Serialize};

use crate::engine::Store;
use crate::error::{Ctx, StoreError};

/// The namespace every group has: what is not about one skill.
pub const SHARED_NAMESPACE: &str = "shared";
/// Prefix of a skill's namespace: `skill:<name>`.
pub const SKILL_NAMESPACE_PREFIX: &str = "skill:";
/// Longest memory text, in bytes.
pub const MAX_MEMORY_TEXT_BYTES: usize = 8 * 1024;
/// Memories one group may keep. At the cap a save is refused (never an old memory silently
/// dropped): the agent or the owner forgets some first.
pub const MAX_MEMORIES_PER_GROUP: u64 = 100_000;
/// Longest search query, in bytes.
pub const MAX_QUERY_BYTES: usize = 1024;
/// Most terms a query keeps; the rest are ignored.
pub const MAX_QUERY_TERMS: usize = 32;
/// Most results one search or list returns.
pub const MAX_RESULTS: usize = 100;
/// A search ranks (bm25) at most this many matching memories, the most recent ones. Scoring
/// costs a few microseconds a row, so a term found in thousands of a group's memories would
/// otherwise blow the latency budget (p99 < 5 ms over 100,000 memories); for rarer terms
/// (fewer matches than this) nothing is left out.
pub const RANK_WINDOW: usize = 500;

/// A stored memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    pub id: i64,
    pub group_id: String,
    pub namespace: String,
    pub text: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A search result: the memory and its bm25 score (lower is a better match).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryHit {
    #[serde(flatten)]
    pub memory: Memory,
    pub score: f64,
}

/// Input of [`Store::save_memory`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMemory {
    pub group_id: String,
    /// `None`: [`SHARED_NAMESPACE`].
    pub namespace: Option<String>,
    pub text: String,
    pub now_ms: i64,
}

/// Input of [`Store::search_memories`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryQuery {
    pub group_id: String,
    /// Untrusted search text: words, matched after stemming (`birthdays` finds `birthday`).
    pub query: String,
    /// `None`: every namespace of the group (search across skills).
    pub namespace: Option<String>,
    /// At most this many results (capped at [`MAX_RESULTS`]).
    pub limit: usize,
}

/// `shared`, or `skill:<name>` with a skill name as skills are named (1-64 characters of
/// lowercase letters, digits and `-`, starting with a letter or digit).
pub fn validate_namespace(namespace: &str) -> Result<(), StoreError> {
    if namespace == SHARED_NAMESPACE {
        return Ok(());
    }
    let valid = namespace
        .strip_prefix(SKILL_NAMESPACE_PREFIX)
        .is_some_and(|name| {
            (1..=64).contains(&name.len())
                && name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    if valid {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "memory namespace {:?} must be \"shared\" or \"skill:<name>\" with a skill name of \
             1-64 lowercase letters, digits or '-'",
            shorten(namespace, 80)
        )))
    }
}

/// At most `max` chars of `s`, for error messages about untrusted input.
fn shorten(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The FTS5 query for untrusted `query`: each whitespace-separated term as a quoted string
/// (a `"` in it doubled), joined with `joiner` (`" "` is AND, `" OR "`). Terms without a
/// letter or digit are dropped (they hold no token); `None` when nothing is left.
fn fts_query(query: &str, joiner: &str) -> Option<String> {
    let terms: Vec<String> = query
        .split_whitespace()
        .filter(|t| t.chars().any(char::is_alphanumeric))
        .take(MAX_QUERY_TERMS)
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(joiner))
}

const MEMORY_COLS: &str = "m.id, m.group_id, m.namespace, m.text, m.created_at, m.updated_at";

fn memory_row(r: &Row<'_>) -> rusqlite::Result<Memory> {
    Ok(Memory {
        id: r.get(0)?,
        group_id: r.get(1)?,
        namespace: r.get(2)?,
        text: r.get(3)?,
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
    })
}

fn count_sync(conn: &Connection, group_id: &str) -> Result<u64, StoreError> {
    conn.prepare_cached("SELECT count(*) FROM memories WHERE group_id = ?1")
        .and_then(|mut s| s.query_row([group_id], |r| r.get::<_, i64>(0)))
        .map(|n| n.max(0) as u64)
        .ctx("count memories")
}

/// The best matches of `fts` (an FTS5 query built by [`fts_query`]) among the group's
/// [`RANK_WINDOW`] most recent matching memories.
fn search_sync(
    conn: &Connection,
    fts: &str,
    group_id: &str,
    namespace: Option<&str>,
    limit: usize,
) -> Result<Vec<MemoryHit>, StoreError> {
    // The innermost query walks the index newest first (rowid order) and stops after the
    // window; only those rows are scored. Only the best `limit` of them are then read from the
    // table with their text: reading all the window's rows cost a page each (spread over the
    // table for a mid-frequency word), most of them thrown away by the sort.
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {MEMORY_COLS}, s.score FROM (
                 SELECT id, score FROM (
                     SELECT memories_fts.rowid AS id, bm25(memories_fts) AS score
                     FROM memories_fts
                         JOIN memories w INDEXED BY memories_scope ON w.id = memories_fts.rowid
                     WHERE memories_fts MATCH ?1 AND w.group_id = ?2
                         AND (?3 IS NULL OR w.namespace = ?3)
                     ORDER BY memories_fts.rowid DESC LIMIT ?4
                 ) ORDER BY score, id DESC LIMIT ?5
             ) s JOIN memories m ON m.id = s.id
             ORDER BY s.score, m.id DESC"
        ))
        .ctx("search memories")?;
    let rows = stmt
        .query_map(
            params![
                fts,
                group_id,
                namespace,
                RANK_WINDOW as i64,
                limit.min(MAX_RESULTS) as i64
            ],
            |r| {
                Ok(MemoryHit {
                    memory: memory_row(r)?,
                    score: r.get(6)?,
                })
            },
        )
        .ctx("search memories")?;
    rows.collect::<Result<Vec<_>, _>>().ctx("search memories")
}

impl Store {
    /// Keep a memory; returns its id. Refused: a bad namespace, empty text, text over
    /// [`MAX_MEMORY_TEXT_BYTES`], or a group already holding [`MAX_MEMORIES_PER_GROUP`].
    pub async fn save_memory(&self, m: NewMemory) -> Result<i64, StoreError> {
        let namespace = m.namespace.unwrap_or_else(|| SHARED_NAMESPACE.to_owned());
        validate_namespace(&namespace)?;
        let text = m.text.trim().to_owned();
        if text.is_empty() {
            return Err(StoreError::Invalid(
                "a memory's text must not be empty".into(),
            ));
        }
        if text.len() > MAX_MEMORY_TEXT_BYTES {
            return Err(StoreError::Invalid(format!(
                "a memory of {} bytes is too long; the limit is {MAX_MEMORY_TEXT_BYTES} bytes: \
                 keep the essentials, or save several memories",
                text.len()
            )));
        }
        let group_id = m.group_id;
        let now = m.now_ms;
        self.write("save memory", move |tx| {
            let count = count_sync(tx, &group_id)?;
            if count >= MAX_MEMORIES_PER_GROUP {
                return Err(StoreError::Invalid(format!(
                    "this group already keeps {count} memories (the limit is \
                     {MAX_MEMORIES_PER_GROUP}); forget some before saving more"
                )));
            }
            tx.prepare_cached(
                "INSERT INTO memories (group_id, namespace, text, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?4)",
            )
            .and_then(|mut s| s.insert(params![group_id, namespace, text, now]))
            .ctx("save memory")
        })
        .await
    }

    /// The group's memories best matching `q.query` (bm25), optionally in one namespace.
    /// All terms must match; when none does so and there are several, any term may. A query
    /// with no words finds nothing. Refused: a query over [`MAX_QUERY_BYTES`], a bad namespace.
    pub async fn search_memories(&self, q: MemoryQuery) -> Result<Vec<MemoryHit>, StoreError> {
        if q.query.len() > MAX_QUERY_BYTES {
            return Err(StoreError::Invalid(format!(
                "a search of {} bytes is too long; the limit is {MAX_QUERY_BYTES}",
                q.query.len()
            )));
        }
        if let Some(ns) = &q.namespace {
            validate_namespace(ns)?;
        }
        let Some(all) = fts_query(&q.query, " ") else {
            return Ok(Vec::new());
        };
        let any = fts_query(&q.query, " OR ").filter(|any| any != &all);
        if q.limit == 0 {
            return Ok(Vec::new());
        }
        self.read(move |conn| {
            let ns = q.namespace.as_deref();
            let hits = search_sync(conn, &all, &q.group_id, ns, q.limit)?;
            match &any {
                Some(any) if hits.is_empty() => search_sync(conn, any, &q.group_id, ns, q.limit),
                _ => Ok(hits),
            }
        })
        .await
    }

    /// The group's memories, most recent first, optionally of one namespace; `before` (an id)
    /// pages on from the previous page's last id. At most [`MAX_RESULTS`].
    pub async fn list_memories(
        &self,
        group_id: impl Into<String>,
        namespace: Option<String>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Memory>, StoreError> {
        if let Some(ns) = &namespace {
            validate_namespace(ns)?;
        }
        let group_id = group_id.into();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {MEMORY_COLS} FROM memories m
                     WHERE m.group_id = ?1 AND (?2 IS NULL OR m.namespace = ?2)
                         AND (?3 IS NULL OR m.id < ?3)
                     ORDER BY m.id DESC LIMIT ?4"
                ))
                .ctx("list memories")?;
            let rows = stmt
                .query_map(
                    params![group_id, namespace, before, limit.min(MAX_RESULTS) as i64],
                    memory_row,
                )
                .ctx("list memories")?;
            rows.collect::<Result<Vec<_>, _>>().ctx("list memories")
        })
        .await
    }

    /// The memory `id` of this group; another group's reads as missing.
    pub async fn memory(
        &self,
        group_id: impl Into<String>,
        id: i64,
    ) -> Result<Option<Memory>, StoreError> {
        let group_id = group_id.into();
        self.read(move |conn| {
            use rusqlite::OptionalExtension;
            conn.prepare_cached(&format!(
                "SELECT {MEMORY_COLS} FROM memories m WHERE m.id = ?1 AND m.group_id = ?2"
            ))
            .and_then(|mut s| s.query_row(params![id, group_id], memory_row).optional())
            .ctx("look up memory")
        })
        .await
    }

    /// Remove the memory `id` if it is this group's. `false`: no such memory in this group
    /// (another group's is left alone and reads the same as a missing one).
    pub async fn forget_memory(
        &self,
        group_id: impl Into<String>,
        id: i64,
    ) -> Result<bool, StoreError> {
        let group_id = group_id.into();
        self.write("forget memory", move |tx| {
            tx.prepare_cached("DELETE FROM memories WHERE id = ?1 AND group_id = ?2")
                .and_then(|mut s| s.execute(params![id, group_id]))
                .map(|n| n > 0)
                .ctx("forget memory")
        })
        .await
    }

    /// How many memories the group keeps.
    pub async fn count_memories(&self, group_id: impl Into<String>) -> Result<u64, StoreError> {
        let group_id = group_id.into();
        self.read(move |conn| count_sync(conn, &group_id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_become_quoted_terms() {
        assert_eq!(
            fts_query(r#""a" OR b*"#, " ").as_deref(),
            Some(r#""""a""" "OR" "b*""#)
        );
        assert_eq!(fts_query("NEAR( -x )", " "), Some(r#""NEAR(" "-x""#.into()));
        assert_eq!(fts_query("  ( ) - \" ", " "), None);
        assert_eq!(
            fts_query("wife birthday", " OR ").as_deref(),
            Some(r#""wife" OR "birthday""#)
        );
    }

    #[test]
    fn namespaces_are_shared_or_a_skill() {
        for ok in [
            "shared",
            "skill:weather",
            "skill:0-calendar-2",
            &format!("skill:{}", "a".repeat(64)),
        ] {
            assert!(validate_namespace(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Shared",
            "skill:",
            "skill:Weather",
            "skill:-x",
            "skill:a b",
            "skill:a/b",
            "skills:x",
            "other",
            &format!("skill:{}", "a".repeat(65)),
        ] {
            assert!(validate_namespace(bad).is_err(), "{bad}");
        }
    }
}
