//! [`MemoryRegistry`]: the registry kept in the memory of one process.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Condvar, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::agent::{AgentInfo, AgentStatus};
use crate::claim::{self, Claim, Claimed, RecoverReason, Recovered};
use crate::error::{Error, Result};
use crate::event::{self, DEFAULT_EVENTS_KEEP, DEFAULT_EVENTS_KEEP_SECONDS, Event, EventKind};
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
    state: RwLock<State>,
    /// `None`: [`DefaultRouter`](crate::DefaultRouter).
    router: Option<Box<dyn TaskRouter>>,
    /// The newest event's cursor, and the condition watchers wait on.
    feed: (Mutex<u64>, Condvar),
}

/// Everything behind the lock.
#[derive(Debug, Default)]
struct State {
    agents: BTreeMap<String, AgentInfo>,
    /// Held claims by task id.
    claims: BTreeMap<String, Held>,
    /// The last token given.
    token: u64,
    /// The change feed, oldest first, and the newest cursor given.
    events: VecDeque<Event>,
    event_seq: u64,
}

/// A held claim: the row, and whether its agent is still the one that took
/// it (false once that agent was deregistered).
#[derive(Clone, Debug)]
struct Held {
    claim: Claim,
    attached: bool,
}

impl State {
    /// Appends an event of `kind` about `agent_id`, filled in by `fill`;
    /// keeps the newest [`DEFAULT_EVENTS_KEEP`] exactly (the SQLite schema
    /// keeps at least as many: it prunes every 64th event), and every 64
    /// events drops those older than [`DEFAULT_EVENTS_KEEP_SECONDS`].
    fn emit(&mut self, kind: EventKind, agent_id: &str, fill: impl FnOnce(&mut Event)) {
        self.event_seq += 1;
        let at = now();
        let keep = usize::try_from(DEFAULT_EVENTS_KEEP).unwrap_or(usize::MAX);
        while self.events.len() >= keep {
            self.events.pop_front();
        }
        if self.event_seq.is_multiple_of(64) {
            let cutoff = at
                - chrono::Duration::seconds(
                    i64::try_from(DEFAULT_EVENTS_KEEP_SECONDS).unwrap_or(i64::MAX),
                );
            while self.events.front().is_some_and(|e| e.at < cutoff) {
                self.events.pop_front();
            }
        }
        let mut event = Event::new(self.event_seq, at, kind, agent_id);
        fill(&mut event);
        self.events.push_back(event);
    }

    /// Emits the event of a claim.
    fn emit_claim(&mut self, kind: EventKind, claim: &Claim, reason: Option<RecoverReason>) {
        self.emit(kind, &claim.agent_id, |event| {
            event.task_id = Some(claim.task_id.clone());
            event.token = Some(claim.token);
            event.reason = reason;
        });
    }

    /// How many claims `id` holds.
    fn held_by(&self, id: &str) -> u32 {
        let held = self
            .claims
            .values()
            .filter(|held| held.attached && held.claim.agent_id == id)
            .count();
        u32::try_from(held).unwrap_or(u32::MAX)
    }

    /// Deletes the claim of `task_id` and gives its slot back.
    fn remove_claim(&mut self, task_id: &str) -> Option<Held> {
        let held = self.claims.remove(task_id)?;
        if held.attached
            && let Some(agent) = self.agents.get_mut(&held.claim.agent_id)
        {
            agent.current_load = agent.current_load.saturating_sub(1);
        }
        Some(held)
    }

    /// The claim of `task_id` if it is held under `token` (any token when
    /// `None`).
    fn held(&self, task_id: &str, token: Option<u64>) -> Result<&Held> {
        match self.claims.get(task_id) {
            Some(held) if token.is_none_or(|t| t == held.claim.token) => Ok(held),
            other => Err(Error::StaleClaim {
                task_id: task_id.to_owned(),
                token,
                held: other.map(|held| held.claim.token),
            }),
        }
    }
}

impl std::fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.read();
        f.debug_struct("MemoryRegistry")
            .field("agents", &state.agents.len())
            .field("claims", &state.claims.len())
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
            state: RwLock::default(),
            router: Some(Box::new(router)),
            feed: Default::default(),
        }
    }

    // A panic while the lock is held cannot leave a half-written state: every
    // write below checks everything first and then edits whole values, so a
    // poisoned lock still guards consistent data.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `change` under the write lock, then wakes the watchers if it
    /// wrote events.
    fn change<T>(&self, change: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let (result, seq) = {
            let mut state = self.write();
            let result = change(&mut state);
            (result, state.event_seq)
        };
        let (last, wake) = &self.feed;
        let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
        if seq > *last {
            *last = seq;
            wake.notify_all();
        }
        result
    }

    /// The id of the agent the router chooses for `task`.
    fn route(&self, state: &State, task: &Task) -> Result<String> {
        match &self.router {
            None => Ok(choose(task, state.agents.values())?.id.clone()),
            Some(router) => {
                let labels = task.checked_labels()?;
                let eligible: Vec<AgentInfo> = state
                    .agents
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
                Ok(id)
            }
        }
    }
}

