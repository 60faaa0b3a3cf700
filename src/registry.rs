//! The [`AgentRegistry`] trait: the API every registry implements.

use std::time::Duration;

use crate::agent::AgentInfo;
use crate::claim::{Claim, Claimed, Recovered};
use crate::error::Result;
use crate::event::Event;
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
    /// what an operator set with [`drain`](AgentRegistry::drain)), and the
    /// claims the agent holds stay held: the caller's `current_load` is the
    /// agent's untracked load, and the stored `current_load` is that plus
    /// the claims it holds. Claims of an agent that was deregistered are not
    /// inherited by a new agent registered under the same id.
    ///
    /// # Errors
    ///
    /// [`Error::MissingId`](crate::Error::MissingId) for an empty id and
    /// [`Error::Invalid`](crate::Error::Invalid) for an agent that breaks one
    /// of the [rules](AgentInfo#rules), or whose `current_load` plus the
    /// claims it holds would pass a non-zero `max_load`; nothing is stored
    /// then.
    fn register(&self, agent: AgentInfo) -> Result<()>;

    /// Removes the agent. The claims it holds are kept, detached from it,
    /// until [`recover`](AgentRegistry::recover) takes them back as
    /// `agent_gone`: they are work to redo, not something to lose.
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
    /// registered at this instant (drained agents are never chosen), and
    /// records a [`Claim`] of `task.id` on it: its `current_load` grows by
    /// one, the claim gets a fencing token larger than every token before,
    /// and, with a `lease`, an expiry of now + `lease`. All of it is one
    /// atomic step: two claims, from any threads or processes, never take the
    /// same last slot, and a task id is held at most once. An empty
    /// `task.id` gets a unique, time-ordered one (`task-` and a ULID).
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyClaimed`](crate::Error::AlreadyClaimed) when `task.id`
    /// is held (even when no agent is free),
    /// [`Error::NoEligibleAgent`](crate::Error::NoEligibleAgent) when no
    /// agent can take the task, [`Error::Invalid`](crate::Error::Invalid) for
    /// a task id or labels that break the rules or a lease of 0; nothing
    /// changes then.
    fn claim(&self, task: &Task, lease: Option<Duration>) -> Result<Claimed>;

    /// Gives back the slot held for `task_id`: the claim is deleted and its
    /// agent's `current_load` drops by one. With `token`, only the claim
    /// with that token is released (a holder's release); without, whichever
    /// claim holds the task (an operator's override). Returns the claim
    /// released.
    ///
    /// # Errors
    ///
    /// [`Error::StaleClaim`](crate::Error::StaleClaim) when no claim of the
    /// task is held, or not under `token`; nothing changes then.
    fn release(&self, task_id: &str, token: Option<u64>) -> Result<Claim>;

    /// Extends the lease of the claim held for `task_id` (under `token`,
    /// when given) to now + `lease`, whether or not it had one or it has
    /// already run out, as long as nobody recovered it. Returns the claim
    /// renewed.
    ///
    /// # Errors
    ///
    /// [`Error::StaleClaim`](crate::Error::StaleClaim) as for `release`, and
    /// for a claim whose agent was deregistered;
    /// [`Error::Invalid`](crate::Error::Invalid) for a lease of 0 or one that
    /// ends past the year 9999. Nothing changes then.
    fn renew(&self, task_id: &str, token: Option<u64>, lease: Duration) -> Result<Claim>;

    /// The claims held, in the order they were taken (by token); only those
    /// of `agent_id` when given. Claims of deregistered agents are included
    /// (under the id of the agent that took them) until recovered.
    ///
    /// # Errors
    ///
    /// Only errors of the storage underneath.
    fn claims(&self, agent_id: Option<&str>) -> Result<Vec<Claim>>;

    /// Takes back every claim whose agent was deregistered, whose agent is
    /// offline, or whose lease has run out, in one step, and returns each
    /// with its reason ([`RecoverReason`](crate::RecoverReason): agent gone
    /// over agent offline over lease expired), ordered by token. Their slots
    /// are given back and their tasks may be claimed again. Recoverers in
    /// several processes at once return each claim exactly once in total.
    ///
    /// # Errors
    ///
    /// Only errors of the storage underneath.
    fn recover(&self) -> Result<Vec<Recovered>>;

    /// The change feed: the events after cursor `after`, oldest first, at
    /// most `limit` of them (1 to [`MAX_EVENTS_PAGE`](crate::MAX_EVENTS_PAGE)).
    /// Every state transition is one event, written in the same transaction
    /// as the change; cursors grow by one per event in commit order, so
    /// reading from where the last page ended returns every later event
    /// exactly once. Cursor 0 is before the first event.
    ///
    /// # Errors
    ///
    /// [`Error::CursorTooOld`](crate::Error::CursorTooOld) when events after
    /// `after` were pruned, [`Error::CursorAhead`](crate::Error::CursorAhead)
    /// for a cursor beyond the newest event,
    /// [`Error::Invalid`](crate::Error::Invalid) for a `limit` out of range.
    fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>>;

    /// The cursor of the newest event (0 before any): where a watcher that
    /// wants only what happens from now on starts.
    ///
    /// # Errors
    ///
    /// Only errors of the storage underneath.
    fn last_event(&self) -> Result<u64>;

    /// Like [`events`](AgentRegistry::events), but waits up to `timeout` for
    /// at least one event after `after`, waking as soon as any process
    /// commits one; returns an empty page when the time is up.
    ///
    /// # Errors
    ///
    /// As [`events`](AgentRegistry::events).
    fn watch(&self, after: u64, limit: usize, timeout: Duration) -> Result<Vec<Event>>;
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
