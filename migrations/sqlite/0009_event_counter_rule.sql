-- roster schema, version 9: the event counter moves only to an event.
--
-- Version 7's rule let counters.event_seq move by one whenever the log was
-- empty: it compared the new value with max(seq), which is NULL then. The
-- allowance was there because SQLite fires the triggers of one insert
-- newest first, so events_insert_prunes ran before events_insert_counts,
-- and an event typed by hand with an old time could be pruned before it
-- was counted. With the allowance, `UPDATE counters SET value = value + 1
-- WHERE name = 'event_seq'` typed on an empty log (a fresh file, or one
-- whose events were all deleted by hand) left a gap behind the next event:
-- a watcher at the newest cursor was told that its cursor was older than
-- the oldest kept event, although nothing had been pruned.
--
-- Now:
-- * the counter may move by one, and only to the seq of an event that is
--   in the log;
-- * the pruning by age never takes the event being inserted (the pruning
--   by count never could: events_keep is at least 1), so every event is
--   in the log when it is counted, whichever of the two triggers fires
--   first. An old event typed by hand as a 64th stays until the next 64th.
--
-- A file whose counter was already raised by hand keeps its gap: the
-- counter never goes down, and cursors from before the gap stay too old.

DROP TRIGGER counters_event_seq_follows_the_events;

CREATE TRIGGER counters_event_seq_follows_the_events
BEFORE UPDATE OF value ON counters
WHEN OLD.name = 'event_seq'
  AND (NEW.value IS NOT OLD.value + 1
       OR NOT EXISTS (SELECT 1 FROM events WHERE seq = NEW.value))
BEGIN
    SELECT RAISE(ABORT, 'counters.event_seq moves by one, with each event: append an event with (SELECT value + 1 FROM counters WHERE name = ''event_seq'') instead');
END;

DROP TRIGGER events_insert_prunes;

-- Version 7's pruning, but the age never takes the new event.
CREATE TRIGGER events_insert_prunes
AFTER INSERT ON events
WHEN NEW.seq % 64 = 0
BEGIN
    DELETE FROM events
    WHERE seq <= NEW.seq - (SELECT value FROM settings WHERE name = 'events_keep');
    DELETE FROM events
    WHERE seq < NEW.seq
      AND seq < coalesce(
          (SELECT seq FROM events
           WHERE seq < (SELECT min(seq) FROM events) + 1000
             AND at >= strftime('%Y-%m-%d %H:%M:%f000000', 'now',
                 '-' || (SELECT value FROM settings WHERE name = 'events_keep_seconds') || ' seconds')
           ORDER BY seq LIMIT 1),
          (SELECT min(seq) FROM events) + 1000);
END;
