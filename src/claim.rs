//! Claims as rows: [`Claim`], [`Claimed`], [`Recovered`], [`RecoverReason`],
//! and the rules of task ids and leases that every registry shares.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::agent::{AgentInfo, MAX_ID_CHARS};
use crate::error::{Error, Result};
use crate::text::{Refuses, check_text};

/// A slot held on an agent for one task: a row of the `claims` table.
///
/// Its JSON form has these field names; times are RFC 3339 as in
/// [`AgentInfo`]'s JSON, and `lease_expires_at` is `null` without a lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Claim {
    /// The task the slot is held for; unique among held claims.
    pub task_id: String,
    /// The agent that took the task (kept after it was deregistered, when
    /// the claim is recoverable as [`RecoverReason::AgentGone`]).
    pub agent_id: String,
    /// The fencing token: larger than the token of every claim taken
    /// before it in this registry, of any task. A holder passes it to
    /// [`release`](crate::AgentRegistry::release) and
    /// [`renew`](crate::AgentRegistry::renew), so that a slow holder that
    /// comes back after its claim was recovered and taken again cannot act
    /// on its successor's claim.
    pub token: u64,
    /// When the claim was taken (UTC).
    #[serde(serialize_with = "crate::json::serialize_time")]
    pub claimed_at: DateTime<Utc>,
    /// When the lease runs out, if the claim has one: from then on
    /// [`recover`](crate::AgentRegistry::recover) takes it back unless it is
    /// renewed first.
    #[serde(serialize_with = "crate::json::serialize_optional_time")]
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// What [`claim`](crate::AgentRegistry::claim) returns: the claim and the
/// agent that holds it, with its new load.
#[derive(Clone, Debug, PartialEq)]
pub struct Claimed {
    /// The claim recorded.
    pub claim: Claim,
    /// The agent chosen, as it is after taking the slot.
    pub agent: AgentInfo,
}

/// Why [`recover`](crate::AgentRegistry::recover) took a claim back. Where
/// several apply, the first of these wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoverReason {
    /// The agent was deregistered while it held the claim.
    AgentGone,
    /// The agent is offline (reaped, or stopped).
    AgentOffline,
    /// The claim's lease ran out without being renewed.
    LeaseExpired,
}

impl RecoverReason {
    /// `"agent_gone"`, `"agent_offline"` or `"lease_expired"`, as in JSON
    /// and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AgentGone => "agent_gone",
            Self::AgentOffline => "agent_offline",
            Self::LeaseExpired => "lease_expired",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        [Self::AgentGone, Self::AgentOffline, Self::LeaseExpired]
            .into_iter()
            .find(|reason| reason.as_str() == text)
    }
}

impl fmt::Display for RecoverReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A claim that [`recover`](crate::AgentRegistry::recover) took back, and
/// why: its task is free to be claimed again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Recovered {
    /// The claim as it was held.
    #[serde(flatten)]
    pub claim: Claim,
    /// Why it was taken back.
    pub reason: RecoverReason,
}

/// Checks a task id given by the caller: the rules of agent ids, but an
/// empty one is replaced by a generated one.
pub(crate) fn task_id(given: &str) -> Result<String> {
    if given.is_empty() {
        return Ok(new_task_id());
    }
    check_text("task_id", given, MAX_ID_CHARS, Refuses::FormatCharacters)?;
    Ok(given.to_owned())
}

/// The expiry of a lease of `lease` from `now`.
pub(crate) fn lease_expiry(now: DateTime<Utc>, lease: Duration) -> Result<DateTime<Utc>> {
    if lease.is_zero() {
        return Err(Error::invalid("lease", "must be longer than 0"));
    }
    chrono::Duration::from_std(lease)
        .ok()
        .and_then(|lease| now.checked_add_signed(lease))
        .filter(|expiry| expiry.format("%Y").to_string().len() == 4)
        .ok_or_else(|| Error::invalid("lease", format!("{lease:?} reaches past the year 9999")))
}

/// A unique, time-ordered task id: `task-` and a ULID (48 bits of
/// milliseconds since 1970, 80 random bits, Crockford base 32), so that ids
/// sort by the time they were made.
pub(crate) fn new_task_id() -> String {
    task_id_at(crate::registry::now())
}

fn task_id_at(now: DateTime<Utc>) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let millis = u128::try_from(now.timestamp_millis().clamp(0, (1 << 48) - 1)).unwrap_or(0);
    // RandomState is seeded from the operating system once per process.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.write_i64(now.timestamp_nanos_opt().unwrap_or(0));
    let count = COUNTER.load(Ordering::Relaxed) & 0xffff;
    let random = (u128::from(hasher.finish()) << 16) | u128::from(count);
    let value = millis << 80 | (random & ((1 << 80) - 1));
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut text = String::with_capacity(31);
    text.push_str("task-");
    for i in (0..26).rev() {
        let digit = (value >> (i * 5)) & 0x1f;
        text.push(char::from(ALPHABET[digit as usize]));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_task_ids_are_unique_valid_and_time_ordered() {
        let ids: Vec<String> = (0..1000).map(|_| new_task_id()).collect();
        let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        for id in &ids {
            assert_eq!(id.len(), 31, "{id}");
            assert!(task_id(id).is_ok(), "{id}");
        }
        let now = crate::registry::now();
        let early = task_id_at(now);
        let late = task_id_at(now + chrono::Duration::milliseconds(1));
        // The first ten digits hold the milliseconds.
        assert!(early[..15] < late[..15], "{early} {late}");
        assert!(ids[0][..15] <= ids[999][..15]);
    }

    #[test]
    fn leases_must_be_positive_and_end_before_the_year_10000() {
        let now = crate::registry::now();
        assert!(lease_expiry(now, Duration::ZERO).is_err());
        assert!(lease_expiry(now, Duration::from_secs(u64::MAX)).is_err());
        assert!(lease_expiry(now, Duration::from_secs(400 * 365 * 86_400 * 20)).is_err());
        assert_eq!(
            lease_expiry(now, Duration::from_secs(30)).ok(),
            Some(now + chrono::Duration::seconds(30))
        );
    }
}
