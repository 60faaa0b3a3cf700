//! Many OS processes, crashes and restarts on one registry file.
//!
//! The children are this test binary run again (`common::child`): `child`
//! below is an ignored test that does nothing unless `ROSTER_CHILD` names a
//! role. Children report on stdout with lines starting with `@` and take
//! orders on stdin. Nothing here waits for time to pass: children that must
//! start together say `ready` and wait for `go`; a child is killed after a
//! random number of its acknowledgements, not after a random delay.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{TimeDelta, Utc};
use common::child::{Orders, report};
use common::{Rng, Running, TempRegistry};
use roster::{
    AgentInfo, AgentRegistry, AgentStatus, Error, Priority, Result, SqliteRegistry, Task,
};
use rusqlite::Connection;

fn worker_agent(id: &str, labels: &[&str], max_load: u32) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        name: format!("agent {id}"),
        capabilities: labels.iter().map(|l| l.to_string()).collect(),
        status: AgentStatus::Available,
        last_heartbeat: Utc::now(),
        current_load: 0,
        max_load,
        ..AgentInfo::default()
    }
}

fn task(labels: &[&str]) -> Task {
    Task {
        // The registry names each task.
        id: String::new(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        priority: Priority::Medium,
    }
}

// ---------------------------------------------------------------- children

/// The entry point of every child process.
#[test]
#[ignore = "helper: the process tests run it as a child process"]
fn child() {
    let Some(role) = common::child::role() else {
        return;
    };
    let db = PathBuf::from(common::child::var(common::child::DB_VAR));
    match role.as_str() {
        "open-race" => open_race(&db),
        "mixed" => mixed(&db),
        "writer" => writer(&db),
        "steady" => steady(&db),
        other => panic!("unknown child role {other}"),
    }
}

/// Says ready, waits for go, then opens the (perhaps missing) file and
/// registers one agent.
fn open_race(db: &Path) {
    common::child::ready_then_wait_for_go();
    let registry = SqliteRegistry::open(db).expect("open");
    let id = format!("racer-{}", std::process::id());
    registry
        .register(worker_agent(&id, &["race"], 1))
        .expect("register");
    report(format_args!("registered {id}"));
}

/// A random mix of every operation, from `go` on: `ROSTER_OPS` operations
/// when that is set, otherwise until stdin is closed (answering pings in
/// between). Prints its claims and releases per agent and its operation
/// count. Any error other than the expected answers fails.
fn mixed(db: &Path) {
    let agents: u64 = common::child::var("ROSTER_AGENTS").parse().expect("agents");
    let limit: Option<u64> = std::env::var("ROSTER_OPS")
        .ok()
        .map(|n| n.parse().expect("ops"));
    let registry = SqliteRegistry::open(db).expect("open");
    let mut rng = Rng::from_env();
    let me = format!("temp-{}", std::process::id());
    let mut claims: BTreeMap<String, u64> = BTreeMap::new();
    let mut releases: BTreeMap<String, u64> = BTreeMap::new();
    let mut held: Vec<(String, roster::Claim)> = Vec::new();
    let mut ops = 0_u64;
    common::child::ready_then_wait_for_go();
    let mut orders = Orders::listen();
    while limit.map_or(!orders.stopped(), |n| ops < n) {
        orders.before_operation();
        let id = format!("agent-{:02}", rng.below(agents));
        let result: Result<()> = match rng.below(10) {
            0..=2 => registry.heartbeat(&id),
            3..=4 => match registry.claim(&task(&[["x", "y"][rng.below(2) as usize]]), None) {
                Ok(claimed) => {
                    let agent = claimed.agent;
                    assert!(
                        agent.current_load <= agent.max_load,
                        "over-booked: {agent:?}"
                    );
                    *claims.entry(agent.id.clone()).or_default() += 1;
                    held.push((agent.id, claimed.claim));
                    Ok(())
                }
                Err(Error::NoEligibleAgent) => Ok(()),
                Err(e) => Err(e),
            },
            5..=6 => match held.pop() {
                Some((id, claim)) => {
                    registry
                        .release(&claim.task_id, Some(claim.token))
                        .map(|_| {
                            *releases.entry(id).or_default() += 1;
                        })
                }
                None => Ok(()),
            },
            7 => registry
                .register(worker_agent(&me, &["temp"], 0))
                .and_then(|()| registry.deregister(&me)),
            8 => registry
                .reap(std::time::Duration::from_secs(3600))
                .map(drop),
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
        orders.after_operation();
    }
    for (id, n) in &claims {
        report(format_args!("claim {id} {n}"));
    }
    for (id, n) in &releases {
        report(format_args!("release {id} {n}"));
    }
    report(format_args!("ops {ops}"));
}

/// Registers, claims and heartbeats agents in a loop, reporting each id once
/// all three calls returned, until it is killed.
fn writer(db: &Path) {
    let round = common::child::var("ROSTER_ROUND");
    let registry = SqliteRegistry::open(db).expect("open");
    for i in 0.. {
        let id = format!("crash-{round}-{i:04}");
        let label = format!("label-{round}-{i}");
        registry
            .register(worker_agent(&id, &[&label, "crash"], 2))
            .expect("register");
        let claimed = registry
            .claim(&task(&[&label]), None)
            .map(|claimed| claimed.agent)
            .expect("claim");
        assert_eq!(claimed.id, id);
        registry.heartbeat(&id).expect("heartbeat");
        report(format_args!("ack {id}"));
    }
}

/// Registers agents with exact, varied field values and reports each as JSON
/// once `register` returned, until it is killed.
fn steady(db: &Path) {
    let registry = SqliteRegistry::open(db).expect("open");
    let mut rng = Rng::from_env();
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
            ..AgentInfo::default()
        };
        registry.register(agent.clone()).expect("register");
        // What `get` will return: duplicates dropped.
        let stored = agent.validated().expect("valid");
        report(format_args!(
            "agent {}",
            serde_json::to_string(&stored).expect("json")
        ));
    }
}

