//! The change feed on PostgreSQL: reading `events` by cursor in an order
//! that is safe against transactions still in flight, and watching with
//! LISTEN/NOTIFY.
//!
//! `seq` comes from a sequence, so numbers are taken in insert order and a
//! rolled-back transaction leaves a hole. Every event row is written by a
//! subtransaction whose id is assigned after its number was taken, so any
//! transaction that could still commit a lower number has a smaller id than
//! the row's `xmin`. An event is *settled* once its `xmin` precedes the
//! snapshot's `xmin` (every transaction below it has ended; compared with
//! `age`, which copes with wrap-around and frozen rows): no number below it
//! can still appear. A read delivers events in `seq` order and goes past a
//! missing number only when the event after it is settled.

use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;

use crate::error::Error;
use crate::event::{Event, EventKind};
use crate::postgres::PostgresRegistry;
use crate::postgres::conn::{Conn, Session, Tx};
use crate::postgres::retry::{Failure, Result};
use crate::postgres::schema;
use crate::text::escape_bytes;

/// Listens to `roster_events`, the channel the events trigger notifies
/// (payload: the schema's name).
const LISTEN: &str = "LISTEN roster_events";

/// The `application_name` of a watcher's connection, as `pg_stat_activity`
/// shows it.
pub(crate) const APPLICATION: &str = "roster watch";

/// The longest a watcher waits without reading again: a transaction that
/// rolls back notifies nobody, yet may settle the events after its hole.
const ASK: Duration = Duration::from_millis(100);

/// How many of the newest events [`newest`] looks at for a settled one
/// before it walks from the oldest kept event instead.
const TOP: i64 = 1000;

const PRUNED: &str = "SELECT value FROM settings WHERE name = 'pruned_through'";

const PAGE: &str = "SELECT seq, at, kind, agent_id, task_id, status, reason, token, \
     age(xmin) > age((pg_snapshot_xmin(pg_current_snapshot())::text::bigint & 4294967295)::text::xid) \
     FROM events WHERE seq > $1 ORDER BY seq LIMIT $2";

const NEWEST_SETTLED: &str = "SELECT seq, age(xmin) > age((pg_snapshot_xmin(pg_current_snapshot())::text::bigint & 4294967295)::text::xid) \
     FROM events ORDER BY seq DESC LIMIT $1";

const FROM_PRUNED: &str = "SELECT seq, age(xmin) > age((pg_snapshot_xmin(pg_current_snapshot())::text::bigint & 4294967295)::text::xid) \
     FROM events WHERE seq > $1 ORDER BY seq";

const OLDEST: &str = "SELECT min(seq) FROM events WHERE seq > $1";

/// A read-only transaction with one snapshot for all its statements.
fn snapshot(conn: &mut Conn) -> Result<Tx<'_>> {
    let mut tx = conn.transaction()?;
    tx.execute(
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        &[],
    )?;
    Ok(tx)
}

fn pruned(tx: &mut Tx<'_>) -> Result<i64> {
    Ok(tx
        .query_opt(PRUNED, &[])?
        .map_or(Ok(0), |row| row.try_get(0))?)
}

/// The newest cursor a reader may stand on: every event up to it is
/// delivered, and none can still appear below it.
pub(super) fn newest(tx: &mut Tx<'_>) -> Result<u64> {
    let pruned = pruned(tx)?;
    let top = tx.query(NEWEST_SETTLED, &[&TOP])?;
    let mut rows: Vec<(i64, bool)> = Vec::with_capacity(top.len());
    let mut base = None;
    for row in &top {
        let seq: i64 = row.try_get(0)?;
        let settled: bool = row.try_get(1)?;
        if settled {
            base = Some(seq);
            break;
        }
        rows.push((seq, settled));
    }
    let (mut newest, above) = match base {
        Some(base) => {
            rows.reverse();
            (base, rows)
        }
        None if top.len() < usize::try_from(TOP).unwrap_or(usize::MAX) => {
            rows.reverse();
            (pruned, rows)
        }
        None => {
            let all = tx.query(FROM_PRUNED, &[&pruned])?;
            let rows = all
                .iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect::<Result<Vec<(i64, bool)>>>()?;
            (pruned, rows)
        }
    };
    for (seq, settled) in above {
        if seq == newest + 1 || settled {
            newest = seq;
        } else {
            break;
        }
    }
    Ok(u64::try_from(newest.max(pruned)).unwrap_or(0))
}

