//! `roster metrics`: the registry's state in the Prometheus text exposition
//! format (version 0.0.4), printed once (for node_exporter's textfile
//! collector) or served on `/metrics` over HTTP (`--listen`).
//!
//! Every figure comes from one read-only SQL statement, so that they all
//! describe one snapshot of the registry and its size never travels into
//! the process: the database counts and sums. The statement is written
//! twice, once per dialect ([`SNAPSHOT`] for SQLite, [`PG_SNAPSHOT`] for
//! PostgreSQL, whose values all come back as text), and read by the same
//! code. The event counts are what the `events` table holds (its retention
//! keeps the newest 100 000 events, for at most 7 days, by default), which
//! is why they are gauges: a one-shot run tells what happened lately, and
//! `roster_events_oldest_timestamp_seconds` says since when. The one
//! counter is the feed's cursor, which never goes back (on PostgreSQL, the
//! last number the events' sequence gave, holes of rolled-back
//! transactions included).
//!
//! The HTTP server is deliberately tiny: the standard library's listener,
//! one connection at a time, a request head of at most 8 KiB read within 5
//! seconds, `Connection: close`, and it stops on SIGINT or SIGTERM.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use roster::{AgentStatus, EventKind, RecoverReason, SqlValue};

use super::backend::{self, Registry};
use super::daemon::stop_flag;
use super::exit::{Failure, Outcome};
use super::output;
use super::printer::{Printer, warn};

/// `roster metrics`'s flags.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  roster metrics > /var/lib/node_exporter/textfile/roster.prom.tmp && mv /var/lib/node_exporter/textfile/roster.prom.tmp /var/lib/node_exporter/textfile/roster.prom\n  roster metrics --listen 127.0.0.1:9464"
)]
pub(crate) struct MetricsArgs {
    /// Serve the metrics at http://ADDR/metrics until SIGINT or SIGTERM,
    /// instead of printing them once (a port of 0 picks a free one; the
    /// address is printed when the server is up).
    #[arg(long, value_name = "ADDR", value_parser = address)]
    listen: Option<SocketAddr>,
}

/// Parses `--listen`: `HOST:PORT`, a host name resolved once.
fn address(text: &str) -> Result<SocketAddr, String> {
    let mut addresses = text
        .to_socket_addrs()
        .map_err(|e| format!("{e}; expected HOST:PORT, e.g. 127.0.0.1:9464 or [::1]:9464"))?;
    addresses
        .next()
        .ok_or_else(|| format!("{text} resolves to no address"))
}

/// The media type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The longest request head the server reads.
const MAX_REQUEST: usize = 8192;

/// How long the server waits for a client to send its request or read the
/// answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// `roster metrics`.
pub(crate) fn run(registry: &Registry, out: &mut Printer, args: &MetricsArgs) -> Outcome {
    match args.listen {
        None => out.text(&render(registry)?),
        Some(address) => serve(registry, out, address),
    }
}

/// The one statement: rows of (figure, label, value).
const SNAPSHOT: &str = "\
SELECT 'agents', status, count(*) FROM agents GROUP BY status
UNION ALL SELECT 'drained', '', count(*) FROM agents WHERE drained = 1
UNION ALL SELECT 'load', '', coalesce(sum(current_load), 0) FROM agents
UNION ALL SELECT 'capacity', '', coalesce(sum(max_load), 0) FROM agents
    WHERE status <> 'offline' AND drained = 0
UNION ALL SELECT 'unlimited', '', count(*) FROM agents
    WHERE status <> 'offline' AND drained = 0 AND max_load = 0
UNION ALL SELECT 'capability_agents', c.capability, count(*)
    FROM capabilities AS c JOIN agents AS a ON a.id = c.agent_id GROUP BY c.capability
UNION ALL SELECT 'capability_load', c.capability, sum(a.current_load)
    FROM capabilities AS c JOIN agents AS a ON a.id = c.agent_id GROUP BY c.capability
UNION ALL SELECT 'capability_capacity', c.capability,
    sum(CASE WHEN a.status <> 'offline' AND a.drained = 0 THEN a.max_load ELSE 0 END)
    FROM capabilities AS c JOIN agents AS a ON a.id = c.agent_id GROUP BY c.capability
UNION ALL SELECT 'capability_unlimited', c.capability,
    sum(a.status <> 'offline' AND a.drained = 0 AND a.max_load = 0)
    FROM capabilities AS c JOIN agents AS a ON a.id = c.agent_id GROUP BY c.capability
