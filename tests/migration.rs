//! Upgrading a file written by an older roster: version 2 files (built by
//! typing the released migrations into the real `sqlite3` shell) open with
//! every row and capability intact, refuse the upgrade when they hold rows the
//! new rules refuse, and upgrade once when many processes open them at once.

mod common;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use common::Rng;
use common::child::report;
use roster::{AgentInfo, AgentRegistry, Error, Result, SqliteRegistry};

/// Builds a version 2 file at `path` holding `agents` rows of every shape.
// The struct update stays: agents gain fields that version 2 never had.
#[allow(clippy::needless_update)]
fn version_2_file(path: &Path, extra_sql: &str) -> Vec<AgentInfo> {
    let mut sql = String::new();
    sql.push_str(include_str!("../migrations/sqlite/0001_agents.sql"));
    sql.push_str(include_str!("../migrations/sqlite/0002_claim_indexes.sql"));
    sql.push_str("PRAGMA user_version = 2; PRAGMA journal_mode = WAL; BEGIN;\n");
    let mut expected = Vec::new();
    for i in 0..500_u32 {
        let id = format!("agent-{i:04}");
        let nanos = i * 1_000_003 % 1_000_000_000;
        let time = format!(
            "2026-{:02}-{:02} {:02}:{:02}:{:02}.{nanos:09}",
            1 + i % 12,
            1 + i % 28,
            i % 24,
            i % 60,
            (i * 7) % 60
        );
        let status = ["available", "busy", "offline"][(i % 3) as usize];
        let max = i % 9;
        let load = if max == 0 { i % 5 } else { i % (max + 1) };
        let name = match i % 4 {
            0 => format!("Agent {i}"),
            1 => format!("名前 {i} 🦀"),
            2 => format!("a\u{2028}b {i}"),
            _ => format!("x\u{FFFD} {i}"),
        };
        sql.push_str(&format!(
            "INSERT INTO agents (id, name, status, last_heartbeat, current_load, max_load) VALUES ('{id}', '{name}', '{status}', '{time}', {load}, {max});\n"
        ));
        let capabilities: Vec<String> = (0..i % 6)
            .map(|c| format!("cap-{}", (i + c) % 11))
            .collect();
        for (position, capability) in capabilities.iter().enumerate() {
            sql.push_str(&format!(
                "INSERT INTO capabilities VALUES ('{id}', {position}, '{capability}');\n"
            ));
        }
        let last_heartbeat: DateTime<Utc> =
            chrono::NaiveDateTime::parse_from_str(&time, "%Y-%m-%d %H:%M:%S%.9f")
                .expect("test time")
                .and_utc();
        expected.push(AgentInfo {
            id,
            name,
            capabilities,
            status: status.parse().expect("status"),
            last_heartbeat,
            current_load: load,
            max_load: max,
            ..AgentInfo::default()
        });
    }
    sql.push_str(extra_sql);
    sql.push_str("COMMIT;\n");
    let out = common::sqlite3(path, &sql, common::OnError::Stop);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    expected
}

fn user_version(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .expect("open")
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("user_version")
}

#[test]
fn a_version_2_file_comes_back_exactly() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v2.db");
    let expected = version_2_file(&path, "");
    let registry = SqliteRegistry::open(&path)?;
    assert_eq!(user_version(&path), SqliteRegistry::SCHEMA_VERSION);
    assert_eq!(
        registry.list()?,
        expected,
        "every row and capability, to the nanosecond"
    );
    common::assert_healthy(&path);
    // The rebuilt tables keep their indexes and triggers.
    let objects = registry.query(
        "SELECT type, name FROM sqlite_schema WHERE type IN ('index', 'trigger') AND name NOT LIKE 'sqlite_%' ORDER BY name",
        roster::SqlAccess::ReadOnly,
    )?;
    let names: Vec<String> = objects.rows.iter().map(|row| row[1].to_string()).collect();
    for version_2 in [
        "agents_claim_by_load",
        "agents_claim_by_usage",
        "agents_delete_capabilities",
        "agents_id_immutable",
        "capabilities_by_capability",
        "capabilities_insert_needs_agent",
        "capabilities_update_needs_agent",
    ] {
        assert!(
            names.iter().any(|n| n == version_2),
            "{version_2} is gone: {names:?}"
        );
    }
    // And the migrated agents work: an empty name is accepted now.
    registry.register(AgentInfo {
        id: "agent-0001".into(),
        ..AgentInfo::default()
    })?;
    assert_eq!(registry.get("agent-0001")?.name, "");
    Ok(())
}

