//! Command-line parsing, dispatch, and the mapping of errors to exit codes.

mod daemon;
mod demo;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use clap::{Args, Parser, Subcommand};
use roster::{
    AgentInfo, AgentRegistry, AgentStatus, Error, Priority, SqlAccess, SqliteRegistry, Task,
};
use serde::Serialize;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  unexpected failure (output could not be written, a process could not be started)
  2  bad input: flags, durations, agent fields, SQL, a write refused by read-only `sql`
  3  agent not found
  4  no eligible agent for the task
  5  nothing to release: the agent holds no load
  6  database busy: other processes held the lock past the busy timeout
  7  database unusable: not an SQLite file, not a roster registry, a newer schema, cannot open";

/// roster: a persistent registry of agents for orchestrators on one host.
///
/// The registry is one SQLite file (--db, else $ROSTER_DB, else roster.db),
/// created on first use and shared by every process on the host.
#[derive(Debug, Parser)]
#[command(name = "roster", version, after_help = EXIT_CODES)]
struct Cli {
    /// The registry file [default: roster.db; roster-demo.db for `demo`].
    #[arg(long, global = true, env = "ROSTER_DB", hide_env_values = true)]
    db: Option<PathBuf>,
    /// Print JSON (one document per command; one per line for `agent` and
    /// `reaper`) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Add an agent, or replace every field of an existing one.
    #[command(
        after_help = "Example:\n  roster register builder-1 --cap rust --cap linux --max-load 4"
    )]
    Register(AgentArgs),
    /// Remove an agent.
    #[command(after_help = "Example:\n  roster deregister builder-1")]
    Deregister {
        /// The agent's id.
        id: String,
    },
    /// Show one agent.
    #[command(after_help = "Example:\n  roster get builder-1")]
    Get {
        /// The agent's id.
        id: String,
    },
    /// Record that an agent is alive (an offline agent becomes available).
    #[command(after_help = "Example:\n  roster heartbeat builder-1")]
    Heartbeat {
        /// The agent's id.
        id: String,
    },
    /// Give back one slot taken by `claim`.
    #[command(after_help = "Example:\n  roster release builder-1")]
    Release {
        /// The agent's id.
        id: String,
    },
    /// List the agents, ordered by id.
    #[command(after_help = "Example:\n  roster list --status available --cap gpu")]
    List {
        /// Only agents with this status.
        #[arg(long)]
        status: Option<AgentStatus>,
        /// Only agents holding this capability (repeat for several).
        #[arg(long = "cap", value_name = "CAP")]
        capabilities: Vec<String>,
    },
    /// Mark offline every agent silent for longer than the TTL, once.
    #[command(after_help = "Example:\n  roster reap --ttl 30s")]
    Reap {
        /// How long an agent may stay silent (30s, 5m, 1h...).
        #[arg(long, value_parser = parse_duration)]
        ttl: Duration,
    },
    /// Take a slot on the best agent for a task and print it.
    #[command(after_help = "Example:\n  roster claim --label gpu --label cuda --priority high")]
    Claim {
        /// A capability the agent must hold (repeat for several).
        #[arg(long = "label", value_name = "LABEL")]
        labels: Vec<String>,
        /// low, medium, high or critical (critical goes to the least loaded
        /// agent).
        #[arg(long, default_value = "medium")]
        priority: Priority,
        /// Your id for the task (roster does not interpret it).
        #[arg(long, default_value = "")]
        task_id: String,
    },
    /// Register an agent, then heartbeat for it until SIGINT or SIGTERM: the
    /// sidecar for an agent written in any language.
    #[command(
        after_help = "Example:\n  roster agent worker-7 --cap python --max-load 2 --every 5s"
    )]
    Agent {
        #[command(flatten)]
        agent: AgentArgs,
        /// Time between heartbeats.
        #[arg(long, value_parser = parse_duration, default_value = "5s")]
        every: Duration,
        /// Remove the agent from the registry when stopped by a signal.
        #[arg(long)]
        deregister_on_exit: bool,
    },
    /// Reap in a loop, printing each agent that went offline, until SIGINT
    /// or SIGTERM.
    #[command(after_help = "Example:\n  roster reaper --ttl 30s --every 5s")]
    Reaper {
        /// How long an agent may stay silent (30s, 5m, 1h...).
        #[arg(long, value_parser = parse_duration)]
        ttl: Duration,
        /// Time between reaps.
        #[arg(long, value_parser = parse_duration, default_value = "5s")]
        every: Duration,
    },
    /// Run one SQL statement against the registry and print the rows.
    /// Read-only unless --write is given.
    #[command(
        after_help = "Examples:\n  roster sql \"SELECT status, count(*) FROM agents GROUP BY status\"\n  roster sql --write \"UPDATE agents SET max_load = 8 WHERE id = 'builder-1'\""
    )]
    Sql {
        /// The statement.
        query: String,
        /// Allow a statement that writes.
        #[arg(long)]
        write: bool,
    },
    /// Show in under 30 seconds what roster is for: agent processes, a
    /// dispatcher, a crash, the reaper, a restart and a query.
    #[command(
        after_help = "Example:\n  roster demo            (uses roster-demo.db, replaced on each run)"
    )]
    Demo,
}

