//! `roster watch`: the change feed on standard output, one line per event,
//! until SIGINT, SIGTERM or a closed output.
//!
//! It follows the library's cursor: it starts after `--since SEQ` (or after
//! the newest event, `now`), prints each event as it comes and moves the
//! cursor past it, so that a watcher restarted with `--since` and the last
//! `seq` it printed goes on with no gap and no duplicate.

use std::io;
use std::os::fd::AsFd as _;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use roster::{AgentRegistry, Error, Event, EventKind};

use super::backend::Registry;
use super::daemon::FileIdentity;
use super::exit::{Failure, Outcome};
use super::output;
use super::printer::{Printer, warn};

/// Where a watch starts: after a given event, or after the newest one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Since {
    /// After the newest event when the watch starts: only what happens from
    /// then on.
    Now,
    /// After the event with this `seq` (0: from the first event, which
    /// fails once the oldest were pruned, like any cursor they were after).
    After(u64),
}

/// Parses `--since`: an event's `seq` (0 or more) or `now`.
pub(crate) fn since(text: &str) -> Result<Since, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("now") {
        return Ok(Since::Now);
    }
    if text.starts_with('-') {
        return Err("must be 0 or more (an event's seq), or now".to_owned());
    }
    text.parse().map(Since::After).map_err(|_| {
        "expected an event's seq (a whole number, 0 or more, as `seq` in `roster --json watch`) or now"
            .to_owned()
    })
}

/// How often the command looks at its stop flag, its output and its file
/// while it waits for events: the longest a signal, a closed output or a
/// deleted file waits to be noticed. Events themselves are printed as soon
/// as they come (about a millisecond after their commit), whatever this is.
const TICK: Duration = Duration::from_millis(100);

/// How long one library `watch` call waits. The watching thread calls it
/// again at once; each call opens a connection of its own, so a long wait
/// keeps an idle watcher from opening one every tick.
const WAIT: Duration = Duration::from_secs(60);

/// The most events printed from one read.
const PAGE: usize = 1000;

/// The pause after a failure that may pass by itself (a busy database, an
/// I/O error, a server that is down), before the next try; it doubles with
/// each failure in a row up to [`LONGEST_RETRY_PAUSE`], so that an outage
/// is reported a few times a minute, not five times a second.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The longest pause between two tries.
const LONGEST_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// `roster watch`: prints every event after `since`, as it is committed by
/// any process, until SIGINT or SIGTERM (exit code 0), a closed output
/// (exit code 0) or an error that does not pass by itself.
///
/// A thread waits for events (the library's `watch`, which blocks) and
/// hands them over; this thread prints them and, every [`TICK`], looks at
/// the signals, the output and the file. Ending leaves the waiting thread
/// where it is: the process ends with it, and a reader that vanishes
/// harms no SQLite file (and a PostgreSQL server closes its connection).
pub(crate) fn run(registry: &Registry, out: &mut Printer, since: Option<Since>) -> Outcome {
    let stop = super::daemon::stop_flag()?;
    let file = FileIdentity::of(registry)?;
    let cursor = match since.unwrap_or(Since::Now) {
        Since::Now => registry.last_event()?,
        Since::After(seq) => {
            // A cursor too old or from elsewhere fails now, before the
            // first line.
            registry.events(seq, 1).map_err(failure)?;
            seq
        }
    };
    if !out.json {
        out.line(format_args!(
            "{} watching {} after event {cursor}; SIGINT or SIGTERM stops",
            output::rfc3339(roster::now()),
            registry.location()
        ))?;
        out.flush()?;
    }
    let pages = wait_for_events(registry.clone(), cursor)?;
    while !stop.load(Ordering::Relaxed) {
        match pages.recv_timeout(TICK) {
            Ok(Ok(events)) => {
                for event in &events {
                    // Each line goes out whole, at once: a reader (or a
                    // watcher killed now) never sees half of one.
                    print(out, event)?;
                    out.flush()?;
                }
            }
            Ok(Err((after, e))) => {
                // A file deleted or replaced fails the read: say that.
                file.check_while("watching", "watch")?;
                if !e.kind().is_transient() {
                    return Err(failure(e));
                }
                warn(format_args!(
                    "roster: {} reading events after {after} failed, will retry: {e}",
                    output::rfc3339(roster::now())
                ));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Failure::io("the thread waiting for events stopped"));
            }
        }
        if output_closed() {
            return Err(Failure::closed_output());
        }
        file.check_while("watching", "watch")?;
    }
    Ok(())
}

