//! BENCHMARKS.md row "heartbeat, 4 processes at once, summed" against 1
//! process alone, at 10 000 agents (row name `processes`). Each process is
//! this binary run again as a child; the table shows the time per heartbeat
//! of the summed throughput, and a note under it how evenly the four
//! processes shared the work.
//!
//! The two measures alternate in short windows, many times: on a shared
//! machine the load from elsewhere changes from one second to the next, and
//! four processes take a larger share of a busy machine than one does.
//!
//! The same pair is measured, in the same windows in turn, for the bare
//! `UPDATE` that a heartbeat runs, on the same file, from a connection with
//! roster's `synchronous` and checkpoint interval and SQLite's own busy
//! handler (`busy_timeout`): what SQLite itself makes of four writer
//! processes, beside what roster makes of them.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::Utc;
use roster::{AgentRegistry, SqliteRegistry};
use rusqlite::Connection;

use crate::common::{
    Bench, CHECKPOINT_PAGES, KillOnDrop, Rng, Times, agent_ids, fleet, this_binary,
};

/// The name `main` runs [`worker`] under.
pub const WORKER: &str = "heartbeat-worker";

/// What a worker prints once it has opened the registry.
const READY: &str = "ready";

/// Repetitions of the pair, and the window of each measure, in a full run
/// and in a quick one.
const REPS: usize = 15;
const QUICK_REPS: usize = 9;
const WINDOW: Duration = Duration::from_millis(1000);
const QUICK_WINDOW: Duration = Duration::from_millis(500);

/// Measures the row.
pub fn run(bench: &mut Bench) {
    let n = 10_000;
    let agents = fleet(n, 51);
    let (path, registry) = bench.roster_file("procs.db", &agents);
    drop(registry);
    let (reps, window) = if bench.quick {
        (QUICK_REPS, QUICK_WINDOW)
    } else {
        (REPS, WINDOW)
    };
    // The slowest process's share of the heartbeats, per kind.
    let mut slowest_shares: [Vec<f64>; 2] = Default::default();
    let mut per_heartbeat = |kind: Kind, processes: usize| -> Duration {
        let counts = heartbeats(&path, n, processes, window, kind);
        let total: u64 = counts.iter().sum();
        assert!(total > 0, "no heartbeat in {window:?}");
        if processes > 1 {
            let slowest = counts.iter().copied().min().unwrap_or(0);
            slowest_shares[kind as usize].push(slowest as f64 / total as f64);
        }
        window / u32::try_from(total).expect("heartbeat count fits u32")
    };
    // Four processes and one, of roster and of the bare statement.
    let measures = [
        (Kind::Roster, 4),
        (Kind::Roster, 1),
        (Kind::Bare, 4),
        (Kind::Bare, 1),
    ];
    let mut times: [Vec<Duration>; 4] = Default::default();
    for rep in 0..reps {
        // Rotate which goes first, as `interleaved` does.
        for k in 0..measures.len() {
            let i = (k + rep) % measures.len();
            let (kind, processes) = measures[i];
            times[i].push(per_heartbeat(kind, processes));
        }
    }
    let [four, one, bare_four, bare_one] = times;
    bench.push(
        format!("heartbeat, 4 processes, {n} agents"),
        "1 process alone (time per heartbeat, summed throughput)",
        Times::new(four, one),
        "roster / baseline <= 1.11 (0.9x throughput)",
    );
    bench.push(
        format!("bare UPDATE, 4 processes, {n} agents"),
        "1 process alone, bare UPDATE with busy_timeout, same file",
        Times::new(bare_four, bare_one),
        "report",
    );
    for (kind, mut shares) in [Kind::Roster, Kind::Bare].into_iter().zip(slowest_shares) {
        shares.sort_unstable_by(f64::total_cmp);
        bench.note(format!(
            "4 processes, {}: the slowest made {:.1} % of the heartbeats (median of {reps} runs; \
             smallest {:.1} %, 25 % is an even share).",
            kind.name(),
            shares[reps / 2] * 100.0,
            shares[0] * 100.0
        ));
    }
}

