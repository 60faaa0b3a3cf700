//! The `roster` command, driven as a user would: real processes, real files,
//! exit codes, stderr, `--json` parsed back, signals.
//!
//! The long-running subcommands are known to be up when they printed their
//! first line; nothing here waits for time to pass.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::{ROSTER, Running, sigterm};
use roster::{AgentInfo, AgentRegistry, AgentStatus, SqliteRegistry};

struct Shell {
    dir: tempfile::TempDir,
}

impl Shell {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("roster.db")
    }

    /// `roster --db <db> args...`
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(ROSTER);
        cmd.arg("--db")
            .arg(self.db())
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("ROSTER_DB")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run roster")
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "roster {args:?} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Runs and expects exit `code` with one line on stderr containing
    /// `message`; returns that line.
    fn fails(&self, args: &[&str], code: i32, message: &str) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "roster {args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr:?}");
        assert!(stderr.starts_with("roster: "), "{stderr}");
        assert!(stderr.contains(message), "{stderr:?} lacks {message:?}");
        stderr
    }

    fn json<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> T {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("JSON output")
    }
}

#[test]
fn the_registry_from_the_shell() {
    let sh = Shell::new();
    let out = sh.ok(&[
        "register",
        "builder-1",
        "--name",
        "Builder one",
        "--cap",
        "rust",
        "--cap",
        "linux",
        "--max-load",
        "2",
    ]);
    assert!(out.starts_with("registered builder-1\n"), "{out}");
    assert!(out.contains("load           0/2"), "{out}");
    sh.ok(&[
        "register",
        "gpu-1",
        "--cap",
        "cuda",
        "--max-load",
        "1",
        "--status",
        "busy",
    ]);

    let agent: AgentInfo = sh.json(&["get", "builder-1"]);
    assert_eq!(agent.name, "Builder one");
    assert_eq!(agent.capabilities, ["rust", "linux"]);
    assert_eq!((agent.current_load, agent.max_load), (0, 2));
    let gpu: AgentInfo = sh.json(&["get", "gpu-1"]);
    assert_eq!(
        (gpu.name.as_str(), gpu.status),
        ("gpu-1", AgentStatus::Busy)
    );

    let table = sh.ok(&["list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ID"), "{table}");
    assert!(
        lines[1].starts_with("builder-1  Builder one  available  0/2"),
        "{table}"
    );
    assert!(
        lines[2].contains("busy") && lines[2].contains("now"),
        "{table}"
    );

    let claimed: AgentInfo = sh.json(&["claim", "--label", "rust"]);
    assert_eq!(
        (claimed.id.as_str(), claimed.current_load),
        ("builder-1", 1)
    );
    assert_eq!(
        sh.ok(&["claim", "--label", "cuda", "--priority", "critical"]),
        "claimed a slot on gpu-1 (load 1/1)\n"
    );
    assert_eq!(
        sh.ok(&["release", "gpu-1"]),
        "released a slot on gpu-1 (load 0/1)\n"
    );

    let busy: Vec<AgentInfo> = sh.json(&["list", "--status", "busy"]);
    assert_eq!(busy.len(), 1);
    let rusty: Vec<AgentInfo> = sh.json(&["list", "--cap", "rust", "--cap", "linux"]);
    assert_eq!(rusty[0].id, "builder-1");

    assert_eq!(sh.ok(&["heartbeat", "gpu-1"]), "heartbeat gpu-1 (busy)\n");
    assert_eq!(
        sh.ok(&["reap", "--ttl", "1h"]),
        "nobody was silent for more than 1h\n"
    );
    let reaped: Vec<String> = sh.json(&["reap", "--ttl", "0s"]);
    assert_eq!(reaped, ["builder-1", "gpu-1"]);
    let revived: AgentInfo = sh.json(&["heartbeat", "builder-1"]);
    assert_eq!(revived.status, AgentStatus::Available);

    assert_eq!(sh.ok(&["deregister", "gpu-1"]), "deregistered gpu-1\n");
    let left: Vec<AgentInfo> = sh.json(&["list"]);
    assert_eq!(left.len(), 1);
    let gone: serde_json::Value = sh.json(&["deregister", "builder-1"]);
    assert_eq!(gone, serde_json::json!({ "deregistered": "builder-1" }));
    assert_eq!(sh.ok(&["list"]), "no agents\n");
}

