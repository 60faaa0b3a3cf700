//! The error type shared by every registry implementation, and the kinds
//! that tell a caller what to do about an error.

use std::fmt;
use std::path::PathBuf;

/// The result type of every fallible roster operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a caller can do about an [`Error`]: the same kind for the same
/// situation whatever the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The id names no agent (or no claim): check the id.
    NotFound,
    /// The input breaks a rule; nothing was changed. Fix the input; retrying
    /// as it is will fail the same way.
    InvalidInput,
    /// The request contradicts the registry's state (a task already claimed,
    /// a stale token); nothing was changed.
    Conflict,
    /// No agent can take the task now; retry later.
    NoCapacity,
    /// The work was stopped before it finished (a time limit, a
    /// cancellation); nothing was changed.
    Interrupted,
    /// Other connections held the database for longer than the busy
    /// timeout; nothing was changed. Retry.
    Busy,
    /// The storage failed in a way that may pass (an I/O error, a full
    /// disk, a lost connection); the call did not happen. Retry later.
    Storage,
    /// The registry cannot be used as it is (not a database, another
    /// program's database, a newer schema, corruption, an unreadable row):
    /// retrying will not help until someone repairs or replaces it.
    Unusable,
}

impl ErrorKind {
    /// Whether the same call may succeed if simply retried later:
    /// [`Busy`](Self::Busy) and [`Storage`](Self::Storage).
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Busy | Self::Storage)
    }
}

/// Everything that can go wrong in roster.
///
/// Domain errors come first: they are the caller's mistakes or the registry's
/// answers, and every implementation returns the same ones for the same
/// mistakes. Errors of the storage underneath come last. [`Error::kind`]
/// sorts them by what a caller can do about them.
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
    /// [`claim`](crate::AgentRegistry::claim) was given a task id that is
    /// already claimed; nothing changed.
    #[error("task {task_id} is already claimed by agent {agent_id} (token {token})")]
    AlreadyClaimed {
        /// The task.
        task_id: String,
        /// The agent that holds it.
        agent_id: String,
        /// The token of the claim that holds it.
        token: u64,
    },
    /// [`release`](crate::AgentRegistry::release) or
    /// [`renew`](crate::AgentRegistry::renew) named a claim that is not held,
    /// or not under the token given: it was released or recovered (and
    /// perhaps claimed again) since. Nothing changed.
    #[error("{}", stale_message(task_id, *token, *held))]
    StaleClaim {
        /// The task.
        task_id: String,
        /// The token the caller gave, if any.
        token: Option<u64>,
        /// The token under which the task is held now, if it is.
        held: Option<u64>,
    },
    /// Read-only ad-hoc SQL ([`SqlAccess`](crate::SqlAccess))
    /// was given a statement that writes; it was not run.
    #[error("the statement writes to the registry, and this SQL is read-only")]
    WriteRefused,
    /// The change feed no longer holds the events right after this cursor:
    /// they were pruned (or deleted by hand). Read the state afresh (`list`)
    /// and watch from the oldest kept event.
    #[error(
        "cursor {cursor} is older than the oldest kept event {oldest}: list, then watch from {oldest}"
    )]
    CursorTooOld {
        /// The cursor given.
        cursor: u64,
        /// The oldest event the registry still holds (or the next one, when
        /// it holds none).
        oldest: u64,
    },
    /// A cursor beyond the newest event: it comes from another registry, or
    /// from before this one was replaced.
    #[error(
        "cursor {cursor} is ahead of the newest event {newest}: it is not a cursor of this registry"
    )]
    CursorAhead {
        /// The cursor given.
        cursor: u64,
        /// The newest event's cursor.
        newest: u64,
    },
    /// Ad-hoc SQL was stopped before it finished: it ran past its time limit
    /// or was cancelled; nothing was changed.
    #[error("interrupted: {why}; nothing was changed")]
    Interrupted {
        /// What stopped it.
        why: String,
    },
    /// A stored row cannot be read as roster writes it (a file written by
    /// another tool, or hand-typed SQL that the schema could not refuse).
    /// Nothing was changed; other agents can still be read one by one.
    #[error(
        "unreadable row in {table}: {} {id}, column {column}: {reason}; repair or delete the row by hand (the sqlite3 shell, or psql)",
        row_key(table)
    )]
    Unreadable {
        /// The table that holds the row.
        table: &'static str,
        /// The row's key: the agent's id (`agents`, `capabilities`,
        /// `metadata`) or the task id (`claims`), quoted and escaped
        /// (invalid UTF-8 as `\xNN`); the event's `seq` (`events`).
        id: String,
        /// The column that cannot be read.
        column: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// There is no registry at this path, and the caller asked not to create
    /// one ([`SqliteOptions::create`](crate::SqliteOptions::create)).
    #[error("no registry at {}", path.display())]
    NoRegistry {
        /// The path that was opened.
        path: PathBuf,
    },
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
    /// The file holds rows that the rules of a newer schema version refuse,
    /// so it was not upgraded; it was left untouched at its old version.
    #[error(
        "{}: cannot upgrade to schema version {version}: {} row(s) break its rules, and the file was left untouched. Repair or delete them in the sqlite3 shell, then open it again: {}",
        path.display(), rows.len(), rows.join("; ")
    )]
    UpgradeRefused {
        /// The file that was opened.
        path: PathBuf,
        /// The schema version that could not be applied.
        version: i64,
        /// Each refused row: table, escaped id, the rule it breaks and the
        /// statement that deletes it.
        rows: Vec<String>,
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
    /// Other connections held what the call needed (SQLite's write lock,
    /// PostgreSQL's rows or locks) for longer than the configured busy
    /// timeout; nothing was changed.
    #[error(
        "database busy: other connections held the lock it needed for more than {0:?}; retry, or raise the busy timeout"
    )]
    Busy(std::time::Duration),
    /// Any other failure of the storage underneath.
    #[error("database error: {0}")]
    Database(#[from] DatabaseError),
}