#[test]
fn rows_the_new_rules_refuse_stop_the_upgrade_and_are_named() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v2.db");
    let expected = version_2_file(
        &path,
        "INSERT INTO agents (id, name, status, last_heartbeat, current_load, max_load) VALUES ('bad' || char(0) || 'id', 'n', 'available', '2026-02-30 00:00:00.000000000', 0, 0);
         UPDATE agents SET last_heartbeat = '2023-02-29 10:00:00.000000000' WHERE id = 'agent-0007';
         INSERT INTO capabilities VALUES ('agent-0002', 5, 'gpu' || char(8203));",
    );
    let before = std::fs::read(&path).expect("read");
    let err = SqliteRegistry::open(&path).expect_err("the upgrade must be refused");
    assert_eq!(err.kind(), roster::ErrorKind::Unusable);
    let Error::UpgradeRefused { version, rows, .. } = &err else {
        panic!("expected UpgradeRefused, got {err:?}");
    };
    assert_eq!(*version, 3);
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let message = err.to_string();
    for part in [
        r#"agents row with id "agent-0007" breaks agents_last_heartbeat_valid (to delete it: DELETE FROM agents WHERE id = 'agent-0007')"#,
        r#"agents row with id "bad\0id" breaks agents_id_valid (to delete it: DELETE FROM agents WHERE id = CAST(X'626164006964' AS TEXT))"#,
        r#"capabilities row of agent "agent-0002" at position 5 breaks capabilities_capability_valid (to delete it: DELETE FROM capabilities WHERE agent_id = 'agent-0002' AND position = 5)"#,
        "the file was left untouched",
    ] {
        assert!(message.contains(part), "missing {part:?} in {message}");
    }
    assert_eq!(user_version(&path), 2);
    // Nothing was lost: the rows are all still there, at version 2.
    let out = common::sqlite3(
        &path,
        "SELECT count(*) FROM agents; SELECT count(*) FROM capabilities;",
        common::OnError::Stop,
    );
    let capabilities: usize = expected.iter().map(|a| a.capabilities.len()).sum();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\n{}\n", expected.len() + 1, capabilities + 1)
    );
    assert_eq!(
        std::fs::read(&path).expect("read"),
        before,
        "not a byte changed"
    );
    // Following the advice repairs the file.
    let out = common::sqlite3(
        &path,
        "DELETE FROM agents WHERE id = CAST(X'626164006964' AS TEXT);
         UPDATE agents SET last_heartbeat = '2023-02-28 10:00:00.000000000' WHERE id = 'agent-0007';
         DELETE FROM capabilities WHERE agent_id = 'agent-0002' AND position = 5;",
        common::OnError::Stop,
    );
    assert!(out.status.success());
    let registry = SqliteRegistry::open(&path)?;
    assert_eq!(registry.list()?.len(), 500);
    assert_eq!(user_version(&path), SqliteRegistry::SCHEMA_VERSION);
    Ok(())
}

// ---------------------------------------------------------------- children

/// The entry point of the child processes.
#[test]
#[ignore = "helper: the migration race runs it as a child process"]
fn child() {
    let Some(role) = common::child::role() else {
        return;
    };
    assert_eq!(role, "open-v2");
    let db = PathBuf::from(common::child::var(common::child::DB_VAR));
    common::child::ready_then_wait_for_go();
    let registry = SqliteRegistry::open(&db).expect("open");
    let agents = registry.list().expect("list");
    report(format_args!("{} agents", agents.len()));
}

#[test]
fn processes_migrating_one_version_2_file_at_once_all_succeed() -> Result<()> {
    let mut rng = Rng::from_env();
    for round in 0..3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v2.db");
        let expected = version_2_file(&path, "");
        let mut children: Vec<common::Running> = (0..6)
            .map(|_| common::child::spawn("open-v2", &path, &mut rng, &[]))
            .collect();
        for child in &mut children {
            child.expect_report("ready");
        }
        for child in &mut children {
            child.send("go");
        }
        for child in children {
            let reports = child.finish().expect_success("open-v2 child").reports();
            assert_eq!(reports, ["500 agents"], "round {round}");
        }
        assert_eq!(
            user_version(&path),
            SqliteRegistry::SCHEMA_VERSION,
            "round {round}"
        );
        assert_eq!(
            SqliteRegistry::open(&path)?.list()?,
            expected,
            "round {round}"
        );
        common::assert_healthy(&path);
    }
    Ok(())
}
