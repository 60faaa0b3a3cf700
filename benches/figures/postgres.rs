//! BENCHMARKS.md rows for `PostgresRegistry` at 10 000 agents (row name
//! `postgres`), all on one PostgreSQL server that the figure starts itself
//! (a throwaway cluster made with `initdb` and `pg_ctl`, the tests' own, with
//! `fsync` and `synchronous_commit` off so that the figures show what roster
//! adds rather than the disk), or on the server `ROSTER_PG_URL` names:
//!
//! - heartbeat against a bare `UPDATE ... SET last_heartbeat = now() WHERE
//!   id = $1` on a two-column table of the same agents;
//! - claim (recorded as a row) against a naive claim: `SELECT ... ORDER BY
//!   <routing order> LIMIT 1 FOR UPDATE SKIP LOCKED`, then `INSERT INTO
//!   claims`, in one transaction, on the same tables;
//! - heartbeat from 4 processes at once against 1 alone, and claim plus
//!   release from 4 processes at once against 1 alone (summed throughput).
//!
//! Each process of the last two is this binary run again as a child.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};
use roster::{AgentRegistry, PostgresOptions, PostgresRegistry, Priority, Task};

use crate::common::{
    Bench, KillOnDrop, Rng, Times, agent_ids, fleet, interleaved, side_by_side, tasks,
};

/// The tests' throwaway cluster, reused as it is.
#[path = "../../tests/common/pg.rs"]
#[allow(dead_code)]
pub mod cluster;

/// The name `main` runs [`worker`] under.
pub const WORKER: &str = "postgres-worker";

/// What a worker prints once it has opened the registry.
const READY: &str = "ready";

/// Agents in every figure of this file.
const AGENTS: usize = 10_000;

/// Heartbeats per repetition.
const BEATS: usize = 2000;

/// Claims per repetition.
const CLAIMS: usize = 200;

/// The schema the figures use.
const SCHEMA: &str = "roster_bench";

/// The naive claim's choice: the routing order written plainly, every
/// eligible agent sorted on each call (`$1`: the labels).
const NAIVE_BY_USAGE: &str = "SELECT a.id FROM agents AS a
     WHERE a.status <> 'offline' AND NOT a.drained
       AND (a.max_load = 0 OR a.current_load < a.max_load)
       AND (SELECT count(*) FROM capabilities AS c
            WHERE c.agent_id = a.id AND c.capability = ANY ($1)) = cardinality($1)
     ORDER BY CASE WHEN a.max_load = 0 THEN 0.0 ELSE a.current_load::float8 / a.max_load END, a.id
     LIMIT 1 FOR UPDATE SKIP LOCKED";

/// The same for critical tasks: the lowest load first.
const NAIVE_BY_LOAD: &str = "SELECT a.id FROM agents AS a
     WHERE a.status <> 'offline' AND NOT a.drained
       AND (a.max_load = 0 OR a.current_load < a.max_load)
       AND (SELECT count(*) FROM capabilities AS c
            WHERE c.agent_id = a.id AND c.capability = ANY ($1)) = cardinality($1)
     ORDER BY a.current_load, a.id
     LIMIT 1 FOR UPDATE SKIP LOCKED";

/// Measures every row, or notes why it could not.
pub fn run(bench: &mut Bench) {
    let Some((started, url)) = server(bench, "postgres") else {
        return;
    };
    let mut admin = Client::connect(&url, NoTls).expect("connect");
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        .expect("drop the bench schema");
    let registry = PostgresOptions::new()
        .schema(SCHEMA)
        .open(&url)
        .expect("open the registry");
    load_fleet(&mut admin);
    let mut client = Client::connect(&url, NoTls).expect("connect");
    client
        .batch_execute(&format!("SET search_path = {SCHEMA}"))
        .expect("search_path");

    heartbeat(bench, &registry, &mut client);
    claim(bench, &registry, &mut client);
    processes(bench, &url);

    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        .expect("drop the bench schema");
    drop(started);
}

/// The server the PostgreSQL figures use: the one `ROSTER_PG_URL` names,
/// or a throwaway cluster started here (returned, so that it lives as long
/// as the caller keeps it). `None`, with a note naming `row`, when there is
/// neither.
pub fn server(bench: &mut Bench, row: &str) -> Option<(Option<cluster::Cluster>, String)> {
    if let Some(url) = std::env::var(cluster::URL_VARIABLE)
        .ok()
        .filter(|url| !url.is_empty())
    {
        return Some((None, url));
    }
    match std::panic::catch_unwind(|| cluster::Cluster::start(false)) {
        Ok(cluster) => {
            let url = cluster.url().to_owned();
            Some((Some(cluster), url))
        }
        Err(_) => {
            bench.note(format!(
                "{row}: not measured, no PostgreSQL cluster could be started \
                 (apt-get install -y postgresql, or set ROSTER_PG_URL)"
            ));
            None
        }
    }
}

