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
    AgentInfo, AgentRegistry, AgentStatus, Claim, Claimed, DefaultRouter, Error, Event, EventKind,
    Priority, RecoverReason, Recovered, Result, Task, TaskRouter,
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

/// The contract, plainly: agents in the order they were first registered,
/// claims in the order they were taken, each with whether its agent is still
/// the one that took it.
#[derive(Debug, Default)]
struct Model {
    agents: Mutex<Vec<AgentInfo>>,
    claims: Mutex<Vec<(Claim, bool)>>,
    token: Mutex<u64>,
    log: Mutex<Vec<Event>>,
}

impl Model {
    /// Writes one event to the log and returns its cursor.
    fn emit(&self, kind: EventKind, agent_id: &str, fill: impl FnOnce(&mut Event)) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = log.last().map_or(0, |e| e.seq) + 1;
        let mut event = Event::new(seq, Utc::now(), kind, agent_id);
        fill(&mut event);
        log.push(event);
    }

    fn emit_claim(&self, kind: EventKind, claim: &Claim, reason: Option<RecoverReason>) {
        self.emit(kind, &claim.agent_id, |e| {
            e.task_id = Some(claim.task_id.clone());
            e.token = Some(claim.token);
            e.reason = reason;
        });
    }

    fn agents(&self) -> MutexGuard<'_, Vec<AgentInfo>> {
        self.agents.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn claims_held(&self) -> MutexGuard<'_, Vec<(Claim, bool)>> {
        self.claims.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many claims agent `id` holds.
    fn held_by(&self, id: &str) -> u32 {
        let held = self
            .claims_held()
            .iter()
            .filter(|(claim, attached)| *attached && claim.agent_id == id)
            .count();
        u32::try_from(held).unwrap_or(u32::MAX)
    }

    /// The position of the claim of `task_id` under `token`, or the error.
    fn find(&self, task_id: &str, token: Option<u64>) -> Result<usize> {
        let claims = self.claims_held();
        match claims
            .iter()
            .position(|(claim, _)| claim.task_id == task_id)
        {
            Some(at) if token.is_none_or(|t| t == claims[at].0.token) => Ok(at),
            other => Err(Error::StaleClaim {
                task_id: task_id.to_owned(),
                token,
                held: other.map(|at| claims[at].0.token),
            }),
        }
    }

    /// Deletes the claim at `at`, giving its slot back.
    fn remove(&self, at: usize) -> Claim {
        let (claim, attached) = self.claims_held().remove(at);
        if attached && let Some(agent) = self.agents().iter_mut().find(|a| a.id == claim.agent_id) {
            agent.current_load -= 1;
        }
        claim
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(id.to_owned())
}

impl AgentRegistry for Model {
    fn register(&self, agent: AgentInfo) -> Result<()> {
        let mut agent = agent.validated()?;
        let held = self.held_by(&agent.id);
        match agent.current_load.checked_add(held) {
            Some(total) if agent.max_load == 0 || total <= agent.max_load => {
                agent.current_load = total;
            }
            _ => {
                return Err(Error::invalid(
                    "current_load",
                    format!(
                        "{} plus the {held} claim(s) the agent holds is above max_load {} (release or recover them first)",
                        agent.current_load, agent.max_load
                    ),
                ));
            }
        }
        let status = agent.status;
        let id = agent.id.clone();
        let mut agents = self.agents();
        let kind = match agents.iter_mut().find(|a| a.id == agent.id) {
            Some(old) => {
                agent.drained = old.drained;
                *old = agent;
                EventKind::Updated
            }
            None => {
                agent.drained = false;
                agents.push(agent);
                EventKind::Registered
            }
        };
        self.emit(kind, &id, |e| e.status = Some(status));
        Ok(())
    }