/// The fields of an agent, as flags (shared by `register` and `agent`).
#[derive(Clone, Debug, Args)]
struct AgentArgs {
    /// The agent's id.
    id: String,
    /// A human-readable name [default: the id].
    #[arg(long)]
    name: Option<String>,
    /// A capability (repeat for several).
    #[arg(long = "cap", value_name = "CAP")]
    capabilities: Vec<String>,
    /// Tasks allowed at once; 0 means unlimited.
    #[arg(long, default_value_t = 0)]
    max_load: u32,
    /// available, busy or offline.
    #[arg(long, default_value = "available")]
    status: AgentStatus,
    /// Tasks running now.
    #[arg(long, default_value_t = 0)]
    load: u32,
}

impl AgentArgs {
    fn to_agent(&self) -> AgentInfo {
        AgentInfo {
            id: self.id.clone(),
            name: self.name.clone().unwrap_or_else(|| self.id.clone()),
            capabilities: self.capabilities.clone(),
            status: self.status,
            last_heartbeat: Utc::now(),
            current_load: self.load,
            max_load: self.max_load,
            ..AgentInfo::default()
        }
    }
}

/// Parses "30s", "5m", "1h", "250ms", "1h 30m".
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{e}; expected a number with a unit, e.g. 30s, 5m, 1h, 250ms"))
}

/// A failure of the command, with the exit code it maps to.
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let (code, hint) = match &error {
            Error::MissingId | Error::Invalid { .. } => (2, ""),
            Error::WriteRefused => (2, "; add --write to run it"),
            Error::NotFound(_) => (3, "; `roster list` shows the registered agents"),
            Error::NoEligibleAgent => (
                4,
                ": no online agent with a free slot holds every label; retry later",
            ),
            Error::NothingToRelease(_) => (5, ""),
            Error::Busy(_) => (6, ""),
            Error::NotADatabase { .. }
            | Error::NotARegistry { .. }
            | Error::SchemaTooNew { .. }
            | Error::Open { .. } => (7, "; pass another file with --db"),
            _ => (7, ""),
        };
        Self::new(code, format!("{error}{hint}"))
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Self::new(1, error.to_string())
    }
}

