//! roster side by side with the limit and with what users would pick instead.
//!
//! `cargo bench --bench compare` prints one table: each row times roster and
//! a baseline in the same run, alternating them, and reports the median of
//! several repetitions of each and their ratio. Pass `quick` after `--` for a
//! smaller run (`cargo bench --bench compare -- quick`), or row names to run
//! only those rows (`-- heartbeat claim`): heartbeat, claim, reap, list,
//! redis, command, memory, processes, durability.
//!
//! Figures are per operation. Absolute times depend on the machine; the
//! ratios are the point.

use std::env;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{TimeDelta, Utc};
use roster::{
    AgentInfo, AgentRegistry, AgentStatus, DefaultRouter, Durability, Error, MemoryRegistry,
    Priority, SqliteOptions, SqliteRegistry, Task, TaskRouter,
};
use rusqlite::Connection;

/// Capabilities are drawn from this many words.
const VOCABULARY: usize = 20;
/// Each agent holds this many distinct capabilities.
const CAPABILITIES: usize = 5;

/// A small deterministic generator, so that every run measures the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn word(i: usize) -> String {
    format!("cap{i:02}")
}

fn agent_id(i: usize) -> String {
    format!("agent-{i:06}")
}

/// `n` agents: 5 capabilities each out of 20, loads spread over 0..=max,
/// max loads 1 to 8 with one in ten unlimited, 5 % busy, 5 % offline.
fn fleet(n: usize, seed: u64) -> Vec<AgentInfo> {
    let mut rng = Rng(seed);
    let now = Utc::now();
    (0..n)
        .map(|i| {
            let mut capabilities = Vec::with_capacity(CAPABILITIES);
            while capabilities.len() < CAPABILITIES {
                let cap = word(rng.below(VOCABULARY as u64) as usize);
                if !capabilities.contains(&cap) {
                    capabilities.push(cap);
                }
            }
            let max_load = if rng.below(10) == 0 {
                0
            } else {
                1 + rng.below(8) as u32
            };
            let current_load = rng.below(u64::from(max_load.max(4)) + 1) as u32;
            let current_load = if max_load == 0 {
                current_load
            } else {
                current_load.min(max_load)
            };
            let status = match rng.below(20) {
                0 => AgentStatus::Busy,
                1 => AgentStatus::Offline,
                _ => AgentStatus::Available,
            };
            AgentInfo {
                id: agent_id(i),
                name: format!("agent number {i}"),
                capabilities,
                status,
                last_heartbeat: now,
                current_load,
                max_load,
            }
        })
        .collect()
}

fn tasks(count: usize, seed: u64) -> Vec<Task> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|i| {
            let first = rng.below(VOCABULARY as u64) as usize;
            let mut labels = vec![word(first)];
            if rng.below(2) == 0 {
                labels.push(word(
                    (first + 1 + rng.below(VOCABULARY as u64 - 1) as usize) % VOCABULARY,
                ));
            }
            Task {
                id: format!("task-{i}"),
                labels,
                priority: Priority::ALL[rng.below(4) as usize],
            }
        })
        .collect()
}

/// Times `batch` runs of `op`, returning the time per run.
fn per_op(batch: usize, mut op: impl FnMut(usize)) -> Duration {
    let start = Instant::now();
    for i in 0..batch {
        op(i);
    }
    start.elapsed() / batch as u32
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort_unstable();
    values[values.len() / 2]
}

fn median_f(mut values: Vec<f64>) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The medians of paired runs of roster and a baseline, and the median of
/// their per-run ratios.
fn paired(roster: &[Duration], baseline: &[Duration]) -> (Duration, Duration, f64) {
    let ratios = roster
        .iter()
        .zip(baseline)
        .map(|(r, b)| r.as_secs_f64() / b.as_secs_f64())
        .collect();
    (
        median(roster.to_vec()),
        median(baseline.to_vec()),
        median_f(ratios),
    )
}

/// A measured pair: roster and its baseline.
struct Row {
    figure: String,
    roster: Duration,
    baseline_name: String,
    baseline: Duration,
    /// Median over repetitions of roster / baseline.
    ratio: f64,
    goal: String,
}

