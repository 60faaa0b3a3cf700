//! All of claim's SQL: DefaultRouter's policy evaluated in the database, the
//! generic path for any other router, and taking the slot.
//!
//! [`choose`] takes the slot with one `UPDATE ... WHERE id = (SELECT ...
//! ORDER BY <routing order> LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING`: the
//! subquery walks a claim index in routing order and locks the first
//! eligible agent that no other transaction holds, so concurrent dispatchers
//! take different agents instead of queueing on the best one. Under READ
//! COMMITTED, PostgreSQL re-checks the WHERE clause on the newest version of
//! a row before it locks it, so a slot another claim just took is never
//! taken twice (and `agents_load_valid` would refuse it anyway).
//!
//! SKIP LOCKED also skips an agent that is merely being written at that
//! instant (a heartbeat, another claim of one of its many slots). When the
//! skipping walk finds nobody, the same statement runs again with a plain
//! `FOR UPDATE`, which waits for those rows and re-checks them: claim never
//! answers "no eligible agent" while a slot is free. Only that second walk
//! waits, and only when the first one found nothing.
//!
//! Under contention a claim may go to the next agent in routing order when
//! the best one is locked at that instant; alone, it always takes exactly
//! the agent [`DefaultRouter`](crate::DefaultRouter) chooses.
//!
//! Every statement is a constant, prepared once per connection: the task's
//! labels (checked, without duplicates) are bound as one `text[]`.

use postgres::types::ToSql;

use crate::agent::AgentInfo;
use crate::error::Error;
use crate::postgres::conn::{Session, Tx};
use crate::postgres::retry::Result;
use crate::postgres::row::{self, agent_columns};
use crate::route::TaskRouter;
use crate::task::{Priority, Task};

/// Agent `$t` has a free slot: term for term the WHERE clause of the claim
/// indexes.
macro_rules! has_slot {
    ($t:literal) => {
        concat!(
            $t,
            ".current_load < (CASE ",
            $t,
            ".max_load WHEN 0 THEN 4294967295 ELSE ",
            $t,
            ".max_load END)"
        )
    };
}

/// Agent `$t` may take new work: not offline, not drained.
macro_rules! online {
    ($t:literal) => {
        concat!($t, ".status <> 'offline' AND NOT ", $t, ".drained")
    };
}

/// Agent `$t` holds every label of the `text[]` parameter `$p` (whose
/// labels are distinct).
macro_rules! holds_labels {
    ($t:literal, $p:literal) => {
        concat!(
            "(SELECT count(*) FROM capabilities AS l WHERE l.agent_id = ",
            $t,
            ".id AND l.capability = ANY (",
            $p,
            "::text[])) = cardinality(",
            $p,
            "::text[])"
        )
    };
}

/// The usage key of `agents_claim_by_usage`, term for term.
macro_rules! usage {
    ($t:literal) => {
        concat!(
            "(CASE WHEN ",
            $t,
            ".max_load = 0 THEN 0.0::float8 ELSE ",
            $t,
            ".current_load::float8 / ",
            $t,
            ".max_load::float8 END)"
        )
    };
}

/// The statement that takes a slot on the first agent, in the order `$key`,
/// that has one and matches `$labels`, locking rows as `$lock` says.
macro_rules! take_first {
    ($key:expr, $labels:expr, $lock:literal) => {
        concat!(
            "UPDATE agents AS t SET current_load = t.current_load + 1 WHERE t.id = (",
            "SELECT a.id FROM agents AS a WHERE ",
            has_slot!("a"),
            " AND ",
            online!("a"),
            $labels,
            " ORDER BY ",
            $key,
            ", a.id LIMIT 1 FOR UPDATE OF a",
            $lock,
            ") RETURNING ",
            agent_columns!("t")
        )
    };
}

/// The statements of one routing order: with and without labels, skipping
/// locked rows and waiting for them.
struct Order {
    skip: &'static str,
    wait: &'static str,
    skip_labelled: &'static str,
    wait_labelled: &'static str,
}

macro_rules! order {
    ($key:expr) => {
        Order {
            skip: take_first!($key, "", " SKIP LOCKED"),
            wait: take_first!($key, "", ""),
            skip_labelled: take_first!(
                $key,
                concat!(" AND ", holds_labels!("a", "$1")),
                " SKIP LOCKED"
            ),
            wait_labelled: take_first!($key, concat!(" AND ", holds_labels!("a", "$1")), ""),
        }
    };
}

