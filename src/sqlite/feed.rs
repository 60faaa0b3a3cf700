//! The change feed on SQLite: reading the `events` table by cursor, and
//! watching for commits of other connections: a `stat` of the `-wal` file
//! every 1 to 4 ms says something may have changed, `PRAGMA data_version`
//! (asked then, and at least every 20 ms) says whether it did.

use std::thread;
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Row};

use crate::error::Error;
use crate::event::{Event, EventKind};
use crate::sqlite::SqliteRegistry;
use crate::sqlite::conn::{self, Settings};
use crate::sqlite::retry::{Failure, Result, classify};
use crate::sqlite::row::decode_time;
use crate::text::escape_bytes;

/// How often a watcher looks whether the file changed, a `stat` of the
/// `-wal` file (every commit writes to it): every [`POLL_BUSY`] for
/// [`BUSY_SPELL`] after the call began (a watcher that just got events is
/// back at once), every [`POLL_IDLE`] after that. Each look wakes the
/// thread, about 20 us of CPU on a small virtual machine: an idle `roster
/// watch` measured 0.63 % of a core (BENCHMARKS.md, "Change feed").
const POLL_BUSY: Duration = Duration::from_millis(1);
const POLL_IDLE: Duration = Duration::from_millis(4);
const BUSY_SPELL: Duration = Duration::from_millis(250);

/// How often an idle watcher asks SQLite itself (`PRAGMA data_version`,
/// which takes the file locks: tens of microseconds), whatever `stat` says:
/// the truth, in case a commit left the `-wal` file's size and time alike.
const ASK: Duration = Duration::from_millis(20);

