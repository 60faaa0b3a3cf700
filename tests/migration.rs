//! Upgrading a file written by an older roster: version 2 files (built by
//! typing the released migrations into the real `sqlite3` shell) open with
//! every row and capability intact, refuse the upgrade when they hold rows the
//! new rules refuse, and upgrade once when many processes open them at once;
//! a version 6 file keeps its held claims and its events through the
//! rebuild of `claims`, and its rules after it; version 8 writes the events
//! of deleted claims as version 7 did.

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

/// Builds a version 6 file at `path` in the real shell: 20 agents, 12 held
/// claims (with and without a lease, two detached by deregistering their
/// agent), 3 released, and the events all that wrote.
fn version_6_file(path: &Path) {
    let mut sql = MIGRATIONS[..6].join("\n");
    sql.push_str("\nPRAGMA user_version = 6; PRAGMA journal_mode = WAL; BEGIN;\n");
    for i in 0..20 {
        sql.push_str(&format!(
            "INSERT INTO agents (id, name, last_heartbeat, current_load, max_load) \
             VALUES ('agent-{i:02}', '', '2026-03-04 05:06:07.000000000', {}, 4);\n",
            i % 2
        ));
    }
    for t in 0..15 {
        let lease = if t % 3 == 0 {
            "'2030-01-01 00:00:00.000000000'".to_owned()
        } else {
            "NULL".to_owned()
        };
        sql.push_str(&format!(
            "INSERT INTO claims (task_id, agent_id, token, claimed_at, lease_expires_at) \
             VALUES ('task-{t:02}', 'agent-{:02}', (SELECT value + 1 FROM counters WHERE name = 'claim_token'), \
             '2026-03-04 05:06:{t:02}.000000000', {lease});\n",
            t % 7
        ));
    }
    sql.push_str(
        "DELETE FROM claims WHERE task_id IN ('task-01', 'task-05', 'task-09');
         DELETE FROM agents WHERE id = 'agent-06';
         COMMIT;\n",
    );
    let out = common::sqlite3(path, &sql, common::OnError::Stop);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the shell prints for `sql` on `path`.
fn shell(path: &Path, sql: &str) -> String {
    let out = common::sqlite3(path, sql, common::OnError::GoOn);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_version_6_file_keeps_its_claims_and_events_through_version_7() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v6.db");
    version_6_file(&path);
    let rows = "SELECT task_id, agent_id, token, claimed_at, lease_expires_at, detached FROM claims ORDER BY token;
                SELECT * FROM events ORDER BY seq;
                SELECT id, current_load FROM agents ORDER BY id;
                SELECT name, value FROM counters ORDER BY name;";
    let before = shell(&path, rows);
    assert_eq!(before.matches("task-").count(), 12 + 15 + 3, "{before}");
    assert!(before.contains("task-13|agent-06|14|"), "{before}");
    let registry = SqliteRegistry::open(&path)?;
    assert_eq!(user_version(&path), SqliteRegistry::SCHEMA_VERSION);
    assert_eq!(
        shell(&path, rows),
        before,
        "claims, events, loads and counters"
    );
    common::assert_healthy(&path);
    // The held claims through the API: the detached ones of agent-06 are
    // recoverable, as before.
    let held = registry.claims(None)?;
    assert_eq!(held.len(), 12);
    assert_eq!(held.iter().map(|c| c.token).max(), Some(15));
    let recovered = registry.recover()?;
    let gone: Vec<&str> = recovered.iter().map(|r| r.claim.task_id.as_str()).collect();
    assert_eq!(gone, ["task-06", "task-13"]);
    // The next claim takes the next token and a slot; the feed goes on.
    let last = registry.last_event()?;
    let claimed = registry.claim(
        &roster::Task {
            id: "after".into(),
            ..roster::Task::default()
        },
        None,
    )?;
    assert_eq!(claimed.claim.token, 16);
    let events = registry.events(last, 10)?;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].seq, last + 1);
    assert_eq!(events[0].task_id.as_deref(), Some("after"));
    // Release gives the slot back.
    let load = registry.get(&claimed.agent.id)?.current_load;
    registry.release("after", Some(16))?;
    assert_eq!(registry.get(&claimed.agent.id)?.current_load, load - 1);
    // The rules hold for SQL typed by hand: an old token, a held task, a
    // load below the claims, in one statement or several.
    for (sql, refusal) in [
        (
            "INSERT INTO claims (task_id, agent_id, token, claimed_at) VALUES ('x', 'agent-00', 16, '2026-03-04 05:06:07.000000000');",
            "claims.token must be above every token given before",
        ),
        (
            "INSERT INTO claims (task_id, agent_id, token, claimed_at) VALUES ('task-00', 'agent-00', 99, '2026-03-04 05:06:07.000000000');",
            "the task is already claimed",
        ),
        (
            "INSERT INTO claims (task_id, agent_id, token, claimed_at) VALUES ('y', 'agent-00', 50, '2026-03-04 05:06:07.000000000'), ('z', 'agent-01', 50, '2026-03-04 05:06:07.000000000');",
            "claims.token must be above every token given before",
        ),
        (
            "UPDATE agents SET current_load = 0 WHERE id = 'agent-00';",
            "agents.current_load cannot drop below the claims the agent holds",
        ),
    ] {
        let out = shell(&path, sql);
        assert!(out.contains(refusal), "{sql}: {out}");
    }
    assert_eq!(
        shell(
            &path,
            "SELECT count(*) FROM claims WHERE task_id IN ('x', 'y', 'z');"
        ),
        "0\n"
    );
    // The token's UNIQUE index is gone; the other indexes stay.
    let indexes = shell(
        &path,
        "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'claims' ORDER BY name;",
    );
    assert_eq!(indexes, "claims_by_agent\nclaims_by_lease\n");
    common::assert_healthy(&path);
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