UNION ALL SELECT 'claims', '', count(*) FROM claims
UNION ALL SELECT 'claims_detached', '', count(*) FROM claims WHERE detached = 1
UNION ALL SELECT 'claims_lease_expired', '', count(*) FROM claims
    WHERE lease_expires_at < strftime('%Y-%m-%d %H:%M:%f000000', 'now')
UNION ALL SELECT 'oldest_heartbeat', '', min(last_heartbeat) FROM agents WHERE status <> 'offline'
UNION ALL SELECT 'events', kind, count(*) FROM events GROUP BY kind
UNION ALL SELECT 'recoveries', reason, count(*) FROM events WHERE kind = 'recovered' GROUP BY reason
UNION ALL SELECT 'oldest_event', '', min(at) FROM events
UNION ALL SELECT 'cursor', '', value FROM counters WHERE name = 'event_seq'";

/// [`SNAPSHOT`] in PostgreSQL's dialect: booleans are booleans, `now()` is
/// the server's, and every value is text (the branches of a UNION share
/// one type), times in the format SQLite stores.
const PG_SNAPSHOT: &str = "\
SELECT 'agents', status::text, count(*)::text FROM agents GROUP BY status
UNION ALL SELECT 'drained', '', count(*)::text FROM agents WHERE drained
UNION ALL SELECT 'load', '', coalesce(sum(current_load), 0)::text FROM agents
UNION ALL SELECT 'capacity', '', coalesce(sum(max_load), 0)::text FROM agents
    WHERE status <> 'offline' AND NOT drained
UNION ALL SELECT 'unlimited', '', count(*)::text FROM agents
    WHERE status <> 'offline' AND NOT drained AND max_load = 0
UNION ALL SELECT 'capability_agents', c.capability::text, count(*)::text
    FROM capabilities AS c JOIN agents AS a ON a.id = c.agent_id GROUP BY c.capability
UNION ALL SELECT 'capability_load', c.capability::text, sum(a.current_load)::text
    FROM capabilities AS c JOIN agents AS a ON a.id = c.agent_id GROUP BY c.capability
UNION ALL SELECT 'capability_capacity', c.capability::text,
    sum(CASE WHEN a.status <> 'offline' AND NOT a.drained THEN a.max_load ELSE 0 END)::text
    FROM capabilities AS c JOIN agents AS a ON a.id = c.agent_id GROUP BY c.capability
UNION ALL SELECT 'capability_unlimited', c.capability::text,
    count(*) FILTER (WHERE a.status <> 'offline' AND NOT a.drained AND a.max_load = 0)::text
    FROM capabilities AS c JOIN agents AS a ON a.id = c.agent_id GROUP BY c.capability
UNION ALL SELECT 'claims', '', count(*)::text FROM claims
UNION ALL SELECT 'claims_detached', '', count(*)::text FROM claims WHERE detached
UNION ALL SELECT 'claims_lease_expired', '', count(*)::text FROM claims
    WHERE lease_expires_at < now()
UNION ALL SELECT 'oldest_heartbeat', '',
    to_char(min(last_heartbeat) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')
    FROM agents WHERE status <> 'offline'
UNION ALL SELECT 'events', kind::text, count(*)::text FROM events GROUP BY kind
UNION ALL SELECT 'recoveries', reason::text, count(*)::text FROM events
    WHERE kind = 'recovered' GROUP BY reason
UNION ALL SELECT 'oldest_event', '',
    to_char(min(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM events
UNION ALL SELECT 'cursor', '',
    coalesce(pg_sequence_last_value(pg_get_serial_sequence('events', 'seq')::regclass), 0)::text";

/// The figures of one snapshot, by figure and label.
#[derive(Debug, Default)]
struct Snapshot {
    numbers: BTreeMap<(String, String), f64>,
    times: BTreeMap<String, DateTime<Utc>>,
}

impl Snapshot {
    fn read(registry: &Registry) -> Result<Self, Failure> {
        let statement = match registry {
            Registry::Sqlite(_) => SNAPSHOT,
            Registry::Postgres(_) => PG_SNAPSHOT,
            _ => {
                return Err(Failure::bad_input(
                    "roster metrics has no snapshot query for this kind of registry",
                ));
            }
        };
        let rows = backend::query(registry, statement)?;
        let mut snapshot = Self::default();
        for row in rows.rows {
            let [SqlValue::Text(figure), label, value] = row.as_slice() else {
                continue;
            };
            let label = match label {
                SqlValue::Text(label) => label.clone(),
                _ => String::new(),
            };
            match value {
                SqlValue::Integer(n) => {
                    snapshot.numbers.insert((figure.clone(), label), *n as f64);
                }
                // PostgreSQL's counts come as text, and both backends' times.
                SqlValue::Text(text) => {
                    if let Ok(n) = text.parse::<i64>() {
                        snapshot.numbers.insert((figure.clone(), label), n as f64);
                    } else if let Some(time) = output::stored_time(text) {
                        snapshot.times.insert(figure.clone(), time);
                    }
                }
                _ => {}
            }
        }
        Ok(snapshot)
    }

    fn number(&self, figure: &str, label: &str) -> f64 {
        self.numbers
            .get(&(figure.to_owned(), label.to_owned()))
            .copied()
            .unwrap_or(0.0)
    }

    /// The labels of `figure` with their values, in label order.
    fn labelled<'a>(&'a self, figure: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        self.numbers
            .iter()
            .filter(move |((f, _), _)| f == figure)
            .map(|((_, label), value)| (label.as_str(), *value))
    }
}

/// Writes metric families in the text format.
struct Exposition(String);

impl Exposition {
    /// Starts a family: its `# HELP` and `# TYPE` lines.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    /// One sample without labels.
    fn sample(&mut self, name: &str, value: f64) {
        let _ = writeln!(self.0, "{name} {}", number(value));
    }

    /// One sample with one label.
    fn labelled(&mut self, name: &str, label: &str, label_value: &str, value: f64) {
        let _ = writeln!(
            self.0,
            "{name}{{{label}=\"{}\"}} {}",
            escape_label(label_value),
            number(value)
        );
    }
}

/// A sample value: an integer without a fraction, otherwise as Rust prints
/// it (the format's floats are Go's `ParseFloat`'s).
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value}")
    }
}

