//! [`SqliteOptions`] and [`Durability`]: how a registry file is opened.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::route::TaskRouter;
use crate::sqlite::SqliteRegistry;

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
    pub(crate) fn pragma_value(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }
}

/// The most connections one handle may keep ([`SqliteOptions::pool_size`]).
pub const MAX_POOL_SIZE: u32 = 1024;

/// The longest busy timeout SQLite can take: `i32::MAX` milliseconds, about
/// 24.8 days ([`SqliteOptions::busy_timeout`]).
pub const MAX_BUSY_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// How to open a [`SqliteRegistry`]: pool size, busy timeout, durability,
/// whether a missing file is created, the router of `claim`.
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
#[derive(Clone)]
pub struct SqliteOptions {
    pub(crate) pool_size: u32,
    pub(crate) busy_timeout: Duration,
    pub(crate) durability: Durability,
    pub(crate) create: bool,
    /// `None`: [`DefaultRouter`](crate::DefaultRouter), evaluated in SQL.
    pub(crate) router: Option<Arc<dyn TaskRouter>>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            pool_size: 4,
            busy_timeout: Duration::from_secs(5),
            durability: Durability::Normal,
            create: true,
            router: None,
        }
    }
}

impl fmt::Debug for SqliteOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteOptions")
            .field("pool_size", &self.pool_size)
            .field("busy_timeout", &self.busy_timeout)
            .field("durability", &self.durability)
            .field("create", &self.create)
            .field("custom_router", &self.router.is_some())
            .finish()
    }
}

impl SqliteOptions {
    /// The defaults: a pool of 4 connections, a busy timeout of 5 s,
    /// [`Durability::Normal`].
    pub fn new() -> Self {
        Self::default()
    }

    /// How many connections this handle (and its clones) keeps open at most:
    /// 1 to [`MAX_POOL_SIZE`]; [`open`](Self::open) refuses anything else.
    pub fn pool_size(mut self, connections: u32) -> Self {
        self.pool_size = connections;
        self
    }

    /// How long a call waits for other connections and processes to release
    /// the database before it fails with [`Error::Busy`](crate::Error::Busy):
    /// at most [`MAX_BUSY_TIMEOUT`]; [`open`](Self::open) refuses more.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How much a commit survives; see [`Durability`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Whether [`open`](Self::open) creates the file when it does not exist
    /// (the default). A program that only reads passes `false`, so that a
    /// mistyped path is [`Error::NoRegistry`](crate::Error::NoRegistry)
    /// instead of a new, empty registry.
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// The routing policy of [`claim`](crate::AgentRegistry::claim).
    ///
    /// Without this, claim applies [`DefaultRouter`](crate::DefaultRouter)
    /// inside the database through the claim indexes, reading one agent.
    /// With a router of your own, claim reads every eligible agent (online,
    /// with a free slot, holding every label), asks the router, and takes the
    /// slot on its choice, all in one write transaction: correct under many
    /// processes, but it reads as many agents as are eligible.
    pub fn router(mut self, router: impl TaskRouter + 'static) -> Self {
        self.router = Some(Arc::new(router));
        self
    }

    /// Opens the registry at `path`, creating the file if it does not exist
    /// and bringing its schema up to date.
    ///
    /// # Errors
    ///
    /// - [`Error::Invalid`](crate::Error::Invalid) for a pool size or a busy
    ///   timeout out of range, and for an SQLite `file:` URI: roster takes a
    ///   plain path and chooses its own open flags;
    /// - [`Error::NoRegistry`](crate::Error::NoRegistry) when the file does
    ///   not exist and [`create`](Self::create) is `false`;
    /// - [`Error::Open`](crate::Error::Open) when the file cannot be opened
    ///   or created, for example because its directory does not exist, or
    ///   cannot hold a write-ahead log (`:memory:`, an empty path);
    /// - [`Error::NotADatabase`](crate::Error::NotADatabase) for a file that
    ///   is not an SQLite database,
    ///   [`Error::NotARegistry`](crate::Error::NotARegistry) for another
    ///   program's database, [`Error::SchemaTooNew`](crate::Error::SchemaTooNew)
    ///   for a database written by a newer roster and
    ///   [`Error::UpgradeRefused`](crate::Error::UpgradeRefused) for one
    ///   holding rows the new schema refuses: all four leave the file
    ///   untouched.
    pub fn open(self, path: impl AsRef<Path>) -> Result<SqliteRegistry> {
        SqliteRegistry::open_with(path.as_ref(), self)
    }
}
