//! Behaviour only `SqliteRegistry` has: files, reopening, sharing, the schema
//! contract, and refusing files it must not touch.

mod common;

use std::fs;
use std::path::Path;

use chrono::{TimeDelta, Utc};
use common::TempRegistry;
use roster::{
    AgentInfo, AgentRegistry, AgentStatus, Durability, Error, Result, SqliteOptions, SqliteRegistry,
};
use rusqlite::Connection;

fn agent(id: &str, capabilities: &[&str]) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        name: format!("agent {id}"),
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        status: AgentStatus::Available,
        last_heartbeat: Utc::now(),
        current_load: 0,
        max_load: 2,
        ..AgentInfo::default()
    }
}

fn raw(path: &Path) -> Connection {
    Connection::open(path).expect("open raw connection")
}

#[test]
fn state_survives_drop_and_reopen_field_for_field() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.db");
    let before = {
        let registry = SqliteRegistry::open(&path)?;
        registry.register(agent("b", &["x", "y"]))?;
        registry.register(AgentInfo {
            status: AgentStatus::Busy,
            current_load: 2,
            last_heartbeat: Utc::now() - TimeDelta::nanoseconds(123_456_789),
            ..agent("a", &["z"])
        })?;
        registry.register(agent("c", &[]))?;
        registry.heartbeat("c")?;
        registry.list()?
    };
    let reopened = SqliteRegistry::open(&path)?;
    assert_eq!(reopened.list()?, before);
    assert_eq!(before.len(), 3);
    Ok(())
}

#[test]
fn two_handles_on_one_file_see_each_other_at_once() -> Result<()> {
    let one = TempRegistry::new();
    let two = SqliteRegistry::open(one.path())?;
    one.register(agent("a", &["x"]))?;
    assert_eq!(two.get("a")?, one.get("a")?);
    two.heartbeat("a")?;
    assert_eq!(one.get("a")?.last_heartbeat, two.get("a")?.last_heartbeat);
    two.deregister("a")?;
    assert!(matches!(one.get("a"), Err(Error::NotFound(_))));
    Ok(())
}

#[test]
fn the_file_is_in_wal_mode_with_the_roster_identity() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.db");
    let _registry = SqliteOptions::new()
        .durability(Durability::Full)
        .open(&path)?;
    let conn = raw(&path);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    let (app, version): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT application_id FROM pragma_application_id),
                    (SELECT user_version FROM pragma_user_version)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("identity");
    assert_eq!(app, 0x726f_7374, "application_id spells 'rost'");
    assert_eq!(version, SqliteRegistry::SCHEMA_VERSION);
    Ok(())
}

#[test]
fn schema_contract_tables_and_columns() -> Result<()> {
    let registry = TempRegistry::new();
    let conn = raw(registry.path());
    let columns = |table: &str| -> Vec<(String, String, bool)> {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT name, type, \"notnull\" FROM pragma_table_info('{table}')"
            ))
            .expect("table_info");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
    };
    let owned = |cols: &[(&str, &str)]| -> Vec<(String, String, bool)> {
        cols.iter()
            .map(|(n, t)| (n.to_string(), t.to_string(), true))
            .collect()
    };
    let mut agents = owned(&[
        ("id", "TEXT"),
        ("name", "TEXT"),
        ("status", "TEXT"),
        ("last_heartbeat", "TEXT"),
        ("current_load", "INTEGER"),
        ("max_load", "INTEGER"),
        ("drained", "INTEGER"),
    ]);
    // Optional: NULL when unknown.
    for (name, kind) in [
        ("host", "TEXT"),
        ("pid", "INTEGER"),
        ("started_at", "TEXT"),
        ("registered_at", "TEXT"),
    ] {
        agents.push((name.into(), kind.into(), false));
    }
    assert_eq!(columns("agents"), agents);
    assert_eq!(
        columns("metadata"),
        owned(&[("agent_id", "TEXT"), ("key", "TEXT"), ("value", "TEXT")])
    );
    assert_eq!(
        columns("capabilities"),
        owned(&[
            ("agent_id", "TEXT"),
            ("position", "INTEGER"),
            ("capability", "TEXT")
        ])
    );
    let fk: (String, String, String, String) = conn
        .query_row(
            "SELECT \"table\", \"from\", \"to\", on_delete FROM pragma_foreign_key_list('capabilities')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("foreign key");
    assert_eq!(
        fk,
        (
            "agents".into(),
            "agent_id".into(),
            "id".into(),
            "CASCADE".into()
        )
    );
    Ok(())
}

