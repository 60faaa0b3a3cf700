//! Helpers shared by the test files, in one place: a temporary registry, a
//! seeded random source, child processes that say when they are ready, the
//! real `sqlite3` shell, and file health.
//!
//! Each test file compiles its own copy and uses only part of it.
//!
//! No helper here waits for time to pass. A process is known to be ready when
//! it printed a line; a state is known to be reached when it is observed.
//! Durations appear only as failure bounds ([`PATIENCE`]): how long to wait
//! before calling a silent process or a state that never comes broken, never
//! how long something is assumed to take.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::ops::Deref;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use roster::SqliteRegistry;

pub mod pg;
pub mod readme;
#[cfg(feature = "cli")]
pub mod tmux;

/// How long a test waits for a line or a state before it fails. A failure
/// bound only: every wait ends as soon as what it waits for is observed, so
/// this is generous enough for a loaded machine and costs nothing when all
/// is well.
pub const PATIENCE: Duration = Duration::from_secs(120);

// ------------------------------------------------------------ the registry

/// A registry in a fresh file of its own temporary directory. The handle is
/// dropped before the directory is removed (fields drop in order), so it
/// never outlives its file.
pub struct TempRegistry {
    registry: SqliteRegistry,
    path: PathBuf,
    dir: tempfile::TempDir,
}

impl TempRegistry {
    /// A registry in `roster.db` of a new temporary directory.
    pub fn new() -> Self {
        Self::named("roster.db")
    }

    /// A registry in the file `name` of a new temporary directory.
    pub fn named(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(name);
        let registry = SqliteRegistry::open(&path)
            .unwrap_or_else(|e| panic!("open a fresh registry at {}: {e}", path.display()));
        Self {
            registry,
            path,
            dir,
        }
    }

    /// The registry file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary directory that holds the file (and its -wal and -shm).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Drops the handle and keeps the file: the next open, after crashes of
    /// other processes, is then one with nobody else attached, which has to
    /// recover the file by itself.
    pub fn close(self) -> TempFile {
        let Self {
            registry,
            path,
            dir,
        } = self;
        drop(registry);
        TempFile { path, dir }
    }
}

/// A registry file that no handle of this process holds open, in its own
/// temporary directory.
pub struct TempFile {
    path: PathBuf,
    dir: tempfile::TempDir,
}

impl TempFile {
    /// The registry file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary directory that holds the file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Deref for TempRegistry {
    type Target = SqliteRegistry;

    fn deref(&self) -> &SqliteRegistry {
        &self.registry
    }
}

// --------------------------------------------------------- random numbers

/// The variable that replays a run: `ROSTER_TEST_SEED=<seed> cargo test ...`.
/// The process tests also hand each child its seed through it.
pub const SEED_VAR: &str = "ROSTER_TEST_SEED";

/// A small deterministic random source (splitmix64). Every test that draws
/// from it prints its seed on stderr, which the test harness shows when the
/// test fails; setting [`SEED_VAR`] to that seed replays the same draws
/// (though not the operating system's scheduling of processes).
pub struct Rng {
    seed: u64,
    state: u64,
}

impl Rng {
    /// A source that draws the same numbers for the same seed.
    pub fn new(seed: u64) -> Self {
        Self { seed, state: seed }
    }

    /// Seeded from [`SEED_VAR`] when it is set, otherwise from the clock and
    /// the process id; prints the seed.
    pub fn from_env() -> Self {
        let seed = match std::env::var(SEED_VAR) {
            Ok(text) => text
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{SEED_VAR} must be a number, not {text:?}")),
            Err(_) => {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64);
                nanos ^ (u64::from(std::process::id()) << 32)
            }
        };
        eprintln!("random seed {seed} (replay with {SEED_VAR}={seed})");
        Self::new(seed)
    }

    /// The seed this source started from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; `n` must not be 0.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        self.next_u64() % n
    }
}

// -------------------------------------------------------- child processes

/// The signal number of SIGKILL on every platform these tests run on.
pub const SIGKILL: i32 = 9;

