//! [`MemoryRegistry`]: the registry kept in the memory of one process.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use crate::agent::{AgentInfo, AgentStatus};
use crate::error::{Error, Result};
use crate::registry::{AgentRegistry, now, reap_cutoff};
use crate::route::{TaskRouter, choose, eligible};
use crate::task::Task;

/// An [`AgentRegistry`] held in memory and guarded by a read-write lock.
///
/// Nothing survives the process and nothing is shared with other processes:
/// use it for tests, or where a registry lives and dies with one program.
/// For everything else there is [`SqliteRegistry`](crate::SqliteRegistry).
#[derive(Default)]
pub struct MemoryRegistry {
    agents: RwLock<BTreeMap<String, AgentInfo>>,
    /// `None`: [`DefaultRouter`](crate::DefaultRouter).
    router: Option<Box<dyn TaskRouter>>,
}

impl std::fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRegistry")
            .field("agents", &self.read().len())
            .field("custom_router", &self.router.is_some())
            .finish()
    }
}

impl MemoryRegistry {
    /// Creates an empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates an empty registry whose [`claim`](AgentRegistry::claim)
    /// places tasks with `router` instead of
    /// [`DefaultRouter`](crate::DefaultRouter).
    pub fn with_router(router: impl TaskRouter + 'static) -> Self {
        Self {
            agents: RwLock::default(),
            router: Some(Box::new(router)),
        }
    }

    // A panic while the lock is held cannot leave a half-written agent: every
    // write below replaces or edits whole values after validation, so a
    // poisoned lock still guards consistent data.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, AgentInfo>> {
        self.agents.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, AgentInfo>> {
        self.agents.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl AgentRegistry for MemoryRegistry {
    fn register(&self, agent: AgentInfo) -> Result<()> {
        let mut agent = agent.validated()?;
        let mut agents = self.write();
        // An operator's drain survives a re-register; a new agent starts
        // undrained.
        agent.drained = agents.get(&agent.id).is_some_and(|old| old.drained);
        agents.insert(agent.id.clone(), agent);
        Ok(())
    }

    fn deregister(&self, id: &str) -> Result<()> {
        self.write()
            .remove(id)
            .map(drop)
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    fn get(&self, id: &str) -> Result<AgentInfo> {
        self.read()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    fn list(&self) -> Result<Vec<AgentInfo>> {
        Ok(self.read().values().cloned().collect())
    }

    fn heartbeat(&self, id: &str) -> Result<()> {
        let mut agents = self.write();
        let agent = agents
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        agent.last_heartbeat = now();
        if agent.status == AgentStatus::Offline {
            agent.status = AgentStatus::Available;
        }
        Ok(())
    }

    fn set_status(&self, id: &str, status: AgentStatus) -> Result<()> {
        let mut agents = self.write();
        let agent = agents
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        agent.status = status;
        Ok(())
    }

    fn drain(&self, id: &str, drained: bool) -> Result<()> {
        let mut agents = self.write();
        let agent = agents
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        agent.drained = drained;
        Ok(())
    }

    fn reap(&self, ttl: Duration) -> Result<Vec<String>> {
        let cutoff = reap_cutoff(now(), ttl)?;
        let mut agents = self.write();
        let mut reaped = Vec::new();
        for agent in agents.values_mut() {
            if agent.status != AgentStatus::Offline && agent.last_heartbeat < cutoff {
                agent.status = AgentStatus::Offline;
                reaped.push(agent.id.clone());
            }
        }
        // BTreeMap iterates in id order, so `reaped` is already sorted.
        Ok(reaped)
    }

    fn claim(&self, task: &Task) -> Result<AgentInfo> {
        let mut agents = self.write();
        let id = match &self.router {
            None => choose(task, agents.values())?.id.clone(),
            Some(router) => {
                let labels = task.checked_labels()?;
                let eligible: Vec<AgentInfo> = agents
                    .values()
                    .filter(|agent| eligible(agent, &labels))
                    .cloned()
                    .collect();
                if eligible.is_empty() {
                    return Err(Error::NoEligibleAgent);
                }
                let id = router.route(task, &eligible)?;
                if !eligible.iter().any(|agent| agent.id == id) {
                    return Err(Error::invalid(
                        "router",
                        format!(
                            "the router chose {id:?}, which is not an eligible agent for the task"
                        ),
                    ));
                }
                id
            }
        };
        let agent = agents
            .get_mut(&id)
            .ok_or_else(|| Error::NotFound(id.clone()))?;
        // `choose` only returns agents with a free slot, so this cannot
        // overflow or pass max_load.
        agent.current_load += 1;
        Ok(agent.clone())
    }

    fn release(&self, id: &str) -> Result<()> {
        let mut agents = self.write();
        let agent = agents
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        agent.current_load = agent
            .current_load
            .checked_sub(1)
            .ok_or_else(|| Error::NothingToRelease(id.to_owned()))?;
        Ok(())
    }
}
