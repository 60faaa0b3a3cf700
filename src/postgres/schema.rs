//! Opening a database safely: connecting, recognising the schema, migrating
//! it under an advisory lock.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use postgres::Client;
use postgres::error::SqlState;

use crate::error::{DatabaseError, Error, ErrorKind, Result};
use crate::postgres::conn::Target;
use crate::postgres::options::PostgresOptions;
use crate::postgres::retry::{Limits, PgError, classify, kind_of};

/// The migrations, oldest first, with the names recorded in
/// `roster_migrations`. Append only: a released file is never edited.
pub(crate) const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_agents",
        include_str!("../../migrations/postgres/0001_agents.sql"),
    ),
    (
        "0002_claims",
        include_str!("../../migrations/postgres/0002_claims.sql"),
    ),
    (
        "0003_events",
        include_str!("../../migrations/postgres/0003_events.sql"),
    ),
    (
        "0004_copy",
        include_str!("../../migrations/postgres/0004_copy.sql"),
    ),
    (
        "0005_feed_rules",
        include_str!("../../migrations/postgres/0005_feed_rules.sql"),
    ),
    (
        "0006_one_pruner",
        include_str!("../../migrations/postgres/0006_one_pruner.sql"),
    ),
];

/// The newest schema version this build knows.
pub(crate) const LATEST_VERSION: i64 = MIGRATIONS.len() as i64;

/// The first key of roster's advisory locks: the bytes "rost". The second
/// is `hashtext` of the schema's name, so that registries in different
/// schemas migrate independently.
pub(crate) const LOCK_KEY: i32 = 0x726f_7374;

/// The first key of the advisory lock under which `recover` runs, one at a
/// time per schema: the bytes "recv". The second is `hashtext` of the
/// schema's name.
pub(crate) const RECOVER_LOCK_KEY: i32 = 0x7265_6376;

/// The first key of the advisory lock a transaction takes, without
/// waiting, to prune the change feed (`events_write` in
/// `migrations/postgres/0006_one_pruner.sql`, which spells it in decimal):
/// the bytes "prun".
#[cfg(test)]
pub(crate) const PRUNE_LOCK_KEY: i32 = 0x7072_756e;

/// The tables of roster's schema, any of which marks a schema as taken.
const TABLES: &[&str] = &[
    "roster_migrations",
    "agents",
    "capabilities",
    "metadata",
    "claims",
    "claim_tokens",
    "settings",
    "events",
];

/// What a schema holds before roster touches it.
#[derive(Debug)]
struct Found {
    /// Whether the schema exists.
    schema_exists: bool,
    /// The applied schema version, when `roster_migrations` exists.
    version: Option<i64>,
    /// Tables of roster's names present in the schema.
    tables: Vec<String>,
}

/// The error for a failed connection attempt to `target`.
pub(crate) fn connect_error(target: &Target, create: bool, error: postgres::Error) -> Error {
    let path = PathBuf::from(&target.shown);
    match error.code() {
        Some(&SqlState::INVALID_CATALOG_NAME) if !create => Error::NoRegistry { path },
        Some(_) if kind_of(&error) == ErrorKind::Unusable => Error::Open {
            path,
            source: DatabaseError::new(ErrorKind::Unusable, PgError(error)),
        },
        Some(_) => Error::Database(DatabaseError::new(
            ErrorKind::Storage,
            Context {
                what: format!("cannot connect to {}", target.shown),
                source: PgError(error),
            },
        )),
        // No SQLSTATE: refused, unreachable, timed out (may pass), TLS or
        // a setting the server asked for and the URL lacks (will not).
        None if std::error::Error::source(&error)
            .is_some_and(|source| source.to_string() == "password missing") =>
        {
            Error::Open {
                path,
                source: DatabaseError::new(
                    ErrorKind::Unusable,
                    "the server asks for a password and the URL gives none (postgres://USER:PASSWORD@HOST/DBNAME, with `@`, `/`, `?` and `%` in it percent-encoded; $PGPASSWORD and ~/.pgpass are not read)",
                ),
            }
        }
        None if error.to_string().contains("TLS") => Error::Open {
            path,
            source: DatabaseError::new(ErrorKind::Unusable, PgError(error)),
        },
        None => Error::Database(DatabaseError::new(
            ErrorKind::Storage,
            Context {
                what: format!("cannot connect to {}", target.shown),
                source: PgError(error),
            },
        )),
    }
}

