//! Encoding of agents into rows and back: the one place that knows the
//! column formats.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Params, Row, Statement};

use crate::agent::{AgentInfo, AgentStatus};
use crate::claim::Claim;
use crate::error::Error;
use crate::sqlite::retry::{Failure, Result};
use crate::text::escape_bytes;

/// Encodes a time as stored in `agents.last_heartbeat`: UTC,
/// `YYYY-MM-DD HH:MM:SS.fffffffff`, always nine fractional digits. It is
/// SQLite's own date format carried to the nanosecond, so text order is time
/// order and `datetime('now', '-30 seconds')` compares with it correctly.
///
/// Years must be within 0..=9999 and the time no leap second, as
/// [`AgentInfo::validated`] ensures.
pub(crate) fn encode_time(time: &DateTime<Utc>) -> String {
    let mut text = String::with_capacity(29);
    let _ = write!(
        text,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:09}",
        time.year(),
        time.month(),
        time.day(),
        time.hour(),
        time.minute(),
        time.second(),
        time.nanosecond()
    );
    text
}

/// Decodes `agents.last_heartbeat`; `None` when the text is not in the
/// format (the schema's CHECK constraint makes that impossible).
pub(crate) fn decode_time(text: &[u8]) -> Option<DateTime<Utc>> {
    if text.len() != 29 {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<u32> {
        text[from..to].iter().try_fold(0_u32, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
        })
    };
    let separators = [
        (4, b'-'),
        (7, b'-'),
        (10, b' '),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ];
    if separators.iter().any(|&(at, sep)| text[at] != sep) {
        return None;
    }
    let year = i32::try_from(number(0, 4)?).ok()?;
    NaiveDate::from_ymd_opt(year, number(5, 7)?, number(8, 10)?)?
        .and_hms_nano_opt(
            number(11, 13)?,
            number(14, 16)?,
            number(17, 19)?,
            number(20, 29)?,
        )
        .map(|naive| naive.and_utc())
}

/// The query behind `get` and `list`: agents joined with their capabilities
/// (NULL for an agent with none), one row per capability; `{}` is where the
/// WHERE and ORDER BY go. Rows must come ordered by agent, then position.
macro_rules! select_agents {
    ($($rest:expr),+ $(,)?) => {
        concat!(
            "SELECT a.id, a.name, a.status, a.last_heartbeat, a.current_load, a.max_load, \
             a.drained, a.host, a.pid, a.started_at, \
             c.capability FROM agents AS a LEFT JOIN capabilities AS c ON c.agent_id = a.id ",
            $($rest),+
        )
    };
}
pub(crate) use select_agents;

/// The columns of [`select_agents!`], by position.
const COLUMNS: [&str; 11] = [
    "id",
    "name",
    "status",
    "last_heartbeat",
    "current_load",
    "max_load",
    "drained",
    "host",
    "pid",
    "started_at",
    "capability",
];

/// Where the capability is in [`select_agents!`].
const CAPABILITY: usize = 10;

/// The error for a value of agent `id` (raw bytes) that cannot be read.
fn unreadable(table: &'static str, id: &[u8], column: usize, reason: String) -> Failure {
    Failure::Roster(Error::Unreadable {
        table,
        id: escape_bytes(id),
        column: COLUMNS[column],
        reason,
    })
}

/// The raw bytes of a TEXT value (the schema makes every text column TEXT).
fn bytes<'r>(row: &'r Row<'_>, column: usize) -> Result<&'r [u8]> {
    match row.get_ref(column)? {
        ValueRef::Text(bytes) => Ok(bytes),
        other => {
            let id = match row.get_ref(0)? {
                ValueRef::Text(id) => id,
                _ => b"?",
            };
            Err(unreadable(
                "agents",
                id,
                column,
                format!("expected text, found {:?}", other.data_type()),
            ))
        }
    }
}

/// A TEXT value as `&str`, or an error naming the agent and the column.
pub(crate) fn text<'r>(row: &'r Row<'_>, column: usize, table: &'static str) -> Result<&'r str> {
    let value = bytes(row, column)?;
    std::str::from_utf8(value).map_err(|e| {
        let id = bytes(row, 0).unwrap_or(b"?");
        unreadable(table, id, column, format!("not UTF-8 ({e})"))
    })
}

