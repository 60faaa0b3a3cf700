//! Ad-hoc SQL typed by a person, and the server's clock:
//! [`PostgresRegistry::query_each`] and [`PostgresRegistry::server_now`].
//!
//! A statement runs on a connection of its own (whatever it sets for its
//! session ends with it), in one transaction: `READ ONLY` unless asked
//! otherwise, with its own `statement_timeout`, rolled back unless it wrote
//! and ran to the end. Values come back as the SQLite shell's kinds
//! ([`SqlValue`]), so that both backends print the same shapes.

use std::error::Error as StdError;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{FromSql, Kind, ToSql, Type};

use crate::error::{Error, Result};
use crate::postgres::PostgresRegistry;
use crate::postgres::retry::{Limits, PgError, classify};
use crate::postgres::schema;
use crate::sqlite::{SqlAccess, SqlOptions, SqlSummary, SqlValue};

/// How often the statement's watcher looks at the cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(10);

impl PostgresRegistry {
    /// The server's clock now (`SELECT now()`): what `heartbeat` writes
    /// and `reap` compares with, so a caller that stamps an agent itself
    /// (`register`) can agree with them whatever this host's clock says.
    ///
    /// # Errors
    ///
    /// As any call: the server cannot be reached, or refuses.
    pub fn server_now(&self) -> Result<DateTime<Utc>> {
        self.run(|conn| {
            let row = conn.client.query_one("SELECT now()", &[])?;
            Ok(row.try_get::<_, DateTime<Utc>>(0)?)
        })
    }

    /// Runs one SQL statement typed by a person and calls `on_row` with the
    /// column names and each row as it comes, as
    /// [`SqliteRegistry::query_each`](crate::SqliteRegistry::query_each)
    /// does on a file.
    ///
    /// The statement runs on a connection of its own, in one transaction
    /// that is `READ ONLY` under [`SqlAccess::ReadOnly`]; with
    /// [`SqlAccess::ReadWrite`] it commits once every row was handed over.
    /// The options' time limit is its `statement_timeout` (`None`: no
    /// limit); setting their cancel flag cancels it on the server. Integers, floats and booleans (0
    /// or 1, as SQLite stores them) come back as numbers, `numeric` as an
    /// integer when it is whole and fits, text otherwise, times in UTC as
    /// text in SQLite's format (`2026-11-25 17:18:23.123456`), `bytea` as a
    /// blob; a column of another type (arrays, ranges, geometry) is refused
    /// with the advice to cast it to text.
    ///
    /// # Errors
    ///
    /// - [`Error::WriteRefused`] for a statement that writes under
    ///   [`SqlAccess::ReadOnly`]; nothing is changed;
    /// - [`Error::Invalid`] naming `sql` for no statement at all, more than
    ///   one, parameters (`$1`), a syntax error, an unknown table or column,
    ///   a constraint the schema enforces, a missing privilege, or a result
    ///   column of a type roster does not show;
    /// - [`Error::Interrupted`] when the time limit passed or `cancel` was
    ///   set; nothing is changed;
    /// - [`Error::Busy`] when rows stayed locked past the busy timeout;
    /// - [`Error::Database`] when the server cannot be reached or fails.
    pub fn query_each(
        &self,
        sql: &str,
        options: &SqlOptions,
        mut on_row: impl FnMut(&[String], &[SqlValue]) -> Result<()>,
    ) -> Result<SqlSummary> {
        let SqlOptions {
            access,
            timeout,
            ref cancel,
            pooled,
        } = *options;
        if is_blank(sql) {
            return Err(Error::invalid(
                "sql",
                "no statement: the text holds only blanks, comments or `;`",
            ));
        }
        if starts_with_word(sql, "copy") {
            return Err(Error::invalid(
                "sql",
                "roster sql does not run COPY (its rows travel outside the statement's result, and COPY ... TO a file writes on the server): SELECT the rows instead (--json for a form programs read), or INSERT them with --write",
            ));
        }
        let cancelled = || cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
        if cancelled() {
            return Err(Error::Interrupted {
                why: "the statement was cancelled".to_owned(),
            });
        }
        let limits = self.limits();
        if pooled && access == SqlAccess::ReadOnly && cancel.is_none() {
            let mut conn = self.checkout()?;
            let started = Instant::now();
            return run(&mut conn.client, sql, access, timeout, &mut on_row).map_err(|failure| {
                failed(failure, access, timeout, started.elapsed(), false, limits)
            });
        }
        let mut client = schema::connect(&self.target, &self.options)?;
        let started = Instant::now();
        let done = Arc::new(AtomicBool::new(false));
        let watcher = cancel.clone().map(|cancel| {
            let token = client.cancel_token();
            let tls = self.target.tls.clone();
            let done = Arc::clone(&done);
            thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if cancel.load(Ordering::Relaxed) {
                        let _ = token.cancel_query(tls);
                        return;
                    }
                    thread::sleep(CANCEL_POLL);
                }
            })
        });
        let outcome = run(&mut client, sql, access, timeout, &mut on_row);
        done.store(true, Ordering::Relaxed);
        if let Some(watcher) = watcher {
            let _ = watcher.join();
        }
        outcome.map_err(|failure| {
            failed(
                failure,
                access,
                timeout,
                started.elapsed(),
                cancelled(),
                limits,
            )
        })
    }
}