#[test]
fn errors_have_their_own_exit_codes_and_one_line() {
    let sh = Shell::new();
    sh.ok(&["register", "a", "--cap", "x", "--max-load", "1"]);
    sh.fails(&["get", "ghost"], 3, "agent not found: ghost");
    sh.fails(&["heartbeat", "ghost"], 3, "agent not found: ghost");
    sh.fails(
        &["claim", "--label", "nobody-has-this"],
        4,
        "no eligible agent for task",
    );
    sh.fails(&["release", "a"], 5, "agent a holds no load to release");
    sh.fails(&["list", "--bogus"], 2, "unexpected argument '--bogus'");
    sh.fails(&["get"], 2, "<ID>");
    sh.fails(
        &["reap", "--ttl", "soon"],
        2,
        "expected a number with a unit, e.g. 30s",
    );
    sh.fails(&["claim", "--priority", "urgent"], 2, "invalid priority");
    sh.fails(
        &["register", "b", "--cap", ""],
        2,
        "invalid capabilities: must not be empty",
    );
    sh.fails(
        &["register", "c", "--load", "3", "--max-load", "2"],
        2,
        "invalid current_load",
    );
    sh.fails(&["list", "--status", "sleeping"], 2, "invalid status");
    // Nothing was changed by the failures.
    let agents: Vec<AgentInfo> = sh.json(&["list"]);
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].current_load, 0);

    let not_db = sh.dir.path().join("notes.txt");
    std::fs::write(
        &not_db,
        "not a database at all, just some notes\n".repeat(100),
    )
    .expect("write");
    let out = Command::new(ROSTER)
        .arg("--db")
        .arg(&not_db)
        .arg("list")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an SQLite database"));
}

#[test]
fn sql_is_read_only_unless_write_is_given() {
    let sh = Shell::new();
    sh.ok(&["register", "a", "--cap", "x", "--max-load", "3"]);
    sh.ok(&["register", "b", "--status", "offline"]);
    let table = sh.ok(&[
        "sql",
        "SELECT status, count(*) AS agents FROM agents GROUP BY status ORDER BY status",
    ]);
    assert_eq!(table, "status     agents\navailable  1\noffline    1\n");
    sh.fails(&["sql", "DELETE FROM agents"], 2, "read-only; add --write");
    sh.fails(&["sql", "SELEKT 1"], 2, "invalid sql");
    sh.fails(
        &["sql", "--write", "UPDATE agents SET status = 'sleeping'"],
        2,
        "CHECK constraint failed",
    );
    let agents: Vec<AgentInfo> = sh.json(&["list"]);
    assert_eq!(agents.len(), 2, "nothing was deleted");
    sh.ok(&["sql", "--write", "DELETE FROM agents WHERE id = 'b'"]);
    let rows: serde_json::Value =
        sh.json(&["sql", "SELECT id, max_load, NULL AS empty FROM agents"]);
    assert_eq!(
        rows,
        serde_json::json!({ "columns": ["id", "max_load", "empty"], "rows": [["a", 3, null]] })
    );
}

#[test]
fn the_database_comes_from_the_environment_then_the_current_directory() {
    let sh = Shell::new();
    let elsewhere = sh.dir.path().join("elsewhere.db");
    let out = Command::new(ROSTER)
        .args(["register", "env-agent"])
        .env("ROSTER_DB", &elsewhere)
        .current_dir(sh.dir.path())
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(elsewhere.exists());
    let out = Command::new(ROSTER)
        .args(["register", "cwd-agent"])
        .env_remove("ROSTER_DB")
        .current_dir(sh.dir.path())
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(sh.dir.path().join("roster.db").exists());
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    for sub in [
        "register",
        "deregister",
        "get",
        "heartbeat",
        "release",
        "list",
        "reap",
        "claim",
        "agent",
        "reaper",
        "sql",
        "demo",
    ] {
        let out = Command::new(ROSTER)
            .args([sub, "--help"])
            .output()
            .expect("run");
        assert!(out.status.success(), "{sub} --help");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("Example"),
            "{sub} --help has no example:\n{help}"
        );
    }
}

