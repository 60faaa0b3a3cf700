//! Many OS processes on one PostgreSQL registry, some of them killed with
//! SIGKILL while they work: claims are never lost, never recovered twice,
//! never over-book an agent, and loads always equal the claims held.
//!
//! The children are this test binary run again (`common::child`), pointed
//! at the parent's server through `ROSTER_PG_URL` and at the test's schema
//! through `ROSTER_DB`. They report on stdout with lines starting with `@`,
//! say `ready` and wait for `go`, and stop when their stdin closes. Nothing
//! waits for time to pass: a dispatcher is killed after a random number of
//! its acknowledgements, not after a random delay.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::Utc;
use common::child::{Orders, report};
use common::pg::{self, SchemaGuard};
use common::{Rng, Running};
use roster::{
    AgentInfo, AgentRegistry, AgentStatus, Error, PostgresOptions, PostgresRegistry, Priority, Task,
};

const AGENTS: u64 = 8;
const MAX_LOAD: u32 = 3;

fn agent_id(i: u64) -> String {
    format!("agent-{i:02}")
}

fn worker_agent(id: &str, label: &str) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        name: format!("agent {id}"),
        capabilities: vec![label.into(), "any".into()],
        status: AgentStatus::Available,
        last_heartbeat: Utc::now(),
        current_load: 0,
        max_load: MAX_LOAD,
        ..AgentInfo::default()
    }
}

fn label_of(i: u64) -> &'static str {
    ["x", "y"][(i % 2) as usize]
}

fn open(schema: &str) -> PostgresRegistry {
    PostgresOptions::new()
        .schema(schema)
        .open(pg::url())
        .unwrap_or_else(|e| panic!("open schema {schema}: {e}"))
}

// ---------------------------------------------------------------- children

/// The entry point of every child process.
#[test]
#[ignore = "helper: the process tests run it as a child process"]
fn child() {
    let Some(role) = common::child::role() else {
        return;
    };
    let schema = common::child::var(common::child::DB_VAR);
    match role.as_str() {
        "dispatcher" => dispatcher(&schema),
        "recoverer" => recoverer(&schema),
        other => panic!("unknown child role {other}"),
    }
}

/// Claims tasks with and without leases, releases and renews some of what
/// it holds, and now and then takes an agent offline and back or
/// deregisters and registers it again, until its stdin closes (or it is
/// killed). Reports `claim TASK TOKEN AGENT` once a claim returned,
/// `releasing TASK TOKEN` before it asks for a release and `released` or
/// `stale` with the answer. Any other error fails the child.
fn dispatcher(schema: &str) {
    let registry = open(schema);
    let mut rng = Rng::from_env();
    let mut held: Vec<roster::Claim> = Vec::new();
    common::child::ready_then_wait_for_go();
    let mut orders = Orders::listen();
    while !orders.stopped() {
        orders.before_operation();
        let i = rng.below(AGENTS);
        let id = agent_id(i);
        match rng.below(20) {
            0..=8 => {
                let lease = match rng.below(3) {
                    0 => None,
                    1 => Some(Duration::from_micros(1 + rng.below(2000))),
                    _ => Some(Duration::from_secs(3600)),
                };
                let labels = match rng.below(3) {
                    0 => vec!["x".to_owned()],
                    1 => vec!["y".to_owned()],
                    _ => vec![],
                };
                let task = Task {
                    id: String::new(),
                    labels,
                    priority: Priority::ALL[rng.below(4) as usize],
                };
                match registry.claim(&task, lease) {
                    Ok(claimed) => {
                        let agent = &claimed.agent;
                        assert!(
                            agent.current_load <= agent.max_load,
                            "over-booked: {agent:?}"
                        );
                        assert_eq!(claimed.claim.agent_id, agent.id);
                        report(format_args!(
                            "claim {} {} {}",
                            claimed.claim.task_id, claimed.claim.token, agent.id
                        ));
                        held.push(claimed.claim);
                    }
                    Err(Error::NoEligibleAgent) => {}
                    Err(e) => panic!("claim: {e}"),
                }
            }
            9..=14 => {
                if !held.is_empty() {
                    let claim = held.swap_remove(rng.below(held.len() as u64) as usize);
                    report(format_args!("releasing {} {}", claim.task_id, claim.token));
                    match registry.release(&claim.task_id, Some(claim.token)) {
                        Ok(released) => {
                            assert_eq!(released, claim);
                            report(format_args!("released {} {}", claim.task_id, claim.token));
                        }
                        Err(Error::StaleClaim { .. }) => {
                            report(format_args!("stale {} {}", claim.task_id, claim.token));
                        }
                        Err(e) => panic!("release: {e}"),
                    }
                }
            }
            15..=16 => {
                if !held.is_empty() {
                    let at = rng.below(held.len() as u64) as usize;
                    let claim = &mut held[at];
                    match registry.renew(&claim.task_id, Some(claim.token), Duration::from_secs(60))
                    {
                        Ok(renewed) => {
                            assert_eq!(
                                (&renewed.task_id, renewed.token),
                                (&claim.task_id, claim.token)
                            );
                            *claim = renewed;
                        }
                        Err(Error::StaleClaim { .. }) => {}
                        Err(e) => panic!("renew: {e}"),
                    }
                }
            }
            17 => {
                // Offline for an instant: a recoverer may take its claims.
                match registry.set_status(&id, AgentStatus::Offline) {
                    Ok(()) | Err(Error::NotFound(_)) => {}
                    Err(e) => panic!("set_status: {e}"),
                }
                match registry.heartbeat(&id) {
                    Ok(()) | Err(Error::NotFound(_)) => {}
                    Err(e) => panic!("heartbeat: {e}"),
                }
            }
            18 => {
                // A restarted agent: its claims stay, detached, until
                // recovered as agent_gone.
                match registry.deregister(&id) {
                    Ok(()) | Err(Error::NotFound(_)) => {}
                    Err(e) => panic!("deregister: {e}"),
                }
                registry
                    .register(worker_agent(&id, label_of(i)))
                    .unwrap_or_else(|e| panic!("register: {e}"));
            }
            _ => match registry.heartbeat(&id) {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(e) => panic!("heartbeat: {e}"),
            },
        }
        orders.after_operation();
    }
}