fn load(row: &Row<'_>, column: usize) -> Result<u32> {
    let value: i64 = row.get(column)?;
    u32::try_from(value).map_err(|_| {
        let id = bytes(row, 0).unwrap_or(b"?");
        unreadable(
            "agents",
            id,
            column,
            format!("load {value} is out of range"),
        )
    })
}

fn new_agent(row: &Row<'_>) -> Result<AgentInfo> {
    let id = text(row, 0, "agents")?;
    let name = text(row, 1, "agents")?;
    let status = text(row, 2, "agents")?;
    let status = status.parse::<AgentStatus>().map_err(|_| {
        unreadable(
            "agents",
            id.as_bytes(),
            2,
            format!("unknown status {status:?}"),
        )
    })?;
    let last_heartbeat = time(row, 3, id)?
        .ok_or_else(|| unreadable("agents", id.as_bytes(), 3, "NULL is not a time".to_owned()))?;
    let drained: i64 = row.get(6)?;
    let host = match row.get_ref(7)? {
        ValueRef::Null => None,
        _ => Some(text(row, 7, "agents")?.to_owned()),
    };
    let pid = match row.get::<_, Option<i64>>(8)? {
        None => None,
        Some(pid) => Some(u32::try_from(pid).map_err(|_| {
            unreadable(
                "agents",
                id.as_bytes(),
                8,
                format!("pid {pid} is out of range"),
            )
        })?),
    };
    Ok(AgentInfo {
        id: id.to_owned(),
        name: name.to_owned(),
        capabilities: Vec::new(),
        status,
        last_heartbeat,
        current_load: load(row, 4)?,
        max_load: load(row, 5)?,
        drained: drained != 0,
        host,
        pid,
        started_at: time(row, 9, id)?,
        metadata: BTreeMap::new(),
    })
}

/// A time column in the stored format, `None` for NULL.
fn time(row: &Row<'_>, column: usize, id: &str) -> Result<Option<DateTime<Utc>>> {
    if let ValueRef::Null = row.get_ref(column)? {
        return Ok(None);
    }
    let text = text(row, column, "agents")?;
    decode_time(text.as_bytes()).map(Some).ok_or_else(|| {
        unreadable(
            "agents",
            id.as_bytes(),
            column,
            format!("{text:?} is not a time in the format YYYY-MM-DD HH:MM:SS.fffffffff"),
        )
    })
}

/// The metadata pairs of one agent, sorted by key.
pub(crate) fn read_metadata(conn: &Connection, id: &str) -> Result<BTreeMap<String, String>> {
    let mut stmt =
        conn.prepare_cached("SELECT key, value FROM metadata WHERE agent_id = ?1 ORDER BY key")?;
    let mut rows = stmt.query([id])?;
    let mut pairs = BTreeMap::new();
    while let Some(row) = rows.next()? {
        let key = metadata_text(row, 0, id, "key")?;
        let value = metadata_text(row, 1, id, "value")?;
        pairs.insert(key, value);
    }
    Ok(pairs)
}

/// Fills in the metadata of `agents` (sorted by id) from one pass over the
/// metadata table.
pub(crate) fn fill_metadata(conn: &Connection, agents: &mut [AgentInfo]) -> Result<()> {
    let mut stmt =
        conn.prepare_cached("SELECT agent_id, key, value FROM metadata ORDER BY agent_id, key")?;
    let mut rows = stmt.query([])?;
    let mut at = 0;
    while let Some(row) = rows.next()? {
        let owner = bytes(row, 0)?;
        while at < agents.len() && agents[at].id.as_bytes() < owner {
            at += 1;
        }
        let Some(agent) = agents.get_mut(at).filter(|a| a.id.as_bytes() == owner) else {
            continue;
        };
        let key = metadata_text(row, 1, &agent.id, "key")?;
        let value = metadata_text(row, 2, &agent.id, "value")?;
        agent.metadata.insert(key, value);
    }
    Ok(())
}

fn metadata_text(row: &Row<'_>, column: usize, id: &str, name: &'static str) -> Result<String> {
    let unreadable = |reason: String| {
        Failure::Roster(Error::Unreadable {
            table: "metadata",
            id: escape_bytes(id.as_bytes()),
            column: name,
            reason,
        })
    };
    match row.get_ref(column)? {
        ValueRef::Text(value) => std::str::from_utf8(value)
            .map(str::to_owned)
            .map_err(|e| unreadable(format!("not UTF-8 ({e})"))),
        other => Err(unreadable(format!(
            "expected text, found {:?}",
            other.data_type()
        ))),
    }
}

