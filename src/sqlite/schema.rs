//! Opening a file safely: recognising it, switching it to WAL, migrating it.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior};

use crate::error::{DatabaseError, Error, ErrorKind, Result};
use crate::sqlite::retry::{Failure, classify, is_busy};
use crate::text::escape_bytes;

/// The migrations, oldest first; the schema version of a file is the number
/// of them applied. Append only: a released file is never edited.
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_agents.sql"),
    include_str!("../../migrations/sqlite/0002_claim_indexes.sql"),
    include_str!("../../migrations/sqlite/0003_text_rules.sql"),
    include_str!("../../migrations/sqlite/0004_drain_and_metadata.sql"),
    include_str!("../../migrations/sqlite/0005_claims.sql"),
    include_str!("../../migrations/sqlite/0006_events.sql"),
    include_str!("../../migrations/sqlite/0007_lean_claims.sql"),
    include_str!("../../migrations/sqlite/0008_quicker_release.sql"),
    include_str!("../../migrations/sqlite/0009_event_counter_rule.sql"),
];

/// A line of a migration where roster checks, before going on, that every
/// row was copied into the rebuilt tables (see [`check_copied`]).
const COPY_CHECK: &str = "\n-- roster: every row copied\n";

/// The newest schema version this build knows.
pub(crate) const LATEST_VERSION: i64 = MIGRATIONS.len() as i64;

/// `PRAGMA application_id` of a roster file: the bytes "rost".
pub(crate) const APPLICATION_ID: i64 = 0x726f_7374;

/// What a file says about itself before roster touches it.
struct Identity {
    application_id: i64,
    user_version: i64,
    objects: i64,
}

fn identity(conn: &Connection) -> rusqlite::Result<Identity> {
    conn.query_row(
        "SELECT (SELECT application_id FROM pragma_application_id),
                (SELECT user_version FROM pragma_user_version),
                (SELECT count(*) FROM sqlite_schema)",
        [],
        |row| {
            Ok(Identity {
                application_id: row.get(0)?,
                user_version: row.get(1)?,
                objects: row.get(2)?,
            })
        },
    )
}

/// Refuses a file that roster must not touch: another program's database,
/// or a roster database newer than this build.
fn check_identity(path: &Path, found: &Identity) -> Result<()> {
    match found.application_id {
        APPLICATION_ID if found.user_version > LATEST_VERSION => Err(Error::SchemaTooNew {
            path: path.to_owned(),
            found: found.user_version,
            supported: LATEST_VERSION,
        }),
        APPLICATION_ID => Ok(()),
        0 if found.objects == 0 && found.user_version == 0 => Ok(()),
        0 => Err(Error::NotARegistry {
            path: path.to_owned(),
            reason: format!(
                "it holds {} schema object{} and user_version {} but no roster application_id",
                found.objects,
                if found.objects == 1 { "" } else { "s" },
                found.user_version
            ),
        }),
        other => Err(Error::NotARegistry {
            path: path.to_owned(),
            reason: format!("its application_id is {other:#x}, roster's is {APPLICATION_ID:#x}"),
        }),
    }
}

/// Maps an error met while opening `path` to the error a caller should see.
pub(crate) fn open_error(path: &Path, error: rusqlite::Error) -> Error {
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => Error::NotADatabase {
            path: path.to_owned(),
        },
        _ if is_busy(&error) => Error::Open {
            path: path.to_owned(),
            source: DatabaseError::new(ErrorKind::Busy, error),
        },
        _ => Error::Open {
            path: path.to_owned(),
            source: DatabaseError::new(ErrorKind::Unusable, error),
        },
    }
}

/// Makes the file at `path` a roster registry of the latest schema version,
/// through `conn`, or refuses it untouched.
///
/// Safe when many processes open the same fresh file at once: the file is
/// checked before anything is written, the switch to WAL is retried while
/// another process holds the lock, and the schema version is read again
/// inside the IMMEDIATE transaction that applies the migrations.
pub(crate) fn prepare(path: &Path, conn: &mut Connection, patience: Duration) -> Result<()> {
    let found = identity(conn).map_err(|e| open_error(path, e))?;
    check_identity(path, &found)?;
    ensure_wal(path, conn, patience)?;
    if found.user_version < LATEST_VERSION {
        migrate(path, conn, patience)?;
    }
    Ok(())
}

