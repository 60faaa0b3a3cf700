//! The `roster` command, driven as a user would: real processes, real files,
//! exit codes, stderr, `--json` parsed back, signals.
//!
//! The long-running subcommands are known to be up when they printed their
//! first line; nothing here waits for time to pass.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::readme::{code_span, shell_word};
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

    let claimed: serde_json::Value = sh.json(&["claim", "--label", "rust"]);
    let agent: AgentInfo = serde_json::from_value(claimed["agent"].clone()).expect("an agent");
    assert_eq!((agent.id.as_str(), agent.current_load), ("builder-1", 1));
    assert_eq!(claimed["agent_id"], "builder-1");
    assert_eq!(claimed["token"], 1);
    assert_eq!(
        sh.ok(&[
            "claim",
            "--label",
            "cuda",
            "--priority",
            "critical",
            "--task-id",
            "render-1"
        ]),
        "claimed task render-1 on gpu-1 (load 1/1, token 2)\n"
    );
    assert_eq!(
        sh.ok(&["release", "render-1", "--token", "2"]),
        "released task render-1 on gpu-1 (load 0/1, token 2)\n"
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
    sh.fails(
        &["release", "a"],
        9,
        "no claim of task a is held (released or recovered already)",
    );
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
        "list",
        "reap",
        "claim",
        "release",
        "renew",
        "claims",
        "recover",
        "agent",
        "reaper",
        "drain",
        "sql",
        "demo",
        "completions",
        "man",
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
    // In this order: the crash scene shows the task taken back and
    // dispatched again, and the dead run's token refused.
    let mut rest = stdout.as_ref();
    for step in [
        "all 4 registered",
        "train-1 [cuda] high            -> gpu-1 (load 1/1, token 3)",
        "killed the gpu-1 process with SIGKILL while it ran train-1",
        "reaper: gpu-1 went offline",
        "reaper: task train-1 taken back from gpu-1 (agent_offline, token 3)",
        "train-1 [cuda] -> waits: the only cuda agent is offline",
        "restarted the gpu-1 process",
        "train-1 dispatched again -> gpu-1 (load 1/1, token 8)",
        "the crashed run's token 3 is stale",
        "reads exactly the same state",
        "sqlite3 ",
        "gpu-1      offline  1             1         train-1",
    ] {
        let Some(at) = rest.find(step) else {
            panic!("the demo did not show {step:?} (in this order):\n{stdout}");
        };
        rest = &rest[at + step.len()..];
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
    let held: Vec<(String, u64)> = reader
        .claims(Some("gpu-1"))
        .expect("claims")
        .into_iter()
        .map(|c| (c.task_id, c.token))
        .collect();
    assert_eq!(held, [("train-1".to_owned(), 8)]);
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
    assert_eq!(after_stamp(&line), "someone went offline");
    turn_to_garbage(&sh.db());
    let out = stops_by_itself(reaper);
    assert_eq!(out.status.code(), Some(7), "{}", out.stderr);
    let last = out.stderr.lines().last().unwrap_or_default();
    // Each round reaps, then recovers: whichever reads the garbage first
    // stops the reaper.
    assert!(
        (last.starts_with("roster: reap failed: ") || last.starts_with("roster: recover failed: "))
            && last.ends_with("; stopping"),
        "{}",
        out.stderr
    );
}

// ------------------------------------------------------- the bad input catalogue

/// One bad input: the arguments, the exit code and the first line on stderr
/// (after `roster: `), each listed in the README's "Bad input" table.
struct BadInput {
    args: &'static [&'static str],
    code: i32,
}

/// Every bad input the README lists, run in a directory whose `roster.db`
/// holds one agent, `a`, of max load 1, whose slot holds the task `held`
/// under token 2 (its first claim, token 1, was released).
const BAD_INPUTS: &[BadInput] = &[
    BadInput {
        args: &["register", "a", "--max-load", "-1"],
        code: 2,
    },
    BadInput {
        args: &["register", "a", "--load", "-3"],
        code: 2,
    },
    BadInput {
        args: &["register", "a", "--max-load", "4294967296"],
        code: 2,
    },
    BadInput {
        args: &["register", "a", "--max-load", "four"],
        code: 2,
    },
    BadInput {
        args: &["register", ""],
        code: 2,
    },
    BadInput {
        args: &["register", "a\u{200b}b"],
        code: 2,
    },
    BadInput {
        args: &["register", "b", "--load", "3", "--max-load", "2"],
        code: 2,
    },
    BadInput {
        args: &["agent", "a", "--every", "0"],
        code: 2,
    },
    BadInput {
        args: &["agent", "a", "--every", "300000000000y"],
        code: 2,
    },
    BadInput {
        args: &["agent", "a", "--keep-on-exit", "--deregister-on-exit"],
        code: 2,
    },
    BadInput {
        args: &["reaper", "--ttl", "30s", "--every", "0"],
        code: 2,
    },
    BadInput {
        args: &["reap", "--ttl", "300000000000y"],
        code: 2,
    },
    BadInput {
        args: &["reap", "--ttl", "-5s"],
        code: 2,
    },
    BadInput {
        args: &["reap", "--ttl", "soon"],
        code: 2,
    },
    BadInput {
        args: &["--busy-timeout", "25d", "list"],
        code: 2,
    },
    BadInput {
        args: &["sql", ""],
        code: 2,
    },
    BadInput {
        args: &["sql", ";"],
        code: 2,
    },
    BadInput {
        args: &["sql", "-- just a comment"],
        code: 2,
    },
    BadInput {
        args: &["sql", "SELEKT 1"],
        code: 2,
    },
    BadInput {
        args: &["sql", "DELETE FROM agents"],
        code: 2,
    },
    BadInput {
        args: &["sql", "--timeout", "-1s", "SELECT 1"],
        code: 2,
    },
    BadInput {
        args: &["list", "--status", "sleeping"],
        code: 2,
    },
    BadInput {
        args: &["list", "--bogus"],
        code: 2,
    },
    BadInput {
        args: &["claim", "--priority", "urgent"],
        code: 2,
    },
    BadInput {
        args: &["claim", "--task-id", "a\u{200b}b"],
        code: 2,
    },
    BadInput {
        args: &["claim", "--lease", "0"],
        code: 2,
    },
    BadInput {
        args: &["claim", "--lease", "300000000000y"],
        code: 2,
    },
    BadInput {
        args: &["renew", "held", "--lease", "0"],
        code: 2,
    },
    BadInput {
        args: &["release", "held", "--token", "abc"],
        code: 2,
    },
    BadInput {
        args: &["release", "held", "--token", "0"],
        code: 2,
    },
    BadInput {
        args: &["register", "a", "--meta", "zone"],
        code: 2,
    },
    BadInput {
        args: &["register", "a", "--meta", "zone=1", "--meta", "zone=2"],
        code: 2,
    },
    BadInput {
        args: &["register", "a", "--meta", "=eu"],
        code: 2,
    },
    BadInput {
        args: &["man", "bogus"],
        code: 2,
    },
    BadInput {
        args: &["completions", "tcsh"],
        code: 2,
    },
    BadInput {
        args: &["get", "ghost"],
        code: 3,
    },
    BadInput {
        args: &["--db", "typo.db", "list"],
        code: 7,
    },
    // The held task is refused although no agent is free (a's one slot
    // holds it).
    BadInput {
        args: &["claim", "--task-id", "held"],
        code: 8,
    },
    BadInput {
        args: &["release", "held", "--token", "1"],
        code: 9,
    },
    BadInput {
        args: &["renew", "held", "--lease", "30s", "--token", "1"],
        code: 9,
    },
    BadInput {
        args: &["release", "ghost"],
        code: 9,
    },
];

