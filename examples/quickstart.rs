//! Registers three agents in a fresh registry file, heartbeats two of them,
//! reaps the one that went quiet and prints what the registry holds.
//!
//! Run with `cargo run --example quickstart [PATH]` (default: `quickstart.db`,
//! replaced on every run).

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use roster::{AgentInfo, AgentRegistry, SqliteRegistry};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "quickstart.db".to_owned());
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    let registry = SqliteRegistry::open(&path)?;
    println!("registry file: {path}");

    for (id, capabilities, max_load) in [
        ("builder-1", vec!["rust", "linux"], 4),
        ("gpu-1", vec!["cuda", "python"], 1),
        ("tester-1", vec!["rust", "python"], 2),
    ] {
        registry.register(AgentInfo {
            id: id.into(),
            name: format!("{id} on this host"),
            capabilities: capabilities.into_iter().map(String::from).collect(),
            max_load,
            // gpu-1 was last seen a minute ago and has gone quiet since.
            last_heartbeat: Utc::now() - TimeDelta::seconds(60),
            ..AgentInfo::default()
        })?;
        println!("registered {id}");
    }
    for id in ["builder-1", "tester-1"] {
        registry.heartbeat(id)?;
        println!("heartbeat  {id}");
    }
    let reaped = registry.reap(Duration::from_secs(30))?;
    println!("reaped (silent for 30 s): {reaped:?}");

    println!();
    println!(
        "{:<10} {:<9} {:>4}/{:<4} capabilities",
        "id", "status", "load", "max"
    );
    for agent in registry.list()? {
        println!(
            "{:<10} {:<9} {:>4}/{:<4} {}",
            agent.id,
            agent.status,
            agent.current_load,
            agent.max_load,
            agent.capabilities.join(",")
        );
    }
    println!();
    println!("query it yourself: sqlite3 {path} \"SELECT * FROM agents\"");
    Ok(())
}
