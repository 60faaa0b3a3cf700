//! All of claim's SQL: DefaultRouter's policy evaluated in the database, the
//! generic path for any other router, and taking the slot.
//!
//! Every statement is a constant, prepared once per connection: the task's
//! labels are bound as one parameter (`?1`), an array read with rusqlite's
//! `rarray` table-valued function (registered on every connection by
//! `conn::configure`). An agent holds the labels when no label lacks its row
//! in the capability index: the test stops at the first missing label and
//! costs per agent what one `EXISTS` per label did when the statement was
//! built per task. Binding the labels as a JSON array read with `json_each`
//! cost a claim 2 to 12 % more: JSON is parsed again for every agent the
//! test looks at, or copied into a temporary table once, and a count of the
//! agent's matching capabilities cannot stop early.
//!
//! The indexes of migration 0002 hold the agents with a free slot in routing
//! order (offline ones too: status is checked per row, see the migration).
//! [`choose`] first walks the head of that order and takes the first agent
//! that is online and holds every label: for labels that many agents share it
//! stops after a few rows. When the head holds no match, it asks the
//! capability index for the holders of the rarest label and sorts only those.
//! Either way no more than one agent leaves the database.

use std::rc::Rc;

use rusqlite::types::Value;
use rusqlite::vtab::array::Array;
use rusqlite::{Connection, OptionalExtension, params};

use crate::agent::AgentInfo;
use crate::error::Error;
use crate::route::TaskRouter;
use crate::sqlite::retry::Result;
use crate::sqlite::row::{query_agents, select_agents, text};
use crate::task::{Priority, Task};

/// How many agents with a free slot, in routing order, the first step looks
/// at before it switches to the holders of the rarest label: one number for
/// the SQL (`walk_limit!`) and for the code that reads the walk.
macro_rules! walk_limit {
    () => {
        "256"
    };
}
const WALK_LIMIT: usize = 256;

/// The condition that defines an agent with a free slot; must stay
/// identical, term for term, to the WHERE clause of the claim indexes.
macro_rules! has_slot {
    () => {
        "a.current_load < (CASE a.max_load WHEN 0 THEN 4294967295 ELSE a.max_load END)"
    };
}

