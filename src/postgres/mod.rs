//! [`PostgresRegistry`]: the registry kept in a PostgreSQL database, shared
//! by every process on every host that reaches the server. Compiled with
//! the cargo feature `postgres`.
//!
//! One file per concern, as in `src/sqlite/`: `options` (what a caller
//! chooses), `conn` (the URL, TLS, the pool, prepared statements), `retry`
//! (lost races, SQLSTATEs to roster errors), `schema` (recognising and
//! migrating a schema), `row` (column types), `claim` (all of claim's SQL),
//! `adhoc` (SQL typed by a person, the server's clock).
//! This file holds the handle and the queries of the other trait methods.
//!
//! The database's clock decides: `heartbeat` writes the server's `now()`
//! and `reap` compares with it, so hosts whose clocks differ agree on who is
//! alive. `register` keeps the `last_heartbeat` the caller gives.
//!
//! # From async code
//!
//! The `postgres` client is synchronous: each connection drives its own
//! small tokio runtime, and blocking on it from inside another runtime's
//! worker thread panics ("Cannot start a runtime from within a runtime").
//! Call the registry from a blocking thread instead:
//!
//! ```ignore
//! let registry = std::sync::Arc::new(roster::PostgresRegistry::open(url)?);
//! let handle = std::sync::Arc::clone(&registry);
//! let agent = tokio::task::spawn_blocking(move || handle.get("builder-1")).await??;
//! ```

mod adhoc;
mod claim;
mod conn;
mod copy;
mod feed;
mod options;
mod retry;
mod row;
mod schema;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use r2d2::Pool;

use crate::agent::{AgentInfo, AgentStatus};
use crate::claim::{Claim, Claimed, RecoverReason, Recovered};
use crate::error::{DatabaseError, Error, ErrorKind, Result};
use crate::event::Event;
use crate::registry::{AgentRegistry, now, reap_cutoff};
use crate::task::Task;
use conn::{Conn, Manager, Session, Target};
pub use copy::Copied;
pub use options::{MAX_PG_POOL_SIZE, MAX_PG_TIMEOUT, PostgresOptions};
use row::{agent_columns, claim_columns};

/// An [`AgentRegistry`] kept in a PostgreSQL database.
///
/// Any number of processes, on any hosts, may open the same database at
/// once: each call is one statement or one transaction, waiting for rows
/// other transactions hold happens in the server up to the busy timeout, and
/// transactions that lose a deadlock are retried inside roster. The schema
/// is a public interface documented in the README, to be queried with psql.
///
/// A handle is cheap to clone and to share between threads (`&self`
/// everywhere): clones share one pool of connections.
#[derive(Clone)]
pub struct PostgresRegistry {
    pool: Pool<Manager>,
    target: Arc<Target>,
    options: Arc<PostgresOptions>,
    /// The connection that LISTENs for the change feed, kept between
    /// `watch` calls (see `feed::watch`).
    listener: Arc<Mutex<Option<Conn>>>,
}

impl fmt::Debug for PostgresRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresRegistry")
            .field("url", &self.target.shown)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl PostgresRegistry {
    /// The schema version this build writes (the highest version in
    /// `roster_migrations`): the number of migrations in
    /// `migrations/postgres/`.
    pub const SCHEMA_VERSION: i64 = schema::LATEST_VERSION;

    /// Opens the registry in the database `url` names with the default
    /// [`PostgresOptions`], creating its tables if there are none.
    ///
    /// # Errors
    ///
    /// As [`PostgresOptions::open`].
    pub fn open(url: &str) -> Result<Self> {
        PostgresOptions::new().open(url)
    }

    fn open_with(url: &str, options: PostgresOptions) -> Result<Self> {
        let target = Target::parse(url, &options)?;
        let mut setup = schema::connect(&target, &options)?;
        schema::prepare(&mut setup, &target, &options)?;
        drop(setup);
        Ok(Self {
            pool: conn::pool(&target, &options)?,
            target: Arc::new(target),
            options: Arc::new(options),
            listener: Arc::new(Mutex::new(None)),
        })
    }

    /// The database, as `postgres://user@host:port/dbname` (never the
    /// password).
    pub fn url(&self) -> &str {
        &self.target.shown
    }
}

