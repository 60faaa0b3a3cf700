-- roster schema, version 1: agents and their capabilities.
--
-- This schema is a public interface: people query it from the sqlite3 shell.
-- It is changed only by a new migration file, never by editing this one.
--
-- The constraints and triggers below hold even where foreign keys are off
-- (the sqlite3 shell's default), so that hand-typed SQL cannot store an
-- impossible row or leave an orphan.

-- 'rost': marks the file as a roster registry.
PRAGMA application_id = 1919906676;

CREATE TABLE agents (
    -- Unique id: 1 to 128 characters, no control characters.
    id             TEXT    NOT NULL PRIMARY KEY,
    -- Human-readable name: 1 to 256 characters, no control characters.
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
        AND id NOT GLOB ('*[' || char(1) || '-' || char(31) || char(127) || '-' || char(159) || ']*')
    ),
    CONSTRAINT agents_name_valid CHECK (
        length(name) BETWEEN 1 AND 256
        AND name NOT GLOB ('*[' || char(1) || '-' || char(31) || char(127) || '-' || char(159) || ']*')
    ),
    -- Written as comparisons, not IN (...): an IN list costs every heartbeat
    -- a temporary table.
    CONSTRAINT agents_status_valid CHECK (status = 'available' OR status = 'busy' OR status = 'offline'),
    CONSTRAINT agents_last_heartbeat_valid CHECK (
        last_heartbeat GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]'
        AND datetime(last_heartbeat) = substr(last_heartbeat, 1, 19)
    ),
    CONSTRAINT agents_load_valid CHECK (
        current_load BETWEEN 0 AND 4294967295
        AND max_load BETWEEN 0 AND 4294967295
        AND (max_load = 0 OR current_load <= max_load)
    )
) STRICT, WITHOUT ROWID;

-- One row per capability of an agent, in the order the agent gave them.
CREATE TABLE capabilities (
    -- The agent that holds the capability.
    agent_id   TEXT    NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    -- 0, 1, 2...: the order in which the agent listed its capabilities.
    position   INTEGER NOT NULL,
    -- The capability: 1 to 64 characters, no control characters.
    capability TEXT    NOT NULL,

    PRIMARY KEY (agent_id, position),
    CONSTRAINT capabilities_position_valid CHECK (position BETWEEN 0 AND 63),
    CONSTRAINT capabilities_capability_valid CHECK (
        length(capability) BETWEEN 1 AND 64
        AND capability NOT GLOB ('*[' || char(1) || '-' || char(31) || char(127) || '-' || char(159) || ']*')
    )
) STRICT, WITHOUT ROWID;

-- Finds the agents holding a capability; also keeps capabilities unique per agent.
CREATE UNIQUE INDEX capabilities_by_capability ON capabilities (capability, agent_id);

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
