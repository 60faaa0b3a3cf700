//! A registry built with a router of its own claims through it: the router
//! sees exactly the eligible agents, its choice gets the slot in the same
//! atomic step, and a choice outside the eligible agents is refused.

mod common;

use std::sync::{Arc, Mutex};

use roster::{
    AgentInfo, AgentRegistry, AgentStatus, Error, MemoryRegistry, Result, SqliteOptions, Task,
    TaskRouter,
};

/// Picks the eligible agent with the largest id, and records what it saw.
#[derive(Debug, Default)]
struct LargestId {
    seen: Arc<Mutex<Vec<Vec<String>>>>,
}

impl TaskRouter for LargestId {
    fn route(&self, _task: &Task, agents: &[AgentInfo]) -> Result<String> {
        let ids: Vec<String> = agents.iter().map(|a| a.id.clone()).collect();
        self.seen.lock().expect("lock").push(ids);
        agents
            .iter()
            .map(|a| a.id.clone())
            .max()
            .ok_or(Error::NoEligibleAgent)
    }
}

/// Chooses an agent that is not among those it was given.
#[derive(Debug)]
struct Rogue;

impl TaskRouter for Rogue {
    fn route(&self, _task: &Task, _agents: &[AgentInfo]) -> Result<String> {
        Ok("full".into())
    }
}

fn fleet(registry: &dyn AgentRegistry) -> Result<()> {
    for (id, caps, status, load, max) in [
        ("a", &["x"][..], AgentStatus::Available, 0, 2),
        ("b", &["x", "y"][..], AgentStatus::Busy, 1, 2),
        ("c", &["y"][..], AgentStatus::Available, 0, 2),
        ("full", &["x"][..], AgentStatus::Available, 2, 2),
        ("off", &["x"][..], AgentStatus::Offline, 0, 2),
        ("drained", &["x"][..], AgentStatus::Available, 0, 2),
    ] {
        registry.register(AgentInfo {
            id: id.into(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            status,
            last_heartbeat: roster::now(),
            current_load: load,
            max_load: max,
            ..AgentInfo::default()
        })?;
    }
    registry.drain("drained", true)
}

fn check(registry: &dyn AgentRegistry, seen: &Mutex<Vec<Vec<String>>>) -> Result<()> {
    fleet(registry)?;
    let task = Task {
        labels: vec!["x".into()],
        ..Task::default()
    };
    // Eligible for x: a and b (full, off and drained are not); largest is b.
    let got = registry.claim(&task, None)?.agent;
    assert_eq!((got.id.as_str(), got.current_load), ("b", 2));
    // b is full now: the router sees only a.
    assert_eq!(registry.claim(&task, None)?.agent.id, "a");
    assert_eq!(
        *seen.lock().expect("lock"),
        [vec!["a".to_owned(), "b".to_owned()], vec!["a".to_owned()]]
    );
    registry.claim(&task, None)?;
    assert!(matches!(
        registry.claim(&task, None).map(|claimed| claimed.agent),
        Err(Error::NoEligibleAgent)
    ));
    Ok(())
}

#[test]
fn sqlite_claims_through_a_custom_router() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let router = LargestId::default();
    let seen = Arc::clone(&router.seen);
    let registry = SqliteOptions::new()
        .router(router)
        .open(dir.path().join("r.db"))?;
    check(&registry, &seen)
}

#[test]
fn memory_claims_through_a_custom_router() -> Result<()> {
    let router = LargestId::default();
    let seen = Arc::clone(&router.seen);
    check(&MemoryRegistry::with_router(router), &seen)
}

#[test]
fn a_router_choosing_an_ineligible_agent_is_refused_and_nothing_changes() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = SqliteOptions::new()
        .router(Rogue)
        .open(dir.path().join("r.db"))?;
    let memory = MemoryRegistry::with_router(Rogue);
    for registry in [&sqlite as &dyn AgentRegistry, &memory] {
        fleet(registry)?;
        let before = registry.list()?;
        let err = registry
            .claim(
                &Task {
                    labels: vec!["x".into()],
                    ..Task::default()
                },
                None,
            )
            .map(|claimed| claimed.agent)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid router: the router chose \"full\", which is not an eligible agent for the task"
        );
        assert_eq!(registry.list()?, before);
    }
    Ok(())
}
