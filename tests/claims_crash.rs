//! Claims as rows under crashes: dispatcher processes claim with leases,
//! release, renew and are killed with SIGKILL at random moments, while
//! recoverer processes take claims back and take agents offline and away.
//! In the end every claim a dispatcher acknowledged is released by it or
//! recovered exactly once, none twice, none lost, and every agent's load is
//! the claims it holds, during the run and after.
//!
//! The children are this test binary run again (`common::child`): `child`
//! below is an ignored test that does nothing unless `ROSTER_CHILD` names a
//! role. Children report on stdout with lines starting with `@`; the parent
//! reads them as they come and kills a dispatcher after a random number of
//! its acknowledgements, while it goes on working. Nothing waits for time to
//! pass: children say `ready` and wait for `go`, recoverers stop when their
//! stdin closes.
//!
//! Reports of a dispatcher (pid P, its n-th successful claim is `dP-n`):
//! - `claimed TASK TOKEN AGENT LEASE` once `claim` returned (LEASE is
//!   `short`, `long` or `none`);
//! - `releasing TASK TOKEN` before `release` is called, `released TASK
//!   TOKEN` once it returned;
//! - `renewing TASK TOKEN LEASE` before `renew` is called, `renewed TASK
//!   TOKEN` once it returned;
//! - `stale TASK TOKEN` when `release` or `renew` answered `StaleClaim`.
//!
//! Reports of a recoverer: `recovered TASK TOKEN REASON AGENT` for each
//! claim `recover` returned, `offline AGENT` once `set_status` made it
//! offline, `gone AGENT` once `deregister` removed it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use common::child::{Orders, report};
use common::{Rng, Running, TempRegistry};
use roster::{
    AgentInfo, AgentRegistry, AgentStatus, Claimed, Error, Priority, Result, SqlAccess, SqlValue,
    SqliteRegistry, Task,
};

/// The agents every process knows: ids, labels and capacities.
fn fleet() -> Vec<AgentInfo> {
    (0..8)
        .map(|i| {
            let mut labels = vec![if i % 2 == 0 { "cpu" } else { "gpu" }];
            if i % 3 == 0 {
                labels.push(if i % 2 == 0 { "gpu" } else { "cpu" });
            }
            AgentInfo {
                id: format!("agent-{i}"),
                name: format!("Agent {i}"),
                capabilities: labels.into_iter().map(str::to_owned).collect(),
                status: AgentStatus::Available,
                last_heartbeat: Utc::now(),
                current_load: 0,
                max_load: 3 + i % 3,
                ..AgentInfo::default()
            }
        })
        .collect()
}

/// The labels of a random task: none, one or both of the fleet's.
fn labels(rng: &mut Rng) -> Vec<String> {
    match rng.below(4) {
        0 => vec![],
        1 => vec!["cpu".to_owned()],
        2 => vec!["gpu".to_owned()],
        _ => vec!["cpu".to_owned(), "gpu".to_owned()],
    }
}

/// The lease a dispatcher asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lease {
    /// A few milliseconds: recoverers take it back as `lease_expired` unless
    /// it is released first.
    Short(u64),
    /// Longer than any run of this test.
    Long,
    /// No lease at all.
    None,
}

impl Lease {
    fn draw(rng: &mut Rng) -> Self {
        match rng.below(3) {
            0 => Self::Short(1 + rng.below(20)),
            1 => Self::Long,
            _ => Self::None,
        }
    }

    fn draw_some(rng: &mut Rng) -> Self {
        match rng.below(2) {
            0 => Self::Short(1 + rng.below(20)),
            _ => Self::Long,
        }
    }

    fn duration(self) -> Option<Duration> {
        match self {
            Self::Short(ms) => Some(Duration::from_millis(ms)),
            Self::Long => Some(Duration::from_secs(3600)),
            Self::None => None,
        }
    }
}

impl fmt::Display for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Short(_) => "short",
            Self::Long => "long",
            Self::None => "none",
        })
    }
}

// ---------------------------------------------------------------- children

/// The entry point of every child process.
#[test]
#[ignore = "helper: the process tests run it as a child process"]
fn child() {
    let Some(role) = common::child::role() else {
        return;
    };
    let db = PathBuf::from(common::child::var(common::child::DB_VAR));
    match role.as_str() {
        "dispatcher" => dispatcher(&db),
        "recoverer" => recoverer(&db),
        other => panic!("unknown child role {other}"),
    }
}

