//! Many OS processes, crashes and restarts on one registry file.
//!
//! The children are this test binary run again: `child` below is an ignored
//! test that does nothing unless `ROSTER_CHILD` names a role; the parent runs
//! `<this binary> --ignored --exact child --nocapture` with that variable set.
//! Children print their results as lines starting with `@`; everything else
//! on their stdout is the test harness talking.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{TimeDelta, Utc};
use roster::{
    AgentInfo, AgentRegistry, AgentStatus, Error, Priority, Result, SqliteRegistry, Task,
};
use rusqlite::Connection;

/// A small deterministic generator (xorshift), seeded per process.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn seeded() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Self::new(nanos ^ u64::from(std::process::id()) << 32)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("child needs {name}"))
}

fn child_command(role: &str, db: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([
        "--ignored",
        "--exact",
        "child",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("ROSTER_CHILD", role)
    .env("ROSTER_DB", db)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// The `@` lines a child printed.
fn reports(output: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(output)
        .lines()
        .filter_map(|line| line.strip_prefix('@'))
        .map(str::to_owned)
        .collect()
}

fn expect_success(output: &Output, what: &str) -> Vec<String> {
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    reports(&output.stdout)
}

fn worker_agent(id: &str, labels: &[&str], max_load: u32) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        name: format!("agent {id}"),
        capabilities: labels.iter().map(|l| l.to_string()).collect(),
        status: AgentStatus::Available,
        last_heartbeat: Utc::now(),
        current_load: 0,
        max_load,
    }
}

fn task(labels: &[&str]) -> Task {
    Task {
        id: "t".into(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        priority: Priority::Medium,
    }
}

// ---------------------------------------------------------------- children

/// The entry point of every child process.
#[test]
#[ignore = "helper: the process tests run it as a child process"]
fn child() {
    let Ok(role) = std::env::var("ROSTER_CHILD") else {
        return;
    };
    let db = PathBuf::from(env("ROSTER_DB"));
    // The harness has printed "test child ... " without a line break: start
    // the reports on a line of their own.
    println!();
    match role.as_str() {
        "open-race" => open_race(&db),
        "mixed" => mixed(&db),
        "writer" => writer(&db),
        "steady" => steady(&db),
        other => panic!("unknown child role {other}"),
    }
}

/// Waits for the common start instant, opens the (perhaps missing) file and
/// registers one agent.
fn open_race(db: &Path) {
    let start: u128 = env("ROSTER_START_MS").parse().expect("start");
    while SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        < start
    {
        thread::sleep(Duration::from_micros(200));
    }
    let registry = SqliteRegistry::open(db).expect("open");
    let id = format!("racer-{}", std::process::id());
    registry
        .register(worker_agent(&id, &["race"], 1))
        .expect("register");
    println!("@registered {id}");
}

/// A random mix of every operation for `ROSTER_SECONDS`; prints its claims
/// and releases per agent. Any error other than the expected answers fails.
fn mixed(db: &Path) {
    let seconds: u64 = env("ROSTER_SECONDS").parse().expect("seconds");
    let agents: u64 = env("ROSTER_AGENTS").parse().expect("agents");
    let registry = SqliteRegistry::open(db).expect("open");
    let mut rng = Rng::seeded();
    let me = format!("temp-{}", std::process::id());
    let mut claims: BTreeMap<String, u64> = BTreeMap::new();
    let mut releases: BTreeMap<String, u64> = BTreeMap::new();
    let mut held: Vec<String> = Vec::new();
    let mut ops = 0_u64;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        let id = format!("agent-{:02}", rng.below(agents));
        let result: Result<()> = match rng.below(10) {
            0..=2 => registry.heartbeat(&id),
            3..=4 => match registry.claim(&task(&[["x", "y"][rng.below(2) as usize]])) {
                Ok(agent) => {
                    assert!(
                        agent.current_load <= agent.max_load,
                        "over-booked: {agent:?}"
                    );
                    *claims.entry(agent.id.clone()).or_default() += 1;
                    held.push(agent.id);
                    Ok(())
                }
                Err(Error::NoEligibleAgent) => Ok(()),
                Err(e) => Err(e),
            },
            5..=6 => match held.pop() {
                Some(id) => registry.release(&id).map(|()| {
                    *releases.entry(id).or_default() += 1;
                }),
                None => Ok(()),
            },
            7 => registry
                .register(worker_agent(&me, &["temp"], 0))
                .and_then(|()| registry.deregister(&me)),
            8 => registry.reap(Duration::from_secs(3600)).map(drop),
            _ => registry.list().map(|all| {
                for agent in all {
                    assert!(
                        agent.max_load == 0 || agent.current_load <= agent.max_load,
                        "over-booked: {agent:?}"
                    );
                }
            }),
        };
        if let Err(e) = result {
            panic!("operation failed in process {}: {e}", std::process::id());
        }
        ops += 1;
    }
    for (id, n) in &claims {
        println!("@claim {id} {n}");
    }
    for (id, n) in &releases {
        println!("@release {id} {n}");
    }
    println!("@ops {ops}");
}

/// Registers, claims and heartbeats agents in a loop, printing each id once
/// all three calls returned, until it is killed.
fn writer(db: &Path) {
    let round = env("ROSTER_ROUND");
    let registry = SqliteRegistry::open(db).expect("open");
    for i in 0.. {
        let id = format!("crash-{round}-{i:04}");
        let label = format!("label-{round}-{i}");
        registry
            .register(worker_agent(&id, &[&label, "crash"], 2))
            .expect("register");
        let claimed = registry.claim(&task(&[&label])).expect("claim");
        assert_eq!(claimed.id, id);
        registry.heartbeat(&id).expect("heartbeat");
        println!("@ack {id}");
    }
}

/// Registers agents with exact, varied field values and prints each as JSON
/// once `register` returned; then claims on them; until killed.
fn steady(db: &Path) {
    let registry = SqliteRegistry::open(db).expect("open");
    let mut rng = Rng::seeded();
    for i in 0.. {
        let agent = AgentInfo {
            id: format!("steady-{}-{i:05}", std::process::id()),
            name: format!("Steady {i}"),
            capabilities: (0..rng.below(4))
                .map(|c| format!("cap{}", (c + rng.below(9)) % 9))
                .collect(),
            status: [AgentStatus::Available, AgentStatus::Busy][rng.below(2) as usize],
            last_heartbeat: Utc::now() - TimeDelta::nanoseconds(rng.below(1 << 40) as i64),
            current_load: 0,
            max_load: rng.below(4) as u32,
        };
        registry.register(agent.clone()).expect("register");
        // What `get` will return: duplicates dropped.
        let stored = agent.validated().expect("valid");
        println!("@agent {}", serde_json::to_string(&stored).expect("json"));
    }
}

// ------------------------------------------------------------------- tests

#[test]
fn processes_racing_on_a_fresh_file_all_succeed() -> Result<()> {
    // Three rounds, each on a file that does not exist yet.
    for round in 0..3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("fresh.db");
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_millis()
            + 700;
        let children: Vec<Child> = (0..8)
            .map(|_| {
                child_command("open-race", &db)
                    .env("ROSTER_START_MS", start.to_string())
                    .spawn()
                    .expect("spawn")
            })
            .collect();
        let mut registered = Vec::new();
        for child in children {
            let output = child.wait_with_output().expect("wait");
            registered.extend(expect_success(&output, "open-race child"));
        }
        assert_eq!(registered.len(), 8, "round {round}");
        let registry = SqliteRegistry::open(&db)?;
        assert_eq!(registry.list()?.len(), 8, "round {round}");
        let conn = Connection::open(&db).expect("open");
        let (version, mode): (i64, String) = conn
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version),
                        (SELECT journal_mode FROM pragma_journal_mode)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("pragmas");
        assert_eq!((version, mode.as_str()), (3, "wal"), "round {round}");
        common::assert_healthy(&db);
    }
    Ok(())
}

