-- roster schema, version 4: an operator's drain, and who runs an agent.
--
-- New columns of agents, all optional for hand-typed rows:
-- - drained: 1 when an operator drained the agent (no new claims; it keeps
--   heartbeating and keeps what it holds); register never changes it;
-- - host, pid, started_at: where and since when the agent's process runs,
--   as the sidecar (`roster agent`) reports it; NULL when unknown.
-- And a child table, metadata: free-form string pairs per agent.
--
-- Every rule is false (never NULL) on a bad value, as in version 3.

ALTER TABLE agents ADD COLUMN drained INTEGER NOT NULL DEFAULT 0
    CONSTRAINT agents_drained_valid CHECK (drained = 0 OR drained = 1);

ALTER TABLE agents ADD COLUMN host TEXT
    CONSTRAINT agents_host_valid CHECK (host IS NULL OR (
        length(host) BETWEEN 1 AND 255
        AND instr(host, char(0)) = 0
        AND host NOT GLOB (
            '*[' || char(1) || '-' || char(31) || char(127) || '-' || char(159) || char(173) ||
            char(1536) || '-' || char(1541) || char(1564) || char(1757) || char(1807) ||
            char(2192) || '-' || char(2193) || char(2274) || char(6158) || char(8203) || '-' ||
            char(8207) || char(8234) || '-' || char(8238) || char(8288) || '-' || char(8292) ||
            char(8294) || '-' || char(8303) || char(65279) || char(65529) || '-' ||
            char(65531) || char(69821) || char(69837) || char(78896) || '-' || char(78911) ||
            char(113824) || '-' || char(113827) || char(119155) || '-' || char(119162) ||
            char(917505) || char(917536) || '-' || char(917631) || ']*'
        )
        AND replace(host, char(65533), '_') NOT GLOB ('*' || char(65533) || '*')
    ));

ALTER TABLE agents ADD COLUMN pid INTEGER
    CONSTRAINT agents_pid_valid CHECK (pid IS NULL OR pid BETWEEN 1 AND 4294967295);

-- The format of last_heartbeat: UTC 'YYYY-MM-DD HH:MM:SS.fffffffff'.
ALTER TABLE agents ADD COLUMN started_at TEXT
    CONSTRAINT agents_started_at_valid CHECK (started_at IS NULL OR (
        started_at GLOB '[0-9][0-9][0-9][0-9]-[01][0-9]-[0-3][0-9] [0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]'
        AND length(CAST(started_at AS BLOB)) = 29
        AND substr(started_at, 6, 2) BETWEEN '01' AND '12'
        AND substr(started_at, 12, 2) <= '23'
        AND substr(started_at, 9, 2) BETWEEN '01' AND (
            CASE substr(started_at, 6, 2)
                WHEN '02' THEN
                    CASE WHEN CAST(substr(started_at, 1, 4) AS INTEGER) % 4 = 0
                          AND (CAST(substr(started_at, 1, 4) AS INTEGER) % 100 <> 0
                               OR CAST(substr(started_at, 1, 4) AS INTEGER) % 400 = 0)
                         THEN '29' ELSE '28' END
                WHEN '04' THEN '30'
                WHEN '06' THEN '30'
                WHEN '09' THEN '30'
                WHEN '11' THEN '30'
                ELSE '31'
            END
        )
    ));

-- One row per metadata pair of an agent (as register gave them).
CREATE TABLE metadata (
    -- The agent the pair describes.
    agent_id TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    -- 1 to 64 characters, no control or format characters; unique per agent.
    key      TEXT NOT NULL,
    -- 0 to 1024 characters, no control characters or bidirectional controls.
    value    TEXT NOT NULL,

    PRIMARY KEY (agent_id, key),
    CONSTRAINT metadata_key_valid CHECK (
        length(key) BETWEEN 1 AND 64
        AND instr(key, char(0)) = 0
        AND key NOT GLOB (
            '*[' || char(1) || '-' || char(31) || char(127) || '-' || char(159) || char(173) ||
            char(1536) || '-' || char(1541) || char(1564) || char(1757) || char(1807) ||
            char(2192) || '-' || char(2193) || char(2274) || char(6158) || char(8203) || '-' ||
            char(8207) || char(8234) || '-' || char(8238) || char(8288) || '-' || char(8292) ||
            char(8294) || '-' || char(8303) || char(65279) || char(65529) || '-' ||
            char(65531) || char(69821) || char(69837) || char(78896) || '-' || char(78911) ||
            char(113824) || '-' || char(113827) || char(119155) || '-' || char(119162) ||
            char(917505) || char(917536) || '-' || char(917631) || ']*'
        )
        AND replace(key, char(65533), '_') NOT GLOB ('*' || char(65533) || '*')
    ),
    CONSTRAINT metadata_value_valid CHECK (
        length(value) <= 1024
        AND instr(value, char(0)) = 0
        AND value NOT GLOB (
            '*[' || char(1) || '-' || char(31) || char(127) || '-' || char(159) ||
            char(8234) || '-' || char(8238) || char(8294) || '-' || char(8297) || ']*'
        )
        AND replace(value, char(65533), '_') NOT GLOB ('*' || char(65533) || '*')
    )
) STRICT, WITHOUT ROWID;

-- Deleting an agent deletes its metadata, even with foreign keys off.
CREATE TRIGGER agents_delete_metadata
AFTER DELETE ON agents
BEGIN
    DELETE FROM metadata WHERE agent_id = OLD.id;
END;

-- A pair belongs to an existing agent, even with foreign keys off.
CREATE TRIGGER metadata_insert_needs_agent
BEFORE INSERT ON metadata
WHEN NOT EXISTS (SELECT 1 FROM agents WHERE id = NEW.agent_id)
BEGIN
    SELECT RAISE(ABORT, 'metadata.agent_id must be the id of a row in agents');
END;

CREATE TRIGGER metadata_update_needs_agent
BEFORE UPDATE OF agent_id ON metadata
WHEN NOT EXISTS (SELECT 1 FROM agents WHERE id = NEW.agent_id)
BEGIN
    SELECT RAISE(ABORT, 'metadata.agent_id must be the id of a row in agents');
END;
