//! Connections: reading the URL, TLS, the settings every connection starts
//! with, the pool, and the per-connection cache of prepared statements.
//!
//! TLS goes through `postgres-native-tls`, that is OpenSSL on Linux (the
//! platform's own TLS on macOS and Windows). It was chosen over a rustls
//! connector because it expresses libpq's `sslmode` values directly: the
//! `prefer` and `require` modes encrypt without checking the certificate
//! (`danger_accept_invalid_certs`, as libpq does), `verify-ca` checks the
//! chain but not the host name, `verify-full` checks both, and the roots are
//! the system's, kept current by the distribution's security updates. A
//! rustls connector needs a hand-written certificate verifier for
//! `require`, and a crypto provider built from C or assembly anyway.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use postgres::config::{Host, LoadBalanceHosts};
use postgres::types::ToSql;
use postgres::{Config, GenericClient, Row, Statement};
use postgres_native_tls::MakeTlsConnector;
use r2d2::{ManageConnection, Pool};
use scheduled_thread_pool::ScheduledThreadPool;

use crate::error::{DatabaseError, Error, ErrorKind, Result};
use crate::postgres::options::PostgresOptions;
use crate::postgres::schema;

/// How much a URL asks of the server's certificate, beyond what
/// `postgres::Config` itself reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verify {
    /// `disable`, `prefer`, `require`: encrypt (when TLS is used) without
    /// checking the certificate, as libpq does.
    Nothing,
    /// `verify-ca`: the chain must lead to a trusted root.
    Chain,
    /// `verify-full`: the chain, and the host name.
    ChainAndHost,
}

/// A parsed connection URL: the driver's configuration, the TLS connector it
/// asks for, and the URL as it may be shown (no password).
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) config: Config,
    pub(crate) tls: MakeTlsConnector,
    pub(crate) shown: String,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Target {
    /// Reads `url` and applies `options`: roster's settings are appended to
    /// the URL's own `options`, so they win over them.
    pub(crate) fn parse(url: &str, options: &PostgresOptions) -> Result<Self> {
        check_authority(url)?;
        let (rest, verify, root_cert) = take_tls_params(url)?;
        let mut config: Config = rest.parse().map_err(|e: postgres::Error| {
            // The driver's reasons name an option, never its value.
            let why = std::error::Error::source(&e)
                .map_or_else(|| e.to_string(), |source| format!("{e}: {source}"));
            Error::invalid("url", why)
        })?;
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err(Error::invalid(
                "url",
                "it names no host (postgres://user@host/dbname, or host=... in key=value form)",
            ));
        }
        if config.get_application_name().is_none() {
            config.application_name("roster");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        let mut startup = config.get_options().unwrap_or_default().to_owned();
        for setting in settings(options) {
            if !startup.is_empty() {
                startup.push(' ');
            }
            startup.push_str(&setting);
        }
        config.options(&startup);
        let shown = show(&config);
        let tls = connector(verify, root_cert.as_ref()).map_err(|e| Error::Open {
            path: PathBuf::from(&shown),
            source: DatabaseError::new(ErrorKind::Unusable, e),
        })?;
        Ok(Self { config, tls, shown })
    }

    /// One target per server the URL names, in the URL's order (with
    /// `load_balance_hosts=random`, turned to start from a server the clock
    /// picks), each with that server alone: so that a server that accepts
    /// the connection and never answers costs one connect timeout before
    /// the next is tried, where the driver would wait on it for good. A
    /// URL naming one server, or whose lists of hosts, addresses and
    /// ports do not line up (the driver then refuses it with its own
    /// reason), is itself the one target.
    pub(crate) fn servers(&self) -> Vec<Target> {
        let config = &self.config;
        let (hosts, addrs, ports) = (
            config.get_hosts(),
            config.get_hostaddrs(),
            config.get_ports(),
        );
        let count = hosts.len().max(addrs.len());
        let lined_up = (hosts.is_empty() || hosts.len() == count)
            && (addrs.is_empty() || addrs.len() == count)
            && (ports.len() <= 1 || ports.len() == count);
        if count <= 1 || !lined_up {
            return vec![self.clone()];
        }
        let first = match config.get_load_balance_hosts() {
            LoadBalanceHosts::Random => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |t| t.subsec_nanos() as usize % count),
            _ => 0,
        };
        (0..count)
            .map(|n| {
                let i = (first + n) % count;
                let mut one = config_without_servers(config);
                match hosts.get(i) {
                    Some(Host::Tcp(name)) => {
                        one.host(name);
                    }
                    Some(Host::Unix(path)) => {
                        one.host_path(path);
                    }
                    None => {}
                }
                if let Some(addr) = addrs.get(i) {
                    one.hostaddr(*addr);
                }
                if let Some(port) = ports.get(i).or(ports.first()) {
                    one.port(*port);
                }
                Target {
                    shown: show(&one),
                    config: one,
                    tls: self.tls.clone(),
                }
            })
            .collect()
    }
}

