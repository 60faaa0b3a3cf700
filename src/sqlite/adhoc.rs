//! Ad-hoc SQL against the registry file: [`SqliteRegistry::query`] and
//! [`SqliteRegistry::query_each`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::sqlite::SqliteRegistry;
use crate::sqlite::conn::{self, Settings};
use crate::sqlite::retry::classify;

/// How long ad-hoc SQL may run unless told otherwise
/// ([`SqlOptions::timeout`]).
pub const DEFAULT_SQL_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether ad-hoc SQL may change the registry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SqlAccess {
    /// The statement runs on a read-only connection (the default): anything
    /// that would write is refused with
    /// [`Error::WriteRefused`](crate::Error::WriteRefused) and changes
    /// nothing; everything that only reads runs, `PRAGMA journal_mode` and
    /// `EXPLAIN QUERY PLAN UPDATE ...` included.
    #[default]
    ReadOnly,
    /// Statements may write. The schema's constraints and triggers still
    /// refuse impossible rows, foreign keys are on, and the pragmas that
    /// roster itself owns (`journal_mode`, `user_version`, `application_id`,
    /// `writable_schema`, `locking_mode`) cannot be set.
    ReadWrite,
}

/// How [`SqliteRegistry::query_each`] (and, on PostgreSQL,
/// `PostgresRegistry::query_each`) runs a statement: access, time limit,
/// cancellation.
#[derive(Clone, Debug)]
pub struct SqlOptions {
    pub(crate) access: SqlAccess,
    pub(crate) timeout: Option<Duration>,
    pub(crate) cancel: Option<Arc<AtomicBool>>,
    pub(crate) pooled: bool,
}

impl Default for SqlOptions {
    fn default() -> Self {
        Self::new(SqlAccess::ReadOnly)
    }
}

impl SqlOptions {
    /// `access`, a time limit of [`DEFAULT_SQL_TIMEOUT`], no cancellation.
    pub fn new(access: SqlAccess) -> Self {
        Self {
            access,
            timeout: Some(DEFAULT_SQL_TIMEOUT),
            cancel: None,
            pooled: false,
        }
    }

    /// Interrupts the statement once it has run this long (`None`: never).
    /// An interrupted statement changes nothing.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Interrupts the statement as soon as `cancel` becomes `true` (for
    /// example from a Ctrl-C handler).
    pub fn cancel(mut self, cancel: Arc<AtomicBool>) -> Self {
        self.cancel = Some(cancel);
        self
    }

    /// On PostgreSQL, runs a read-only statement on one of the registry's
    /// pooled connections rather than on a connection opened for it (and
    /// closed after it), saving a login per statement. Only for statements
    /// that leave nothing in the session for the pool's next user (no
    /// `SET`, `LISTEN`, advisory lock or temporary table): roster's own
    /// reads that `roster top` and `roster metrics` repeat. Ignored with
    /// [`SqlAccess::ReadWrite`] or a [`cancel`](Self::cancel) flag, and on
    /// SQLite, whose connections cost no login.
    pub fn pooled(mut self) -> Self {
        self.pooled = true;
        self
    }
}

/// What [`SqliteRegistry::query_each`] ran: the columns, how many rows it
/// returned, how many rows it changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SqlSummary {
    /// The names of the result columns, in order.
    pub columns: Vec<String>,
    /// How many rows the statement returned.
    pub rows: u64,
    /// How many rows an `INSERT`, `UPDATE` or `DELETE` changed (0 for other
    /// statements). On PostgreSQL, also a `MERGE`'s; a statement that starts
    /// with `WITH` counts as a query there (0), whatever its body writes.
    pub changes: u64,
}

/// One value of a result row, as SQLite stored it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum SqlValue {
    /// SQL NULL.
    Null,
    /// An INTEGER.
    Integer(i64),
    /// A REAL.
    Real(f64),
    /// A TEXT.
    Text(String),
    /// A BLOB.
    Blob(Vec<u8>),
}

impl std::fmt::Display for SqlValue {
    /// NULL as an empty string, BLOBs as `x'..'` hex literals, the rest as
    /// the `sqlite3` shell shows them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Null => f.pad(""),
            Self::Integer(i) => f.pad(&i.to_string()),
            Self::Real(r) => f.pad(&r.to_string()),
            Self::Text(t) => f.pad(t),
            Self::Blob(b) => {
                let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
                f.pad(&format!("x'{hex}'"))
            }
        }
    }
}

