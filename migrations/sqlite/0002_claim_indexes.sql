-- roster schema, version 2: indexes that let claim find the best agent by
-- walking agents in routing order instead of sorting all of them.
--
-- Both hold only the agents with a free slot. Their keys mirror DefaultRouter:
-- usage (current_load / max_load, 0 when unlimited) for ordinary tasks,
-- current_load for critical ones; ties by id.
--
-- Status is deliberately not part of them: heartbeats and reaps write status,
-- and an index that mentions it would be rewritten by every heartbeat. claim
-- checks status row by row as it walks.

CREATE INDEX agents_claim_by_usage
ON agents ((CASE WHEN max_load = 0 THEN 0.0 ELSE current_load * 1.0 / max_load END), id)
WHERE current_load < (CASE max_load WHEN 0 THEN 4294967295 ELSE max_load END);

CREATE INDEX agents_claim_by_load
ON agents (current_load, id)
WHERE current_load < (CASE max_load WHEN 0 THEN 4294967295 ELSE max_load END);
