//! BENCHMARKS.md section "Change feed": how long a change takes to reach a
//! watcher in another process (row name `feed`), beside etcd's put and
//! watch, and what an idle watcher costs; and what the feed's triggers cost
//! a heartbeat (row name `triggers`).
//!
//! **Latency.** The bench process writes, one write at a time, each after
//! a random pause of 0.5 to 3 ms (so that writes land anywhere in a
//! watcher's polling cycle, as real ones do), and notes the wall clock
//! (`SystemTime`, the same clock in every process of the machine) when it
//! starts the write and when the write returns. A watcher in a child
//! process notes the wall clock when the event reaches it and says so on
//! its standard output; the next write starts once it did. Five paths:
//!
//! - roster: `set_status` in the bench process, `AgentRegistry::watch` in a
//!   child (this binary run again as [`WORKER`]);
//! - the same with `Durability::Full` on the writing side (an fsync per
//!   commit, as etcd does on every put);
//! - the same write, and `roster --json watch` as the watcher, its line
//!   stamped by the bench process when it reads it (so the pipe between
//!   them is counted too);
//! - roster on PostgreSQL (a throwaway cluster, as the `postgres` row
//!   starts, or `ROSTER_PG_URL`): the same `set_status` through
//!   `PostgresRegistry`, and its `watch` (LISTEN/NOTIFY) in a child;
//! - etcd (Debian's `etcd` from `etcd-server`, started here on loopback with
//!   a data directory of its own): a put through etcd's v3 HTTP/JSON
//!   gateway over one kept-alive connection from the bench process, and a
//!   watch through the same gateway's streaming `/v3/watch` in a child,
//!   which stamps each event as its chunk arrives. Both clients are a few
//!   lines of HTTP/1.1 on a `TcpStream` below. The gateway translates JSON
//!   to gRPC inside etcd, which a native gRPC client would not pay.
//!
//! **Idle CPU.** The CPU time the watching child uses over about 2 s
//! without writes (`/proc/PID/task/*/schedstat`, the nanosecond counter
//! that `getrusage` rounds), for `watch()` and for `roster watch`.
//!
//! **Triggers.** Heartbeats on a registry file against a copy of it whose
//! events triggers were dropped (`DROP TRIGGER`), alternating heartbeat by
//! heartbeat on the same agents; each side's figure is its median
//! heartbeat, per repetition. A heartbeat that changes nothing but
//! `last_heartbeat` must write no event (checked) and cost the same.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use roster::{
    AgentInfo, AgentRegistry, AgentStatus, Durability, PostgresOptions, SqliteOptions,
    SqliteRegistry,
};
use rusqlite::Connection;

use crate::common::{Bench, KillOnDrop, Rng, Times, agent_ids, find_program, fleet, this_binary};

/// The name `main` runs [`worker`] under.
pub const WORKER: &str = "feed-watcher";

/// Writes per path per repetition (fewer in a quick run).
const WRITES: usize = 200;
const QUICK_WRITES: usize = 100;

/// Writes per path before the first repetition, not counted.
const WARM_UP: usize = 20;

/// Repetitions of the `triggers` row, in a quick run too, and heartbeats
/// of each side per repetition.
const TRIGGER_REPS: usize = 11;
const TRIGGER_PAIRS: usize = 2000;

/// How long an idle watcher is watched.
const IDLE: Duration = Duration::from_secs(2);

/// How long the bench waits for a watcher's line before it calls it broken.
const PATIENCE: Duration = Duration::from_secs(30);

/// The etcd key the bench puts and watches ("feed" in base64, as the JSON
/// gateway takes keys and values), and the value it puts ("v").
const ETCD_KEY: &str = "ZmVlZA==";
const ETCD_VALUE: &str = "dg==";

/// The triggers that write a row of `events` (since schema version 7, where a
/// claim's insert and delete triggers also take and give back its slot: the
/// copy without them is only heartbeated).
const EVENT_TRIGGERS: [&str; 9] = [
    "agents_insert_event",
    "agents_register_event",
    "agents_update_event",
    "agents_status_event",
    "agents_drain_event",
    "agents_delete_event",
    "claims_insert_takes_a_slot",
    "claims_delete_gives_the_slot_back",
    "claims_renew_event",
];

// ------------------------------------------------------------- the clock

