//! A PostgreSQL server that accepts connections and never answers (a
//! stopped process, a proxy with nothing behind it): every connection
//! roster opens of its own is given up at the connect timeout, and a
//! process that keeps trying holds a bounded number of connecting threads,
//! not one more per try. Its own test binary, so that no other test's
//! connections are counted with these.

use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use roster::PostgresOptions;

/// The threads of this process that are opening a connection (Linux keeps
/// the first 15 bytes of a thread's name).
fn connecting_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "roster-pg-conne")
        .count()
}

#[test]
fn tries_against_a_silent_server_hold_at_most_two_connecting_threads() {
    // The kernel's backlog accepts the connections; nobody reads them.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
    let port = silent.local_addr().expect("address").port();
    let url = format!("postgres://roster@127.0.0.1:{port}/db");
    assert_eq!(connecting_threads(), 0);
    for attempt in 1..=5 {
        let error = PostgresOptions::new()
            .connect_timeout(Duration::from_millis(200))
            .open(&url)
            .expect_err("a silent server");
        let message = error.to_string();
        assert!(
            message.contains(&format!(
                "cannot connect to postgres://roster@127.0.0.1:{port}/db: no answer from the server within 200ms"
            )),
            "{message}"
        );
        // The first two tries each wait on a thread of their own, which
        // stays blocked; the later ones find both still waiting.
        assert_eq!(
            message.contains(
                "2 earlier connections of this process to it are still waiting for an answer"
            ),
            attempt > 2,
            "try {attempt}: {message}"
        );
        assert_eq!(connecting_threads(), attempt.min(2), "try {attempt}");
    }
    drop(silent);
}