/// A child process whose standard output is read line by line as it comes
/// (by a thread, so the child never blocks on a full pipe), whose standard
/// error is kept for failure messages, and whose standard input stays open
/// for the test to talk to it. Dropped without [`Running::finish`] or
/// [`Running::kill`] (a test that failed), it is killed and reaped, so no
/// child outlives its test.
pub struct Running {
    name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stdout_reader: Option<JoinHandle<()>>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
}

/// What a child left behind once it ended.
pub struct Finished {
    /// How it ended.
    pub status: ExitStatus,
    /// The lines it printed that the test had not read yet.
    pub stdout: Vec<String>,
    /// Everything it printed on standard error.
    pub stderr: String,
}

impl Finished {
    /// The lines starting with `@` (the child's reports), without the `@`.
    pub fn reports(&self) -> Vec<String> {
        self.stdout
            .iter()
            .filter_map(|line| line.strip_prefix('@'))
            .map(str::to_owned)
            .collect()
    }

    /// Panics unless the child exited with status 0, showing its standard
    /// error first (where a panic says why) and then the last lines of its
    /// standard output, so that a long run of reports cannot push the reason
    /// out of a shortened log.
    pub fn expect_success(&self, what: &str) -> &Self {
        const LAST: usize = 20;
        if !self.status.success() {
            let skipped = self.stdout.len().saturating_sub(LAST);
            panic!(
                "{what} failed ({}); its standard error:\n{}\n\
                 its last standard output ({skipped} lines before left out):\n{}",
                self.status,
                self.stderr,
                self.stdout[skipped..].join("\n")
            );
        }
        self
    }
}

impl Running {
    /// Starts `command` with all three standard streams piped.
    pub fn spawn(name: impl Into<String>, mut command: Command) -> Self {
        let name = name.into();
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let (sender, lines) = mpsc::channel();
        let stdout_reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_sink = Arc::clone(&stderr);
        let stderr_reader = thread::spawn(move || {
            let mut chunk = [0_u8; 4096];
            while let Ok(n @ 1..) = stderr_pipe.read(&mut chunk) {
                let text = String::from_utf8_lossy(&chunk[..n]);
                stderr_sink.lock().expect("stderr").push_str(&text);
            }
        });
        Self {
            name,
            child: Some(child),
            stdin,
            lines,
            stdout_reader: Some(stdout_reader),
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// What the child has printed on standard error so far.
    pub fn stderr_so_far(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    /// The next line the child prints, blocking until it comes; `None` once
    /// its standard output is closed. Fails after [`PATIENCE`] of silence.
    pub fn next_line(&mut self) -> Option<String> {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => panic!(
                "{} printed nothing for {PATIENCE:?}; stderr so far:\n{}",
                self.name,
                self.stderr_so_far()
            ),
        }
    }

    /// The next line the child prints; fails if it ends first.
    pub fn expect_line(&mut self, what: &str) -> String {
        match self.next_line() {
            Some(line) => line,
            None => self.ended_early(what),
        }
    }

    /// The next report (a line starting with `@`, returned without it),
    /// skipping the test harness's own lines; fails if the child ends first.
    pub fn next_report(&mut self, what: &str) -> String {
        loop {
            if let Some(report) = self.expect_line(what).strip_prefix('@') {
                return report.to_owned();
            }
        }
    }

    /// Waits for the report `expected` and fails on any other report.
    pub fn expect_report(&mut self, expected: &str) {
        let report = self.next_report(expected);
        assert_eq!(report, expected, "{}: unexpected report", self.name);
    }

    fn ended_early(&mut self, what: &str) -> ! {
        let status = self.child.as_mut().and_then(|c| c.wait().ok());
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        panic!(
            "{} ended ({status:?}) before {what}; stderr:\n{}",
            self.name,
            self.stderr_so_far()
        )
    }

    /// Writes `line` and a line break to the child's standard input.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        let sent = stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush());
        if let Err(e) = sent {
            panic!(
                "{}: could not send {line:?}: {e}; stderr:\n{}",
                self.name,
                self.stderr_so_far()
            );
        }
    }

    /// Closes the child's standard input: it reads end-of-file.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Kills the child with SIGKILL, reaps it and checks that the signal is
    /// what ended it (a child that had already died of something else fails
    /// the test).
    pub fn kill(mut self) -> Finished {
        if let Some(child) = self.child.as_mut() {
            child.kill().expect("SIGKILL");
        }
        let finished = self.collect();
        assert_eq!(
            finished.status.signal(),
            Some(SIGKILL),
            "{} was meant to die of SIGKILL but ended with {}; stderr:\n{}",
            self.name,
            finished.status,
            finished.stderr
        );
        finished
    }

    /// Closes the child's standard input and waits for it to end by itself.
    pub fn finish(mut self) -> Finished {
        self.close_stdin();
        self.collect()
    }

    fn collect(&mut self) -> Finished {
        self.close_stdin();
        let status = self
            .child
            .take()
            .expect("running")
            .wait()
            .expect("wait for the child");
        // Both pipes reach end-of-file once the child is gone.
        if let Some(reader) = self.stdout_reader.take() {
            let _ = reader.join();
        }
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        Finished {
            status,
            stdout: self.lines.try_iter().collect(),
            stderr: self.stderr_so_far(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until `check` observes what it looks for and returns it. The loop
/// ends on the observation, not on a duration: the pause between two looks
/// is a poll interval (nothing can notify across processes here), and
/// [`PATIENCE`] only bounds a failure.
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let give_up = Instant::now() + PATIENCE;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(
            Instant::now() < give_up,
            "{what} was not observed within {PATIENCE:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// The ids of the processes that have a file open whose path starts with
/// `prefix` (a database and its -wal and -shm), read from /proc. Processes
/// of other users, and processes that end while being looked at, are
/// skipped.
pub fn processes_holding(prefix: &Path) -> Vec<u32> {
    let mut holders = Vec::new();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        panic!("/proc is needed to see which processes hold a file");
    };
    for entry in processes.map_while(Result::ok) {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.map_while(Result::ok).any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                target
                    .as_os_str()
                    .as_encoded_bytes()
                    .starts_with(prefix.as_os_str().as_encoded_bytes())
            })
        });
        if holds {
            holders.push(pid);
        }
    }
    holders
}

// ----------------------------------------- this test binary as a child

/// The test binary run again as a child process. The child side is an
/// ignored test named `child` that does nothing unless [`ROLE_VAR`] names a
/// role; it talks to the parent by reports, lines on stdout starting with
/// `@` (everything else there is the test harness talking), and the parent
/// talks back by lines on its stdin.
pub mod child {
    use super::*;

