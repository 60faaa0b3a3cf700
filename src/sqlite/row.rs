//! Encoding of agents into rows and back: the one place that knows the
//! column formats.

use chrono::{DateTime, NaiveDateTime, Utc};
use rusqlite::Row;

use crate::agent::{AgentInfo, AgentStatus};
use crate::error::{DatabaseError, Error, Result};

/// The format of `agents.last_heartbeat`: UTC, always nine fractional
/// digits. It is SQLite's own date format carried to the nanosecond, so text
/// order is time order and `datetime('now', '-30 seconds')` compares with it
/// correctly.
const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.9f";

/// Encodes a time as stored in `agents.last_heartbeat`.
pub(crate) fn encode_time(time: &DateTime<Utc>) -> String {
    time.format(TIMESTAMP_FORMAT).to_string()
}

/// Decodes `agents.last_heartbeat`.
pub(crate) fn decode_time(text: &str) -> Result<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(text, TIMESTAMP_FORMAT)
        .map(|naive| naive.and_utc())
        .map_err(|e| corrupt(format!("last_heartbeat {text:?}: {e}")))
}

pub(crate) fn corrupt(what: String) -> Error {
    Error::Database(DatabaseError::message(format!(
        "unexpected value in the database: {what}"
    )))
}

/// The columns [`agent_from_row`] reads, joined with the agent's
/// capabilities (NULL for an agent with none), one row per capability.
pub(crate) const AGENT_COLUMNS: &str = "SELECT a.id, a.name, a.status, a.last_heartbeat, \
     a.current_load, a.max_load, c.capability \
     FROM agents AS a LEFT JOIN capabilities AS c ON c.agent_id = a.id";

/// The fields of one row of [`AGENT_COLUMNS`], before decoding.
pub(crate) struct RawAgent {
    id: String,
    name: String,
    status: String,
    last_heartbeat: String,
    current_load: i64,
    max_load: i64,
    capability: Option<String>,
}

pub(crate) fn raw_agent(row: &Row<'_>) -> rusqlite::Result<RawAgent> {
    Ok(RawAgent {
        id: row.get(0)?,
        name: row.get(1)?,
        status: row.get(2)?,
        last_heartbeat: row.get(3)?,
        current_load: row.get(4)?,
        max_load: row.get(5)?,
        capability: row.get(6)?,
    })
}

fn load(column: &str, value: i64) -> Result<u32> {
    u32::try_from(value).map_err(|_| corrupt(format!("{column} {value}")))
}

/// Folds rows of [`AGENT_COLUMNS`], ordered by agent and then by capability
/// position, into agents.
pub(crate) fn fold_agents(
    rows: impl Iterator<Item = rusqlite::Result<RawAgent>>,
) -> Result<Vec<AgentInfo>> {
    let mut agents: Vec<AgentInfo> = Vec::new();
    for raw in rows {
        let raw = raw.map_err(crate::sqlite::db_error)?;
        match agents.last_mut() {
            Some(last) if last.id == raw.id => last.capabilities.extend(raw.capability),
            _ => agents.push(AgentInfo {
                status: raw
                    .status
                    .parse::<AgentStatus>()
                    .map_err(|_| corrupt(format!("status {:?}", raw.status)))?,
                last_heartbeat: decode_time(&raw.last_heartbeat)?,
                current_load: load("current_load", raw.current_load)?,
                max_load: load("max_load", raw.max_load)?,
                capabilities: raw.capability.into_iter().collect(),
                id: raw.id,
                name: raw.name,
            }),
        }
    }
    Ok(agents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trips_to_the_nanosecond_and_sorts_as_text() -> Result<()> {
        let early = DateTime::parse_from_rfc3339("0001-01-01T00:00:00Z")
            .map_err(|e| corrupt(e.to_string()))?
            .with_timezone(&Utc);
        let late = DateTime::parse_from_rfc3339("2026-11-24T15:04:05.123456789Z")
            .map_err(|e| corrupt(e.to_string()))?
            .with_timezone(&Utc);
        assert_eq!(encode_time(&early), "0001-01-01 00:00:00.000000000");
        assert_eq!(encode_time(&late), "2026-11-24 15:04:05.123456789");
        assert_eq!(decode_time(&encode_time(&late))?, late);
        assert!(encode_time(&early) < encode_time(&late));
        Ok(())
    }

    #[test]
    fn bad_time_text_is_an_error_not_a_panic() {
        assert!(decode_time("2026-11-24T15:04:05Z").is_err());
        assert!(decode_time("").is_err());
    }
}