/// A PostgreSQL error with what roster was doing.
#[derive(Debug)]
struct Context {
    what: String,
    source: PgError,
}

impl std::fmt::Display for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl std::error::Error for Context {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Makes the schema of `client` a roster registry of the latest version, or
/// refuses it untouched.
///
/// Safe when many processes open the same database at once: the version is
/// read first without a lock (the common case, nothing to do), then again
/// inside the transaction that applies the migrations, after
/// `pg_advisory_xact_lock`, so that each migration is applied once.
pub(crate) fn prepare(
    client: &mut Client,
    target: &Target,
    options: &PostgresOptions,
) -> Result<()> {
    let limits = Limits {
        busy_timeout: options.busy_timeout,
        statement_timeout: options.statement_timeout,
    };
    let fail = |e: postgres::Error| classify(e, limits);
    let path = PathBuf::from(&target.shown);
    let encoding: String = client
        .query_one("SELECT current_setting('server_encoding')", &[])
        .and_then(|row| row.try_get(0))
        .map_err(fail)?;
    if encoding != "UTF8" {
        return Err(Error::Open {
            path,
            source: DatabaseError::new(
                ErrorKind::Unusable,
                format!(
                    "the database's encoding is {encoding}; roster needs a UTF8 database (createdb --encoding=UTF8)"
                ),
            ),
        });
    }
    let schema = match &options.schema {
        Some(schema) => schema.clone(),
        None => {
            let current: Option<String> = client
                .query_one("SELECT current_schema()", &[])
                .and_then(|row| row.try_get(0))
                .map_err(fail)?;
            current.ok_or_else(|| Error::Open {
                path: path.clone(),
                source: DatabaseError::new(
                    ErrorKind::Unusable,
                    "the connection's search_path names no schema that exists; give one with PostgresOptions::schema or options=-csearch_path=NAME",
                ),
            })?
        }
    };
    let found = inspect(client, &schema).map_err(fail)?;
    if check(&found, &schema, target, options)? {
        return Ok(());
    }
    let mut tx = client.transaction().map_err(fail)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&LOCK_KEY, &schema],
    )
    .map_err(fail)?;
    let found = inspect(&mut tx, &schema).map_err(fail)?;
    if check(&found, &schema, target, options)? {
        return Ok(());
    }
    if !found.schema_exists {
        // Checked to need no quoting (options::check_schema).
        tx.batch_execute(&format!("CREATE SCHEMA {schema}"))
            .map_err(fail)?;
    }
    // The migrations create their tables in the schema, and their trigger
    // functions keep this search_path (SET search_path FROM CURRENT), so
    // that they find the schema's tables from any session.
    tx.batch_execute(&format!(
        "SET LOCAL search_path TO {}, pg_temp",
        quote_ident(&schema)
    ))
    .map_err(fail)?;
    let applied = usize::try_from(found.version.unwrap_or(0)).unwrap_or(0);
    for (number, (name, sql)) in MIGRATIONS.iter().enumerate().skip(applied) {
        let version = i32::try_from(number + 1).unwrap_or(i32::MAX);
        tx.batch_execute(sql).map_err(|e| {
            let kind = kind_of(&e);
            Error::Database(DatabaseError::new(
                if kind == ErrorKind::Storage {
                    kind
                } else {
                    ErrorKind::Unusable
                },
                Context {
                    what: format!("migration {version} ({name}) of schema {schema} failed"),
                    source: PgError(e),
                },
            ))
        })?;
        tx.execute(
            "INSERT INTO roster_migrations (version, name) VALUES ($1, $2)",
            &[&version, name],
        )
        .map_err(fail)?;
    }
    tx.commit().map_err(fail)
}

