//! `roster watch`, driven as a user would: a real watcher process on a real
//! file, changed by other processes (this one, the `sqlite3` shell, writer
//! children); its text and JSON lines, `--since`, a closed output, signals,
//! and a watcher killed with SIGKILL over and over and restarted from the
//! last event it printed, which misses nothing and repeats nothing.
//!
//! A watcher is known to be up when it printed its first line (text mode),
//! or does not need to be (`--since` names where it starts); nothing here
//! waits for time to pass.

#![cfg(feature = "cli")]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{OnError, ROSTER, Rng, Running, TempRegistry, roster_command, sigterm};
use roster::{
    AgentInfo, AgentRegistry, AgentStatus, Error, Event, EventKind, Result, SqlAccess,
    SqliteRegistry, Task,
};

fn agent(id: &str, max_load: u32) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        max_load,
        last_heartbeat: roster::now(),
        ..AgentInfo::default()
    }
}

/// Starts `roster --db DB args...` with its output read line by line.
fn start(db: &Path, args: &[&str]) -> Running {
    Running::spawn(
        format!("roster {}", args.join(" ")),
        roster_command(db, args),
    )
}

/// Every event after `after`, read page by page through the library.
fn events_after(registry: &SqliteRegistry, mut after: u64) -> Result<Vec<Event>> {
    let mut all = Vec::new();
    loop {
        let page = registry.events(after, roster::MAX_EVENTS_PAGE)?;
        let Some(last) = page.last() else {
            return Ok(all);
        };
        after = last.seq;
        all.extend(page);
    }
}

/// The lines a watcher prints for `events`, as JSON.
fn json_lines(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| roster::to_json(e).expect("an event is JSON"))
        .collect()
}

