//! [`Task`] and [`Priority`]: what a dispatcher asks the registry to place.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::agent::{MAX_CAPABILITIES, check_capability};
use crate::error::{Error, Result};

/// How urgent a task is; it decides how an agent is chosen (see
/// [`DefaultRouter`](crate::DefaultRouter)).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Can wait.
    Low,
    /// The default.
    #[default]
    Medium,
    /// Should run soon.
    High,
    /// Goes to the least loaded agent, whatever its capacity.
    Critical,
}

impl Priority {
    /// Every priority, lowest first.
    pub const ALL: [Priority; 4] = [Self::Low, Self::Medium, Self::High, Self::Critical];

    /// The lowercase name used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = Error;

    /// Parses `"low"`, `"medium"`, `"high"` or `"critical"`.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for any other text.
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "priority",
                    format!("{s:?} is not one of \"low\", \"medium\", \"high\", \"critical\""),
                )
            })
    }
}

/// A unit of work to place on an agent.
///
/// An agent can take the task only if it holds every one of the task's
/// `labels` among its capabilities; a task without labels fits any agent.
/// Labels obey the rules of capabilities: not empty, at most
/// [`MAX_CAPABILITY_CHARS`](crate::MAX_CAPABILITY_CHARS) characters, no control or format characters, at most
/// [`MAX_CAPABILITIES`] distinct ones.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Task {
    /// The caller's id for the task; roster does not interpret it.
    pub id: String,
    /// Capabilities an agent needs to take the task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// How urgent the task is.
    #[serde(default)]
    pub priority: Priority,
}

impl Task {
    /// The task's labels, checked and without duplicates.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming `labels` when one breaks a rule.
    pub(crate) fn checked_labels(&self) -> Result<Vec<&str>> {
        let mut unique: Vec<&str> = Vec::with_capacity(self.labels.len());
        for label in &self.labels {
            check_capability("labels", label)?;
            if !unique.contains(&label.as_str()) {
                unique.push(label);
            }
        }
        if unique.len() > MAX_CAPABILITIES {
            return Err(Error::invalid(
                "labels",
                format!(
                    "{} distinct labels, at most {MAX_CAPABILITIES} are allowed",
                    unique.len()
                ),
            ));
        }
        Ok(unique)
    }
}
