//! [`open`]: a registry chosen at run time from one string, as a command
//! line's `--db` gives it: a PostgreSQL URL or an SQLite file.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::agent::{AgentInfo, AgentStatus};
use crate::claim::{Claim, Claimed, Recovered};
use crate::error::Result;
use crate::registry::AgentRegistry;
use crate::sqlite::{SqlOptions, SqlSummary, SqlValue, SqliteOptions, SqliteRegistry};
use crate::task::Task;

/// A registry opened by [`open`]: whichever backend the string named.
///
/// It is an [`AgentRegistry`] that passes every call to the backend, and
/// has the few things both backends do their own way: where it is
/// ([`location`](Self::location)), its clock ([`now`](Self::now)) and
/// ad-hoc SQL ([`query_each`](Self::query_each)). Match on it for what only
/// one backend has.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Registry {
    /// An SQLite file.
    Sqlite(SqliteRegistry),
    /// A PostgreSQL database (cargo feature `postgres`).
    #[cfg(feature = "postgres")]
    Postgres(crate::postgres::PostgresRegistry),
}

/// Whether `db` is a PostgreSQL URL rather than a file path: it starts
/// with `postgres://` or `postgresql://` (whatever bytes follow).
fn is_postgres_url(db: &OsStr) -> bool {
    let bytes = db.as_encoded_bytes();
    bytes.starts_with(b"postgres://") || bytes.starts_with(b"postgresql://")
}

/// How [`open`] opens either backend: the settings both have.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    create: Option<bool>,
    busy_timeout: Option<Duration>,
    pool_size: Option<u32>,
}

impl RegistryOptions {
    /// Each backend's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a registry is created where there is none (the default):
    /// [`SqliteOptions::create`], [`PostgresOptions::create`](crate::PostgresOptions::create).
    pub fn create(mut self, create: bool) -> Self {
        self.create = Some(create);
        self
    }

    /// How long a call waits for other connections before
    /// [`Error::Busy`](crate::Error::Busy): [`SqliteOptions::busy_timeout`],
    /// [`PostgresOptions::busy_timeout`](crate::PostgresOptions::busy_timeout).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = Some(timeout);
        self
    }

    /// How many connections the handle keeps at most.
    pub fn pool_size(mut self, connections: u32) -> Self {
        self.pool_size = Some(connections);
        self
    }

    /// Opens the registry `db` names: a PostgreSQL database for a URL
    /// starting with `postgres://` or `postgresql://`, an SQLite file for
    /// anything else.
    ///
    /// # Errors
    ///
    /// As [`SqliteOptions::open`] or
    /// [`PostgresOptions::open`](crate::PostgresOptions::open), and
    /// [`Error::Invalid`](crate::Error::Invalid) naming `db` for a PostgreSQL URL when roster was
    /// built without the `postgres` feature.
    pub fn open(self, db: impl AsRef<OsStr>) -> Result<Registry> {
        let db = db.as_ref();
        if is_postgres_url(db) {
            // Never a file: a URL that is not UTF-8 is a bad URL, not a
            // path to create (nor one to show, password and all).
            let url = db.to_str().ok_or_else(|| {
                crate::error::Error::invalid(
                    "db",
                    "a PostgreSQL URL that is not UTF-8: write other bytes percent-encoded (%FF)",
                )
            })?;
            return self.open_postgres(url);
        }
        let mut options = SqliteOptions::new();
        if let Some(create) = self.create {
            options = options.create(create);
        }
        if let Some(timeout) = self.busy_timeout {
            options = options.busy_timeout(timeout);
        }
        if let Some(connections) = self.pool_size {
            options = options.pool_size(connections);
        }
        options.open(Path::new(db)).map(Registry::Sqlite)
    }

    #[cfg(feature = "postgres")]
    fn open_postgres(self, url: &str) -> Result<Registry> {
        let mut options = crate::postgres::PostgresOptions::new();
        if let Some(create) = self.create {
            options = options.create(create);
        }
        if let Some(timeout) = self.busy_timeout {
            options = options.busy_timeout(timeout);
        }
        if let Some(connections) = self.pool_size {
            options = options.pool_size(connections);
        }
        options.open(url).map(Registry::Postgres)
    }

    #[cfg(not(feature = "postgres"))]
    fn open_postgres(self, _url: &str) -> Result<Registry> {
        Err(crate::error::Error::invalid(
            "db",
            "a PostgreSQL URL, and this build of roster has no PostgreSQL support (cargo feature postgres)",
        ))
    }
}

