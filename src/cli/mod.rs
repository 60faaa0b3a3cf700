//! The `roster` command, in layers: `args` (what clap parses), `exit` (the
//! table of exit codes and the failures that map to them), `commands` (one
//! function per subcommand), `daemon` (`agent` and `reaper`), `demo`, and
//! `printer` and `output` (writing results). This file parses, opens the
//! registry and dispatches.

mod args;
mod commands;
mod daemon;
mod demo;
mod exit;
mod output;
mod printer;

use std::process::ExitCode;

use clap::Parser;
use roster::SqliteRegistry;

use args::{Cli, Command};
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

/// Reports `failure` on standard error, as one line of text or one JSON
/// object, and returns its exit code.
fn fail(failure: &Failure, json: bool) -> ExitCode {
    if json {
        let error = serde_json::json!({
            "error": failure.message,
            "kind": failure.kind,
            "exit_code": failure.exit.code(),
        });
        warn(error);
    } else {
        warn(format_args!("roster: {}", failure.message));
    }
    failure.exit.into()
}

fn run(cli: Cli, out: &mut Printer) -> Outcome {
    if let Command::Demo = cli.command {
        return demo::run(cli.db.as_deref(), out);
    }
    let registry = SqliteRegistry::open(cli.db.as_deref().unwrap_or("roster.db".as_ref()))?;
    match cli.command {
        Command::Register(args) => commands::register(&registry, out, &args),
        Command::Deregister { id } => commands::deregister(&registry, out, &id),
        Command::Get { id } => commands::get(&registry, out, &id),
        Command::Heartbeat { id } => commands::heartbeat(&registry, out, &id),
        Command::Release { id } => commands::release(&registry, out, &id),
        Command::List {
            status,
            capabilities,
        } => commands::list(&registry, out, status, &capabilities),
        Command::Reap { ttl } => commands::reap(&registry, out, ttl),
        Command::Claim {
            labels,
            priority,
            task_id,
        } => commands::claim(&registry, out, labels, priority, task_id),
        Command::Agent {
            agent,
            every,
            deregister_on_exit,
        } => daemon::agent(&registry, out, agent.to_agent(), every, deregister_on_exit),
        Command::Reaper { ttl, every } => daemon::reaper(&registry, out, ttl, every),
        Command::Sql { query, write } => commands::sql(&registry, out, &query, write),
        // Handled before the registry is opened, on a file of its own.
        Command::Demo => Ok(()),
    }
}