/// Whether the schema is already up to date (`Ok(true)`), needs migrating
/// (`Ok(false)`), or must be left alone (an error).
fn check(found: &Found, schema: &str, target: &Target, options: &PostgresOptions) -> Result<bool> {
    let path = || PathBuf::from(format!("{} (schema {schema})", target.shown));
    match found.version {
        Some(version) if version > LATEST_VERSION => Err(Error::SchemaTooNew {
            path: path(),
            found: version,
            supported: LATEST_VERSION,
        }),
        Some(version) => Ok(version == LATEST_VERSION),
        None if !found.tables.is_empty() => Err(Error::NotARegistry {
            path: path(),
            reason: format!(
                "schema {schema} holds the table{} {} but no roster_migrations",
                if found.tables.len() == 1 { "" } else { "s" },
                found.tables.join(", ")
            ),
        }),
        None if !options.create => Err(Error::NoRegistry { path: path() }),
        None => Ok(false),
    }
}

/// Reads what `schema` holds: whether it exists, roster's tables in it, and
/// the version recorded in its `roster_migrations`.
fn inspect(
    client: &mut impl postgres::GenericClient,
    schema: &str,
) -> Result<Found, postgres::Error> {
    let schema_exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
            &[&schema],
        )?
        .try_get(0)?;
    let tables: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_catalog.pg_class AS c
             JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = ANY ($2)
             ORDER BY c.relname",
            &[&schema, &TABLES],
        )?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    let version = if tables.iter().any(|t| t == "roster_migrations") {
        // Checked to need no quoting (options::check_schema), or read from
        // current_schema(): quoted either way.
        let sql = format!(
            "SELECT coalesce(max(version), 0)::bigint FROM {}.roster_migrations",
            quote_ident(schema)
        );
        match client.query_one(sql.as_str(), &[]) {
            Ok(row) => Some(row.try_get(0)?),
            // Another program's table of that name.
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_COLUMN) => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    Ok(Found {
        schema_exists,
        version,
        tables,
    })
}

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Opens a connection of its own (the one that prepares the schema, a
/// watcher's, ad-hoc SQL's), within the connect timeout: [`open_within`]
/// the [`connect_limit`].
pub(crate) fn connect(target: &Target, options: &PostgresOptions) -> Result<Client> {
    open_within(target, connect_limit(target, options), options.create)
}

/// How long a connection to one server of `target` may take to open: the
/// connect timeout (the URL's `connect_timeout`, else the options').
pub(crate) fn connect_limit(target: &Target, options: &PostgresOptions) -> Duration {
    target
        .config
        .get_connect_timeout()
        .copied()
        .unwrap_or(options.connect_timeout)
}

/// Opens a connection to the first server of `target` that answers
/// ([`Target::servers`], in the driver's order), giving each `limit`
/// ([`open_one`]); every connection roster opens, its own and the pool's
/// (`conn::Manager`), comes from here. When none answers, the error is the
/// last server's, as the driver's would be; `create` says whether a missing
/// database is a missing registry or one to make.
pub(crate) fn open_within(target: &Target, limit: Duration, create: bool) -> Result<Client> {
    let mut failed = None;
    for server in target.servers() {
        match open_one(&server, limit, create) {
            Ok(client) => return Ok(client),
            Err(e) => failed = Some(e),
        }
    }
    Err(failed
        .unwrap_or_else(|| Error::invalid("url", "it names no host (postgres://user@host/dbname)")))
}

/// Opens a connection to `target` (one server) within `limit`.
///
/// The driver's `connect_timeout` bounds only the TCP connection: a server
/// that accepts it and then never answers (a stopped process, a proxy with
/// nothing behind it) would hold the caller forever. So the connection is
/// made on a thread of its own, and the caller waits for it up to the
/// connect timeout; past that it gets a storage error, and the thread ends
/// whenever the socket does. At most
/// [`CONNECTS_IN_FLIGHT`] such attempts per server count at once in a
/// process (a [`ConnectSlot`] each), an unanswered one for
/// [`SLOT_LIFETIMES`] times its limit, and at most [`CONNECTS_RUNNING`] run:
/// a caller that retries against a silent server (a watcher does, for as
/// long as it runs, and so does a pool) holds at most that many threads and
/// sockets, and a server that answers again is reached while old attempts
/// still hang.
fn open_one(target: &Target, limit: Duration, create: bool) -> Result<Client> {
    let no_answer = |waiting: &str| {
        Error::Database(DatabaseError::new(
            ErrorKind::Storage,
            format!(
                "cannot connect to {}: no answer from the server within {limit:?} (the connect timeout; connect_timeout=SECONDS in the URL sets it){waiting}",
                target.shown
            ),
        ))
    };
    let deadline = Instant::now().checked_add(limit);
    let Some(slot) = ConnectSlot::take(target, limit, deadline) else {
        return Err(no_answer(&format!(
            "; {CONNECTS_IN_FLIGHT} earlier connections of this process to it are still waiting for an answer"
        )));
    };
    let (sender, receiver) = std::sync::mpsc::channel();
    let (config, tls) = (target.config.clone(), target.tls.clone());
    let no_thread = |e: std::io::Error| {
        Error::Database(DatabaseError::new(
            ErrorKind::Storage,
            format!(
                "cannot connect to {}: no thread to connect on: {e}",
                target.shown
            ),
        ))
    };
    std::thread::Builder::new()
        .name("roster-pg-connect".to_owned())
        .spawn(move || {
            let connected = config.connect(tls);
            // The slot is free once the attempt has ended, whether or not
            // its caller still waits.
            drop(slot);
            let _ = sender.send(connected);
        })
        .map_err(no_thread)?;
    let left = deadline.map_or(limit, |deadline| {
        deadline.saturating_duration_since(Instant::now())
    });
    match receiver.recv_timeout(left) {
        Ok(connected) => connected.map_err(|e| connect_error(target, create, e)),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(no_answer("")),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err(Error::Database(DatabaseError::new(
                ErrorKind::Storage,
                format!(
                    "cannot connect to {}: the thread connecting ended without an answer",
                    target.shown
                ),
            )))
        }
    }
}

