-- roster schema for PostgreSQL, version 4: copying a registry in.
--
-- `roster copy` (PostgresRegistry::copy_from) brings claims over with the
-- tokens they were given, and detached claims detached. It raises the
-- transaction-local setting roster.copying inside its one transaction; only
-- then may an INSERT give a token or a detached claim. The sequence
-- claim_tokens is then moved past every copied token.

CREATE OR REPLACE FUNCTION claims_insert_takes_a_token() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    holder record;
    copying boolean := coalesce(current_setting('roster.copying', true) = 'on', false);
BEGIN
    IF NEW.token IS NOT NULL AND NOT copying THEN
        RAISE EXCEPTION 'claims.token is given by the sequence claim_tokens: leave it out of the INSERT'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.detached AND NOT copying THEN
        RAISE EXCEPTION 'a new claim is attached (detached = false)'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended(TG_TABLE_SCHEMA || '.claims ' || NEW.task_id, 0));
    SELECT c.agent_id, c.token INTO holder FROM claims AS c WHERE c.task_id = NEW.task_id;
    IF FOUND THEN
        RAISE EXCEPTION 'task % is already claimed by agent % (token %)', NEW.task_id, holder.agent_id, holder.token
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'claims_pkey';
    END IF;
    IF NEW.token IS NULL THEN
        NEW.token := nextval('claim_tokens');
    END IF;
    RETURN NEW;
END
$$;

-- A detached claim (only ever inserted by a copy) takes no slot.
DROP TRIGGER claims_insert_takes_a_slot ON claims;
CREATE TRIGGER claims_insert_takes_a_slot
AFTER INSERT ON claims
FOR EACH ROW WHEN (NOT NEW.detached)
EXECUTE FUNCTION claims_insert_takes_a_slot();
