//! The store's error type. Every variant says which operation failed so a log line is actionable.

use std::path::PathBuf;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Creating the database directory or file, or fixing its permissions, failed.
    #[error("store: cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Opening or configuring the SQLite connection failed.
    #[error("store: cannot open database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// The database file exists but is empty: it was truncated or its contents were lost.
    #[error(
        "the database {} is empty (0 bytes): it was truncated or its contents were lost, and \
         nanoclaw will not start over on it silently. Restore it from a backup (stop nanoclaw, \
         copy the backup to this path), or, to start fresh and lose the history, move the empty \
         file aside (with any -wal and -shm files next to it)",
        path.display()
    )]
    Truncated { path: PathBuf },

    /// The database was written by a newer nanoclaw; we refuse to touch it.
    #[error(
        "database schema version {found} is newer than this nanoclaw (knows {known}); upgrade nanoclaw"
    )]
    SchemaTooNew { found: i64, known: i64 },

    /// Applying a schema migration failed; the migration was rolled back.
    #[error("store: migration to schema version {version} failed: {source}")]
    Migration {
        version: i64,
        #[source]
        source: rusqlite::Error,
    },

    /// A query failed.
    #[error("store: {op} failed: {source}")]
    Sqlite {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    /// The caller passed a value the store rejects (bad folder name, unique clash, ...).
    #[error("store: invalid input: {0}")]
    Invalid(String),

    /// A row the operation needs does not exist.
    #[error("store: {what} {id} not found")]
    NotFound { what: &'static str, id: String },

    /// The owner thread is gone (store closed, or a call panicked while it held the connection).
    #[error("store: the database thread has stopped; the operation was not completed")]
    Closed,
}

impl From<rusqlite::Error> for StoreError {
    fn from(source: rusqlite::Error) -> Self {
        StoreError::Sqlite {
            op: "query",
            source,
        }
    }
}

/// Attach the operation name to a rusqlite result.
pub(crate) trait Ctx<T> {
    fn ctx(self, op: &'static str) -> Result<T, StoreError>;
}

impl<T> Ctx<T> for Result<T, rusqlite::Error> {
    fn ctx(self, op: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sqlite { op, source })
    }
}
