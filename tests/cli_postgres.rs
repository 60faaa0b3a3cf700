//! The `roster` command on PostgreSQL, driven as a user would: the real
//! binary with `--db postgres://...` or `ROSTER_DB=postgres://...`, against
//! a real server (the one the tests start, or `ROSTER_PG_URL`).
//!
//! The same commands are run on an SQLite file and on PostgreSQL, and what
//! they print must be the same, times aside. The long-running subcommands
//! are known to be up when they printed their first line; nothing here
//! waits for time to pass.

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Command, Output, Stdio};

use common::pg::{self, Cluster, SchemaGuard};
use common::readme::{code_span, shell_word};
use common::tmux::Tmux;
use common::{ROSTER, Running, roster_command, sigterm};
use serde_json::Value;

/// Where a run of `roster` points.
enum Db {
    /// An SQLite file, through `--db`.
    File(tempfile::TempDir),
    /// A PostgreSQL schema of its own, through `--db URL`.
    Flag { url: String, _schema: SchemaGuard },
    /// A PostgreSQL schema of its own, through `ROSTER_DB=URL`.
    Env { url: String, _schema: SchemaGuard },
}

/// `base` with `options=-csearch_path=schema` added: the URL of a registry
/// that lives in `schema`.
fn in_schema(base: &str, schema: &str) -> String {
    let glue = if base.contains('?') { '&' } else { '?' };
    format!("{base}{glue}options=-csearch_path%3D{schema}")
}

/// A new, empty schema on the shared server and the URL that points at it.
fn schema_url() -> (String, SchemaGuard) {
    let schema = pg::schema_name();
    let guard = SchemaGuard(schema.clone());
    pg::client()
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .unwrap_or_else(|e| panic!("create schema {schema}: {e}"));
    (in_schema(pg::url(), &schema), guard)
}

impl Db {
    fn file() -> Self {
        Self::File(tempfile::tempdir().expect("tempdir"))
    }

    fn flag() -> Self {
        let (url, _schema) = schema_url();
        Self::Flag { url, _schema }
    }

    fn env() -> Self {
        let (url, _schema) = schema_url();
        Self::Env { url, _schema }
    }

    /// The URL of a PostgreSQL registry.
    fn url(&self) -> &str {
        match self {
            Self::File(_) => panic!("an SQLite registry has no URL"),
            Self::Flag { url, .. } | Self::Env { url, .. } => url,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::File(_) => "sqlite",
            Self::Flag { .. } => "postgres --db",
            Self::Env { .. } => "postgres ROSTER_DB",
        }
    }

    /// `roster args...` pointed at this registry.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(ROSTER);
        cmd.env_remove("ROSTER_DB").stdin(Stdio::null());
        match self {
            Self::File(dir) => {
                cmd.arg("--db")
                    .arg(dir.path().join("roster.db"))
                    .current_dir(dir.path());
            }
            Self::Flag { url, .. } => {
                cmd.arg("--db").arg(url);
            }
            Self::Env { url, .. } => {
                cmd.env("ROSTER_DB", url);
            }
        }
        cmd.args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run roster")
    }

    /// Runs and expects success with nothing on stderr; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}: roster {args:?} ({:?}): {}",
            self.name(),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }
}

/// The keys whose values are times: they differ from run to run.
const TIMES: [&str; 6] = [
    "last_heartbeat",
    "claimed_at",
    "lease_expires_at",
    "started_at",
    "time",
    "at",
];

/// `value` with every time taken out.
fn timeless(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for key in TIMES {
                map.remove(key);
            }
            map.values_mut().for_each(timeless);
        }
        Value::Array(items) => items.iter_mut().for_each(timeless),
        _ => {}
    }
}

/// What one command did, times aside: exit code, stdout (JSON without its
/// times, when it is JSON), stderr.
fn outcome(db: &Db, args: &[&str]) -> (Option<i32>, String, String) {
    let out = db.run(args);
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let stdout = if args.first() == Some(&"--json") && !stdout.is_empty() {
        let mut value: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{}: {args:?} printed no JSON ({e}): {stdout}", db.name()));
        timeless(&mut value);
        value.to_string()
    } else if args.first() == Some(&"metrics") {
        // Ages and the oldest event's time move with the clock.
        stdout
            .lines()
            .filter(|line| !line.contains("oldest"))
            .map(|line| format!("{line}\n"))
            .collect()
    } else {
        stdout
    };
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    (out.status.code(), stdout, stderr)
}