/// From `go` on, until it is killed: claims task after task, releases about
/// half at once, and now and then releases or renews one it still holds.
/// Claims it gives up on (more than six held) are left for recovery.
fn dispatcher(db: &Path) {
    let registry = SqliteRegistry::open(db).expect("open");
    let mut rng = Rng::from_env();
    let pid = std::process::id();
    let mut held: Vec<(String, u64)> = Vec::new();
    let mut n = 0_u64;
    common::child::ready_then_wait_for_go();
    loop {
        let task = Task {
            id: format!("d{pid}-{n}"),
            labels: labels(&mut rng),
            priority: Priority::ALL[rng.below(4) as usize],
        };
        let lease = Lease::draw(&mut rng);
        match registry.claim(&task, lease.duration()) {
            Ok(Claimed { claim, agent }) => {
                assert_eq!(claim.task_id, task.id);
                assert_eq!(claim.agent_id, agent.id);
                assert!(agent.current_load <= agent.max_load, "{agent:?}");
                report(format_args!(
                    "claimed {} {} {} {lease}",
                    claim.task_id, claim.token, claim.agent_id
                ));
                n += 1;
                if rng.below(2) == 0 {
                    release(&registry, &claim.task_id, claim.token);
                } else {
                    held.push((claim.task_id, claim.token));
                }
            }
            Err(Error::NoEligibleAgent) => {}
            Err(e) => panic!("claim {}: {e}", task.id),
        }
        if !held.is_empty() && rng.below(3) == 0 {
            let (task_id, token) = held.swap_remove(rng.below(held.len() as u64) as usize);
            if rng.below(2) == 0 {
                release(&registry, &task_id, token);
            } else {
                let lease = Lease::draw_some(&mut rng);
                report(format_args!("renewing {task_id} {token} {lease}"));
                let wanted = lease.duration().expect("a lease");
                match registry.renew(&task_id, Some(token), wanted) {
                    Ok(claim) => {
                        assert_eq!((claim.task_id.as_str(), claim.token), (&*task_id, token));
                        report(format_args!("renewed {task_id} {token}"));
                        held.push((task_id, token));
                    }
                    Err(Error::StaleClaim { .. }) => {
                        report(format_args!("stale {task_id} {token}"))
                    }
                    Err(e) => panic!("renew {task_id} {token}: {e}"),
                }
            }
        }
        if held.len() > 6 {
            held.remove(0);
        }
    }
}

/// A holder's release, announced before and acknowledged after.
fn release(registry: &SqliteRegistry, task_id: &str, token: u64) {
    report(format_args!("releasing {task_id} {token}"));
    match registry.release(task_id, Some(token)) {
        Ok(claim) => {
            assert_eq!((claim.task_id.as_str(), claim.token), (task_id, token));
            report(format_args!("released {task_id} {token}"));
        }
        Err(Error::StaleClaim { .. }) => report(format_args!("stale {task_id} {token}")),
        Err(e) => panic!("release {task_id} {token}: {e}"),
    }
}

/// From `go` on, until stdin closes: recovers in a loop and reports every
/// claim it took back; now and then takes an agent offline (and heartbeats
/// it back a few rounds later), or deregisters an agent that holds a claim
/// and registers it again at once.
fn recoverer(db: &Path) {
    let registry = SqliteRegistry::open(db).expect("open");
    let mut rng = Rng::from_env();
    let fleet = fleet();
    let mut coming_back: Vec<(String, u64)> = Vec::new();
    common::child::ready_then_wait_for_go();
    let orders = Orders::listen();
    while !orders.stopped() {
        for recovered in registry.recover().expect("recover") {
            let claim = &recovered.claim;
            report(format_args!(
                "recovered {} {} {} {}",
                claim.task_id, claim.token, recovered.reason, claim.agent_id
            ));
        }
        match rng.below(16) {
            0 => {
                let id = &fleet[rng.below(fleet.len() as u64) as usize].id;
                match registry.set_status(id, AgentStatus::Offline) {
                    Ok(()) => {
                        report(format_args!("offline {id}"));
                        coming_back.push((id.clone(), rng.below(4)));
                    }
                    Err(Error::NotFound(_)) => {}
                    Err(e) => panic!("set {id} offline: {e}"),
                }
            }
            1 => {
                // An agent that holds a claim, when there is one.
                let claims = registry.claims(None).expect("claims");
                let id = if claims.is_empty() {
                    fleet[rng.below(fleet.len() as u64) as usize].id.clone()
                } else {
                    claims[rng.below(claims.len() as u64) as usize]
                        .agent_id
                        .clone()
                };
                match registry.deregister(&id) {
                    Ok(()) => report(format_args!("gone {id}")),
                    Err(Error::NotFound(_)) => {}
                    Err(e) => panic!("deregister {id}: {e}"),
                }
                let again = fleet
                    .iter()
                    .find(|agent| agent.id == id)
                    .expect("an agent of the fleet");
                let again = AgentInfo {
                    last_heartbeat: Utc::now(),
                    ..again.clone()
                };
                registry
                    .register(again)
                    .unwrap_or_else(|e| panic!("register {id} again: {e}"));
            }
            _ => {}
        }
        coming_back.retain_mut(|(id, rounds)| {
            if *rounds > 0 {
                *rounds -= 1;
                return true;
            }
            match registry.heartbeat(id) {
                Ok(()) | Err(Error::NotFound(_)) => false,
                Err(e) => panic!("heartbeat {id}: {e}"),
            }
        });
    }
}

