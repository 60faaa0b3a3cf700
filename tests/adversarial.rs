//! An adversarial pass: rows typed by hand into the real `sqlite3` shell,
//! ad-hoc SQL, and other processes, each trying to make the registry answer
//! wrongly or fail for everyone. Each test is named after what it shows and
//! fails while the problem is there.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::{OnError, TempRegistry};
use roster::{
    AgentInfo, AgentRegistry, AgentStatus, Error, ErrorKind, EventKind, Result, SqlAccess,
    SqlOptions, SqliteOptions, SqliteRegistry, Task,
};

// ---------------------------------------------------------------- helpers

/// An agent seen now, with four slots and the given capabilities.
fn agent(id: &str, caps: &[&str]) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        max_load: 4,
        capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
        last_heartbeat: roster::now(),
        ..AgentInfo::default()
    }
}

/// A task with one id and the given labels.
fn task(id: &str, labels: &[&str]) -> Task {
    Task {
        id: id.into(),
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        ..Task::default()
    }
}

/// Types `sql` into the real `sqlite3` shell (stopping at the first error):
/// `Ok` when the shell accepted every statement, the shell's error otherwise.
fn shell(registry: &TempRegistry, sql: &str) -> std::result::Result<(), String> {
    let out = common::sqlite3(registry.path(), sql, OnError::Stop);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() && stderr.is_empty() {
        Ok(())
    } else {
        Err(stderr)
    }
}

/// The value of `agents.current_load` and the claims the agent holds.
fn load_and_held(registry: &TempRegistry, id: &str) -> Result<(u32, usize)> {
    Ok((
        registry.get(id)?.current_load,
        registry.claims(Some(id))?.len(),
    ))
}

/// The `sqlite3` shell holding the registry's write lock in an open
/// transaction, until dropped.
struct LockHolder {
    child: std::process::Child,
}

impl LockHolder {
    /// Starts the shell, takes the write lock and returns once the shell
    /// printed that it holds it.
    fn take(registry: &TempRegistry) -> Self {
        let mut child = Command::new("sqlite3")
            .arg("-batch")
            .arg(registry.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the sqlite3 shell must be installed");
        let stdin = child.stdin.as_mut().expect("stdin");
        stdin
            .write_all(b"BEGIN IMMEDIATE;\nUPDATE agents SET name = 'locked';\n.print locked\n")
            .expect("type the SQL");
        stdin.flush().expect("flush");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("read the shell's line");
        assert_eq!(line.trim(), "locked", "the shell must report the lock");
        Self { child }
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"ROLLBACK;\n");
        }
        let _ = self.child.wait();
    }
}

// ------------------------------------------- REPLACE skips delete triggers

/// `INSERT OR REPLACE INTO agents` deletes the old row without firing the
/// delete triggers (recursive_triggers is off), and the new row's
/// `current_load` is never checked against the claims it holds: the agent
/// holds a claim with a load of 0, and releasing that claim then fails.
#[test]
fn replace_into_agents_by_hand_leaves_its_claims_uncounted_and_unreleasable() -> Result<()> {
    let registry = TempRegistry::new();
    registry.register(agent("a", &[]))?;
    let claimed = registry.claim(&task("t1", &[]), None)?;
    let _ = shell(
        &registry,
        "INSERT OR REPLACE INTO agents (id, name, status, last_heartbeat, current_load, max_load)
         VALUES ('a', 'a', 'available', strftime('%Y-%m-%d %H:%M:%f000000', 'now'), 0, 4);",
    );
    let (load, held) = load_and_held(&registry, "a")?;
    assert!(
        load as usize >= held,
        "agent a holds {held} claim(s) but its current_load is {load}"
    );
    if let Err(e) = registry.release("t1", Some(claimed.claim.token)) {
        panic!("the holder cannot release its claim: {e}");
    }
    Ok(())
}

