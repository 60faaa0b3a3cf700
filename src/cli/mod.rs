//! The `roster` command, in layers: `args` (what clap parses), `backend`
//! (`--db` as a file or a PostgreSQL URL, and the registry opened on it),
//! `exit` (the table of exit codes and the failures that map to them),
//! `commands` (one function per subcommand), `daemon` (`agent` and
//! `reaper`), `demo`, and `printer` and `output` (writing results). This
//! file parses, opens the registry and dispatches.

mod args;
mod backend;
mod commands;
mod copy;
mod daemon;
mod demo;
mod exit;
mod metrics;
mod output;
mod printer;
mod top;
mod watch;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind as ClapErrorKind;
use roster::Task;

use args::{Cli, Command};
use backend::{Create, Registry, Target};
use exit::{Failure, Outcome};
use printer::{Printer, warn};

/// Runs the command line of this process and returns its exit code.
pub fn main() -> ExitCode {
    let json = json_asked();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == ClapErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Bare `roster`: the help, once, on stderr; exit code 2.
            let failure = Failure::bad_input("a subcommand is required (see roster --help)");
            if json {
                return fail(&failure, json);
            }
            warn(format_args!("{}", e.render().to_string().trim_end()));
            return failure.exit.into();
        }
        Err(e) => {
            // clap's message, before its usage and tips, on one line.
            let rendered = e.render().to_string();
            let message = rendered.split("\n\n").next().unwrap_or("invalid arguments");
            let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            return fail(
                &Failure::bad_input(format!("{message} (see roster --help)")),
                json,
            );
        }
    };
    let mut out = Printer::stdout(cli.json);
    match run(cli, &mut out).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) if failure.is_closed_output() => ExitCode::SUCCESS,
        Err(failure) => fail(&failure, json),
    }
}

/// Whether `--json` is among the arguments: known before they are parsed,
/// so that a parse error is reported as JSON too.
fn json_asked() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|arg| arg != "--")
        .any(|arg| arg == "--json")
}

/// A failure as `--json` reports it on standard error.
#[derive(serde::Serialize)]
struct JsonError<'a> {
    /// The message, as text mode prints it after `roster: `.
    error: &'a str,
    /// What kind of failure: the library's `ErrorKind` in snake_case, or
    /// the command's own (`io`, `interrupted`).
    kind: &'a str,
    /// The exit code the process ends with.
    exit_code: u8,
}

/// Reports `failure` on standard error, as one line of text or one JSON
/// object, and returns its exit code.
fn fail(failure: &Failure, json: bool) -> ExitCode {
    if json {
        let error = JsonError {
            error: &failure.message,
            kind: failure.kind,
            exit_code: failure.exit.code(),
        };
        match serde_json::to_string(&error) {
            Ok(line) => warn(line),
            Err(_) => warn(format_args!("roster: {}", failure.message)),
        }
    } else {
        warn(format_args!("roster: {}", failure.message));
    }
    failure.exit.into()
}

fn run(cli: Cli, out: &mut Printer) -> Outcome {
    let target = Target::of(
        cli.db.as_deref().map(std::path::Path::as_os_str),
        "roster.db",
    );
    let busy_timeout = cli.busy_timeout;
    let open = |create: Create| -> Result<Registry, Failure> { target.open(create, busy_timeout) };
    match cli.command {
        // On a file of its own.
        Command::Demo => match &target {
            Target::Postgres(_) | Target::BadUrl(_) => Err(Failure::bad_input(format!(
                "`roster demo` runs on an SQLite file of its own, which it replaces; --db (or $ROSTER_DB) names a PostgreSQL database ({}): give a file, or unset ROSTER_DB",
                target.shown()
            ))),
            _ => demo::run(cli.db.as_deref(), out),
        },
        // No registry at all.
        Command::Completions { shell } => commands::completions(out, shell),
        Command::Man { subcommand } => commands::man(out, subcommand.as_deref()),
        Command::Register(args) => commands::register(&open(Create::Yes)?, out, &args),
        Command::Deregister { id } => commands::deregister(&open(Create::No)?, out, &id),
        Command::Get { id } => commands::get(&open(Create::No)?, out, &id),
        Command::Heartbeat { id } => commands::heartbeat(&open(Create::No)?, out, &id),
        Command::Release { task_id, token } => {
            commands::release(&open(Create::No)?, out, &task_id, token)
        }
        Command::Renew {
            task_id,
            lease,
            token,
        } => commands::renew(&open(Create::No)?, out, &task_id, token, lease),
        Command::Claims { agent } => commands::claims(&open(Create::No)?, out, agent.as_deref()),
        Command::Recover => commands::recover(&open(Create::No)?, out),
        Command::Drain { id, undo } => commands::drain(&open(Create::No)?, out, &id, !undo),
        Command::List {
            status,
            capabilities,
        } => commands::list(&open(Create::No)?, out, status, &capabilities),
        Command::Reap { ttl } => commands::reap(&open(Create::No)?, out, ttl),
        Command::Claim {
            task_id,
            labels,
            priority,
            lease,
        } => {
            let task = Task {
                id: task_id.unwrap_or_default(),
                labels,
                priority,
            };
            commands::claim(&open(Create::No)?, out, task, lease)
        }
        Command::Agent {
            agent,
            every,
            deregister_on_exit,
            keep_on_exit,
            replace,
        } => {
            let on_exit = if deregister_on_exit {
                daemon::OnExit::Deregister
            } else if keep_on_exit {
                daemon::OnExit::Keep
            } else {
                daemon::OnExit::Offline
            };
            let sidecar = daemon::Sidecar {
                agent: agent.to_agent()?,
                every,
                on_exit,
                replace,
            };
            daemon::agent(&open(Create::Yes)?, out, sidecar)
        }
        Command::Top(args) => top::run(&args, || open(Create::No)),
        Command::Metrics(args) => metrics::run(&open(Create::No)?, out, &args),
        Command::Reaper { ttl, every } => daemon::reaper(&open(Create::Yes)?, out, ttl, every),
        Command::Copy { from, to, replace } => copy::run(out, &from, &to, replace, busy_timeout),
        Command::Watch { since } => watch::run(&open(Create::No)?, out, since),
        Command::Sql {
            query,
            write,
            timeout,
        } => {
            let create = if write { Create::Yes } else { Create::No };
            commands::sql(&open(create)?, out, &query, write, timeout)
        }
    }
}
