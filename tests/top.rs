//! `roster top` in a real terminal: each test runs it inside a tmux server of
//! its own (a pane is a real pseudo-terminal), types keys with `send-keys`
//! and reads the screen with `capture-pane`.
//!
//! Every wait polls the screen until what it waits for is there; the
//! deadline ([`common::PATIENCE`]) only bounds a failure. The pane runs a
//! small shell script that saves the terminal's modes (`stty -g`) before
//! and after `top`, and then prints `top exited with CODE`: the terminal is
//! restored when both saves are equal, the pane is back on the main screen
//! and its cursor is visible.

mod common;

use std::process::{Command, Output, Stdio};

use common::tmux::Tmux;
use common::{ROSTER, TempRegistry};
use roster::{AgentInfo, AgentRegistry, AgentStatus, SqlAccess, Task};

/// Waits until the screen shows `title` and the table's rows are
/// `expected`, top to bottom.
fn wait_rows(tmux: &Tmux, title: &str, expected: &[&str]) -> String {
    tmux.wait_for(&format!("{title} with the rows {expected:?}"), |s| {
        s.contains(title) && rows(s) == expected
    })
}

fn agent(id: &str, status: AgentStatus, load: u32, max_load: u32, caps: &[&str]) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        name: id.into(),
        capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
        status,
        last_heartbeat: roster::now(),
        current_load: load,
        max_load,
        ..AgentInfo::default()
    }
}

/// The line of the table that shows agent `id`.
fn row<'a>(screen: &'a str, id: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|line| line.starts_with(&format!("│{id} ")))
}

/// The ids of the table's rows, top to bottom.
fn rows(screen: &str) -> Vec<String> {
    let table = screen.split("recent events").next().unwrap_or_default();
    table
        .lines()
        .skip_while(|line| !line.contains("STATUS"))
        .skip(1)
        .filter_map(|line| line.strip_prefix('│'))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| *word != "│")
        .map(str::to_owned)
        .collect()
}