/// The events after `after`, at most `limit`.
pub(super) fn read(conn: &mut Conn, after: u64, limit: usize) -> Result<Vec<Event>> {
    let mut tx = snapshot(conn)?;
    let page = page(&mut tx, after, limit)?;
    tx.commit()?;
    Ok(page)
}

fn page(tx: &mut Tx<'_>, after: u64, limit: usize) -> Result<Vec<Event>> {
    let from = i64::try_from(after).unwrap_or(i64::MAX);
    let pruned = pruned(tx)?;
    if from < pruned {
        let oldest: Option<i64> = tx
            .query_opt(OLDEST, &[&pruned])?
            .map_or(Ok(None), |row| row.try_get(0))?;
        return Err(Error::CursorTooOld {
            cursor: after,
            oldest: u64::try_from(oldest.unwrap_or(pruned + 1)).unwrap_or(0),
        }
        .into());
    }
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = tx.query(PAGE, &[&from, &limit])?;
    let mut page: Vec<Event> = Vec::with_capacity(rows.len());
    let mut last = from;
    for row in &rows {
        let seq: i64 = row.try_get(0)?;
        let settled: bool = row.try_get(8)?;
        if seq != last + 1 && !settled {
            // A number below it may belong to a transaction still running.
            break;
        }
        page.push(event(row)?);
        last = seq;
    }
    if page.is_empty() {
        let newest = newest(tx)?;
        if after > newest {
            return Err(Error::CursorAhead {
                cursor: after,
                newest,
            }
            .into());
        }
    }
    Ok(page)
}

/// Waits for events after `after` on a connection of its own that LISTENs
/// to the events trigger's notifications; reads again on every wake-up, at
/// least every [`ASK`], and after reconnecting when the connection is lost.
///
/// The listening connection outlives the call: it is kept in the registry
/// for the next `watch` (a caller that watches in a loop connects once), and
/// it stops listening (`UNLISTEN`) when the call returns and listens again
/// when the next call starts: a kept session that nobody reads must not hold
/// the server's notification queue back, which every `NOTIFY` of every
/// writer shares. Calls at the same time from several threads each use a
/// connection of their own; one is kept.
pub(super) fn watch(
    registry: &PostgresRegistry,
    after: u64,
    limit: usize,
    timeout: Duration,
) -> crate::Result<Vec<Event>> {
    // A kept session that cannot listen again is dropped: `watch_on`
    // connects a new one.
    let mut conn = registry
        .listener
        .lock()
        .ok()
        .and_then(|mut kept| kept.take())
        .and_then(|mut conn| conn.client.batch_execute(LISTEN).is_ok().then_some(conn));
    let result = watch_on(&mut conn, registry, after, limit, timeout);
    if let Some(mut conn) = conn.filter(|conn| !conn.client.is_closed())
        && conn.client.batch_execute("UNLISTEN *").is_ok()
        && let Ok(mut kept) = registry.listener.lock()
    {
        // Whatever arrived before the UNLISTEN is stale: the next call
        // reads after it listens again.
        let _ = conn.client.notifications().iter().count();
        kept.get_or_insert(conn);
    }
    result
}

