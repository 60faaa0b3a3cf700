//! The change feed: [`Event`], [`EventKind`], and the rules of cursors.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::agent::AgentStatus;
use crate::claim::RecoverReason;

/// What happened. Spelled in JSON and in the `events` table as the
/// lowercase names below.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A new agent was registered (with its `status`).
    Registered,
    /// An existing agent was registered again, or fields that only register
    /// sets were changed by hand (with its `status`).
    Updated,
    /// The agent was deregistered.
    Deregistered,
    /// The agent's status changed (a heartbeat brought it back, a reap, a
    /// `set_status`, hand SQL), with the new `status`.
    Status,
    /// An operator drained the agent.
    Drained,
    /// An operator ended the drain.
    Undrained,
    /// A claim was taken (`task_id`, `token`).
    Claimed,
    /// A claim was given back by release or deleted by hand.
    Released,
    /// A claim's lease was renewed.
    Renewed,
    /// `recover` took a claim back (with its `reason`).
    Recovered,
}

impl EventKind {
    /// Every kind, in the order above.
    pub const ALL: [EventKind; 10] = [
        Self::Registered,
        Self::Updated,
        Self::Deregistered,
        Self::Status,
        Self::Drained,
        Self::Undrained,
        Self::Claimed,
        Self::Released,
        Self::Renewed,
        Self::Recovered,
    ];

    /// The name used in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Updated => "updated",
            Self::Deregistered => "deregistered",
            Self::Status => "status",
            Self::Drained => "drained",
            Self::Undrained => "undrained",
            Self::Claimed => "claimed",
            Self::Released => "released",
            Self::Renewed => "renewed",
            Self::Recovered => "recovered",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One state transition of the registry, as the change feed reports it.
///
/// Its JSON form: `seq`, `at` (RFC 3339, as `AgentInfo` writes times),
/// `kind`, `agent_id`, and `task_id`, `status`, `reason`, `token` where they
/// apply (left out otherwise).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// The cursor: it grows by one per event, in commit order. Reading after
    /// a cursor returns every later event exactly once.
    pub seq: u64,
    /// When it happened (UTC).
    #[serde(serialize_with = "crate::json::serialize_time")]
    pub at: DateTime<Utc>,
    /// What happened.
    pub kind: EventKind,
    /// The agent concerned (for claim events, the agent that took the
    /// claim).
    pub agent_id: String,
    /// The task, for claim events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// The agent's new status, for `registered`, `updated` and `status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<AgentStatus>,
    /// Why a claim was recovered, for `recovered`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<RecoverReason>,
    /// The claim's token, for claim events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
}

/// The most events one read returns ([`AgentRegistry::events`]).
///
/// [`AgentRegistry::events`]: crate::AgentRegistry::events
pub const MAX_EVENTS_PAGE: usize = 10_000;

/// How many events a registry keeps by default: older ones are pruned.
pub const DEFAULT_EVENTS_KEEP: u64 = 100_000;

/// How old an event may get, by default, before it is pruned: 7 days.
pub const DEFAULT_EVENTS_KEEP_SECONDS: u64 = 7 * 24 * 3600;

/// Checks a page size: 1 to [`MAX_EVENTS_PAGE`].
pub(crate) fn check_limit(limit: usize) -> crate::Result<()> {
    if (1..=MAX_EVENTS_PAGE).contains(&limit) {
        Ok(())
    } else {
        Err(crate::Error::invalid(
            "limit",
            format!("{limit} events: must be 1 to {MAX_EVENTS_PAGE}"),
        ))
    }
}

impl Event {
    /// A new event of `kind` about `agent_id`, with nothing else set.
    pub(crate) fn new(seq: u64, at: DateTime<Utc>, kind: EventKind, agent_id: &str) -> Self {
        Self {
            seq,
            at,
            kind,
            agent_id: agent_id.to_owned(),
            task_id: None,
            status: None,
            reason: None,
            token: None,
        }
    }
}
