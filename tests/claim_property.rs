//! One policy (`roster::testing::claims`): for random registries and random
//! tasks, `claim` picks the agent that `DefaultRouter` picks over `list()`, or
//! both find none, on each implementation, and on each of claim's two paths:
//! the indexed SQL that evaluates `DefaultRouter` in the database, and the
//! generic path that reads the eligible agents and asks a router (here
//! `DefaultRouter` itself, given explicitly).

use roster::testing::FreshRegistry;
use roster::{DefaultRouter, MemoryRegistry, SqliteOptions};

/// A temporary SQLite registry whose claim takes the generic router path.
fn sqlite_with_explicit_router() -> Result<FreshRegistry, roster::testing::BoxError> {
    let dir = tempfile::tempdir()?;
    let registry = SqliteOptions::new()
        .router(DefaultRouter::new())
        .open(dir.path().join("roster.db"))?;
    Ok(FreshRegistry::with_guard(registry, dir))
}

roster::roster_conformance!(claims: memory_registry, MemoryRegistry::new());
roster::roster_conformance!(claims: sqlite_registry, roster::testing::temporary_sqlite()?);
roster::roster_conformance!(claims: sqlite_generic_path, sqlite_with_explicit_router()?);
roster::roster_conformance!(
    claims: memory_generic_path,
    MemoryRegistry::with_router(DefaultRouter::new())
);