#[test]
fn the_readme_shows_the_real_help() {
    let out = Command::new(ROSTER)
        .arg("--help")
        .env_remove("ROSTER_DB")
        .output()
        .expect("run");
    let help = String::from_utf8(out.stdout).expect("utf-8");
    let readme = include_str!("../README.md");
    assert!(
        readme.contains(&format!("```text\n$ roster --help\n{help}```")),
        "README.md must show the output of `roster --help` exactly:\n{help}"
    );
}

/// The rest of a line of `agent` or `reaper` in text mode, after the time
/// it starts with: RFC 3339, in UTC (`Z`), to the millisecond, and close to
/// now.
fn after_stamp(line: &str) -> &str {
    let (stamp, rest) = line.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
    assert!(stamp.ends_with('Z') && stamp.len() == 24, "{line:?}");
    let time = chrono::DateTime::parse_from_rfc3339(stamp)
        .unwrap_or_else(|e| panic!("{stamp:?} is not RFC 3339: {e}"));
    let off = (chrono::Utc::now() - time.to_utc()).abs();
    assert!(off < chrono::TimeDelta::hours(1), "{stamp} is not now");
    rest
}

/// Starts a long-running subcommand and returns it with its first line,
/// which it prints once it is up.
fn start(sh: &Shell, args: &[&str]) -> (Running, String) {
    let mut daemon = Running::spawn(format!("roster {}", args.join(" ")), sh.command(args));
    let first = daemon.expect_line("its first line");
    (daemon, first)
}

#[test]
fn the_agent_sidecar_heartbeats_until_sigterm() -> roster::Result<()> {
    let sh = Shell::new();
    let (agent, first) = start(
        &sh,
        &[
            "agent",
            "side-1",
            "--cap",
            "x",
            "--every",
            "100ms",
            "--deregister-on-exit",
        ],
    );
    assert_eq!(
        after_stamp(&first),
        "agent side-1 registered; heartbeat every 100ms until SIGINT or SIGTERM"
    );
    let registry = SqliteRegistry::open(sh.db())?;
    let registered = registry.get("side-1")?;
    assert_eq!(registered.capabilities, ["x"]);
    // Three heartbeats after the registration, each later than the last.
    let mut seen = vec![registered.last_heartbeat];
    common::eventually("three heartbeats of the sidecar", || {
        let now = registry.get("side-1").expect("side-1 is registered");
        if now.last_heartbeat > seen[seen.len() - 1] {
            seen.push(now.last_heartbeat);
        }
        (seen.len() > 3).then_some(())
    });
    sigterm(&agent);
    let out = agent.finish();
    out.expect_success("the sidecar");
    assert_eq!(out.stdout.len(), 1, "{:?}", out.stdout);
    assert_eq!(
        after_stamp(&out.stdout[0]),
        "agent side-1 stopped (deregistered)"
    );
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    assert!(
        matches!(registry.get("side-1"), Err(roster::Error::NotFound(_))),
        "--deregister-on-exit removed it"
    );
    Ok(())
}

