//! BENCHMARKS.md row "list, N agents" against a bare `SELECT` of the same
//! rows, at the smallest fleet size (row name `list`).

use std::hint::black_box;

use roster::{AgentRegistry, SqliteRegistry};
use rusqlite::Connection;

use crate::common::{Bench, CAPABILITIES, fleet, side_by_side};

/// The roster call this file measures; returns how many agents it listed.
fn list(registry: &SqliteRegistry) -> usize {
    let all = registry.list().expect("list");
    let len = all.len();
    black_box(all);
    len
}

/// Measures the row.
pub fn run(bench: &mut Bench) {
    let n = bench.smallest();
    let agents = fleet(n, 41);
    let (path, registry) = bench.roster_file(&format!("list-{n}.db"), &agents);
    let bare = Connection::open(&path).expect("open");
    let mut select = bare
        .prepare(
            "SELECT a.id, a.name, a.status, a.last_heartbeat, a.current_load, a.max_load, c.capability
             FROM agents AS a LEFT JOIN capabilities AS c ON c.agent_id = a.id
             ORDER BY a.id, c.position",
        )
        .expect("prepare");
    let times = side_by_side(
        bench.reps,
        5,
        |_| assert_eq!(list(&registry), n),
        |_| {
            let mut rows = select.query([]).expect("query");
            let mut count = 0;
            while let Some(row) = rows.next().expect("row") {
                black_box((
                    row.get_ref(0).expect("c"),
                    row.get_ref(1).expect("c"),
                    row.get_ref(2).expect("c"),
                    row.get_ref(3).expect("c"),
                    row.get_ref(4).expect("c"),
                    row.get_ref(5).expect("c"),
                    row.get_ref(6).expect("c"),
                ));
                count += 1;
            }
            assert_eq!(count, n * CAPABILITIES);
        },
    );
    bench.push(
        format!("list, {n} agents"),
        "bare SELECT of the same rows",
        times,
        "roster / baseline <= 1.5",
    );
}