/// The time a text line starts with: RFC 3339, UTC, to the millisecond.
fn stamp(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One of each kind of event, from this process (another process than the
/// watcher), and from the `sqlite3` shell: `b` registered, claimed,
/// renewed, released, drained, undrained, registered again, set busy, a
/// claim recovered from it once offline, deregistered.
fn one_of_each_kind(registry: &SqliteRegistry) -> Result<()> {
    registry.register(agent("b", 2))?;
    let task = Task {
        id: "build-1".into(),
        ..Task::default()
    };
    let claimed = registry.claim(&task, Some(Duration::from_secs(60)))?;
    registry.renew(
        "build-1",
        Some(claimed.claim.token),
        Duration::from_secs(120),
    )?;
    registry.release("build-1", Some(claimed.claim.token))?;
    registry.drain("b", true)?;
    registry.drain("b", false)?;
    registry.register(agent("b", 3))?;
    let shell = common::sqlite3(
        registry.path(),
        "UPDATE agents SET status = 'busy' WHERE id = 'b';",
        OnError::Stop,
    );
    assert!(
        shell.status.success(),
        "{}",
        String::from_utf8_lossy(&shell.stderr)
    );
    let task = Task {
        id: "build 2".into(),
        ..Task::default()
    };
    registry.set_status("b", AgentStatus::Available)?;
    registry.claim(&task, None)?;
    registry.set_status("b", AgentStatus::Offline)?;
    assert_eq!(registry.recover()?.len(), 1);
    registry.deregister("b")?;
    Ok(())
}

/// The text lines (after their time) that [`one_of_each_kind`] makes a
/// watcher print, the first event being `first`.
fn one_of_each_kind_text(first: u64) -> Vec<String> {
    [
        "registered: b (available)",
        "claimed: task build-1 on b (token 1)",
        "renewed: task build-1 of b (token 1)",
        "released: task build-1 of b (token 1)",
        "drained: b",
        "undrained: b",
        "updated: b (available)",
        "status: b is busy",
        "status: b is available",
        "claimed: task \"build 2\" on b (token 2)",
        "status: b is offline",
        "recovered: task \"build 2\" of b, agent_offline (token 2)",
        "deregistered: b",
    ]
    .iter()
    .zip(first..)
    .map(|(text, seq)| format!("#{seq} {text}"))
    .collect()
}

#[test]
fn text_lines_show_what_other_processes_change_from_now_on() -> Result<()> {
    let registry = TempRegistry::new();
    // `a` takes no claim: they go to `b`.
    registry.register(agent("a", 1))?;
    registry.drain("a", true)?;
    let before = registry.last_event()?;
    let mut watcher = start(registry.path(), &["watch"]);
    let first = watcher.expect_line("its first line");
    let (time, rest) = first.split_once(' ').expect("a time, then words");
    chrono::DateTime::parse_from_rfc3339(time).expect("RFC 3339");
    assert_eq!(
        rest,
        format!(
            "watching {} after event {before}; SIGINT or SIGTERM stops",
            registry.path().display()
        )
    );
    one_of_each_kind(&registry)?;
    let events = events_after(&registry, before)?;
    let expected = one_of_each_kind_text(before + 1);
    assert_eq!(events.len(), expected.len());
    for (event, text) in events.iter().zip(&expected) {
        // Nothing from before the watch started: the first line is the
        // first event after it.
        let line = watcher.expect_line(text);
        assert_eq!(line, format!("{} {text}", stamp(event.at)));
    }
    sigterm(&watcher);
    let done = watcher.finish();
    done.expect_success("roster watch");
    assert!(done.stdout.is_empty(), "{:?}", done.stdout);
    assert!(done.stderr.is_empty(), "{}", done.stderr);
    Ok(())
}

#[test]
fn json_lines_are_the_library_events_one_per_line() -> Result<()> {
    let registry = TempRegistry::new();
    // `a` takes no claim: they go to `b`.
    registry.register(agent("a", 1))?;
    registry.drain("a", true)?;
    let since = registry.last_event()?;
    let mut watcher = start(
        registry.path(),
        &["--json", "watch", "--since", &since.to_string()],
    );
    one_of_each_kind(&registry)?;
    let events = events_after(&registry, since)?;
    for (event, expected) in events.iter().zip(json_lines(&events)) {
        let line = watcher.expect_line("an event");
        assert_eq!(line, expected);
        // The shape a script relies on.
        let object: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        let object = object.as_object().expect("an object");
        assert_eq!(object["seq"], event.seq);
        let at = object["at"].as_str().expect("at is text");
        let at = chrono::DateTime::parse_from_rfc3339(at).expect("at is RFC 3339");
        assert_eq!(at, event.at);
        assert_eq!(object["kind"], event.kind.as_str());
        assert_eq!(object["agent_id"], "b");
        let has = |key: &str| object.contains_key(key);
        let claim = matches!(
            event.kind,
            EventKind::Claimed | EventKind::Released | EventKind::Renewed | EventKind::Recovered
        );
        assert_eq!(has("task_id"), claim, "{line}");
        assert_eq!(has("token"), claim, "{line}");
        assert_eq!(
            has("status"),
            matches!(
                event.kind,
                EventKind::Registered | EventKind::Updated | EventKind::Status
            ),
            "{line}"
        );
        assert_eq!(has("reason"), event.kind == EventKind::Recovered, "{line}");
    }
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    for kind in EventKind::ALL {
        assert!(kinds.contains(&kind), "no {kind} event among {kinds:?}");
    }
    sigterm(&watcher);
    let done = watcher.finish();
    done.expect_success("roster --json watch");
    assert!(done.stdout.is_empty() && done.stderr.is_empty());
    Ok(())
}

#[test]
fn since_starts_after_the_event_it_names() -> Result<()> {
    let registry = TempRegistry::new();
    for i in 0..5 {
        registry.register(agent(&format!("a{i}"), 1))?;
    }
    assert_eq!(registry.last_event()?, 5);
    for since in [0, 3, 5] {
        let mut watcher = start(
            registry.path(),
            &["--json", "watch", "--since", &since.to_string()],
        );
        let kept = json_lines(&events_after(&registry, since)?);
        assert_eq!(kept.len() as u64, registry.last_event()? - since);
        for expected in &kept {
            assert_eq!(&watcher.expect_line("an event"), expected);
        }
        // Then what comes next, and nothing twice.
        let status = if since == 3 {
            AgentStatus::Available
        } else {
            AgentStatus::Busy
        };
        registry.set_status("a0", status)?;
        let next = events_after(&registry, registry.last_event()? - 1)?;
        assert_eq!(watcher.expect_line("the next event"), json_lines(&next)[0]);
        sigterm(&watcher);
        let done = watcher.finish();
        done.expect_success("roster watch --since");
        assert!(done.stdout.is_empty(), "{:?}", done.stdout);
    }
    // `now` is the default, said aloud.
    let newest = registry.last_event()?;
    let mut watcher = start(registry.path(), &["watch", "--since", "now"]);
    assert!(
        watcher
            .expect_line("its first line")
            .contains(&format!("after event {newest};"))
    );
    registry.deregister("a4")?;
    let line = watcher.expect_line("the next event");
    assert!(
        line.ends_with(&format!(" #{} deregistered: a4", newest + 1)),
        "{line}"
    );
    sigterm(&watcher);
    watcher.finish().expect_success("roster watch --since now");
    Ok(())
}

#[test]
fn a_cursor_that_cannot_be_resumed_is_a_clear_error() -> Result<()> {
    let registry = TempRegistry::new();
    registry.query(
        "UPDATE settings SET value = 3 WHERE name = 'events_keep'",
        SqlAccess::ReadWrite,
    )?;
    // Events are pruned by every 64th: the 64th keeps 62 to 64.
    for i in 0..64 {
        registry.register(agent(&format!("a{i}"), 1))?;
    }
    assert!(matches!(
        registry.events(1, 1),
        Err(Error::CursorTooOld { oldest: 62, .. })
    ));
    let cases: [(&[&str], i32, &str); 7] = [
        (
            &["watch", "--since", "1"],
            11,
            "roster: cursor 1 is older than the oldest kept event 62: list, then watch from 62; `roster watch --since 61` prints every event still kept",
        ),
        // 0 is the cursor before the first event: once that was pruned, it
        // is too old like any other.
        (
            &["watch", "--since", "0"],
            11,
            "roster: cursor 0 is older than the oldest kept event 62: list, then watch from 62; `roster watch --since 61` prints every event still kept",
        ),
        // One below the oldest cursor that resumes (61, as the message
        // says; the watcher below starts there).
        (
            &["watch", "--since", "60"],
            11,
            "roster: cursor 60 is older than the oldest kept event 62: list, then watch from 62; `roster watch --since 61` prints every event still kept",
        ),
        (
            &["watch", "--since", "65"],
            11,
            "roster: cursor 65 is ahead of the newest event 64: it is not a cursor of this registry; `roster watch` (without --since) starts from the newest",
        ),
        (
            &["watch", "--since", "-1"],
            2,
            "roster: invalid value '-1' for '--since <SEQ|now>': must be 0 or more (an event's seq), or now (see roster --help)",
        ),
        (
            &["watch", "--since", "yesterday"],
            2,
            "roster: invalid value 'yesterday' for '--since <SEQ|now>': expected an event's seq (a whole number, 0 or more, as `seq` in `roster --json watch`) or now (see roster --help)",
        ),
        (
            &["--db", "typo.db", "watch"],
            7,
            "roster: no registry at typo.db; check --db (or $ROSTER_DB): commands that only read never create a registry, `roster register` does",
        ),
    ];
    for (args, code, message) in cases {
        // The registry by $ROSTER_DB, so that --db can name another file.
        let out = Command::new(ROSTER)
            .args(args)
            .env("ROSTER_DB", registry.path())
            .current_dir(registry.dir())
            .stdin(Stdio::null())
            .output()
            .expect("run roster");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end(), message, "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?} printed something");
    }
    assert!(!registry.dir().join("typo.db").exists());
    // With --json, the error is one object.
    let out = roster_command(registry.path(), &["--json", "watch", "--since", "1"])
        .output()
        .expect("run roster");
    let error: serde_json::Value = serde_json::from_slice(&out.stderr).expect("JSON error");
    assert_eq!(error["kind"], "conflict");
    assert_eq!(error["exit_code"], 11);
    // The cursor the message offers works.
    let mut watcher = start(registry.path(), &["--json", "watch", "--since", "61"]);
    let kept = json_lines(&events_after(&registry, 61)?);
    for expected in &kept {
        assert_eq!(&watcher.expect_line("a kept event"), expected);
    }
    sigterm(&watcher);
    watcher.finish().expect_success("roster watch --since 61");
    Ok(())
}

/// Starts a watcher whose standard output is a pipe this test reads and
/// then closes; returns the child and the reading end.
fn watch_into_pipe(
    db: &Path,
    args: &[&str],
) -> (std::process::Child, BufReader<std::io::PipeReader>) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    let child = roster_command(db, args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start roster watch");
    // The command holds the only writing end now.
    (child, BufReader::new(reader))
}

/// Waits for `child` to end by itself and returns how it ended and what it
/// wrote on stderr.
fn wait_for_end(mut child: std::process::Child) -> (std::process::ExitStatus, String) {
    let status = common::eventually("the watcher ending by itself", || {
        child.try_wait().expect("try_wait")
    });
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr).expect("stderr");
    }
    (status, stderr)
}

