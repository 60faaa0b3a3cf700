//! roster side by side with the limit and with what users would pick instead.
//!
//! `cargo bench --bench compare` prints one table: each row times roster and
//! a baseline in the same run, alternating them, and reports the median time
//! of each over the repetitions, the median of the per-repetition ratios and
//! their spread (smallest and largest). Pass `quick` after `--` for a smaller
//! run (`cargo bench --bench compare -- quick`), or row names to run only
//! those rows (`-- heartbeat claim`): heartbeat, layers, claim, reap, list,
//! redis, command, memory, processes, durability, postgres, feed, triggers, top.
//!
//! This file only reads the arguments and runs the rows. The shared setup
//! (generated fleets and tasks, paired timing, medians, the table, temporary
//! files, child processes) is in `common/`; each row group is one file of
//! `figures/`.
//!
//! Figures are per operation. Absolute times depend on the machine; the
//! ratios are the point.

mod common;
mod figures;

use std::env;
use std::process::ExitCode;

use common::Bench;
use figures::{
    claim, command, durability, feed, heartbeat, layers, list, memory, postgres, processes, reap,
    redis, top,
};

/// Repetitions of each pair in a full run and in a quick one.
const REPS: usize = 7;
const QUICK_REPS: usize = 5;

/// A row group: measures its rows and pushes them onto the run.
type Figure = fn(&mut Bench);

/// The row groups, by the name that selects them, in table order.
const ROWS: [(&str, Figure); 14] = [
    ("heartbeat", heartbeat::run),
    ("layers", layers::run),
    ("claim", claim::run),
    ("reap", reap::run),
    ("list", list::run),
    ("redis", redis::run),
    ("command", command::run),
    ("memory", memory::run),
    ("processes", processes::run),
    ("durability", durability::run),
    ("postgres", postgres::run),
    ("feed", feed::run),
    ("triggers", feed::triggers),
    ("top", top::run),
];

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).filter(|a| a != "--bench").collect();
    match args.first().map(String::as_str) {
        Some(processes::WORKER) => {
            processes::worker(&args[1..]);
            return ExitCode::SUCCESS;
        }
        Some(memory::WORKER) => {
            memory::worker(&args[1..]);
            return ExitCode::SUCCESS;
        }
        Some(postgres::WORKER) => {
            postgres::worker(&args[1..]);
            return ExitCode::SUCCESS;
        }
        Some(feed::WORKER) => {
            feed::worker(&args[1..]);
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let quick = args.iter().any(|a| a == "quick");
    let only: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "quick")
        .collect();
    if let Some(unknown) = only
        .iter()
        .find(|a| !ROWS.iter().any(|(name, _)| name == *a))
    {
        let names: Vec<&str> = ROWS.iter().map(|(name, _)| *name).collect();
        eprintln!(
            "unknown row {unknown:?}: expected quick or row names among {}",
            names.join(", ")
        );
        return ExitCode::from(2);
    }
    let mut bench = if quick {
        Bench::new(QUICK_REPS, vec![10_000], true)
    } else {
        Bench::new(REPS, vec![10_000, 100_000], false)
    };
    eprintln!(
        "roster benchmark: {} repetitions, sizes {:?}",
        bench.reps,
        bench.sizes()
    );
    for (name, run) in ROWS {
        if only.is_empty() || only.contains(&name) {
            run(&mut bench);
        }
    }
    bench.print();
    ExitCode::SUCCESS
}
