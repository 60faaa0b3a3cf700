//! One function per short-lived subcommand: a library call, then its
//! result in text or JSON. The long-running ones are in `daemon`, the demo
//! in `demo`.

use std::time::Duration;

use clap::CommandFactory;
use clap_complete::Shell;
use roster::{
    AgentInfo, AgentRegistry, AgentStatus, Claim, Claimed, Error, SqlAccess, SqlOptions,
    SqlSummary, SqlValue, Task,
};

use super::args::{AgentArgs, Cli};
use super::backend::Registry;
use super::exit::{Failure, Outcome};
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

/// `roster register`: the agent heartbeats now, by the registry's clock
/// (the server's, on PostgreSQL).
pub(crate) fn register(registry: &Registry, out: &mut Printer, args: &AgentArgs) -> Outcome {
    let mut agent = args.to_agent()?.validated()?;
    agent.last_heartbeat = registry.now()?;
    registry.register(agent)?;
    let stored = registry.get(&args.id)?;
    if out.json {
        return out.json(&stored);
    }
    out.line(format_args!("registered {}", stored.id))?;
    output::agent(out, &stored)
}

/// `roster deregister`.
pub(crate) fn deregister(registry: &Registry, out: &mut Printer, id: &str) -> Outcome {
    registry.deregister(id)?;
    if out.json {
        return out.json(&serde_json::json!({ "deregistered": id }));
    }
    out.line(format_args!("deregistered {id}"))
}

/// `roster get`.
pub(crate) fn get(registry: &Registry, out: &mut Printer, id: &str) -> Outcome {
    let agent = registry.get(id)?;
    if out.json {
        return out.json(&agent);
    }
    output::agent(out, &agent)
}

/// `roster heartbeat`.
pub(crate) fn heartbeat(registry: &Registry, out: &mut Printer, id: &str) -> Outcome {
    registry.heartbeat(id)?;
    let agent = registry.get(id)?;
    let line = format!("heartbeat {} ({})", agent.id, agent.status);
    show(out, &agent, line)
}

