//! What `roster top` shows and how keys change it: the agents it knows, the
//! recent events, the order and filters, the scroll position, and the
//! drawing of one frame. No terminal and no registry here: `top` feeds this
//! model from the registry and draws it on the terminal, and the benchmark
//! draws it into ratatui's `TestBackend`.
//!
//! A redraw sorts and filters the agents again only when something changed
//! them (`dirty`), and builds widgets for the rows on screen only, so its
//! cost depends on the height of the terminal, not on the registry's size.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};
use roster::{AgentInfo, AgentStatus, Event, EventKind, ZERO_TIME};

// From the parent: `output::display_width` in the binary, the same
// function in the benchmark that compiles this file on its own.
use super::display_width;

/// How many recent events the model keeps for the events pane.
const EVENTS_KEPT: usize = 500;

/// Cells of the load bar.
const BAR_CELLS: usize = 10;

/// The most columns the id, name and capability columns take.
const ID_COLUMNS: usize = 32;

/// The order of the agents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Sort {
    /// By id, ascending.
    #[default]
    Id,
    /// Fullest first: current load over max load (an unlimited agent counts
    /// as empty), then the larger current load, then id.
    Load,
    /// Silent for longest first (oldest heartbeat), then id.
    Age,
}

impl Sort {
    /// The next order in the cycle of the `s` key.
    fn next(self) -> Self {
        match self {
            Self::Id => Self::Load,
            Self::Load => Self::Age,
            Self::Age => Self::Id,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::Load => "load",
            Self::Age => "age",
        }
    }
}

/// Which agents the status filter lets through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Show {
    /// Every agent.
    #[default]
    All,
    /// Available agents.
    Available,
    /// Busy agents.
    Busy,
    /// Offline agents.
    Offline,
    /// Drained agents, whatever their status.
    Drained,
}

impl Show {
    /// The next filter in the cycle of the `f` key.
    fn next(self) -> Self {
        match self {
            Self::All => Self::Available,
            Self::Available => Self::Busy,
            Self::Busy => Self::Offline,
            Self::Offline => Self::Drained,
            Self::Drained => Self::All,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Available => "available",
            Self::Busy => "busy",
            Self::Offline => "offline",
            Self::Drained => "drained",
        }
    }

    fn admits(self, agent: &AgentInfo) -> bool {
        match self {
            Self::All => true,
            Self::Available => agent.status == AgentStatus::Available,
            Self::Busy => agent.status == AgentStatus::Busy,
            Self::Offline => agent.status == AgentStatus::Offline,
            Self::Drained => agent.drained,
        }
    }
}

/// What a key asks of the program around the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing beyond a redraw.
    Redraw,
    /// Nothing changed: no redraw needed.
    Nothing,
    /// Leave `top`.
    Quit,
    /// The order became "by age": the heartbeats of rows off screen are as
    /// old as the last full read, so the program may read them all once.
    SortedByAge,
}

/// One agent as `top` shows it.
struct Entry {
    agent: AgentInfo,
    /// Claims it holds.
    claims: usize,
}

/// Everything `top` shows.
pub struct Model {
    /// The registry file, for the header.
    title: String,
    entries: Vec<Entry>,
    /// Position in `entries` by id.
    index: HashMap<String, usize>,
    events: VecDeque<Event>,
    sort: Sort,
    show: Show,
    capability: Option<String>,
    /// The capability being typed after `c`, if the prompt is open.
    prompt: Option<String>,
    /// A message for the footer (an error being retried).
    notice: Option<String>,
    /// The filtered, sorted positions in `entries`.
    view: Vec<usize>,
    /// Whether `view` must be computed again.
    dirty: bool,
    /// Index in `view` of the first row on screen.
    offset: usize,
    /// How many rows the table showed at the last draw.
    page: usize,
    /// Counts for the header, computed with `view`.
    totals: Totals,
}

#[derive(Clone, Copy, Default)]
struct Totals {
    available: usize,
    busy: usize,
    offline: usize,
    drained: usize,
    claims: usize,
}

