//! The command line as clap sees it: global options, subcommands, their
//! flags, and the parsers that turn flag values into checked values.

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use clap::{Args, Parser, Subcommand};
use roster::{AgentInfo, AgentStatus, Priority};

use super::exit;

/// roster: a persistent registry of agents for orchestrators on one host.
///
/// The registry is one SQLite file (--db, else $ROSTER_DB, else roster.db),
/// created on first use and shared by every process on the host.
#[derive(Debug, Parser)]
#[command(name = "roster", version, after_help = exit::help())]
pub(crate) struct Cli {
    /// The registry file [default: roster.db; roster-demo.db for `demo`].
    #[arg(long, global = true, env = "ROSTER_DB", hide_env_values = true)]
    pub(crate) db: Option<PathBuf>,
    /// Print JSON (one document per command; one per line for `agent` and
    /// `reaper`) instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// The subcommand.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
        /// The agent to register.
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
pub(crate) struct AgentArgs {
    /// The agent's id.
    pub(crate) id: String,
    /// A human-readable name [default: the id].
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// A capability (repeat for several).
    #[arg(long = "cap", value_name = "CAP")]
    pub(crate) capabilities: Vec<String>,
    /// Tasks allowed at once; 0 means unlimited.
    #[arg(long, default_value_t = 0)]
    pub(crate) max_load: u32,
    /// available, busy or offline.
    #[arg(long, default_value = "available")]
    pub(crate) status: AgentStatus,
    /// Tasks running now.
    #[arg(long, default_value_t = 0)]
    pub(crate) load: u32,
}

impl AgentArgs {
    /// The agent these flags describe, heartbeating now.
    pub(crate) fn to_agent(&self) -> AgentInfo {
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