impl AgentRegistry for MemoryRegistry {
    fn register(&self, agent: AgentInfo) -> Result<()> {
        let mut agent = agent.validated()?;
        self.change(|state| {
            let held = state.held_by(&agent.id);
            let total = agent.current_load.checked_add(held);
            if total.is_none_or(|total| agent.max_load != 0 && total > agent.max_load) {
                return Err(over_max(&agent, held));
            }
            agent.current_load = total.unwrap_or(u32::MAX);
            // An operator's drain survives a re-register; a new agent
            // starts undrained.
            let old = state.agents.get(&agent.id);
            agent.drained = old.is_some_and(|old| old.drained);
            let kind = if old.is_some() {
                EventKind::Updated
            } else {
                EventKind::Registered
            };
            let status = agent.status;
            state.emit(kind, &agent.id, |e| e.status = Some(status));
            state.agents.insert(agent.id.clone(), agent);
            Ok(())
        })
    }

    fn deregister(&self, id: &str) -> Result<()> {
        self.change(|state| {
            state
                .agents
                .remove(id)
                .ok_or_else(|| Error::NotFound(id.to_owned()))?;
            // Its claims stay, detached, until recovered as agent_gone.
            for held in state.claims.values_mut() {
                if held.claim.agent_id == id {
                    held.attached = false;
                }
            }
            state.emit(EventKind::Deregistered, id, |_| {});
            Ok(())
        })
    }

    fn get(&self, id: &str) -> Result<AgentInfo> {
        self.read()
            .agents
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    fn list(&self) -> Result<Vec<AgentInfo>> {
        Ok(self.read().agents.values().cloned().collect())
    }

    fn heartbeat(&self, id: &str) -> Result<()> {
        self.change(|state| {
            let agent = state
                .agents
                .get_mut(id)
                .ok_or_else(|| Error::NotFound(id.to_owned()))?;
            agent.last_heartbeat = now();
            if agent.status == AgentStatus::Offline {
                agent.status = AgentStatus::Available;
                state.emit(EventKind::Status, id, |e| {
                    e.status = Some(AgentStatus::Available);
                });
            }
            Ok(())
        })
    }

    fn set_status(&self, id: &str, status: AgentStatus) -> Result<()> {
        self.change(|state| {
            let agent = state
                .agents
                .get_mut(id)
                .ok_or_else(|| Error::NotFound(id.to_owned()))?;
            if agent.status != status {
                agent.status = status;
                state.emit(EventKind::Status, id, |e| e.status = Some(status));
            }
            Ok(())
        })
    }

    fn drain(&self, id: &str, drained: bool) -> Result<()> {
        self.change(|state| {
            let agent = state
                .agents
                .get_mut(id)
                .ok_or_else(|| Error::NotFound(id.to_owned()))?;
            if agent.drained != drained {
                agent.drained = drained;
                let kind = if drained {
                    EventKind::Drained
                } else {
                    EventKind::Undrained
                };
                state.emit(kind, id, |_| {});
            }
            Ok(())
        })
    }

    fn reap(&self, ttl: Duration) -> Result<Vec<String>> {
        let cutoff = reap_cutoff(now(), ttl)?;
        self.change(|state| {
            let mut reaped = Vec::new();
            for agent in state.agents.values_mut() {
                if agent.status != AgentStatus::Offline && agent.last_heartbeat < cutoff {
                    agent.status = AgentStatus::Offline;
                    reaped.push(agent.id.clone());
                }
            }
            // BTreeMap iterates in id order, so `reaped` is already sorted.
            for id in &reaped {
                state.emit(EventKind::Status, id, |e| {
                    e.status = Some(AgentStatus::Offline)
                });
            }
            Ok(reaped)
        })
    }

    fn claim(&self, task: &Task, lease: Option<Duration>) -> Result<Claimed> {
        let task_id = claim::task_id(&task.id)?;
        task.checked_labels()?;
        // A lease too long for the calendar is refused before anything.
        if let Some(lease) = lease {
            claim::lease_expiry(now(), lease)?;
        }
        self.change(|state| {
            if let Some(held) = state.claims.get(&task_id) {
                return Err(already_claimed(&held.claim));
            }
            // Read under the lock, as the tokens are given: claims follow
            // their tokens in time.
            let claimed_at = now();
            let lease_expires_at = lease
                .map(|lease| claim::lease_expiry(claimed_at, lease))
                .transpose()?;
            let id = self.route(state, task)?;
            state.token += 1;
            let claim = Claim {
                task_id: task_id.clone(),
                agent_id: id.clone(),
                token: state.token,
                claimed_at,
                lease_expires_at,
            };
            state.claims.insert(
                task_id.clone(),
                Held {
                    claim: claim.clone(),
                    attached: true,
                },
            );
            state.emit_claim(EventKind::Claimed, &claim, None);
            let agent = state
                .agents
                .get_mut(&id)
                .ok_or_else(|| Error::NotFound(id.clone()))?;
            // The router only returns agents with a free slot, so this
            // cannot overflow or pass max_load.
            agent.current_load += 1;
            Ok(Claimed {
                claim,
                agent: agent.clone(),
            })
        })
    }

    fn release(&self, task_id: &str, token: Option<u64>) -> Result<Claim> {
        self.change(|state| {
            state.held(task_id, token)?;
            let claim = state
                .remove_claim(task_id)
                .map(|held| held.claim)
                .ok_or_else(|| Error::StaleClaim {
                    task_id: task_id.to_owned(),
                    token,
                    held: None,
                })?;
            state.emit_claim(EventKind::Released, &claim, None);
            Ok(claim)
        })
    }

    fn renew(&self, task_id: &str, token: Option<u64>, lease: Duration) -> Result<Claim> {
        let expiry = claim::lease_expiry(now(), lease)?;
        self.change(|state| {
            let stale = || Error::StaleClaim {
                task_id: task_id.to_owned(),
                token,
                held: None,
            };
            if !state.held(task_id, token)?.attached {
                return Err(stale());
            }
            let held = state.claims.get_mut(task_id).ok_or_else(stale)?;
            let changed = held.claim.lease_expires_at != Some(expiry);
            held.claim.lease_expires_at = Some(expiry);
            let claim = held.claim.clone();
            if changed {
                state.emit_claim(EventKind::Renewed, &claim, None);
            }
            Ok(claim)
        })
    }

    fn claims(&self, agent_id: Option<&str>) -> Result<Vec<Claim>> {
        let state = self.read();
        let mut claims: Vec<Claim> = state
            .claims
            .values()
            .filter(|held| agent_id.is_none_or(|id| held.claim.agent_id == id))
            .map(|held| held.claim.clone())
            .collect();
        claims.sort_by_key(|claim| claim.token);
        Ok(claims)
    }

    fn recover(&self) -> Result<Vec<Recovered>> {
        let now = now();
        self.change(|state| {
            // Claims by task id, as the SQL DELETE visits them.
            let due: Vec<(String, RecoverReason)> = state
                .claims
                .values()
                .filter_map(|held| {
                    recover_reason(state, held, now)
                        .map(|reason| (held.claim.task_id.clone(), reason))
                })
                .collect();
            let mut recovered = Vec::with_capacity(due.len());
            for (task_id, reason) in due {
                if let Some(held) = state.remove_claim(&task_id) {
                    state.emit_claim(EventKind::Recovered, &held.claim, Some(reason));
                    recovered.push(Recovered {
                        claim: held.claim,
                        reason,
                    });
                }
            }
            recovered.sort_by_key(|r| r.claim.token);
            Ok(recovered)
        })
    }

    fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        event::check_limit(limit)?;
        let state = self.read();
        if after > state.event_seq {
            return Err(Error::CursorAhead {
                cursor: after,
                newest: state.event_seq,
            });
        }
        let oldest = state.events.front().map_or(state.event_seq + 1, |e| e.seq);
        if after + 1 < oldest {
            return Err(Error::CursorTooOld {
                cursor: after,
                oldest,
            });
        }
        let skip = usize::try_from(after + 1 - oldest).unwrap_or(usize::MAX);
        Ok(state
            .events
            .iter()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect())
    }

