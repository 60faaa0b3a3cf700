//! The change feed on PostgreSQL, where event numbers come from a sequence:
//! a transaction still in flight with a lower number holds readers back
//! until it ends, rolled-back numbers are skipped without reading as pruned,
//! concurrent writers never make a reader skip or repeat an event, pruning
//! makes old cursors too old, and a watcher wakes on NOTIFY and survives a
//! lost connection.

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use chrono::Utc;
use common::pg::{self, SchemaGuard};
use roster::{AgentInfo, AgentRegistry, Error, EventKind, PostgresRegistry};

fn agent(id: &str) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        name: format!("agent {id}"),
        last_heartbeat: Utc::now(),
        max_load: 4,
        ..AgentInfo::default()
    }
}

/// A plain client whose statements run in `schema`.
fn client_in(schema: &str) -> postgres::Client {
    let mut client = pg::client();
    client
        .batch_execute(&format!("SET search_path = {schema}"))
        .expect("set search_path");
    client
}

fn registry_with_agents(ids: &[&str]) -> (PostgresRegistry, SchemaGuard) {
    let (registry, guard) = pg::registry();
    for id in ids {
        registry.register(agent(id)).expect("register");
    }
    (registry, guard)
}

#[test]
fn a_lower_number_in_flight_holds_readers_back_until_it_commits() {
    let _one = WATCHER_SESSIONS.lock().unwrap_or_else(|e| e.into_inner());
    let (registry, guard) = registry_with_agents(&["a", "b"]);
    let start = registry.last_event().expect("last_event");
    let mut open = client_in(&guard.0);
    let mut tx = open.transaction().expect("begin");
    // Takes the lower number and stays in flight.
    tx.execute("UPDATE agents SET drained = true WHERE id = 'a'", &[])
        .expect("drain a by hand");
    // Takes a higher number and commits first.
    registry.drain("b", true).expect("drain b");
    assert!(
        registry.events(start, 100).expect("events").is_empty(),
        "b's event must wait for the lower number still in flight"
    );
    assert_eq!(registry.last_event().expect("last_event"), start);
    thread::scope(|scope| {
        let watcher = scope.spawn(|| registry.watch(start, 100, Duration::from_secs(60)));
        tx.commit().expect("commit");
        let page = watcher.join().expect("watcher thread").expect("watch");
        assert_eq!(
            page[0].agent_id, "a",
            "the lower number comes first: {page:?}"
        );
        assert_eq!(page[0].kind, EventKind::Drained);
    });
    let page = registry.events(start, 100).expect("events");
    let seen: Vec<(&str, u64)> = page.iter().map(|e| (e.agent_id.as_str(), e.seq)).collect();
    assert_eq!(seen, [("a", start + 1), ("b", start + 2)]);
    assert_eq!(registry.last_event().expect("last_event"), start + 2);
}

#[test]
fn rolled_back_numbers_are_skipped_and_are_not_pruned_events() {
    let _one = WATCHER_SESSIONS.lock().unwrap_or_else(|e| e.into_inner());
    let (registry, guard) = registry_with_agents(&["a"]);
    let start = registry.last_event().expect("last_event");
    let mut client = client_in(&guard.0);
    let mut tx = client.transaction().expect("begin");
    tx.execute("UPDATE agents SET drained = true WHERE id = 'a'", &[])
        .expect("drain by hand");
    tx.rollback().expect("rollback");
    registry.drain("a", true).expect("drain");
    // A transaction of another test still open may hold the hole back for
    // a while: watch until it is passed (never an error).
    let page = registry
        .watch(start, 100, Duration::from_secs(60))
        .expect("a hole is not a pruned event");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].seq, start + 2, "the rolled-back number is skipped");
    assert_eq!(registry.last_event().expect("last_event"), start + 2);
    // A cursor inside the hole reads on as well.
    assert_eq!(registry.events(start + 1, 100).expect("events"), page);
    assert!(registry.events(start + 2, 100).expect("events").is_empty());
    assert!(matches!(
        registry.events(start + 3, 100),
        Err(Error::CursorAhead { .. })
    ));
}

