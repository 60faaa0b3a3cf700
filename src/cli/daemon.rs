//! The long-running subcommands: `agent` (a heartbeat sidecar) and `reaper`.
//!
//! Both retry the errors whose kind is transient (busy, a passing storage
//! failure) and stop on any other with its exit code. Both check every round
//! that the registry file is still the one they opened.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use chrono::SecondsFormat;
use roster::{AgentInfo, AgentRegistry, AgentStatus, Error, SqliteRegistry};
use signal_hook::consts::{SIGINT, SIGTERM};

use super::exit::{Exit, Failure, Outcome};
use super::printer::{Printer, warn};

/// Set by SIGINT or SIGTERM.
fn stop_flag() -> Result<Arc<AtomicBool>, Failure> {
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
fn pause(pause: Duration, stop: &AtomicBool, parent: Option<u32>) -> bool {
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
struct FileIdentity {
    path: PathBuf,
    device: u64,
    inode: u64,
}

impl FileIdentity {
    fn of(registry: &SqliteRegistry) -> Result<Self, Failure> {
        let path = registry.path().to_owned();
        let metadata = std::fs::metadata(&path).map_err(|e| {
            Failure::new(
                Exit::Unusable,
                "unusable",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        Ok(Self {
            device: metadata.dev(),
            inode: metadata.ino(),
            path,
        })
    }

    /// Fails with exit code 7 when the file at the path is gone or is
    /// another file.
    fn check(&self) -> Outcome {
        let what = match std::fs::metadata(&self.path) {
            Ok(now) if (now.dev(), now.ino()) == (self.device, self.inode) => return Ok(()),
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
                "the registry file {} {what} while this process was using it; stopping (restart it to use the file now at that path)",
                self.path.display()
            ),
        ))
    }
}

/// Now, as the lines of `agent` and `reaper` show it: RFC 3339 in UTC, to
/// the millisecond.
fn stamp() -> String {
    roster::now().to_rfc3339_opts(SecondsFormat::Millis, true)
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

/// `roster agent`: registers `agent` (with this process's host, pid and
/// start time), then heartbeats for it every `every` until SIGINT or
/// SIGTERM, and then does `on_exit`.
pub(crate) fn agent(
    registry: &SqliteRegistry,
    out: &mut Printer,
    mut agent: AgentInfo,
    every: Duration,
    on_exit: OnExit,
) -> Outcome {
    let stop = stop_flag()?;
    let parent = parent_to_watch();
    let id = agent.id.clone();
    agent.host = nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty());
    agent.pid = Some(std::process::id());
    agent.started_at = Some(roster::now());
    registry.register(agent)?;
    let file = FileIdentity::of(registry)?;
    let started = event(
        out,
        serde_json::json!({ "event": "registered", "id": id, "time": roster::now() }),
        format_args!(
            "agent {id} registered; heartbeat every {} until SIGINT or SIGTERM",
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
        match registry.heartbeat(&id) {
            Ok(()) => {}
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
    let done = finish(registry, &id, on_exit)?;
    event(
        out,
        serde_json::json!({ "event": "stopped", "id": id, "time": roster::now(), "agent": done }),
        format_args!("agent {id} stopped ({done})"),
    )
}

/// Does `on_exit` to the agent `id`; returns what was done, in words.
fn finish(registry: &SqliteRegistry, id: &str, on_exit: OnExit) -> Result<&'static str, Failure> {
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

/// `roster reaper`: reaps with `ttl` every `every` until SIGINT or
/// SIGTERM, printing each agent that went offline.
pub(crate) fn reaper(
    registry: &SqliteRegistry,
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
            "reaper: agents silent for more than {ttl_text} go offline; checking every {every_text}"
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
        if !pause(every, &stop, parent) {
            return Ok(());
        }
    }
}
