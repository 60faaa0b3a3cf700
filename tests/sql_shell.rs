//! The README's SQL, typed into the real `sqlite3` shell against a database
//! roster wrote: every query gives the documented answer, and hand-typed
//! writes cannot corrupt the registry.

mod common;

use std::path::Path;
use std::process::Output;

use chrono::{DateTime, TimeDelta, Utc};
use roster::{AgentInfo, AgentRegistry, AgentStatus, Result, SqliteRegistry};

/// Types `sql` into `sqlite3 -batch -bail FILE`.
fn shell(db: &Path, sql: &str) -> Output {
    common::sqlite3(db, sql, common::OnError::Stop)
}

fn shell_ok(db: &Path, sql: &str) -> String {
    let out = shell(db, sql);
    assert!(
        out.status.success(),
        "sqlite3 failed on {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn shell_refused(db: &Path, sql: &str, why: &str) {
    let out = shell(db, sql);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {sql}");
    assert!(
        stderr.contains(why),
        "{sql}: expected {why:?} in {stderr:?}"
    );
}

/// The ```sql block of README.md whose first line is `-- {title}`.
fn readme_query(title: &str) -> String {
    let readme = include_str!("../README.md");
    let heading = format!("-- {title}\n");
    readme
        .split("```sql\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.starts_with(&heading))
        .unwrap_or_else(|| panic!("README.md has no ```sql block starting with {heading:?}"))
        .to_owned()
}

fn stored(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S%.9f").to_string()
}

struct Fleet {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    registry: SqliteRegistry,
    hour_ago: DateTime<Utc>,
    five_min_ago: DateTime<Utc>,
}

fn fleet() -> Result<Fleet> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agents.db");
    let registry = SqliteRegistry::open(&path)?;
    let now = Utc::now();
    let (hour_ago, five_min_ago) = (now - TimeDelta::hours(1), now - TimeDelta::minutes(5));
    for (id, caps, status, seen, load, max) in [
        (
            "builder-1",
            &["rust", "linux"][..],
            AgentStatus::Offline,
            hour_ago,
            0,
            4,
        ),
        (
            "cpu-fresh",
            &["rust"][..],
            AgentStatus::Available,
            now - TimeDelta::seconds(5),
            3,
            0,
        ),
        (
            "new-gpu",
            &["cuda", "gpu"][..],
            AgentStatus::Busy,
            now,
            2,
            2,
        ),
        (
            "old-gpu",
            &["gpu"][..],
            AgentStatus::Available,
            five_min_ago,
            1,
            2,
        ),
    ] {
        registry.register(AgentInfo {
            id: id.into(),
            name: format!("agent {id}"),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            status,
            last_heartbeat: seen,
            current_load: load,
            max_load: max,
            ..AgentInfo::default()
        })?;
    }
    Ok(Fleet {
        _dir: dir,
        path,
        registry,
        hour_ago,
        five_min_ago,
    })
}

#[test]
fn readme_queries_give_the_documented_answers() -> Result<()> {
    let fleet = fleet()?;
    let db = &fleet.path;
    assert_eq!(
        shell_ok(db, &readme_query("who has not been seen for 30 seconds")),
        format!(
            "builder-1|offline|{}\nold-gpu|available|{}\n",
            stored(fleet.hour_ago),
            stored(fleet.five_min_ago)
        )
    );
    assert_eq!(
        shell_ok(db, &readme_query("agents with capability gpu")),
        "new-gpu|busy|2|2\nold-gpu|available|1|2\n"
    );
    assert_eq!(
        shell_ok(db, &readme_query("load per status")),
        "available|2|4\nbusy|1|2\noffline|1|0\n"
    );
    assert_eq!(
        shell_ok(
            db,
            &readme_query("capabilities of one agent, in the order it gave them")
        ),
        "rust\nlinux\n"
    );
    // Claims and events: one claim with a lease on cpu-fresh, one released.
    let held = fleet.registry.claim(
        &roster::Task {
            id: "build-1".into(),
            labels: vec!["rust".into()],
            ..roster::Task::default()
        },
        Some(std::time::Duration::from_secs(600)),
    )?;
    assert_eq!(held.claim.agent_id, "cpu-fresh");
    let expiry = stored(held.claim.lease_expires_at.expect("a lease"));
    assert_eq!(
        shell_ok(
            db,
            &readme_query("claims held per agent, with their oldest lease")
        ),
        format!("cpu-fresh|1|{expiry}\n")
    );
    fleet.registry.release("build-1", Some(held.claim.token))?;
    let last_three: Vec<String> = shell_ok(
        db,
        &readme_query("the last 20 things that happened, newest first"),
    )
    .lines()
    .take(3)
    .map(|line| {
        let fields: Vec<&str> = line.split('|').collect();
        format!("{}|{}|{}|{}", fields[0], fields[2], fields[3], fields[4])
    })
    .collect();
    assert_eq!(
        last_three,
        [
            "6|released|cpu-fresh|build-1",
            "5|claimed|cpu-fresh|build-1",
            "4|registered|old-gpu|"
        ]
    );
    // The library's view agrees with the shell's.
    let stale: Vec<String> = fleet
        .registry
        .list()?
        .into_iter()
        .filter(|a| a.last_heartbeat < Utc::now() - TimeDelta::seconds(30))
        .map(|a| a.id)
        .collect();
    assert_eq!(stale, ["builder-1", "old-gpu"]);
    Ok(())
}

#[test]
fn a_heartbeat_typed_by_hand_is_read_back_by_roster() -> Result<()> {
    let fleet = fleet()?;
    let before = Utc::now() - TimeDelta::milliseconds(1);
    shell_ok(&fleet.path, &readme_query("heartbeat by hand"));
    let after = Utc::now();
    let agent = fleet.registry.get("builder-1")?;
    assert_eq!(agent.status, AgentStatus::Available);
    assert!(
        before <= agent.last_heartbeat && agent.last_heartbeat <= after,
        "{} not within {before}..{after}",
        agent.last_heartbeat
    );
    Ok(())
}

#[test]
fn hand_typed_sql_cannot_store_impossible_rows_or_orphans() -> Result<()> {
    let fleet = fleet()?;
    let db = &fleet.path;
    shell_refused(
        db,
        "UPDATE agents SET status = 'sleeping';",
        "CHECK constraint failed",
    );
    shell_refused(
        db,
        "UPDATE agents SET current_load = -1 WHERE id = 'cpu-fresh';",
        "agents.current_load cannot drop below the claims the agent holds",
    );
    shell_refused(
        db,
        "UPDATE agents SET current_load = 3 WHERE id = 'new-gpu';",
        "CHECK constraint failed",
    );
    shell_refused(
        db,
        "UPDATE agents SET last_heartbeat = datetime('now');",
        "CHECK constraint failed",
    );
    shell_refused(
        db,
        "UPDATE agents SET max_load = '2' || 'x';",
        "cannot store TEXT value in INTEGER column",
    );
    shell_refused(
        db,
        "INSERT INTO capabilities VALUES ('ghost', 0, 'gpu');",
        "capabilities.agent_id must be the id of a row in agents",
    );
    shell_refused(
        db,
        "UPDATE agents SET id = 'renamed' WHERE id = 'old-gpu';",
        "agents.id cannot change",
    );

    // Deleting by hand, with the shell's foreign keys off, leaves no orphan.
    shell_ok(db, "DELETE FROM agents WHERE id = 'new-gpu';");
    assert_eq!(
        shell_ok(
            db,
            "SELECT count(*) FROM capabilities WHERE agent_id = 'new-gpu'; PRAGMA foreign_key_check; PRAGMA integrity_check;"
        ),
        "0\nok\n"
    );
    let ids: Vec<String> = fleet.registry.list()?.into_iter().map(|a| a.id).collect();
    assert_eq!(ids, ["builder-1", "cpu-fresh", "old-gpu"]);
    assert_eq!(fleet.registry.get("old-gpu")?.capabilities, ["gpu"]);
    Ok(())
}

/// A file at schema version 2, built by typing the released migrations 1
/// and 2 into the shell, as roster 0.1 left it.
fn version_2_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("v2.db");
    shell_ok(
        &path,
        concat!(
            include_str!("../migrations/sqlite/0001_agents.sql"),
            include_str!("../migrations/sqlite/0002_claim_indexes.sql"),
            "PRAGMA user_version = 2; PRAGMA journal_mode = WAL;"
        ),
    );
    path
}

