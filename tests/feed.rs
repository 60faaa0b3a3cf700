//! The change feed on SQLite: retention by count, rows deleted by hand count
//! as pruned, hand-typed SQL produces events, and a watcher in one process
//! wakes when another process commits.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Rng, TempRegistry};
use roster::{AgentInfo, AgentRegistry, Error, EventKind, Result, SqlAccess, SqliteRegistry};

fn agent(id: &str) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        max_load: 2,
        last_heartbeat: roster::now(),
        ..AgentInfo::default()
    }
}

#[test]
fn pruned_events_make_an_old_cursor_a_clear_error() -> Result<()> {
    let registry = TempRegistry::new();
    registry.query(
        "UPDATE settings SET value = 5 WHERE name = 'events_keep'",
        SqlAccess::ReadWrite,
    )?;
    // Events are pruned in batches, by every 64th event: up to then all
    // are kept; then the newest events_keep from there on.
    for i in 0..63 {
        registry.register(agent(&format!("a{i}")))?;
    }
    assert_eq!(registry.last_event()?, 63);
    assert_eq!(registry.events(0, 100)?.len(), 63, "nothing pruned yet");
    for i in 63..70 {
        registry.register(agent(&format!("a{i}")))?;
    }
    assert_eq!(registry.last_event()?, 70);
    match registry.events(0, 100) {
        Err(e @ Error::CursorTooOld { .. }) => assert_eq!(
            e.to_string(),
            "cursor 0 is older than the oldest kept event 60: list, then watch from 60"
        ),
        other => panic!("expected CursorTooOld, got {other:?}"),
    }
    assert!(matches!(
        registry.events(58, 100),
        Err(Error::CursorTooOld { oldest: 60, .. })
    ));
    let kept: Vec<u64> = registry.events(59, 100)?.iter().map(|e| e.seq).collect();
    assert_eq!(kept, (60..=70).collect::<Vec<u64>>());
    // Every event but the newest pruned: the cursor before it is too old,
    // the newest is still a valid place to watch from.
    registry.query(
        "UPDATE settings SET value = 1 WHERE name = 'events_keep'",
        SqlAccess::ReadWrite,
    )?;
    registry.heartbeat("a0")?;
    for i in 0..57 {
        registry.deregister(&format!("a{i}"))?;
    }
    assert_eq!(registry.last_event()?, 127);
    // A lowered events_keep takes effect at the next 64th event.
    assert_eq!(registry.events(59, 100)?.len(), 68);
    registry.deregister("a57")?;
    assert!(matches!(
        registry.events(59, 100),
        Err(Error::CursorTooOld { oldest: 128, .. })
    ));
    assert_eq!(registry.events(127, 100)?.len(), 1);
    Ok(())
}