/// How many times register tries to either update an agent that exists or
/// insert one that does not, while other registers and deregisters of the
/// same id keep changing which it is.
const REGISTER_TURNS: u32 = 100;

/// One agent with its capabilities in order, if it exists.
const GET: &str = concat!(
    "SELECT ",
    agent_columns!("a"),
    " FROM agents AS a WHERE a.id = $1"
);

const LIST: &str = concat!(
    "SELECT ",
    agent_columns!("a"),
    " FROM agents AS a ORDER BY a.id"
);

impl AgentRegistry for PostgresRegistry {
    fn register(&self, agent: AgentInfo) -> Result<()> {
        let agent = agent.validated()?;
        let max_load = i64::from(agent.max_load);
        let pid = agent.pid.map(i64::from);
        let (keys, values): (Vec<&str>, Vec<&str>) = agent
            .metadata
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .unzip();
        self.write(|tx| {
            // The change feed writes one 'updated' (or 'registered') event
            // for all of register's rows.
            tx.execute("SELECT set_config('roster.registering', 'on', true)", &[])?;
            // The claims it holds stay held and keep counting. An existing
            // agent's row is locked before they are counted, so that no
            // claim of it commits between the count and the write; a new
            // agent holds none, unless another register creates it first
            // (then it exists on the next turn).
            let mut turns = 0;
            loop {
                let exists = tx
                    .query_opt(
                        "SELECT 1 FROM agents WHERE id = $1 FOR UPDATE",
                        &[&agent.id],
                    )?
                    .is_some();
                let held: i64 = if exists {
                    tx.query_opt(
                        "SELECT count(*) FROM claims WHERE agent_id = $1 AND NOT detached",
                        &[&agent.id],
                    )?
                    .map_or(Ok(0), |row| row.try_get(0))?
                } else {
                    0
                };
                let held = u32::try_from(held).unwrap_or(u32::MAX);
                let current_load = agent
                    .current_load
                    .checked_add(held)
                    .filter(|total| agent.max_load == 0 || *total <= agent.max_load)
                    .map(i64::from)
                    .ok_or_else(|| crate::memory::over_max(&agent, held))?;
                let params: [&(dyn postgres::types::ToSql + Sync); 9] = [
                    &agent.id,
                    &agent.name,
                    &agent.status.as_str(),
                    &agent.last_heartbeat,
                    &current_load,
                    &max_load,
                    &agent.host,
                    &pid,
                    &agent.started_at,
                ];
                // drained is left out: a new agent starts undrained, an
                // existing one keeps what an operator set.
                let written = if exists {
                    tx.execute(
                        "UPDATE agents SET name = $2::text, status = $3::text,
                             last_heartbeat = $4::timestamptz, current_load = $5::bigint,
                             max_load = $6::bigint, host = $7::text, pid = $8::bigint,
                             started_at = $9::timestamptz
                         WHERE id = $1::text",
                        &params,
                    )?
                } else {
                    tx.execute(
                        "INSERT INTO agents (id, name, status, last_heartbeat, current_load,
                                             max_load, host, pid, started_at)
                         VALUES ($1::text, $2::text, $3::text, $4::timestamptz, $5::bigint,
                                 $6::bigint, $7::text, $8::bigint, $9::timestamptz)
                         ON CONFLICT (id) DO NOTHING",
                        &params,
                    )?
                };
                if written == 1 {
                    break;
                }
                turns += 1;
                if turns == REGISTER_TURNS {
                    return Err(Error::Busy(self.options.busy_timeout).into());
                }
            }
            tx.execute("DELETE FROM capabilities WHERE agent_id = $1", &[&agent.id])?;
            if !agent.capabilities.is_empty() {
                tx.execute(
                    "INSERT INTO capabilities (agent_id, position, capability)
                     SELECT $1::text, (c.position - 1)::integer, c.capability
                     FROM unnest($2::text[]) WITH ORDINALITY AS c (capability, position)",
                    &[&agent.id, &agent.capabilities],
                )?;
            }
            tx.execute("DELETE FROM metadata WHERE agent_id = $1", &[&agent.id])?;
            if !keys.is_empty() {
                tx.execute(
                    "INSERT INTO metadata (agent_id, key, value)
                     SELECT $1::text, m.key, m.value
                     FROM unnest($2::text[], $3::text[]) AS m (key, value)",
                    &[&agent.id, &keys, &values],
                )?;
            }
            Ok(())
        })
    }

    fn deregister(&self, id: &str) -> Result<()> {
        let deleted = self.write(|tx| {
            // Claims before their agent, the order in which release and
            // recover take them (a claim's row, then the trigger updates
            // its agent's). The delete's trigger detaches the agent's
            // claims; with the agent's row locked first, it would wait for
            // a claim being released, whose trigger waits for the agent: a
            // deadlock that the server breaks only after deadlock_timeout.
            // So: the claims it holds now, then the agent (once it is
            // locked, no claim of it can be taken), then, without waiting,
            // the claims taken in between. One of those held elsewhere
            // means a release under way: start again.
            tx.execute(
                "SELECT 1 FROM claims WHERE agent_id = $1 AND NOT detached ORDER BY task_id FOR UPDATE",
                &[&id],
            )?;
            let exists = tx
                .query_opt("SELECT 1 FROM agents WHERE id = $1 FOR UPDATE", &[&id])?
                .is_some();
            if !exists {
                return Ok(0);
            }
            tx.execute(
                "SELECT 1 FROM claims WHERE agent_id = $1 AND NOT detached ORDER BY task_id FOR UPDATE NOWAIT",
                &[&id],
            )
            .map_err(retry::lost_if_locked)?;
            Ok(tx.execute("DELETE FROM agents WHERE id = $1", &[&id])?)
        })?;
        if deleted == 0 {
            return Err(Error::NotFound(id.to_owned()));
        }
        Ok(())
    }

    fn get(&self, id: &str) -> Result<AgentInfo> {
        self.run(|conn| {
            conn.query_opt(GET, &[&id])?
                .as_ref()
                .map(row::agent)
                .transpose()
        })?
        .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    fn list(&self) -> Result<Vec<AgentInfo>> {
        self.run(|conn| row::agents(&conn.query(LIST, &[])?))
    }

    fn heartbeat(&self, id: &str) -> Result<()> {
        // The server's clock, not this host's.
        let updated = self.run(|conn| {
            Ok(conn.execute(
                "UPDATE agents SET last_heartbeat = now(),
                     status = CASE status WHEN 'offline' THEN 'available' ELSE status END
                 WHERE id = $1",
                &[&id],
            )?)
        })?;
        if updated == 0 {
            return Err(Error::NotFound(id.to_owned()));
        }
        Ok(())
    }

    fn set_status(&self, id: &str, status: AgentStatus) -> Result<()> {
        let updated = self.run(|conn| {
            Ok(conn.execute(
                "UPDATE agents SET status = $1::text WHERE id = $2",
                &[&status.as_str(), &id],
            )?)
        })?;
        if updated == 0 {
            return Err(Error::NotFound(id.to_owned()));
        }
        Ok(())
    }

    fn drain(&self, id: &str, drained: bool) -> Result<()> {
        let updated = self.run(|conn| {
            Ok(conn.execute(
                "UPDATE agents SET drained = $1 WHERE id = $2",
                &[&drained, &id],
            )?)
        })?;
        if updated == 0 {
            return Err(Error::NotFound(id.to_owned()));
        }
        Ok(())
    }

    fn reap(&self, ttl: Duration) -> Result<Vec<String>> {
        // The same refusal as every registry for a ttl that reaches before
        // the year 0000; the cutoff itself is the server's now() - ttl.
        reap_cutoff(now(), ttl)?;
        let micros = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
        // One UPDATE ... RETURNING: ids are text, which always decodes, so
        // nothing can fail between its commit and the caller. It locks the
        // stale agents in id order first (the subquery), as recover does:
        // two statements that each update several agents, in the order of
        // their rows on disk, could each wait for a row the other holds.
        let mut reaped: Vec<String> = self.run(|conn| {
            conn.query(
                "UPDATE agents SET status = 'offline'
                 WHERE id IN (SELECT s.id FROM agents AS s
                              WHERE s.status <> 'offline'
                                AND s.last_heartbeat < now() - $1::bigint * interval '1 microsecond'
                              ORDER BY s.id FOR UPDATE)
                   AND status <> 'offline'
                   AND last_heartbeat < now() - $1::bigint * interval '1 microsecond'
                 RETURNING id",
                &[&micros],
            )?
            .iter()
            .map(|row| Ok(row.try_get::<_, String>(0)?))
            .collect()
        })?;
        // RETURNING gives rows in no particular order.
        reaped.sort_unstable();
        Ok(reaped)
    }

    fn claim(&self, task: &Task, lease: Option<Duration>) -> Result<Claimed> {
        let task_id = crate::claim::task_id(&task.id)?;
        let labels = task.checked_labels()?;
        let lease_micros = lease.map(lease_micros).transpose()?;
        let request = claim::Request {
            task_id: &task_id,
            lease_micros,
            labels: &labels,
        };
        match &self.options.router {
            None => self.run(|conn| claim::choose(conn, &request, task.priority)),
            Some(router) => self.write(|tx| claim::route(tx, router.as_ref(), task, &request)),
        }
    }

    fn release(&self, task_id: &str, token: Option<u64>) -> Result<Claim> {
        let sql = sql_token(token);
        self.run(|conn| match conn.query_opt(RELEASE, &[&task_id, &sql])? {
            Some(row) => row::claim(&row, 0),
            None => Err(stale(conn, task_id, token)?.into()),
        })
    }

    fn renew(&self, task_id: &str, token: Option<u64>, lease: Duration) -> Result<Claim> {
        let micros = lease_micros(lease)?;
        let sql = sql_token(token);
        self.run(
            |conn| match conn.query_opt(RENEW, &[&task_id, &sql, &micros])? {
                Some(row) => row::claim(&row, 0),
                None => Err(stale(conn, task_id, token)?.into()),
            },
        )
    }

    fn claims(&self, agent_id: Option<&str>) -> Result<Vec<Claim>> {
        self.run(|conn| row::claims(&conn.query(CLAIMS, &[&agent_id])?))
    }

    fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        crate::event::check_limit(limit)?;
        self.run(|conn| feed::read(conn, after, limit))
    }

    fn last_event(&self) -> Result<u64> {
        self.run(|conn| {
            let mut tx = conn.transaction()?;
            let newest = feed::newest(&mut tx)?;
            tx.commit()?;
            Ok(newest)
        })
    }

    fn watch(&self, after: u64, limit: usize, timeout: Duration) -> Result<Vec<Event>> {
        crate::event::check_limit(limit)?;
        feed::watch(self, after, limit, timeout)
    }

    fn recover(&self) -> Result<Vec<Recovered>> {
        // The locks, then one DELETE ... RETURNING, in a transaction that commits only once
        // every returned row has been read: a row that cannot be decoded
        // rolls the recovery back instead of losing claims unannounced.
        let mut recovered = self.write(|tx| {
            // The change feed calls the claims deleted here 'recovered'.
            // Recovers run one at a time (the lock is this transaction's):
            // the next one finds the rows taken, rather than locking some
            // of the claims due in its own snapshot and waiting for the
            // rest. The lock order below alone keeps them out of a cycle.
            tx.execute(
                "SELECT set_config('roster.recovering', 'on', true), \
                        pg_advisory_xact_lock($1, hashtext(current_schema()))",
                &[&schema::RECOVER_LOCK_KEY],
            )?;
            // The due claims in task order, then their agents in id order,
            // and only then the delete, whose triggers update the agents in
            // no order of their own: every writer of several rows takes
            // them in one order (claims by task, then agents by id).
            let due: Vec<String> = tx
                .query(RECOVER_DUE, &[])?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<std::result::Result<_, postgres::Error>>()?;
            if due.is_empty() {
                return Ok(Vec::new());
            }
            tx.execute(RECOVER_AGENTS, &[&due])?;
            tx.query(RECOVER, &[&due])?
                .iter()
                .map(|row| {
                    let claim = row::claim(row, 0)?;
                    let reason: &str = row.try_get(5)?;
                    let reason = RecoverReason::parse(reason).ok_or_else(|| {
                        Error::Database(DatabaseError::new(
                            ErrorKind::Storage,
                            format!("unknown recover reason {reason:?}"),
                        ))
                    })?;
                    Ok(Recovered { claim, reason })
                })
                .collect::<retry::Result<Vec<_>>>()
        })?;
        // RETURNING gives rows in no particular order.
        recovered.sort_by_key(|r| r.claim.token);
        Ok(recovered)
    }
}

