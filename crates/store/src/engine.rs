//! The store engine: one owner thread per `Store::open` holds the connection; every call is a closure sent
//! to it over a channel. Writes are therefore serialized inside a process, and across processes
//! `BEGIN IMMEDIATE` + `busy_timeout` (+ a short retry) keep "database is locked" away from users.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, TransactionBehavior};
use tokio::sync::oneshot;

use crate::error::{Ctx, StoreError};
use crate::group_commit::{MAX_GROUP, PendingWrite, TypedWrite, commit_group, commit_one};

/// Schema migrations, in order. Entry `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_initial.sql"),
    include_str!("../migrations/0002_group_mounts.sql"),
    include_str!("../migrations/0003_vault.sql"),
    include_str!("../migrations/0004_egress_policy.sql"),
    include_str!("../migrations/0005_grant_approvals.sql"),
    include_str!("../migrations/0006_tasks.sql"),
    include_str!("../migrations/0007_channels.sql"),
    include_str!("../migrations/0008_chat_wiring.sql"),
    include_str!("../migrations/0009_agent_shared_sessions.sql"),
    include_str!("../migrations/0010_outbound_files.sql"),
    include_str!("../migrations/0011_reply_routes.sql"),
    include_str!("../migrations/0012_memories.sql"),
    include_str!("../migrations/0013_skills.sql"),
    include_str!("../migrations/0014_host_state.sql"),
    include_str!("../migrations/0015_dashboard.sql"),
];

/// The schema version this build knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long one attempt waits for another process's write lock, by default.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_millis(5000);
/// Quick extra attempts after SQLite gave up with BUSY despite `busy_timeout` (e.g. WAL
/// recovery), before the wait counts as another process holding the lock.
const BUSY_RETRIES: u32 = 5;

/// Work for the owner thread: a call with the connection to itself (reads, the escape
/// hatch), or a write, which may share a transaction with other writes queued with it.
enum Job {
    Call(Box<dyn FnOnce(&mut Connection) + Send>),
    Write(Box<dyn PendingWrite>),
}

/// Told, about once per busy timeout, while another process keeps the database's write lock.
pub type LockWaitFn = Arc<dyn Fn(&LockWait) + Send + Sync>;

/// A wait for the database's write lock, as reported to [`StoreOptions::on_lock_wait`].
#[derive(Debug, Clone)]
pub struct LockWait {
    /// The database file.
    pub path: PathBuf,
    /// How long this operation has waited so far.
    pub waited: Duration,
    /// Who holds the lock, when it can be found ("pid 1234 (nanoclaw)"); else `None`.
    pub holder: Option<String>,
}

impl LockWait {
    /// "pid 1234 (nanoclaw)" or "another process".
    pub fn holder_or_unknown(&self) -> &str {
        self.holder.as_deref().unwrap_or("another process")
    }
}

/// How [`Store::open_with`] deals with other processes on the same file.
#[derive(Clone)]
pub struct StoreOptions {
    /// How long one attempt waits for another process's write lock. After that the store keeps
    /// waiting — a locked database is never an error — and says so (log, and `on_lock_wait`).
    pub busy_timeout: Duration,
    /// Called while waiting, e.g. to show a CLI user what is going on.
    pub on_lock_wait: Option<LockWaitFn>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            on_lock_wait: None,
        }
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("busy_timeout", &self.busy_timeout)
            .field("on_lock_wait", &self.on_lock_wait.is_some())
            .finish()
    }
}

/// What the owner thread needs to know to wait for another process's lock.
#[derive(Debug)]
pub(crate) struct LockPolicy {
    path: Option<PathBuf>,
    options: StoreOptions,
}

/// Cheap, cloneable handle to the database. The owner thread ends when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct Store {
    tx: mpsc::Sender<Job>,
    /// Reads go to connections of their own (WAL lets them run beside the writer), so they
    /// neither wait behind writes nor split groups of writes. `None` (in memory): the owner
    /// thread reads too.
    reads: Option<mpsc::Sender<Job>>,
    policy: Arc<LockPolicy>,
}

/// Threads (each with its own connection) answering reads.
const READER_THREADS: usize = 2;

/// How much of the database file a reader maps into memory instead of copying pages into its
/// own cache. A search touches a few hundred pages spread over the file (a mid-frequency word's
/// matches, one table page each), which overflow SQLite's 2 MB default cache and cost a `pread`
/// each; mapped, they are plain memory reads, shared with the OS page cache rather than held
/// on the heap. 256 MiB covers a group's full 100,000 memories several times over.
const READER_MMAP_BYTES: i64 = 256 * 1024 * 1024;

