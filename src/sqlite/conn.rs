//! Connection setup: one [`configure`] for every connection, the pool's or
//! not, and the pool itself.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags};
use scheduled_thread_pool::ScheduledThreadPool;

use crate::error::{DatabaseError, Error, ErrorKind, Result};
use crate::sqlite::options::SqliteOptions;

/// The size, in bytes, that the -wal file is cut back to after a checkpoint
/// has reset it (`PRAGMA journal_size_limit`).
const WAL_SIZE_LIMIT: i64 = 16 * 1024 * 1024;

/// How many prepared statements each connection keeps.
const STATEMENT_CACHE: usize = 64;

/// What every connection of a registry is set up with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub(crate) busy_timeout: Duration,
    pub(crate) synchronous: &'static str,
}

impl Settings {
    pub(crate) fn of(options: &SqliteOptions) -> Self {
        Self {
            busy_timeout: options.busy_timeout,
            synchronous: options.durability.pragma_value(),
        }
    }
}

/// Sets up a connection: busy timeout, foreign keys, durability, the -wal
/// size limit, the statement cache and the `rarray` table-valued function
/// that claim's statements read their labels with. Every connection roster
/// opens goes through here.
pub(crate) fn configure(conn: &Connection, settings: Settings) -> rusqlite::Result<()> {
    conn.busy_timeout(settings.busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    rusqlite::vtab::array::load_module(conn)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // Once a long reader elsewhere has let the -wal file grow, the next
    // checkpoint that resets it also shrinks it back.
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    conn.pragma_update(None, "synchronous", settings.synchronous)
}

/// Opens one connection to an existing file with `flags`, configured.
pub(crate) fn open(
    path: &Path,
    flags: OpenFlags,
    settings: Settings,
) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    configure(&conn, settings)?;
    Ok(conn)
}

/// The one thread every registry handle of the process shares for the
/// pools' housekeeping (r2d2 would start three per pool).
fn workers() -> Arc<ScheduledThreadPool> {
    static WORKERS: OnceLock<Arc<ScheduledThreadPool>> = OnceLock::new();
    Arc::clone(WORKERS.get_or_init(|| {
        Arc::new(
            ScheduledThreadPool::builder()
                .num_threads(1)
                .thread_name_pattern("roster-pool-{}")
                .build(),
        )
    }))
}

/// The pool of a handle. The file exists by now: pool connections never
/// create it again, so a file deleted under a running program is an error,
/// not a new empty registry.
pub(crate) fn pool(path: &Path, options: &SqliteOptions) -> Result<Pool<SqliteConnectionManager>> {
    let settings = Settings::of(options);
    let manager = SqliteConnectionManager::file(path)
        .with_flags(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_init(move |conn| configure(conn, settings));
    Pool::builder()
        .max_size(options.pool_size)
        .min_idle(Some(1))
        // A checkout must not cost a statement: a broken connection shows up
        // as an error of the call that uses it.
        .test_on_check_out(false)
        .idle_timeout(None)
        .max_lifetime(None)
        .connection_timeout(options.busy_timeout.max(Duration::from_millis(100)))
        .thread_pool(workers())
        .build(manager)
        .map_err(|e| Error::Open {
            path: path.to_owned(),
            source: DatabaseError::new(ErrorKind::Unusable, e),
        })
}