/// How many attempts to open a connection ([`open_within`]) to one server
/// count at once in a process: a new one waits for one of them to end or
/// to lapse.
const CONNECTS_IN_FLIGHT: usize = 2;

/// How many attempts to one server may run at once in a process, lapsed
/// ones included: the most threads and sockets a server that never answers
/// can hold.
const CONNECTS_RUNNING: usize = 8;

/// How many times its connect timeout (and at least [`MIN_SLOT_LIFETIME`])
/// an attempt may go unanswered before it lapses, no longer counted among
/// the [`CONNECTS_IN_FLIGHT`]. Its thread goes on waiting (nothing can end
/// it but its socket), but a server that answers again, while a peer keeps
/// the old sockets open without a word, is reached again after this time,
/// until [`CONNECTS_RUNNING`] attempts hang.
const SLOT_LIFETIMES: u32 = 6;
const MIN_SLOT_LIFETIME: Duration = Duration::from_secs(1);

/// The right to open one connection to a server: taken before the
/// connecting thread starts, given back when its attempt ends; it lapses
/// once the attempt has gone unanswered for [`SLOT_LIFETIMES`] times its
/// limit.
struct ConnectSlot {
    server: String,
    id: u64,
}

/// The attempts under way to one server: their ids, and until when each
/// counts among those in flight (`None`: for as long as it lasts).
type Attempts = Vec<(u64, Option<Instant>)>;