/// A session at the shell: every command, in order, with the exit code it
/// must end with.
const SESSION: &[(&[&str], i32)] = &[
    (
        &[
            "--json",
            "register",
            "b1",
            "--cap",
            "rust",
            "--max-load",
            "2",
        ],
        0,
    ),
    (
        &[
            "--json",
            "register",
            "b2",
            "--cap",
            "rust",
            "--cap",
            "gpu",
            "--max-load",
            "1",
            "--meta",
            "zone=eu",
        ],
        0,
    ),
    (&["--json", "list"], 0),
    (&["claim", "--label", "rust", "--task-id", "t1"], 0),
    (&["claim", "--label", "gpu", "--task-id", "t2"], 0),
    (&["claim", "--label", "gpu", "--task-id", "t3"], 4),
    (&["claim", "--label", "rust", "--task-id", "t1"], 8),
    (&["--json", "claims"], 0),
    (&["--json", "claims", "--agent", "b2"], 0),
    (&["release", "t1", "--token", "2"], 9),
    (&["release", "t1", "--token", "1"], 0),
    (&["--json", "renew", "t2", "--lease", "1h"], 0),
    (&["drain", "b1"], 0),
    (&["claim", "--label", "rust", "--task-id", "t4"], 4),
    (&["drain", "b1", "--undo"], 0),
    (&["heartbeat", "b1"], 0),
    (&["--json", "get", "b1"], 0),
    (&["deregister", "b2"], 0),
    (&["recover"], 0),
    (&["recover"], 0),
    (&["reap", "--ttl", "1h"], 0),
    (
        &[
            "sql",
            "SELECT id, status, max_load, current_load, drained FROM agents ORDER BY id",
        ],
        0,
    ),
    (
        &[
            "--json",
            "sql",
            "SELECT id, status, max_load, drained FROM agents ORDER BY id",
        ],
        0,
    ),
    (&["sql", "SELECT count(*) AS n FROM claims"], 0),
    (
        &[
            "sql",
            "--write",
            "UPDATE agents SET max_load = 5 WHERE id = 'b1'",
        ],
        0,
    ),
    (
        &[
            "sql",
            "--write",
            "UPDATE agents SET max_load = 6 WHERE id = 'b1' RETURNING id, max_load",
        ],
        0,
    ),
    (
        &[
            "--json",
            "sql",
            "--write",
            "update agents SET max_load = 5 WHERE id = 'b1' RETURNING id",
        ],
        0,
    ),
    (&["sql", "DELETE FROM agents"], 2),
    (&["get", "nope"], 3),
    (&["metrics"], 0),
    (&["deregister", "b1"], 0),
    (&["--json", "list"], 0),
    (&["list"], 0),
];

#[test]
fn every_command_prints_the_same_on_sqlite_and_on_postgresql() {
    let runs = [Db::file(), Db::flag(), Db::env()];
    let outcomes: Vec<Vec<(Option<i32>, String, String)>> = runs
        .iter()
        .map(|db| {
            SESSION
                .iter()
                .map(|(args, code)| {
                    let outcome = outcome(db, args);
                    assert_eq!(
                        outcome.0,
                        Some(*code),
                        "{}: roster {args:?}: {}",
                        db.name(),
                        outcome.2
                    );
                    outcome
                })
                .collect()
        })
        .collect();
    for (i, (args, _)) in SESSION.iter().enumerate() {
        for (db, got) in runs.iter().zip(&outcomes).skip(1) {
            assert_eq!(
                got[i],
                outcomes[0][i],
                "roster {args:?}: {} differs from sqlite",
                db.name()
            );
        }
    }
    // What the session did, seen from the outputs themselves.
    let sqlite = &outcomes[0];
    assert_eq!(sqlite[3].1, "claimed task t1 on b1 (load 1/2, token 1)\n");
    assert_eq!(
        sqlite[18].1,
        "task t2 taken back from b2 (agent_gone, token 2)\n"
    );
    assert_eq!(sqlite[19].1, "nothing to recover\n");
    assert_eq!(
        sqlite[21].1,
        "id  status     max_load  current_load  drained\nb1  available  2         0             0\n"
    );
    assert_eq!(sqlite[24].1, "1 row changed\n");
    // A change that returns rows counts them as changed, as on SQLite.
    assert_eq!(sqlite[25].1, "id  max_load\nb1  6\n1 row changed\n");
    assert_eq!(
        sqlite[26].1,
        "{\"changes\":1,\"columns\":[\"id\"],\"rows\":[[\"b1\"]]}"
    );
    assert!(
        sqlite[29]
            .1
            .contains("roster_events{kind=\"recovered\"} 1\n"),
        "{}",
        sqlite[29].1
    );
    assert_eq!(sqlite[32].1, "no agents\n");
}

#[test]
fn watch_prints_what_other_processes_commit() {
    let db = Db::flag();
    let url = db.url().to_owned();
    db.ok(&["register", "w0"]);
    let mut watch = Running::spawn("roster watch", roster_command(&url, &["watch"]));
    let ready = watch.expect_line("the ready line");
    let shown = url.split('?').next().unwrap_or_default();
    assert!(
        ready.contains(&format!("watching {shown} after event 1;")),
        "{ready}"
    );
    db.ok(&["register", "w1", "--cap", "x", "--max-load", "1"]);
    db.ok(&["claim", "--task-id", "job-1", "--label", "x"]);
    db.ok(&["release", "job-1"]);
    let lines: Vec<String> = (0..3).map(|_| watch.expect_line("an event")).collect();
    let events: Vec<&str> = lines
        .iter()
        .map(|line| line.split_once(' ').map_or("", |(_, rest)| rest))
        .collect();
    assert_eq!(
        events,
        [
            "#2 registered: w1 (available)",
            "#3 claimed: task job-1 on w1 (token 1)",
            "#4 released: task job-1 of w1 (token 1)",
        ]
    );
    sigterm(&watch);
    let done = watch.finish();
    done.expect_success("roster watch");
    assert!(done.stdout.is_empty(), "{:?}", done.stdout);

    // JSON lines from a cursor: the same events again.
    let mut json = Running::spawn(
        "roster --json watch --since 1",
        roster_command(&url, &["--json", "watch", "--since", "1"]),
    );
    let first: Value = serde_json::from_str(&json.expect_line("an event")).expect("JSON");
    assert_eq!(
        (first["seq"].as_u64(), first["kind"].as_str()),
        (Some(2), Some("registered"))
    );
    sigterm(&json);
    json.finish().expect_success("roster --json watch");
}

