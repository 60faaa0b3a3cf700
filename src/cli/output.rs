//! Human output: aligned tables, "3s ago", loads at a glance.

use chrono::{DateTime, SecondsFormat, Utc};
use roster::{AgentInfo, Claim, Recovered, ZERO_TIME};
use unicode_width::UnicodeWidthStr;

use super::exit::Outcome;
use super::printer::Printer;

/// How many terminal columns `text` takes: wide characters (CJK, most
/// emoji) take two, combining marks and zero-width characters none.
pub fn display_width(text: &str) -> usize {
    UnicodeWidthStr::width(text)
}

/// The widths of a table's columns, in terminal columns.
pub struct Widths(Vec<usize>);

impl Widths {
    /// Wide enough for `header` and every row of `rows`.
    pub fn fit<'a>(header: &[&str], rows: impl IntoIterator<Item = &'a Vec<String>>) -> Self {
        let mut widths: Vec<usize> = header.iter().map(|h| display_width(h)).collect();
        for row in rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(display_width(cell));
            }
        }
        Self(widths)
    }

    /// One line of the table: left-aligned cells two spaces apart, no
    /// trailing space. A cell wider than its column pushes the rest of its
    /// line to the right.
    pub fn line<S: AsRef<str>>(&self, cells: &[S]) -> String {
        let mut line = String::new();
        for (i, (cell, width)) in cells.iter().zip(&self.0).enumerate() {
            let cell = cell.as_ref();
            line.push_str(cell);
            if i + 1 < cells.len() {
                let pad = width.saturating_sub(display_width(cell)) + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        line.truncate(line.trim_end().len());
        line
    }
}

/// Prints rows as a table: a header, then left-aligned columns two spaces
/// apart, widths counted in terminal columns.
pub fn table(out: &mut Printer, header: &[&str], rows: &[Vec<String>]) -> Outcome {
    let widths = Widths::fit(header, rows);
    out.line(widths.line(header))?;
    for row in rows {
        out.line(widths.line(row))?;
    }
    Ok(())
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

/// A time as the schema stores it (`YYYY-MM-DD HH:MM:SS.fffffffff`, UTC),
/// as ad-hoc SQL returns it; `None` for anything else.
pub fn stored_time(text: &str) -> Option<DateTime<Utc>> {
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|time| time.and_utc())
}

/// A time as the command line shows it: RFC 3339 in UTC, to the
/// millisecond.
pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// What a claim is, in words: `token 7` and, with a lease, `, lease until
/// 2026-11-24T15:04:05.123Z`.
pub fn token_and_lease(claim: &Claim) -> String {
    match claim.lease_expires_at {
        Some(expiry) => format!("token {}, lease until {}", claim.token, rfc3339(expiry)),
        None => format!("token {}", claim.token),
    }
}

/// A claim that `recover` took back, in words: `task build-42 taken back
/// from builder-1 (agent_offline, token 7)`.
pub fn recovered(taken: &Recovered) -> String {
    format!(
        "task {} taken back from {} ({}, token {})",
        taken.claim.task_id, taken.claim.agent_id, taken.reason, taken.claim.token
    )
}

/// The claims as a table, one per line: task, agent, token, when taken,
/// when the lease runs out.
pub fn claims(out: &mut Printer, claims: &[Claim]) -> Outcome {
    let now = roster::now();
    let rows: Vec<Vec<String>> = claims
        .iter()
        .map(|c| {
            let lease = match c.lease_expires_at {
                None => "-".to_owned(),
                Some(expiry) if expiry <= now => format!("expired {}", ago(expiry, now)),
                Some(expiry) => ago(expiry, now),
            };
            vec![
                c.task_id.clone(),
                c.agent_id.clone(),
                c.token.to_string(),
                ago(c.claimed_at, now),
                lease,
            ]
        })
        .collect();
    table(out, &["TASK", "AGENT", "TOKEN", "CLAIMED", "LEASE"], &rows)
}

/// The agents as a table, one per line.
pub fn agents(out: &mut Printer, agents: &[AgentInfo]) -> Outcome {
    let now = roster::now();
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            vec![
                a.id.clone(),
                a.name.clone(),
                status(a),
                load(a),
                a.capabilities.join(","),
                ago(a.last_heartbeat, now),
            ]
        })
        .collect();
    table(
        out,
        &["ID", "NAME", "STATUS", "LOAD", "CAPABILITIES", "LAST SEEN"],
        &rows,
    )
}

/// The status, with "drained" when an operator drained the agent.
pub fn status(agent: &AgentInfo) -> String {
    if agent.drained {
        format!("{} (drained)", agent.status)
    } else {
        agent.status.to_string()
    }
}

/// One agent, a field per line; the optional fields only when set.
pub fn agent(out: &mut Printer, agent: &AgentInfo) -> Outcome {
    let now = roster::now();
    let capabilities = if agent.capabilities.is_empty() {
        "-".to_owned()
    } else {
        agent.capabilities.join(", ")
    };
    let mut fields = vec![
        ("id", agent.id.clone()),
        ("name", agent.name.clone()),
        ("status", status(agent)),
        ("load", load(agent)),
        ("capabilities", capabilities),
        ("last heartbeat", last_heartbeat(agent.last_heartbeat, now)),
    ];
    if let Some(host) = &agent.host {
        fields.push(("host", host.clone()));
    }
    if let Some(pid) = agent.pid {
        fields.push(("pid", pid.to_string()));
    }
    if let Some(started) = agent.started_at {
        fields.push(("started", last_heartbeat(started, now)));
    }
    for (key, value) in &agent.metadata {
        fields.push(("metadata", format!("{key}={value}")));
    }
    for (field, value) in fields {
        out.line(format_args!("{field:<15}{value}"))?;
    }
    Ok(())
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
