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
-- Every rule of one column is the column's type: a domain (roster_id,
-- roster_name, roster_time...) whose CHECK PostgreSQL evaluates only when a
-- value is written to a column of that type. Table CHECK constraints would be
-- evaluated on every UPDATE of the row, whatever it changes, and their
-- setup costs more than the rest of a heartbeat; a heartbeat writes only
-- last_heartbeat and status, so it pays for those two rules only. The one
-- rule that spans two columns (current_load <= max_load) is the trigger
-- agents_load_valid, which runs only when one of them is written. A
-- statement that binds a parameter to such a column from a strict client
-- (Rust's postgres crate) casts it to the base type: VALUES ($1::text, ...).
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

-- The rules of single columns, as types.

-- Ids of agents and tasks: 1 to 128 characters, no control or format
-- characters; compared byte by byte.
CREATE DOMAIN roster_id AS text COLLATE "C"
    CONSTRAINT roster_id_valid CHECK (
        char_length(VALUE) BETWEEN 1 AND 128
        AND VALUE !~ '[\u0001-\u001f\u007f-\u009f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]'
    );

-- Capabilities and metadata keys: 1 to 64 characters, no control or format
-- characters.
CREATE DOMAIN roster_word AS text COLLATE "C"
    CONSTRAINT roster_word_valid CHECK (
        char_length(VALUE) BETWEEN 1 AND 64
        AND VALUE !~ '[\u0001-\u001f\u007f-\u009f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]'
    );

-- Host names: 1 to 255 characters, no control or format characters.
CREATE DOMAIN roster_host AS text
    CONSTRAINT roster_host_valid CHECK (
        char_length(VALUE) BETWEEN 1 AND 255
        AND VALUE !~ '[\u0001-\u001f\u007f-\u009f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]'
    );

-- Agent names: 0 to 256 characters, no control characters or bidirectional
-- controls.
CREATE DOMAIN roster_name AS text
    CONSTRAINT roster_name_valid CHECK (
        char_length(VALUE) <= 256
        AND VALUE !~ '[\u0001-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]'
    );

-- Metadata values: 0 to 1024 characters, the characters of names.
CREATE DOMAIN roster_value AS text
    CONSTRAINT roster_value_valid CHECK (
        char_length(VALUE) <= 1024
        AND VALUE !~ '[\u0001-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]'
    );

-- 'available', 'busy' or 'offline'.
CREATE DOMAIN roster_status AS text
    CONSTRAINT roster_status_valid CHECK (VALUE IN ('available', 'busy', 'offline'));

-- A time in the years 0000 to 9999 (0000 is 1 BC), as roster's rules; never
-- 'infinity'.
CREATE DOMAIN roster_time AS timestamptz
    CONSTRAINT roster_time_valid CHECK (
        VALUE >= '0001-01-01 00:00:00+00 BC' AND VALUE < '10000-01-01 00:00:00+00'
    );

-- Loads: 0 to 4294967295.
CREATE DOMAIN roster_load AS bigint
    CONSTRAINT roster_load_valid CHECK (VALUE BETWEEN 0 AND 4294967295);

-- Process ids: 1 to 4294967295.
CREATE DOMAIN roster_pid AS bigint
    CONSTRAINT roster_pid_valid CHECK (VALUE BETWEEN 1 AND 4294967295);

-- The migrations applied to this schema: the schema version is the highest.
CREATE TABLE roster_migrations (
    version    integer     NOT NULL PRIMARY KEY CHECK (version >= 1),
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agents (
    -- Unique id.
    id             roster_id     NOT NULL PRIMARY KEY,
    -- Human-readable name.
    name           roster_name   NOT NULL,
    -- 'available', 'busy' or 'offline'.
    status         roster_status NOT NULL DEFAULT 'available',
    -- The last heartbeat, in the database server's clock: heartbeat and reap
    -- use now(), never a client's clock.
    last_heartbeat roster_time   NOT NULL DEFAULT now(),
    -- Tasks running now; at most max_load unless max_load is 0.
    current_load   roster_load   NOT NULL DEFAULT 0,
    -- Tasks allowed at once; 0 means unlimited.
    max_load       roster_load   NOT NULL DEFAULT 0,
    -- true when an operator drained the agent: no new claims; it keeps
    -- heartbeating and keeps what it holds. register never changes it.
    drained        boolean       NOT NULL DEFAULT false,
    -- Where and since when the agent's process runs, as its sidecar reports
    -- it; NULL when unknown.
    host           roster_host,
    pid            roster_pid,
    started_at     roster_time
-- Room on each page for a heartbeat's new row version beside the old one:
-- no index covers last_heartbeat or status, so heartbeats are HOT updates
-- that rewrite no index.
) WITH (fillfactor = 80);

-- One row per capability of an agent, in the order the agent gave them.
CREATE TABLE capabilities (
    -- The agent that holds the capability.
    agent_id   roster_id   NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    -- 0, 1, 2...: the order in which the agent listed its capabilities.
    position   integer     NOT NULL,
    -- The capability.
    capability roster_word NOT NULL,

    PRIMARY KEY (agent_id, position),
    CONSTRAINT capabilities_position_valid CHECK (position BETWEEN 0 AND 63)
);

-- Finds the agents holding a capability; also keeps capabilities unique per agent.
CREATE UNIQUE INDEX capabilities_by_capability ON capabilities (capability, agent_id);

-- One row per metadata pair of an agent.
CREATE TABLE metadata (
    -- The agent the pair describes.
    agent_id roster_id    NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    -- Unique per agent.
    key      roster_word  NOT NULL,
    value    roster_value NOT NULL,

    PRIMARY KEY (agent_id, key)
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

-- At most max_load tasks at once, unless max_load is 0: checked when either
-- is written (a heartbeat writes neither).
CREATE FUNCTION agents_load_valid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.max_load <> 0 AND NEW.current_load > NEW.max_load THEN
        RAISE EXCEPTION 'agents.current_load % is above max_load % (agent %)',
            NEW.current_load, NEW.max_load, NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'agents_load_valid';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER agents_load_valid
BEFORE INSERT OR UPDATE OF current_load, max_load ON agents
FOR EACH ROW EXECUTE FUNCTION agents_load_valid();

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
