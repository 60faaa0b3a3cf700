//! [`TaskRouter`] and [`DefaultRouter`]: the routing policy, as a pure
//! function over agents.

use std::cmp::Ordering;

use crate::agent::AgentInfo;
use crate::error::{Error, Result};
use crate::task::{Priority, Task};

/// Chooses the agent that should run a task.
///
/// A registry built with a router of its own
/// ([`SqliteOptions::router`](crate::SqliteOptions::router),
/// [`MemoryRegistry::with_router`](crate::MemoryRegistry::with_router)) calls
/// it from [`claim`](crate::AgentRegistry::claim) with the agents eligible for
/// the task (online, with a free slot, holding every label), ordered by id,
/// and takes a slot on the agent it returns, in the same atomic step.
pub trait TaskRouter: Send + Sync {
    /// Returns the id of the agent, among `agents`, that should run `task`.
    /// A registry refuses, with [`Error::Invalid`] naming `router`, an id
    /// that is not among the eligible agents it passed.
    ///
    /// # Errors
    ///
    /// [`Error::NoEligibleAgent`] when no agent can take the task, and
    /// [`Error::Invalid`] for a task whose labels break the rules.
    fn route(&self, task: &Task, agents: &[AgentInfo]) -> Result<String>;
}

/// roster's routing policy.
///
/// An agent is *eligible* for a task when it is not offline, not drained,
/// has a free slot (`max_load` 0, or `current_load` below `max_load`) and
/// holds every label of the task among its capabilities. Among the eligible agents:
///
/// - a [`Critical`](Priority::Critical) task goes to the lowest
///   `current_load`;
/// - any other task goes to the lowest *usage* `current_load / max_load`
///   (0 when `max_load` is 0, unlimited), that is the highest score
///   `1 - usage`, computed in `f64` exactly as SQLite computes it;
/// - ties go to the smallest id (byte order).
///
/// [`AgentRegistry::claim`](crate::AgentRegistry::claim) applies the same
/// policy inside the registry and takes a slot in the same step.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultRouter;

impl DefaultRouter {
    /// The router.
    pub fn new() -> Self {
        Self
    }
}

impl TaskRouter for DefaultRouter {
    fn route(&self, task: &Task, agents: &[AgentInfo]) -> Result<String> {
        choose(task, agents.iter()).map(|agent| agent.id.clone())
    }
}

/// The policy itself, over any agents: the chosen agent, or
/// [`Error::NoEligibleAgent`].
pub(crate) fn choose<'a>(
    task: &Task,
    agents: impl Iterator<Item = &'a AgentInfo>,
) -> Result<&'a AgentInfo> {
    let labels = task.checked_labels()?;
    let eligible = agents.filter(|agent| eligible(agent, &labels));
    let best = match task.priority {
        Priority::Critical => eligible.min_by(|a, b| {
            a.current_load
                .cmp(&b.current_load)
                .then_with(|| a.id.cmp(&b.id))
        }),
        Priority::Low | Priority::Medium | Priority::High => {
            eligible.min_by(|a, b| by_usage(a, b).then_with(|| a.id.cmp(&b.id)))
        }
    };
    best.ok_or(Error::NoEligibleAgent)
}

/// Whether `agent` can take a task with these (checked) labels: online, not
/// drained, a free slot, every label among its capabilities.
pub(crate) fn eligible(agent: &AgentInfo, labels: &[&str]) -> bool {
    !agent.drained
        && agent.has_capacity()
        && labels
            .iter()
            .all(|label| agent.capabilities.iter().any(|c| c == label))
}

/// The share of its capacity an agent uses: what non-critical tasks are
/// routed by. Mirrors the SQL key of the `agents_claim_by_usage` index.
pub(crate) fn usage(agent: &AgentInfo) -> f64 {
    if agent.max_load == 0 {
        0.0
    } else {
        f64::from(agent.current_load) / f64::from(agent.max_load)
    }
}

fn by_usage(a: &AgentInfo, b: &AgentInfo) -> Ordering {
    usage(a).total_cmp(&usage(b))
}
