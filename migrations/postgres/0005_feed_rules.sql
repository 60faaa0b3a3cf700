-- roster schema for PostgreSQL, version 5: an event typed by hand is
-- written as roster writes events, and settings typed by hand cannot hide
-- deleted events.
--
-- On SQLite an event typed by hand must take the next cursor. Here two
-- things would go wrong with a plain INSERT INTO events:
-- - a number of its own beyond the sequence's last one would put every
--   watcher that read it past all the events numbered below it, which the
--   triggers write next: they would never be delivered;
-- - the row's xmin would be the typing transaction's id, which may be
--   older than that of a transaction still in flight with a lower number:
--   readers would take the lower number for a rolled-back one and skip it
--   for good once it commits.
-- So an INSERT typed by hand must leave events.seq out (its default draws
-- the next number, as currval then shows), and the event is written by
-- events_write, like every other: under a number drawn after the
-- transaction has its id, in a subtransaction of its own, at the server's
-- clock. The row typed is not inserted itself (psql reports INSERT 0 0).
-- events_write's own INSERT comes from a trigger (pg_trigger_depth() > 1)
-- and passes untouched.

CREATE FUNCTION events_typed_by_hand() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    drawn bigint;
BEGIN
    IF pg_trigger_depth() > 1 THEN
        RETURN NEW;
    END IF;
    BEGIN
        drawn := currval(pg_get_serial_sequence('events', 'seq'));
    EXCEPTION WHEN object_not_in_prerequisite_state THEN
        drawn := NULL;
    END;
    IF drawn IS DISTINCT FROM NEW.seq THEN
        RAISE EXCEPTION 'events.seq % is not the next cursor: leave events.seq out of the INSERT (its default takes the next number)', NEW.seq
            USING ERRCODE = 'check_violation';
    END IF;
    PERFORM events_write(NEW.kind, NEW.agent_id, NEW.task_id, NEW.status, NEW.reason, NEW.token);
    RETURN NULL;
END
$$;

CREATE TRIGGER events_typed_by_hand BEFORE INSERT ON events
FOR EACH ROW EXECUTE FUNCTION events_typed_by_hand();

-- Settings are kept, as on SQLite: a row cannot be deleted (nor the table
-- truncated) or renamed, only its value changed; and pruned_through only
-- grows. Without pruned_through, or with it lowered, events deleted by hand
-- would no longer make older cursors too old: a watcher would be handed
-- what is left as if nothing were missing. Without events_keep or
-- events_keep_seconds, pruning would stop.
CREATE FUNCTION settings_are_kept() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.name = OLD.name THEN
        IF NEW.name = 'pruned_through' AND NEW.value < OLD.value THEN
            RAISE EXCEPTION 'settings: pruned_through only grows (it is roster''s record of the events deleted)'
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'settings cannot be deleted or renamed: change their value'
        USING ERRCODE = 'check_violation';
END
$$;

CREATE TRIGGER settings_are_kept BEFORE UPDATE OR DELETE ON settings
FOR EACH ROW EXECUTE FUNCTION settings_are_kept();

CREATE TRIGGER settings_are_not_truncated BEFORE TRUNCATE ON settings
FOR EACH STATEMENT EXECUTE FUNCTION settings_are_kept();

-- Settings deleted before this version come back: the defaults, and as
-- pruned_through the number below the oldest event kept.
INSERT INTO settings (name, value) VALUES
    ('events_keep', 100000),
    ('events_keep_seconds', 604800),
    ('pruned_through', (SELECT greatest(coalesce(min(seq), 1) - 1, 0) FROM events))
ON CONFLICT (name) DO NOTHING;
