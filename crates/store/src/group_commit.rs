//! Group commit: write transactions queued at the same time share one SQLite transaction.
//!
//! Every `Store::write` is its own transaction as far as its caller can tell: it sees its
//! own changes, an error rolls back only its changes, and its result is returned only once
//! its changes are committed. But a commit is the expensive part of a small write (the WAL
//! frames of every page touched and the WAL index), and under load many small writes queue
//! up behind each other (a message stored, a turn claimed, a reply recorded, a send noted).
//! The owner thread therefore takes every write already waiting, runs each inside a
//! SAVEPOINT of one `BEGIN IMMEDIATE` transaction, commits once, and only then answers
//! them all. Anything unusual (the write lock busy, a failed commit) falls back to running
//! the writes one by one, each in its own transaction, as before.

use std::panic::{AssertUnwindSafe, catch_unwind};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::engine::{LockPolicy, is_busy, retry_busy};
use crate::error::{Ctx, StoreError};

/// Most writes committed together; bounds the wait of the first one in a group.
pub(crate) const MAX_GROUP: usize = 32;

/// How a write's run went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ran {
    Ok,
    /// It failed; its changes must be rolled back. `busy`: the database was locked, so the
    /// same write may succeed when tried again.
    Failed {
        busy: bool,
    },
}

/// A queued write: run (more than once if it has to be tried again), then answered.
pub(crate) trait PendingWrite: Send {
    /// The operation's name, for errors and logs.
    fn op(&self) -> &'static str;
    /// Runs the write on `conn`, inside a transaction someone else opened; keeps the result
    /// (replacing an earlier run's). A panic leaves no result: the caller then gets an error.
    fn run(&mut self, conn: &Connection) -> Ran;
    /// Replaces the kept result with `error` (the commit of its changes failed).
    fn fail(&mut self, error: StoreError);
    /// Answers the caller with the kept result (after the commit).
    fn answer(self: Box<Self>);
}

/// A typed write and the caller waiting for its result.
pub(crate) struct TypedWrite<R, F> {
    pub(crate) op: &'static str,
    pub(crate) f: F,
    pub(crate) result: Option<Result<R, StoreError>>,
    pub(crate) done: oneshot::Sender<Result<R, StoreError>>,
}

impl<R, F> PendingWrite for TypedWrite<R, F>
where
    R: Send,
    F: FnMut(&Connection) -> Result<R, StoreError> + Send,
{
    fn op(&self) -> &'static str {
        self.op
    }

    fn run(&mut self, conn: &Connection) -> Ran {
        self.result = None;
        let result = (self.f)(conn);
        let ran = match &result {
            Ok(_) => Ran::Ok,
            Err(e) => Ran::Failed { busy: is_busy(e) },
        };
        self.result = Some(result);
        ran
    }

    fn fail(&mut self, error: StoreError) {
        self.result = Some(Err(error));
    }

    fn answer(self: Box<Self>) {
        // No result: the write panicked; dropping `done` tells the caller the call failed.
        if let Some(result) = self.result {
            // The caller may have gone away (cancelled future); the work is done regardless.
            let _ = self.done.send(result);
        }
    }
}

/// Runs a write, catching a panic (which counts as a failure).
fn run_caught(write: &mut Box<dyn PendingWrite>, conn: &Connection) -> Ran {
    match catch_unwind(AssertUnwindSafe(|| write.run(conn))) {
        Ok(ran) => ran,
        Err(_) => {
            tracing::error!(
                op = write.op(),
                "store: a database call panicked; its caller gets an error"
            );
            Ran::Failed { busy: false }
        }
    }
}

/// Runs `group` (two or more writes) in one transaction, then answers them. `Err` gives the
/// writes back with nothing committed: the caller runs them one by one instead.
pub(crate) fn commit_group(
    conn: &Connection,
    mut group: Vec<Box<dyn PendingWrite>>,
) -> Result<(), Vec<Box<dyn PendingWrite>>> {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::debug!(error = %e, "store: group commit could not begin; writing one by one");
        return Err(group);
    }
    for write in &mut group {
        if conn.execute_batch("SAVEPOINT write").is_err() {
            return Err(abandon(conn, group));
        }
        let end = match run_caught(write, conn) {
            Ran::Ok => "RELEASE write",
            // Locked mid-write cannot happen under BEGIN IMMEDIATE; if it does, start over.
            Ran::Failed { busy: true } => return Err(abandon(conn, group)),
            Ran::Failed { busy: false } => "ROLLBACK TO write; RELEASE write",
        };
        if conn.execute_batch(end).is_err() {
            return Err(abandon(conn, group));
        }
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        tracing::warn!(error = %e, writes = group.len(), "store: group commit failed; writing one by one");
        return Err(abandon(conn, group));
    }
    #[cfg(test)]
    GROUPS_COMMITTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    for write in group {
        write.answer();
    }
    Ok(())
}

