//! Ad-hoc SQL against the registry file: [`SqliteRegistry::query`].

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::sqlite::SqliteRegistry;
use crate::sqlite::conn::{self, Settings};
use crate::sqlite::retry::classify;

/// Whether ad-hoc SQL may change the registry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SqlAccess {
    /// Only statements that do not write are run (the default); the
    /// connection is opened read-only as well.
    #[default]
    ReadOnly,
    /// Statements may write. The schema's constraints and triggers still
    /// refuse impossible rows, and foreign keys are on.
    ReadWrite,
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
    /// and returns its rows, as the `sqlite3` shell would.
    ///
    /// The statement runs on a connection of its own, with the registry's
    /// busy timeout and foreign keys on. With [`SqlAccess::ReadOnly`] that
    /// connection is read-only and a statement that would write is refused
    /// before it runs.
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
    /// - [`Error::WriteRefused`] for a statement that writes under
    ///   [`SqlAccess::ReadOnly`];
    /// - [`Error::Invalid`] naming `sql` for a statement SQLite rejects:
    ///   a syntax error, an unknown table, a constraint the schema enforces,
    ///   more than one statement, or none;
    /// - [`Error::Busy`] when other writers hold the lock past the busy
    ///   timeout;
    /// - [`Error::Database`] for a failure of the storage (a full disk, an
    ///   I/O error, a corrupt file), with its [kind](crate::ErrorKind).
    pub fn query(&self, sql: &str, access: SqlAccess) -> Result<SqlRows> {
        let flags = match access {
            SqlAccess::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY,
            SqlAccess::ReadWrite => OpenFlags::SQLITE_OPEN_READ_WRITE,
        };
        let settings = Settings::of(&self.options);
        let conn =
            conn::open(self.path(), flags, settings).map_err(|e| classify(e, self.busy_timeout))?;
        run_query(&conn, sql, access).map_err(|e| match e {
            QueryError::Refused => Error::WriteRefused,
            QueryError::Sql(e) if is_mistake(&e) => Error::invalid("sql", e.to_string()),
            QueryError::Sql(e) => classify(e, self.busy_timeout),
        })
    }
}

fn run_query(conn: &Connection, sql: &str, access: SqlAccess) -> Result<SqlRows, QueryError> {
    if sql.trim().is_empty() {
        return Err(QueryError::Sql(rusqlite::Error::InvalidQuery));
    }
    let mut stmt = conn.prepare(sql)?;
    if access == SqlAccess::ReadOnly && !stmt.readonly() {
        return Err(QueryError::Refused);
    }
    let columns: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
    let mut rows = stmt.query([])?;
    let mut result = SqlRows {
        columns,
        rows: Vec::new(),
    };
    while let Some(row) = rows.next()? {
        let values = (0..result.columns.len())
            .map(|i| {
                Ok(match row.get_ref(i)? {
                    ValueRef::Null => SqlValue::Null,
                    ValueRef::Integer(v) => SqlValue::Integer(v),
                    ValueRef::Real(v) => SqlValue::Real(v),
                    ValueRef::Text(v) => SqlValue::Text(String::from_utf8_lossy(v).into_owned()),
                    ValueRef::Blob(v) => SqlValue::Blob(v.to_vec()),
                })
            })
            .collect::<rusqlite::Result<Vec<_>>>()?;
        result.rows.push(values);
    }
    Ok(result)
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
        // Errors that rusqlite raises itself: several statements, none...
        None => true,
    }
}

enum QueryError {
    Refused,
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for QueryError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}
