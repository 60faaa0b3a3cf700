//! What only the PostgreSQL registry has, against a real server (the one
//! `ROSTER_PG_URL` names, or a throwaway cluster): opening and migrating a
//! schema, refusing what is not roster's, errors by SQLSTATE, the schema's
//! rules under hand-typed SQL, the server's clock, and claims under
//! concurrency (no over-booking, SKIP LOCKED that neither waits for the best
//! agent nor misses the only free one).

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use common::eventually;
use common::pg::{self, SchemaGuard};
use roster::{
    AgentInfo, AgentRegistry, AgentStatus, Claimed, Error, ErrorKind, MAX_PG_POOL_SIZE,
    PostgresOptions, PostgresRegistry, Priority, RecoverReason, SqlAccess, SqlOptions, SqlValue,
    Task,
};

fn agent(id: &str, caps: &[&str], load: u32, max: u32) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        name: format!("agent {id}"),
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
        last_heartbeat: Utc::now(),
        current_load: load,
        max_load: max,
        ..AgentInfo::default()
    }
}

/// A task with a generated id.
fn task(labels: &[&str], priority: Priority) -> Task {
    Task {
        priority,
        ..named("", labels)
    }
}

/// The task `id` of medium priority.
fn named(id: &str, labels: &[&str]) -> Task {
    Task {
        id: id.into(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        priority: Priority::Medium,
    }
}

/// A plain client whose statements run in `schema`.
fn client_in(schema: &str) -> postgres::Client {
    let mut client = pg::client();
    client
        .batch_execute(&format!("SET search_path = {schema}"))
        .expect("set search_path");
    client
}

fn open_in(schema: &str) -> roster::Result<PostgresRegistry> {
    PostgresOptions::new().schema(schema).open(pg::url())
}

/// `url` with one more query parameter.
fn with_param(url: &str, param: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{param}")
}

// ------------------------------------------------------------ opening

#[test]
fn a_reopened_registry_and_a_second_handle_see_the_same_agents() -> roster::Result<()> {
    let (first, guard) = pg::registry();
    first.register(agent("a", &["x"], 1, 2))?;
    let second = open_in(&guard.0)?;
    assert_eq!(second.get("a")?, first.get("a")?);
    second.heartbeat("a")?;
    assert_eq!(
        first.get("a")?.last_heartbeat,
        second.get("a")?.last_heartbeat
    );
    drop(first);
    drop(second);
    let again = open_in(&guard.0)?;
    assert_eq!(again.list()?.len(), 1);
    assert!(!again.url().contains("password"));
    Ok(())
}

#[test]
fn many_processes_opening_a_fresh_schema_at_once_migrate_it_once() {
    let schema = pg::schema_name();
    let _guard = SchemaGuard(schema.clone());
    let gate = Arc::new(Barrier::new(8));
    let openers: Vec<_> = (0..8)
        .map(|_| {
            let (gate, schema) = (Arc::clone(&gate), schema.clone());
            thread::spawn(move || {
                gate.wait();
                open_in(&schema).map(|registry| registry.list().map(|all| all.len()))
            })
        })
        .collect();
    for opener in openers {
        let listed = opener.join().expect("opener thread");
        assert!(matches!(listed, Ok(Ok(0))), "{listed:?}");
    }
    let mut client = client_in(&schema);
    let versions: Vec<i64> = client
        .query(
            "SELECT version::bigint FROM roster_migrations ORDER BY version",
            &[],
        )
        .expect("versions")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let every: Vec<i64> = (1..=PostgresRegistry::SCHEMA_VERSION).collect();
    assert_eq!(versions, every);
}

#[test]
fn a_schema_written_by_a_newer_roster_is_refused_untouched() -> roster::Result<()> {
    let (registry, guard) = pg::registry();
    registry.register(agent("a", &[], 0, 0))?;
    drop(registry);
    let mut client = client_in(&guard.0);
    client
        .execute(
            "INSERT INTO roster_migrations (version, name) VALUES (99, 'from the future')",
            &[],
        )
        .expect("insert");
    match open_in(&guard.0) {
        Err(
            e @ Error::SchemaTooNew {
                found: 99,
                supported: PostgresRegistry::SCHEMA_VERSION,
                ..
            },
        ) => {
            assert_eq!(e.kind(), ErrorKind::Unusable);
            assert!(e.to_string().contains(&guard.0), "{e}");
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let count: i64 = client
        .query_one("SELECT count(*) FROM agents", &[])
        .expect("count")
        .get(0);
    assert_eq!(count, 1);
    Ok(())
}

#[test]
fn another_programs_tables_are_refused_untouched() {
    let schema = pg::schema_name();
    let _guard = SchemaGuard(schema.clone());
    let mut client = pg::client();
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.agents (who text); \
             INSERT INTO {schema}.agents VALUES ('theirs')"
        ))
        .expect("another program's table");
    match open_in(&schema) {
        Err(e @ Error::NotARegistry { .. }) => {
            assert!(
                e.to_string().contains("agents but no roster_migrations"),
                "{e}"
            )
        }
        other => panic!("expected NotARegistry, got {other:?}"),
    }
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1",
            &[&schema],
        )
        .expect("tables")
        .get(0);
    assert_eq!(tables, 1);
}

