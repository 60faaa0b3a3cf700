//! The conformance cases: one rule of the contract each, checked on a
//! fresh, empty registry. Each case's doc line quotes the rule it checks,
//! from the documentation of [`AgentRegistry`], [`AgentInfo`],
//! [`DefaultRouter`] and [`Task`], or from the README.
//!
//! A case takes a [`Subject`] (the registry, and the backend's
//! [`Precision`](super::Precision)) and is run by
//! [`roster_conformance!`](crate::roster_conformance) or
//! [`Contract::run`](super::Contract::run). A new case is a `pub fn` here
//! and a name in the list of the macro.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::Subject;
// Named by the doc links of the cases (calls go through `Subject`).
#[allow(unused_imports)]
use crate::AgentRegistry;
use crate::{
    AgentInfo, AgentStatus, DefaultRouter, Error, Priority, RecoverReason, Result, Task, TaskRouter,
};
use AgentStatus::{Available, Busy, Offline};

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("test time")
        .with_timezone(&Utc)
}

fn agent(id: &str) -> AgentInfo {
    AgentInfo {
        id: id.to_owned(),
        name: format!("agent {id}"),
        capabilities: vec!["rust".into(), "gpu".into()],
        status: AgentStatus::Available,
        last_heartbeat: Utc::now(),
        current_load: 1,
        max_load: 4,
        ..AgentInfo::default()
    }
}

fn expect_invalid(registry: &Subject, bad: AgentInfo, field: &str) {
    match registry.register(bad.clone()) {
        Err(Error::Invalid { field: got, reason }) => {
            assert_eq!(got, field, "wrong field for {bad:?}: {reason}");
            let message = Error::Invalid { field: got, reason }.to_string();
            assert!(
                message.starts_with(&format!("invalid {field}: ")),
                "{message}"
            );
        }
        other => panic!("{bad:?} should be refused as invalid {field}, got {other:?}"),
    }
}

fn worker(id: &str, caps: &[&str], status: AgentStatus, load: u32, max: u32) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        name: format!("worker {id}"),
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
        status,
        last_heartbeat: Utc::now(),
        current_load: load,
        max_load: max,
        ..AgentInfo::default()
    }
}

