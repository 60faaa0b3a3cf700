//! Connection setup: one [`configure`] for every connection, the pool's or
//! not, the pool itself, and how pool connections wait for a lock
//! ([`Deadline`]).

use std::cell::Cell;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags};
use scheduled_thread_pool::ScheduledThreadPool;

use crate::error::{DatabaseError, Error, ErrorKind, Result};
use crate::sqlite::options::SqliteOptions;

/// The size, in bytes, that the -wal file is cut back to after a checkpoint
/// has reset it (`PRAGMA journal_size_limit`).
const WAL_SIZE_LIMIT: i64 = 16 * 1024 * 1024;

/// How many pages the -wal file holds before the commit that crosses the
/// mark checkpoints it (`PRAGMA wal_autocheckpoint`; SQLite's default is
/// 1000).
///
/// A checkpoint copies every page written since the last one into the
/// database file and fsyncs both files, so its cost grows with the number
/// of *distinct* pages, not of commits. Heartbeats rewrite random agents:
/// at 10 000 agents roster's agents table spans about 400 leaf pages, and
/// 1000 heartbeats dirty about 370 of them, so nearly every heartbeat paid
/// for a page write and a share of two fsyncs. With 4000 pages between
/// checkpoints the same table is checkpointed once per 4000 heartbeats,
/// each page having been rewritten about ten times in the -wal file
/// meanwhile: a heartbeat went from 1.23 to 1.00 times a bare `UPDATE` on a
/// two-column table with SQLite's default (medians of eight and nine quick
/// runs, BENCHMARKS.md). Four processes writing at once gain nothing from
/// it (most likely, their checkpoints ran on the other core, beside the
/// lock), so their ratio to one process alone rose from 0.93 to 1.11.
///
/// 4000 pages of 4 KiB are just under [`WAL_SIZE_LIMIT`], the size a reset
/// -wal file is cut back to, and within the first hash table of SQLite's
/// -wal index (4096 frames). A crash leaves at most that much -wal to
/// recover on the next open.
const WAL_CHECKPOINT_PAGES: i64 = 4000;
const _: () = assert!(WAL_CHECKPOINT_PAGES * 4096 <= WAL_SIZE_LIMIT);

/// How many prepared statements each connection keeps.
const STATEMENT_CACHE: usize = 64;

/// What every connection of a registry is set up with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub(crate) busy_timeout: Duration,
    pub(crate) synchronous: &'static str,
}

impl Settings {
    pub(crate) fn of(options: &SqliteOptions) -> Self {
        Self {
            busy_timeout: options.busy_timeout,
            synchronous: options.durability.pragma_value(),
        }
    }
}

/// Sets up a connection: busy timeout, foreign keys, durability, the
/// checkpoint interval and the -wal size limit, the statement cache and the
/// `rarray` table-valued function that claim's statements read their labels
/// with. Every connection roster opens goes through here.
pub(crate) fn configure(conn: &Connection, settings: Settings) -> rusqlite::Result<()> {
    conn.busy_timeout(settings.busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    rusqlite::vtab::array::load_module(conn)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // Once a long reader elsewhere has let the -wal file grow, the next
    // checkpoint that resets it also shrinks it back.
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
    conn.pragma_update(None, "synchronous", settings.synchronous)
}

/// Opens one connection to an existing file with `flags`, configured.
pub(crate) fn open(
    path: &Path,
    flags: OpenFlags,
    settings: Settings,
) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    configure(&conn, settings)?;
    Ok(conn)
}

