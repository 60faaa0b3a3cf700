//! A PostgreSQL server that accepts connections and never answers (a
//! stopped process, a proxy with nothing behind it): every connection
//! roster opens of its own is given up at the connect timeout, and a
//! process that keeps trying holds a bounded number of connecting threads,
//! not one more per try; a pool whose server goes silent holds back no
//! other pool of the process. Its own test binary, so that no other test's
//! connections are counted with these; its tests run one at a time.

mod common;

use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use chrono::Utc;
use common::pg::{self, SchemaGuard};
use roster::{AgentInfo, AgentRegistry, PostgresOptions};

/// Taken by each test for its whole run: the threads one counts are its own.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock().unwrap_or_else(PoisonError::into_inner)
}

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
    let _one = one_at_a_time();
    // The kernel's backlog accepts the connections; nobody reads them.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
    let port = silent.local_addr().expect("address").port();
    let url = format!("postgres://roster@127.0.0.1:{port}/db");
    // Connections to other silent servers, left by the other test, stay
    // blocked for good: only the change counts.
    let before = connecting_threads();
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
        assert_eq!(
            connecting_threads() - before,
            attempt.min(2),
            "try {attempt}"
        );
    }
    drop(silent);
}

/// A TCP proxy to the test server that can go silent: [`freeze`] cuts
/// every connection it carries, and from then on it takes new ones without
/// a word.
///
/// [`freeze`]: Proxy::freeze
struct Proxy {
    port: u16,
    frozen: Arc<AtomicBool>,
    carried: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(server: SocketAddr) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
        let port = listener.local_addr().expect("address").port();
        let frozen = Arc::new(AtomicBool::new(false));
        let carried: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (is_frozen, streams) = (Arc::clone(&frozen), Arc::clone(&carried));
        thread::spawn(move || {
            // Accepted while frozen: kept open, never read.
            let mut silent = Vec::new();
            for client in listener.incoming().flatten() {
                if is_frozen.load(Ordering::SeqCst) {
                    silent.push(client);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(server) else {
                    continue;
                };
                let ends = [&client, &upstream].map(|s| s.try_clone().expect("clone"));
                streams
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(ends);
                let (client_in, upstream_in) = (
                    client.try_clone().expect("clone"),
                    upstream.try_clone().expect("clone"),
                );
                pump(client_in, upstream);
                pump(upstream_in, client);
            }
        });
        Self {
            port,
            frozen,
            carried,
        }
    }

    /// Cuts what it carries and goes silent.
    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
        for stream in self
            .carried
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Copies `from` into `to` until either ends.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
    });
}

#[test]
fn a_pool_whose_server_goes_silent_holds_back_no_other_pool() {
    let _one = one_at_a_time();
    let config: postgres::Config = pg::url().parse().expect("the test server's URL");
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    let dbname = config.get_dbname().unwrap_or(user);
    let proxy = Proxy::start(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    let schema = pg::schema_name();
    let _guard = SchemaGuard(schema.clone());
    let through = PostgresOptions::new()
        .schema(schema.as_str())
        .pool_size(1)
        .connect_timeout(Duration::from_secs(1))
        .busy_timeout(Duration::from_secs(1))
        .open(&format!(
            "postgres://{user}@127.0.0.1:{}/{dbname}",
            proxy.port
        ))
        .expect("open through the proxy");
    through
        .register(AgentInfo {
            id: "a".into(),
            last_heartbeat: Utc::now(),
            ..AgentInfo::default()
        })
        .expect("register");
    proxy.freeze();
    // Its one connection was cut: the pool opens another, on the thread
    // every pool of the process shares, to a server that never answers.
    // The second call waits for it, up to the busy timeout.
    through.get("a").expect_err("a cut connection");
    through.get("a").expect_err("no connection to be had");
    // A registry straight on the server opens its pool on that same
    // thread; it would wait for good if the silent connection held it.
    let (direct, _direct_guard) = pg::registry();
    assert!(direct.list().expect("list").is_empty());
}
