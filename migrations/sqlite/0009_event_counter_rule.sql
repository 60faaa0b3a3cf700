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
-- * events_insert_counts is created again, after events_insert_prunes, so
--   that it fires first: every event is counted before any pruning, even
--   one that the pruning then takes.

DROP TRIGGER counters_event_seq_follows_the_events;

CREATE TRIGGER counters_event_seq_follows_the_events
BEFORE UPDATE OF value ON counters
WHEN OLD.name = 'event_seq'
  AND (NEW.value IS NOT OLD.value + 1
       OR NOT EXISTS (SELECT 1 FROM events WHERE seq = NEW.value))
BEGIN
    SELECT RAISE(ABORT, 'counters.event_seq moves by one, with each event: append an event with (SELECT value + 1 FROM counters WHERE name = ''event_seq'') instead');
END;

DROP TRIGGER events_insert_counts;

CREATE TRIGGER events_insert_counts
AFTER INSERT ON events
BEGIN
    UPDATE counters SET value = NEW.seq WHERE name = 'event_seq';
END;