#[test]
fn contending_processes_never_see_an_error_and_loads_add_up() -> Result<()> {
    const AGENTS: u32 = 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("contention.db");
    let registry = SqliteRegistry::open(&db)?;
    for i in 0..AGENTS {
        let mut agent = worker_agent(
            &format!("agent-{i:02}"),
            &[["x", "y"][i as usize % 2]],
            3 + i % 4,
        );
        agent.current_load = i % 3;
        registry.register(agent)?;
    }
    let initial: BTreeMap<String, u32> = registry
        .list()?
        .into_iter()
        .map(|a| (a.id, a.current_load))
        .collect();
    let children: Vec<Child> = (0..4)
        .map(|_| {
            child_command("mixed", &db)
                .env("ROSTER_SECONDS", "8")
                .env("ROSTER_AGENTS", AGENTS.to_string())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut net: BTreeMap<String, i64> = BTreeMap::new();
    let mut ops = 0;
    for child in children {
        let output = child.wait_with_output().expect("wait");
        for line in expect_success(&output, "mixed child") {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["claim", id, n] => {
                    *net.entry(id.to_string()).or_default() += n.parse::<i64>().expect("n")
                }
                ["release", id, n] => {
                    *net.entry(id.to_string()).or_default() -= n.parse::<i64>().expect("n")
                }
                ["ops", n] => ops += n.parse::<u64>().expect("n"),
                other => panic!("unexpected report {other:?}"),
            }
        }
    }
    eprintln!("4 processes ran {ops} operations");
    assert!(
        ops > 400,
        "the processes did too little to prove anything: {ops} operations"
    );
    for agent in registry.list()? {
        let expected = i64::from(initial[&agent.id]) + net.get(&agent.id).copied().unwrap_or(0);
        assert_eq!(i64::from(agent.current_load), expected, "{}", agent.id);
        assert!(agent.current_load <= agent.max_load, "{agent:?}");
    }
    assert_eq!(
        registry.list()?.len(),
        AGENTS as usize,
        "temporary agents are gone"
    );
    common::assert_healthy(&db);
    Ok(())
}

#[test]
fn killed_writers_lose_nothing_they_acknowledged() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("crash.db");
    SqliteRegistry::open(&db)?;
    let mut rng = Rng::seeded();
    let mut acknowledged = Vec::new();
    for round in 0..20 {
        let mut child = child_command("writer", &db)
            .env("ROSTER_ROUND", round.to_string())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let reader = thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(std::io::Result::ok)
                .filter_map(|line| line.strip_prefix("@ack ").map(str::to_owned))
                .collect::<Vec<String>>()
        });
        // Let the child get going (opening, first writes) before the clock
        // for the kill starts.
        thread::sleep(Duration::from_millis(50 + rng.below(300)));
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert!(
            !status.success(),
            "round {round}: the writer must have been killed"
        );
        acknowledged.extend(reader.join().expect("reader"));
        common::assert_healthy(&db);
    }
    eprintln!(
        "20 killed writers acknowledged {} agents",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() >= 20,
        "the writers acknowledged too little to prove anything: {}",
        acknowledged.len()
    );
    let registry = SqliteRegistry::open(&db)?;
    for id in &acknowledged {
        let agent = registry.get(id)?;
        assert_eq!(agent.current_load, 1, "{id} lost its claim");
    }
    Ok(())
}