    fn deregister(&self, id: &str) -> Result<()> {
        let mut agents = self.agents();
        let before = agents.len();
        agents.retain(|a| a.id != id);
        if agents.len() == before {
            return Err(not_found(id));
        }
        for (claim, attached) in self.claims_held().iter_mut() {
            if claim.agent_id == id {
                *attached = false;
            }
        }
        self.emit(EventKind::Deregistered, id, |_| {});
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
            self.emit(EventKind::Status, id, |e| {
                e.status = Some(AgentStatus::Available)
            });
        }
        Ok(())
    }

    fn set_status(&self, id: &str, status: AgentStatus) -> Result<()> {
        let mut agents = self.agents();
        let agent = agents
            .iter_mut()
            .find(|a| a.id == id)
            .ok_or_else(|| not_found(id))?;
        if agent.status != status {
            agent.status = status;
            self.emit(EventKind::Status, id, |e| e.status = Some(status));
        }
        Ok(())
    }

    fn drain(&self, id: &str, drained: bool) -> Result<()> {
        let mut agents = self.agents();
        let agent = agents
            .iter_mut()
            .find(|a| a.id == id)
            .ok_or_else(|| not_found(id))?;
        if agent.drained != drained {
            agent.drained = drained;
            let kind = if drained {
                EventKind::Drained
            } else {
                EventKind::Undrained
            };
            self.emit(kind, id, |_| {});
        }
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
        for id in &reaped {
            self.emit(EventKind::Status, id, |e| {
                e.status = Some(AgentStatus::Offline)
            });
        }
        Ok(reaped)
    }

    fn claim(&self, task: &Task, lease: Option<Duration>) -> Result<Claimed> {
        let task_id = if task.id.is_empty() {
            crate::claim::new_task_id()
        } else {
            crate::text::check_text(
                "task_id",
                &task.id,
                crate::MAX_ID_CHARS,
                crate::text::Refuses::FormatCharacters,
            )?;
            task.id.clone()
        };
        task.checked_labels()?;
        let claimed_at = Utc::now();
        let lease_expires_at = match lease {
            None => None,
            Some(lease) => Some(crate::claim::lease_expiry(claimed_at, lease)?),
        };
        if let Some((held, _)) = self
            .claims_held()
            .iter()
            .find(|(c, _)| c.task_id == task_id)
        {
            return Err(Error::AlreadyClaimed {
                task_id,
                agent_id: held.agent_id.clone(),
                token: held.token,
            });
        }
        let chosen = DefaultRouter::new().route(task, &self.list()?)?;
        let mut token = self.token.lock().unwrap_or_else(PoisonError::into_inner);
        *token += 1;
        let claim = Claim {
            task_id,
            agent_id: chosen.clone(),
            token: *token,
            claimed_at,
            lease_expires_at,
        };
        self.claims_held().push((claim.clone(), true));
        self.emit_claim(EventKind::Claimed, &claim, None);
        let mut agents = self.agents();
        let agent = agents
            .iter_mut()
            .find(|a| a.id == chosen)
            .ok_or_else(|| not_found(&chosen))?;
        agent.current_load += 1;
        Ok(Claimed {
            claim,
            agent: agent.clone(),
        })
    }

    fn release(&self, task_id: &str, token: Option<u64>) -> Result<Claim> {
        let at = self.find(task_id, token)?;
        let claim = self.remove(at);
        self.emit_claim(EventKind::Released, &claim, None);
        Ok(claim)
    }

    fn renew(&self, task_id: &str, token: Option<u64>, lease: Duration) -> Result<Claim> {
        let expiry = crate::claim::lease_expiry(Utc::now(), lease)?;
        let at = self.find(task_id, token)?;
        let mut claims = self.claims_held();
        if !claims[at].1 {
            return Err(Error::StaleClaim {
                task_id: task_id.to_owned(),
                token,
                held: None,
            });
        }
        claims[at].0.lease_expires_at = Some(expiry);
        let claim = claims[at].0.clone();
        drop(claims);
        self.emit_claim(EventKind::Renewed, &claim, None);
        Ok(claim)
    }

    fn claims(&self, agent_id: Option<&str>) -> Result<Vec<Claim>> {
        Ok(self
            .claims_held()
            .iter()
            .filter(|(claim, _)| agent_id.is_none_or(|id| claim.agent_id == id))
            .map(|(claim, _)| claim.clone())
            .collect())
    }

    fn recover(&self) -> Result<Vec<Recovered>> {
        let now = Utc::now();
        let mut recovered = Vec::new();
        let mut at = 0;
        loop {
            let due = {
                let claims = self.claims_held();
                let Some((claim, attached)) = claims.get(at) else {
                    break;
                };
                let offline = self
                    .agents()
                    .iter()
                    .any(|a| a.id == claim.agent_id && a.status == AgentStatus::Offline);
                if !attached {
                    Some(RecoverReason::AgentGone)
                } else if offline {
                    Some(RecoverReason::AgentOffline)
                } else if claim.lease_expires_at.is_some_and(|e| e < now) {
                    Some(RecoverReason::LeaseExpired)
                } else {
                    None
                }
            };
            match due {
                Some(reason) => recovered.push(Recovered {
                    claim: self.remove(at),
                    reason,
                }),
                None => at += 1,
            }
        }
        for r in &recovered {
            self.emit_claim(EventKind::Recovered, &r.claim, Some(r.reason));
        }
        Ok(recovered)
    }

    fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        crate::event::check_limit(limit)?;
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let newest = log.last().map_or(0, |e| e.seq);
        if after > newest {
            return Err(Error::CursorAhead {
                cursor: after,
                newest,
            });
        }
        Ok(log
            .iter()
            .filter(|e| e.seq > after)
            .take(limit)
            .cloned()
            .collect())
    }

    fn last_event(&self) -> Result<u64> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(log.last().map_or(0, |e| e.seq))
    }

    fn watch(&self, after: u64, limit: usize, _timeout: Duration) -> Result<Vec<Event>> {
        // Nobody else writes to the model: what is there is all there is.
        self.events(after, limit)
    }
}