/// The same hand REPLACE of one agent makes `recover` (one DELETE of every
/// due claim) fail for every claim of every agent, for good.
#[test]
fn replace_into_agents_by_hand_makes_recover_fail_for_every_claim() -> Result<()> {
    let registry = TempRegistry::new();
    registry.register(agent("a", &["x"]))?;
    registry.register(agent("b", &["y"]))?;
    registry.claim(&task("on-a", &["x"]), None)?;
    registry.claim(&task("on-b", &["y"]), None)?;
    let _ = shell(
        &registry,
        "INSERT OR REPLACE INTO agents (id, name, status, last_heartbeat, current_load, max_load)
         VALUES ('a', 'a', 'offline', strftime('%Y-%m-%d %H:%M:%f000000', 'now'), 0, 4);",
    );
    registry.set_status("b", AgentStatus::Offline)?;
    let recovered = registry.recover().unwrap_or_else(|e| {
        panic!("recover failed for every claim after one agent row was replaced: {e}")
    });
    let tasks: Vec<&str> = recovered.iter().map(|r| r.claim.task_id.as_str()).collect();
    assert!(tasks.contains(&"on-b"), "recovered {tasks:?}");
    Ok(())
}

/// `INSERT OR REPLACE INTO claims` moves a held task to another agent: the
/// old row goes without its delete trigger, so the old agent keeps the slot
/// with no claim behind it.
#[test]
fn replace_into_claims_by_hand_leaves_the_old_agents_slot_taken() -> Result<()> {
    let registry = TempRegistry::new();
    registry.register(agent("a", &["x"]))?;
    registry.register(agent("b", &["y"]))?;
    registry.claim(&task("t1", &["x"]), None)?;
    let _ = shell(
        &registry,
        "INSERT OR REPLACE INTO claims (task_id, agent_id, token, claimed_at)
         VALUES ('t1', 'b', (SELECT value + 1 FROM counters WHERE name = 'claim_token'),
                 strftime('%Y-%m-%d %H:%M:%f000000', 'now'));",
    );
    for id in ["a", "b"] {
        let (load, held) = load_and_held(&registry, id)?;
        assert_eq!(
            load as usize, held,
            "agent {id}: current_load {load} but {held} claim(s) held (no untracked load was registered)"
        );
    }
    Ok(())
}

/// The same hand REPLACE writes a `claimed` event for the new holder and no
/// event at all for the claim that went: a feed reader believes task t1 is
/// held twice.
#[test]
fn replace_into_claims_by_hand_writes_no_event_for_the_claim_it_removes() -> Result<()> {
    let registry = TempRegistry::new();
    registry.register(agent("a", &["x"]))?;
    registry.register(agent("b", &["y"]))?;
    let first = registry.claim(&task("t1", &["x"]), None)?;
    let start = registry.last_event()?;
    let replaced = shell(
        &registry,
        "INSERT OR REPLACE INTO claims (task_id, agent_id, token, claimed_at)
         VALUES ('t1', 'b', (SELECT value + 1 FROM counters WHERE name = 'claim_token'),
                 strftime('%Y-%m-%d %H:%M:%f000000', 'now'));",
    );
    let events = registry.events(start, 100)?;
    let claimed_on_b = events
        .iter()
        .any(|e| e.kind == EventKind::Claimed && e.agent_id == "b");
    let gone_from_a = events.iter().any(|e| {
        matches!(e.kind, EventKind::Released | EventKind::Recovered)
            && e.token == Some(first.claim.token)
    });
    assert!(
        !claimed_on_b || gone_from_a,
        "the feed shows t1 claimed on b without t1 (token {}) leaving a: {events:?} (shell: {replaced:?})",
        first.claim.token
    );
    Ok(())
}