/// Everything `config` says but its hosts, addresses and ports (and how to
/// order them).
fn config_without_servers(config: &Config) -> Config {
    let mut one = Config::new();
    if let Some(user) = config.get_user() {
        one.user(user);
    }
    if let Some(password) = config.get_password() {
        one.password(password);
    }
    if let Some(dbname) = config.get_dbname() {
        one.dbname(dbname);
    }
    if let Some(options) = config.get_options() {
        one.options(options);
    }
    if let Some(name) = config.get_application_name() {
        one.application_name(name);
    }
    if let Some(timeout) = config.get_connect_timeout() {
        one.connect_timeout(*timeout);
    }
    if let Some(timeout) = config.get_tcp_user_timeout() {
        one.tcp_user_timeout(*timeout);
    }
    if let Some(interval) = config.get_keepalives_interval() {
        one.keepalives_interval(interval);
    }
    if let Some(retries) = config.get_keepalives_retries() {
        one.keepalives_retries(retries);
    }
    one.ssl_mode(config.get_ssl_mode())
        // For one server it orders the addresses its name resolves to.
        .load_balance_hosts(config.get_load_balance_hosts())
        .ssl_negotiation(config.get_ssl_negotiation())
        .keepalives(config.get_keepalives())
        .keepalives_idle(config.get_keepalives_idle())
        .target_session_attrs(config.get_target_session_attrs())
        .channel_binding(config.get_channel_binding());
    one
}

/// The server settings every connection of a registry starts with, as
/// startup options (no round trip): how long to wait for locks and for a
/// statement, the schema first in `search_path`, UTC.
fn settings(options: &PostgresOptions) -> Vec<String> {
    let mut settings = vec![
        format!("-c lock_timeout={}", options.busy_timeout.as_millis()),
        format!(
            "-c statement_timeout={}",
            options.statement_timeout.as_millis()
        ),
        "-c TimeZone=UTC".to_owned(),
    ];
    if let Some(schema) = &options.schema {
        // Checked to need no quoting (options::check_schema).
        settings.push(format!("-c search_path={schema}"));
    }
    settings
}

/// The URL as it may be printed: `postgres://user@host:port/dbname`, never
/// the password.
fn show(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = match host {
                postgres::config::Host::Tcp(name) => name.clone(),
                postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            match config.get_ports().get(i).or(config.get_ports().first()) {
                Some(port) => format!("{name}:{port}"),
                None => name,
            }
        })
        .collect();
    // A URL may name its servers by address only (`hostaddr=`).
    let hosts = if hosts.is_empty() {
        config
            .get_hostaddrs()
            .iter()
            .enumerate()
            .map(
                |(i, addr)| match config.get_ports().get(i).or(config.get_ports().first()) {
                    Some(port) => format!("{addr}:{port}"),
                    None => addr.to_string(),
                },
            )
            .collect()
    } else {
        hosts
    };
    let user = config
        .get_user()
        .map(|user| format!("{user}@"))
        .unwrap_or_default();
    let dbname = config.get_dbname().unwrap_or_default();
    format!("postgres://{user}{}/{dbname}", hosts.join(","))
}

