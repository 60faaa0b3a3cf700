//! The long-running subcommands: `agent` (a heartbeat sidecar) and `reaper`.
//!
//! Both retry the errors whose kind is transient (busy, a passing storage
//! failure) and stop on any other with its exit code. On SQLite, both check
//! every round that the registry file is still the one they opened. On
//! PostgreSQL there is no file to lose: every statement names the tables
//! on the server, so a registry dropped under a daemon fails its next call
//! as unusable (exit code 7) and one recreated is the one everybody uses.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound as _, Utc};
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use roster::{AgentInfo, AgentRegistry, AgentStatus, Error, Recovered};
use signal_hook::consts::{SIGINT, SIGTERM};

use super::backend::Registry;
use super::exit::{Exit, Failure, Outcome};
use super::output;
use super::printer::{Printer, warn};

/// A flag set by SIGINT or SIGTERM: how every long-running command of
/// roster (the daemons, `watch`, `metrics --listen`, `sql`, `demo`) learns
/// it should stop.
pub(crate) fn stop_flag() -> Result<Arc<AtomicBool>, Failure> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    Ok(stop)
}

/// When set (by `roster demo`), the process stops as soon as the process
/// that started it is gone, so that no agent outlives a killed demo.
const EXIT_WITH_PARENT: &str = "ROSTER_EXIT_WITH_PARENT";

/// Sleeps for `pause`, waking early when `stop` is set or, under
/// [`EXIT_WITH_PARENT`], when the parent process has gone. Returns whether to
/// go on.
pub(crate) fn pause(pause: Duration, stop: &AtomicBool, parent: Option<u32>) -> bool {
    let until = Instant::now() + pause;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        if parent.is_some_and(|p| p != std::os::unix::process::parent_id()) {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        thread::sleep(left.min(Duration::from_millis(50)));
    }
}

fn parent_to_watch() -> Option<u32> {
    std::env::var_os(EXIT_WITH_PARENT).map(|_| std::os::unix::process::parent_id())
}

/// What `roster agent` does to its agent when stopped by SIGINT or SIGTERM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnExit {
    /// Marks it offline (the default): no claim goes to it any more.
    Offline,
    /// Removes it (`--deregister-on-exit`).
    Deregister,
    /// Leaves it as it is (`--keep-on-exit`): claimable until the reaper's
    /// TTL runs out.
    Keep,
}

/// The registry file's identity, (device, inode), as a daemon found it at
/// start. A file deleted or replaced under a running daemon would have it
/// write into a file nobody else sees; the daemon stops instead, and does
/// not reopen the new file: whoever replaced it decides what runs on it.
///
/// A PostgreSQL registry has none (every check passes): the server
/// resolves the tables' names for every statement, so no process can be
/// left writing where nobody else looks.
pub(crate) struct FileIdentity(Option<Identified>);

struct Identified {
    path: PathBuf,
    device: u64,
    inode: u64,
}

