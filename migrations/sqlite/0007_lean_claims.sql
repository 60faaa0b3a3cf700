-- roster schema, version 7: claims and the change feed write fewer pages.
--
-- A commit in WAL mode appends one frame per page it changed, and every
-- 1000 frames a checkpoint copies them into the database file and syncs
-- it: what a claim costs follows the number of pages it writes. This
-- version keeps every rule of versions 5 and 6 and writes fewer pages:
--
-- * claims.token loses its UNIQUE index (a b-tree written by every claim
--   and release): the triggers alone keep tokens unique, since a new claim's
--   token must be above the counter, the counter follows every claim, and a
--   token never changes.
-- * events are pruned in batches, when seq is a multiple of 64, instead of
--   one event per insert (which rewrote the log's first page every time):
--   at least events_keep events are kept, at most events_keep + 63 (a
--   lowered events_keep takes effect at the next 64th event).
-- * the triggers of a claim insert and of a claim delete are folded into one
--   each, and the check that an agent's load covers its claims counts them
--   only when the load goes down.
-- * the age-based pruning stops at the first event young enough instead of
--   reading the 1000 oldest twice every 64th event (about 10 us per event
--   on average).
-- * a setting keeps its name (renaming one onto another deleted that one),
--   and the event counter moves only with the events (raised by hand, it
--   left a gap that read as pruned events).
--
-- PostgreSQL's schema already pruned every 64th event.

-- The triggers that name claims are dropped before the table is rebuilt
-- (a rename re-reads every trigger) and created again below.
DROP TRIGGER agents_delete_detaches_claims;
DROP TRIGGER agents_load_covers_claims;

CREATE TABLE claims_v7 (
    -- The task: 1 to 128 characters, no control or format characters;
    -- unique among held claims.
    task_id          TEXT    NOT NULL PRIMARY KEY,
    -- The agent that took it (kept when the claim is detached).
    agent_id         TEXT    NOT NULL,
    -- The fencing token: above every token given before, of any task
    -- (unique: the triggers below keep it so).
    token            INTEGER NOT NULL,
    -- UTC, in the format of agents.last_heartbeat.
    claimed_at       TEXT    NOT NULL,
    -- When the lease runs out (same format); NULL: no lease.
    lease_expires_at TEXT,
    -- 1 once agent_id was deregistered while holding it; never back to 0.
    detached         INTEGER NOT NULL DEFAULT 0,

    CONSTRAINT claims_task_id_valid CHECK (
        length(task_id) BETWEEN 1 AND 128
        AND instr(task_id, char(0)) = 0
        AND task_id NOT GLOB (
            '*[' || char(1) || '-' || char(31) || char(127) || '-' || char(159) || char(173) ||
            char(1536) || '-' || char(1541) || char(1564) || char(1757) || char(1807) ||
            char(2192) || '-' || char(2193) || char(2274) || char(6158) || char(8203) || '-' ||
            char(8207) || char(8234) || '-' || char(8238) || char(8288) || '-' || char(8292) ||
            char(8294) || '-' || char(8303) || char(65279) || char(65529) || '-' ||
            char(65531) || char(69821) || char(69837) || char(78896) || '-' || char(78911) ||
            char(113824) || '-' || char(113827) || char(119155) || '-' || char(119162) ||
            char(917505) || char(917536) || '-' || char(917631) || ']*'
        )
        AND replace(task_id, char(65533), '_') NOT GLOB ('*' || char(65533) || '*')
    ),
    CONSTRAINT claims_token_valid CHECK (token BETWEEN 1 AND 9223372036854775807),
    CONSTRAINT claims_claimed_at_valid CHECK (
        claimed_at GLOB '[0-9][0-9][0-9][0-9]-[01][0-9]-[0-3][0-9] [0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]'
        AND length(CAST(claimed_at AS BLOB)) = 29
        AND substr(claimed_at, 6, 2) BETWEEN '01' AND '12'
        AND substr(claimed_at, 12, 2) <= '23'
        AND substr(claimed_at, 9, 2) BETWEEN '01' AND (
            CASE substr(claimed_at, 6, 2)
                WHEN '02' THEN
                    CASE WHEN CAST(substr(claimed_at, 1, 4) AS INTEGER) % 4 = 0
                          AND (CAST(substr(claimed_at, 1, 4) AS INTEGER) % 100 <> 0
                               OR CAST(substr(claimed_at, 1, 4) AS INTEGER) % 400 = 0)
                         THEN '29' ELSE '28' END
                WHEN '04' THEN '30'
                WHEN '06' THEN '30'
                WHEN '09' THEN '30'
                WHEN '11' THEN '30'
                ELSE '31'
            END
        )
    ),
    CONSTRAINT claims_lease_expires_at_valid CHECK (lease_expires_at IS NULL OR (
        lease_expires_at GLOB '[0-9][0-9][0-9][0-9]-[01][0-9]-[0-3][0-9] [0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]'
        AND length(CAST(lease_expires_at AS BLOB)) = 29
        AND substr(lease_expires_at, 6, 2) BETWEEN '01' AND '12'
        AND substr(lease_expires_at, 12, 2) <= '23'
        AND substr(lease_expires_at, 9, 2) BETWEEN '01' AND (
            CASE substr(lease_expires_at, 6, 2)
                WHEN '02' THEN
                    CASE WHEN CAST(substr(lease_expires_at, 1, 4) AS INTEGER) % 4 = 0
                          AND (CAST(substr(lease_expires_at, 1, 4) AS INTEGER) % 100 <> 0
                               OR CAST(substr(lease_expires_at, 1, 4) AS INTEGER) % 400 = 0)
                         THEN '29' ELSE '28' END
                WHEN '04' THEN '30'
                WHEN '06' THEN '30'
                WHEN '09' THEN '30'
                WHEN '11' THEN '30'
                ELSE '31'
            END
        )
    )),
    CONSTRAINT claims_detached_valid CHECK (detached = 0 OR detached = 1)
) STRICT, WITHOUT ROWID;

INSERT INTO claims_v7 (task_id, agent_id, token, claimed_at, lease_expires_at, detached)
SELECT task_id, agent_id, token, claimed_at, lease_expires_at, detached FROM claims;

-- Dropping the table drops its indexes and its own triggers.
DROP TABLE claims;
ALTER TABLE claims_v7 RENAME TO claims;

-- The claims an agent holds: for the load check and for recover.
CREATE INDEX claims_by_agent ON claims (agent_id) WHERE detached = 0;
-- The leases in expiry order: for recover.
CREATE INDEX claims_by_lease ON claims (lease_expires_at) WHERE lease_expires_at IS NOT NULL;

-- A claim takes a fresh token, for a task not held, on an existing agent,
-- attached (the checks of version 5's three triggers, in the order they
-- ran). A held task is not claimed again, not even by INSERT
-- OR REPLACE (whose delete would skip the triggers that give the old slot
-- back).
CREATE TRIGGER claims_insert_checks
BEFORE INSERT ON claims
BEGIN
    SELECT RAISE(ABORT, 'claims.token must be above every token given before: use (SELECT value + 1 FROM counters WHERE name = ''claim_token'')')
    WHERE NEW.token <= (SELECT value FROM counters WHERE name = 'claim_token');
    SELECT RAISE(ABORT, 'the task is already claimed: release it first (INSERT OR REPLACE is refused)')
    WHERE EXISTS (SELECT 1 FROM claims WHERE task_id = NEW.task_id);
    SELECT RAISE(ABORT, 'claims.agent_id must be the id of a row in agents, and a new claim is attached (detached = 0)')
    WHERE NEW.detached <> 0 OR NOT EXISTS (SELECT 1 FROM agents WHERE id = NEW.agent_id);
END;

-- Taking a claim moves the token counter, takes a slot (the agents CHECK
-- refuses it past max_load) and writes its event.
CREATE TRIGGER claims_insert_takes_a_slot
AFTER INSERT ON claims
BEGIN
    UPDATE counters SET value = NEW.token WHERE name = 'claim_token';
    UPDATE agents SET current_load = current_load + 1 WHERE id = NEW.agent_id;
    INSERT INTO events (seq, at, kind, agent_id, task_id, status, reason, token)
    VALUES ((SELECT value + 1 FROM counters WHERE name = 'event_seq'), strftime('%Y-%m-%d %H:%M:%f000000', 'now'),
            'claimed', NEW.agent_id, NEW.task_id, NULL, NULL, NEW.token);
END;

-- Deleting a claim gives its slot back if it is attached, and writes one
-- event: 'recovered' (with its reason) when recover deletes it, 'released'
-- otherwise (release, or a DELETE by hand). recover raises the 'recovering'
-- setting inside its transaction; a claim that is not due is 'released'
-- whatever the setting says.
CREATE TRIGGER claims_delete_gives_the_slot_back
AFTER DELETE ON claims
BEGIN
    UPDATE agents SET current_load = current_load - 1 WHERE id = OLD.agent_id AND OLD.detached = 0;
    INSERT INTO events (seq, at, kind, agent_id, task_id, status, reason, token)
    SELECT (SELECT value + 1 FROM counters WHERE name = 'event_seq'), strftime('%Y-%m-%d %H:%M:%f000000', 'now'),
           CASE WHEN reason IS NULL THEN 'released' ELSE 'recovered' END,
           OLD.agent_id, OLD.task_id, NULL, reason, OLD.token
    FROM (SELECT CASE WHEN (SELECT value FROM settings WHERE name = 'recovering') <> 1 THEN NULL
                      WHEN OLD.detached = 1 THEN 'agent_gone'
                      WHEN (SELECT status FROM agents WHERE id = OLD.agent_id) = 'offline'
                          THEN 'agent_offline'
                      WHEN OLD.lease_expires_at < strftime('%Y-%m-%d %H:%M:%f999999', 'now')
                          THEN 'lease_expired'
                      ELSE NULL END AS reason);
END;

-- A claim is detached only when its agent is gone (the agents delete
-- trigger does it); by hand, release it instead.
CREATE TRIGGER claims_detach_needs_a_gone_agent
BEFORE UPDATE OF detached ON claims
WHEN NEW.detached = 1 AND OLD.detached = 0
  AND EXISTS (SELECT 1 FROM agents WHERE id = OLD.agent_id)
BEGIN
    SELECT RAISE(ABORT, 'a claim is detached only when its agent is deregistered: delete the claim to release it');
END;

-- Only the lease changes, and detached goes from 0 to 1, never back.
CREATE TRIGGER claims_update_keeps_the_claim
BEFORE UPDATE OF task_id, agent_id, token, claimed_at, detached ON claims
WHEN NEW.task_id IS NOT OLD.task_id OR NEW.agent_id IS NOT OLD.agent_id
  OR NEW.token IS NOT OLD.token OR NEW.claimed_at IS NOT OLD.claimed_at
  OR NEW.detached < OLD.detached
BEGIN
    SELECT RAISE(ABORT, 'a claim cannot change except its lease_expires_at (and detached from 0 to 1): release it and claim again');
END;

-- Detaching an attached claim by hand gives its slot back.
CREATE TRIGGER claims_detach_gives_the_slot_back
AFTER UPDATE OF detached ON claims
WHEN OLD.detached = 0 AND NEW.detached = 1
BEGIN
    UPDATE agents SET current_load = current_load - 1 WHERE id = OLD.agent_id;
END;

CREATE TRIGGER claims_renew_event
AFTER UPDATE OF lease_expires_at ON claims
WHEN NEW.lease_expires_at IS NOT OLD.lease_expires_at
BEGIN
    INSERT INTO events (seq, at, kind, agent_id, task_id, status, reason, token)
    VALUES ((SELECT value + 1 FROM counters WHERE name = 'event_seq'), strftime('%Y-%m-%d %H:%M:%f000000', 'now'),
            'renewed', NEW.agent_id, NEW.task_id, NULL, NULL, NEW.token);
END;

-- Deregistering an agent detaches its claims: they stay, recoverable.
CREATE TRIGGER agents_delete_detaches_claims
AFTER DELETE ON agents
BEGIN
    UPDATE claims SET detached = 1 WHERE agent_id = OLD.id AND detached = 0;
END;

-- An agent's load never drops below the claims it holds. A load that does
-- not go down cannot: every claim inserted adds one to it in the same
-- statement, so the claims are counted only when it goes down.
CREATE TRIGGER agents_load_covers_claims
BEFORE UPDATE OF current_load ON agents
WHEN NEW.current_load < OLD.current_load
  AND NEW.current_load < (SELECT count(*) FROM claims WHERE agent_id = NEW.id AND detached = 0)
BEGIN
    SELECT RAISE(ABORT, 'agents.current_load cannot drop below the claims the agent holds: delete claims to release them');
END;

-- Version 6 let that rename delete a setting: a file missing one gets it
-- back at its default (the others keep their values).
INSERT OR IGNORE INTO settings (name, value) VALUES
    ('events_keep', 100000),
    ('events_keep_seconds', 604800),
    ('recovering', 0),
    ('registering', 0);

-- A setting keeps its name: UPDATE OR REPLACE renaming one onto another
-- would delete that other row without its delete trigger, and the triggers
-- below would then read NULL (no age limit left: every 64th event would
-- empty the log; no 'recovering': a release by hand would read as a
-- recovery).
CREATE TRIGGER settings_keep_their_names
BEFORE UPDATE OF name ON settings
WHEN NEW.name IS NOT OLD.name
BEGIN
    SELECT RAISE(ABORT, 'settings keep their names: change their value');
END;

-- The counter follows every event. Every 64th event cuts the log back to
-- the newest events_keep (so it holds events_keep to events_keep + 63),
-- and takes the oldest ones older than events_keep_seconds: one page of the
-- log rewritten per 64 events rather than per event, and no pruning
-- statement run for the other 63.
DROP TRIGGER events_insert_counts_and_prunes;

CREATE TRIGGER events_insert_counts
AFTER INSERT ON events
BEGIN
    UPDATE counters SET value = NEW.seq WHERE name = 'event_seq';
END;

-- The event counter moves by one, with each event: raised by hand, it would
-- leave a gap that reads as pruned events (a reader at the newest cursor
-- told that its cursor is too old). It may move only to one past the
-- newest event kept (or anywhere by one when the log is empty: pruning by
-- age may take every event, the new one included, before it is counted).
CREATE TRIGGER counters_event_seq_follows_the_events
BEFORE UPDATE OF value ON counters
WHEN OLD.name = 'event_seq'
  AND (NEW.value IS NOT OLD.value + 1 OR NEW.value > (SELECT max(seq) FROM events))
BEGIN
    SELECT RAISE(ABORT, 'counters.event_seq moves by one, with each event: append an event with (SELECT value + 1 FROM counters WHERE name = ''event_seq'') instead');
END;

-- The old events go as a prefix, up to the first one young enough (an
-- event with an odd time never takes younger ones with it), looking at
-- the cursors below the oldest + 1000 at most. The first young one is
-- found in cursor order and ends the search: on a log whose oldest event
-- is young, it reads one row (version 6 read the 1000 oldest, twice).
CREATE TRIGGER events_insert_prunes
AFTER INSERT ON events
WHEN NEW.seq % 64 = 0
BEGIN
    DELETE FROM events
    WHERE seq <= NEW.seq - (SELECT value FROM settings WHERE name = 'events_keep');
    DELETE FROM events
    WHERE seq < coalesce(
          (SELECT seq FROM events
           WHERE seq < (SELECT min(seq) FROM events) + 1000
             AND at >= strftime('%Y-%m-%d %H:%M:%f000000', 'now',
                 '-' || (SELECT value FROM settings WHERE name = 'events_keep_seconds') || ' seconds')
           ORDER BY seq LIMIT 1),
          (SELECT min(seq) FROM events) + 1000);
END;