/// Opens the registry `db` names, with each backend's defaults: a
/// PostgreSQL database for a URL starting with `postgres://` or
/// `postgresql://`, an SQLite file for anything else.
///
/// ```
/// use roster::{AgentRegistry, Registry};
///
/// # fn main() -> roster::Result<()> {
/// # let dir = tempfile::tempdir().expect("temporary directory");
/// # let path = dir.path().join("agents.db");
/// let registry = roster::open(&path)?; // or "postgres://roster@db.example/roster"
/// assert!(matches!(registry, Registry::Sqlite(_)));
/// assert!(registry.list()?.is_empty());
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// As [`RegistryOptions::open`].
pub fn open(db: impl AsRef<OsStr>) -> Result<Registry> {
    RegistryOptions::new().open(db)
}

impl Registry {
    fn inner(&self) -> &dyn AgentRegistry {
        match self {
            Self::Sqlite(registry) => registry,
            #[cfg(feature = "postgres")]
            Self::Postgres(registry) => registry,
        }
    }

    /// The SQLite registry, if that is what was opened.
    pub fn as_sqlite(&self) -> Option<&SqliteRegistry> {
        match self {
            Self::Sqlite(registry) => Some(registry),
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => None,
        }
    }

    /// Where the registry is, as it may be shown to people: the file's
    /// path, or the database's URL without its password
    /// ([`PostgresRegistry::url`](crate::PostgresRegistry::url)).
    pub fn location(&self) -> String {
        match self {
            Self::Sqlite(registry) => registry.path().display().to_string(),
            #[cfg(feature = "postgres")]
            Self::Postgres(registry) => registry.url().to_owned(),
        }
    }

    /// Now, by the clock that `heartbeat` and `reap` use: this host's for
    /// a file, the server's for PostgreSQL
    /// ([`PostgresRegistry::server_now`](crate::PostgresRegistry::server_now)),
    /// so that a caller that stamps an agent itself agrees with them.
    ///
    /// # Errors
    ///
    /// On PostgreSQL, as any call: the server cannot be reached, or refuses.
    pub fn now(&self) -> Result<DateTime<Utc>> {
        match self {
            Self::Sqlite(_) => Ok(crate::registry::now()),
            #[cfg(feature = "postgres")]
            Self::Postgres(registry) => registry.server_now(),
        }
    }

    /// Runs one statement typed by a person and hands over its rows as
    /// they come: [`SqliteRegistry::query_each`], or
    /// [`PostgresRegistry::query_each`](crate::PostgresRegistry::query_each).
    ///
    /// ```
    /// use roster::{SqlAccess, SqlOptions, SqlValue};
    ///
    /// # fn main() -> roster::Result<()> {
    /// # let dir = tempfile::tempdir().expect("temporary directory");
    /// # let path = dir.path().join("agents.db");
    /// let registry = roster::open(&path)?;
    /// assert_eq!(registry.location(), path.display().to_string());
    /// let mut rows = Vec::new();
    /// let read = SqlOptions::new(SqlAccess::ReadOnly);
    /// registry.query_each("SELECT count(*) FROM agents", &read, |_, row| {
    ///     rows.push(row.to_vec());
    ///     Ok(())
    /// })?;
    /// assert_eq!(rows, [[SqlValue::Integer(0)]]);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As the backend's `query_each`.
    pub fn query_each(
        &self,
        sql: &str,
        options: &SqlOptions,
        on_row: impl FnMut(&[String], &[SqlValue]) -> Result<()>,
    ) -> Result<SqlSummary> {
        match self {
            Self::Sqlite(registry) => registry.query_each(sql, options, on_row),
            #[cfg(feature = "postgres")]
            Self::Postgres(registry) => registry.query_each(sql, options, on_row),
        }
    }
}

