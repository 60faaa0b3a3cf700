//! The command line as clap sees it: global options, subcommands, their
//! flags, and the parsers that turn flag values into checked values.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use clap_complete::Shell;
use roster::{AgentInfo, AgentStatus, MAX_BUSY_TIMEOUT, Priority};

use super::exit::{self, Failure};

/// roster: a persistent registry of agents for orchestrators on one host.
///
/// The registry is one SQLite file (--db, else $ROSTER_DB, else roster.db),
/// created on first use and shared by every process on the host; or, for
/// several hosts, a PostgreSQL database (--db postgres://USER@HOST/DBNAME).
#[derive(Debug, Parser)]
#[command(
    name = "roster",
    version,
    after_help = exit::help(),
    arg_required_else_help = true
)]
pub(crate) struct Cli {
    /// The registry: a file [default: roster.db; roster-demo.db for
    /// `demo`], or a PostgreSQL database as a libpq URL,
    /// postgres://USER:PASSWORD@HOST:PORT/DBNAME (port, password and
    /// parameters such as ?sslmode=require optional; the tables go in the
    /// first schema of the search_path; the password is never shown).
    /// Commands that only read, or that need an agent to exist, never
    /// create it.
    #[arg(long, global = true, env = "ROSTER_DB", hide_env_values = true)]
    pub(crate) db: Option<PathBuf>,
    /// Print JSON instead of text: one document per command, one per line
    /// for `agent`, `reaper`, `watch` and `demo`; errors as one object on
    /// stderr.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// How long to wait for other processes that hold the registry's lock
    /// (on PostgreSQL: the rows a call needs) before failing with exit code
    /// 6 (at most 24days 20h 31m 23s 647ms; on PostgreSQL, more than 0).
    #[arg(
        long,
        global = true,
        value_name = "DURATION",
        value_parser = busy_timeout,
        default_value = "5s",
        allow_hyphen_values = true
    )]
    pub(crate) busy_timeout: Duration,
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
        /// How long an agent may stay silent (30s, 5m, 1h...; 0 or more).
        #[arg(long, value_parser = ttl, allow_hyphen_values = true)]
        ttl: Duration,
    },
    /// Take a slot on the best agent for a task and print the claim: the
    /// task id, the agent, its load and the fencing token.
    #[command(
        after_help = "Examples:\n  roster claim --task-id build-42 --label rust --lease 10m\n  roster --json claim --label gpu --label cuda --priority high"
    )]
    Claim {
        /// Your id for the task: 1 to 128 characters, no control or format
        /// characters [default: a new unique one, `task-` and a ULID].
        #[arg(long, allow_hyphen_values = true)]
        task_id: Option<String>,
        /// A capability the agent must hold (repeat for several).
        #[arg(long = "label", value_name = "LABEL")]
        labels: Vec<String>,
        /// low, medium, high or critical (critical goes to the least loaded
        /// agent).
        #[arg(long, default_value = "medium")]
        priority: Priority,
        /// Give the claim a lease (30s, 10m, 1h...): unless renewed or
        /// released before it runs out, `recover` takes the claim back.
        #[arg(long, value_parser = lease, allow_hyphen_values = true)]
        lease: Option<Duration>,
    },
    /// Give back the slot held for a task by `claim`.
    #[command(
        after_help = "Examples:\n  roster release build-42 --token 7     (the holder: refused if the task was taken back since)\n  roster release build-42               (an operator: whoever holds it)"
    )]
    Release {
        /// The task's id.
        task_id: String,
        /// The token `claim` printed: only that claim is released (exit code 9
        /// when the task was recovered, and perhaps claimed again, since).
        /// Without it, whichever claim holds the task is released.
        #[arg(long, value_parser = token, allow_hyphen_values = true)]
        token: Option<u64>,
    },
    /// Extend the lease of a held claim to now + the lease.
    #[command(after_help = "Example:\n  roster renew build-42 --lease 10m --token 7")]
    Renew {
        /// The task's id.
        task_id: String,
        /// The new lease, from now (30s, 10m, 1h...).
        #[arg(long, value_parser = lease, allow_hyphen_values = true)]
        lease: Duration,
        /// The token `claim` printed: only that claim is renewed (exit code 9
        /// when the task was recovered, and perhaps claimed again, since).
        #[arg(long, value_parser = token, allow_hyphen_values = true)]
        token: Option<u64>,
    },
    /// List the claims held, in the order they were taken.
    #[command(after_help = "Examples:\n  roster claims\n  roster --json claims --agent builder-1")]
    Claims {
        /// Only the claims taken on this agent.
        #[arg(long, value_name = "ID")]
        agent: Option<String>,
    },
    /// Take back, once, every claim whose agent is offline or was
    /// deregistered, or whose lease ran out; print each with the reason.
    #[command(after_help = "Example:\n  roster recover")]
    Recover,
    /// Register an agent, then heartbeat for it until SIGINT or SIGTERM: the
    /// sidecar for an agent written in any language.
    #[command(
        after_help = "Example:\n  roster agent worker-7 --cap python --max-load 2 --every 5s"
    )]
    Agent {
        /// The agent to register.
        #[command(flatten)]
        agent: AgentArgs,
        /// Time between heartbeats (at least 1ms).
        #[arg(long, value_parser = interval, default_value = "5s", allow_hyphen_values = true)]
        every: Duration,
        /// Remove the agent from the registry when stopped by a signal,
        /// instead of marking it offline.
        #[arg(long)]
        deregister_on_exit: bool,
        /// Leave the agent as it is when stopped by a signal (available,
        /// claimable until the reaper's TTL runs out), instead of marking it
        /// offline: for a restart that must keep the agent's tasks.
        #[arg(long, conflicts_with = "deregister_on_exit")]
        keep_on_exit: bool,
        /// Take over an agent that a live sidecar runs (one that stored its
        /// host and pid, is not offline, heartbeated within 3 x --every and,
        /// on this host, whose process is alive); that sidecar stops at its
        /// next round. Without it, such an agent is refused (exit code 10).
        #[arg(long)]
        replace: bool,
    },
    /// Reap and recover in a loop, printing each agent that went offline and
    /// each claim taken back, until SIGINT or SIGTERM.
    #[command(after_help = "Example:\n  roster reaper --ttl 30s --every 5s")]
    Reaper {
        /// How long an agent may stay silent (30s, 5m, 1h...; 0 or more).
        #[arg(long, value_parser = ttl, allow_hyphen_values = true)]
        ttl: Duration,
        /// Time between rounds of reap and recover (at least 1ms).
        #[arg(long, value_parser = interval, default_value = "5s", allow_hyphen_values = true)]
        every: Duration,
    },
    /// Copy an SQLite registry into PostgreSQL: agents, held claims with
    /// their tokens, the token counter (stop the file's writers first). The
    /// change feed is not copied: PostgreSQL's starts with the copy's own
    /// `registered` and `claimed` events, and watchers start again there
    /// with `roster --db URL watch`.
    #[command(
        after_help = "Example:\n  roster copy --from roster.db --to postgres://roster@db.example/roster"
    )]
    Copy {
        /// The SQLite registry file to copy.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The PostgreSQL database (a postgres:// URL) to copy into; it
        /// must hold no agents or claims unless --replace.
        #[arg(long, value_name = "URL")]
        to: String,
        /// Delete what the target holds first.
        #[arg(long)]
        replace: bool,
    },
    /// Print every change of the registry as it is committed, by any
    /// process, one line each, until SIGINT or SIGTERM.
    #[command(after_help = "Examples:\n  roster watch\n  roster --json watch --since 1200")]
    Watch {
        /// Start after this event (its `seq`; 0 for every event, failing
        /// with exit code 11 once the oldest were pruned), or `now`
        /// [default: now].
        #[arg(long, value_name = "SEQ|now", value_parser = super::watch::since, allow_hyphen_values = true)]
        since: Option<super::watch::Since>,
    },
    /// Drain an agent: it gets no new claims, keeps heartbeating and keeps
    /// the slots it holds (like `kubectl cordon`); `--undo` ends the drain.
    #[command(after_help = "Examples:\n  roster drain builder-1\n  roster drain builder-1 --undo")]
    Drain {
        /// The agent's id.
        id: String,
        /// Let the agent take claims again.
        #[arg(long)]
        undo: bool,
    },
    /// Run one SQL statement against the registry and print the rows.
    /// Read-only unless --write is given (on PostgreSQL: a READ ONLY
    /// transaction).
    #[command(
        after_help = "Examples:\n  roster sql \"SELECT status, count(*) FROM agents GROUP BY status\"\n  roster sql --write \"UPDATE agents SET max_load = 8 WHERE id = 'builder-1'\""
    )]
    Sql {
        /// The statement (it may start with a hyphen, as a `-- comment`
        /// does).
        #[arg(allow_hyphen_values = true)]
        query: String,
        /// Allow a statement that writes; the number of rows it changed is
        /// printed.
        #[arg(long)]
        write: bool,
        /// How long the statement may run before it is interrupted (0: no
        /// limit). Ctrl-C interrupts it too; either way nothing is changed.
        #[arg(long, value_parser = ttl, default_value = "30s", allow_hyphen_values = true)]
        timeout: Duration,
    },
    /// A live full-screen view of the agents and of recent events.
    Top(super::top::TopArgs),
    /// Print the registry's state in the Prometheus text format, or serve it over HTTP.
    Metrics(super::metrics::MetricsArgs),
    /// Show in under 30 seconds what roster is for: agent processes, a
    /// dispatcher, a crash whose task the reaper takes back, a restart and a
    /// query.
    #[command(
        after_help = "Example:\n  roster demo            (uses roster-demo.db, replaced on each run)"
    )]
    Demo,
    /// Print a completion script for a shell, generated from these very
    /// flags.
    #[command(
        after_help = "Examples:\n  roster completions bash > /etc/bash_completion.d/roster\n  roster completions zsh > \"${fpath[1]}/_roster\"\n  roster completions fish > ~/.config/fish/completions/roster.fish"
    )]
    Completions {
        /// The shell.
        shell: Shell,
    },
    /// Print the manual page (roff) of roster, or of one subcommand,
    /// generated from these very flags.
    #[command(
        after_help = "Examples:\n  roster man > roster.1 && man -l roster.1\n  roster man claim > roster-claim.1"
    )]
    Man {
        /// The subcommand whose page to print (`roster-SUBCOMMAND(1)`).
        subcommand: Option<String>,
    },
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
    /// Tasks allowed at once: 0 or more, 0 meaning unlimited (a negative
    /// number is refused).
    #[arg(long, default_value_t = 0, value_parser = count, allow_negative_numbers = true)]
    pub(crate) max_load: u32,
    /// available, busy or offline.
    #[arg(long, default_value = "available")]
    pub(crate) status: AgentStatus,
    /// Tasks running now that no claim records: 0 or more. The claims the
    /// agent holds are added to it, and the total must stay within
    /// --max-load unless that is 0.
    #[arg(long, default_value_t = 0, value_parser = count, allow_negative_numbers = true)]
    pub(crate) load: u32,
    /// A metadata pair, KEY=VALUE (repeat for several): free-form strings
    /// that `get` and JSON show. They replace the agent's pairs.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = meta_pair)]
    pub(crate) metadata: Vec<(String, String)>,
}