/// What the waiting thread hands over: a page of events, or a failure
/// with the cursor it read after.
type Page = Result<Vec<Event>, (u64, Error)>;

/// Starts the thread that waits for the events after `cursor`, page after
/// page, and sends them on; after a failure it pauses (longer after each
/// failure in a row), then tries again from the same cursor. It stops when
/// nobody receives any more.
fn wait_for_events(registry: Registry, mut cursor: u64) -> Result<Receiver<Page>, Failure> {
    let (pages, received) = mpsc::sync_channel(1);
    thread::Builder::new()
        .name("watch".to_owned())
        .spawn(move || {
            let mut pause = RETRY_PAUSE;
            loop {
                let page = registry.watch(cursor, PAGE, WAIT);
                let failed = page.is_err();
                if let Ok(Some(last)) = page.as_ref().map(|events| events.last()) {
                    cursor = last.seq;
                }
                if pages.send(page.map_err(|e| (cursor, e))).is_err() {
                    return;
                }
                if failed {
                    thread::sleep(pause);
                    pause = (pause * 2).min(LONGEST_RETRY_PAUSE);
                } else {
                    pause = RETRY_PAUSE;
                }
            }
        })?;
    Ok(received)
}

/// A library error as the command reports it; a cursor too old says how to
/// read what is still kept.
fn failure(error: Error) -> Failure {
    let hint = match &error {
        Error::CursorTooOld { oldest, .. } => format!(
            "; `roster watch --since {}` prints every event still kept",
            oldest.saturating_sub(1)
        ),
        Error::CursorAhead { .. } => {
            "; `roster watch` (without --since) starts from the newest".to_owned()
        }
        _ => String::new(),
    };
    let mut failure = Failure::from(error);
    failure.message.push_str(&hint);
    failure
}

/// Prints one event: its JSON form (`roster::to_json`), or a line for
/// people that starts with its time and its seq.
fn print(out: &mut Printer, event: &Event) -> Outcome {
    if out.json {
        return out.json(event);
    }
    out.line(format_args!(
        "{} #{} {}: {}",
        output::rfc3339(event.at),
        event.seq,
        event.kind,
        describe(event)
    ))
}

/// What an event says, in words: the agent, the task, the new status, why.
fn describe(event: &Event) -> String {
    let agent = shown(&event.agent_id);
    let task = event
        .task_id
        .as_deref()
        .map_or_else(|| "?".to_owned(), shown);
    let token = event
        .token
        .map_or_else(String::new, |token| format!(" (token {token})"));
    let status = event
        .status
        .map_or_else(|| "?".to_owned(), |status| status.to_string());
    match event.kind {
        EventKind::Registered | EventKind::Updated => format!("{agent} ({status})"),
        EventKind::Status => format!("{agent} is {status}"),
        EventKind::Deregistered | EventKind::Drained | EventKind::Undrained => agent,
        EventKind::Claimed => format!("task {task} on {agent}{token}"),
        EventKind::Released | EventKind::Renewed => format!("task {task} of {agent}{token}"),
        EventKind::Recovered => {
            let reason = event
                .reason
                .map_or_else(|| "?".to_owned(), |reason| reason.to_string());
            format!("task {task} of {agent}, {reason}{token}")
        }
    }
}

/// An id as the line shows it: as it is, or quoted and escaped when it
/// holds a character that would break the line.
fn shown(id: &str) -> String {
    if id.is_empty() || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        format!("{id:?}")
    } else {
        id.to_owned()
    }
}

/// Whether standard output is a pipe or socket whose reader has gone
/// (`roster watch | head -1` once `head` exited): a quiet registry would
/// otherwise keep the command, and the shell that waits for it, until the
/// next event.
fn output_closed() -> bool {
    let stdout = io::stdout();
    let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP)),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_seq_or_now() {
        assert_eq!(since("now"), Ok(Since::Now));
        assert_eq!(since("NOW"), Ok(Since::Now));
        assert_eq!(since("0"), Ok(Since::After(0)));
        assert_eq!(since("42"), Ok(Since::After(42)));
        assert!(since("-1").is_err());
        assert!(since("soon").is_err());
        assert!(since("").is_err());
        assert!(since("18446744073709551616").is_err());
    }

    #[test]
    fn ids_that_would_break_a_line_are_quoted() {
        assert_eq!(shown("builder-1"), "builder-1");
        assert_eq!(shown("two words"), "\"two words\"");
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        assert_eq!(shown(""), "\"\"");
    }
}
