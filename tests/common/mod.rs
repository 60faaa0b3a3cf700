//! Helpers shared by the test files: the real `sqlite3` shell, file health.
//! Each test file compiles its own copy and uses only part of it.

#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Whether the shell stops at the first error (`-bail`) or, like a person
/// at the prompt, goes on with the next statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    Stop,
    GoOn,
}

/// Types `sql` into `sqlite3 -batch FILE` on its standard input, as a person
/// would, and returns what the shell printed.
pub fn sqlite3(db: &Path, sql: &str, on_error: OnError) -> Output {
    let mut command = Command::new("sqlite3");
    command.arg("-batch");
    if on_error == OnError::Stop {
        command.arg("-bail");
    }
    let mut child = command
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sqlite3 shell must be installed (apt-get install -y sqlite3)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(sql.as_bytes())
        .expect("type the SQL");
    child.wait_with_output().expect("sqlite3 output")
}

/// Asserts the file is healthy: integrity, foreign keys, no orphans.
pub fn assert_healthy(db: &Path) {
    let conn = rusqlite::Connection::open(db).expect("open");
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(integrity, "ok");
    let fk_problems = conn
        .prepare("PRAGMA foreign_key_check")
        .expect("foreign_key_check")
        .query_map([], |_| Ok(()))
        .expect("rows")
        .count();
    assert_eq!(fk_problems, 0, "foreign_key_check must be empty");
    let orphans: i64 = conn
        .query_row(
            "SELECT count(*) FROM capabilities WHERE agent_id NOT IN (SELECT id FROM agents)",
            [],
            |r| r.get(0),
        )
        .expect("orphans");
    assert_eq!(orphans, 0);
}