impl FileIdentity {
    pub(crate) fn of(registry: &Registry) -> Result<Self, Failure> {
        let Registry::Sqlite(registry) = registry else {
            return Ok(Self(None));
        };
        let path = registry.path().to_owned();
        let metadata = std::fs::metadata(&path).map_err(|e| {
            Failure::new(
                Exit::Unusable,
                "unusable",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        Ok(Self(Some(Identified {
            device: metadata.dev(),
            inode: metadata.ino(),
            path,
        })))
    }

    /// Fails with exit code 7 when the file at the path is gone or is
    /// another file.
    pub(crate) fn check(&self) -> Outcome {
        self.check_while("using", "use")
    }

    /// [`check`](Self::check), naming what the process was `doing` with the
    /// file (`watching`) and what a restart would `redo` (`watch`).
    pub(crate) fn check_while(&self, doing: &str, redo: &str) -> Outcome {
        let Some(file) = &self.0 else {
            return Ok(());
        };
        let what = match std::fs::metadata(&file.path) {
            Ok(now) if (now.dev(), now.ino()) == (file.device, file.inode) => return Ok(()),
            Ok(_) => "was replaced by another file",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "was deleted",
            // A passing failure to look (permissions being changed...): the
            // next round looks again.
            Err(_) => return Ok(()),
        };
        Err(Failure::new(
            Exit::Unusable,
            "unusable",
            format!(
                "the registry file {} {what} while this process was {doing} it; stopping (restart it to {redo} the file now at that path)",
                file.path.display()
            ),
        ))
    }
}

/// Now, as the lines of `agent` and `reaper` show it: RFC 3339 in UTC, to
/// the millisecond.
fn stamp() -> String {
    output::rfc3339(roster::now())
}

/// Prints one event of a daemon as a JSON line, or as a text line that
/// starts with the time, and sends it at once.
fn event(out: &mut Printer, json: serde_json::Value, text: impl std::fmt::Display) -> Outcome {
    if out.json {
        out.json(&json)?;
    } else {
        out.line(format_args!("{} {text}", stamp()))?;
    }
    out.flush()
}

/// A passing failure, on stderr, with the time.
fn retrying(what: impl std::fmt::Display, error: &Error) {
    warn(format_args!(
        "roster: {} {what} failed, will retry: {error}",
        stamp()
    ));
}

/// What `roster agent` was asked to run.
pub(crate) struct Sidecar {
    /// The agent to register (its host, pid and start time are filled in).
    pub(crate) agent: AgentInfo,
    /// The time between two heartbeats.
    pub(crate) every: Duration,
    /// What to do to the agent when stopped by a signal.
    pub(crate) on_exit: OnExit,
    /// Whether to take over an agent that a live sidecar runs.
    pub(crate) replace: bool,
}

/// How many rounds a live sidecar may miss: an agent whose heartbeat is
/// older than this many `--every` is not run by a live sidecar any more.
const MISSED_ROUNDS: u32 = 3;

/// The host name, as the sidecar stores it (none when it cannot be read).
fn this_host() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty())
}

/// Whether a process with this id exists on this host (`kill -0`): one
/// owned by another user counts (EPERM); one that cannot be asked about
/// counts too, so that a doubt never takes an agent from a live sidecar.
fn process_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    !matches!(kill(Pid::from_raw(raw), None), Err(Errno::ESRCH))
}

/// The sidecar that runs `stored`, in words, if it is live: it stored its
/// host and pid, the agent is not offline, its last heartbeat is at most
/// [`MISSED_ROUNDS`] x `every` old, and, when it runs on this host, its
/// process is alive (and is not this one: a pid reused after a restart).
fn live_sidecar(
    stored: &AgentInfo,
    every: Duration,
    host: Option<&str>,
    now: DateTime<Utc>,
) -> Option<String> {
    let (Some(their_host), Some(pid)) = (stored.host.as_deref(), stored.pid) else {
        return None;
    };
    if stored.status == AgentStatus::Offline {
        return None;
    }
    // A heartbeat in the future (another host's clock) is fresh.
    let age = (now - stored.last_heartbeat).to_std().unwrap_or_default();
    if age > every.saturating_mul(MISSED_ROUNDS) {
        return None;
    }
    if host == Some(their_host) && (pid == std::process::id() || !process_alive(pid)) {
        return None;
    }
    Some(format!(
        "pid {pid} on host {their_host}, last heartbeat {}",
        output::ago(stored.last_heartbeat, now)
    ))
}

/// Who this sidecar is, as it stored itself: another sidecar that
/// registered the agent since (`--replace`) stored other values.
struct Identity {
    host: Option<String>,
    pid: Option<u32>,
    started_at: Option<DateTime<Utc>>,
}