/// Writes the fleet into the registry's tables in a few statements (the
/// same agents as the SQLite figures draw), and a two-column copy of them
/// for the bare UPDATE.
fn load_fleet(admin: &mut Client) {
    let agents = fleet(AGENTS, 61);
    let ids: Vec<&str> = agents.iter().map(|a| a.id.as_str()).collect();
    let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
    let statuses: Vec<&str> = agents.iter().map(|a| a.status.as_str()).collect();
    let beats: Vec<_> = agents.iter().map(|a| a.last_heartbeat).collect();
    let loads: Vec<i64> = agents.iter().map(|a| i64::from(a.current_load)).collect();
    let maxes: Vec<i64> = agents.iter().map(|a| i64::from(a.max_load)).collect();
    let (mut owners, mut positions, mut capabilities) = (Vec::new(), Vec::new(), Vec::new());
    for agent in &agents {
        for (position, capability) in (0_i32..).zip(&agent.capabilities) {
            owners.push(agent.id.as_str());
            positions.push(position);
            capabilities.push(capability.as_str());
        }
    }
    let mut tx = admin.transaction().expect("begin");
    tx.batch_execute(&format!("SET LOCAL search_path = {SCHEMA}"))
        .expect("search_path");
    tx.execute(
        "INSERT INTO agents (id, name, status, last_heartbeat, current_load, max_load)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[],
                              $5::bigint[], $6::bigint[])",
        &[&ids, &names, &statuses, &beats, &loads, &maxes],
    )
    .expect("agents");
    tx.execute(
        "INSERT INTO capabilities (agent_id, position, capability)
         SELECT * FROM unnest($1::text[], $2::integer[], $3::text[])",
        &[&owners, &positions, &capabilities],
    )
    .expect("capabilities");
    tx.batch_execute(
        "CREATE TABLE bare_agents (id text PRIMARY KEY, last_heartbeat timestamptz NOT NULL);
         INSERT INTO bare_agents SELECT id, last_heartbeat FROM agents;
         ANALYZE;",
    )
    .expect("bare table");
    tx.commit().expect("commit");
}

/// Heartbeat against the bare UPDATE by primary key.
fn heartbeat(bench: &mut Bench, registry: &PostgresRegistry, client: &mut Client) {
    let ids = agent_ids(AGENTS);
    let mut rng = Rng(11);
    let picks: Vec<usize> = (0..4096)
        .map(|_| rng.below(AGENTS as u64) as usize)
        .collect();
    let pick = |i: usize| ids[picks[i % picks.len()]].as_str();
    let update = client
        .prepare("UPDATE bare_agents SET last_heartbeat = now() WHERE id = $1")
        .expect("prepare");
    let times = side_by_side(
        bench.reps,
        BEATS,
        // The roster call this row measures.
        |i| registry.heartbeat(pick(i)).expect("heartbeat"),
        |i| {
            let changed = client.execute(&update, &[&pick(i)]).expect("update");
            assert_eq!(changed, 1);
        },
    );
    bench.push(
        format!("postgres heartbeat, {AGENTS} agents"),
        "bare UPDATE by primary key, same server",
        times,
        "roster / baseline <= 1.18 (0.85x throughput)",
    );
}

/// Claim against the naive SKIP LOCKED claim; both record the claim as a
/// row, and every batch's claims are released after it, untimed.
fn claim(bench: &mut Bench, registry: &PostgresRegistry, client: &mut Client) {
    let work = tasks(512, 5);
    let by_usage = client.prepare(NAIVE_BY_USAGE).expect("prepare");
    let by_load = client.prepare(NAIVE_BY_LOAD).expect("prepare");
    let insert = client
        .prepare("INSERT INTO claims (task_id, agent_id) VALUES ($1::text, $2::text)")
        .expect("prepare");
    let roster_batch = |batch: usize| -> Duration {
        let mut taken = Vec::with_capacity(batch);
        let start = Instant::now();
        for task in work.iter().take(batch) {
            // The roster call this row measures.
            if let Ok(claimed) = registry.claim(task, None) {
                taken.push(claimed.claim.task_id);
            }
        }
        let elapsed = start.elapsed() / batch as u32;
        for task_id in taken {
            registry.release(&task_id, None).expect("release");
        }
        elapsed
    };
    let mut naive_batch = |batch: usize| -> Duration {
        let mut taken = Vec::with_capacity(batch);
        let start = Instant::now();
        for task in work.iter().take(batch) {
            let mut tx = client.transaction().expect("begin");
            let choose = if task.priority == Priority::Critical {
                &by_load
            } else {
                &by_usage
            };
            if let Some(row) = tx.query_opt(choose, &[&task.labels]).expect("choose") {
                let id: String = row.get(0);
                tx.execute(&insert, &[&task.id, &id]).expect("insert");
                taken.push(task.id.clone());
            }
            tx.commit().expect("commit");
        }
        let elapsed = start.elapsed() / batch as u32;
        for task_id in taken {
            registry.release(&task_id, None).expect("release");
        }
        elapsed
    };
    roster_batch(20);
    naive_batch(20);
    let [roster, naive] = interleaved(
        bench.reps,
        [&mut || roster_batch(CLAIMS), &mut || naive_batch(CLAIMS)],
    );
    bench.push(
        format!("postgres claim, {AGENTS} agents"),
        "naive SELECT ... FOR UPDATE SKIP LOCKED + INSERT",
        Times::new(roster, naive),
        "report",
    );
}

