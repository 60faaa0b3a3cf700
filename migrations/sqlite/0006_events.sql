-- roster schema, version 6: a change feed.
--
-- Every state transition writes one row of `events`, from the triggers below,
-- in the same transaction as the change: roster's own writes and hand-typed
-- SQL alike. A heartbeat that changes nothing but last_heartbeat writes no
-- event (the heartbeat UPDATE does not set any column these triggers watch).
--
-- events.seq comes from the counter 'event_seq', which only grows and is
-- written inside the one write transaction SQLite allows at a time: seq is in
-- commit order, without gaps; a reader that resumes after seq S sees every
-- later event exactly once.

-- When each agent was last registered: set by every register, so that the
-- trigger below tells a register ('updated') from other changes.
ALTER TABLE agents ADD COLUMN registered_at TEXT
    CONSTRAINT agents_registered_at_valid CHECK (registered_at IS NULL OR (
        registered_at GLOB '[0-9][0-9][0-9][0-9]-[01][0-9]-[0-3][0-9] [0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]'
        AND length(CAST(registered_at AS BLOB)) = 29
        AND substr(registered_at, 6, 2) BETWEEN '01' AND '12'
        AND substr(registered_at, 12, 2) <= '23'
        AND substr(registered_at, 9, 2) BETWEEN '01' AND (
            CASE substr(registered_at, 6, 2)
                WHEN '02' THEN
                    CASE WHEN CAST(substr(registered_at, 1, 4) AS INTEGER) % 4 = 0
                          AND (CAST(substr(registered_at, 1, 4) AS INTEGER) % 100 <> 0
                               OR CAST(substr(registered_at, 1, 4) AS INTEGER) % 400 = 0)
                         THEN '29' ELSE '28' END
                WHEN '04' THEN '30'
                WHEN '06' THEN '30'
                WHEN '09' THEN '30'
                WHEN '11' THEN '30'
                ELSE '31'
            END
        )
    ));

INSERT INTO counters (name, value) VALUES ('event_seq', 0);

