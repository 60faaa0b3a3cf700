//! BENCHMARKS.md rows "claim, N agents" against the Go registry's dispatch
//! (list + route + update) on `MemoryRegistry` and on `SqliteRegistry`, and
//! against `MemoryRegistry::claim`, at every fleet size; and claim and
//! release (claims as rows) against the load counter's claim and release
//! that came before them (row name `claim`).

use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use roster::{
    AgentRegistry, DefaultRouter, Error, MemoryRegistry, Priority, SqliteRegistry, Task, TaskRouter,
};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};

use crate::common::{Bench, CHECKPOINT_PAGES, Times, fleet, interleaved, tasks};

/// A slot taken by [`claim`] (a claim row, by task id) or by [`dispatch`]
/// (a load counted up on an agent, by agent id).
enum Taken {
    Claim(String),
    Load(String),
}

/// The roster call this file measures: one claim (recorded as a row, with a
/// generated task id), answering what [`release`] needs to give it back.
fn claim(registry: &dyn AgentRegistry, task: &Task) -> Result<Taken, Error> {
    registry
        .claim(task, None)
        .map(|claimed| Taken::Claim(claimed.claim.task_id))
}

/// Gives back the slot that [`claim`] or [`dispatch`] took.
fn release(registry: &dyn AgentRegistry, taken: &Taken) {
    match taken {
        Taken::Claim(task_id) => {
            registry.release(task_id, None).expect("release");
        }
        Taken::Load(id) => {
            let mut agent = registry.get(id).expect("get");
            agent.current_load -= 1;
            registry.register(agent).expect("register");
        }
    }
}

/// The Go registry's dispatch: list everything, route in memory, write the
/// agent back with one more slot taken.
fn dispatch(
    registry: &dyn AgentRegistry,
    router: &DefaultRouter,
    task: &Task,
) -> Result<Taken, Error> {
    let all = registry.list()?;
    let id = router.route(task, &all)?;
    let mut chosen = registry.get(&id)?;
    chosen.current_load += 1;
    registry.register(chosen)?;
    Ok(Taken::Load(id))
}

/// The walk of schema version 3's claim in both routing orders, as
/// `src/sqlite/claim.rs` runs it today (critical first): the agents with a
/// free slot in routing order, the first online one that holds the labels.
const WALKS: [&str; 2] = [
    "SELECT a.id, a.status <> 'offline' AND a.drained = 0 AND NOT EXISTS (SELECT 1 FROM rarray(?1) AS l \
     WHERE NOT EXISTS (SELECT 1 FROM capabilities AS c WHERE c.capability = l.value AND c.agent_id = a.id)) \
     FROM agents AS a INDEXED BY agents_claim_by_load \
     WHERE a.current_load < (CASE a.max_load WHEN 0 THEN 4294967295 ELSE a.max_load END) \
     ORDER BY a.current_load, a.id LIMIT 256",
    "SELECT a.id, a.status <> 'offline' AND a.drained = 0 AND NOT EXISTS (SELECT 1 FROM rarray(?1) AS l \
     WHERE NOT EXISTS (SELECT 1 FROM capabilities AS c WHERE c.capability = l.value AND c.agent_id = a.id)) \
     FROM agents AS a INDEXED BY agents_claim_by_usage \
     WHERE a.current_load < (CASE a.max_load WHEN 0 THEN 4294967295 ELSE a.max_load END) \
     ORDER BY (CASE WHEN a.max_load = 0 THEN 0.0 ELSE a.current_load * 1.0 / a.max_load END), a.id LIMIT 256",
];

/// Claim and release as they were before claims became rows (schema
/// version 3): a claim walked the claim index and added one to the chosen
/// agent's `current_load`, a release took one off, each in one `BEGIN
/// IMMEDIATE` transaction. Bare SQL on a copy of a roster file from which
/// the claims table and its triggers are dropped, with roster's pragmas.
///
/// Without the change feed (`Feed::Without`), the events table and its
/// triggers go too: the claim as it was when claims-as-rows set its goal.
/// With it (`Feed::With`), the copy keeps the events table, its checks and
/// its triggers (cursor, counter, pruning), and a trigger writes the
/// `claimed` or `released` event that the change feed asks of every claim
/// taken and given back, as roster's claim triggers do: the load counter
/// as it would be had it been kept when the change feed came.
struct LoadCounter {
    conn: Connection,
}