#[test]
fn every_bad_input_of_the_readme_catalogue_gets_its_message_and_exit_code() {
    let sh = Shell::new();
    sh.ok(&["register", "a", "--max-load", "1"]);
    sh.ok(&["claim", "--task-id", "held"]);
    sh.ok(&["release", "held"]);
    sh.ok(&["claim", "--task-id", "held"]);
    let readme = include_str!("../README.md");
    let mut missing = Vec::new();
    for bad in BAD_INPUTS {
        let out = Command::new(ROSTER)
            .args(bad.args)
            .current_dir(sh.dir.path())
            .env_remove("ROSTER_DB")
            .stdin(Stdio::null())
            .output()
            .expect("run roster");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(bad.code),
            "{:?}: {stderr}",
            bad.args
        );
        assert!(out.stdout.is_empty(), "{:?} printed a result", bad.args);
        assert_eq!(
            stderr.lines().count(),
            1,
            "{:?}: one line: {stderr}",
            bad.args
        );
        let message = stderr
            .trim_end()
            .strip_prefix("roster: ")
            .unwrap_or_else(|| panic!("{stderr:?}"));
        let input: Vec<String> = bad.args.iter().map(|a| shell_word(a)).collect();
        let row = format!(
            "| {} | {} | {} |",
            code_span(&format!("roster {}", input.join(" "))),
            code_span(message),
            bad.code
        );
        if !readme.contains(&row) {
            missing.push(row);
        }
    }
    assert!(
        missing.is_empty(),
        "README.md's bad input table lacks these rows (or says something else):\n{}",
        missing.join("\n")
    );
    // Nothing was changed by any of them, and no file was created.
    let agents: Vec<AgentInfo> = sh.json(&["list"]);
    assert_eq!(agents.len(), 1);
    assert_eq!((agents[0].current_load, agents[0].max_load), (1, 1));
    assert!(agents[0].metadata.is_empty());
    let claims: serde_json::Value = sh.json(&["claims"]);
    assert_eq!(claims.as_array().map(Vec::len), Some(1), "{claims}");
    assert_eq!(
        (
            &claims[0]["task_id"],
            &claims[0]["token"],
            &claims[0]["lease_expires_at"]
        ),
        (&"held".into(), &2.into(), &serde_json::Value::Null)
    );
    assert!(!sh.dir.path().join("typo.db").exists());
}

#[test]
fn bare_roster_prints_its_usage_once() {
    let out = Command::new(ROSTER)
        .env_remove("ROSTER_DB")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(stderr.matches("Usage: roster").count(), 1, "{stderr}");
    assert_eq!(
        stderr.matches("roster: a persistent").count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains("roster: roster:"), "{stderr}");
    assert!(stderr.contains("Exit codes:"), "{stderr}");
    let readme = include_str!("../README.md");
    assert!(
        readme.contains("| `roster` | the usage and the list of subcommands, on stderr | 2 |"),
        "the README's catalogue lists bare `roster`"
    );
}

// ----------------------------------------------------------------- output

/// An endless result: the numbers 1, 2, 3...
const ENDLESS: &str =
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT i FROM n";

/// Runs `roster args` with its standard output on a pipe whose reader is
/// already gone: every write fails with EPIPE.
fn run_into_closed_pipe(sh: &Shell, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    sh.command(args)
        .stdout(writer)
        .output()
        .expect("run roster")
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let sh = Shell::new();
    sh.ok(&["register", "a", "--cap", "x", "--max-load", "1"]);
    for args in [
        &["list"][..],
        &["--json", "list"],
        &["get", "a"],
        &["heartbeat", "a"],
        &["--help"],
        // Without a time limit and without an end: the closed pipe is what
        // stops it.
        &["sql", "--timeout", "0", ENDLESS],
        &["--json", "sql", "--timeout", "0", ENDLESS],
    ] {
        let out = run_into_closed_pipe(&sh, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
    // A claim nobody could read is given back.
    let out = run_into_closed_pipe(&sh, &["claim", "--label", "x"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "the output was closed; the claim could not be printed, so its slot on a was given back"
        ),
        "{stderr}"
    );
    let a: AgentInfo = sh.json(&["get", "a"]);
    assert_eq!(a.current_load, 0);

    // As a shell runs it: more than a pipe holds, and `head` leaves after
    // one line.
    sh.ok(&["sql", "--write", MANY_AGENTS]);
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#""$@" | head -1; exit "${PIPESTATUS[0]}""#)
        .arg("bash")
        .arg(ROSTER)
        .arg("--db")
        .arg(sh.db())
        .arg("list")
        .output()
        .expect("run a pipeline");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

#[test]
fn output_that_cannot_be_written_is_exit_code_1() {
    let sh = Shell::new();
    sh.ok(&["register", "a", "--cap", "x", "--max-load", "1"]);
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full")
    };
    for args in [&["list"][..], &["get", "a"], &["sql", "SELECT 1"]] {
        let out = sh.command(args).stdout(full()).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(
            stderr,
            "roster: cannot write the output: No space left on device (os error 28)\n"
        );
    }
    // The claim took the slot, could not say so, and gave it back.
    let out = sh
        .command(&["--json", "claim", "--label", "x"])
        .stdout(full())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let error: serde_json::Value = serde_json::from_slice(&out.stderr).expect("a JSON error");
    assert_eq!(error["kind"], "io");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.ends_with("so its slot on a was given back")),
        "{error}"
    );
    let a: AgentInfo = sh.json(&["get", "a"]);
    assert_eq!(a.current_load, 0, "the slot was given back");
}

