//! `roster metrics` read by the Prometheus project's own parsers: every
//! output goes through `promtool check metrics` (the Go parser of the
//! Prometheus server, and its linter; Debian's `prometheus` package), and
//! its values are read back with the parser of the official Python client
//! (`prometheus_client.parser`; Debian's `python3-prometheus-client`). A
//! missing parser fails the test, naming the package to install.
//!
//! The HTTP server is started on a loopback port chosen by the system and
//! is known to be up when it printed its address.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ROSTER, Running, TempRegistry, sigterm};
use roster::{AgentInfo, AgentRegistry, AgentStatus, SqlAccess, Task};

/// Where Debian's Python is: the parser is installed for it by
/// `apt-get install python3-prometheus-client`.
const PYTHON: &str = "/usr/bin/python3";

/// Feeds `text` to a program on its standard input and returns its exit
/// status, stdout and stderr.
fn feed(program: &str, args: &[&str], text: &str, install: &str) -> (bool, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): {install}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let text = text.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer").expect("write stdin");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `promtool check metrics`: the exposition parses, and the linter has
/// nothing to say.
fn promtool_accepts(text: &str) {
    let (ok, stdout, stderr) = feed(
        "promtool",
        &["check", "metrics"],
        text,
        "install Prometheus's promtool: apt-get install -y prometheus",
    );
    assert!(
        ok && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "promtool check metrics refused the output:\n{stdout}{stderr}\n--- the output:\n{text}"
    );
}

/// One family as the Python client's parser reads it.
#[derive(Debug, serde::Deserialize)]
struct Family {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    samples: Vec<Sample>,
}

#[derive(Debug, serde::Deserialize)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

const PARSE: &str = "\
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = [
    {'name': f.name, 'type': f.type,
     'samples': [{'name': s.name, 'labels': s.labels, 'value': s.value} for s in f.samples]}
    for f in text_string_to_metric_families(sys.stdin.read())
]
print(json.dumps(families))
";

/// The exposition as the official Python client parses it.
struct Parsed(Vec<Family>);

impl Parsed {
    fn of(text: &str) -> Self {
        let (ok, stdout, stderr) = feed(
            PYTHON,
            &["-c", PARSE],
            text,
            "install the Prometheus Python client: apt-get install -y python3-prometheus-client",
        );
        assert!(
            ok,
            "the Prometheus Python client could not parse the output (apt-get install -y python3-prometheus-client):\n{stderr}\n--- the output:\n{text}"
        );
        Self(serde_json::from_str(&stdout).expect("the parser's JSON"))
    }

    /// The value of the sample `name` with `labels` (none: `&[]`).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.0
            .iter()
            .flat_map(|family| &family.samples)
            .find(|sample| sample.name == name && sample.labels == labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in {:#?}", self.0))
            .value
    }

    /// The type of the family `name`.
    fn kind(&self, name: &str) -> &str {
        &self
            .0
            .iter()
            .find(|family| family.name == name)
            .unwrap_or_else(|| panic!("no family {name}"))
            .kind
    }
}

fn agent(id: &str, status: AgentStatus, load: u32, max_load: u32, caps: &[&str]) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        name: id.into(),
        capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
        status,
        last_heartbeat: roster::now(),
        current_load: load,
        max_load,
        ..AgentInfo::default()
    }
}

fn task(id: &str, label: &str) -> Task {
    Task {
        id: id.into(),
        labels: vec![label.into()],
        ..Task::default()
    }
}

/// A capability with the characters the format escapes in label values.
const ODD: &str = r#"we"ird\cap"#;