/// The wall clock, in nanoseconds since 1970: the one clock every process
/// of the machine reads alike.
fn wall_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_nanos() as u64
}

// --------------------------------------------------------------- watchers

/// A watcher in another process, and the events it reports: the id the
/// write produced (a roster `seq`, an etcd revision) and when the event
/// reached it.
struct Watcher {
    name: String,
    child: KillOnDrop,
    received: Receiver<(u64, u64)>,
}

/// How a watcher says what it received.
#[derive(Clone, Copy)]
enum Says {
    /// `ID NANOS` lines, stamped by the watcher itself.
    Stamped,
    /// `roster --json watch` lines, stamped by the bench as it reads them.
    Json,
}

impl Watcher {
    /// Starts `command` and, when `ready` is given, waits for that line:
    /// the watcher then watches.
    fn start(name: &str, mut command: Command, says: Says, ready: Option<&str>) -> Watcher {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        if let Some(ready) = ready {
            let mut line = String::new();
            out.read_line(&mut line).expect("watcher output");
            assert_eq!(line.trim_end(), ready, "{name} did not start");
        }
        let (sender, received) = mpsc::channel();
        let who = name.to_owned();
        thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let report = match says {
                    Says::Stamped => {
                        let (id, nanos) = line
                            .split_once(' ')
                            .unwrap_or_else(|| panic!("{who} said {line:?}"));
                        (
                            id.parse().expect("an id"),
                            nanos.parse().expect("a time in ns"),
                        )
                    }
                    Says::Json => {
                        let now = wall_nanos();
                        let event: serde_json::Value =
                            serde_json::from_str(&line).expect("a JSON event");
                        (event["seq"].as_u64().expect("a seq"), now)
                    }
                };
                if sender.send(report).is_err() {
                    return;
                }
            }
        });
        Watcher {
            name: name.to_owned(),
            child: KillOnDrop(child),
            received,
        }
    }

    /// `AgentRegistry::watch` in a child process, on `db`.
    fn roster_library(db: &Path) -> Watcher {
        let mut command = this_binary(WORKER);
        command.arg("roster").arg(db);
        Watcher::start("the roster watcher", command, Says::Stamped, Some("ready"))
    }

    /// `AgentRegistry::watch` on PostgreSQL, in a child process.
    fn postgres(url: &str) -> Watcher {
        let mut command = this_binary(WORKER);
        command.arg("postgres").arg(url);
        Watcher::start(
            "the PostgreSQL watcher",
            command,
            Says::Stamped,
            Some("ready"),
        )
    }

    /// `roster --json watch --since SEQ` on `db`, from its newest event.
    fn roster_command(db: &Path, registry: &SqliteRegistry) -> Watcher {
        let since = registry.last_event().expect("last event").to_string();
        let mut command = Command::new(env!("CARGO_BIN_EXE_roster"));
        command
            .arg("--db")
            .arg(db)
            .args(["--json", "watch", "--since", &since]);
        // It needs no ready line: it starts after `since` whenever it is up.
        Watcher::start("roster watch", command, Says::Json, None)
    }

    /// A watch of [`ETCD_KEY`] through etcd's gateway, in a child process.
    fn etcd(port: u16) -> Watcher {
        let mut command = this_binary(WORKER);
        command.arg("etcd").arg(port.to_string());
        Watcher::start("the etcd watcher", command, Says::Stamped, Some("ready"))
    }

    /// The next event it reports.
    fn next(&self) -> (u64, u64) {
        self.received
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("{} reported nothing: {e}", self.name))
    }

    /// The CPU time its process has used so far, in nanoseconds, if the
    /// system says.
    fn cpu_nanos(&self) -> Option<u64> {
        cpu_nanos(self.child.0.id())
    }
}