/// The TLS connector for `verify`, trusting only `root_cert` when given.
fn connector(
    verify: Verify,
    root_cert: Option<&PathBuf>,
) -> Result<MakeTlsConnector, Box<dyn std::error::Error + Send + Sync>> {
    let mut builder = native_tls::TlsConnector::builder();
    match verify {
        Verify::Nothing => {
            builder
                .danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true);
        }
        Verify::Chain => {
            builder.danger_accept_invalid_hostnames(true);
        }
        Verify::ChainAndHost => {}
    }
    if let Some(path) = root_cert {
        let pem =
            std::fs::read(path).map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
        let certificate = native_tls::Certificate::from_pem(&pem)
            .map_err(|e| format!("sslrootcert {}: not a PEM certificate: {e}", path.display()))?;
        builder
            .add_root_certificate(certificate)
            .disable_built_in_roots(true);
    }
    Ok(MakeTlsConnector::new(builder.build()?))
}

/// Takes out of `url` what the driver does not read itself: `sslmode`
/// `verify-ca` and `verify-full` (replaced by `require`) and `sslrootcert`.
fn take_tls_params(url: &str) -> Result<(String, Verify, Option<PathBuf>)> {
    let mut verify = Verify::Nothing;
    let mut root_cert = None;
    let mut take = |key: &str, value: &str| -> Option<String> {
        match (key, value) {
            ("sslmode", "verify-ca") => {
                verify = Verify::Chain;
                Some("require".to_owned())
            }
            ("sslmode", "verify-full") => {
                verify = Verify::ChainAndHost;
                Some("require".to_owned())
            }
            ("sslrootcert", path) => {
                root_cert = Some(PathBuf::from(path));
                None
            }
            (_, value) => Some(value.to_owned()),
        }
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|pair| !pair.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    let decoded = percent_decode(value).map_err(|why| {
                        // Never the value: it may be a password.
                        Error::invalid("url", format!("the value of {key:?} {why}"))
                    })?;
                    if key == "sslmode" || key == "sslrootcert" {
                        if let Some(value) = take(key, &decoded) {
                            kept.push(format!("{key}={value}"));
                        }
                    } else {
                        kept.push(pair.to_owned());
                    }
                }
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for (key, value) in key_values(url)? {
            if let Some(value) = take(&key, &value) {
                kept.push(format!(
                    "{key}='{}'",
                    value.replace('\\', "\\\\").replace('\'', "\\'")
                ));
            }
        }
        kept.join(" ")
    };
    if root_cert.is_some() && verify == Verify::Nothing {
        // libpq checks the chain whenever it has a root certificate.
        verify = Verify::Chain;
    }
    Ok((rest, verify, root_cert))
}

/// `%XX` escapes of a URL's query value, decoded; the error says what is
/// wrong without quoting the text.
fn percent_decode(text: &str) -> std::result::Result<String, &'static str> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or("holds a `%` that is not followed by two hex digits (write `%` as %25)")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "is not UTF-8 once its %-escapes are decoded")
}

/// Refuses a URL whose user name, password or parameters hold an `@`, or
/// whose user name or password hold a `/` or `?`, unescaped: the driver
/// takes everything up to the first `@` for the user and password, so the
/// rest of such a password would be read as the host or the database and
/// shown in messages. libpq reads them differently again.
fn check_authority(url: &str) -> Result<()> {
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return Ok(());
    };
    let Some(at) = rest.find('@') else {
        return Ok(());
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let query = rest.find('?').unwrap_or(rest.len());
    if at > authority_end || rest[at + 1..query].contains('@') {
        return Err(Error::invalid(
            "url",
            "an `@`, `/` or `?` in the user name or the password, or an `@` in a parameter, must be percent-encoded (%40, %2F, %3F): as written, part of it would be read as the host or the database",
        ));
    }
    Ok(())
}