const BY_USAGE: Order = order!(usage!("a"));
const BY_LOAD: Order = order!("a.current_load");

/// Every eligible agent, for a router other than DefaultRouter.
const ELIGIBLE: &str = concat!(
    "SELECT ",
    agent_columns!("a"),
    " FROM agents AS a WHERE ",
    has_slot!("a"),
    " AND ",
    online!("a"),
    " AND (cardinality($1::text[]) = 0 OR ",
    holds_labels!("a", "$1"),
    ") ORDER BY a.id"
);

/// Takes a slot on the agent `$1` if it is still eligible for labels `$2`.
const TAKE: &str = concat!(
    "UPDATE agents AS t SET current_load = t.current_load + 1 WHERE t.id = $1 AND ",
    has_slot!("t"),
    " AND ",
    online!("t"),
    " AND (cardinality($2::text[]) = 0 OR ",
    holds_labels!("t", "$2"),
    ") RETURNING ",
    agent_columns!("t")
);

fn order(priority: Priority) -> &'static Order {
    match priority {
        Priority::Critical => &BY_LOAD,
        Priority::Low | Priority::Medium | Priority::High => &BY_USAGE,
    }
}

/// Takes a slot on the agent DefaultRouter would choose, if any, and
/// returns it with its new load.
pub(super) fn choose(
    tx: &mut Tx<'_>,
    labels: &[&str],
    priority: Priority,
) -> Result<Option<AgentInfo>> {
    let order = order(priority);
    let labelled: [&(dyn ToSql + Sync); 1] = [&labels];
    let (skip, wait, params): (_, _, &[&(dyn ToSql + Sync)]) = if labels.is_empty() {
        (order.skip, order.wait, &[])
    } else {
        (order.skip_labelled, order.wait_labelled, &labelled)
    };
    if let Some(taken) = tx.query_opt(skip, params)? {
        return Ok(Some(row::agent(&taken)?));
    }
    tx.query_opt(wait, params)?
        .as_ref()
        .map(row::agent)
        .transpose()
}

/// What the generic path of claim came to.
pub(super) enum Routed {
    /// The slot was taken on this agent.
    Taken(AgentInfo),
    /// No agent is eligible.
    Nobody,
    /// The router's choice stopped being eligible before its slot could be
    /// taken: read again.
    Lost,
}

/// Reads the eligible agents, asks `router`, and takes a slot on its choice
/// if that agent is still eligible, all in the transaction `tx`.
pub(super) fn route(
    tx: &mut Tx<'_>,
    router: &dyn TaskRouter,
    task: &Task,
    labels: &[&str],
) -> Result<Routed> {
    let eligible = row::agents(&tx.query(ELIGIBLE, &[&labels])?)?;
    if eligible.is_empty() {
        return Ok(Routed::Nobody);
    }
    let id = match router.route(task, &eligible) {
        Ok(id) => id,
        Err(Error::NoEligibleAgent) => return Ok(Routed::Nobody),
        Err(other) => return Err(other.into()),
    };
    if !eligible.iter().any(|agent| agent.id == id) {
        return Err(Error::invalid(
            "router",
            format!("the router chose {id:?}, which is not an eligible agent for the task"),
        )
        .into());
    }
    match tx.query_opt(TAKE, &[&id, &labels])? {
        Some(taken) => Ok(Routed::Taken(row::agent(&taken)?)),
        None => Ok(Routed::Lost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_walk_uses_the_index_terms() {
        for order in [&BY_USAGE, &BY_LOAD] {
            for sql in [
                order.skip,
                order.wait,
                order.skip_labelled,
                order.wait_labelled,
            ] {
                assert!(sql.contains(has_slot!("a")), "{sql}");
                assert!(sql.contains("FOR UPDATE OF a"), "{sql}");
            }
            assert!(order.skip.ends_with(agent_columns!("t")));
            assert!(order.skip.contains("SKIP LOCKED") && !order.wait.contains("SKIP LOCKED"));
        }
        assert!(BY_USAGE.skip.contains(usage!("a")));
    }
}