/// The CPU time process `pid` has used, every thread summed, from
/// `/proc/PID/task/*/schedstat` (its first field is the time on CPU in ns).
fn cpu_nanos(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// The share of one core a watcher uses over [`IDLE`] without writes, in
/// percent.
fn idle_cpu(watcher: &Watcher) -> Option<f64> {
    let (cpu, wall) = (watcher.cpu_nanos()?, Instant::now());
    thread::sleep(IDLE);
    let used = watcher.cpu_nanos()?.saturating_sub(cpu);
    Some(used as f64 / wall.elapsed().as_nanos() as f64 * 100.0)
}

// ---------------------------------------------------------------- writers

/// One write, timed: started, returned and delivered, in wall-clock ns.
#[derive(Clone, Copy)]
struct Timed {
    start: u64,
    returned: u64,
    delivered: u64,
}

/// One path of the figure: what it writes, and the watcher that receives
/// it.
struct Feed {
    name: &'static str,
    write: Box<dyn FnMut() -> u64>,
    watcher: Watcher,
    /// Every counted write, in order.
    timed: Vec<Timed>,
}

impl Feed {
    /// Writes `count` times, one at a time, each after a random pause, and
    /// returns the timed writes.
    fn run(&mut self, count: usize, rng: &mut Rng) -> Vec<Timed> {
        (0..count)
            .map(|_| {
                thread::sleep(Duration::from_micros(500 + rng.below(2500)));
                let start = wall_nanos();
                let id = (self.write)();
                let returned = wall_nanos();
                let (got, delivered) = self.watcher.next();
                assert_eq!(got, id, "{}: the watcher saw another write", self.name);
                Timed {
                    start,
                    returned,
                    delivered,
                }
            })
            .collect()
    }
}

/// A roster write that makes one event: `agent` alternates between busy
/// and available. Returns the event's seq (the bench is the only writer).
fn roster_write(registry: impl AgentRegistry + 'static, agent: &str) -> Box<dyn FnMut() -> u64> {
    let agent = agent.to_owned();
    let mut seq = registry.last_event().expect("last event");
    let mut busy = false;
    Box::new(move || {
        busy = !busy;
        let status = if busy {
            AgentStatus::Busy
        } else {
            AgentStatus::Available
        };
        // The roster call this file measures.
        registry.set_status(&agent, status).expect("set_status");
        seq += 1;
        seq
    })
}

/// The value at quantile `q` (0 to 1) of `values`, nearest rank.
fn quantile(values: &[i64], q: f64) -> i64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Nanoseconds in milliseconds, signed (an event may reach its watcher
/// before the write returns to the writer).
fn ms(d: i64) -> String {
    format!("{:.2} ms", d as f64 / 1e6)
}

/// `f` over each repetition's writes: one figure per repetition.
fn per_rep(reps: &[Vec<Timed>], f: impl Fn(&[Timed]) -> i64) -> Vec<Duration> {
    reps.iter()
        .map(|rep| Duration::from_nanos(f(rep).max(0) as u64))
        .collect()
}

/// From the start of the write to the event's arrival in the watcher.
fn total(t: &Timed) -> i64 {
    t.delivered as i64 - t.start as i64
}

/// The write's own round trip.
fn round_trip(t: &Timed) -> i64 {
    t.returned as i64 - t.start as i64
}

/// From the write's return to the event's arrival (negative when the event
/// came first).
fn after_return(t: &Timed) -> i64 {
    t.delivered as i64 - t.returned as i64
}

/// Measures the `feed` rows and notes.
pub fn run(bench: &mut Bench) {
    let writes = if bench.quick { QUICK_WRITES } else { WRITES };
    let reps = bench.reps.min(5);
    let mut rng = Rng(0xfeed);
    let agents: Vec<AgentInfo> = fleet(100, 17)
        .into_iter()
        .map(|mut a| {
            a.status = AgentStatus::Available;
            a
        })
        .collect();
    let mut paths: Vec<Feed> = Vec::new();

    // roster, Durability::Normal (the default) and Full, each on a file of
    // its own with a watcher child of its own.
    for (name, file, durability) in [
        ("roster", "feed.db", Durability::Normal),
        ("roster, Durability::Full", "feed-full.db", Durability::Full),
    ] {
        let (path, registry) = bench.roster_file(file, &agents);
        drop(registry);
        let registry = SqliteOptions::new()
            .durability(durability)
            .open(&path)
            .expect("open");
        let watcher = Watcher::roster_library(&path);
        paths.push(Feed {
            name,
            write: roster_write(registry, &agents[0].id),
            watcher,
            timed: Vec::new(),
        });
    }
    let (path, registry) = bench.roster_file("feed-command.db", &agents);
    let watcher = Watcher::roster_command(&path, &registry);
    paths.push(Feed {
        name: "roster, `roster --json watch` as the watcher",
        write: roster_write(registry, &agents[0].id),
        watcher,
        timed: Vec::new(),
    });

    // roster on PostgreSQL, if a server is at hand: a schema of its own.
    let postgres = super::postgres::server(bench, "change feed on PostgreSQL");
    if let Some((_, url)) = &postgres {
        let registry = postgres_registry(url, true);
        for agent in &agents {
            registry.register(agent.clone()).expect("register");
        }
        let watcher = Watcher::postgres(url);
        paths.push(Feed {
            name: "roster on PostgreSQL, LISTEN/NOTIFY",
            write: roster_write(registry, &agents[0].id),
            watcher,
            timed: Vec::new(),
        });
    }

    // etcd, if it is installed and starts.
    let etcd = Etcd::start(bench);
    let etcd_version = match &etcd {
        Ok(etcd) => {
            let mut client = Http::connect(etcd.port).expect("connect to etcd");
            let watcher = Watcher::etcd(etcd.port);
            paths.push(Feed {
                name: "etcd",
                write: Box::new(move || client.put(ETCD_KEY, ETCD_VALUE)),
                watcher,
                timed: Vec::new(),
            });
            Some(etcd.version.clone())
        }
        Err(why) => {
            bench.note(format!("change feed against etcd: not measured, {why}"));
            None
        }
    };

    eprintln!(
        "  change feed: {} paths, {reps} x {writes} writes each",
        paths.len()
    );
    for path in &mut paths {
        path.run(WARM_UP, &mut rng);
    }
    // Repetitions, rotating which path goes first.
    let mut by_rep: Vec<Vec<Vec<Timed>>> = vec![Vec::new(); paths.len()];
    for rep in 0..reps {
        for k in 0..paths.len() {
            let p = (rep + k) % paths.len();
            let timed = paths[p].run(writes, &mut rng);
            paths[p].timed.extend_from_slice(&timed);
            by_rep[p].push(timed);
        }
    }

    // The table: roster against etcd, per repetition.
    if let Some(e) = paths.iter().position(|p| p.name == "etcd") {
        let p50 = |rep: &[Timed]| quantile(&rep.iter().map(total).collect::<Vec<_>>(), 0.5);
        let p99 = |rep: &[Timed]| quantile(&rep.iter().map(total).collect::<Vec<_>>(), 0.99);
        bench.push(
            "change feed p50: write start to delivery in another process".to_owned(),
            "etcd put + watch, HTTP/JSON gateway",
            Times::new(per_rep(&by_rep[0], p50), per_rep(&by_rep[e], p50)),
            "roster p50 <= 2 ms",
        );
        bench.push(
            "change feed p99: write start to delivery in another process".to_owned(),
            "etcd put + watch, HTTP/JSON gateway",
            Times::new(per_rep(&by_rep[0], p99), per_rep(&by_rep[e], p99)),
            "roster p99 <= 20 ms",
        );
        bench.push(
            "change feed p50, Durability::Full (fsync per commit, as etcd)".to_owned(),
            "etcd put + watch, HTTP/JSON gateway",
            Times::new(per_rep(&by_rep[1], p50), per_rep(&by_rep[e], p50)),
            "report",
        );
        if let Some(p) = paths.iter().position(|p| p.name.contains("PostgreSQL")) {
            bench.push(
                "change feed p50, roster on PostgreSQL (LISTEN/NOTIFY)".to_owned(),
                "etcd put + watch, HTTP/JSON gateway",
                Times::new(per_rep(&by_rep[p], p50), per_rep(&by_rep[e], p50)),
                "report",
            );
        }
    }

    // The figures of every path, pooled over the repetitions.
    let mut note = format!(
        "Change feed (row `feed`): {} writes per path, one at a time, 0.5 to 3 ms apart; \
         wall-clock times from the start of the write in the bench process.\n\n\
         | path | to delivery, p50 | p99 | max | write returns, p50 | delivery after the return, p50 | p99 |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        reps * writes
    );
    for path in &paths {
        let totals: Vec<i64> = path.timed.iter().map(total).collect();
        let round_trips: Vec<i64> = path.timed.iter().map(round_trip).collect();
        let after: Vec<i64> = path.timed.iter().map(after_return).collect();
        let name = match (&etcd_version, path.name) {
            (Some(version), "etcd") => {
                format!("etcd {version}, put and watch through its HTTP/JSON gateway")
            }
            _ => path.name.to_owned(),
        };
        note.push_str(&format!(
            "\n| {name} | {} | {} | {} | {} | {} | {} |",
            ms(quantile(&totals, 0.5)),
            ms(quantile(&totals, 0.99)),
            ms(quantile(&totals, 1.0)),
            ms(quantile(&round_trips, 0.5)),
            ms(quantile(&after, 0.5)),
            ms(quantile(&after, 0.99)),
        ));
    }
    let roster: Vec<i64> = paths[0].timed.iter().map(total).collect();
    let (p50, p99) = (quantile(&roster, 0.5), quantile(&roster, 0.99));
    note.push_str(&format!(
        "\n\nGoals (roster, the default durability): p50 <= 2 ms: {} ({}); p99 <= 20 ms: {} ({}).",
        if p50 <= 2_000_000 {
            "met"
        } else {
            "**missed**"
        },
        ms(p50),
        if p99 <= 20_000_000 {
            "met"
        } else {
            "**missed**"
        },
        ms(p99),
    ));

    // Idle CPU of the watchers of the first path and of the command.
    let library = idle_cpu(&paths[0].watcher);
    let command = idle_cpu(&paths[2].watcher);
    let shown = |cpu: Option<f64>| {
        cpu.map_or_else(
            || "not measured (no /proc/PID/task/*/schedstat)".to_owned(),
            |c| format!("{c:.2} % of a core"),
        )
    };
    note.push_str(&format!(
        "\n\nIdle watcher, CPU over {:.0} s without writes (goal < 1 % of a core): \
         `watch()` in a child {}; `roster watch` {}.",
        IDLE.as_secs_f64(),
        shown(library),
        shown(command),
    ));
    bench.note(note);
    drop(paths);
    drop(etcd);
    drop(postgres);
}

/// The schema the PostgreSQL path of the feed uses.
const FEED_SCHEMA: &str = "roster_feed";

/// The registry of the PostgreSQL path, on [`FEED_SCHEMA`]; `fresh` drops
/// what an earlier run left there first.
fn postgres_registry(url: &str, fresh: bool) -> roster::PostgresRegistry {
    if fresh {
        let mut admin = postgres::Client::connect(url, postgres::NoTls).expect("connect");
        admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {FEED_SCHEMA} CASCADE"))
            .expect("drop the feed schema");
    }
    PostgresOptions::new()
        .schema(FEED_SCHEMA)
        .open(url)
        .expect("open the PostgreSQL registry")
}

// -------------------------------------------------------------------- etcd

/// An etcd server of the bench's own, on loopback, stopped when dropped.
struct Etcd {
    port: u16,
    version: String,
    _server: KillOnDrop,
}

/// A free TCP port on loopback (free when asked: the same small race as
/// the Redis row's).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Etcd {
    /// Starts `etcd` with a fresh data directory and free client and peer
    /// ports, and waits until it says it serves clients. Err says why not.
    fn start(bench: &Bench) -> Result<Etcd, String> {
        let Some(program) = find_program("etcd") else {
            return Err("etcd is not installed (apt-get install -y etcd-server)".to_owned());
        };
        let version = Command::new(&program)
            .arg("--version")
            .output()
            .ok()
            .and_then(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .next()
                    .and_then(|line| line.strip_prefix("etcd Version: "))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "(version unknown)".to_owned());
        let (port, peer) = (free_port(), free_port());
        let data = bench.dir().join("etcd");
        let _ = std::fs::remove_dir_all(&data);
        let client_url = format!("http://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut child = Command::new(&program)
            .args(["--name", "bench"])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("etcd did not start: {e}"))?;
        // etcd logs on stderr; it is ready when it says so. The pipe is
        // read to the end, so that its log never fills it.
        let log = child.stderr.take().expect("piped stderr");
        let (ready, said) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(log).lines().map_while(Result::ok) {
                if line.contains("ready to serve client requests") {
                    let _ = ready.send(());
                }
            }
        });
        let server = KillOnDrop(child);
        said.recv_timeout(PATIENCE)
            .map_err(|_| format!("etcd did not say it was ready within {PATIENCE:?}"))?;
        Ok(Etcd {
            port,
            version,
            _server: server,
        })
    }
}