/// Agent `a` holds every label of the array `?1` (true when it is empty).
macro_rules! holds_labels {
    () => {
        "NOT EXISTS (SELECT 1 FROM rarray(?1) AS l WHERE NOT EXISTS \
         (SELECT 1 FROM capabilities AS c WHERE c.capability = l.value AND c.agent_id = a.id))"
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
                ", a.id LIMIT ",
                walk_limit!()
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
                 WHERE driver.capability = ?2 AND a.status <> 'offline' AND a.drained = 0 AND ",
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
     FROM rarray(?1) AS l ORDER BY holders, l.value LIMIT 1";

/// Every eligible agent, for a router other than DefaultRouter.
/// The conditions are the walk's (the labels' subquery names its own
/// `capabilities AS c`, which hides the joined one inside it).
const ELIGIBLE: &str = select_agents!(
    "WHERE a.status <> 'offline' AND a.drained = 0 AND ",
    has_slot!(),
    " AND ",
    holds_labels!(),
    " ORDER BY a.id, c.position"
);

fn order(priority: Priority) -> &'static Order {
    match priority {
        Priority::Critical => &BY_LOAD,
        Priority::Low | Priority::Medium | Priority::High => &BY_USAGE,
    }
}

/// The labels as the statements bind them: one array for `rarray(?1)`.
fn bind(labels: &[&str]) -> Array {
    Rc::new(
        labels
            .iter()
            .map(|label| Value::Text((*label).to_owned()))
            .collect(),
    )
}

/// The id of the agent DefaultRouter would choose, if any.
pub(super) fn choose(
    tx: &Connection,
    labels: &[&str],
    priority: Priority,
) -> Result<Option<String>> {
    let order = order(priority);
    let bound = bind(labels);
    let mut stmt = tx.prepare_cached(order.walk)?;
    let mut rows = stmt.query([&bound])?;
    let mut seen = 0;
    while let Some(row) = rows.next()? {
        seen += 1;
        if row.get::<_, bool>(1)? {
            return Ok(Some(agent_id(row)?));
        }
    }
    if seen < WALK_LIMIT {
        // The walk saw every agent with a free slot.
        return Ok(None);
    }
    drop(rows);
    if labels.is_empty() {
        // The head of the order is all offline: the rest of the walk.
        return tx
            .prepare_cached(order.first_online)?
            .query_row([], |row| Ok(agent_id(row)))
            .optional()?
            .transpose();
    }
    let rarest: Option<(String, i64)> = tx
        .prepare_cached(RAREST_LABEL)?
        .query_row([&bound], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let Some((rarest, holders)) = rarest else {
        return Ok(None);
    };
    if holders == 0 {
        return Ok(None);
    }
    tx.prepare_cached(order.by_rarest_label)?
        .query_row(params![bound, rarest], |row| Ok(agent_id(row)))
        .optional()?
        .transpose()
}

/// The agent id in the first column of a walk's row: `Unreadable`, naming
/// the agent, when it is not UTF-8.
fn agent_id(row: &rusqlite::Row<'_>) -> Result<String> {
    text(row, 0, "agents").map(str::to_owned)
}

/// The id `router` chooses among the eligible agents, read in one statement
/// inside the claim's transaction.
pub(super) fn route(
    tx: &Connection,
    router: &dyn TaskRouter,
    task: &Task,
    labels: &[&str],
) -> Result<Option<String>> {
    let mut stmt = tx.prepare_cached(ELIGIBLE)?;
    let eligible: Vec<AgentInfo> = query_agents(&mut stmt, [bind(labels)])?;
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use chrono::Utc;

    use crate::agent::{AgentInfo, AgentStatus};
    use crate::error::{Error, Result};
    use crate::registry::AgentRegistry;
    use crate::route::TaskRouter;
    use crate::sqlite::SqliteOptions;
    use crate::task::{Priority, Task};

    /// The walk's SQL stops where `choose` expects it to: the two spell the
    /// same number.
    #[test]
    fn the_walk_limit_is_the_one_the_sql_uses() {
        for walk in [super::BY_USAGE.walk, super::BY_LOAD.walk] {
            assert!(
                walk.ends_with(&format!("LIMIT {}", super::WALK_LIMIT)),
                "{walk}"
            );
        }
    }

    /// A router that records the ids it is offered and picks the last.
    #[derive(Clone, Default)]
    struct Recording(Arc<Mutex<Vec<Vec<String>>>>);

    impl TaskRouter for Recording {
        fn route(&self, _task: &Task, agents: &[AgentInfo]) -> Result<String> {
            let ids: Vec<String> = agents.iter().map(|a| a.id.clone()).collect();
            let last = ids.last().cloned().ok_or(Error::NoEligibleAgent)?;
            self.0.lock().expect("lock").push(ids);
            Ok(last)
        }
    }

    fn agent(
        id: &str,
        capabilities: &[&str],
        status: AgentStatus,
        load: u32,
        max: u32,
    ) -> AgentInfo {
        AgentInfo {
            id: id.to_owned(),
            name: String::new(),
            capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
            status,
            last_heartbeat: Utc::now(),
            current_load: load,
            max_load: max,
            ..AgentInfo::default()
        }
    }

    #[test]
    fn a_custom_router_is_offered_exactly_the_eligible_agents() -> Result<()> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let router = Recording::default();
        let registry = SqliteOptions::new()
            .router(router.clone())
            .open(dir.path().join("agents.db"))?;
        for agent in [
            agent("a", &["x", "y"], AgentStatus::Available, 0, 2),
            agent("b", &["x"], AgentStatus::Available, 0, 0),
            agent("c", &["y", "z", "x"], AgentStatus::Busy, 1, 3),
            agent("d", &["x", "y"], AgentStatus::Offline, 0, 0),
            agent("e", &["x", "y"], AgentStatus::Available, 2, 2),
            agent("f", &["y", "x"], AgentStatus::Available, 7, 0),
        ] {
            registry.register(agent)?;
        }
        let cases: [(&[&str], &[&str]); 5] = [
            (&["x", "y"], &["a", "c", "f"]),
            (&["y", "x", "y"], &["a", "c", "f"]),
            (&["x"], &["a", "b", "c", "f"]),
            (&[], &["a", "b", "c", "f"]),
            (&["z", "x"], &["c"]),
        ];
        for (labels, offered) in cases {
            let task = Task {
                id: "t".to_owned(),
                labels: labels.iter().map(|l| (*l).to_owned()).collect(),
                priority: Priority::Medium,
            };
            let claimed = registry.claim(&task, None)?;
            registry.release(&claimed.claim.task_id, None)?;
            let seen = router.0.lock().expect("lock").pop().unwrap_or_default();
            assert_eq!(seen, offered, "labels {labels:?}");
            assert_eq!(Some(claimed.agent.id.as_str()), offered.last().copied());
        }
        // Nobody holds w: the router is not asked.
        let task = Task {
            id: "t".to_owned(),
            labels: vec!["x".to_owned(), "w".to_owned()],
            priority: Priority::Critical,
        };
        assert!(matches!(
            registry.claim(&task, None),
            Err(Error::NoEligibleAgent)
        ));
        assert!(router.0.lock().expect("lock").is_empty());
        Ok(())
    }
}