impl Store {
    /// Open (creating if needed) the database at `path`: parent dirs 0700, file 0600, WAL, migrations.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, StoreOptions::default())
    }

    /// [`Store::open`] with its lock waiting configured. An existing file of 0 bytes is refused
    /// ([`StoreError::Truncated`]): SQLite would take it for a new database and the data would be
    /// silently gone.
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        prepare_file(path)?;
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let policy = Arc::new(LockPolicy {
            path: Some(path.to_path_buf()),
            options,
        });
        Self::start(conn, path.to_path_buf(), true, policy)
    }

    /// A private in-memory database (tests).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: PathBuf::from(":memory:"),
            source,
        })?;
        let policy = Arc::new(LockPolicy {
            path: None,
            options: StoreOptions::default(),
        });
        Self::start(conn, PathBuf::from(":memory:"), false, policy)
    }

    fn start(
        mut conn: Connection,
        path: PathBuf,
        wal: bool,
        policy: Arc<LockPolicy>,
    ) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        conn.busy_timeout(policy.options.busy_timeout)
            .map_err(open_err)?;
        // Another process opening the same new file at once may be switching it to WAL or
        // migrating; SQLite then answers BUSY to these pragmas without always waiting on the busy
        // handler, so the whole prologue is retried like a write.
        retry_busy(&policy, || {
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
        migrate(&mut conn, &policy)?;
        let checkpointer = if wal {
            // Checkpoints (which fsync) run on their own thread and connection, off the
            // write path: an inline auto-checkpoint adds milliseconds to whichever commit
            // happens to cross the threshold.
            conn.execute_batch("PRAGMA wal_autocheckpoint=0")
                .map_err(open_err)?;
            Some(Checkpointer::start(&path, policy.options.busy_timeout)?)
        } else {
            None
        };

        let reads = if wal {
            Some(start_readers(&path, &policy)?)
        } else {
            None
        };
        let (tx, rx) = mpsc::channel::<Job>();
        let thread_policy = Arc::clone(&policy);
        std::thread::Builder::new()
            .name("nanoclaw-store".into())
            .spawn(move || owner_loop(conn, rx, checkpointer, thread_policy))
            .map_err(|source| StoreError::Io {
                op: "start the database thread for",
                path,
                source,
            })?;
        Ok(Store { tx, reads, policy })
    }

    /// Run `f` on the owner thread with exclusive use of the connection. The escape hatch for queries
    /// the typed API lacks.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (done_tx, done_rx) = oneshot::channel();
        let job = Job::Call(Box::new(move |conn| {
            // The caller may have gone away (cancelled future); the work is done regardless.
            let _ = done_tx.send(f(conn));
        }));
        self.tx.send(job).map_err(|_| StoreError::Closed)?;
        done_rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Run `f` in a `BEGIN IMMEDIATE` transaction (retried on BUSY), committing on `Ok`; an
    /// `Err` rolls back what `f` did. Writes queued together may share one commit
    /// ([`group_commit`](crate::group_commit)); each still returns only once it is committed.
    pub(crate) async fn write<R: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnMut(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (done, done_rx) = oneshot::channel();
        let job = Job::Write(Box::new(TypedWrite {
            op,
            f,
            result: None,
            done,
        }));
        self.tx.send(job).map_err(|_| StoreError::Closed)?;
        done_rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Run a read-only `f` (retried on BUSY) on a reader connection. It sees every write
    /// that returned before it was called.
    pub(crate) async fn read<R: Send + 'static>(
        &self,
        mut f: impl FnMut(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let policy = Arc::clone(&self.policy);
        let Some(reads) = &self.reads else {
            return self.call(move |conn| retry_busy(&policy, || f(conn))).await;
        };
        let (done_tx, done_rx) = oneshot::channel();
        let job = Job::Call(Box::new(move |conn| {
            let _ = done_tx.send(retry_busy(&policy, || f(conn)));
        }));
        reads.send(job).map_err(|_| StoreError::Closed)?;
        done_rx.await.map_err(|_| StoreError::Closed)?
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
const CALLS_PER_CHECKPOINT: usize = 64;

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
    /// Held by the background thread while it checkpoints. Over the limit, the writer waits
    /// for it rather than being refused: a starved background checkpoint would otherwise
    /// make every inline attempt busy, and the WAL would grow for as long as it is starved.
    running: Arc<std::sync::Mutex<()>>,
}

impl Checkpointer {
    fn start(path: &Path, busy_timeout: Duration) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        conn.busy_timeout(busy_timeout)
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        // One pending nudge is enough: a checkpoint covers everything committed before it.
        let (nudge, rx) = mpsc::sync_channel::<()>(1);
        let running = Arc::new(std::sync::Mutex::new(()));
        let held = Arc::clone(&running);
        std::thread::Builder::new()
            .name("nanoclaw-store-checkpoint".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    let Ok(_running) = held.lock() else { break };
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
            running,
        })
    }

    /// Asks for a background checkpoint; checkpoints inline on `conn` when the WAL has
    /// outgrown [`MAX_WAL_BYTES`].
    fn nudge(&self, conn: &Connection) {
        let wal_bytes = std::fs::metadata(&self.wal_path).map_or(0, |m| m.len());
        if wal_bytes > MAX_WAL_BYTES {
            // TRUNCATE copies everything back and cuts the file to zero, so the next
            // writes start a small WAL again. A background checkpoint under way is waited
            // for; a reader may still make it busy (first column): then try again after the
            // next call.
            let _background_done = self.running.lock();
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

/// Starts the reader threads; they end when the last handle is dropped.
fn start_readers(path: &Path, policy: &LockPolicy) -> Result<mpsc::Sender<Job>, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(std::sync::Mutex::new(rx));
    for n in 0..READER_THREADS {
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(policy.options.busy_timeout)
            .map_err(open_err)?;
        // A reader never writes, whatever a read closure tries.
        conn.execute_batch("PRAGMA query_only=ON")
            .map_err(open_err)?;
        // Answers the size in effect: less (0) where the SQLite build disallows mapping,
        // which only costs speed.
        let mapped: i64 = conn
            .query_row(&format!("PRAGMA mmap_size={READER_MMAP_BYTES}"), [], |r| {
                r.get(0)
            })
            .map_err(open_err)?;
        if mapped < READER_MMAP_BYTES {
            tracing::debug!(mapped, "store: readers map less of the database than asked");
        }
        let rx = Arc::clone(&rx);
        std::thread::Builder::new()
            .name(format!("nanoclaw-store-read-{n}"))
            .spawn(move || {
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => match rx.recv() {
                            Ok(job) => job,
                            Err(_) => break,
                        },
                        Err(_) => break,
                    };
                    let Job::Call(call) = job else { continue };
                    if catch_unwind(AssertUnwindSafe(|| call(&mut conn))).is_err() {
                        tracing::error!(
                            "store: a database read panicked; its caller gets an error"
                        );
                        if !conn.is_autocommit() {
                            let _ = conn.execute_batch("ROLLBACK");
                        }
                    }
                }
            })
            .map_err(|source| StoreError::Io {
                op: "start a database reader thread for",
                path: path.to_path_buf(),
                source,
            })?;
    }
    Ok(tx)
}

