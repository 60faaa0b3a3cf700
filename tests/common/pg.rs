//! A real PostgreSQL server for the tests: the one `ROSTER_PG_URL` names, or
//! a throwaway cluster this test process makes with `initdb` and `pg_ctl` in
//! a temporary directory, on a free loopback port.
//!
//! The cluster is run by a small shell script, as the `postgres` user when
//! the tests run as root (the server refuses to run as root). The script
//! prints one line when the server accepts connections, then waits for its
//! standard input to close: when this process ends, however it ends, the
//! pipe closes and the script stops the server and removes the directory.
//!
//! Every registry a test asks for lives in a schema of its own, dropped
//! when the registry is. Nothing is skipped: without a server, and without
//! the PostgreSQL binaries to start one, the tests fail and say why.

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use roster::testing::{BoxError, FreshRegistry};
use roster::{PostgresOptions, PostgresRegistry};

/// The environment variable that points the tests at a server of your own,
/// as a libpq URL (`postgres://user@host:port/dbname`).
pub const URL_VARIABLE: &str = "ROSTER_PG_URL";

/// The script that runs a cluster. `$PG_BIN`, `$PORT` and `$SSL` come from
/// the environment.
const SCRIPT: &str = r#"
set -eu
dir=$(mktemp -d "${TMPDIR:-/tmp}/roster-pg.XXXXXX")
stop() {
    "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap stop EXIT
if ! "$PG_BIN/initdb" -D "$dir/data" -U roster -A trust -E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log" >&2
    exit 1
fi
settings="-p $PORT -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
if [ "$SSL" = on ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$dir/server.key" -out "$dir/server.crt" >"$dir/openssl.log" 2>&1 \
        || { cat "$dir/openssl.log" >&2; exit 1; }
    chmod 600 "$dir/server.key"
    settings="$settings -c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key"
fi
if ! "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 120 -o "$settings" start >/dev/null 2>&1; then
    cat "$dir/server.log" >&2
    exit 1
fi
echo "ready $dir"
# Until the test process closes the pipe, by exiting or by dropping it.
cat >/dev/null || true
"#;

/// A throwaway cluster; stopped and removed when dropped, or when this
/// process ends.
pub struct Cluster {
    url: String,
    dir: PathBuf,
    stdin: Option<ChildStdin>,
    child: Child,
}

impl Cluster {
    /// Starts a cluster on a free loopback port, with TLS (a self-signed
    /// certificate for `localhost` and 127.0.0.1) when `ssl` is true.
    ///
    /// # Panics
    ///
    /// When no cluster can be started, with what the server said.
    pub fn start(ssl: bool) -> Self {
        let mut last = String::new();
        // A port found free can be taken by another process before the
        // server binds it: try a few.
        for _ in 0..5 {
            match Self::try_start(ssl) {
                Ok(cluster) => return cluster,
                Err(why) => last = why,
            }
        }
        panic!(
            "cannot start a PostgreSQL cluster for the tests: {last}\n\
             Install PostgreSQL (apt-get install -y postgresql), or point {URL_VARIABLE} at a server"
        );
    }

    fn try_start(ssl: bool) -> Result<Self, String> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let mut command = Command::new("sh");
        command
            .args(["-c", SCRIPT])
            .env("PG_BIN", bin_dir()?)
            .env("PORT", port.to_string())
            .env("SSL", if ssl { "on" } else { "off" })
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if is_root() {
            let (uid, gid) = postgres_user()?;
            command.uid(uid).gid(gid).env("HOME", "/tmp");
        }
        let mut child = command.spawn().map_err(|e| format!("cannot run sh: {e}"))?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .map_err(|e| format!("reading the script: {e}"))?;
        let Some(dir) = line.trim().strip_prefix("ready ") else {
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = err.read_to_string(&mut stderr);
            }
            let _ = child.wait();
            return Err(format!("the cluster did not start: {stderr}"));
        };
        Ok(Self {
            url: format!("postgres://roster@127.0.0.1:{port}/postgres"),
            dir: PathBuf::from(dir),
            stdin,
            child,
        })
    }

    /// The URL of the cluster's `postgres` database, as the superuser
    /// `roster`, without `sslmode`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cluster's directory: the server's certificate is `server.crt`.
    pub fn dir(&self) -> &PathBuf {
        &self.dir
    }

    /// Stops the server the way an operator does (`pg_ctl restart -m
    /// fast`: every connection is ended) and starts it again with the same
    /// settings; returns once it accepts connections.
    ///
    /// # Panics
    ///
    /// When pg_ctl fails, with what it said.
    pub fn restart(&self) {
        let mut command = Command::new(bin_dir().expect("pg_ctl").join("pg_ctl"));
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-m", "fast", "-w", "-t", "120", "restart"])
            .current_dir("/")
            .stdin(Stdio::null());
        if is_root() {
            let (uid, gid) = postgres_user().expect("the postgres user");
            command.uid(uid).gid(gid).env("HOME", "/tmp");
        }
        let out = command.output().expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl restart: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Closing the pipe tells the script to stop the server.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The uid and gid of the `postgres` user, from /etc/passwd.
fn postgres_user() -> Result<(u32, u32), String> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&"postgres"))
        .and_then(|fields| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
        .ok_or_else(|| {
            "running as root, and there is no postgres user to run the server as".to_owned()
        })
}