impl ConnectSlot {
    /// The attempts under way, per server, and the condition their ends
    /// are signalled on.
    fn table() -> &'static (Mutex<HashMap<String, Attempts>>, Condvar) {
        static TABLE: OnceLock<(Mutex<HashMap<String, Attempts>>, Condvar)> = OnceLock::new();
        TABLE.get_or_init(Default::default)
    }

    fn lock() -> MutexGuard<'static, HashMap<String, Attempts>> {
        // The table holds ids and times only, and no code that can panic
        // runs under its lock.
        Self::table()
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The server `target` names, as the slots count it: its hosts, the
    /// addresses given for them and its ports, 5432 when none is given (not
    /// the user, the database or the password: one server, however it is
    /// logged in to).
    fn server(target: &Target) -> String {
        let config = &target.config;
        let ports = match config.get_ports() {
            [] => &[5432][..],
            ports => ports,
        };
        format!(
            "{:?} {:?} {ports:?}",
            config.get_hosts(),
            config.get_hostaddrs()
        )
    }

    /// Takes a slot for `target`'s server for an attempt that may take
    /// `limit`, waiting for one to be given back until `deadline` (none:
    /// as long as it takes); `None` if none was.
    fn take(target: &Target, limit: Duration, deadline: Option<Instant>) -> Option<Self> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let server = Self::server(target);
        let lifetime = limit.saturating_mul(SLOT_LIFETIMES).max(MIN_SLOT_LIFETIME);
        let mut opening = Self::lock();
        loop {
            let now = Instant::now();
            if deadline.is_some_and(|deadline| deadline <= now) {
                return None;
            }
            let attempts = opening.entry(server.clone()).or_default();
            let counts = |until: &Option<Instant>| until.is_none_or(|until| until > now);
            let in_flight = attempts.iter().filter(|(_, until)| counts(until)).count();
            if in_flight < CONNECTS_IN_FLIGHT && attempts.len() < CONNECTS_RUNNING {
                let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                attempts.push((id, now.checked_add(lifetime)));
                return Some(Self { server, id });
            }
            // Wake when an attempt ends, or when the first one lapses if
            // that is what holds this one back.
            let first_lapse = if attempts.len() < CONNECTS_RUNNING {
                attempts
                    .iter()
                    .filter_map(|(_, until)| until.filter(|until| *until > now))
                    .min()
            } else {
                None
            };
            let wake = match (deadline, first_lapse) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            opening = match wake {
                None => Self::table()
                    .1
                    .wait(opening)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(wake) => {
                    Self::table()
                        .1
                        .wait_timeout(opening, wake.saturating_duration_since(now))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

impl Drop for ConnectSlot {
    fn drop(&mut self) {
        let mut opening = Self::lock();
        if let Some(attempts) = opening.get_mut(&self.server) {
            attempts.retain(|(id, _)| *id != self.id);
            if attempts.is_empty() {
                opening.remove(&self.server);
            }
        }
        drop(opening);
        Self::table().1.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connection slots are counted per server: by host, address and port,
    /// whoever logs in to it.
    #[test]
    fn slots_are_counted_per_server() -> Result<()> {
        let server = |url: &str| -> Result<String> {
            Ok(ConnectSlot::server(&Target::parse(
                url,
                &PostgresOptions::new(),
            )?))
        };
        let by_address = server("hostaddr=127.0.0.1 port=5433 user=a dbname=x")?;
        assert_ne!(
            by_address,
            server("hostaddr=127.0.0.1 port=5434 user=a dbname=x")?
        );
        assert_ne!(
            by_address,
            server("hostaddr=127.0.0.2 port=5433 user=a dbname=x")?
        );
        assert_eq!(
            by_address,
            server("hostaddr=127.0.0.1 port=5433 user=b dbname=y")?
        );
        assert_eq!(
            server("postgres://a@db1/x")?,
            server("postgres://a@db1:5432/x")?,
            "the default port"
        );
        assert_ne!(
            server("postgres://a@db1:5432/x")?,
            server("postgres://a@db2:5432/x")?
        );
        assert_eq!(
            server("postgres://a:one@db1:5432/x")?,
            server("postgres://b:two@db1:5432/y")?
        );
        Ok(())
    }

    /// Two attempts count at once; an unanswered one lapses after its
    /// lifetime (here the shortest, 1 s) and lets another start; eight may
    /// run in all, and one that ends makes room at once.
    #[test]
    fn slots_count_two_in_flight_and_eight_running() -> Result<()> {
        let target = Target::parse(
            "postgres://a@slot-test.invalid:1/x",
            &PostgresOptions::new(),
        )?;
        let limit = Duration::from_millis(10);
        let soon = || Some(Instant::now() + Duration::from_millis(50));
        let later = || Some(Instant::now() + Duration::from_secs(3));
        let mut running = vec![
            ConnectSlot::take(&target, limit, soon()).expect("a first slot"),
            ConnectSlot::take(&target, limit, soon()).expect("a second slot"),
        ];
        assert!(
            ConnectSlot::take(&target, limit, soon()).is_none(),
            "two in flight"
        );
        while running.len() < CONNECTS_RUNNING {
            running.push(ConnectSlot::take(&target, limit, later()).expect("a lapse makes room"));
        }
        let started = Instant::now();
        assert!(
            ConnectSlot::take(
                &target,
                limit,
                Some(Instant::now() + Duration::from_millis(1500))
            )
            .is_none(),
            "eight running, lapsed or not"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(1500),
            "gave up early"
        );
        drop(running.pop());
        let freed = ConnectSlot::take(&target, limit, soon());
        assert!(freed.is_some(), "an attempt that ended makes room");
        Ok(())
    }

    /// The prune lock's key in `events_write` is the one the code names.
    #[test]
    fn the_prune_lock_key_is_spelled_in_the_migration() {
        let (_, sql) = MIGRATIONS
            .iter()
            .find(|(name, _)| *name == "0006_one_pruner")
            .expect("migration 0006");
        assert!(sql.contains(&format!(
            "pg_try_advisory_xact_lock({PRUNE_LOCK_KEY}, hashtext(current_schema()))"
        )));
    }

    /// A connection's time is the connect timeout for each server it
    /// tries: the URL's when it gives one, else the options'.
    #[test]
    fn the_connect_limit_is_the_connect_timeout() -> Result<()> {
        let limit = |url: &str| -> Result<Duration> {
            let options = PostgresOptions::new().connect_timeout(Duration::from_secs(2));
            Ok(connect_limit(&Target::parse(url, &options)?, &options))
        };
        assert_eq!(limit("postgres://a@db1/x")?, Duration::from_secs(2));
        assert_eq!(
            limit("host=db1,db2 user=a dbname=x")?,
            Duration::from_secs(2)
        );
        assert_eq!(
            limit("host=db1 hostaddr=127.0.0.1 connect_timeout=1 user=a dbname=x")?,
            Duration::from_secs(1)
        );
        Ok(())
    }

    /// A URL naming several servers is tried one server at a time, each
    /// with everything else the URL says; lists that do not line up are
    /// left whole, for the driver to refuse.
    #[test]
    fn each_server_of_a_url_keeps_the_rest_of_it() -> Result<()> {
        let servers = |url: &str| -> Result<Vec<Target>> {
            Ok(Target::parse(url, &PostgresOptions::new())?.servers())
        };
        let rest = "user=u password=secret dbname=d options=-cwork_mem=64MB application_name=app \
                    sslmode=require sslnegotiation=direct connect_timeout=3 tcp_user_timeout=4 \
                    keepalives=0 keepalives_idle=5 keepalives_interval=6 keepalives_retries=7 \
                    target_session_attrs=read-write channel_binding=disable";
        let several = servers(&format!(
            "host=db1,/run/pg,db3 hostaddr=10.0.0.1,10.0.0.2,10.0.0.3 port=1,2,3 {rest}"
        ))?;
        let alone = [
            "host=db1 hostaddr=10.0.0.1 port=1",
            "host=/run/pg hostaddr=10.0.0.2 port=2",
            "host=db3 hostaddr=10.0.0.3 port=3",
        ];
        assert_eq!(several.len(), alone.len());
        for (server, one) in several.iter().zip(alone) {
            let expected = Target::parse(&format!("{one} {rest}"), &PostgresOptions::new())?;
            assert_eq!(
                format!("{:?}", server.config),
                format!("{:?}", expected.config)
            );
            assert_eq!(server.config.get_password(), Some(&b"secret"[..]));
            assert_eq!(
                server.config.get_ssl_negotiation(),
                expected.config.get_ssl_negotiation()
            );
            assert_eq!(server.shown, expected.shown);
        }
        // One port for all of them, and servers named by address alone.
        let shown = |targets: Vec<Target>| -> Vec<String> {
            targets.into_iter().map(|t| t.shown).collect()
        };
        assert_eq!(
            shown(servers("host=db1,db2 port=6000 user=u dbname=d")?),
            ["postgres://u@db1:6000/d", "postgres://u@db2:6000/d"]
        );
        assert_eq!(
            shown(servers("hostaddr=127.0.0.1,127.0.0.2 user=u dbname=d")?),
            ["postgres://u@127.0.0.1/d", "postgres://u@127.0.0.2/d"]
        );
        // One server, or lists that do not line up: the URL as it is.
        for url in [
            "postgres://u@db1:6000/d",
            "host=db1,db2 port=1,2,3 user=u dbname=d",
            "host=db1,db2 hostaddr=10.0.0.1 user=u dbname=d",
        ] {
            let whole = Target::parse(url, &PostgresOptions::new())?;
            let got = whole.servers();
            assert_eq!(got.len(), 1, "{url}");
            assert_eq!(
                format!("{:?}", got[0].config),
                format!("{:?}", whole.config)
            );
        }
        Ok(())
    }
}