#[test]
fn a_reader_never_creates_a_registry() {
    let schema = pg::schema_name();
    let _guard = SchemaGuard(schema.clone());
    match PostgresOptions::new()
        .schema(schema.as_str())
        .create(false)
        .open(pg::url())
    {
        Err(e @ Error::NoRegistry { .. }) => assert_eq!(e.kind(), ErrorKind::Unusable),
        other => panic!("expected NoRegistry, got {other:?}"),
    }
    let exists: bool = pg::client()
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&schema],
        )
        .expect("schema")
        .get(0);
    assert!(!exists, "a reader created schema {schema}");
    // A database that does not exist is never created either.
    let config: postgres::Config = pg::url().parse().expect("url");
    let url = format!(
        "host={} port={} user={} dbname=roster_no_such_database",
        match &config.get_hosts()[0] {
            postgres::config::Host::Tcp(host) => host.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        },
        config.get_ports().first().copied().unwrap_or(5432),
        config.get_user().unwrap_or("postgres"),
    );
    match PostgresOptions::new().create(false).open(&url) {
        Err(Error::NoRegistry { path }) => {
            assert!(path.to_string_lossy().ends_with("/roster_no_such_database"))
        }
        other => panic!("expected NoRegistry, got {other:?}"),
    }
    match PostgresOptions::new().open(&url) {
        Err(e @ Error::Open { .. }) => {
            assert!(e.to_string().contains("does not exist"), "{e}")
        }
        other => panic!("expected Open, got {other:?}"),
    }
}

