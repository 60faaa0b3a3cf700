//! BENCHMARKS.md row "heartbeat, N agents" against a Redis `HSET` over
//! loopback with `appendfsync everysec`, at the smallest fleet size (row
//! name `redis`). Needs `redis-server` on the PATH; the figure starts and
//! stops its own server on a free loopback port.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use roster::{AgentRegistry, SqliteRegistry};

use crate::common::{Bench, KillOnDrop, agent_ids, find_program, fleet, now_text, side_by_side};

/// The roster call this file measures.
fn beat(registry: &SqliteRegistry, id: &str) {
    registry.heartbeat(id).expect("heartbeat");
}

/// Measures the row, or notes why it could not.
pub fn run(bench: &mut Bench) {
    let n = bench.smallest();
    let Some(server) = find_program("redis-server") else {
        bench.note(
            "heartbeat against Redis: not measured, redis-server is not installed \
             (apt-get install -y redis-server)"
                .to_owned(),
        );
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let data = bench.dir().join("redis");
    std::fs::create_dir_all(&data).expect("redis dir");
    let child = Command::new(server)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(&data)
        .stdout(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let _server = KillOnDrop(child);
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("client");
    // Ready when it accepts a connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = loop {
        match client.get_connection() {
            Ok(conn) => break conn,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("redis-server did not start: {e}"),
        }
    };
    let agents = fleet(n, 71);
    let (_, registry) = bench.roster_file(&format!("redis-{n}.db"), &agents);
    let ids = agent_ids(n);
    for id in &ids {
        let () = redis::cmd("HSET")
            .arg(format!("agent:{id}"))
            .arg("status")
            .arg("available")
            .arg("last_heartbeat")
            .arg(now_text())
            .query(&mut conn)
            .expect("HSET");
    }
    let pick = |i: usize| ids[(i * 7919) % n].as_str();
    let times = side_by_side(
        bench.reps,
        2000,
        |i| beat(&registry, pick(i)),
        |i| {
            let () = redis::cmd("HSET")
                .arg(format!("agent:{}", pick(i)))
                .arg("last_heartbeat")
                .arg(now_text())
                .query(&mut conn)
                .expect("HSET");
        },
    );
    bench.push(
        format!("heartbeat, {n} agents"),
        "Redis HSET over loopback, appendfsync everysec",
        times,
        "roster / baseline <= 0.33 (3x Redis)",
    );
}