/// The error a failed statement reports: `ran` is how long it ran,
/// `cancelled` whether its cancel flag was set.
fn failed(
    failure: Failure,
    access: SqlAccess,
    timeout: Option<Duration>,
    ran: Duration,
    cancelled: bool,
    limits: Limits,
) -> Error {
    match failure {
        Failure::Roster(e) => e,
        Failure::Pg(e) => match e.code() {
            Some(&SqlState::QUERY_CANCELED) if cancelled => Error::Interrupted {
                why: "the statement was cancelled".to_owned(),
            },
            Some(&SqlState::QUERY_CANCELED) => Error::Interrupted {
                why: format!(
                    "the statement ran for more than {:?} (stopped after {ran:?})",
                    timeout.unwrap_or_default(),
                ),
            },
            Some(&SqlState::READ_ONLY_SQL_TRANSACTION) if access == SqlAccess::ReadOnly => {
                Error::WriteRefused
            }
            Some(code) if is_mistake(code.code()) => Error::invalid("sql", PgError(e).to_string()),
            _ => classify(e, limits),
        },
    }
}

/// What running the statement can fail with.
enum Failure {
    Pg(postgres::Error),
    Roster(Error),
}

impl From<postgres::Error> for Failure {
    fn from(error: postgres::Error) -> Self {
        Self::Pg(error)
    }
}

/// SQLSTATE classes that are the statement's own mistake: data exceptions
/// (22), constraints (23), invalid transaction state (25, the read-only one
/// aside), syntax and access rules (42), a feature the server lacks (0A),
/// a subquery with several rows (21), dependent objects that stop a `DROP`
/// (2B), a view's `WITH CHECK OPTION` (44).
fn is_mistake(code: &str) -> bool {
    ["22", "23", "25", "42", "0A", "21", "2B", "44"]
        .iter()
        .any(|class| code.starts_with(class))
}

