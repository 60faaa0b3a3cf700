//! [`SqliteRegistry`]: the registry kept in one SQLite file, shared by every
//! process on the host. The only module that knows SQL.

mod adhoc;
mod claim;
mod row;
mod schema;

use std::fmt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use chrono::Utc;
use r2d2::{Pool, PooledConnection};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};

use crate::agent::AgentInfo;
use crate::error::{DatabaseError, Error, Result};
use crate::registry::{AgentRegistry, reap_cutoff};
use crate::task::Task;
pub use adhoc::{SqlAccess, SqlRows, SqlValue};
use row::{encode_time, query_agents, select_agents};

/// The size, in bytes, that the -wal file is cut back to after a checkpoint
/// has reset it (`PRAGMA journal_size_limit`).
const WAL_SIZE_LIMIT: i64 = 16 * 1024 * 1024;

/// How much a commit survives, set per connection with `PRAGMA synchronous`.
///
/// Either way the database is in WAL mode and a crash of any process loses
/// nothing that was acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous = NORMAL` (the default): survives any process crash; a
    /// power loss or OS crash can drop the last commits, never corrupt the
    /// file.
    #[default]
    Normal,
    /// `synchronous = FULL`: also survives a power loss or OS crash, at the
    /// cost of an fsync on every commit.
    Full,
}

impl Durability {
    fn pragma_value(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }
}

/// How to open a [`SqliteRegistry`]: pool size, busy timeout, durability.
///
/// ```no_run
/// use std::time::Duration;
/// use roster::{Durability, SqliteOptions};
///
/// let registry = SqliteOptions::new()
///     .pool_size(8)
///     .busy_timeout(Duration::from_secs(10))
///     .durability(Durability::Full)
///     .open("agents.db")?;
/// # Ok::<(), roster::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    pool_size: u32,
    busy_timeout: Duration,
    durability: Durability,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            pool_size: 4,
            busy_timeout: Duration::from_secs(5),
            durability: Durability::Normal,
        }
    }
}

impl SqliteOptions {
    /// The defaults: a pool of 4 connections, a busy timeout of 5 s,
    /// [`Durability::Normal`].
    pub fn new() -> Self {
        Self::default()
    }

    /// How many connections this handle keeps open at most (at least 1).
    pub fn pool_size(mut self, connections: u32) -> Self {
        self.pool_size = connections;
        self
    }