/// Checks, in one snapshot, that every agent's load equals the claims it
/// holds and stays within its maximum, then recovers, reporting `recovered
/// TASK TOKEN REASON` for each claim taken back, until its stdin closes.
fn recoverer(schema: &str) {
    let registry = open(schema);
    let mut client = pg::client();
    client
        .batch_execute(&format!("SET search_path = {schema}"))
        .expect("search_path");
    common::child::ready_then_wait_for_go();
    let orders = Orders::listen();
    let mut rounds = 0_u64;
    while !orders.stopped() {
        assert_loads_equal_claims(&mut client);
        for recovered in registry
            .recover()
            .unwrap_or_else(|e| panic!("recover: {e}"))
        {
            report(format_args!(
                "recovered {} {} {}",
                recovered.claim.task_id, recovered.claim.token, recovered.reason
            ));
        }
        rounds += 1;
    }
    report(format_args!("rounds {rounds}"));
}

/// Every agent's `current_load` is the number of attached claims it holds
/// (all agents here register with no untracked load) and at most its
/// `max_load`, in one snapshot.
fn assert_loads_equal_claims(client: &mut postgres::Client) {
    let rows = client
        .query(
            "SELECT a.id, a.current_load, a.max_load,
                    (SELECT count(*) FROM claims AS c WHERE c.agent_id = a.id AND NOT c.detached)
             FROM agents AS a ORDER BY a.id",
            &[],
        )
        .expect("loads");
    for row in rows {
        let (id, load, max, held): (String, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        assert_eq!(load, held, "{id}: load {load} but {held} claims held");
        assert!(load <= max, "{id}: over-booked, {load} of {max}");
    }
}

// ------------------------------------------------------------------- tests

/// What the children said about one claim, by (task, token).
#[derive(Debug, Default)]
struct Story {
    claimed: bool,
    releasing: bool,
    released: bool,
    stale: bool,
    recovered: Vec<String>,
}

/// Adds one report of a child to the stories; true for a dispatcher's
/// `claim`.
fn record(stories: &mut BTreeMap<(String, u64), Story>, report: &str) -> bool {
    let parts: Vec<&str> = report.split(' ').collect();
    match parts.as_slice() {
        ["claim", task, token, _agent] => {
            let story = entry(stories, task, token);
            assert!(!story.claimed, "claim {task} {token} reported twice");
            story.claimed = true;
            true
        }
        ["releasing", task, token] => {
            entry(stories, task, token).releasing = true;
            false
        }
        ["released", task, token] => {
            entry(stories, task, token).released = true;
            false
        }
        ["stale", task, token] => {
            entry(stories, task, token).stale = true;
            false
        }
        ["recovered", task, token, reason] => {
            entry(stories, task, token)
                .recovered
                .push((*reason).to_owned());
            false
        }
        ["ready"] | ["pong"] | ["rounds", _] => false,
        other => panic!("unexpected report {other:?}"),
    }
}

fn entry<'a>(
    stories: &'a mut BTreeMap<(String, u64), Story>,
    task: &str,
    token: &str,
) -> &'a mut Story {
    stories
        .entry((task.to_owned(), token.parse().expect("token")))
        .or_default()
}

/// Says `go` to a child once it said `ready`.
fn start(child: &mut Running) {
    child.expect_report("ready");
    child.send("go");
}

