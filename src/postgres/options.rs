//! [`PostgresOptions`]: how a registry in a PostgreSQL database is opened.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::postgres::PostgresRegistry;
use crate::route::TaskRouter;

/// The most connections one handle may keep ([`PostgresOptions::pool_size`]).
/// A PostgreSQL server allows 100 connections in all by default.
pub const MAX_PG_POOL_SIZE: u32 = 1024;

/// The longest busy timeout or statement timeout PostgreSQL takes:
/// `i32::MAX` milliseconds, about 24.8 days.
pub const MAX_PG_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// The longest schema name [`PostgresOptions::schema`] takes: PostgreSQL's
/// identifiers hold 63 bytes.
const MAX_SCHEMA_CHARS: usize = 63;

/// How to open a [`PostgresRegistry`]: pool size, busy and statement
/// timeouts, the schema it lives in, whether a registry is created where
/// there is none, the router of `claim`.
///
/// The counterpart of [`SqliteOptions`](crate::SqliteOptions), with the same
/// defaults where both have a setting.
///
/// ```no_run
/// use std::time::Duration;
/// use roster::PostgresOptions;
///
/// let registry = PostgresOptions::new()
///     .pool_size(8)
///     .busy_timeout(Duration::from_secs(10))
///     .schema("roster")
///     .open("postgres://roster@db.example/roster?sslmode=require")?;
/// # Ok::<(), roster::Error>(())
/// ```
#[derive(Clone)]
pub struct PostgresOptions {
    pub(crate) pool_size: u32,
    pub(crate) busy_timeout: Duration,
    pub(crate) statement_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) schema: Option<String>,
    pub(crate) create: bool,
    /// `None`: [`DefaultRouter`](crate::DefaultRouter), evaluated in SQL.
    pub(crate) router: Option<Arc<dyn TaskRouter>>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            pool_size: 4,
            busy_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            schema: None,
            create: true,
            router: None,
        }
    }
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("pool_size", &self.pool_size)
            .field("busy_timeout", &self.busy_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("schema", &self.schema)
            .field("create", &self.create)
            .field("custom_router", &self.router.is_some())
            .finish()
    }
}

impl PostgresOptions {
    /// The defaults: a pool of 4 connections, a busy timeout of 5 s, a
    /// statement timeout of 30 s, a connect timeout of 10 s, the schema the
    /// URL's `search_path` gives (`public` unless the server or the role says
    /// otherwise), created when missing.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many connections this handle (and its clones) keeps open at most:
    /// 1 to [`MAX_PG_POOL_SIZE`]; [`open`](Self::open) refuses anything else.
    pub fn pool_size(mut self, connections: u32) -> Self {
        self.pool_size = connections;
        self
    }

    /// How long a call waits for rows that other transactions hold (the
    /// server's `lock_timeout`), and how long it retries a transaction that
    /// lost a deadlock or a serialization conflict, before it fails with
    /// [`Error::Busy`](crate::Error::Busy); also how long a call waits for a
    /// free connection of the pool. At most [`MAX_PG_TIMEOUT`]; zero is
    /// refused, since PostgreSQL reads a zero `lock_timeout` as "wait
    /// forever".
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How long one statement may run on the server (`statement_timeout`)
    /// before it is cancelled and the call fails with
    /// [`Error::Interrupted`](crate::Error::Interrupted); nothing is changed
    /// then. At most [`MAX_PG_TIMEOUT`]; zero is refused.
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// How long opening a connection may take, unless the URL sets its own
    /// `connect_timeout`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The schema the registry lives in, so that one database can hold
    /// several registries (or a registry beside another program's tables):
    /// every connection puts it first in its `search_path`, and
    /// [`open`](Self::open) creates it when [`create`](Self::create) allows.
    /// A lowercase letter or `_`, then up to 62 lowercase letters, digits or
    /// `_`, so that it needs no quoting in hand-typed SQL.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Whether [`open`](Self::open) creates the registry's tables (and its
    /// [schema](Self::schema)) when there are none (the default). A program
    /// that only reads passes `false`, so that a mistyped URL or schema is
    /// [`Error::NoRegistry`](crate::Error::NoRegistry) instead of a new,
    /// empty registry. The database itself is never created.
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// The routing policy of [`claim`](crate::AgentRegistry::claim).
    ///
    /// Without this, claim applies [`DefaultRouter`](crate::DefaultRouter)
    /// inside the database. With a router of your own, claim reads every
    /// eligible agent in one transaction, asks the router, and takes the slot
    /// on its choice in the same transaction: correct under many processes,
    /// but it reads as many agents as are eligible and waits for rows other
    /// claims hold.
    pub fn router(mut self, router: impl TaskRouter + 'static) -> Self {
        self.router = Some(Arc::new(router));
        self
    }

