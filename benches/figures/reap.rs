//! BENCHMARKS.md rows "reap, N agents, 1 % stale" against a bare `SELECT
//! count(*)` and a bare `UPDATE ... RETURNING` with the same predicate, and
//! "reap, N agents, none stale", at the largest fleet size (row name `reap`).
//!
//! The four measures of a repetition run in a fixed order, not rotated: each
//! needs the stale agents revived or reaped by the one before.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use roster::{AgentRegistry, AgentStatus, SqliteRegistry};
use rusqlite::Connection;

use crate::common::{Bench, Times, fleet};

/// The TTL of every reap.
const TTL: Duration = Duration::from_secs(60);

/// The roster call this file measures; returns how many agents it reaped.
fn reap(registry: &SqliteRegistry) -> usize {
    registry.reap(TTL).expect("reap").len()
}

/// Measures the three rows.
pub fn run(bench: &mut Bench) {
    let n = bench.largest();
    let mut agents = fleet(n, 31);
    let stale = Utc::now() - TimeDelta::minutes(10);
    for (i, agent) in agents.iter_mut().enumerate() {
        agent.status = AgentStatus::Available;
        if i % 100 == 0 {
            agent.last_heartbeat = stale;
        }
    }
    let (path, registry) = bench.roster_file(&format!("reap-{n}.db"), &agents);
    let bare = Connection::open(&path).expect("open");
    bare.pragma_update(None, "synchronous", "NORMAL")
        .expect("synchronous");
    let predicate = "status <> 'offline' AND last_heartbeat < ?1";
    let mut count = bare
        .prepare(&format!("SELECT count(*) FROM agents WHERE {predicate}"))
        .expect("prepare");
    let mut update = bare
        .prepare(&format!(
            "UPDATE agents SET status = 'offline' WHERE {predicate} RETURNING id"
        ))
        .expect("prepare");
    let cutoff = (Utc::now() - TimeDelta::from_std(TTL).expect("ttl"))
        .format("%Y-%m-%d %H:%M:%S%.9f")
        .to_string();
    // Every run finds the 1 % again: the stale agents are revived (status
    // only) before each, outside the timing.
    let revive = || {
        bare.execute(
            "UPDATE agents SET status = 'available' WHERE status = 'offline'",
            [],
        )
        .expect("revive");
    };
    let mut runs: [Vec<Duration>; 4] = Default::default();
    for _ in 0..bench.reps {
        revive();
        let start = Instant::now();
        let reaped = reap(&registry);
        runs[0].push(start.elapsed());
        assert_eq!(reaped, n / 100);

        let start = Instant::now();
        black_box(
            count
                .query_row([&cutoff], |r| r.get::<_, i64>(0))
                .expect("count"),
        );
        runs[1].push(start.elapsed());

        revive();
        let start = Instant::now();
        let updated = update
            .query_map([&cutoff], |r| r.get::<_, String>(0))
            .expect("update")
            .count();
        runs[2].push(start.elapsed());
        assert_eq!(updated, n / 100);

        // Nobody stale now: the steady state of a reaper.
        let start = Instant::now();
        let reaped = reap(&registry);
        runs[3].push(start.elapsed());
        assert_eq!(reaped, 0);
    }
    let [reaps, counts, updates, idle] = runs;
    bench.push(
        format!("reap, {n} agents, 1% stale"),
        "bare SELECT count(*) same predicate",
        Times::new(reaps.clone(), counts.clone()),
        "roster / baseline <= 1.5",
    );
    bench.push(
        format!("reap, {n} agents, 1% stale"),
        "bare UPDATE ... RETURNING same predicate",
        Times::new(reaps, updates),
        "report",
    );
    bench.push(
        format!("reap, {n} agents, none stale"),
        "bare SELECT count(*) same predicate",
        Times::new(idle, counts),
        "report",
    );
}