const AGENT_A: &str =
    "INSERT INTO agents (id, name, status, last_heartbeat, current_load, max_load) VALUES ('a', 'A', 'available', '2026-01-01 00:00:00.000000000', 0, 0);
     INSERT INTO capabilities VALUES ('a', 0, 'gpu');";

/// Hand-typed rows that schema version 2 stored and that broke every reader:
/// each is refused by the current schema, through the real `sqlite3` shell
/// (Debian's 3.40) and through the bundled SQLite of `roster sql --write`.
const BREAKS_READERS: &[(&str, &str)] = &[
    // Impossible times: datetime() returns NULL, and a CHECK passes on NULL.
    (
        "month 13",
        "UPDATE agents SET last_heartbeat = '2026-13-01 00:00:00.000000000' WHERE id = 'a'",
    ),
    (
        "day 32",
        "UPDATE agents SET last_heartbeat = '2026-01-32 00:00:00.000000000' WHERE id = 'a'",
    ),
    (
        "second 60",
        "UPDATE agents SET last_heartbeat = '2026-01-01 00:00:60.000000000' WHERE id = 'a'",
    ),
    // datetime() normalises or echoes these, differently in 3.40 and 3.53.
    (
        "hour 24",
        "UPDATE agents SET last_heartbeat = '2026-01-01 24:00:00.000000000' WHERE id = 'a'",
    ),
    (
        "February 30",
        "UPDATE agents SET last_heartbeat = '2026-02-30 00:00:00.000000000' WHERE id = 'a'",
    ),
    (
        "February 29 of 2023",
        "UPDATE agents SET last_heartbeat = '2023-02-29 00:00:00.000000000' WHERE id = 'a'",
    ),
    (
        "February 29 of 1900",
        "UPDATE agents SET last_heartbeat = '1900-02-29 00:00:00.000000000' WHERE id = 'a'",
    ),
    (
        "a time followed by NUL and junk",
        "UPDATE agents SET last_heartbeat = '2026-01-01 00:00:00.000000000' || char(0) || 'junk' WHERE id = 'a'",
    ),
    // NUL: length() and GLOB stop at it.
    (
        "NUL in an id",
        "INSERT INTO agents (id, name, status, last_heartbeat, current_load, max_load) VALUES ('x' || char(0) || 'y', 'n', 'available', '2026-01-01 00:00:00.000000000', 0, 0)",
    ),
    (
        "a 1 MB id behind a NUL",
        "INSERT INTO agents (id, name, status, last_heartbeat, current_load, max_load) VALUES ('x' || char(0) || hex(zeroblob(500000)), 'n', 'available', '2026-01-01 00:00:00.000000000', 0, 0)",
    ),
    (
        "NUL in a name",
        "UPDATE agents SET name = 'A' || char(0) || 'B' WHERE id = 'a'",
    ),
    (
        "NUL in a capability",
        "UPDATE capabilities SET capability = 'gpu' || char(0) WHERE agent_id = 'a'",
    ),
    // Invalid UTF-8.
    (
        "a lone 0xff as id",
        "INSERT INTO agents (id, name, status, last_heartbeat, current_load, max_load) VALUES (CAST(x'ff' AS TEXT), 'n', 'available', '2026-01-01 00:00:00.000000000', 0, 0)",
    ),
    (
        "a truncated sequence in a name",
        "UPDATE agents SET name = 'caf' || CAST(x'c3' AS TEXT) WHERE id = 'a'",
    ),
    (
        "an overlong encoding in a capability",
        "UPDATE capabilities SET capability = 'g' || CAST(x'c0af' AS TEXT) WHERE agent_id = 'a'",
    ),
    (
        "a surrogate in a name",
        "UPDATE agents SET name = CAST(x'eda080' AS TEXT) WHERE id = 'a'",
    ),
    // Look-alikes: format characters in ids and capabilities, bidi in names.
    (
        "a zero-width space in an id",
        "INSERT INTO agents (id, name, status, last_heartbeat, current_load, max_load) VALUES ('a' || char(8203), 'n', 'available', '2026-01-01 00:00:00.000000000', 0, 0)",
    ),
    (
        "a BOM in a capability",
        "UPDATE capabilities SET capability = 'gpu' || char(65279) WHERE agent_id = 'a'",
    ),
    (
        "a soft hyphen in an id",
        "INSERT INTO agents (id, name, status, last_heartbeat, current_load, max_load) VALUES ('a' || char(173) || 'b', 'n', 'available', '2026-01-01 00:00:00.000000000', 0, 0)",
    ),
    (
        "a right-to-left override in a name",
        "UPDATE agents SET name = 'evil' || char(8238) || 'txt' WHERE id = 'a'",
    ),
    (
        "a tag character in an id",
        "INSERT INTO agents (id, name, status, last_heartbeat, current_load, max_load) VALUES ('a' || char(917601), 'n', 'available', '2026-01-01 00:00:00.000000000', 0, 0)",
    ),
];