    fn last_event(&self) -> Result<u64> {
        Ok(self.read().event_seq)
    }

    fn watch(&self, after: u64, limit: usize, timeout: Duration) -> Result<Vec<Event>> {
        let deadline = Instant::now().checked_add(timeout);
        let (last, wake) = &self.feed;
        loop {
            let page = self.events(after, limit)?;
            if !page.is_empty() {
                return Ok(page);
            }
            let seen = last.lock().unwrap_or_else(PoisonError::into_inner);
            if *seen > after {
                continue;
            }
            // Waits of at most an hour at a time: no deadline arithmetic
            // can overflow.
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            }
            .min(Duration::from_secs(3600));
            if left.is_zero() {
                return Ok(Vec::new());
            }
            drop(
                wake.wait_timeout(seen, left)
                    .unwrap_or_else(PoisonError::into_inner),
            );
        }
    }
}

/// Why `held` is due for recovery at `now`, if it is.
fn recover_reason(state: &State, held: &Held, now: DateTime<Utc>) -> Option<RecoverReason> {
    if !held.attached {
        return Some(RecoverReason::AgentGone);
    }
    let agent = state.agents.get(&held.claim.agent_id)?;
    if agent.status == AgentStatus::Offline {
        return Some(RecoverReason::AgentOffline);
    }
    held.claim
        .lease_expires_at
        .filter(|expiry| *expiry < now)
        .map(|_| RecoverReason::LeaseExpired)
}

pub(crate) fn already_claimed(claim: &Claim) -> Error {
    Error::AlreadyClaimed {
        task_id: claim.task_id.clone(),
        agent_id: claim.agent_id.clone(),
        token: claim.token,
    }
}

/// The error for a register whose load plus the held claims passes max_load.
pub(crate) fn over_max(agent: &AgentInfo, held: u32) -> Error {
    Error::invalid(
        "current_load",
        format!(
            "{} plus the {held} claim(s) the agent holds is above max_load {} (release or recover them first)",
            agent.current_load, agent.max_load
        ),
    )
}