#[test]
fn the_agent_sidecar_stops_when_its_row_is_deregistered() {
    let sh = Shell::new();
    let (agent, first) = start(&sh, &["agent", "side-2", "--every", "50ms"]);
    assert!(
        after_stamp(&first).starts_with("agent side-2 registered"),
        "{first}"
    );
    sh.ok(&["deregister", "side-2"]);
    let out = agent.finish();
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
    assert!(
        out.stderr.contains("side-2 was deregistered"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_reaper_prints_agents_that_go_quiet() {
    let sh = Shell::new();
    sh.ok(&["register", "quiet-1"]);
    sh.ok(&["register", "fresh-1"]);
    // quiet-1 was last seen two hours ago, typed in the documented format.
    sh.ok(&[
        "sql",
        "--write",
        "UPDATE agents SET last_heartbeat = strftime('%Y-%m-%d %H:%M:%f000000', 'now', '-2 hours') WHERE id = 'quiet-1'",
    ]);
    // It says it started, then its first reap marks quiet-1 offline.
    let (mut reaper, first) = start(&sh, &["--json", "reaper", "--ttl", "1h", "--every", "50ms"]);
    let started: serde_json::Value = serde_json::from_str(&first).expect("a JSON document");
    assert_eq!(
        (&started["event"], &started["ttl"], &started["every"]),
        (&"started".into(), &"1h".into(), &"50ms".into())
    );
    let line = reaper.expect_line("quiet-1 going offline");
    let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON document");
    assert_eq!(event["event"], "offline");
    assert_eq!(event["id"], "quiet-1");
    sigterm(&reaper);
    let out = reaper.finish();
    out.expect_success("the reaper");
    assert!(
        out.stdout.is_empty(),
        "only quiet-1 went quiet: {:?}",
        out.stdout
    );
    let agents: Vec<AgentInfo> = sh.json(&["list"]);
    let statuses: Vec<(&str, AgentStatus)> =
        agents.iter().map(|a| (a.id.as_str(), a.status)).collect();
    assert_eq!(
        statuses,
        [
            ("fresh-1", AgentStatus::Available),
            ("quiet-1", AgentStatus::Offline)
        ]
    );
}

#[test]
fn the_demo_completes_and_cleans_up() {
    let sh = Shell::new();
    let demo_db = sh.dir.path().join("demo.db");
    let out = Command::new(ROSTER)
        .arg("--db")
        .arg(&demo_db)
        .arg("demo")
        .env_remove("ROSTER_DB")
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "all 4 registered",
        "-> builder-1 (load 1/2)",
        "killed the gpu-1 process with SIGKILL",
        "reaper: gpu-1 went offline",
        "reads exactly the same state",
        "sqlite3 ",
        "gpu-1      offline",
    ] {
        assert!(
            stdout.contains(step),
            "the demo did not show {step:?}:\n{stdout}"
        );
    }
    // Its processes are gone: no process has the file open any more, so
    // nobody heartbeats into it.
    let holders = common::processes_holding(&demo_db);
    assert!(
        holders.is_empty(),
        "processes {holders:?} outlived the demo and hold its file"
    );
    // The look through /proc does see a holder: this process, once it opens
    // the file.
    let reader = SqliteRegistry::open(&demo_db).expect("open the demo's file");
    assert_eq!(reader.list().expect("list").len(), 4);
    // (A child another test forks in this moment may briefly hold a copy of
    // the descriptor until it execs, so only this process is looked for.)
    assert!(
        common::processes_holding(&demo_db).contains(&std::process::id()),
        "this process holds the file now"
    );
    drop(reader);

    // A file the user named is never overwritten.
    sh.ok(&["register", "precious"]);
    sh.fails(&["demo"], 2, "needs a fresh file");
    let kept: Vec<AgentInfo> = sh.json(&["list"]);
    assert_eq!(kept.len(), 1);
}

/// A statement that writes many agents in one go: enough pages for the -wal
/// file to outgrow a small file size limit.
const MANY_AGENTS: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) \
     INSERT INTO agents (id, name, status, last_heartbeat, current_load, max_load) \
     SELECT printf('agent-%05d', i), printf('a fairly long name for agent %d', i), 'available', \
     '2026-01-01 00:00:00.000000000', 0, 0 FROM n";

#[test]
fn a_storage_failure_is_exit_code_1_not_bad_input_nor_unusable() {
    let sh = Shell::new();
    sh.ok(&["register", "a"]);
    // The file size limit (in KiB) lets the registry be read but not the
    // -wal file grow: writes past it fail with EFBIG, as on a full disk,
    // once SIGXFSZ is ignored (an ignored signal stays ignored across exec).
    let mut limited = Command::new("bash");
    limited
        .arg("-c")
        .arg(r#"trap "" XFSZ; ulimit -f 200; exec "$@""#)
        .arg("bash")
        .arg(ROSTER)
        .arg("--db")
        .arg(sh.db())
        .args(["sql", "--write", MANY_AGENTS])
        .env_remove("ROSTER_DB");
    let out = limited
        .output()
        .expect("run roster under a file size limit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("roster: database error: "), "{stderr}");
    assert!(!stderr.contains("invalid sql"), "{stderr}");
    // Nothing was written, and the file is still a good registry.
    let agents: Vec<AgentInfo> = sh.json(&["list"]);
    assert_eq!(agents.len(), 1);
}

/// A `sqlite3` shell that holds the registry's write lock (`BEGIN
/// IMMEDIATE`) until it is killed; returned once it said so.
fn hold_write_lock(db: &std::path::Path) -> Running {
    let mut command = Command::new("sqlite3");
    command.arg("-batch").arg(db);
    let mut shell = Running::spawn("sqlite3 holding the write lock", command);
    shell.send(".timeout 10000");
    shell.send("BEGIN IMMEDIATE;");
    shell.send(".print locked");
    assert_eq!(shell.expect_line("the lock"), "locked");
    shell
}

/// Overwrites, in place, the registry file and its -wal and -shm with text
/// that is no database.
fn overwrite_with_garbage(db: &std::path::Path) {
    use std::io::Write as _;
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        let size = std::fs::metadata(&path).expect("registry file").len();
        let garbage = b"not a database any more\n".repeat(size as usize / 24 + 1);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut file| file.write_all(&garbage))
            .expect("overwrite");
    }
}

/// The documented heartbeat format, `ago` in the past (e.g. `-2 hours`).
fn heartbeat_back(id: &str, ago: &str) -> String {
    format!(
        "UPDATE agents SET last_heartbeat = strftime('%Y-%m-%d %H:%M:%f000000', 'now', '{ago}') WHERE id = '{id}'"
    )
}

/// While the shell holds the lock, the daemon cannot be writing, so the
/// garbage lands whole; once the shell is gone, the daemon's next
/// transaction finds the file changed under it and reads the garbage.
fn turn_to_garbage(db: &std::path::Path) {
    let shell = hold_write_lock(db);
    overwrite_with_garbage(db);
    shell.kill();
}

/// Waits for a daemon that should stop by itself, printing nothing more on
/// standard output; fails after [`common::PATIENCE`] if it goes on.
fn stops_by_itself(mut daemon: Running) -> common::Finished {
    if let Some(line) = daemon.next_line() {
        panic!("the daemon went on: {line}");
    }
    daemon.finish()
}

#[test]
fn daemons_stop_with_exit_code_7_when_their_file_turns_to_garbage() {
    let sh = Shell::new();
    let (agent, _) = start(&sh, &["agent", "side-3", "--every", "20ms"]);
    // Its registration is in the -wal file: garbage there changes what the
    // sidecar saw last.
    turn_to_garbage(&sh.db());
    let out = stops_by_itself(agent);
    assert_eq!(out.status.code(), Some(7), "{}", out.stderr);
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("roster: heartbeat of side-3 failed: ") && last.ends_with("; stopping"),
        "{}",
        out.stderr
    );

    let sh = Shell::new();
    sh.ok(&["register", "someone"]);
    let (mut reaper, _) = start(&sh, &["reaper", "--ttl", "1h", "--every", "20ms"]);
    // Once the reaper printed that it marked someone offline, it has read
    // and written the -wal file that the garbage then replaces.
    sh.ok(&["sql", "--write", &heartbeat_back("someone", "-2 hours")]);
    let line = reaper.expect_line("someone going offline");
    assert!(line.ends_with(" someone went offline"), "{line}");
    turn_to_garbage(&sh.db());
    let out = stops_by_itself(reaper);
    assert_eq!(out.status.code(), Some(7), "{}", out.stderr);
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("roster: reap failed: ") && last.ends_with("; stopping"),
        "{}",
        out.stderr
    );
}