fn owner_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<Job>,
    checkpointer: Option<Checkpointer>,
    policy: Arc<LockPolicy>,
) {
    let mut calls = 0usize;
    // A job taken off the queue while gathering a group of writes, run next.
    let mut next: Option<Job> = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        if let Some(c) = &checkpointer
            && (calls >= CALLS_PER_CHECKPOINT || c.over_limit.get())
        {
            calls = 0;
            c.nudge(&conn);
        }
        match job {
            Job::Call(call) => {
                calls += 1;
                if catch_unwind(AssertUnwindSafe(|| call(&mut conn))).is_err() {
                    tracing::error!("store: a database call panicked; its caller gets an error");
                    // Never leave a half-done transaction open for the next caller.
                    if !conn.is_autocommit() {
                        let _ = conn.execute_batch("ROLLBACK");
                    }
                }
            }
            Job::Write(first) => {
                // Every write already waiting joins this one's commit, in queue order; a call
                // ends the group and runs right after it.
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(Job::Write(write)) => group.push(write),
                        Ok(call) => {
                            next = Some(call);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                calls += group.len();
                if group.len() > 1 {
                    match commit_group(&conn, group) {
                        Ok(()) => continue,
                        Err(back) => group = back,
                    }
                }
                for write in group {
                    commit_one(&conn, &policy, write);
                }
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
    let created = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    let file = match created {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|source| StoreError::Io {
                    op: "open database file",
                    path: path.to_path_buf(),
                    source,
                })?;
            refuse_truncated(&file, path)?;
            file
        }
        Err(source) => {
            return Err(StoreError::Io {
                op: "create database file",
                path: path.to_path_buf(),
                source,
            });
        }
    };
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

/// An existing database file of 0 bytes was truncated (or lost its contents): SQLite would take
/// it for a new database and start over, silently. A process that created it a moment ago writes
/// the header within milliseconds, so a concurrent first open waits for that briefly.
fn refuse_truncated(file: &std::fs::File, path: &Path) -> Result<(), StoreError> {
    for _ in 0..40 {
        let len = file.metadata().map_err(|source| StoreError::Io {
            op: "inspect database file",
            path: path.to_path_buf(),
            source,
        })?;
        if len.len() > 0 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(StoreError::Truncated {
        path: path.to_path_buf(),
    })
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
fn migrate(conn: &mut Connection, policy: &LockPolicy) -> Result<(), StoreError> {
    // Up to date (the usual case): no write lock needed, so a read-only command does not wait
    // for another process's write.
    let current = retry_busy(policy, || {
        user_version(conn).map_err(|source| StoreError::Migration { version: 0, source })
    })?;
    check_version(current)?;
    if current >= SCHEMA_VERSION {
        return Ok(());
    }
    for (idx, sql) in MIGRATIONS.iter().enumerate() {
        let version = idx as i64 + 1;
        let applied = retry_busy(policy, || {
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

pub(crate) fn is_busy(err: &StoreError) -> bool {
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

/// Runs `f` until it is not refused with BUSY. A few quick retries cover SQLite's own races
/// (WAL recovery, a concurrent first open); after those another process is holding the write
/// lock for longer than the busy timeout, and the store keeps waiting — saying who holds it —
/// rather than failing the operation: "database is locked" is never the user's problem.
pub(crate) fn retry_busy<R>(
    policy: &LockPolicy,
    mut f: impl FnMut() -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    let started = std::time::Instant::now();
    let mut attempt = 0;
    loop {
        match f() {
            Err(err) if is_busy(&err) => {
                attempt += 1;
                if attempt <= BUSY_RETRIES {
                    tracing::debug!(attempt, error = %err, "store: database busy, retrying");
                    std::thread::sleep(Duration::from_millis(20 * u64::from(attempt)));
                    continue;
                }
                let wait = LockWait {
                    path: policy.path.clone().unwrap_or_default(),
                    waited: started.elapsed(),
                    holder: policy.path.as_deref().and_then(lock_holder),
                };
                tracing::warn!(
                    path = %wait.path.display(),
                    holder = wait.holder_or_unknown(),
                    waited_secs = wait.waited.as_secs(),
                    "store: the database is locked by another process; waiting"
                );
                if let Some(report) = &policy.options.on_lock_wait {
                    report(&wait);
                }
                // SQLite may answer BUSY without waiting (e.g. during recovery): never spin.
                std::thread::sleep(policy.options.busy_timeout.min(Duration::from_millis(250)));
            }
            other => return other,
        }
    }
}

/// Who holds the write lock on the database at `db`, from `/proc/locks` (Linux): the process with
/// the WAL write lock (byte 120 of the `-shm` file) or, in rollback mode, a write lock on the
/// file itself. `None` when it cannot be told.
fn lock_holder(db: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let mut shm = db.as_os_str().to_owned();
    shm.push("-shm");
    let shm_ino = std::fs::metadata(PathBuf::from(shm)).ok().map(|m| m.ino());
    let db_ino = std::fs::metadata(db).ok().map(|m| m.ino());
    let me = std::process::id();
    let mut fallback = None;
    for line in locks.lines() {
        // "1: POSIX  ADVISORY  WRITE 1234 08:01:5678 120 120"
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, "POSIX" | "OFDLCK", _, "WRITE", pid, dev_ino, start, ..] = fields[..] else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        let ino = dev_ino
            .rsplit(':')
            .next()
            .and_then(|i| i.parse::<u64>().ok());
        if pid == me || ino.is_none() {
            continue;
        }
        if ino == shm_ino && start == "120" {
            return Some(describe_pid(pid));
        }
        if ino == db_ino {
            fallback = Some(pid);
        }
    }
    fallback.map(describe_pid)
}

fn describe_pid(pid: u32) -> String {
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(name) => format!("pid {pid} ({})", name.trim()),
        Err(_) => format!("pid {pid}"),
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
