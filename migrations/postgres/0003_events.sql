-- roster schema for PostgreSQL, version 3: a change feed (the SQLite
-- schema's version 6, in PostgreSQL's types).
--
-- Every state transition writes one row of `events` from the triggers below,
-- in the same transaction as the change, for roster's writes and hand-typed
-- SQL alike, and wakes listeners with pg_notify on the channel
-- 'roster_events' (the payload is the schema's name and is never data: a
-- listener re-reads by cursor).
--
-- Differences from SQLite:
-- - seq is a bigserial: numbers are handed out in insert order, not commit
--   order, and a rolled-back transaction burns its numbers. No row lock is
--   shared by all writers. Each event row is inserted in a subtransaction
--   that gets its transaction id after the number was taken (events_write),
--   so every transaction that could hold a lower, not yet committed number
--   has an id below the row's xmin. A reader delivers events in seq order
--   and stops at a missing number while a transaction below the xmin of the
--   event after it is still running (its snapshot's xmin is not past it);
--   once they have all ended, the number is a rolled-back one and is
--   skipped. Cursors may skip numbers; they only grow, and every event is
--   delivered once, in commit-safe order.
-- - events pruned (by count or age, or deleted by hand) are recorded in the
--   setting 'pruned_through' (the highest seq deleted): a cursor below it
--   is too old. Missing numbers from rollbacks are not pruned events.
-- - pruning runs every 64th event, so up to events_keep + 63 events stay.
-- - recover and register mark their transactions with the transaction-local
--   settings roster.recovering and roster.registering, not rows.

CREATE TABLE settings (
    name  text   NOT NULL PRIMARY KEY,
    value bigint NOT NULL,
    CONSTRAINT settings_value_valid CHECK (
        CASE name
            WHEN 'events_keep' THEN value BETWEEN 1 AND 1000000000
            WHEN 'events_keep_seconds' THEN value BETWEEN 1 AND 3153600000
            WHEN 'pruned_through' THEN value >= 0
            ELSE false
        END
    )
);

INSERT INTO settings (name, value) VALUES
    ('events_keep', 100000),
    ('events_keep_seconds', 604800),
    ('pruned_through', 0);

CREATE TABLE events (
    -- The cursor: grows with every event (see above for gaps).
    seq      bigserial   NOT NULL PRIMARY KEY,
    -- When it happened, in the server's clock.
    at       roster_time NOT NULL DEFAULT clock_timestamp(),
    kind     text        NOT NULL,
    agent_id roster_id   NOT NULL,
    task_id  roster_id,
    status   text,
    reason   text,
    token    bigint,
    CONSTRAINT events_kind_valid CHECK (kind IN ('registered', 'updated', 'deregistered',
        'status', 'drained', 'undrained', 'claimed', 'released', 'renewed', 'recovered')),
    CONSTRAINT events_status_valid CHECK (status IN ('available', 'busy', 'offline')),
    CONSTRAINT events_reason_valid CHECK (reason IN ('agent_gone', 'agent_offline', 'lease_expired')),
    CONSTRAINT events_token_valid CHECK (token >= 1)
);

-- Writes one event. Its number is taken first; the row is then inserted in
-- a subtransaction of its own (the BEGIN ... EXCEPTION block), whose new
-- transaction id (the row's xmin) is larger than that of every transaction
-- that took a lower number: each had its id before its number.
CREATE FUNCTION events_write(kind text, agent_id text, task_id text, status text,
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
        DELETE FROM events
        WHERE seq <= new_seq - (SELECT value FROM settings WHERE name = 'events_keep')
           OR at < now() - (SELECT value FROM settings WHERE name = 'events_keep_seconds') * interval '1 second';
    END IF;
END
$$;

CREATE FUNCTION events_are_a_log() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events cannot change: they are a log (delete old ones to prune)';
END
$$;

CREATE TRIGGER events_are_a_log BEFORE UPDATE ON events
FOR EACH ROW EXECUTE FUNCTION events_are_a_log();

-- Deleted events, by pruning or by hand, make older cursors too old.
CREATE FUNCTION events_delete_records_pruned() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE settings SET value = greatest(value, (SELECT coalesce(max(seq), 0) FROM gone))
    WHERE name = 'pruned_through' AND EXISTS (SELECT 1 FROM gone);
    RETURN NULL;
END
$$;

CREATE TRIGGER events_delete_records_pruned AFTER DELETE ON events
REFERENCING OLD TABLE AS gone
FOR EACH STATEMENT EXECUTE FUNCTION events_delete_records_pruned();

CREATE FUNCTION agents_event() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM events_write('registered', NEW.id, NULL, NEW.status, NULL, NULL);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM events_write('deregistered', OLD.id, NULL, NULL, NULL, NULL);
    ELSIF current_setting('roster.registering', true) = 'on' THEN
        PERFORM events_write('updated', NEW.id, NULL, NEW.status, NULL, NULL);
    ELSE
        IF NEW.name IS DISTINCT FROM OLD.name OR NEW.max_load IS DISTINCT FROM OLD.max_load
           OR NEW.host IS DISTINCT FROM OLD.host OR NEW.pid IS DISTINCT FROM OLD.pid
           OR NEW.started_at IS DISTINCT FROM OLD.started_at THEN
            PERFORM events_write('updated', NEW.id, NULL, NEW.status, NULL, NULL);
        END IF;
        IF NEW.status IS DISTINCT FROM OLD.status THEN
            PERFORM events_write('status', NEW.id, NULL, NEW.status, NULL, NULL);
        END IF;
        IF NEW.drained IS DISTINCT FROM OLD.drained THEN
            PERFORM events_write(CASE WHEN NEW.drained THEN 'drained' ELSE 'undrained' END,
                                 NEW.id, NULL, NULL, NULL, NULL);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER agents_event AFTER INSERT OR UPDATE OR DELETE ON agents
FOR EACH ROW EXECUTE FUNCTION agents_event();

-- A claim deleted by recover (which sets roster.recovering) and due is
-- 'recovered' with its reason; any other delete is 'released'.
CREATE FUNCTION claims_event() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    why text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM events_write('claimed', NEW.agent_id, NEW.task_id, NULL, NULL, NEW.token);
    ELSIF TG_OP = 'DELETE' THEN
        IF current_setting('roster.recovering', true) = 'on' THEN
            why := CASE WHEN OLD.detached THEN 'agent_gone'
                        WHEN EXISTS (SELECT 1 FROM agents AS a
                                     WHERE a.id = OLD.agent_id AND a.status = 'offline')
                            THEN 'agent_offline'
                        WHEN OLD.lease_expires_at < now() THEN 'lease_expired' END;
        END IF;
        PERFORM events_write(CASE WHEN why IS NULL THEN 'released' ELSE 'recovered' END,
                             OLD.agent_id, OLD.task_id, NULL, why, OLD.token);
    ELSIF NEW.lease_expires_at IS DISTINCT FROM OLD.lease_expires_at THEN
        PERFORM events_write('renewed', NEW.agent_id, NEW.task_id, NULL, NULL, NEW.token);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER claims_event AFTER INSERT OR UPDATE OR DELETE ON claims
FOR EACH ROW EXECUTE FUNCTION claims_event();

-- Capabilities and metadata changed by hand: an 'updated' event for the
-- agent (register's rewrite is its one 'updated'; a deregister's cascade
-- is its 'deregistered').
CREATE FUNCTION agent_rows_event() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    who text;
    agent_status text;
BEGIN
    IF current_setting('roster.registering', true) = 'on' THEN
        RETURN NULL;
    END IF;
    who := CASE WHEN TG_OP = 'DELETE' THEN OLD.agent_id ELSE NEW.agent_id END;
    SELECT a.status INTO agent_status FROM agents AS a WHERE a.id = who;
    IF FOUND THEN
        PERFORM events_write('updated', who, NULL, agent_status, NULL, NULL);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER capabilities_event AFTER INSERT OR UPDATE OR DELETE ON capabilities
FOR EACH ROW EXECUTE FUNCTION agent_rows_event();

CREATE TRIGGER metadata_event AFTER INSERT OR UPDATE OR DELETE ON metadata
FOR EACH ROW EXECUTE FUNCTION agent_rows_event();
