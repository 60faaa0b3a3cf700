//! All of claim's SQL: DefaultRouter's policy evaluated in the database, the
//! generic path for any other router, and recording the claim.
//!
//! [`choose`] claims in one statement: a CTE picks the agent with `SELECT
//! ... ORDER BY <routing order> LIMIT 1 FOR UPDATE SKIP LOCKED`, walking a
//! claim index in routing order and locking the first eligible agent that no
//! other transaction holds, so concurrent dispatchers take different agents
//! instead of queueing on the best one; a second CTE inserts the claim on
//! it, and the schema's triggers take the slot and the token, or refuse a
//! held task with a unique violation before it costs a token. Under READ COMMITTED, PostgreSQL re-checks the
//! WHERE clause on the newest version of a row before it locks it, so a slot
//! another claim just took is never taken twice (and `agents_load_valid`
//! would refuse it anyway). The agent comes back as it was locked, with the
//! one slot the trigger added: nobody can change it between the lock and the
//! end of the statement.
//!
//! SKIP LOCKED also skips an agent that is merely being written at that
//! instant (a heartbeat, another claim of one of its many slots). When the
//! skipping statement claims nothing, claim first asks whether the task is
//! held (then it is refused as already claimed, even when no agent is
//! free), and otherwise reads the first eligible agent in routing order
//! without a lock and claims it with a waiting `FOR UPDATE` of that one row
//! ([`TAKE`]), which re-checks it once it has it; when it stopped being
//! eligible meanwhile, the claim starts again ([`Failure::Lost`]). So claim
//! never answers "no eligible agent" while a slot is free, waits only when
//! the first statement found nothing, and waits holding no other agent's
//! row (a waiting walk keeps the lock of every row that failed its
//! re-check, and a recover or a reap waiting for one of them would close a
//! cycle).
//!
//! Under contention a claim may go to the next agent in routing order when
//! the best one is locked at that instant; alone, it always takes exactly
//! the agent [`DefaultRouter`](crate::DefaultRouter) chooses.
//!
//! Every statement is a constant, prepared once per connection: the task id
//! is `$1`, the lease in microseconds (or NULL) `$2`, the task's labels
//! (checked, without duplicates) one `text[]`.

use postgres::types::ToSql;

use crate::claim::{Claim, Claimed};
use crate::error::Error;
use crate::memory::already_claimed;
use crate::postgres::conn::{Session, Tx};
use crate::postgres::retry::{Failure, Result, is_unique_violation};
use crate::postgres::row::{self, agent_columns, claim_columns};
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

/// The locked agent's columns in the `chosen` CTE, named as
/// [`agent_columns!`] reads them, with the slot the claim's trigger adds.
macro_rules! locked_agent {
    () => {
        "SELECT a.id, a.name, a.status, a.last_heartbeat, a.current_load + 1 AS current_load, \
         a.max_load, a.drained, a.host, a.pid, a.started_at FROM agents AS a WHERE "
    };
}

/// The statement that records a claim of task `$1` with the lease `$2` (in
/// microseconds, or NULL) on the agent the CTE `chosen` picks and locks
/// (`$picked`: a `WHERE` clause and what follows it), returning the agent
/// (as [`agent_columns!`], after taking the slot) and then the claim (as
/// [`claim_columns!`]). Nothing when `chosen` is empty; a unique violation
/// (SQLSTATE 23505, from the schema's trigger) when the task is held.
macro_rules! record {
    ($picked:expr) => {
        concat!(
            "WITH chosen AS (",
            locked_agent!(),
            $picked,
            "), taken AS (INSERT INTO claims (task_id, agent_id, claimed_at, lease_expires_at) \
             SELECT $1::text, chosen.id, now(), now() + $2::bigint * interval '1 microsecond' \
             FROM chosen RETURNING ",
            claim_columns!("claims"),
            ") SELECT ",
            agent_columns!("chosen"),
            ", ",
            claim_columns!("taken"),
            " FROM taken JOIN chosen ON chosen.id = taken.agent_id"
        )
    };
}

