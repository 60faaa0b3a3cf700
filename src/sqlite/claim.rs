//! The SQL behind `claim`: DefaultRouter's policy, evaluated in the database.
//!
//! The indexes of migration 0002 hold the agents with a free slot in routing
//! order (offline ones too: status is checked per row, see the migration).
//! `claim` first walks the head of that order and takes the first agent that
//! is online and holds every label: for labels that many agents share it
//! stops after a few rows. When the head holds no match, it asks the
//! capability index for the holders of the rarest label and sorts only those.
//! Either way no more than one agent leaves the database.

use std::fmt::Write as _;

use rusqlite::{OptionalExtension, Transaction, params_from_iter};

use crate::task::Priority;

/// How many agents with a free slot, in routing order, the first step looks
/// at before it switches to the holders of the rarest label.
const WALK_LIMIT: usize = 256;

/// The condition that defines an agent with a free slot; must stay
/// identical, term for term, to the WHERE clause of the claim indexes.
const HAS_SLOT: &str =
    "a.current_load < (CASE a.max_load WHEN 0 THEN 4294967295 ELSE a.max_load END)";

/// The index and its ordering key for a priority.
fn order(priority: Priority) -> (&'static str, &'static str) {
    match priority {
        Priority::Critical => ("agents_claim_by_load", "a.current_load"),
        Priority::Low | Priority::Medium | Priority::High => (
            "agents_claim_by_usage",
            "(CASE WHEN a.max_load = 0 THEN 0.0 ELSE a.current_load * 1.0 / a.max_load END)",
        ),
    }
}

/// `EXISTS` terms requiring agent `a` to hold the labels bound to
/// `?first`, `?first+1`, ... (`count` of them), or `1` for none.
fn holds_labels(first: usize, count: usize) -> String {
    let mut sql = String::from("1");
    for param in first..first + count {
        let _ = write!(
            sql,
            " AND EXISTS (SELECT 1 FROM capabilities AS c{param} \
             WHERE c{param}.capability = ?{param} AND c{param}.agent_id = a.id)"
        );
    }
    sql
}

/// The id of the agent DefaultRouter would choose, if any.
pub(super) fn choose(
    tx: &Transaction<'_>,
    labels: &[&str],
    priority: Priority,
) -> rusqlite::Result<Option<String>> {
    let (index, key) = order(priority);
    let walk = format!(
        "SELECT a.id, a.status <> 'offline' AND {holds} FROM agents AS a INDEXED BY {index} \
         WHERE {HAS_SLOT} ORDER BY {key}, a.id LIMIT {WALK_LIMIT}",
        holds = holds_labels(1, labels.len()),
    );
    let mut stmt = tx.prepare_cached(&walk)?;
    let mut rows = stmt.query(params_from_iter(labels))?;
    let mut seen = 0;
    while let Some(row) = rows.next()? {
        seen += 1;
        if row.get::<_, bool>(1)? {
            return row.get(0).map(Some);
        }
    }
    if seen < WALK_LIMIT {
        // The walk saw every agent with a free slot.
        return Ok(None);
    }
    drop(rows);
    if labels.is_empty() {
        return first_online(tx, index, key);
    }
    by_rarest_label(tx, labels, key)
}

/// For a task without labels whose head of the routing order is all offline:
/// the rest of the walk, to its end if need be.
fn first_online(tx: &Transaction<'_>, index: &str, key: &str) -> rusqlite::Result<Option<String>> {
    let sql = format!(
        "SELECT a.id FROM agents AS a INDEXED BY {index} \
         WHERE {HAS_SLOT} AND a.status <> 'offline' ORDER BY {key}, a.id LIMIT 1"
    );
    tx.prepare_cached(&sql)?
        .query_row([], |row| row.get(0))
        .optional()
}

/// Sorts the eligible holders of the rarest label and keeps the first that
/// holds the other labels too.
fn by_rarest_label(
    tx: &Transaction<'_>,
    labels: &[&str],
    key: &str,
) -> rusqlite::Result<Option<String>> {
    let mut count = tx.prepare_cached("SELECT count(*) FROM capabilities WHERE capability = ?1")?;
    let mut ordered: Vec<(i64, &str)> = Vec::with_capacity(labels.len());
    for label in labels {
        let holders: i64 = count.query_row([label], |row| row.get(0))?;
        if holders == 0 {
            return Ok(None);
        }
        ordered.push((holders, label));
    }
    ordered.sort_unstable();
    let sql = format!(
        "SELECT a.id FROM capabilities AS driver JOIN agents AS a ON a.id = driver.agent_id \
         WHERE driver.capability = ?1 AND a.status <> 'offline' AND {HAS_SLOT} AND {holds} \
         ORDER BY {key}, a.id LIMIT 1",
        holds = holds_labels(2, labels.len() - 1),
    );
    let mut stmt = tx.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(ordered.iter().map(|(_, label)| label)))?;
    match rows.next()? {
        Some(row) => row.get(0).map(Some),
        None => Ok(None),
    }
}