/// A registry in a known state: statuses, a drain, loads, an unlimited
/// agent, claims held, detached and past their lease, and one recovery of
/// each reason in the events table.
fn registry_in_a_known_state() -> TempRegistry {
    let reg = TempRegistry::new();
    for a in [
        agent("a", AgentStatus::Available, 1, 4, &["rust", ODD]),
        agent("b", AgentStatus::Busy, 0, 2, &["rust", "gpu"]),
        agent("c", AgentStatus::Available, 3, 0, &["gpu"]),
        agent("d", AgentStatus::Available, 0, 3, &["rust"]),
        agent("f", AgentStatus::Available, 0, 2, &["fcap"]),
        agent("g", AgentStatus::Available, 0, 1, &["gcap"]),
        agent("h", AgentStatus::Available, 0, 1, &["hcap"]),
    ] {
        reg.register(a).expect("register");
    }
    reg.drain("d", true).expect("drain");
    let hour = Some(Duration::from_secs(3600));
    // One claim to recover for each reason.
    assert_eq!(
        reg.claim(&task("t-f", "fcap"), None)
            .expect("claim")
            .agent
            .id,
        "f"
    );
    reg.set_status("f", AgentStatus::Offline).expect("offline");
    assert_eq!(
        reg.claim(&task("t-g", "gcap"), hour)
            .expect("claim")
            .agent
            .id,
        "g"
    );
    expire("t-g", &reg);
    assert_eq!(
        reg.claim(&task("t-h", "hcap"), None)
            .expect("claim")
            .agent
            .id,
        "h"
    );
    reg.deregister("h").expect("deregister");
    assert_eq!(reg.recover().expect("recover").len(), 3);
    // Claims held now: one on a, one past its lease, one detached.
    assert_eq!(
        reg.claim(&task("t-a", ODD), None).expect("claim").agent.id,
        "a"
    );
    assert_eq!(
        reg.claim(&task("t-g2", "gcap"), hour)
            .expect("claim")
            .agent
            .id,
        "g"
    );
    expire("t-g2", &reg);
    reg.register(agent("h2", AgentStatus::Available, 0, 1, &["hcap2"]))
        .expect("register");
    assert_eq!(
        reg.claim(&task("t-h2", "hcap2"), None)
            .expect("claim")
            .agent
            .id,
        "h2"
    );
    reg.deregister("h2").expect("deregister");
    // a has not been seen for two hours (typed by hand: no event).
    reg.query(
        "UPDATE agents SET last_heartbeat = strftime('%Y-%m-%d %H:%M:%f000000', 'now', '-2 hours') WHERE id = 'a'",
        SqlAccess::ReadWrite,
    )
    .expect("old heartbeat");
    reg
}

/// Puts the lease of the claim of `task` in the past, by hand.
fn expire(task: &str, reg: &TempRegistry) {
    reg.query(
        &format!(
            "UPDATE claims SET lease_expires_at = '2000-01-01 00:00:00.000000000' WHERE task_id = '{task}'"
        ),
        SqlAccess::ReadWrite,
    )
    .expect("expire the lease");
}

fn roster(db: &Path, args: &[&str]) -> std::process::Output {
    common::roster_command(db, args)
        .output()
        .expect("run roster")
}