impl Model {
    /// An empty model; `title` names the registry in the header.
    pub fn new(
        title: impl Into<String>,
        sort: Sort,
        show: Show,
        capability: Option<String>,
    ) -> Self {
        Self {
            title: title.into(),
            entries: Vec::new(),
            index: HashMap::new(),
            events: VecDeque::new(),
            sort,
            show,
            capability,
            prompt: None,
            notice: None,
            view: Vec::new(),
            dirty: true,
            offset: 0,
            page: 0,
            totals: Totals::default(),
        }
    }

    /// Replaces every agent (a full read): `claims` holds the number of
    /// claims of each agent that holds any.
    pub fn replace_all(&mut self, agents: Vec<AgentInfo>, claims: &HashMap<String, usize>) {
        self.entries = agents
            .into_iter()
            .map(|agent| Entry {
                claims: claims.get(&agent.id).copied().unwrap_or(0),
                agent,
            })
            .collect();
        self.index = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, entry)| (entry.agent.id.clone(), i))
            .collect();
        self.dirty = true;
    }

    /// Adds the agent or replaces the one with its id.
    pub fn upsert(&mut self, agent: AgentInfo, claims: usize) {
        match self.index.get(&agent.id) {
            Some(&i) => self.entries[i] = Entry { agent, claims },
            None => {
                self.index.insert(agent.id.clone(), self.entries.len());
                self.entries.push(Entry { agent, claims });
            }
        }
        self.dirty = true;
    }

    /// Forgets the agent `id` (it was deregistered).
    pub fn remove(&mut self, id: &str) {
        let Some(i) = self.index.remove(id) else {
            return;
        };
        self.entries.swap_remove(i);
        if let Some(moved) = self.entries.get(i) {
            self.index.insert(moved.agent.id.clone(), i);
        }
        self.dirty = true;
    }

    /// Appends events to the events pane, oldest first.
    pub fn push_events(&mut self, events: impl IntoIterator<Item = Event>) {
        for event in events {
            if self.events.len() == EVENTS_KEPT {
                self.events.pop_front();
            }
            self.events.push_back(event);
        }
    }

    /// Sets the heartbeats read for some agents; ids the model does not
    /// hold are ignored. Returns whether any changed.
    pub fn set_heartbeats(
        &mut self,
        beats: impl IntoIterator<Item = (String, DateTime<Utc>)>,
    ) -> bool {
        let mut changed = false;
        for (id, beat) in beats {
            if let Some(&i) = self.index.get(&id) {
                let agent = &mut self.entries[i].agent;
                if agent.last_heartbeat != beat {
                    agent.last_heartbeat = beat;
                    changed = true;
                }
            }
        }
        if changed && self.sort == Sort::Age {
            self.dirty = true;
        }
        changed
    }

    /// Shows `text` in the footer until [`Model::clear_notice`].
    pub fn set_notice(&mut self, text: impl Into<String>) {
        self.notice = Some(text.into());
    }

    /// Removes the footer's message.
    pub fn clear_notice(&mut self) {
        self.notice = None;
    }

    /// The ids of the rows on screen at the last draw, top to bottom.
    pub fn visible_ids(&mut self) -> Vec<String> {
        self.refresh();
        self.view
            .iter()
            .skip(self.offset)
            .take(self.page)
            .map(|&i| self.entries[i].agent.id.clone())
            .collect()
    }

    /// Handles one key press.
    pub fn key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::Nothing;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL)
            && matches!(key.code, KeyCode::Char('c' | 'd'))
        {
            return Action::Quit;
        }
        if let Some(typed) = self.prompt.as_mut() {
            match key.code {
                KeyCode::Enter => {
                    let typed = typed.trim().to_owned();
                    self.capability = (!typed.is_empty()).then_some(typed);
                    self.prompt = None;
                    self.dirty = true;
                    self.offset = 0;
                }
                KeyCode::Esc => self.prompt = None,
                KeyCode::Backspace => {
                    typed.pop();
                }
                KeyCode::Char(c) if !c.is_control() => typed.push(c),
                _ => return Action::Nothing,
            }
            return Action::Redraw;
        }
        let page = self.page.max(1);
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Char('s') => {
                self.sort = self.sort.next();
                self.dirty = true;
                self.offset = 0;
                if self.sort == Sort::Age {
                    return Action::SortedByAge;
                }
            }
            KeyCode::Char('f') => {
                self.show = self.show.next();
                self.dirty = true;
                self.offset = 0;
            }
            KeyCode::Char('c' | '/') => {
                self.prompt = Some(self.capability.clone().unwrap_or_default());
            }
            KeyCode::Char('x') => {
                self.show = Show::All;
                self.capability = None;
                self.dirty = true;
                self.offset = 0;
            }
            KeyCode::Down | KeyCode::Char('j') => self.offset = self.offset.saturating_add(1),
            KeyCode::Up | KeyCode::Char('k') => self.offset = self.offset.saturating_sub(1),
            KeyCode::PageDown | KeyCode::Char(' ') => {
                self.offset = self.offset.saturating_add(page);
            }
            KeyCode::PageUp => self.offset = self.offset.saturating_sub(page),
            KeyCode::Home | KeyCode::Char('g') => self.offset = 0,
            KeyCode::End | KeyCode::Char('G') => self.offset = usize::MAX,
            _ => return Action::Nothing,
        }
        Action::Redraw
    }

    /// Sorts and filters again if anything changed since the last time.
    fn refresh(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let mut totals = Totals::default();
        for entry in &self.entries {
            match entry.agent.status {
                AgentStatus::Available => totals.available += 1,
                AgentStatus::Busy => totals.busy += 1,
                AgentStatus::Offline => totals.offline += 1,
            }
            totals.drained += usize::from(entry.agent.drained);
            totals.claims += entry.claims;
        }
        self.totals = totals;
        let (show, capability) = (self.show, self.capability.as_deref());
        let entries = &self.entries;
        self.view.clear();
        self.view.extend((0..entries.len()).filter(|&i| {
            let agent = &entries[i].agent;
            show.admits(agent)
                && capability.is_none_or(|c| agent.capabilities.iter().any(|a| a == c))
        }));
        let by_id = |a: &AgentInfo, b: &AgentInfo| a.id.cmp(&b.id);
        match self.sort {
            Sort::Id => self
                .view
                .sort_unstable_by(|&a, &b| by_id(&entries[a].agent, &entries[b].agent)),
            Sort::Load => self.view.sort_unstable_by(|&a, &b| {
                let (a, b) = (&entries[a].agent, &entries[b].agent);
                fullness(b)
                    .total_cmp(&fullness(a))
                    .then(b.current_load.cmp(&a.current_load))
                    .then_with(|| by_id(a, b))
            }),
            Sort::Age => self.view.sort_unstable_by(|&a, &b| {
                let (a, b) = (&entries[a].agent, &entries[b].agent);
                a.last_heartbeat
                    .cmp(&b.last_heartbeat)
                    .then_with(|| by_id(a, b))
            }),
        }
    }

    /// Draws one frame as of `now`.
    pub fn draw(&mut self, frame: &mut Frame<'_>, now: DateTime<Utc>) {
        self.refresh();
        let area = frame.area();
        let events_height = (area.height / 4).clamp(3, 12) + 2;
        let [header, table, events, footer] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(4),
            Constraint::Length(events_height),
            Constraint::Length(1),
        ])
        .areas(area);
        frame.render_widget(Paragraph::new(self.header_line()), header);
        self.draw_agents(frame, table, now);
        self.draw_events(frame, events);
        frame.render_widget(Paragraph::new(self.footer_line()), footer);
    }

    fn header_line(&self) -> Line<'static> {
        let t = self.totals;
        let bold = Style::new().add_modifier(Modifier::BOLD);
        let spans = vec![
            Span::styled("roster top", bold),
            Span::raw(format!("  {}  ", self.title)),
            Span::styled(format!("{} agents", self.entries.len()), bold),
            Span::raw(": "),
            Span::styled(
                format!("{} available", t.available),
                status_style(AgentStatus::Available),
            ),
            Span::raw(", "),
            Span::styled(format!("{} busy", t.busy), status_style(AgentStatus::Busy)),
            Span::raw(", "),
            Span::styled(
                format!("{} offline", t.offline),
                status_style(AgentStatus::Offline),
            ),
            Span::raw(format!(
                ", {} drained; claims held: {}",
                t.drained, t.claims
            )),
        ];
        Line::from(spans)
    }

    fn footer_line(&self) -> Line<'static> {
        if let Some(typed) = &self.prompt {
            return Line::from(vec![
                Span::styled("capability: ", Style::new().add_modifier(Modifier::BOLD)),
                Span::raw(format!("{typed}_")),
                Span::styled(
                    "   (Enter: filter, empty: any; Esc: cancel)",
                    Style::new().fg(Color::DarkGray),
                ),
            ]);
        }
        if let Some(notice) = &self.notice {
            return Line::from(Span::styled(
                notice.clone(),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ));
        }
        let key = Style::new().add_modifier(Modifier::REVERSED);
        let mut spans = Vec::new();
        for (k, what) in [
            ("q", "quit"),
            ("s", "sort"),
            ("f", "status"),
            ("c", "capability"),
            ("x", "clear filters"),
            ("↑↓ PgUp PgDn Home End", "scroll"),
        ] {
            spans.push(Span::styled(k, key));
            spans.push(Span::raw(format!(" {what}  ")));
        }
        Line::from(spans)
    }

    fn draw_agents(&mut self, frame: &mut Frame<'_>, area: Rect, now: DateTime<Utc>) {
        // Borders take two lines, the header one.
        self.page = usize::from(area.height.saturating_sub(3));
        let last_offset = self.view.len().saturating_sub(self.page);
        self.offset = self.offset.min(last_offset);
        let shown = &self.view[self.offset..(self.offset + self.page).min(self.view.len())];
        let mut title = if shown.is_empty() {
            format!(" agents: none of {} shown", self.entries.len())
        } else {
            format!(
                " agents {}-{} of {}",
                self.offset + 1,
                self.offset + shown.len(),
                self.view.len()
            )
        };
        title.push_str(&format!(
            " · sort: {} · show: {}",
            self.sort.name(),
            self.show.name()
        ));
        if let Some(capability) = &self.capability {
            title.push_str(&format!(" · capability: {capability}"));
        }
        title.push(' ');
        // As wide as the widest id (name) on screen, the header's at least.
        let fit = |header: usize, text: fn(&AgentInfo) -> &str| {
            let widest = shown
                .iter()
                .map(|&i| display_width(text(&self.entries[i].agent)))
                .max()
                .unwrap_or(0);
            widest.clamp(header, ID_COLUMNS) as u16
        };
        let id_width = fit(2, |a| &a.id);
        let name_width = fit(4, |a| &a.name);
        let rows = shown.iter().map(|&i| {
            let Entry { agent, claims } = &self.entries[i];
            Row::new(vec![
                Line::from(agent.id.as_str()),
                Line::from(agent.name.as_str()),
                Line::styled(agent.status.as_str(), status_style(agent.status)),
                load_bar(agent),
                Line::from(age(agent.last_heartbeat, now)),
                if agent.drained {
                    Line::styled(
                        "drained",
                        Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD),
                    )
                } else {
                    Line::from("")
                },
                Line::from(if *claims == 0 {
                    String::new()
                } else {
                    claims.to_string()
                }),
                Line::from(agent.capabilities.join(",")),
            ])
        });
        let widths = [
            Constraint::Length(id_width),
            Constraint::Length(name_width),
            Constraint::Length(9),
            Constraint::Length((BAR_CELLS + 9) as u16),
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Fill(1),
        ];
        let header = Row::new([
            "ID",
            "NAME",
            "STATUS",
            "LOAD",
            "SEEN",
            "DRAINED",
            "CLAIMS",
            "CAPABILITIES",
        ])
        .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
        let table = Table::new(rows, widths)
            .header(header)
            .block(Block::new().borders(Borders::ALL).title(title));
        frame.render_widget(table, area);
    }

    fn draw_events(&self, frame: &mut Frame<'_>, area: Rect) {
        let height = usize::from(area.height.saturating_sub(2));
        let skip = self.events.len().saturating_sub(height);
        let lines: Vec<Line<'_>> = self.events.iter().skip(skip).map(event_line).collect();
        let block = Block::new().borders(Borders::ALL).title(" recent events ");
        frame.render_widget(Paragraph::new(lines).block(block), area);
    }
}

