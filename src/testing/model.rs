//! The model check: random sequences of every operation, valid and invalid,
//! applied to a registry and to a plain model of the contract side by side,
//! give the same answers, the same errors and the same state.
//!
//! The model is not [`MemoryRegistry`](crate::MemoryRegistry): checked
//! against itself, `MemoryRegistry` would pass whatever it did, and the
//! contract would be whatever `MemoryRegistry` happens to do. The model is
//! the trait's documentation written as directly as it can be: an unordered
//! list of agents searched from end to end, with the parts of the contract
//! that are defined once for everybody taken as they are defined:
//! [`AgentInfo::validated`] for the rules, [`DefaultRouter`] for the choice
//! of `claim`.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use proptest::prelude::*;
use proptest::sample::subsequence;
use proptest::test_runner::TestRunner;

use super::{BoxError, Contract};
use crate::registry::reap_cutoff;
use crate::{
    AgentInfo, AgentRegistry, AgentStatus, DefaultRouter, Error, Priority, Result, Task, TaskRouter,
};

/// [`AgentRegistry`]: "Every implementation keeps the same contract ...: the
/// same answers and the same errors for the same calls." Random sequences of
/// up to 40 operations, 96 of them, each on a fresh registry, answer as the
/// model does, step by step, and leave the same agents.
///
/// Heartbeats happen a few microseconds apart in the two: times are compared
/// as fresh or stale, everything else exactly.
///
/// # Errors
///
/// Whatever the contract's factory fails with, before the first input.
///
/// # Panics
///
/// When the registry and the model disagree, with the smallest sequence of
/// operations that shows it.
pub fn registry_agrees_with_the_model(contract: &Contract) -> Result<(), BoxError> {
    drop(contract.fresh()?);
    let mut runner = TestRunner::new(contract.proptest_config(96));
    super::report(runner.run(&prop::collection::vec(op(), 1..40), |ops| {
        let registry = contract
            .fresh()
            .map_err(|e| TestCaseError::fail(format!("factory: {e}")))?;
        let model = Model::default();
        for (step, op) in ops.iter().enumerate() {
            let (want, got) = (apply(&model, op), apply(&*registry, op));
            prop_assert_eq!(&got, &want, "step {}: {:?}", step, op);
        }
        prop_assert_eq!(apply(&*registry, &Op::List), apply(&model, &Op::List));
        Ok(())
    }));
    Ok(())
}

/// The contract, plainly: agents in the order they were first registered.
#[derive(Debug, Default)]
struct Model {
    agents: Mutex<Vec<AgentInfo>>,
}

impl Model {
    fn agents(&self) -> MutexGuard<'_, Vec<AgentInfo>> {
        self.agents.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(id.to_owned())
}

impl AgentRegistry for Model {
    fn register(&self, agent: AgentInfo) -> Result<()> {
        let mut agent = agent.validated()?;
        let mut agents = self.agents();
        match agents.iter_mut().find(|a| a.id == agent.id) {
            Some(old) => {
                agent.drained = old.drained;
                *old = agent;
            }
            None => {
                agent.drained = false;
                agents.push(agent);
            }
        }
        Ok(())
    }

    fn deregister(&self, id: &str) -> Result<()> {
        let mut agents = self.agents();
        let before = agents.len();
        agents.retain(|a| a.id != id);
        if agents.len() == before {
            return Err(not_found(id));
        }
        Ok(())
    }

    fn get(&self, id: &str) -> Result<AgentInfo> {
        let agents = self.agents();
        agents
            .iter()
            .find(|a| a.id == id)
            .cloned()
            .ok_or_else(|| not_found(id))
    }