#[test]
fn concurrent_writers_never_make_a_reader_skip_or_repeat_an_event() {
    let _one = WATCHER_SESSIONS.lock().unwrap_or_else(|e| e.into_inner());
    const WRITERS: usize = 4;
    const TURNS: usize = 100;
    let ids: Vec<String> = (0..WRITERS).map(|i| format!("w{i}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (registry, guard) = registry_with_agents(&id_refs);
    let start = registry.last_event().expect("last_event");
    let done = AtomicBool::new(false);
    let (mut read, mut cursor) = thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut cursor = start;
            let mut seen: Vec<u64> = Vec::new();
            while !done.load(Ordering::SeqCst) {
                for event in registry.events(cursor, 50).expect("events") {
                    assert!(event.seq > cursor, "cursors only grow");
                    cursor = event.seq;
                    seen.push(event.seq);
                }
            }
            (seen, cursor)
        });
        let writers: Vec<_> = ids
            .iter()
            .map(|id| {
                let schema = guard.0.clone();
                scope.spawn(move || {
                    let mut client = client_in(&schema);
                    for turn in 0..TURNS {
                        let mut tx = client.transaction().expect("begin");
                        tx.execute(
                            "UPDATE agents SET drained = NOT drained WHERE id = $1",
                            &[id],
                        )
                        .expect("toggle");
                        // Every third transaction rolls back and leaves a hole.
                        if turn % 3 == 2 {
                            tx.rollback().expect("rollback");
                        } else {
                            tx.commit().expect("commit");
                        }
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().expect("writer thread");
        }
        done.store(true, Ordering::SeqCst);
        reader.join().expect("reader thread")
    });
    let mut client = client_in(&guard.0);
    let stored: Vec<u64> = client
        .query(
            "SELECT seq FROM events WHERE seq > $1 ORDER BY seq",
            &[&(start as i64)],
        )
        .expect("events")
        .iter()
        .map(|row| row.get::<_, i64>(0) as u64)
        .collect();
    // The rest: a transaction of another test still running may hold the
    // reader back at a hole; watch until it has all (or a minute passes).
    let last = stored.last().copied().unwrap_or(start);
    while cursor < last {
        let page = registry
            .watch(cursor, 50, Duration::from_secs(60))
            .expect("watch");
        assert!(!page.is_empty(), "events up to {last} never came");
        for event in page {
            assert!(event.seq > cursor, "cursors only grow");
            cursor = event.seq;
            read.push(event.seq);
        }
    }
    let committed = WRITERS * (TURNS - TURNS / 3);
    assert_eq!(stored.len(), committed);
    assert_eq!(read, stored, "every committed event, once, in order");
    assert_eq!(read.iter().collect::<BTreeSet<_>>().len(), read.len());
}

#[test]
fn pruned_events_make_old_cursors_too_old() {
    let (registry, guard) = registry_with_agents(&["a"]);
    let mut client = client_in(&guard.0);
    client
        .execute(
            "UPDATE settings SET value = 10 WHERE name = 'events_keep'",
            &[],
        )
        .expect("keep 10");
    for turn in 0..70 {
        registry.drain("a", turn % 2 == 0).expect("drain");
    }
    let newest = registry.last_event().expect("last_event");
    match registry.events(0, 10) {
        Err(Error::CursorTooOld { cursor: 0, oldest }) => {
            assert!(oldest > 1 && oldest <= newest, "oldest {oldest}")
        }
        other => panic!("expected CursorTooOld, got {other:?}"),
    }
    let kept: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .expect("count")
        .get(0);
    assert!(kept < 71, "pruned down from 71 events, {kept} kept");
    // Deleted by hand: cursors below it are too old too.
    client
        .execute("DELETE FROM events WHERE seq = $1", &[&(newest as i64)])
        .expect("delete by hand");
    assert!(matches!(
        registry.events(newest - 1, 10),
        Err(Error::CursorTooOld { .. })
    ));
}

/// The first key of the advisory lock a transaction takes, without
/// waiting, to prune: the bytes "prun" (`migrations/postgres/0006_one_pruner.sql`).
const PRUNE_LOCK_KEY: i32 = 0x7072_756e;

/// A transaction that is pruning (it holds the prune lock and has deleted
/// the oldest event, uncommitted) makes another 64th event skip its prune
/// rather than wait for those rows: a writer that waited there while
/// holding an agent's row could meet the pruner waiting for that agent, a
/// deadlock the server breaks only after a second. The next 64th event
/// prunes.
#[test]
fn a_prune_under_way_is_skipped_not_waited_for() {
    let (schema, _guard) = {
        let schema = pg::schema_name();
        (schema.clone(), SchemaGuard(schema))
    };
    let registry = roster::PostgresOptions::new()
        .schema(schema.as_str())
        .busy_timeout(Duration::from_millis(300))
        .open(pg::url())
        .expect("open");
    registry.register(agent("a")).expect("register");
    let mut client = client_in(&schema);
    client
        .execute(
            "UPDATE settings SET value = 10 WHERE name = 'events_keep'",
            &[],
        )
        .expect("keep 10");
    let mut drained = false;
    let mut toggle = || {
        drained = !drained;
        registry.drain("a", drained)
    };
    // Up to the event before a 64th, with more than 10 kept.
    while registry.last_event().expect("last_event") % 64 != 63
        || registry.last_event().expect("last_event") < 64
    {
        toggle().expect("drain");
    }
    let count = |client: &mut postgres::Client| -> i64 {
        client
            .query_one("SELECT count(*) FROM events", &[])
            .expect("count")
            .get(0)
    };
    let before = count(&mut client);
    let mut pruner_client = client_in(&schema);
    let mut pruner = pruner_client.transaction().expect("begin");
    pruner
        .execute(
            "SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))",
            &[&PRUNE_LOCK_KEY],
        )
        .expect("the prune lock");
    pruner
        .execute(
            "DELETE FROM events WHERE seq = (SELECT min(seq) FROM events)",
            &[],
        )
        .expect("delete the oldest event");
    // The 64th event: its prune would wait for the row deleted above, past
    // the busy timeout.
    toggle().unwrap_or_else(|e| panic!("the 64th event waited for the prune under way: {e}"));
    assert_eq!(registry.last_event().expect("last_event") % 64, 0);
    assert_eq!(count(&mut client), before + 1, "nothing pruned yet");
    pruner.rollback().expect("rollback");
    // The next 64th event prunes down to 10.
    toggle().expect("drain");
    while registry.last_event().expect("last_event") % 64 != 0 {
        toggle().expect("drain");
    }
    assert_eq!(count(&mut client), 10);
}

/// The tests that look at the watchers' sessions in `pg_stat_activity`,
/// one at a time.
static WATCHER_SESSIONS: Mutex<()> = Mutex::new(());

/// The server processes of the "roster watch" sessions.
fn watcher_pids(admin: &mut postgres::Client) -> Vec<i32> {
    admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'roster watch' ORDER BY pid",
            &[],
        )
        .expect("pg_stat_activity")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[test]
fn one_listening_connection_serves_watch_calls_one_after_another() {
    let _one = WATCHER_SESSIONS.lock().unwrap_or_else(|e| e.into_inner());
    let (registry, guard) = registry_with_agents(&["a"]);
    let mut admin = pg::client();
    let start = registry.last_event().expect("last_event");
    let none = registry
        .watch(start, 10, Duration::from_millis(50))
        .expect("watch");
    assert!(none.is_empty());
    let first = watcher_pids(&mut admin);
    assert_eq!(
        first.len(),
        1,
        "the listening session is kept after the call"
    );
    // Kept, it does not listen: nobody reads it between calls, and a
    // listener that is not read holds the server's notification queue back.
    let last: String = admin
        .query_one(
            "SELECT query FROM pg_stat_activity WHERE pid = $1",
            &[&first[0]],
        )
        .expect("pg_stat_activity")
        .get(0);
    assert_eq!(last, "UNLISTEN *", "the kept session's last statement");
    // A change made between two calls is there for the next one, on the
    // same session.
    client_in(&guard.0)
        .execute("UPDATE agents SET drained = true WHERE id = 'a'", &[])
        .expect("drain by hand");
    let page = registry
        .watch(start, 10, Duration::from_secs(60))
        .expect("watch");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].kind, EventKind::Drained);
    assert_eq!(watcher_pids(&mut admin), first, "the same session again");
    drop(registry);
    // Dropping the last handle closes it.
    common::eventually("the watch session to end with its registry", || {
        watcher_pids(&mut admin).is_empty().then_some(())
    });
}