#[test]
fn the_sidecar_heartbeats_on_postgresql_until_sigterm() {
    let db = Db::env();
    let mut agent = Running::spawn(
        "roster agent",
        db.command(&["agent", "side-1", "--cap", "py", "--every", "50ms"]),
    );
    let first = agent.expect_line("its first line");
    assert!(
        first.ends_with("agent side-1 registered; heartbeat every 50ms until SIGINT or SIGTERM"),
        "{first}"
    );
    let get = |db: &Db| -> Value {
        serde_json::from_str(&db.ok(&["--json", "get", "side-1"])).expect("JSON")
    };
    let registered = get(&db);
    assert_eq!(registered["status"], "available");
    assert_eq!(registered["pid"], agent.id());
    // Heartbeats after the registration: a later last_heartbeat.
    common::eventually("a heartbeat of the sidecar", || {
        (get(&db)["last_heartbeat"] != registered["last_heartbeat"]).then_some(())
    });
    // A second sidecar is refused while the first runs.
    let refused = db.run(&["agent", "side-1", "--every", "50ms"]);
    assert_eq!(refused.status.code(), Some(10));
    sigterm(&agent);
    let out = agent.finish();
    out.expect_success("the sidecar");
    assert_eq!(out.stdout.len(), 1, "{:?}", out.stdout);
    assert!(
        out.stdout[0].ends_with("agent side-1 stopped (marked offline)"),
        "{:?}",
        out.stdout
    );
    assert_eq!(get(&db)["status"], "offline");
}