thread_local! {
    /// When the call running on this thread stops waiting for a lock; set
    /// by [`Deadline::start`] for the length of one call.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The deadline of the call running on this thread, read by
/// [`wait_for_lock`], until this value is dropped (which restores the one
/// before, so calls may nest).
pub(crate) struct Deadline {
    previous: Option<Instant>,
}

impl Deadline {
    /// Makes `at` the deadline of this thread's pool connections.
    pub(crate) fn start(at: Instant) -> Self {
        Self {
            previous: DEADLINE.with(|deadline| deadline.replace(Some(at))),
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        DEADLINE.with(|deadline| deadline.set(self.previous));
    }
}

/// The pause between two tries for a lock held elsewhere, for the first
/// [`SHORT_TRIES`] tries; then it doubles up to [`LONGEST_PAUSE`].
const SHORT_PAUSE: Duration = Duration::from_micros(50);
const SHORT_TRIES: i32 = 64;
const LONGEST_PAUSE: Duration = Duration::from_millis(1);

/// The busy handler of pool connections. SQLite calls it when a lock it
/// needs is held by another connection, with the number of times it was
/// already called for that lock; it returns whether to try again.
///
/// SQLite's own handler (`busy_timeout`) sleeps 1, 2, 5, 10, 15, 20, 25,
/// 25, 25, 50, 50 and then 100 ms between tries, while the lock of a
/// heartbeat or a claim is held for tens of microseconds. With four
/// processes heartbeating on a loaded machine the lock sat free while every
/// waiter slept: the four together made 1.3x the heartbeats with this
/// handler (median of nine interleaved comparisons), and with SQLite's one
/// of them often went a whole window of 300 or 500 ms without a single
/// heartbeat. On an otherwise quiet machine SQLite's handler lets one
/// process run alone and made 9 to 14 % more heartbeats in total; bounded
/// waits and even shares are worth that. Pauses of 50 us (about 100 us with
/// the kernel's timer slack) for the first few milliseconds keep the lock in
/// use; they grow to 1 ms for a long wait, so that a waiter behind a long
/// transaction costs little CPU.
///
/// The deadline is the one [`Deadline`] set on this thread; without one
/// the handler gives up at once (pool connections are only used inside
/// `SqliteRegistry::run`, which sets it).
pub(crate) fn wait_for_lock(tries: i32) -> bool {
    let Some(deadline) = DEADLINE.with(Cell::get) else {
        return false;
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return false;
    }
    thread::sleep(pause(tries).min(left));
    true
}

/// The pause before try `tries + 1`.
fn pause(tries: i32) -> Duration {
    let doublings = u32::try_from(tries.saturating_sub(SHORT_TRIES - 1).clamp(0, 5)).unwrap_or(5);
    (SHORT_PAUSE * 2_u32.pow(doublings)).min(LONGEST_PAUSE)
}

/// The one thread every registry handle of the process shares for the
/// pools' housekeeping (r2d2 would start three per pool).
fn workers() -> Arc<ScheduledThreadPool> {
    static WORKERS: OnceLock<Arc<ScheduledThreadPool>> = OnceLock::new();
    Arc::clone(WORKERS.get_or_init(|| {
        Arc::new(
            ScheduledThreadPool::builder()
                .num_threads(1)
                .thread_name_pattern("roster-pool-{}")
                .build(),
        )
    }))
}

/// The pool of a handle. The file exists by now: pool connections never
/// create it again, so a file deleted under a running program is an error,
/// not a new empty registry. Its connections wait for locks with
/// [`wait_for_lock`], up to the deadline of the call that uses them.
pub(crate) fn pool(path: &Path, options: &SqliteOptions) -> Result<Pool<SqliteConnectionManager>> {
    let settings = Settings::of(options);
    let manager = SqliteConnectionManager::file(path)
        .with_flags(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_init(move |conn| {
            configure(conn, settings)?;
            conn.busy_handler(Some(wait_for_lock))
        });
    Pool::builder()
        .max_size(options.pool_size)
        .min_idle(Some(1))
        // A checkout must not cost a statement: a broken connection shows up
        // as an error of the call that uses it.
        .test_on_check_out(false)
        .idle_timeout(None)
        .max_lifetime(None)
        .connection_timeout(options.busy_timeout.max(Duration::from_millis(100)))
        .thread_pool(workers())
        .build(manager)
        .map_err(|e| Error::Open {
            path: path.to_owned(),
            source: DatabaseError::new(ErrorKind::Unusable, e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::AgentRegistry;
    use crate::{AgentInfo, Error};

    #[test]
    fn connections_checkpoint_every_4000_pages() -> rusqlite::Result<()> {
        let conn = Connection::open_in_memory()?;
        configure(&conn, Settings::of(&SqliteOptions::new()))?;
        let pages: i64 = conn.query_row("PRAGMA wal_autocheckpoint", [], |row| row.get(0))?;
        assert_eq!(pages, WAL_CHECKPOINT_PAGES);
        Ok(())
    }

    #[test]
    fn pauses_stay_short_then_grow_to_a_millisecond() {
        assert_eq!(pause(0), SHORT_PAUSE);
        assert_eq!(pause(SHORT_TRIES - 1), SHORT_PAUSE);
        assert_eq!(pause(SHORT_TRIES), SHORT_PAUSE * 2);
        assert_eq!(pause(SHORT_TRIES + 3), SHORT_PAUSE * 16);
        assert_eq!(pause(SHORT_TRIES + 4), LONGEST_PAUSE);
        assert_eq!(pause(i32::MAX), LONGEST_PAUSE);
    }

    #[test]
    fn the_handler_waits_only_before_this_threads_deadline() {
        assert!(!wait_for_lock(0), "no deadline: give up");
        {
            let _past = Deadline::start(Instant::now());
            assert!(!wait_for_lock(0), "deadline passed: give up");
            {
                let _future = Deadline::start(Instant::now() + Duration::from_secs(60));
                assert!(wait_for_lock(0), "deadline ahead: try again");
            }
            assert!(!wait_for_lock(0), "the outer deadline is back");
        }
        assert!(!wait_for_lock(0), "no deadline once dropped");
        let other = thread::spawn(|| wait_for_lock(0));
        let _future = Deadline::start(Instant::now() + Duration::from_secs(60));
        assert!(!other.join().expect("thread"), "deadlines are per thread");
    }

    #[test]
    fn a_lock_held_past_the_busy_timeout_is_busy_then_free() -> crate::Result<()> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("agents.db");
        let timeout = Duration::from_millis(150);
        let registry = SqliteOptions::new().busy_timeout(timeout).open(&path)?;
        registry.register(AgentInfo {
            id: "a".to_owned(),
            ..AgentInfo::default()
        })?;
        let holder = Connection::open(&path).expect("open");
        holder
            .execute_batch("BEGIN IMMEDIATE")
            .expect("take the write lock");
        let start = Instant::now();
        let err = registry.heartbeat("a").unwrap_err();
        assert!(matches!(err, Error::Busy(t) if t == timeout), "{err}");
        assert!(
            start.elapsed() >= timeout,
            "gave up before the busy timeout"
        );
        holder.execute_batch("COMMIT").expect("release the lock");
        registry.heartbeat("a")
    }
}
