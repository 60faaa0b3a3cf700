//! Retries and the one place where PostgreSQL's errors become roster errors:
//! every call runs through [`PostgresRegistry::run`] or
//! [`PostgresRegistry::write`].
//!
//! By SQLSTATE:
//!
//! | SQLSTATE | what happened | roster |
//! | --- | --- | --- |
//! | `40001` serialization failure, `40P01` deadlock | the transaction lost to another one; nothing was done | retried until the busy timeout, then [`Error::Busy`] |
//! | `55P03` lock not available | a row stayed locked past `lock_timeout` (the busy timeout) | [`Error::Busy`]; from a `NOWAIT` statement (`deregister`'s), a lost race ([`lost_if_locked`]), retried |
//! | `57014` query canceled | the statement ran past `statement_timeout` | [`Error::Interrupted`] |
//! | class `08`, `57P01`-`57P03`, class `53`, no SQLSTATE (a socket error) | the connection or the server failed; it may pass | [`ErrorKind::Storage`] |
//! | `42P01`, `42703`, `42883`, `3F000`, `42501`, `25006`, class `XX` | no such table, column, function or schema; no privilege; a read-only server; corruption | [`ErrorKind::Unusable`] |
//! | anything else | | [`ErrorKind::Storage`] |

use std::thread;
use std::time::{Duration, Instant};

use postgres::error::SqlState;

use crate::error::{DatabaseError, Error, ErrorKind};
use crate::postgres::PostgresRegistry;
use crate::postgres::conn::{Conn, Manager, Tx};

/// What the work inside a call can fail with: a PostgreSQL error, classified
/// once by [`classify`], roster's own answer passed through as it is, or a
/// race lost to another call that changed what the work read (the work is
/// run again from the start, as for a deadlock).
#[derive(Debug)]
pub(crate) enum Failure {
    Pg(postgres::Error),
    Roster(Error),
    Lost,
}

impl From<postgres::Error> for Failure {
    fn from(error: postgres::Error) -> Self {
        Self::Pg(error)
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self::Roster(error)
    }
}

/// The result of the work inside a call.
pub(crate) type Result<T, E = Failure> = std::result::Result<T, E>;

/// Whether the transaction lost to another one and may simply run again.
pub(crate) fn is_retryable(error: &postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(&SqlState::T_R_SERIALIZATION_FAILURE | &SqlState::T_R_DEADLOCK_DETECTED)
    )
}

/// A row another transaction holds, met by a statement that does not wait
/// (`FOR UPDATE NOWAIT`), as a lost race: the work starts again from the
/// beginning, where it waits for that row holding nothing the other
/// transaction needs.
pub(crate) fn lost_if_locked(error: postgres::Error) -> Failure {
    if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
        Failure::Lost
    } else {
        Failure::Pg(error)
    }
}

/// Whether the statement was refused for a duplicate key: for claims, a task
/// that is held.
pub(crate) fn is_unique_violation(error: &postgres::Error) -> bool {
    error.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// A cached statement whose plan the schema changed under (another process
/// migrated the database): prepared again, it works.
fn is_stale_statement(error: &postgres::Error) -> bool {
    error.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED)
        && error.as_db_error().is_some_and(|db| {
            db.message()
                .contains("cached plan must not change result type")
        })
}

/// The kind of an error that is neither a lost race nor a timeout: whether
/// it may pass.
pub(crate) fn kind_of(error: &postgres::Error) -> ErrorKind {
    let Some(code) = error.code() else {
        // No SQLSTATE: the socket, TLS or the protocol failed.
        return ErrorKind::Storage;
    };
    let code = code.code();
    let unusable = [
        SqlState::UNDEFINED_TABLE.code(),
        SqlState::UNDEFINED_COLUMN.code(),
        SqlState::UNDEFINED_FUNCTION.code(),
        SqlState::INVALID_SCHEMA_NAME.code(),
        SqlState::INSUFFICIENT_PRIVILEGE.code(),
        SqlState::READ_ONLY_SQL_TRANSACTION.code(),
        SqlState::INVALID_PASSWORD.code(),
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION.code(),
        SqlState::INVALID_CATALOG_NAME.code(),
    ];
    if unusable.contains(&code) || code.starts_with("XX") {
        ErrorKind::Unusable
    } else {
        ErrorKind::Storage
    }
}

