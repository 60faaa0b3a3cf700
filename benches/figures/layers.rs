//! BENCHMARKS.md rows "heartbeat layers, N agents": what each layer between
//! a caller and SQLite costs a heartbeat, one pair per layer, at the
//! smallest fleet size (row name `layers`).
//!
//! From the top down, each row times one side against the same work with
//! one layer taken away:
//!
//! 1. `SqliteRegistry::heartbeat` against roster's `UPDATE` run through an
//!    r2d2 pool set up as roster sets up its own (a checkout per call, the
//!    statement cache): the busy-retry wrapper, the error mapping and the
//!    timestamp encoding;
//! 2. that pooled `UPDATE` against the same `UPDATE` on one connection kept
//!    open: the pool checkout and return;
//! 3. that `UPDATE` on roster's table against the same on a copy of the
//!    file whose `agents` table lacks the `last_heartbeat` CHECK, the one
//!    CHECK a heartbeat makes SQLite evaluate (it writes no other column of
//!    an agent that is not offline, and fires no trigger);
//! 4. roster's table without that CHECK, as 10 000 registrations left the
//!    file, against the same file after `VACUUM`: the layout (how full the
//!    table's pages are, and whether they lie together or among the pages
//!    of the other tables), which decides how much each checkpoint writes;
//! 5. that packed file against the bare two-column table of the `heartbeat`
//!    row, itself written in one transaction: the shape of the table (wider
//!    rows, `STRICT`, `WITHOUT ROWID`, the status test);
//! 6. rows 4 and 5 in one pair: roster's file without the CHECK, as
//!    registrations left it, against the bare table: everything the file
//!    itself costs, apart from roster's code and CHECK.
//!
//! Every connection here, the bare table's too, has roster's settings,
//! its checkpoint interval included, so that no row mixes the interval
//! into what it measures (the `heartbeat` rows show what the interval
//! buys). Rows 1 and 2 write one file from both sides and checkpoint it
//! between slices, out of the timing: they measure code, and a checkpoint
//! every 4000 commits would fall on one side or the other by chance.
//!
//! The copies are byte-for-byte copies of roster's file in which only the
//! table's `CREATE` text is edited (`PRAGMA writable_schema`, the way the
//! SQLite documentation removes a CHECK): same pages, same rows.

use std::path::Path;
use std::time::Duration;

use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use roster::{AgentRegistry, SqliteRegistry};
use rusqlite::{Connection, OpenFlags};

use crate::common::{
    Bench, CHECKPOINT_PAGES, Rng, agent_ids, fleet, now_text, side_by_side, side_by_side_settled,
};
use crate::figures::heartbeat::bare_file;

/// Heartbeats per repetition.
const BATCH: usize = 10_000;

/// roster's heartbeat statements, word for word: the one for an agent
/// that is not offline, and the one that also brings an offline agent back.
const HEARTBEAT: &str =
    "UPDATE agents SET last_heartbeat = ?1 WHERE id = ?2 AND status <> 'offline'";
const HEARTBEAT_OFFLINE: &str = "UPDATE agents SET last_heartbeat = ?1,
                         status = CASE status WHEN 'offline' THEN 'available' ELSE status END
                     WHERE id = ?2";

/// The bare table's heartbeat.
const BARE: &str = "UPDATE agents SET last_heartbeat = ?1 WHERE id = ?2";

/// The CHECK constraint of `agents` that a heartbeat makes SQLite evaluate.
const HEARTBEAT_CHECK: &str = "agents_last_heartbeat_valid";

/// roster's per-connection settings (the default options).
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(64);
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "journal_size_limit", 16 * 1024 * 1024)?;
    conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
}

/// One connection to `path` with roster's settings.
fn direct(path: &Path) -> Connection {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open");
    configure(&conn).expect("configure");
    conn
}

/// A pool on `path` set up as roster's own (default options).
fn pool(path: &Path) -> Pool<SqliteConnectionManager> {
    let manager = SqliteConnectionManager::file(path)
        .with_flags(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_init(|conn| configure(conn));
    Pool::builder()
        .max_size(4)
        .min_idle(Some(1))
        .test_on_check_out(false)
        .idle_timeout(None)
        .max_lifetime(None)
        .build(manager)
        .expect("pool")
}

/// Runs roster's heartbeat statements on `conn`, as roster does: the
/// second only when the first found no agent that is not offline.
fn update(conn: &Connection, id: &str) {
    let now = now_text();
    let mut changed = conn
        .prepare_cached(HEARTBEAT)
        .and_then(|mut stmt| stmt.execute([now.as_str(), id]))
        .expect("update");
    if changed == 0 {
        changed = conn
            .prepare_cached(HEARTBEAT_OFFLINE)
            .and_then(|mut stmt| stmt.execute([now.as_str(), id]))
            .expect("update");
    }
    assert_eq!(changed, 1);
}

/// A copy of the roster file `from` at `to` whose `agents` table lacks the
/// CHECK constraints named `checks`.
fn without_checks(from: &Path, to: &Path, checks: &[&str]) {
    std::fs::copy(from, to).expect("copy");
    let conn = Connection::open(to).expect("open copy");
    let mut sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'agents'",
            [],
            |row| row.get(0),
        )
        .expect("agents table");
    for check in checks {
        sql = remove_constraint(&sql, check);
    }
    let version: i64 = conn
        .query_row("PRAGMA schema_version", [], |row| row.get(0))
        .expect("schema version");
    conn.execute_batch("PRAGMA writable_schema = ON")
        .expect("writable schema");
    conn.execute(
        "UPDATE sqlite_schema SET sql = ?1 WHERE type = 'table' AND name = 'agents'",
        [&sql],
    )
    .expect("edit schema");
    conn.execute_batch(&format!(
        "PRAGMA schema_version = {}; PRAGMA writable_schema = OFF;",
        version + 1
    ))
    .expect("schema version");
    drop(conn);
    let conn = Connection::open(to).expect("reopen copy");
    let stored: String = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'agents'",
            [],
            |row| row.get(0),
        )
        .expect("agents table");
    for check in checks {
        assert!(!stored.contains(check), "{check} is still there");
    }
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("integrity check");
    assert_eq!(integrity, "ok", "the edited copy is damaged");
}