#[test]
fn a_watcher_reconnects_and_reads_again_after_a_lost_connection() {
    let _one = WATCHER_SESSIONS.lock().unwrap_or_else(|e| e.into_inner());
    let (registry, guard) = registry_with_agents(&["a"]);
    let start = registry.last_event().expect("last_event");
    let mut admin = pg::client();
    thread::scope(|scope| {
        let watcher = scope.spawn(|| registry.watch(start, 10, Duration::from_secs(60)));
        // Watchers' sessions are named "roster watch" (other tests' watchers
        // may be ended too: they reconnect as well); end this one once it
        // is there and listening.
        let mut killed = 0;
        while killed == 0 {
            killed = admin
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE application_name = 'roster watch' AND state = 'idle'",
                    &[],
                )
                .expect("terminate")
                .len();
            thread::yield_now();
        }
        let mut client = client_in(&guard.0);
        client
            .execute("UPDATE agents SET drained = true WHERE id = 'a'", &[])
            .expect("drain by hand");
        let page = watcher.join().expect("watcher thread").expect("watch");
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].kind, EventKind::Drained);
    });
}

#[test]
fn an_event_typed_by_hand_holds_readers_back_like_any_other() {
    let _one = WATCHER_SESSIONS.lock().unwrap_or_else(|e| e.into_inner());
    let (registry, guard) = registry_with_agents(&["a", "b"]);
    let start = registry.last_event().expect("last_event");
    // A psql session whose transaction has its id early...
    let mut early = client_in(&guard.0);
    let mut hand = early.transaction().expect("begin");
    hand.batch_execute("SELECT pg_current_xact_id()")
        .expect("an early transaction id");
    // ...another that takes the lower number and stays in flight...
    let mut open = client_in(&guard.0);
    let mut tx = open.transaction().expect("begin");
    tx.execute("UPDATE agents SET drained = true WHERE id = 'a'", &[])
        .expect("drain a by hand");
    // ...and the first types an event, which takes a higher number, and
    // commits.
    hand.batch_execute(
        "INSERT INTO events (kind, agent_id, status) VALUES ('status', 'b', 'busy')",
    )
    .expect("an event typed by hand");
    hand.commit().expect("commit");
    assert!(
        registry.events(start, 100).expect("events").is_empty(),
        "the event typed by hand must wait for the lower number still in flight"
    );
    tx.commit().expect("commit");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let after = seen.last().map_or(start, |e: &roster::Event| e.seq);
        let page = registry
            .watch(after, 100, Duration::from_secs(60))
            .expect("watch");
        assert!(!page.is_empty(), "nothing came within a minute");
        seen.extend(page);
    }
    let order: Vec<(&str, EventKind)> =
        seen.iter().map(|e| (e.agent_id.as_str(), e.kind)).collect();
    assert_eq!(order, [("a", EventKind::Drained), ("b", EventKind::Status)]);
}