#[derive(Clone, Debug)]
enum Op {
    Register(AgentInfo),
    Deregister(String),
    Get(String),
    Heartbeat(String),
    Reap(Duration),
    Claim(Task, Option<Duration>),
    Release(String, Option<u64>),
    Renew(String, Option<u64>),
    Claims(Option<String>),
    Recover,
    Events(u64),
    Drain(String, bool),
    SetStatus(String, AgentStatus),
    List,
}

const IDS: [&str; 5] = ["a", "b", "c", "d", ""];
const CAPS: [&str; 4] = ["x", "y", "z", ""];

const TASK_IDS: [&str; 4] = ["t1", "t2", "t3", ""];

fn task_id() -> impl Strategy<Value = String> {
    proptest::sample::select(&TASK_IDS[..]).prop_map(String::from)
}

/// No lease, a long one, or one that runs out at once.
fn lease() -> impl Strategy<Value = Option<Duration>> {
    prop_oneof![
        Just(None),
        Just(Some(Duration::from_secs(3600))),
        Just(Some(Duration::from_nanos(1)))
    ]
}

fn token() -> impl Strategy<Value = Option<u64>> {
    prop::option::of(1_u64..5)
}

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
        3 => (subsequence(&CAPS[..], 0..=2), 0_usize..4, task_id(), lease()).prop_map(
            |(labels, p, id, lease)| Op::Claim(
                Task {
                    id,
                    labels: labels.into_iter().map(String::from).collect(),
                    priority: Priority::ALL[p],
                },
                lease,
            )
        ),
        2 => (task_id(), token()).prop_map(|(id, token)| Op::Release(id, token)),
        1 => (task_id(), token()).prop_map(|(id, token)| Op::Renew(id, token)),
        1 => prop::option::of(id()).prop_map(Op::Claims),
        1 => Just(Op::Recover),
        1 => (0_u64..6).prop_map(Op::Events),
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

