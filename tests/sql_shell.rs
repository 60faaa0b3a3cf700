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
        "CHECK constraint failed",
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
