//! One contract, checked by a model: random sequences of every operation,
//! valid and invalid, applied to a `MemoryRegistry` and a `SqliteRegistry`
//! side by side give the same answers, the same errors and the same state.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use proptest::prelude::*;
use proptest::sample::subsequence;
use roster::{
    AgentInfo, AgentRegistry, AgentStatus, MemoryRegistry, Priority, Result, SqliteRegistry, Task,
};

#[derive(Clone, Debug)]
enum Op {
    Register(AgentInfo),
    Deregister(String),
    Get(String),
    Heartbeat(String),
    Reap(Duration),
    Claim(Task),
    Release(String),
    List,
}

const IDS: [&str; 5] = ["a", "b", "c", "d", ""];
const CAPS: [&str; 4] = ["x", "y", "z", ""];

fn id() -> impl Strategy<Value = String> {
    proptest::sample::select(&IDS[..]).prop_map(String::from)
}

fn agent() -> impl Strategy<Value = AgentInfo> {
    (
        id(),
        prop_oneof![Just("worker".to_owned()), Just(String::new())],
        subsequence(&CAPS[..], 0..=3),
        prop_oneof![
            Just(AgentStatus::Available),
            Just(AgentStatus::Busy),
            Just(AgentStatus::Offline)
        ],
        any::<bool>(),
        0_u32..5,
        0_u32..4,
    )
        .prop_map(|(id, name, caps, status, stale, load, max)| AgentInfo {
            id,
            name,
            capabilities: caps.into_iter().map(String::from).collect(),
            status,
            last_heartbeat: if stale {
                Utc::now() - TimeDelta::hours(2)
            } else {
                Utc::now()
            },
            current_load: load,
            max_load: max,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => agent().prop_map(Op::Register),
        1 => id().prop_map(Op::Deregister),
        1 => id().prop_map(Op::Get),
        2 => id().prop_map(Op::Heartbeat),
        1 => prop_oneof![Just(Duration::from_secs(3600)), Just(Duration::ZERO)].prop_map(Op::Reap),
        3 => (subsequence(&CAPS[..], 0..=2), 0_usize..4).prop_map(|(labels, p)| Op::Claim(Task {
            id: "t".into(),
            labels: labels.into_iter().map(String::from).collect(),
            priority: Priority::ALL[p],
        })),
        2 => id().prop_map(Op::Release),
        1 => Just(Op::List),
    ]
}

/// Heartbeats happen a few microseconds apart in the two registries: compare
/// everything else, and that both times are equally stale or fresh.
fn comparable(mut agent: AgentInfo) -> (AgentInfo, bool) {
    let fresh = Utc::now() - agent.last_heartbeat < TimeDelta::minutes(1);
    agent.last_heartbeat = chrono::DateTime::UNIX_EPOCH;
    (agent, fresh)
}

/// An operation's answer in a form both implementations must agree on.
fn apply(registry: &dyn AgentRegistry, op: &Op) -> String {
    fn show<T: std::fmt::Debug>(result: Result<T>) -> String {
        match result {
            Ok(value) => format!("ok {value:?}"),
            Err(e) => format!("error {e}"),
        }
    }
    match op {
        Op::Register(agent) => show(registry.register(agent.clone())),
        Op::Deregister(id) => show(registry.deregister(id)),
        Op::Get(id) => show(registry.get(id).map(comparable)),
        Op::Heartbeat(id) => show(registry.heartbeat(id)),
        Op::Reap(ttl) => show(registry.reap(*ttl)),
        Op::Claim(task) => show(registry.claim(task).map(comparable)),
        Op::Release(id) => show(registry.release(id)),
        Op::List => show(
            registry
                .list()
                .map(|all| all.into_iter().map(comparable).collect::<Vec<_>>()),
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn memory_and_sqlite_registries_agree(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = SqliteRegistry::open(dir.path().join("model.db")).expect("open");
        let memory = MemoryRegistry::new();
        for (step, op) in ops.iter().enumerate() {
            let (want, got) = (apply(&memory, op), apply(&sqlite, op));
            prop_assert_eq!(&got, &want, "step {}: {:?}", step, op);
        }
        prop_assert_eq!(apply(&sqlite, &Op::List), apply(&memory, &Op::List));
    }
}