#[test]
fn json_errors_are_one_object_on_stderr() {
    let sh = Shell::new();
    sh.ok(&["register", "a", "--max-load", "1"]);
    sh.ok(&["claim"]);
    for (args, code, kind, message) in [
        (
            &["--json", "get", "ghost"][..],
            3,
            "not_found",
            "agent not found: ghost",
        ),
        (
            &["get", "ghost", "--json"],
            3,
            "not_found",
            "agent not found: ghost",
        ),
        (
            &["--json", "list", "--bogus"],
            2,
            "invalid_input",
            "unexpected argument '--bogus'",
        ),
        (
            &["--json", "reap", "--ttl", "-1s"],
            2,
            "invalid_input",
            "cannot be negative",
        ),
        (
            &["--json", "claim"],
            4,
            "no_capacity",
            "no eligible agent for task",
        ),
        (
            &["--json", "release", "a"],
            9,
            "conflict",
            "no claim of task a is held",
        ),
        (
            &["--json", "sql", "DELETE FROM agents"],
            2,
            "invalid_input",
            "read-only",
        ),
        (
            &["--json", "completions", "bash"],
            2,
            "invalid_input",
            "leave out --json",
        ),
        (
            &["--json", "sql", "--timeout", "50ms", ENDLESS],
            1,
            "interrupted",
            "ran for more than 50ms",
        ),
    ] {
        let out = sh.run(args);
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        if code == 0 {
            continue;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        let error: serde_json::Value = serde_json::from_str(&stderr).expect("one JSON object");
        let keys: Vec<&String> = error.as_object().expect("an object").keys().collect();
        assert_eq!(keys.len(), 3, "{error}");
        assert_eq!(error["exit_code"], code, "{error}");
        assert_eq!(error["kind"], kind, "{error}");
        assert!(
            error["error"].as_str().is_some_and(|e| e.contains(message)),
            "{args:?}: {error}"
        );
    }
    // A file that does not exist, named on the command line.
    let out = Command::new(ROSTER)
        .args(["--json", "--db"])
        .arg(sh.dir.path().join("typo.db"))
        .arg("list")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(7));
    let error: serde_json::Value = serde_json::from_slice(&out.stderr).expect("one JSON object");
    assert_eq!(error["kind"], "unusable");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("no registry at "))
    );
}

#[test]
fn the_busy_timeout_is_a_global_flag_and_the_busy_error_names_it() {
    let sh = Shell::new();
    sh.ok(&["register", "a"]);
    let shell = hold_write_lock(&sh.db());
    let message = sh.fails(
        &["--busy-timeout", "100ms", "register", "b"],
        6,
        "database busy",
    );
    assert!(message.contains("for more than 100ms"), "{message}");
    assert!(message.contains("--busy-timeout"), "{message}");
    // After the subcommand too, as every global flag.
    sh.fails(
        &["heartbeat", "a", "--busy-timeout", "0s"],
        6,
        "--busy-timeout",
    );
    shell.kill();
    sh.ok(&[
        "register",
        "b",
        "--busy-timeout",
        "24days 20h 31m 23s 647ms",
    ]);
}

#[test]
fn sql_takes_comments_as_sql_and_reports_changes() {
    let sh = Shell::new();
    sh.ok(&["register", "a"]);
    sh.ok(&["register", "b"]);
    assert_eq!(
        sh.ok(&["sql", "-- ids\nSELECT id FROM agents ORDER BY id"]),
        "id\na\nb\n"
    );
    assert_eq!(
        sh.ok(&["sql", "--write", "UPDATE agents SET max_load = 2"]),
        "2 rows changed\n"
    );
    assert_eq!(
        sh.ok(&[
            "sql",
            "--write",
            "UPDATE agents SET max_load = 3 WHERE id = 'a' RETURNING id, max_load"
        ]),
        "id  max_load\na   3\n1 row changed\n"
    );
    let json: serde_json::Value = sh.json(&["sql", "--write", "DELETE FROM agents WHERE id = 'b'"]);
    assert_eq!(
        json,
        serde_json::json!({ "columns": [], "rows": [], "changes": 1 })
    );
    // Read-only: no count of changes, and an empty result still has its
    // header.
    assert_eq!(sh.ok(&["sql", "SELECT id FROM agents WHERE 0"]), "id\n");
    let json: serde_json::Value = sh.json(&["sql", "SELECT id FROM agents WHERE 0"]);
    assert_eq!(json, serde_json::json!({ "columns": ["id"], "rows": [] }));
}

#[test]
fn sql_aligns_on_its_first_thousand_rows_and_goes_on() {
    let sh = Shell::new();
    sh.ok(&["register", "a"]);
    // 1500 rows; the values past the 1000th are wider than the column.
    let table = sh.ok(&[
        "sql",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1500) \
         SELECT CASE WHEN i > 1000 THEN 'wide-' || i ELSE i END AS v, 'x' AS w FROM n",
    ]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 1501);
    assert_eq!(lines[0], "v     w");
    assert_eq!(lines[1], "1     x");
    assert_eq!(lines[1000], "1000  x");
    assert_eq!(lines[1001], "wide-1001  x");
    assert_eq!(lines[1500], "wide-1500  x");
}

#[test]
fn sql_stops_at_its_time_limit_and_at_ctrl_c() {
    let sh = Shell::new();
    sh.ok(&["register", "a"]);
    sh.fails(
        &["sql", "--timeout", "100ms", ENDLESS],
        1,
        "interrupted: the statement ran for more than 100ms",
    );
    // Streaming: the header comes while the statement still runs; Ctrl-C
    // (SIGINT) then stops it.
    let (mut endless, first) = start(&sh, &["sql", "--timeout", "0", ENDLESS]);
    assert_eq!(first, "i");
    assert_eq!(endless.expect_line("the first row"), "1");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(endless.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let out = endless.finish();
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "roster: interrupted: the statement was cancelled; nothing was changed\n"
    );
}

