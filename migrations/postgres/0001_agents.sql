-- roster schema for PostgreSQL, version 1: agents, their capabilities and
-- metadata, with the same table and column names as the SQLite schema
-- (migrations/sqlite, version 4) in PostgreSQL's types.
--
-- This schema is a public interface: people query it with psql. It is
-- changed only by a new migration file, never by editing this one. roster
-- runs each file in one transaction, under pg_advisory_xact_lock, in the
-- schema first in the connection's search_path, and records it in
-- roster_migrations.
--
-- Differences from SQLite, all of them PostgreSQL's types:
-- - times are timestamptz, kept to the microsecond (SQLite keeps text to the
--   nanosecond); compare them with now() and intervals;
-- - drained is a boolean;
-- - ids, capabilities and metadata keys are COLLATE "C": ORDER BY id is byte
--   order, as roster's routing ties go, whatever the database's collation;
-- - foreign keys are always enforced, so deleting an agent deletes its
--   capabilities and metadata without the triggers SQLite needs.
--
-- Text rules (the same as src/text.rs and the SQLite CHECKs): ids,
-- capabilities, hosts and metadata keys hold no control character and no
-- format character (Unicode category Cf, Unicode 16.0); names and metadata
-- values no control character and no bidirectional control. PostgreSQL text
-- holds no NUL and, in a UTF8 database, only valid UTF-8: roster refuses to
-- open a database of another encoding.

-- The migrations applied to this schema: the schema version is the highest.
CREATE TABLE roster_migrations (
    version    integer     NOT NULL PRIMARY KEY CHECK (version >= 1),
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agents (
    -- Unique id: 1 to 128 characters, no control or format characters.
    id             text COLLATE "C" NOT NULL PRIMARY KEY,
    -- Human-readable name: 0 to 256 characters, no control characters or
    -- bidirectional controls.
    name           text        NOT NULL,
    -- 'available', 'busy' or 'offline'.
    status         text        NOT NULL DEFAULT 'available',
    -- The last heartbeat, in the database server's clock: heartbeat and reap
    -- use now(), never a client's clock.
    last_heartbeat timestamptz NOT NULL DEFAULT now(),
    -- Tasks running now; at most max_load unless max_load is 0.
    current_load   bigint      NOT NULL DEFAULT 0,
    -- Tasks allowed at once; 0 means unlimited.
    max_load       bigint      NOT NULL DEFAULT 0,
    -- true when an operator drained the agent: no new claims; it keeps
    -- heartbeating and keeps what it holds. register never changes it.
    drained        boolean     NOT NULL DEFAULT false,
    -- Where and since when the agent's process runs, as its sidecar reports
    -- it; NULL when unknown.
    host           text,
    pid            bigint,
    started_at     timestamptz,

    CONSTRAINT agents_id_valid CHECK (
        char_length(id) BETWEEN 1 AND 128
        AND id !~ '[\u0001-\u001f\u007f-\u009f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]'
    ),
    CONSTRAINT agents_name_valid CHECK (
        char_length(name) <= 256
        AND name !~ '[\u0001-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]'
    ),
    CONSTRAINT agents_status_valid CHECK (status IN ('available', 'busy', 'offline')),
    -- The years 0000 to 9999 (0000 is 1 BC), as roster's rules; never
    -- 'infinity'.
    CONSTRAINT agents_last_heartbeat_valid CHECK (
        last_heartbeat >= '0001-01-01 00:00:00+00 BC' AND last_heartbeat < '10000-01-01 00:00:00+00'
    ),
    CONSTRAINT agents_load_valid CHECK (
        current_load BETWEEN 0 AND 4294967295
        AND max_load BETWEEN 0 AND 4294967295
        AND (max_load = 0 OR current_load <= max_load)
    ),
    CONSTRAINT agents_host_valid CHECK (host IS NULL OR (
        char_length(host) BETWEEN 1 AND 255
        AND host !~ '[\u0001-\u001f\u007f-\u009f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]'
    )),
    CONSTRAINT agents_pid_valid CHECK (pid IS NULL OR pid BETWEEN 1 AND 4294967295),
    CONSTRAINT agents_started_at_valid CHECK (started_at IS NULL OR (
        started_at >= '0001-01-01 00:00:00+00 BC' AND started_at < '10000-01-01 00:00:00+00'
    ))
-- Room on each page for a heartbeat's new row version beside the old one:
-- no index covers last_heartbeat or status, so heartbeats are HOT updates
-- that rewrite no index.
) WITH (fillfactor = 80);

-- One row per capability of an agent, in the order the agent gave them.
CREATE TABLE capabilities (
    -- The agent that holds the capability.
    agent_id   text COLLATE "C" NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    -- 0, 1, 2...: the order in which the agent listed its capabilities.
    position   integer NOT NULL,
    -- The capability: 1 to 64 characters, no control or format characters.
    capability text COLLATE "C" NOT NULL,

    PRIMARY KEY (agent_id, position),
    CONSTRAINT capabilities_position_valid CHECK (position BETWEEN 0 AND 63),
    CONSTRAINT capabilities_capability_valid CHECK (
        char_length(capability) BETWEEN 1 AND 64
        AND capability !~ '[\u0001-\u001f\u007f-\u009f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]'
    )
);

-- Finds the agents holding a capability; also keeps capabilities unique per agent.
CREATE UNIQUE INDEX capabilities_by_capability ON capabilities (capability, agent_id);

-- One row per metadata pair of an agent.
CREATE TABLE metadata (
    -- The agent the pair describes.
    agent_id text COLLATE "C" NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    -- 1 to 64 characters, no control or format characters; unique per agent.
    key      text COLLATE "C" NOT NULL,
    -- 0 to 1024 characters, no control characters or bidirectional controls.
    value    text NOT NULL,

    PRIMARY KEY (agent_id, key),
    CONSTRAINT metadata_key_valid CHECK (
        char_length(key) BETWEEN 1 AND 64
        AND key !~ '[\u0001-\u001f\u007f-\u009f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]'
    ),
    CONSTRAINT metadata_value_valid CHECK (
        char_length(value) <= 1024
        AND value !~ '[\u0001-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]'
    )
);

-- The claim indexes: the agents with a free slot, in routing order (usage
-- for ordinary tasks, current_load for critical ones, ties by id). Status
-- and drained are left out, so that heartbeats never rewrite them; claim
-- checks both row by row as it walks.
CREATE INDEX agents_claim_by_usage
ON agents ((CASE WHEN max_load = 0 THEN 0.0::float8 ELSE current_load::float8 / max_load::float8 END), id)
WHERE current_load < (CASE max_load WHEN 0 THEN 4294967295 ELSE max_load END);

CREATE INDEX agents_claim_by_load
ON agents (current_load, id)
WHERE current_load < (CASE max_load WHEN 0 THEN 4294967295 ELSE max_load END);

-- An agent keeps its id: a new id is a new agent.
CREATE FUNCTION agents_id_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'agents.id cannot change: register the agent under the new id and delete the old row'
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;

CREATE TRIGGER agents_id_immutable
BEFORE UPDATE OF id ON agents
FOR EACH ROW WHEN (NEW.id IS DISTINCT FROM OLD.id)
EXECUTE FUNCTION agents_id_immutable();