/// The `-wal` file's size and modification time: what changes when another
/// connection commits.
fn wal_stamp(wal: &std::path::Path) -> Option<(u64, std::time::SystemTime)> {
    let meta = std::fs::metadata(wal).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// The newest event's cursor: the counter the events trigger keeps.
pub(super) fn newest(conn: &Connection) -> Result<u64> {
    let newest: i64 = conn
        .prepare_cached("SELECT value FROM counters WHERE name = 'event_seq'")?
        .query_row([], |row| row.get(0))?;
    Ok(u64::try_from(newest).unwrap_or(0))
}

/// The events after `after`, at most `limit`, stopping before any gap (the
/// next read then reports it). Runs inside the caller's read transaction.
pub(super) fn read(conn: &Connection, after: u64, limit: usize) -> Result<Vec<Event>> {
    let newest = newest(conn)?;
    if after > newest {
        return Err(Error::CursorAhead {
            cursor: after,
            newest,
        }
        .into());
    }
    let mut stmt = conn.prepare_cached(
        "SELECT seq, at, kind, agent_id, task_id, status, reason, token
         FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let from = i64::try_from(after).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = stmt.query([from, limit])?;
    let mut page: Vec<Event> = Vec::new();
    while let Some(row) = rows.next()? {
        let event = event(row)?;
        let expected = page.last().map_or(after, |last| last.seq) + 1;
        if event.seq != expected {
            if page.is_empty() {
                return Err(Error::CursorTooOld {
                    cursor: after,
                    oldest: event.seq,
                }
                .into());
            }
            // A gap inside the page: deliver what comes before it.
            break;
        }
        page.push(event);
    }
    if page.is_empty() && after < newest {
        // Every event after the cursor is gone.
        return Err(Error::CursorTooOld {
            cursor: after,
            oldest: newest + 1,
        }
        .into());
    }
    Ok(page)
}

/// Waits for events after `after` on a connection of its own: a `stat` of
/// the `-wal` file says something may have changed, `PRAGMA data_version`
/// (which changes when another connection commits) whether it did.
pub(super) fn watch(
    registry: &SqliteRegistry,
    after: u64,
    limit: usize,
    timeout: Duration,
) -> crate::Result<Vec<Event>> {
    let busy = registry.busy_timeout;
    let settings = Settings::of(&registry.options);
    let mut conn = conn::open(registry.path(), OpenFlags::SQLITE_OPEN_READ_WRITE, settings)
        .map_err(|e| classify(e, busy))?;
    // A watcher that looks while a writer commits meets its locks: the
    // pool's short pauses, not SQLite's 1, 2, 5, 10 ms steps, each read
    // bounded by the registry's busy timeout.
    conn.busy_handler(Some(conn::wait_for_lock))
        .map_err(|e| classify(e, busy))?;
    let started = Instant::now();
    let deadline = started.checked_add(timeout);
    let mut wal = registry.path().as_os_str().to_owned();
    wal.push("-wal");
    let wal = std::path::PathBuf::from(wal);
    loop {
        let stamp = wal_stamp(&wal);
        let version = data_version(&conn, busy).map_err(|e| classify(e, busy))?;
        let page = read_once(&mut conn, after, limit, busy).map_err(|e| e.into_error(busy))?;
        if !page.is_empty() {
            return Ok(page);
        }
        let mut asked = Instant::now();
        loop {
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Ok(Vec::new());
            }
            thread::sleep(if started.elapsed() < BUSY_SPELL {
                POLL_BUSY
            } else {
                POLL_IDLE
            });
            if wal_stamp(&wal) == stamp && asked.elapsed() < ASK {
                continue;
            }
            asked = Instant::now();
            if data_version(&conn, busy).map_err(|e| classify(e, busy))? != version {
                break;
            }
        }
    }
}

fn read_once(
    conn: &mut Connection,
    after: u64,
    limit: usize,
    busy: Duration,
) -> Result<Vec<Event>> {
    let _deadline = conn::Deadline::start(Instant::now() + busy);
    let tx = conn.transaction()?;
    let page = read(&tx, after, limit)?;
    tx.commit()?;
    Ok(page)
}

fn data_version(conn: &Connection, busy: Duration) -> rusqlite::Result<i64> {
    let _deadline = conn::Deadline::start(Instant::now() + busy);
    conn.prepare_cached("PRAGMA data_version")?
        .query_row([], |row| row.get(0))
}

/// One row of `events`.
fn event(row: &Row<'_>) -> Result<Event> {
    let seq: i64 = row.get(0)?;
    let unreadable = |column: &'static str, reason: String| {
        Failure::Roster(Error::Unreadable {
            table: "events",
            id: seq.to_string(),
            column,
            reason,
        })
    };
    let text = |column: usize, name: &'static str| -> Result<&str> {
        match row.get_ref(column)? {
            ValueRef::Text(bytes) => {
                std::str::from_utf8(bytes).map_err(|e| unreadable(name, format!("not UTF-8 ({e})")))
            }
            other => Err(unreadable(
                name,
                format!("expected text, found {:?}", other.data_type()),
            )),
        }
    };
    let seq = u64::try_from(seq).map_err(|_| unreadable("seq", format!("{seq} is negative")))?;
    let at = text(1, "at")?;
    let at = decode_time(at.as_bytes()).ok_or_else(|| {
        unreadable(
            "at",
            format!("{:?} is not a time", escape_bytes(at.as_bytes())),
        )
    })?;
    let kind = text(2, "kind")?;
    let kind = EventKind::parse(kind)
        .ok_or_else(|| unreadable("kind", format!("unknown kind {kind:?}")))?;
    let mut event = Event::new(seq, at, kind, text(3, "agent_id")?);
    if !matches!(row.get_ref(4)?, ValueRef::Null) {
        event.task_id = Some(text(4, "task_id")?.to_owned());
    }
    if !matches!(row.get_ref(5)?, ValueRef::Null) {
        let status = text(5, "status")?;
        event.status = Some(
            status
                .parse()
                .map_err(|_| unreadable("status", format!("unknown status {status:?}")))?,
        );
    }
    if !matches!(row.get_ref(6)?, ValueRef::Null) {
        let reason = text(6, "reason")?;
        event.reason = Some(
            crate::claim::RecoverReason::parse(reason)
                .ok_or_else(|| unreadable("reason", format!("unknown reason {reason:?}")))?,
        );
    }
    if let Some(token) = row.get::<_, Option<i64>>(7)? {
        event.token = Some(
            u64::try_from(token)
                .map_err(|_| unreadable("token", format!("{token} is negative")))?,
        );
    }
    Ok(event)
}