#[test]
fn a_closed_output_ends_the_watch_quietly() -> Result<()> {
    let registry = TempRegistry::new();
    registry.register(agent("a", 1))?;
    // `roster watch | head -1` on a registry that then stays quiet: the
    // watcher notices that nobody reads it any more without waiting for
    // the next event.
    let (child, mut reader) = watch_into_pipe(registry.path(), &["watch"]);
    let mut first = String::new();
    reader.read_line(&mut first).expect("the first line");
    assert!(first.contains("watching"), "{first}");
    drop(reader);
    let events = registry.last_event()?;
    let (status, stderr) = wait_for_end(child);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(
        registry.last_event()?,
        events,
        "nothing was written meanwhile"
    );

    // A reader that goes away while events keep coming.
    let (child, mut reader) =
        watch_into_pipe(registry.path(), &["--json", "watch", "--since", "0"]);
    let mut first = String::new();
    reader.read_line(&mut first).expect("the first event");
    drop(reader);
    for i in 0..20 {
        registry.set_status("a", [AgentStatus::Busy, AgentStatus::Available][i % 2])?;
    }
    let (status, stderr) = wait_for_end(child);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    Ok(())
}

#[test]
fn sigint_and_sigterm_end_the_watch_with_status_0() -> Result<()> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let registry = TempRegistry::new();
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        for json in [false, true] {
            let since = registry.last_event()?.to_string();
            let args: &[&str] = if json {
                &["--json", "watch", "--since", &since]
            } else {
                &["watch"]
            };
            let mut watcher = start(registry.path(), args);
            if json {
                // No first line in JSON: an event says it is up.
                registry.register(agent("a", 1))?;
                let line = watcher.expect_line("an event");
                assert!(line.contains("\"agent_id\":\"a\""), "{line}");
                registry.deregister("a")?;
                watcher.expect_line("an event");
            } else {
                watcher.expect_line("its first line");
            }
            kill(Pid::from_raw(watcher.id() as i32), signal).expect("signal");
            let done = watcher.finish();
            done.expect_success(&format!("roster watch stopped by {signal}"));
            assert!(done.stderr.is_empty(), "{signal}: {}", done.stderr);
        }
    }
    Ok(())
}

