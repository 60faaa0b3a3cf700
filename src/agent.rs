//! [`AgentInfo`], [`AgentStatus`] and the rules every stored agent obeys.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::json::{GoJson, go_json_struct};
use crate::text::{Refuses, check_text};

/// The longest agent id accepted, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// The longest agent name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 256;
/// The longest capability (or task label) accepted, in characters.
pub const MAX_CAPABILITY_CHARS: usize = 64;
/// The most capabilities one agent may hold (after duplicates are dropped).
pub const MAX_CAPABILITIES: usize = 64;
/// The longest `host` accepted, in characters.
pub const MAX_HOST_CHARS: usize = 255;
/// The most metadata pairs one agent may have.
pub const MAX_METADATA: usize = 32;
/// The longest metadata key accepted, in characters.
pub const MAX_METADATA_KEY_CHARS: usize = 64;
/// The longest metadata value accepted, in characters.
pub const MAX_METADATA_VALUE_CHARS: usize = 1024;

/// Whether an agent can take work.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    /// Ready to accept tasks (the default).
    #[default]
    Available,
    /// Working, but may accept more tasks while it has free capacity.
    Busy,
    /// Has not sent a heartbeat recently; never chosen for a task.
    Offline,
}

impl AgentStatus {
    /// Every status, in declaration order.
    pub const ALL: [AgentStatus; 3] = [Self::Available, Self::Busy, Self::Offline];

    /// The lowercase name used in JSON, in the database and on the command
    /// line: `"available"`, `"busy"` or `"offline"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Busy => "busy",
            Self::Offline => "offline",
        }
    }
}

impl fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for AgentStatus {
    type Err = Error;

    /// Parses `"available"`, `"busy"` or `"offline"` (exactly, lowercase).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for any other text.
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "status",
                    format!("{s:?} is not one of \"available\", \"busy\", \"offline\""),
                )
            })
    }
}

/// A registered agent and its current state.
///
/// # JSON
///
/// Its JSON form is the Go registry's: these field names in this order,
/// `capabilities` left out when empty, `status` lowercase, `last_heartbeat`
/// as Go writes a UTC time (RFC 3339 with nanoseconds, trailing zeros of the
/// fraction trimmed, no fraction when it is zero, `Z`). [`to_json`] writes
/// it byte for byte as Go's `json.Marshal` does; `serde_json::to_string`
/// differs only in leaving `<`, `>`, `&`, U+2028 and U+2029 unescaped.
/// Writing fails, as in Go, for a `last_heartbeat` outside the years
/// 0000..=9999 or on a leap second.
///
/// Reading accepts what Go's decoder accepts: a missing field or `null`
/// leaves the zero value of [`AgentInfo::default()`] (so a missing
/// `last_heartbeat` is [`ZERO_TIME`] and `"capabilities": null` is none),
/// keys match case-insensitively, the last of a repeated key wins, unknown
/// keys are ignored, and a time may have any offset (it is converted to
/// UTC) and any number of fractional digits (past nine they are dropped).
/// `"status": ""`, the Go registry's zero status, reads as `available`.
/// Like Go, it refuses a value of the wrong type, such as a number where a
/// string belongs, and a time that is not strict RFC 3339. Where roster's
/// types are narrower than Go's it refuses more: a status other than the
/// three, and loads that are negative or above `u32::MAX`.
///
/// [`to_json`]: crate::to_json
/// [`ZERO_TIME`]: crate::ZERO_TIME
///
/// # Rules
///
/// A registry refuses, with [`Error::MissingId`] or [`Error::Invalid`] and
/// without changing anything, an agent that breaks one of these:
///
/// - `id`: not empty, at most [`MAX_ID_CHARS`] characters, no control
///   characters and no format characters (Unicode category Cf: zero-width
///   spaces and joiners, bidirectional controls, U+FEFF...), which would make
///   one id look like another;
/// - `name`: may be empty (as in the Go registry); at most
///   [`MAX_NAME_CHARS`] characters, no control characters and no
///   bidirectional controls (U+202A-U+202E, U+2066-U+2069); other format
///   characters are allowed, as emoji sequences and many scripts need them;
/// - `capabilities`: each not empty, at most [`MAX_CAPABILITY_CHARS`]
///   characters, no control or format characters; at most
///   [`MAX_CAPABILITIES`] of them once duplicates are dropped;
/// - `current_load` at most `max_load` unless `max_load` is 0 (unlimited);
/// - `last_heartbeat` (and `started_at`) between the years 0000 and 9999,
///   and not a leap second;
/// - `host`, when given: 1 to [`MAX_HOST_CHARS`] characters, no control or
///   format characters; `pid`, when given: not 0;
/// - `metadata`: at most [`MAX_METADATA`] pairs; keys 1 to
///   [`MAX_METADATA_KEY_CHARS`] characters with no control or format
///   characters, values at most [`MAX_METADATA_VALUE_CHARS`] characters with
///   no control characters or bidirectional controls.
///
/// `drained` is not checked: registries ignore it on register (only
/// [`drain`](crate::AgentRegistry::drain) changes it).
///
/// Duplicate capabilities are not an error: the first of each is kept, in the
/// order given.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentInfo {
    /// The unique identifier of the agent.
    pub id: String,
    /// A human-readable name.
    pub name: String,
    /// What the agent can handle (e.g. `"rust"`, `"gpu"`); tasks are routed
    /// by these.
    pub capabilities: Vec<String>,
    /// Whether the agent can take work.
    pub status: AgentStatus,
    /// When the agent last reported in (UTC).
    pub last_heartbeat: DateTime<Utc>,
    /// How many tasks the agent is running now.
    pub current_load: u32,
    /// How many tasks the agent may run at once; 0 means unlimited.
    pub max_load: u32,
    /// Set by an operator ([`AgentRegistry::drain`](crate::AgentRegistry::drain)):
    /// the agent gets no new claims, keeps heartbeating and keeps what it
    /// holds. [`register`](crate::AgentRegistry::register) never changes it.
    /// Left out of JSON when false.
    pub drained: bool,
    /// The host the agent's process runs on, if known. Left out of JSON when
    /// absent.
    pub host: Option<String>,
    /// The agent's process id on `host`, if known. Left out of JSON when
    /// absent.
    pub pid: Option<u32>,
    /// When the agent's process started (UTC), if known. Left out of JSON
    /// when absent.
    pub started_at: Option<DateTime<Utc>>,
    /// Free-form string pairs describing the agent (zone, version, owner...),
    /// sorted by key. Not to be confused with a task's labels, which match
    /// capabilities. Left out of JSON when empty.
    pub metadata: BTreeMap<String, String>,
}