/// A minimal HTTP/1.1 client on one kept-alive TCP connection: POST with a
/// JSON body; replies with a `Content-Length` or chunked. Enough for etcd's
/// gateway, nothing more.
struct Http {
    stream: BufReader<TcpStream>,
    host: String,
}

impl Http {
    fn connect(port: u16) -> io::Result<Http> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        Ok(Http {
            stream: BufReader::new(stream),
            host: format!("127.0.0.1:{port}"),
        })
    }

    /// Sends a POST in one write.
    fn send(&mut self, path: &str, body: &str) -> io::Result<()> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.stream.get_mut().write_all(request.as_bytes())
    }

    /// Reads a reply's status line and headers; returns the body's length,
    /// or `None` when it is chunked.
    fn head(&mut self) -> io::Result<Option<usize>> {
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        if !line.starts_with("HTTP/1.1 200") {
            return Err(io::Error::other(format!("etcd answered {line:?}")));
        }
        let mut length = None;
        loop {
            line.clear();
            self.stream.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                return Ok(length);
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().ok();
            }
        }
    }

    /// The next chunk of a chunked body (`None` after the last).
    fn chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim_end().split(';').next().unwrap_or(""), 16)
            .map_err(|_| io::Error::other(format!("bad chunk size {line:?}")))?;
        let mut data = vec![0; size + 2];
        self.stream.read_exact(&mut data)?;
        data.truncate(size);
        Ok((size > 0).then_some(data))
    }

    /// A POST and its whole reply, as JSON.
    fn post(&mut self, path: &str, body: &str) -> io::Result<serde_json::Value> {
        self.send(path, body)?;
        let body = match self.head()? {
            Some(length) => {
                let mut body = vec![0; length];
                self.stream.read_exact(&mut body)?;
                body
            }
            None => {
                let mut body = Vec::new();
                while let Some(chunk) = self.chunk()? {
                    body.extend(chunk);
                }
                body
            }
        };
        serde_json::from_slice(&body).map_err(io::Error::other)
    }

    /// Puts `value` under `key` (both base64) and returns the revision it
    /// made.
    fn put(&mut self, key: &str, value: &str) -> u64 {
        let reply = self
            .post(
                "/v3/kv/put",
                &format!(r#"{{"key":"{key}","value":"{value}"}}"#),
            )
            .expect("etcd put");
        revision(&reply["header"]["revision"])
    }
}

