//! A PostgreSQL server that accepts connections and never answers (a
//! stopped process, a proxy with nothing behind it): every connection
//! roster opens is given up at the connect timeout, and a process that
//! keeps trying adds at most two connecting threads per six connect
//! timeouts, eight in all, not one more per try; a pool whose server goes
//! silent holds back no other pool of the process; a server that answers
//! again is reached while old connections hang. Its own test binary, so
//! that no other test's connections are counted with these; its tests run
//! one at a time.

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
fn tries_against_a_silent_server_add_at_most_two_connecting_threads() {
    let _one = one_at_a_time();
    // The kernel's backlog accepts the connections; nobody reads them.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
    let port = silent.local_addr().expect("address").port();
    let url = format!("postgres://roster@127.0.0.1:{port}/db");
    // Connections to other silent servers, left by the other tests, stay
    // blocked for good: only the change counts.
    let before = connecting_threads();
    for attempt in 1..=4 {
        let error = PostgresOptions::new()
            .connect_timeout(Duration::from_secs(1))
            .open(&url)
            .expect_err("a silent server");
        let message = error.to_string();
        assert!(
            message.contains(&format!(
                "cannot connect to postgres://roster@127.0.0.1:{port}/db: no answer from the server within 1s"
            )),
            "{message}"
        );
        // The first two tries each wait on a thread of their own, which
        // stays blocked; the later ones find both still waiting (an
        // unanswered try holds its slot for six connect timeouts, longer
        // than these four tries take).
        assert_eq!(
            message.contains(
                "2 earlier connections of this process to it are still waiting for an answer"
            ),
            attempt > 2,
            "try {attempt}: {message}"
        );
        // Threads of the other tests' connections may still be ending.
        assert!(
            connecting_threads() <= before + 2,
            "try {attempt}: {} connecting threads, {before} before",
            connecting_threads()
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
    /// A proxy that carries every connection until it is frozen.
    fn start(server: SocketAddr) -> Self {
        Self::silent_for_the_first(0, server)
    }

    /// A proxy that takes its first `silent` connections without a word,
    /// for good, and carries the others until it is frozen.
    fn silent_for_the_first(silent: usize, server: SocketAddr) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
        let port = listener.local_addr().expect("address").port();
        let frozen = Arc::new(AtomicBool::new(false));
        let carried: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (is_frozen, streams) = (Arc::clone(&frozen), Arc::clone(&carried));
        thread::spawn(move || {
            // Accepted while frozen, or among the first `silent`: kept
            // open, never read.
            let mut kept = Vec::new();
            for client in listener.incoming().flatten() {
                if kept.len() < silent || is_frozen.load(Ordering::SeqCst) {
                    kept.push(client);
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
    let (server, user, dbname) = test_server();
    let proxy = Proxy::start(server);
    let schema = pg::schema_name();
    let _guard = SchemaGuard(schema.clone());
    // The default connect timeout (10 s), longer than the direct
    // registry's wait for its first connection (its busy timeout, 5 s).
    let through = PostgresOptions::new()
        .schema(schema.as_str())
        .pool_size(1)
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
    // Its one connection was cut: the pool opens another, to a server that
    // never answers. The second call waits for it, up to the busy timeout.
    through.get("a").expect_err("a cut connection");
    let error = through.get("a").expect_err("no connection to be had");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "database error: no connection to postgres://{user}@127.0.0.1:{}/{dbname}: ",
            proxy.port
        )) && message.matches("database error").count() == 1,
        "{message}"
    );
    // A registry straight on the server opens its pool meanwhile, as if
    // the other were not there.
    let (direct, _direct_guard) = pg::registry();
    assert!(direct.list().expect("list").is_empty());
}

/// The server's address, user and database from the test server's URL.
fn test_server() -> (SocketAddr, String, String) {
    let config: postgres::Config = pg::url().parse().expect("the test server's URL");
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres").to_owned();
    let dbname = config.get_dbname().unwrap_or(&user).to_owned();
    (SocketAddr::from((Ipv4Addr::LOCALHOST, port)), user, dbname)
}

#[test]
fn a_server_that_answers_again_is_reached_while_old_connections_hang() {
    let _one = one_at_a_time();
    let (server, user, dbname) = test_server();
    // Its first two connections hang for good (a peer that keeps them
    // open and says nothing); it carries every later one.
    let proxy = Proxy::silent_for_the_first(2, server);
    let url = format!("postgres://{user}@127.0.0.1:{}/{dbname}", proxy.port);
    let schema = pg::schema_name();
    let _guard = SchemaGuard(schema.clone());
    let open = || {
        PostgresOptions::new()
            .schema(schema.as_str())
            .connect_timeout(Duration::from_millis(500))
            .open(&url)
    };
    for _ in 0..2 {
        let error = open().expect_err("a hanging connection");
        assert!(
            error
                .to_string()
                .contains("no answer from the server within 500ms"),
            "{error}"
        );
    }
    // The two hang on; once each has gone unanswered for six connect
    // timeouts (3 s), it stops holding the server's slot back. Until then
    // a try is refused for them (or, on a loaded machine, may itself take
    // longer than the timeout).
    let refused = "no answer from the server within 500ms";
    let registry =
        common::eventually(
            "a registry opened past the hanging connections",
            || match open() {
                Ok(registry) => Some(registry),
                Err(error) => {
                    assert!(error.to_string().contains(refused), "{error}");
                    None
                }
            },
        );
    assert!(registry.list().expect("list").is_empty());
}

/// A URL naming two servers, the first of which accepts connections and
/// never answers: each connection, the pool's too, gives the first one the
/// connect timeout and then opens on the second, where the driver alone
/// would wait on the first for good.
#[test]
fn a_silent_first_server_is_given_up_for_the_next_one() {
    let _one = one_at_a_time();
    let (server, user, dbname) = test_server();
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
    let silent_port = silent.local_addr().expect("address").port();
    let schema = pg::schema_name();
    let _guard = SchemaGuard(schema.clone());
    for url in [
        format!(
            "postgres://{user}@127.0.0.1:{silent_port},127.0.0.1:{}/{dbname}",
            server.port()
        ),
        format!(
            "host=127.0.0.1,127.0.0.1 port={silent_port},{} user={user} dbname={dbname}",
            server.port()
        ),
        format!(
            "hostaddr=127.0.0.1,127.0.0.1 port={silent_port},{} user={user} dbname={dbname}",
            server.port()
        ),
    ] {
        // A busy timeout shorter than the connect timeout: the pool's
        // first connection still gets the time to try both servers.
        let registry = PostgresOptions::new()
            .schema(schema.as_str())
            .connect_timeout(Duration::from_millis(800))
            .busy_timeout(Duration::from_millis(300))
            .open(&url)
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
        registry
            .register(AgentInfo {
                id: "reached".into(),
                last_heartbeat: Utc::now(),
                ..AgentInfo::default()
            })
            .unwrap_or_else(|e| panic!("register through {url}: {e}"));
        assert_eq!(registry.get("reached").expect("get").id, "reached");
    }
    // When no server answers, the error is the last one's, as the
    // driver's: here the silent one, after one that refuses connections.
    let refusing = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let error = PostgresOptions::new()
        .connect_timeout(Duration::from_millis(500))
        .open(&format!(
            "postgres://{user}@127.0.0.1:{refusing},127.0.0.1:{silent_port}/{dbname}"
        ))
        .expect_err("no server answers");
    assert!(
        error.to_string().contains(&format!(
            "cannot connect to postgres://{user}@127.0.0.1:{silent_port}/{dbname}: no answer"
        )),
        "{error}"
    );
    drop(silent);
}
