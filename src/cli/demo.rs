//! `roster demo`: what roster is for, in under 30 seconds.
//!
//! Agent processes (this binary's `agent` subcommand) heartbeat into a fresh
//! file; this process dispatches tasks to them, each claim a row with a
//! fencing token; one agent is killed with SIGKILL while it runs a task, and
//! a reaper process marks it offline and takes the task back; the agent
//! restarts and the task is dispatched again, while the dead run's token is
//! refused; a new process reads the same state back; the timeline ends with
//! a query to type into `sqlite3`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use roster::{
    AgentInfo, AgentRegistry, AgentStatus, Claim, Claimed, Error, Priority, SqlAccess,
    SqliteRegistry, Task,
};

use super::exit::{Exit, Failure, Outcome};
use super::output;
use super::printer::Printer;

const DEFAULT_FILE: &str = "roster-demo.db";

/// The agents the demo starts: id, capabilities, max load.
const FLEET: [(&str, &[&str], u32); 4] = [
    ("builder-1", &["rust", "linux"], 2),
    ("builder-2", &["rust"], 2),
    ("gpu-1", &["cuda", "python"], 1),
    ("tester-1", &["python", "rust"], 3),
];

/// The task stream: id, labels, priority.
const TASKS: [(&str, &[&str], Priority); 9] = [
    ("build-1", &["rust"], Priority::Medium),
    ("build-2", &["rust"], Priority::Medium),
    ("train-1", &["cuda"], Priority::High),
    ("test-1", &["python"], Priority::Low),
    ("build-3", &["rust", "linux"], Priority::Medium),
    ("train-2", &["cuda"], Priority::High),
    ("hotfix", &["rust"], Priority::Critical),
    ("build-4", &["rust"], Priority::Medium),
    ("paint", &["watercolour"], Priority::Medium),
];

/// The reaper's TTL in the demo: agents heartbeat every 500 ms.
const TTL: &str = "2s";

/// Child processes, killed when the demo ends however it ends.
struct Processes {
    children: Vec<(String, Child)>,
}

impl Processes {
    fn take(&mut self, name: &str) -> Option<Child> {
        let at = self.children.iter().position(|(n, _)| n == name)?;
        Some(self.children.remove(at).1)
    }

