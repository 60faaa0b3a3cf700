//! BENCHMARKS.md rows for `roster top` (row name `top`), at the smallest
//! fleet size:
//!
//! - a redraw after a change: `top`'s own model (src/cli/top/view.rs,
//!   compiled into this benchmark as it is) filters and sorts every agent
//!   again and draws a 200 x 50 terminal into ratatui's `TestBackend`,
//!   against what a view that re-reads would pay first: one `list` of the
//!   same agents. The goal is a redraw under 50 ms;
//! - the once-a-second ageing of the rows on screen: one `SELECT id,
//!   last_heartbeat ... WHERE id IN (...)` through `SqliteRegistry::query`,
//!   as `top` does, against a `get` per row.

use std::collections::HashMap;
use std::hint::black_box;

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use roster::{AgentRegistry, SqlAccess};

use crate::common::{Bench, fleet, side_by_side};

/// What the binary's `output::display_width` is to `view`; the benchmark
/// does not compile the rest of the command's output code.
fn display_width(text: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(text)
}

#[allow(dead_code)] // The benchmark draws; it presses no keys.
#[path = "../../src/cli/top/view.rs"]
mod view;

/// The terminal the redraw fills: a large one.
const WIDTH: u16 = 200;
const HEIGHT: u16 = 50;

/// Measures the rows.
pub fn run(bench: &mut Bench) {
    let n = bench.smallest();
    let agents = fleet(n, 91);
    let (_path, registry) = bench.roster_file(&format!("top-{n}.db"), &agents);

    let mut model = view::Model::new("top.db", view::Sort::Load, view::Show::All, None);
    model.replace_all(agents.clone(), &HashMap::new());
    let mut terminal = Terminal::new(TestBackend::new(WIDTH, HEIGHT)).expect("test terminal");
    let mut changed = agents[n / 2].clone();
    let times = side_by_side(
        bench.reps,
        20,
        |i| {
            // A change from the feed: one agent's load moves, so every
            // agent is filtered and sorted again before the draw.
            changed.current_load = (i as u32) % (changed.max_load.max(1) + 1);
            model.upsert(changed.clone(), i % 3);
            terminal
                .draw(|frame| model.draw(frame, roster::now()))
                .expect("draw");
            black_box(terminal.backend().buffer());
        },
        |_| {
            let all = registry.list().expect("list");
            assert_eq!(all.len(), n);
            black_box(all);
        },
    );
    bench.push(
        format!("`top` redraw after a change, {n} agents"),
        &format!("`list` of the same {n} agents"),
        times,
        "roster < 50 ms",
    );

    // The rows a 200 x 50 terminal shows.
    let on_screen = model.visible_ids();
    let rows = on_screen.len();
    let sql = format!(
        "SELECT id, last_heartbeat FROM agents WHERE id IN ({})",
        on_screen
            .iter()
            .map(|id| format!("'{id}'"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let times = side_by_side(
        bench.reps,
        20,
        |_| {
            let read = registry.query(&sql, SqlAccess::ReadOnly).expect("query");
            assert_eq!(read.rows.len(), rows);
            black_box(read);
        },
        |_| {
            for id in &on_screen {
                black_box(registry.get(id).expect("get"));
            }
        },
    );
    bench.push(
        format!("`top` ageing, {rows} rows: one `SELECT ... IN`"),
        &format!("{rows} `get`s"),
        times,
        "report",
    );
}