    fn list(&self) -> Result<Vec<AgentInfo>> {
        let mut all = self.agents().clone();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    fn heartbeat(&self, id: &str) -> Result<()> {
        let mut agents = self.agents();
        let agent = agents
            .iter_mut()
            .find(|a| a.id == id)
            .ok_or_else(|| not_found(id))?;
        agent.last_heartbeat = Utc::now();
        if agent.status == AgentStatus::Offline {
            agent.status = AgentStatus::Available;
        }
        Ok(())
    }

    fn set_status(&self, id: &str, status: AgentStatus) -> Result<()> {
        let mut agents = self.agents();
        let agent = agents
            .iter_mut()
            .find(|a| a.id == id)
            .ok_or_else(|| not_found(id))?;
        agent.status = status;
        Ok(())
    }

    fn drain(&self, id: &str, drained: bool) -> Result<()> {
        let mut agents = self.agents();
        let agent = agents
            .iter_mut()
            .find(|a| a.id == id)
            .ok_or_else(|| not_found(id))?;
        agent.drained = drained;
        Ok(())
    }

    fn reap(&self, ttl: Duration) -> Result<Vec<String>> {
        let cutoff = reap_cutoff(Utc::now(), ttl)?;
        let mut reaped = Vec::new();
        for agent in self.agents().iter_mut() {
            if agent.status != AgentStatus::Offline && agent.last_heartbeat < cutoff {
                agent.status = AgentStatus::Offline;
                reaped.push(agent.id.clone());
            }
        }
        reaped.sort();
        Ok(reaped)
    }

    fn claim(&self, task: &Task) -> Result<AgentInfo> {
        let chosen = DefaultRouter::new().route(task, &self.list()?)?;
        let mut agents = self.agents();
        let agent = agents
            .iter_mut()
            .find(|a| a.id == chosen)
            .ok_or_else(|| not_found(&chosen))?;
        agent.current_load += 1;
        Ok(agent.clone())
    }

    fn release(&self, id: &str) -> Result<()> {
        let mut agents = self.agents();
        let agent = agents
            .iter_mut()
            .find(|a| a.id == id)
            .ok_or_else(|| not_found(id))?;
        if agent.current_load == 0 {
            return Err(Error::NothingToRelease(id.to_owned()));
        }
        agent.current_load -= 1;
        Ok(())
    }
}

#[derive(Clone, Debug)]
enum Op {
    Register(AgentInfo),
    Deregister(String),
    Get(String),
    Heartbeat(String),
    Reap(Duration),
    Claim(Task),
    Release(String),
    Drain(String, bool),
    SetStatus(String, AgentStatus),
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
        (
            any::<bool>(),
            prop_oneof![Just(None), Just(Some("host-a".to_owned()))],
            prop_oneof![Just(None), Just(Some(42_u32)), Just(Some(0_u32))],
            subsequence(&["zone", "owner", "v"][..], 0..=2),
        ),
    )
        .prop_map(
            |(id, name, caps, status, stale, load, max, (drained, host, pid, keys))| AgentInfo {
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
                // register must ignore it.
                drained,
                host,
                pid,
                started_at: pid.map(|_| Utc::now() - TimeDelta::minutes(5)),
                metadata: keys
                    .into_iter()
                    .map(|k| (k.to_owned(), format!("{k} value")))
                    .collect(),
            },
        )
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
        1 => (id(), any::<bool>()).prop_map(|(id, drained)| Op::Drain(id, drained)),
        1 => (id(), 0_usize..3).prop_map(|(id, s)| Op::SetStatus(id, AgentStatus::ALL[s])),
        1 => Just(Op::List),
    ]
}

/// Heartbeats happen a few microseconds apart in the two registries: compare
/// everything else, and that both times are equally stale or fresh.
fn comparable(mut agent: AgentInfo) -> (AgentInfo, bool) {
    let fresh = Utc::now() - agent.last_heartbeat < TimeDelta::minutes(1);
    agent.last_heartbeat = chrono::DateTime::UNIX_EPOCH;
    agent.started_at = agent.started_at.map(|_| chrono::DateTime::UNIX_EPOCH);
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
        Op::Drain(id, drained) => show(registry.drain(id, *drained)),
        Op::SetStatus(id, status) => show(registry.set_status(id, *status)),
        Op::List => show(
            registry
                .list()
                .map(|all| all.into_iter().map(comparable).collect::<Vec<_>>()),
        ),
    }
}