/// `INSERT OR REPLACE INTO counters` resets the token counter (the
/// "counters cannot be deleted" trigger is a delete trigger, which REPLACE
/// does not fire): the next claim of the same task gets the token its
/// recovered predecessor had, and the slow predecessor's stale token is
/// accepted and releases its successor's claim.
#[test]
fn replace_into_counters_by_hand_makes_tokens_go_backwards_and_a_stale_token_accepted() -> Result<()>
{
    let registry = TempRegistry::new();
    registry.register(agent("a", &[]))?;
    let slow = registry.claim(&task("job", &[]), None)?;
    registry.set_status("a", AgentStatus::Offline)?;
    assert_eq!(registry.recover()?.len(), 1);
    registry.heartbeat("a")?;
    let _ = shell(
        &registry,
        "INSERT OR REPLACE INTO counters (name, value) VALUES ('claim_token', 0);",
    );
    let successor = registry.claim(&task("job", &[]), None)?;
    assert!(
        successor.claim.token > slow.claim.token,
        "token went backwards: {} after {}",
        successor.claim.token,
        slow.claim.token
    );
    assert!(matches!(
        registry.release("job", Some(slow.claim.token)),
        Err(Error::StaleClaim { .. })
    ));
    Ok(())
}

/// `INSERT OR REPLACE INTO counters` on the event counter makes every write
/// that produces an event (register, claim, release, reap...) fail with a
/// UNIQUE error, for every process.
#[test]
fn replace_into_the_event_counter_by_hand_makes_every_register_fail() -> Result<()> {
    let registry = TempRegistry::new();
    registry.register(agent("a", &[]))?;
    let _ = shell(
        &registry,
        "INSERT OR REPLACE INTO counters (name, value) VALUES ('event_seq', 0);",
    );
    registry.register(agent("b", &[]))?;
    assert_eq!(registry.events(0, 100)?.len(), 2);
    Ok(())
}

// ------------------------------------------------------------ counters

/// `counters_only_grow` watches `value` only: renaming the counter is
/// accepted, the claim token becomes NULL for every claim, and a new
/// `claim_token` row starting at 0 can then be inserted: tokens go back.
#[test]
fn renaming_the_token_counter_by_hand_breaks_claims_and_lets_tokens_go_backwards() -> Result<()> {
    let registry = TempRegistry::new();
    registry.register(agent("a", &[]))?;
    let first = registry.claim(&task("t1", &[]), None)?;
    registry.release("t1", Some(first.claim.token))?;
    let renamed = shell(
        &registry,
        "UPDATE counters SET name = 'old_claim_token' WHERE name = 'claim_token';",
    );
    let claimed = registry.claim(&task("t2", &[]), None).unwrap_or_else(|e| {
        panic!("every claim fails after the counter was renamed ({renamed:?}): {e}")
    });
    registry.release("t2", Some(claimed.claim.token))?;
    let _ = shell(
        &registry,
        "INSERT INTO counters (name, value) VALUES ('claim_token', 0);",
    );
    let again = registry.claim(&task("t3", &[]), None)?;
    assert!(
        again.claim.token > claimed.claim.token,
        "token went backwards: {} after {}",
        again.claim.token,
        claimed.claim.token
    );
    Ok(())
}

/// Renaming the event counter by hand is accepted; events keep being
/// written (seq falls back to the rowid), but the feed cannot be read at
/// all any more.
#[test]
fn renaming_the_event_counter_by_hand_makes_the_feed_unreadable() -> Result<()> {
    let registry = TempRegistry::new();
    registry.register(agent("a", &[]))?;
    let renamed = shell(
        &registry,
        "UPDATE counters SET name = 'old_event_seq' WHERE name = 'event_seq';",
    );
    registry.register(agent("b", &[]))?;
    let page = registry.events(0, 100).unwrap_or_else(|e| {
        panic!("the feed fails after the event counter was renamed ({renamed:?}): {e}")
    });
    assert_eq!(page.len(), 2);
    Ok(())
}