fn run(
    client: &mut postgres::Client,
    sql: &str,
    access: SqlAccess,
    timeout: Option<Duration>,
    on_row: &mut impl FnMut(&[String], &[SqlValue]) -> Result<()>,
) -> std::result::Result<SqlSummary, Failure> {
    let mut tx = client.transaction()?;
    let mode = match access {
        SqlAccess::ReadOnly => "READ ONLY",
        SqlAccess::ReadWrite => "READ WRITE",
    };
    let millis = timeout.map_or(0, |t| t.as_millis().clamp(1, i32::MAX as u128));
    tx.batch_execute(&format!(
        "SET TRANSACTION {mode}; SET LOCAL statement_timeout = {millis}"
    ))?;
    // The extended protocol takes one statement: several are a syntax
    // error of the server's.
    let statement = tx.prepare(sql)?;
    if !statement.params().is_empty() {
        return Err(Failure::Roster(Error::invalid(
            "sql",
            format!(
                "the statement takes {} parameter(s) ($1...): write the values into it",
                statement.params().len()
            ),
        )));
    }
    let columns: Vec<String> = statement
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    for column in statement.columns() {
        if !shown(column.type_()) {
            return Err(Failure::Roster(Error::invalid(
                "sql",
                format!(
                    "column {:?} is of type {}, which roster sql does not show: cast it, e.g. {}::text",
                    column.name(),
                    column.type_().name(),
                    column.name()
                ),
            )));
        }
    }
    let mut rows = tx.query_raw(&statement, std::iter::empty::<&dyn ToSql>())?;
    let mut count = 0_u64;
    let mut values = Vec::with_capacity(columns.len());
    while let Some(row) = rows.next()? {
        values.clear();
        for (i, name) in columns.iter().enumerate() {
            let cell = row.try_get::<_, Cell>(i).map_err(|e| {
                let why = StdError::source(&e).map_or_else(|| e.to_string(), ToString::to_string);
                Failure::Roster(Error::invalid(
                    "sql",
                    format!(
                        "column {name:?} holds a value roster sql cannot show ({why}): cast it, e.g. {name}::text"
                    ),
                ))
            })?;
            values.push(cell.0);
        }
        on_row(&columns, &values).map_err(Failure::Roster)?;
        count += 1;
    }
    // The server's count is of the command's rows: changed by an INSERT,
    // UPDATE, DELETE or MERGE (with RETURNING or not), returned by a SELECT.
    let changes = match access {
        SqlAccess::ReadWrite if columns.is_empty() || changes_rows(sql) => {
            rows.rows_affected().unwrap_or(0)
        }
        _ => 0,
    };
    drop(rows);
    match access {
        SqlAccess::ReadWrite => tx.commit()?,
        SqlAccess::ReadOnly => tx.rollback()?,
    }
    Ok(SqlSummary {
        columns,
        rows: count,
        changes,
    })
}

/// `sql` from its first word on: blanks, `;` and comments skipped.
fn after_blanks(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, next)| next);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, next)| next);
        } else {
            return rest;
        }
    }
}

/// Whether the first word of `sql` makes it a command that changes rows
/// (and counts them, RETURNING or not); a `WITH` may end in either kind,
/// and counts as a query.
fn changes_rows(sql: &str) -> bool {
    ["insert", "update", "delete", "merge"]
        .iter()
        .any(|command| starts_with_word(sql, command))
}

/// Whether `sql` holds nothing but blanks, `;` and comments.
fn is_blank(sql: &str) -> bool {
    after_blanks(sql).is_empty()
}

