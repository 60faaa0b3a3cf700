//! Exit codes, in one table: `--help` prints it, the README copies it,
//! `tests/cli.rs` checks both, and every error reaches the user through
//! [`Exit::of`] and [`Failure`].

use std::fmt::Write as _;
use std::process::ExitCode;

use roster::{Error, ErrorKind};

/// How the command ended. The numbers are an interface that scripts test:
/// their meanings never change, new ones are only added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Everything went as asked.
    Success = 0,
    /// Something outside the registry's rules failed: output, a process,
    /// the storage underneath.
    Failure = 1,
    /// Bad input.
    BadInput = 2,
    /// No such agent.
    NotFound = 3,
    /// No agent can take the task.
    NoEligibleAgent = 4,
    /// Retired: "nothing to release", before claims were rows (release now
    /// names a task, and a missing claim is `StaleClaim`).
    Retired = 5,
    /// Other processes held the lock past the busy timeout.
    Busy = 6,
    /// The registry file cannot be used as it is.
    Unusable = 7,
    /// The task id is already claimed.
    AlreadyClaimed = 8,
    /// The token is stale, or no claim of the task is held.
    StaleClaim = 9,
    /// `roster agent` was asked to run an agent that a live sidecar runs.
    AgentRunning = 10,
    /// `roster watch` was given a cursor the change feed cannot resume from.
    BadCursor = 11,
}

/// Every exit code and what it means, in order.
pub(crate) const EXIT_CODES: [(Exit, &str); 12] = [
    (Exit::Success, "success"),
    (
        Exit::Failure,
        "failure: output could not be written, a process could not start, the storage failed (disk full, I/O error), SQL interrupted (--timeout, Ctrl-C)",
    ),
    (
        Exit::BadInput,
        "bad input: flags, durations, agent fields, task ids, SQL, a write refused by read-only `sql`",
    ),
    (Exit::NotFound, "agent not found"),
    (Exit::NoEligibleAgent, "no eligible agent for the task"),
    (
        Exit::Retired,
        "(retired: was 'nothing to release' before claims were rows)",
    ),
    (
        Exit::Busy,
        "database busy: other processes held the lock past the busy timeout",
    ),
    (
        Exit::Unusable,
        "database unusable: not an SQLite file, not a roster registry, a newer schema, cannot open",
    ),
    (Exit::AlreadyClaimed, "task already claimed"),
    (Exit::StaleClaim, "stale token or no such claim"),
    (
        Exit::AgentRunning,
        "`roster agent`: a live sidecar already runs this agent (--replace takes over)",
    ),
    (
        Exit::BadCursor,
        "`roster watch`: the cursor is older than the oldest kept event, or ahead of the newest",
    ),
];

/// The table as `--help` shows it.
pub(crate) fn help() -> String {
    let mut text = String::from("Exit codes:");
    for (exit, meaning) in EXIT_CODES {
        let _ = write!(text, "\n  {:>2}  {meaning}", exit.code());
    }
    text
}

impl Exit {
    /// The number the process exits with.
    pub(crate) fn code(self) -> u8 {
        self as u8
    }

    /// The exit code of a library error: by its kind, and by its variant
    /// where one kind has several codes.
    pub(crate) fn of(error: &Error) -> Self {
        match error.kind() {
            ErrorKind::InvalidInput => Self::BadInput,
            ErrorKind::NotFound => Self::NotFound,
            ErrorKind::Conflict => match error {
                Error::AlreadyClaimed { .. } => Self::AlreadyClaimed,
                Error::StaleClaim { .. } => Self::StaleClaim,
                Error::CursorTooOld { .. } | Error::CursorAhead { .. } => Self::BadCursor,
                // A conflict this build does not know: never mislabelled
                // as a claim's or a cursor's.
                _ => Self::Failure,
            },
            ErrorKind::NoCapacity => Self::NoEligibleAgent,
            // Ad-hoc SQL stopped by its time limit or by Ctrl-C.
            ErrorKind::Interrupted => Self::Failure,
            ErrorKind::Busy => Self::Busy,
            ErrorKind::Unusable => Self::Unusable,
            // A full disk or an I/O error: the registry's rules were kept,
            // the storage underneath failed.
            ErrorKind::Storage => Self::Failure,
            _ => Self::Failure,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// The name of a kind in JSON errors (`"kind": "not_found"`).
fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "not_found",
        ErrorKind::InvalidInput => "invalid_input",
        ErrorKind::Conflict => "conflict",
        ErrorKind::NoCapacity => "no_capacity",
        ErrorKind::Interrupted => "interrupted",
        ErrorKind::Busy => "busy",
        ErrorKind::Storage => "storage",
        ErrorKind::Unusable => "unusable",
        _ => "unknown",
    }
}

/// A failure of the command: its exit code, its kind (as JSON names it)
/// and the message for the user.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) exit: Exit,
    pub(crate) kind: &'static str,
    pub(crate) message: String,
}

