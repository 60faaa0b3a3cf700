//! Busy handling and the one place where storage errors become roster
//! errors: every call runs through [`SqliteRegistry::run`] or
//! [`SqliteRegistry::write`].

use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode};

use crate::error::{DatabaseError, Error, ErrorKind};
use crate::sqlite::SqliteRegistry;
use crate::sqlite::conn::Deadline;

/// What the work inside a call can fail with: a storage error, classified
/// once by [`classify`], or roster's own answer (not found, unreadable row...)
/// passed through as it is. `?` works on both, so no call nests results.
#[derive(Debug)]
pub(crate) enum Failure {
    Sql(rusqlite::Error),
    Roster(Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(error: rusqlite::Error) -> Self {
        Self::Sql(error)
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self::Roster(error)
    }
}

/// The result of the work inside a call.
pub(crate) type Result<T, E = Failure> = std::result::Result<T, E>;

pub(crate) fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// The kind of a storage error of roster's own statements that is not
/// busy: whether it may pass. A generic SQL error (a table or column gone)
/// or a constraint roster's own write breaks (a counter or setting typed by
/// hand out of the ways roster writes them) means the schema or the data is
/// not what roster wrote: retrying will not help.
pub(crate) fn kind_of(error: &rusqlite::Error) -> ErrorKind {
    match error.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseCorrupt
            | ErrorCode::NotADatabase
            | ErrorCode::CannotOpen
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::AuthorizationForStatementDenied
            | ErrorCode::Unknown
            | ErrorCode::ConstraintViolation
            | ErrorCode::TypeMismatch
            | ErrorCode::SchemaChanged,
        ) => ErrorKind::Unusable,
        // rusqlite's own errors on reading a row: a value roster cannot
        // have written.
        None => ErrorKind::Unusable,
        _ => ErrorKind::Storage,
    }
}

/// A storage error as a roster error; busy ones become [`Error::Busy`] with
/// the timeout that was waited.
pub(crate) fn classify(error: rusqlite::Error, busy_timeout: Duration) -> Error {
    if is_busy(&error) {
        return Error::Busy(busy_timeout);
    }
    Error::Database(DatabaseError::new(kind_of(&error), error))
}

impl Failure {
    pub(crate) fn into_error(self, busy_timeout: Duration) -> Error {
        match self {
            Self::Sql(e) => classify(e, busy_timeout),
            Self::Roster(e) => e,
        }
    }

    fn is_busy(&self) -> bool {
        matches!(self, Self::Sql(e) if is_busy(e))
    }
}

/// The first pause between two tries of a busy call, and the longest.
const FIRST_PAUSE: Duration = Duration::from_micros(50);
const LONGEST_PAUSE: Duration = Duration::from_millis(5);

impl SqliteRegistry {
    /// Runs `work` on a pooled connection, retrying it while the database is
    /// busy, until the busy timeout has passed since the first try.
    ///
    /// The pool connections' busy handler (`conn::wait_for_lock`) already
    /// waits inside each statement, up to the same deadline; the retry
    /// covers the cases where SQLite reports busy without calling it (a lock
    /// upgrade that would deadlock).
    pub(crate) fn run<T>(
        &self,
        mut work: impl FnMut(&mut Connection) -> Result<T>,
    ) -> crate::Result<T> {
        let busy_timeout = self.busy_timeout;
        let deadline = Instant::now() + busy_timeout;
        let _deadline = Deadline::start(deadline);
        let mut conn = self.connection()?;
        let mut pause = FIRST_PAUSE;
        loop {
            match work(&mut conn) {
                Ok(value) => return Ok(value),
                Err(e) if e.is_busy() && Instant::now() < deadline => {
                    thread::sleep(pause);
                    pause = (pause * 2).min(LONGEST_PAUSE);
                }
                Err(e) => return Err(e.into_error(busy_timeout)),
            }
        }
    }

    /// Runs `work` in one `BEGIN IMMEDIATE` transaction, committed when it
    /// returns `Ok`, rolled back otherwise; retried as in [`run`](Self::run).
    pub(crate) fn write<T>(
        &self,
        mut work: impl FnMut(&Connection) -> Result<T>,
    ) -> crate::Result<T> {
        self.run(|conn| {
            let tx = Immediate::begin(conn)?;
            let value = work(conn)?;
            tx.commit()?;
            Ok(value)
        })
    }
}

/// A `BEGIN IMMEDIATE` transaction on a pool connection, rolled back when
/// dropped before [`commit`](Self::commit) succeeds. Unlike rusqlite's
/// `Transaction`, which parses `BEGIN` and `COMMIT` anew every time, its
/// three statements are prepared once per connection, like every other
/// statement roster runs (a claim or a release is one such transaction).
struct Immediate<'c> {
    conn: &'c Connection,
    open: bool,
}

impl<'c> Immediate<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<Self> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(Self { conn, open: true })
    }

    fn commit(mut self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.open = false;
        Ok(())
    }
}

impl Drop for Immediate<'_> {
    fn drop(&mut self) {
        // A transaction SQLite already ended (a statement that failed with
        // SQLITE_FULL or an interrupt rolls back on its own) needs nothing.
        if self.open && !self.conn.is_autocommit() {
            let _ = self
                .conn
                .prepare_cached("ROLLBACK")
                .and_then(|mut rollback| rollback.execute([]));
        }
    }
}