    /// Names the role of a child; unset in a normal test run.
    pub const ROLE_VAR: &str = "ROSTER_CHILD";
    /// The registry file a child works on.
    pub const DB_VAR: &str = "ROSTER_DB";

    /// Starts this test binary as a child in `role` on `db`, with a seed
    /// drawn from `rng` and the extra environment `vars`.
    pub fn spawn(role: &str, db: &Path, rng: &mut Rng, vars: &[(&str, String)]) -> Running {
        let mut command = Command::new(std::env::current_exe().expect("test binary"));
        command
            .args([
                "--ignored",
                "--exact",
                "child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE_VAR, role)
            .env(DB_VAR, db)
            .env(SEED_VAR, rng.next_u64().to_string());
        for (name, value) in vars {
            command.env(name, value);
        }
        Running::spawn(format!("child {role}"), command)
    }

    /// In a child: its role, or `None` in a normal test run.
    pub fn role() -> Option<String> {
        let role = std::env::var(ROLE_VAR).ok()?;
        // The harness has printed "test child ... " without a line break:
        // start the reports on a line of their own.
        println!();
        Some(role)
    }

    /// In a child: the value of a variable the parent must have set.
    pub fn var(name: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| panic!("the child needs {name}"))
    }

    /// In a child: prints the report `@{text}` at once.
    pub fn report(text: impl std::fmt::Display) {
        let mut out = std::io::stdout().lock();
        writeln!(out, "@{text}")
            .and_then(|()| out.flush())
            .expect("report");
    }

    /// In a child: says it is ready, then blocks until the parent sends `go`.
    /// Children that must start together all say `ready` first; the parent
    /// sends `go` to each once it heard every one of them.
    pub fn ready_then_wait_for_go() {
        report("ready");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).expect("read stdin");
        assert_eq!(line.trim_end(), "go", "the parent must say go");
    }

