//! The [`AgentRegistry`] trait: the API every registry implements.

use std::time::Duration;

use crate::agent::AgentInfo;
use crate::error::Result;
use crate::task::Task;

/// A registry of agents: who they are, whether they are alive, how loaded
/// they are.
///
/// Every implementation keeps the same contract, checked by one conformance
/// suite run against each: the same answers and the same errors for the same
/// calls. The trait is object safe, so a program can hold an
/// `Arc<dyn AgentRegistry>` and choose the implementation at run time.
pub trait AgentRegistry: Send + Sync {
    /// Adds the agent, or replaces every field of the one with the same id
    /// (capabilities and metadata are replaced, not merged). The registry
    /// stores a copy, with duplicate capabilities dropped.
    ///
    /// What the registry knows better survives: `drained` is never taken
    /// from the caller (a new agent is not drained; an existing one keeps
    /// what an operator set with [`drain`](AgentRegistry::drain)).
    ///
    /// # Errors
    ///
    /// [`Error::MissingId`](crate::Error::MissingId) for an empty id and
    /// [`Error::Invalid`](crate::Error::Invalid) for an agent that breaks one
    /// of the [rules](AgentInfo#rules); nothing is stored then.
    fn register(&self, agent: AgentInfo) -> Result<()>;

    /// Removes the agent.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`](crate::Error::NotFound) if no agent has this id.
    fn deregister(&self, id: &str) -> Result<()>;

    /// Returns a copy of the agent, exactly as it was stored.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`](crate::Error::NotFound) if no agent has this id.
    fn get(&self, id: &str) -> Result<AgentInfo>;

    /// Returns a copy of every agent, ordered by id.
    ///
    /// # Errors
    ///
    /// Only errors of the storage underneath.
    fn list(&self) -> Result<Vec<AgentInfo>>;

    /// Records that the agent is alive: `last_heartbeat` becomes now (UTC),
    /// an offline agent becomes available, a busy one stays busy.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`](crate::Error::NotFound) if no agent has this id.
    fn heartbeat(&self, id: &str) -> Result<()>;

    /// Sets the agent's status, whatever it was: for example `Offline` when
    /// its process stops cleanly, so that nobody waits for the reaper. Only
    /// the status changes.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`](crate::Error::NotFound) if no agent has this id.
    fn set_status(&self, id: &str, status: crate::AgentStatus) -> Result<()>;

    /// Drains the agent (`drained = true`: it gets no new claims, keeps
    /// heartbeating and keeps what it holds, like `kubectl cordon`) or
    /// undrains it. Only `drained` changes; draining twice is not an error.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`](crate::Error::NotFound) if no agent has this id.
    fn drain(&self, id: &str, drained: bool) -> Result<()>;

    /// Marks offline every agent that is not offline yet and whose
    /// `last_heartbeat` is older than now minus `ttl`, and returns their ids
    /// in ascending order. Agents that were already offline are not
    /// returned.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`](crate::Error::Invalid) for a `ttl` too large to
    /// subtract from now; otherwise only errors of the storage underneath.
    fn reap(&self, ttl: Duration) -> Result<Vec<String>>;

    /// Chooses the agent that [`DefaultRouter`](crate::DefaultRouter) (or
    /// the registry's own router) would choose for `task` among the agents
    /// registered at this instant (drained agents are never chosen), adds
    /// one to its `current_load`, and returns it with the new load, all as
    /// one atomic step: two claims, from any threads or processes, never take
    /// the same last slot.
    ///
    /// # Errors
    ///
    /// [`Error::NoEligibleAgent`](crate::Error::NoEligibleAgent) when no
    /// agent can take the task, [`Error::Invalid`](crate::Error::Invalid) for
    /// labels that break the rules; nothing changes then.
    fn claim(&self, task: &Task) -> Result<AgentInfo>;

    /// Gives back one slot taken by [`claim`](AgentRegistry::claim):
    /// subtracts one from the agent's `current_load`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`](crate::Error::NotFound) for an unknown id and
    /// [`Error::NothingToRelease`](crate::Error::NothingToRelease) when its
    /// load is already 0; nothing changes then.
    fn release(&self, id: &str) -> Result<()>;
}

/// The instant before which a heartbeat is stale for `ttl`, shared by every
/// implementation so that they agree to the nanosecond.
pub(crate) fn reap_cutoff(
    now: chrono::DateTime<chrono::Utc>,
    ttl: Duration,
) -> Result<chrono::DateTime<chrono::Utc>> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|ttl| now.checked_sub_signed(ttl))
        .ok_or_else(|| {
            crate::Error::invalid("ttl", format!("{ttl:?} reaches before the year 0000"))
        })
}

/// The current time in UTC, as every registry reads it.
///
/// Unlike `chrono::Utc::now`, which panics when the system clock is set
/// before 1970, this reads any clock: a heartbeat at such a time is stored
/// as it is (registries accept the years 0000 to 9999).
pub fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from(std::time::SystemTime::now())
}
