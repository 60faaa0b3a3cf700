//! What every figure shares: the generated fleet and tasks, paired timing,
//! medians and spreads, the table, temporary files and child processes.
//!
//! A figure file builds its data with [`fleet`] and [`tasks`], times roster
//! and its baseline with [`side_by_side`] (or [`interleaved`] when it times
//! more than two things), and hands the times to [`Bench::push`], which keeps
//! one row of the table.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use chrono::Utc;
use roster::{AgentInfo, AgentRegistry, AgentStatus, Priority, SqliteRegistry, Task};

/// Capabilities are drawn from this many words.
pub const VOCABULARY: usize = 20;
/// Each agent holds this many distinct capabilities.
pub const CAPABILITIES: usize = 5;

/// roster's checkpoint interval, `PRAGMA wal_autocheckpoint` on each of its
/// connections (`WAL_CHECKPOINT_PAGES` in `src/sqlite/conn.rs`), for the
/// baselines that are given roster's settings.
pub const CHECKPOINT_PAGES: i64 = 4000;

/// A small deterministic generator, so that every run measures the same data.
pub struct Rng(pub u64);

impl Rng {
    /// The next value of the xorshift sequence.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The `i`th capability word: `cap00`, `cap01`, ...
pub fn word(i: usize) -> String {
    format!("cap{i:02}")
}

/// The id of the `i`th agent of a fleet: `agent-000000`, ...
pub fn agent_id(i: usize) -> String {
    format!("agent-{i:06}")
}

/// The ids of a fleet of `n` agents, in order.
pub fn agent_ids(n: usize) -> Vec<String> {
    (0..n).map(agent_id).collect()
}

/// `n` agents: 5 capabilities each out of 20, loads spread over 0..=max,
/// max loads 1 to 8 with one in ten unlimited, 5 % busy, 5 % offline.
pub fn fleet(n: usize, seed: u64) -> Vec<AgentInfo> {
    let mut rng = Rng(seed);
    let now = Utc::now();
    (0..n)
        .map(|i| {
            let mut capabilities = Vec::with_capacity(CAPABILITIES);
            while capabilities.len() < CAPABILITIES {
                let cap = word(rng.below(VOCABULARY as u64) as usize);
                if !capabilities.contains(&cap) {
                    capabilities.push(cap);
                }
            }
            let max_load = if rng.below(10) == 0 {
                0
            } else {
                1 + rng.below(8) as u32
            };
            let current_load = rng.below(u64::from(max_load.max(4)) + 1) as u32;
            let current_load = if max_load == 0 {
                current_load
            } else {
                current_load.min(max_load)
            };
            let status = match rng.below(20) {
                0 => AgentStatus::Busy,
                1 => AgentStatus::Offline,
                _ => AgentStatus::Available,
            };
            AgentInfo {
                id: agent_id(i),
                name: format!("agent number {i}"),
                capabilities,
                status,
                last_heartbeat: now,
                current_load,
                max_load,
                ..AgentInfo::default()
            }
        })
        .collect()
}

/// `count` tasks: 1 or 2 labels out of the same 20 words, every priority.
pub fn tasks(count: usize, seed: u64) -> Vec<Task> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|i| {
            let first = rng.below(VOCABULARY as u64) as usize;
            let mut labels = vec![word(first)];
            if rng.below(2) == 0 {
                labels.push(word(
                    (first + 1 + rng.below(VOCABULARY as u64 - 1) as usize) % VOCABULARY,
                ));
            }
            Task {
                id: format!("task-{i}"),
                labels,
                priority: Priority::ALL[rng.below(4) as usize],
            }
        })
        .collect()
}

/// Now, in roster's timestamp format, for the baselines that write one.
pub fn now_text() -> String {
    Utc::now().format("%Y-%m-%d %H:%M:%S%.9f").to_string()
}

/// Times `batch` runs of `op`, returning the time per run.
pub fn per_op(batch: usize, mut op: impl FnMut(usize)) -> Duration {
    let start = Instant::now();
    for i in 0..batch {
        op(i);
    }
    start.elapsed() / batch as u32
}