    /// In a child: what the parent says while the child works, read by a
    /// thread. `ping` asks for a `pong` report after the next operation that
    /// starts after it; closing stdin asks the child to stop.
    pub struct Orders {
        stop: Arc<AtomicBool>,
        pings: Arc<AtomicU64>,
        answered: u64,
        seen: u64,
    }

    impl Orders {
        /// Starts reading the rest of stdin.
        pub fn listen() -> Self {
            let stop = Arc::new(AtomicBool::new(false));
            let pings = Arc::new(AtomicU64::new(0));
            let (stop_flag, ping_count) = (Arc::clone(&stop), Arc::clone(&pings));
            thread::spawn(move || {
                for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                    match line.as_str() {
                        "ping" => {
                            ping_count.fetch_add(1, Ordering::SeqCst);
                        }
                        other => panic!("unknown order {other:?}"),
                    }
                }
                stop_flag.store(true, Ordering::SeqCst);
            });
            Self {
                stop,
                pings,
                answered: 0,
                seen: 0,
            }
        }

        /// Whether the parent closed stdin.
        pub fn stopped(&self) -> bool {
            self.stop.load(Ordering::SeqCst)
        }

        /// Call before an operation.
        pub fn before_operation(&mut self) {
            self.seen = self.pings.load(Ordering::SeqCst);
        }

        /// Call after the operation: answers the pings that arrived before it
        /// started.
        pub fn after_operation(&mut self) {
            if self.seen > self.answered {
                self.answered = self.seen;
                report("pong");
            }
        }
    }
}

// ------------------------------------------------------ the roster command

/// The `roster` binary built for these tests.
#[cfg(feature = "cli")]
pub const ROSTER: &str = env!("CARGO_BIN_EXE_roster");

/// `roster --db DB ARGS...`, `DB` a file's path or a PostgreSQL URL, with
/// `$ROSTER_DB` removed and no standard input.
#[cfg(feature = "cli")]
pub fn roster_command(db: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
    let mut command = Command::new(ROSTER);
    command
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("ROSTER_DB")
        .stdin(Stdio::null());
    command
}

/// Sends SIGTERM to a child.
#[cfg(feature = "cli")]
pub fn sigterm(child: &Running) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let pid = i32::try_from(child.id()).expect("pid");
    kill(Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM");
}

// ----------------------------------------------------------- sqlite3 shell

/// Whether the shell stops at the first error (`-bail`) or, like a person
/// at the prompt, goes on with the next statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// `-bail`: stop at the first error.
    Stop,
    /// Go on with the next statement.
    GoOn,
}

/// Types `sql` into `sqlite3 -batch FILE` on its standard input, as a person
/// would, and returns what the shell printed.
pub fn sqlite3(db: &Path, sql: &str, on_error: OnError) -> Output {
    let mut command = Command::new("sqlite3");
    command.arg("-batch");
    if on_error == OnError::Stop {
        command.arg("-bail");
    }
    let mut child = command
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sqlite3 shell must be installed (apt-get install -y sqlite3)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(sql.as_bytes())
        .expect("type the SQL");
    child.wait_with_output().expect("sqlite3 output")
}

// -------------------------------------------------------------- health

/// Asserts the file is healthy: integrity, foreign keys, no orphans.
pub fn assert_healthy(db: &Path) {
    let conn = rusqlite::Connection::open(db).expect("open");
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(integrity, "ok");
    let fk_problems = conn
        .prepare("PRAGMA foreign_key_check")
        .expect("foreign_key_check")
        .query_map([], |_| Ok(()))
        .expect("rows")
        .count();
    assert_eq!(fk_problems, 0, "foreign_key_check must be empty");
    let orphans: i64 = conn
        .query_row(
            "SELECT (SELECT count(*) FROM capabilities WHERE agent_id NOT IN (SELECT id FROM agents))
                  + (SELECT count(*) FROM metadata WHERE agent_id NOT IN (SELECT id FROM agents))",
            [],
            |r| r.get(0),
        )
        .expect("orphans");
    assert_eq!(orphans, 0);
}