/// Whether a [`LoadCounter`] copy keeps the change feed.
#[derive(Clone, Copy, PartialEq)]
enum Feed {
    Without,
    With,
}

/// The event the change feed writes for a load counted up or down, in the
/// form of roster's claim triggers (`migrations/sqlite/0007_lean_claims.sql`),
/// without a task id or token, which a load counter does not have.
const LOAD_EVENT: &str = "
CREATE TRIGGER agents_load_event
AFTER UPDATE OF current_load ON agents
WHEN NEW.current_load IS NOT OLD.current_load
BEGIN
    INSERT INTO events (seq, at, kind, agent_id, task_id, status, reason, token)
    VALUES ((SELECT value + 1 FROM counters WHERE name = 'event_seq'), strftime('%Y-%m-%d %H:%M:%f000000', 'now'),
            CASE WHEN NEW.current_load > OLD.current_load THEN 'claimed' ELSE 'released' END,
            NEW.id, NULL, NULL, NULL, NULL);
END;";

impl LoadCounter {
    /// Copies the roster file at `from` (closed, so checkpointed) to `to`
    /// and drops what schema version 3 did not have (keeping the change
    /// feed if `feed` says so).
    fn open(from: &Path, to: &Path, feed: Feed) -> LoadCounter {
        std::fs::copy(from, to).expect("copy");
        let conn = Connection::open(to).expect("open copy");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("busy_timeout");
        conn.pragma_update(None, "synchronous", "NORMAL")
            .expect("synchronous");
        conn.pragma_update(None, "foreign_keys", true).expect("fk");
        conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)
            .expect("wal_autocheckpoint");
        rusqlite::vtab::array::load_module(&conn).expect("rarray");
        let dropped = match feed {
            Feed::Without => {
                "SELECT name FROM sqlite_schema WHERE type = 'trigger'
                 AND (tbl_name IN ('claims', 'events') OR sql LIKE '%claims%' OR sql LIKE '%events%')"
            }
            Feed::With => {
                "SELECT name FROM sqlite_schema WHERE type = 'trigger'
                 AND (tbl_name = 'claims' OR sql LIKE '%claims%')"
            }
        };
        let triggers: Vec<String> = conn
            .prepare(dropped)
            .and_then(|mut stmt| {
                stmt.query_map([], |row| row.get(0))?
                    .collect::<rusqlite::Result<_>>()
            })
            .expect("triggers");
        for trigger in triggers {
            conn.execute_batch(&format!("DROP TRIGGER \"{trigger}\""))
                .expect("drop trigger");
        }
        match feed {
            Feed::Without => conn.execute_batch("DROP TABLE claims; DROP TABLE events;"),
            Feed::With => conn.execute_batch(&format!("DROP TABLE claims; {LOAD_EVENT}")),
        }
        .expect("drop tables");
        LoadCounter { conn }
    }

    /// The old claim: the walk, one more on the load, the agent read back.
    fn claim(&self, task: &Task) -> Option<String> {
        let labels: Rc<Vec<Value>> = Rc::new(
            task.labels
                .iter()
                .map(|label| Value::Text(label.clone()))
                .collect(),
        );
        let walk = WALKS[usize::from(task.priority != Priority::Critical)];
        let tx = &self.conn;
        execute(tx, "BEGIN IMMEDIATE");
        let chosen: Option<String> = {
            let mut stmt = tx.prepare_cached(walk).expect("walk");
            let mut rows = stmt.query([&labels]).expect("walk");
            let mut chosen = None;
            while let Some(row) = rows.next().expect("walk") {
                if row.get::<_, bool>(1).expect("eligible") {
                    chosen = Some(row.get(0).expect("id"));
                    break;
                }
            }
            chosen
        };
        if let Some(id) = &chosen {
            tx.prepare_cached("UPDATE agents SET current_load = current_load + 1 WHERE id = ?1")
                .and_then(|mut stmt| stmt.execute([id]))
                .expect("update");
            read_back(tx, id);
        }
        execute(tx, "COMMIT");
        chosen
    }

    /// The old release: one less on the load of agent `id`.
    fn release(&self, id: &str) {
        let tx = &self.conn;
        execute(tx, "BEGIN IMMEDIATE");
        let changed = tx
            .prepare_cached(
                "UPDATE agents SET current_load = current_load - 1
                 WHERE id = ?1 AND current_load > 0",
            )
            .and_then(|mut stmt| stmt.execute([id]))
            .expect("update");
        assert_eq!(changed, 1);
        execute(tx, "COMMIT");
    }
}