impl Error {
    /// What a caller can do about this error.
    ///
    /// ```
    /// use roster::{AgentRegistry, ErrorKind, MemoryRegistry};
    ///
    /// let err = MemoryRegistry::new().get("nobody").unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::NotFound);
    /// assert!(!err.kind().is_transient());
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::MissingId | Self::Invalid { .. } | Self::WriteRefused => ErrorKind::InvalidInput,
            Self::Interrupted { .. } => ErrorKind::Interrupted,
            Self::AlreadyClaimed { .. }
            | Self::StaleClaim { .. }
            | Self::CursorTooOld { .. }
            | Self::CursorAhead { .. } => ErrorKind::Conflict,
            Self::NoEligibleAgent => ErrorKind::NoCapacity,
            Self::Busy(_) => ErrorKind::Busy,
            Self::Unreadable { .. }
            | Self::NoRegistry { .. }
            | Self::NotADatabase { .. }
            | Self::NotARegistry { .. }
            | Self::SchemaTooNew { .. }
            | Self::UpgradeRefused { .. }
            | Self::Open { .. } => ErrorKind::Unusable,
            Self::Database(e) => e.kind,
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

fn stale_message(task_id: &str, token: Option<u64>, held: Option<u64>) -> String {
    match (token, held) {
        (Some(token), Some(held)) => format!(
            "stale token {token} for task {task_id}: it is held under token {held} now (the claim was recovered and taken again, or the token is wrong)"
        ),
        (_, _) => format!("no claim of task {task_id} is held (released or recovered already)"),
    }
}

/// An error of the storage underneath a registry, kept opaque so that no
/// storage library's types appear in roster's API.
///
/// Its `Display` is the storage's own message, and
/// [`source`](std::error::Error::source) continues with the storage error's
/// own cause, if it has one. Its [`kind`](DatabaseError::kind) is
/// [`ErrorKind::Storage`] for failures that may pass and
/// [`ErrorKind::Unusable`] for those that will not (corruption, a file that
/// cannot be written).
pub struct DatabaseError {
    kind: ErrorKind,
    inner: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl DatabaseError {
    pub(crate) fn new(
        kind: ErrorKind,
        error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            kind,
            inner: error.into(),
        }
    }

    /// [`ErrorKind::Storage`] or [`ErrorKind::Unusable`].
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Debug for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl std::error::Error for DatabaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

/// What [`Error::Unreadable`]'s `id` is in `table`.
fn row_key(table: &str) -> &'static str {
    match table {
        "claims" => "task id",
        "events" => "seq",
        _ => "agent id",
    }
}