/// A `# HELP` text: backslash and line feed escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A label value: backslash, double quote and line feed escaped.
fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics of the registry now, in the text exposition format.
fn render(registry: &Registry) -> Result<String, Failure> {
    Ok(expose(&Snapshot::read(registry)?, roster::now()))
}

/// The metrics of `snapshot`, ages counted up to `now`.
fn expose(s: &Snapshot, now: DateTime<Utc>) -> String {
    let mut out = Exposition(String::new());
    let seconds = |time: DateTime<Utc>| (now - time).num_milliseconds() as f64 / 1000.0;

    out.family("roster_agents", "gauge", "Agents registered, by status.");
    for status in AgentStatus::ALL {
        out.labelled(
            "roster_agents",
            "status",
            status.as_str(),
            s.number("agents", status.as_str()),
        );
    }
    out.family(
        "roster_agents_drained",
        "gauge",
        "Agents drained by an operator: they take no new claims.",
    );
    out.sample("roster_agents_drained", s.number("drained", ""));
    out.family(
        "roster_load",
        "gauge",
        "Tasks running on all agents (current_load summed).",
    );
    out.sample("roster_load", s.number("load", ""));
    out.family(
        "roster_capacity",
        "gauge",
        "Task slots of the agents that can take claims (online, not drained, max_load > 0), summed.",
    );
    out.sample("roster_capacity", s.number("capacity", ""));
    out.family(
        "roster_unlimited_agents",
        "gauge",
        "Agents that can take claims with no limit (max_load 0): their slots are not in roster_capacity.",
    );
    out.sample("roster_unlimited_agents", s.number("unlimited", ""));

    for (name, figure, help) in [
        (
            "roster_capability_agents",
            "capability_agents",
            "Agents holding the capability, whatever their status.",
        ),
        (
            "roster_capability_load",
            "capability_load",
            "Tasks running on the agents holding the capability.",
        ),
        (
            "roster_capability_capacity",
            "capability_capacity",
            "Task slots of the agents holding the capability that can take claims (online, not drained, max_load > 0).",
        ),
        (
            "roster_capability_unlimited_agents",
            "capability_unlimited",
            "Agents holding the capability that can take claims with no limit (max_load 0).",
        ),
    ] {
        out.family(name, "gauge", help);
        for (capability, value) in s.labelled(figure) {
            out.labelled(name, "capability", capability, value);
        }
    }

    out.family(
        "roster_claims",
        "gauge",
        "Claims held: tasks running on an agent, detached ones included.",
    );
    out.sample("roster_claims", s.number("claims", ""));
    out.family(
        "roster_claims_detached",
        "gauge",
        "Claims whose agent was deregistered: recover takes them back.",
    );
    out.sample("roster_claims_detached", s.number("claims_detached", ""));
    out.family(
        "roster_claims_lease_expired",
        "gauge",
        "Claims whose lease ran out without a renewal: recover takes them back.",
    );
    out.sample(
        "roster_claims_lease_expired",
        s.number("claims_lease_expired", ""),
    );
    out.family(
        "roster_heartbeat_oldest_age_seconds",
        "gauge",
        "Seconds since the oldest heartbeat of an agent that is not offline (0 when none is online): what a reaper's TTL is compared with.",
    );
    out.sample(
        "roster_heartbeat_oldest_age_seconds",
        s.times.get("oldest_heartbeat").map_or(0.0, |t| seconds(*t)),
    );

    out.family(
        "roster_events",
        "gauge",
        "Events held in the events table, by kind (the table keeps the newest ones: see roster_events_oldest_timestamp_seconds).",
    );
    for kind in EventKind::ALL {
        out.labelled(
            "roster_events",
            "kind",
            kind.as_str(),
            s.number("events", kind.as_str()),
        );
    }
    out.family(
        "roster_recoveries",
        "gauge",
        "Claims taken back by recover among the events held, by reason.",
    );
    for reason in [
        RecoverReason::AgentGone,
        RecoverReason::AgentOffline,
        RecoverReason::LeaseExpired,
    ] {
        out.labelled(
            "roster_recoveries",
            "reason",
            reason.as_str(),
            s.number("recoveries", reason.as_str()),
        );
    }
    out.family(
        "roster_events_oldest_timestamp_seconds",
        "gauge",
        "Unix time of the oldest event held (0 when the table is empty): the counts of roster_events and roster_recoveries start there.",
    );
    out.sample(
        "roster_events_oldest_timestamp_seconds",
        s.times
            .get("oldest_event")
            .map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0),
    );
    out.family(
        "roster_events_written_total",
        "counter",
        "Events ever written to the change feed (its cursor).",
    );
    out.sample("roster_events_written_total", s.number("cursor", ""));
    out.0
}