/// `roster metrics`, once.
fn metrics(db: &Path) -> String {
    let out = roster(db, &["metrics"]);
    assert!(
        out.status.success(),
        "roster metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Checks every figure of [`registry_in_a_known_state`] in `parsed`.
fn check_the_known_state(parsed: &Parsed, reg: &TempRegistry) {
    let status = |s: &str| parsed.value("roster_agents", &[("status", s)]);
    assert_eq!(
        (status("available"), status("busy"), status("offline")),
        (4.0, 1.0, 1.0)
    );
    assert_eq!(parsed.value("roster_agents_drained", &[]), 1.0);
    // a 1 + a claim, c 3, g 1 (a claim); f's claim was recovered.
    assert_eq!(parsed.value("roster_load", &[]), 6.0);
    // a 4, b 2, g 1: c is unlimited, d drained, f offline.
    assert_eq!(parsed.value("roster_capacity", &[]), 7.0);
    assert_eq!(parsed.value("roster_unlimited_agents", &[]), 1.0);
    let cap = |name: &str, capability: &str| parsed.value(name, &[("capability", capability)]);
    assert_eq!(cap("roster_capability_agents", "rust"), 3.0);
    assert_eq!(cap("roster_capability_load", "rust"), 2.0);
    assert_eq!(cap("roster_capability_capacity", "rust"), 6.0);
    assert_eq!(cap("roster_capability_agents", "gpu"), 2.0);
    assert_eq!(cap("roster_capability_load", "gpu"), 3.0);
    assert_eq!(cap("roster_capability_capacity", "gpu"), 2.0);
    assert_eq!(cap("roster_capability_unlimited_agents", "gpu"), 1.0);
    // The quote and the backslash come back as they were.
    assert_eq!(cap("roster_capability_load", ODD), 2.0);
    assert_eq!(parsed.value("roster_claims", &[]), 3.0);
    assert_eq!(parsed.value("roster_claims_detached", &[]), 1.0);
    assert_eq!(parsed.value("roster_claims_lease_expired", &[]), 1.0);
    let age = parsed.value("roster_heartbeat_oldest_age_seconds", &[]);
    assert!(
        (7200.0..7200.0 + 600.0).contains(&age),
        "a was seen 2 hours ago, not {age} s"
    );
    for reason in ["agent_gone", "agent_offline", "lease_expired"] {
        assert_eq!(
            parsed.value("roster_recoveries", &[("reason", reason)]),
            1.0,
            "{reason}"
        );
    }
    // The event counts are the events table's, read through the feed.
    let events = reg.events(0, 10_000).expect("events");
    for kind in roster::EventKind::ALL {
        let held = events.iter().filter(|e| e.kind == kind).count() as f64;
        assert_eq!(
            parsed.value("roster_events", &[("kind", kind.as_str())]),
            held,
            "{kind}"
        );
    }
    let oldest = parsed.value("roster_events_oldest_timestamp_seconds", &[]);
    let first = events[0].at.timestamp_millis() as f64 / 1000.0;
    assert!((oldest - first).abs() < 0.002, "{oldest} against {first}");
    assert_eq!(parsed.kind("roster_events_written"), "counter");
    assert_eq!(
        parsed.value("roster_events_written_total", &[]),
        reg.last_event().expect("last_event") as f64
    );
    assert_eq!(parsed.kind("roster_agents"), "gauge");
}

#[test]
fn one_shot_metrics_pass_promtool_and_say_what_the_registry_holds() {
    let reg = registry_in_a_known_state();
    let text = metrics(reg.path());
    promtool_accepts(&text);
    check_the_known_state(&Parsed::of(&text), &reg);
}

#[test]
fn an_empty_registry_has_every_family_at_zero() {
    let reg = TempRegistry::new();
    let text = metrics(reg.path());
    promtool_accepts(&text);
    let parsed = Parsed::of(&text);
    assert_eq!(
        parsed.value("roster_agents", &[("status", "available")]),
        0.0
    );
    assert_eq!(parsed.value("roster_events", &[("kind", "claimed")]), 0.0);
    assert_eq!(
        parsed.value("roster_heartbeat_oldest_age_seconds", &[]),
        0.0
    );
    assert_eq!(parsed.value("roster_events_written_total", &[]), 0.0);
}

/// One HTTP/1.1 request; returns the status line, the headers (lowercase
/// names) and the body.
fn http(address: &str, request: &str) -> (String, BTreeMap<String, String>, String) {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.lines();
    let status = lines.next().expect("status line").to_owned();
    let headers = lines
        .filter_map(|line| line.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn get(address: &str, path: &str) -> (String, BTreeMap<String, String>, String) {
    http(
        address,
        &format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: test\r\n\r\n"),
    )
}

#[test]
fn listen_serves_fresh_metrics_on_slash_metrics_until_sigterm() {
    let reg = registry_in_a_known_state();
    let mut command = Command::new(ROSTER);
    command
        .arg("--db")
        .arg(reg.path())
        .args(["metrics", "--listen", "127.0.0.1:0"])
        .env_remove("ROSTER_DB");
    let mut server = Running::spawn("roster metrics --listen", command);
    let line = server.expect_line("the address it serves");
    let url = line
        .strip_prefix("serving metrics on http://")
        .and_then(|rest| rest.strip_suffix("/metrics until SIGINT or SIGTERM"))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let address = url.to_owned();

    let (status, headers, body) = get(&address, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(headers.get("content-length"), Some(&body.len().to_string()));
    promtool_accepts(&body);
    check_the_known_state(&Parsed::of(&body), &reg);

    // Every scrape reads the registry again.
    reg.register(agent("new", AgentStatus::Available, 0, 1, &[]))
        .expect("register");
    let (_, _, body) = get(&address, "/metrics?x=1");
    let parsed = Parsed::of(&body);
    assert_eq!(
        parsed.value("roster_agents", &[("status", "available")]),
        5.0
    );

    let (status, _, body) = http(
        &address,
        &format!("HEAD /metrics HTTP/1.1\r\nHost: {address}\r\n\r\n"),
    );
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
    let (status, headers, _) = http(
        &address,
        "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(headers.get("allow").map(String::as_str), Some("GET, HEAD"));
    let (status, _, _) = get(&address, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    // A client that sends nothing and hangs up does not stop the server.
    drop(TcpStream::connect(&address).expect("connect"));
    let (status, _, _) = get(&address, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");

    sigterm(&server);
    let finished = server.finish();
    finished.expect_success("roster metrics --listen");
    assert!(finished.stderr.is_empty(), "{}", finished.stderr);
}

#[test]
fn bad_listen_addresses_and_missing_files_are_clear_errors() {
    let reg = TempRegistry::new();
    let out = roster(reg.path(), &["metrics", "--listen", "nowhere"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid value 'nowhere' for '--listen <ADDR>'"),
        "{stderr}"
    );
    // A port that is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let out = roster(reg.path(), &["metrics", "--listen", &address]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {address}")),
        "{stderr}"
    );
    // Metrics only read: a mistyped file is an error, not an empty registry.
    let missing = reg.dir().join("typo.db");
    let out = roster(&missing, &["metrics"]);
    assert_eq!(out.status.code(), Some(7));
    assert!(!missing.exists());
}

#[test]
fn metrics_help_has_an_example() {
    let out = Command::new(ROSTER)
        .args(["metrics", "--help"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Example") && help.contains("--listen 127.0.0.1:9464"),
        "{help}"
    );
}
