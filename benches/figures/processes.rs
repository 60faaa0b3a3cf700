//! BENCHMARKS.md row "heartbeat, 4 processes at once, summed" against 1
//! process alone, at 10 000 agents (row name `processes`). Each process is
//! this binary run again as a child; the table shows the time per heartbeat
//! of the summed throughput.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use roster::{AgentRegistry, SqliteRegistry};

use crate::common::{Bench, KillOnDrop, Rng, Times, agent_ids, fleet, interleaved, this_binary};

/// The name `main` runs [`worker`] under.
pub const WORKER: &str = "heartbeat-worker";

/// What a worker prints once it has opened the registry.
const READY: &str = "ready";

/// Measures the row: the processes run for 3 s per repetition (1.5 s in a
/// quick run).
pub fn run(bench: &mut Bench) {
    let n = 10_000;
    let agents = fleet(n, 51);
    let (path, registry) = bench.roster_file("procs.db", &agents);
    drop(registry);
    let window = Duration::from_millis(if bench.quick { 1500 } else { 3000 });
    let per_heartbeat = |processes: usize| -> Duration {
        let rate = heartbeats_per_second(&path, n, processes, window);
        Duration::from_secs_f64(1.0 / rate)
    };
    let [four, one] = interleaved(
        bench.reps.min(5),
        [&mut || per_heartbeat(4), &mut || per_heartbeat(1)],
    );
    bench.push(
        format!("heartbeat, 4 processes, {n} agents"),
        "1 process alone (time per heartbeat, summed throughput)",
        Times::new(four, one),
        "roster / baseline <= 1.25 (0.8x throughput)",
    );
}

/// Heartbeats from `processes` processes at once for `window`, summed over
/// the processes, per second. The window starts when every process has said
/// it is ready and has been told to go.
fn heartbeats_per_second(db: &Path, agents: usize, processes: usize, window: Duration) -> f64 {
    let mut children: Vec<_> = (0..processes)
        .map(|p| {
            let child = this_binary(WORKER)
                .arg(db)
                .arg(agents.to_string())
                .arg(window.as_millis().to_string())
                .arg(p.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn worker");
            KillOnDrop(child)
        })
        .collect();
    let mut outputs: Vec<_> = children
        .iter_mut()
        .map(|child| BufReader::new(child.0.stdout.take().expect("worker stdout")))
        .collect();
    for output in &mut outputs {
        assert_eq!(read_line(output), READY, "heartbeat worker did not start");
    }
    for child in &mut children {
        // Closing stdin after the line is the signal.
        let mut go = child.0.stdin.take().expect("worker stdin");
        writeln!(go, "go").expect("start worker");
    }
    let total: u64 = outputs
        .iter_mut()
        .map(|output| {
            let line = read_line(output);
            line.parse::<u64>()
                .unwrap_or_else(|_| panic!("heartbeat worker printed {line:?}, not a count"))
        })
        .sum();
    for child in &mut children {
        let status = child.0.wait().expect("worker");
        assert!(status.success(), "heartbeat worker failed");
    }
    total as f64 / window.as_secs_f64()
}

fn read_line(output: &mut impl BufRead) -> String {
    let mut line = String::new();
    output.read_line(&mut line).expect("worker output");
    line.trim().to_owned()
}

/// The child process: `DB AGENTS MILLIS SEED`. Opens the registry, prints
/// `ready`, waits for a line on stdin, heartbeats random agents for MILLIS
/// ms, then prints how many it did.
pub fn worker(args: &[String]) {
    let [db, agents, millis, seed] = args else {
        panic!("{WORKER} DB AGENTS MILLIS SEED");
    };
    let agents: usize = agents.parse().expect("AGENTS is a number");
    let millis: u64 = millis.parse().expect("MILLIS is a number");
    let seed: u64 = seed.parse().expect("SEED is a number");
    let registry = SqliteRegistry::open(db).expect("open");
    let ids = agent_ids(agents);
    let mut rng = Rng(0x9e37_79b9 + seed);
    println!("{READY}");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).expect("stdin");
    let deadline = Instant::now() + Duration::from_millis(millis);
    let mut count = 0_u64;
    while Instant::now() < deadline {
        // The roster call this file measures.
        registry
            .heartbeat(&ids[rng.below(agents as u64) as usize])
            .expect("heartbeat");
        count += 1;
    }
    println!("{count}");
}