/// Every call goes to the backend.
impl AgentRegistry for Registry {
    fn register(&self, agent: AgentInfo) -> Result<()> {
        self.inner().register(agent)
    }

    fn deregister(&self, id: &str) -> Result<()> {
        self.inner().deregister(id)
    }

    fn get(&self, id: &str) -> Result<AgentInfo> {
        self.inner().get(id)
    }

    fn list(&self) -> Result<Vec<AgentInfo>> {
        self.inner().list()
    }

    fn heartbeat(&self, id: &str) -> Result<()> {
        self.inner().heartbeat(id)
    }

    fn set_status(&self, id: &str, status: AgentStatus) -> Result<()> {
        self.inner().set_status(id, status)
    }

    fn drain(&self, id: &str, drained: bool) -> Result<()> {
        self.inner().drain(id, drained)
    }

    fn reap(&self, ttl: Duration) -> Result<Vec<String>> {
        self.inner().reap(ttl)
    }

    fn claim(&self, task: &Task, lease: Option<Duration>) -> Result<Claimed> {
        self.inner().claim(task, lease)
    }

    fn release(&self, task_id: &str, token: Option<u64>) -> Result<Claim> {
        self.inner().release(task_id, token)
    }

    fn renew(&self, task_id: &str, token: Option<u64>, lease: Duration) -> Result<Claim> {
        self.inner().renew(task_id, token, lease)
    }

    fn claims(&self, agent_id: Option<&str>) -> Result<Vec<Claim>> {
        self.inner().claims(agent_id)
    }

    fn recover(&self) -> Result<Vec<Recovered>> {
        self.inner().recover()
    }

    fn events(&self, after: u64, limit: usize) -> Result<Vec<crate::Event>> {
        self.inner().events(after, limit)
    }

    fn last_event(&self) -> Result<u64> {
        self.inner().last_event()
    }

    fn watch(&self, after: u64, limit: usize, timeout: Duration) -> Result<Vec<crate::Event>> {
        self.inner().watch(after, limit, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn urls_go_to_postgres_and_everything_else_to_a_file() {
        for url in [
            "postgres://h/db",
            "postgresql://u@h:5432/db?sslmode=require",
        ] {
            assert!(is_postgres_url(OsStr::new(url)), "{url}");
        }
        for path in [
            "roster.db",
            "./postgres://x",
            "/var/lib/roster.db",
            "postgres.db",
        ] {
            assert!(!is_postgres_url(OsStr::new(path)), "{path}");
        }
    }

    #[test]
    fn a_url_that_is_not_utf8_is_refused_not_taken_for_a_file() {
        use std::os::unix::ffi::OsStrExt;
        let url = OsStr::from_bytes(b"postgres://u:secret@h/db\xff");
        assert!(is_postgres_url(url));
        match open(url) {
            Err(Error::Invalid {
                field: "db",
                reason,
            }) => {
                assert!(!reason.contains("secret"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_settings_are_refused_for_either_backend() {
        let options = RegistryOptions::new().pool_size(0);
        match options.clone().open("postgres://127.0.0.1:1/none") {
            Err(Error::Invalid {
                field: "pool_size", ..
            }) => {}
            other => panic!("{other:?}"),
        }
        let dir = tempfile::tempdir().expect("tempdir");
        match options.open(dir.path().join("r.db")) {
            Err(Error::Invalid {
                field: "pool_size", ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }
}
