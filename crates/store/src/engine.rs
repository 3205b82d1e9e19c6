//! The store engine: one owner thread per `Store::open` holds the connection; every call is a closure sent
//! to it over a channel. Writes are therefore serialized inside a process, and across processes
//! `BEGIN IMMEDIATE` + `busy_timeout` (+ a short retry) keep "database is locked" away from users.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use crate::error::{Ctx, StoreError};

/// Schema migrations, in order. Entry `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_initial.sql"),
    include_str!("../migrations/0002_group_mounts.sql"),
    include_str!("../migrations/0003_vault.sql"),
    include_str!("../migrations/0004_egress_policy.sql"),
    include_str!("../migrations/0005_grant_approvals.sql"),
    include_str!("../migrations/0006_tasks.sql"),
];

/// The schema version this build knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);
/// Extra attempts after SQLite gave up with BUSY despite `busy_timeout` (e.g. WAL recovery).
const BUSY_RETRIES: u32 = 5;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Cheap, cloneable handle to the database. The owner thread ends when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct Store {
    tx: mpsc::Sender<Job>,
}

impl Store {
    /// Open (creating if needed) the database at `path`: parent dirs 0700, file 0600, WAL, migrations.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        prepare_file(path)?;
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::start(conn, path.to_path_buf(), true)
    }

    /// A private in-memory database (tests).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: PathBuf::from(":memory:"),
            source,
        })?;
        Self::start(conn, PathBuf::from(":memory:"), false)
    }

    fn start(mut conn: Connection, path: PathBuf, wal: bool) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // Another process opening the same new file at once may be switching it to WAL or
        // migrating; SQLite then answers BUSY to these pragmas without always waiting on the busy
        // handler, so the whole prologue is retried like a write.
        retry_busy(|| {
            // Refuse a newer schema before changing anything in the file (even the journal mode).
            check_version(user_version(&conn).map_err(open_err)?)?;
            if wal {
                let mode: String = conn
                    .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                    .map_err(open_err)?;
                if !mode.eq_ignore_ascii_case("wal") {
                    tracing::warn!(path = %path.display(), mode, "store: WAL journal mode not available");
                }
            }
            conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")
                .map_err(open_err)
        })?;
        migrate(&mut conn)?;
        let checkpointer = if wal {
            // Checkpoints (which fsync) run on their own thread and connection, off the
            // write path: an inline auto-checkpoint adds milliseconds to whichever commit
            // happens to cross the threshold.
            conn.execute_batch("PRAGMA wal_autocheckpoint=0")
                .map_err(open_err)?;
            Some(Checkpointer::start(&path)?)
        } else {
            None
        };

        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("nanoclaw-store".into())
            .spawn(move || owner_loop(conn, rx, checkpointer))
            .map_err(|source| StoreError::Io {
                op: "start the database thread for",
                path,
                source,
            })?;
        Ok(Store { tx })
    }

    /// Run `f` on the owner thread with exclusive use of the connection. The escape hatch for queries
    /// the typed API lacks.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (done_tx, done_rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // The caller may have gone away (cancelled future); the work is done regardless.
            let _ = done_tx.send(f(conn));
        });
        self.tx.send(job).map_err(|_| StoreError::Closed)?;
        done_rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Run `f` in a `BEGIN IMMEDIATE` transaction (retried on BUSY), committing on `Ok`.
    pub(crate) async fn write<R: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnMut(&Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.call(move |conn| write_tx(conn, op, f)).await
    }

    /// Run a read-only `f` (retried on BUSY).
    pub(crate) async fn read<R: Send + 'static>(
        &self,
        mut f: impl FnMut(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.call(move |conn| retry_busy(|| f(conn))).await
    }

    /// The schema version of the open database.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        self.read(|conn| user_version(conn).ctx("read schema version"))
            .await
    }

    /// Drop this handle. The owner thread stops once every clone is gone.
    pub fn close(self) {}
}

/// Database calls between two checkpoint nudges. A turn makes about five small commits, so
/// the WAL stays around a few hundred pages.
const CALLS_PER_CHECKPOINT: u32 = 64;

/// WAL file size above which the writer checkpoints inline after all. Under a sustained
/// burst of writes the background checkpoint never catches up with the end of the WAL, so
/// SQLite cannot start it over and it would grow without bound. Measured by the writer
/// itself (a `stat`), so the bound holds even when the checkpoint thread gets no CPU.
const MAX_WAL_BYTES: u64 = 16 * 1024 * 1024;