#[test]
fn tables_count_wide_characters_as_two_columns() {
    let sh = Shell::new();
    sh.ok(&["register", "a", "--name", "漢字"]);
    sh.ok(&["register", "b", "--name", "🦀"]);
    sh.ok(&["register", "c", "--name", "plain"]);
    assert_eq!(
        sh.ok(&["sql", "SELECT name, id FROM agents ORDER BY id"]),
        "name   id\n漢字   a\n🦀     b\nplain  c\n"
    );
    let list = sh.ok(&["list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert!(lines[0].starts_with("ID  NAME   STATUS"), "{list}");
    assert!(lines[1].starts_with("a   漢字   available"), "{list}");
    assert!(lines[2].starts_with("b   🦀     available"), "{list}");
    assert!(lines[3].starts_with("c   plain  available"), "{list}");
}

// ----------------------------------------------------------------- daemons

#[test]
fn daemons_stop_with_exit_code_7_when_their_file_is_deleted_or_replaced() {
    // Deleted under a sidecar.
    let sh = Shell::new();
    let (agent, _) = start(&sh, &["agent", "side-4", "--every", "20ms"]);
    std::fs::remove_file(sh.db()).expect("delete the registry file");
    let out = stops_by_itself(agent);
    assert_eq!(out.status.code(), Some(7), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        format!(
            "roster: the registry file {} was deleted while this process was using it; stopping (restart it to use the file now at that path)\n",
            sh.db().display()
        )
    );

    // Replaced under a reaper, by another registry renamed over it.
    let sh = Shell::new();
    sh.ok(&["register", "someone"]);
    let (reaper, _) = start(&sh, &["--json", "reaper", "--ttl", "1h", "--every", "20ms"]);
    let other = sh.dir.path().join("other.db");
    drop(SqliteRegistry::open(&other).expect("another registry"));
    std::fs::rename(&other, sh.db()).expect("replace the registry file");
    let out = stops_by_itself(reaper);
    assert_eq!(out.status.code(), Some(7), "{}", out.stderr);
    let error: serde_json::Value = serde_json::from_str(&out.stderr).expect("a JSON error");
    assert_eq!(error["kind"], "unusable");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("was replaced by another file")),
        "{error}"
    );
}