/// Writes that break the contract are refused by the database itself, with
/// foreign keys off as in the sqlite3 shell.
#[test]
fn schema_contract_constraints_hold_without_foreign_keys() -> Result<()> {
    let registry = TempRegistry::new();
    let path = registry.path();
    registry.register(agent("a", &["x", "y"]))?;
    registry.register(agent("b", &["x"]))?;
    let conn = raw(path);
    conn.pragma_update(None, "foreign_keys", false)
        .expect("fk off");
    let refused = [
        ("unknown status", "UPDATE agents SET status = 'sleeping'"),
        ("negative load", "UPDATE agents SET current_load = -1"),
        (
            "over max",
            "UPDATE agents SET current_load = 3 WHERE id = 'a'",
        ),
        ("text load", "UPDATE agents SET max_load = 'lots'"),
        (
            "empty id",
            "INSERT INTO agents (id, name, last_heartbeat) VALUES ('', 'n', '2026-01-01 00:00:00.000000000')",
        ),
        (
            "control char",
            "INSERT INTO agents (id, name, last_heartbeat) VALUES ('x' || char(10), 'n', '2026-01-01 00:00:00.000000000')",
        ),
        (
            "sqlite datetime",
            "UPDATE agents SET last_heartbeat = datetime('now')",
        ),
        (
            "impossible date",
            "UPDATE agents SET last_heartbeat = '2026-02-30 00:00:00.000000000'",
        ),
        ("id change", "UPDATE agents SET id = 'c' WHERE id = 'a'"),
        (
            "orphan capability",
            "INSERT INTO capabilities VALUES ('ghost', 0, 'x')",
        ),
        (
            "move capability to nobody",
            "UPDATE capabilities SET agent_id = 'ghost'",
        ),
        (
            "duplicate capability",
            "INSERT INTO capabilities VALUES ('a', 5, 'x')",
        ),
    ];
    for (what, sql) in refused {
        assert!(conn.execute(sql, []).is_err(), "{what} was accepted: {sql}");
    }
    // The documented way to write a heartbeat by hand is accepted.
    conn.execute(
        "UPDATE agents SET last_heartbeat = strftime('%Y-%m-%d %H:%M:%f000000', 'now') WHERE id = 'b'",
        [],
    )
    .expect("documented heartbeat");
    conn.execute("DELETE FROM agents WHERE id = 'a'", [])
        .expect("delete");
    common::assert_healthy(path);
    assert_eq!(registry.list()?.len(), 1);
    assert_eq!(registry.get("b")?.capabilities, ["x"]);
    assert!((Utc::now() - registry.get("b")?.last_heartbeat) < TimeDelta::seconds(60));
    Ok(())
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notes.txt");
    let content = "these are my notes, not a database\n".repeat(200);
    fs::write(&path, &content).expect("write");
    let err = SqliteRegistry::open(&path).unwrap_err();
    assert!(matches!(err, Error::NotADatabase { .. }), "{err:?}");
    assert!(err.to_string().contains("not an SQLite database"), "{err}");
    assert_eq!(fs::read_to_string(&path).expect("read"), content);
    let entries = fs::read_dir(dir.path()).expect("dir").count();
    assert_eq!(entries, 1, "no -wal or -shm file was left");
}