// ------------------------------------------------------------------- parent

/// A dispatcher the parent is reading, and when it will be killed.
struct Dispatcher {
    running: Running,
    pid: u32,
    acks: u64,
    kill_after: u64,
    reports: Vec<String>,
}

impl Dispatcher {
    fn start(db: &Path, rng: &mut Rng) -> Self {
        let mut running = common::child::spawn("dispatcher", db, rng, &[]);
        running.expect_report("ready");
        running.send("go");
        Self {
            pid: running.id(),
            running,
            acks: 0,
            kill_after: 1 + rng.below(60),
            reports: Vec::new(),
        }
    }

    /// Reads its next report.
    fn read(&mut self) {
        let report = self.running.next_report("its reports");
        if report.starts_with("claimed ") {
            self.acks += 1;
        }
        self.reports.push(report);
    }

    /// Kills it and returns its pid and every report it made.
    fn kill(self) -> (u32, Vec<String>) {
        let Self {
            running,
            pid,
            mut reports,
            ..
        } = self;
        reports.extend(running.kill().reports());
        (pid, reports)
    }
}

/// In one snapshot (one ad-hoc statement), every agent's load equals the
/// attached claims it holds and stays within its capacity. Returns how many
/// claims are attached.
fn check_loads(registry: &SqliteRegistry) -> Result<i64> {
    let result = registry.query(
        "SELECT a.id, a.current_load, a.max_load,
                (SELECT count(*) FROM claims AS c WHERE c.agent_id = a.id AND c.detached = 0)
         FROM agents AS a ORDER BY a.id",
        SqlAccess::ReadOnly,
    )?;
    let mut attached = 0;
    for row in &result.rows {
        match row.as_slice() {
            [
                SqlValue::Text(id),
                SqlValue::Integer(load),
                SqlValue::Integer(max),
                SqlValue::Integer(held),
            ] => {
                assert_eq!(load, held, "{id}: current_load is not the claims it holds");
                assert!(load <= max, "{id}: over-booked ({load} > {max})");
                attached += held;
            }
            other => panic!("unexpected row {other:?}"),
        }
    }
    Ok(attached)
}

/// What the dispatchers said about one acknowledged claim.
#[derive(Debug)]
struct Acked {
    token: u64,
    agent: String,
    /// Whether a lease of a few milliseconds was asked for, at claim or at a
    /// renew (announced, perhaps not done).
    short_lease: bool,
    releasing: bool,
    released: bool,
    stale: bool,
}

/// One claim taken back, and who took it.
#[derive(Debug)]
struct Taken {
    task: String,
    token: u64,
    reason: String,
    agent: String,
    by: String,
}

fn field<'a>(parts: &[&'a str], i: usize, line: &str) -> &'a str {
    parts
        .get(i)
        .copied()
        .unwrap_or_else(|| panic!("short report {line:?}"))
}

fn number(text: &str, line: &str) -> u64 {
    text.parse()
        .unwrap_or_else(|_| panic!("not a number {text:?} in {line:?}"))
}