#[test]
fn a_stopped_sidecar_marks_its_agent_offline_unless_told_otherwise() -> roster::Result<()> {
    use nix::sys::signal::Signal;
    for (flags, signal, left) in [
        (&[][..], Signal::SIGTERM, Some(AgentStatus::Offline)),
        (&[][..], Signal::SIGINT, Some(AgentStatus::Offline)),
        (
            &["--keep-on-exit"][..],
            Signal::SIGTERM,
            Some(AgentStatus::Available),
        ),
        (&["--deregister-on-exit"][..], Signal::SIGINT, None),
    ] {
        let sh = Shell::new();
        let mut args = vec!["agent", "side-5", "--every", "20ms"];
        args.extend_from_slice(flags);
        let (agent, _) = start(&sh, &args);
        let registry = SqliteRegistry::open(sh.db())?;
        let running = registry.get("side-5")?;
        assert_eq!(running.status, AgentStatus::Available);
        assert_eq!(running.pid, Some(agent.id()), "the sidecar says who it is");
        assert!(running.host.is_some() && running.started_at.is_some());
        let pid = nix::unistd::Pid::from_raw(i32::try_from(agent.id()).expect("pid"));
        nix::sys::signal::kill(pid, signal).expect("signal");
        let out = agent.finish();
        out.expect_success("the sidecar");
        let done = match left {
            Some(AgentStatus::Offline) => "marked offline",
            Some(_) => "left as it is",
            None => "deregistered",
        };
        assert_eq!(out.stdout.len(), 1, "{:?}", out.stdout);
        assert_eq!(
            after_stamp(&out.stdout[0]),
            format!("agent side-5 stopped ({done})")
        );
        match registry.get("side-5") {
            Ok(agent) => assert_eq!(Some(agent.status), left, "{flags:?}"),
            Err(roster::Error::NotFound(_)) => assert_eq!(left, None, "{flags:?}"),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[test]
fn drain_stops_new_claims_until_undone() {
    let sh = Shell::new();
    sh.ok(&["register", "a", "--cap", "x", "--max-load", "2"]);
    sh.ok(&["claim", "--label", "x"]);
    assert_eq!(
        sh.ok(&["drain", "a"]),
        "drained a: no new claims; it keeps heartbeating and keeps its load (1/2)\n"
    );
    let drained: serde_json::Value = sh.json(&["get", "a"]);
    assert_eq!(drained["drained"], true);
    assert!(
        sh.ok(&["get", "a"])
            .contains("status         available (drained)")
    );
    assert!(sh.ok(&["list"]).contains("available (drained)"));
    sh.fails(&["claim", "--label", "x"], 4, "no eligible agent");
    // A sidecar's re-register does not undo it.
    sh.ok(&["register", "a", "--cap", "x", "--max-load", "2"]);
    sh.fails(&["claim", "--label", "x"], 4, "no eligible agent");
    assert_eq!(
        sh.ok(&["drain", "a", "--undo"]),
        "undrained a: it takes claims again\n"
    );
    let undrained: serde_json::Value = sh.json(&["get", "a"]);
    assert!(
        undrained.get("drained").is_none(),
        "left out when false: {undrained}"
    );
    sh.ok(&["claim", "--label", "x"]);
    sh.fails(&["drain", "ghost"], 3, "agent not found: ghost");
}

#[test]
fn commands_that_only_read_never_create_the_file() {
    let sh = Shell::new();
    for args in [
        &["get", "a"][..],
        &["list"],
        &["sql", "SELECT 1"],
        &["heartbeat", "a"],
        &["deregister", "a"],
        &["release", "a"],
        &["release", "a", "--token", "1"],
        &["renew", "a", "--lease", "1m"],
        &["claims"],
        &["recover"],
        &["drain", "a"],
        &["claim"],
        &["reap", "--ttl", "1s"],
    ] {
        let message = sh.fails(args, 7, "no registry at ");
        assert!(
            message.contains(&sh.db().display().to_string()),
            "{message}"
        );
        assert!(!sh.db().exists(), "{args:?} created the file");
    }
    // Writing commands create it, as before.
    sh.ok(&["sql", "--write", "SELECT 1"]);
    assert!(sh.db().exists());
    std::fs::remove_file(sh.db()).expect("remove");
    sh.ok(&["register", "a"]);
    assert!(sh.db().exists());
}

// ------------------------------------------------- shells, manuals, the demo

#[test]
fn bash_completes_a_subcommand() {
    let sh = Shell::new();
    let script = sh.dir.path().join("roster.bash");
    std::fs::write(&script, sh.ok(&["completions", "bash"])).expect("write the script");
    // What bash does on `roster cl<TAB>`: the completion function, called
    // with the words so far, fills COMPREPLY.
    let complete = |line: &str| -> String {
        let out = Command::new("bash")
            .arg("--norc")
            .arg("-c")
            .arg(
                r#"source "$1"
                read -ra COMP_WORDS <<< "$2"
                [[ "$2" == *" " ]] && COMP_WORDS+=("")
                COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
                COMP_LINE="$2"; COMP_POINT=${#COMP_LINE}
                _roster roster "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
                echo "${COMPREPLY[*]}""#,
            )
            .arg("bash")
            .arg(&script)
            .arg(line)
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    };
    // Both start with `claim`, which bash puts on the line.
    assert_eq!(complete("roster cl"), "claim claims");
    assert_eq!(complete("roster rec"), "recover");
    assert_eq!(complete("roster dr"), "drain");
    assert!(complete("roster agent x --keep").contains("--keep-on-exit"));
    for shell in ["zsh", "fish"] {
        let script = sh.ok(&["completions", shell]);
        assert!(
            script.contains("roster") && script.contains("claim"),
            "{shell}"
        );
    }
}

#[test]
fn the_manual_pages_render_without_warnings() {
    let sh = Shell::new();
    for args in [&["man"][..], &["man", "claim"], &["man", "agent"]] {
        let page = sh.dir.path().join("page.1");
        std::fs::write(&page, sh.ok(args)).expect("write the page");
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&page)
            .env("MANWIDTH", "80")
            .output()
            .expect("man must be installed (apt-get install -y man-db)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: warnings: {stderr}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("SYNOPSIS"), "{text}");
        if args.len() == 2 {
            assert!(text.contains(&format!("roster-{}", args[1])), "{text}");
        } else {
            assert!(
                text.contains("Exit codes:") && text.contains("roster-claim(1)"),
                "{text}"
            );
        }
    }
}

#[test]
fn the_demo_speaks_json_lines_when_asked() {
    let sh = Shell::new();
    let demo_db = sh.dir.path().join("demo.db");
    let out = Command::new(ROSTER)
        .arg("--json")
        .arg("--db")
        .arg(&demo_db)
        .arg("demo")
        .env_remove("ROSTER_DB")
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["step"] == "all 4 registered" && e["elapsed_s"].is_number()),
        "{stdout}"
    );
    let last = events.last().expect("events");
    assert_eq!(
        last["columns"],
        serde_json::json!(["id", "status", "current_load", "max_load", "tasks"])
    );
    assert!(
        events
            .iter()
            .any(|e| e["step"]
                == "reaper: task train-1 taken back from gpu-1 (agent_offline, token 3)"),
        "{stdout}"
    );
    assert!(
        last["rows"].as_array().is_some_and(
            |rows| rows.contains(&serde_json::json!(["gpu-1", "offline", 1, 1, "train-1"]))
        ),
        "{last}"
    );
}

// ----------------------------------------------------------------- claims

/// The claims held, as `roster --json claims` prints them: (task, agent,
/// token).
fn held(sh: &Shell) -> Vec<(String, String, u64)> {
    let claims: Vec<serde_json::Value> = sh.json(&["claims"]);
    claims
        .iter()
        .map(|c| {
            assert!(c.get("agent").is_none(), "no agent in `claims`: {c}");
            (
                c["task_id"].as_str().expect("task_id").to_owned(),
                c["agent_id"].as_str().expect("agent_id").to_owned(),
                c["token"].as_u64().expect("token"),
            )
        })
        .collect()
}

/// An RFC 3339 time of a JSON document.
fn time_of(value: &serde_json::Value) -> chrono::DateTime<chrono::Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is no time"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .to_utc()
}

#[test]
fn claims_are_rows_with_task_ids_tokens_and_leases() {
    let sh = Shell::new();
    sh.ok(&["register", "a", "--cap", "x", "--max-load", "2"]);

    // A claim with a task id and a lease, as JSON.
    let before = chrono::Utc::now();
    let claimed: serde_json::Value = sh.json(&[
        "claim",
        "--task-id",
        "build-42",
        "--label",
        "x",
        "--lease",
        "10m",
    ]);
    let after = chrono::Utc::now();
    let mut keys: Vec<&String> = claimed.as_object().expect("an object").keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "agent",
            "agent_id",
            "claimed_at",
            "lease_expires_at",
            "task_id",
            "token"
        ]
    );
    assert_eq!(
        (&claimed["task_id"], &claimed["agent_id"], &claimed["token"]),
        (&"build-42".into(), &"a".into(), &1.into())
    );
    let claimed_at = time_of(&claimed["claimed_at"]);
    assert!(before <= claimed_at && claimed_at <= after, "{claimed}");
    assert_eq!(
        time_of(&claimed["lease_expires_at"]) - claimed_at,
        chrono::TimeDelta::minutes(10)
    );
    // The agent as `get --json` prints it, with the slot taken.
    let agent: serde_json::Value = sh.json(&["get", "a"]);
    assert_eq!(claimed["agent"], agent);
    assert_eq!(agent["current_load"], 1);

    // Without --task-id and --lease, in text: a new unique id, no lease.
    let line = sh.ok(&["claim", "--label", "x"]);
    let generated = line
        .strip_prefix("claimed task ")
        .and_then(|rest| rest.strip_suffix(" on a (load 2/2, token 2)\n"))
        .unwrap_or_else(|| panic!("{line:?}"));
    assert!(
        generated.starts_with("task-") && generated.len() == 31,
        "{generated}"
    );
    assert_eq!(
        held(&sh),
        [
            ("build-42".to_owned(), "a".to_owned(), 1),
            (generated.to_owned(), "a".to_owned(), 2)
        ]
    );
    let claims: Vec<serde_json::Value> = sh.json(&["claims"]);
    assert_eq!(claims[1]["lease_expires_at"], serde_json::Value::Null);
    let table = sh.ok(&["claims"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("TASK "), "{table}");
    assert!(
        lines[0].ends_with("AGENT  TOKEN  CLAIMED  LEASE"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("build-42 ") && lines[1].ends_with("a      1      now      in 9m"),
        "{table}"
    );
    assert!(lines[2].ends_with("a      2      now      -"), "{table}");
    let none: Vec<serde_json::Value> = sh.json(&["claims", "--agent", "b"]);
    assert!(none.is_empty());
    assert_eq!(sh.ok(&["claims", "--agent", "b"]), "no claims held on b\n");

    // A held task id is refused, although the agent is full, and nothing
    // changes.
    let message = sh.fails(&["claim", "--task-id", "build-42"], 8, "already claimed");
    assert!(message.contains("by agent a (token 1)"), "{message}");
    sh.fails(
        &["claim", "--task-id", "build-42", "--label", "nobody-has-it"],
        8,
        "task build-42 is already claimed",
    );
    sh.fails(&["claim", "--task-id", "build-43"], 4, "no eligible agent");

    // renew moves the lease; a stale token is refused and changes nothing.
    let renewed: serde_json::Value =
        sh.json(&["renew", "build-42", "--lease", "1h", "--token", "1"]);
    assert!(renewed.get("agent").is_none(), "{renewed}");
    assert_eq!(renewed["token"], 1);
    let expiry = time_of(&renewed["lease_expires_at"]);
    assert!(expiry - chrono::Utc::now() > chrono::TimeDelta::minutes(59));
    sh.fails(
        &["renew", "build-42", "--lease", "2h", "--token", "2"],
        9,
        "stale token 2 for task build-42",
    );
    sh.fails(
        &["release", "build-42", "--token", "2"],
        9,
        "stale token 2 for task build-42",
    );
    let claims: Vec<serde_json::Value> = sh.json(&["claims"]);
    assert_eq!(time_of(&claims[0]["lease_expires_at"]), expiry);
    let text = sh.ok(&["renew", generated, "--lease", "30s"]);
    assert!(
        text.starts_with(&format!(
            "renewed task {generated} on a (token 2, lease until "
        )),
        "{text}"
    );

    // The holder's release, then an operator's (without a token).
    let released: serde_json::Value = sh.json(&["release", "build-42", "--token", "1"]);
    assert_eq!(
        (&released["task_id"], &released["token"]),
        (&"build-42".into(), &1.into())
    );
    assert_eq!(released["agent"]["current_load"], 1);
    assert_eq!(
        sh.ok(&["release", generated]),
        format!("released task {generated} on a (load 0/2, token 2)\n")
    );
    sh.fails(&["release", generated], 9, "no claim of task");
    assert!(held(&sh).is_empty());
    assert_eq!(sh.ok(&["claims"]), "no claims held\n");
    // A task id may be claimed again once released, under a new token.
    let again: serde_json::Value = sh.json(&["claim", "--task-id", "build-42"]);
    assert_eq!(again["token"], 3);
}

#[test]
fn recover_takes_back_each_claim_once_with_its_reason() {
    let sh = Shell::new();
    for id in ["gone", "quiet", "fine"] {
        sh.ok(&["register", id, "--cap", id]);
    }
    sh.ok(&["claim", "--task-id", "t-gone", "--label", "gone"]);
    sh.ok(&["claim", "--task-id", "t-quiet", "--label", "quiet"]);
    sh.ok(&[
        "claim",
        "--task-id",
        "t-late",
        "--label",
        "fine",
        "--lease",
        "1h",
    ]);
    sh.ok(&[
        "claim",
        "--task-id",
        "t-fine",
        "--label",
        "fine",
        "--lease",
        "1h",
    ]);
    assert_eq!(sh.ok(&["recover"]), "nothing to recover\n");

    sh.ok(&["deregister", "gone"]);
    sh.ok(&["sql", "--write", &heartbeat_back("quiet", "-2 hours")]);
    sh.ok(&["reap", "--ttl", "1h"]);
    // A lease that ran out, typed in the documented format.
    sh.ok(&[
        "sql",
        "--write",
        "UPDATE claims SET lease_expires_at = strftime('%Y-%m-%d %H:%M:%f000000', 'now', '-1 minute') WHERE task_id = 't-late'",
    ]);
    let recovered: Vec<serde_json::Value> = sh.json(&["recover"]);
    let reasons: Vec<(&str, &str, &str)> = recovered
        .iter()
        .map(|r| {
            (
                r["task_id"].as_str().expect("task_id"),
                r["agent_id"].as_str().expect("agent_id"),
                r["reason"].as_str().expect("reason"),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("t-gone", "gone", "agent_gone"),
            ("t-quiet", "quiet", "agent_offline"),
            ("t-late", "fine", "lease_expired"),
        ]
    );
    for r in &recovered {
        let mut keys: Vec<&String> = r.as_object().expect("an object").keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "agent_id",
                "claimed_at",
                "lease_expires_at",
                "reason",
                "task_id",
                "token"
            ]
        );
    }
    assert_eq!(
        held(&sh),
        [("t-fine".to_owned(), "fine".to_owned(), 4)],
        "the others were taken back"
    );
    assert_eq!(sh.ok(&["recover"]), "nothing to recover\n", "once");
    let quiet: AgentInfo = sh.json(&["get", "quiet"]);
    assert_eq!(quiet.current_load, 0);

    // In text, one line per claim.
    sh.ok(&["sql", "--write", &heartbeat_back("fine", "-2 hours")]);
    sh.ok(&["reap", "--ttl", "1h"]);
    assert_eq!(
        sh.ok(&["recover"]),
        "task t-fine taken back from fine (agent_offline, token 4)\n"
    );
    // The task taken back is free to be claimed again.
    sh.ok(&["heartbeat", "fine"]);
    let again: serde_json::Value = sh.json(&["claim", "--task-id", "t-fine"]);
    assert_eq!(
        (&again["agent_id"], &again["token"]),
        (&"fine".into(), &5.into())
    );
}