    /// SIGTERM to every process, then a wait; SIGKILL for any that lingers.
    fn stop_all(&mut self) {
        for (_, child) in &self.children {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for (_, child) in &mut self.children {
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Prints timeline lines with the time since the demo started.
struct Timeline<'a> {
    start: Instant,
    stop: Arc<AtomicBool>,
    out: &'a mut Printer,
}

impl Timeline<'_> {
    /// A step, with the time since the start; with `--json`, one line
    /// `{"elapsed_s": 1.2, "step": "..."}`.
    fn say(&mut self, text: impl AsRef<str>) -> Outcome {
        let elapsed = self.start.elapsed().as_secs_f64();
        if self.out.json {
            let elapsed = (elapsed * 1000.0).round() / 1000.0;
            self.out
                .json(&serde_json::json!({ "elapsed_s": elapsed, "step": text.as_ref() }))?;
        } else {
            self.out
                .line(format_args!("[{elapsed:5.1}s] {}", text.as_ref()))?;
        }
        self.out.flush()
    }

    /// A detail of the last step; with `--json`, `{"detail": "..."}`.
    fn detail(&mut self, text: impl AsRef<str>) -> Outcome {
        if self.out.json {
            self.out
                .json(&serde_json::json!({ "detail": text.as_ref().trim() }))?;
        } else {
            self.out.line(format_args!("         {}", text.as_ref()))?;
        }
        self.out.flush()
    }

    /// Text without a time; with `--json`, `{"note": "..."}`, and nothing
    /// for an empty line.
    fn plain(&mut self, text: impl AsRef<str>) -> Outcome {
        let text = text.as_ref();
        if self.out.json {
            if !text.is_empty() {
                self.out.json(&serde_json::json!({ "note": text.trim() }))?;
            }
        } else {
            self.out.line(text)?;
        }
        self.out.flush()
    }

    fn check_interrupted(&self) -> Outcome {
        if self.stop.load(Ordering::Relaxed) {
            return Err(Failure::new(
                Exit::Failure,
                "interrupted",
                "demo interrupted; its processes were stopped",
            ));
        }
        Ok(())
    }
}

fn roster_command(db: &Path) -> Result<Command, Failure> {
    let mut command = Command::new(std::env::current_exe()?);
    command.arg("--db").arg(db);
    Ok(command)
}

/// Picks the file: the default demo file is replaced; a file the user named
/// must not exist yet, so that the demo never touches a real registry.
fn fresh_file(named: Option<&Path>) -> Result<PathBuf, Failure> {
    match named {
        Some(path) if path.exists() => Err(Failure::bad_input(format!(
            "the demo needs a fresh file and {} exists; remove it or pass another --db",
            path.display()
        ))),
        Some(path) => Ok(path.to_owned()),
        None => {
            for suffix in ["", "-wal", "-shm"] {
                match std::fs::remove_file(format!("{DEFAULT_FILE}{suffix}")) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                    _ => {}
                }
            }
            Ok(PathBuf::from(DEFAULT_FILE))
        }
    }
}

/// `roster demo` on the file `named`, or on a fresh `roster-demo.db`.
pub(crate) fn run(named: Option<&Path>, out: &mut Printer) -> Outcome {
    let json = out.json;
    let db = fresh_file(named)?;
    let stop = super::daemon::stop_flag()?;
    let mut timeline = Timeline {
        start: Instant::now(),
        stop,
        out,
    };
    let mut processes = Processes {
        children: Vec::new(),
    };
    timeline.plain(format!(
        "roster demo: one registry file, {}, shared by every process below",
        db.display()
    ))?;
    timeline.plain("")?;
    let registry = SqliteRegistry::open(&db)?;

    // 1. Agent processes register and heartbeat.
    timeline.say("starting 4 agent processes: roster agent ID --cap ... --every 500ms")?;
    for (id, caps, max_load) in FLEET {
        let child = agent_process(&db, id, caps, max_load)?;
        processes.children.push((id.to_owned(), child));
        timeline.detail(format!(
            "{id:<10} {:<12} max load {max_load}",
            caps.join(",")
        ))?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while registry.list()?.len() < FLEET.len() {
        timeline.check_interrupted()?;
        if Instant::now() > deadline {
            return Err(Failure::io(
                "the agent processes did not register within 10 s",
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
    timeline.say("all 4 registered")?;

    // 2. A dispatcher claims slots for a stream of tasks.
    timeline.say(
        "dispatching 9 tasks: each claim picks the best agent, takes a slot and records the task with a fencing token, atomically",
    )?;
    let mut running: Vec<Claim> = Vec::new();
    for (task_id, labels, priority) in TASKS {
        let task = Task {
            id: task_id.to_owned(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            priority,
        };
        let wanted = format!("{task_id} [{}] {priority}", labels.join(","));
        match registry.claim(&task, None) {
            Ok(Claimed { claim, agent }) => {
                timeline.detail(format!(
                    "{wanted:<30} -> {} (load {}, token {})",
                    agent.id,
                    output::load(&agent),
                    claim.token
                ))?;
                running.push(claim);
            }
            Err(Error::NoEligibleAgent) => {
                timeline.detail(format!("{wanted:<30} -> waits: no eligible agent (offline, full, or nobody has the labels)"))?;
            }
            Err(e) => return Err(e.into()),
        }
        thread::sleep(Duration::from_millis(60));
    }
    for claim in running.iter().filter(|c| c.task_id.starts_with("build")) {
        registry.release(&claim.task_id, Some(claim.token))?;
        timeline.detail(format!(
            "{} finished: released its slot on {} (token {})",
            claim.task_id, claim.agent_id, claim.token
        ))?;
    }
    timeline.check_interrupted()?;
    let Some(lost) = running.iter().find(|c| c.agent_id == "gpu-1").cloned() else {
        return Err(Failure::io("no task went to gpu-1"));
    };

    // 3. One agent dies with its task; the reaper notices and takes the
    // task back.
    let Some(mut gpu) = processes.take("gpu-1") else {
        return Err(Failure::io("the gpu-1 process is missing"));
    };
    gpu.kill()?;
    gpu.wait()?;
    let killed = Instant::now();
    timeline.say(format!(
        "killed the gpu-1 process with SIGKILL while it ran {}: its heartbeats stop",
        lost.task_id
    ))?;
    let mut reaper = roster_command(&db)?
        .args(["reaper", "--ttl", TTL, "--every", "250ms"])
        .env("ROSTER_EXIT_WITH_PARENT", "1")
        .stdout(Stdio::piped())
        .spawn()?;
    let lines = reaper.stdout.take();
    processes.children.push(("reaper".to_owned(), reaper));
    timeline.say(format!(
        "started a reaper process: roster reaper --ttl {TTL} --every 250ms (it reaps, then recovers)"
    ))?;
    let (sender, reports) = mpsc::channel();
    if let Some(lines) = lines {
        thread::spawn(move || {
            for line in BufReader::new(lines).lines().map_while(Result::ok) {
                let wanted = line.ends_with("went offline") || line.contains(" taken back from ");
                if wanted && sender.send(line).is_err() {
                    return;
                }
            }
        });
    }
    let taken_back = format!("task {} taken back from gpu-1", lost.task_id);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        timeline.check_interrupted()?;
        match reports.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                let said = line.split_once(' ').map_or(line.as_str(), |(_, rest)| rest);
                if line.contains(&taken_back) {
                    timeline.say(format!("reaper: {said}"))?;
                    break;
                }
                timeline.say(format!(
                    "reaper: {said} ({:.1}s after the kill; TTL {TTL})",
                    killed.elapsed().as_secs_f64()
                ))?;
            }
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(_) => {
                return Err(Failure::io(format!(
                    "the reaper did not take {} back from gpu-1 within 10 s",
                    lost.task_id
                )));
            }
        }
    }
    let again = Task {
        id: lost.task_id.clone(),
        labels: vec!["cuda".into()],
        priority: Priority::High,
    };
    match registry.claim(&again, None) {
        Err(Error::NoEligibleAgent) => {
            timeline.say(format!(
                "{} [cuda] -> waits: the only cuda agent is offline",
                lost.task_id
            ))?;
        }
        Ok(claimed) => {
            return Err(Failure::io(format!(
                "{} went to {} although gpu-1 is offline",
                lost.task_id, claimed.agent.id
            )));
        }
        Err(e) => return Err(e.into()),
    }

    // 4. The agent comes back; the task is dispatched again, and the dead
    // holder's token no longer counts.
    let (id, caps, max_load) = FLEET[2];
    let child = agent_process(&db, id, caps, max_load)?;
    let pid = child.id();
    processes.children.push((id.to_owned(), child));
    let deadline = Instant::now() + Duration::from_secs(10);
    while registry.get(id)?.pid != Some(pid) {
        timeline.check_interrupted()?;
        if Instant::now() > deadline {
            return Err(Failure::io("gpu-1 did not register again within 10 s"));
        }
        thread::sleep(Duration::from_millis(20));
    }
    timeline.say("restarted the gpu-1 process: it registers again and heartbeats")?;
    let claimed = registry.claim(&again, None)?;
    timeline.say(format!(
        "{} dispatched again -> {} (load {}, token {})",
        lost.task_id,
        claimed.agent.id,
        output::load(&claimed.agent),
        claimed.claim.token
    ))?;
    match registry.release(&lost.task_id, Some(lost.token)) {
        Err(Error::StaleClaim { .. }) => timeline.say(format!(
            "the crashed run's token {} is stale: its late release of {} is refused, the new claim stands",
            lost.token, lost.task_id
        ))?,
        Ok(_) => {
            return Err(Failure::io(
                "a release with a stale token was accepted".to_owned(),
            ));
        }
        Err(e) => return Err(e.into()),
    }

    // 5. Everything stops; a new process reads the same state.
    if let Some(mut reaper) = processes.take("reaper") {
        let _ = reaper.kill();
        reaper.wait()?;
    }
    processes.stop_all();
    timeline.say("stopped the reaper, then the agents (SIGTERM: each marks itself offline)")?;
    let before = (registry.list()?, registry.claims(None)?);
    drop(registry);
    let agents = roster_command(&db)?.args(["--json", "list"]).output()?;
    let claims = roster_command(&db)?.args(["--json", "claims"]).output()?;
    let after: Vec<AgentInfo> = serde_json::from_slice(&agents.stdout)
        .map_err(|e| Failure::io(format!("could not read `roster --json list`: {e}")))?;
    let held: Vec<serde_json::Value> = serde_json::from_slice(&claims.stdout)
        .map_err(|e| Failure::io(format!("could not read `roster --json claims`: {e}")))?;
    let same_claims = held.len() == before.1.len()
        && held.iter().zip(&before.1).all(|(read, had)| {
            read["task_id"] == had.task_id.as_str() && read["token"] == had.token
        });
    if after != before.0 || !same_claims {
        return Err(Failure::io("a new process read a different state"));
    }
    let offline = after
        .iter()
        .filter(|a| a.status == AgentStatus::Offline)
        .count();
    let load: u32 = after.iter().map(|a| a.current_load).sum();
    timeline.say(format!(
        "a new process (roster --json list, roster --json claims) reads exactly the same state: {} agents, {offline} offline, {load} slots taken by {} claims",
        after.len(),
        held.len()
    ))?;
    timeline.detail(
        "(their agents are offline: the next `roster recover` or reaper takes them back)",
    )?;

    // 6. The file is plain SQL.
    let query = "SELECT a.id, a.status, a.current_load, a.max_load, group_concat(c.task_id) AS tasks FROM agents AS a LEFT JOIN claims AS c ON c.agent_id = a.id GROUP BY a.id ORDER BY a.id;";
    timeline.plain("")?;
    timeline.plain("Query it yourself:")?;
    timeline.plain(format!("  sqlite3 {} \"{query}\"", db.display()))?;
    timeline.plain("")?;
    let registry = SqliteRegistry::open(&db)?;
    let result = registry.query(query, SqlAccess::ReadOnly)?;
    if json {
        return timeline.out.json(&serde_json::json!({
            "query": query,
            "columns": result.columns,
            "rows": result.rows,
        }));
    }
    let header: Vec<&str> = result.columns.iter().map(String::as_str).collect();
    let rows: Vec<Vec<String>> = result
        .rows
        .iter()
        .map(|row| row.iter().map(ToString::to_string).collect())
        .collect();
    output::table(timeline.out, &header, &rows)
}

/// Starts `roster agent ID` for one agent of the fleet, heartbeating every
/// 500 ms, stopped with the demo.
fn agent_process(db: &Path, id: &str, caps: &[&str], max_load: u32) -> Result<Child, Failure> {
    let mut command = roster_command(db)?;
    command.args([
        "agent",
        id,
        "--every",
        "500ms",
        "--max-load",
        &max_load.to_string(),
    ]);
    for cap in caps {
        command.args(["--cap", cap]);
    }
    Ok(command
        .env("ROSTER_EXIT_WITH_PARENT", "1")
        .stdout(Stdio::null())
        .spawn()?)
}