/// The pairs of a libpq `key=value` string: values may be quoted with `'`,
/// and `\` escapes the next character.
fn key_values(text: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|&c| c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(Error::invalid(
                "url",
                format!("{key:?} has no value (key=value pairs, or a postgres:// URL)"),
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => {
                        return Err(Error::invalid(
                            "url",
                            format!("the value of {key:?} has no closing quote"),
                        ));
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// A connection of the pool and the statements prepared on it, by their
/// text. Every statement roster runs is a constant, so the cache is small
/// and each statement is parsed and planned once per connection.
pub(crate) struct Conn {
    pub(crate) client: postgres::Client,
    statements: HashMap<&'static str, Statement>,
}

impl Conn {
    pub(crate) fn new(client: postgres::Client) -> Self {
        Self {
            client,
            statements: HashMap::new(),
        }
    }

    /// Forgets the prepared statements (after the schema changed under
    /// them).
    pub(crate) fn forget_statements(&mut self) {
        self.statements.clear();
    }

    /// A transaction on this connection whose statements use the cache.
    pub(crate) fn transaction(&mut self) -> Result<Tx<'_>, postgres::Error> {
        Ok(Tx {
            tx: self.client.transaction()?,
            statements: &mut self.statements,
        })
    }
}

/// A transaction of a [`Conn`]: committed by [`Tx::commit`], rolled back
/// when dropped.
pub(crate) struct Tx<'a> {
    tx: postgres::Transaction<'a>,
    statements: &'a mut HashMap<&'static str, Statement>,
}

impl Tx<'_> {
    pub(crate) fn commit(self) -> Result<(), postgres::Error> {
        self.tx.commit()
    }
}

fn prepared(
    client: &mut impl GenericClient,
    statements: &mut HashMap<&'static str, Statement>,
    sql: &'static str,
) -> Result<Statement, postgres::Error> {
    if let Some(statement) = statements.get(sql) {
        return Ok(statement.clone());
    }
    let statement = client.prepare(sql)?;
    statements.insert(sql, statement.clone());
    Ok(statement)
}

/// Running cached statements, the same on a connection and in a
/// transaction.
pub(crate) trait Session {
    /// Runs `sql` and returns every row.
    fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error>;

    /// Runs `sql` and returns the number of rows it changed.
    fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error>;

    /// Runs `sql` and returns its first row, if any.
    fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}

impl Session for Conn {
    fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let statement = prepared(&mut self.client, &mut self.statements, sql)?;
        self.client.query(&statement, params)
    }

    fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let statement = prepared(&mut self.client, &mut self.statements, sql)?;
        self.client.execute(&statement, params)
    }
}

impl Session for Tx<'_> {
    fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let statement = prepared(&mut self.tx, self.statements, sql)?;
        self.tx.query(&statement, params)
    }

    fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let statement = prepared(&mut self.tx, self.statements, sql)?;
        self.tx.execute(&statement, params)
    }
}

/// r2d2's manager of the pool's connections, each wrapped in a [`Conn`] and
/// opened as roster opens its own ([`schema::open_within`]): on a thread of
/// its own, given up at the connect timeout. r2d2 opens
/// connections on its pool's housekeeping thread; a server that accepts
/// and never answers would otherwise hold that thread until its socket
/// ends, and the pool would not even try again.
pub(crate) struct Manager {
    target: Target,
    limit: Duration,
    create: bool,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl ManageConnection for Manager {
    type Connection = Conn;
    type Error = ConnectFailed;

    fn connect(&self) -> Result<Conn, ConnectFailed> {
        schema::open_within(&self.target, self.limit, self.create)
            .map(Conn::new)
            .map_err(ConnectFailed)
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), ConnectFailed> {
        conn.client
            .simple_query("")
            .map(|_| ())
            .map_err(|e| ConnectFailed(schema::connect_error(&self.target, self.create, e)))
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.client.is_closed()
    }
}

/// Why the pool could not open a connection: what r2d2 adds, after its own
/// words, to the error of a checkout that found none.
#[derive(Debug)]
pub(crate) struct ConnectFailed(Error);

impl fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The checkout's error already says "database error".
        match &self.0 {
            Error::Database(e) => fmt::Display::fmt(e, f),
            other => fmt::Display::fmt(other, f),
        }
    }
}

