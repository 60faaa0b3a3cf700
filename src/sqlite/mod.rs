//! [`SqliteRegistry`]: the registry kept in one SQLite file, shared by every
//! process on the host. The only module that knows SQL.
//!
//! One file per concern: `options` (what a caller chooses), `conn` (setting
//! up every connection, the pool), `retry` (busy handling, storage errors to
//! roster errors), `schema` (recognising and migrating a file), `row` (column
//! formats), `claim` (all of claim's SQL), `adhoc` (SQL typed by a person).
//! This file holds the handle and the queries of the other trait methods.

mod adhoc;
mod claim;
mod conn;
mod feed;
mod options;
mod retry;
mod row;
mod schema;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use r2d2::{Pool, PooledConnection};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::agent::{AgentInfo, AgentStatus};
use crate::claim::{Claim, Claimed, RecoverReason, Recovered};
use crate::error::{DatabaseError, Error, Result};
use crate::event::Event;
use crate::memory;
use crate::registry::{AgentRegistry, now, reap_cutoff};
use crate::task::Task;
pub use adhoc::{DEFAULT_SQL_TIMEOUT, SqlAccess, SqlOptions, SqlRows, SqlSummary, SqlValue};
pub use options::{Durability, MAX_BUSY_TIMEOUT, MAX_POOL_SIZE, SqliteOptions};
use row::{encode_time, query_agents, select_agents};

/// An [`AgentRegistry`] kept in one SQLite file.
///
/// Every process on the host may open the same file at once: each call is one
/// transaction, writes take the lock up front (`BEGIN IMMEDIATE`) and waiting
/// for other writers happens inside roster, up to the busy timeout. The
/// schema is a public interface documented in the README, to be read and
/// queried with the `sqlite3` shell.
///
/// A handle is cheap to clone and to share between threads (`&self`
/// everywhere): clones share one small pool of connections, and every handle
/// of the process shares one housekeeping thread.
#[derive(Clone)]
pub struct SqliteRegistry {
    pool: Pool<SqliteConnectionManager>,
    path: PathBuf,
    options: SqliteOptions,
    busy_timeout: Duration,
}

impl fmt::Debug for SqliteRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteRegistry")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl SqliteRegistry {
    /// The schema version this build writes (`PRAGMA user_version`): the
    /// number of migrations in `migrations/sqlite/`.
    pub const SCHEMA_VERSION: i64 = schema::LATEST_VERSION;

    /// Opens the registry at `path` with the default [`SqliteOptions`],
    /// creating the file if it does not exist.
    ///
    /// # Errors
    ///
    /// As [`SqliteOptions::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        SqliteOptions::new().open(path)
    }

    fn open_with(path: &Path, options: SqliteOptions) -> Result<Self> {
        if !(1..=options::MAX_POOL_SIZE).contains(&options.pool_size) {
            return Err(Error::invalid(
                "pool_size",
                format!(
                    "{} connections: must be 1 to {}",
                    options.pool_size,
                    options::MAX_POOL_SIZE
                ),
            ));
        }
        if options.busy_timeout > options::MAX_BUSY_TIMEOUT {
            return Err(Error::invalid(
                "busy_timeout",
                format!(
                    "{:?} is longer than SQLite can wait ({:?}, about 24.8 days)",
                    options.busy_timeout,
                    options::MAX_BUSY_TIMEOUT
                ),
            ));
        }
        if path.to_str().is_some_and(|p| p.starts_with("file:")) {
            return Err(Error::invalid(
                "path",
                format!(
                    "{} is an SQLite URI; roster takes a plain file path (write ./{0} for a file whose name starts with \"file:\")",
                    path.display()
                ),
            ));
        }
        let settings = conn::Settings::of(&options);
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE;
        if options.create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        } else if !path.exists() {
            return Err(Error::NoRegistry {
                path: path.to_owned(),
            });
        }
        let mut setup =
            conn::open(path, flags, settings).map_err(|e| schema::open_error(path, e))?;
        schema::prepare(path, &mut setup, options.busy_timeout)?;
        drop(setup);
        Ok(Self {
            pool: conn::pool(path, &options)?,
            path: path.to_owned(),
            busy_timeout: options.busy_timeout,
            options,
        })
    }

    /// The file this registry lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn connection(&self) -> Result<PooledConnection<SqliteConnectionManager>> {
        self.pool
            .get()
            .map_err(|e| Error::Database(DatabaseError::new(crate::error::ErrorKind::Storage, e)))
    }
}