/// [`watch`] on `conn`, the listening connection (none: connect one).
fn watch_on(
    conn: &mut Option<Conn>,
    registry: &PostgresRegistry,
    after: u64,
    limit: usize,
    timeout: Duration,
) -> crate::Result<Vec<Event>> {
    let limits = registry.limits();
    let deadline = Instant::now().checked_add(timeout);
    loop {
        let left = |now: Instant| match deadline {
            Some(deadline) => deadline.saturating_duration_since(now),
            None => ASK,
        };
        let listening = match conn.as_mut() {
            Some(conn) => conn,
            None => {
                let mut client = schema::connect(&registry.target, &registry.options)?;
                if let Err(e) = client
                    .batch_execute(&format!("SET application_name = '{APPLICATION}'; {LISTEN}"))
                {
                    if lost(&client, &e) && !left(Instant::now()).is_zero() {
                        // Ended before it listened: connect again.
                        continue;
                    }
                    return Err(crate::postgres::retry::classify(e, limits));
                }
                conn.insert(Conn::new(client))
            }
        };
        // LISTEN comes before the read, so no commit falls between the read
        // and the wait.
        match read(listening, after, limit) {
            Ok(page) if !page.is_empty() => return Ok(page),
            Ok(_) => {}
            Err(Failure::Pg(e)) if lost(&listening.client, &e) => {
                *conn = None;
                if left(Instant::now()).is_zero() {
                    return Err(crate::postgres::retry::classify(e, limits));
                }
                continue;
            }
            Err(e) => return Err(e.into_error(limits)),
        }
        let wait = left(Instant::now());
        if wait.is_zero() {
            return Ok(Vec::new());
        }
        let woken = listening
            .client
            .notifications()
            .timeout_iter(wait.min(ASK))
            .next();
        if woken.is_err() {
            // Lost: reconnect, LISTEN again and re-read.
            *conn = None;
        }
        // Drain what else came; the read that follows sees it all.
        if let Some(listening) = conn.as_mut() {
            let _ = listening.client.notifications().iter().count();
        }
    }
}

/// Whether `error` means the connection is gone (closed, or ended by the
/// server): the watcher then connects again and reads again.
fn lost(client: &postgres::Client, error: &postgres::Error) -> bool {
    client.is_closed()
        || error.is_closed()
        || error.code() == Some(&postgres::error::SqlState::ADMIN_SHUTDOWN)
}

/// One row of `events` (the columns of [`PAGE`]).
fn event(row: &postgres::Row) -> Result<Event> {
    let seq: i64 = row.try_get(0)?;
    let unreadable = |column: &'static str, reason: String| {
        Failure::Roster(Error::Unreadable {
            table: "events",
            id: seq.to_string(),
            column,
            reason,
        })
    };
    let seq = u64::try_from(seq).map_err(|_| unreadable("seq", format!("{seq} is negative")))?;
    let at = row
        .try_get(1)
        .map_err(|e| unreadable("at", e.to_string()))?;
    let kind: &str = row.try_get(2)?;
    let kind = EventKind::parse(kind).ok_or_else(|| {
        unreadable(
            "kind",
            format!("unknown kind {:?}", escape_bytes(kind.as_bytes())),
        )
    })?;
    let agent_id: &str = row.try_get(3)?;
    let mut event = Event::new(seq, at, kind, agent_id);
    event.task_id = row.try_get::<_, Option<String>>(4)?;
    if let Some(status) = row.try_get::<_, Option<&str>>(5)? {
        event.status = Some(
            status
                .parse()
                .map_err(|_| unreadable("status", format!("unknown status {status:?}")))?,
        );
    }
    if let Some(reason) = row.try_get::<_, Option<&str>>(6)? {
        event.reason = Some(
            crate::claim::RecoverReason::parse(reason)
                .ok_or_else(|| unreadable("reason", format!("unknown reason {reason:?}")))?,
        );
    }
    if let Some(token) = row.try_get::<_, Option<i64>>(7)? {
        event.token = Some(
            u64::try_from(token)
                .map_err(|_| unreadable("token", format!("{token} is negative")))?,
        );
    }
    Ok(event)
}
