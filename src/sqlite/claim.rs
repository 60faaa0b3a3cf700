//! All of claim's SQL: DefaultRouter's policy evaluated in the database, the
//! generic path for any other router, and taking the slot.
//!
//! Every statement is a constant, prepared once per connection: the task's
//! labels are bound as one JSON array (`?1`, read with `json_each`) and their
//! count as `?2`.
//!
//! The indexes of migration 0002 hold the agents with a free slot in routing
//! order (offline ones too: status is checked per row, see the migration).
//! [`choose`] first walks the head of that order and takes the first agent
//! that is online and holds every label: for labels that many agents share it
//! stops after a few rows. When the head holds no match, it asks the
//! capability index for the holders of the rarest label and sorts only those.
//! Either way no more than one agent leaves the database.

use rusqlite::{OptionalExtension, Transaction};

use crate::agent::AgentInfo;
use crate::error::Error;
use crate::route::TaskRouter;
use crate::sqlite::retry::Result;
use crate::sqlite::row::{query_agents, select_agents};
use crate::task::{Priority, Task};

/// How many agents with a free slot, in routing order, the first step looks
/// at before it switches to the holders of the rarest label.
const WALK_LIMIT: usize = 256;

/// The condition that defines an agent with a free slot; must stay
/// identical, term for term, to the WHERE clause of the claim indexes.
macro_rules! has_slot {
    () => {
        "a.current_load < (CASE a.max_load WHEN 0 THEN 4294967295 ELSE a.max_load END)"
    };
}

/// Agent `a` holds every label of the JSON array `?1`, which has `?2`
/// distinct labels. The `IN` list is computed once per statement.
macro_rules! holds_labels {
    () => {
        "(?2 = 0 OR (SELECT count(*) FROM capabilities AS c \
         WHERE c.agent_id = a.id AND c.capability IN (SELECT value FROM json_each(?1))) = ?2)"
    };
}

/// The usage key of `agents_claim_by_usage`, term for term.
macro_rules! usage {
    () => {
        "(CASE WHEN a.max_load = 0 THEN 0.0 ELSE a.current_load * 1.0 / a.max_load END)"
    };
}

/// The walk, the rest of the walk, and the rarest-label search of one
/// routing order.
struct Order {
    walk: &'static str,
    first_online: &'static str,
    by_rarest_label: &'static str,
}

macro_rules! order {
    ($index:literal, $key:expr) => {
        Order {
            walk: concat!(
                "SELECT a.id, a.status <> 'offline' AND a.drained = 0 AND ",
                holds_labels!(),
                " FROM agents AS a INDEXED BY ",
                $index,
                " WHERE ",
                has_slot!(),
                " ORDER BY ",
                $key,
                ", a.id LIMIT 256"
            ),
            first_online: concat!(
                "SELECT a.id FROM agents AS a INDEXED BY ",
                $index,
                " WHERE ",
                has_slot!(),
                " AND a.status <> 'offline' AND a.drained = 0 ORDER BY ",
                $key,
                ", a.id LIMIT 1"
            ),
            by_rarest_label: concat!(
                "SELECT a.id FROM capabilities AS driver JOIN agents AS a ON a.id = driver.agent_id \
                 WHERE driver.capability = ?3 AND a.status <> 'offline' AND a.drained = 0 AND ",
                has_slot!(),
                " AND ",
                holds_labels!(),
                " ORDER BY ",
                $key,
                ", a.id LIMIT 1"
            ),
        }
    };
}

const BY_USAGE: Order = order!("agents_claim_by_usage", usage!());
const BY_LOAD: Order = order!("agents_claim_by_load", "a.current_load");

/// The label of `?1` that the fewest agents hold, and whether any holds it.
const RAREST_LABEL: &str = "SELECT l.value, \
     (SELECT count(*) FROM capabilities AS c WHERE c.capability = l.value) AS holders \
     FROM json_each(?1) AS l ORDER BY holders, l.value LIMIT 1";

/// Every eligible agent, for a router other than DefaultRouter.
const ELIGIBLE: &str = select_agents!(
    "WHERE a.status <> 'offline' AND a.drained = 0 \
     AND a.current_load < (CASE a.max_load WHEN 0 THEN 4294967295 ELSE a.max_load END) \
     AND (?2 = 0 OR (SELECT count(*) FROM capabilities AS c2 \
          WHERE c2.agent_id = a.id AND c2.capability IN (SELECT value FROM json_each(?1))) = ?2) \
     ORDER BY a.id, c.position"
);

fn order(priority: Priority) -> &'static Order {
    match priority {
        Priority::Critical => &BY_LOAD,
        Priority::Low | Priority::Medium | Priority::High => &BY_USAGE,
    }
}

/// The labels as the statements bind them: a JSON array and its length.
fn bind(labels: &[&str]) -> (String, i64) {
    let mut json = String::from("[");
    for (i, label) in labels.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push('"');
        for c in label.chars() {
            match c {
                '"' => json.push_str("\\\""),
                '\\' => json.push_str("\\\\"),
                // Labels hold no control characters (checked before).
                c => json.push(c),
            }
        }
        json.push('"');
    }
    json.push(']');
    (json, i64::try_from(labels.len()).unwrap_or(i64::MAX))
}

/// The id of the agent DefaultRouter would choose, if any.
pub(super) fn choose(
    tx: &Transaction<'_>,
    labels: &[&str],
    priority: Priority,
) -> Result<Option<String>> {
    let order = order(priority);
    let (json, count) = bind(labels);
    let mut stmt = tx.prepare_cached(order.walk)?;
    let mut rows = stmt.query(rusqlite::params![json, count])?;
    let mut seen = 0;
    while let Some(row) = rows.next()? {
        seen += 1;
        if row.get::<_, bool>(1)? {
            return Ok(Some(row.get(0)?));
        }
    }
    if seen < WALK_LIMIT {
        // The walk saw every agent with a free slot.
        return Ok(None);
    }
    drop(rows);
    if labels.is_empty() {
        // The head of the order is all offline: the rest of the walk.
        return Ok(tx
            .prepare_cached(order.first_online)?
            .query_row([], |row| row.get(0))
            .optional()?);
    }
    let rarest: Option<(String, i64)> = tx
        .prepare_cached(RAREST_LABEL)?
        .query_row([&json], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let Some((rarest, holders)) = rarest else {
        return Ok(None);
    };
    if holders == 0 {
        return Ok(None);
    }
    Ok(tx
        .prepare_cached(order.by_rarest_label)?
        .query_row(rusqlite::params![json, count, rarest], |row| row.get(0))
        .optional()?)
}

/// The id `router` chooses among the eligible agents, read in one statement
/// inside the claim's transaction.
pub(super) fn route(
    tx: &Transaction<'_>,
    router: &dyn TaskRouter,
    task: &Task,
    labels: &[&str],
) -> Result<Option<String>> {
    let (json, count) = bind(labels);
    let mut stmt = tx.prepare_cached(ELIGIBLE)?;
    let eligible: Vec<AgentInfo> = query_agents(&mut stmt, rusqlite::params![json, count])?;
    if eligible.is_empty() {
        return Ok(None);
    }
    let id = match router.route(task, &eligible) {
        Ok(id) => id,
        Err(Error::NoEligibleAgent) => return Ok(None),
        Err(other) => return Err(other.into()),
    };
    if !eligible.iter().any(|agent| agent.id == id) {
        return Err(Error::invalid(
            "router",
            format!("the router chose {id:?}, which is not an eligible agent for the task"),
        )
        .into());
    }
    Ok(Some(id))
}