/// Runs `roster` and `baseline` alternately `reps` times, `batch` operations
/// each, and keeps the medians.
fn side_by_side(
    reps: usize,
    batch: usize,
    mut roster: impl FnMut(usize),
    mut baseline: impl FnMut(usize),
) -> (Duration, Duration, f64) {
    // One untimed warm-up of each.
    per_op(batch.min(10), &mut roster);
    per_op(batch.min(10), &mut baseline);
    let (mut r, mut b) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        // Alternate which goes first, so that neither always runs on a
        // warmer or cooler machine.
        let (x, y) = if rep % 2 == 0 {
            let x = per_op(batch, &mut roster);
            (x, per_op(batch, &mut baseline))
        } else {
            let y = per_op(batch, &mut baseline);
            (per_op(batch, &mut roster), y)
        };
        r.push(x);
        b.push(y);
    }
    paired(&r, &b)
}

fn fresh_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

/// A roster file holding `agents`.
fn roster_file(dir: &Path, name: &str, agents: &[AgentInfo]) -> (PathBuf, SqliteRegistry) {
    let path = fresh_file(dir, name);
    let registry = SqliteRegistry::open(&path).expect("open roster");
    for agent in agents {
        registry.register(agent.clone()).expect("register");
    }
    (path, registry)
}