/// Switches the file to WAL (a setting stored in the file), retrying while
/// other connections hold the lock the switch needs.
///
/// # Errors
///
/// [`Error::Open`] at once when the database cannot hold a WAL at all
/// (`:memory:`, a temporary database, an immutable file): SQLite then answers
/// with another mode instead of an error, and asking again would never end.
fn ensure_wal(path: &Path, conn: &Connection, patience: Duration) -> Result<()> {
    let deadline = Instant::now() + patience;
    loop {
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .map_err(|e| open_error(path, e))?;
        if mode.eq_ignore_ascii_case("wal") {
            return Ok(());
        }
        match conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
            row.get::<_, String>(0)
        }) {
            Ok(now) if now.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(now) => {
                return Err(Error::Open {
                    path: path.to_owned(),
                    source: DatabaseError::new(
                        ErrorKind::Unusable,
                        format!(
                            "the database stays in journal mode {now:?}: roster needs a file on a local filesystem that can hold a write-ahead log (not :memory:, not an empty path, not an immutable or read-only file)"
                        ),
                    ),
                });
            }
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(open_error(path, e)),
        }
    }
}

/// Applies the pending migrations in one IMMEDIATE transaction, re-reading
/// the version inside it so that two processes never apply the same one.
///
/// Foreign keys are off while it runs (a table rebuild drops and renames
/// tables; `PRAGMA foreign_keys` cannot change inside a transaction) and
/// `PRAGMA foreign_key_check` must come back empty before it commits.
fn migrate(path: &Path, conn: &mut Connection, patience: Duration) -> Result<()> {
    let fail = |e: rusqlite::Error| classify(e, patience);
    conn.pragma_update(None, "foreign_keys", false)
        .map_err(fail)?;
    let outcome = apply(path, conn, patience);
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(fail)?;
    outcome
}

fn apply(path: &Path, conn: &mut Connection, patience: Duration) -> Result<()> {
    let fail = |e: rusqlite::Error| classify(e, patience);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    let found = identity(&tx).map_err(fail)?;
    check_identity(path, &found)?;
    let applied = usize::try_from(found.user_version).unwrap_or(0);
    for (number, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let version = i64::try_from(number + 1).unwrap_or(i64::MAX);
        let run = |sql: &str| {
            tx.execute_batch(sql).map_err(|e| match e {
                // The message without the migration's whole text.
                rusqlite::Error::SqlInputError { msg, .. } => Error::Database(DatabaseError::new(
                    ErrorKind::Unusable,
                    format!("migration {version} failed: {msg}"),
                )),
                // The file says it is older than its tables are.
                rusqlite::Error::SqliteFailure(_, Some(msg)) if msg.contains("already exists") => {
                    Error::Database(DatabaseError::new(
                        ErrorKind::Unusable,
                        format!(
                            "migration {version} failed: {msg}: the file's PRAGMA user_version ({}) is older than its tables; was it changed by hand? Set it back to the version roster wrote (this build writes {LATEST_VERSION}) in the sqlite3 shell; nothing was changed",
                            found.user_version
                        ),
                    ))
                }
                other => fail(other),
            })
        };
        match migration.split_once(COPY_CHECK) {
            Some((copy, finish)) => {
                run(copy)?;
                check_copied(&tx, path, version).map_err(|e| e.into_error(patience))?;
                run(finish)?;
            }
            None => run(migration)?,
        }
    }
    let broken: i64 = tx
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| {
            row.get(0)
        })
        .map_err(fail)?;
    if broken > 0 {
        return Err(Error::Database(DatabaseError::new(
            ErrorKind::Unusable,
            format!("{broken} rows break a foreign key after the migrations; nothing was changed"),
        )));
    }
    tx.pragma_update(None, "user_version", LATEST_VERSION)
        .map_err(fail)?;
    tx.commit().map_err(fail)
}

/// The constraint named in a refused insert, or the whole message.
fn rule_name(error: &rusqlite::Error) -> String {
    let message = error.to_string();
    message
        .strip_prefix("CHECK constraint failed: ")
        .map_or(message.clone(), str::to_owned)
}

/// `text` as an SQL literal a person can paste: quoted when it is printable
/// UTF-8, `CAST(X'..' AS TEXT)` otherwise.
fn sql_text(text: &[u8], hex: &str) -> String {
    match std::str::from_utf8(text) {
        Ok(text) if !text.chars().any(char::is_control) => {
            format!("'{}'", text.replace('\'', "''"))
        }
        _ => format!("CAST(X'{hex}' AS TEXT)"),
    }
}