impl Failure {
    /// A failure of the command's own (not of the library) with a kind
    /// named as JSON names it.
    pub(crate) fn new(exit: Exit, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            exit,
            kind,
            message: message.into(),
        }
    }

    /// Bad input found by the command itself.
    pub(crate) fn bad_input(message: impl Into<String>) -> Self {
        Self::new(Exit::BadInput, kind_name(ErrorKind::InvalidInput), message)
    }

    /// The same failure, its message prefixed with what was being done and
    /// followed by `; stopping` (for the long-running commands).
    pub(crate) fn stopping(mut self, doing: impl std::fmt::Display) -> Self {
        self.message = format!("{doing} failed: {}; stopping", self.message);
        self
    }

    /// The request contradicts what the registry holds (a sidecar already
    /// runs the agent).
    pub(crate) fn conflict(exit: Exit, message: impl Into<String>) -> Self {
        Self::new(exit, kind_name(ErrorKind::Conflict), message)
    }

    /// A failure of the command's own machinery (a process, a pipe).
    pub(crate) fn io(message: impl Into<String>) -> Self {
        Self::new(Exit::Failure, "io", message)
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let hint = match &error {
            Error::WriteRefused => "; add --write to run it",
            Error::NotFound(_) => "; `roster list` shows the registered agents",
            Error::NoEligibleAgent => {
                ": no online agent with a free slot holds every label; retry later"
            }
            Error::NoRegistry { .. } => {
                "; check --db (or $ROSTER_DB): commands that only read never create a registry, `roster register` does"
            }
            Error::Busy(_) => " with --busy-timeout",
            Error::AlreadyClaimed { .. } | Error::StaleClaim { .. } => {
                "; `roster claims` shows the claims held"
            }
            Error::NotADatabase { .. }
            | Error::NotARegistry { .. }
            | Error::SchemaTooNew { .. }
            | Error::Open { .. } => "; pass another file with --db",
            _ => "",
        };
        Self::new(
            Exit::of(&error),
            kind_name(error.kind()),
            format!("{error}{hint}"),
        )
    }
}

impl Failure {
    /// A failure to open the registry file that `flag` named (`copy
    /// --from`): the hint names that flag.
    pub(crate) fn of_file_named(error: Error, flag: &str) -> Self {
        let hint = match &error {
            Error::NoRegistry { .. }
            | Error::NotADatabase { .. }
            | Error::NotARegistry { .. }
            | Error::SchemaTooNew { .. }
            | Error::Open { .. } => format!("; check {flag}"),
            _ => return Self::from(error),
        };
        Self::new(
            Exit::of(&error),
            kind_name(error.kind()),
            format!("{error}{hint}"),
        )
    }

    /// A failure to open a PostgreSQL registry: the hints name the URL
    /// (`shown`, without its password) instead of a file.
    pub(crate) fn of_postgres(error: Error, shown: &str) -> Self {
        Self::of_postgres_named(error, shown, "--db (or $ROSTER_DB)")
    }

    /// [`Failure::of_postgres`] for a URL that `flag` gave.
    pub(crate) fn of_postgres_named(error: Error, shown: &str, flag: &str) -> Self {
        let hint = match &error {
            Error::Invalid { field: "url", .. } => format!(
                "; {flag} {shown} is not a PostgreSQL URL roster can read: postgres://USER[:PASSWORD]@HOST[:PORT]/DBNAME[?sslmode=...]"
            ),
            Error::NoRegistry { .. } => format!(
                "; check {flag} and its search_path: commands that only read never create a registry, `roster register` does"
            ),
            Error::Open { .. } => {
                format!("; check the user, password, database and sslmode of {flag}")
            }
            Error::NotARegistry { .. } | Error::SchemaTooNew { .. } => {
                format!("; check {flag} and its search_path")
            }
            _ if error.kind() == ErrorKind::Storage => {
                format!("; is the server up and reachable? ({flag} names it)")
            }
            _ => return Self::from(error),
        };
        Self::new(
            Exit::of(&error),
            kind_name(error.kind()),
            format!("{error}{hint}"),
        )
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Self::io(error.to_string())
    }
}

/// What every command returns.
pub(crate) type Outcome = Result<(), Failure>;
