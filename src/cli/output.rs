//! Human output: aligned tables, "3s ago", loads at a glance.

use chrono::{DateTime, Utc};
use roster::{AgentInfo, ZERO_TIME};

/// Prints rows as a table: a header, then left-aligned columns two spaces
/// apart, widths counted in characters.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            out.push_str(cell);
            if i + 1 < cells.len() {
                out.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// How long ago `time` was, in the largest whole unit: "now", "3s ago",
/// "5m ago", "2h ago", "4d ago"; "in 3s" for a time in the future; "never"
/// for [`ZERO_TIME`], the heartbeat of an agent that never sent one.
pub fn ago(time: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if time == ZERO_TIME {
        return "never".to_owned();
    }
    let seconds = (now - time).num_seconds();
    let (amount, future) = (seconds.unsigned_abs(), seconds < 0);
    let span = match amount {
        0 => return "now".to_owned(),
        1..60 => format!("{amount}s"),
        60..3600 => format!("{}m", amount / 60),
        3600..86_400 => format!("{}h", amount / 3600),
        _ => format!("{}d", amount / 86_400),
    };
    if future {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// `current/max`, with `∞` for an unlimited agent.
pub fn load(agent: &AgentInfo) -> String {
    if agent.max_load == 0 {
        format!("{}/∞", agent.current_load)
    } else {
        format!("{}/{}", agent.current_load, agent.max_load)
    }
}

/// The agents as a table, one per line.
pub fn agents(agents: &[AgentInfo]) {
    let now = Utc::now();
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            vec![
                a.id.clone(),
                a.name.clone(),
                a.status.to_string(),
                load(a),
                a.capabilities.join(","),
                ago(a.last_heartbeat, now),
            ]
        })
        .collect();
    table(
        &["ID", "NAME", "STATUS", "LOAD", "CAPABILITIES", "LAST SEEN"],
        &rows,
    );
}

/// One agent, a field per line.
pub fn agent(agent: &AgentInfo) {
    let now = Utc::now();
    let capabilities = if agent.capabilities.is_empty() {
        "-".to_owned()
    } else {
        agent.capabilities.join(", ")
    };
    for (field, value) in [
        ("id", agent.id.clone()),
        ("name", agent.name.clone()),
        ("status", agent.status.to_string()),
        ("load", load(agent)),
        ("capabilities", capabilities),
        ("last heartbeat", last_heartbeat(agent.last_heartbeat, now)),
    ] {
        println!("{field:<15}{value}");
    }
}

/// `get`'s "last heartbeat" line: "3s ago (2026-02-20 07:16:53.123 UTC)", or
/// "never" for [`ZERO_TIME`].
fn last_heartbeat(time: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if time == ZERO_TIME {
        return ago(time, now);
    }
    format!(
        "{} ({})",
        ago(time, now),
        time.format("%Y-%m-%d %H:%M:%S%.3f UTC")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn ago_uses_the_largest_whole_unit() {
        let now = Utc::now();
        for (seconds, text) in [
            (0, "now"),
            (3, "3s ago"),
            (59, "59s ago"),
            (60, "1m ago"),
            (7200, "2h ago"),
            (3 * 86_400 + 5, "3d ago"),
            (-4, "in 4s"),
        ] {
            assert_eq!(ago(now - TimeDelta::seconds(seconds), now), text);
        }
    }

    #[test]
    fn the_zero_time_is_never() {
        let now = Utc::now();
        assert_eq!(ago(ZERO_TIME, now), "never");
        assert_eq!(ago(AgentInfo::default().last_heartbeat, now), "never");
        assert_eq!(last_heartbeat(ZERO_TIME, now), "never");
        // A second later is a time like any other.
        let after = ZERO_TIME + TimeDelta::seconds(1);
        assert_eq!(ago(after, after + TimeDelta::seconds(3)), "3s ago");
        assert_eq!(
            last_heartbeat(after, after + TimeDelta::days(2)),
            "2d ago (0001-01-01 00:00:01.000 UTC)"
        );
        let past = ago(after, now);
        assert!(past.ends_with("d ago"), "{past}");
    }

    #[test]
    fn load_shows_unlimited() {
        let mut a = AgentInfo {
            current_load: 2,
            ..AgentInfo::default()
        };
        assert_eq!(load(&a), "2/∞");
        a.max_load = 5;
        assert_eq!(load(&a), "2/5");
    }
}
