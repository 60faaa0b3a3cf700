//! Standard output and standard error that report their failures instead
//! of panicking as `println!` does.
//!
//! A closed pipe (`roster list | head -1`) ends the command quietly with
//! status 0, like other Unix tools: Rust ignores SIGPIPE, so the write
//! fails with `BrokenPipe` and [`Printer`] turns that into
//! [`Failure::closed_output`]. Any other failed write (a full disk,
//! `/dev/full`) is a failure with exit code 1 and a message.

use std::io::{self, BufWriter, Stdout, Write};

use serde::Serialize;

use super::exit::{Exit, Failure, Outcome};

/// Where the results of a command go: standard output, buffered, in text or
/// JSON.
pub(crate) struct Printer {
    out: BufWriter<Stdout>,
    /// Whether the user asked for JSON (`--json`).
    pub(crate) json: bool,
}

impl Printer {
    /// A printer on this process's standard output.
    pub(crate) fn stdout(json: bool) -> Self {
        Self {
            out: BufWriter::new(io::stdout()),
            json,
        }
    }

    /// Writes one line.
    pub(crate) fn line(&mut self, text: impl std::fmt::Display) -> Outcome {
        writeln!(self.out, "{text}").map_err(Failure::output)
    }

    /// Writes text as it is, without a line break.
    pub(crate) fn text(&mut self, text: &str) -> Outcome {
        self.out.write_all(text.as_bytes()).map_err(Failure::output)
    }

    /// Writes `value` as one JSON document on one line, as Go writes it.
    pub(crate) fn json(&mut self, value: &impl Serialize) -> Outcome {
        self.json_part(value)?;
        self.line("")
    }

    /// Writes `value` as JSON, without a line break: a part of a larger
    /// document.
    pub(crate) fn json_part(&mut self, value: &impl Serialize) -> Outcome {
        roster::to_json_writer(&mut self.out, value).map_err(|e| match e.io_error_kind() {
            Some(kind) => Failure::output(io::Error::from(kind)),
            None => Failure::io(format!("cannot write JSON: {e}")),
        })
    }

    /// Sends what is buffered to standard output: after each line of a
    /// long-running command, and once at the end of every command.
    pub(crate) fn flush(&mut self) -> Outcome {
        self.out.flush().map_err(Failure::output)
    }
}

impl Failure {
    /// A failed write to standard output: quiet for a closed pipe, exit
    /// code 1 otherwise.
    pub(crate) fn output(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::BrokenPipe {
            Self::closed_output()
        } else {
            Self::io(format!("cannot write the output: {error}"))
        }
    }

    /// The reader of standard output has gone: stop, quietly, with status
    /// 0.
    pub(crate) fn closed_output() -> Self {
        Self::new(Exit::Success, "closed_output", "")
    }

    /// Whether this is [`Failure::closed_output`].
    pub(crate) fn is_closed_output(&self) -> bool {
        self.exit == Exit::Success
    }
}

/// Writes one line to standard error, ignoring a failure: there is nowhere
/// left to report it.
pub(crate) fn warn(text: impl std::fmt::Display) {
    let _ = writeln!(io::stderr(), "{text}");
}