impl AgentRegistry for SqliteRegistry {
    fn register(&self, agent: AgentInfo) -> Result<()> {
        let agent = agent.validated()?;
        let last_heartbeat = encode_time(&agent.last_heartbeat);
        let started_at = agent.started_at.as_ref().map(encode_time);
        let registered_at = encode_time(&now());
        self.write(|tx| {
            // The claims it holds stay held and keep counting.
            let held: u32 = tx
                .prepare_cached("SELECT count(*) FROM claims WHERE agent_id = ?1 AND detached = 0")?
                .query_row([&agent.id], |row| row.get(0))?;
            let current_load = agent
                .current_load
                .checked_add(held)
                .filter(|total| agent.max_load == 0 || *total <= agent.max_load)
                .ok_or_else(|| memory::over_max(&agent, held))?;
            // Capabilities and metadata are rewritten below: the flag makes
            // their triggers leave the change feed to this register's one
            // event. It never outlives the transaction.
            tx.prepare_cached("UPDATE settings SET value = 1 WHERE name = 'registering'")?
                .execute([])?;
            // drained is left out: a new agent starts undrained, an existing
            // one keeps what an operator set. An UPDATE, then an INSERT if
            // there was nothing to update: the schema refuses an INSERT of an
            // existing id (INSERT OR REPLACE would skip its triggers).
            let values = params![
                agent.id,
                agent.name,
                agent.status.as_str(),
                last_heartbeat,
                current_load,
                agent.max_load,
                agent.host,
                agent.pid,
                started_at,
                registered_at,
            ];
            let updated = tx
                .prepare_cached(
                    "UPDATE agents SET name = ?2, status = ?3, last_heartbeat = ?4,
                         current_load = ?5, max_load = ?6, host = ?7, pid = ?8,
                         started_at = ?9, registered_at = ?10
                     WHERE id = ?1",
                )?
                .execute(values)?;
            if updated == 0 {
                tx.prepare_cached(
                    "INSERT INTO agents (id, name, status, last_heartbeat, current_load, max_load,
                                         host, pid, started_at, registered_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?
                .execute(values)?;
            }
            tx.prepare_cached("DELETE FROM capabilities WHERE agent_id = ?1")?
                .execute([&agent.id])?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO capabilities (agent_id, position, capability) VALUES (?1, ?2, ?3)",
            )?;
            for (position, capability) in (0_i64..).zip(&agent.capabilities) {
                insert.execute(params![agent.id, position, capability])?;
            }
            tx.prepare_cached("DELETE FROM metadata WHERE agent_id = ?1")?
                .execute([&agent.id])?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO metadata (agent_id, key, value) VALUES (?1, ?2, ?3)",
            )?;
            for (key, value) in &agent.metadata {
                insert.execute(params![agent.id, key, value])?;
            }
            tx.prepare_cached("UPDATE settings SET value = 0 WHERE name = 'registering'")?
                .execute([])?;
            Ok(())
        })
    }

    fn deregister(&self, id: &str) -> Result<()> {
        let deleted = self.run(|conn| {
            Ok(conn
                .prepare_cached("DELETE FROM agents WHERE id = ?1")?
                .execute([id])?)
        })?;
        if deleted == 0 {
            return Err(Error::NotFound(id.to_owned()));
        }
        Ok(())
    }

    fn get(&self, id: &str) -> Result<AgentInfo> {
        self.run(|conn| {
            // One snapshot for the agent and its metadata.
            let tx = conn.transaction()?;
            let agent = read_agent(&tx, id)?;
            tx.commit()?;
            Ok(agent)
        })?
        .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    fn list(&self) -> Result<Vec<AgentInfo>> {
        self.run(|conn| {
            let tx = conn.transaction()?;
            let mut agents = {
                let mut stmt = tx.prepare_cached(select_agents!("ORDER BY a.id, c.position"))?;
                query_agents(&mut stmt, [])?
            };
            row::fill_metadata(&tx, &mut agents)?;
            tx.commit()?;
            Ok(agents)
        })
    }

    fn heartbeat(&self, id: &str) -> Result<()> {
        let now = encode_time(&now());
        // The hot path sets last_heartbeat alone, so that no trigger of the
        // change feed fires; only an offline agent's heartbeat also sets
        // its status (and writes a `status` event). Each is one statement,
        // one write transaction that SQLite starts with the write lock.
        let updated = self.run(|conn| {
            let alive = conn
                .prepare_cached(
                    "UPDATE agents SET last_heartbeat = ?1 WHERE id = ?2 AND status <> 'offline'",
                )?
                .execute([&now, id])?;
            if alive > 0 {
                return Ok(alive);
            }
            Ok(conn
                .prepare_cached(
                    "UPDATE agents SET last_heartbeat = ?1,
                         status = CASE status WHEN 'offline' THEN 'available' ELSE status END
                     WHERE id = ?2",
                )?
                .execute([&now, id])?)
        })?;
        if updated == 0 {
            return Err(Error::NotFound(id.to_owned()));
        }
        Ok(())
    }

    fn set_status(&self, id: &str, status: AgentStatus) -> Result<()> {
        let updated = self.run(|conn| {
            Ok(conn
                .prepare_cached("UPDATE agents SET status = ?1 WHERE id = ?2")?
                .execute([status.as_str(), id])?)
        })?;
        if updated == 0 {
            return Err(Error::NotFound(id.to_owned()));
        }
        Ok(())
    }

    fn drain(&self, id: &str, drained: bool) -> Result<()> {
        let updated = self.run(|conn| {
            Ok(conn
                .prepare_cached("UPDATE agents SET drained = ?1 WHERE id = ?2")?
                .execute(params![drained, id])?)
        })?;
        if updated == 0 {
            return Err(Error::NotFound(id.to_owned()));
        }
        Ok(())
    }

    fn reap(&self, ttl: Duration) -> Result<Vec<String>> {
        let cutoff = encode_time(&reap_cutoff(now(), ttl)?);
        // One UPDATE ... RETURNING, inside a transaction that commits only
        // once every returned id has been read: an id that cannot be decoded
        // rolls the reap back instead of taking agents offline unannounced.
        let mut reaped = self.write(|tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE agents SET status = 'offline'
                 WHERE status <> 'offline' AND last_heartbeat < ?1
                 RETURNING id",
            )?;
            let mut rows = stmt.query([&cutoff])?;
            let mut ids = Vec::new();
            while let Some(row) = rows.next()? {
                ids.push(row::text(row, 0, "agents")?.to_owned());
            }
            Ok(ids)
        })?;
        // RETURNING gives rows in no particular order.
        reaped.sort_unstable();
        Ok(reaped)
    }

    fn claim(&self, task: &Task, lease: Option<Duration>) -> Result<Claimed> {
        let task_id = crate::claim::task_id(&task.id)?;
        let labels = task.checked_labels()?;
        // A lease too long for the calendar is refused before any wait.
        if let Some(lease) = lease {
            crate::claim::lease_expiry(now(), lease)?;
        }
        self.write(|tx| {
            if let Some(held) = held_claim(tx, &task_id)? {
                return Err(memory::already_claimed(&held).into());
            }
            // The time is read holding the write lock, so that claims taken
            // one after the other by several processes have their
            // `claimed_at` in the order of their tokens.
            let claimed_at = now();
            let lease_expires_at = lease
                .map(|lease| crate::claim::lease_expiry(claimed_at, lease))
                .transpose()?;
            let (claimed_at_text, lease_expires_at_text) = (
                encode_time(&claimed_at),
                lease_expires_at.as_ref().map(encode_time),
            );
            let chosen = match &self.options.router {
                None => claim::choose(tx, &labels, task.priority)?,
                Some(router) => claim::route(tx, router.as_ref(), task, &labels)?,
            };
            let Some(id) = chosen else {
                return Err(Error::NoEligibleAgent.into());
            };
            // The next token, then the row (the triggers take the slot and
            // move the token counter): without RETURNING, which SQLite runs
            // as one more trigger program over a temporary table (see
            // release).
            let token: i64 = tx
                .prepare_cached("SELECT value + 1 FROM counters WHERE name = 'claim_token'")?
                .query_row([], |row| row.get(0))?;
            tx.prepare_cached(
                "INSERT INTO claims (task_id, agent_id, token, claimed_at, lease_expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                task_id,
                id,
                token,
                claimed_at_text,
                lease_expires_at_text
            ])?;
            let claim = Claim {
                token: u64::try_from(token).map_err(|_| Error::Unreadable {
                    table: "counters",
                    id: "claim_token".to_owned(),
                    column: "value",
                    reason: format!("{token} is negative"),
                })?,
                task_id: task_id.clone(),
                agent_id: id.clone(),
                claimed_at,
                lease_expires_at,
            };
            let agent = read_agent(tx, &id)?.ok_or_else(|| Error::NotFound(id.clone()))?;
            Ok(Claimed { claim, agent })
        })
    }

    fn release(&self, task_id: &str, token: Option<u64>) -> Result<Claim> {
        self.write(|tx| {
            // Read, then deleted by its key, in the one write transaction:
            // DELETE ... RETURNING ran 7 % more instructions (callgrind,
            // 170 400 against 158 500 per release at 10 000 agents).
            let claim = match held_claim(tx, task_id)? {
                Some(held) if token.is_none_or(|token| token == held.token) => held,
                held => return Err(stale_given(held, task_id, token).into()),
            };
            tx.prepare_cached("DELETE FROM claims WHERE task_id = ?1")?
                .execute([task_id])?;
            Ok(claim)
        })
    }

    fn renew(&self, task_id: &str, token: Option<u64>, lease: Duration) -> Result<Claim> {
        let expiry = encode_time(&crate::claim::lease_expiry(now(), lease)?);
        self.write(|tx| {
            let renewed = tx
                .prepare_cached(
                    "UPDATE claims SET lease_expires_at = ?3
                     WHERE task_id = ?1 AND (?2 IS NULL OR token = ?2) AND detached = 0
                     RETURNING task_id, agent_id, token, claimed_at, lease_expires_at",
                )?
                .query_row(
                    params![task_id, sql_token(token), expiry],
                    row::claim_from_row,
                )
                .optional()?;
            match renewed {
                Some(claim) => Ok(claim?),
                None => Err(stale(tx, task_id, token)?.into()),
            }
        })
    }

    fn claims(&self, agent_id: Option<&str>) -> Result<Vec<Claim>> {
        self.run(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT task_id, agent_id, token, claimed_at, lease_expires_at FROM claims
                 WHERE ?1 IS NULL OR agent_id = ?1 ORDER BY token",
            )?;
            let mut rows = stmt.query([agent_id])?;
            let mut claims = Vec::new();
            while let Some(row) = rows.next()? {
                claims.push(row::claim_from_row(row)??);
            }
            Ok(claims)
        })
    }

    fn recover(&self) -> Result<Vec<Recovered>> {
        let now = encode_time(&now());
        let mut recovered = self.write(|tx| {
            // The flag tells the change feed's trigger that these deletes
            // are recoveries, not releases; it never outlives the
            // transaction.
            tx.prepare_cached("UPDATE settings SET value = 1 WHERE name = 'recovering'")?
                .execute([])?;
            // One DELETE takes every due claim back; the reason is read in
            // the same statement, agent gone over offline over lease.
            let mut stmt = tx.prepare_cached(
                "DELETE FROM claims
                 WHERE detached = 1
                    OR EXISTS (SELECT 1 FROM agents AS a
                               WHERE a.id = claims.agent_id AND a.status = 'offline')
                    OR lease_expires_at < ?1
                 RETURNING task_id, agent_id, token, claimed_at, lease_expires_at,
                     CASE WHEN detached = 1 THEN 'agent_gone'
                          WHEN (SELECT status FROM agents AS a WHERE a.id = claims.agent_id) = 'offline'
                              THEN 'agent_offline'
                          ELSE 'lease_expired' END",
            )?;
            let mut rows = stmt.query([&now])?;
            let mut recovered = Vec::new();
            while let Some(row) = rows.next()? {
                let claim = row::claim_from_row(row)??;
                let reason = row::text(row, 5, "claims")?;
                let reason = RecoverReason::parse(reason).ok_or_else(|| {
                    Error::Database(DatabaseError::new(
                        crate::error::ErrorKind::Storage,
                        format!("unknown recover reason {reason:?}"),
                    ))
                })?;
                recovered.push(Recovered { claim, reason });
            }
            drop(rows);
            drop(stmt);
            tx.prepare_cached("UPDATE settings SET value = 0 WHERE name = 'recovering'")?
                .execute([])?;
            Ok(recovered)
        })?;
        // RETURNING gives rows in no particular order.
        recovered.sort_by_key(|r| r.claim.token);
        Ok(recovered)
    }

    fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        crate::event::check_limit(limit)?;
        self.run(|conn| {
            // One snapshot for the bounds and the page.
            let tx = conn.transaction()?;
            let page = feed::read(&tx, after, limit)?;
            tx.commit()?;
            Ok(page)
        })
    }

    fn last_event(&self) -> Result<u64> {
        self.run(|conn| feed::newest(conn))
    }

    fn watch(&self, after: u64, limit: usize, timeout: Duration) -> Result<Vec<Event>> {
        crate::event::check_limit(limit)?;
        feed::watch(self, after, limit, timeout)
    }
}