/// An etcd revision: an int64 in JSON, so a string.
fn revision(value: &serde_json::Value) -> u64 {
    value
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("not a revision: {value}"))
}

// ----------------------------------------------------------------- children

/// The child process: `roster DB` watches the registry with
/// `AgentRegistry::watch` from its newest event; `etcd PORT` watches
/// [`ETCD_KEY`] through the gateway. Either prints `ready` once it watches,
/// then `ID NANOS` for each event (its seq or revision, and the wall clock
/// when it arrived), until it is killed.
pub fn worker(args: &[String]) {
    let [role, target] = args else {
        panic!("{WORKER} roster DB | postgres URL | etcd PORT");
    };
    let mut out = io::stdout().lock();
    match role.as_str() {
        "roster" | "postgres" => {
            let registry: Box<dyn AgentRegistry> = if role == "roster" {
                Box::new(SqliteRegistry::open(target).expect("open"))
            } else {
                Box::new(postgres_registry(target, false))
            };
            let mut cursor = registry.last_event().expect("last event");
            writeln!(out, "ready")
                .and_then(|()| out.flush())
                .expect("stdout");
            loop {
                // The roster call this file measures.
                let events = registry
                    .watch(cursor, roster::MAX_EVENTS_PAGE, Duration::from_secs(1))
                    .expect("watch");
                let now = wall_nanos();
                for event in events {
                    writeln!(out, "{} {now}", event.seq).expect("stdout");
                    cursor = event.seq;
                }
                out.flush().expect("stdout");
            }
        }
        "etcd" => {
            let port: u16 = target.parse().expect("PORT is a number");
            let mut http = Http::connect(port).expect("connect to etcd");
            http.send(
                "/v3/watch",
                &format!(r#"{{"create_request":{{"key":"{ETCD_KEY}"}}}}"#),
            )
            .expect("watch request");
            assert_eq!(http.head().expect("watch reply"), None, "a chunked stream");
            // Messages are JSON objects, one per line, in chunks.
            let mut pending: Vec<u8> = Vec::new();
            let mut created = false;
            while let Some(chunk) = http.chunk().expect("watch stream") {
                let now = wall_nanos();
                pending.extend(chunk);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let message: serde_json::Value =
                        serde_json::from_slice(&line).expect("a JSON message");
                    let result = &message["result"];
                    if result["created"] == true && !created {
                        created = true;
                        writeln!(out, "ready").expect("stdout");
                    }
                    for event in result["events"].as_array().into_iter().flatten() {
                        writeln!(out, "{} {now}", revision(&event["kv"]["mod_revision"]))
                            .expect("stdout");
                    }
                }
                out.flush().expect("stdout");
            }
        }
        other => panic!("{WORKER}: unknown role {other:?}"),
    }
}