/// Reads a dispatcher's reports: its acknowledged claims, in order, with
/// what happened to each. Fails on a report out of order.
fn read_dispatcher(pid: u32, reports: &[String], acked: &mut BTreeMap<String, Acked>) -> u64 {
    let mut claims = 0_u64;
    let mut last_token = 0_u64;
    for line in reports {
        let parts: Vec<&str> = line.split(' ').collect();
        let task = field(&parts, 1, line).to_owned();
        let token = number(field(&parts, 2, line), line);
        if parts[0] == "claimed" {
            assert_eq!(
                task,
                format!("d{pid}-{claims}"),
                "task ids in order: {line}"
            );
            assert!(token > last_token, "tokens only grow in {pid}: {line}");
            last_token = token;
            claims += 1;
            let lease = field(&parts, 4, line);
            let fresh = acked.insert(
                task,
                Acked {
                    token,
                    agent: field(&parts, 3, line).to_owned(),
                    short_lease: lease == "short",
                    releasing: false,
                    released: false,
                    stale: false,
                },
            );
            assert!(fresh.is_none(), "claimed twice: {line}");
            continue;
        }
        let claim = acked
            .get_mut(&task)
            .unwrap_or_else(|| panic!("{line:?} names a claim never acknowledged"));
        assert_eq!(claim.token, token, "{line}");
        match parts[0] {
            "releasing" => {
                assert!(!claim.releasing && !claim.stale, "{line}");
                claim.releasing = true;
            }
            "released" => {
                assert!(claim.releasing && !claim.released, "{line}");
                claim.released = true;
            }
            "renewing" => {
                assert!(!claim.releasing && !claim.stale, "{line}");
                claim.short_lease |= field(&parts, 3, line) == "short";
            }
            "renewed" => assert!(!claim.releasing && !claim.stale, "{line}"),
            "stale" => {
                assert!(!claim.released && !claim.stale, "{line}");
                claim.stale = true;
            }
            other => panic!("unknown report {other:?} in {line:?}"),
        }
    }
    claims
}