#[test]
fn register_stamps_the_servers_clock_not_this_hosts() {
    let db = Db::flag();
    let url = db.url();
    // This process believes it is 2001; the server knows better.
    let out = Command::new("faketime")
        .args(["2001-02-03 04:05:06", ROSTER, "--json", "--db", url])
        .args(["register", "clock-1"])
        .env_remove("ROSTER_DB")
        .output()
        .expect("run faketime (apt-get install faketime)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let agent: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let stamped = agent["last_heartbeat"].as_str().expect("a time");
    assert!(!stamped.starts_with("2001-"), "{stamped}");
    let mut client = pg::client();
    let row = client
        .query_one(
            "SELECT abs(extract(epoch FROM now() - $1::text::timestamptz)) < 600",
            &[&stamped],
        )
        .expect("compare with the server's now");
    assert!(row.get::<_, bool>(0), "{stamped} is not the server's now");
    // And a reap by the same lying clock judges by the server's too.
    let reap = Command::new("faketime")
        .args([
            "2001-02-03 04:05:06",
            ROSTER,
            "--db",
            url,
            "reap",
            "--ttl",
            "1h",
        ])
        .env_remove("ROSTER_DB")
        .output()
        .expect("run faketime");
    assert_eq!(
        String::from_utf8_lossy(&reap.stdout),
        "nobody was silent for more than 1h\n"
    );
}

#[test]
fn sql_on_postgresql_is_read_only_timed_and_one_statement() {
    let db = Db::flag();
    db.ok(&["register", "a1", "--max-load", "3"]);
    let refused = db.run(&["sql", "UPDATE agents SET max_load = 1"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("add --write to run it"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let table = db.ok(&["sql", "SELECT max_load FROM agents"]);
    let lines: Vec<&str> = table.lines().map(str::trim_end).collect();
    assert_eq!(lines, ["max_load", "3"]);
    for (sql, message) in [
        ("SELECT 1; SELECT 2", "multiple commands"),
        ("-- nothing", "no statement"),
        ("SELECT * FROM nowhere", "\"nowhere\" does not exist"),
        ("SELECT ARRAY[1, 2] AS a", "cast it, e.g. a::text"),
        ("SELECT $1::int", "parameter"),
    ] {
        let out = db.run(&["sql", sql]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{sql}: {stderr}");
        assert!(stderr.contains(message), "{sql}: {stderr}");
    }
    let slow = db.run(&["sql", "--timeout", "200ms", "SELECT pg_sleep(60)"]);
    let stderr = String::from_utf8_lossy(&slow.stderr);
    assert_eq!(slow.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ran for more than 200ms"), "{stderr}");
    // Types as SQLite shows them: booleans 0/1, whole numerics as integers,
    // times in UTC.
    assert_eq!(
        db.ok(&[
            "--json",
            "sql",
            "SELECT drained, sum(max_load) AS s, 1.5::numeric AS n, NULL AS z, \
             timestamptz '2026-01-02 03:04:05.25+00' AS t FROM agents GROUP BY drained",
        ]),
        "{\"columns\":[\"drained\",\"s\",\"n\",\"z\",\"t\"],\"rows\":[[0,3,\"1.5\",null,\"2026-01-02 03:04:05.250000\"]]}\n"
    );
}

#[test]
fn metrics_on_postgresql_count_what_the_registry_holds() {
    let db = Db::flag();
    db.ok(&["register", "m1", "--cap", "gpu", "--max-load", "2"]);
    db.ok(&["register", "m2", "--max-load", "0", "--status", "busy"]);
    db.ok(&["claim", "--task-id", "job", "--label", "gpu"]);
    let text = db.ok(&["metrics"]);
    for line in [
        "roster_agents{status=\"available\"} 1",
        "roster_agents{status=\"busy\"} 1",
        "roster_load 1",
        "roster_capacity 2",
        "roster_unlimited_agents 1",
        "roster_capability_agents{capability=\"gpu\"} 1",
        "roster_capability_load{capability=\"gpu\"} 1",
        "roster_claims 1",
        "roster_events{kind=\"claimed\"} 1",
        "roster_events_written_total 3",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    let age = text
        .lines()
        .find_map(|l| l.strip_prefix("roster_heartbeat_oldest_age_seconds "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the oldest heartbeat's age");
    assert!((0.0..600.0).contains(&age), "{age}");
}

#[test]
fn a_malformed_url_is_bad_input() {
    let out = roster_command("postgres://roster:hunter2@127.0.0.1:notaport/db", &["list"])
        .output()
        .expect("run roster");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("roster: invalid url"), "{stderr}");
    assert!(
        stderr.contains("postgres://roster:***@127.0.0.1:notaport/db"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn an_unreachable_server_fails_at_once_with_the_storage_code() {
    // A port nobody listens on: the connection is refused.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("postgres://roster:hunter2@127.0.0.1:{port}/db");
    let out = roster_command(&url, &["--json", "list"])
        .output()
        .expect("run roster");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let error: Value = serde_json::from_str(&stderr).expect("a JSON error");
    assert_eq!(error["kind"], "storage");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot connect") && e.contains("reachable")),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn a_server_that_never_answers_is_given_up_after_the_connect_timeout() {
    // Accepts connections (the kernel's backlog) and never says a word.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
    let port = silent.local_addr().expect("address").port();
    let url = format!("postgres://roster@127.0.0.1:{port}/db?connect_timeout=1");
    let out = roster_command(&url, &["list"])
        .output()
        .expect("run roster");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no answer from the server within 1s"),
        "{stderr}"
    );
    drop(silent);
}

#[test]
fn a_wrong_password_is_refused_and_no_password_is_ever_shown() {
    // A server of its own, where one role logs in with a password.
    let cluster = Cluster::start(false);
    let hba = cluster.dir().join("data").join("pg_hba.conf");
    std::fs::write(
        &hba,
        "host all guarded 127.0.0.1/32 scram-sha-256\n\
         host all all 127.0.0.1/32 trust\n\
         local all all trust\n",
    )
    .expect("write pg_hba.conf");
    let mut admin =
        postgres::Client::connect(cluster.url(), postgres::NoTls).expect("connect as roster");
    admin
        .batch_execute(
            "CREATE ROLE guarded LOGIN PASSWORD 'right-horse'; \
             GRANT CREATE ON DATABASE postgres TO guarded; \
             CREATE SCHEMA guarded AUTHORIZATION guarded; \
             SELECT pg_reload_conf();",
        )
        .expect("set up the role");
    let base = cluster.url().replace("roster@", "guarded:PASSWORD@");

    let wrong = base.replace("PASSWORD", "wrong-staple");
    let out = roster_command(&wrong, &["list"])
        .output()
        .expect("run roster");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(
        stderr.contains("password authentication failed for user \"guarded\""),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-staple"), "{stderr}");

    // With the right one, every line that names the database hides it.
    let right = base.replace("PASSWORD", "right-horse");
    let ok = roster_command(&right, &["register", "g1"])
        .output()
        .expect("run roster");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let mut watch = Running::spawn("roster watch", roster_command(&right, &["watch"]));
    let ready = watch.expect_line("the ready line");
    assert!(
        ready.contains("watching postgres://guarded@127.0.0.1:"),
        "{ready}"
    );
    assert!(!ready.contains("right-horse"), "{ready}");
    sigterm(&watch);
    watch.finish().expect_success("roster watch");
    let missing = roster_command(&right, &["get", "nobody"])
        .output()
        .expect("run roster");
    assert_eq!(missing.status.code(), Some(3));
    let demo = roster_command(&right, &["demo"])
        .output()
        .expect("run roster");
    let stderr = String::from_utf8_lossy(&demo.stderr);
    assert_eq!(demo.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("postgres://guarded:***@"), "{stderr}");
    assert!(!stderr.contains("right-horse"), "{stderr}");
    drop(admin);
}

#[test]
fn reading_commands_never_create_a_registry_on_postgresql() {
    let (url, guard) = schema_url();
    let out = roster_command(&url, &["list"])
        .output()
        .expect("run roster");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(stderr.contains("no registry at"), "{stderr}");
    let tables: i64 = pg::client()
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
            &[&guard.0],
        )
        .expect("count tables")
        .get(0);
    assert_eq!(tables, 0, "list created tables");
}

#[test]
fn top_follows_a_postgresql_registry_in_a_real_terminal() {
    let db = Db::flag();
    db.ok(&["register", "alpha", "--cap", "rust", "--max-load", "2"]);
    db.ok(&["claim", "--task-id", "build-1", "--label", "rust"]);
    let tmux = Tmux::top(db.url(), &[], &[], 140, 30);
    let shown = db.url().split('?').next().unwrap_or_default().to_owned();
    let first = tmux.wait_for("alpha, its claim and the title", |s| {
        s.contains(&shown)
            && s.lines().any(|l| l.contains("alpha") && l.contains("1/2"))
            && s.contains("task build-1")
            && s.contains("q quit")
    });
    assert!(!first.contains("top exited"), "{first}");
    // Another process registers an agent: the feed brings it on screen.
    db.ok(&["register", "bravo", "--max-load", "3", "--status", "busy"]);
    tmux.wait_for("bravo, from the change feed", |s| {
        s.lines()
            .any(|l| l.contains("bravo") && l.contains("busy") && l.contains("0/3"))
    });
    tmux.keys(&["q"]);
    let last = tmux.wait_text("top exited with");
    assert!(last.contains("top exited with 0"), "{last}");
}

#[test]
fn the_reaper_reaps_and_recovers_on_postgresql_until_sigterm() {
    let db = Db::env();
    db.ok(&["register", "r1", "--cap", "x", "--max-load", "1"]);
    db.ok(&["claim", "--task-id", "job-7", "--label", "x"]);
    // A TTL of 0: every agent is silent for longer, by the server's clock.
    let mut reaper = Running::spawn(
        "roster reaper",
        db.command(&["reaper", "--ttl", "0s", "--every", "50ms"]),
    );
    let lines: Vec<String> = (0..3).map(|_| reaper.expect_line("a line")).collect();
    let texts: Vec<&str> = lines
        .iter()
        .map(|line| line.split_once(' ').map_or("", |(_, rest)| rest))
        .collect();
    assert!(
        texts[0].starts_with("reaper: agents silent for more than 0s"),
        "{lines:?}"
    );
    assert_eq!(
        texts[1..],
        [
            "r1 went offline",
            "task job-7 taken back from r1 (agent_offline, token 1)"
        ]
    );
    sigterm(&reaper);
    reaper.finish().expect_success("the reaper");
    assert_eq!(db.ok(&["claims"]), "no claims held\n");
}

#[test]
fn ctrl_c_cancels_a_statement_on_the_server() {
    let db = Db::flag();
    db.ok(&["register", "s1"]);
    let marker = format!("roster_cancel_{}", std::process::id());
    let sql = format!("SELECT pg_sleep(600) AS {marker}");
    let sleeper = Running::spawn("roster sql", db.command(&["sql", "--timeout", "0", &sql]));
    // Running on the server: pg_stat_activity shows it.
    let mut client = pg::client();
    common::eventually("the statement on the server", || {
        let running: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'",
                &[&sql],
            )
            .expect("pg_stat_activity")
            .get(0);
        (running == 1).then_some(())
    });
    let pid = nix::unistd::Pid::from_raw(i32::try_from(sleeper.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let done = sleeper.finish();
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    assert!(
        done.stderr.contains("the statement was cancelled"),
        "{}",
        done.stderr
    );
    // And it no longer runs there.
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'",
            &[&sql],
        )
        .expect("pg_stat_activity")
        .get(0);
    assert_eq!(left, 0);
}

/// Runs `roster --db URL list`, as text and as `--json`; both must fail
/// with `code`, and neither may show any of `secrets`.
fn refused_without_showing(url: &str, code: i32, secrets: &[&str]) -> String {
    let mut text = String::new();
    for json in [false, true] {
        let args: &[&str] = if json { &["--json", "list"] } else { &["list"] };
        let out = roster_command(url, args).output().expect("run roster");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "{url}: {stderr}");
        for secret in secrets {
            assert!(!stderr.contains(secret), "{url} shows {secret:?}: {stderr}");
        }
        if json {
            let error: Value = serde_json::from_str(&stderr).expect("a JSON error");
            assert_eq!(error["exit_code"], code, "{stderr}");
        } else {
            text = stderr;
        }
    }
    text
}

#[test]
fn passwords_in_odd_places_of_a_url_are_never_shown() {
    // Nobody listens on port 1: what is refused is refused before any
    // connection.
    // A password parameter whose key is percent-escaped is a password
    // to the driver all the same.
    for url in [
        "postgres://roster@127.0.0.1:1/db?pass%77ord=hunter2&sslmode=bogus",
        "postgres://roster@127.0.0.1:1/db?%70assword=hunter2&bogus=1",
        // Escapes that do not decode: the message says so without the value.
        "postgres://roster@127.0.0.1:1/db?password=hunter2%zz",
        "postgres://roster@127.0.0.1:1/db?password=hunter2%ff",
    ] {
        let stderr = refused_without_showing(url, 2, &["hunter2"]);
        assert!(stderr.starts_with("roster: invalid url"), "{stderr}");
    }
    // An `@` (or `/`) in a password must be written %40 (%2F): unescaped,
    // the driver would take the rest of the password for a host or a
    // database name and print it in its messages.
    for (url, secrets) in [
        (
            "postgres://roster:hunt@er2:/%x@127.0.0.1:1/db",
            &["hunt", "er2", "/%x"][..],
        ),
        (
            "postgres://roster:hunt/er2@127.0.0.1:1/db",
            &["hunt", "er2"][..],
        ),
        (
            "postgres://127.0.0.1:1/db?password=hunt@er2&sslmode=disable",
            &["hunt", "er2"][..],
        ),
    ] {
        let stderr = refused_without_showing(url, 2, secrets);
        assert!(stderr.starts_with("roster: invalid url"), "{stderr}");
        assert!(stderr.contains("%40"), "{stderr}");
    }
}

#[test]
fn sql_on_postgresql_shows_infinite_times_and_refuses_copy() {
    let db = Db::flag();
    db.ok(&["register", "c1"]);
    // psql shows them; so does roster sql.
    assert_eq!(
        db.ok(&[
            "--json",
            "sql",
            "SELECT 'infinity'::timestamptz AS a, '-infinity'::timestamp AS b, \
             'infinity'::date AS c, '-infinity'::date AS d",
        ]),
        "{\"columns\":[\"a\",\"b\",\"c\",\"d\"],\"rows\":[[\"infinity\",\"-infinity\",\"infinity\",\"-infinity\"]]}\n"
    );
    // A time past what roster can show is refused clearly, naming the
    // column, with the advice to cast it.
    let far = db.run(&[
        "sql",
        "SELECT '294276-12-31 23:59:59+00'::timestamptz AS far",
    ]);
    let stderr = String::from_utf8_lossy(&far.stderr);
    assert_eq!(far.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("far::text"), "{stderr}");
    // COPY streams rows outside the statement's result: refused whichever
    // way it goes, and nothing is written on the server.
    let file = format!("/tmp/roster-copy-{}.csv", std::process::id());
    for sql in [
        "COPY agents TO STDOUT".to_owned(),
        "/* c */ copy (SELECT 1) TO STDOUT".to_owned(),
        format!("COPY agents TO '{file}'"),
    ] {
        let out = db.run(&["sql", &sql]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{sql}: {stderr}");
        assert!(stderr.contains("COPY"), "{sql}: {stderr}");
    }
    let out = db.run(&["sql", "--write", "COPY agents FROM STDIN"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("COPY"), "{stderr}");
    assert!(!std::path::Path::new(&file).exists(), "{file} was written");
}

#[test]
fn an_event_typed_by_hand_cannot_move_the_cursor_ahead() {
    let db = Db::flag();
    db.ok(&["register", "e1"]);
    let schema = db
        .url()
        .rsplit("search_path%3D")
        .next()
        .expect("the schema")
        .to_owned();
    let mut client = pg::client();
    client
        .batch_execute(&format!("SET search_path = {schema}"))
        .expect("search_path");
    // Far ahead of the sequence: a watcher at that cursor would never see
    // the events numbered below it.
    let ahead = client
        .batch_execute("INSERT INTO events (seq, kind, agent_id) VALUES (1000000, 'status', 'e1')");
    let error = ahead.expect_err("an event far ahead of the cursor");
    assert!(
        error
            .as_db_error()
            .is_some_and(|e| e.message().contains("leave events.seq out")),
        "{error:?}"
    );
    // Appended with the next number, as the column's default gives it.
    client
        .batch_execute(
            "INSERT INTO events (kind, agent_id, status) VALUES ('status', 'e1', 'busy')",
        )
        .expect("an event with the next number");
    let newest: i64 = client
        .query_one("SELECT max(seq) FROM events", &[])
        .expect("max seq")
        .get(0);
    assert!(newest < 1000, "{newest}");
    // A watcher from the start sees it, after the registration.
    let mut watch = Running::spawn(
        "roster watch",
        db.command(&["--json", "watch", "--since", "0"]),
    );
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("\"status\":\"busy\""))
    {
        assert!(seen.len() < 10, "no busy event: {seen:?}");
        seen.push(watch.expect_line("an event"));
    }
    sigterm(&watch);
    watch.finish().expect_success("roster watch");
}

#[test]
fn a_missing_password_is_a_refused_login() {
    let cluster = Cluster::start(false);
    let hba = cluster.dir().join("data").join("pg_hba.conf");
    std::fs::write(
        &hba,
        "host all guarded 127.0.0.1/32 scram-sha-256\n\
         host all all 127.0.0.1/32 trust\n\
         local all all trust\n",
    )
    .expect("write pg_hba.conf");
    let mut admin =
        postgres::Client::connect(cluster.url(), postgres::NoTls).expect("connect as roster");
    admin
        .batch_execute("CREATE ROLE guarded LOGIN PASSWORD 'right-horse'; SELECT pg_reload_conf();")
        .expect("set up the role");
    let url = cluster.url().replace("roster@", "guarded@");
    let stderr = refused_without_showing(&url, 7, &["right-horse"]);
    assert!(stderr.contains("asks for a password"), "{stderr}");
    drop(admin);
}

#[test]
fn settings_typed_by_hand_cannot_hide_deleted_events() {
    let db = Db::flag();
    db.ok(&["register", "p1"]);
    db.ok(&["register", "p2"]);
    let schema = db
        .url()
        .rsplit("search_path%3D")
        .next()
        .expect("the schema")
        .to_owned();
    let mut client = pg::client();
    client
        .batch_execute(&format!("SET search_path = {schema}"))
        .expect("search_path");
    // Events deleted by hand count as pruned.
    client
        .batch_execute("DELETE FROM events WHERE seq = 1")
        .expect("delete an event");
    // Nothing typed by hand can forget that, nor take a setting away.
    for sql in [
        "DELETE FROM settings WHERE name = 'pruned_through'",
        "DELETE FROM settings WHERE name = 'events_keep'",
        "TRUNCATE settings",
        "UPDATE settings SET value = 0 WHERE name = 'pruned_through'",
        "UPDATE settings SET name = 'kept' WHERE name = 'events_keep'",
    ] {
        let error = client.batch_execute(sql).expect_err(sql);
        assert!(
            error
                .as_db_error()
                .is_some_and(|e| e.message().contains("settings")),
            "{sql}: {error:?}"
        );
    }
    client
        .batch_execute("UPDATE settings SET value = 1000 WHERE name = 'events_keep'")
        .expect("a setting's value changes");
    // So a watcher from before the deleted event is told, not handed the
    // rest as if nothing were missing.
    let out = db.run(&["watch", "--since", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(11), "{stderr}");
}

/// The bad inputs of the README's PostgreSQL catalogue: the arguments
/// (`URL` stands for a registry of the test server) and the exit code.
const PG_BAD_INPUTS: &[(&[&str], i32)] = &[
    (&["--db", "postgres://", "list"], 2),
    (
        &[
            "--db",
            "postgres://roster:hunter2@db:notaport/roster",
            "list",
        ],
        2,
    ),
    (&["--db", "postgres://db/roster?sslmode=bogus", "list"], 2),
    (&["--db", "postgres://db/roster?bogus=1", "list"], 2),
    (&["--db", "postgres://roster:hunt@er2@db/roster", "list"], 2),
    (
        &["--db", "postgres://db/roster?pass%77ord=hunt%zz", "list"],
        2,
    ),
    (
        &[
            "--db",
            "postgres://db/roster",
            "--busy-timeout",
            "0s",
            "list",
        ],
        2,
    ),
    (
        &["--db", "URL", "sql", "SELECT * FROM agents FOR UPDATE"],
        2,
    ),
    (&["--db", "URL", "sql", "SELECT nextval('claim_tokens')"], 2),
    (
        &[
            "--db",
            "URL",
            "sql",
            "DO $$ BEGIN DELETE FROM claims; END $$",
        ],
        2,
    ),
    (&["--db", "URL", "sql", "COPY agents TO STDOUT"], 2),
    (
        &["--db", "URL", "sql", "COPY agents TO '/tmp/agents.csv'"],
        2,
    ),
    (
        &[
            "--db",
            "URL",
            "sql",
            "SELECT '294276-01-01'::timestamp AS far",
        ],
        2,
    ),
    (&["--db", "URL", "sql", "SELECT 1; SELECT 2"], 2),
    (&["--db", "URL", "sql", "SELECT $1::int"], 2),
];

#[test]
fn every_postgresql_bad_input_of_the_readme_gets_its_message_and_exit_code() {
    let db = Db::flag();
    db.ok(&["register", "a", "--max-load", "1"]);
    db.ok(&["claim", "--task-id", "held"]);
    let readme = include_str!("../README.md");
    let mut missing = Vec::new();
    for (args, code) in PG_BAD_INPUTS {
        let run: Vec<&str> = args
            .iter()
            .map(|a| if *a == "URL" { db.url() } else { a })
            .collect();
        let out = Command::new(ROSTER)
            .env_remove("ROSTER_DB")
            .args(&run)
            .stdin(Stdio::null())
            .output()
            .expect("run roster");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed a result");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(!stderr.contains("hunt"), "{args:?}: {stderr}");
        let message = stderr
            .trim_end()
            .strip_prefix("roster: ")
            .unwrap_or_else(|| panic!("{stderr:?}"));
        let input: Vec<String> = args.iter().map(|a| shell_word(a)).collect();
        let row = format!(
            "| {} | {} | {code} |",
            code_span(&format!("roster {}", input.join(" "))),
            code_span(message)
        );
        if !readme.contains(&row) {
            missing.push(row);
        }
    }
    assert!(
        missing.is_empty(),
        "README.md's PostgreSQL bad input table lacks these rows (or says something else):\n{}",
        missing.join("\n")
    );
    // Nothing was changed by any of them.
    let claims: Value = serde_json::from_str(&db.ok(&["--json", "claims"])).expect("claims");
    assert_eq!(claims.as_array().map(Vec::len), Some(1), "{claims}");
    assert_eq!(
        db.ok(&["sql", "SELECT count(*) AS n FROM agents"]),
        "n\n1\n"
    );
}

#[test]
fn the_daemons_ride_out_a_server_restart() {
    let cluster = Cluster::start(false);
    let url = cluster.url().to_owned();
    let ok = |args: &[&str]| {
        let out = roster_command(&url, args).output().expect("run roster");
        assert!(
            out.status.success(),
            "roster {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(&["register", "old"]);
    let mut agent = Running::spawn(
        "roster agent",
        roster_command(&url, &["agent", "d1", "--every", "50ms"]),
    );
    agent.expect_line("the agent's first line");
    let mut reaper = Running::spawn(
        "roster reaper",
        roster_command(&url, &["reaper", "--ttl", "1h", "--every", "50ms"]),
    );
    reaper.expect_line("the reaper's first line");
    let mut watch = Running::spawn("roster watch", roster_command(&url, &["watch"]));
    watch.expect_line("the watcher's first line");

    cluster.restart();

    // Both loops met the outage and said so...
    for (daemon, name) in [(&agent, "the agent"), (&reaper, "the reaper")] {
        common::eventually(&format!("{name} reporting a retry"), || {
            daemon.stderr_so_far().contains("will retry").then_some(())
        });
    }
    // ...and each resumes its work on the restarted server.
    ok(&["register", "after"]);
    let line = watch.expect_line("the event after the restart");
    assert!(line.contains("registered: after"), "{line}");
    let mut client = postgres::Client::connect(cluster.url(), postgres::NoTls).expect("connect");
    client
        .batch_execute(
            "UPDATE agents SET last_heartbeat = now() - interval '2 hours' WHERE id = 'old'",
        )
        .expect("age an agent");
    let line = reaper.expect_line("the reaper's verdict");
    assert!(line.ends_with("old went offline"), "{line}");
    let restarted: chrono::DateTime<chrono::Utc> =
        client.query_one("SELECT now()", &[]).expect("now").get(0);
    common::eventually("a heartbeat after the restart", || {
        let seen: chrono::DateTime<chrono::Utc> = client
            .query_one("SELECT last_heartbeat FROM agents WHERE id = 'd1'", &[])
            .expect("d1")
            .get(0);
        (seen > restarted).then_some(())
    });
    for (daemon, name) in [
        (agent, "roster agent"),
        (reaper, "roster reaper"),
        (watch, "roster watch"),
    ] {
        sigterm(&daemon);
        daemon.finish().expect_success(name);
    }
}

#[test]
fn a_url_that_is_not_utf8_is_a_bad_url_not_a_file() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = std::ffi::OsStr::from_bytes(b"postgres://roster:hunter2@127.0.0.1:1/db\xff");
    for (args, code) in [(&["list"][..], 2), (&["register", "x"][..], 2)] {
        let out = Command::new(ROSTER)
            .env_remove("ROSTER_DB")
            .current_dir(dir.path())
            .arg("--db")
            .arg(url)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run roster");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.starts_with("roster: invalid url"), "{stderr}");
        assert!(stderr.contains("not UTF-8"), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
    // Nothing was created where a file of that name would go.
    assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
}

#[test]
fn copy_to_names_its_own_flag_and_never_shows_a_password() {
    let file = Db::file();
    file.ok(&["register", "a"]);
    let Db::File(dir) = &file else {
        unreachable!("a file")
    };
    let from = dir.path().join("roster.db");
    for to in [
        "host=127.0.0.1 port=1 password=hunter2 bogus=1",
        "postgres://roster:hunter2@127.0.0.1:1/db?sslmode=bogus",
    ] {
        let out = Command::new(ROSTER)
            .env_remove("ROSTER_DB")
            .args(["copy", "--from"])
            .arg(&from)
            .args(["--to", to])
            .stdin(Stdio::null())
            .output()
            .expect("run roster");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{to}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{to}: {stderr}");
        assert!(stderr.contains("--to"), "{to}: {stderr}");
        assert!(!stderr.contains("--db"), "{to}: {stderr}");
    }
    // And a missing file names --from.
    let out = Command::new(ROSTER)
        .env_remove("ROSTER_DB")
        .args(["copy", "--from"])
        .arg(dir.path().join("typo.db"))
        .args(["--to", "postgres://roster@127.0.0.1:1/db"])
        .stdin(Stdio::null())
        .output()
        .expect("run roster");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(
        stderr.contains("no registry at") && stderr.contains("check --from"),
        "{stderr}"
    );
    assert!(!stderr.contains("--db"), "{stderr}");
    assert!(!dir.path().join("typo.db").exists());
}