#[test]
fn a_server_that_is_not_there_is_a_transient_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("postgres://roster@127.0.0.1:{port}/roster?connect_timeout=5");
    match PostgresRegistry::open(&url) {
        Err(e @ Error::Database(_)) => {
            assert_eq!(e.kind(), ErrorKind::Storage);
            assert!(e.kind().is_transient());
            assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
}

#[test]
fn bad_options_and_urls_are_invalid_input() {
    let cases: Vec<(PostgresOptions, &str, &str)> = vec![
        (PostgresOptions::new().pool_size(0), pg::url(), "pool_size"),
        (
            PostgresOptions::new().pool_size(MAX_PG_POOL_SIZE + 1),
            pg::url(),
            "pool_size",
        ),
        (
            PostgresOptions::new().busy_timeout(Duration::ZERO),
            pg::url(),
            "busy_timeout",
        ),
        (
            PostgresOptions::new().statement_timeout(Duration::from_secs(30 * 24 * 3600)),
            pg::url(),
            "statement_timeout",
        ),
        (
            PostgresOptions::new().schema("Registry"),
            pg::url(),
            "schema",
        ),
        (
            PostgresOptions::new().schema("a; DROP"),
            pg::url(),
            "schema",
        ),
        (
            PostgresOptions::new().schema("pg_roster"),
            pg::url(),
            "schema",
        ),
        (
            PostgresOptions::new(),
            "postgres://h/db?sslmode=sometimes",
            "url",
        ),
        (
            PostgresOptions::new(),
            "postgres://h/db?no_such_option=1",
            "url",
        ),
        (PostgresOptions::new(), "dbname=roster", "url"),
        (PostgresOptions::new(), "host=h dbname='open", "url"),
    ];
    for (options, url, field) in cases {
        match options.clone().open(url) {
            Err(e @ Error::Invalid { .. }) => {
                assert_eq!(e.kind(), ErrorKind::InvalidInput);
                assert!(
                    e.to_string().starts_with(&format!("invalid {field}: ")),
                    "{options:?} {url}: {e}"
                );
            }
            other => panic!("{options:?} {url}: expected invalid {field}, got {other:?}"),
        }
    }
}

#[test]
fn a_database_that_is_not_utf8_is_refused() {
    let name = format!("roster_ascii_{}", std::process::id());
    let mut client = pg::client();
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .expect("drop a leftover database");
    client
        .batch_execute(&format!(
            "CREATE DATABASE {name} ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'"
        ))
        .expect("create a SQL_ASCII database (the role needs CREATEDB)");
    let config: postgres::Config = pg::url().parse().expect("url");
    let url = match &config.get_hosts()[0] {
        postgres::config::Host::Tcp(host) => format!(
            "host={host} port={} user={} dbname={name}",
            config.get_ports().first().copied().unwrap_or(5432),
            config.get_user().unwrap_or("postgres")
        ),
        postgres::config::Host::Unix(path) => format!("host={} dbname={name}", path.display()),
    };
    let outcome = PostgresRegistry::open(&url);
    client
        .batch_execute(&format!("DROP DATABASE {name}"))
        .expect("drop");
    match outcome {
        Err(e @ Error::Open { .. }) => assert!(e.to_string().contains("UTF8"), "{e}"),
        other => panic!("expected Open, got {other:?}"),
    }
}

// ------------------------------------------------- the schema's rules

/// Every code point near a boundary of the text rules: the controls, the
/// blocks that hold format characters and bidirectional controls, one past
/// each end.
fn code_points() -> Vec<char> {
    let mut points: Vec<u32> = (0x01..0x300).collect();
    for (low, high) in [
        (0x5F0, 0x720),
        (0x880, 0x8F0),
        (0x1800, 0x1810),
        (0x2000, 0x2080),
        (0xFEFE, 0xFF00),
        (0xFFF0, 0xFFFE),
        (0x110B0, 0x110D0),
        (0x13420, 0x13450),
        (0x1BC9F, 0x1BCA5),
        (0x1D170, 0x1D17C),
        (0xE0000, 0xE0082),
    ] {
        points.extend(low..=high);
    }
    points.into_iter().filter_map(char::from_u32).collect()
}

#[test]
fn the_schema_refuses_exactly_what_the_rules_refuse() -> roster::Result<()> {
    let (registry, guard) = pg::registry();
    registry.register(agent("holder", &[], 0, 0))?;
    let mut client = client_in(&guard.0);
    for c in code_points() {
        let text = format!("a{c}b");
        let valid_id = AgentInfo {
            id: text.clone(),
            ..AgentInfo::default()
        }
        .validated()
        .is_ok();
        let valid_name = AgentInfo {
            id: "x".into(),
            name: text.clone(),
            ..AgentInfo::default()
        }
        .validated()
        .is_ok();
        let valid_capability = AgentInfo {
            id: "x".into(),
            capabilities: vec![text.clone()],
            ..AgentInfo::default()
        }
        .validated()
        .is_ok();
        let stored_id = client
            .execute(
                "INSERT INTO agents (id, name) VALUES ($1::text, '')",
                &[&text],
            )
            .is_ok();
        let stored_name = client
            .execute(
                "INSERT INTO agents (id, name) VALUES ('named', $1::text)",
                &[&text],
            )
            .is_ok();
        let stored_capability = client
            .execute(
                "INSERT INTO capabilities (agent_id, position, capability) VALUES ('holder', 0, $1::text)",
                &[&text],
            )
            .is_ok();
        client
            .batch_execute("DELETE FROM agents WHERE id <> 'holder'; DELETE FROM capabilities")
            .expect("clean up");
        let point = format!("U+{:04X}", u32::from(c));
        assert_eq!(stored_id, valid_id, "id with {point}");
        assert_eq!(stored_name, valid_name, "name with {point}");
        assert_eq!(
            stored_capability, valid_capability,
            "capability with {point}"
        );
    }
    Ok(())
}

#[test]
fn hand_typed_sql_cannot_store_an_impossible_row() -> roster::Result<()> {
    let (registry, guard) = pg::registry();
    let mut full = agent("a", &["x", "y"], 1, 2);
    full.metadata.insert("zone".into(), "eu".into());
    registry.register(full)?;
    let mut client = client_in(&guard.0);
    for (sql, rule) in [
        (
            "UPDATE agents SET current_load = 3 WHERE id = 'a'",
            "agents_load_valid",
        ),
        (
            "UPDATE agents SET current_load = -1 WHERE id = 'a'",
            "roster_load_valid",
        ),
        (
            "UPDATE agents SET max_load = 4294967296 WHERE id = 'a'",
            "roster_load_valid",
        ),
        (
            "UPDATE agents SET status = 'sleeping' WHERE id = 'a'",
            "roster_status_valid",
        ),
        (
            "UPDATE agents SET last_heartbeat = 'infinity' WHERE id = 'a'",
            "roster_time_valid",
        ),
        (
            "UPDATE agents SET pid = 0 WHERE id = 'a'",
            "roster_pid_valid",
        ),
        (
            "UPDATE agents SET host = '' WHERE id = 'a'",
            "roster_host_valid",
        ),
        (
            "UPDATE agents SET id = 'b' WHERE id = 'a'",
            "agents.id cannot change",
        ),
        (
            "INSERT INTO capabilities VALUES ('ghost', 0, 'x')",
            "capabilities_agent_id_fkey",
        ),
        (
            "INSERT INTO capabilities VALUES ('a', 64, 'z')",
            "capabilities_position_valid",
        ),
        (
            "INSERT INTO capabilities VALUES ('a', 5, 'x')",
            "capabilities_by_capability",
        ),
        (
            "INSERT INTO metadata VALUES ('a', '', 'v')",
            "roster_word_valid",
        ),
        (
            "INSERT INTO metadata VALUES ('ghost', 'k', 'v')",
            "metadata_agent_id_fkey",
        ),
    ] {
        let err = client
            .batch_execute(sql)
            .expect_err(&format!("{sql} should be refused"));
        let db = err
            .as_db_error()
            .map(|db| format!("{} {}", db.message(), db.constraint().unwrap_or_default()));
        assert!(
            db.as_deref().is_some_and(|text| text.contains(rule)),
            "{sql}: {err:?}"
        );
    }
    assert_eq!(registry.get("a")?.current_load, 1);
    // Deleting an agent by hand deletes its capabilities and metadata.
    client
        .batch_execute("DELETE FROM agents WHERE id = 'a'")
        .expect("delete");
    let left: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM capabilities) + (SELECT count(*) FROM metadata)",
            &[],
        )
        .expect("count")
        .get(0);
    assert_eq!(left, 0);
    Ok(())
}