#[test]
fn top_shows_the_agents_follows_changes_and_restores_the_terminal_on_quit() {
    let reg = TempRegistry::new();
    reg.register(agent("alpha", AgentStatus::Available, 1, 4, &["rust"]))
        .expect("register");
    reg.register(agent("bravo", AgentStatus::Busy, 3, 4, &["gpu", "rust"]))
        .expect("register");
    reg.register(agent("charlie", AgentStatus::Available, 0, 0, &["gpu"]))
        .expect("register");
    let task = Task {
        id: "build-1".into(),
        labels: vec!["rust".into()],
        ..Task::default()
    };
    let claimed = reg.claim(&task, None).expect("claim");
    assert_eq!(claimed.agent.id, "alpha");

    let tmux = Tmux::top(reg.path(), &[], &[], 140, 36);
    // The footer is drawn last: once it is there, the first frame is.
    let screen = tmux.wait_for("the three agents and the claim", |s| {
        ["alpha", "bravo", "charlie"]
            .iter()
            .all(|id| row(s, id).is_some())
            && s.contains("task build-1")
            && s.contains("q quit")
    });
    assert_eq!(
        tmux.pane("alternate_on"),
        "1",
        "top draws on the alternate screen"
    );
    let alpha = row(&screen, "alpha").expect("alpha");
    assert!(alpha.contains("available"), "{alpha}");
    // Load 1 + the claim on max 4: half the bar, and one claim held.
    assert!(alpha.contains("█████░░░░░ 2/4"), "{alpha}");
    assert!(alpha.contains(" 1 "), "alpha holds one claim: {alpha}");
    let bravo = row(&screen, "bravo").expect("bravo");
    assert!(
        bravo.contains("busy") && bravo.contains("████████░░ 3/4"),
        "{bravo}"
    );
    assert!(
        row(&screen, "charlie").expect("charlie").contains("0/∞"),
        "{screen}"
    );

    // A status change shows up, in the row and in the events pane. A frame
    // may be caught half drawn: each wait is for everything it checks.
    reg.set_status("bravo", AgentStatus::Offline)
        .expect("set_status");
    tmux.wait_for("bravo offline, in its row and in the events", |s| {
        row(s, "bravo").is_some_and(|r| r.contains("offline")) && s.contains("bravo → offline")
    });
    // In colour: red for offline, green for available (tmux writes the
    // basic colours as 31 and 32, or as 38;5;1 and 38;5;2).
    let colours = tmux.run(&["capture-pane", "-p", "-e"]);
    let coloured = |colour: u8, text: &str| {
        colours.contains(&format!("\x1b[3{colour}m{text}"))
            || colours.contains(&format!("\x1b[38;5;{colour}m{text}"))
    };
    assert!(
        coloured(1, "offline") && coloured(2, "available"),
        "statuses are not in colour: {colours:?}"
    );
    // So do a drain, a release, a new agent and a deregistration.
    reg.drain("alpha", true).expect("drain");
    reg.release("build-1", None).expect("release");
    reg.register(agent("delta", AgentStatus::Available, 0, 2, &["gpu"]))
        .expect("register");
    reg.deregister("charlie").expect("deregister");
    tmux.wait_for("alpha drained, delta in, charlie out", |s| {
        row(s, "alpha").is_some_and(|r| r.contains("drained") && r.contains(" 1/4"))
            && row(s, "delta").is_some()
            && row(s, "charlie").is_none()
            && s.contains("released")
            && s.contains("deregistered charlie")
    });

    // A heartbeat writes no event: the rows on screen are aged once a
    // second by reading their heartbeats. This one is typed by hand.
    reg.query(
        "UPDATE agents SET last_heartbeat = strftime('%Y-%m-%d %H:%M:%f000000', 'now', '-2 hours') \
         WHERE id = 'delta'",
        SqlAccess::ReadWrite,
    )
    .expect("hand-typed heartbeat");
    tmux.wait_for("delta seen 2h ago", |s| {
        row(s, "delta").is_some_and(|r| r.contains("2h ago"))
    });

    // Keys: sort by load (fullest first), then by age (silent longest
    // first), filter by status, then by capability.
    tmux.keys(&["s"]);
    wait_rows(&tmux, "sort: load", &["bravo", "alpha", "delta"]);
    tmux.keys(&["s"]);
    wait_rows(&tmux, "sort: age", &["delta", "alpha", "bravo"]);
    tmux.keys(&["f"]);
    wait_rows(&tmux, "show: available", &["delta", "alpha"]);
    tmux.keys(&["x", "c", "g", "p", "u", "Enter"]);
    wait_rows(&tmux, "capability: gpu", &["delta", "bravo"]);

    tmux.keys(&["q"]);
    tmux.expect_exit_and_restored(0);
}

#[test]
fn top_restores_the_terminal_on_sigterm_sighup_and_a_panic() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let reg = TempRegistry::new();
    reg.register(agent("alpha", AgentStatus::Available, 0, 1, &[]))
        .expect("register");
    for signal in [Signal::SIGTERM, Signal::SIGHUP, Signal::SIGINT] {
        let tmux = Tmux::top(reg.path(), &[], &[], 100, 30);
        tmux.wait_for("alpha", |s| row(s, "alpha").is_some());
        kill(Pid::from_raw(tmux.top_pid()), signal).expect("signal");
        tmux.expect_exit_and_restored(0);
    }
    let tmux = Tmux::top(
        reg.path(),
        &[],
        &[("ROSTER_TOP_TEST_PANIC_KEY", "!")],
        100,
        30,
    );
    tmux.wait_for("alpha", |s| row(s, "alpha").is_some());
    tmux.keys(&["!"]);
    // Rust's exit code for a panic, and its message on the main screen.
    let screen = tmux.expect_exit_and_restored(101);
    assert!(screen.contains("the test asked for a panic"), "{screen}");
}