/// Runs every measure once per repetition, `reps` times, rotating which one
/// goes first so that none always runs on a warmer or cooler machine, and
/// returns the times of each measure in repetition order.
pub fn interleaved<const N: usize>(
    reps: usize,
    measures: [&mut dyn FnMut() -> Duration; N],
) -> [Vec<Duration>; N] {
    let mut times: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::with_capacity(reps));
    for rep in 0..reps {
        for k in 0..N {
            let m = (rep + k) % N;
            times[m].push(measures[m]());
        }
    }
    times
}

/// The times of roster and of its baseline, one of each per repetition,
/// taken in the same run.
pub struct Times {
    roster: Vec<Duration>,
    baseline: Vec<Duration>,
}

impl Times {
    /// Pairs repetition `i` of roster with repetition `i` of the baseline.
    pub fn new(roster: Vec<Duration>, baseline: Vec<Duration>) -> Times {
        assert_eq!(roster.len(), baseline.len(), "unpaired repetitions");
        assert!(!roster.is_empty(), "no repetition");
        Times { roster, baseline }
    }
}

/// How many slices each repetition of [`side_by_side`] cuts its batch into.
const SLICES: usize = 20;

/// Times `op` over the indices `range`, returning the total time.
fn span(range: std::ops::Range<usize>, op: &mut impl FnMut(usize)) -> Duration {
    let start = Instant::now();
    for i in range {
        op(i);
    }
    start.elapsed()
}

/// Runs `roster` and `baseline` `reps` times, `batch` operations each, after
/// one untimed warm-up of each. Each repetition cuts the batch into
/// [`SLICES`] slices and runs roster's and the baseline's slice in turn,
/// swapping which goes first from one slice to the next: a burst of load
/// from elsewhere on the machine then falls on both sides alike, instead of
/// on whichever happened to be running.
pub fn side_by_side(
    reps: usize,
    batch: usize,
    roster: impl FnMut(usize),
    baseline: impl FnMut(usize),
) -> Times {
    side_by_side_settled(reps, batch, roster, baseline, || {})
}