/// The claim on the first agent, in the order `$key`, that has a slot and
/// matches `$labels`, locking rows as `$lock` says.
macro_rules! take_first {
    ($key:expr, $labels:expr, $lock:literal) => {
        record!(concat!(
            has_slot!("a"),
            " AND ",
            online!("a"),
            $labels,
            " ORDER BY ",
            $key,
            ", a.id LIMIT 1 FOR UPDATE OF a",
            $lock
        ))
    };
}

/// The statements of one routing order: the claim on the first agent not
/// locked, with and without labels, and the first eligible agent's id,
/// read without a lock (labels `$1`, none when empty).
struct Order {
    skip: &'static str,
    skip_labelled: &'static str,
    first: &'static str,
}

macro_rules! order {
    ($key:expr) => {
        Order {
            skip: take_first!($key, "", " SKIP LOCKED"),
            skip_labelled: take_first!(
                $key,
                concat!(" AND ", holds_labels!("a", "$3")),
                " SKIP LOCKED"
            ),
            first: concat!(
                "SELECT a.id FROM agents AS a WHERE ",
                has_slot!("a"),
                " AND ",
                online!("a"),
                " AND (cardinality($1::text[]) = 0 OR ",
                holds_labels!("a", "$1"),
                ") ORDER BY ",
                $key,
                ", a.id LIMIT 1"
            ),
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

/// The claim on agent `$3` if it is still eligible for labels `$4`.
const TAKE: &str = record!(concat!(
    "a.id = $3::text AND ",
    has_slot!("a"),
    " AND ",
    online!("a"),
    " AND (cardinality($4::text[]) = 0 OR ",
    holds_labels!("a", "$4"),
    ") FOR UPDATE OF a"
));

/// The claim holding task `$1`.
const HELD: &str = concat!(
    "SELECT ",
    claim_columns!("c"),
    " FROM claims AS c WHERE c.task_id = $1"
);

fn order(priority: Priority) -> &'static Order {
    match priority {
        Priority::Critical => &BY_LOAD,
        Priority::Low | Priority::Medium | Priority::High => &BY_USAGE,
    }
}

/// The agent and the claim of a row of [`record!`].
fn claimed(row: &postgres::Row) -> Result<Claimed> {
    Ok(Claimed {
        agent: row::agent(row)?,
        claim: row::claim(row, row::AGENT_COLUMNS)?,
    })
}

/// The claim holding `task_id`, if any.
pub(super) fn held(session: &mut impl Session, task_id: &str) -> Result<Option<Claim>> {
    session
        .query_opt(HELD, &[&task_id])?
        .map(|row| row::claim(&row, 0))
        .transpose()
}

/// What a claim is asked for: the task id (checked, or generated), the
/// lease in microseconds, the labels (checked, without duplicates).
pub(super) struct Request<'a> {
    pub(super) task_id: &'a str,
    pub(super) lease_micros: Option<i64>,
    pub(super) labels: &'a [&'a str],
}

/// Claims the task on the agent DefaultRouter would choose, in autocommit
/// statements on `session`.
///
/// # Errors
///
/// [`Error::AlreadyClaimed`] when the task is held,
/// [`Error::NoEligibleAgent`] when no agent can take it.
pub(super) fn choose(
    session: &mut impl Session,
    request: &Request<'_>,
    priority: Priority,
) -> Result<Claimed> {
    let order = order(priority);
    let labelled: [&(dyn ToSql + Sync); 3] =
        [&request.task_id, &request.lease_micros, &request.labels];
    let (skip, params): (_, &[&(dyn ToSql + Sync)]) = if request.labels.is_empty() {
        (order.skip, &labelled[..2])
    } else {
        (order.skip_labelled, &labelled)
    };
    if let Some(row) = record(session, request.task_id, skip, params)? {
        return claimed(&row);
    }
    if let Some(holder) = held(session, request.task_id)? {
        return Err(already_claimed(&holder).into());
    }
    // Every eligible agent was locked at that instant: wait for the first
    // one, and for it alone. A walk with a waiting FOR UPDATE would keep
    // the lock of each row that stopped being eligible while it waited,
    // and wait for the next one holding it: a recover or a reap that
    // waits for that row would close a cycle.
    if let Some(first) = session.query_opt(order.first, &[&request.labels])? {
        let id: String = first.try_get(0)?;
        let take: [&(dyn ToSql + Sync); 4] = [
            &request.task_id,
            &request.lease_micros,
            &id,
            &request.labels,
        ];
        return match record(session, request.task_id, TAKE, &take)? {
            Some(row) => claimed(&row),
            // It changed while we waited: choose again from the start.
            None => Err(Failure::Lost),
        };
    }
    // A claim of the same task may have won the race in between.
    match held(session, request.task_id)? {
        Some(holder) => Err(already_claimed(&holder).into()),
        None => Err(Error::NoEligibleAgent.into()),
    }
}

