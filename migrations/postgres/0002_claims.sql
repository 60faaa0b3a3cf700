-- roster schema for PostgreSQL, version 2: claims are rows (the SQLite
-- schema's version 5, in PostgreSQL's types).
--
-- A claim is a slot held on an agent for one task. The database itself keeps
-- every agent's current_load equal to its untracked load plus the claims it
-- holds: the triggers below add one when a claim is inserted and give it back
-- when one is deleted, so `DELETE FROM claims ...` typed in psql releases
-- slots correctly too. A claim's agent may be deregistered: the claim is then
-- detached (detached = true), no longer counts on any agent, and stays until
-- recovered as agent_gone; a new agent under the same id does not inherit it.
--
-- Differences from SQLite:
-- - the fencing token comes from the sequence claim_tokens, not from a
--   counters row. A token only has to be larger than every token given
--   before; it need not be gap-free (a claim that rolls back burns its
--   number) nor follow commit order across different tasks (two claims of
--   two tasks may commit in the other order than they took their numbers).
--   A counter row updated by every claim would give both, at the price of
--   making every dispatcher wait for every other one on that row. For one
--   task, tokens do follow commit order: an insert takes a transaction lock
--   on its task id before it takes its number, so a claim of the task that
--   commits later always has the larger token.
-- - claimed_at and lease_expires_at are timestamptz in the server's clock:
--   roster writes now() and now() + lease, and recover compares with now().
-- - the trigger functions run with the search_path they were created with,
--   so they find this schema's tables from a session whose search_path
--   differs.

CREATE SEQUENCE claim_tokens AS bigint MINVALUE 1 NO CYCLE;

CREATE TABLE claims (
    -- The task; unique among held claims.
    task_id          roster_id   NOT NULL PRIMARY KEY,
    -- The agent that took it (kept when the claim is detached).
    agent_id         roster_id   NOT NULL,
    -- The fencing token, from the sequence claim_tokens (so at least 1):
    -- leave it out of an INSERT.
    token            bigint      NOT NULL UNIQUE,
    -- When the claim was taken, in the server's clock.
    claimed_at       roster_time NOT NULL DEFAULT now(),
    -- When the lease runs out; NULL: no lease.
    lease_expires_at roster_time,
    -- true once agent_id was deregistered while holding it; never back.
    detached         boolean     NOT NULL DEFAULT false
);

-- The claims an agent holds: for the load triggers, register and recover.
CREATE INDEX claims_by_agent ON claims (agent_id) WHERE NOT detached;
-- The leases in expiry order: for recover.
CREATE INDEX claims_by_lease ON claims (lease_expires_at) WHERE lease_expires_at IS NOT NULL;

-- A new claim is attached, of a task that is not held, and gets its token
-- from the sequence. A transaction lock on its task id (in the one-bigint key
-- space of advisory locks; roster's migration lock uses the two-integer one)
-- comes first: once it has it, no other insert of the task is under way, and
-- the claims it reads are all there are. So a held task is refused before it
-- costs a token, and tokens of one task follow commit order.
CREATE FUNCTION claims_insert_takes_a_token() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    holder record;
BEGIN
    IF NEW.token IS NOT NULL THEN
        RAISE EXCEPTION 'claims.token is given by the sequence claim_tokens: leave it out of the INSERT'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.detached THEN
        RAISE EXCEPTION 'a new claim is attached (detached = false)'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended(TG_TABLE_SCHEMA || '.claims ' || NEW.task_id, 0));
    SELECT c.agent_id, c.token INTO holder FROM claims AS c WHERE c.task_id = NEW.task_id;
    IF FOUND THEN
        RAISE EXCEPTION 'task % is already claimed by agent % (token %)', NEW.task_id, holder.agent_id, holder.token
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'claims_pkey';
    END IF;
    NEW.token := nextval('claim_tokens');
    RETURN NEW;
END
$$;

CREATE TRIGGER claims_insert_takes_a_token
BEFORE INSERT ON claims
FOR EACH ROW EXECUTE FUNCTION claims_insert_takes_a_token();