#[test]
fn a_watch_stops_when_its_file_is_deleted() -> Result<()> {
    let registry = TempRegistry::new();
    let mut watcher = start(registry.path(), &["watch"]);
    watcher.expect_line("its first line");
    std::fs::remove_file(registry.path()).expect("delete the registry file");
    let done = watcher.finish();
    assert_eq!(done.status.code(), Some(7), "{}", done.stderr);
    assert!(
        done.stderr
            .contains("was deleted while this process was watching it"),
        "{}",
        done.stderr
    );
    Ok(())
}

#[test]
fn watch_help_has_an_example() {
    let out = Command::new(ROSTER)
        .args(["watch", "--help"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Example"), "{help}");
    assert!(help.contains("--since <SEQ|now>"), "{help}");
}

// ---------------------------------------------------------------- children

/// The agents a writer child works on.
const AGENTS_PER_WRITER: u64 = 4;

/// The entry point of the child processes: a writer that changes the
/// registry at random (every kind of event) until its stdin closes.
#[test]
#[ignore = "helper: the watch tests run it as a child process"]
fn child() {
    let Some(role) = common::child::role() else {
        return;
    };
    assert_eq!(role, "writer");
    let db = std::path::PathBuf::from(common::child::var(common::child::DB_VAR));
    let me = common::child::var("WRITER");
    let registry = SqliteRegistry::open(&db).expect("open");
    let mut rng = Rng::from_env();
    let mut orders = common::child::Orders::listen();
    common::child::report("ready");
    let mut tasks = 0_u64;
    while !orders.stopped() {
        orders.before_operation();
        let id = format!("{me}-{}", rng.below(AGENTS_PER_WRITER));
        let done = match rng.below(9) {
            0 | 1 => registry.register(agent(&id, 2)),
            2 => registry.deregister(&id),
            3 => registry.set_status(
                &id,
                [
                    AgentStatus::Available,
                    AgentStatus::Busy,
                    AgentStatus::Offline,
                ][rng.below(3) as usize],
            ),
            4 => registry.drain(&id, rng.below(2) == 0),
            5 => {
                tasks += 1;
                let task = Task {
                    id: format!("{me}-task-{tasks}"),
                    ..Task::default()
                };
                let lease = (rng.below(2) == 0).then_some(Duration::from_millis(50));
                registry.claim(&task, lease).map(drop)
            }
            6 => registry
                .claims(Some(&id))
                .and_then(|claims| match claims.first() {
                    Some(c) => registry.release(&c.task_id, Some(c.token)).map(drop),
                    None => Ok(()),
                }),
            7 => registry
                .claims(Some(&id))
                .and_then(|claims| match claims.first() {
                    Some(c) => registry
                        .renew(&c.task_id, Some(c.token), Duration::from_secs(1))
                        .map(drop),
                    None => Ok(()),
                }),
            _ => registry.recover().map(drop),
        };
        match done {
            // What racing writers are told: fine, the next try differs.
            Ok(())
            | Err(Error::NotFound(_))
            | Err(Error::NoEligibleAgent)
            | Err(Error::StaleClaim { .. }) => {}
            Err(e) => panic!("writer {me}: {e}"),
        }
        orders.after_operation();
    }
    common::child::report("stopped");
}

/// The `seq` of a JSON line of `roster --json watch`.
fn seq_of(line: &str) -> u64 {
    let value: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"));
    value["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("{line:?} has no seq"))
}

#[test]
fn watchers_killed_at_random_and_restarted_miss_nothing_and_repeat_nothing() -> Result<()> {
    const WRITERS: usize = 3;
    const KILLS: usize = 12;
    let registry = TempRegistry::new();
    let mut rng = Rng::from_env();
    let start_cursor = registry.last_event()?;
    let mut writers: Vec<Running> = (0..WRITERS)
        .map(|w| {
            common::child::spawn(
                "writer",
                registry.path(),
                &mut rng,
                &[("WRITER", format!("w{w}"))],
            )
        })
        .collect();
    for writer in &mut writers {
        writer.expect_report("ready");
    }
    // Every line any watcher printed, in the order they printed them.
    let mut printed: Vec<String> = Vec::new();
    let mut cursor = start_cursor;
    for _ in 0..KILLS {
        let mut watcher = start(
            registry.path(),
            &["--json", "watch", "--since", &cursor.to_string()],
        );
        // Killed after a random number of lines: 0 kills it as it starts
        // (before it opened the file, or while it reads the first page).
        let lines = rng.below(40);
        for _ in 0..lines {
            printed.push(watcher.expect_line("an event"));
        }
        let gone = watcher.kill();
        printed.extend(gone.stdout);
        if let Some(last) = printed.last() {
            cursor = seq_of(last);
        }
    }
    // Enough events that the watchers had work while they were killed.
    common::eventually("the writers writing 300 events", || {
        (registry.last_event().ok()? >= start_cursor + 300).then_some(())
    });
    for writer in writers {
        let done = writer.finish();
        done.expect_success("writer");
        assert_eq!(done.reports(), ["stopped"]);
    }
    // The last watcher runs until it printed the end, then stops by SIGTERM.
    let end = registry.last_event()?;
    let mut watcher = start(
        registry.path(),
        &["--json", "watch", "--since", &cursor.to_string()],
    );
    while cursor < end {
        let line = watcher.expect_line("an event");
        cursor = seq_of(&line);
        printed.push(line);
    }
    sigterm(&watcher);
    let done = watcher.finish();
    done.expect_success("the last watcher");
    assert!(done.stdout.is_empty(), "{:?}", done.stdout);

    let expected = json_lines(&events_after(&registry, start_cursor)?);
    assert_eq!(expected.len() as u64, end - start_cursor);
    let seqs: Vec<u64> = printed.iter().map(|l| seq_of(l)).collect();
    let gaps_or_duplicates: Vec<(u64, u64)> = seqs
        .windows(2)
        .filter(|w| w[1] != w[0] + 1)
        .map(|w| (w[0], w[1]))
        .collect();
    assert!(
        gaps_or_duplicates.is_empty(),
        "watchers printed these seqs one after the other: {gaps_or_duplicates:?}"
    );
    assert_eq!(printed, expected);
    common::assert_healthy(registry.path());
    Ok(())
}
