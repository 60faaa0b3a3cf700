//! `roster copy`: a populated SQLite registry copied into an empty
//! PostgreSQL database by the binary gives the same `list` and `claims`,
//! keeps the token counter (the next claim's token is larger), refuses a
//! target that holds agents unless told to replace them.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use common::{ROSTER, pg};
use roster::{
    AgentInfo, AgentRegistry, AgentStatus, PostgresRegistry, Priority, SqliteRegistry, Task,
};

/// A database of its own, dropped when the guard goes.
struct Database {
    name: String,
    url: String,
}

impl Database {
    fn new() -> Self {
        let name = format!("roster_copy_{}", std::process::id());
        let mut client = pg::client();
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .expect("drop a leftover database");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create a database (the role needs CREATEDB)");
        let config: postgres::Config = pg::url().parse().expect("url");
        let url = match &config.get_hosts()[0] {
            postgres::config::Host::Tcp(host) => format!(
                "host={host} port={} user={} dbname={name}",
                config.get_ports().first().copied().unwrap_or(5432),
                config.get_user().unwrap_or("postgres")
            ),
            postgres::config::Host::Unix(path) => {
                format!("host={} dbname={name}", path.display())
            }
        };
        Self { name, url }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(pg::url(), postgres::NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn agent(id: &str, caps: &[&str], load: u32, max: u32) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        name: format!("agent {id}"),
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
        last_heartbeat: Utc::now(),
        current_load: load,
        max_load: max,
        host: Some("host-1".into()),
        started_at: Some(Utc::now()),
        pid: Some(4242),
        metadata: BTreeMap::from([
            ("zone".into(), "eu-1".into()),
            ("tier".into(), "gold".into()),
        ]),
        ..AgentInfo::default()
    }
}

/// A time as PostgreSQL keeps it: to the microsecond (truncated).
fn micros(t: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
    chrono::DurationRound::duration_trunc(t, chrono::TimeDelta::microseconds(1)).expect("truncate")
}

fn in_micros(
    agents: &[AgentInfo],
    claims: &[roster::Claim],
) -> (Vec<AgentInfo>, Vec<roster::Claim>) {
    let agents = agents
        .iter()
        .cloned()
        .map(|mut a| {
            a.last_heartbeat = micros(a.last_heartbeat);
            a.started_at = a.started_at.map(micros);
            a
        })
        .collect();
    let claims = claims
        .iter()
        .cloned()
        .map(|mut c| {
            c.claimed_at = micros(c.claimed_at);
            c.lease_expires_at = c.lease_expires_at.map(micros);
            c
        })
        .collect();
    (agents, claims)
}

fn task(id: &str, label: &str) -> Task {
    Task {
        id: id.into(),
        labels: vec![label.into()],
        priority: Priority::Medium,
    }
}

fn copy(from: &std::path::Path, to: &str, replace: bool) -> std::process::Output {
    let mut command = Command::new(ROSTER);
    command
        .args(["--json", "copy", "--from"])
        .arg(from)
        .args(["--to", to]);
    if replace {
        command.arg("--replace");
    }
    command
        .env_remove("ROSTER_DB")
        .output()
        .expect("run roster copy")
}

#[test]
fn a_populated_file_copies_into_postgres_with_the_same_list_and_claims() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.db");
    let source = SqliteRegistry::open(&path).expect("open the file");
    source
        .register(agent("a", &["rust", "linux"], 1, 4))
        .expect("register a");
    source
        .register(agent("b", &["gpu"], 0, 2))
        .expect("register b");
    source
        .register(agent("gone", &["solo"], 0, 1))
        .expect("register gone");
    source.drain("b", true).expect("drain b");
    source.set_status("b", AgentStatus::Busy).expect("b busy");
    let first = source
        .claim(&task("t1", "rust"), Some(Duration::from_secs(600)))
        .expect("t1");
    source
        .claim(&task("t2", "gpu"), None)
        .expect_err("b is drained");
    source.drain("b", false).expect("undrain b");
    source.claim(&task("t2", "gpu"), None).expect("t2");
    source.claim(&task("t3", "solo"), None).expect("t3");
    source
        .release("t1", Some(first.claim.token))
        .expect("release t1");
    source
        .claim(&task("t4", "rust"), Some(Duration::from_secs(60)))
        .expect("t4");
    // A claim whose agent was deregistered: detached, recoverable.
    source.deregister("gone").expect("deregister gone");
    let (list, claims) = in_micros(
        &source.list().expect("list"),
        &source.claims(None).expect("claims"),
    );
    let last_token = claims.iter().map(|c| c.token).max().expect("a claim");
    drop(source);

    let db = Database::new();
    let output = copy(&path, &db.url, false);
    assert!(output.status.success(), "{output:?}");
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(summary["agents"], list.len());
    assert_eq!(summary["claims"], claims.len());

    let target = PostgresRegistry::open(&db.url).expect("open the copy");
    assert_eq!(target.list().expect("list"), list, "list is the same");
    assert_eq!(
        target.claims(None).expect("claims"),
        claims,
        "claims are the same"
    );
    let next = target
        .claim(&task("t5", "rust"), None)
        .expect("claim on the copy");
    assert!(
        next.claim.token > last_token,
        "{} > {last_token}",
        next.claim.token
    );
    assert!(
        claims
            .iter()
            .any(|c| c.task_id == "t3" && c.agent_id == "gone")
    );
    let recovered = target.recover().expect("recover");
    assert_eq!(recovered.len(), 1, "the detached claim: {recovered:?}");
    assert_eq!(recovered[0].reason, roster::RecoverReason::AgentGone);

    // Not into a registry that holds agents, unless told to replace them.
    let refused = copy(&path, &db.url, false);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("replace"), "{error}");
    let replaced = copy(&path, &db.url, true);
    assert!(replaced.status.success(), "{replaced:?}");
    assert_eq!(target.list().expect("list"), list);
    assert_eq!(target.claims(None).expect("claims"), claims);
}