#[test]
fn the_reaper_recovers_as_well_as_it_reaps() {
    let sh = Shell::new();
    sh.ok(&["register", "quiet-1", "--cap", "q"]);
    sh.ok(&["register", "fresh-1", "--cap", "f"]);
    sh.ok(&["claim", "--task-id", "t-quiet", "--label", "q"]);
    sh.ok(&["claim", "--task-id", "t-fresh", "--label", "f"]);
    sh.ok(&["sql", "--write", &heartbeat_back("quiet-1", "-2 hours")]);
    let (mut reaper, first) = start(&sh, &["--json", "reaper", "--ttl", "1h", "--every", "50ms"]);
    let started: serde_json::Value = serde_json::from_str(&first).expect("a JSON document");
    assert_eq!(started["event"], "started");
    // Its first round: quiet-1 goes offline, then its claim comes back.
    let offline: serde_json::Value =
        serde_json::from_str(&reaper.expect_line("quiet-1 offline")).expect("JSON");
    assert_eq!(
        (&offline["event"], &offline["id"]),
        (&"offline".into(), &"quiet-1".into())
    );
    let taken: serde_json::Value =
        serde_json::from_str(&reaper.expect_line("t-quiet recovered")).expect("JSON");
    assert_eq!(
        (
            &taken["event"],
            &taken["task_id"],
            &taken["agent_id"],
            &taken["token"],
            &taken["reason"]
        ),
        (
            &"recovered".into(),
            &"t-quiet".into(),
            &"quiet-1".into(),
            &1.into(),
            &"agent_offline".into()
        )
    );
    assert!(taken["time"].is_string() && taken["claimed_at"].is_string());
    // A later round: a deregistered agent's claim.
    sh.ok(&["deregister", "fresh-1"]);
    let gone: serde_json::Value =
        serde_json::from_str(&reaper.expect_line("t-fresh recovered")).expect("JSON");
    assert_eq!(
        (&gone["task_id"], &gone["reason"]),
        (&"t-fresh".into(), &"agent_gone".into())
    );
    sigterm(&reaper);
    let out = reaper.finish();
    out.expect_success("the reaper");
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
    assert!(held(&sh).is_empty());

    // In text, each line starts with the time.
    sh.ok(&["register", "quiet-2", "--cap", "q"]);
    sh.ok(&["claim", "--task-id", "t-2", "--label", "q"]);
    sh.ok(&["sql", "--write", &heartbeat_back("quiet-2", "-2 hours")]);
    let (mut reaper, first) = start(&sh, &["reaper", "--ttl", "1h", "--every", "50ms"]);
    assert!(
        after_stamp(&first)
            .contains("claims of offline or deregistered agents and expired leases are taken back"),
        "{first}"
    );
    assert_eq!(
        after_stamp(&reaper.expect_line("offline")),
        "quiet-2 went offline"
    );
    assert_eq!(
        after_stamp(&reaper.expect_line("recovered")),
        "task t-2 taken back from quiet-2 (agent_offline, token 3)"
    );
    sigterm(&reaper);
    reaper.finish().expect_success("the reaper");
}