/// [`side_by_side`], with `settle` run untimed before every pair of slices.
/// Rows whose two sides write the same file checkpoint it there, so that no
/// timed slice crosses the checkpoint mark: otherwise whichever side happens
/// to cross it pays for the other's pages too.
pub fn side_by_side_settled(
    reps: usize,
    batch: usize,
    mut roster: impl FnMut(usize),
    mut baseline: impl FnMut(usize),
    mut settle: impl FnMut(),
) -> Times {
    per_op(batch.min(10), &mut roster);
    per_op(batch.min(10), &mut baseline);
    let slice = batch.div_ceil(SLICES).max(1);
    let (mut roster_times, mut baseline_times) =
        (Vec::with_capacity(reps), Vec::with_capacity(reps));
    for rep in 0..reps {
        let (mut r, mut b) = (Duration::ZERO, Duration::ZERO);
        for (k, from) in (0..batch).step_by(slice).enumerate() {
            let range = from..(from + slice).min(batch);
            settle();
            if (rep + k) % 2 == 0 {
                r += span(range.clone(), &mut roster);
                b += span(range, &mut baseline);
            } else {
                b += span(range.clone(), &mut baseline);
                r += span(range, &mut roster);
            }
        }
        roster_times.push(r / batch as u32);
        baseline_times.push(b / batch as u32);
    }
    Times::new(roster_times, baseline_times)
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

fn median_time(values: &[Duration]) -> Duration {
    Duration::from_secs_f64(median(values.iter().map(Duration::as_secs_f64).collect()))
}

/// One row of the table: a figure of roster against one baseline.
struct Row {
    figure: String,
    baseline_name: String,
    goal: String,
    /// Median time per operation over the repetitions.
    roster: Duration,
    /// Median time per operation over the repetitions.
    baseline: Duration,
    /// Median over repetitions of roster / baseline.
    ratio: f64,
    /// Smallest per-repetition ratio.
    low: f64,
    /// Largest per-repetition ratio.
    high: f64,
    /// Repetitions behind the medians.
    runs: usize,
}

/// The run: where its files go, how much to measure, and what was measured.
pub struct Bench {
    dir: tempfile::TempDir,
    /// Repetitions of each pair.
    pub reps: usize,
    /// A short run: figures that time a window use a shorter one.
    pub quick: bool,
    /// Fleet sizes, smallest first.
    sizes: Vec<usize>,
    rows: Vec<Row>,
    /// Figures that are not a pair, and rows that could not be measured.
    notes: Vec<String>,
}

impl Bench {
    /// A run of `reps` repetitions per pair over fleets of `sizes` agents,
    /// with its files in a fresh temporary directory.
    pub fn new(reps: usize, mut sizes: Vec<usize>, quick: bool) -> Bench {
        assert!(!sizes.is_empty(), "no fleet size");
        sizes.sort_unstable();
        Bench {
            dir: tempfile::tempdir().expect("temporary directory"),
            reps,
            quick,
            sizes,
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Every fleet size, smallest first.
    pub fn sizes(&self) -> Vec<usize> {
        self.sizes.clone()
    }

    /// The smallest fleet size.
    pub fn smallest(&self) -> usize {
        self.sizes[0]
    }

    /// The largest fleet size.
    pub fn largest(&self) -> usize {
        self.sizes[self.sizes.len() - 1]
    }

    /// The run's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path in the run's directory with no database, WAL or shared-memory
    /// file behind it.
    pub fn fresh_file(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        path
    }

    /// A fresh roster file holding `agents`, and the registry that wrote it.
    pub fn roster_file(&self, name: &str, agents: &[AgentInfo]) -> (PathBuf, SqliteRegistry) {
        let path = self.fresh_file(name);
        let registry = SqliteRegistry::open(&path).expect("open roster");
        for agent in agents {
            registry.register(agent.clone()).expect("register");
        }
        (path, registry)
    }

    /// Keeps one row of the table, and prints it on stderr as it comes.
    pub fn push(&mut self, figure: String, baseline_name: &str, times: Times, goal: &str) {
        let ratios: Vec<f64> = times
            .roster
            .iter()
            .zip(&times.baseline)
            .map(|(r, b)| r.as_secs_f64() / b.as_secs_f64())
            .collect();
        let row = Row {
            figure,
            baseline_name: baseline_name.to_owned(),
            goal: goal.to_owned(),
            roster: median_time(&times.roster),
            baseline: median_time(&times.baseline),
            ratio: median(ratios.clone()),
            low: ratios.iter().copied().fold(f64::INFINITY, f64::min),
            high: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            runs: ratios.len(),
        };
        eprintln!(
            "  {:<34} roster {:>10}  {:<40} {:>10}  ratio {} ({} .. {})",
            row.figure,
            fmt(row.roster),
            row.baseline_name,
            fmt(row.baseline),
            fmt_ratio(row.ratio),
            fmt_ratio(row.low),
            fmt_ratio(row.high)
        );
        self.rows.push(row);
    }

    /// Keeps a line printed under the table.
    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// Prints the table, then the notes.
    pub fn print(&self) {
        println!();
        println!(
            "| figure | roster | baseline | baseline time | roster / baseline | min .. max | runs | baseline / roster | goal |"
        );
        println!("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |");
        for row in &self.rows {
            println!(
                "| {} | {} | {} | {} | {} | {} .. {} | {} | {} | {} |",
                row.figure,
                fmt(row.roster),
                row.baseline_name,
                fmt(row.baseline),
                fmt_ratio(row.ratio),
                fmt_ratio(row.low),
                fmt_ratio(row.high),
                row.runs,
                fmt_ratio(1.0 / row.ratio),
                row.goal
            );
        }
        for note in &self.notes {
            println!();
            println!("{note}");
        }
    }
}

/// A time per operation in us below a millisecond, in ms above.
fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.2} us")
    }
}

/// A ratio with one decimal from 10 up, three decimals from 0.1, and three
/// significant digits below.
fn fmt_ratio(x: f64) -> String {
    if x >= 10.0 || !x.is_finite() {
        format!("{x:.1}")
    } else if x >= 0.1 || x <= 0.0 {
        format!("{x:.3}")
    } else {
        let decimals = (2.0 - x.log10().floor()) as usize;
        format!("{x:.decimals$}")
    }
}

/// A child process that is killed when the benchmark is done with it.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The path of `program` on PATH, if it is there.
pub fn find_program(program: &str) -> Option<PathBuf> {
    env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

/// This benchmark binary run again as a child process, as `worker` (one of
/// the names `main` dispatches on) with `args`.
pub fn this_binary(worker: &str) -> Command {
    let mut command = Command::new(env::current_exe().expect("path of the bench binary"));
    command.arg(worker);
    command
}