/// `roster list`.
pub(crate) fn list(
    registry: &Registry,
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
pub(crate) fn reap(registry: &Registry, out: &mut Printer, ttl: Duration) -> Outcome {
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

/// A claim as `claim` and `release` print it with `--json`: the claim's
/// fields and the agent (as `get --json` prints it; `null` for `release`
/// when the agent was deregistered).
#[derive(serde::Serialize)]
struct ClaimWithAgent<'a> {
    #[serde(flatten)]
    claim: &'a Claim,
    agent: Option<&'a AgentInfo>,
}

/// `roster claim`. A claim whose result cannot be printed gives its slot
/// back: nobody would know which agent holds the task.
pub(crate) fn claim(
    registry: &Registry,
    out: &mut Printer,
    task: Task,
    lease: Option<Duration>,
) -> Outcome {
    let Claimed { claim, agent } = registry.claim(&task, lease)?;
    let printed = if out.json {
        out.json(&ClaimWithAgent {
            claim: &claim,
            agent: Some(&agent),
        })
    } else {
        out.line(format_args!(
            "claimed task {} on {} (load {}, {})",
            claim.task_id,
            agent.id,
            output::load(&agent),
            output::token_and_lease(&claim)
        ))
    };
    let Err(failure) = printed.and_then(|()| out.flush()) else {
        return Ok(());
    };
    let why = if failure.is_closed_output() {
        "the output was closed".to_owned()
    } else {
        failure.message
    };
    let task_id = claim.task_id;
    Err(match registry.release(&task_id, Some(claim.token)) {
        Ok(_) => Failure::io(format!(
            "{why}; the claim could not be printed, so its slot on {} was given back",
            agent.id
        )),
        Err(e) => Failure::io(format!(
            "{why}; the claim could not be printed, and giving back task {task_id} on {} failed too ({e}): run `roster release {task_id} --token {}`",
            agent.id, claim.token
        )),
    })
}

/// `roster release TASK_ID [--token N]`.
pub(crate) fn release(
    registry: &Registry,
    out: &mut Printer,
    task_id: &str,
    token: Option<u64>,
) -> Outcome {
    let claim = registry.release(task_id, token)?;
    // The agent as it is now; it may have been deregistered since it took
    // the task.
    let agent = match registry.get(&claim.agent_id) {
        Ok(agent) => Some(agent),
        Err(Error::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    if out.json {
        return out.json(&ClaimWithAgent {
            claim: &claim,
            agent: agent.as_ref(),
        });
    }
    match agent {
        Some(agent) => out.line(format_args!(
            "released task {} on {} (load {}, token {})",
            claim.task_id,
            agent.id,
            output::load(&agent),
            claim.token
        )),
        None => out.line(format_args!(
            "released task {} (token {}); its agent {} was deregistered",
            claim.task_id, claim.token, claim.agent_id
        )),
    }
}

/// `roster renew TASK_ID --lease DURATION [--token N]`.
pub(crate) fn renew(
    registry: &Registry,
    out: &mut Printer,
    task_id: &str,
    token: Option<u64>,
    lease: Duration,
) -> Outcome {
    let claim = registry.renew(task_id, token, lease)?;
    if out.json {
        return out.json(&claim);
    }
    out.line(format_args!(
        "renewed task {} on {} ({})",
        claim.task_id,
        claim.agent_id,
        output::token_and_lease(&claim)
    ))
}

/// `roster claims [--agent ID]`.
pub(crate) fn claims(registry: &Registry, out: &mut Printer, agent: Option<&str>) -> Outcome {
    let claims = registry.claims(agent)?;
    if out.json {
        return out.json(&claims);
    }
    if claims.is_empty() {
        return out.line(match agent {
            Some(agent) => format!("no claims held on {agent}"),
            None => "no claims held".to_owned(),
        });
    }
    output::claims(out, &claims)
}

/// `roster recover`.
pub(crate) fn recover(registry: &Registry, out: &mut Printer) -> Outcome {
    let recovered = registry.recover()?;
    if out.json {
        return out.json(&recovered);
    }
    if recovered.is_empty() {
        return out.line("nothing to recover");
    }
    for taken in &recovered {
        out.line(output::recovered(taken))?;
    }
    Ok(())
}

/// `roster drain` (`drained`) and `roster drain --undo`.
pub(crate) fn drain(registry: &Registry, out: &mut Printer, id: &str, drained: bool) -> Outcome {
    registry.drain(id, drained)?;
    let agent = registry.get(id)?;
    let line = if drained {
        format!(
            "drained {id}: no new claims; it keeps heartbeating and keeps its load ({})",
            output::load(&agent)
        )
    } else {
        format!("undrained {id}: it takes claims again")
    };
    show(out, &agent, line)
}

/// How many result rows `sql` reads before it fixes the widths of its text
/// columns; later rows are printed as they come.
const ROWS_TO_ALIGN: usize = 1000;

/// Where `sql` writes the rows as they come.
enum Rows {
    /// An aligned table: the first [`ROWS_TO_ALIGN`] rows wait in `pending`
    /// until the widths are known.
    Text {
        widths: Option<output::Widths>,
        pending: Vec<Vec<String>>,
    },
    /// `{"columns": [...], "rows": [...]`, the array written row by row.
    Json { started: bool },
}

impl Rows {
    fn new(json: bool) -> Self {
        if json {
            Self::Json { started: false }
        } else {
            Self::Text {
                widths: None,
                pending: Vec::new(),
            }
        }
    }

    fn row(&mut self, out: &mut Printer, columns: &[String], row: &[SqlValue]) -> Outcome {
        match self {
            Self::Text { widths, pending } => {
                let cells: Vec<String> = row.iter().map(ToString::to_string).collect();
                if let Some(widths) = widths {
                    return out.line(widths.line(&cells));
                }
                pending.push(cells);
                if pending.len() >= ROWS_TO_ALIGN {
                    *widths = Some(Self::print_pending(out, columns, pending)?);
                }
                Ok(())
            }
            Self::Json { started } => {
                if *started {
                    out.text(",")?;
                } else {
                    Self::json_start(out, columns)?;
                    *started = true;
                }
                out.json_part(&row)
            }
        }
    }

    /// Prints the header and the rows that waited; returns the widths.
    fn print_pending(
        out: &mut Printer,
        columns: &[String],
        pending: &mut Vec<Vec<String>>,
    ) -> Result<output::Widths, Failure> {
        let header: Vec<&str> = columns.iter().map(String::as_str).collect();
        let widths = output::Widths::fit(&header, pending.iter());
        out.line(widths.line(&header))?;
        for row in pending.drain(..) {
            out.line(widths.line(&row))?;
        }
        Ok(widths)
    }

    fn json_start(out: &mut Printer, columns: &[String]) -> Outcome {
        out.text("{\"columns\":")?;
        out.json_part(&columns)?;
        out.text(",\"rows\":[")
    }

    /// Ends the output once the statement has run; `changes` is printed
    /// for `--write`.
    fn finish(mut self, out: &mut Printer, summary: &SqlSummary, write: bool) -> Outcome {
        let changes = summary.changes;
        let plural = if changes == 1 { "" } else { "s" };
        match &mut self {
            Self::Text { widths, pending } => {
                if widths.is_none() && !summary.columns.is_empty() {
                    Self::print_pending(out, &summary.columns, pending)?;
                }
                if write {
                    out.line(format_args!("{changes} row{plural} changed"))?;
                }
                Ok(())
            }
            Self::Json { started } => {
                if !*started {
                    Self::json_start(out, &summary.columns)?;
                }
                out.text("]")?;
                if write {
                    out.text(&format!(",\"changes\":{changes}"))?;
                }
                out.line("}")
            }
        }
    }
}

/// `roster sql`: the rows are printed as they come, within `timeout` (0:
/// none); SIGINT or SIGTERM interrupts the statement.
pub(crate) fn sql(
    registry: &Registry,
    out: &mut Printer,
    query: &str,
    write: bool,
    timeout: Duration,
) -> Outcome {
    let access = if write {
        SqlAccess::ReadWrite
    } else {
        SqlAccess::ReadOnly
    };
    let cancel = super::daemon::stop_flag()?;
    let options = SqlOptions::new(access)
        .timeout((!timeout.is_zero()).then_some(timeout))
        .cancel(cancel);
    let mut rows = Rows::new(out.json);
    let mut output_failed = None;
    let summary = registry.query_each(query, &options, |columns, row| {
        rows.row(out, columns, row).map_err(|failure| {
            output_failed = Some(failure);
            // Stops the statement; the output's own failure is reported.
            Error::Interrupted {
                why: "the output failed".to_owned(),
            }
        })
    });
    if let Some(failure) = output_failed {
        return Err(failure);
    }
    rows.finish(out, &summary?, write)
}

/// `roster completions SHELL`.
pub(crate) fn completions(out: &mut Printer, shell: Shell) -> Outcome {
    text_only(out, "completions")?;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "roster", &mut script);
    out.text(&String::from_utf8_lossy(&script))
}

/// `roster man [SUBCOMMAND]`: the page `roster(1)`, or
/// `roster-SUBCOMMAND(1)`, which the first one lists.
pub(crate) fn man(out: &mut Printer, subcommand: Option<&str>) -> Outcome {
    text_only(out, "man")?;
    let mut roster = Cli::command();
    roster.build();
    let command = match subcommand {
        // NAME says "roster - ..." by itself.
        None => roster.about("a persistent registry of agents for orchestrators on one host"),
        Some(name) => match roster.find_subcommand(name) {
            Some(command) => command.clone(),
            None => {
                let names: Vec<&str> = roster
                    .get_subcommands()
                    .map(clap::Command::get_name)
                    .collect();
                return Err(Failure::bad_input(format!(
                    "no subcommand {name:?}; the pages are: {}",
                    names.join(", ")
                )));
            }
        },
    };
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut page)
        .map_err(|e| Failure::io(format!("cannot render the manual page: {e}")))?;
    out.text(&String::from_utf8_lossy(&page))
}

/// Refuses `--json` for a command whose output is a file of its own kind.
fn text_only(out: &Printer, command: &str) -> Outcome {
    if out.json {
        return Err(Failure::bad_input(format!(
            "`{command}` writes a file for the shell, not JSON; leave out --json"
        )));
    }
    Ok(())
}