impl Identity {
    /// Whether `stored` was registered since by another sidecar: it holds
    /// a pid, and not this sidecar's identity. (An agent registered by hand
    /// since, without a pid, is still this sidecar's to heartbeat.)
    fn taken_over(&self, stored: &AgentInfo) -> bool {
        stored.pid.is_some()
            && (stored.pid, stored.host.as_ref(), stored.started_at)
                != (self.pid, self.host.as_ref(), self.started_at)
    }
}

/// One round of the sidecar: the agent as stored, if another sidecar took
/// it over; otherwise a heartbeat.
fn beat(registry: &Registry, id: &str, me: &Identity) -> roster::Result<Option<AgentInfo>> {
    let stored = registry.get(id)?;
    if me.taken_over(&stored) {
        return Ok(Some(stored));
    }
    registry.heartbeat(id)?;
    Ok(None)
}

/// `roster agent`: registers the agent (with this process's host, pid and
/// start time) unless a live sidecar runs it and `replace` is not set, then
/// heartbeats for it every `every` until SIGINT or SIGTERM, and then does
/// `on_exit`. It stops by itself, leaving the agent as it is, once another
/// sidecar took the agent over.
pub(crate) fn agent(registry: &Registry, out: &mut Printer, sidecar: Sidecar) -> Outcome {
    let Sidecar {
        agent,
        every,
        on_exit,
        replace,
    } = sidecar;
    let stop = stop_flag()?;
    let parent = parent_to_watch();
    // Bad fields are reported as such before the registry is asked about
    // the id.
    let mut agent = agent.validated()?;
    let id = agent.id.clone();
    let me = Identity {
        host: this_host(),
        pid: Some(std::process::id()),
        // To the microsecond, as PostgreSQL keeps it: the stored value
        // must compare equal to this one for the sidecar to know its own.
        started_at: Some(roster::now().trunc_subsecs(6)),
    };
    // The registry's clock (the server's, on PostgreSQL): the one the
    // heartbeats were stamped with.
    let now = registry.now()?;
    let running = match registry.get(&id) {
        Ok(stored) => live_sidecar(&stored, every, me.host.as_deref(), now),
        Err(Error::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(running) = &running
        && !replace
    {
        return Err(Failure::conflict(
            Exit::AgentRunning,
            format!(
                "agent {id} is run by a live sidecar ({running}); stop it first, or pass --replace to take the agent over"
            ),
        ));
    }
    agent.last_heartbeat = now;
    agent.host.clone_from(&me.host);
    agent.pid = me.pid;
    agent.started_at = me.started_at;
    registry.register(agent)?;
    let file = FileIdentity::of(registry)?;
    let took_over = running
        .as_ref()
        .map(|running| format!("; took it over from the sidecar with {running}"))
        .unwrap_or_default();
    let started = event(
        out,
        serde_json::json!({
            "event": "registered",
            "id": id,
            "time": roster::now(),
            "replaced": running,
        }),
        format_args!(
            "agent {id} registered; heartbeat every {} until SIGINT or SIGTERM{took_over}",
            humantime::format_duration(every)
        ),
    );
    if let Err(failure) = started {
        // Nobody reads what this process says (a closed pipe): it stops,
        // and its agent is left as a signal would have left it.
        finish(registry, &id, on_exit)?;
        return Err(failure);
    }
    while pause(every, &stop, parent) {
        file.check()?;
        match beat(registry, &id, &me) {
            Ok(None) => {}
            Ok(Some(successor)) => {
                let by = format!(
                    "pid {} on host {}",
                    successor.pid.unwrap_or_default(),
                    successor.host.as_deref().unwrap_or("?")
                );
                return event(
                    out,
                    serde_json::json!({
                        "event": "taken_over",
                        "id": id,
                        "time": roster::now(),
                        "by": { "host": successor.host, "pid": successor.pid },
                    }),
                    format_args!(
                        "agent {id} was taken over by the sidecar with {by}; stopping (left as it is)"
                    ),
                );
            }
            Err(Error::NotFound(_)) => {
                return Err(Failure::new(
                    Exit::NotFound,
                    "not_found",
                    format!("agent {id} was deregistered by someone else; stopping"),
                ));
            }
            Err(e) if e.kind().is_transient() => retrying(format_args!("heartbeat of {id}"), &e),
            Err(e) => {
                return Err(Failure::from(e).stopping(format_args!("heartbeat of {id}")));
            }
        }
    }
    // Taken over since the last round: the agent is the other sidecar's.
    let done = match registry.get(&id) {
        Ok(stored) if me.taken_over(&stored) => "left as it is: another sidecar took it over",
        _ => finish(registry, &id, on_exit)?,
    };
    event(
        out,
        serde_json::json!({ "event": "stopped", "id": id, "time": roster::now(), "agent": done }),
        format_args!("agent {id} stopped ({done})"),
    )
}

/// Does `on_exit` to the agent `id`; returns what was done, in words.
fn finish(registry: &Registry, id: &str, on_exit: OnExit) -> Result<&'static str, Failure> {
    let (done, text, doing) = match on_exit {
        OnExit::Offline => (
            registry.set_status(id, AgentStatus::Offline),
            "marked offline",
            "marking it offline",
        ),
        OnExit::Deregister => (registry.deregister(id), "deregistered", "deregistering it"),
        OnExit::Keep => (Ok(()), "left as it is", ""),
    };
    match done {
        // Someone removed it in the meantime: nothing left to do.
        Ok(()) | Err(Error::NotFound(_)) => Ok(text),
        Err(e) => Err(Failure::from(e).stopping(format_args!("agent {id} stopped, but {doing}"))),
    }
}

/// A claim that the reaper took back, as its JSON line shows it.
#[derive(serde::Serialize)]
struct RecoveredEvent<'a> {
    event: &'static str,
    #[serde(flatten)]
    recovered: &'a Recovered,
    time: DateTime<Utc>,
}

