//! Copying an SQLite registry into PostgreSQL: agents with their
//! capabilities and metadata, held claims with their tokens (detached ones
//! detached), and the token counter, in one PostgreSQL transaction.

use rusqlite::{Connection, OpenFlags};

use crate::agent::AgentInfo;
use crate::claim::Claim;
use crate::error::{DatabaseError, Error, ErrorKind, Result};
use crate::postgres::PostgresRegistry;
use crate::postgres::conn::Session;
use crate::registry::AgentRegistry;
use crate::sqlite::SqliteRegistry;

/// What [`PostgresRegistry::copy_from`] copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copied {
    /// Agents copied.
    pub agents: usize,
    /// Claims copied (detached ones included).
    pub claims: usize,
    /// The last token the source gave: the next claim's token is larger.
    pub last_token: u64,
}

/// What the SQLite file holds besides what the trait returns.
struct Extra {
    /// The task ids of detached claims.
    detached: Vec<String>,
    /// The counters `claim_token` and `event_seq`.
    last_token: u64,
    event_seq: u64,
}

fn storage(message: String) -> Error {
    Error::Database(DatabaseError::new(ErrorKind::Storage, message))
}

fn extra(source: &SqliteRegistry) -> Result<Extra> {
    let read = || -> rusqlite::Result<Extra> {
        let conn = Connection::open_with_flags(
            source.path(),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let counter = |name: &str| -> rusqlite::Result<u64> {
            let value: i64 = conn.query_row(
                "SELECT value FROM counters WHERE name = ?1",
                [name],
                |row| row.get(0),
            )?;
            Ok(u64::try_from(value).unwrap_or(0))
        };
        let mut stmt = conn.prepare("SELECT task_id FROM claims WHERE detached = 1")?;
        let detached = stmt
            .query_map([], |row| row.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Extra {
            detached,
            last_token: counter("claim_token")?,
            event_seq: counter("event_seq")?,
        })
    };
    read().map_err(|e| storage(format!("reading {}: {e}", source.path().display())))
}

impl PostgresRegistry {
    /// Copies the registry `source` into this one: every agent with its
    /// capabilities, metadata, load and drain, every held claim with its
    /// token, lease and times (a detached claim stays detached), and the
    /// token counter, so the next claim's token is larger than every copied
    /// one. One transaction: all of it or nothing. Events are not copied
    /// (the copy writes its own `registered` and `claimed` events).
    ///
    /// Stop the source's writers first: a source that changes while it is
    /// read is refused.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when this registry holds agents or claims and
    /// `replace` is false (with `replace`, they are deleted first); a
    /// storage error when the source changed during the copy; errors of
    /// either database.
    pub fn copy_from(&self, source: &SqliteRegistry, replace: bool) -> Result<Copied> {
        let before = extra(source)?;
        let agents = source.list()?;
        let claims = source.claims(None)?;
        let after = extra(source)?;
        if after.event_seq != before.event_seq || after.last_token != before.last_token {
            return Err(storage(format!(
                "{} changed while it was read: stop its writers and copy again",
                source.path().display()
            )));
        }
        let last_token = claims
            .iter()
            .map(|c| c.token)
            .max()
            .unwrap_or(0)
            .max(after.last_token);
        self.write(|tx| {
            tx.execute(
                "SELECT set_config('roster.copying', 'on', true),
                        set_config('roster.registering', 'on', true)",
                &[],
            )?;
            let row = tx.query_opt(
                "SELECT (SELECT count(*) FROM agents), (SELECT count(*) FROM claims)",
                &[],
            )?;
            let (held_agents, held_claims): (i64, i64) = match row {
                Some(row) => (row.try_get(0)?, row.try_get(1)?),
                None => (0, 0),
            };
            if held_agents + held_claims > 0 {
                if !replace {
                    return Err(Error::invalid(
                        "to",
                        format!(
                            "{} holds {held_agents} agent(s) and {held_claims} claim(s): copy into an empty registry, or replace what it holds",
                            self.url()
                        ),
                    )
                    .into());
                }
                tx.execute("DELETE FROM claims", &[])?;
                tx.execute("DELETE FROM agents", &[])?;
            }
            for agent in &agents {
                insert_agent(tx, agent, &claims, &after.detached)?;
            }
            for claim in &claims {
                let detached = after.detached.contains(&claim.task_id);
                insert_claim(tx, claim, detached)?;
            }
            if last_token > 0 {
                let last = i64::try_from(last_token).unwrap_or(i64::MAX);
                tx.execute("SELECT setval('claim_tokens', $1::bigint)", &[&last])?;
            }
            Ok(())
        })?;
        Ok(Copied {
            agents: agents.len(),
            claims: claims.len(),
            last_token,
        })
    }
}

fn insert_agent(
    tx: &mut crate::postgres::conn::Tx<'_>,
    agent: &AgentInfo,
    claims: &[Claim],
    detached: &[String],
) -> crate::postgres::retry::Result<()> {
    // The claims inserted below add their slots back.
    let held = claims
        .iter()
        .filter(|c| c.agent_id == agent.id && !detached.contains(&c.task_id))
        .count();
    let own = i64::from(agent.current_load) - i64::try_from(held).unwrap_or(0);
    let max_load = i64::from(agent.max_load);
    let pid = agent.pid.map(i64::from);
    tx.execute(
        "INSERT INTO agents (id, name, status, last_heartbeat, current_load, max_load,
                             drained, host, pid, started_at)
         VALUES ($1::text, $2::text, $3::text, $4::timestamptz, $5::bigint, $6::bigint,
                 $7::boolean, $8::text, $9::bigint, $10::timestamptz)",
        &[
            &agent.id,
            &agent.name,
            &agent.status.as_str(),
            &agent.last_heartbeat,
            &own.max(0),
            &max_load,
            &agent.drained,
            &agent.host,
            &pid,
            &agent.started_at,
        ],
    )?;
    tx.execute(
        "INSERT INTO capabilities (agent_id, position, capability)
         SELECT $1::text, (c.position - 1)::integer, c.capability
         FROM unnest($2::text[]) WITH ORDINALITY AS c (capability, position)",
        &[&agent.id, &agent.capabilities],
    )?;
    let (keys, values): (Vec<&str>, Vec<&str>) = agent
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .unzip();
    tx.execute(
        "INSERT INTO metadata (agent_id, key, value)
         SELECT $1::text, m.key, m.value FROM unnest($2::text[], $3::text[]) AS m (key, value)",
        &[&agent.id, &keys, &values],
    )?;
    Ok(())
}

fn insert_claim(
    tx: &mut crate::postgres::conn::Tx<'_>,
    claim: &Claim,
    detached: bool,
) -> crate::postgres::retry::Result<()> {
    let token = i64::try_from(claim.token).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO claims (task_id, agent_id, token, claimed_at, lease_expires_at, detached)
         VALUES ($1::text, $2::text, $3::bigint, $4::timestamptz, $5::timestamptz, $6::boolean)",
        &[
            &claim.task_id,
            &claim.agent_id,
            &token,
            &claim.claimed_at,
            &claim.lease_expires_at,
            &detached,
        ],
    )?;
    Ok(())
}