#[test]
fn every_acknowledged_claim_is_released_or_recovered_exactly_once() -> Result<()> {
    const SLOTS: usize = 4;
    const GENERATIONS: usize = 3;
    const RECOVERERS: usize = 2;
    let mut rng = Rng::from_env();
    let registry = TempRegistry::named("claims-crash.db");
    for agent in fleet() {
        registry.register(agent)?;
    }
    let db = registry.path().to_owned();

    let mut recoverers: Vec<Running> = (0..RECOVERERS)
        .map(|_| common::child::spawn("recoverer", &db, &mut rng, &[]))
        .collect();
    for recoverer in &mut recoverers {
        recoverer.expect_report("ready");
    }
    for recoverer in &mut recoverers {
        recoverer.send("go");
    }

    // Each slot holds a dispatcher at a time; a killed one is replaced until
    // the slot has had GENERATIONS of them. The parent reads one report at a
    // time from a random live dispatcher, so the others work meanwhile.
    let mut slots: Vec<Option<Dispatcher>> = (0..SLOTS)
        .map(|_| Some(Dispatcher::start(&db, &mut rng)))
        .collect();
    let mut generations = [1; SLOTS];
    let mut killed: Vec<(u32, Vec<String>)> = Vec::new();
    let mut samples = 0;
    let mut reads = 0_u64;
    loop {
        let live: Vec<usize> = (0..SLOTS).filter(|&i| slots[i].is_some()).collect();
        if live.is_empty() {
            break;
        }
        let slot = live[rng.below(live.len() as u64) as usize];
        let dispatcher = slots[slot].as_mut().expect("a live slot");
        dispatcher.read();
        reads += 1;
        if reads.is_multiple_of(16) {
            check_loads(&registry)?;
            samples += 1;
        }
        if dispatcher.acks >= dispatcher.kill_after {
            let dispatcher = slots[slot].take().expect("a live slot");
            killed.push(dispatcher.kill());
            check_loads(&registry)?;
            samples += 1;
            if generations[slot] < GENERATIONS {
                generations[slot] += 1;
                slots[slot] = Some(Dispatcher::start(&db, &mut rng));
            }
        }
    }

    let mut taken: Vec<Taken> = Vec::new();
    let mut offline: BTreeSet<String> = BTreeSet::new();
    let mut gone: BTreeSet<String> = BTreeSet::new();
    for (i, recoverer) in recoverers.into_iter().enumerate() {
        for line in recoverer.finish().expect_success("recoverer").reports() {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts[0] {
                "recovered" => taken.push(Taken {
                    task: field(&parts, 1, &line).to_owned(),
                    token: number(field(&parts, 2, &line), &line),
                    reason: field(&parts, 3, &line).to_owned(),
                    agent: field(&parts, 4, &line).to_owned(),
                    by: format!("recoverer {i}"),
                }),
                "offline" => {
                    offline.insert(field(&parts, 1, &line).to_owned());
                }
                "gone" => {
                    gone.insert(field(&parts, 1, &line).to_owned());
                }
                other => panic!("unknown report {other:?} in {line:?}"),
            }
        }
    }
    let during_run = taken.len();
    check_loads(&registry)?;

    // Everything still held becomes due: every agent goes offline.
    for agent in registry.list()? {
        registry.set_status(&agent.id, AgentStatus::Offline)?;
    }
    for recovered in registry.recover()? {
        let reason = recovered.reason.as_str();
        assert!(
            reason == "agent_offline" || reason == "agent_gone",
            "every agent is offline now: {recovered:?}"
        );
        taken.push(Taken {
            task: recovered.claim.task_id,
            token: recovered.claim.token,
            reason: reason.to_owned(),
            agent: recovered.claim.agent_id,
            by: "the final recover".to_owned(),
        });
    }
    assert_eq!(registry.claims(None)?, [], "nothing is held any more");
    assert_eq!(check_loads(&registry)?, 0);
    for agent in registry.list()? {
        assert_eq!(agent.current_load, 0, "{agent:?}");
    }
    common::assert_healthy(registry.path());

    // What the dispatchers acknowledged; each may have taken one claim it
    // did not live to acknowledge: `dP-n` for its n acknowledged claims.
    let mut acked: BTreeMap<String, Acked> = BTreeMap::new();
    let mut unacknowledged: BTreeMap<String, u64> = BTreeMap::new();
    for (pid, reports) in &killed {
        let claims = read_dispatcher(*pid, reports, &mut acked);
        let mine_last = (0..claims)
            .filter_map(|n| acked.get(&format!("d{pid}-{n}")))
            .map(|claim| claim.token)
            .max()
            .unwrap_or(0);
        unacknowledged.insert(format!("d{pid}-{claims}"), mine_last);
    }

    // None twice.
    let mut times: BTreeMap<(&str, u64), Vec<&Taken>> = BTreeMap::new();
    for take in &taken {
        times
            .entry((&take.task, take.token))
            .or_default()
            .push(take);
    }
    for ((task, token), takes) in &times {
        assert_eq!(takes.len(), 1, "{task} {token} recovered twice: {takes:?}");
    }

    // Every recovery is of a claim a dispatcher took, with its token and
    // agent, for a reason that could apply to it.
    for take in &taken {
        if let Some(claim) = acked.get(&take.task) {
            assert_eq!(take.token, claim.token, "{take:?} {claim:?}");
            assert_eq!(take.agent, claim.agent, "{take:?} {claim:?}");
            assert!(!claim.released, "released and recovered: {take:?}");
            if take.reason == "lease_expired" {
                assert!(
                    claim.short_lease,
                    "no lease could expire: {take:?} {claim:?}"
                );
            }
        } else {
            let last_token = unacknowledged.get(&take.task).unwrap_or_else(|| {
                panic!("{take:?}: recovered a claim no dispatcher could have taken")
            });
            assert!(take.token > *last_token, "{take:?}: tokens only grow");
        }
        if take.by != "the final recover" {
            match take.reason.as_str() {
                "agent_gone" => assert!(gone.contains(&take.agent), "{take:?}"),
                "agent_offline" => assert!(offline.contains(&take.agent), "{take:?}"),
                "lease_expired" => {}
                other => panic!("unknown reason {other} in {take:?}"),
            }
        }
    }

    // None lost: a claim its holder did not release is recovered once.
    let recovered: BTreeSet<(&str, u64)> = times.keys().copied().collect();
    for (task, claim) in &acked {
        let was_recovered = recovered.contains(&(task.as_str(), claim.token));
        if claim.released {
            assert!(!was_recovered, "{task}: released and recovered");
        } else if claim.stale || !claim.releasing {
            assert!(was_recovered, "{task}: lost ({claim:?})");
        }
        // Announced `releasing` but not acknowledged: released or recovered,
        // and never twice (checked above); the empty claims table shows it
        // is gone either way.
    }

    let count = |reason: &str| taken.iter().filter(|t| t.reason == reason).count();
    let released = acked.values().filter(|c| c.released).count();
    let stale = acked.values().filter(|c| c.stale).count();
    let in_flight = acked
        .values()
        .filter(|c| c.releasing && !c.released && !c.stale)
        .count();
    eprintln!(
        "{} dispatchers killed, {} claims acknowledged, {released} released, {stale} stale, \
         {in_flight} killed while releasing; {during_run} recovered during the run \
         ({} lease_expired, {} agent_offline, {} agent_gone), {} in the final recover; \
         {samples} load samples",
        killed.len(),
        acked.len(),
        count("lease_expired"),
        count("agent_offline"),
        count("agent_gone"),
        taken.len() - during_run,
    );
    assert_eq!(killed.len(), SLOTS * GENERATIONS);
    // The run went through every path it is meant to: were one missing, the
    // checks above would have proved less than they claim.
    assert!(released > 0 && stale > 0, "releases and stale answers");
    for reason in ["lease_expired", "agent_offline", "agent_gone"] {
        assert!(
            taken[..during_run].iter().any(|t| t.reason == reason),
            "no {reason} during the run"
        );
    }
    Ok(())
}