// The Go registry's json tags, one line per field, in its order; the fields
// the Go registry does not have are omitempty, so its agents' JSON stays
// byte for byte the same.
go_json_struct!(AgentInfo {
    id,
    name,
    capabilities: omitempty,
    status,
    last_heartbeat,
    current_load,
    max_load,
    drained: omitempty,
    host: omitempty,
    pid: omitempty,
    started_at: omitempty,
    metadata: omitempty,
});

impl Default for AgentInfo {
    /// Go's zero value: empty id and name, no capabilities, `Available`,
    /// last seen at [`ZERO_TIME`](crate::ZERO_TIME) (never), loads 0.
    fn default() -> Self {
        GoJson::go_zero()
    }
}

impl AgentInfo {
    /// Checks every [rule](AgentInfo#rules) and returns the agent as a
    /// registry stores it: capabilities without duplicates, first occurrence
    /// kept.
    ///
    /// # Errors
    ///
    /// [`Error::MissingId`] for an empty id, [`Error::Invalid`] naming the
    /// field and the rule for anything else.
    pub fn validated(mut self) -> Result<Self> {
        if self.id.is_empty() {
            return Err(Error::MissingId);
        }
        check_text("id", &self.id, MAX_ID_CHARS, Refuses::FormatCharacters)?;
        check_text("name", &self.name, MAX_NAME_CHARS, Refuses::BidiControls)?;
        let mut unique: Vec<String> = Vec::with_capacity(self.capabilities.len());
        for capability in self.capabilities.drain(..) {
            check_capability("capabilities", &capability)?;
            if !unique.contains(&capability) {
                unique.push(capability);
            }
        }
        if unique.len() > MAX_CAPABILITIES {
            return Err(Error::invalid(
                "capabilities",
                format!(
                    "{} distinct capabilities, at most {MAX_CAPABILITIES} are allowed",
                    unique.len()
                ),
            ));
        }
        self.capabilities = unique;
        if self.max_load != 0 && self.current_load > self.max_load {
            return Err(Error::invalid(
                "current_load",
                format!(
                    "{} is above max_load {} (max_load 0 means unlimited)",
                    self.current_load, self.max_load
                ),
            ));
        }
        check_time("last_heartbeat", &self.last_heartbeat)?;
        if let Some(started_at) = &self.started_at {
            check_time("started_at", started_at)?;
        }
        if let Some(host) = &self.host {
            if host.is_empty() {
                return Err(Error::invalid(
                    "host",
                    "must not be empty (leave it out when unknown)",
                ));
            }
            check_text("host", host, MAX_HOST_CHARS, Refuses::FormatCharacters)?;
        }
        if self.pid == Some(0) {
            return Err(Error::invalid("pid", "must not be 0"));
        }
        if self.metadata.len() > MAX_METADATA {
            return Err(Error::invalid(
                "metadata",
                format!(
                    "{} pairs, at most {MAX_METADATA} are allowed",
                    self.metadata.len()
                ),
            ));
        }
        for (key, value) in &self.metadata {
            if key.is_empty() {
                return Err(Error::invalid("metadata", "a key must not be empty"));
            }
            check_text(
                "metadata",
                key,
                MAX_METADATA_KEY_CHARS,
                Refuses::FormatCharacters,
            )?;
            check_text(
                "metadata",
                value,
                MAX_METADATA_VALUE_CHARS,
                Refuses::BidiControls,
            )?;
        }
        Ok(self)
    }

    /// Whether the agent can take one more task: it is not offline and has a
    /// free slot, that is `current_load` is below `max_load`, or below
    /// `u32::MAX` when `max_load` is 0 (unlimited).
    pub fn has_capacity(&self) -> bool {
        let limit = if self.max_load == 0 {
            u32::MAX
        } else {
            self.max_load
        };
        self.status != AgentStatus::Offline && self.current_load < limit
    }
}

/// Checks a time against the stored format's range: years 0000..=9999, no
/// leap second.
fn check_time(field: &'static str, time: &DateTime<Utc>) -> Result<()> {
    let year = time.year();
    if !(0..=9999).contains(&year) {
        return Err(Error::invalid(
            field,
            format!("year {year} is outside 0000..=9999"),
        ));
    }
    if time.nanosecond() >= 1_000_000_000 {
        return Err(Error::invalid(
            field,
            "leap seconds (23:59:60) are not supported",
        ));
    }
    Ok(())
}

/// Checks a capability or a task label: not empty, at most
/// [`MAX_CAPABILITY_CHARS`] characters, no control or format character.
pub(crate) fn check_capability(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    check_text(
        field,
        value,
        MAX_CAPABILITY_CHARS,
        Refuses::FormatCharacters,
    )
}
