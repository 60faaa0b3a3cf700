//! roster: a persistent registry of agents (workers) for orchestrators that
//! run on one host.
//!
//! Agents register with an id, a name, capabilities, a status, a last
//! heartbeat and a current and maximum load. They heartbeat; a reaper marks
//! those that went quiet as offline. [`SqliteRegistry`] keeps that state in one
//! SQLite file that survives restarts, is shared by every process on the
//! host, and can be queried with plain SQL; [`MemoryRegistry`] keeps it in the
//! memory of one process. Both implement [`AgentRegistry`].
//!
//! ```
//! use std::time::Duration;
//! use roster::{AgentInfo, AgentRegistry, MemoryRegistry};
//!
//! let registry = MemoryRegistry::new();
//! registry.register(AgentInfo {
//!     id: "worker-1".into(),
//!     name: "Worker one".into(),
//!     capabilities: vec!["rust".into(), "gpu".into()],
//!     max_load: 4,
//!     ..AgentInfo::default()
//! })?;
//! registry.heartbeat("worker-1")?;
//! assert!(registry.reap(Duration::from_secs(30))?.is_empty());
//! # Ok::<(), roster::Error>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod agent;
mod claim;
mod error;
mod event;
mod json;
mod memory;
mod open;
#[cfg(feature = "postgres")]
mod postgres;
mod registry;
mod route;
mod sqlite;
mod task;
#[cfg(feature = "testing")]
pub mod testing;
mod text;

pub use agent::{
    AgentInfo, AgentStatus, MAX_CAPABILITIES, MAX_CAPABILITY_CHARS, MAX_HOST_CHARS, MAX_ID_CHARS,
    MAX_METADATA, MAX_METADATA_KEY_CHARS, MAX_METADATA_VALUE_CHARS, MAX_NAME_CHARS,
};
pub use claim::{Claim, Claimed, RecoverReason, Recovered};
pub use error::{DatabaseError, Error, ErrorKind, Result};
pub use event::{
    DEFAULT_EVENTS_KEEP, DEFAULT_EVENTS_KEEP_SECONDS, Event, EventKind, MAX_EVENTS_PAGE,
};
pub use json::{ZERO_TIME, to_json, to_json_writer};
pub use memory::MemoryRegistry;
pub use open::{Registry, RegistryOptions, open};
#[cfg(feature = "postgres")]
pub use postgres::{Copied, MAX_PG_POOL_SIZE, MAX_PG_TIMEOUT, PostgresOptions, PostgresRegistry};
pub use registry::{AgentRegistry, now};
pub use route::{DefaultRouter, TaskRouter};
pub use sqlite::{
    DEFAULT_SQL_TIMEOUT, Durability, MAX_BUSY_TIMEOUT, MAX_POOL_SIZE, SqlAccess, SqlOptions,
    SqlRows, SqlSummary, SqlValue, SqliteOptions, SqliteRegistry,
};
pub use task::{Priority, Task};

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