/// The token counter accepts i64::MAX, and counters only grow: from then on
/// every claim fails ("cannot store REAL value in INTEGER column"), for
/// good, with no way back short of dropping triggers.
#[test]
fn a_huge_token_counter_typed_by_hand_makes_every_claim_fail_for_good() -> Result<()> {
    let registry = TempRegistry::new();
    registry.register(agent("a", &[]))?;
    let set = shell(
        &registry,
        "UPDATE counters SET value = 9223372036854775807 WHERE name = 'claim_token';",
    );
    let claim = registry.claim(&task("t1", &[]), None);
    assert!(
        set.is_err() || claim.is_ok(),
        "the shell accepted the counter and every claim now fails: {claim:?}"
    );
    Ok(())
}

/// The event counter accepts i64::MAX: from then on every register,
/// deregister, claim, release, reap and recover fails ("datatype
/// mismatch"), for good.
#[test]
fn a_huge_event_counter_typed_by_hand_makes_every_register_fail_for_good() -> Result<()> {
    let registry = TempRegistry::new();
    registry.register(agent("a", &[]))?;
    let set = shell(
        &registry,
        "UPDATE counters SET value = 9223372036854775807 WHERE name = 'event_seq';",
    );
    let register = registry.register(agent("b", &[]));
    assert!(
        set.is_err() || register.is_ok(),
        "the shell accepted the counter and every register now fails: {register:?}"
    );
    Ok(())
}

/// A failure that no retry can cure (the counter is at its maximum and can
/// only grow) is reported as a transient storage error: daemons and callers
/// that retry transient errors retry it forever.
#[test]
fn a_claim_that_can_never_succeed_is_reported_as_transient() -> Result<()> {
    let registry = TempRegistry::new();
    registry.register(agent("a", &[]))?;
    let _ = shell(
        &registry,
        "UPDATE counters SET value = 9223372036854775807 WHERE name = 'claim_token';",
    );
    if let Err(e) = registry.claim(&task("t1", &[]), None) {
        assert!(
            !e.kind().is_transient(),
            "{e} is reported as {:?}, worth retrying",
            e.kind()
        );
    }
    Ok(())
}

// ------------------------------------------------------------- the feed

/// The `events` table checks only `kind`: a row typed by hand with a time
/// that is not a time, invalid UTF-8, an unknown status or reason, or a
/// negative token is stored, and from then on every reader of the feed from
/// before it fails, until retention prunes the row.
#[test]
fn an_undecodable_event_typed_by_hand_blocks_the_feed_for_every_reader() -> Result<()> {
    let rows = [
        (
            "a time that is not a time",
            "'yesterday', 'status', 'a', NULL, 'offline', NULL, NULL",
        ),
        (
            "invalid UTF-8 in agent_id",
            "strftime('%Y-%m-%d %H:%M:%f000000', 'now'), 'deregistered', CAST(x'ff' AS TEXT), NULL, NULL, NULL, NULL",
        ),
        (
            "an unknown status",
            "strftime('%Y-%m-%d %H:%M:%f000000', 'now'), 'status', 'a', NULL, 'sleeping', NULL, NULL",
        ),
        (
            "an unknown reason",
            "strftime('%Y-%m-%d %H:%M:%f000000', 'now'), 'recovered', 'a', 't', NULL, 'bored', 1",
        ),
        (
            "a negative token",
            "strftime('%Y-%m-%d %H:%M:%f000000', 'now'), 'claimed', 'a', 't', NULL, NULL, -1",
        ),
    ];
    let mut broken = Vec::new();
    for (what, values) in rows {
        let registry = TempRegistry::new();
        registry.register(agent("a", &[]))?;
        let typed = shell(
            &registry,
            &format!(
                "INSERT INTO events (seq, at, kind, agent_id, task_id, status, reason, token)
                 VALUES ((SELECT value + 1 FROM counters WHERE name = 'event_seq'), {values});"
            ),
        );
        registry.register(agent("b", &[]))?;
        if let (Ok(()), Err(e)) = (&typed, registry.events(0, 100)) {
            broken.push(format!("{what}: {e}"));
        }
    }
    assert!(
        broken.is_empty(),
        "stored by the shell, then the feed failed:\n{}",
        broken.join("\n")
    );
    Ok(())
}

