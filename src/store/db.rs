//! Opening the history database: WAL, busy timeout, schema, and errors a person can act on.
//!
//! Schema (version 2, in `PRAGMA user_version`):
//!
//! - `runs`: one row per recorded run: `seq` (recording order), `run_id`, times, mode,
//!   environment, outcome, exit code, duration and unit counts, and `partition`: `K/N`
//!   for a shard of a partitioned run (`--partition`), NULL otherwise (version 2).
//! - `results`: one row per unit per run: `run_seq`, `unit_id` (`layer/category/name`),
//!   `outcome` (an [`Outcome`](crate::event::Outcome) name, `skipped`, or `not_run` for a
//!   unit the run never finished), the last attempt's `duration_ms`, `attempts`,
//!   `flaky`, `peak_memory_mb`. Indexed by `(unit_id, run_seq)`.
//!
//! Older databases are brought up to date when opened, one step per version, under the
//! write lock ([`MIGRATIONS`]): version 1 gains `runs.partition`, NULL in its runs (it
//! could not tell shards apart, so they all count as runs that were not shards). A
//! database written by a newer runner (a higher `user_version`) is left alone and
//! reported, like a corrupt one.

use std::path::Path;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::BUSY_TIMEOUT;

/// The schema version this runner reads and writes.
pub const SCHEMA_VERSION: i64 = 2;

/// `MIGRATIONS[v]` takes a database from version `v` to `v + 1` (version 0: empty).
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] =
    [SCHEMA_1, "ALTER TABLE runs ADD COLUMN partition TEXT;"];

/// Version 1.
const SCHEMA_1: &str = "
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL UNIQUE,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    mode TEXT NOT NULL,
    environment TEXT NOT NULL,
    outcome TEXT,
    exit_code INTEGER,
    duration_ms INTEGER,
    slots INTEGER NOT NULL,
    units INTEGER NOT NULL,
    passed INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    skipped INTEGER NOT NULL,
    flaky INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    run_seq INTEGER NOT NULL,
    unit_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    duration_ms INTEGER,
    attempts INTEGER NOT NULL,
    flaky INTEGER NOT NULL,
    peak_memory_mb INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS results_by_unit ON results (unit_id, run_seq);
CREATE INDEX IF NOT EXISTS results_by_run ON results (run_seq);
";

/// Why history could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file is not a (valid) SQLite database, or one of a newer runner.
    #[error("{path} is unreadable ({why})\n  help: delete it to start a new history")]
    Corrupt {
        /// The database file.
        path: String,
        /// SQLite's words.
        why: String,
    },
    /// Another process held the database longer than the busy timeout.
    #[error("{path} stayed locked by another run for {secs}s ({why})")]
    Locked {
        /// The database file.
        path: String,
        /// The busy timeout.
        secs: u64,
        /// SQLite's words.
        why: String,
    },
    /// Anything else (permissions, disk full...).
    #[error("cannot use {path}: {why}")]
    Other {
        /// The database file.
        path: String,
        /// What went wrong.
        why: String,
    },
}

impl StoreError {
    /// Sorts a rusqlite error about `path` into corrupt, locked or other.
    pub fn from_sqlite(path: &Path, e: rusqlite::Error) -> Self {
        let path = path.display().to_string();
        let why = e.to_string();
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
                StoreError::Corrupt { path, why }
            }
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Locked {
                path,
                secs: BUSY_TIMEOUT.as_secs(),
                why,
            },
            _ => StoreError::Other { path, why },
        }
    }
}

/// An open history database.
pub struct History {
    pub(super) conn: Connection,
    pub(super) path: std::path::PathBuf,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").field("path", &self.path).finish()
    }
}

impl History {
    /// Opens `path`, creating it (and its directory) when missing, for writing.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            return Err(StoreError::Other {
                path: path.display().to_string(),
                why: e.to_string(),
            });
        }
        Self::open_with(path, OpenFlags::default())
    }

    /// Opens `path` when it exists (`None` when there is no history yet).
    pub fn open_existing(path: &Path) -> Result<Option<Self>, StoreError> {
        if !path.exists() {
            return Ok(None);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        Self::open_with(path, flags).map(Some)
    }

    fn open_with(path: &Path, flags: OpenFlags) -> Result<Self, StoreError> {
        let err = |e| StoreError::from_sqlite(path, e);
        let conn = Connection::open_with_flags(path, flags).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        let history = History {
            conn,
            path: path.to_path_buf(),
        };
        // Switching a new database to WAL (and a first migration) can meet another
        // runner doing the same; SQLite then answers "busy" without calling the busy
        // handler, so the first open retries for up to the busy timeout.
        let began = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(5);
        loop {
            match history.prepare() {
                Ok(()) => return Ok(history),
                Err(e) if is_busy(&e) && began.elapsed() < BUSY_TIMEOUT => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(err(e)),
            }
        }
    }

    /// WAL mode, then the schema (created once, under the write lock).
    fn prepare(&self) -> Result<(), rusqlite::Error> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_NOTADB),
                Some(format!(
                    "schema version {version}, written by a newer runner (this one reads {SCHEMA_VERSION})"
                )),
            ));
        }
        // Persistent in the file; readers never block the writer and vice versa.
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!("history: journal mode is {mode}, not wal");
        }
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        if version < SCHEMA_VERSION {
            self.migrate()?;
        }
        Ok(())
    }

    /// Brings the schema to [`SCHEMA_VERSION`] in one transaction, under the write lock:
    /// the version is read again there, so two runners opening an old database at once
    /// migrate it once.
    fn migrate(&self) -> Result<(), rusqlite::Error> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let steps = || -> Result<(), rusqlite::Error> {
            let version: i64 = self
                .conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if version >= SCHEMA_VERSION {
                return Ok(()); // Another runner migrated it meanwhile.
            }
            for step in MIGRATIONS.iter().skip(version.max(0) as usize) {
                self.conn.execute_batch(step)?;
            }
            self.conn
                .pragma_update(None, "user_version", SCHEMA_VERSION)
        };
        match steps() {
            Ok(()) => self.conn.execute_batch("COMMIT"),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn err(&self, e: rusqlite::Error) -> StoreError {
        StoreError::from_sqlite(&self.path, e)
    }
}

/// SQLITE_BUSY or SQLITE_LOCKED: another connection holds the lock.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}