/// Hand-typed rows of the columns and table of version 4 that would break a
/// reader: refused by the schema (version 2 had none of them).
const BREAKS_READERS_V4: &[(&str, &str)] = &[
    ("drained 2", "UPDATE agents SET drained = 2 WHERE id = 'a'"),
    (
        "drained NULL",
        "UPDATE agents SET drained = NULL WHERE id = 'a'",
    ),
    (
        "an empty host",
        "UPDATE agents SET host = '' WHERE id = 'a'",
    ),
    (
        "a NUL in a host",
        "UPDATE agents SET host = 'h' || char(0) || 'x' WHERE id = 'a'",
    ),
    ("pid 0", "UPDATE agents SET pid = 0 WHERE id = 'a'"),
    (
        "a negative pid",
        "UPDATE agents SET pid = -5 WHERE id = 'a'",
    ),
    (
        "started_at on February 30",
        "UPDATE agents SET started_at = '2026-02-30 00:00:00.000000000' WHERE id = 'a'",
    ),
    (
        "started_at in another format",
        "UPDATE agents SET started_at = datetime('now') WHERE id = 'a'",
    ),
    (
        "metadata of nobody",
        "INSERT INTO metadata VALUES ('ghost', 'k', 'v')",
    ),
    (
        "an empty metadata key",
        "INSERT INTO metadata VALUES ('a', '', 'v')",
    ),
    (
        "a zero-width metadata key",
        "INSERT INTO metadata VALUES ('a', 'k' || char(8203), 'v')",
    ),
    (
        "a NUL in a metadata value",
        "INSERT INTO metadata VALUES ('a', 'k', 'v' || char(0))",
    ),
    (
        "invalid UTF-8 in a metadata value",
        "INSERT INTO metadata VALUES ('a', 'k', CAST(x'ff' AS TEXT))",
    ),
];

