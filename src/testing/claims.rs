//! One policy: for random registries and random tasks, `claim` picks the
//! agent that [`DefaultRouter`] picks over `list()`, or both find none.
//!
//! A backend may evaluate the policy any way it likes (SQL over indexes, a
//! cache); these properties hold it to the pure function.

use chrono::Utc;
use proptest::prelude::*;
use proptest::sample::subsequence;
use proptest::test_runner::TestRunner;

use super::{BoxError, Contract};
use crate::{
    AgentInfo, AgentRegistry, AgentStatus, DefaultRouter, Error, Priority, Task, TaskRouter,
};

const VOCABULARY: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

fn status() -> impl Strategy<Value = AgentStatus> {
    prop_oneof![
        Just(AgentStatus::Available),
        Just(AgentStatus::Busy),
        Just(AgentStatus::Offline)
    ]
}

fn priority() -> impl Strategy<Value = Priority> {
    prop_oneof![
        Just(Priority::Low),
        Just(Priority::Medium),
        Just(Priority::High),
        Just(Priority::Critical)
    ]
}

/// Loads include unlimited agents (max 0), full ones and odd ratios.
fn load() -> impl Strategy<Value = (u32, u32)> {
    prop_oneof![
        (0_u32..6).prop_map(|load| (load, 0)),
        (1_u32..7).prop_flat_map(|max| (0..=max, Just(max))),
    ]
}

fn agent(vocabulary: usize) -> impl Strategy<Value = AgentInfo> {
    (
        "[a-e]{1,3}",
        subsequence(&VOCABULARY[..vocabulary], 0..=vocabulary),
        status(),
        load(),
        // One agent in eight is drained (by `drain`, after register).
        proptest::bool::weighted(0.125),
    )
        .prop_map(
            |(id, caps, status, (current_load, max_load), drained)| AgentInfo {
                name: format!("agent {id}"),
                id,
                capabilities: caps.into_iter().map(String::from).collect(),
                status,
                last_heartbeat: Utc::now(),
                current_load,
                max_load,
                drained,
                ..AgentInfo::default()
            },
        )
}

fn task() -> impl Strategy<Value = Task> {
    // "zz" is a label no agent has.
    (
        subsequence(&["a", "b", "c", "d", "e", "f", "zz"][..], 0..=3),
        priority(),
    )
        .prop_map(|(labels, priority)| Task {
            id: String::new(),
            labels: labels.into_iter().map(String::from).collect(),
            priority,
        })
}

/// Registers `agents`, then for each task compares claim with the router.
fn check(registry: &dyn AgentRegistry, agents: &[AgentInfo], tasks: &[Task]) {
    for agent in agents {
        registry.register(agent.clone()).expect("register");
        registry.drain(&agent.id, agent.drained).expect("drain");
    }
    let router = DefaultRouter::new();
    for (step, task) in tasks.iter().enumerate() {
        let before = registry.list().expect("list");
        match (
            router.route(task, &before),
            registry.claim(task, None).map(|claimed| claimed.agent),
        ) {
            (Ok(want), Ok(got)) => {
                assert_eq!(got.id, want, "step {step}: {task:?}");
                let old = before.iter().find(|a| a.id == want).expect("listed");
                assert_eq!(got.current_load, old.current_load + 1);
            }
            (Err(Error::NoEligibleAgent), Err(Error::NoEligibleAgent)) => {
                assert_eq!(registry.list().expect("list"), before, "nothing changed");
            }
            (want, got) => panic!("step {step}: {task:?}: router {want:?}, claim {got:?}"),
        }
    }
}

/// Runs `check` on a fresh registry for every input of `strategy`.
fn property(
    contract: &Contract,
    cases: u32,
    strategy: impl Strategy<Value = (Vec<AgentInfo>, Vec<Task>)>,
) -> Result<(), BoxError> {
    drop(contract.fresh()?);
    let mut runner = TestRunner::new(contract.proptest_config(cases));
    super::report(runner.run(&strategy, |(agents, tasks)| {
        let registry = contract
            .fresh()
            .map_err(|e| TestCaseError::fail(format!("factory: {e}")))?;
        check(&*registry, &agents, &tasks);
        Ok(())
    }));
    Ok(())
}