// ------------------------------------------------------------------- tests

/// Says `go` to every child once all of them said `ready`.
fn start_together(children: &mut [Running]) {
    for child in children.iter_mut() {
        child.expect_report("ready");
    }
    for child in children.iter_mut() {
        child.send("go");
    }
}

/// The number of agents whose id starts with `prefix`.
fn count_with_prefix(registry: &SqliteRegistry, prefix: &str) -> Result<usize> {
    Ok(registry
        .list()?
        .iter()
        .filter(|a| a.id.starts_with(prefix))
        .count())
}

#[test]
fn processes_racing_on_a_fresh_file_all_succeed() -> Result<()> {
    let mut rng = Rng::from_env();
    // Three rounds, each on a file that does not exist yet.
    for round in 0..3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("fresh.db");
        let mut children: Vec<Running> = (0..8)
            .map(|_| common::child::spawn("open-race", &db, &mut rng, &[]))
            .collect();
        for child in &mut children {
            child.expect_report("ready");
        }
        // Every child is up and none has touched the file yet.
        assert!(!db.exists(), "round {round}: a child opened the file early");
        for child in &mut children {
            child.send("go");
        }
        let mut registered = Vec::new();
        for child in children {
            registered.extend(child.finish().expect_success("open-race child").reports());
        }
        assert_eq!(registered.len(), 8, "round {round}: {registered:?}");
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
        assert_eq!(
            (version, mode.as_str()),
            (SqliteRegistry::SCHEMA_VERSION, "wal"),
            "round {round}"
        );
        common::assert_healthy(&db);
    }
    Ok(())
}

