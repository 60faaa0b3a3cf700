//! BENCHMARKS.md paragraph "Peak memory (VmHWM)": a process that opens a
//! registry of N agents (the largest fleet size) and heartbeats, claims,
//! releases and reaps on it, against a process that opens the same file with
//! bare rusqlite and runs one UPDATE (row name `memory`). Each side is this
//! binary run again as a child, so that neither sees the other's memory.

use std::hint::black_box;
use std::time::Duration;

use roster::{AgentRegistry, Priority, SqliteRegistry, Task};
use rusqlite::Connection;

use crate::common::{Bench, agent_id, fleet, now_text, this_binary, word};

/// The name `main` runs [`worker`] under.
pub const WORKER: &str = "memory-worker";

/// Measures both processes and notes their peaks under the table.
pub fn run(bench: &mut Bench) {
    let n = bench.largest();
    let agents = fleet(n, 91);
    let (path, registry) = bench.roster_file(&format!("memory-{n}.db"), &agents);
    drop(registry);
    let peak = |role: &str| -> u64 {
        let output = this_binary(WORKER)
            .arg(role)
            .arg(&path)
            .output()
            .expect("memory worker");
        assert!(output.status.success(), "memory worker failed");
        let stdout = String::from_utf8_lossy(&output.stdout);
        stdout
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("memory worker printed {stdout:?}, not kB"))
    };
    let (roster_kb, bare_kb) = (peak("roster"), peak("bare"));
    bench.note(format!(
        "peak RSS (VmHWM) of a process holding an open registry of {n} agents, after a \
         heartbeat, a claim, a release and a reap: {:.1} MiB; a bare rusqlite process \
         running one UPDATE on the same file: {:.1} MiB",
        roster_kb as f64 / 1024.0,
        bare_kb as f64 / 1024.0
    ));
}

/// The child process: `roster DB` opens the registry and works on it, `bare
/// DB` runs one UPDATE with rusqlite; either then prints its peak resident
/// memory in kB.
pub fn worker(args: &[String]) {
    let [role, db] = args else {
        panic!("{WORKER} roster|bare DB");
    };
    match role.as_str() {
        "roster" => {
            // The roster calls this file measures.
            let registry = SqliteRegistry::open(db).expect("open");
            registry.heartbeat(&agent_id(0)).expect("heartbeat");
            let task = Task {
                id: "t".into(),
                labels: vec![word(3)],
                priority: Priority::Medium,
            };
            let claimed = registry.claim(&task, None).expect("claim");
            registry
                .release(&claimed.claim.task_id, Some(claimed.claim.token))
                .expect("release");
            registry.reap(Duration::from_secs(3600)).expect("reap");
            black_box(&registry);
        }
        "bare" => {
            let conn = Connection::open(db).expect("open");
            conn.execute(
                "UPDATE agents SET last_heartbeat = ?1 WHERE id = ?2",
                [now_text(), agent_id(0)],
            )
            .expect("update");
        }
        other => panic!("{WORKER}: unknown role {other:?}, expected roster or bare"),
    }
    println!("{}", peak_rss_kb());
}

/// The peak resident memory of this process, in kB, from /proc/self/status.
fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .expect("VmHWM in /proc/self/status")
}