/// Deletes the claim of task `$1` (under token `$2`, when not NULL).
const RELEASE: &str = concat!(
    "DELETE FROM claims AS c WHERE c.task_id = $1 AND ($2::bigint IS NULL OR c.token = $2) RETURNING ",
    claim_columns!("c")
);

/// Sets the lease of the claim of task `$1` (under token `$2`, when not
/// NULL) to the server's now plus `$3` microseconds, unless it is detached.
const RENEW: &str = concat!(
    "UPDATE claims AS c SET lease_expires_at = now() + $3::bigint * interval '1 microsecond' \
     WHERE c.task_id = $1 AND ($2::bigint IS NULL OR c.token = $2) AND NOT c.detached RETURNING ",
    claim_columns!("c")
);

/// The claims held, of agent `$1` unless it is NULL, by token.
const CLAIMS: &str = concat!(
    "SELECT ",
    claim_columns!("c"),
    " FROM claims AS c WHERE $1::text IS NULL OR c.agent_id = $1 ORDER BY c.token"
);

/// A claim `c` is due: its agent is gone or offline, or its lease ran out
/// by the server's clock.
macro_rules! due {
    () => {
        "c.detached \
         OR EXISTS (SELECT 1 FROM agents AS a WHERE a.id = c.agent_id AND a.status = 'offline') \
         OR c.lease_expires_at < now()"
    };
}

