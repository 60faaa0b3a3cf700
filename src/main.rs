//! The `roster` command: the registry from the shell, an agent sidecar, a
//! reaper, ad-hoc SQL and a demo. Thin: every operation is a library call.

#![forbid(unsafe_code)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