#[test]
fn hand_typed_drain_and_metadata_rows_that_would_break_readers_are_refused() -> Result<()> {
    for (what, sql) in BREAKS_READERS_V4 {
        let fleet = fleet()?;
        shell_ok(&fleet.path, AGENT_A);
        let out = shell(&fleet.path, &format!("{sql};"));
        assert!(
            !out.status.success(),
            "the sqlite3 shell stored {what}: {sql}"
        );
        assert!(
            fleet
                .registry
                .query(sql, roster::SqlAccess::ReadWrite)
                .is_err(),
            "{what}"
        );
        assert_eq!(fleet.registry.list()?.len(), 5, "{what}");
    }
    // What a person may type: drain, metadata, and deleting the agent takes
    // its metadata along even with the shell's foreign keys off.
    let fleet = fleet()?;
    shell_ok(
        &fleet.path,
        "UPDATE agents SET drained = 1, host = 'box-1', pid = 77,
             started_at = strftime('%Y-%m-%d %H:%M:%f000000', 'now') WHERE id = 'old-gpu';
         INSERT INTO metadata VALUES ('old-gpu', 'zone', 'eu'), ('old-gpu', 'owner', '');",
    );
    let agent = fleet.registry.get("old-gpu")?;
    assert!(agent.drained);
    assert_eq!(
        (agent.host.as_deref(), agent.pid),
        (Some("box-1"), Some(77))
    );
    assert!(agent.started_at.is_some());
    assert_eq!(agent.metadata.len(), 2);
    assert_eq!(agent.metadata["zone"], "eu");
    assert!(matches!(
        fleet
            .registry
            .claim(
                &roster::Task {
                    labels: vec!["gpu".into()],
                    ..roster::Task::default()
                },
                None
            )
            .map(|claimed| claimed.agent),
        Err(roster::Error::NoEligibleAgent)
    ));
    shell_ok(&fleet.path, "DELETE FROM agents WHERE id = 'old-gpu';");
    assert_eq!(
        shell_ok(&fleet.path, "SELECT count(*) FROM metadata;"),
        "0\n"
    );
    common::assert_healthy(&fleet.path);
    Ok(())
}

/// Values that look odd but are valid, and must stay accepted.
const STILL_ACCEPTED: &[(&str, &str)] = &[
    (
        "an empty name",
        "UPDATE agents SET name = '' WHERE id = 'a'",
    ),
    (
        "U+FFFD in a name",
        "UPDATE agents SET name = 'x' || char(65533) WHERE id = 'a'",
    ),
    (
        "U+FFFD in an id",
        "INSERT INTO agents (id, name, status, last_heartbeat, current_load, max_load) VALUES (char(65533), '', 'available', '2026-01-01 00:00:00.000000000', 0, 0)",
    ),
    (
        "an emoji sequence with a joiner in a name",
        "UPDATE agents SET name = '👩' || char(8205) || '💻' WHERE id = 'a'",
    ),
    (
        "U+2028 in a name",
        "UPDATE agents SET name = 'a' || char(8232) || 'b' WHERE id = 'a'",
    ),
    (
        "an emoji capability",
        "UPDATE capabilities SET capability = '🦀' WHERE agent_id = 'a'",
    ),
    (
        "year 0000",
        "UPDATE agents SET last_heartbeat = '0000-01-01 00:00:00.000000000' WHERE id = 'a'",
    ),
    (
        "Go's zero time",
        "UPDATE agents SET last_heartbeat = '0001-01-01 00:00:00.000000000' WHERE id = 'a'",
    ),
    (
        "the last nanosecond of a day",
        "UPDATE agents SET last_heartbeat = '2026-12-31 23:59:59.999999999' WHERE id = 'a'",
    ),
    (
        "February 29 of 2024",
        "UPDATE agents SET last_heartbeat = '2024-02-29 12:00:00.000000000' WHERE id = 'a'",
    ),
    (
        "February 29 of 2000",
        "UPDATE agents SET last_heartbeat = '2000-02-29 12:00:00.000000000' WHERE id = 'a'",
    ),
];

#[test]
fn hand_typed_rows_that_broke_readers_are_refused() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    for (what, sql) in BREAKS_READERS {
        // Version 2 stored it: the case is real.
        let old = version_2_file(dir.path());
        shell_ok(&old, AGENT_A);
        shell_ok(&old, &format!("{sql};"));
        std::fs::remove_file(&old).expect("remove");

        // The shell refuses it now...
        let fleet = fleet()?;
        shell_ok(&fleet.path, AGENT_A);
        let out = shell(&fleet.path, &format!("{sql};"));
        assert!(
            !out.status.success(),
            "the sqlite3 shell stored {what}: {sql}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("CHECK constraint failed"),
            "{what}: {stderr}"
        );
        // ... and so does the bundled SQLite.
        let err = fleet
            .registry
            .query(sql, roster::SqlAccess::ReadWrite)
            .expect_err(what);
        assert!(
            err.to_string().contains("CHECK constraint failed"),
            "{what}: {err}"
        );
        // Every reader still works.
        assert_eq!(fleet.registry.list()?.len(), 5, "{what}");
        assert_eq!(fleet.registry.get("a")?.capabilities, ["gpu"], "{what}");
        fleet.registry.reap(std::time::Duration::from_secs(3600))?;
    }
    Ok(())
}