/// The tasks of the claims due, locked in task order.
const RECOVER_DUE: &str = concat!(
    "SELECT c.task_id FROM claims AS c WHERE ",
    due!(),
    " ORDER BY c.task_id FOR UPDATE OF c"
);

/// Locks, in id order, the agents of the attached claims of tasks `$1`.
const RECOVER_AGENTS: &str = "SELECT 1 FROM agents AS a WHERE a.id IN \
     (SELECT c.agent_id FROM claims AS c WHERE c.task_id = ANY($1::text[]) AND NOT c.detached) \
     ORDER BY a.id FOR UPDATE OF a";

/// The claims of tasks `$1` still due, taken back in one statement with
/// their reasons: agent gone over agent offline over lease expired, in the
/// server's clock.
const RECOVER: &str = concat!(
    "DELETE FROM claims AS c \
     WHERE c.task_id = ANY($1::text[]) AND (",
    due!(),
    ") RETURNING ",
    claim_columns!("c"),
    ", CASE WHEN c.detached THEN 'agent_gone' \
            WHEN EXISTS (SELECT 1 FROM agents AS a WHERE a.id = c.agent_id AND a.status = 'offline') \
                THEN 'agent_offline' \
            ELSE 'lease_expired' END"
);

/// A lease as the statements bind it: microseconds, rounded up so that a
/// lease of a nanosecond is still longer than 0.
///
/// # Errors
///
/// As [`crate::claim::lease_expiry`]: a lease of 0, or one that ends past
/// the year 9999 (judged by this host's clock; the server's adds it to its
/// own now).
fn lease_micros(lease: Duration) -> Result<i64> {
    crate::claim::lease_expiry(now(), lease)?;
    let micros = lease.as_nanos().div_ceil(1000);
    i64::try_from(micros)
        .map_err(|_| Error::invalid("lease", format!("{lease:?} reaches past the year 9999")))
}

/// A token as the schema stores it (bigint); one past `i64::MAX` matches no
/// claim.
fn sql_token(token: Option<u64>) -> Option<i64> {
    token.map(|token| i64::try_from(token).unwrap_or(-1))
}

/// The error for a release or renew that found no claim to act on.
fn stale(conn: &mut Conn, task_id: &str, token: Option<u64>) -> retry::Result<Error> {
    let held = claim::held(conn, task_id)?;
    Ok(Error::StaleClaim {
        task_id: task_id.to_owned(),
        token,
        held: held
            .filter(|claim| token.is_some_and(|token| token != claim.token))
            .map(|claim| claim.token),
    })
}