/// An event whose `agent_id` is not UTF-8 is reported as a bad
/// `last_heartbeat` of an agent: the error names the wrong column, and the
/// agent instead of the event, so the person told to "repair or delete the
/// row" looks in the wrong place.
#[test]
fn an_event_with_a_bad_agent_id_is_reported_under_the_wrong_column() -> Result<()> {
    let registry = TempRegistry::new();
    registry.register(agent("a", &[]))?;
    let typed = shell(
        &registry,
        "INSERT INTO events (seq, at, kind, agent_id)
         VALUES ((SELECT value + 1 FROM counters WHERE name = 'event_seq'),
                 strftime('%Y-%m-%d %H:%M:%f000000', 'now'), 'deregistered', CAST(x'ff' AS TEXT));",
    );
    if typed.is_ok() {
        match registry.events(0, 100) {
            Err(Error::Unreadable {
                table, id, column, ..
            }) => assert_eq!(
                (table, column, id.as_str()),
                ("events", "agent_id", "2"),
                "the error must name the events row and its agent_id column"
            ),
            other => panic!("expected an unreadable events row, got {other:?}"),
        }
    }
    Ok(())
}

/// An event typed by hand with a cursor beyond the next one is stored and
/// moves the counter: nothing was pruned, yet a reader at the previous
/// newest cursor is told its cursor is too old.
#[test]
fn an_event_typed_by_hand_past_the_counter_reads_as_pruned() -> Result<()> {
    let registry = TempRegistry::new();
    registry.register(agent("a", &[]))?;
    let newest = registry.last_event()?;
    let _ = shell(
        &registry,
        "INSERT INTO events (seq, at, kind, agent_id, status)
         VALUES ((SELECT value + 10 FROM counters WHERE name = 'event_seq'),
                 strftime('%Y-%m-%d %H:%M:%f000000', 'now'), 'status', 'a', 'busy');",
    );
    let page = registry.events(newest, 100);
    assert!(
        !matches!(page, Err(Error::CursorTooOld { .. })),
        "nothing was pruned, yet: {page:?}"
    );
    Ok(())
}

/// `INSERT OR REPLACE INTO events` on the newest cursor rewrites an event
/// readers may already have seen ("events cannot change" is an update
/// trigger; the counter trigger accepts the same value again).
#[test]
fn replace_into_events_by_hand_rewrites_an_event_already_read() -> Result<()> {
    let registry = TempRegistry::new();
    registry.register(agent("a", &[]))?;
    registry.register(agent("b", &[]))?;
    let before = registry.events(0, 100)?;
    let _ = shell(
        &registry,
        "INSERT OR REPLACE INTO events (seq, at, kind, agent_id)
         VALUES ((SELECT value FROM counters WHERE name = 'event_seq'),
                 strftime('%Y-%m-%d %H:%M:%f000000', 'now'), 'deregistered', 'b');",
    );
    assert_eq!(registry.events(0, 100)?, before);
    Ok(())
}

/// Retention by age takes every event up to the newest old one among the
/// oldest 1000, assuming `at` grows with `seq`. One event with an old time
/// (typed by hand, or written while the clock was wrong) makes the next
/// 64th event prune every fresh event before it, although none is near the
/// count or age limit.
#[test]
fn an_event_with_an_old_time_prunes_the_fresh_events_before_it() -> Result<()> {
    let registry = TempRegistry::new();
    for i in 0..10 {
        registry.register(agent(&format!("a{i}"), &[]))?;
    }
    let _ = shell(
        &registry,
        "INSERT INTO events (seq, at, kind, agent_id, status)
         VALUES ((SELECT value + 1 FROM counters WHERE name = 'event_seq'),
                 '2000-01-01 00:00:00.000000000', 'status', 'a0', 'busy');",
    );
    let mut i = 0;
    while registry.last_event()? < 70 {
        registry.set_status("a1", [AgentStatus::Busy, AgentStatus::Available][i % 2])?;
        i += 1;
    }
    let page = registry.events(0, 100);
    assert!(
        matches!(&page, Ok(events) if events.first().map(|e| e.seq) == Some(1)),
        "the ten fresh registrations must still be there: {page:?}"
    );
    Ok(())
}