/// Current over max load; 0 for an unlimited agent.
fn fullness(agent: &AgentInfo) -> f64 {
    if agent.max_load == 0 {
        0.0
    } else {
        f64::from(agent.current_load) / f64::from(agent.max_load)
    }
}

/// The colour of a status.
fn status_style(status: AgentStatus) -> Style {
    match status {
        AgentStatus::Available => Style::new().fg(Color::Green),
        AgentStatus::Busy => Style::new().fg(Color::Yellow),
        AgentStatus::Offline => Style::new().fg(Color::Red),
    }
}

/// `██████░░░░  6/10`: the load as a bar of max_load, green, yellow from
/// three quarters, red when full; `3/∞` for an unlimited agent.
fn load_bar(agent: &AgentInfo) -> Line<'static> {
    if agent.max_load == 0 {
        return Line::from(vec![
            Span::styled("·".repeat(BAR_CELLS), Style::new().fg(Color::DarkGray)),
            Span::raw(format!(" {}/∞", agent.current_load)),
        ]);
    }
    let ratio = fullness(agent).min(1.0);
    // Rounded up, so that one task on a large agent still shows.
    let filled = ((ratio * BAR_CELLS as f64).ceil() as usize).min(BAR_CELLS);
    let colour = if ratio >= 1.0 {
        Color::Red
    } else if ratio >= 0.75 {
        Color::Yellow
    } else {
        Color::Green
    };
    Line::from(vec![
        Span::styled("█".repeat(filled), Style::new().fg(colour)),
        Span::styled(
            "░".repeat(BAR_CELLS - filled),
            Style::new().fg(Color::DarkGray),
        ),
        Span::raw(format!(" {}/{}", agent.current_load, agent.max_load)),
    ])
}