/// Groups committed so far (tests check that grouping happened at all).
#[cfg(test)]
static GROUPS_COMMITTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs one write in a transaction of its own (retried while the database is locked by
/// another process, as `retry_busy` does), then answers it.
pub(crate) fn commit_one(conn: &Connection, policy: &LockPolicy, mut write: Box<dyn PendingWrite>) {
    let op = write.op();
    let outcome = retry_busy(policy, || {
        conn.execute_batch("BEGIN IMMEDIATE").ctx(op)?;
        match run_caught(&mut write, conn) {
            Ran::Ok => conn.execute_batch("COMMIT").ctx(op).inspect_err(|_| {
                let _ = conn.execute_batch("ROLLBACK");
            }),
            Ran::Failed { busy } => {
                let _ = conn.execute_batch("ROLLBACK");
                if busy {
                    Err(StoreError::Sqlite {
                        op,
                        source: rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                            None,
                        ),
                    })
                } else {
                    // The write's own error is kept in it for its caller.
                    Ok(())
                }
            }
        }
    });
    if let Err(e) = outcome {
        write.fail(e);
    }
    write.answer();
}

/// Rolls the open group transaction back and hands the writes back for one-by-one runs.
fn abandon(conn: &Connection, group: Vec<Box<dyn PendingWrite>>) -> Vec<Box<dyn PendingWrite>> {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    group
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::Store;
    use std::sync::atomic::Ordering;

    /// Writes queued together: each keeps its own all-or-nothing outcome and result, and
    /// every success is committed, whichever group it landed in.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn queued_writes_share_commits_but_each_succeeds_or_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let store = Store::open(&path).unwrap();
        store
            .call(|c| {
                c.execute_batch("CREATE TABLE t (x INTEGER UNIQUE)")
                    .ctx("create")
            })
            .await
            .unwrap();
        let before = GROUPS_COMMITTED.load(Ordering::Relaxed);
        let mut tasks = Vec::new();
        for i in 0..400i64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .write("test insert", move |c| {
                        c.execute("INSERT INTO t (x) VALUES (?1)", [i])
                            .ctx("insert")?;
                        if i % 10 == 0 {
                            // A write that changed something, then failed: none of it stays.
                            c.execute("INSERT INTO t (x) VALUES (?1)", [10_000 + i])
                                .ctx("insert")?;
                            return Err(StoreError::Invalid(format!("no {i}")));
                        }
                        if i % 97 == 5 {
                            panic!("a write that panics");
                        }
                        Ok(i * 2)
                    })
                    .await
            }));
        }
        for (i, task) in tasks.into_iter().enumerate() {
            let i = i as i64;
            let result = task.await.unwrap();
            match result {
                Ok(v) => assert_eq!(v, i * 2),
                Err(StoreError::Invalid(m)) => assert_eq!((m, i % 10), (format!("no {i}"), 0)),
                Err(StoreError::Closed) => assert_eq!(i % 97, 5, "only panicking writes fail so"),
                Err(e) => panic!("write {i}: {e}"),
            }
        }
        let rows: Vec<i64> = store
            .call(|c| {
                let mut stmt = c.prepare("SELECT x FROM t ORDER BY x").ctx("select")?;
                let rows = stmt.query_map([], |r| r.get(0)).ctx("select")?;
                rows.collect::<Result<Vec<i64>, _>>().ctx("select")
            })
            .await
            .unwrap();
        let expected: Vec<i64> = (0..400).filter(|i| i % 10 != 0 && i % 97 != 5).collect();
        assert_eq!(rows, expected);
        assert!(
            GROUPS_COMMITTED.load(Ordering::Relaxed) > before,
            "400 concurrent writes never shared a commit"
        );
        // Committed for real: a fresh connection sees the same rows.
        drop(store);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n as usize, expected.len());
    }
}