/// Whether the first word of `sql` is `word` (in any case).
fn starts_with_word(sql: &str, word: &str) -> bool {
    let rest = after_blanks(sql);
    rest.get(..word.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(word))
        && !rest[word.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
}

/// The type a domain stands for, and any other type as it is.
fn base(ty: &Type) -> &Type {
    match ty.kind() {
        Kind::Domain(inner) => base(inner),
        _ => ty,
    }
}

/// Whether [`Cell`] can show a value of `ty`.
fn shown(ty: &Type) -> bool {
    let ty = base(ty);
    [
        Type::BOOL,
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::OID,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::NUMERIC,
        Type::TEXT,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::NAME,
        Type::CHAR,
        Type::UNKNOWN,
        Type::JSON,
        Type::JSONB,
        Type::UUID,
        Type::BYTEA,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMP,
        Type::DATE,
        Type::TIME,
        Type::INTERVAL,
        Type::VOID,
    ]
    .contains(ty)
}

/// One value of a result row, decoded from the binary format by its type.
struct Cell(SqlValue);

/// The format times are shown in: SQLite's (as the registry file stores
/// them), to the microsecond PostgreSQL keeps.
const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.6f";

type Boxed = Box<dyn StdError + Sync + Send>;

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, Boxed> {
        let ty = base(ty);
        let value = match *ty {
            Type::BOOL => SqlValue::Integer(i64::from(bool::from_sql(ty, raw)?)),
            Type::INT2 => SqlValue::Integer(i64::from(i16::from_sql(ty, raw)?)),
            Type::INT4 => SqlValue::Integer(i64::from(i32::from_sql(ty, raw)?)),
            Type::INT8 => SqlValue::Integer(i64::from_sql(ty, raw)?),
            Type::OID => SqlValue::Integer(i64::from(u32::from_sql(ty, raw)?)),
            Type::CHAR => {
                SqlValue::Text(char::from(i8::from_sql(ty, raw)?.to_ne_bytes()[0]).to_string())
            }
            Type::FLOAT4 => SqlValue::Real(f64::from(f32::from_sql(ty, raw)?)),
            Type::FLOAT8 => SqlValue::Real(f64::from_sql(ty, raw)?),
            Type::NUMERIC => numeric(raw)?,
            Type::JSONB => {
                SqlValue::Text(std::str::from_utf8(raw.get(1..).unwrap_or_default())?.to_owned())
            }
            Type::UUID => SqlValue::Text(uuid(raw)?),
            Type::BYTEA => SqlValue::Blob(raw.to_vec()),
            Type::TIMESTAMPTZ | Type::TIMESTAMP => SqlValue::Text(
                match infinite(i64::from_be_bytes(take(raw, 0)?), i64::MAX, i64::MIN) {
                    Some(infinity) => infinity.to_owned(),
                    None if *ty == Type::TIMESTAMPTZ => DateTime::<Utc>::from_sql(ty, raw)
                        .map_err(|_| OUT_OF_RANGE)?
                        .format(TIME_FORMAT)
                        .to_string(),
                    None => NaiveDateTime::from_sql(ty, raw)
                        .map_err(|_| OUT_OF_RANGE)?
                        .format(TIME_FORMAT)
                        .to_string(),
                },
            ),
            Type::DATE => SqlValue::Text(
                match infinite(i32::from_be_bytes(take(raw, 0)?), i32::MAX, i32::MIN) {
                    Some(infinity) => infinity.to_owned(),
                    None => NaiveDate::from_sql(ty, raw)
                        .map_err(|_| OUT_OF_RANGE)?
                        .to_string(),
                },
            ),
            Type::TIME => SqlValue::Text(NaiveTime::from_sql(ty, raw)?.to_string()),
            Type::INTERVAL => SqlValue::Text(interval(raw)?),
            Type::VOID => SqlValue::Null,
            // text, varchar, char(n), name, unknown, json: UTF-8 as it is.
            _ => SqlValue::Text(std::str::from_utf8(raw)?.to_owned()),
        };
        Ok(Self(value))
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Self, Boxed> {
        Ok(Self(SqlValue::Null))
    }

    fn accepts(ty: &Type) -> bool {
        shown(ty)
    }
}

/// Why a time is not shown: PostgreSQL keeps years up to 294276, the
/// calendar roster shows them with up to 262143.
const OUT_OF_RANGE: &str = "a time past the year 262143";

/// `infinity` or `-infinity` when `value` is PostgreSQL's mark for them.
fn infinite<T: PartialEq>(value: T, max: T, min: T) -> Option<&'static str> {
    if value == max {
        Some("infinity")
    } else if value == min {
        Some("-infinity")
    } else {
        None
    }
}

/// Reads `N` bytes of `raw` at `at`.
fn take<const N: usize>(raw: &[u8], at: usize) -> std::result::Result<[u8; N], Boxed> {
    raw.get(at..at + N)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| "a value shorter than its type".into())
}