#[test]
fn odd_but_valid_values_stay_accepted_and_read_back() -> Result<()> {
    for (what, sql) in STILL_ACCEPTED {
        let typed = fleet()?;
        shell_ok(&typed.path, AGENT_A);
        shell_ok(&typed.path, &format!("{sql};"));
        typed
            .registry
            .list()
            .unwrap_or_else(|e| panic!("{what}: list fails: {e}"));
        let fresh = fleet()?;
        shell_ok(&fresh.path, AGENT_A);
        fresh
            .registry
            .query(sql, roster::SqlAccess::ReadWrite)
            .unwrap_or_else(|e| panic!("{what}: the bundled SQLite refuses it: {e}"));
        fresh.registry.list()?;
    }
    Ok(())
}

/// Invalid UTF-8 that SQLite cannot tell in SQL (a lone continuation byte
/// reads as U+0080..U+00BF) gets past the schema; a reader then fails with an
/// error naming the table, the agent and the column, never skips the row in
/// silence, and every other agent can still be read.
#[test]
fn an_unreadable_row_is_named_and_never_skipped() -> Result<()> {
    let fleet = fleet()?;
    shell_ok(
        &fleet.path,
        "INSERT INTO agents (id, name, status, last_heartbeat, current_load, max_load) VALUES ('bad', 'x' || CAST(x'a9' AS TEXT), 'available', '2026-01-01 00:00:00.000000000', 0, 0);",
    );
    let err = fleet
        .registry
        .list()
        .expect_err("list must not skip the row");
    assert_eq!(err.kind(), roster::ErrorKind::Unusable);
    assert_eq!(
        err.to_string(),
        "unreadable row in agents: agent id \"bad\", column name: not UTF-8 (invalid utf-8 sequence of 1 bytes from index 1); repair or delete the row by hand (the sqlite3 shell, or psql)"
    );
    assert!(matches!(
        fleet.registry.get("bad"),
        Err(roster::Error::Unreadable {
            table: "agents",
            column: "name",
            ..
        })
    ));
    for good in ["builder-1", "cpu-fresh", "new-gpu", "old-gpu"] {
        fleet.registry.get(good)?;
    }
    // An id that cannot be decoded is shown escaped.
    shell_ok(
        &fleet.path,
        "DELETE FROM agents WHERE id = 'bad';
         INSERT INTO agents (id, name, status, last_heartbeat, current_load, max_load) VALUES ('caf' || CAST(x'a9' AS TEXT), '', 'available', '2026-01-01 00:00:00.000000000', 0, 0);
         INSERT INTO capabilities VALUES ('cpu-fresh', 1, 'x' || CAST(x'bf' AS TEXT));",
    );
    let err = fleet.registry.list().expect_err("list");
    assert!(
        err.to_string().contains(r#"agent id "caf\xa9", column id"#),
        "{err}"
    );
    let err = fleet.registry.get("cpu-fresh").expect_err("get");
    assert!(
        err.to_string()
            .contains(r#"unreadable row in capabilities: agent id "cpu-fresh", column capability"#),
        "{err}"
    );
    Ok(())
}

/// reap commits only once every id it returns has been read: an id it
/// cannot decode rolls it back, so no agent goes offline unannounced.
#[test]
fn reap_loses_nothing_when_an_id_cannot_be_read() -> Result<()> {
    let fleet = fleet()?;
    shell_ok(
        &fleet.path,
        "INSERT INTO agents (id, name, status, last_heartbeat, current_load, max_load) VALUES ('stale' || CAST(x'a9' AS TEXT), '', 'available', '2000-01-01 00:00:00.000000000', 0, 0);",
    );
    let before = shell_ok(
        &fleet.path,
        "SELECT hex(id), status FROM agents WHERE status <> 'offline' ORDER BY id;",
    );
    let err = fleet
        .registry
        .reap(std::time::Duration::from_secs(60))
        .expect_err("reap must report the unreadable id");
    assert!(
        err.to_string()
            .contains(r#"agent id "stale\xa9", column id"#),
        "{err}"
    );
    let after = shell_ok(
        &fleet.path,
        "SELECT hex(id), status FROM agents WHERE status <> 'offline' ORDER BY id;",
    );
    assert_eq!(before, after, "the failed reap changed nothing");
    // Once the row is repaired, the same reap takes both stale agents.
    shell_ok(&fleet.path, "DELETE FROM agents WHERE id GLOB 'stale*';");
    assert_eq!(
        fleet.registry.reap(std::time::Duration::from_secs(60))?,
        ["old-gpu"]
    );
    Ok(())
}

/// The four settings as the schema made them.
const SETTINGS: &str = "events_keep\nevents_keep_seconds\nrecovering\nregistering\n";

/// `UPDATE OR REPLACE` renaming one setting onto another deletes the other
/// row without its delete trigger (REPLACE fires none): with
/// `events_keep_seconds` gone, every 64th event wipes the whole log; with
/// `recovering` gone, a claim released by hand is announced as recovered;
/// with `registering` gone, capability edits by hand write no event. A
/// setting keeps its name, so none can go.
#[test]
fn a_setting_cannot_be_renamed_onto_another_to_delete_it() -> Result<()> {
    for (from, to) in [
        ("events_keep", "events_keep_seconds"),
        ("events_keep_seconds", "events_keep"),
        ("registering", "recovering"),
        ("recovering", "registering"),
    ] {
        let fleet = fleet()?;
        let db = &fleet.path;
        let held = fleet.registry.claim(
            &roster::Task {
                id: "held".into(),
                ..roster::Task::default()
            },
            None,
        )?;
        for sql in [
            format!("UPDATE OR REPLACE settings SET name = '{to}' WHERE name = '{from}';"),
            format!("UPDATE settings SET name = '{to}' WHERE name = '{from}';"),
            format!("UPDATE settings SET name = 'x{from}', value = 1 WHERE name = '{from}';"),
        ] {
            shell_refused(db, &sql, "settings keep their names");
        }
        assert_eq!(
            shell_ok(db, "SELECT name FROM settings ORDER BY name;"),
            SETTINGS,
            "{from} -> {to}"
        );
        // The log still holds every event past the next 64th...
        shell_ok(
            db,
            &"INSERT INTO events (seq, at, kind, agent_id, status) VALUES ((SELECT value + 1 FROM counters WHERE name = 'event_seq'), strftime('%Y-%m-%d %H:%M:%f000000', 'now'), 'status', 'old-gpu', 'available');\n"
                .repeat(64),
        );
        let last = fleet.registry.last_event()?;
        assert!(last >= 64, "{last}");
        assert_eq!(
            shell_ok(db, "SELECT count(*), min(seq) FROM events;"),
            format!("{last}|1\n"),
            "{from} -> {to}: the log was pruned"
        );
        // ... and a claim deleted by hand is released, not recovered.
        fleet.registry.deregister(&held.agent.id)?;
        shell_ok(db, "DELETE FROM claims WHERE task_id = 'held';");
        let events = fleet.registry.events(last + 1, 10)?;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            events[0].kind,
            roster::EventKind::Released,
            "{from} -> {to}"
        );
        assert_eq!(events[0].reason, None, "{from} -> {to}");
    }
    Ok(())
}

/// `counters_only_grow` lets `event_seq` jump ahead by hand: the next event
/// then leaves a gap behind it, and a reader at the newest cursor is told
/// its cursor is older than the oldest kept event although nothing was
/// pruned. The event counter moves by one, with each event.
#[test]
fn the_event_counter_cannot_jump_ahead_by_hand() -> Result<()> {
    let fleet = fleet()?;
    let db = &fleet.path;
    let last = fleet.registry.last_event()?;
    for sql in [
        "UPDATE counters SET value = value + 100 WHERE name = 'event_seq';",
        "UPDATE counters SET value = value + 1 WHERE name = 'event_seq';",
        "UPDATE counters SET value = 4611686018427387904 WHERE name = 'event_seq';",
    ] {
        shell_refused(db, sql, "event_seq moves by one, with each event");
    }
    // The token counter may still be raised by hand.
    shell_ok(
        db,
        "UPDATE counters SET value = value + 100 WHERE name = 'claim_token';",
    );
    next_event_follows(&fleet.registry, last, AgentStatus::Busy)
}

/// Sets old-gpu's status (a change, so one event) and checks that the
/// event written is the one right after cursor `last`: no gap before it.
fn next_event_follows(registry: &SqliteRegistry, last: u64, status: AgentStatus) -> Result<()> {
    registry.set_status("old-gpu", status)?;
    let events = registry.events(last, 10)?;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].seq, last + 1);
    Ok(())
}