#[test]
fn another_programs_database_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("other.db");
    {
        let conn = raw(&path);
        conn.execute_batch(
            "CREATE TABLE invoices (id INTEGER PRIMARY KEY); INSERT INTO invoices VALUES (1);",
        )
        .expect("setup");
    }
    let before = fs::read(&path).expect("read");
    let err = SqliteRegistry::open(&path).unwrap_err();
    assert!(matches!(err, Error::NotARegistry { .. }), "{err:?}");
    assert_eq!(fs::read(&path).expect("read"), before);
}

#[test]
fn a_newer_schema_version_is_refused_untouched() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.db");
    SqliteRegistry::open(&path)?.register(agent("a", &["x"]))?;
    raw(&path)
        .pragma_update(None, "user_version", 99)
        .expect("bump version");
    // What the file holds, as SQLite reads it. (Its bytes are no measure: a
    // connection of the first handle's pool may still be closing, and the
    // last connection to close checkpoints the WAL into the file.)
    let contents = || -> Vec<String> {
        let conn = raw(&path);
        let mut stmt = conn
            .prepare(
                "SELECT 'version ' || (SELECT user_version FROM pragma_user_version)
                 UNION ALL SELECT 'app ' || (SELECT application_id FROM pragma_application_id)
                 UNION ALL SELECT type || ' ' || name || ' ' || coalesce(sql, '') FROM sqlite_schema
                 UNION ALL SELECT 'agent ' || id || ' ' || last_heartbeat FROM agents",
            )
            .expect("prepare");
        stmt.query_map([], |r| r.get(0))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
    };
    let before = contents();
    let err = SqliteRegistry::open(&path).unwrap_err();
    match &err {
        Error::SchemaTooNew {
            found, supported, ..
        } => assert_eq!((*found, *supported), (99, SqliteRegistry::SCHEMA_VERSION)),
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert!(err.to_string().contains("upgrade roster"), "{err}");
    assert_eq!(contents(), before);
    Ok(())
}

#[test]
fn a_missing_or_unusable_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no/such/dir/r.db");
    let err = SqliteRegistry::open(&missing).unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err:?}");
    assert!(err.to_string().starts_with("cannot open "), "{err}");
    assert!(!missing.parent().expect("parent").exists());

    // A directory where the file should be.
    let err = SqliteRegistry::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err:?}");

    // A directory nobody can create files in, not even root.
    let err = SqliteRegistry::open("/proc/roster-test.db").unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err:?}");
    assert!(!Path::new("/proc/roster-test.db").exists());
}

#[test]
fn options_out_of_range_are_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.db");
    let cases = [
        (
            SqliteOptions::new().pool_size(0),
            "invalid pool_size: 0 connections: must be 1 to 1024",
        ),
        (
            SqliteOptions::new().pool_size(u32::MAX),
            "invalid pool_size: 4294967295 connections: must be 1 to 1024",
        ),
        (
            SqliteOptions::new().busy_timeout(std::time::Duration::from_secs(25 * 86_400)),
            "invalid busy_timeout: 2160000s is longer than SQLite can wait (2147483.647s, about 24.8 days)",
        ),
    ];
    for (options, message) in cases {
        let err = options.open(&path).unwrap_err();
        assert_eq!(err.to_string(), message);
        assert_eq!(err.kind(), roster::ErrorKind::InvalidInput);
        assert!(!path.exists());
    }
    SqliteOptions::new()
        .busy_timeout(roster::MAX_BUSY_TIMEOUT)
        .pool_size(roster::MAX_POOL_SIZE)
        .open(&path)
        .expect("the limits themselves are fine");
}