/// A capability deleted by hand changes where claims go, and the feed says
/// nothing: a register that changes capabilities is `updated`, the same
/// change typed by hand is no event at all.
#[test]
fn a_capability_removed_by_hand_writes_no_event() -> Result<()> {
    let registry = TempRegistry::new();
    registry.register(agent("a", &["gpu"]))?;
    let start = registry.last_event()?;
    shell(&registry, "DELETE FROM capabilities WHERE agent_id = 'a';")
        .unwrap_or_else(|e| panic!("the shell refused it: {e}"));
    assert!(matches!(
        registry.claim(&task("t", &["gpu"]), None),
        Err(Error::NoEligibleAgent)
    ));
    let events = registry.events(start, 100)?;
    assert!(
        events.iter().any(|e| e.agent_id == "a"),
        "agent a lost a capability and the feed is silent"
    );
    Ok(())
}

/// Detaching a claim by hand (`UPDATE claims SET detached = 1`, which the
/// schema allows and which gives the slot back) writes no event: the
/// agent's load drops and the feed is silent.
#[test]
fn detaching_a_claim_by_hand_gives_the_slot_back_without_an_event() -> Result<()> {
    let registry = TempRegistry::new();
    registry.register(agent("a", &[]))?;
    registry.claim(&task("t", &[]), None)?;
    let start = registry.last_event()?;
    match shell(
        &registry,
        "UPDATE claims SET detached = 1 WHERE task_id = 't';",
    ) {
        // Either the schema refuses it and nothing changes...
        Err(refusal) => {
            assert!(
                refusal.contains("detached only when its agent is deregistered"),
                "{refusal}"
            );
            assert_eq!(registry.get("a")?.current_load, 1);
            assert_eq!(registry.claims(Some("a"))?.len(), 1);
            assert!(registry.events(start, 100)?.is_empty());
        }
        // ... or the feed says the slot came back.
        Ok(()) => {
            assert_eq!(registry.get("a")?.current_load, 0);
            assert!(
                !registry.events(start, 100)?.is_empty(),
                "the claim stopped counting on agent a and the feed is silent"
            );
        }
    }
    Ok(())
}

/// The `recovering` setting may be set to 1 by hand (its CHECK allows it),
/// and then every release, by roster or by hand, is announced as
/// `recovered` with a made-up reason.
#[test]
fn a_recovering_flag_set_by_hand_turns_every_release_into_a_recovery() -> Result<()> {
    let registry = TempRegistry::new();
    registry.register(agent("a", &[]))?;
    let _ = shell(
        &registry,
        "UPDATE settings SET value = 1 WHERE name = 'recovering';",
    );
    let claimed = registry.claim(&task("t", &[]), None)?;
    registry.release("t", Some(claimed.claim.token))?;
    let newest = registry.last_event()?;
    let last = &registry.events(newest - 1, 1)?[0];
    assert_eq!(
        (last.kind, last.reason),
        (EventKind::Released, None),
        "a release by its holder"
    );
    Ok(())
}

// ------------------------------------------------------------ ad-hoc SQL

/// The time limit of ad-hoc SQL does not cover waiting for the write lock:
/// a 50 ms statement blocked by another process waits out the whole busy
/// timeout and ends as `Busy`, not `Interrupted`.
#[test]
fn the_sql_time_limit_does_not_cover_waiting_for_the_lock() -> Result<()> {
    let registry = TempRegistry::new();
    registry.register(agent("a", &[]))?;
    let patient = SqliteOptions::new()
        .busy_timeout(Duration::from_secs(3))
        .open(registry.path())?;
    let holder = LockHolder::take(&registry);
    let outcome = patient.query_each(
        "UPDATE agents SET name = 'mine'",
        &SqlOptions::new(SqlAccess::ReadWrite).timeout(Some(Duration::from_millis(50))),
        |_, _| Ok(()),
    );
    drop(holder);
    assert!(
        matches!(outcome, Err(Error::Interrupted { .. })),
        "a 50 ms time limit: {outcome:?}"
    );
    Ok(())
}