/// Serves the metrics on `address` until SIGINT or SIGTERM.
fn serve(registry: &Registry, out: &mut Printer, address: SocketAddr) -> Outcome {
    let stop = stop_flag()?;
    let listener = TcpListener::bind(address)
        .map_err(|e| Failure::io(format!("cannot listen on {address}: {e}")))?;
    let bound = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let url = format!("http://{bound}/metrics");
    if out.json {
        out.json(&serde_json::json!({ "event": "listening", "url": url, "time": roster::now() }))?;
    } else {
        out.line(format_args!(
            "serving metrics on {url} until SIGINT or SIGTERM"
        ))?;
    }
    out.flush()?;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = answer(registry, stream) {
                    warn(format_args!(
                        "roster: {} a scrape failed: {e}",
                        output::rfc3339(roster::now())
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_for_client(&stop),
            // Passing failures (a client that reset, no file descriptor
            // left): the next round tries again.
            Err(e) => {
                warn(format_args!(
                    "roster: {} accept failed: {e}",
                    output::rfc3339(roster::now())
                ));
                wait_for_client(&stop);
            }
        }
    }
    Ok(())
}

/// Sleeps a little between two looks at a listener that had no client.
fn wait_for_client(stop: &AtomicBool) {
    let until = Instant::now() + Duration::from_millis(50);
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(10));
    }
}

/// Reads one request from `stream` and answers it.
fn answer(registry: &Registry, mut stream: TcpStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body, allow) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => match render(registry) {
            Ok(text) => ("200 OK", CONTENT_TYPE, text, false),
            Err(failure) => (
                "503 Service Unavailable",
                "text/plain; charset=utf-8",
                format!("roster: {}\n", failure.message),
                false,
            ),
        },
        (_, "/metrics") => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET and HEAD\n".to_owned(),
            true,
        ),
        _ => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "roster serves its metrics on /metrics\n".to_owned(),
            false,
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if allow {
        response.push_str("Allow: GET, HEAD\r\n");
    }
    response.push_str("\r\n");
    if method != "HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

/// The request's head, up to the blank line, at most [`MAX_REQUEST`] bytes.
fn read_head(stream: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::new();
    let mut chunk = [0_u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_REQUEST {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head longer than 8 KiB",
            ));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_help("a\\b\nc \"d\""), "a\\\\b\\nc \"d\"");
    }

    #[test]
    fn numbers_are_integers_when_whole() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(1.5), "1.5");
        assert_eq!(number(63_000_000_000.25), "63000000000.25");
    }

    #[test]
    fn an_empty_registry_still_has_every_family() {
        let text = expose(&Snapshot::default(), roster::now());
        for line in [
            "roster_agents{status=\"available\"} 0",
            "roster_agents{status=\"offline\"} 0",
            "roster_events{kind=\"recovered\"} 0",
            "roster_recoveries{reason=\"lease_expired\"} 0",
            "roster_heartbeat_oldest_age_seconds 0",
            "roster_events_written_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