/// The result of [`SqliteRegistry::query`]: column names and rows.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SqlRows {
    /// The names of the result columns, in order.
    pub columns: Vec<String>,
    /// The rows, each with one value per column.
    pub rows: Vec<Vec<SqlValue>>,
}

impl SqliteRegistry {
    /// Runs one SQL statement typed by a person against the registry file
    /// and returns all its rows, as the `sqlite3` shell would, within
    /// [`DEFAULT_SQL_TIMEOUT`]. [`query_each`](Self::query_each) hands rows
    /// over one by one instead, for results of any size.
    ///
    /// ```
    /// use roster::{AgentInfo, AgentRegistry, SqlAccess, SqlValue, SqliteRegistry};
    /// # let dir = tempfile::tempdir().expect("temporary directory");
    /// # let registry = SqliteRegistry::open(dir.path().join("agents.db"))?;
    /// registry.register(AgentInfo { id: "a".into(), name: "A".into(), ..AgentInfo::default() })?;
    /// let result = registry.query("SELECT id, status FROM agents", SqlAccess::ReadOnly)?;
    /// assert_eq!(result.columns, ["id", "status"]);
    /// assert_eq!(result.rows, [[SqlValue::Text("a".into()), SqlValue::Text("available".into())]]);
    /// # Ok::<(), roster::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`query_each`](Self::query_each).
    pub fn query(&self, sql: &str, access: SqlAccess) -> Result<SqlRows> {
        let mut rows = Vec::new();
        let summary = self.query_each(sql, &SqlOptions::new(access), |_, row| {
            rows.push(row.to_vec());
            Ok(())
        })?;
        Ok(SqlRows {
            columns: summary.columns,
            rows,
        })
    }

    /// Runs one SQL statement typed by a person and calls `on_row` with the
    /// column names and each row as it comes, without collecting them.
    ///
    /// The statement runs on a connection of its own, with the registry's
    /// busy timeout and foreign keys on; read-only unless `options` says
    /// otherwise. An error returned by `on_row` stops the statement and is
    /// returned as it is.
    ///
    /// ```
    /// use roster::{SqlAccess, SqlOptions, SqliteRegistry};
    /// # let dir = tempfile::tempdir().expect("temporary directory");
    /// # let registry = SqliteRegistry::open(dir.path().join("agents.db"))?;
    /// let mut seen = 0;
    /// let summary = registry.query_each(
    ///     "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 100000) SELECT i FROM n",
    ///     &SqlOptions::new(SqlAccess::ReadOnly),
    ///     |_columns, _row| {
    ///         seen += 1;
    ///         Ok(())
    ///     },
    /// )?;
    /// assert_eq!((summary.rows, seen), (100_000, 100_000));
    /// # Ok::<(), roster::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// - [`Error::WriteRefused`] for a statement that writes under
    ///   [`SqlAccess::ReadOnly`]; nothing is changed;
    /// - [`Error::Invalid`] naming `sql` for no statement at all (empty, a
    ///   comment, `;`), more than one, a syntax error, an unknown table, a
    ///   constraint the schema enforces, or a pragma roster owns;
    /// - [`Error::Interrupted`] when the time limit passed or `cancel` was
    ///   set; nothing is changed;
    /// - [`Error::Busy`] when other writers hold the lock past the busy
    ///   timeout;
    /// - [`Error::Database`] for a failure of the storage (a full disk, an
    ///   I/O error, a corrupt file), with its [kind](crate::ErrorKind).
    pub fn query_each(
        &self,
        sql: &str,
        options: &SqlOptions,
        mut on_row: impl FnMut(&[String], &[SqlValue]) -> Result<()>,
    ) -> Result<SqlSummary> {
        let flags = match options.access {
            SqlAccess::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY,
            SqlAccess::ReadWrite => OpenFlags::SQLITE_OPEN_READ_WRITE,
        };
        let settings = Settings::of(&self.options);
        let conn =
            conn::open(self.path(), flags, settings).map_err(|e| classify(e, self.busy_timeout))?;
        let refused_pragma = guard(&conn, options).map_err(|e| classify(e, self.busy_timeout))?;
        let started = Instant::now();
        if options
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Err(Error::Interrupted {
                why: "the statement was cancelled".to_owned(),
            });
        }
        let outcome = {
            let _waiting = Waiting::arm(
                started.checked_add(self.busy_timeout),
                options.timeout.and_then(|t| started.checked_add(t)),
                options.cancel.clone(),
            );
            run(&conn, sql, options.access, &mut on_row)
        };
        // The progress handler and the authorizer hold no borrow past here.
        let interrupted = |why: String| Error::Interrupted { why };
        outcome.map_err(|e| match e {
            QueryError::Roster(e) => e,
            QueryError::Sql(e) => match e.sqlite_error_code() {
                Some(
                    ErrorCode::OperationInterrupted
                    | ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked,
                ) if options.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
                    || options.timeout.is_some_and(|t| started.elapsed() >= t) =>
                {
                    if options.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
                        interrupted("the statement was cancelled".to_owned())
                    } else {
                        interrupted(format!(
                            "the statement ran for more than {:?} (stopped after {:?})",
                            options.timeout.unwrap_or_default(),
                            started.elapsed()
                        ))
                    }
                }
                Some(ErrorCode::ReadOnly) if options.access == SqlAccess::ReadOnly => {
                    Error::WriteRefused
                }
                Some(ErrorCode::AuthorizationForStatementDenied)
                    if options.access == SqlAccess::ReadOnly =>
                {
                    Error::WriteRefused
                }
                Some(ErrorCode::AuthorizationForStatementDenied) => {
                    let pragma = refused_pragma
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .take()
                        .unwrap_or_default();
                    Error::invalid(
                        "sql",
                        format!(
                            "PRAGMA {pragma} belongs to roster and cannot be set by hand: the registry must stay in WAL mode at the schema version roster wrote"
                        ),
                    )
                }
                // The statement named a file it cannot open (ATTACH).
                Some(ErrorCode::CannotOpen) => Error::invalid("sql", e.to_string()),
                _ if is_mistake(&e) => Error::invalid("sql", e.to_string()),
                _ => classify(e, self.busy_timeout),
            },
        })
    }
}