/// A token as SQLite stores it; one past `i64::MAX` matches no claim (a
/// stored token is at most `i64::MAX`).
fn sql_token(token: Option<u64>) -> Option<i64> {
    token.map(|token| i64::try_from(token).unwrap_or(-1))
}

/// The claim holding `task_id`, if any.
fn held_claim(conn: &Connection, task_id: &str) -> retry::Result<Option<Claim>> {
    let held = conn
        .prepare_cached(
            "SELECT task_id, agent_id, token, claimed_at, lease_expires_at FROM claims
             WHERE task_id = ?1",
        )?
        .query_row([task_id], row::claim_from_row)
        .optional()?;
    held.transpose()
}

/// The error for a release or renew that found no claim to act on.
fn stale(conn: &Connection, task_id: &str, token: Option<u64>) -> retry::Result<Error> {
    Ok(stale_given(held_claim(conn, task_id)?, task_id, token))
}

/// The same, given the claim now held for `task_id` (if any).
fn stale_given(held: Option<Claim>, task_id: &str, token: Option<u64>) -> Error {
    Error::StaleClaim {
        task_id: task_id.to_owned(),
        token,
        held: held
            .filter(|claim| token.is_some_and(|token| token != claim.token))
            .map(|claim| claim.token),
    }
}

/// One agent with its capabilities in order and its metadata, if it exists.
fn read_agent(conn: &Connection, id: &str) -> retry::Result<Option<AgentInfo>> {
    let mut stmt = conn.prepare_cached(select_agents!("WHERE a.id = ?1 ORDER BY c.position"))?;
    let Some(mut agent) = query_agents(&mut stmt, [id])?.pop() else {
        return Ok(None);
    };
    agent.metadata = row::read_metadata(conn, id)?;
    Ok(Some(agent))
}