/// Copies the WAL back into the database file from a thread of its own.
struct Checkpointer {
    nudge: mpsc::SyncSender<()>,
    wal_path: PathBuf,
    /// The WAL was over the limit and could not be cut yet (a checkpoint was busy): check
    /// again after every call, not only every [`CALLS_PER_CHECKPOINT`].
    over_limit: std::cell::Cell<bool>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        // One pending nudge is enough: a checkpoint covers everything committed before it.
        let (nudge, rx) = mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("nanoclaw-store-checkpoint".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    // PASSIVE never blocks the writer; what it cannot copy now waits for
                    // the next nudge.
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "store: WAL checkpoint failed");
                    }
                }
            })
            .map_err(|source| StoreError::Io {
                op: "start the checkpoint thread for",
                path: path.to_path_buf(),
                source,
            })?;
        let mut wal_path = path.as_os_str().to_owned();
        wal_path.push("-wal");
        Ok(Checkpointer {
            nudge,
            wal_path: PathBuf::from(wal_path),
            over_limit: std::cell::Cell::new(false),
        })
    }

    /// Asks for a background checkpoint; checkpoints inline on `conn` when the WAL has
    /// outgrown [`MAX_WAL_BYTES`].
    fn nudge(&self, conn: &Connection) {
        let wal_bytes = std::fs::metadata(&self.wal_path).map_or(0, |m| m.len());
        if wal_bytes > MAX_WAL_BYTES {
            // TRUNCATE copies everything back and cuts the file to zero, so the next
            // writes start a small WAL again. It reports busy (first column) when the
            // background checkpoint held the lock; then try again after the next call.
            match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            }) {
                Ok(busy) => self.over_limit.set(busy != 0),
                Err(e) => {
                    self.over_limit.set(true);
                    tracing::warn!(error = %e, "store: WAL checkpoint failed");
                }
            }
            return;
        }
        self.over_limit.set(false);
        let _ = self.nudge.try_send(());
    }
}

fn owner_loop(mut conn: Connection, rx: mpsc::Receiver<Job>, checkpointer: Option<Checkpointer>) {
    let mut calls = 0u32;
    while let Ok(job) = rx.recv() {
        calls = calls.saturating_add(1);
        if let Some(c) = &checkpointer
            && (calls >= CALLS_PER_CHECKPOINT || c.over_limit.get())
        {
            calls = 0;
            c.nudge(&conn);
        }
        if catch_unwind(AssertUnwindSafe(|| job(&mut conn))).is_err() {
            tracing::error!("store: a database call panicked; its caller gets an error");
            // Never leave a half-done transaction open for the next caller.
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
    }
    tracing::debug!("store: last handle dropped, database thread exits");
}

fn prepare_file(path: &Path) -> Result<(), StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|source| StoreError::Io {
                op: "create directory",
                path: parent.to_path_buf(),
                source,
            })?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|source| StoreError::Io {
            op: "create database file",
            path: path.to_path_buf(),
            source,
        })?;
    // The file holds private conversations: tighten a pre-existing file that others can read.
    let meta = file.metadata().map_err(|source| StoreError::Io {
        op: "inspect database file",
        path: path.to_path_buf(),
        source,
    })?;
    if meta.permissions().mode() & 0o077 != 0
        && let Err(err) = file.set_permissions(std::fs::Permissions::from_mode(0o600))
    {
        tracing::warn!(path = %path.display(), error = %err, "store: cannot restrict database file to 0600");
    }
    Ok(())
}

fn user_version(conn: &Connection) -> Result<i64, rusqlite::Error> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

fn check_version(found: i64) -> Result<(), StoreError> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Apply each missing migration in its own immediate transaction together with the version bump.
/// The version is re-read under the write lock, so two processes opening at once do not both migrate.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    for (idx, sql) in MIGRATIONS.iter().enumerate() {
        let version = idx as i64 + 1;
        let applied = retry_busy(|| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|source| StoreError::Migration { version, source })?;
            let current =
                user_version(&tx).map_err(|source| StoreError::Migration { version, source })?;
            check_version(current)?;
            if current >= version {
                return Ok(false);
            }
            tx.execute_batch(sql)
                .and_then(|()| tx.pragma_update(None, "user_version", version))
                .and_then(|()| tx.commit())
                .map_err(|source| StoreError::Migration { version, source })?;
            Ok(true)
        })?;
        if applied {
            tracing::info!(version, "store: applied schema migration");
        }
    }
    Ok(())
}

pub(crate) fn write_tx<R>(
    conn: &mut Connection,
    op: &'static str,
    mut f: impl FnMut(&Transaction<'_>) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    retry_busy(|| {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(op)?;
        let out = f(&tx)?;
        tx.commit().ctx(op)?;
        Ok(out)
    })
}

fn is_busy(err: &StoreError) -> bool {
    let source = match err {
        StoreError::Sqlite { source, .. }
        | StoreError::Migration { source, .. }
        | StoreError::Open { source, .. } => source,
        _ => return false,
    };
    matches!(
        source.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn retry_busy<R>(mut f: impl FnMut() -> Result<R, StoreError>) -> Result<R, StoreError> {
    let mut attempt = 0;
    loop {
        match f() {
            Err(err) if is_busy(&err) && attempt < BUSY_RETRIES => {
                attempt += 1;
                tracing::debug!(attempt, error = %err, "store: database busy, retrying");
                std::thread::sleep(Duration::from_millis(20 * u64::from(attempt)));
            }
            other => return other,
        }
    }
}

/// Current wall-clock time in unix milliseconds (UTC).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A random id such as `ses-3f9a0c1d5e7b2a46`.
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}