/// How long ago a heartbeat was: "now", "3s ago", "5m ago", "2h ago",
/// "4d ago", "in 2s" for one ahead of this clock, "never" for the zero time.
pub fn age(time: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if time == ZERO_TIME {
        return "never".to_owned();
    }
    let seconds = (now - time).num_seconds();
    let amount = seconds.unsigned_abs();
    let span = match amount {
        0 => return "now".to_owned(),
        1..60 => format!("{amount}s"),
        60..3600 => format!("{}m", amount / 60),
        3600..86_400 => format!("{}h", amount / 3600),
        _ => format!("{}d", amount / 86_400),
    };
    if seconds < 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// One line of the events pane.
fn event_line(event: &Event) -> Line<'_> {
    let colour = match event.kind {
        EventKind::Registered | EventKind::Undrained => Color::Green,
        EventKind::Deregistered | EventKind::Recovered => Color::Red,
        EventKind::Drained => Color::Magenta,
        EventKind::Status => match event.status {
            Some(status) => status_style(status).fg.unwrap_or(Color::Reset),
            None => Color::Reset,
        },
        EventKind::Claimed | EventKind::Released | EventKind::Renewed => Color::Cyan,
        EventKind::Updated => Color::Blue,
    };
    let mut spans = vec![
        Span::styled(
            event.at.format("%H:%M:%S%.3fZ").to_string(),
            Style::new().fg(Color::DarkGray),
        ),
        Span::raw(format!(" #{:<6} ", event.seq)),
        Span::styled(
            format!("{:<13}", event.kind.as_str()),
            Style::new().fg(colour),
        ),
        Span::raw(event.agent_id.as_str()),
    ];
    let mut detail = String::new();
    if let Some(status) = event.status {
        detail.push_str(&format!(" → {status}"));
    }
    if let Some(task) = &event.task_id {
        detail.push_str(&format!(" task {task}"));
    }
    if let Some(token) = event.token {
        detail.push_str(&format!(" token {token}"));
    }
    if let Some(reason) = event.reason {
        detail.push_str(&format!(" ({reason})"));
    }
    spans.push(Span::raw(detail));
    Line::from(spans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::KeyEvent;

    fn agent(id: &str, status: AgentStatus, load: u32, max: u32, caps: &[&str]) -> AgentInfo {
        AgentInfo {
            id: id.into(),
            name: format!("name of {id}"),
            status,
            current_load: load,
            max_load: max,
            capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
            last_heartbeat: roster::now(),
            ..AgentInfo::default()
        }
    }

    fn screen(model: &mut Model, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
        terminal
            .draw(|frame| model.draw(frame, roster::now()))
            .expect("draw");
        let buffer = terminal.backend().buffer();
        let mut text = String::new();
        for y in 0..buffer.area.height {
            for x in 0..buffer.area.width {
                text.push_str(buffer[(x, y)].symbol());
            }
            text.push('\n');
        }
        text
    }

    fn press(model: &mut Model, code: KeyCode) -> Action {
        model.key(KeyEvent::from(code))
    }

    fn model() -> Model {
        let mut model = Model::new("test.db", Sort::Id, Show::All, None);
        model.replace_all(
            vec![
                agent("a", AgentStatus::Available, 1, 4, &["rust"]),
                agent("b", AgentStatus::Busy, 4, 4, &["gpu", "rust"]),
                agent("c", AgentStatus::Offline, 0, 0, &["gpu"]),
            ],
            &HashMap::from([("b".to_owned(), 2)]),
        );
        model
    }

    /// The ids of the table's rows, top to bottom.
    fn order(model: &mut Model) -> Vec<String> {
        model.page = 100;
        model.visible_ids()
    }

    #[test]
    fn sorts_by_id_load_and_age() {
        let mut m = model();
        assert_eq!(order(&mut m), ["a", "b", "c"]);
        assert_eq!(press(&mut m, KeyCode::Char('s')), Action::Redraw);
        assert_eq!(order(&mut m), ["b", "a", "c"]);
        let old = roster::now() - chrono::TimeDelta::seconds(90);
        m.set_heartbeats([("c".to_owned(), old), ("zz".to_owned(), old)]);
        assert_eq!(press(&mut m, KeyCode::Char('s')), Action::SortedByAge);
        assert_eq!(order(&mut m)[0], "c");
        // Ageing re-sorts when the order is by age.
        m.set_heartbeats([("a".to_owned(), old - chrono::TimeDelta::seconds(1))]);
        assert_eq!(order(&mut m)[0], "a");
        assert_eq!(press(&mut m, KeyCode::Char('s')), Action::Redraw);
        assert_eq!(order(&mut m), ["a", "b", "c"]);
    }

    #[test]
    fn filters_by_status_and_capability() {
        let mut m = model();
        press(&mut m, KeyCode::Char('f'));
        assert_eq!(order(&mut m), ["a"]);
        press(&mut m, KeyCode::Char('f'));
        assert_eq!(order(&mut m), ["b"]);
        press(&mut m, KeyCode::Char('f'));
        assert_eq!(order(&mut m), ["c"]);
        press(&mut m, KeyCode::Char('f'));
        assert!(order(&mut m).is_empty(), "nobody is drained");
        press(&mut m, KeyCode::Char('f'));
        assert_eq!(order(&mut m), ["a", "b", "c"]);
        press(&mut m, KeyCode::Char('c'));
        for c in "gpu".chars() {
            press(&mut m, KeyCode::Char(c));
        }
        // Typing does not filter until Enter.
        assert_eq!(order(&mut m), ["a", "b", "c"]);
        press(&mut m, KeyCode::Enter);
        assert_eq!(order(&mut m), ["b", "c"]);
        press(&mut m, KeyCode::Char('x'));
        assert_eq!(order(&mut m), ["a", "b", "c"]);
    }

    #[test]
    fn quits_on_q_escape_and_ctrl_c() {
        let mut m = model();
        assert_eq!(press(&mut m, KeyCode::Char('q')), Action::Quit);
        assert_eq!(press(&mut m, KeyCode::Esc), Action::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(m.key(ctrl_c), Action::Quit);
        // In the prompt, q is a letter and Esc closes the prompt.
        press(&mut m, KeyCode::Char('c'));
        assert_eq!(press(&mut m, KeyCode::Char('q')), Action::Redraw);
        assert_eq!(press(&mut m, KeyCode::Esc), Action::Redraw);
        assert_eq!(press(&mut m, KeyCode::Char('q')), Action::Quit);
    }

    #[test]
    fn draws_status_load_bar_age_drained_and_claims() {
        let mut m = model();
        let mut drained = agent("d", AgentStatus::Available, 0, 2, &[]);
        drained.drained = true;
        drained.last_heartbeat = ZERO_TIME;
        m.upsert(drained, 0);
        let text = screen(&mut m, 120, 20);
        let line = |id: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("│{id} ")))
                .unwrap_or_else(|| panic!("no row {id}:\n{text}"))
                .to_owned()
        };
        assert!(
            line("a").contains("available") && line("a").contains("███░░░░░░░ 1/4"),
            "{text}"
        );
        assert!(
            line("b").contains("busy") && line("b").contains("██████████ 4/4"),
            "{text}"
        );
        assert!(line("b").contains(" 2 "), "b holds 2 claims:\n{text}");
        assert!(
            line("c").contains("offline") && line("c").contains("0/∞"),
            "{text}"
        );
        assert!(
            line("d").contains("drained") && line("d").contains("never"),
            "{text}"
        );
        assert!(
            text.contains("4 agents: 2 available, 1 busy, 1 offline, 1 drained; claims held: 2"),
            "{text}"
        );
        m.remove("b");
        m.remove("zz");
        let text = screen(&mut m, 120, 20);
        assert!(!text.contains("│b "), "{text}");
        assert!(text.contains("3 agents"), "{text}");
    }

    #[test]
    fn scrolls_within_the_agents() {
        let mut m = Model::new("big.db", Sort::Id, Show::All, None);
        let agents = (0..1000)
            .map(|i| agent(&format!("agent-{i:04}"), AgentStatus::Available, 0, 1, &[]))
            .collect();
        m.replace_all(agents, &HashMap::new());
        let text = screen(&mut m, 100, 30);
        assert!(
            text.contains("agent-0000") && !text.contains("agent-0999"),
            "{text}"
        );
        press(&mut m, KeyCode::End);
        let text = screen(&mut m, 100, 30);
        assert!(
            text.contains("agent-0999") && !text.contains("agent-0000"),
            "{text}"
        );
        assert!(text.contains(" of 1000 ·"), "{text}");
        let last_page = m.visible_ids();
        press(&mut m, KeyCode::Down);
        screen(&mut m, 100, 30);
        assert_eq!(m.visible_ids(), last_page, "no scrolling past the end");
        press(&mut m, KeyCode::Home);
        press(&mut m, KeyCode::PageDown);
        screen(&mut m, 100, 30);
        let page = m.page;
        assert_eq!(m.visible_ids()[0], format!("agent-{page:04}"));
    }

    #[test]
    fn ages_read_as_people_say_them() {
        let now = roster::now();
        for (seconds, text) in [
            (0, "now"),
            (3, "3s ago"),
            (61, "1m ago"),
            (7200, "2h ago"),
            (-4, "in 4s"),
        ] {
            assert_eq!(age(now - chrono::TimeDelta::seconds(seconds), now), text);
        }
        assert_eq!(age(ZERO_TIME, now), "never");
    }
}