/// Version 6 let `UPDATE OR REPLACE` rename a setting onto another, which
/// deleted that one: a file without `events_keep_seconds` emptied its log
/// at every 64th event, one without `recovering` announced releases typed
/// by hand as recoveries. Version 7 puts the missing settings back, at
/// their defaults, and keeps the values of the others.
#[test]
fn a_version_6_file_missing_settings_gets_them_back_through_version_7() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v6.db");
    version_6_file(&path);
    let settings = "SELECT name, value FROM settings ORDER BY name;";
    assert_eq!(
        shell(
            &path,
            "UPDATE OR REPLACE settings SET name = 'events_keep', value = 500 WHERE name = 'events_keep_seconds';
             UPDATE OR REPLACE settings SET name = 'registering' WHERE name = 'recovering';"
        ),
        ""
    );
    assert_eq!(shell(&path, settings), "events_keep|500\nregistering|0\n");
    let registry = SqliteRegistry::open(&path)?;
    assert_eq!(user_version(&path), SqliteRegistry::SCHEMA_VERSION);
    assert_eq!(
        shell(&path, settings),
        "events_keep|500\nevents_keep_seconds|604800\nrecovering|0\nregistering|0\n"
    );
    // The log keeps its events past the next 64th, and a claim deleted by
    // hand is released.
    let first = shell(&path, "SELECT min(seq) FROM events;");
    while registry.last_event()? < 64 {
        registry.set_status("agent-00", roster::AgentStatus::Busy)?;
        registry.set_status("agent-00", roster::AgentStatus::Available)?;
    }
    assert_eq!(shell(&path, "SELECT min(seq) FROM events;"), first);
    let last = registry.last_event()?;
    shell(&path, "DELETE FROM claims WHERE task_id = 'task-06';");
    let events = registry.events(last, 10)?;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, roster::EventKind::Released);
    Ok(())
}