/// Version 8 let the event counter move by one while the log was empty
/// (its rule compared with `max(seq)`, NULL then): raised by hand on a log
/// emptied by hand, it left a gap that read as pruned events. Since
/// version 9 it moves only to an event that is in the log, whether the log
/// is empty or not, and the next event follows the last one counted.
#[test]
fn the_event_counter_cannot_move_on_an_empty_log() -> Result<()> {
    let fleet = fleet()?;
    let db = &fleet.path;
    let last = fleet.registry.last_event()?;
    shell_ok(db, "DELETE FROM events;");
    for sql in [
        "UPDATE counters SET value = value + 1 WHERE name = 'event_seq';",
        "UPDATE counters SET value = NULL WHERE name = 'event_seq';",
    ] {
        shell_refused(db, sql, "event_seq moves by one, with each event");
    }
    assert_eq!(
        shell_ok(db, "SELECT value FROM counters WHERE name = 'event_seq';").trim(),
        last.to_string()
    );
    // Nothing was missed: a reader at the newest cursor reads on.
    next_event_follows(&fleet.registry, last, AgentStatus::Busy)
}

/// Events typed by hand with a time older than `events_keep_seconds` are
/// taken by the pruning of the next 64th event, but never that event
/// itself, even when it is old too: its insert succeeds, the counter
/// follows it, it stays until the next 64th, and the next event takes the
/// next cursor. The counter rule and the pruning do not depend on the
/// order in which SQLite fires the two triggers.
#[test]
fn an_old_event_typed_by_hand_is_not_pruned_by_its_own_insert() -> Result<()> {
    /// Empties the log, then types old events up to cursor `to`; what is
    /// left: how many, the oldest cursor, the counter.
    fn old_events_up_to(db: &Path, from: u64, to: u64) -> String {
        let mut sql = String::from("DELETE FROM events;\n");
        for _ in from..to {
            sql.push_str(
                "INSERT INTO events (seq, at, kind, agent_id) VALUES \
                 ((SELECT value + 1 FROM counters WHERE name = 'event_seq'), \
                 '2001-01-01 00:00:00.000000000', 'updated', 'old-gpu');\n",
            );
        }
        sql.push_str(
            "SELECT count(*), min(seq), (SELECT value FROM counters WHERE name = 'event_seq') FROM events;",
        );
        shell_ok(db, &sql).trim().to_owned()
    }
    let fleet = fleet()?;
    let db = &fleet.path;
    let last = fleet.registry.last_event()?;
    assert!(last < 64, "the fleet wrote {last} events");
    // The 64th prunes the 63 before it, not itself.
    assert_eq!(old_events_up_to(db, last, 64), "1|64|64");
    next_event_follows(&fleet.registry, 64, AgentStatus::Busy)?;
    // Either trigger may fire first: created again in the other order
    // (SQLite fires the newest first), the same inserts give the same log.
    let sql_of = |name: &str| {
        shell_ok(
            db,
            &format!("SELECT sql FROM sqlite_schema WHERE name = '{name}';"),
        )
        .trim()
        .to_owned()
    };
    let (prunes, counts) = (
        sql_of("events_insert_prunes"),
        sql_of("events_insert_counts"),
    );
    shell_ok(
        db,
        &format!(
            "DROP TRIGGER events_insert_counts; DROP TRIGGER events_insert_prunes;\n{prunes};\n{counts};"
        ),
    );
    assert_eq!(old_events_up_to(db, 65, 128), "1|128|128");
    next_event_follows(&fleet.registry, 128, AgentStatus::Available)
}

