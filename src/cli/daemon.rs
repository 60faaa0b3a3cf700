//! The long-running subcommands: `agent` (a heartbeat sidecar) and `reaper`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use chrono::Utc;
use roster::{AgentInfo, AgentRegistry, Error, SqliteRegistry};
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

/// `roster agent`: registers `agent`, then heartbeats for it every `every`
/// until SIGINT or SIGTERM.
pub(crate) fn agent(
    registry: &SqliteRegistry,
    out: &mut Printer,
    agent: AgentInfo,
    every: Duration,
    deregister_on_exit: bool,
) -> Outcome {
    let stop = stop_flag()?;
    let parent = parent_to_watch();
    let id = agent.id.clone();
    registry.register(agent)?;
    if out.json {
        out.json(&serde_json::json!({ "event": "registered", "id": id, "time": Utc::now() }))?;
    } else {
        out.line(format_args!(
            "agent {id} registered; heartbeat every {} until SIGINT or SIGTERM",
            humantime::format_duration(every)
        ))?;
    }
    out.flush()?;
    while pause(every, &stop, parent) {
        match registry.heartbeat(&id) {
            Ok(()) => {}
            Err(Error::NotFound(_)) => {
                return Err(Failure::new(
                    Exit::NotFound,
                    "not_found",
                    format!("agent {id} was deregistered by someone else; stopping"),
                ));
            }
            Err(e) if e.kind().is_transient() => warn(format_args!(
                "roster: heartbeat of {id} failed, will retry: {e}"
            )),
            Err(e) => {
                return Err(Failure::from(e).stopping(format_args!("heartbeat of {id}")));
            }
        }
    }
    if deregister_on_exit {
        match registry.deregister(&id) {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if out.json {
        out.json(&serde_json::json!({ "event": "stopped", "id": id, "time": Utc::now() }))
    } else {
        out.line(format_args!("agent {id} stopped"))
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
    if !out.json {
        out.line(format_args!(
            "reaper: agents silent for more than {} go offline; checking every {}",
            humantime::format_duration(ttl),
            humantime::format_duration(every)
        ))?;
        out.flush()?;
    }
    loop {
        match registry.reap(ttl) {
            Ok(reaped) => {
                let now = Utc::now();
                for id in reaped {
                    if out.json {
                        out.json(
                            &serde_json::json!({ "event": "offline", "id": id, "time": now }),
                        )?;
                    } else {
                        out.line(format_args!(
                            "{} {id} went offline",
                            now.format("%H:%M:%S%.3f")
                        ))?;
                    }
                }
                out.flush()?;
            }
            Err(e) if e.kind().is_transient() => {
                warn(format_args!("roster: reap failed, will retry: {e}"))
            }
            Err(e) => return Err(Failure::from(e).stopping("reap")),
        }
        if !pause(every, &stop, parent) {
            return Ok(());
        }
    }
}