/// A PostgreSQL error as roster shows it: the server's message, detail and
/// SQLSTATE when the server answered (the driver's own `Display` says only
/// "db error"), the driver's message otherwise.
#[derive(Debug)]
pub(crate) struct PgError(pub(crate) postgres::Error);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => {
                write!(f, "{}", db.message())?;
                if let Some(detail) = db.detail() {
                    write!(f, " ({detail})")?;
                }
                write!(f, " [SQLSTATE {}]", db.code().code())
            }
            None => write!(f, "{}", self.0),
        }
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// The timeouts an error message quotes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) busy_timeout: Duration,
    pub(crate) statement_timeout: Duration,
}

/// A PostgreSQL error as a roster error.
pub(crate) fn classify(error: postgres::Error, limits: Limits) -> Error {
    match error.code() {
        Some(&SqlState::LOCK_NOT_AVAILABLE)
        | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
        | Some(&SqlState::T_R_DEADLOCK_DETECTED) => Error::Busy(limits.busy_timeout),
        Some(&SqlState::QUERY_CANCELED) => Error::Interrupted {
            why: format!(
                "the statement ran past the statement timeout ({:?})",
                limits.statement_timeout
            ),
        },
        _ => Error::Database(DatabaseError::new(kind_of(&error), PgError(error))),
    }
}

impl Failure {
    pub(crate) fn into_error(self, limits: Limits) -> Error {
        match self {
            Self::Pg(e) => classify(e, limits),
            Self::Roster(e) => e,
            Self::Lost => Error::Busy(limits.busy_timeout),
        }
    }
}

/// The first pause between two tries of a transaction that lost a race, and
/// the longest.
const FIRST_PAUSE: Duration = Duration::from_micros(100);
const LONGEST_PAUSE: Duration = Duration::from_millis(10);

/// A pseudo-random pause shorter than `pause`, from the clock's
/// nanoseconds.
fn jitter(pause: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let bound = u32::try_from(pause.as_nanos()).unwrap_or(u32::MAX).max(1);
    Duration::from_nanos(u64::from(nanos % bound))
}

impl PostgresRegistry {
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            busy_timeout: self.options.busy_timeout,
            statement_timeout: self.options.statement_timeout,
        }
    }

    /// A connection from the pool: a storage error naming the database when
    /// none comes within the pool's checkout time.
    pub(crate) fn checkout(&self) -> crate::Result<r2d2::PooledConnection<Manager>> {
        self.pool.get().map_err(|e| {
            Error::Database(DatabaseError::new(
                ErrorKind::Storage,
                format!("no connection to {}: {e}", self.target.shown),
            ))
        })
    }

    /// Runs `work` on a pooled connection, again while it loses deadlocks or
    /// serialization conflicts, until the busy timeout has passed since the
    /// first try.
    ///
    /// Waiting for locks happens in the server, up to `lock_timeout`; the
    /// retry covers what the server aborts instead of waiting.
    pub(crate) fn run<T>(&self, mut work: impl FnMut(&mut Conn) -> Result<T>) -> crate::Result<T> {
        let limits = self.limits();
        let deadline = Instant::now() + limits.busy_timeout;
        let mut conn = self.checkout()?;
        let mut pause = FIRST_PAUSE;
        let mut prepared_again = false;
        loop {
            match work(&mut conn) {
                Ok(value) => return Ok(value),
                Err(Failure::Lost) if Instant::now() < deadline => {
                    thread::sleep(pause + jitter(pause));
                    pause = (pause * 2).min(LONGEST_PAUSE);
                }
                Err(Failure::Pg(e)) if is_retryable(&e) && Instant::now() < deadline => {
                    // A pause that differs between the losers, so that they
                    // do not meet again at once.
                    thread::sleep(pause + jitter(pause));
                    pause = (pause * 2).min(LONGEST_PAUSE);
                }
                Err(Failure::Pg(e)) if is_stale_statement(&e) && !prepared_again => {
                    conn.forget_statements();
                    prepared_again = true;
                }
                Err(e) => return Err(e.into_error(limits)),
            }
        }
    }

    /// Runs `work` in one transaction, committed when it returns `Ok`,
    /// rolled back otherwise; retried as in [`run`](Self::run).
    pub(crate) fn write<T>(
        &self,
        mut work: impl FnMut(&mut Tx<'_>) -> Result<T>,
    ) -> crate::Result<T> {
        self.run(|conn| {
            let mut tx = conn.transaction()?;
            let value = work(&mut tx)?;
            tx.commit()?;
            Ok(value)
        })
    }
}