-- Settings a person may change with SQL (UPDATE settings SET value = ...):
-- 'events_keep': how many of the newest events are kept (at least 1);
-- 'events_keep_seconds': how old an event may get before it is pruned.
-- 'recovering' and 'registering' are roster's own: 1 only inside recover's
-- (register's) transaction, so that a claim recover deletes is 'recovered',
-- not 'released', and register's rewrite of capabilities and metadata is
-- its one 'updated' event, not one event per row.
CREATE TABLE settings (
    name  TEXT    NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL,
    CONSTRAINT settings_value_valid CHECK (
        CASE name
            WHEN 'events_keep' THEN value BETWEEN 1 AND 1000000000
            WHEN 'events_keep_seconds' THEN value BETWEEN 1 AND 3153600000
            WHEN 'recovering' THEN value = 0 OR value = 1
            WHEN 'registering' THEN value = 0 OR value = 1
            ELSE 0
        END
    )
) STRICT, WITHOUT ROWID;

INSERT INTO settings (name, value) VALUES
    ('events_keep', 100000),
    ('events_keep_seconds', 604800),
    ('recovering', 0),
    ('registering', 0);

CREATE TRIGGER settings_are_kept
BEFORE DELETE ON settings
BEGIN
    SELECT RAISE(ABORT, 'settings cannot be deleted: change their value');
END;

CREATE TABLE events (
    -- The cursor: grows by one per event, in commit order.
    seq      INTEGER NOT NULL PRIMARY KEY,
    -- When it happened, UTC, in the format of agents.last_heartbeat.
    at       TEXT    NOT NULL,
    -- registered, updated, deregistered, status, drained, undrained,
    -- claimed, released, renewed, recovered.
    kind     TEXT    NOT NULL,
    -- The agent concerned (for claims: the agent that took the claim).
    agent_id TEXT    NOT NULL,
    -- The task, for claim events.
    task_id  TEXT,
    -- The agent's new status, for registered, updated and status.
    status   TEXT,
    -- Why a claim was recovered: agent_gone, agent_offline, lease_expired.
    reason   TEXT,
    -- The claim's token, for claim events.
    token    INTEGER,

    CONSTRAINT events_kind_valid CHECK (kind IN ('registered', 'updated', 'deregistered',
        'status', 'drained', 'undrained', 'claimed', 'released', 'renewed', 'recovered')),
    -- What a reader decodes is checked as agents' and claims' columns are.
    CONSTRAINT events_at_valid CHECK (
        at GLOB '[0-9][0-9][0-9][0-9]-[01][0-9]-[0-3][0-9] [0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]'
        AND length(CAST(at AS BLOB)) = 29
        AND substr(at, 6, 2) BETWEEN '01' AND '12'
        AND substr(at, 12, 2) <= '23'
        AND substr(at, 9, 2) BETWEEN '01' AND (
            CASE substr(at, 6, 2)
                WHEN '02' THEN
                    CASE WHEN CAST(substr(at, 1, 4) AS INTEGER) % 4 = 0
                          AND (CAST(substr(at, 1, 4) AS INTEGER) % 100 <> 0
                               OR CAST(substr(at, 1, 4) AS INTEGER) % 400 = 0)
                         THEN '29' ELSE '28' END
                WHEN '04' THEN '30'
                WHEN '06' THEN '30'
                WHEN '09' THEN '30'
                WHEN '11' THEN '30'
                ELSE '31'
            END
        )
    ),
    CONSTRAINT events_agent_id_valid CHECK (
        length(agent_id) BETWEEN 1 AND 128 AND instr(agent_id, char(0)) = 0
             AND agent_id NOT GLOB ('*[' || char(1) || '-' || char(31) || char(127) || '-' || char(159) || ']*')
             AND replace(agent_id, char(65533), '_') NOT GLOB ('*' || char(65533) || '*')
    ),
    CONSTRAINT events_task_id_valid CHECK (
        task_id IS NULL OR (length(task_id) BETWEEN 1 AND 128 AND instr(task_id, char(0)) = 0
             AND task_id NOT GLOB ('*[' || char(1) || '-' || char(31) || char(127) || '-' || char(159) || ']*')
             AND replace(task_id, char(65533), '_') NOT GLOB ('*' || char(65533) || '*'))
    ),
    CONSTRAINT events_status_valid CHECK (
        status IS NULL OR status = 'available' OR status = 'busy' OR status = 'offline'
    ),
    CONSTRAINT events_reason_valid CHECK (
        reason IS NULL OR reason = 'agent_gone' OR reason = 'agent_offline' OR reason = 'lease_expired'
    ),
    CONSTRAINT events_token_valid CHECK (token IS NULL OR token >= 1)
) STRICT;

-- Events come in cursor order, one after the other: an event typed by hand
-- takes (SELECT value + 1 FROM counters WHERE name = 'event_seq'); no event
-- can be replaced or skip ahead.
CREATE TRIGGER events_insert_next_seq
BEFORE INSERT ON events
WHEN NEW.seq IS NOT (SELECT value + 1 FROM counters WHERE name = 'event_seq')
BEGIN
    SELECT RAISE(ABORT, 'events.seq must be the next cursor: (SELECT value + 1 FROM counters WHERE name = ''event_seq''); events cannot be replaced');
END;

-- Counters are roster's: none is added by hand (nor replaced).
CREATE TRIGGER counters_are_not_added
BEFORE INSERT ON counters
BEGIN
    SELECT RAISE(ABORT, 'counters are roster''s: they cannot be added or replaced');
END;

-- The counter follows every event; the newest events_keep are kept, and,
-- every 64 events, the oldest ones older than events_keep_seconds go
-- (looking at most at the 1000 oldest).
CREATE TRIGGER events_insert_counts_and_prunes
AFTER INSERT ON events
BEGIN
    UPDATE counters SET value = NEW.seq WHERE name = 'event_seq';
    DELETE FROM events
    WHERE seq <= NEW.seq - (SELECT value FROM settings WHERE name = 'events_keep');
    -- Only the prefix of old events, up to the first one young enough:
    -- an event with an odd time never takes younger ones with it.
    DELETE FROM events
    WHERE NEW.seq % 64 = 0
      AND seq < coalesce(
          (SELECT min(seq) FROM (SELECT seq, at FROM events ORDER BY seq LIMIT 1000)
           WHERE at >= strftime('%Y-%m-%d %H:%M:%f000000', 'now',
               '-' || (SELECT value FROM settings WHERE name = 'events_keep_seconds') || ' seconds')),
          (SELECT max(seq) + 1 FROM (SELECT seq FROM events ORDER BY seq LIMIT 1000)));
END;

CREATE TRIGGER events_are_a_log
BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events cannot change: they are a log (delete old ones to prune)');
END;

CREATE TRIGGER agents_insert_event
AFTER INSERT ON agents
BEGIN
    INSERT INTO events (seq, at, kind, agent_id, task_id, status, reason, token)
    VALUES ((SELECT value + 1 FROM counters WHERE name = 'event_seq'), strftime('%Y-%m-%d %H:%M:%f000000', 'now'),
            'registered', NEW.id, NULL, NEW.status, NULL, NULL);
END;

CREATE TRIGGER agents_register_event
AFTER UPDATE OF registered_at ON agents
WHEN NEW.registered_at IS NOT OLD.registered_at
BEGIN
    INSERT INTO events (seq, at, kind, agent_id, task_id, status, reason, token)
    VALUES ((SELECT value + 1 FROM counters WHERE name = 'event_seq'), strftime('%Y-%m-%d %H:%M:%f000000', 'now'),
            'updated', NEW.id, NULL, NEW.status, NULL, NULL);
END;

-- Changes typed by hand to what only register sets.
CREATE TRIGGER agents_update_event
AFTER UPDATE OF name, max_load, host, pid, started_at ON agents
WHEN NEW.registered_at IS OLD.registered_at
  AND (NEW.name IS NOT OLD.name OR NEW.max_load IS NOT OLD.max_load
       OR NEW.host IS NOT OLD.host OR NEW.pid IS NOT OLD.pid
       OR NEW.started_at IS NOT OLD.started_at)
BEGIN
    INSERT INTO events (seq, at, kind, agent_id, task_id, status, reason, token)
    VALUES ((SELECT value + 1 FROM counters WHERE name = 'event_seq'), strftime('%Y-%m-%d %H:%M:%f000000', 'now'),
            'updated', NEW.id, NULL, NEW.status, NULL, NULL);
END;

-- A heartbeat that brings an agent back, a reap, set_status, hand SQL.
CREATE TRIGGER agents_status_event
AFTER UPDATE OF status ON agents
WHEN NEW.status IS NOT OLD.status AND NEW.registered_at IS OLD.registered_at
BEGIN
    INSERT INTO events (seq, at, kind, agent_id, task_id, status, reason, token)
    VALUES ((SELECT value + 1 FROM counters WHERE name = 'event_seq'), strftime('%Y-%m-%d %H:%M:%f000000', 'now'),
            'status', NEW.id, NULL, NEW.status, NULL, NULL);
END;

CREATE TRIGGER agents_drain_event
AFTER UPDATE OF drained ON agents
WHEN NEW.drained IS NOT OLD.drained
BEGIN
    INSERT INTO events (seq, at, kind, agent_id, task_id, status, reason, token)
    VALUES ((SELECT value + 1 FROM counters WHERE name = 'event_seq'), strftime('%Y-%m-%d %H:%M:%f000000', 'now'),
            CASE NEW.drained WHEN 1 THEN 'drained' ELSE 'undrained' END, NEW.id, NULL, NULL, NULL, NULL);
END;

CREATE TRIGGER agents_delete_event
AFTER DELETE ON agents
BEGIN
    INSERT INTO events (seq, at, kind, agent_id, task_id, status, reason, token)
    VALUES ((SELECT value + 1 FROM counters WHERE name = 'event_seq'), strftime('%Y-%m-%d %H:%M:%f000000', 'now'),
            'deregistered', OLD.id, NULL, NULL, NULL, NULL);
END;

CREATE TRIGGER claims_insert_event
AFTER INSERT ON claims
BEGIN
    INSERT INTO events (seq, at, kind, agent_id, task_id, status, reason, token)
    VALUES ((SELECT value + 1 FROM counters WHERE name = 'event_seq'), strftime('%Y-%m-%d %H:%M:%f000000', 'now'),
            'claimed', NEW.agent_id, NEW.task_id, NULL, NULL, NEW.token);
END;

-- One event per claim given back: 'recovered' (with its reason) when
-- recover deletes it, 'released' otherwise (release, or a DELETE by hand).
-- recover raises the 'recovering' setting inside its transaction; a claim
-- that is not due is 'released' whatever the setting says.
CREATE TRIGGER claims_delete_event
AFTER DELETE ON claims
BEGIN
    INSERT INTO events (seq, at, kind, agent_id, task_id, status, reason, token)
    VALUES ((SELECT value + 1 FROM counters WHERE name = 'event_seq'), strftime('%Y-%m-%d %H:%M:%f000000', 'now'),
            CASE WHEN (SELECT value FROM settings WHERE name = 'recovering') = 1
                      AND (OLD.detached = 1
                           OR (SELECT status FROM agents WHERE id = OLD.agent_id) = 'offline'
                           OR OLD.lease_expires_at < strftime('%Y-%m-%d %H:%M:%f999999', 'now'))
                 THEN 'recovered' ELSE 'released' END,
            OLD.agent_id, OLD.task_id, NULL,
            CASE WHEN (SELECT value FROM settings WHERE name = 'recovering') <> 1 THEN NULL
                 WHEN OLD.detached = 1 THEN 'agent_gone'
                 WHEN (SELECT status FROM agents WHERE id = OLD.agent_id) = 'offline'
                     THEN 'agent_offline'
                 WHEN OLD.lease_expires_at < strftime('%Y-%m-%d %H:%M:%f999999', 'now')
                     THEN 'lease_expired'
                 ELSE NULL END,
            OLD.token);
END;

CREATE TRIGGER claims_renew_event
AFTER UPDATE OF lease_expires_at ON claims
WHEN NEW.lease_expires_at IS NOT OLD.lease_expires_at
BEGIN
    INSERT INTO events (seq, at, kind, agent_id, task_id, status, reason, token)
    VALUES ((SELECT value + 1 FROM counters WHERE name = 'event_seq'), strftime('%Y-%m-%d %H:%M:%f000000', 'now'),
            'renewed', NEW.agent_id, NEW.task_id, NULL, NULL, NEW.token);
END;

-- Capabilities and metadata changed by hand: an 'updated' event for the
-- agent (register's own rewrite is covered by its 'updated').
CREATE TRIGGER capabilities_insert_event
AFTER INSERT ON capabilities
WHEN (SELECT value FROM settings WHERE name = 'registering') = 0
BEGIN
    INSERT INTO events (seq, at, kind, agent_id, task_id, status, reason, token)
    VALUES ((SELECT value + 1 FROM counters WHERE name = 'event_seq'), strftime('%Y-%m-%d %H:%M:%f000000', 'now'),
            'updated', NEW.agent_id, NULL, (SELECT status FROM agents WHERE id = NEW.agent_id), NULL, NULL);
END;

CREATE TRIGGER capabilities_delete_event
AFTER DELETE ON capabilities
WHEN (SELECT value FROM settings WHERE name = 'registering') = 0
  AND EXISTS (SELECT 1 FROM agents WHERE id = OLD.agent_id)
BEGIN
    INSERT INTO events (seq, at, kind, agent_id, task_id, status, reason, token)
    VALUES ((SELECT value + 1 FROM counters WHERE name = 'event_seq'), strftime('%Y-%m-%d %H:%M:%f000000', 'now'),
            'updated', OLD.agent_id, NULL, (SELECT status FROM agents WHERE id = OLD.agent_id), NULL, NULL);
END;

CREATE TRIGGER capabilities_update_event
AFTER UPDATE ON capabilities
WHEN (SELECT value FROM settings WHERE name = 'registering') = 0
BEGIN
    INSERT INTO events (seq, at, kind, agent_id, task_id, status, reason, token)
    VALUES ((SELECT value + 1 FROM counters WHERE name = 'event_seq'), strftime('%Y-%m-%d %H:%M:%f000000', 'now'),
            'updated', NEW.agent_id, NULL, (SELECT status FROM agents WHERE id = NEW.agent_id), NULL, NULL);
END;

CREATE TRIGGER metadata_insert_event
AFTER INSERT ON metadata
WHEN (SELECT value FROM settings WHERE name = 'registering') = 0
BEGIN
    INSERT INTO events (seq, at, kind, agent_id, task_id, status, reason, token)
    VALUES ((SELECT value + 1 FROM counters WHERE name = 'event_seq'), strftime('%Y-%m-%d %H:%M:%f000000', 'now'),
            'updated', NEW.agent_id, NULL, (SELECT status FROM agents WHERE id = NEW.agent_id), NULL, NULL);
END;

CREATE TRIGGER metadata_delete_event
AFTER DELETE ON metadata
WHEN (SELECT value FROM settings WHERE name = 'registering') = 0
  AND EXISTS (SELECT 1 FROM agents WHERE id = OLD.agent_id)
BEGIN
    INSERT INTO events (seq, at, kind, agent_id, task_id, status, reason, token)
    VALUES ((SELECT value + 1 FROM counters WHERE name = 'event_seq'), strftime('%Y-%m-%d %H:%M:%f000000', 'now'),
            'updated', OLD.agent_id, NULL, (SELECT status FROM agents WHERE id = OLD.agent_id), NULL, NULL);
END;

CREATE TRIGGER metadata_update_event
AFTER UPDATE ON metadata
WHEN (SELECT value FROM settings WHERE name = 'registering') = 0
BEGIN
    INSERT INTO events (seq, at, kind, agent_id, task_id, status, reason, token)
    VALUES ((SELECT value + 1 FROM counters WHERE name = 'event_seq'), strftime('%Y-%m-%d %H:%M:%f000000', 'now'),
            'updated', NEW.agent_id, NULL, (SELECT status FROM agents WHERE id = NEW.agent_id), NULL, NULL);
END;