fn task(labels: &[&str], priority: Priority) -> Task {
    Task {
        // A new task each time: the registry names it.
        id: String::new(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        priority,
    }
}

/// A task with a name of the caller's.
fn named_task(id: &str, labels: &[&str]) -> Task {
    Task {
        id: id.to_owned(),
        ..task(labels, Priority::Medium)
    }
}

/// The agent chosen for a new medium task with `labels`.
fn claimed_id(registry: &Subject, labels: &[&str]) -> Result<String> {
    claimed(registry, labels, Priority::Medium)
}

fn claimed(registry: &Subject, labels: &[&str], priority: Priority) -> Result<String> {
    registry
        .claim(&task(labels, priority), None)
        .map(|claimed| claimed.agent.id)
}

fn expect_no_eligible(result: Result<AgentInfo>) {
    match result {
        Err(e @ Error::NoEligibleAgent) => assert_eq!(e.to_string(), "no eligible agent for task"),
        other => panic!("expected NoEligibleAgent, got {other:?}"),
    }
}

/// Asserts that `got` is `want` as the registry keeps it: every field equal,
/// the heartbeat to the registry's [`Precision`](super::Precision).
#[track_caller]
fn assert_kept(registry: &Subject, got: AgentInfo, want: &AgentInfo) {
    let precision = registry.precision();
    assert!(
        precision.same_instant(got.last_heartbeat, want.last_heartbeat),
        "last_heartbeat {} is not {} to the {precision}",
        got.last_heartbeat,
        want.last_heartbeat
    );
    assert_eq!(
        &AgentInfo {
            last_heartbeat: want.last_heartbeat,
            ..got
        },
        want
    );
}

/// [`AgentRegistry::get`]: "Returns a copy of the agent, exactly as it was
/// stored." (the heartbeat to the backend's [`Precision`](super::Precision)).
pub fn get_returns_exactly_what_was_registered(registry: &Subject) -> Result<()> {
    let original = AgentInfo {
        id: "a-1".into(),
        name: "Alpha one".into(),
        capabilities: vec!["zeta".into(), "alpha".into(), "mid".into()],
        status: AgentStatus::Busy,
        last_heartbeat: at("2026-11-24T15:04:05.123456789Z"),
        current_load: 3,
        max_load: 3,
        drained: false,
        host: Some("build-host.example".into()),
        pid: Some(4242),
        started_at: Some(at("2026-11-24T15:00:00.000001Z")),
        metadata: [("zone", "eu-1"), ("owner", "ci <team>"), ("empty", "")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    };
    registry.register(original.clone())?;
    assert_kept(registry, registry.get("a-1")?, &original);
    Ok(())
}

/// [`AgentRegistry::register`]: "The registry stores a copy, with duplicate
/// capabilities dropped." and the README: "the first of each is kept, in the
/// order given".
pub fn duplicate_capabilities_are_dropped_in_order(registry: &Subject) -> Result<()> {
    let mut a = agent("dup");
    a.capabilities = ["b", "a", "b", "c", "a"].map(String::from).to_vec();
    registry.register(a)?;
    assert_eq!(registry.get("dup")?.capabilities, ["b", "a", "c"]);
    Ok(())
}

/// [`AgentRegistry::register`]: "Adds the agent, or replaces every field of
/// the one with the same id (capabilities are replaced, not merged)."
pub fn register_replaces_everything_including_capabilities(registry: &Subject) -> Result<()> {
    registry.register(AgentInfo {
        host: Some("old-host".into()),
        pid: Some(7),
        metadata: [("zone".to_owned(), "a".to_owned())].into_iter().collect(),
        ..agent("x")
    })?;
    let replacement = AgentInfo {
        id: "x".into(),
        name: "renamed".into(),
        capabilities: vec!["python".into()],
        status: AgentStatus::Offline,
        last_heartbeat: at("2020-01-01T00:00:00Z"),
        current_load: 0,
        max_load: 0,
        metadata: [("v".to_owned(), "2".to_owned())].into_iter().collect(),
        ..AgentInfo::default()
    };
    registry.register(replacement.clone())?;
    assert_eq!(registry.get("x")?, replacement);
    assert_eq!(registry.list()?.len(), 1);
    Ok(())
}

/// [`AgentRegistry::get`]: "Returns a copy of the agent, exactly as it was
/// stored.", for an agent without capabilities (no rule asks for one).
pub fn register_without_capabilities(registry: &Subject) -> Result<()> {
    let mut a = agent("bare");
    a.capabilities.clear();
    registry.register(a.clone())?;
    assert_kept(registry, registry.get("bare")?, &a);
    Ok(())
}

/// [`AgentRegistry::list`]: "Returns a copy of every agent, ordered by id."
pub fn list_is_ordered_by_id(registry: &Subject) -> Result<()> {
    for id in ["m", "b", "z", "a", "k"] {
        registry.register(agent(id))?;
    }
    let ids: Vec<String> = registry.list()?.into_iter().map(|a| a.id).collect();
    assert_eq!(ids, ["a", "b", "k", "m", "z"]);
    let listed = registry.list()?;
    assert_eq!(listed[0], registry.get("a")?);
    Ok(())
}

/// [`AgentRegistry::get`], [`deregister`](AgentRegistry::deregister),
/// [`heartbeat`](AgentRegistry::heartbeat): "[`Error::NotFound`] if no agent
/// has this id.", whose message is "agent not found: ID".
pub fn unknown_ids_are_not_found(registry: &Subject) -> Result<()> {
    registry.register(agent("known"))?;
    for result in [
        registry.get("ghost").map(drop),
        registry.deregister("ghost"),
        registry.heartbeat("ghost"),
    ] {
        match result {
            Err(e @ Error::NotFound(_)) => assert_eq!(e.to_string(), "agent not found: ghost"),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }
    assert_eq!(registry.list()?.len(), 1);
    Ok(())
}

/// [`AgentRegistry::deregister`]: "Removes the agent." (and its id can be
/// registered again afresh).
pub fn deregister_removes(registry: &Subject) -> Result<()> {
    registry.register(agent("a"))?;
    registry.register(agent("b"))?;
    registry.deregister("a")?;
    assert!(matches!(registry.get("a"), Err(Error::NotFound(_))));
    assert!(matches!(registry.deregister("a"), Err(Error::NotFound(_))));
    assert_eq!(registry.list()?, vec![registry.get("b")?]);
    // The id can be registered again afresh.
    let mut again = agent("a");
    again.capabilities = vec!["new".into()];
    registry.register(again.clone())?;
    assert_kept(registry, registry.get("a")?, &again);
    Ok(())
}

/// [`AgentRegistry::heartbeat`]: "`last_heartbeat` becomes now (UTC), an
/// offline agent becomes available".
pub fn heartbeat_sets_now_and_revives_offline(registry: &Subject) -> Result<()> {
    let mut a = agent("h");
    a.status = AgentStatus::Offline;
    a.last_heartbeat = at("2001-01-01T00:00:00Z");
    registry.register(a.clone())?;
    let before = Utc::now();
    registry.heartbeat("h")?;
    let after = Utc::now();
    let got = registry.get("h")?;
    assert!(
        registry
            .precision()
            .within(got.last_heartbeat, before, after),
        "{} not within {before}..{after} to the {}",
        got.last_heartbeat,
        registry.precision()
    );
    assert_eq!(got.status, AgentStatus::Available);
    // Nothing else changed.
    assert_eq!(
        AgentInfo {
            status: a.status,
            last_heartbeat: a.last_heartbeat,
            ..got
        },
        a
    );
    Ok(())
}

/// [`AgentRegistry::heartbeat`]: "a busy one stays busy."
pub fn heartbeat_keeps_busy_busy(registry: &Subject) -> Result<()> {
    let mut a = agent("busy");
    a.status = AgentStatus::Busy;
    registry.register(a)?;
    registry.register(agent("free"))?;
    registry.heartbeat("busy")?;
    registry.heartbeat("free")?;
    assert_eq!(registry.get("busy")?.status, AgentStatus::Busy);
    assert_eq!(registry.get("free")?.status, AgentStatus::Available);
    Ok(())
}

/// [`AgentRegistry::reap`]: "Marks offline every agent that is not offline
/// yet and whose `last_heartbeat` is older than now minus `ttl`, and returns
/// their ids in ascending order. Agents that were already offline are not
/// returned."
pub fn reap_marks_stale_agents_offline_once(registry: &Subject) -> Result<()> {
    let stale = Utc::now() - TimeDelta::seconds(120);
    for (id, status, seen) in [
        ("s2", AgentStatus::Busy, stale),
        ("fresh", AgentStatus::Available, Utc::now()),
        ("s1", AgentStatus::Available, stale),
        ("gone", AgentStatus::Offline, stale),
        ("s3", AgentStatus::Available, stale - TimeDelta::days(365)),
    ] {
        registry.register(AgentInfo {
            status,
            last_heartbeat: seen,
            ..agent(id)
        })?;
    }
    assert_eq!(registry.reap(Duration::from_secs(60))?, ["s1", "s2", "s3"]);
    for id in ["s1", "s2", "s3", "gone"] {
        let got = registry.get(id)?;
        assert_eq!(got.status, AgentStatus::Offline, "{id}");
    }
    assert_eq!(registry.get("fresh")?.status, AgentStatus::Available);
    // Reaping again returns nobody: they are offline already.
    assert!(registry.reap(Duration::from_secs(60))?.is_empty());
    // A heartbeat revives one, and it is reaped again only once stale.
    registry.heartbeat("s1")?;
    assert!(registry.reap(Duration::from_secs(60))?.is_empty());
    assert_eq!(registry.reap(Duration::ZERO)?, ["fresh", "s1"]);
    Ok(())
}

/// [`AgentRegistry::reap`]: "Marks offline every agent that is not offline
/// yet and whose `last_heartbeat` is older than now minus `ttl`": nobody
/// else.
pub fn reap_with_nothing_stale_is_empty(registry: &Subject) -> Result<()> {
    assert!(registry.reap(Duration::from_secs(1))?.is_empty());
    registry.register(agent("a"))?;
    assert!(registry.reap(Duration::from_secs(3600))?.is_empty());
    assert_eq!(registry.get("a")?.status, AgentStatus::Available);
    Ok(())
}

/// [`AgentRegistry::reap`]: "[`Error::Invalid`] for a `ttl` too large to
/// subtract from now".
pub fn reap_refuses_an_impossible_ttl(registry: &Subject) -> Result<()> {
    registry.register(agent("a"))?;
    match registry.reap(Duration::MAX) {
        Err(Error::Invalid { field: "ttl", .. }) => {}
        other => panic!("expected invalid ttl, got {other:?}"),
    }
    assert_eq!(registry.get("a")?.status, AgentStatus::Available);
    Ok(())
}

/// [`AgentRegistry::register`]: "[`Error::MissingId`] for an empty id",
/// whose message is "agent ID is required"; "nothing is stored then".
pub fn empty_id_is_required(registry: &Subject) -> Result<()> {
    match registry.register(agent("")) {
        Err(e @ Error::MissingId) => assert_eq!(e.to_string(), "agent ID is required"),
        other => panic!("expected MissingId, got {other:?}"),
    }
    assert!(registry.list()?.is_empty());
    Ok(())
}

/// [`AgentInfo` rules](AgentInfo#rules): "`id`: not empty, at most
/// [`MAX_ID_CHARS`](crate::MAX_ID_CHARS) characters, no control characters".
pub fn bad_ids_are_refused(registry: &Subject) -> Result<()> {
    expect_invalid(registry, agent(&"i".repeat(crate::MAX_ID_CHARS + 1)), "id");
    expect_invalid(registry, agent("tab\there"), "id");
    expect_invalid(registry, agent("nul\0"), "id");
    expect_invalid(registry, agent("c1\u{85}"), "id");
    // The longest id, and non-ASCII text, are fine.
    registry.register(agent(&"é".repeat(crate::MAX_ID_CHARS)))?;
    registry.register(agent("agent ünïcödé 1"))?;
    assert_eq!(registry.list()?.len(), 2);
    Ok(())
}

/// [`AgentInfo` rules](AgentInfo#rules): "`name`: ... at most
/// [`MAX_NAME_CHARS`](crate::MAX_NAME_CHARS) characters, no control
/// characters and no bidirectional controls (U+202A-U+202E, U+2066-U+2069)".
pub fn bad_names_are_refused(registry: &Subject) -> Result<()> {
    for name in [
        "n".repeat(crate::MAX_NAME_CHARS + 1),
        "line\nbreak".into(),
        "nul\0".into(),
        "bidi \u{202E}override".into(),
        "isolate \u{2066}x\u{2069}".into(),
    ] {
        expect_invalid(registry, AgentInfo { name, ..agent("a") }, "name");
    }
    assert!(registry.list()?.is_empty());
    Ok(())
}

/// [`AgentInfo` rules](AgentInfo#rules): "`name`: may be empty (as in the Go
/// registry); ... other format characters are allowed, as emoji sequences and
/// many scripts need them".
pub fn empty_names_are_accepted(registry: &Subject) -> Result<()> {
    registry.register(AgentInfo {
        id: "by-id-alone".into(),
        ..AgentInfo::default()
    })?;
    let stored = registry.get("by-id-alone")?;
    assert_eq!(stored.name, "");
    assert_eq!(stored.capabilities, Vec::<String>::new());
    for name in ["👩\u{200D}💻", "می\u{200C}خواهم", "\u{FFFD}\u{2028}"] {
        registry.register(AgentInfo {
            name: name.into(),
            ..agent("named")
        })?;
        assert_eq!(registry.get("named")?.name, name);
    }
    Ok(())
}

/// [`AgentInfo` rules](AgentInfo#rules): "`id`: ... no format characters
/// (Unicode category Cf ...), which would make one id look like another";
/// capabilities: "no control or format characters".
pub fn look_alike_ids_and_capabilities_are_refused(registry: &Subject) -> Result<()> {
    for c in [
        '\u{200B}', '\u{200D}', '\u{2060}', '\u{FEFF}', '\u{202E}', '\u{2066}', '\u{AD}',
    ] {
        expect_invalid(registry, agent(&format!("agent{c}1")), "id");
        let mut a = agent("a");
        a.capabilities.push(format!("gpu{c}"));
        expect_invalid(registry, a, "capabilities");
    }
    assert!(registry.list()?.is_empty());
    for id in ["\u{FFFD}", "🦀", "a\u{2028}b", "日本"] {
        registry.register(agent(id))?;
    }
    assert_eq!(registry.list()?.len(), 4);
    Ok(())
}

/// [`AgentInfo` rules](AgentInfo#rules): "`capabilities`: each not empty, at
/// most [`MAX_CAPABILITY_CHARS`](crate::MAX_CAPABILITY_CHARS) characters, no
/// control characters; at most [`MAX_CAPABILITIES`](crate::MAX_CAPABILITIES)
/// of them once duplicates are dropped".
pub fn bad_capabilities_are_refused(registry: &Subject) -> Result<()> {
    for capability in [
        String::new(),
        "c".repeat(crate::MAX_CAPABILITY_CHARS + 1),
        "esc\u{1b}".into(),
    ] {
        let mut a = agent("a");
        a.capabilities.push(capability);
        expect_invalid(registry, a, "capabilities");
    }
    let mut many = agent("a");
    many.capabilities = (0..=crate::MAX_CAPABILITIES)
        .map(|i| format!("cap{i}"))
        .collect();
    expect_invalid(registry, many.clone(), "capabilities");
    // Exactly the maximum is fine, duplicates do not count.
    many.capabilities.pop();
    many.capabilities.push("cap0".into());
    registry.register(many)?;
    assert_eq!(
        registry.get("a")?.capabilities.len(),
        crate::MAX_CAPABILITIES
    );
    Ok(())
}

/// [`AgentInfo` rules](AgentInfo#rules): "`current_load` at most `max_load`
/// unless `max_load` is 0 (unlimited)".
pub fn load_above_max_is_refused(registry: &Subject) -> Result<()> {
    expect_invalid(
        registry,
        AgentInfo {
            current_load: 5,
            max_load: 4,
            ..agent("a")
        },
        "current_load",
    );
    // max_load 0 is unlimited; load equal to max is full, not over.
    registry.register(AgentInfo {
        current_load: u32::MAX,
        max_load: 0,
        ..agent("unlimited")
    })?;
    registry.register(AgentInfo {
        current_load: u32::MAX,
        max_load: u32::MAX,
        ..agent("full")
    })?;
    assert_eq!(registry.get("unlimited")?.current_load, u32::MAX);
    assert_eq!(registry.get("full")?.max_load, u32::MAX);
    Ok(())
}

/// [`AgentInfo` rules](AgentInfo#rules): "A registry refuses, with
/// [`Error::MissingId`] or [`Error::Invalid`] and without changing anything,
/// an agent that breaks one of these".
pub fn refused_input_changes_nothing(registry: &Subject) -> Result<()> {
    let good = agent("a");
    registry.register(good.clone())?;
    let mut bad = agent("a");
    bad.name = "new name".into();
    bad.capabilities = vec!["new".into(), String::new()];
    assert!(registry.register(bad).is_err());
    let over = AgentInfo {
        current_load: 9,
        ..agent("a")
    };
    assert!(registry.register(over).is_err());
    let far_future = AgentInfo {
        last_heartbeat: DateTime::<Utc>::MAX_UTC,
        ..agent("a")
    };
    expect_invalid(registry, far_future, "last_heartbeat");
    assert_kept(registry, registry.get("a")?, &good);
    assert_eq!(registry.list()?.len(), 1);
    Ok(())
}

/// [`DefaultRouter`]: "any other task goes to the lowest *usage*
/// `current_load / max_load` (0 when `max_load` is 0, unlimited)".
pub fn claim_prefers_the_lowest_usage(registry: &Subject) -> Result<()> {
    registry.register(worker("half", &["x"], Available, 2, 4))?; // usage 0.5
    registry.register(worker("third", &["x"], Busy, 1, 3))?; // usage 0.33
    registry.register(worker("quarter", &["x"], Available, 1, 4))?; // usage 0.25
    registry.register(worker("heavy-unlimited", &["x"], Available, 9, 0))?; // usage 0
    for priority in [Priority::Low, Priority::Medium, Priority::High] {
        let got = registry.claim(&task(&["x"], priority), None)?.agent;
        assert_eq!(got.id, "heavy-unlimited", "{priority}");
    }
    registry.deregister("heavy-unlimited")?;
    let got = registry.claim(&task(&["x"], Priority::Medium), None)?.agent;
    assert_eq!((got.id.as_str(), got.current_load), ("quarter", 2));
    // quarter is now at 0.5, third at 0.33.
    assert_eq!(claimed(registry, &["x"], Priority::High)?, "third");
    Ok(())
}

/// [`DefaultRouter`]: "a [`Critical`](Priority::Critical) task goes to the
/// lowest `current_load`".
pub fn claim_critical_prefers_the_lowest_load(registry: &Subject) -> Result<()> {
    registry.register(worker("big", &["x"], Available, 3, 100))?; // usage 0.03, load 3
    registry.register(worker("small", &["x"], Available, 1, 2))?; // usage 0.5, load 1
    assert_eq!(claimed(registry, &["x"], Priority::Medium)?, "big");
    assert_eq!(claimed(registry, &["x"], Priority::Critical)?, "small");
    // small is now full: critical goes to big after all.
    assert_eq!(claimed(registry, &["x"], Priority::Critical)?, "big");
    Ok(())
}

/// [`DefaultRouter`]: "ties go to the smallest id (byte order)".
pub fn claim_ties_go_to_the_smallest_id(registry: &Subject) -> Result<()> {
    registry.register(worker("b", &["x"], Available, 1, 2))?;
    registry.register(worker("c", &["x"], Available, 2, 4))?;
    registry.register(worker("a2", &["x"], Busy, 3, 6))?;
    registry.register(worker("unlimited", &["x"], Available, 0, 0))?;
    registry.register(worker("idle", &["x"], Available, 0, 5))?;
    // usage 0: "idle" and "unlimited" tie, "idle" < "unlimited".
    assert_eq!(claimed(registry, &["x"], Priority::Low)?, "idle");
    registry.deregister("idle")?;
    registry.deregister("unlimited")?;
    // usage 0.5 everywhere: the smallest id wins.
    assert_eq!(claimed(registry, &["x"], Priority::Medium)?, "a2");
    // a2 is at 0.67 now; b and c tie at 0.5.
    assert_eq!(claimed(registry, &["x"], Priority::Medium)?, "b");
    // Critical: b is full, c has load 2, a2 load 4.
    assert_eq!(claimed(registry, &["x"], Priority::Critical)?, "c");
    // Critical ties: c and a2 both at load 2 (c gives its claim back; a2
    // keeps its one claim and is registered again with 1 untracked).
    let c_claims = registry.claims(Some("c"))?;
    assert_eq!(c_claims.len(), 1);
    registry.release(&c_claims[0].task_id, Some(c_claims[0].token))?;
    registry.register(worker("a2", &["x"], Busy, 1, 6))?;
    assert_eq!(registry.get("a2")?.current_load, 2);
    assert_eq!(claimed(registry, &["x"], Priority::Critical)?, "a2");
    Ok(())
}

/// [`DefaultRouter`]: "An agent is *eligible* for a task when it is not
/// offline, has a free slot (`max_load` 0, or `current_load` below
/// `max_load`)".
pub fn claim_skips_full_and_offline_agents(registry: &Subject) -> Result<()> {
    registry.register(worker("full-available", &["x"], Available, 2, 2))?;
    registry.register(worker("full-busy", &["x"], Busy, 1, 1))?;
    registry.register(worker("offline", &["x"], Offline, 0, 0))?;
    for priority in [Priority::Medium, Priority::Critical] {
        expect_no_eligible(
            registry
                .claim(&task(&["x"], priority), None)
                .map(|claimed| claimed.agent),
        );
    }
    registry.register(worker("loaded", &["x"], Busy, 5, 6))?;
    assert_eq!(claimed(registry, &["x"], Priority::Critical)?, "loaded");
    expect_no_eligible(
        registry
            .claim(&task(&["x"], Priority::Critical), None)
            .map(|claimed| claimed.agent),
    );
    // Nothing else moved.
    assert_eq!(registry.get("full-available")?.current_load, 2);
    assert_eq!(registry.get("offline")?.current_load, 0);
    Ok(())
}

/// [`DefaultRouter`]: "An agent is *eligible* for a task when it ... holds
/// every label of the task among its capabilities."
pub fn claim_needs_every_label(registry: &Subject) -> Result<()> {
    registry.register(worker("rust-only", &["rust"], Available, 0, 0))?;
    registry.register(worker("gpu-only", &["gpu"], Available, 0, 0))?;
    registry.register(worker("z-both", &["gpu", "linux", "rust"], Available, 3, 4))?;
    assert_eq!(
        claimed(registry, &["rust", "gpu"], Priority::Medium)?,
        "z-both"
    );
    expect_no_eligible(
        registry
            .claim(&task(&["gpu", "rust"], Priority::Medium), None)
            .map(|claimed| claimed.agent),
    );
    // Duplicate labels count once.
    assert_eq!(
        claimed(registry, &["gpu", "gpu"], Priority::Medium)?,
        "gpu-only"
    );
    Ok(())
}

/// [`Task`]: "a task without labels fits any agent."
pub fn claim_without_labels_takes_any_agent(registry: &Subject) -> Result<()> {
    expect_no_eligible(
        registry
            .claim(&task(&[], Priority::Medium), None)
            .map(|claimed| claimed.agent),
    );
    registry.register(worker("bare", &[], Available, 1, 2))?;
    registry.register(worker("skilled", &["x", "y"], Available, 0, 2))?;
    assert_eq!(claimed(registry, &[], Priority::Medium)?, "skilled");
    assert_eq!(claimed(registry, &[], Priority::Critical)?, "bare");
    Ok(())
}

/// [`AgentRegistry::claim`]: "[`Error::NoEligibleAgent`] when no agent can
/// take the task, ...; nothing changes then."
pub fn claim_with_an_unknown_label_finds_nobody(registry: &Subject) -> Result<()> {
    registry.register(worker("a", &["x"], Available, 0, 0))?;
    expect_no_eligible(
        registry
            .claim(&task(&["nobody-has-this"], Priority::Medium), None)
            .map(|claimed| claimed.agent),
    );
    expect_no_eligible(
        registry
            .claim(&task(&["x", "nobody-has-this"], Priority::Critical), None)
            .map(|claimed| claimed.agent),
    );
    assert_eq!(registry.get("a")?.current_load, 0);
    Ok(())
}

/// [`AgentRegistry::claim`]: "[`Error::Invalid`] for labels that break the
/// rules; nothing changes then."
pub fn claim_refuses_bad_labels(registry: &Subject) -> Result<()> {
    registry.register(worker("a", &["x"], Available, 0, 0))?;
    let long = "l".repeat(crate::MAX_CAPABILITY_CHARS + 1);
    for bad in [
        "",
        "new
line",
        long.as_str(),
    ] {
        match registry
            .claim(&task(&["x", bad], Priority::Medium), None)
            .map(|claimed| claimed.agent)
        {
            Err(Error::Invalid {
                field: "labels", ..
            }) => {}
            other => panic!("label {bad:?}: expected invalid labels, got {other:?}"),
        }
    }
    assert_eq!(registry.get("a")?.current_load, 0);
    Ok(())
}

/// [`AgentRegistry::claim`]: "adds one to its `current_load`": claims fill
/// every free slot, and not one more.
pub fn claim_fills_capacity_exactly(registry: &Subject) -> Result<()> {
    registry.register(worker("a", &["x"], Available, 0, 3))?;
    registry.register(worker("b", &["x"], Busy, 1, 2))?;
    registry.register(worker("c", &["y"], Available, 0, 5))?;
    let mut claims = 0;
    while registry
        .claim(&task(&["x"], Priority::Medium), None)
        .map(|claimed| claimed.agent)
        .is_ok()
    {
        claims += 1;
        assert!(claims <= 4, "over-booked");
    }
    assert_eq!(claims, 4);
    assert_eq!(registry.get("a")?.current_load, 3);
    assert_eq!(registry.get("b")?.current_load, 2);
    assert_eq!(registry.get("c")?.current_load, 0);
    Ok(())
}

/// [`AgentRegistry::claim`]: "Chooses the agent that [`DefaultRouter`] would
/// choose for `task` among the agents registered at this instant".
pub fn claim_agrees_with_the_router(registry: &Subject) -> Result<()> {
    let vocabulary = ["a", "b", "c", "d"];
    for i in 0..30_u32 {
        let caps: Vec<&str> = vocabulary
            .iter()
            .enumerate()
            .filter(|(j, _)| !(i as usize + j).is_multiple_of(3))
            .map(|(_, c)| *c)
            .collect();
        let status = [Available, Busy, Offline][(i % 3) as usize];
        let max = i % 5;
        registry.register(worker(
            &format!("w{i:02}"),
            &caps,
            status,
            (i * 7) % (max + 1),
            max,
        ))?;
    }
    let router = DefaultRouter::new();
    for step in 0..60 {
        let labels: Vec<&str> = vocabulary
            .iter()
            .copied()
            .skip(step % 4)
            .take(step % 3)
            .collect();
        let priority = [Priority::Low, Priority::Critical, Priority::High][step % 3];
        let t = task(&labels, priority);
        let expected = router.route(&t, &registry.list()?);
        match (
            expected,
            registry.claim(&t, None).map(|claimed| claimed.agent),
        ) {
            (Ok(want), Ok(got)) => assert_eq!(got.id, want, "step {step}"),
            (Err(Error::NoEligibleAgent), Err(Error::NoEligibleAgent)) => {}
            (want, got) => panic!("step {step}: router {want:?}, claim {got:?}"),
        }
    }
    Ok(())
}

/// [`AgentRegistry::release`]: "Gives back the slot held for `task_id`: the
/// claim is deleted and its agent's `current_load` drops by one ... Returns
/// the claim released."
pub fn release_gives_a_slot_back(registry: &Subject) -> Result<()> {
    registry.register(worker("a", &["x"], Available, 0, 1))?;
    let claimed = registry.claim(&named_task("job-1", &["x"]), None)?;
    assert_eq!(claimed.agent.current_load, 1);
    assert_eq!(
        (
            claimed.claim.task_id.as_str(),
            claimed.claim.agent_id.as_str()
        ),
        ("job-1", "a")
    );
    expect_no_eligible(
        registry
            .claim(&task(&["x"], Priority::Medium), None)
            .map(|claimed| claimed.agent),
    );
    let released = registry.release("job-1", Some(claimed.claim.token))?;
    assert_eq!(released, claimed.claim);
    assert_eq!(registry.get("a")?.current_load, 0);
    assert!(registry.claims(None)?.is_empty());
    assert_eq!(claimed_id(registry, &["x"])?, "a");
    Ok(())
}

/// [`AgentRegistry::release`]: "[`Error::StaleClaim`] when no claim of the
/// task is held, or not under `token`; nothing changes then."
pub fn release_refuses_what_it_cannot_do(registry: &Subject) -> Result<()> {
    registry.register(worker("idle", &["x"], Available, 0, 2))?;
    match registry.release("never-claimed", None) {
        Err(e @ Error::StaleClaim { .. }) => assert_eq!(
            e.to_string(),
            "no claim of task never-claimed is held (released or recovered already)"
        ),
        other => panic!("expected StaleClaim, got {other:?}"),
    }
    let claimed = registry.claim(&named_task("job", &["x"]), None)?;
    let token = claimed.claim.token;
    match registry.release("job", Some(token + 1)) {
        Err(e @ Error::StaleClaim { .. }) => assert_eq!(
            e.to_string(),
            format!(
                "stale token {} for task job: it is held under token {token} now (the claim was recovered and taken again, or the token is wrong)",
                token + 1
            )
        ),
        other => panic!("expected StaleClaim, got {other:?}"),
    }
    assert_eq!(registry.get("idle")?.current_load, 1);
    assert_eq!(registry.claims(None)?, [claimed.claim]);
    Ok(())
}

/// Documents as a Go program sends them (an offset, `"capabilities":
/// null`, no `last_heartbeat`), and the bytes Go's `json.Marshal` writes
/// for what the registry then returns. Times are whole microseconds, so
/// every precision keeps them.
const GO_DOCUMENTS: [(&str, &str); 3] = [
    (
        r#"{"id":"go-1","name":"Go <one> & \u2028 two","capabilities":null,"status":"busy","last_heartbeat":"2026-02-20T09:16:53.1+02:00","current_load":1,"max_load":3}"#,
        r#"{"id":"go-1","name":"Go \u003cone\u003e \u0026 \u2028 two","status":"busy","last_heartbeat":"2026-02-20T07:16:53.1Z","current_load":1,"max_load":3}"#,
    ),
    (
        r#"{"id":"go-2","name":"漢字 🦀","capabilities":["go","testing"],"status":"available","current_load":0,"max_load":0}"#,
        r#"{"id":"go-2","name":"漢字 🦀","capabilities":["go","testing"],"status":"available","last_heartbeat":"0001-01-01T00:00:00Z","current_load":0,"max_load":0}"#,
    ),
    (
        r#"{"id":"go-3","name":"","status":"offline","last_heartbeat":"2026-02-20T07:16:53.000001Z","current_load":0,"max_load":4294967295}"#,
        r#"{"id":"go-3","name":"","status":"offline","last_heartbeat":"2026-02-20T07:16:53.000001Z","current_load":0,"max_load":4294967295}"#,
    ),
];

/// README, JSON: "`AgentInfo` serialises as the Go registry it descends
/// from did, byte for byte through `roster::to_json`", and reads what Go's
/// decoder reads (`"capabilities": null`, a missing `last_heartbeat`).
pub fn json_from_go_round_trips_exactly(registry: &Subject) -> Result<()> {
    for (document, _) in GO_DOCUMENTS {
        let agent: AgentInfo = serde_json::from_str(document).expect("a Go document");
        registry.register(agent)?;
    }
    for (document, go_bytes) in GO_DOCUMENTS {
        let sent: AgentInfo = serde_json::from_str(document).expect("a Go document");
        let stored = registry.get(&sent.id)?;
        assert_eq!(stored, sent);
        assert_eq!(crate::to_json(&stored).expect("to_json"), go_bytes);
    }
    let list = crate::to_json(&registry.list()?).expect("to_json");
    let go_list = format!("[{}]", GO_DOCUMENTS.map(|(_, go_bytes)| go_bytes).join(","));
    assert_eq!(list, go_list);
    Ok(())
}

/// [`AgentRegistry::reap`]: "Marks offline every agent that is not offline
/// yet and whose `last_heartbeat` is older than now minus `ttl`", Go's zero
/// time included (an agent registered without a heartbeat).
pub fn an_agent_never_seen_is_reaped(registry: &Subject) -> Result<()> {
    let agent: AgentInfo =
        serde_json::from_str(r#"{"id":"silent","name":"Silent"}"#).expect("a Go document");
    registry.register(agent)?;
    assert_eq!(registry.get("silent")?.last_heartbeat, crate::ZERO_TIME);
    assert_eq!(registry.reap(Duration::from_secs(30))?, ["silent"]);
    registry.heartbeat("silent")?;
    let revived = registry.get("silent")?;
    assert_ne!(revived.last_heartbeat, crate::ZERO_TIME);
    assert!(
        crate::to_json(&revived)
            .expect("to_json")
            .contains(r#""status":"available""#)
    );
    Ok(())
}

/// [`AgentRegistry::drain`]: "the agent gets no new claims, keeps
/// heartbeating and keeps what it holds"; [`AgentRegistry::register`]:
/// "`drained` is never taken from the caller".
pub fn drained_agents_get_no_claims_and_register_keeps_the_drain(registry: &Subject) -> Result<()> {
    registry.register(worker("busy-one", &["x"], Available, 1, 4))?;
    registry.register(worker("idle-one", &["x"], Available, 0, 4))?;
    registry.drain("idle-one", true)?;
    registry.drain("idle-one", true)?;
    assert!(registry.get("idle-one")?.drained);
    // The drained agent would win on usage; it is skipped.
    let claimed = registry
        .claim(&task(&["x"], Priority::Critical), None)?
        .agent;
    assert_eq!(claimed.id, "busy-one");
    registry.drain("busy-one", true)?;
    assert!(matches!(
        registry
            .claim(&task(&["x"], Priority::Medium), None)
            .map(|claimed| claimed.agent),
        Err(Error::NoEligibleAgent)
    ));
    // It keeps heartbeating and keeps its load.
    registry.heartbeat("busy-one")?;
    let busy = registry.get("busy-one")?;
    assert_eq!((busy.current_load, busy.drained), (2, true));
    // A sidecar's re-register does not undo the operator's drain, whatever
    // it sends; a new agent starts undrained.
    registry.register(AgentInfo {
        drained: false,
        ..worker("idle-one", &["x"], Available, 0, 4)
    })?;
    assert!(registry.get("idle-one")?.drained);
    registry.register(AgentInfo {
        drained: true,
        ..worker("fresh", &["x"], Available, 0, 4)
    })?;
    assert!(!registry.get("fresh")?.drained);
    registry.drain("idle-one", false)?;
    assert_eq!(
        registry
            .claim(&task(&["x"], Priority::Critical), None)?
            .agent
            .id,
        "fresh"
    );
    assert!(matches!(registry.drain("ghost", true), Err(Error::NotFound(id)) if id == "ghost"));
    Ok(())
}

/// [`AgentRegistry::set_status`]: "Sets the agent's status, whatever it
/// was ... Only the status changes."
pub fn set_status_changes_only_the_status(registry: &Subject) -> Result<()> {
    let original = worker("w", &["x"], Busy, 2, 4);
    registry.register(original.clone())?;
    for status in [Offline, Available, Busy, Offline] {
        registry.set_status("w", status)?;
        let got = registry.get("w")?;
        assert_kept(
            registry,
            got,
            &AgentInfo {
                status,
                ..original.clone()
            },
        );
    }
    assert!(matches!(
        registry
            .claim(&task(&["x"], Priority::Medium), None)
            .map(|claimed| claimed.agent),
        Err(Error::NoEligibleAgent)
    ));
    assert!(matches!(
        registry.set_status("ghost", Available),
        Err(Error::NotFound(id)) if id == "ghost"
    ));
    Ok(())
}

/// [`AgentInfo` rules](AgentInfo#rules): "`host`, when given: 1 to
/// [`MAX_HOST_CHARS`](crate::MAX_HOST_CHARS) characters, no control or format
/// characters; `pid`, when given: not 0; `metadata`: at most
/// [`MAX_METADATA`](crate::MAX_METADATA) pairs ...".
pub fn bad_metadata_is_refused(registry: &Subject) -> Result<()> {
    let with = |key: &str, value: &str| AgentInfo {
        metadata: [(key.to_owned(), value.to_owned())].into_iter().collect(),
        ..agent("m")
    };
    for bad in [
        with("", "v"),
        with("k\u{200B}", "v"),
        with(&"k".repeat(crate::MAX_METADATA_KEY_CHARS + 1), "v"),
        with("k", "line\nbreak"),
        with("k", "\u{202E}"),
        with("k", &"v".repeat(crate::MAX_METADATA_VALUE_CHARS + 1)),
        AgentInfo {
            metadata: (0..=crate::MAX_METADATA)
                .map(|i| (format!("k{i}"), String::new()))
                .collect(),
            ..agent("m")
        },
    ] {
        expect_invalid(registry, bad, "metadata");
    }
    for host in ["", "tab\there", "zero\u{200B}width"] {
        expect_invalid(
            registry,
            AgentInfo {
                host: Some(host.into()),
                ..agent("m")
            },
            "host",
        );
    }
    expect_invalid(
        registry,
        AgentInfo {
            pid: Some(0),
            ..agent("m")
        },
        "pid",
    );
    assert!(registry.list()?.is_empty());
    // The limits themselves are fine.
    let most = AgentInfo {
        host: Some("h".repeat(crate::MAX_HOST_CHARS)),
        pid: Some(u32::MAX),
        metadata: (0..crate::MAX_METADATA)
            .map(|i| {
                (
                    format!("k{i:02}"),
                    "v".repeat(crate::MAX_METADATA_VALUE_CHARS),
                )
            })
            .collect(),
        ..agent("m")
    };
    registry.register(most.clone())?;
    assert_kept(registry, registry.get("m")?, &most);
    Ok(())
}

/// [`AgentRegistry::claim`]: "records a [`Claim`](crate::Claim) of `task.id`
/// on it ... the claim gets a fencing token larger than every token before,
/// and, with a `lease`, an expiry of now + `lease`"; "An empty `task.id` gets
/// a unique, time-ordered one".
pub fn claims_are_rows_with_growing_tokens(registry: &Subject) -> Result<()> {
    registry.register(worker("a", &["x"], Available, 0, 0))?;
    let before = Utc::now();
    let first = registry.claim(&named_task("job-1", &["x"]), None)?;
    let second = registry.claim(&named_task("job-2", &["x"]), Some(Duration::from_secs(60)))?;
    let generated = registry.claim(&task(&["x"], Priority::Medium), None)?;
    assert_eq!(first.claim.task_id, "job-1");
    assert_eq!(first.claim.agent_id, "a");
    assert!(first.claim.token < second.claim.token);
    assert!(second.claim.token < generated.claim.token);
    assert!(first.claim.claimed_at >= before - TimeDelta::seconds(1));
    assert_eq!(first.claim.lease_expires_at, None);
    let expiry = second.claim.lease_expires_at.expect("a lease");
    let lease = expiry - second.claim.claimed_at;
    assert!(
        (lease - TimeDelta::seconds(60)).abs() < TimeDelta::milliseconds(1),
        "{lease}"
    );
    assert!(
        generated.claim.task_id.starts_with("task-"),
        "{}",
        generated.claim.task_id
    );
    assert_eq!(generated.agent.current_load, 3);
    assert_eq!(
        registry.claims(None)?,
        [
            first.claim.clone(),
            second.claim.clone(),
            generated.claim.clone()
        ]
    );
    assert_eq!(registry.claims(Some("a"))?.len(), 3);
    assert!(registry.claims(Some("b"))?.is_empty());
    // Released and claimed again, a task gets a larger token still.
    registry.release("job-1", Some(first.claim.token))?;
    let again = registry.claim(&named_task("job-1", &["x"]), None)?;
    assert!(again.claim.token > generated.claim.token);
    Ok(())
}

/// [`AgentRegistry::claim`]: "[`Error::AlreadyClaimed`] when `task.id` is
/// held (even when no agent is free)"; task ids follow the rules of agent
/// ids; "a lease of 0" is invalid. Nothing changes then.
pub fn claims_refuse_held_tasks_bad_ids_and_empty_leases(registry: &Subject) -> Result<()> {
    registry.register(worker("a", &["x"], Available, 0, 1))?;
    let held = registry.claim(&named_task("job", &["x"]), None)?;
    let before = (registry.list()?, registry.claims(None)?);
    match registry.claim(&named_task("job", &["x"]), None) {
        Err(e @ Error::AlreadyClaimed { .. }) => assert_eq!(
            e.to_string(),
            format!(
                "task job is already claimed by agent a (token {})",
                held.claim.token
            )
        ),
        other => panic!("expected AlreadyClaimed, got {other:?}"),
    }
    for bad in [
        "tab\tid",
        "zero\u{200B}width",
        &"t".repeat(crate::MAX_ID_CHARS + 1),
    ] {
        match registry.claim(&named_task(bad, &[]), None) {
            Err(Error::Invalid {
                field: "task_id", ..
            }) => {}
            other => panic!("{bad:?}: expected invalid task_id, got {other:?}"),
        }
    }
    registry.register(worker("b", &["x"], Available, 0, 1))?;
    let before_b = (registry.list()?, registry.claims(None)?);
    match registry.claim(&named_task("fresh", &["x"]), Some(Duration::ZERO)) {
        Err(Error::Invalid { field: "lease", .. }) => {}
        other => panic!("expected invalid lease, got {other:?}"),
    }
    assert_eq!((registry.list()?, registry.claims(None)?), before_b);
    assert_eq!(before.1, registry.claims(None)?);
    Ok(())
}

/// [`AgentRegistry::renew`]: "Extends the lease of the claim held for
/// `task_id` (under `token`, when given) to now + `lease`"; a stale token "is
/// refused ... and changes nothing".
pub fn renew_extends_a_lease_and_refuses_stale_tokens(registry: &Subject) -> Result<()> {
    registry.register(worker("a", &["x"], Available, 0, 0))?;
    let claimed = registry.claim(&named_task("job", &["x"]), Some(Duration::from_secs(5)))?;
    let token = claimed.claim.token;
    let renewed = registry.renew("job", Some(token), Duration::from_secs(3600))?;
    assert_eq!(renewed.token, token);
    assert!(renewed.lease_expires_at > claimed.claim.lease_expires_at);
    assert!(renewed.lease_expires_at.expect("lease") > Utc::now() + TimeDelta::minutes(59));
    // Without a token: an operator's override.
    registry.renew("job", None, Duration::from_secs(60))?;
    for (task_id, token) in [("job", Some(token + 1)), ("other", None)] {
        match registry.renew(task_id, token, Duration::from_secs(60)) {
            Err(Error::StaleClaim { .. }) => {}
            other => panic!("expected StaleClaim, got {other:?}"),
        }
    }
    assert!(matches!(
        registry.renew("job", Some(token), Duration::ZERO),
        Err(Error::Invalid { field: "lease", .. })
    ));
    assert_eq!(registry.claims(None)?.len(), 1);
    Ok(())
}

/// [`AgentRegistry::recover`]: "Takes back every claim whose agent was
/// deregistered, whose agent is offline, or whose lease has run out ... and
/// returns each with its reason ... agent gone over agent offline over lease
/// expired"; [`AgentRegistry::deregister`]: "The claims it holds are kept,
/// detached from it".
pub fn recover_takes_back_what_is_due_once_with_its_reason(registry: &Subject) -> Result<()> {
    for id in ["gone", "off", "live"] {
        registry.register(worker(id, &[id], Available, 0, 0))?;
    }
    let short = Some(Duration::from_nanos(1));
    let gone = registry.claim(&named_task("t-gone", &["gone"]), short)?;
    let off = registry.claim(&named_task("t-off", &["off"]), short)?;
    let expired = registry.claim(&named_task("t-expired", &["live"]), short)?;
    let kept = registry.claim(
        &named_task("t-kept", &["live"]),
        Some(Duration::from_secs(3600)),
    )?;
    let unleased = registry.claim(&named_task("t-unleased", &["live"]), None)?;
    registry.deregister("gone")?;
    registry.set_status("off", Offline)?;
    // Deregistered, its claim is still listed, under the agent that took it.
    assert_eq!(
        registry.claims(Some("gone"))?,
        std::slice::from_ref(&gone.claim)
    );
    // Let the one-nanosecond leases run out for sure.
    while Utc::now() <= expired.claim.lease_expires_at.expect("lease") {
        std::hint::spin_loop();
    }
    let recovered = registry.recover()?;
    let got: Vec<(&str, RecoverReason)> = recovered
        .iter()
        .map(|r| (r.claim.task_id.as_str(), r.reason))
        .collect();
    assert_eq!(
        got,
        [
            ("t-gone", RecoverReason::AgentGone),
            ("t-off", RecoverReason::AgentOffline),
            ("t-expired", RecoverReason::LeaseExpired),
        ]
    );
    assert_eq!(recovered[1].claim, off.claim);
    assert!(
        registry.recover()?.is_empty(),
        "each claim is recovered once"
    );
    assert_eq!(registry.claims(None)?, [kept.claim, unleased.claim]);
    assert_eq!(registry.get("off")?.current_load, 0);
    assert_eq!(registry.get("live")?.current_load, 2);
    // The tasks may be claimed again.
    registry.claim(&named_task("t-expired", &["live"]), None)?;
    Ok(())
}

/// [`AgentRegistry::register`]: "the claims the agent holds stay held: the
/// caller's `current_load` is the agent's untracked load ... a register whose
/// load plus the held claims would pass a non-zero `max_load` is refused";
/// "Claims of an agent that was deregistered are not inherited by a new
/// agent registered under the same id".
pub fn register_keeps_claims_and_new_agents_do_not_inherit_them(registry: &Subject) -> Result<()> {
    registry.register(worker("a", &["x"], Available, 0, 3))?;
    registry.claim(&named_task("j1", &["x"]), None)?;
    registry.claim(&named_task("j2", &["x"]), None)?;
    // A sidecar restarts and registers with load 0: the claims stay.
    registry.register(worker("a", &["x"], Available, 0, 3))?;
    assert_eq!(registry.get("a")?.current_load, 2);
    assert_eq!(registry.claims(Some("a"))?.len(), 2);
    registry.register(worker("a", &["x"], Busy, 1, 3))?;
    assert_eq!(registry.get("a")?.current_load, 3);
    match registry.register(worker("a", &["x"], Available, 2, 3)) {
        Err(Error::Invalid {
            field: "current_load",
            reason,
        }) => assert!(
            reason.contains("plus the 2 claim(s) the agent holds is above max_load 3"),
            "{reason}"
        ),
        other => panic!("expected invalid current_load, got {other:?}"),
    }
    assert_eq!(registry.get("a")?.current_load, 3);
    // An offline agent that heartbeats back keeps its claims.
    registry.set_status("a", Offline)?;
    registry.heartbeat("a")?;
    assert_eq!(registry.get("a")?.current_load, 3);
    assert!(registry.recover()?.is_empty());
    // Deregistered and registered again: a new agent, without the claims.
    registry.deregister("a")?;
    registry.register(worker("a", &["x"], Available, 0, 3))?;
    assert_eq!(registry.get("a")?.current_load, 0);
    let recovered = registry.recover()?;
    assert_eq!(recovered.len(), 2);
    assert!(
        recovered
            .iter()
            .all(|r| r.reason == RecoverReason::AgentGone)
    );
    assert_eq!(registry.get("a")?.current_load, 0);
    Ok(())
}

/// The kinds and subjects of the events after `after`.
fn kinds_after(registry: &Subject, after: u64) -> Result<Vec<String>> {
    Ok(registry
        .events(after, crate::MAX_EVENTS_PAGE)?
        .into_iter()
        .map(|e| {
            let mut text = format!("{} {}", e.kind, e.agent_id);
            if let Some(task) = e.task_id {
                text.push_str(&format!(" {task}"));
            }
            if let Some(status) = e.status {
                text.push_str(&format!(" {status}"));
            }
            if let Some(reason) = e.reason {
                text.push_str(&format!(" {reason}"));
            }
            text
        })
        .collect())
}

/// [`AgentRegistry::events`]: "Every state transition is one event ...
/// cursors grow by one per event in commit order"; a heartbeat that changes
/// nothing but `last_heartbeat` writes no event.
pub fn every_transition_is_one_event(registry: &Subject) -> Result<()> {
    let start = registry.last_event()?;
    registry.register(worker("a", &["x"], Available, 0, 2))?;
    registry.heartbeat("a")?;
    registry.heartbeat("a")?;
    registry.register(worker("a", &["x"], Busy, 0, 2))?;
    registry.set_status("a", Offline)?;
    registry.set_status("a", Offline)?;
    registry.heartbeat("a")?;
    registry.drain("a", true)?;
    registry.drain("a", true)?;
    registry.drain("a", false)?;
    let claimed = registry.claim(&named_task("job", &["x"]), Some(Duration::from_secs(60)))?;
    registry.renew("job", Some(claimed.claim.token), Duration::from_secs(120))?;
    registry.release("job", Some(claimed.claim.token))?;
    registry.claim(&named_task("job2", &["x"]), None)?;
    registry.set_status("a", Offline)?;
    registry.recover()?;
    registry.register(worker("b", &[], Available, 0, 0))?;
    registry.reap(Duration::ZERO)?;
    registry.deregister("a")?;
    assert_eq!(
        kinds_after(registry, start)?,
        [
            "registered a available",
            "updated a busy",
            "status a offline",
            "status a available",
            "drained a",
            "undrained a",
            "claimed a job",
            "renewed a job",
            "released a job",
            "claimed a job2",
            "status a offline",
            "recovered a job2 agent_offline",
            "registered b available",
            "status b offline",
            "deregistered a",
        ]
    );
    let events = registry.events(start, crate::MAX_EVENTS_PAGE)?;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (start + 1..=start + 15).collect();
    assert_eq!(seqs, expected, "cursors grow by one per event");
    assert_eq!(registry.last_event()?, start + 15);
    let claim_event = &events[6];
    assert_eq!(claim_event.token, Some(claimed.claim.token));
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at));
    Ok(())
}

/// [`AgentRegistry::events`]: "reading from where the last page ended
/// returns every later event exactly once"; "[`Error::CursorAhead`] for a
/// cursor beyond the newest event"; a limit of 1 to
/// [`MAX_EVENTS_PAGE`](crate::MAX_EVENTS_PAGE).
pub fn events_read_in_pages_from_a_cursor(registry: &Subject) -> Result<()> {
    let start = registry.last_event()?;
    for i in 0..7 {
        registry.register(worker(&format!("w{i}"), &[], Available, 0, 0))?;
    }
    let mut cursor = start;
    let mut seen = Vec::new();
    loop {
        let page = registry.events(cursor, 3)?;
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        cursor = page.last().map_or(cursor, |e| e.seq);
        seen.extend(page.into_iter().map(|e| e.agent_id));
    }
    assert_eq!(seen, ["w0", "w1", "w2", "w3", "w4", "w5", "w6"]);
    assert_eq!(cursor, registry.last_event()?);
    assert!(registry.events(cursor, 10)?.is_empty());
    match registry.events(cursor + 1, 10) {
        Err(e @ Error::CursorAhead { .. }) => assert_eq!(
            e.to_string(),
            format!(
                "cursor {} is ahead of the newest event {cursor}: it is not a cursor of this registry",
                cursor + 1
            )
        ),
        other => panic!("expected CursorAhead, got {other:?}"),
    }
    for limit in [0, crate::MAX_EVENTS_PAGE + 1] {
        assert!(matches!(
            registry.events(start, limit),
            Err(Error::Invalid { field: "limit", .. })
        ));
    }
    Ok(())
}

/// [`AgentRegistry::watch`]: "waits up to `timeout` for at least one event
/// after `after`, waking as soon as any process commits one; returns an
/// empty page when the time is up".
pub fn watch_wakes_on_a_change_and_times_out_without_one(registry: &Subject) -> Result<()> {
    let cursor = registry.last_event()?;
    assert!(
        registry
            .watch(cursor, 10, Duration::from_millis(20))?
            .is_empty()
    );
    std::thread::scope(|scope| -> Result<()> {
        let watcher = scope.spawn(|| registry.watch(cursor, 10, Duration::from_secs(60)));
        registry.register(worker("late", &[], Available, 0, 0))?;
        let page = watcher.join().expect("the watcher thread")?;
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].kind, crate::EventKind::Registered);
        assert_eq!(page[0].agent_id, "late");
        Ok(())
    })
}