/// `roster reaper`: every `every` until SIGINT or SIGTERM, reaps with
/// `ttl` and then recovers, printing each agent that went offline and each
/// claim taken back.
pub(crate) fn reaper(
    registry: &Registry,
    out: &mut Printer,
    ttl: Duration,
    every: Duration,
) -> Outcome {
    let stop = stop_flag()?;
    let parent = parent_to_watch();
    let file = FileIdentity::of(registry)?;
    let (ttl_text, every_text) = (
        humantime::format_duration(ttl).to_string(),
        humantime::format_duration(every).to_string(),
    );
    event(
        out,
        serde_json::json!({ "event": "started", "ttl": ttl_text, "every": every_text, "time": roster::now() }),
        format_args!(
            "reaper: agents silent for more than {ttl_text} go offline, and claims of offline or deregistered agents and expired leases are taken back; checking every {every_text}"
        ),
    )?;
    loop {
        file.check()?;
        match registry.reap(ttl) {
            Ok(reaped) => {
                for id in reaped {
                    event(
                        out,
                        serde_json::json!({ "event": "offline", "id": id, "time": roster::now() }),
                        format_args!("{id} went offline"),
                    )?;
                }
            }
            Err(e) if e.kind().is_transient() => retrying("reap", &e),
            Err(e) => return Err(Failure::from(e).stopping("reap")),
        }
        match registry.recover() {
            Ok(recovered) => {
                for taken in &recovered {
                    let line = serde_json::to_value(RecoveredEvent {
                        event: "recovered",
                        recovered: taken,
                        time: roster::now(),
                    })
                    .map_err(|e| Failure::io(format!("cannot write JSON: {e}")))?;
                    event(out, line, output::recovered(taken))?;
                }
            }
            Err(e) if e.kind().is_transient() => retrying("recover", &e),
            Err(e) => return Err(Failure::from(e).stopping("recover")),
        }
        if !pause(every, &stop, parent) {
            return Ok(());
        }
    }
}