/// A `numeric`: an integer when it is whole and fits in 64 bits, its
/// decimal text otherwise (`NaN` and the infinities as PostgreSQL writes
/// them).
fn numeric(raw: &[u8]) -> std::result::Result<SqlValue, Boxed> {
    let ndigits = usize::from(u16::from_be_bytes(take(raw, 0)?));
    let weight = i32::from(i16::from_be_bytes(take(raw, 2)?));
    let sign = u16::from_be_bytes(take(raw, 4)?);
    let dscale = usize::from(u16::from_be_bytes(take(raw, 6)?));
    match sign {
        0xC000 => return Ok(SqlValue::Text("NaN".to_owned())),
        0xD000 => return Ok(SqlValue::Text("Infinity".to_owned())),
        0xF000 => return Ok(SqlValue::Text("-Infinity".to_owned())),
        _ => {}
    }
    let digits: Vec<u16> = (0..ndigits)
        .map(|i| take(raw, 8 + 2 * i).map(u16::from_be_bytes))
        .collect::<std::result::Result<_, _>>()?;
    // Base-10000 digits: digit i is worth 10000^(weight - i).
    let mut whole = String::new();
    for position in 0..=weight.max(0) {
        let digit = usize::try_from(position)
            .ok()
            .and_then(|i| digits.get(i))
            .copied()
            .unwrap_or(0);
        if weight < 0 {
            break;
        }
        if whole.is_empty() {
            whole = digit.to_string();
        } else {
            whole.push_str(&format!("{digit:04}"));
        }
    }
    if whole.is_empty() {
        whole.push('0');
    }
    let mut fraction = String::new();
    let mut position = weight + 1;
    while fraction.len() < dscale {
        let digit = if position < 0 {
            0
        } else {
            usize::try_from(position)
                .ok()
                .and_then(|i| digits.get(i))
                .copied()
                .unwrap_or(0)
        };
        fraction.push_str(&format!("{digit:04}"));
        position += 1;
    }
    fraction.truncate(dscale);
    let negative = sign == 0x4000;
    if dscale == 0
        && let Ok(n) = whole.parse::<i64>()
    {
        return Ok(SqlValue::Integer(if negative { -n } else { n }));
    }
    let minus = if negative { "-" } else { "" };
    Ok(SqlValue::Text(if fraction.is_empty() {
        format!("{minus}{whole}")
    } else {
        format!("{minus}{whole}.{fraction}")
    }))
}

