//! TLS to PostgreSQL, against clusters these tests start themselves: one
//! with `ssl=on` and a self-signed certificate made with `openssl` for
//! `localhost` and 127.0.0.1, and one without TLS.
//!
//! Whether a connection is encrypted is read from the server's side, in
//! `pg_stat_ssl`, for the backends whose `application_name` the test chose.

mod common;

use std::sync::OnceLock;

use common::pg::Cluster;
use roster::{AgentInfo, AgentRegistry, Error, ErrorKind, PostgresOptions, PostgresRegistry};

fn tls_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start(true))
}

/// Whether the backends of `application` use TLS, as the server sees them:
/// one answer per backend.
fn encrypted(cluster: &Cluster, application: &str) -> Vec<bool> {
    let url = format!("{}?sslmode=disable", cluster.url());
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    client
        .query(
            "SELECT s.ssl FROM pg_stat_ssl AS s JOIN pg_stat_activity AS a USING (pid) \
             WHERE a.application_name = $1",
            &[&application],
        )
        .expect("pg_stat_ssl")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn works(registry: &PostgresRegistry) -> roster::Result<()> {
    registry.register(AgentInfo {
        id: "over-tls".into(),
        ..AgentInfo::default()
    })?;
    registry.heartbeat("over-tls")?;
    assert_eq!(registry.get("over-tls")?.id, "over-tls");
    Ok(())
}

#[test]
fn sslmode_require_encrypts_without_checking_the_certificate() -> roster::Result<()> {
    let cluster = tls_cluster();
    let registry = PostgresOptions::new()
        .schema("require_mode")
        .open(&format!(
            "{}?sslmode=require&application_name=tls-require",
            cluster.url()
        ))?;
    works(&registry)?;
    let seen = encrypted(cluster, "tls-require");
    assert!(!seen.is_empty() && seen.iter().all(|&ssl| ssl), "{seen:?}");
    Ok(())
}

#[test]
fn sslmode_disable_does_not_encrypt() -> roster::Result<()> {
    let cluster = tls_cluster();
    let registry = PostgresOptions::new()
        .schema("disable_mode")
        .open(&format!(
            "{}?sslmode=disable&application_name=tls-disable",
            cluster.url()
        ))?;
    works(&registry)?;
    let seen = encrypted(cluster, "tls-disable");
    assert!(!seen.is_empty() && seen.iter().all(|&ssl| !ssl), "{seen:?}");
    Ok(())
}

#[test]
fn verify_full_checks_the_chain_and_the_host_name() -> roster::Result<()> {
    let cluster = tls_cluster();
    let root = cluster.dir().join("server.crt");
    let port = cluster
        .url()
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split('/').next())
        .expect("port");
    // The certificate names localhost: trusted as the root, it verifies.
    let registry = PostgresOptions::new().schema("verify_full").open(&format!(
        "postgres://roster@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}&application_name=tls-verify",
        root.display()
    ))?;
    works(&registry)?;
    let seen = encrypted(cluster, "tls-verify");
    assert!(!seen.is_empty() && seen.iter().all(|&ssl| ssl), "{seen:?}");
    // Against the system's roots, a self-signed certificate is refused.
    match PostgresRegistry::open(&format!(
        "postgres://roster@localhost:{port}/postgres?sslmode=verify-full"
    )) {
        Err(e @ Error::Open { .. }) => {
            assert_eq!(e.kind(), ErrorKind::Unusable);
            assert!(e.to_string().contains("TLS"), "{e}");
        }
        other => panic!("expected Open, got {other:?}"),
    }
    Ok(())
}

#[test]
fn sslmode_require_against_a_server_without_tls_is_refused() {
    let plain = Cluster::start(false);
    match PostgresRegistry::open(&format!("{}?sslmode=require", plain.url())) {
        Err(e @ Error::Open { .. }) => {
            assert_eq!(e.kind(), ErrorKind::Unusable);
            assert!(e.to_string().contains("TLS"), "{e}");
        }
        other => panic!("expected Open, got {other:?}"),
    }
    // prefer, the default, falls back to a plain connection.
    let registry = PostgresRegistry::open(plain.url()).expect("sslmode=prefer");
    assert!(registry.list().expect("list").is_empty());
}