// ------------------------------------------------ sidecars and metadata

#[test]
fn a_live_sidecar_keeps_its_agent_unless_replaced() -> roster::Result<()> {
    let sh = Shell::new();
    let registry = SqliteRegistry::open(sh.db())?;
    let (mut first, _) = start(&sh, &["agent", "side-7", "--every", "50ms"]);
    let first_pid = first.id();
    let host = registry
        .get("side-7")?
        .host
        .expect("the sidecar stores its host");

    // A second sidecar for the same id is refused while the first lives
    // (its heartbeat is well within 3 x 1h), and changes nothing.
    let message = sh.fails(&["agent", "side-7", "--every", "1h"], 10, "live sidecar");
    assert!(
        message.contains(&format!(
            "agent side-7 is run by a live sidecar (pid {first_pid} on host {host}, last heartbeat "
        )) && message.contains("pass --replace to take the agent over"),
        "{message}"
    );
    assert_eq!(registry.get("side-7")?.pid, Some(first_pid));
    let out = sh.run(&["--json", "agent", "side-7", "--every", "1h"]);
    assert_eq!(out.status.code(), Some(10));
    let error: serde_json::Value = serde_json::from_slice(&out.stderr).expect("a JSON error");
    assert_eq!(
        (&error["kind"], &error["exit_code"]),
        (&"conflict".into(), &10.into())
    );

    // --replace takes it over; the first sees it at its next round and
    // stops by itself, leaving the agent to the new one.
    let (second, line) = start(&sh, &["agent", "side-7", "--every", "1h", "--replace"]);
    assert!(
        after_stamp(&line).starts_with(&format!(
            "agent side-7 registered; heartbeat every 1h until SIGINT or SIGTERM; took it over from the sidecar with pid {first_pid} on host {host}"
        )),
        "{line}"
    );
    let said = first.expect_line("the first sidecar stepping down");
    assert_eq!(
        after_stamp(&said),
        format!(
            "agent side-7 was taken over by the sidecar with pid {} on host {host}; stopping (left as it is)",
            second.id()
        )
    );
    let out = first.finish();
    out.expect_success("the replaced sidecar");
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "{}",
        out.stderr
    );
    let agent = registry.get("side-7")?;
    assert_eq!(
        (agent.pid, agent.status),
        (Some(second.id()), AgentStatus::Available)
    );

    // A sidecar killed without a word: its pid is dead on this host, so a
    // new one starts at once, without --replace.
    second.kill();
    let (third, _) = start(&sh, &["agent", "side-7", "--every", "1h"]);
    assert_eq!(registry.get("side-7")?.pid, Some(third.id()));
    // Stopped: it marked the agent offline, which is not live either.
    sigterm(&third);
    third.finish().expect_success("the third sidecar");
    assert_eq!(registry.get("side-7")?.status, AgentStatus::Offline);
    let (fourth, _) = start(&sh, &["agent", "side-7", "--every", "1h"]);

    // A live process whose heartbeat is older than 3 x --every (of the new
    // sidecar) no longer counts as running the agent.
    sh.ok(&["sql", "--write", &heartbeat_back("side-7", "-2 hours")]);
    sh.fails(&["agent", "side-7", "--every", "1h"], 10, "live sidecar");
    let (fifth, _) = start(&sh, &["agent", "side-7", "--every", "30m"]);
    assert_eq!(registry.get("side-7")?.pid, Some(fifth.id()));
    // The fourth, stopped before its next round, leaves the agent to the
    // fifth instead of marking it offline.
    sigterm(&fourth);
    let out = fourth.finish();
    out.expect_success("the fourth sidecar");
    assert_eq!(out.stdout.len(), 1, "{:?}", out.stdout);
    assert_eq!(
        after_stamp(&out.stdout[0]),
        "agent side-7 stopped (left as it is: another sidecar took it over)"
    );
    let agent = registry.get("side-7")?;
    assert_eq!(
        (agent.pid, agent.status),
        (Some(fifth.id()), AgentStatus::Available)
    );
    fifth.kill();

    // An agent registered by hand has no sidecar: nothing to refuse.
    sh.ok(&["register", "by-hand"]);
    let (sixth, _) = start(&sh, &["agent", "by-hand", "--every", "1h"]);
    sixth.kill();
    Ok(())
}