#[test]
fn the_readmes_hand_typed_sql_works() -> roster::Result<()> {
    let (registry, guard) = pg::registry();
    let mut silent = agent("silent", &["gpu"], 0, 2);
    silent.last_heartbeat = Utc::now() - TimeDelta::minutes(5);
    registry.register(silent)?;
    registry.register(agent("alive", &["gpu"], 1, 2))?;
    let mut client = client_in(&guard.0);
    let stale: Vec<String> = client
        .query(
            "SELECT id FROM agents WHERE last_heartbeat < now() - interval '30 seconds' ORDER BY id",
            &[],
        )
        .expect("who has not been seen")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(stale, ["silent"]);
    let holders: Vec<String> = client
        .query(
            "SELECT a.id FROM agents AS a JOIN capabilities AS c ON c.agent_id = a.id \
             WHERE c.capability = 'gpu' ORDER BY a.id",
            &[],
        )
        .expect("holders")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(holders, ["alive", "silent"]);
    client
        .batch_execute(
            "UPDATE agents SET last_heartbeat = now(), \
                 status = CASE status WHEN 'offline' THEN 'available' ELSE status END \
             WHERE id = 'silent'",
        )
        .expect("heartbeat by hand");
    assert!(registry.reap(Duration::from_secs(30))?.is_empty());

    // Claims: the leases that ran out, and a slot given back by hand.
    let short = registry.claim(&named("job-41", &["gpu"]), Some(Duration::from_micros(1)))?;
    registry.claim(&named("job-42", &["gpu"]), Some(Duration::from_secs(3600)))?;
    let expired = eventually("the one-microsecond lease to run out", || {
        let rows: Vec<(String, i64)> = client
            .query(
                "SELECT task_id, agent_id, token, lease_expires_at FROM claims \
                 WHERE lease_expires_at < now() ORDER BY token",
                &[],
            )
            .expect("expired leases")
            .iter()
            .map(|row| (row.get(0), row.get(2)))
            .collect();
        (!rows.is_empty()).then_some(rows)
    });
    assert_eq!(expired, [("job-41".to_owned(), short.claim.token as i64)]);
    let loads = |registry: &PostgresRegistry| -> roster::Result<u32> {
        Ok(registry.list()?.iter().map(|a| a.current_load).sum())
    };
    let before = loads(&registry)?;
    client
        .batch_execute("DELETE FROM claims WHERE task_id = 'job-42'")
        .expect("give a slot back by hand");
    assert_eq!(loads(&registry)?, before - 1);
    Ok(())
}

/// Runs `sql` by hand and returns the server's message and constraint, or
/// fails if it was accepted.
fn refused(client: &mut postgres::Client, sql: &str) -> String {
    let err = client
        .batch_execute(sql)
        .expect_err(&format!("{sql} should be refused"));
    err.as_db_error()
        .map(|db| format!("{} {}", db.message(), db.constraint().unwrap_or_default()))
        .unwrap_or_else(|| panic!("{sql}: {err:?}"))
}

