//! Rows to agents: the one place that knows the column types.
//!
//! Every query that returns agents selects [`agent_columns!`] of one alias,
//! one row per agent, capabilities as an array in the agent's order.

use chrono::{DateTime, Utc};
use postgres::Row;

use crate::agent::{AgentInfo, AgentStatus};
use crate::error::Error;
use crate::postgres::retry::{Failure, Result};
use crate::text::escape_bytes;

/// The columns of an agent, as [`agent`] reads them, for the table alias
/// `$t`: its fields, then its capabilities in order as `text[]`.
macro_rules! agent_columns {
    ($t:literal) => {
        concat!(
            $t, ".id, ", $t, ".name, ", $t, ".status, ", $t, ".last_heartbeat, ",
            $t, ".current_load, ", $t, ".max_load, ",
            "ARRAY(SELECT c.capability FROM capabilities AS c WHERE c.agent_id = ",
            $t, ".id ORDER BY c.position)"
        )
    };
}
pub(crate) use agent_columns;

/// The columns of [`agent_columns!`], by position.
const COLUMNS: [&str; 7] = [
    "id",
    "name",
    "status",
    "last_heartbeat",
    "current_load",
    "max_load",
    "capability",
];

fn unreadable(row: &Row, column: usize, reason: String) -> Failure {
    let id = row.try_get::<_, &str>(0).unwrap_or("?");
    Failure::Roster(Error::Unreadable {
        table: if column == 6 { "capabilities" } else { "agents" },
        id: escape_bytes(id.as_bytes()),
        column: COLUMNS[column],
        reason,
    })
}

fn get<'r, T: postgres::types::FromSql<'r>>(row: &'r Row, column: usize) -> Result<T> {
    row.try_get(column)
        .map_err(|e| unreadable(row, column, e.to_string()))
}

fn load(row: &Row, column: usize) -> Result<u32> {
    let value: i64 = get(row, column)?;
    u32::try_from(value).map_err(|_| unreadable(row, column, format!("load {value} is out of range")))
}

/// One row of [`agent_columns!`] as an agent.
///
/// # Errors
///
/// [`Error::Unreadable`] naming the agent and the column for a value roster
/// cannot have written (the schema's constraints make that impossible
/// unless someone dropped them).
pub(crate) fn agent(row: &Row) -> Result<AgentInfo> {
    let status: &str = get(row, 2)?;
    let status = status
        .parse::<AgentStatus>()
        .map_err(|_| unreadable(row, 2, format!("unknown status {status:?}")))?;
    let last_heartbeat: DateTime<Utc> = get(row, 3)?;
    Ok(AgentInfo {
        id: get(row, 0)?,
        name: get(row, 1)?,
        capabilities: get(row, 6)?,
        status,
        last_heartbeat,
        current_load: load(row, 4)?,
        max_load: load(row, 5)?,
    })
}

/// Every row of [`agent_columns!`] as agents, in order.
pub(crate) fn agents(rows: &[Row]) -> Result<Vec<AgentInfo>> {
    rows.iter().map(agent).collect()
}