/// The limit for heartbeats: a minimal table, the same pragmas, one prepared
/// UPDATE by primary key.
fn bare_heartbeat_file(dir: &Path, n: usize) -> Connection {
    let path = fresh_file(dir, &format!("bare-{n}.db"));
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

fn now_text() -> String {
    Utc::now().format("%Y-%m-%d %H:%M:%S%.9f").to_string()
}

/// One row group of the table.
type Measure = fn(&mut Bench);

struct Bench {
    dir: tempfile::TempDir,
    reps: usize,
    sizes: Vec<usize>,
    rows: Vec<Row>,
    /// Figures that are not a pair, and rows that could not be measured.
    notes: Vec<String>,
}

/// A child process that is killed when the benchmark is done with it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The path of `program` on PATH, if it is there.
fn find_program(program: &str) -> Option<PathBuf> {
    env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

/// Prints the peak resident memory of this process, in kB, from
/// /proc/self/status.
fn print_peak_rss() {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("VmHWM");
    println!("{kb}");
}

/// A child process of the memory figure: `roster` opens the registry and
/// works on it, `bare` runs one UPDATE with rusqlite.
fn memory_worker(args: &[String]) {
    let [role, db] = args else {
        panic!("memory-worker roster|bare DB");
    };
    match role.as_str() {
        "roster" => {
            let registry = SqliteRegistry::open(db).expect("open");
            registry.heartbeat(&agent_id(0)).expect("heartbeat");
            let task = Task {
                id: "t".into(),
                labels: vec![word(3)],
                priority: Priority::Medium,
            };
            let agent = registry.claim(&task).expect("claim");
            registry.release(&agent.id).expect("release");
            registry.reap(Duration::from_secs(3600)).expect("reap");
            black_box(&registry);
        }
        _ => {
            let conn = Connection::open(db).expect("open");
            conn.execute(
                "UPDATE agents SET last_heartbeat = ?1 WHERE id = ?2",
                [now_text(), agent_id(0)],
            )
            .expect("update");
        }
    }
    print_peak_rss();
}

impl Bench {
    fn push(
        &mut self,
        figure: String,
        baseline_name: &str,
        m: (Duration, Duration, f64),
        goal: &str,
    ) {
        let row = Row {
            figure,
            roster: m.0,
            baseline_name: baseline_name.to_owned(),
            baseline: m.1,
            ratio: m.2,
            goal: goal.to_owned(),
        };
        eprintln!(
            "  {:<34} roster {:>12?}  {:<40} {:>12?}  ratio {:.3}",
            row.figure, row.roster, row.baseline_name, row.baseline, row.ratio
        );
        self.rows.push(row);
    }

    fn heartbeat(&mut self) {
        for &n in &self.sizes.clone() {
            let agents = fleet(n, 7);
            let (path, registry) = roster_file(self.dir.path(), &format!("hb-{n}.db"), &agents);
            let bare = bare_heartbeat_file(self.dir.path(), n);
            let mut stmt = bare
                .prepare("UPDATE agents SET last_heartbeat = ?1 WHERE id = ?2")
                .expect("prepare");
            let ids: Vec<String> = (0..n).map(agent_id).collect();
            let mut rng = Rng(11);
            let picks: Vec<usize> = (0..4096).map(|_| rng.below(n as u64) as usize).collect();
            let pick = |i: usize| ids[picks[i % picks.len()]].as_str();
            let beat = |registry: &SqliteRegistry, i: usize| {
                registry.heartbeat(pick(i)).expect("heartbeat");
            };
            let m = side_by_side(
                self.reps,
                2000,
                |i| beat(&registry, i),
                |i| {
                    let changed = stmt
                        .execute([now_text().as_str(), pick(i)])
                        .expect("update");
                    assert_eq!(changed, 1);
                },
            );
            self.push(
                format!("heartbeat, {n} agents"),
                "bare UPDATE by primary key",
                m,
                "roster / baseline <= 1.18 (0.85x throughput)",
            );

            // The same registry without the claim indexes: what they cost a
            // heartbeat. Closing the registry first checkpoints the -wal file
            // into the database file, so that the copy holds every agent.
            drop(registry);
            let plain = fresh_file(self.dir.path(), &format!("hb-noidx-{n}.db"));
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
            let m = side_by_side(
                self.reps,
                2000,
                |i| beat(&registry, i),
                |i| beat(&without, i),
            );
            self.push(
                format!("heartbeat, {n} agents"),
                "roster heartbeat without claim indexes",
                m,
                "report",
            );
        }
    }

    fn claim(&mut self) {
        for &n in &self.sizes.clone() {
            let agents = fleet(n, 21);
            let (_, registry) = roster_file(self.dir.path(), &format!("claim-{n}.db"), &agents);
            let (_, seed_sqlite) =
                roster_file(self.dir.path(), &format!("claim-seed-{n}.db"), &agents);
            let memory = MemoryRegistry::new();
            for agent in &agents {
                memory.register(agent.clone()).expect("register");
            }
            let work = tasks(512, 5);
            let router = DefaultRouter::new();
            // The Go registry's dispatch: list everything, route in memory,
            // write the agent back with one more slot taken.
            let seed_path = |registry: &dyn AgentRegistry, task: &Task| -> Result<String, Error> {
                let all = registry.list()?;
                let id = router.route(task, &all)?;
                let mut chosen = registry.get(&id)?;
                chosen.current_load += 1;
                registry.register(chosen)?;
                Ok(id)
            };
            // Claims are timed alone; the slots are given back after each
            // batch, outside the timing, so that every batch sees the same
            // loads.
            let timed = |registry: &dyn AgentRegistry, batch: usize, seed: bool| -> Duration {
                let mut taken = Vec::with_capacity(batch);
                let start = Instant::now();
                for task in work.iter().cycle().take(batch) {
                    let claimed = if seed {
                        seed_path(registry, task)
                    } else {
                        registry.claim(task).map(|agent| agent.id)
                    };
                    if let Ok(id) = claimed {
                        taken.push(id);
                    }
                }
                let elapsed = start.elapsed() / batch as u32;
                for id in taken {
                    registry.release(&id).expect("release");
                }
                elapsed
            };
            let slow_batch = if n >= 100_000 { 3 } else { 20 };
            timed(&registry, 20, false);
            timed(&memory, 2, true);
            let mut runs: [Vec<Duration>; 4] = Default::default();
            for _ in 0..self.reps {
                runs[0].push(timed(&registry, 200, false));
                runs[1].push(timed(&memory, slow_batch, true));
                runs[2].push(timed(&seed_sqlite, 3, true));
                runs[3].push(timed(&memory, 20, false));
            }
            let goal = if n >= 100_000 {
                "baseline / roster >= 100"
            } else {
                "baseline / roster >= 50"
            };
            let baselines = [
                ("list + route + update, MemoryRegistry", goal),
                ("list + route + update, SqliteRegistry", "report"),
                ("MemoryRegistry::claim", "report"),
            ];
            for (k, (name, goal)) in baselines.into_iter().enumerate() {
                self.push(
                    format!("claim, {n} agents"),
                    name,
                    paired(&runs[0], &runs[k + 1]),
                    goal,
                );
            }
        }
    }

    fn reap(&mut self) {
        let n = *self.sizes.iter().max().expect("sizes");
        let mut agents = fleet(n, 31);
        let stale = Utc::now() - TimeDelta::minutes(10);
        for (i, agent) in agents.iter_mut().enumerate() {
            agent.status = AgentStatus::Available;
            if i % 100 == 0 {
                agent.last_heartbeat = stale;
            }
        }
        let (path, registry) = roster_file(self.dir.path(), &format!("reap-{n}.db"), &agents);
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
        let cutoff = (Utc::now() - TimeDelta::seconds(60))
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
        for _ in 0..self.reps {
            revive();
            let start = Instant::now();
            let reaped = registry.reap(Duration::from_secs(60)).expect("reap");
            runs[0].push(start.elapsed());
            assert_eq!(reaped.len(), n / 100);
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
            assert!(
                registry
                    .reap(Duration::from_secs(60))
                    .expect("reap")
                    .is_empty()
            );
            runs[3].push(start.elapsed());
        }
        let (reap, counts, updates, idle) = (&runs[0], &runs[1], &runs[2], &runs[3]);
        self.push(
            format!("reap, {n} agents, 1% stale"),
            "bare SELECT count(*) same predicate",
            paired(reap, counts),
            "roster / baseline <= 1.5",
        );
        self.push(
            format!("reap, {n} agents, 1% stale"),
            "bare UPDATE ... RETURNING same predicate",
            paired(reap, updates),
            "report",
        );
        self.push(
            format!("reap, {n} agents, none stale"),
            "bare SELECT count(*) same predicate",
            paired(idle, counts),
            "report",
        );
    }

    fn redis(&mut self) {
        let n = *self.sizes.iter().min().expect("sizes");
        let Some(server) = find_program("redis-server") else {
            self.notes.push(
                "heartbeat against Redis: not measured, redis-server is not installed \
                 (apt-get install -y redis-server)"
                    .to_owned(),
            );
            return;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let data = self.dir.path().join("redis");
        std::fs::create_dir_all(&data).expect("redis dir");
        let child = Command::new(server)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&data)
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let _server = KillOnDrop(child);
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("client");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut conn = loop {
            match client.get_connection() {
                Ok(conn) => break conn,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("redis-server did not start: {e}"),
            }
        };
        let agents = fleet(n, 71);
        let (_, registry) = roster_file(self.dir.path(), &format!("redis-{n}.db"), &agents);
        let ids: Vec<String> = (0..n).map(agent_id).collect();
        for id in &ids {
            let () = redis::cmd("HSET")
                .arg(format!("agent:{id}"))
                .arg("status")
                .arg("available")
                .arg("last_heartbeat")
                .arg(now_text())
                .query(&mut conn)
                .expect("HSET");
        }
        let m = side_by_side(
            self.reps,
            2000,
            |i| registry.heartbeat(&ids[(i * 7919) % n]).expect("heartbeat"),
            |i| {
                let () = redis::cmd("HSET")
                    .arg(format!("agent:{}", ids[(i * 7919) % n]))
                    .arg("last_heartbeat")
                    .arg(now_text())
                    .query(&mut conn)
                    .expect("HSET");
            },
        );
        self.push(
            format!("heartbeat, {n} agents"),
            "Redis HSET over loopback, appendfsync everysec",
            m,
            "roster / baseline <= 0.33 (3x Redis)",
        );
    }

    fn command(&mut self) {
        let Some(shell) = find_program("sqlite3") else {
            self.notes.push(
                "the command against sqlite3: not measured, the sqlite3 shell is not installed \
                 (apt-get install -y sqlite3)"
                    .to_owned(),
            );
            return;
        };
        let n = *self.sizes.iter().min().expect("sizes");
        let agents = fleet(n, 81);
        let (path, registry) = roster_file(self.dir.path(), &format!("command-{n}.db"), &agents);
        // Another process holds the file open, as a running orchestrator
        // would, so that neither command pays for recovering the WAL.
        let _held = registry;
        let ids: Vec<String> = (0..n).map(agent_id).collect();
        let m = side_by_side(
            self.reps.min(5),
            40,
            |i| {
                let status = Command::new(env!("CARGO_BIN_EXE_roster"))
                    .arg("--db")
                    .arg(&path)
                    .args(["heartbeat", &ids[(i * 7919) % n]])
                    .stdout(Stdio::null())
                    .status()
                    .expect("roster");
                assert!(status.success());
            },
            |i| {
                let sql = format!(
                    "PRAGMA synchronous = NORMAL; UPDATE agents SET \
                     last_heartbeat = strftime('%Y-%m-%d %H:%M:%f000000', 'now'), \
                     status = CASE status WHEN 'offline' THEN 'available' ELSE status END \
                     WHERE id = '{}';",
                    ids[(i * 7919) % n]
                );
                let status = Command::new(&shell)
                    .arg(&path)
                    .arg(sql)
                    .stdout(Stdio::null())
                    .status()
                    .expect("sqlite3");
                assert!(status.success());
            },
        );
        self.push(
            "`roster heartbeat ID`, whole process".to_owned(),
            "`sqlite3 FILE \"UPDATE ...\"`, whole process",
            m,
            "roster / baseline <= 2",
        );
    }

    /// Peak memory of a process that opens a registry of 100k agents and
    /// heartbeats, claims, releases and reaps; against a process that opens
    /// the same file with bare rusqlite and runs one UPDATE.
    fn memory(&mut self) {
        let n = *self.sizes.iter().max().expect("sizes");
        let agents = fleet(n, 91);
        let (path, registry) = roster_file(self.dir.path(), &format!("memory-{n}.db"), &agents);
        drop(registry);
        let peak = |role: &str| -> u64 {
            let output = Command::new(env::current_exe().expect("bench binary"))
                .args(["memory-worker", role])
                .arg(&path)
                .output()
                .expect("memory worker");
            assert!(output.status.success(), "memory worker failed");
            String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse()
                .expect("kB")
        };
        let (roster_kb, bare_kb) = (peak("roster"), peak("bare"));
        self.notes.push(format!(
            "peak RSS (VmHWM) of a process holding an open registry of {n} agents, after a \
             heartbeat, a claim, a release and a reap: {:.1} MiB; a bare rusqlite process \
             running one UPDATE on the same file: {:.1} MiB",
            roster_kb as f64 / 1024.0,
            bare_kb as f64 / 1024.0
        ));
    }

    fn list(&mut self) {
        let n = *self.sizes.iter().min().expect("sizes");
        let agents = fleet(n, 41);
        let (path, registry) = roster_file(self.dir.path(), &format!("list-{n}.db"), &agents);
        let bare = Connection::open(&path).expect("open");
        let mut stmt = bare
            .prepare(
                "SELECT a.id, a.name, a.status, a.last_heartbeat, a.current_load, a.max_load, c.capability
                 FROM agents AS a LEFT JOIN capabilities AS c ON c.agent_id = a.id
                 ORDER BY a.id, c.position",
            )
            .expect("prepare");
        let m = side_by_side(
            self.reps,
            5,
            |_| {
                let all = registry.list().expect("list");
                assert_eq!(all.len(), n);
                black_box(all);
            },
            |_| {
                let mut rows = stmt.query([]).expect("query");
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
        self.push(
            format!("list, {n} agents"),
            "bare SELECT of the same rows",
            m,
            "roster / baseline <= 1.5",
        );
    }

    /// Heartbeats from `processes` processes at once for `millis`, summed
    /// over the processes: heartbeats per second.
    fn heartbeat_processes(&self, db: &Path, agents: usize, processes: usize, millis: u64) -> f64 {
        let exe = env::current_exe().expect("bench binary");
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_millis()
            + 300;
        let children: Vec<_> = (0..processes)
            .map(|p| {
                Command::new(&exe)
                    .args([
                        "heartbeat-worker".to_owned(),
                        db.display().to_string(),
                        agents.to_string(),
                        millis.to_string(),
                        start.to_string(),
                        p.to_string(),
                    ])
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("spawn worker")
            })
            .collect();
        let total: u64 = children
            .into_iter()
            .map(|child| {
                let output = child.wait_with_output().expect("worker");
                assert!(output.status.success(), "heartbeat worker failed");
                String::from_utf8_lossy(&output.stdout)
                    .trim()
                    .parse::<u64>()
                    .expect("worker count")
            })
            .sum();
        total as f64 / (millis as f64 / 1000.0)
    }

    fn processes(&mut self) {
        let n = 10_000;
        let agents = fleet(n, 51);
        let (path, registry) = roster_file(self.dir.path(), "procs.db", &agents);
        drop(registry);
        let millis = if self.reps > 3 { 3000 } else { 1500 };
        let (mut one, mut four) = (Vec::new(), Vec::new());
        for _ in 0..self.reps.min(5) {
            let single = self.heartbeat_processes(&path, n, 1, millis);
            let multi = self.heartbeat_processes(&path, n, 4, millis);
            one.push(Duration::from_secs_f64(1.0 / single));
            four.push(Duration::from_secs_f64(1.0 / multi));
        }
        self.push(
            format!("heartbeat, 4 processes, {n} agents"),
            "1 process alone (time per heartbeat, summed throughput)",
            paired(&four, &one),
            "roster / baseline <= 1.25 (0.8x throughput)",
        );
    }

    fn durability(&mut self) {
        let n = 10_000;
        let agents = fleet(n, 61);
        let (path, normal) = roster_file(self.dir.path(), "durability.db", &agents);
        let full = SqliteOptions::new()
            .durability(Durability::Full)
            .open(&path)
            .expect("open FULL");
        let ids: Vec<String> = (0..n).map(agent_id).collect();
        let m = side_by_side(
            self.reps,
            300,
            |i| full.heartbeat(&ids[(i * 7919) % n]).expect("heartbeat"),
            |i| normal.heartbeat(&ids[(i * 7919) % n]).expect("heartbeat"),
        );
        self.push(
            format!("heartbeat, Durability::Full, {n} agents"),
            "Durability::Normal (the default)",
            m,
            "report",
        );
    }

    fn print(&self) {
        println!();
        println!(
            "| figure | roster | baseline | baseline time | roster / baseline | baseline / roster | goal |"
        );
        println!("| --- | ---: | --- | ---: | ---: | ---: | --- |");
        for row in &self.rows {
            println!(
                "| {} | {} | {} | {} | {:.3} | {:.1} | {} |",
                row.figure,
                fmt(row.roster),
                row.baseline_name,
                fmt(row.baseline),
                row.ratio,
                1.0 / row.ratio,
                row.goal
            );
        }
        for note in &self.notes {
            println!();
            println!("{note}");
        }
    }
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.2} us")
    }
}

/// A child process of the `processes` row: heartbeats random agents from
/// the start instant for the given time, then prints how many it did.
fn heartbeat_worker(args: &[String]) {
    let [db, agents, millis, start, seed] = args else {
        panic!("heartbeat-worker DB AGENTS MILLIS START_MS SEED");
    };
    let agents: u64 = agents.parse().expect("agents");
    let start: u128 = start.parse().expect("start");
    let registry = SqliteRegistry::open(db).expect("open");
    let ids: Vec<String> = (0..agents as usize).map(agent_id).collect();
    let mut rng = Rng(0x9e37_79b9 + seed.parse::<u64>().expect("seed"));
    while SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        < start
    {
        std::thread::sleep(Duration::from_micros(100));
    }
    let deadline = Instant::now() + Duration::from_millis(millis.parse().expect("millis"));
    let mut count = 0_u64;
    while Instant::now() < deadline {
        registry
            .heartbeat(&ids[rng.below(agents) as usize])
            .expect("heartbeat");
        count += 1;
    }
    println!("{count}");
}

fn main() {
    let args: Vec<String> = env::args().skip(1).filter(|a| a != "--bench").collect();
    match args.first().map(String::as_str) {
        Some("heartbeat-worker") => return heartbeat_worker(&args[1..]),
        Some("memory-worker") => return memory_worker(&args[1..]),
        _ => {}
    }
    let quick = args.iter().any(|a| a == "quick");
    let only: Vec<&String> = args.iter().filter(|a| *a != "quick").collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|a| a.as_str() == name);
    let mut bench = Bench {
        dir: tempfile::tempdir().expect("tempdir"),
        reps: if quick { 3 } else { 7 },
        sizes: if quick {
            vec![10_000]
        } else {
            vec![10_000, 100_000]
        },
        rows: Vec::new(),
        notes: Vec::new(),
    };
    eprintln!(
        "roster benchmark: {} repetitions, sizes {:?}",
        bench.reps, bench.sizes
    );
    let rows: [(&str, Measure); 9] = [
        ("heartbeat", Bench::heartbeat),
        ("claim", Bench::claim),
        ("reap", Bench::reap),
        ("list", Bench::list),
        ("redis", Bench::redis),
        ("command", Bench::command),
        ("memory", Bench::memory),
        ("processes", Bench::processes),
        ("durability", Bench::durability),
    ];
    for (name, row) in rows {
        if wanted(name) {
            row(&mut bench);
        }
    }
    bench.print();
}