// ---------------------------------------------------------------- triggers

/// Measures the `triggers` row: heartbeats with the events triggers against
/// the same file without them, at 10 000 agents, none offline (so that no
/// heartbeat changes a status).
pub fn triggers(bench: &mut Bench) {
    let n = 10_000;
    let agents: Vec<AgentInfo> = fleet(n, 23)
        .into_iter()
        .map(|mut a| {
            if a.status == AgentStatus::Offline {
                a.status = AgentStatus::Available;
            }
            a
        })
        .collect();
    let (path, registry) = bench.roster_file("triggers.db", &agents);
    // Closing the registry checkpoints every agent into the file; both
    // sides get a copy of it.
    drop(registry);
    let with = bench.fresh_file("triggers-with.db");
    let without = bench.fresh_file("triggers-without.db");
    std::fs::copy(&path, &with).expect("copy");
    std::fs::copy(&path, &without).expect("copy");
    {
        let conn = Connection::open(&without).expect("open the copy");
        for trigger in EVENT_TRIGGERS {
            conn.execute_batch(&format!("DROP TRIGGER {trigger};"))
                .expect("drop trigger");
        }
        let left: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND sql LIKE '%INTO events%'",
                [],
                |row| row.get(0),
            )
            .expect("count triggers");
        assert_eq!(left, 0, "a trigger writing events is left");
    }
    let with = SqliteRegistry::open(&with).expect("open");
    let without = SqliteRegistry::open(&without).expect("open");
    let before = with.last_event().expect("last event");
    let ids = agent_ids(n);
    let mut rng = Rng(29);
    let picks: Vec<usize> = (0..4096).map(|_| rng.below(n as u64) as usize).collect();
    let pick = |i: usize| ids[picks[i % picks.len()]].as_str();
    let beat = |registry: &SqliteRegistry, id: &str| -> i64 {
        let start = Instant::now();
        // The roster call this file measures.
        registry.heartbeat(id).expect("heartbeat");
        start.elapsed().as_nanos() as i64
    };
    // The two sides differ by a few percent at most, far less than this
    // shared machine's noise from one batch to the next. So they alternate
    // heartbeat by heartbeat, on the same agent, each timed alone, which
    // side goes first alternating too; a repetition's figure for each side
    // is the median of its heartbeats, which a preempted heartbeat does not
    // move.
    for i in 0..100 {
        beat(&with, pick(i));
        beat(&without, pick(i));
    }
    let mut with_times = Vec::with_capacity(TRIGGER_REPS);
    let mut without_times = Vec::with_capacity(TRIGGER_REPS);
    for rep in 0..TRIGGER_REPS {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..TRIGGER_PAIRS {
            let id = pick(rep * TRIGGER_PAIRS + i);
            if i % 2 == 0 {
                a.push(beat(&with, id));
                b.push(beat(&without, id));
            } else {
                b.push(beat(&without, id));
                a.push(beat(&with, id));
            }
        }
        with_times.push(Duration::from_nanos(quantile(&a, 0.5) as u64));
        without_times.push(Duration::from_nanos(quantile(&b, 0.5) as u64));
    }
    let times = Times::new(with_times, without_times);
    assert_eq!(
        with.last_event().expect("last event"),
        before,
        "a heartbeat wrote an event"
    );
    bench.push(
        format!("heartbeat, {n} agents, with the events triggers (median heartbeat)"),
        "the same file without them (DROP TRIGGER)",
        times,
        "roster / baseline <= 1.03",
    );
}