/// Claims typed by hand against the rules that version 7 keeps with
/// triggers alone (no UNIQUE index on `token`, the load counted against the
/// claims only when it goes down): each is refused, and afterwards every
/// token is unique and above none of the counter, and every load covers the
/// claims held.
#[test]
fn hand_typed_claims_cannot_share_a_token_or_outgrow_a_load() -> Result<()> {
    const AT: &str = "'2026-03-04 05:06:07.000000000'";
    const NEXT: &str = "(SELECT value + 1 FROM counters WHERE name = 'claim_token')";
    let fleet = fleet()?;
    let db = &fleet.path;
    for task in ["t1", "t2", "t3"] {
        fleet.registry.claim(
            &roster::Task {
                id: task.into(),
                ..roster::Task::default()
            },
            None,
        )?;
    }
    let insert = "INSERT INTO claims (task_id, agent_id, token, claimed_at)";
    let fresh_token = "claims.token must be above every token given before";
    let held = "the task is already claimed";
    let unchanged = "a claim cannot change except its lease_expires_at";
    let covers = "agents.current_load cannot drop below the claims the agent holds";
    for (sql, why) in [
        (format!("{insert} VALUES ('x', 'cpu-fresh', 3, {AT});"), fresh_token),
        (format!("{insert} VALUES ('x', 'cpu-fresh', '3', {AT});"), fresh_token),
        (format!("{insert} VALUES ('x', 'cpu-fresh', 3.0, {AT});"), fresh_token),
        (format!("{insert} VALUES ('x', 'cpu-fresh', 50, {AT}), ('y', 'cpu-fresh', 50, {AT});"), fresh_token),
        (format!("{insert} SELECT task_id || '-again', agent_id, 60, claimed_at FROM claims;"), fresh_token),
        (format!("{insert} SELECT 'x' || n, 'cpu-fresh', 70 - n, {AT} FROM (SELECT 1 AS n UNION ALL SELECT 2);"), fresh_token),
        (format!("{insert} VALUES ('x', 'cpu-fresh', 9223372036854775807, {AT});"), "counters only grow"),
        (format!("{insert} VALUES ('x', 'cpu-fresh', x'10', {AT});"), "cannot store BLOB value"),
        (format!("{insert} VALUES ('x', 'cpu-fresh', NULL, {AT});"), "NOT NULL constraint failed: claims.token"),
        (format!("INSERT OR REPLACE INTO claims (task_id, agent_id, token, claimed_at) VALUES ('x', 'cpu-fresh', NULL, {AT});"), "NOT NULL constraint failed: claims.token"),
        (format!("REPLACE INTO claims (task_id, agent_id, token, claimed_at) VALUES ('t1', 'cpu-fresh', {NEXT}, {AT});"), held),
        (format!("{insert} VALUES ('t1', 'cpu-fresh', {NEXT}, {AT}) ON CONFLICT (task_id) DO UPDATE SET lease_expires_at = NULL;"), held),
        (format!("{insert} VALUES ('t1', 'cpu-fresh', {NEXT}, {AT}) ON CONFLICT DO NOTHING;"), held),
        ("UPDATE claims SET token = token + 100;".to_owned(), unchanged),
        ("UPDATE OR REPLACE claims SET token = 1;".to_owned(), unchanged),
        ("UPDATE OR REPLACE claims SET task_id = 't1' WHERE task_id = 't2';".to_owned(), unchanged),
        ("UPDATE claims SET agent_id = 'builder-1' WHERE task_id = 't1';".to_owned(), unchanged),
        ("UPDATE claims SET detached = 1;".to_owned(), "a claim is detached only when its agent is deregistered"),
        ("UPDATE agents SET current_load = current_load - 1;".to_owned(), covers),
        ("UPDATE agents SET current_load = '0';".to_owned(), covers),
        ("UPDATE agents SET max_load = 1, current_load = 0 WHERE current_load > 0;".to_owned(), covers),
        ("INSERT INTO agents (id, name, status, last_heartbeat, current_load, max_load) VALUES ('new-gpu', '', 'available', '2026-01-01 00:00:00.000000000', 0, 0) ON CONFLICT (id) DO UPDATE SET current_load = 0;".to_owned(), "an agent with this id exists"),
    ] {
        shell_refused(db, &sql, why);
    }
    // A claim inserted by hand with the next token counts like roster's,
    // and several in one statement too; deregistering detaches them.
    shell_ok(
        db,
        &format!(
            "{insert} SELECT 'hand-' || n, 'cpu-fresh', {NEXT} + n, {AT} FROM (SELECT 0 AS n UNION ALL SELECT 5);"
        ),
    );
    shell_ok(db, "DELETE FROM agents WHERE id = 'old-gpu';");
    let broken = "SELECT 'token ' || token FROM claims GROUP BY token HAVING count(*) > 1
                  UNION ALL SELECT 'above the counter' FROM claims
                      WHERE token > (SELECT value FROM counters WHERE name = 'claim_token')
                  UNION ALL SELECT 'load of ' || id FROM agents AS a
                      WHERE current_load < (SELECT count(*) FROM claims
                                            WHERE agent_id = a.id AND detached = 0);";
    assert_eq!(shell_ok(db, broken), "");
    let held = fleet.registry.claims(None)?;
    assert_eq!(held.len(), 5, "{held:?}");
    let tokens: std::collections::BTreeSet<u64> = held.iter().map(|c| c.token).collect();
    assert_eq!(tokens.len(), 5, "{held:?}");
    assert_eq!(
        shell_ok(db, "SELECT count(*) FROM claims WHERE detached = 1;"),
        format!(
            "{}\n",
            held.iter().filter(|c| c.agent_id == "old-gpu").count()
        )
    );
    Ok(())
}