impl AgentArgs {
    /// The agent these flags describe, heartbeating now.
    ///
    /// # Errors
    ///
    /// Bad input when a metadata key is given twice.
    pub(crate) fn to_agent(&self) -> Result<AgentInfo, Failure> {
        let mut metadata = BTreeMap::new();
        for (key, value) in &self.metadata {
            if metadata.insert(key.clone(), value.clone()).is_some() {
                return Err(Failure::bad_input(format!(
                    "--meta {key:?} is given twice; give each key once"
                )));
            }
        }
        Ok(AgentInfo {
            id: self.id.clone(),
            name: self.name.clone().unwrap_or_else(|| self.id.clone()),
            capabilities: self.capabilities.clone(),
            status: self.status,
            last_heartbeat: roster::now(),
            current_load: self.load,
            max_load: self.max_load,
            metadata,
            ..AgentInfo::default()
        })
    }
}

/// The longest `--ttl`, `--every` or `--timeout`: 100 years. Longer ones
/// reach past what clocks can count.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// Parses "30s", "5m", "1h", "250ms", "1h 30m": 0 up to [`MAX_DURATION`].
fn duration(text: &str) -> Result<Duration, String> {
    if text.trim_start().starts_with('-') {
        return Err("a duration cannot be negative: give 0 or more, e.g. 30s".to_owned());
    }
    let duration = humantime::parse_duration(text).map_err(|e| {
        format!("not a duration ({e}); expected a number with a unit, e.g. 30s, 5m, 1h, 250ms")
    })?;
    if duration > MAX_DURATION {
        return Err(format!(
            "must be at most {}",
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(duration)
}

/// A TTL or a time limit: any [`duration`], 0 included.
fn ttl(text: &str) -> Result<Duration, String> {
    duration(text)
}

/// The time between two rounds of a loop: a [`duration`] of at least 1 ms,
/// since 0 would spin.
fn interval(text: &str) -> Result<Duration, String> {
    let interval = duration(text)?;
    if interval < Duration::from_millis(1) {
        return Err("must be at least 1ms: the loop waits this long between two rounds".to_owned());
    }
    Ok(interval)
}

/// A busy timeout: a [`duration`] SQLite can take, at most
/// [`MAX_BUSY_TIMEOUT`].
fn busy_timeout(text: &str) -> Result<Duration, String> {
    let timeout = duration(text)?;
    if timeout > MAX_BUSY_TIMEOUT {
        return Err(format!(
            "must be at most {}, the longest SQLite can wait",
            humantime::format_duration(MAX_BUSY_TIMEOUT)
        ));
    }
    Ok(timeout)
}

/// A lease: a [`duration`] longer than 0 (a lease of 0 would run out at
/// once).
fn lease(text: &str) -> Result<Duration, String> {
    let lease = duration(text)?;
    if lease.is_zero() {
        return Err("must be longer than 0: a lease of 0 would run out at once".to_owned());
    }
    Ok(lease)
}

/// A fencing token, as `claim` printed it: 1 to `i64::MAX`.
fn token(text: &str) -> Result<u64, String> {
    let number: i128 = text
        .trim()
        .parse()
        .map_err(|_| "expected the token `roster claim` printed, a whole number".to_owned())?;
    if number < 1 {
        return Err("tokens start at 1".to_owned());
    }
    u64::try_from(number)
        .ok()
        .filter(|&token| i64::try_from(token).is_ok())
        .ok_or_else(|| format!("must be at most {}", i64::MAX))
}

/// A metadata pair, `KEY=VALUE`, split at the first `=` (the value may hold
/// more). The library checks the key and the value.
fn meta_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) => Ok((key.to_owned(), value.to_owned())),
        None => Err("expected KEY=VALUE, e.g. zone=eu-west-1".to_owned()),
    }
}

/// A number of tasks: 0 to `u32::MAX`.
fn count(text: &str) -> Result<u32, String> {
    let number: i128 = text
        .trim()
        .parse()
        .map_err(|_| "expected a whole number, e.g. 4".to_owned())?;
    if number < 0 {
        return Err("must be 0 or more".to_owned());
    }
    u32::try_from(number).map_err(|_| format!("must be at most {}", u32::MAX))
}
