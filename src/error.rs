//! The error type shared by every registry implementation.

use std::fmt;
use std::path::PathBuf;

/// The result type of every fallible roster operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in roster.
///
/// Domain errors come first: they are the caller's mistakes or the registry's
/// answers, and every implementation returns the same ones for the same
/// mistakes. Errors of the storage underneath come last.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An agent was registered with an empty id.
    #[error("agent ID is required")]
    MissingId,
    /// No agent with this id is registered.
    #[error("agent not found: {0}")]
    NotFound(String),
    /// A field of an agent or a task breaks one of the rules documented on
    /// [`AgentInfo`](crate::AgentInfo); nothing was changed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field at fault, as it is named in the JSON and the schema.
        field: &'static str,
        /// What rule it broke.
        reason: String,
    },
    /// No registered agent can take the task: none is online, has a free
    /// slot and holds every label the task asks for.
    #[error("no eligible agent for task")]
    NoEligibleAgent,
    /// `release` was called for an agent whose current load is already 0.
    #[error("agent {0} holds no load to release")]
    NothingToRelease(String),
    /// Read-only ad-hoc SQL ([`SqlAccess::ReadOnly`](crate::SqlAccess))
    /// was given a statement that writes; it was not run.
    #[error("the statement writes to the registry, and this SQL is read-only")]
    WriteRefused,
    /// The file exists but is not an SQLite database; it was left untouched.
    #[error("{}: not an SQLite database (left untouched)", path.display())]
    NotADatabase {
        /// The file that was opened.
        path: PathBuf,
    },
    /// The file is an SQLite database that roster did not create; it was
    /// left untouched.
    #[error("{}: not a roster registry: {reason} (left untouched)", path.display())]
    NotARegistry {
        /// The file that was opened.
        path: PathBuf,
        /// What gave it away.
        reason: String,
    },
    /// The database was written by a newer roster whose schema this build
    /// does not know; it was left untouched.
    #[error(
        "{}: schema version {found} is newer than this build of roster knows ({supported}); upgrade roster (the file was left untouched)",
        path.display()
    )]
    SchemaTooNew {
        /// The file that was opened.
        path: PathBuf,
        /// The schema version stored in the file.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },
    /// The database file could not be opened or created, for example
    /// because its directory does not exist or cannot be written.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The file that was opened.
        path: PathBuf,
        /// What the storage said.
        #[source]
        source: DatabaseError,
    },
    /// The database stayed locked by other connections for longer than the
    /// configured busy timeout; nothing was changed.
    #[error(
        "database busy: another connection held the write lock for more than {0:?}; retry, or raise the busy timeout"
    )]
    Busy(std::time::Duration),
    /// Any other failure of the storage underneath.
    #[error("database error: {0}")]
    Database(#[from] DatabaseError),
}

/// An error of the storage underneath a registry, kept opaque so that no
/// storage library's types appear in roster's API.
///
/// Its `Display` is the storage's own message, and
/// [`source`](std::error::Error::source) continues with the storage error's
/// own cause, if it has one.
pub struct DatabaseError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl DatabaseError {
    pub(crate) fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(error))
    }

    pub(crate) fn message(message: String) -> Self {
        Self(message.into())
    }
}

impl fmt::Debug for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for DatabaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