/// Where `initdb` and `pg_ctl` are: `$ROSTER_PG_BIN`, the newest
/// /usr/lib/postgresql/N/bin (Debian), or the directory on PATH.
fn bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("ROSTER_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
        .ok_or_else(|| "no initdb found in /usr/lib/postgresql/*/bin or on PATH".to_owned())
}

/// The server every test of this process shares.
enum Server {
    Given(String),
    Started(Cluster),
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var(URL_VARIABLE) {
        Ok(url) if !url.is_empty() => Server::Given(url),
        _ => Server::Started(Cluster::start(false)),
    })
}

/// The URL of the shared server's database.
pub fn url() -> &'static str {
    match server() {
        Server::Given(url) => url,
        Server::Started(cluster) => cluster.url(),
    }
}

/// A new schema name no other test of any process uses.
pub fn schema_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "roster_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A plain client of the shared server, for SQL a test types itself.
pub fn client() -> postgres::Client {
    postgres::Client::connect(url(), postgres::NoTls)
        .unwrap_or_else(|e| panic!("connect to {url}: {e}", url = url()))
}

/// Drops its schema, and everything in it, when dropped.
pub struct SchemaGuard(pub String);

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(url(), postgres::NoTls) {
            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0));
        }
    }
}

/// A registry of its own on the shared server, with `options`, and the
/// guard that drops its schema afterwards.
pub fn registry_with(options: PostgresOptions) -> (PostgresRegistry, SchemaGuard) {
    let schema = schema_name();
    let guard = SchemaGuard(schema.clone());
    let registry = options
        .schema(schema.as_str())
        .open(url())
        .unwrap_or_else(|e| panic!("open a registry in schema {schema}: {e}"));
    (registry, guard)
}

/// A registry of its own on the shared server, and the guard that drops its
/// schema afterwards.
pub fn registry() -> (PostgresRegistry, SchemaGuard) {
    registry_with(PostgresOptions::new())
}

/// The factory of the contract: a fresh registry in a schema of its own.
pub fn fresh() -> Result<FreshRegistry, BoxError> {
    fresh_with(PostgresOptions::new())
}

/// A fresh registry with `options`, in a schema of its own.
pub fn fresh_with(options: PostgresOptions) -> Result<FreshRegistry, BoxError> {
    let schema = schema_name();
    let guard = SchemaGuard(schema.clone());
    let registry = options.schema(schema.as_str()).open(url())?;
    Ok(FreshRegistry::with_guard(registry, guard))
}