#[test]
fn contending_processes_never_see_an_error_and_loads_add_up() -> Result<()> {
    const AGENTS: u32 = 20;
    const PROCESSES: u64 = 4;
    const OPS: u64 = 3000;
    let mut rng = Rng::from_env();
    let registry = TempRegistry::named("contention.db");
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
    let mut children: Vec<Running> = (0..PROCESSES)
        .map(|_| {
            common::child::spawn(
                "mixed",
                registry.path(),
                &mut rng,
                &[
                    ("ROSTER_AGENTS", AGENTS.to_string()),
                    ("ROSTER_OPS", OPS.to_string()),
                ],
            )
        })
        .collect();
    start_together(&mut children);
    let mut net: BTreeMap<String, i64> = BTreeMap::new();
    let mut ops = 0;
    for child in children {
        for line in child.finish().expect_success("mixed child").reports() {
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
    assert_eq!(ops, PROCESSES * OPS, "every process reports all its work");
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
    common::assert_healthy(registry.path());
    Ok(())
}

#[test]
fn killed_writers_lose_nothing_they_acknowledged() -> Result<()> {
    const ROUNDS: usize = 20;
    let mut rng = Rng::from_env();
    // Created, then closed: the children and the last open find nobody else
    // attached.
    let registry = TempRegistry::named("crash.db").close();
    let mut acknowledged = Vec::new();
    for round in 0..ROUNDS {
        let mut writer = common::child::spawn(
            "writer",
            registry.path(),
            &mut rng,
            &[("ROSTER_ROUND", round.to_string())],
        );
        // The kill lands somewhere in the writer's stream of work: after a
        // random number of its acknowledgements, while it goes on writing.
        let kill_after = 1 + rng.below(100);
        for _ in 0..kill_after {
            let report = writer.next_report("its acknowledgements");
            let id = report.strip_prefix("ack ").expect("an ack");
            acknowledged.push(id.to_owned());
        }
        let killed = writer.kill();
        for report in killed.reports() {
            let id = report.strip_prefix("ack ").expect("an ack");
            acknowledged.push(id.to_owned());
        }
        common::assert_healthy(registry.path());
    }
    eprintln!(
        "{ROUNDS} killed writers acknowledged {} agents",
        acknowledged.len()
    );
    let reopened = SqliteRegistry::open(registry.path())?;
    for id in &acknowledged {
        let agent = reopened.get(id)?;
        assert_eq!(agent.current_load, 1, "{id} lost its claim");
    }
    // Each writer can have registered at most one agent it did not live to
    // acknowledge.
    let stored = count_with_prefix(&reopened, "crash-")?;
    assert!(
        (acknowledged.len()..=acknowledged.len() + ROUNDS).contains(&stored),
        "{stored} agents stored for {} acknowledged",
        acknowledged.len()
    );
    Ok(())
}

#[test]
fn hand_typed_sql_while_processes_work() -> Result<()> {
    let mut rng = Rng::from_env();
    let registry = TempRegistry::named("shell.db");
    for i in 0..20 {
        registry.register(worker_agent(&format!("agent-{i:02}"), &["x", "y"], 4))?;
    }
    // Two processes that work until told to stop.
    let mut children: Vec<Running> = (0..2)
        .map(|_| {
            common::child::spawn(
                "mixed",
                registry.path(),
                &mut rng,
                &[("ROSTER_AGENTS", "20".to_owned())],
            )
        })
        .collect();
    start_together(&mut children);
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
        let output = common::sqlite3(registry.path(), session, common::OnError::GoOn);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains("locked"),
            "the shell waited too little: {stderr}"
        );
        refused += stderr.matches("constraint failed").count()
            + stderr.matches("must be the id of a row in agents").count()
            + stderr.matches("cannot drop below the claims").count();
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "20");
        // Between two sessions, each process completes an operation it
        // began after this session ended.
        for child in &mut children {
            child.send("ping");
            child.expect_report("pong");
        }
    }
    assert_eq!(refused, 40, "each session has four impossible writes");
    for child in children {
        let reports = child.finish().expect_success("mixed child").reports();
        let ops = reports
            .iter()
            .find_map(|r| r.strip_prefix("ops "))
            .expect("an ops report");
        assert!(ops.parse::<u64>().expect("ops") >= 10, "{reports:?}");
    }
    assert_eq!(registry.get("agent-03")?.name, "renamed by hand");
    assert!(matches!(registry.get("by-hand"), Err(Error::NotFound(_))));
    for agent in registry.list()? {
        assert!(agent.current_load <= agent.max_load, "{agent:?}");
    }
    common::assert_healthy(registry.path());
    Ok(())
}

#[test]
fn a_reopened_registry_shows_exactly_what_was_acknowledged() -> Result<()> {
    const ROUNDS: usize = 3;
    const WRITERS: usize = 2;
    let mut rng = Rng::from_env();
    // Created, then closed: the children and the last open find nobody else
    // attached.
    let registry = TempRegistry::named("restart.db").close();
    let mut acknowledged: Vec<AgentInfo> = Vec::new();
    let read_agent = |report: &str| -> AgentInfo {
        let json = report.strip_prefix("agent ").expect("agent report");
        serde_json::from_str(json).expect("agent json")
    };
    for _ in 0..ROUNDS {
        let mut children: Vec<Running> = (0..WRITERS)
            .map(|_| common::child::spawn("steady", registry.path(), &mut rng, &[]))
            .collect();
        // Both write at once; each is killed after a random number of its
        // acknowledgements, while the other goes on.
        for child in &mut children {
            for _ in 0..1 + rng.below(60) {
                acknowledged.push(read_agent(&child.next_report("its acknowledgements")));
            }
        }
        for child in children {
            acknowledged.extend(child.kill().reports().iter().map(|r| read_agent(r)));
        }
    }
    let reopened = SqliteRegistry::open(registry.path())?;
    for agent in &acknowledged {
        assert_eq!(&reopened.get(&agent.id)?, agent);
    }
    // Each killed writer can have registered at most one agent it did not
    // live to acknowledge.
    let stored = count_with_prefix(&reopened, "steady-")?;
    assert!(
        (acknowledged.len()..=acknowledged.len() + ROUNDS * WRITERS).contains(&stored),
        "{stored} agents stored for {} acknowledged",
        acknowledged.len()
    );
    common::assert_healthy(registry.path());
    Ok(())
}