#[test]
fn hand_typed_sql_while_processes_work() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("shell.db");
    let registry = SqliteRegistry::open(&db)?;
    for i in 0..20 {
        registry.register(worker_agent(&format!("agent-{i:02}"), &["x", "y"], 4))?;
    }
    let children: Vec<Child> = (0..2)
        .map(|_| {
            child_command("mixed", &db)
                .env("ROSTER_SECONDS", "4")
                .env("ROSTER_AGENTS", "20")
                .spawn()
                .expect("spawn")
        })
        .collect();
    // Meanwhile, a person in the sqlite3 shell.
    let session = "\
.timeout 10000
UPDATE agents SET name = 'renamed by hand' WHERE id = 'agent-03';
UPDATE agents SET status = 'busy' WHERE id = 'agent-04';
UPDATE agents SET status = 'sleeping' WHERE id = 'agent-05';
UPDATE agents SET current_load = max_load + 1 WHERE id = 'agent-06';
UPDATE agents SET current_load = -1 WHERE id = 'agent-07';
INSERT INTO capabilities VALUES ('nobody', 0, 'x');
INSERT INTO agents (id, name, last_heartbeat) VALUES ('by-hand', 'Typed in', strftime('%Y-%m-%d %H:%M:%f000000', 'now'));
INSERT INTO capabilities VALUES ('by-hand', 0, 'z');
DELETE FROM agents WHERE id = 'by-hand';
SELECT count(*) FROM agents WHERE id LIKE 'agent-%';
";
    let mut refused = 0;
    for _ in 0..10 {
        let output = common::sqlite3(&db, session, common::OnError::GoOn);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains("locked"),
            "the shell waited too little: {stderr}"
        );
        refused += stderr.matches("constraint failed").count()
            + stderr.matches("must be the id of a row in agents").count();
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "20");
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(refused, 40, "each session has four impossible writes");
    for child in children {
        let output = child.wait_with_output().expect("wait");
        expect_success(&output, "mixed child");
    }
    assert_eq!(registry.get("agent-03")?.name, "renamed by hand");
    assert!(matches!(registry.get("by-hand"), Err(Error::NotFound(_))));
    for agent in registry.list()? {
        assert!(agent.current_load <= agent.max_load, "{agent:?}");
    }
    common::assert_healthy(&db);
    Ok(())
}

#[test]
fn a_reopened_registry_shows_exactly_what_was_acknowledged() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("restart.db");
    SqliteRegistry::open(&db)?;
    let mut rng = Rng::new(0x5eed);
    let mut acknowledged: Vec<AgentInfo> = Vec::new();
    for _ in 0..3 {
        let mut children: Vec<Child> = (0..2)
            .map(|_| child_command("steady", &db).spawn().expect("spawn"))
            .collect();
        thread::sleep(Duration::from_millis(300 + rng.below(200)));
        for child in &mut children {
            child.kill().expect("SIGKILL");
        }
        for child in children {
            let output = child.wait_with_output().expect("wait");
            for line in reports(&output.stdout) {
                let json = line.strip_prefix("agent ").expect("agent report");
                acknowledged.push(serde_json::from_str(json).expect("agent json"));
            }
        }
    }
    assert!(
        acknowledged.len() >= 10,
        "too few acknowledged: {}",
        acknowledged.len()
    );
    let registry = SqliteRegistry::open(&db)?;
    for agent in &acknowledged {
        assert_eq!(&registry.get(&agent.id)?, agent);
    }
    common::assert_healthy(&db);
    Ok(())
}
