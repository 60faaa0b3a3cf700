//! One function per short-lived subcommand: a library call, then its
//! result in text or JSON. The long-running ones are in `daemon`, the demo
//! in `demo`.

use std::time::Duration;

use roster::{AgentInfo, AgentRegistry, AgentStatus, Priority, SqlAccess, SqliteRegistry, Task};

use super::args::AgentArgs;
use super::exit::Outcome;
use super::output;
use super::printer::Printer;

/// Prints `agent` as JSON, or `line` in text.
fn show(out: &mut Printer, agent: &AgentInfo, line: String) -> Outcome {
    if out.json {
        out.json(agent)
    } else {
        out.line(line)
    }
}

/// `roster register`.
pub(crate) fn register(registry: &SqliteRegistry, out: &mut Printer, args: &AgentArgs) -> Outcome {
    registry.register(args.to_agent())?;
    let stored = registry.get(&args.id)?;
    if out.json {
        return out.json(&stored);
    }
    out.line(format_args!("registered {}", stored.id))?;
    output::agent(out, &stored)
}

/// `roster deregister`.
pub(crate) fn deregister(registry: &SqliteRegistry, out: &mut Printer, id: &str) -> Outcome {
    registry.deregister(id)?;
    if out.json {
        return out.json(&serde_json::json!({ "deregistered": id }));
    }
    out.line(format_args!("deregistered {id}"))
}

/// `roster get`.
pub(crate) fn get(registry: &SqliteRegistry, out: &mut Printer, id: &str) -> Outcome {
    let agent = registry.get(id)?;
    if out.json {
        return out.json(&agent);
    }
    output::agent(out, &agent)
}

/// `roster heartbeat`.
pub(crate) fn heartbeat(registry: &SqliteRegistry, out: &mut Printer, id: &str) -> Outcome {
    registry.heartbeat(id)?;
    let agent = registry.get(id)?;
    let line = format!("heartbeat {} ({})", agent.id, agent.status);
    show(out, &agent, line)
}

/// `roster release`.
pub(crate) fn release(registry: &SqliteRegistry, out: &mut Printer, id: &str) -> Outcome {
    registry.release(id)?;
    let agent = registry.get(id)?;
    let line = format!(
        "released a slot on {} (load {})",
        agent.id,
        output::load(&agent)
    );
    show(out, &agent, line)
}

/// `roster list`.
pub(crate) fn list(
    registry: &SqliteRegistry,
    out: &mut Printer,
    status: Option<AgentStatus>,
    capabilities: &[String],
) -> Outcome {
    let agents: Vec<AgentInfo> = registry
        .list()?
        .into_iter()
        .filter(|a| status.is_none_or(|s| a.status == s))
        .filter(|a| capabilities.iter().all(|c| a.capabilities.contains(c)))
        .collect();
    if out.json {
        return out.json(&agents);
    }
    if agents.is_empty() {
        out.line("no agents")
    } else {
        output::agents(out, &agents)
    }
}

/// `roster reap`.
pub(crate) fn reap(registry: &SqliteRegistry, out: &mut Printer, ttl: Duration) -> Outcome {
    let reaped = registry.reap(ttl)?;
    if out.json {
        return out.json(&reaped);
    }
    if reaped.is_empty() {
        out.line(format_args!(
            "nobody was silent for more than {}",
            humantime::format_duration(ttl)
        ))
    } else {
        out.line(format_args!("marked offline: {}", reaped.join(", ")))
    }
}

/// `roster claim`.
pub(crate) fn claim(
    registry: &SqliteRegistry,
    out: &mut Printer,
    labels: Vec<String>,
    priority: Priority,
    task_id: String,
) -> Outcome {
    let agent = registry.claim(&Task {
        id: task_id,
        labels,
        priority,
    })?;
    let line = format!(
        "claimed a slot on {} (load {})",
        agent.id,
        output::load(&agent)
    );
    show(out, &agent, line)
}

/// `roster sql`.
pub(crate) fn sql(
    registry: &SqliteRegistry,
    out: &mut Printer,
    query: &str,
    write: bool,
) -> Outcome {
    let access = if write {
        SqlAccess::ReadWrite
    } else {
        SqlAccess::ReadOnly
    };
    let result = registry.query(query, access)?;
    if out.json {
        return out.json(&result);
    }
    let rows: Vec<Vec<String>> = result
        .rows
        .iter()
        .map(|row| row.iter().map(ToString::to_string).collect())
        .collect();
    let header: Vec<&str> = result.columns.iter().map(String::as_str).collect();
    if header.is_empty() {
        return Ok(());
    }
    output::table(out, &header, &rows)
}