/// 4 processes against 1, heartbeating and claiming.
fn processes(bench: &mut Bench, url: &str) {
    let window = Duration::from_millis(if bench.quick { 1500 } else { 3000 });
    for (mode, figure) in [
        ("heartbeat", "postgres heartbeat, 4 processes"),
        ("claim", "postgres claim + release, 4 processes"),
    ] {
        let per_op = |processes: usize| -> Duration {
            Duration::from_secs_f64(1.0 / per_second(url, mode, processes, window))
        };
        let [four, one] = interleaved(bench.reps.min(5), [&mut || per_op(4), &mut || per_op(1)]);
        bench.push(
            format!("{figure}, {AGENTS} agents"),
            "1 process alone (time per operation, summed throughput)",
            Times::new(four, one),
            if mode == "heartbeat" {
                "roster / baseline <= 1.25 (0.8x throughput)"
            } else {
                "report"
            },
        );
    }
}

/// Operations from `processes` processes at once for `window`, summed over
/// the processes, per second. The window starts when every process has said
/// it is ready and has been told to go.
fn per_second(url: &str, mode: &str, processes: usize, window: Duration) -> f64 {
    let mut children: Vec<_> = (0..processes)
        .map(|p| {
            let child = crate::common::this_binary(WORKER)
                .args([url, mode])
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
        assert_eq!(read_line(output), READY, "postgres worker did not start");
    }
    for child in &mut children {
        let mut go = child.0.stdin.take().expect("worker stdin");
        writeln!(go, "go").expect("start worker");
    }
    let total: u64 = outputs
        .iter_mut()
        .map(|output| {
            let line = read_line(output);
            line.parse::<u64>()
                .unwrap_or_else(|_| panic!("postgres worker printed {line:?}, not a count"))
        })
        .sum();
    for child in &mut children {
        let status = child.0.wait().expect("worker");
        assert!(status.success(), "postgres worker failed");
    }
    total as f64 / window.as_secs_f64()
}

fn read_line(output: &mut impl BufRead) -> String {
    let mut line = String::new();
    output.read_line(&mut line).expect("worker output");
    line.trim().to_owned()
}

/// The child process: `URL MODE MILLIS SEED`. Opens the registry, prints
/// `ready`, waits for a line on stdin, then for MILLIS ms heartbeats random
/// agents (MODE `heartbeat`) or claims a task and releases it (MODE
/// `claim`), and prints how many it did.
pub fn worker(args: &[String]) {
    let [url, mode, millis, seed] = args else {
        panic!("{WORKER} URL MODE MILLIS SEED");
    };
    let millis: u64 = millis.parse().expect("MILLIS is a number");
    let seed: u64 = seed.parse().expect("SEED is a number");
    let registry = PostgresOptions::new()
        .schema(SCHEMA)
        .open(url)
        .expect("open");
    let ids = agent_ids(AGENTS);
    let work: Vec<Task> = tasks(512, 5 + seed)
        .into_iter()
        .map(|task| Task {
            // Unique among the workers' claims.
            id: String::new(),
            ..task
        })
        .collect();
    let mut rng = Rng(0x9e37_79b9 + seed);
    println!("{READY}");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).expect("stdin");
    let deadline = Instant::now() + Duration::from_millis(millis);
    let mut count = 0_u64;
    while Instant::now() < deadline {
        match mode.as_str() {
            // The roster calls these rows measure.
            "heartbeat" => registry
                .heartbeat(&ids[rng.below(AGENTS as u64) as usize])
                .expect("heartbeat"),
            "claim" => {
                let task = &work[rng.below(work.len() as u64) as usize];
                if let Ok(claimed) = registry.claim(task, None) {
                    registry
                        .release(&claimed.claim.task_id, Some(claimed.claim.token))
                        .expect("release");
                }
            }
            other => panic!("unknown mode {other}"),
        }
        count += 1;
    }
    println!("{count}");
}
