//! Never over-books: many claimers at once, on one registry or on many
//! handles of one file, get exactly the free capacity and no more.
//!
//! The claimers wait at a barrier until all of them are ready, so that they
//! really claim at the same time rather than one after another.

mod common;

use std::sync::Barrier;
use std::thread;

use chrono::Utc;
use roster::{
    AgentInfo, AgentRegistry, AgentStatus, Error, MemoryRegistry, Priority, SqliteRegistry, Task,
};

const THREADS: usize = 8;

/// Runs `work` on [`THREADS`] threads at once: each first makes what
/// `prepare` gives it (a handle of its own, say), then all wait at a
/// barrier and start together. Their results, in thread order.
fn at_once<S, T: Send>(
    prepare: impl Fn(usize) -> S + Sync,
    work: impl Fn(S, usize) -> T + Sync,
) -> Vec<T> {
    let start = Barrier::new(THREADS);
    let (prepare, work, start) = (&prepare, &work, &start);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                scope.spawn(move || {
                    let prepared = prepare(t);
                    start.wait();
                    work(prepared, t)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("thread"))
            .collect()
    })
}

fn fleet() -> Vec<AgentInfo> {
    (0..12_u32)
        .map(|i| AgentInfo {
            id: format!("agent-{i:02}"),
            name: format!("agent {i}"),
            capabilities: vec!["x".into()],
            status: if i % 3 == 0 {
                AgentStatus::Busy
            } else {
                AgentStatus::Available
            },
            last_heartbeat: Utc::now(),
            current_load: i % 2,
            max_load: 2 + i % 5,
            ..AgentInfo::default()
        })
        .collect()
}

fn free_capacity(agents: &[AgentInfo]) -> u32 {
    agents.iter().map(|a| a.max_load - a.current_load).sum()
}

/// Claims until the registry says no agent is eligible; returns how many
/// claims succeeded.
fn claim_until_full(registry: &dyn AgentRegistry, thread: usize) -> u32 {
    let mut claims = 0;
    loop {
        let task = Task {
            id: format!("t{thread}-{claims}"),
            labels: vec!["x".into()],
            priority: if claims % 4 == 0 {
                Priority::Critical
            } else {
                Priority::Medium
            },
        };
        match registry.claim(&task, None).map(|claimed| claimed.agent) {
            Ok(agent) => {
                assert!(agent.current_load <= agent.max_load, "{agent:?}");
                claims += 1;
            }
            Err(Error::NoEligibleAgent) => return claims,
            Err(other) => panic!("claim failed: {other}"),
        }
    }
}

fn assert_exactly_full(registry: &dyn AgentRegistry, claims: u32, expected: u32) {
    assert_eq!(
        claims, expected,
        "successful claims must equal the free capacity"
    );
    for agent in registry.list().expect("list") {
        assert_eq!(agent.current_load, agent.max_load, "{}", agent.id);
    }
}

#[test]
fn threads_on_one_memory_registry_never_over_book() {
    let registry = MemoryRegistry::new();
    let agents = fleet();
    for agent in &agents {
        registry.register(agent.clone()).expect("register");
    }
    let claims = at_once(|_| (), |(), t| claim_until_full(&registry, t))
        .into_iter()
        .sum();
    assert_exactly_full(&registry, claims, free_capacity(&agents));
}

#[test]
fn many_sqlite_handles_on_one_file_never_over_book() {
    let setup = common::TempRegistry::named("shared.db");
    let agents = fleet();
    for agent in &agents {
        setup.register(agent.clone()).expect("register");
    }
    // One handle per thread, each with its own pool, as separate processes
    // would have; all are open before any claims.
    let claims = at_once(
        |_| SqliteRegistry::open(setup.path()).expect("open"),
        |registry, t| claim_until_full(&registry, t),
    )
    .into_iter()
    .sum();
    assert_exactly_full(&*setup, claims, free_capacity(&agents));
}

/// The agent every claim of the timing tests goes to.
fn unlimited() -> AgentInfo {
    AgentInfo {
        id: "unlimited".into(),
        name: "unlimited".into(),
        last_heartbeat: Utc::now(),
        max_load: 0,
        ..AgentInfo::default()
    }
}

/// Takes `CLAIMS` claims on `registry`, for thread `t`.
fn claim_many(registry: &dyn AgentRegistry, t: usize) {
    for c in 0..CLAIMS {
        let task = Task {
            id: format!("t{t}-{c}"),
            ..Task::default()
        };
        registry.claim(&task, None).expect("claim");
    }
}

/// How many claims each thread of the timing tests takes.
const CLAIMS: usize = 50;

/// Every claim `registry` holds (in token order) has a later token than
/// the one before it and was not taken before it.
fn assert_timed_in_token_order(registry: &dyn AgentRegistry) {
    let claims = registry.claims(None).expect("claims");
    assert_eq!(claims.len(), THREADS * CLAIMS);
    for pair in claims.windows(2) {
        assert!(pair[0].token < pair[1].token, "{pair:?}");
        assert!(
            pair[0].claimed_at <= pair[1].claimed_at,
            "token {} was claimed at {}, after token {} at {}",
            pair[0].token,
            pair[0].claimed_at,
            pair[1].token,
            pair[1].claimed_at
        );
    }
}

/// Claims taken at once by several handles of one file have their
/// `claimed_at` in the order of their tokens: each claim reads the time
/// while it holds the write lock, not before it waits for it.
#[test]
fn claims_taken_at_once_are_timed_in_token_order() {
    let setup = common::TempRegistry::named("timed.db");
    setup.register(unlimited()).expect("register");
    at_once(
        |_| SqliteRegistry::open(setup.path()).expect("open"),
        |registry, t| claim_many(&registry, t),
    );
    assert_timed_in_token_order(&*setup);
}

/// The same on one `MemoryRegistry` shared by threads: the time is read
/// under its lock.
#[test]
fn claims_taken_at_once_in_memory_are_timed_in_token_order() {
    let registry = MemoryRegistry::new();
    registry.register(unlimited()).expect("register");
    at_once(|_| (), |(), t| claim_many(&registry, t));
    assert_timed_in_token_order(&registry);
}