    /// How long a call waits for other connections and processes to release
    /// the database before it fails with [`Error::Busy`].
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How much a commit survives; see [`Durability`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Opens the registry at `path`, creating the file if it does not exist
    /// and bringing its schema up to date.
    ///
    /// # Errors
    ///
    /// - [`Error::Invalid`] for a pool size of 0;
    /// - [`Error::Open`] when the file cannot be opened or created, for
    ///   example because its directory does not exist;
    /// - [`Error::NotADatabase`] for a file that is not an SQLite database,
    ///   [`Error::NotARegistry`] for another program's database and
    ///   [`Error::SchemaTooNew`] for a database written by a newer roster:
    ///   all three leave the file untouched.
    pub fn open(self, path: impl AsRef<Path>) -> Result<SqliteRegistry> {
        let path = path.as_ref();
        if self.pool_size == 0 {
            return Err(Error::invalid("pool_size", "must be at least 1"));
        }
        let mut setup = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| schema::open_error(path, e))?;
        setup
            .busy_timeout(self.busy_timeout)
            .map_err(|e| schema::open_error(path, e))?;
        schema::prepare(path, &mut setup, self.busy_timeout)?;
        drop(setup);

        let (busy_timeout, synchronous) = (self.busy_timeout, self.durability.pragma_value());
        // The file exists now: pool connections never create it again, so a
        // file deleted under a running program is an error, not a new empty
        // registry.
        let manager = SqliteConnectionManager::file(path)
            .with_flags(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_init(move |conn| {
                conn.busy_timeout(busy_timeout)?;
                conn.set_prepared_statement_cache_capacity(64);
                conn.pragma_update(None, "foreign_keys", true)?;
                // Once a long reader elsewhere has let the -wal file grow,
                // the next checkpoint that resets it also shrinks it back.
                conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
                conn.pragma_update(None, "synchronous", synchronous)
            });
        let pool = Pool::builder()
            .max_size(self.pool_size)
            .min_idle(Some(1))
            // A checkout must not cost a statement: a broken connection shows up
            // as an error of the call that uses it.
            .test_on_check_out(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .connection_timeout(self.busy_timeout.max(Duration::from_millis(100)))
            .build(manager)
            .map_err(|e| Error::Open {
                path: path.to_owned(),
                source: DatabaseError::new(e),
            })?;
        Ok(SqliteRegistry {
            pool,
            path: path.to_owned(),
            busy_timeout: self.busy_timeout,
        })
    }
}

/// An [`AgentRegistry`] kept in one SQLite file.
///
/// Every process on the host may open the same file at once: each call is one
/// transaction, writes take the lock up front (`BEGIN IMMEDIATE`) and waiting
/// for other writers happens inside roster, up to the busy timeout. The
/// schema is a public interface documented in the README, to be read and
/// queried with the `sqlite3` shell.
///
/// A handle is cheap to share between threads (`&self` everywhere); it holds
/// a small pool of connections.
pub struct SqliteRegistry {
    pool: Pool<SqliteConnectionManager>,
    path: PathBuf,
    busy_timeout: Duration,
}

impl fmt::Debug for SqliteRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteRegistry")
            .field("path", &self.path)
            .field("busy_timeout", &self.busy_timeout)
            .finish_non_exhaustive()
    }
}

/// Wraps a storage error as [`Error::Database`]. Busy errors are turned into
/// [`Error::Busy`] by the callers that know how long they waited.
pub(crate) fn db_error(error: rusqlite::Error) -> Error {
    Error::Database(DatabaseError::new(error))
}

pub(crate) fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

impl SqliteRegistry {
    /// Opens the registry at `path` with the default [`SqliteOptions`],
    /// creating the file if it does not exist.
    ///
    /// # Errors
    ///
    /// As [`SqliteOptions::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        SqliteOptions::new().open(path)
    }

    /// The file this registry lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on a pooled connection, retrying it while the database is
    /// busy, until the busy timeout has passed since the first try.
    ///
    /// SQLite's own busy handler already waits inside each statement; the
    /// retry covers the cases where SQLite reports busy without waiting.
    fn with_conn<T>(
        &self,
        mut work: impl FnMut(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + self.busy_timeout;
        let mut conn = self.connection()?;
        let mut pause = Duration::from_micros(50);
        loop {
            match work(&mut conn) {
                Ok(value) => return Ok(value),
                Err(e) if is_busy(&e) && Instant::now() < deadline => {
                    thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                Err(e) if is_busy(&e) => return Err(Error::Busy(self.busy_timeout)),
                Err(e) => return Err(db_error(e)),
            }
        }
    }

    /// Runs `work` in one `BEGIN IMMEDIATE` transaction, committed when it
    /// returns `Ok`, rolled back otherwise; retried as in `with_conn`.
    fn write<T>(&self, mut work: impl FnMut(&Transaction<'_>) -> rusqlite::Result<T>) -> Result<T> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = work(&tx)?;
            tx.commit()?;
            Ok(value)
        })
    }

    fn connection(&self) -> Result<PooledConnection<SqliteConnectionManager>> {
        self.pool
            .get()
            .map_err(|e| Error::Database(DatabaseError::new(e)))
    }
}