/// `create` without `, CONSTRAINT name CHECK (...)`. The parentheses are
/// matched outside string literals and `--` comments.
fn remove_constraint(create: &str, name: &str) -> String {
    let marker = format!("CONSTRAINT {name} CHECK");
    let start = create
        .find(&marker)
        .unwrap_or_else(|| panic!("no constraint {name}"));
    let comma = create[..start].rfind(',').expect("a comma before it");
    let bytes = create.as_bytes();
    let mut i = start + marker.len();
    let mut depth = 0_usize;
    let end = loop {
        match bytes[i] {
            b'\'' => {
                i += 1;
                while bytes[i] != b'\'' {
                    i += 1;
                }
            }
            b'-' if bytes[i + 1] == b'-' => {
                while bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    break i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    };
    format!("{}{}", &create[..comma], &create[end..])
}

/// Measures the six rows at the smallest fleet size.
pub fn run(bench: &mut Bench) {
    let n = bench.smallest();
    let agents = fleet(n, 7);
    let (path, registry) = bench.roster_file(&format!("layers-{n}.db"), &agents);
    // Closing the registry checkpoints the -wal file into the database
    // file, so that the copies hold every agent.
    drop(registry);
    let no_time_check = bench.fresh_file(&format!("layers-no-time-check-{n}.db"));
    without_checks(&path, &no_time_check, &[HEARTBEAT_CHECK]);
    let packed = bench.fresh_file(&format!("layers-packed-{n}.db"));
    std::fs::copy(&no_time_check, &packed).expect("copy");
    Connection::open(&packed)
        .and_then(|conn| conn.execute_batch("VACUUM"))
        .expect("vacuum");

    let registry = SqliteRegistry::open(&path).expect("reopen");
    let pooled = pool(&path);
    let one = direct(&path);
    let one_no_time_check = direct(&no_time_check);
    let one_packed = direct(&packed);
    let bare = bare_file(bench, &format!("layers-bare-{n}.db"), n);
    bare.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)
        .expect("checkpoint interval");

    let ids = agent_ids(n);
    let mut rng = Rng(13);
    let picks: Vec<usize> = (0..4096).map(|_| rng.below(n as u64) as usize).collect();
    let pick = |i: usize| ids[picks[i % picks.len()]].as_str();
    let bare_update = |i: usize| {
        let changed = bare
            .prepare_cached(BARE)
            .and_then(|mut stmt| stmt.execute([now_text().as_str(), pick(i)]))
            .expect("update");
        assert_eq!(changed, 1);
    };
    let through_pool = |i: usize| {
        let conn = pooled.get().expect("checkout");
        update(&conn, pick(i));
    };
    let reps = bench.reps;
    let figure = format!("heartbeat layers, {n} agents");

    // The first two rows write one file from both sides: it is
    // checkpointed between slices, out of the timing, so that neither side
    // pays for the other's pages (each slice writes far fewer than the
    // checkpoint interval).
    let checkpointer = direct(&path);
    let settle = || {
        checkpointer
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .expect("checkpoint");
    };
    let times = side_by_side_settled(
        reps,
        BATCH,
        |i| registry.heartbeat(pick(i)).expect("heartbeat"),
        through_pool,
        settle,
    );
    bench.push(
        format!("{figure}: SqliteRegistry::heartbeat"),
        "its UPDATE through an r2d2 pool, no retry wrapper",
        times,
        "report",
    );
    let times = side_by_side_settled(reps, BATCH, through_pool, |i| update(&one, pick(i)), settle);
    bench.push(
        format!("{figure}: UPDATE through the pool"),
        "the same UPDATE on one open connection",
        times,
        "report",
    );
    let times = side_by_side(
        reps,
        BATCH,
        |i| update(&one, pick(i)),
        |i| update(&one_no_time_check, pick(i)),
    );
    bench.push(
        format!("{figure}: UPDATE on roster's table"),
        "the table without the last_heartbeat CHECK",
        times,
        "report",
    );
    let times = side_by_side(
        reps,
        BATCH,
        |i| update(&one_no_time_check, pick(i)),
        |i| update(&one_packed, pick(i)),
    );
    bench.push(
        format!("{figure}: table without the last_heartbeat CHECK"),
        "the same file after VACUUM",
        times,
        "report",
    );
    let times = side_by_side(reps, BATCH, |i| update(&one_packed, pick(i)), bare_update);
    bench.push(
        format!("{figure}: that file after VACUUM"),
        "bare UPDATE on the two-column table",
        times,
        "report",
    );
    let times = side_by_side(
        reps,
        BATCH,
        |i| update(&one_no_time_check, pick(i)),
        bare_update,
    );
    bench.push(
        format!("{figure}: table without the last_heartbeat CHECK"),
        "bare UPDATE on the two-column table",
        times,
        "report",
    );
}
