//! Ad-hoc SQL through the library (`SqliteRegistry::query`, `query_each`):
//! every statement a person may type either runs or is refused with an error
//! that says what was wrong, in bounded time and memory.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::TempRegistry;
use roster::{AgentInfo, AgentRegistry, Error, ErrorKind, Result, SqlAccess, SqlOptions, SqlValue};

const FOREVER: &str =
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n";

fn registry() -> Result<TempRegistry> {
    let registry = TempRegistry::new();
    registry.register(AgentInfo {
        id: "a".into(),
        ..AgentInfo::default()
    })?;
    Ok(registry)
}

#[test]
fn no_statement_at_all_is_named_as_such() -> Result<()> {
    let registry = registry()?;
    for (sql, access) in [
        ("", SqlAccess::ReadOnly),
        ("   \n", SqlAccess::ReadOnly),
        ("-- just a comment", SqlAccess::ReadOnly),
        ("/* c */", SqlAccess::ReadWrite),
        (";", SqlAccess::ReadOnly),
        (";;", SqlAccess::ReadWrite),
    ] {
        let err = registry.query(sql, access).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid sql: no SQL statement to run (the text is empty, a comment or only semicolons)",
            "{sql:?}"
        );
    }
    let err = registry
        .query("SELECT 1; SELECT 2", SqlAccess::ReadOnly)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let err = registry.query("SELECT ?", SqlAccess::ReadOnly).unwrap_err();
    assert!(err.to_string().contains("has parameters"), "{err}");
    Ok(())
}

#[test]
fn read_only_forms_run_and_writes_are_refused_unchanged() -> Result<()> {
    let registry = registry()?;
    let mode = registry.query("PRAGMA journal_mode", SqlAccess::ReadOnly)?;
    assert_eq!(mode.rows, [[SqlValue::Text("wal".into())]]);
    let plan = registry.query(
        "EXPLAIN QUERY PLAN UPDATE agents SET max_load = 2 WHERE id = 'a'",
        SqlAccess::ReadOnly,
    )?;
    assert!(!plan.rows.is_empty());
    for write in [
        "UPDATE agents SET max_load = 2",
        "DELETE FROM agents",
        "INSERT INTO capabilities VALUES ('a', 0, 'x')",
        "CREATE TABLE t (x)",
        "PRAGMA user_version = 1",
        "PRAGMA journal_mode = delete",
    ] {
        let err = registry.query(write, SqlAccess::ReadOnly).unwrap_err();
        assert!(matches!(err, Error::WriteRefused), "{write}: {err:?}");
    }
    assert_eq!(registry.get("a")?.max_load, 0);
    assert_eq!(registry.list()?.len(), 1);
    Ok(())
}

#[test]
fn pragmas_roster_owns_cannot_be_set_by_hand() -> Result<()> {
    let registry = registry()?;
    for pragma in [
        "PRAGMA journal_mode = delete",
        "PRAGMA journal_mode=TRUNCATE",
        "PRAGMA user_version = 1",
        "PRAGMA application_id = 7",
        "PRAGMA writable_schema = 1",
    ] {
        let err = registry.query(pragma, SqlAccess::ReadWrite).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{pragma}: {err}");
        assert!(
            err.to_string().contains("belongs to roster"),
            "{pragma}: {err}"
        );
    }
    // Setting WAL again is harmless, and reading any of them is fine.
    registry.query("PRAGMA journal_mode = wal", SqlAccess::ReadWrite)?;
    let version = registry.query("PRAGMA user_version", SqlAccess::ReadWrite)?;
    assert_eq!(
        version.rows,
        [[SqlValue::Integer(roster::SqliteRegistry::SCHEMA_VERSION)]]
    );
    // The registry still opens and works.
    roster::SqliteRegistry::open(registry.path())?.heartbeat("a")?;
    Ok(())
}

#[test]
fn a_statement_that_never_ends_is_interrupted_in_time() -> Result<()> {
    let registry = registry()?;
    let options = SqlOptions::new(SqlAccess::ReadOnly).timeout(Some(Duration::from_millis(200)));
    let err = registry
        .query_each(FOREVER, &options, |_, _| Ok(()))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Interrupted, "{err}");
    assert!(
        err.to_string()
            .starts_with("interrupted: the statement ran for more than 200ms"),
        "{err}"
    );
    // A write that runs too long changes nothing.
    let write = "UPDATE agents SET max_load = (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n)";
    let options = SqlOptions::new(SqlAccess::ReadWrite).timeout(Some(Duration::from_millis(200)));
    let err = registry
        .query_each(write, &options, |_, _| Ok(()))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Interrupted, "{err}");
    assert_eq!(registry.get("a")?.max_load, 0);
    Ok(())
}

#[test]
fn a_statement_is_cancelled_when_asked() -> Result<()> {
    let registry = registry()?;
    let cancel = Arc::new(AtomicBool::new(false));
    let options = SqlOptions::new(SqlAccess::ReadOnly)
        .timeout(None)
        .cancel(Arc::clone(&cancel));
    let mut seen = 0;
    let err = registry
        .query_each(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT i FROM n",
            &options,
            |_, _| {
                seen += 1;
                if seen == 1000 {
                    cancel.store(true, Ordering::Relaxed);
                }
                Ok(())
            },
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "interrupted: the statement was cancelled; nothing was changed"
    );
    assert!(seen >= 1000);
    Ok(())
}

#[test]
fn rows_stream_and_writes_count_their_changes() -> Result<()> {
    let registry = registry()?;
    let mut last = 0;
    let summary = registry.query_each(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 300000) SELECT i FROM n",
        &SqlOptions::new(SqlAccess::ReadOnly),
        |columns, row| {
            assert_eq!(columns, ["i"]);
            if let [SqlValue::Integer(i)] = row {
                assert_eq!(*i, last + 1);
                last = *i;
            }
            Ok(())
        },
    )?;
    assert_eq!((summary.rows, last, summary.changes), (300_000, 300_000, 0));
    for id in ["b", "c"] {
        registry.register(AgentInfo {
            id: id.into(),
            ..AgentInfo::default()
        })?;
    }
    let summary = registry.query_each(
        "UPDATE agents SET max_load = 5 WHERE id <> 'a'",
        &SqlOptions::new(SqlAccess::ReadWrite),
        |_, _| Ok(()),
    )?;
    assert_eq!((summary.rows, summary.changes), (0, 2));
    // An error from the callback stops the statement and comes back as is.
    let err = registry
        .query_each("SELECT id FROM agents", &SqlOptions::default(), |_, _| {
            Err(Error::NoEligibleAgent)
        })
        .unwrap_err();
    assert!(matches!(err, Error::NoEligibleAgent));
    Ok(())
}
