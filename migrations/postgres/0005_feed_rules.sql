-- roster schema for PostgreSQL, version 5: an event typed by hand cannot
-- move the cursor ahead, and settings typed by hand cannot hide deleted
-- events.
--
-- On SQLite an event typed by hand must take the next cursor. Here numbers
-- come from the sequence of events.seq, and an INSERT that gave a number of
-- its own beyond the sequence's last one would put every watcher that read
-- it past all the events numbered below it, which the triggers write next:
-- they would never be delivered. So events.seq must be a number the
-- sequence already gave: leave it out of the INSERT and its default draws
-- the next one (events_write draws it the same way).

CREATE FUNCTION events_seq_from_the_sequence() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.seq > coalesce(pg_sequence_last_value(pg_get_serial_sequence('events', 'seq')::regclass), 0) THEN
        RAISE EXCEPTION 'events.seq % is ahead of the cursor: leave events.seq out of the INSERT (its default takes the next number)', NEW.seq
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER events_seq_from_the_sequence BEFORE INSERT ON events
FOR EACH ROW EXECUTE FUNCTION events_seq_from_the_sequence();

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
