//! BENCHMARKS.md row "heartbeat, `Durability::Full`" against
//! `Durability::Normal`, the default, at 10 000 agents (row name
//! `durability`).

use roster::{AgentRegistry, Durability, SqliteOptions, SqliteRegistry};

use crate::common::{Bench, agent_ids, fleet, side_by_side};

/// The roster call this file measures.
fn beat(registry: &SqliteRegistry, id: &str) {
    registry.heartbeat(id).expect("heartbeat");
}

/// Measures the row.
pub fn run(bench: &mut Bench) {
    let n = 10_000;
    let agents = fleet(n, 61);
    let (path, normal) = bench.roster_file("durability.db", &agents);
    let full = SqliteOptions::new()
        .durability(Durability::Full)
        .open(&path)
        .expect("open FULL");
    let ids = agent_ids(n);
    let pick = |i: usize| ids[(i * 7919) % n].as_str();
    let times = side_by_side(
        bench.reps,
        300,
        |i| beat(&full, pick(i)),
        |i| beat(&normal, pick(i)),
    );
    bench.push(
        format!("heartbeat, Durability::Full, {n} agents"),
        "Durability::Normal (the default)",
        times,
        "report",
    );
}