impl std::error::Error for ConnectFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// The pool of a handle. It opens one connection now; the others as calls
/// need them.
pub(crate) fn pool(target: &Target, options: &PostgresOptions) -> Result<Pool<Manager>> {
    let limit = schema::connect_limit(target, options);
    // A connection may try every server in turn, each for the connect
    // timeout: the first one (and a checkout waiting for a new one) waits
    // that long when the first servers are silent, not just the busy
    // timeout.
    let servers = u32::try_from(target.servers().len()).unwrap_or(u32::MAX);
    let connection_timeout = if servers > 1 {
        options.busy_timeout.max(limit.saturating_mul(servers))
    } else {
        options.busy_timeout
    };
    let manager = Manager {
        target: target.clone(),
        limit,
        create: options.create,
    };
    Pool::builder()
        .max_size(options.pool_size)
        .min_idle(Some(1))
        // A checkout must not cost a round trip: a connection the server
        // closed shows up as a storage error of the call that uses it, and
        // r2d2 then drops it.
        .test_on_check_out(false)
        .idle_timeout(None)
        .max_lifetime(None)
        .connection_timeout(connection_timeout.max(Duration::from_millis(100)))
        // A thread of its own for r2d2's housekeeping (opening connections):
        // shared with other registries, one whose server went silent would
        // hold theirs back, each of its tries taking up to the connect
        // timeout.
        .thread_pool(Arc::new(
            ScheduledThreadPool::builder()
                .num_threads(1)
                .thread_name_pattern("roster-pg-pool-{}")
                .build(),
        ))
        .build(manager)
        .map_err(|e| {
            Error::Database(DatabaseError::new(
                ErrorKind::Storage,
                format!("cannot open connections to {}: {e}", target.shown),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_and_root_certificates_are_taken_out_of_urls() -> Result<()> {
        let (rest, verify, root) = take_tls_params(
            "postgres://u:p@h/db?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem&application_name=x",
        )?;
        assert_eq!(
            rest,
            "postgres://u:p@h/db?sslmode=require&application_name=x"
        );
        assert_eq!(verify, Verify::ChainAndHost);
        assert_eq!(root, Some(PathBuf::from("/tmp/ca.pem")));

        let (rest, verify, root) = take_tls_params("postgres://h/db?sslmode=require")?;
        assert_eq!(rest, "postgres://h/db?sslmode=require");
        assert_eq!((verify, root), (Verify::Nothing, None));

        let (rest, verify, _) =
            take_tls_params("host=h  dbname='my db' sslmode=verify-ca password='a\\'b'")?;
        assert_eq!(
            rest,
            "host='h' dbname='my db' sslmode='require' password='a\\'b'"
        );
        assert_eq!(verify, Verify::Chain);

        let (_, verify, root) = take_tls_params("host=h sslrootcert=/ca.pem")?;
        assert_eq!(
            (verify, root),
            (Verify::Chain, Some(PathBuf::from("/ca.pem")))
        );
        Ok(())
    }

    #[test]
    fn bad_urls_are_invalid_input() {
        for bad in [
            "host=h dbname='unclosed",
            "host=h lonely",
            "postgres://h/db?sslrootcert=%zz",
        ] {
            match take_tls_params(bad) {
                Err(Error::Invalid { field: "url", .. }) => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn shown_urls_never_hold_the_password() -> Result<()> {
        let target = Target::parse(
            "postgres://roster:secret@db.example:6543/agents?sslmode=disable",
            &PostgresOptions::new(),
        )?;
        assert_eq!(target.shown, "postgres://roster@db.example:6543/agents");
        assert!(!format!("{target:?}").contains("secret"));
        let options = target.config.get_options().unwrap_or_default();
        assert!(options.contains("-c lock_timeout=5000"), "{options}");
        Ok(())
    }

    #[test]
    fn a_pool_connect_failure_reads_without_a_second_database_error() {
        let failed = ConnectFailed(Error::Database(DatabaseError::new(
            ErrorKind::Storage,
            "cannot connect to postgres://a@h/x: no answer",
        )));
        assert_eq!(
            failed.to_string(),
            "cannot connect to postgres://a@h/x: no answer"
        );
        let other = ConnectFailed(Error::NoRegistry {
            path: PathBuf::from("postgres://a@h/x"),
        });
        assert_eq!(
            other.to_string(),
            Error::NoRegistry {
                path: PathBuf::from("postgres://a@h/x"),
            }
            .to_string()
        );
    }

    #[test]
    fn servers_named_by_address_only_are_shown_by_address() -> Result<()> {
        let target = Target::parse(
            "hostaddr=127.0.0.1 port=5433 user=roster password=secret dbname=db",
            &PostgresOptions::new(),
        )?;
        assert_eq!(target.shown, "postgres://roster@127.0.0.1:5433/db");
        Ok(())
    }
}
