-- roster schema, version 3: names may be empty (as in the Go registry), and
-- text and time rules that hand-typed SQL cannot get around.
--
-- A CHECK cannot be changed in place, so both tables are rebuilt the way
-- SQLite documents it (https://www.sqlite.org/lang_altertable.html, "Making
-- Other Kinds Of Table Schema Changes"): new tables, copy, drop, rename,
-- recreate indexes and triggers. roster runs this file in one IMMEDIATE
-- transaction with foreign keys switched off before it began, checks that
-- every row was copied (at the marker line below) and runs
-- PRAGMA foreign_key_check before it commits.
--
-- The rules, each of them false (never NULL) on a bad value:
-- - ids and capabilities: no control character, no NUL, no format
--   character (Unicode category Cf, Unicode 16.0: the same ranges as
--   FORMAT_CHARACTERS in src/text.rs);
-- - names: may be empty; no control character, no NUL, no bidirectional
--   control (U+202A-U+202E, U+2066-U+2069);
-- - every text: no byte sequence that SQLite decodes as U+FFFD unless it is
--   a real U+FFFD (the invalid UTF-8 that SQLite can tell);
-- - last_heartbeat: exactly 29 bytes in the documented format, and a real
--   date and time, by arithmetic (datetime() returns NULL for some
--   impossible dates and normalises or echoes others, differently between
--   SQLite versions).

DROP TRIGGER agents_id_immutable;
DROP TRIGGER agents_delete_capabilities;
DROP TRIGGER capabilities_insert_needs_agent;
DROP TRIGGER capabilities_update_needs_agent;

CREATE TABLE agents_v3 (
    -- Unique id: 1 to 128 characters, no control or format characters.
    id             TEXT    NOT NULL PRIMARY KEY,
    -- Human-readable name: 0 to 256 characters, no control characters or
    -- bidirectional controls.
    name           TEXT    NOT NULL,
    -- 'available', 'busy' or 'offline'.
    status         TEXT    NOT NULL DEFAULT 'available',
    -- UTC, 'YYYY-MM-DD HH:MM:SS.fffffffff' (always nine fractional digits):
    -- SQLite's own date format, so it compares correctly with datetime('now').
    last_heartbeat TEXT    NOT NULL,
    -- Tasks running now; at most max_load unless max_load is 0.
    current_load   INTEGER NOT NULL DEFAULT 0,
    -- Tasks allowed at once; 0 means unlimited.
    max_load       INTEGER NOT NULL DEFAULT 0,

    CONSTRAINT agents_id_valid CHECK (
        length(id) BETWEEN 1 AND 128
        -- length() and GLOB stop at a NUL: refuse it first.
        AND instr(id, char(0)) = 0
        AND id NOT GLOB (
            '*[' || char(1) || '-' || char(31) || char(127) || '-' || char(159) || char(173) ||
            char(1536) || '-' || char(1541) || char(1564) || char(1757) || char(1807) ||
            char(2192) || '-' || char(2193) || char(2274) || char(6158) || char(8203) || '-' ||
            char(8207) || char(8234) || '-' || char(8238) || char(8288) || '-' || char(8292) ||
            char(8294) || '-' || char(8303) || char(65279) || char(65529) || '-' ||
            char(65531) || char(69821) || char(69837) || char(78896) || '-' || char(78911) ||
            char(113824) || '-' || char(113827) || char(119155) || '-' || char(119162) ||
            char(917505) || char(917536) || '-' || char(917631) || ']*'
        )
        -- Bytes that are not UTF-8 read as U+FFFD; a real U+FFFD is allowed.
        AND replace(id, char(65533), '_') NOT GLOB ('*' || char(65533) || '*')
    ),
    CONSTRAINT agents_name_valid CHECK (
        length(name) <= 256
        -- length() and GLOB stop at a NUL: refuse it first.
        AND instr(name, char(0)) = 0
        AND name NOT GLOB (
            '*[' || char(1) || '-' || char(31) || char(127) || '-' || char(159) ||
            char(8234) || '-' || char(8238) || char(8294) || '-' || char(8297) || ']*'
        )
        -- Bytes that are not UTF-8 read as U+FFFD; a real U+FFFD is allowed.
        AND replace(name, char(65533), '_') NOT GLOB ('*' || char(65533) || '*')
    ),
    -- Written as comparisons, not IN (...): an IN list costs every heartbeat
    -- a temporary table.
    CONSTRAINT agents_status_valid CHECK (status = 'available' OR status = 'busy' OR status = 'offline'),
    CONSTRAINT agents_last_heartbeat_valid CHECK (
        last_heartbeat GLOB '[0-9][0-9][0-9][0-9]-[01][0-9]-[0-3][0-9] [0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]'
        -- GLOB stops at a NUL: nothing may follow the 29 characters.
        AND length(CAST(last_heartbeat AS BLOB)) = 29
        AND substr(last_heartbeat, 6, 2) BETWEEN '01' AND '12'
        AND substr(last_heartbeat, 12, 2) <= '23'
        AND substr(last_heartbeat, 9, 2) BETWEEN '01' AND (
            CASE substr(last_heartbeat, 6, 2)
                WHEN '02' THEN
                    CASE WHEN CAST(substr(last_heartbeat, 1, 4) AS INTEGER) % 4 = 0
                          AND (CAST(substr(last_heartbeat, 1, 4) AS INTEGER) % 100 <> 0
                               OR CAST(substr(last_heartbeat, 1, 4) AS INTEGER) % 400 = 0)
                         THEN '29' ELSE '28' END
                WHEN '04' THEN '30'
                WHEN '06' THEN '30'
                WHEN '09' THEN '30'
                WHEN '11' THEN '30'
                ELSE '31'
            END
        )
    ),
    CONSTRAINT agents_load_valid CHECK (
        current_load BETWEEN 0 AND 4294967295
        AND max_load BETWEEN 0 AND 4294967295
        AND (max_load = 0 OR current_load <= max_load)
    )
) STRICT, WITHOUT ROWID;

-- One row per capability of an agent, in the order the agent gave them.
CREATE TABLE capabilities_v3 (
    -- The agent that holds the capability.
    agent_id   TEXT    NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    -- 0, 1, 2...: the order in which the agent listed its capabilities.
    position   INTEGER NOT NULL,
    -- The capability: 1 to 64 characters, no control or format characters.
    capability TEXT    NOT NULL,

    PRIMARY KEY (agent_id, position),
    CONSTRAINT capabilities_position_valid CHECK (position BETWEEN 0 AND 63),
    CONSTRAINT capabilities_capability_valid CHECK (
        length(capability) BETWEEN 1 AND 64
        -- length() and GLOB stop at a NUL: refuse it first.
        AND instr(capability, char(0)) = 0
        AND capability NOT GLOB (
            '*[' || char(1) || '-' || char(31) || char(127) || '-' || char(159) || char(173) ||
            char(1536) || '-' || char(1541) || char(1564) || char(1757) || char(1807) ||
            char(2192) || '-' || char(2193) || char(2274) || char(6158) || char(8203) || '-' ||
            char(8207) || char(8234) || '-' || char(8238) || char(8288) || '-' || char(8292) ||
            char(8294) || '-' || char(8303) || char(65279) || char(65529) || '-' ||
            char(65531) || char(69821) || char(69837) || char(78896) || '-' || char(78911) ||
            char(113824) || '-' || char(113827) || char(119155) || '-' || char(119162) ||
            char(917505) || char(917536) || '-' || char(917631) || ']*'
        )
        -- Bytes that are not UTF-8 read as U+FFFD; a real U+FFFD is allowed.
        AND replace(capability, char(65533), '_') NOT GLOB ('*' || char(65533) || '*')
    )
) STRICT, WITHOUT ROWID;

-- OR IGNORE: a row the new rules refuse is left behind, and the check at the
-- marker below refuses the whole upgrade, naming it.
INSERT OR IGNORE INTO agents_v3 (id, name, status, last_heartbeat, current_load, max_load)
SELECT id, name, status, last_heartbeat, current_load, max_load FROM agents;

INSERT OR IGNORE INTO capabilities_v3 (agent_id, position, capability)
SELECT agent_id, position, capability FROM capabilities
WHERE agent_id IN (SELECT id FROM agents_v3);

-- roster: every row copied

DROP TABLE capabilities;
DROP TABLE agents;
ALTER TABLE agents_v3 RENAME TO agents;
ALTER TABLE capabilities_v3 RENAME TO capabilities;

-- Finds the agents holding a capability; also keeps capabilities unique per agent.
CREATE UNIQUE INDEX capabilities_by_capability ON capabilities (capability, agent_id);

-- The claim indexes of version 2, unchanged.
CREATE INDEX agents_claim_by_usage
ON agents ((CASE WHEN max_load = 0 THEN 0.0 ELSE current_load * 1.0 / max_load END), id)
WHERE current_load < (CASE max_load WHEN 0 THEN 4294967295 ELSE max_load END);

CREATE INDEX agents_claim_by_load
ON agents (current_load, id)
WHERE current_load < (CASE max_load WHEN 0 THEN 4294967295 ELSE max_load END);

-- The triggers of version 1, unchanged.

-- An agent keeps its id: a new id is a new agent.
CREATE TRIGGER agents_id_immutable
BEFORE UPDATE OF id ON agents
WHEN NEW.id IS NOT OLD.id
BEGIN
    SELECT RAISE(ABORT, 'agents.id cannot change: register the agent under the new id and delete the old row');
END;

-- Deleting an agent deletes its capabilities, even with foreign keys off.
CREATE TRIGGER agents_delete_capabilities
AFTER DELETE ON agents
BEGIN
    DELETE FROM capabilities WHERE agent_id = OLD.id;
END;

-- A capability belongs to an existing agent, even with foreign keys off.
CREATE TRIGGER capabilities_insert_needs_agent
BEFORE INSERT ON capabilities
WHEN NOT EXISTS (SELECT 1 FROM agents WHERE id = NEW.agent_id)
BEGIN
    SELECT RAISE(ABORT, 'capabilities.agent_id must be the id of a row in agents');
END;

CREATE TRIGGER capabilities_update_needs_agent
BEFORE UPDATE OF agent_id ON capabilities
WHEN NOT EXISTS (SELECT 1 FROM agents WHERE id = NEW.agent_id)
BEGIN
    SELECT RAISE(ABORT, 'capabilities.agent_id must be the id of a row in agents');
END;