/// Runs `sql` (`BEGIN IMMEDIATE`, `COMMIT`) as roster's writes do since
/// they stopped parsing them on every call: a statement prepared once.
fn execute(conn: &Connection, sql: &str) {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute([]))
        .expect(sql);
}

/// Reads agent `id` back as claim does: its row with its capabilities,
/// then its metadata.
fn read_back(conn: &Connection, id: &str) {
    let mut stmt = conn
        .prepare_cached(
            "SELECT a.id, a.name, a.status, a.last_heartbeat, a.current_load, a.max_load,
                    a.drained, a.host, a.pid, a.started_at, c.capability
             FROM agents AS a LEFT JOIN capabilities AS c ON c.agent_id = a.id
             WHERE a.id = ?1 ORDER BY c.position",
        )
        .expect("read back");
    let rows = stmt
        .query_map([id], |row| row.get::<_, Option<String>>(10))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .expect("read back");
    assert!(!rows.is_empty());
    conn.prepare_cached("SELECT key, value FROM metadata WHERE agent_id = ?1 ORDER BY key")
        .and_then(|mut stmt| {
            stmt.query_row([id], |row| row.get::<_, String>(0))
                .optional()
        })
        .expect("metadata");
}

/// How many claims each repetition of [`claim_and_release`] takes and gives
/// back on each side, and how many slices it cuts them into. A claim as a
/// row writes about 8 WAL pages, so a batch spans checkpoints on both
/// sides (one every [`CHECKPOINT_PAGES`] pages, roster's interval, which
/// the load counter's copy is given too), and the share of each that falls
/// in a repetition varies less.
const BATCH: usize = 1000;
const SLICES: usize = 50;
/// How many calls the WAL frames per call are counted over.
const FRAME_CALLS: usize = 50;