/// A claim whose task id holds a lone continuation byte (which SQLite
/// cannot tell from text in SQL) is named by its task id and column when
/// roster reads it, on `claims` and `recover` alike.
#[test]
fn an_unreadable_claim_is_named_by_its_task_id() -> Result<()> {
    let fleet = fleet()?;
    shell_ok(
        &fleet.path,
        "INSERT INTO claims (task_id, agent_id, token, claimed_at) VALUES ('t' || CAST(x'a9' AS TEXT), 'cpu-fresh', (SELECT value + 1 FROM counters WHERE name = 'claim_token'), '2026-03-04 05:06:07.000000000');",
    );
    let err = fleet
        .registry
        .claims(None)
        .expect_err("claims must not skip the row");
    assert_eq!(
        err.to_string(),
        "unreadable row in claims: task id \"t\\xa9\", column task_id: not UTF-8 (invalid utf-8 sequence of 1 bytes from index 1); repair or delete the row by hand (the sqlite3 shell, or psql)"
    );
    fleet.registry.deregister("cpu-fresh")?;
    match fleet.registry.recover() {
        Err(roster::Error::Unreadable {
            table: "claims",
            column: "task_id",
            ..
        }) => {}
        other => panic!("recover: {other:?}"),
    }
    Ok(())
}

/// An agent whose id holds a lone continuation byte, typed in the shell,
/// that a claim's walk chooses: the claim fails as unreadable, naming the
/// agent, and takes nothing.
#[test]
fn a_claim_that_meets_an_unreadable_agent_id_names_it_and_takes_nothing() -> Result<()> {
    let fleet = fleet()?;
    shell_ok(
        &fleet.path,
        "INSERT INTO agents (id, name, status, last_heartbeat, current_load, max_load) VALUES ('w' || CAST(x'a9' AS TEXT), 'w', 'available', '2026-01-01 00:00:00.000000000', 0, 1);
         INSERT INTO capabilities (agent_id, capability, position) VALUES ('w' || CAST(x'a9' AS TEXT), 'only-here', 0);",
    );
    let task = roster::Task {
        id: "t".into(),
        labels: vec!["only-here".into()],
        ..roster::Task::default()
    };
    match fleet.registry.claim(&task, None) {
        Err(roster::Error::Unreadable {
            table: "agents",
            id,
            column: "id",
            ..
        }) => assert_eq!(id, "\"w\\xa9\""),
        other => panic!("claim: {other:?}"),
    }
    assert!(fleet.registry.claims(None)?.is_empty(), "nothing was taken");
    Ok(())
}
