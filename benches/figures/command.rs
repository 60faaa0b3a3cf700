//! BENCHMARKS.md row "`roster heartbeat ID`, whole process" against
//! `sqlite3 FILE "UPDATE ..."`, whole process, at the smallest fleet size
//! (row name `command`). Needs the `sqlite3` shell on the PATH.

use std::process::{Command, Stdio};

use crate::common::{Bench, agent_ids, find_program, fleet, side_by_side};

/// Processes started per repetition, on each side.
const BATCH: usize = 40;

/// Measures the row, or notes why it could not.
pub fn run(bench: &mut Bench) {
    let Some(shell) = find_program("sqlite3") else {
        bench.note(
            "the command against sqlite3: not measured, the sqlite3 shell is not installed \
             (apt-get install -y sqlite3)"
                .to_owned(),
        );
        return;
    };
    let n = bench.smallest();
    let agents = fleet(n, 81);
    let (path, registry) = bench.roster_file(&format!("command-{n}.db"), &agents);
    // This process holds the file open, as a running orchestrator would, so
    // that neither command pays for recovering the WAL.
    let _held = registry;
    let ids = agent_ids(n);
    let pick = |i: usize| ids[(i * 7919) % n].as_str();
    let times = side_by_side(
        bench.reps.min(5),
        BATCH,
        |i| {
            // The roster command this file measures.
            let status = Command::new(env!("CARGO_BIN_EXE_roster"))
                .arg("--db")
                .arg(&path)
                .args(["heartbeat", pick(i)])
                .stdout(Stdio::null())
                .status()
                .expect("roster");
            assert!(status.success(), "roster heartbeat failed");
        },
        |i| {
            let sql = format!(
                "PRAGMA synchronous = NORMAL; UPDATE agents SET \
                 last_heartbeat = strftime('%Y-%m-%d %H:%M:%f000000', 'now'), \
                 status = CASE status WHEN 'offline' THEN 'available' ELSE status END \
                 WHERE id = '{}';",
                pick(i)
            );
            let status = Command::new(&shell)
                .arg(&path)
                .arg(sql)
                .stdout(Stdio::null())
                .status()
                .expect("sqlite3");
            assert!(status.success(), "sqlite3 failed");
        },
    );
    bench.push(
        "`roster heartbeat ID`, whole process".to_owned(),
        "`sqlite3 FILE \"UPDATE ...\"`, whole process",
        times,
        "roster / baseline <= 2",
    );
}