#[test]
fn top_scrolls_through_ten_thousand_agents() {
    let reg = TempRegistry::new();
    // Ten thousand agents in one statement, as a person could type it.
    reg.query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 9999)
         INSERT INTO agents (id, name, status, last_heartbeat, current_load, max_load)
         SELECT printf('agent-%05d', i), 'agent ' || i,
                CASE i % 10 WHEN 0 THEN 'busy' WHEN 1 THEN 'offline' ELSE 'available' END,
                strftime('%Y-%m-%d %H:%M:%f000000', 'now'), i % 5, 4
         FROM n",
        SqlAccess::ReadWrite,
    )
    .expect("insert 10 000 agents");
    let tmux = Tmux::top(reg.path(), &[], &[], 120, 40);
    tmux.wait_for("the first page", |s| {
        s.contains(" of 10000 ·") && rows(s).first().is_some_and(|r| r == "agent-00000")
    });
    tmux.keys(&["End"]);
    tmux.wait_for("the last page", |s| {
        rows(s).last().is_some_and(|r| r == "agent-09999") && row(s, "agent-00000").is_none()
    });
    tmux.keys(&["Home", "PageDown"]);
    // The second page starts where the first ended.
    let page = tmux.wait_for("the second page", |s| {
        let rows = rows(s);
        rows.len() > 1
            && rows[0] != "agent-00000"
            && rows.last().is_some_and(|r| r != "agent-09999")
    });
    let per_page = rows(&page).len();
    assert_eq!(rows(&page)[0], format!("agent-{per_page:05}"), "{page}");
    tmux.keys(&["f", "f", "f"]);
    tmux.wait_for("the offline agents, one in ten", |s| {
        s.contains("show: offline")
            && s.contains(" of 1000 ·")
            && rows(s).first().is_some_and(|r| r == "agent-00001")
    });
    tmux.keys(&["q"]);
    tmux.expect_exit_and_restored(0);
}

#[test]
fn top_reads_everything_again_when_the_events_it_needed_were_pruned() {
    let reg = TempRegistry::new();
    for id in ["a", "b", "c", "d", "e"] {
        reg.register(agent(id, AgentStatus::Available, 0, 1, &[]))
            .expect("register");
    }
    // Events are pruned by every 64th: 54 more (drain and undrain), so that
    // the statement below writes events 60 to 64.
    for _ in 0..27 {
        reg.drain("a", true).expect("drain");
        reg.drain("a", false).expect("undrain");
    }
    let tmux = Tmux::top(reg.path(), &[], &[], 120, 30);
    tmux.wait_for("the five agents", |s| {
        rows(s) == ["a", "b", "c", "d", "e"] && s.contains("q quit")
    });
    // Keep one event only, then change five agents in one statement: four
    // of its five events are pruned before anyone can read them.
    reg.query(
        "UPDATE settings SET value = 1 WHERE name = 'events_keep'",
        SqlAccess::ReadWrite,
    )
    .expect("keep one event");
    reg.query("UPDATE agents SET status = 'busy'", SqlAccess::ReadWrite)
        .expect("five status changes");
    tmux.wait_for("every agent busy, read again", |s| {
        ["a", "b", "c", "d", "e"]
            .iter()
            .all(|id| row(s, id).is_some_and(|r| r.contains("busy")))
            && s.contains(
                "events 60 to 63 were pruned before top read them: every agent read again",
            )
    });
    // And it goes on following the feed from there.
    reg.drain("c", true).expect("drain");
    tmux.wait_for("c drained", |s| {
        row(s, "c").is_some_and(|r| r.contains("drained"))
    });
    tmux.keys(&["q"]);
    tmux.expect_exit_and_restored(0);
}

fn roster(args: &[&str]) -> Output {
    Command::new(ROSTER)
        .args(args)
        .env_remove("ROSTER_DB")
        .stdin(Stdio::null())
        .output()
        .expect("run roster")
}

#[test]
fn top_without_a_terminal_says_so_and_points_to_watch() {
    let reg = TempRegistry::new();
    let out = roster(&["--db", &reg.path().display().to_string(), "top"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("needs a terminal") && stderr.contains("roster watch --json"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing drawn on a pipe");
    // It says so before looking for the file, and creates none.
    let missing = reg.dir().join("missing.db");
    let out = roster(&["--db", &missing.display().to_string(), "top"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!missing.exists());
}

#[test]
fn top_help_has_its_keys_and_an_example() {
    let out = Command::new(ROSTER)
        .args(["top", "--help"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Example"), "{help}");
    assert!(
        help.contains("Keys: q quit, s sort (id, load, age)"),
        "{help}"
    );
}