#[test]
fn killed_dispatchers_and_concurrent_recoverers_lose_nothing_and_recover_once() -> roster::Result<()>
{
    const DISPATCHERS: usize = 3;
    const RECOVERERS: usize = 2;
    const KILLS: usize = 12;
    let mut rng = Rng::from_env();
    let schema = pg::schema_name();
    let _guard = SchemaGuard(schema.clone());
    let registry = open(&schema);
    for i in 0..AGENTS {
        registry.register(worker_agent(&agent_id(i), label_of(i)))?;
    }
    let spawn = |role: &str, rng: &mut Rng| {
        let mut child = common::child::spawn(
            role,
            std::path::Path::new(&schema),
            rng,
            &[(pg::URL_VARIABLE, pg::url().to_owned())],
        );
        start(&mut child);
        child
    };
    let mut recoverers: Vec<Running> = (0..RECOVERERS)
        .map(|_| spawn("recoverer", &mut rng))
        .collect();
    let mut dispatchers: Vec<Running> = (0..DISPATCHERS)
        .map(|_| spawn("dispatcher", &mut rng))
        .collect();
    let mut stories: BTreeMap<(String, u64), Story> = BTreeMap::new();
    for _ in 0..KILLS {
        // The kill lands in one dispatcher's stream of work, after a random
        // number of its claims, while the others and the recoverers go on.
        let victim = rng.below(DISPATCHERS as u64) as usize;
        let kill_after = 1 + rng.below(40);
        let mut claims = 0;
        while claims < kill_after {
            let line = dispatchers[victim].next_report("its claims");
            if record(&mut stories, &line) {
                claims += 1;
            }
        }
        let replacement = spawn("dispatcher", &mut rng);
        let killed = std::mem::replace(&mut dispatchers[victim], replacement).kill();
        for line in killed.reports() {
            record(&mut stories, &line);
        }
    }
    for dispatcher in dispatchers {
        let finished = dispatcher.finish();
        finished.expect_success("dispatcher");
        for line in finished.reports() {
            record(&mut stories, &line);
        }
    }
    for recoverer in recoverers.drain(..) {
        let finished = recoverer.finish();
        finished.expect_success("recoverer");
        for line in finished.reports() {
            record(&mut stories, &line);
        }
    }
    // Whatever is still due, taken back here, once more in the count.
    for recovered in registry.recover()? {
        record(
            &mut stories,
            &format!(
                "recovered {} {} {}",
                recovered.claim.task_id, recovered.claim.token, recovered.reason
            ),
        );
    }

    let held: BTreeSet<(String, u64)> = registry
        .claims(None)?
        .into_iter()
        .map(|c| (c.task_id, c.token))
        .collect();
    let (mut released, mut recovered, mut still_held, mut unacknowledged) = (0, 0, 0, 0);
    for ((task, token), story) in &stories {
        let what = format!("{task} (token {token}): {story:?}");
        assert!(story.recovered.len() <= 1, "recovered twice: {what}");
        let is_held = held.contains(&(task.clone(), *token));
        if !story.claimed {
            // Claimed by a dispatcher killed before it could say so: it can
            // only have been recovered, or be held still.
            assert!(
                !story.releasing && (story.recovered.len() == 1 || is_held),
                "{what}"
            );
            unacknowledged += 1;
            continue;
        }
        let fates = usize::from(story.released) + story.recovered.len() + usize::from(is_held);
        if story.released {
            released += 1;
        } else if !story.recovered.is_empty() {
            recovered += 1;
        } else if is_held {
            still_held += 1;
        }
        // A release refused as stale means someone recovered it first.
        if story.stale {
            assert_eq!(
                story.recovered.len(),
                1,
                "stale but never recovered: {what}"
            );
        }
        match fates {
            1 => {}
            // Released by a dispatcher killed before it said so.
            0 => assert!(story.releasing, "lost: {what}"),
            _ => panic!("two fates: {what}"),
        }
    }
    // Held, and never reported: claimed by a dispatcher killed before it
    // could say so. Each killed dispatcher had at most one claim in flight.
    unacknowledged += held
        .iter()
        .filter(|key| !stories.contains_key(*key))
        .count();
    assert!(
        unacknowledged <= KILLS,
        "{unacknowledged} claims nobody reported"
    );
    let tokens: BTreeSet<u64> = stories.keys().map(|(_, token)| *token).collect();
    assert_eq!(tokens.len(), stories.len(), "a token given twice");
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for story in stories.values() {
        for reason in &story.recovered {
            *reasons.entry(reason.as_str()).or_default() += 1;
        }
    }
    eprintln!(
        "{} claims: {released} released, {recovered} recovered ({reasons:?}), {still_held} held, \
         {unacknowledged} taken by killed dispatchers before they said so",
        stories.len()
    );
    assert!(
        released > 0 && recovered > 0,
        "the mix exercised both fates"
    );

    // Loads equal the claims held; nothing is over-booked.
    let mut client = pg::client();
    client
        .batch_execute(&format!("SET search_path = {schema}"))
        .expect("search_path");
    assert_loads_equal_claims(&mut client);
    for agent in registry.list()? {
        let holds = registry.claims(Some(&agent.id))?.len();
        assert_eq!(agent.current_load as usize, holds, "{}", agent.id);
        assert!(agent.current_load <= agent.max_load, "{agent:?}");
    }
    Ok(())
}
