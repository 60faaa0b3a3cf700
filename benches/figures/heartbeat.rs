//! BENCHMARKS.md rows "heartbeat, N agents" against a bare `UPDATE ... WHERE
//! id = ?` (the goal, with SQLite's default checkpoint interval, and the
//! same with roster's), and against roster without the claim indexes, at
//! every fleet size (row name `heartbeat`).

use std::time::Duration;

use roster::{AgentRegistry, SqliteRegistry};
use rusqlite::Connection;

use crate::common::{
    Bench, CHECKPOINT_PAGES, Rng, agent_id, agent_ids, fleet, now_text, side_by_side,
};

/// Heartbeats per repetition.
const BATCH: usize = 10_000;

/// The roster call this file measures.
fn beat(registry: &SqliteRegistry, id: &str) {
    registry.heartbeat(id).expect("heartbeat");
}

/// Measures both rows at every size.
pub fn run(bench: &mut Bench) {
    for n in bench.sizes() {
        let agents = fleet(n, 7);
        let (path, registry) = bench.roster_file(&format!("hb-{n}.db"), &agents);
        let bare = bare_file(bench, &format!("bare-{n}.db"), n);
        let mut update = bare
            .prepare("UPDATE agents SET last_heartbeat = ?1 WHERE id = ?2")
            .expect("prepare");
        let ids = agent_ids(n);
        let mut rng = Rng(11);
        let picks: Vec<usize> = (0..4096).map(|_| rng.below(n as u64) as usize).collect();
        let pick = |i: usize| ids[picks[i % picks.len()]].as_str();

        let times = side_by_side(
            bench.reps,
            BATCH,
            |i| beat(&registry, pick(i)),
            |i| {
                let changed = update
                    .execute([now_text().as_str(), pick(i)])
                    .expect("update");
                assert_eq!(changed, 1);
            },
        );
        bench.push(
            format!("heartbeat, {n} agents"),
            "bare UPDATE by primary key",
            times,
            "roster / baseline <= 1.11 (0.9x throughput)",
        );

        // The same bare table checkpointed as seldom as roster's file is:
        // what the interval buys roster, and what is left to the table.
        let seldom = bare_file(bench, &format!("bare-seldom-{n}.db"), n);
        seldom
            .pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)
            .expect("checkpoint interval");
        let mut seldom_update = seldom
            .prepare("UPDATE agents SET last_heartbeat = ?1 WHERE id = ?2")
            .expect("prepare");
        let times = side_by_side(
            bench.reps,
            BATCH,
            |i| beat(&registry, pick(i)),
            |i| {
                let changed = seldom_update
                    .execute([now_text().as_str(), pick(i)])
                    .expect("update");
                assert_eq!(changed, 1);
            },
        );
        bench.push(
            format!("heartbeat, {n} agents"),
            "bare UPDATE, checkpoint every 4000 pages as roster",
            times,
            "report",
        );

        // The same registry without the claim indexes: what they cost a
        // heartbeat. Closing the registry first checkpoints the -wal file
        // into the database file, so that the copy holds every agent.
        drop(registry);
        let plain = bench.fresh_file(&format!("hb-noidx-{n}.db"));
        std::fs::copy(&path, &plain).expect("copy");
        Connection::open(&plain)
            .and_then(|conn| {
                conn.execute_batch(
                    "DROP INDEX agents_claim_by_usage; DROP INDEX agents_claim_by_load;",
                )
            })
            .expect("drop indexes");
        let registry = SqliteRegistry::open(&path).expect("reopen");
        let without = SqliteRegistry::open(&plain).expect("open copy");
        let times = side_by_side(
            bench.reps,
            BATCH,
            |i| beat(&registry, pick(i)),
            |i| beat(&without, pick(i)),
        );
        bench.push(
            format!("heartbeat, {n} agents"),
            "roster heartbeat without claim indexes",
            times,
            "report",
        );
    }
}

/// The limit for heartbeats: a minimal table of `n` agents with roster's
/// pragmas, written in one transaction, in the run's file `name`.
pub fn bare_file(bench: &Bench, name: &str, n: usize) -> Connection {
    let path = bench.fresh_file(name);
    let conn = Connection::open(&path).expect("open bare");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy_timeout");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "NORMAL")
        .expect("synchronous");
    conn.pragma_update(None, "foreign_keys", true).expect("fk");
    conn.execute_batch(
        "CREATE TABLE agents (id TEXT PRIMARY KEY, last_heartbeat TEXT NOT NULL);
         BEGIN;",
    )
    .expect("schema");
    {
        let mut insert = conn
            .prepare("INSERT INTO agents VALUES (?1, '2026-01-01 00:00:00.000000000')")
            .expect("prepare");
        for i in 0..n {
            insert.execute([agent_id(i)]).expect("insert");
        }
    }
    conn.execute_batch("COMMIT;").expect("commit");
    conn
}