/// A `uuid` in its usual text form.
fn uuid(raw: &[u8]) -> std::result::Result<String, Boxed> {
    let bytes: [u8; 16] = take(raw, 0)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// An `interval` as PostgreSQL writes it by default: `1 year 2 mons 3 days
/// 04:05:06.5`.
fn interval(raw: &[u8]) -> std::result::Result<String, Boxed> {
    let micros = i64::from_be_bytes(take(raw, 0)?);
    let days = i32::from_be_bytes(take(raw, 8)?);
    let months = i32::from_be_bytes(take(raw, 12)?);
    let mut parts = Vec::new();
    let plural = |n: i32| if n == 1 || n == -1 { "" } else { "s" };
    let (years, months) = (months / 12, months % 12);
    if years != 0 {
        parts.push(format!("{years} year{}", plural(years)));
    }
    if months != 0 {
        parts.push(format!("{months} mon{}", plural(months)));
    }
    if days != 0 {
        parts.push(format!("{days} day{}", plural(days)));
    }
    if micros != 0 || parts.is_empty() {
        let sign = if micros < 0 { "-" } else { "" };
        let total = micros.unsigned_abs();
        let (seconds, fraction) = (total / 1_000_000, total % 1_000_000);
        let mut clock = format!(
            "{sign}{:02}:{:02}:{:02}",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        );
        if fraction != 0 {
            let digits = format!("{fraction:06}");
            clock.push('.');
            clock.push_str(digits.trim_end_matches('0'));
        }
        parts.push(clock);
    }
    Ok(parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_statements_are_found() {
        for blank in ["", "  ;; ", "-- a comment", "/* x */ ;\n-- y\n", "/* open"] {
            assert!(is_blank(blank), "{blank:?}");
        }
        for statement in ["SELECT 1", "-- c\nSELECT 1", "/* c */ VALUES (1)"] {
            assert!(!is_blank(statement), "{statement:?}");
        }
    }

    #[test]
    fn copy_is_found_as_the_first_word() {
        for copy in [
            "COPY t TO STDOUT",
            " /* c */ copy t FROM STDIN",
            "-- c\nCopy\tt",
        ] {
            assert!(starts_with_word(copy, "copy"), "{copy:?}");
        }
        for other in ["SELECT 'COPY'", "copying", "copy_table", "cop", ""] {
            assert!(!starts_with_word(other, "copy"), "{other:?}");
        }
    }

    #[test]
    fn commands_that_change_rows_are_found_by_their_first_word() {
        for changing in [
            "INSERT INTO t VALUES (1)",
            "update t SET a = 1 RETURNING a",
            " /* c */ Delete FROM t",
            "-- c\nMERGE INTO t USING u ON true WHEN MATCHED THEN DELETE",
        ] {
            assert!(changes_rows(changing), "{changing:?}");
        }
        for query in [
            "SELECT 1",
            "WITH d AS (DELETE FROM t RETURNING a) SELECT a FROM d",
            "VALUES (1)",
            "updates",
            "",
        ] {
            assert!(!changes_rows(query), "{query:?}");
        }
    }

    fn numeric_bytes(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&u16::try_from(digits.len()).unwrap_or(0).to_be_bytes());
        raw.extend_from_slice(&weight.to_be_bytes());
        raw.extend_from_slice(&sign.to_be_bytes());
        raw.extend_from_slice(&dscale.to_be_bytes());
        for digit in digits {
            raw.extend_from_slice(&digit.to_be_bytes());
        }
        raw
    }

    #[test]
    fn numerics_are_integers_when_whole_and_text_otherwise() -> std::result::Result<(), Boxed> {
        assert_eq!(
            numeric(&numeric_bytes(0, 0, 0, &[0]))?,
            SqlValue::Integer(0)
        );
        assert_eq!(numeric(&numeric_bytes(0, 0, 0, &[]))?, SqlValue::Integer(0));
        assert_eq!(
            numeric(&numeric_bytes(1, 0, 0, &[12, 3456]))?,
            SqlValue::Integer(123_456)
        );
        assert_eq!(
            numeric(&numeric_bytes(2, 0x4000, 0, &[1]))?,
            SqlValue::Integer(-100_000_000)
        );
        assert_eq!(
            numeric(&numeric_bytes(0, 0, 2, &[3, 1400]))?,
            SqlValue::Text("3.14".to_owned())
        );
        assert_eq!(
            numeric(&numeric_bytes(-1, 0x4000, 5, &[50]))?,
            SqlValue::Text("-0.00500".to_owned())
        );
        assert_eq!(
            numeric(&numeric_bytes(5, 0, 0, &[1]))?,
            SqlValue::Text("100000000000000000000".to_owned())
        );
        Ok(())
    }

    #[test]
    fn intervals_read_as_postgresql_writes_them() -> std::result::Result<(), Boxed> {
        let bytes = |micros: i64, days: i32, months: i32| {
            let mut raw = micros.to_be_bytes().to_vec();
            raw.extend_from_slice(&days.to_be_bytes());
            raw.extend_from_slice(&months.to_be_bytes());
            raw
        };
        assert_eq!(interval(&bytes(0, 0, 0))?, "00:00:00");
        assert_eq!(
            interval(&bytes(3_723_500_000, 1, 14))?,
            "1 year 2 mons 1 day 01:02:03.5"
        );
        assert_eq!(interval(&bytes(-1_000_000, 0, 0))?, "-00:00:01");
        Ok(())
    }
}