/// A claim without its times (taken microseconds apart in the two) and with
/// a generated task id reduced to its prefix, keeping whether it has a lease.
fn comparable_claim(mut claim: Claim) -> Claim {
    claim.claimed_at = chrono::DateTime::UNIX_EPOCH;
    claim.lease_expires_at = claim.lease_expires_at.map(|_| chrono::DateTime::UNIX_EPOCH);
    if claim.task_id.starts_with("task-") {
        claim.task_id = "task-*".into();
    }
    claim
}

/// How many events before an `Events` window are read with it, so that a
/// run of one kind that the window cuts is ordered whole (a generated case
/// writes far fewer events than this).
const RUN_CONTEXT: u64 = 100;

/// Events without their times, generated task ids reduced to their prefix,
/// and each run of events of one kind in a canonical order (one statement
/// may visit rows in any order: a reap, a recover).
fn comparable_events(events: Vec<Event>) -> Vec<(u64, String)> {
    let mut shown: Vec<(u64, EventKind, String)> = events
        .into_iter()
        .map(|e| {
            let task = e.task_id.map(|t| {
                if t.starts_with("task-") {
                    "task-*".to_owned()
                } else {
                    t
                }
            });
            (
                e.seq,
                e.kind,
                format!(
                    "{} {} {:?} {:?} {:?} {:?}",
                    e.kind, e.agent_id, task, e.status, e.reason, e.token
                ),
            )
        })
        .collect();
    let mut start = 0;
    while start < shown.len() {
        let kind = shown[start].1;
        let end = shown[start..]
            .iter()
            .position(|(_, k, _)| *k != kind)
            .map_or(shown.len(), |n| start + n);
        let mut texts: Vec<String> = shown[start..end]
            .iter()
            .map(|(_, _, t)| t.clone())
            .collect();
        texts.sort();
        for (slot, text) in shown[start..end].iter_mut().zip(texts) {
            slot.2 = text;
        }
        start = end;
    }
    shown
        .into_iter()
        .map(|(seq, _, text)| (seq, text))
        .collect()
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
        Op::Claim(task, lease) => show(
            registry
                .claim(task, *lease)
                .map(|c| (comparable_claim(c.claim), comparable(c.agent))),
        ),
        Op::Release(id, token) => show(registry.release(id, *token).map(comparable_claim)),
        Op::Renew(id, token) => show(
            registry
                .renew(id, *token, Duration::from_secs(3600))
                .map(comparable_claim),
        ),
        Op::Claims(agent) => show(
            registry
                .claims(agent.as_deref())
                .map(|all| all.into_iter().map(comparable_claim).collect::<Vec<_>>()),
        ),
        Op::Events(back) => show(registry.last_event().and_then(|last| {
            // Runs of one kind are put in their canonical order whole, and
            // only then is the window cut: a window that starts inside a
            // run (the last of a reap's status events) would otherwise show
            // whichever row the statement happened to visit last.
            let from = last.saturating_sub(*back);
            registry
                .events(from.saturating_sub(RUN_CONTEXT), 200)
                .map(|events| {
                    comparable_events(events)
                        .into_iter()
                        .filter(|(seq, _)| *seq > from)
                        .collect::<Vec<_>>()
                })
        })),
        Op::Recover => show(registry.recover().map(|all| {
            all.into_iter()
                .map(|r| (comparable_claim(r.claim), r.reason))
                .collect::<Vec<_>>()
        })),
        Op::Drain(id, drained) => show(registry.drain(id, *drained)),
        Op::SetStatus(id, status) => show(registry.set_status(id, *status)),
        Op::List => show(
            registry
                .list()
                .map(|all| all.into_iter().map(comparable).collect::<Vec<_>>()),
        ),
    }
}
