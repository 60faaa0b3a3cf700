//! Rows to agents: the one place that knows the column types.
//!
//! Every query that returns agents selects [`agent_columns!`] of one alias,
//! one row per agent, capabilities as an array in the agent's order.

use chrono::{DateTime, Utc};
use postgres::Row;

use crate::agent::{AgentInfo, AgentStatus};
use crate::claim::Claim;
use crate::error::Error;
use crate::postgres::retry::{Failure, Result};
use crate::text::escape_bytes;

/// The columns of an agent, as [`agent`] reads them, for the table alias
/// `$t`: its fields, its capabilities in order as `text[]`, then its
/// metadata keys and values, by key, as two `text[]`. One statement, so one
/// snapshot for all of them. (A column of a domain type comes back as its
/// base type, an array of them as an array of the domain: hence the casts.)
macro_rules! agent_columns {
    ($t:literal) => {
        concat!(
            $t,
            ".id, ",
            $t,
            ".name, ",
            $t,
            ".status, ",
            $t,
            ".last_heartbeat, ",
            $t,
            ".current_load, ",
            $t,
            ".max_load, ",
            "ARRAY(SELECT c.capability::text FROM capabilities AS c WHERE c.agent_id = ",
            $t,
            ".id ORDER BY c.position), ",
            $t,
            ".drained, ",
            $t,
            ".host, ",
            $t,
            ".pid, ",
            $t,
            ".started_at, ",
            "ARRAY(SELECT m.key::text FROM metadata AS m WHERE m.agent_id = ",
            $t,
            ".id ORDER BY m.key), ",
            "ARRAY(SELECT m.value::text FROM metadata AS m WHERE m.agent_id = ",
            $t,
            ".id ORDER BY m.key)"
        )
    };
}
pub(crate) use agent_columns;

/// How many columns [`agent_columns!`] has: a claim read after an agent in
/// one row starts there.
pub(crate) const AGENT_COLUMNS: usize = COLUMNS.len();

/// The columns of [`agent_columns!`], by position.
const COLUMNS: [&str; 13] = [
    "id",
    "name",
    "status",
    "last_heartbeat",
    "current_load",
    "max_load",
    "capability",
    "drained",
    "host",
    "pid",
    "started_at",
    "key",
    "value",
];

fn unreadable(row: &Row, column: usize, reason: String) -> Failure {
    let id = row.try_get::<_, &str>(0).unwrap_or("?");
    Failure::Roster(Error::Unreadable {
        table: match column {
            6 => "capabilities",
            11 | 12 => "metadata",
            _ => "agents",
        },
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
    u32::try_from(value)
        .map_err(|_| unreadable(row, column, format!("load {value} is out of range")))
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
    let pid = match get::<Option<i64>>(row, 9)? {
        None => None,
        Some(pid) => Some(
            u32::try_from(pid)
                .map_err(|_| unreadable(row, 9, format!("pid {pid} is out of range")))?,
        ),
    };
    let keys: Vec<String> = get(row, 11)?;
    let values: Vec<String> = get(row, 12)?;
    Ok(AgentInfo {
        id: get(row, 0)?,
        name: get(row, 1)?,
        capabilities: get(row, 6)?,
        status,
        last_heartbeat,
        current_load: load(row, 4)?,
        max_load: load(row, 5)?,
        drained: get(row, 7)?,
        host: get(row, 8)?,
        pid,
        started_at: get(row, 10)?,
        metadata: keys.into_iter().zip(values).collect(),
    })
}

/// Every row of [`agent_columns!`] as agents, in order.
pub(crate) fn agents(rows: &[Row]) -> Result<Vec<AgentInfo>> {
    rows.iter().map(agent).collect()
}

/// The columns of a claim, as [`claim`] reads them, for the table alias
/// `$t`.
macro_rules! claim_columns {
    ($t:literal) => {
        concat!(
            $t,
            ".task_id, ",
            $t,
            ".agent_id, ",
            $t,
            ".token, ",
            $t,
            ".claimed_at, ",
            $t,
            ".lease_expires_at"
        )
    };
}
pub(crate) use claim_columns;

/// The five columns of [`claim_columns!`] starting at column `at` as a
/// claim.
///
/// # Errors
///
/// [`Error::Unreadable`] naming the task and the column for a value roster
/// cannot have written (the schema's constraints make that impossible
/// unless someone dropped them).
pub(crate) fn claim(row: &Row, at: usize) -> Result<Claim> {
    let unreadable = |column: &'static str, reason: String| {
        let task_id = row.try_get::<_, &str>(at).unwrap_or("?");
        Failure::Roster(Error::Unreadable {
            table: "claims",
            id: escape_bytes(task_id.as_bytes()),
            column,
            reason,
        })
    };
    const NAMES: [&str; 5] = [
        "task_id",
        "agent_id",
        "token",
        "claimed_at",
        "lease_expires_at",
    ];
    fn read<'r, T: postgres::types::FromSql<'r>>(
        row: &'r Row,
        at: usize,
        offset: usize,
        unreadable: &impl Fn(&'static str, String) -> Failure,
    ) -> Result<T> {
        row.try_get(at + offset)
            .map_err(|e| unreadable(NAMES[offset], e.to_string()))
    }
    let token: i64 = read(row, at, 2, &unreadable)?;
    let token =
        u64::try_from(token).map_err(|_| unreadable("token", format!("{token} is negative")))?;
    Ok(Claim {
        task_id: read(row, at, 0, &unreadable)?,
        agent_id: read(row, at, 1, &unreadable)?,
        token,
        claimed_at: read(row, at, 3, &unreadable)?,
        lease_expires_at: read(row, at, 4, &unreadable)?,
    })
}

/// Every row of [`claim_columns!`] as claims, in order.
pub(crate) fn claims(rows: &[Row]) -> Result<Vec<Claim>> {
    rows.iter().map(|row| claim(row, 0)).collect()
}