pub(crate) type Outcome = Result<(), Failure>;

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's message, before its usage and tips, on one line.
            let rendered = e.render().to_string();
            let message = rendered.split("\n\n").next().unwrap_or("invalid arguments");
            let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            eprintln!("roster: {message} (see roster --help)");
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("roster: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Prints `value` as one JSON document.
pub(crate) fn print_json(value: &impl Serialize) -> Outcome {
    let text = roster::to_json(value).map_err(|e| Failure::new(1, e.to_string()))?;
    println!("{text}");
    Ok(())
}

fn run(cli: Cli) -> Outcome {
    if let Command::Demo = cli.command {
        return demo::run(cli.db.as_deref(), cli.json);
    }
    let registry = SqliteRegistry::open(cli.db.as_deref().unwrap_or("roster.db".as_ref()))?;
    let json = cli.json;
    let show = |agent: &AgentInfo, line: String| -> Outcome {
        if json {
            print_json(agent)
        } else {
            println!("{line}");
            Ok(())
        }
    };
    match cli.command {
        Command::Register(args) => {
            let agent = args.to_agent();
            registry.register(agent)?;
            let stored = registry.get(&args.id)?;
            if json {
                return print_json(&stored);
            }
            println!("registered {}", stored.id);
            output::agent(&stored);
            Ok(())
        }
        Command::Deregister { id } => {
            registry.deregister(&id)?;
            if json {
                return print_json(&serde_json::json!({ "deregistered": id }));
            }
            println!("deregistered {id}");
            Ok(())
        }
        Command::Get { id } => {
            let agent = registry.get(&id)?;
            if json {
                return print_json(&agent);
            }
            output::agent(&agent);
            Ok(())
        }
        Command::Heartbeat { id } => {
            registry.heartbeat(&id)?;
            let agent = registry.get(&id)?;
            show(&agent, format!("heartbeat {} ({})", agent.id, agent.status))
        }
        Command::Release { id } => {
            registry.release(&id)?;
            let agent = registry.get(&id)?;
            show(
                &agent,
                format!(
                    "released a slot on {} (load {})",
                    agent.id,
                    output::load(&agent)
                ),
            )
        }
        Command::List {
            status,
            capabilities,
        } => {
            let agents: Vec<AgentInfo> = registry
                .list()?
                .into_iter()
                .filter(|a| status.is_none_or(|s| a.status == s))
                .filter(|a| capabilities.iter().all(|c| a.capabilities.contains(c)))
                .collect();
            if json {
                return print_json(&agents);
            }
            if agents.is_empty() {
                println!("no agents");
            } else {
                output::agents(&agents);
            }
            Ok(())
        }
        Command::Reap { ttl } => {
            let reaped = registry.reap(ttl)?;
            if json {
                return print_json(&reaped);
            }
            if reaped.is_empty() {
                println!(
                    "nobody was silent for more than {}",
                    humantime::format_duration(ttl)
                );
            } else {
                println!("marked offline: {}", reaped.join(", "));
            }
            Ok(())
        }
        Command::Claim {
            labels,
            priority,
            task_id,
        } => {
            let agent = registry.claim(&Task {
                id: task_id,
                labels,
                priority,
            })?;
            show(
                &agent,
                format!(
                    "claimed a slot on {} (load {})",
                    agent.id,
                    output::load(&agent)
                ),
            )
        }
        Command::Agent {
            agent,
            every,
            deregister_on_exit,
        } => daemon::agent(&registry, agent.to_agent(), every, deregister_on_exit, json),
        Command::Reaper { ttl, every } => daemon::reaper(&registry, ttl, every, json),
        Command::Sql { query, write } => {
            let access = if write {
                SqlAccess::ReadWrite
            } else {
                SqlAccess::ReadOnly
            };
            let result = registry.query(&query, access)?;
            if json {
                return print_json(&result);
            }
            let rows: Vec<Vec<String>> = result
                .rows
                .iter()
                .map(|row| row.iter().map(ToString::to_string).collect())
                .collect();
            let header: Vec<&str> = result.columns.iter().map(String::as_str).collect();
            if !header.is_empty() {
                output::table(&header, &rows);
            }
            Ok(())
        }
        // Handled before the registry is opened, on a file of its own.
        Command::Demo => Ok(()),
    }
}