#[test]
fn a_reader_that_does_not_create_gets_no_registry_for_a_missing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("typo.db");
    let err = SqliteOptions::new().create(false).open(&path).unwrap_err();
    assert!(matches!(&err, Error::NoRegistry { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("no registry at {}", path.display())
    );
    assert_eq!(err.kind(), roster::ErrorKind::Unusable);
    assert!(!path.exists(), "nothing was created");
    SqliteRegistry::open(&path).expect("create");
    SqliteOptions::new()
        .create(false)
        .open(&path)
        .expect("an existing registry opens");
}

#[test]
fn databases_that_cannot_hold_a_wal_fail_at_once() {
    for path in [":memory:", ""] {
        let err = SqliteRegistry::open(path).unwrap_err();
        assert_eq!(err.kind(), roster::ErrorKind::Unusable, "{path:?}: {err}");
        assert!(
            err.to_string().contains("write-ahead log"),
            "{path:?}: {err}"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let uri = format!("file:{}?immutable=1", dir.path().join("x.db").display());
    let err = SqliteRegistry::open(&uri).unwrap_err();
    assert_eq!(err.kind(), roster::ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("is an SQLite URI"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
}

#[test]
fn an_empty_existing_file_becomes_a_registry() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("empty.db");
    fs::write(&path, b"").expect("touch");
    let registry = SqliteRegistry::open(&path)?;
    registry.register(agent("a", &[]))?;
    assert_eq!(registry.list()?.len(), 1);
    Ok(())
}

#[test]
fn a_version_1_file_is_migrated_with_its_data() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v1.db");
    {
        let conn = raw(&path);
        conn.execute_batch(include_str!("../migrations/sqlite/0001_agents.sql"))
            .expect("schema v1");
        conn.execute_batch(
            "PRAGMA user_version = 1;
             INSERT INTO agents VALUES ('old', 'Old agent', 'busy', '2025-06-01 12:00:00.000000001', 1, 3);
             INSERT INTO capabilities VALUES ('old', 0, 'x'), ('old', 1, 'w');",
        )
        .expect("v1 data");
    }
    let registry = SqliteRegistry::open(&path)?;
    let old = registry.get("old")?;
    assert_eq!(
        (old.status, old.current_load, old.max_load),
        (AgentStatus::Busy, 1, 3)
    );
    assert_eq!(old.capabilities, ["x", "w"]);
    assert_eq!(old.last_heartbeat.timestamp_subsec_nanos(), 1);
    let version: i64 = raw(&path)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, SqliteRegistry::SCHEMA_VERSION);
    // The claim indexes of version 2 work on the migrated rows.
    let claimed = registry
        .claim(
            &roster::Task {
                id: "t".into(),
                labels: vec!["w".into()],
                priority: roster::Priority::Medium,
            },
            None,
        )?
        .agent;
    assert_eq!((claimed.id.as_str(), claimed.current_load), ("old", 2));
    Ok(())
}

/// A reader that holds a snapshot stops checkpoints, so the -wal file grows
/// while it reads; once it is gone, the file is cut back to the limit.
#[test]
fn the_wal_file_shrinks_back_after_a_long_reader() -> Result<()> {
    let registry = TempRegistry::named("wal.db");
    for i in 0..50 {
        registry.register(agent(&format!("a{i:02}"), &["x"]))?;
    }
    let wal = registry.dir().join("wal.db-wal");
    let reader = raw(registry.path());
    reader
        .execute_batch("BEGIN; SELECT count(*) FROM agents;")
        .expect("long read");
    for i in 0..6000 {
        registry.heartbeat(&format!("a{:02}", i % 50))?;
    }
    let grown = fs::metadata(&wal).expect("wal").len();
    assert!(
        grown > 20 * 1024 * 1024,
        "the long reader let the WAL grow: {grown}"
    );
    reader.execute_batch("COMMIT;").expect("end read");
    for i in 0..3000 {
        registry.heartbeat(&format!("a{:02}", i % 50))?;
    }
    let after = fs::metadata(&wal).expect("wal").len();
    assert!(
        after <= 16 * 1024 * 1024 + 65536,
        "the WAL was not cut back: {after}"
    );
    Ok(())
}

/// roster's connections checkpoint every 4000 pages, not every 1000 (SQLite's
/// default): the -wal file of a heartbeating registry outgrows 1000 frames,
/// and a checkpoint still comes before it holds 4001.
#[test]
fn the_wal_file_is_checkpointed_every_4000_pages() -> Result<()> {
    let registry = TempRegistry::named("interval.db");
    for i in 0..50 {
        registry.register(agent(&format!("a{i:02}"), &["x"]))?;
    }
    let wal = registry.dir().join("interval.db-wal");
    // A -wal file is a 32-byte header, then frames of a 24-byte header and
    // a 4 KiB page.
    let frames = || (fs::metadata(&wal).expect("wal").len() - 32) / (24 + 4096);
    for i in 0..2500 {
        registry.heartbeat(&format!("a{:02}", i % 50))?;
    }
    let grown = frames();
    assert!(
        grown > 2000,
        "checkpointed before 4000 pages: {grown} frames"
    );
    // Past 8000 heartbeats, two checkpoints were due; the file is reused
    // from its start after each, never grown past one interval.
    for i in 0..6000 {
        registry.heartbeat(&format!("a{:02}", i % 50))?;
    }
    let most = frames();
    assert!(most <= 4001, "no checkpoint by 4000 pages: {most} frames");
    Ok(())
}

#[test]
fn ad_hoc_sql_is_read_only_unless_asked() -> Result<()> {
    use roster::{SqlAccess, SqlValue};
    let registry = TempRegistry::named("adhoc.db");
    registry.register(agent("a", &["x"]))?;
    for writes in [
        "DELETE FROM agents",
        "UPDATE agents SET name = 'b'",
        "PRAGMA user_version = 7",
        "CREATE TABLE t (x)",
    ] {
        match registry.query(writes, SqlAccess::ReadOnly) {
            Err(Error::WriteRefused) => {}
            other => panic!("{writes}: expected WriteRefused, got {other:?}"),
        }
    }
    for bad in ["", "SELECT 1; SELECT 2", "SELECT * FROM nowhere"] {
        match registry.query(bad, SqlAccess::ReadOnly) {
            Err(Error::Invalid { field: "sql", .. }) => {}
            other => panic!("{bad:?}: expected invalid sql, got {other:?}"),
        }
    }
    let version: i64 = raw(registry.path())
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, SqliteRegistry::SCHEMA_VERSION);
    assert_eq!(registry.get("a")?.name, "agent a");
    let changed = registry.query(
        "UPDATE agents SET name = 'renamed' RETURNING id, name",
        SqlAccess::ReadWrite,
    )?;
    assert_eq!(
        changed.rows,
        [[SqlValue::Text("a".into()), SqlValue::Text("renamed".into())]]
    );
    assert_eq!(registry.get("a")?.name, "renamed");
    // With write access, deleting an agent still takes its capabilities.
    registry.query("DELETE FROM agents WHERE id = 'a'", SqlAccess::ReadWrite)?;
    let left = registry.query("SELECT count(*) FROM capabilities", SqlAccess::ReadOnly)?;
    assert_eq!(left.rows, [[SqlValue::Integer(0)]]);
    Ok(())
}

#[test]
fn a_user_version_changed_by_hand_is_named_not_index_already_exists() {
    let file = TempRegistry::new().close();
    let path = file.path().to_owned();
    let out = common::sqlite3(&path, "PRAGMA user_version = 1;", common::OnError::Stop);
    assert!(out.status.success());
    let err = SqliteRegistry::open(&path).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(
            "the file's PRAGMA user_version (1) is older than its tables; was it changed by hand?"
        ),
        "{message}"
    );
    assert_eq!(err.kind(), roster::ErrorKind::Unusable);
    // Nothing was changed: setting it back makes the file work again.
    let out = common::sqlite3(
        &path,
        &format!("PRAGMA user_version = {};", SqliteRegistry::SCHEMA_VERSION),
        common::OnError::Stop,
    );
    assert!(out.status.success());
    SqliteRegistry::open(&path).expect("the repaired file opens");
}

#[test]
fn another_programs_database_is_described_in_good_english() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("other.db");
    let out = common::sqlite3(&path, "CREATE TABLE t (x);", common::OnError::Stop);
    assert!(out.status.success());
    let err = SqliteRegistry::open(&path).unwrap_err();
    assert!(
        err.to_string()
            .contains("it holds 1 schema object and user_version 0 but no roster application_id"),
        "{err}"
    );
}