#[test]
fn events_older_than_events_keep_seconds_go_as_a_prefix() -> Result<()> {
    let registry = TempRegistry::new();
    registry.query(
        "UPDATE settings SET value = 3600 WHERE name = 'events_keep_seconds'",
        SqlAccess::ReadWrite,
    )?;
    // Ten events from 2020, typed by hand, then a young one, then one more
    // from 2020 (an odd time after a young event).
    let old = |count: usize| -> String {
        "INSERT INTO events (seq, at, kind, agent_id, status) VALUES \
         ((SELECT value + 1 FROM counters WHERE name = 'event_seq'), '2020-01-01 00:00:00.000000000', 'status', 'gone', 'busy');\n"
            .repeat(count)
    };
    let typed = |sql: &str| {
        let out = common::sqlite3(registry.path(), sql, common::OnError::Stop);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    typed(&old(10));
    registry.register(agent("young"))?;
    typed(&old(1));
    assert_eq!(registry.last_event()?, 12);
    // Nothing goes before the 64th event.
    for i in 0..51 {
        registry.register(agent(&format!("a{i}")))?;
    }
    assert_eq!(registry.last_event()?, 63);
    assert_eq!(registry.events(0, 100)?.len(), 63);
    registry.register(agent("a51"))?;
    // The ten old ones went; the odd one after the young one stays.
    assert!(matches!(
        registry.events(0, 100),
        Err(Error::CursorTooOld { oldest: 11, .. })
    ));
    let kept = registry.events(10, 100)?;
    assert_eq!(kept.len(), 54);
    assert_eq!(kept[0].agent_id, "young");
    assert_eq!((kept[1].seq, kept[1].agent_id.as_str()), (12, "gone"));
    Ok(())
}

#[test]
fn rows_deleted_by_hand_count_as_pruned() -> Result<()> {
    let registry = TempRegistry::new();
    for i in 0..6 {
        registry.register(agent(&format!("a{i}")))?;
    }
    common::sqlite3(
        registry.path(),
        "DELETE FROM events WHERE seq = 4;",
        common::OnError::Stop,
    );
    // A page stops before the gap; reading on from there says what is missing.
    let page: Vec<u64> = registry.events(1, 100)?.iter().map(|e| e.seq).collect();
    assert_eq!(page, [2, 3]);
    assert!(matches!(
        registry.events(3, 100),
        Err(Error::CursorTooOld {
            cursor: 3,
            oldest: 5
        })
    ));
    let rest: Vec<u64> = registry.events(4, 100)?.iter().map(|e| e.seq).collect();
    assert_eq!(rest, [5, 6]);
    // Events are a log: they cannot be edited.
    let out = common::sqlite3(
        registry.path(),
        "UPDATE events SET kind = 'updated';",
        common::OnError::Stop,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("events cannot change"));
    Ok(())
}

#[test]
fn hand_typed_sql_produces_events_too() -> Result<()> {
    let registry = TempRegistry::new();
    registry.register(agent("a"))?;
    let claimed = registry.claim(&roster::Task::default(), None)?;
    let start = registry.last_event()?;
    let out = common::sqlite3(
        registry.path(),
        "UPDATE agents SET status = 'busy' WHERE id = 'a';
         UPDATE agents SET drained = 1 WHERE id = 'a';
         UPDATE agents SET max_load = 5 WHERE id = 'a';
         UPDATE agents SET last_heartbeat = strftime('%Y-%m-%d %H:%M:%f000000', 'now');
         DELETE FROM claims;
         INSERT INTO agents (id, name, last_heartbeat) VALUES ('b', '', strftime('%Y-%m-%d %H:%M:%f000000', 'now'));
         DELETE FROM agents WHERE id = 'b';",
        common::OnError::Stop,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kinds: Vec<(EventKind, String)> = registry
        .events(start, 100)?
        .into_iter()
        .map(|e| (e.kind, e.agent_id))
        .collect();
    assert_eq!(
        kinds,
        [
            (EventKind::Status, "a".to_owned()),
            (EventKind::Drained, "a".to_owned()),
            (EventKind::Updated, "a".to_owned()),
            // The claim deleted by hand is released, not recovered.
            (EventKind::Released, "a".to_owned()),
            (EventKind::Registered, "b".to_owned()),
            (EventKind::Deregistered, "b".to_owned()),
        ]
    );
    let released = &registry.events(start + 3, 1)?[0];
    assert_eq!(
        released.task_id.as_deref(),
        Some(claimed.claim.task_id.as_str())
    );
    assert_eq!(released.token, Some(claimed.claim.token));
    Ok(())
}

// ---------------------------------------------------------------- children

/// The entry point of the child processes.
#[test]
#[ignore = "helper: the feed tests run it as a child process"]
fn child() {
    let Some(role) = common::child::role() else {
        return;
    };
    assert_eq!(role, "writer");
    let db = PathBuf::from(common::child::var(common::child::DB_VAR));
    let registry = SqliteRegistry::open(&db).expect("open");
    common::child::ready_then_wait_for_go();
    registry
        .register(agent("from-another-process"))
        .expect("register");
    common::child::report("registered");
}

#[test]
fn a_watcher_wakes_when_another_process_commits() -> Result<()> {
    let registry = TempRegistry::new();
    let mut rng = Rng::from_env();
    let cursor = registry.last_event()?;
    let mut writer = common::child::spawn("writer", registry.path(), &mut rng, &[]);
    writer.expect_report("ready");
    std::thread::scope(|scope| -> Result<()> {
        let watcher = scope.spawn(|| registry.watch(cursor, 10, common::PATIENCE));
        // The watcher is waiting (or about to): the other process writes.
        writer.send("go");
        writer.expect_report("registered");
        let page = watcher.join().expect("watcher thread")?;
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].kind, EventKind::Registered);
        assert_eq!(page[0].agent_id, "from-another-process");
        Ok(())
    })?;
    writer.finish().expect_success("writer");
    // Nothing more: a watch times out empty.
    assert!(
        registry
            .watch(cursor + 1, 10, Duration::from_millis(10))?
            .is_empty()
    );
    Ok(())
}
