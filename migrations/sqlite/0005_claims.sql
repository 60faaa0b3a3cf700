-- roster schema, version 5: claims are rows.
--
-- A claim is a slot held on an agent for one task. The database itself
-- keeps every agent's current_load equal to its untracked load plus the
-- claims it holds: the triggers below add one when a claim is inserted and
-- give it back when one is deleted, so `DELETE FROM claims ...` typed in the
-- sqlite3 shell releases slots correctly too. A claim's agent may be
-- deregistered: the claim is then detached (detached = 1), no longer counts
-- on any agent, and stays until recovered as agent_gone; a new agent under
-- the same id does not inherit it.

-- Counters that only grow: 'claim_token', the last fencing token given.
CREATE TABLE counters (
    name  TEXT    NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL,
    CONSTRAINT counters_value_valid CHECK (value >= 0)
) STRICT, WITHOUT ROWID;

INSERT INTO counters (name, value) VALUES ('claim_token', 0);

CREATE TABLE claims (
    -- The task: 1 to 128 characters, no control or format characters;
    -- unique among held claims.
    task_id          TEXT    NOT NULL PRIMARY KEY,
    -- The agent that took it (kept when the claim is detached).
    agent_id         TEXT    NOT NULL,
    -- The fencing token: above every token given before, of any task.
    token            INTEGER NOT NULL UNIQUE,
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

-- The claims an agent holds: for the load triggers and for recover.
CREATE INDEX claims_by_agent ON claims (agent_id) WHERE detached = 0;
-- The leases in expiry order: for recover.
CREATE INDEX claims_by_lease ON claims (lease_expires_at) WHERE lease_expires_at IS NOT NULL;

-- A claim is taken on an existing agent, attached, with a fresh token.
CREATE TRIGGER claims_insert_needs_agent
BEFORE INSERT ON claims
WHEN NEW.detached <> 0 OR NOT EXISTS (SELECT 1 FROM agents WHERE id = NEW.agent_id)
BEGIN
    SELECT RAISE(ABORT, 'claims.agent_id must be the id of a row in agents, and a new claim is attached (detached = 0)');
END;

-- A held task is not claimed again, not even by INSERT OR REPLACE (whose
-- delete would skip the triggers that give the old slot back).
CREATE TRIGGER claims_insert_new_task
BEFORE INSERT ON claims
WHEN EXISTS (SELECT 1 FROM claims WHERE task_id = NEW.task_id)
BEGIN
    SELECT RAISE(ABORT, 'the task is already claimed: release it first (INSERT OR REPLACE is refused)');
END;

-- An agent row is added once; INSERT OR REPLACE, whose delete would skip the
-- triggers that keep claims, capabilities and events right, is refused.
CREATE TRIGGER agents_insert_new_id
BEFORE INSERT ON agents
WHEN EXISTS (SELECT 1 FROM agents WHERE id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'an agent with this id exists: UPDATE it (INSERT OR REPLACE is refused)');
END;

CREATE TRIGGER claims_insert_fresh_token
BEFORE INSERT ON claims
WHEN NEW.token <= (SELECT value FROM counters WHERE name = 'claim_token')
BEGIN
    SELECT RAISE(ABORT, 'claims.token must be above every token given before: use (SELECT value + 1 FROM counters WHERE name = ''claim_token'')');
END;

-- Taking a claim takes a slot: the agents CHECK refuses it past max_load.
CREATE TRIGGER claims_insert_takes_a_slot
AFTER INSERT ON claims
BEGIN
    UPDATE counters SET value = NEW.token WHERE name = 'claim_token';
    UPDATE agents SET current_load = current_load + 1 WHERE id = NEW.agent_id;
END;

-- Deleting an attached claim gives its slot back.
CREATE TRIGGER claims_delete_gives_the_slot_back
AFTER DELETE ON claims
WHEN OLD.detached = 0
BEGIN
    UPDATE agents SET current_load = current_load - 1 WHERE id = OLD.agent_id;
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

-- Deregistering an agent detaches its claims: they stay, recoverable.
CREATE TRIGGER agents_delete_detaches_claims
AFTER DELETE ON agents
BEGIN
    UPDATE claims SET detached = 1 WHERE agent_id = OLD.id AND detached = 0;
END;

-- An agent's load never drops below the claims it holds.
CREATE TRIGGER agents_load_covers_claims
BEFORE UPDATE OF current_load ON agents
WHEN NEW.current_load < (SELECT count(*) FROM claims WHERE agent_id = NEW.id AND detached = 0)
BEGIN
    SELECT RAISE(ABORT, 'agents.current_load cannot drop below the claims the agent holds: delete claims to release them');
END;

-- The counters only grow, and are never deleted.
CREATE TRIGGER counters_only_grow
BEFORE UPDATE ON counters
WHEN NEW.value < OLD.value OR NEW.name IS NOT OLD.name OR NEW.value > 4611686018427387904
BEGIN
    SELECT RAISE(ABORT, 'counters only grow, keep their names and stay below 2^62');
END;

CREATE TRIGGER counters_are_kept
BEFORE DELETE ON counters
BEGIN
    SELECT RAISE(ABORT, 'counters cannot be deleted: roster needs them');
END;
