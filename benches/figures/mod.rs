//! One file per group of rows of the table in BENCHMARKS.md. Each has a
//! `run` that measures its rows and pushes them onto the [`Bench`]; the
//! files whose figure needs child processes also have the `worker` those
//! children run.
//!
//! [`Bench`]: crate::common::Bench

pub mod claim;
pub mod command;
pub mod durability;
pub mod feed;
pub mod heartbeat;
pub mod layers;
pub mod list;
pub mod memory;
pub mod postgres;
pub mod processes;
pub mod reap;
pub mod redis;
pub mod top;