/// Arms `conn` for one ad-hoc statement: the progress handler that enforces
/// the time limit and the cancel flag, and the authorizer that refuses
/// setting the pragmas roster owns (on a read-only connection SQLite would
/// answer "database is locked" for some of them, which points the wrong way). Returns where
/// the authorizer notes the pragma it refused.
fn guard(conn: &Connection, options: &SqlOptions) -> rusqlite::Result<Arc<Mutex<Option<String>>>> {
    if options.access == SqlAccess::ReadOnly {
        conn.pragma_update(None, "query_only", true)?;
    }
    conn.busy_handler(Some(busy_handler))?;
    let deadline = options.timeout.and_then(|t| Instant::now().checked_add(t));
    let cancel = options.cancel.clone();
    if deadline.is_some() || cancel.is_some() {
        conn.progress_handler(
            1000,
            Some(move || {
                deadline.is_some_and(|d| Instant::now() >= d)
                    || cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
            }),
        )?;
    }
    let refused = Arc::new(Mutex::new(None));
    let noted = Arc::clone(&refused);
    conn.authorizer(Some(move |context: AuthContext<'_>| match context.action {
        AuthAction::Pragma {
            pragma_name,
            pragma_value: Some(value),
        } if OWNED_PRAGMAS.contains(&pragma_name.to_ascii_lowercase().as_str())
            && !(pragma_name.eq_ignore_ascii_case("journal_mode")
                && value.eq_ignore_ascii_case("wal")) =>
        {
            *noted.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(format!("{pragma_name} = {value}"));
            Authorization::Deny
        }
        _ => Authorization::Allow,
    }))?;
    Ok(refused)
}

/// The pragmas that describe the file as roster wrote it; setting them by
/// hand would break every process (a journal mode other than WAL, a schema
/// version that does not match the tables).
const OWNED_PRAGMAS: &[&str] = &[
    "schema_version",
    "journal_mode",
    "user_version",
    "application_id",
    "writable_schema",
    "locking_mode",
];