/// Claim, then release, with claims as rows (roster) against the load
/// counter before them, without and with the change feed: each repetition
/// takes `BATCH` claims on each of the three sides and then gives them back,
/// in slices that rotate the sides (and which goes first). The change feed
/// is at its steady state on both files that have it: `events_keep` is set
/// to the events registration wrote, so that events are pruned as on a file
/// that has been in use for a while.
fn claim_and_release(bench: &mut Bench, n: usize, work: &[Task]) {
    let agents = fleet(n, 21);
    let (path, registry) = bench.roster_file(&format!("claim-rows-{n}.db"), &agents);
    drop(registry);
    Connection::open(&path)
        .and_then(|conn| {
            conn.execute_batch(
                "UPDATE settings SET value = (SELECT count(*) FROM events) WHERE name = 'events_keep'",
            )
        })
        .expect("events_keep");
    let counters = [
        LoadCounter::open(
            &path,
            &bench.fresh_file(&format!("claim-counter-{n}.db")),
            Feed::Without,
        ),
        LoadCounter::open(
            &path,
            &bench.fresh_file(&format!("claim-counter-feed-{n}.db")),
            Feed::With,
        ),
    ];
    let event_seq = |conn: &Connection| -> i64 {
        conn.query_row(
            "SELECT value FROM counters WHERE name = 'event_seq'",
            [],
            |row| row.get(0),
        )
        .expect("event_seq")
    };
    let feed_seq = event_seq(&counters[1].conn);
    let mut feed_calls = 0;
    let registry = SqliteRegistry::open(&path).expect("reopen");
    let slice = BATCH / SLICES;
    // Claim times of roster and the two load counters, then release times,
    // then roster's renew.
    let mut times: [Vec<Duration>; 7] = Default::default();
    // One untimed repetition warms the files up.
    for rep in 0..=bench.reps {
        let mut held: Vec<String> = Vec::with_capacity(BATCH);
        let mut loaded: [Vec<String>; 2] = Default::default();
        let mut spent = [Duration::ZERO; 7];
        for k in 0..SLICES {
            let tasks = &work[k * slice..][..slice];
            for side in (0..3).map(|i| (i + rep + k) % 3) {
                let start = Instant::now();
                if side == 0 {
                    for task in tasks {
                        if let Ok(claimed) = registry.claim(task, None) {
                            held.push(claimed.claim.task_id);
                        }
                    }
                } else {
                    for task in tasks {
                        loaded[side - 1].extend(counters[side - 1].claim(task));
                    }
                }
                spent[side] += start.elapsed();
            }
        }
        let claimed = [held.len(), loaded[0].len(), loaded[1].len()];
        feed_calls += 2 * claimed[2];
        for k in 0..SLICES {
            for side in (0..3).map(|i| (i + rep + k) % 3) {
                let from = (k * slice).min(claimed[side]);
                let to = (from + slice).min(claimed[side]);
                let start = Instant::now();
                if side == 0 {
                    for task_id in &held[from..to] {
                        registry.release(task_id, None).expect("release");
                    }
                } else {
                    for id in &loaded[side - 1][from..to] {
                        counters[side - 1].release(id);
                    }
                }
                spent[3 + side] += start.elapsed();
            }
        }
        // Renew (the load counter has none: the goal measures it against its
        // release): claims taken and given back untimed, slice by slice, the
        // lease of each set once in between, timed (claims with a lease write
        // one page more when they are released, so the releases above are of
        // claims without one, as the claims measured above are).
        let mut renews = 0;
        for k in 0..SLICES {
            let tasks = &work[k * slice..][..slice];
            let renewed: Vec<String> = tasks
                .iter()
                .filter_map(|task| registry.claim(task, None).ok())
                .map(|claimed| claimed.claim.task_id)
                .collect();
            let start = Instant::now();
            for task_id in &renewed {
                registry
                    .renew(task_id, None, Duration::from_secs(600))
                    .expect("renew");
            }
            spent[6] += start.elapsed();
            renews += renewed.len();
            for task_id in &renewed {
                registry.release(task_id, None).expect("release");
            }
        }
        if rep > 0 {
            for (side, spent) in spent.iter().enumerate() {
                let calls = if side == 6 { renews } else { claimed[side % 3] };
                let calls = calls.max(1) as u32;
                times[side].push(*spent / calls);
            }
        }
    }
    // The load counter with the change feed wrote one event per call.
    assert_eq!(
        event_seq(&counters[1].conn) - feed_seq,
        feed_calls as i64,
        "the change feed's events"
    );
    // WAL frames per call: 50 calls after a checkpoint that empties the
    // -wal file (50 times a dozen frames stays far under the
    // CHECKPOINT_PAGES frames that start a checkpoint), then the frame count
    // a passive checkpoint reports.
    let frames = |file: &Path, calls: &mut dyn FnMut(usize)| -> f64 {
        let conn = Connection::open(file).expect("open");
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("truncate");
        for i in 0..FRAME_CALLS {
            calls(i);
        }
        let logged: i64 = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
            .expect("checkpoint");
        logged as f64 / FRAME_CALLS as f64
    };
    let mut held = Vec::new();
    let claim_frames = frames(&path, &mut |i| {
        if let Ok(claimed) = registry.claim(&work[i], None) {
            held.push(claimed.claim.task_id);
        }
    });
    let release_frames = frames(&path, &mut |i| {
        if let Some(task_id) = held.get(i) {
            registry.release(task_id, None).expect("release");
        }
    });
    let [(old_claim, old_release), (feed_claim, feed_release)] = counters.each_ref().map(|old| {
        let old_path = old.conn.path().map(Path::new).expect("path").to_owned();
        let mut loaded = Vec::new();
        let claim = frames(&old_path, &mut |i| {
            loaded.extend(old.claim(&work[i]));
        });
        let release = frames(&old_path, &mut |i| {
            if let Some(id) = loaded.get(i) {
                old.release(id);
            }
        });
        (claim, release)
    });
    bench.note(format!(
        "WAL frames (pages written) per call, {n} agents: claim {claim_frames:.2}, the load counter's claim {old_claim:.2}, with the change feed {feed_claim:.2}; release {release_frames:.2}, the load counter's release {old_release:.2}, with the change feed {feed_release:.2}"
    ));
    let [
        claim_rows,
        claim_counter,
        claim_feed,
        release_rows,
        release_counter,
        release_feed,
        renew_rows,
    ] = times;
    // Each of roster's calls against the load counter's, bare and with the
    // change feed's event; renew against the release.
    let bare = "(schema 3), bare SQL";
    let fed = "with the change feed's event";
    for (call, roster, baseline, base_call, side) in [
        ("claim", &claim_rows, claim_counter, "claim", bare),
        ("claim", &claim_rows, claim_feed, "claim", fed),
        (
            "renew",
            &renew_rows,
            release_counter.clone(),
            "release",
            bare,
        ),
        ("renew", &renew_rows, release_feed.clone(), "release", fed),
        ("release", &release_rows, release_counter, "release", bare),
        ("release", &release_rows, release_feed, "release", fed),
    ] {
        bench.push(
            format!("{call}, {n} agents"),
            &format!("the load counter's {base_call} {side}"),
            Times::new(roster.clone(), baseline),
            "roster / baseline <= 1.5",
        );
    }
}