/// Runs a [`select_agents!`] statement and folds its rows into agents,
/// allocating each agent's fields once, not once per capability row.
///
/// # Errors
///
/// [`Error::Unreadable`] naming the agent and the column for a value that
/// roster cannot have written; no row is ever skipped.
pub(crate) fn query_agents(
    stmt: &mut Statement<'_>,
    params: impl Params,
) -> Result<Vec<AgentInfo>> {
    let mut rows = stmt.query(params)?;
    let mut agents: Vec<AgentInfo> = Vec::new();
    while let Some(row) = rows.next()? {
        let id = bytes(row, 0)?;
        if agents.last().is_none_or(|last| last.id.as_bytes() != id) {
            agents.push(new_agent(row)?);
        }
        if let (ValueRef::Text(_), Some(agent)) = (row.get_ref(CAPABILITY)?, agents.last_mut()) {
            let capability = text(row, CAPABILITY, "capabilities")?;
            agent.capabilities.push(capability.to_owned());
        }
    }
    Ok(agents)
}

/// A row `task_id, agent_id, token, claimed_at, lease_expires_at` of
/// `claims` as a [`Claim`]; for `query_row`, so the outer result is
/// rusqlite's and the inner one says whether the row could be read.
pub(crate) fn claim_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Claim>> {
    Ok(read_claim(row))
}

fn read_claim(row: &Row<'_>) -> Result<Claim> {
    let raw_task_id = bytes(row, 0)?;
    let unreadable = |column: &'static str, reason: String| {
        Failure::Roster(Error::Unreadable {
            table: "claims",
            id: escape_bytes(raw_task_id),
            column,
            reason,
        })
    };
    let utf8 = |column: usize, name: &'static str| -> Result<&str> {
        let value = bytes(row, column)?;
        std::str::from_utf8(value).map_err(|e| unreadable(name, format!("not UTF-8 ({e})")))
    };
    let task_id = utf8(0, "task_id")?;
    let token: i64 = row.get(2)?;
    let token =
        u64::try_from(token).map_err(|_| unreadable("token", format!("{token} is negative")))?;
    let time = |column: usize, name: &'static str| -> Result<Option<DateTime<Utc>>> {
        match row.get_ref(column)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(text) => decode_time(text)
                .map(Some)
                .ok_or_else(|| unreadable(name, format!("{:?} is not a time", escape_bytes(text)))),
            other => Err(unreadable(
                name,
                format!("expected text, found {:?}", other.data_type()),
            )),
        }
    };
    Ok(Claim {
        task_id: task_id.to_owned(),
        agent_id: utf8(1, "agent_id")?.to_owned(),
        token,
        claimed_at: time(3, "claimed_at")?
            .ok_or_else(|| unreadable("claimed_at", "NULL is not a time".to_owned()))?,
        lease_expires_at: time(4, "lease_expires_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trips_to_the_nanosecond_and_sorts_as_text() -> Result<(), String> {
        let parse = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .expect("test time")
                .with_timezone(&Utc)
        };
        let early = parse("0001-01-01T00:00:00Z");
        let late = parse("2026-11-24T15:04:05.123456789Z");
        let later = parse("2026-11-24T15:04:05.123456790Z");
        assert_eq!(encode_time(&early), "0001-01-01 00:00:00.000000000");
        assert_eq!(encode_time(&late), "2026-11-24 15:04:05.123456789");
        for time in [early, late, later] {
            assert_eq!(decode_time(encode_time(&time).as_bytes()), Some(time));
        }
        assert!(encode_time(&early) < encode_time(&late));
        assert!(encode_time(&late) < encode_time(&later));
        Ok(())
    }

    #[test]
    fn bad_time_text_is_an_error_not_a_panic() {
        for bad in [
            "2026-11-24T15:04:05Z",
            "",
            "2026-11-24 15:04:05.12345678x",
            "2026-02-30 00:00:00.000000000",
            "2026-11-24 24:00:00.000000000",
            "2026-11-24+15:04:05.123456789",
        ] {
            assert_eq!(decode_time(bad.as_bytes()), None, "{bad}");
        }
    }
}