fn run(
    conn: &Connection,
    sql: &str,
    access: SqlAccess,
    on_row: &mut impl FnMut(&[String], &[SqlValue]) -> Result<()>,
) -> Result<SqlSummary, QueryError> {
    if is_blank(sql) {
        return Err(QueryError::Roster(Error::invalid(
            "sql",
            "no SQL statement to run (the text is empty, a comment or only semicolons)",
        )));
    }
    let mut stmt = conn.prepare(sql)?;
    // VACUUM INTO writes a new file before the read-only connection could
    // refuse anything.
    if access == SqlAccess::ReadOnly && !stmt.readonly() && starts_with_vacuum(sql) {
        return Err(QueryError::Roster(Error::WriteRefused));
    }
    if stmt.parameter_count() > 0 {
        return Err(QueryError::Roster(Error::invalid(
            "sql",
            "the statement has parameters (?, :name), and ad-hoc SQL binds none: write the values in",
        )));
    }
    let columns: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
    let mut summary = SqlSummary {
        columns,
        rows: 0,
        changes: 0,
    };
    let mut rows = stmt.query([])?;
    let mut values = Vec::with_capacity(summary.columns.len());
    while let Some(row) = rows.next()? {
        values.clear();
        for i in 0..summary.columns.len() {
            values.push(match row.get_ref(i)? {
                ValueRef::Null => SqlValue::Null,
                ValueRef::Integer(v) => SqlValue::Integer(v),
                ValueRef::Real(v) => SqlValue::Real(v),
                ValueRef::Text(v) => SqlValue::Text(String::from_utf8_lossy(v).into_owned()),
                ValueRef::Blob(v) => SqlValue::Blob(v.to_vec()),
            });
        }
        summary.rows += 1;
        on_row(&summary.columns, &values).map_err(QueryError::Roster)?;
    }
    drop(rows);
    if !stmt.readonly() {
        summary.changes = conn.changes();
    }
    Ok(summary)
}

/// Whether the first word of `sql`, past white space and comments, is
/// VACUUM.
fn starts_with_vacuum(sql: &str) -> bool {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        if let Some(comment) = rest.strip_prefix("--") {
            rest = comment.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(comment) = rest.strip_prefix("/*") {
            rest = comment.split_once("*/").map_or("", |(_, after)| after);
        } else {
            return rest
                .get(..6)
                .is_some_and(|word| word.eq_ignore_ascii_case("vacuum"));
        }
    }
}

/// The waiting bounds of the ad-hoc statement running on this thread, read by
/// [`busy_handler`]: SQLite's busy handler is a plain function.
#[derive(Clone, Default)]
struct Bounds {
    busy_until: Option<Instant>,
    time_limit: Option<Instant>,
    cancel: Option<Arc<AtomicBool>>,
}

thread_local! {
    static BOUNDS: std::cell::RefCell<Bounds> = std::cell::RefCell::default();
}

/// Sets this thread's [`Bounds`] while a statement runs.
struct Waiting;

impl Waiting {
    fn arm(
        busy_until: Option<Instant>,
        time_limit: Option<Instant>,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Self {
        BOUNDS.with(|bounds| {
            *bounds.borrow_mut() = Bounds {
                busy_until,
                time_limit,
                cancel,
            }
        });
        Self
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        BOUNDS.with(|bounds| *bounds.borrow_mut() = Bounds::default());
    }
}

/// Waits for the lock in short pauses, giving up at the busy timeout, the
/// statement's time limit or a cancellation, whichever comes first: waiting
/// for the lock counts against the time limit, and Ctrl-C stops it.
fn busy_handler(_tries: i32) -> bool {
    let bounds = BOUNDS.with(|bounds| bounds.borrow().clone());
    let now = Instant::now();
    if bounds.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
        || bounds.time_limit.is_some_and(|t| now >= t)
        || bounds.busy_until.is_none_or(|t| now >= t)
    {
        return false;
    }
    std::thread::sleep(Duration::from_millis(1));
    true
}

/// Whether `sql` holds nothing but white space, `--` and `/* */` comments
/// and semicolons: no statement for SQLite to prepare.
fn is_blank(sql: &str) -> bool {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        if let Some(comment) = rest.strip_prefix("--") {
            rest = comment.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(comment) = rest.strip_prefix("/*") {
            // An unterminated block comment runs to the end, as in SQLite.
            rest = comment.split_once("*/").map_or("", |(_, after)| after);
        } else {
            return rest.is_empty();
        }
    }
}

/// Whether the statement itself is at fault (syntax, unknown names, a
/// constraint, misuse), as opposed to the storage.
fn is_mistake(error: &rusqlite::Error) -> bool {
    match error.sqlite_error_code() {
        Some(
            ErrorCode::Unknown
            | ErrorCode::ConstraintViolation
            | ErrorCode::TypeMismatch
            | ErrorCode::ApiMisuse
            | ErrorCode::ParameterOutOfRange
            | ErrorCode::TooBig,
        ) => true,
        Some(_) => false,
        // Errors that rusqlite raises itself: several statements...
        None => true,
    }
}

enum QueryError {
    Sql(rusqlite::Error),
    Roster(Error),
}

impl From<rusqlite::Error> for QueryError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}