/// [`AgentRegistry::claim`]: "Chooses the agent that [`DefaultRouter`] would
/// choose for `task` among the agents registered at this instant, adds one
/// to its `current_load`", and changes nothing when there is none: 128
/// random registries of up to 25 agents, up to 8 claims each.
///
/// # Errors
///
/// Whatever the contract's factory fails with, before the first input.
///
/// # Panics
///
/// When `claim` and the router disagree, with the smallest input that shows
/// it.
pub fn claim_picks_what_the_router_picks(contract: &Contract) -> Result<(), BoxError> {
    property(
        contract,
        128,
        (
            prop::collection::vec(agent(5), 0..25),
            prop::collection::vec(task(), 1..8),
        ),
    )
}

/// [`AgentRegistry::claim`]: "Chooses the agent that [`DefaultRouter`] would
/// choose for `task` among the agents registered at this instant", in
/// registries of 300 to 600 agents: larger than the head of the routing order
/// a backend may look at first (`SqliteRegistry` walks 256 entries, then the
/// holders of the rarest label).
///
/// # Errors
///
/// Whatever the contract's factory fails with, before the first input.
///
/// # Panics
///
/// When `claim` and the router disagree, with the smallest input that shows
/// it.
pub fn claim_picks_what_the_router_picks_in_large_registries(
    contract: &Contract,
) -> Result<(), BoxError> {
    property(
        contract,
        8,
        (
            prop::collection::vec(agent(6), 300..600).prop_map(|agents| {
                agents
                    .into_iter()
                    .enumerate()
                    .map(|(i, mut a)| {
                        a.id = format!("{}-{i:03}", a.id);
                        a
                    })
                    .collect::<Vec<_>>()
            }),
            prop::collection::vec(task(), 10..40),
        ),
    )
}

/// [`DefaultRouter`]: an eligible agent "holds every label of the task among
/// its capabilities", however late in routing order: a rare label held only
/// by agents behind 600 idle ones is found, and the best of its holders
/// chosen.
///
/// # Errors
///
/// Whatever the contract's factory fails with.
pub fn rare_labels_late_in_routing_order_are_found(contract: &Contract) -> Result<(), BoxError> {
    let mut agents = Vec::new();
    for i in 0..600 {
        agents.push(AgentInfo {
            id: format!("idle-{i:03}"),
            name: "idle".into(),
            capabilities: vec!["common".into()],
            last_heartbeat: Utc::now(),
            ..AgentInfo::default()
        });
    }
    for (i, (load, max)) in [(3, 4), (1, 2), (2, 4), (5, 6), (1, 2)]
        .into_iter()
        .enumerate()
    {
        agents.push(AgentInfo {
            id: format!("rare-{i}"),
            name: "rare".into(),
            capabilities: vec!["common".into(), "rare".into()],
            current_load: load,
            max_load: max,
            last_heartbeat: Utc::now(),
            ..AgentInfo::default()
        });
    }
    let tasks: Vec<Task> = (0..12)
        .map(|i| Task {
            id: format!("t{i}"),
            labels: vec!["rare".into(), "common".into()],
            priority: if i % 2 == 0 {
                Priority::Medium
            } else {
                Priority::Critical
            },
        })
        .collect();
    check(&*contract.fresh()?, &agents, &tasks);
    Ok(())
}

/// [`DefaultRouter`]: "An agent is *eligible* for a task when it is not
/// offline": a head of the routing order that is all offline (400 agents) is
/// skipped, and a task without labels finds the online agent behind it.
///
/// # Errors
///
/// Whatever the contract's factory fails with.
pub fn an_offline_head_of_the_routing_order_is_skipped(
    contract: &Contract,
) -> Result<(), BoxError> {
    let mut agents: Vec<AgentInfo> = (0..400)
        .map(|i| AgentInfo {
            id: format!("gone-{i:03}"),
            name: "gone".into(),
            status: AgentStatus::Offline,
            last_heartbeat: Utc::now(),
            ..AgentInfo::default()
        })
        .collect();
    agents.push(AgentInfo {
        id: "alive".into(),
        name: "alive".into(),
        current_load: 3,
        max_load: 4,
        last_heartbeat: Utc::now(),
        ..AgentInfo::default()
    });
    let tasks: Vec<Task> = [Priority::Low, Priority::Critical, Priority::High]
        .into_iter()
        .map(|priority| Task {
            id: String::new(),
            labels: Vec::new(),
            priority,
        })
        .collect();
    check(&*contract.fresh()?, &agents, &tasks);
    Ok(())
}