/// Every SQLite migration, oldest first, as the tests type them.
const MIGRATIONS: [&str; 9] = [
    include_str!("../migrations/sqlite/0001_agents.sql"),
    include_str!("../migrations/sqlite/0002_claim_indexes.sql"),
    include_str!("../migrations/sqlite/0003_text_rules.sql"),
    include_str!("../migrations/sqlite/0004_drain_and_metadata.sql"),
    include_str!("../migrations/sqlite/0005_claims.sql"),
    include_str!("../migrations/sqlite/0006_events.sql"),
    include_str!("../migrations/sqlite/0007_lean_claims.sql"),
    include_str!("../migrations/sqlite/0008_quicker_release.sql"),
    include_str!("../migrations/sqlite/0009_event_counter_rule.sql"),
];

/// What the claims deleted by `DELETE FROM claims` write into the change
/// feed, on a file built in the shell at schema `version`: six claims with
/// every combination of reasons, one deleted by hand, the others deleted
/// while `recovering` is 1, as recover deletes them.
fn deleted_claim_events(dir: &Path, version: usize) -> String {
    let path = dir.join(format!("v{version}.db"));
    let mut sql: String = MIGRATIONS[..version].join("\n");
    sql.push_str(&format!("\nPRAGMA user_version = {version};\n"));
    for agent in ["up", "down", "gone", "late"] {
        sql.push_str(&format!(
            "INSERT INTO agents (id, name, last_heartbeat, max_load) \
             VALUES ('{agent}', '', '2026-03-04 05:06:07.000000000', 9);\n"
        ));
    }
    // (task, agent, lease): no lease, a lease far off, a lease run out.
    for (task, agent, lease) in [
        ("by-hand", "up", "NULL"),
        ("not-due", "up", "'2100-01-01 00:00:00.000000000'"),
        ("expired", "late", "'2000-01-01 00:00:00.000000000'"),
        ("offline", "down", "NULL"),
        ("offline-expired", "down", "'2000-01-01 00:00:00.000000000'"),
        (
            "gone-offline-expired",
            "gone",
            "'2000-01-01 00:00:00.000000000'",
        ),
    ] {
        sql.push_str(&format!(
            "INSERT INTO claims (task_id, agent_id, token, claimed_at, lease_expires_at) \
             VALUES ('{task}', '{agent}', (SELECT value + 1 FROM counters WHERE name = 'claim_token'), \
             '2026-03-04 05:06:07.000000000', {lease});\n"
        ));
    }
    sql.push_str(
        "UPDATE agents SET status = 'offline' WHERE id IN ('down', 'gone');
         DELETE FROM agents WHERE id = 'gone';
         DELETE FROM claims WHERE task_id = 'by-hand';
         UPDATE settings SET value = 1 WHERE name = 'recovering';
         DELETE FROM claims;
         UPDATE settings SET value = 0 WHERE name = 'recovering';
         SELECT kind, agent_id, task_id, reason, token FROM events
         WHERE kind IN ('released', 'recovered') ORDER BY seq;
         SELECT id, current_load FROM agents ORDER BY id;",
    );
    let out = common::sqlite3(&path, &sql, common::OnError::Stop);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(user_version(&path), version as i64);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn version_8_writes_the_events_of_deleted_claims_as_version_7_did() {
    assert_eq!(
        MIGRATIONS.len() as i64,
        SqliteRegistry::SCHEMA_VERSION,
        "the migrations these tests type, against the ones roster applies"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    // The claims go in the order of their task ids.
    let expected = "released|up|by-hand||1
recovered|late|expired|lease_expired|3
recovered|gone|gone-offline-expired|agent_gone|6
released|up|not-due||2
recovered|down|offline|agent_offline|4
recovered|down|offline-expired|agent_offline|5
down|0
late|0
up|0
";
    assert_eq!(deleted_claim_events(dir.path(), 7), expected);
    assert_eq!(deleted_claim_events(dir.path(), 8), expected);
}
