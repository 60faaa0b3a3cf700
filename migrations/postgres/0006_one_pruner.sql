-- roster schema for PostgreSQL, version 6: one transaction prunes the
-- change feed at a time, and no writer waits for another to prune.
--
-- Before, every 64th event's transaction deleted the events past
-- events_keep (or older than events_keep_seconds). Two such transactions
-- at once (a recover deleting many claims prunes inside its statement and
-- then goes on to update agents) could each wait for the other: one for
-- the events rows the other deleted, the other for an agent row the first
-- had locked to take a claim. The server breaks such a cycle only after
-- deadlock_timeout (a second), and a few in a row reached callers as
-- busy. A registry meets this as soon as it holds events_keep events.
--
-- Now the 64th event prunes only when it gets the transaction-level
-- advisory lock (the bytes "prun", and hashtext of the schema's name)
-- without waiting; when another transaction holds it, the next 64th event
-- prunes instead. So the log keeps events_keep events and a little more:
-- 63, plus 64 for each prune skipped while another was under way (or lost
-- with a 64th number rolled back).

CREATE OR REPLACE FUNCTION events_write(kind text, agent_id text, task_id text, status text,
                                        reason text, token bigint) RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    new_seq bigint;
BEGIN
    -- The writing transaction has its id before it takes a number.
    PERFORM pg_current_xact_id();
    new_seq := nextval(pg_get_serial_sequence('events', 'seq'));
    BEGIN
        INSERT INTO events (seq, kind, agent_id, task_id, status, reason, token)
        VALUES (new_seq, kind, agent_id, task_id, status, reason, token);
    EXCEPTION WHEN OTHERS THEN
        RAISE;
    END;
    PERFORM pg_notify('roster_events', current_schema());
    IF new_seq % 64 = 0 THEN
        IF pg_try_advisory_xact_lock(1886549358, hashtext(current_schema())) THEN
            DELETE FROM events
            WHERE seq <= new_seq - (SELECT value FROM settings WHERE name = 'events_keep')
               OR at < now() - (SELECT value FROM settings WHERE name = 'events_keep_seconds') * interval '1 second';
        END IF;
    END IF;
END
$$;