/// After a rebuild has copied the rows it accepts into `agents_v3` and
/// `capabilities_v3` (with `INSERT OR IGNORE`), refuses the upgrade if any
/// row was left behind, naming each and the rule it breaks.
fn check_copied(tx: &Transaction<'_>, path: &Path, version: i64) -> Result<(), Failure> {
    let mut refused = Vec::new();
    let mut left = tx.prepare(
        "SELECT CAST(id AS BLOB), hex(id) FROM agents WHERE id NOT IN (SELECT id FROM agents_v3)",
    )?;
    let rows = left.query_map([], |row| {
        Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (id, hex) = row?;
        let rule = tx
            .execute(
                "INSERT INTO agents_v3 (id, name, status, last_heartbeat, current_load, max_load)
                 SELECT id, name, status, last_heartbeat, current_load, max_load
                 FROM agents WHERE id = CAST(?1 AS TEXT)",
                [&id],
            )
            .err()
            .map_or_else(|| "a rule".to_owned(), |e| rule_name(&e));
        refused.push(format!(
            "agents row with id {} breaks {rule} (to delete it: DELETE FROM agents WHERE id = {})",
            escape_bytes(&id),
            sql_text(&id, &hex)
        ));
    }
    let mut left = tx.prepare(
        "SELECT CAST(agent_id AS BLOB), hex(agent_id), position FROM capabilities
         WHERE agent_id NOT IN (SELECT id FROM agents)
            OR (agent_id IN (SELECT id FROM agents_v3)
                AND (agent_id, position) NOT IN (SELECT agent_id, position FROM capabilities_v3))",
    )?;
    let rows = left.query_map([], |row| {
        Ok((
            row.get::<_, Vec<u8>>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (id, hex, position) = row?;
        let rule = tx
            .execute(
                "INSERT INTO capabilities_v3 (agent_id, position, capability)
                 SELECT agent_id, position, capability FROM capabilities
                 WHERE agent_id = CAST(?1 AS TEXT) AND position = ?2",
                rusqlite::params![id, position],
            )
            .err()
            .map_or_else(|| "a rule".to_owned(), |e| rule_name(&e));
        refused.push(format!(
            "capabilities row of agent {} at position {position} breaks {rule} (to delete it: DELETE FROM capabilities WHERE agent_id = {} AND position = {position})",
            escape_bytes(&id),
            sql_text(&id, &hex)
        ));
    }
    if refused.is_empty() {
        return Ok(());
    }
    Err(Failure::Roster(Error::UpgradeRefused {
        path: path.to_owned(),
        version,
        rows: refused,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_valid() -> Result<()> {
        let mut conn = Connection::open_in_memory().map_err(|e| classify(e, Duration::ZERO))?;
        migrate(Path::new(":memory:"), &mut conn, Duration::ZERO)?;
        let found = identity(&conn).map_err(|e| classify(e, Duration::ZERO))?;
        assert_eq!(found.user_version, LATEST_VERSION);
        assert_eq!(found.application_id, APPLICATION_ID);
        // Applying again is a no-op, not an error.
        migrate(Path::new(":memory:"), &mut conn, Duration::ZERO)?;
        Ok(())
    }

    /// The schema's GLOB classes refuse exactly what the Rust rules refuse,
    /// at both ends of every range and one past them.
    #[test]
    fn the_schema_and_the_rust_rules_agree_on_every_range() -> Result<()> {
        use crate::text::{BIDI_CONTROLS, FORMAT_CHARACTERS, Refuses, check_text};
        let mut conn = Connection::open_in_memory().map_err(|e| classify(e, Duration::ZERO))?;
        migrate(Path::new(":memory:"), &mut conn, Duration::ZERO)?;
        let mut points: Vec<u32> = vec![0x20, 0x41, 0x7E, 0xA0, 0xFFFD, 0x1F980, 0x10FFFF];
        for &(low, high) in FORMAT_CHARACTERS.iter().chain(BIDI_CONTROLS) {
            let (low, high) = (u32::from(low), u32::from(high));
            points.extend([low - 1, low, high, high + 1]);
        }
        points.extend(1..0x20);
        points.extend(0x7F..0xA0);
        for point in points.into_iter().filter_map(char::from_u32) {
            let text = format!("a{point}b");
            for (sql, refuses) in [
                (
                    "INSERT INTO agents (id, name, last_heartbeat) VALUES (?1, '', '2026-01-01 00:00:00.000000000')",
                    Refuses::FormatCharacters,
                ),
                (
                    "INSERT INTO agents (id, name, last_heartbeat) VALUES ('x', ?1, '2026-01-01 00:00:00.000000000')",
                    Refuses::BidiControls,
                ),
            ] {
                let stored = conn.execute(sql, [&text]).is_ok();
                let valid = check_text("text", &text, 128, refuses).is_ok();
                assert_eq!(
                    stored,
                    valid,
                    "U+{:04X} under {refuses:?}",
                    u32::from(point)
                );
                conn.execute("DELETE FROM agents", [])
                    .map_err(|e| classify(e, Duration::ZERO))?;
            }
        }
        Ok(())
    }

    #[test]
    fn a_foreign_database_is_refused() {
        let foreign = Identity {
            application_id: 0,
            user_version: 0,
            objects: 3,
        };
        let err = check_identity(Path::new("x.db"), &foreign).unwrap_err();
        assert!(matches!(err, Error::NotARegistry { .. }), "{err}");
        let other_app = Identity {
            application_id: 7,
            user_version: 1,
            objects: 0,
        };
        let err = check_identity(Path::new("x.db"), &other_app).unwrap_err();
        assert!(err.to_string().contains("application_id is 0x7"), "{err}");
    }
}