    /// Opens the registry in the database `url` names, creating its tables
    /// if there are none and bringing its schema up to date.
    ///
    /// `url` is a libpq connection string, as a URL
    /// (`postgres://user:password@host:port/dbname?sslmode=require`) or as
    /// `key=value` pairs (`host=db.example user=roster dbname=roster`).
    /// `sslmode` is `disable`, `prefer` (the default: TLS when the server
    /// offers it), `require` (TLS or no connection; the server's
    /// certificate is not checked, as with libpq), or `verify-ca` /
    /// `verify-full` (TLS with the certificate checked against the system's
    /// roots, or against the file `sslrootcert` names; `verify-full` checks
    /// the host name too).
    ///
    /// # Errors
    ///
    /// - [`Error::Invalid`](crate::Error::Invalid) for a URL that cannot be
    ///   parsed (`url`), a pool size, a timeout or a schema name out of range;
    /// - [`Error::Database`](crate::Error::Database) of kind
    ///   [`Storage`](crate::ErrorKind::Storage) when the server cannot be
    ///   reached (it may be starting: retry);
    /// - [`Error::Open`](crate::Error::Open) when the server refuses the
    ///   connection (authentication, a database that does not exist, TLS
    ///   the server does not offer) or the database is not UTF-8;
    /// - [`Error::NoRegistry`](crate::Error::NoRegistry) when there is no
    ///   registry and [`create`](Self::create) is `false`;
    /// - [`Error::NotARegistry`](crate::Error::NotARegistry) when the schema
    ///   holds tables named as roster's but no roster version table, and
    ///   [`Error::SchemaTooNew`](crate::Error::SchemaTooNew) for a registry
    ///   written by a newer roster: both leave the database untouched.
    pub fn open(self, url: &str) -> Result<PostgresRegistry> {
        self.check()?;
        PostgresRegistry::open_with(url, self)
    }

    fn check(&self) -> Result<()> {
        if !(1..=MAX_PG_POOL_SIZE).contains(&self.pool_size) {
            return Err(Error::invalid(
                "pool_size",
                format!(
                    "{} connections: must be 1 to {MAX_PG_POOL_SIZE}",
                    self.pool_size
                ),
            ));
        }
        for (field, timeout) in [
            ("busy_timeout", self.busy_timeout),
            ("statement_timeout", self.statement_timeout),
        ] {
            if timeout.as_millis() == 0 || timeout > MAX_PG_TIMEOUT {
                return Err(Error::invalid(
                    field,
                    format!(
                        "{timeout:?}: must be 1 ms to {MAX_PG_TIMEOUT:?} (PostgreSQL reads 0 as no limit)"
                    ),
                ));
            }
        }
        if let Some(schema) = &self.schema {
            check_schema(schema)?;
        }
        Ok(())
    }
}

/// A schema name roster accepts: `[a-z_][a-z0-9_]{0,62}`, not `pg_...`.
pub(crate) fn check_schema(schema: &str) -> Result<()> {
    let mut chars = schema.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && schema.len() <= MAX_SCHEMA_CHARS;
    if !valid {
        return Err(Error::invalid(
            "schema",
            format!(
                "{schema:?}: a schema name is a lowercase letter or _, then up to 62 lowercase letters, digits or _"
            ),
        ));
    }
    if schema.starts_with("pg_") {
        return Err(Error::invalid(
            "schema",
            format!("{schema:?}: names starting with pg_ are PostgreSQL's own"),
        ));
    }
    Ok(())
}
