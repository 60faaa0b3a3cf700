//! BENCHMARKS.md rows "claim, N agents" against the Go registry's dispatch
//! (list + route + update) on `MemoryRegistry` and on `SqliteRegistry`, and
//! against `MemoryRegistry::claim`, at every fleet size (row name `claim`).

use std::time::{Duration, Instant};

use roster::{AgentRegistry, DefaultRouter, Error, MemoryRegistry, Task, TaskRouter};

use crate::common::{Bench, Times, fleet, interleaved, tasks};

/// A slot taken by [`claim`] (a claim row, by task id) or by [`dispatch`]
/// (a load counted up on an agent, by agent id).
enum Taken {
    Claim(String),
    Load(String),
}

/// The roster call this file measures: one claim (recorded as a row, with a
/// generated task id), answering what [`release`] needs to give it back.
fn claim(registry: &dyn AgentRegistry, task: &Task) -> Result<Taken, Error> {
    registry
        .claim(task, None)
        .map(|claimed| Taken::Claim(claimed.claim.task_id))
}

/// Gives back the slot that [`claim`] or [`dispatch`] took.
fn release(registry: &dyn AgentRegistry, taken: &Taken) {
    match taken {
        Taken::Claim(task_id) => {
            registry.release(task_id, None).expect("release");
        }
        Taken::Load(id) => {
            let mut agent = registry.get(id).expect("get");
            agent.current_load -= 1;
            registry.register(agent).expect("register");
        }
    }
}

/// The Go registry's dispatch: list everything, route in memory, write the
/// agent back with one more slot taken.
fn dispatch(
    registry: &dyn AgentRegistry,
    router: &DefaultRouter,
    task: &Task,
) -> Result<Taken, Error> {
    let all = registry.list()?;
    let id = router.route(task, &all)?;
    let mut chosen = registry.get(&id)?;
    chosen.current_load += 1;
    registry.register(chosen)?;
    Ok(Taken::Load(id))
}

/// Measures the three rows at every size.
pub fn run(bench: &mut Bench) {
    for n in bench.sizes() {
        let agents = fleet(n, 21);
        let (_, registry) = bench.roster_file(&format!("claim-{n}.db"), &agents);
        let (_, seed_sqlite) = bench.roster_file(&format!("claim-seed-{n}.db"), &agents);
        let memory = MemoryRegistry::new();
        for agent in &agents {
            memory.register(agent.clone()).expect("register");
        }
        let work = tasks(512, 5);
        let router = DefaultRouter::new();
        // Claims are timed alone; the slots are given back after each batch,
        // outside the timing, so that every batch sees the same loads.
        let timed = |registry: &dyn AgentRegistry, batch: usize, seed: bool| -> Duration {
            let mut taken = Vec::with_capacity(batch);
            let start = Instant::now();
            for task in work.iter().cycle().take(batch) {
                let claimed = if seed {
                    dispatch(registry, &router, task)
                } else {
                    claim(registry, task)
                };
                if let Ok(claimed) = claimed {
                    taken.push(claimed);
                }
            }
            let elapsed = start.elapsed() / batch as u32;
            for claimed in taken {
                release(registry, &claimed);
            }
            elapsed
        };
        let slow_batch = if n >= 100_000 { 3 } else { 20 };
        // Warm-up, untimed.
        timed(&registry, 20, false);
        timed(&memory, 2, true);
        let [roster, seed_memory, seed_sqlite, memory_claim] = interleaved(
            bench.reps,
            [
                &mut || timed(&registry, 200, false),
                &mut || timed(&memory, slow_batch, true),
                &mut || timed(&seed_sqlite, 3, true),
                &mut || timed(&memory, 20, false),
            ],
        );
        let goal = if n >= 100_000 {
            "baseline / roster >= 100"
        } else {
            "baseline / roster >= 50"
        };
        let baselines = [
            ("list + route + update, MemoryRegistry", seed_memory, goal),
            (
                "list + route + update, SqliteRegistry",
                seed_sqlite,
                "report",
            ),
            ("MemoryRegistry::claim", memory_claim, "report"),
        ];
        for (name, times, goal) in baselines {
            bench.push(
                format!("claim, {n} agents"),
                name,
                Times::new(roster.clone(), times),
                goal,
            );
        }
    }
}
