-- roster schema for PostgreSQL, version 5: an event typed by hand cannot
-- move the cursor ahead.
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