/// Runs one statement of [`record!`]: its row, if it claimed; the
/// [`Error::AlreadyClaimed`] of the holder if the task is held; a lost race
/// if it was held and is no longer.
fn record(
    session: &mut impl Session,
    task_id: &str,
    sql: &'static str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<postgres::Row>> {
    match session.query_opt(sql, params) {
        Err(e) if is_unique_violation(&e) => match held(session, task_id)? {
            Some(holder) => Err(already_claimed(&holder).into()),
            None => Err(Failure::Lost),
        },
        other => Ok(other?),
    }
}

/// Refuses a held task, reads the eligible agents, asks `router`, and
/// records the claim on its choice, all in the transaction `tx`.
///
/// # Errors
///
/// [`Error::AlreadyClaimed`] when the task is held,
/// [`Error::NoEligibleAgent`] when no agent can take it, and
/// [`Error::Invalid`] for a router that chooses an agent that is not
/// eligible. [`Failure::Lost`] when the router's choice stopped being
/// eligible, or another claim took the task, before the claim could be
/// recorded: the caller reads again in a new transaction.
pub(super) fn route(
    tx: &mut Tx<'_>,
    router: &dyn TaskRouter,
    task: &Task,
    request: &Request<'_>,
) -> Result<Claimed> {
    if let Some(holder) = held(tx, request.task_id)? {
        return Err(already_claimed(&holder).into());
    }
    let eligible = row::agents(&tx.query(ELIGIBLE, &[&request.labels])?)?;
    if eligible.is_empty() {
        return Err(Error::NoEligibleAgent.into());
    }
    let id = router.route(task, &eligible)?;
    if !eligible.iter().any(|agent| agent.id == id) {
        return Err(Error::invalid(
            "router",
            format!("the router chose {id:?}, which is not an eligible agent for the task"),
        )
        .into());
    }
    let params: [&(dyn ToSql + Sync); 4] = [
        &request.task_id,
        &request.lease_micros,
        &id,
        &request.labels,
    ];
    match tx.query_opt(TAKE, &params) {
        Ok(Some(row)) => claimed(&row),
        // The transaction is rolled back; the next one sees why.
        Ok(None) => Err(Failure::Lost),
        Err(e) if is_unique_violation(&e) => Err(Failure::Lost),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_walk_uses_the_index_terms() {
        for order in [&BY_USAGE, &BY_LOAD] {
            for sql in [order.skip, order.skip_labelled] {
                assert!(sql.contains(has_slot!("a")), "{sql}");
                assert!(sql.contains("FOR UPDATE OF a SKIP LOCKED"), "{sql}");
            }
            assert!(order.first.contains(has_slot!("a")), "{}", order.first);
            assert!(!order.first.contains("FOR UPDATE"), "{}", order.first);
        }
        assert!(BY_USAGE.skip.contains(usage!("a")) && BY_USAGE.first.contains(usage!("a")));
        assert!(TAKE.contains("FOR UPDATE OF a") && !TAKE.contains("SKIP LOCKED"));
    }
}