impl AgentRegistry for SqliteRegistry {
    fn register(&self, agent: AgentInfo) -> Result<()> {
        let agent = agent.validated()?;
        let last_heartbeat = encode_time(&agent.last_heartbeat);
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO agents (id, name, status, last_heartbeat, current_load, max_load)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET
                     name = excluded.name, status = excluded.status,
                     last_heartbeat = excluded.last_heartbeat,
                     current_load = excluded.current_load, max_load = excluded.max_load",
            )?
            .execute(params![
                agent.id,
                agent.name,
                agent.status.as_str(),
                last_heartbeat,
                agent.current_load,
                agent.max_load
            ])?;
            tx.prepare_cached("DELETE FROM capabilities WHERE agent_id = ?1")?
                .execute([&agent.id])?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO capabilities (agent_id, position, capability) VALUES (?1, ?2, ?3)",
            )?;
            for (position, capability) in (0_i64..).zip(&agent.capabilities) {
                insert.execute(params![agent.id, position, capability])?;
            }
            Ok(())
        })
    }

    fn deregister(&self, id: &str) -> Result<()> {
        let deleted = self.with_conn(|conn| {
            conn.prepare_cached("DELETE FROM agents WHERE id = ?1")?
                .execute([id])
        })?;
        if deleted == 0 {
            return Err(Error::NotFound(id.to_owned()));
        }
        Ok(())
    }

    fn get(&self, id: &str) -> Result<AgentInfo> {
        self.with_conn(|conn| read_agent(conn, id))?
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    fn list(&self) -> Result<Vec<AgentInfo>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(select_agents!("ORDER BY a.id, c.position"))?;
            query_agents(&mut stmt, [])
        })
    }

    fn heartbeat(&self, id: &str) -> Result<()> {
        let now = encode_time(&Utc::now());
        // One statement, so one write transaction that SQLite starts with the
        // write lock (a single UPDATE cannot hit a stale snapshot).
        let updated = self.with_conn(|conn| {
            conn.prepare_cached(
                "UPDATE agents SET last_heartbeat = ?1,
                     status = CASE status WHEN 'offline' THEN 'available' ELSE status END
                 WHERE id = ?2",
            )?
            .execute([&now, id])
        })?;
        if updated == 0 {
            return Err(Error::NotFound(id.to_owned()));
        }
        Ok(())
    }

    fn reap(&self, ttl: Duration) -> Result<Vec<String>> {
        let cutoff = encode_time(&reap_cutoff(Utc::now(), ttl)?);
        let mut reaped = self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "UPDATE agents SET status = 'offline'
                 WHERE status <> 'offline' AND last_heartbeat < ?1
                 RETURNING id",
            )?;
            let ids = stmt.query_map([&cutoff], |row| row.get::<_, String>(0))?;
            ids.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        // RETURNING gives rows in no particular order.
        reaped.sort_unstable();
        Ok(reaped)
    }

    fn claim(&self, task: &Task) -> Result<AgentInfo> {
        let labels = task.checked_labels()?;
        self.write(|tx| {
            let Some(id) = claim::choose(tx, &labels, task.priority)? else {
                return Ok(None);
            };
            tx.prepare_cached("UPDATE agents SET current_load = current_load + 1 WHERE id = ?1")?
                .execute([&id])?;
            read_agent(tx, &id)
        })?
        .ok_or(Error::NoEligibleAgent)
    }

    fn release(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            let load: Option<i64> = tx
                .prepare_cached(
                    "UPDATE agents SET current_load = current_load - 1
                     WHERE id = ?1 AND current_load > 0 RETURNING current_load",
                )?
                .query_row([id], |row| row.get(0))
                .optional()?;
            if load.is_some() {
                return Ok(Ok(()));
            }
            let exists = tx
                .prepare_cached("SELECT 1 FROM agents WHERE id = ?1")?
                .exists([id])?;
            Ok(Err(if exists {
                Error::NothingToRelease(id.to_owned())
            } else {
                Error::NotFound(id.to_owned())
            }))
        })?
    }
}

/// One agent with its capabilities in order, if it exists.
fn read_agent(conn: &Connection, id: &str) -> rusqlite::Result<Option<AgentInfo>> {
    let mut stmt = conn.prepare_cached(select_agents!("WHERE a.id = ?1 ORDER BY c.position"))?;
    Ok(query_agents(&mut stmt, [id])?.pop())
}