#[test]
fn register_and_agent_take_metadata_pairs() -> roster::Result<()> {
    let sh = Shell::new();
    let out = sh.ok(&[
        "register",
        "a",
        "--meta",
        "zone=eu-1",
        "--meta",
        "url=http://h:80/?x=1",
    ]);
    assert!(
        out.contains("metadata       url=http://h:80/?x=1\n"),
        "{out}"
    );
    assert!(out.contains("metadata       zone=eu-1\n"), "{out}");
    let agent: serde_json::Value = sh.json(&["get", "a"]);
    assert_eq!(
        agent["metadata"],
        serde_json::json!({ "url": "http://h:80/?x=1", "zone": "eu-1" })
    );
    // register replaces them.
    sh.ok(&["register", "a", "--meta", "zone=eu-2"]);
    let agent: AgentInfo = sh.json(&["get", "a"]);
    assert_eq!(
        agent.metadata.into_iter().collect::<Vec<_>>(),
        [("zone".to_owned(), "eu-2".to_owned())]
    );
    sh.ok(&["register", "a"]);
    let agent: serde_json::Value = sh.json(&["get", "a"]);
    assert!(
        agent.get("metadata").is_none(),
        "left out when empty: {agent}"
    );

    // The sidecar stores them with its host, pid and start time.
    let (side, _) = start(&sh, &["agent", "s", "--meta", "role=gpu", "--every", "1h"]);
    let registry = SqliteRegistry::open(sh.db())?;
    let stored = registry.get("s")?;
    assert_eq!(stored.metadata.get("role").map(String::as_str), Some("gpu"));
    assert_eq!(stored.pid, Some(side.id()));
    let shown = sh.ok(&["get", "s"]);
    assert!(shown.contains("metadata       role=gpu\n"), "{shown}");
    assert!(
        shown.contains(&format!("pid            {}\n", side.id())),
        "{shown}"
    );
    side.kill();
    Ok(())
}

// ------------------------------------------- another language, in the README

/// The README's Python example, as a file of `dir`.
fn readme_python(dir: &std::path::Path) -> PathBuf {
    let readme = include_str!("../README.md");
    let mut blocks = readme.split("```python\n").skip(1);
    let block = blocks
        .next()
        .and_then(|rest| rest.split("```").next())
        .expect("README.md has a ```python block");
    assert!(blocks.next().is_none(), "one Python example");
    let path = dir.join("worker.py");
    std::fs::write(&path, block).expect("write worker.py");
    path
}

#[test]
fn the_readme_python_writers_never_see_database_is_locked() {
    let sh = Shell::new();
    sh.ok(&["register", "builder-1"]);
    let worker = readme_python(sh.dir.path());
    const PROCESSES: usize = 4;
    const ROUNDS: usize = 150;
    let children: Vec<std::process::Child> = (0..PROCESSES)
        .map(|_| {
            Command::new("python3")
                .arg(&worker)
                .arg(sh.db())
                .arg("builder-1")
                .arg(ROUNDS.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("python3 must be installed")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait for python3");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.is_empty(), "{stderr}");
    }
    // Every read-then-write counted: no update was lost.
    let agent: AgentInfo = sh.json(&["get", "builder-1"]);
    let done = (PROCESSES * ROUNDS).to_string();
    assert_eq!(agent.metadata.get("tasks_done"), Some(&done));
    assert_eq!(agent.status, AgentStatus::Available);

    // What the README says of a deferred BEGIN, shown with two connections
    // of one process: a read, another connection's commit, then the write
    // fails at once although the timeout is 5 s.
    let deferred = sh.dir.path().join("deferred.py");
    std::fs::write(
        &deferred,
        r#"import sqlite3, sys
from worker import connect, heartbeat
path = sys.argv[1]
mine, theirs = connect(path), connect(path)
mine.execute("BEGIN")
mine.execute("SELECT value FROM metadata WHERE key = 'tasks_done'").fetchone()
heartbeat(theirs, "builder-1")
try:
    mine.execute("UPDATE metadata SET value = '0' WHERE key = 'tasks_done'")
    print("written")
except sqlite3.OperationalError as e:
    print(e)
"#,
    )
    .expect("write deferred.py");
    let out = Command::new("python3")
        .arg(&deferred)
        .arg(sh.db())
        .current_dir(sh.dir.path())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "database is locked\n");
    let agent: AgentInfo = sh.json(&["get", "builder-1"]);
    assert_eq!(
        agent.metadata.get("tasks_done"),
        Some(&done),
        "nothing written"
    );
}

/// A system clock set before 1970 is a clock like any other: no panic
/// (chrono's `Utc::now` would panic), and the times it gives are stored and
/// shown. Run under `faketime` (Debian's package, installed by `.ci/run`).
#[test]
fn a_clock_before_1970_is_no_panic() {
    let sh = Shell::new();
    let in_1969 = |args: &[&str]| -> Output {
        Command::new("faketime")
            .arg("1969-07-20 20:17:00")
            .arg(ROSTER)
            .arg("--db")
            .arg(sh.db())
            .args(args)
            .env_remove("ROSTER_DB")
            .stdin(Stdio::null())
            .output()
            .expect("faketime must be installed (apt-get install -y faketime)")
    };
    for args in [
        &["register", "moon", "--max-load", "1"][..],
        &["heartbeat", "moon"],
        &["claim", "--task-id", "landing"],
        &["reap", "--ttl", "1h"],
        &["recover"],
    ] {
        let out = in_1969(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let moon: serde_json::Value =
        serde_json::from_str(&sh.ok(&["--json", "get", "moon"])).expect("JSON");
    let seen = moon["last_heartbeat"].as_str().expect("a time");
    assert!(seen.starts_with("1969-07-20T20:17:"), "{seen}");
}