-- Taking a claim takes a slot on an existing agent: the trigger
-- agents_load_valid refuses it past max_load.
CREATE FUNCTION claims_insert_takes_a_slot() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE agents SET current_load = current_load + 1 WHERE id = NEW.agent_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'claims.agent_id must be the id of a row in agents (no agent %)', NEW.agent_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER claims_insert_takes_a_slot
AFTER INSERT ON claims
FOR EACH ROW EXECUTE FUNCTION claims_insert_takes_a_slot();

-- Deleting an attached claim, or detaching one, gives its slot back.
CREATE FUNCTION claims_give_the_slot_back() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE agents SET current_load = current_load - 1 WHERE id = OLD.agent_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER claims_delete_gives_the_slot_back
AFTER DELETE ON claims
FOR EACH ROW WHEN (NOT OLD.detached)
EXECUTE FUNCTION claims_give_the_slot_back();

CREATE TRIGGER claims_detach_gives_the_slot_back
AFTER UPDATE OF detached ON claims
FOR EACH ROW WHEN (NOT OLD.detached AND NEW.detached)
EXECUTE FUNCTION claims_give_the_slot_back();

-- Only the lease changes, and detached goes from false to true, never back.
CREATE FUNCTION claims_update_keeps_the_claim() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a claim cannot change except its lease_expires_at (and detached from false to true): release it and claim again'
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;

CREATE TRIGGER claims_update_keeps_the_claim
BEFORE UPDATE ON claims
FOR EACH ROW WHEN (
    NEW.task_id IS DISTINCT FROM OLD.task_id OR NEW.agent_id IS DISTINCT FROM OLD.agent_id
    OR NEW.token IS DISTINCT FROM OLD.token OR NEW.claimed_at IS DISTINCT FROM OLD.claimed_at
    OR (OLD.detached AND NOT NEW.detached)
)
EXECUTE FUNCTION claims_update_keeps_the_claim();

-- TRUNCATE fires no row triggers, so it would leave loads counting claims
-- that are gone.
CREATE FUNCTION claims_truncate_refused() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'TRUNCATE claims would leave agents.current_load counting them: DELETE FROM claims instead'
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;

CREATE TRIGGER claims_truncate_refused
BEFORE TRUNCATE ON claims
FOR EACH STATEMENT EXECUTE FUNCTION claims_truncate_refused();

-- Deregistering an agent detaches its claims: they stay, recoverable.
CREATE FUNCTION agents_delete_detaches_claims() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE claims SET detached = true WHERE agent_id = OLD.id AND NOT detached;
    RETURN NULL;
END
$$;

CREATE TRIGGER agents_delete_detaches_claims
AFTER DELETE ON agents
FOR EACH ROW EXECUTE FUNCTION agents_delete_detaches_claims();

-- TRUNCATE agents (CASCADE) fires no row triggers: detach every claim first.
CREATE FUNCTION agents_truncate_detaches_claims() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE claims SET detached = true WHERE NOT detached;
    RETURN NULL;
END
$$;

CREATE TRIGGER agents_truncate_detaches_claims
BEFORE TRUNCATE ON agents
FOR EACH STATEMENT EXECUTE FUNCTION agents_truncate_detaches_claims();

-- An agent's load never drops below the claims it holds. Only a decrease
-- can break that, so a claim's increase and a heartbeat never pay for it.
CREATE FUNCTION agents_load_covers_claims() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    held bigint;
BEGIN
    SELECT count(*) INTO held FROM claims WHERE agent_id = NEW.id AND NOT detached;
    -- With no claim held, the type roster_load speaks for itself.
    IF held > 0 AND NEW.current_load < held THEN
        RAISE EXCEPTION 'agents.current_load cannot drop below the % claim(s) agent % holds: delete claims to release them', held, NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER agents_load_covers_claims
BEFORE UPDATE OF current_load ON agents
FOR EACH ROW WHEN (NEW.current_load < OLD.current_load)
EXECUTE FUNCTION agents_load_covers_claims();