/// Measures the claim rows at every size.
pub fn run(bench: &mut Bench) {
    for n in bench.sizes() {
        claim_and_release(bench, n, &tasks(BATCH, 5));
        let work = tasks(512, 5);
        let agents = fleet(n, 21);
        let (_, registry) = bench.roster_file(&format!("claim-{n}.db"), &agents);
        let (_, seed_sqlite) = bench.roster_file(&format!("claim-seed-{n}.db"), &agents);
        let memory = MemoryRegistry::new();
        for agent in &agents {
            memory.register(agent.clone()).expect("register");
        }
        let router = DefaultRouter::new();
        // Claims are timed alone; the slots are given back after each batch,
        // outside the timing, so that every batch sees the same loads.
        let timed = |registry: &dyn AgentRegistry, batch: usize, seed: bool| -> Duration {
            let mut taken = Vec::with_capacity(batch);
            let start = Instant::now();
            for task in work.iter().cycle().take(batch) {
                let claimed = if seed {
                    dispatch(registry, &router, task)
                } else {
                    claim(registry, task)
                };
                if let Ok(claimed) = claimed {
                    taken.push(claimed);
                }
            }
            let elapsed = start.elapsed() / batch as u32;
            for claimed in taken {
                release(registry, &claimed);
            }
            elapsed
        };
        let slow_batch = if n >= 100_000 { 3 } else { 20 };
        // Warm-up, untimed.
        timed(&registry, 20, false);
        timed(&memory, 2, true);
        let [roster, seed_memory, seed_sqlite, memory_claim] = interleaved(
            bench.reps,
            [
                &mut || timed(&registry, 200, false),
                &mut || timed(&memory, slow_batch, true),
                &mut || timed(&seed_sqlite, 3, true),
                &mut || timed(&memory, 20, false),
            ],
        );
        let goal = if n >= 100_000 {
            "baseline / roster >= 100"
        } else {
            "baseline / roster >= 50"
        };
        let baselines = [
            ("list + route + update, MemoryRegistry", seed_memory, goal),
            (
                "list + route + update, SqliteRegistry",
                seed_sqlite,
                "report",
            ),
            ("MemoryRegistry::claim", memory_claim, "report"),
        ];
        for (name, times, goal) in baselines {
            bench.push(
                format!("claim, {n} agents"),
                name,
                Times::new(roster.clone(), times),
                goal,
            );
        }
    }
}