/// Each agent's stored load and the attached claims it holds.
fn loads(client: &mut postgres::Client) -> Vec<(String, i64, i64)> {
    client
        .query(
            "SELECT a.id, a.current_load,
                    (SELECT count(*) FROM claims AS c WHERE c.agent_id = a.id AND NOT c.detached)
             FROM agents AS a ORDER BY a.id",
            &[],
        )
        .expect("loads")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

#[test]
fn hand_typed_sql_on_claims_keeps_loads_right() -> roster::Result<()> {
    let (registry, guard) = pg::registry();
    registry.register(agent("a", &["x"], 1, 4))?;
    registry.register(agent("b", &["y"], 0, 1))?;
    let j1 = registry.claim(&named("j1", &["x"]), None)?.claim;
    registry.claim(&named("j2", &["x"]), Some(Duration::from_secs(3600)))?;
    let mut client = client_in(&guard.0);
    assert_eq!(
        loads(&mut client),
        [("a".to_owned(), 3, 2), ("b".to_owned(), 0, 0)]
    );

    // Deleting a claim by hand gives its slot back.
    client
        .batch_execute("DELETE FROM claims WHERE task_id = 'j1'")
        .expect("delete a claim");
    assert_eq!(registry.get("a")?.current_load, 2);
    // Inserting one takes a slot, a token from the sequence and the
    // server's now.
    client
        .batch_execute("INSERT INTO claims (task_id, agent_id) VALUES ('by-hand', 'a')")
        .expect("insert a claim");
    let by_hand = registry
        .claims(Some("a"))?
        .into_iter()
        .find(|c| c.task_id == "by-hand")
        .expect("the claim typed by hand");
    assert!(by_hand.token > j1.token);
    assert!((Utc::now() - by_hand.claimed_at).abs() < TimeDelta::minutes(1));
    assert_eq!(registry.get("a")?.current_load, 3);

    for (sql, rule) in [
        (
            "INSERT INTO claims (task_id, agent_id, token) VALUES ('t', 'a', 999)",
            "claims.token is given by the sequence claim_tokens",
        ),
        (
            "INSERT INTO claims (task_id, agent_id) VALUES ('j2', 'b')",
            "task j2 is already claimed by agent a",
        ),
        (
            "INSERT INTO claims (task_id, agent_id) VALUES ('t', 'ghost')",
            "must be the id of a row in agents",
        ),
        (
            "INSERT INTO claims (task_id, agent_id, detached) VALUES ('t', 'a', true)",
            "a new claim is attached",
        ),
        (
            "INSERT INTO claims (task_id, agent_id) VALUES ('', 'a')",
            "roster_id_valid",
        ),
        (
            "INSERT INTO claims (task_id, agent_id, lease_expires_at) VALUES ('t', 'a', 'infinity')",
            "roster_time_valid",
        ),
        (
            "INSERT INTO claims (task_id, agent_id) VALUES ('t1', 'b'), ('t2', 'b')",
            "agents_load_valid",
        ),
        (
            "UPDATE agents SET current_load = 1 WHERE id = 'a'",
            "agents.current_load cannot drop below the 2 claim(s) agent a holds",
        ),
        (
            "UPDATE claims SET token = token + 1000 WHERE task_id = 'j2'",
            "a claim cannot change except its lease_expires_at",
        ),
        (
            "UPDATE claims SET agent_id = 'b' WHERE task_id = 'j2'",
            "a claim cannot change except its lease_expires_at",
        ),
        ("TRUNCATE claims", "DELETE FROM claims instead"),
    ] {
        let said = refused(&mut client, sql);
        assert!(said.contains(rule), "{sql}: {said}");
    }
    assert_eq!(
        loads(&mut client),
        [("a".to_owned(), 3, 2), ("b".to_owned(), 0, 0)]
    );

    // A lease ended by hand is recovered as expired; detaching by hand
    // gives the slot back.
    client
        .batch_execute(
            "UPDATE claims SET lease_expires_at = now() - interval '1 second' WHERE task_id = 'j2'",
        )
        .expect("end a lease");
    let recovered = registry.recover()?;
    assert_eq!(recovered.len(), 1);
    assert_eq!(
        (recovered[0].claim.task_id.as_str(), recovered[0].reason),
        ("j2", RecoverReason::LeaseExpired)
    );
    registry.claim(&named("j3", &["x"]), None)?;
    client
        .batch_execute("UPDATE claims SET detached = true WHERE task_id = 'j3'")
        .expect("detach by hand");
    assert_eq!(registry.get("a")?.current_load, 2);
    let said = refused(
        &mut client,
        "UPDATE claims SET detached = false WHERE task_id = 'j3'",
    );
    assert!(said.contains("a claim cannot change"), "{said}");

    // From a session whose search_path does not name the schema, the
    // triggers still find the schema's tables.
    let mut elsewhere = pg::client();
    elsewhere
        .batch_execute(&format!(
            "SET search_path = public; DELETE FROM {0}.claims WHERE task_id = 'by-hand'; \
             INSERT INTO {0}.claims (task_id, agent_id) VALUES ('from-public', 'b')",
            guard.0
        ))
        .expect("claims typed from another search_path");
    assert_eq!(
        loads(&mut client),
        [("a".to_owned(), 1, 0), ("b".to_owned(), 1, 1)]
    );

    // Deleting an agent by hand detaches its claims: listed, recoverable as
    // agent_gone, and not inherited by a new agent of the same id.
    client
        .batch_execute("DELETE FROM agents WHERE id = 'b'")
        .expect("delete an agent");
    registry.register(agent("b", &["y"], 0, 1))?;
    assert_eq!(registry.get("b")?.current_load, 0);
    assert_eq!(registry.claims(Some("b"))?.len(), 1);
    // TRUNCATE agents, which fires no row trigger, detaches every claim.
    registry.claim(&named("j4", &["x"]), None)?;
    client
        .batch_execute("TRUNCATE agents CASCADE")
        .expect("truncate agents");
    let reasons: Vec<(String, RecoverReason)> = registry
        .recover()?
        .into_iter()
        .map(|r| (r.claim.task_id, r.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            ("j3".to_owned(), RecoverReason::AgentGone),
            ("from-public".to_owned(), RecoverReason::AgentGone),
            ("j4".to_owned(), RecoverReason::AgentGone),
        ]
    );
    assert!(registry.claims(None)?.is_empty());
    Ok(())
}

// ------------------------------------------------------- the clock

#[test]
fn heartbeat_and_reap_use_the_servers_clock() -> roster::Result<()> {
    let (registry, guard) = pg::registry();
    // A client whose clock runs a day ahead registers an agent: register
    // keeps the time it is given.
    let mut ahead = agent("ahead", &[], 0, 0);
    ahead.last_heartbeat = Utc::now() + TimeDelta::days(1);
    registry.register(ahead.clone())?;
    assert!(registry.reap(Duration::from_secs(60))?.is_empty());
    // heartbeat writes the server's now(), whatever the client's clock.
    registry.heartbeat("ahead")?;
    let mut client = client_in(&guard.0);
    let (server_wrote, lag): (bool, f64) = {
        let row = client
            .query_one(
                "SELECT last_heartbeat <= now(), extract(epoch FROM now() - last_heartbeat)::float8 \
                 FROM agents WHERE id = 'ahead'",
                &[],
            )
            .expect("read");
        (row.get(0), row.get(1))
    };
    assert!(
        server_wrote && lag < 60.0,
        "heartbeat {lag} s behind the server"
    );
    // reap compares with the server's now(): an agent stamped by the server
    // one hour ago is stale for a ttl of 30 minutes, one stamped now is not.
    client
        .batch_execute(
            "INSERT INTO agents (id, name, last_heartbeat) VALUES \
             ('hour-ago', '', now() - interval '1 hour'), ('just-now', '', now())",
        )
        .expect("insert");
    assert_eq!(registry.reap(Duration::from_secs(1800))?, ["hour-ago"]);
    Ok(())
}

// ---------------------------------------------------- concurrency

#[test]
fn claims_from_many_threads_and_handles_never_overbook() -> roster::Result<()> {
    let (registry, guard) = pg::registry();
    let mut free = 0;
    for i in 0..12_u32 {
        let (load, max) = (i % 2, 2 + i % 5);
        let mut a = agent(&format!("agent-{i:02}"), &["x"], load, max);
        if i % 3 == 0 {
            a.status = AgentStatus::Busy;
        }
        registry.register(a)?;
        free += max - load;
    }
    let handles: Vec<PostgresRegistry> = (0..4)
        .map(|_| open_in(&guard.0))
        .collect::<roster::Result<_>>()?;
    let gate = Arc::new(Barrier::new(8));
    let claimers: Vec<_> = (0..8)
        .map(|n| {
            let (gate, registry) = (Arc::clone(&gate), handles[n % 4].clone());
            thread::spawn(move || -> roster::Result<u32> {
                gate.wait();
                let mut claims = 0;
                loop {
                    let priority = if claims % 4 == 0 {
                        Priority::Critical
                    } else {
                        Priority::Medium
                    };
                    match registry.claim(&task(&["x"], priority), None) {
                        Ok(Claimed { agent: got, .. }) => {
                            assert!(got.current_load <= got.max_load, "{got:?}");
                            claims += 1;
                        }
                        Err(Error::NoEligibleAgent) => return Ok(claims),
                        Err(other) => return Err(other),
                    }
                }
            })
        })
        .collect();
    let mut claimed = 0;
    for claimer in claimers {
        claimed += claimer.join().expect("claimer thread")?;
    }
    assert_eq!(claimed, free);
    for agent in registry.list()? {
        assert_eq!(agent.current_load, agent.max_load, "{}", agent.id);
    }
    Ok(())
}

#[test]
fn one_task_claimed_from_many_threads_at_once_is_held_once() -> roster::Result<()> {
    let (registry, guard) = pg::registry();
    for i in 0..4 {
        registry.register(agent(&format!("agent-{i}"), &["x"], 0, 2))?;
    }
    let gate = Arc::new(Barrier::new(8));
    let claimers: Vec<_> = (0..8)
        .map(|n| {
            let gate = Arc::clone(&gate);
            let registry = if n % 2 == 0 {
                Ok(registry.clone())
            } else {
                open_in(&guard.0)
            };
            thread::spawn(move || {
                let registry = registry?;
                gate.wait();
                registry.claim(&named("the-task", &["x"]), None)
            })
        })
        .collect();
    let (mut won, mut refused) = (Vec::new(), Vec::new());
    for claimer in claimers {
        match claimer.join().expect("claimer thread") {
            Ok(claimed) => won.push(claimed.claim),
            Err(Error::AlreadyClaimed { task_id, token, .. }) => refused.push((task_id, token)),
            Err(other) => return Err(other),
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
    assert_eq!(refused.len(), 7);
    assert!(
        refused
            .iter()
            .all(|(task, token)| task == "the-task" && *token == won[0].token),
        "{refused:?}"
    );
    assert_eq!(registry.claims(None)?, won);
    let loads: u32 = registry.list()?.iter().map(|a| a.current_load).sum();
    assert_eq!(loads, 1);
    // The refused claims cost no token: the next claim gets the next one.
    let next = registry.claim(&named("next", &["x"]), None)?;
    assert_eq!(next.claim.token, won[0].token + 1);
    Ok(())
}

#[test]
fn a_locked_best_agent_is_skipped_not_waited_for() -> roster::Result<()> {
    let (registry, guard) = pg::registry();
    registry.register(agent("best", &["x"], 0, 4))?;
    registry.register(agent("second", &["x"], 1, 4))?;
    let mut client = client_in(&guard.0);
    let mut holder = client.transaction().expect("begin");
    holder
        .execute("SELECT 1 FROM agents WHERE id = 'best' FOR UPDATE", &[])
        .expect("lock best");
    // Had claim waited for "best", it would fail with Busy after the busy
    // timeout, since the lock is held until after it returns.
    let got = registry.claim(&task(&["x"], Priority::Medium), None)?.agent;
    assert_eq!(got.id, "second");
    holder.commit().expect("commit");
    // Once nobody holds it, the best agent is chosen again.
    assert_eq!(
        registry
            .claim(&task(&["x"], Priority::Medium), None)?
            .agent
            .id,
        "best"
    );
    Ok(())
}

/// A registry in `schema` whose sessions are named `application` in
/// `pg_stat_activity`, and that waits up to two minutes for a lock.
fn open_as(schema: &str, application: &str) -> roster::Result<PostgresRegistry> {
    PostgresOptions::new()
        .schema(schema)
        .busy_timeout(Duration::from_secs(120))
        .open(&with_param(
            pg::url(),
            &format!("application_name={application}"),
        ))
}

/// Returns once one session named `application` waits for a lock (held by
/// the server process `blocker`, when given).
fn wait_for_lock(what: &str, application: &str, blocker: Option<i32>) {
    let mut watcher = pg::client();
    eventually(what, || {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = $1 AND wait_event_type = 'Lock' \
                   AND ($2::int IS NULL OR $2 = ANY (pg_blocking_pids(pid)))",
                &[&application, &blocker],
            )
            .expect("pg_stat_activity")
            .get(0);
        (waiting == 1).then_some(())
    });
}

#[test]
fn the_only_free_agent_locked_is_waited_for_not_reported_missing() -> roster::Result<()> {
    let schema = pg::schema_name();
    let _guard = SchemaGuard(schema.clone());
    let application = format!("claim-{schema}");
    let registry = open_as(&schema, &application)?;
    registry.register(agent("only", &["x"], 0, 3))?;
    let mut client = client_in(&schema);
    let mut holder = client.transaction().expect("begin");
    holder
        .execute("UPDATE agents SET name = 'held' WHERE id = 'only'", &[])
        .expect("lock the only agent");
    let claimer = {
        let registry = registry.clone();
        thread::spawn(move || registry.claim(&task(&["x"], Priority::High), None))
    };
    wait_for_lock("the claim waiting for the row lock", &application, None);
    holder.commit().expect("commit");
    let got = claimer.join().expect("claimer thread")?.agent;
    assert_eq!(
        (got.id.as_str(), got.current_load, got.name.as_str()),
        ("only", 1, "held")
    );
    Ok(())
}

/// A release or a recover holds a claim's row and then, from the claims'
/// trigger, updates its agent's. Deregister takes them in the same order:
/// while it waits for a claim held elsewhere, the agent's row is still free,
/// so the release goes through at once instead of meeting deregister in a
/// deadlock that the server breaks only after `deadlock_timeout` (a second),
/// taking one of them back.
#[test]
fn deregister_waits_for_a_held_claim_before_it_locks_the_agent() -> roster::Result<()> {
    let schema = pg::schema_name();
    let _guard = SchemaGuard(schema.clone());
    let application = format!("deregister-{schema}");
    let registry = open_as(&schema, &application)?;
    registry.register(agent("leaving", &["x"], 0, 3))?;
    registry.claim(&named("released", &["x"]), None)?;
    let kept = registry.claim(&named("kept", &["x"]), None)?.claim;
    let mut client = client_in(&schema);
    let mut releaser = client.transaction().expect("begin");
    releaser
        .execute(
            "SELECT 1 FROM claims WHERE task_id = 'released' FOR UPDATE",
            &[],
        )
        .expect("lock the claim");
    let deregistering = {
        let registry = registry.clone();
        thread::spawn(move || registry.deregister("leaving"))
    };
    wait_for_lock("deregister waiting for the claim's row", &application, None);
    releaser
        .execute(
            "SELECT 1 FROM agents WHERE id = 'leaving' FOR UPDATE NOWAIT",
            &[],
        )
        .unwrap_or_else(|e| {
            panic!("deregister holds the agent's row while it waits for a claim: {e:?}")
        });
    let deleted = releaser
        .execute("DELETE FROM claims WHERE task_id = 'released'", &[])
        .expect("release the claim");
    assert_eq!(deleted, 1);
    releaser.commit().expect("commit");
    deregistering.join().expect("deregister thread")?;
    assert!(matches!(registry.get("leaving"), Err(Error::NotFound(_))));
    // The claim released stays released; the other one is recoverable.
    let recovered = registry.recover()?;
    assert_eq!(
        recovered
            .iter()
            .map(|r| (r.claim.token, r.reason))
            .collect::<Vec<_>>(),
        [(kept.token, RecoverReason::AgentGone)]
    );
    assert!(registry.claims(None)?.is_empty());
    Ok(())
}

/// A claim that must wait waits for one agent's row and holds no other:
/// when the agent it waited for stopped being eligible (drained meanwhile),
/// it lets go of it before it waits for the next. A waiting `FOR UPDATE`
/// walk kept it, and whoever held the next agent and then wanted the first
/// (a recover's trigger, a reap) met the claim in a deadlock.
#[test]
fn a_waiting_claim_holds_no_agent_it_did_not_take() -> roster::Result<()> {
    let schema = pg::schema_name();
    let _guard = SchemaGuard(schema.clone());
    let application = format!("waiting-claim-{schema}");
    let registry = open_as(&schema, &application)?;
    registry.register(agent("first", &["x"], 0, 1))?;
    registry.register(agent("second", &["x"], 0, 1))?;
    let (mut drainer_client, mut holder_client) = (client_in(&schema), client_in(&schema));
    let holder_pid: i32 = holder_client
        .query_one("SELECT pg_backend_pid()", &[])
        .expect("pid")
        .get(0);
    let mut drainer = drainer_client.transaction().expect("begin");
    drainer
        .execute("UPDATE agents SET drained = true WHERE id = 'first'", &[])
        .expect("drain first");
    let mut holder = holder_client.transaction().expect("begin");
    holder
        .execute("SELECT 1 FROM agents WHERE id = 'second' FOR UPDATE", &[])
        .expect("hold second");
    let claimer = {
        let registry = registry.clone();
        thread::spawn(move || registry.claim(&named("waiting", &["x"]), None))
    };
    wait_for_lock("the claim waiting for an agent", &application, None);
    drainer.commit().expect("commit the drain");
    wait_for_lock(
        "the claim waiting for the second agent",
        &application,
        Some(holder_pid),
    );
    let mut other = client_in(&schema);
    other
        .execute(
            "SELECT 1 FROM agents WHERE id = 'first' FOR UPDATE NOWAIT",
            &[],
        )
        .unwrap_or_else(|e| panic!("the waiting claim still holds the drained agent: {e:?}"));
    holder.commit().expect("commit");
    let claimed = claimer.join().expect("claimer thread")?;
    assert_eq!(
        (claimed.agent.id.as_str(), claimed.agent.current_load),
        ("second", 1)
    );
    assert_eq!(registry.get("first")?.current_load, 0);
    Ok(())
}

#[test]
fn a_row_held_past_the_busy_timeout_is_busy_and_changes_nothing() -> roster::Result<()> {
    let schema = pg::schema_name();
    let _guard = SchemaGuard(schema.clone());
    let registry = PostgresOptions::new()
        .schema(schema.as_str())
        .busy_timeout(Duration::from_millis(200))
        .open(pg::url())?;
    registry.register(agent("held", &["x"], 0, 1))?;
    let before = registry.get("held")?;
    let mut client = client_in(&schema);
    let mut holder = client.transaction().expect("begin");
    holder
        .execute("SELECT 1 FROM agents WHERE id = 'held' FOR UPDATE", &[])
        .expect("lock");
    for result in [
        registry.heartbeat("held"),
        registry.drain("held", true),
        registry
            .claim(&task(&["x"], Priority::Medium), None)
            .map(drop),
    ] {
        match result {
            Err(e @ Error::Busy(_)) => {
                assert_eq!(e.kind(), ErrorKind::Busy);
                assert!(e.kind().is_transient());
            }
            other => panic!("expected Busy, got {other:?}"),
        }
    }
    holder.rollback().expect("rollback");
    assert_eq!(registry.get("held")?, before);
    Ok(())
}

// ------------------------------------------- a client with a wrong clock

/// The child side of
/// `a_client_whose_clock_is_behind_cannot_make_a_live_agent_look_dead`: does
/// nothing unless run by it, under `faketime`.
#[test]
#[ignore = "a child process of a_client_whose_clock_is_behind_cannot_make_a_live_agent_look_dead"]
fn skewed_client() -> roster::Result<()> {
    let (Ok(url), Ok(schema)) = (
        std::env::var("ROSTER_SKEWED_URL"),
        std::env::var("ROSTER_SKEWED_SCHEMA"),
    ) else {
        return Ok(());
    };
    let registry = PostgresOptions::new().schema(schema).open(&url)?;
    for id in ["heartbeating", "self-stamped"] {
        // register keeps the time it is given: this client's own clock.
        registry.register(AgentInfo {
            id: id.into(),
            last_heartbeat: roster::now(),
            ..AgentInfo::default()
        })?;
    }
    registry.heartbeat("heartbeating")?;
    // claimed_at and the lease's end are the server's now and now + 60 s.
    registry.claim(&named("skewed-lease", &[]), Some(Duration::from_secs(60)))?;
    Ok(())
}

#[test]
fn a_client_whose_clock_is_behind_cannot_make_a_live_agent_look_dead() -> roster::Result<()> {
    let (registry, guard) = pg::registry();
    let output = std::process::Command::new("faketime")
        .args(["-f", "-2h"])
        .arg(std::env::current_exe().expect("this test binary"))
        .args(["--exact", "skewed_client", "--ignored", "--test-threads=1"])
        .env("ROSTER_SKEWED_URL", pg::url())
        .env("ROSTER_SKEWED_SCHEMA", &guard.0)
        .output()
        .expect("run the child under faketime (apt-get install -y faketime)");
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).contains("1 passed"),
        "child failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // The child's clock really was two hours behind: what it stamped itself
    // is that old.
    let self_stamped = registry.get("self-stamped")?.last_heartbeat;
    let behind = Utc::now() - self_stamped;
    assert!(
        behind > TimeDelta::minutes(110) && behind < TimeDelta::minutes(130),
        "the child's clock was {behind} behind"
    );
    // Yet its heartbeat carried the server's time: only the agent it
    // stamped itself is reaped.
    assert_eq!(registry.reap(Duration::from_secs(60))?, ["self-stamped"]);
    assert_eq!(registry.get("heartbeating")?.status, AgentStatus::Available);
    // Its claim's lease runs in the server's clock too: taken now, ending in
    // a minute, so it is not recovered (with the child's clock it would have
    // ended two hours ago).
    let claims = registry.claims(None)?;
    assert_eq!(claims.len(), 1);
    let claim = &claims[0];
    assert_eq!(
        (claim.task_id.as_str(), claim.agent_id.as_str()),
        ("skewed-lease", "heartbeating")
    );
    assert!(
        (Utc::now() - claim.claimed_at).abs() < TimeDelta::minutes(5),
        "claimed at {}",
        claim.claimed_at
    );
    assert_eq!(
        claim.lease_expires_at.map(|end| end - claim.claimed_at),
        Some(TimeDelta::seconds(60))
    );
    assert!(registry.recover()?.is_empty());
    Ok(())
}

/// The server process that ran `SELECT pg_backend_pid()` through
/// `query_each` with `options`.
fn backend_of(registry: &PostgresRegistry, options: &SqlOptions) -> i64 {
    let mut pid = None;
    registry
        .query_each("SELECT pg_backend_pid()", options, |_, row| {
            if let [SqlValue::Integer(value)] = row {
                pid = Some(*value);
            }
            Ok(())
        })
        .expect("query_each");
    pid.expect("one row with the pid")
}

#[test]
fn pooled_reads_stay_on_the_pool_and_ad_hoc_sql_gets_a_session_of_its_own() {
    let (registry, _guard) = pg::registry();
    let mut admin = pg::client();
    let alive = |admin: &mut postgres::Client, pid: i64| {
        let pid = i32::try_from(pid).expect("a pid");
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .expect("pg_stat_activity")
            .get::<_, i64>(0)
            == 1
    };
    let own = backend_of(&registry, &SqlOptions::new(SqlAccess::ReadOnly));
    let pooled = backend_of(&registry, &SqlOptions::new(SqlAccess::ReadOnly).pooled());
    assert_ne!(own, pooled);
    // The statement's own session ends with it; the pooled one stays for
    // the next statement.
    eventually("the ad-hoc session to end", || {
        (!alive(&mut admin, own)).then_some(())
    });
    assert!(alive(&mut admin, pooled), "the pooled session is kept");
    // A write, or a cancel flag, never runs on the pool.
    let write = SqlOptions::new(SqlAccess::ReadWrite).pooled();
    let written = backend_of(&registry, &write);
    eventually("the writing session to end", || {
        (!alive(&mut admin, written)).then_some(())
    });
}
