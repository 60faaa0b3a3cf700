//! Opening a file safely: recognising it, switching it to WAL, migrating it.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, TransactionBehavior};

use crate::error::{DatabaseError, Error, Result};
use crate::sqlite::{db_error, is_busy};

/// The migrations, oldest first; the schema version of a file is the number
/// of them applied. Append only: a released file is never edited.
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_agents.sql"),
    include_str!("../../migrations/0002_claim_indexes.sql"),
];

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
                "it holds {} schema objects and user_version {} but no roster application_id",
                found.objects, found.user_version
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
        _ => Error::Open {
            path: path.to_owned(),
            source: DatabaseError::new(error),
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
    ensure_wal(conn, patience).map_err(|e| open_error(path, e))?;
    if found.user_version < LATEST_VERSION {
        migrate(path, conn, patience)?;
    }
    Ok(())
}

/// Switches the file to WAL (a setting stored in the file), retrying while
/// other connections hold the lock the switch needs.
fn ensure_wal(conn: &Connection, patience: Duration) -> rusqlite::Result<()> {
    let deadline = Instant::now() + patience;
    loop {
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
        if mode.eq_ignore_ascii_case("wal") {
            return Ok(());
        }
        match conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
            row.get::<_, String>(0)
        }) {
            Ok(_) => {}
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Applies the pending migrations in one IMMEDIATE transaction, re-reading
/// the version inside it so that two processes never apply the same one.
fn migrate(path: &Path, conn: &mut Connection, patience: Duration) -> Result<()> {
    let fail = |e: rusqlite::Error| {
        if is_busy(&e) {
            Error::Busy(patience)
        } else {
            db_error(e)
        }
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    let found = identity(&tx).map_err(fail)?;
    check_identity(path, &found)?;
    let applied = usize::try_from(found.user_version).unwrap_or(0);
    for (number, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(migration).map_err(|e| match e {
            // The message without the migration's whole text.
            rusqlite::Error::SqlInputError { msg, .. } => Error::Database(DatabaseError::message(
                format!("migration {} failed: {msg}", number + 1),
            )),
            other => fail(other),
        })?;
    }
    tx.pragma_update(None, "user_version", LATEST_VERSION)
        .map_err(fail)?;
    tx.commit().map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_valid() -> Result<()> {
        let mut conn = Connection::open_in_memory().map_err(db_error)?;
        migrate(Path::new(":memory:"), &mut conn, Duration::ZERO)?;
        let found = identity(&conn).map_err(db_error)?;
        assert_eq!(found.user_version, LATEST_VERSION);
        assert_eq!(found.application_id, APPLICATION_ID);
        // Applying again is a no-op, not an error.
        migrate(Path::new(":memory:"), &mut conn, Duration::ZERO)?;
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