/// What the worker processes run.
#[derive(Clone, Copy)]
enum Kind {
    /// `SqliteRegistry::heartbeat`.
    Roster = 0,
    /// The `UPDATE` a heartbeat runs, on a bare connection with SQLite's
    /// busy handler.
    Bare = 1,
}

impl Kind {
    /// How the worker's command line and the notes name it.
    fn name(self) -> &'static str {
        match self {
            Kind::Roster => "roster",
            Kind::Bare => "bare",
        }
    }
}

/// How many heartbeats each of `processes` processes made, at once, in
/// `window`. The window starts when every process has said it is ready and
/// has been told to go.
fn heartbeats(
    db: &Path,
    agents: usize,
    processes: usize,
    window: Duration,
    kind: Kind,
) -> Vec<u64> {
    let mut children: Vec<_> = (0..processes)
        .map(|p| {
            let child = this_binary(WORKER)
                .arg(db)
                .arg(agents.to_string())
                .arg(window.as_millis().to_string())
                .arg(p.to_string())
                .arg(kind.name())
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
    let counts = outputs
        .iter_mut()
        .map(|output| {
            let line = read_line(output);
            line.parse::<u64>()
                .unwrap_or_else(|_| panic!("heartbeat worker printed {line:?}, not a count"))
        })
        .collect();
    for child in &mut children {
        let status = child.0.wait().expect("worker");
        assert!(status.success(), "heartbeat worker failed");
    }
    counts
}

fn read_line(output: &mut impl BufRead) -> String {
    let mut line = String::new();
    output.read_line(&mut line).expect("worker output");
    line.trim().to_owned()
}

/// The child process: `DB AGENTS MILLIS SEED KIND`. Opens the registry
/// (`roster`) or a bare connection to its file (`bare`), prints `ready`,
/// waits for a line on stdin, heartbeats random agents for MILLIS ms, then
/// prints how many it did.
pub fn worker(args: &[String]) {
    let [db, agents, millis, seed, kind] = args else {
        panic!("{WORKER} DB AGENTS MILLIS SEED KIND");
    };
    let agents: usize = agents.parse().expect("AGENTS is a number");
    let millis: u64 = millis.parse().expect("MILLIS is a number");
    let seed: u64 = seed.parse().expect("SEED is a number");
    let ids = agent_ids(agents);
    let mut rng = Rng(0x9e37_79b9 + seed);
    let mut heartbeat: Box<dyn FnMut(&str)> = match kind.as_str() {
        "roster" => {
            let registry = SqliteRegistry::open(db).expect("open");
            Box::new(move |id| {
                // The roster call this file measures.
                registry.heartbeat(id).expect("heartbeat");
            })
        }
        "bare" => {
            let conn = Connection::open(db).expect("open bare");
            conn.busy_timeout(Duration::from_secs(5))
                .expect("busy_timeout");
            conn.pragma_update(None, "synchronous", "NORMAL")
                .expect("synchronous");
            conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)
                .expect("wal_autocheckpoint");
            Box::new(move |id| {
                // A fresh time in roster's format: an unchanged row would
                // write no page.
                let now = Utc::now().format("%Y-%m-%d %H:%M:%S%.9f").to_string();
                conn.prepare_cached("UPDATE agents SET last_heartbeat = ?1 WHERE id = ?2")
                    .and_then(|mut stmt| stmt.execute([&now, id]))
                    .expect("bare heartbeat");
            })
        }
        other => panic!("KIND is roster or bare, not {other:?}"),
    };
    println!("{READY}");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).expect("stdin");
    let deadline = Instant::now() + Duration::from_millis(millis);
    let mut count = 0_u64;
    while Instant::now() < deadline {
        heartbeat(&ids[rng.below(agents as u64) as usize]);
        count += 1;
    }
    println!("{count}");
}