/// Cancelling ad-hoc SQL (Ctrl-C in `roster sql`) does not stop a statement
/// waiting for the write lock: it waits out the busy timeout (up to 24 days
/// with `--busy-timeout`), then reports `Busy`.
#[test]
fn a_cancelled_statement_still_waits_out_the_busy_timeout() -> Result<()> {
    let registry = TempRegistry::new();
    registry.register(agent("a", &[]))?;
    let patient = SqliteOptions::new()
        .busy_timeout(Duration::from_secs(3))
        .open(registry.path())?;
    let holder = LockHolder::take(&registry);
    let cancel = Arc::new(AtomicBool::new(true));
    let outcome = patient.query_each(
        "DELETE FROM agents",
        &SqlOptions::new(SqlAccess::ReadWrite)
            .timeout(None)
            .cancel(cancel),
        |_, _| Ok(()),
    );
    drop(holder);
    assert!(
        matches!(outcome, Err(Error::Interrupted { .. })),
        "cancelled before it started: {outcome:?}"
    );
    assert_eq!(patient.list()?.len(), 1);
    Ok(())
}

/// Read-only `ATTACH` of a file that does not exist is refused, but as an
/// unusable registry (`roster sql` exits 7, "database unusable"), which
/// points at the registry file instead of the statement.
#[test]
fn a_read_only_attach_is_reported_as_an_unusable_registry() -> Result<()> {
    let registry = TempRegistry::new();
    let other = registry.dir().join("other.db");
    let outcome = registry.query(
        &format!("ATTACH '{}' AS other", other.display()),
        SqlAccess::ReadOnly,
    );
    match outcome {
        Err(e) => assert!(
            matches!(e.kind(), ErrorKind::InvalidInput),
            "{e} is reported as {:?}",
            e.kind()
        ),
        Ok(_) => panic!("a read-only ATTACH of a missing file was accepted"),
    }
    assert!(!other.exists());
    Ok(())
}

/// Read-only `VACUUM INTO` is refused as a write, yet it leaves an empty
/// file behind at the path it was given.
#[test]
fn a_refused_read_only_vacuum_into_leaves_a_file_behind() -> Result<()> {
    let registry = TempRegistry::new();
    let copy = registry.dir().join("copy.db");
    let outcome = registry.query(
        &format!("VACUUM INTO '{}'", copy.display()),
        SqlAccess::ReadOnly,
    );
    assert!(matches!(outcome, Err(Error::WriteRefused)), "{outcome:?}");
    assert!(
        !copy.exists(),
        "a refused read-only statement created {}",
        copy.display()
    );
    Ok(())
}

// ------------------------------------------------------ renamed tables

/// A table renamed by hand is not noticed when the file is opened (the
/// identity check counts schema objects); the triggers follow the rename,
/// and reading the feed then fails with a storage error that claims to be
/// transient, so daemons retry it forever.
#[test]
fn a_renamed_events_table_is_reported_as_a_transient_storage_error() -> Result<()> {
    let registry = TempRegistry::new();
    registry.register(agent("a", &[]))?;
    shell(&registry, "ALTER TABLE events RENAME TO events_old;")
        .unwrap_or_else(|e| panic!("the shell refused it: {e}"));
    let kind = match SqliteRegistry::open(registry.path()) {
        Err(e) => e.kind(),
        Ok(reopened) => match reopened.events(0, 100) {
            Err(e) => e.kind(),
            Ok(page) => panic!("the feed read a table that is gone: {page:?}"),
        },
    };
    assert_eq!(kind, ErrorKind::Unusable);
    Ok(())
}
