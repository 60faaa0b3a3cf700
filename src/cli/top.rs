//! `roster top`: a live full-screen view of the agents and of the change
//! feed, drawn with ratatui on crossterm.
//!
//! How it reads the registry, so that it never reads the whole table in a
//! loop:
//!
//! - once at start: `last_event` (the cursor), `list`, and the claims each
//!   agent holds;
//! - then, in a thread, `watch` from the cursor with a short timeout: each
//!   page of events names agents, and only those are read again (`get`, and
//!   their claims); a page that names more agents than [`RELIST_ABOVE`] is
//!   cheaper as one `list`, and a cursor that is too old (events pruned
//!   while `top` was behind) or ahead (the file was replaced) means: read
//!   everything again and go on from the new cursor. Without events nothing
//!   is read, and a registry that changes all the time is read at most once
//!   per [`FEED_GAP`];
//! - once a second, the heartbeats of the rows on screen only, since
//!   heartbeats write no events: one `SELECT id, last_heartbeat FROM agents
//!   WHERE id IN (...)` through ad-hoc SQL (either backend's). It reads exactly
//!   those two columns, of the 30 to 50 rows of a screen, in one snapshot.
//!   A `get` per row would read each agent's capabilities and metadata too;
//!   it is faster all the same (31 `get`s take about 0.2 ms, the `SELECT`
//!   0.6 ms: the `top` row of the benchmark), because ad-hoc SQL opens a
//!   connection of its own on every call, but once a second either costs
//!   under 0.1 % of a core.
//!
//! The statements are written to mean the same in SQLite and PostgreSQL
//! (`NOT detached`, string literals with `''`); PostgreSQL's times come
//! back in SQLite's format.
//!
//! The claims an agent holds come from the `claims` table by SQL too, with
//! the same fixed cost once per round of the feed:
//! `AgentRegistry::claims` also returns the detached claims of a former
//! agent with the same id, which the agent shown does not hold.
//!
//! The terminal is restored (raw mode off, main screen back, cursor shown)
//! when `top` quits, when it fails, on a panic (a panic hook restores it
//! before the message is printed) and on SIGINT, SIGTERM, SIGHUP (the ssh
//! connection dropped) and SIGQUIT.

mod view;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufWriter, IsTerminal, Stdout};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self as term_event, Event as TermEvent, KeyCode};
use ratatui::crossterm::{cursor, execute, terminal};
use roster::{AgentInfo, AgentRegistry, Error, Event, SqlValue};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};

use super::backend::{self, Registry};
use super::daemon::pause;
use super::exit::{Failure, Outcome};
use super::output::{self, display_width};

pub(crate) use view::{Show, Sort};

/// How long one `watch` waits for events before the feed thread looks at
/// whether `top` is stopping.
const WATCH_TIMEOUT: Duration = Duration::from_millis(250);

/// The most events one page of the feed carries.
const PAGE: usize = 1000;

/// A page of events that names more agents than this is followed by one
/// `list` rather than a `get` per agent.
const RELIST_ABOVE: usize = 200;

/// The shortest time between two reads of the feed that found events: the
/// view follows a registry that changes all the time at most ten times a
/// second, reading each agent once per round however often it changed.
const FEED_GAP: Duration = Duration::from_millis(100);

/// How long the feed thread waits before retrying after a passing failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How many events before the cursor the events pane starts with.
const RECENT: u64 = 100;

/// The buffer a frame is written into before it is sent to the terminal:
/// large enough for a full redraw of a large terminal.
const FRAME_BUFFER: usize = 256 * 1024;

/// How often the rows on screen are aged (their heartbeats read).
const AGE_EVERY: Duration = Duration::from_secs(1);

/// When set to a character, pressing that key panics: the tests use it to
/// check that a panic restores the terminal.
const PANIC_KEY: &str = "ROSTER_TOP_TEST_PANIC_KEY";

/// `roster top`'s flags.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Keys: q quit, s sort (id, load, age), f status filter (all, available, busy, offline, drained), c capability filter, x clear filters, arrows, PgUp, PgDn, Home, End scroll.\n\nExamples:\n  roster top\n  roster top --sort load --cap gpu"
)]
pub(crate) struct TopArgs {
    /// The order to start with: id, load (fullest first) or age (silent
    /// longest first); the `s` key changes it.
    #[arg(long, value_enum, default_value = "id")]
    sort: Sort,
    /// Show only agents with this status, or the drained ones; the `f` key
    /// changes it.
    #[arg(long, value_enum, default_value = "all")]
    status: Show,
    /// Show only agents holding this capability; the `c` key changes it.
    #[arg(long = "cap", value_name = "CAP")]
    capability: Option<String>,
}

/// `roster top`: checks that standard output is a terminal, then opens the
/// registry with `open` and shows it until the user quits.
pub(crate) fn run(args: &TopArgs, open: impl FnOnce() -> Result<Registry, Failure>) -> Outcome {
    if !std::io::stdout().is_terminal() {
        return Err(Failure::bad_input(
            "top needs a terminal on standard output (it draws a live view); \
             to follow the registry from a program or a pipe, use `roster watch --json`",
        ));
    }
    let registry = open()?;
    // The file, or the database's URL without its password.
    let title = registry.location();
    let mut model = view::Model::new(title, args.sort, args.status, args.capability.clone());
    let start = full_read(&registry, true)?;
    let cursor = start.cursor;
    start.apply(&mut model);

    let (sender, messages) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(sender.clone())?;
    let mut screen = Screen::enter()?;
    watch_keys(sender.clone());
    {
        let registry = registry.clone();
        let stop = Arc::clone(&stop);
        thread::spawn(move || follow(&registry, cursor, &sender, &stop));
    }
    let outcome = show(&registry, &mut model, &mut screen, &messages);
    stop.store(true, Ordering::Relaxed);
    drop(screen);
    outcome
}

/// What the threads tell the screen.
enum Message {
    /// A key, a resize...
    Terminal(TermEvent),
    /// The terminal cannot be read any more (it hung up).
    TerminalGone,
    /// A signal that ends `top`.
    Signal,
    /// News from the change feed.
    Feed(Update),
}

/// What the feed thread read.
enum Update {
    /// Everything again.
    All(Box<FullRead>),
    /// Events, and the agents they name as they are now (`None`: gone).
    Changes {
        events: Vec<Event>,
        agents: Vec<(String, Option<(AgentInfo, usize)>)>,
    },
    /// A failure that may pass; the thread retries.
    Trouble(String),
    /// The trouble passed.
    Fine,
    /// A failure that will not pass: `top` ends with it.
    Failed(Failure),
}

/// A full read of the registry.
struct FullRead {
    cursor: u64,
    agents: Vec<AgentInfo>,
    claims: HashMap<String, usize>,
    recent: Vec<Event>,
    /// Why it was read again, for the footer.
    why: Option<String>,
}

impl FullRead {
    fn apply(self, model: &mut view::Model) {
        model.replace_all(self.agents, &self.claims);
        model.push_events(self.recent);
        match self.why {
            Some(why) => model.set_notice(why),
            None => model.clear_notice(),
        }
    }
}

/// Reads everything: the cursor first, so that any change after it comes
/// through the feed (where reading an agent again is harmless). With
/// `recent`, also the events just before the cursor, for the events pane.
fn full_read(registry: &Registry, recent: bool) -> Result<FullRead, Error> {
    let cursor = registry.last_event()?;
    let agents = registry.list()?;
    let claims = claim_counts(registry, None)?;
    let recent = if recent && cursor > 0 {
        let from = cursor.saturating_sub(RECENT);
        match registry.events(from, RECENT as usize) {
            Ok(events) => events,
            // Pruned or replaced meanwhile: the pane starts empty.
            Err(Error::CursorTooOld { .. } | Error::CursorAhead { .. }) => Vec::new(),
            Err(e) => return Err(e),
        }
    } else {
        Vec::new()
    };
    Ok(FullRead {
        cursor,
        agents,
        claims,
        recent,
        why: None,
    })
}

/// `'text'`, as an SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `(...)`: the ids as an SQL list of literals.
fn id_list<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let ids: Vec<String> = ids.into_iter().map(literal).collect();
    format!("({})", ids.join(", "))
}

/// The claims held by each agent (of `ids`, or of every agent), not
/// counting detached ones (held by a former agent with the same id).
fn claim_counts(
    registry: &Registry,
    ids: Option<&[&str]>,
) -> Result<HashMap<String, usize>, Error> {
    let only = match ids {
        Some(ids) => format!(" AND agent_id IN {}", id_list(ids.iter().copied())),
        None => String::new(),
    };
    let sql =
        format!("SELECT agent_id, count(*) FROM claims WHERE NOT detached{only} GROUP BY agent_id");
    let rows = backend::query(registry, &sql)?;
    let mut counts = HashMap::new();
    for row in rows.rows {
        if let [SqlValue::Text(id), SqlValue::Integer(count)] = row.as_slice() {
            counts.insert(id.clone(), usize::try_from(*count).unwrap_or(0));
        }
    }
    Ok(counts)
}

/// The heartbeats of the agents `ids`, in one statement.
fn heartbeats(registry: &Registry, ids: &[String]) -> Result<Vec<(String, DateTime<Utc>)>, Error> {
    let sql = format!(
        "SELECT id, last_heartbeat FROM agents WHERE id IN {}",
        id_list(ids.iter().map(String::as_str))
    );
    let rows = backend::query(registry, &sql)?;
    Ok(rows
        .rows
        .into_iter()
        .filter_map(|row| match row.as_slice() {
            [SqlValue::Text(id), SqlValue::Text(beat)] => {
                output::stored_time(beat).map(|beat| (id.clone(), beat))
            }
            _ => None,
        })
        .collect())
}

/// The feed thread: follows the change feed from `cursor` and sends what
/// changed, until `stop` is set or the screen is gone.
fn follow(registry: &Registry, mut cursor: u64, out: &Sender<Message>, stop: &AtomicBool) {
    let send = |update: Update| out.send(Message::Feed(update)).is_ok();
    let mut troubled = false;
    while !stop.load(Ordering::Relaxed) {
        let update = match registry.watch(cursor, PAGE, WATCH_TIMEOUT) {
            Ok(page) if page.is_empty() => None,
            Ok(page) => {
                let next = page.last().map_or(cursor, |event| event.seq);
                match changes(registry, page) {
                    Ok(update) => {
                        cursor = match &update {
                            Update::All(all) => all.cursor,
                            _ => next,
                        };
                        Some(Ok(update))
                    }
                    Err(e) => Some(Err(e)),
                }
            }
            Err(e @ (Error::CursorTooOld { .. } | Error::CursorAhead { .. })) => {
                let why = match e {
                    Error::CursorTooOld { cursor, oldest } => format!(
                        "events {} to {} were pruned before top read them: every agent read again",
                        cursor + 1,
                        oldest.saturating_sub(1)
                    ),
                    _ => format!("{e}: every agent read again"),
                };
                Some(full_read(registry, false).map(|mut all| {
                    cursor = all.cursor;
                    all.why = Some(why);
                    Update::All(Box::new(all))
                }))
            }
            Err(e) => Some(Err(e)),
        };
        let delivered = match update {
            None => true,
            Some(Ok(update)) => {
                let fine = !troubled || send(Update::Fine);
                troubled = false;
                let sent = fine && send(update);
                // Events that come meanwhile wait for the next page: a busy
                // registry costs `top` at most one read a FEED_GAP.
                pause(FEED_GAP, stop, None);
                sent
            }
            Some(Err(e)) if e.kind().is_transient() => {
                troubled = true;
                let sent = send(Update::Trouble(format!("{e}; retrying")));
                pause(RETRY_AFTER, stop, None);
                sent
            }
            Some(Err(e)) => {
                send(Update::Failed(Failure::from(e)));
                return;
            }
        };
        if !delivered {
            return;
        }
    }
}

/// Reads again the agents a page of events names.
fn changes(registry: &Registry, events: Vec<Event>) -> Result<Update, Error> {
    let named: BTreeSet<&str> = events.iter().map(|e| e.agent_id.as_str()).collect();
    if named.len() > RELIST_ABOVE {
        let mut all = full_read(registry, false)?;
        all.recent = events;
        return Ok(Update::All(Box::new(all)));
    }
    let ids: Vec<&str> = named.into_iter().collect();
    let claims = claim_counts(registry, Some(&ids))?;
    let mut agents = Vec::with_capacity(ids.len());
    for id in ids {
        let now = match registry.get(id) {
            Ok(agent) => Some((agent, claims.get(id).copied().unwrap_or(0))),
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        agents.push((id.to_owned(), now));
    }
    Ok(Update::Changes { events, agents })
}

/// The screen's loop: draws, then waits for a message or for the next
/// ageing, whichever comes first.
fn show(
    registry: &Registry,
    model: &mut view::Model,
    screen: &mut Screen,
    messages: &Receiver<Message>,
) -> Outcome {
    let panic_key = std::env::var(PANIC_KEY)
        .ok()
        .and_then(|key| key.chars().next());
    let mut next_age = Instant::now() + AGE_EVERY;
    screen.draw(model)?;
    loop {
        let wait = next_age.saturating_duration_since(Instant::now());
        let mut redraw = match messages.recv_timeout(wait) {
            Ok(message) => {
                let mut redraw = false;
                // Everything that is waiting, then one redraw.
                for message in std::iter::once(message).chain(messages.try_iter()) {
                    match handle(model, message, panic_key) {
                        Step::Quit => return Ok(()),
                        Step::Fail(failure) => return Err(failure),
                        Step::Redraw => redraw = true,
                        Step::Nothing => {}
                        Step::ReadAll => {
                            // The events pane keeps what it had.
                            match full_read(registry, false) {
                                Ok(all) => all.apply(model),
                                Err(e) => model.set_notice(e.to_string()),
                            }
                            redraw = true;
                        }
                    }
                }
                redraw
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Failure::io("roster top: the change feed stopped"));
            }
        };
        if Instant::now() >= next_age {
            next_age = Instant::now() + AGE_EVERY;
            let ids = model.visible_ids();
            if !ids.is_empty() {
                match heartbeats(registry, &ids) {
                    Ok(beats) => {
                        model.set_heartbeats(beats);
                    }
                    Err(e) => model.set_notice(format!("reading heartbeats failed: {e}")),
                }
            }
            // The ages on screen moved on by a second.
            redraw = true;
        }
        if redraw {
            screen.draw(model)?;
        }
    }
}

/// What one message asks of the loop.
enum Step {
    Quit,
    Fail(Failure),
    Redraw,
    Nothing,
    /// Read every agent again (their heartbeats, for the order by age).
    ReadAll,
}

fn handle(model: &mut view::Model, message: Message, panic_key: Option<char>) -> Step {
    match message {
        Message::Terminal(TermEvent::Key(key)) => {
            if let (Some(p), KeyCode::Char(c)) = (panic_key, key.code) {
                assert!(c != p, "the test asked for a panic with {PANIC_KEY}");
            }
            match model.key(key) {
                view::Action::Quit => Step::Quit,
                view::Action::Redraw => Step::Redraw,
                view::Action::Nothing => Step::Nothing,
                view::Action::SortedByAge => Step::ReadAll,
            }
        }
        Message::Terminal(TermEvent::Resize(..)) => Step::Redraw,
        Message::Terminal(_) => Step::Nothing,
        Message::TerminalGone | Message::Signal => Step::Quit,
        Message::Feed(Update::All(all)) => {
            all.apply(model);
            Step::Redraw
        }
        Message::Feed(Update::Changes { events, agents }) => {
            model.clear_notice();
            for (id, now) in agents {
                match now {
                    Some((agent, claims)) => model.upsert(agent, claims),
                    None => model.remove(&id),
                }
            }
            model.push_events(events);
            Step::Redraw
        }
        Message::Feed(Update::Trouble(text)) => {
            model.set_notice(text);
            Step::Redraw
        }
        Message::Feed(Update::Fine) => {
            model.clear_notice();
            Step::Redraw
        }
        Message::Feed(Update::Failed(failure)) => Step::Fail(failure),
    }
}

/// Sends the terminal's events (keys, resizes) from a thread of its own.
fn watch_keys(out: Sender<Message>) {
    thread::spawn(move || {
        loop {
            let message = match term_event::read() {
                Ok(event) => Message::Terminal(event),
                Err(_) => Message::TerminalGone,
            };
            let gone = matches!(message, Message::TerminalGone);
            if out.send(message).is_err() || gone {
                return;
            }
        }
    });
}

/// Turns SIGINT, SIGTERM, SIGHUP and SIGQUIT into a message, so that the
/// screen's loop restores the terminal before `top` ends.
fn watch_signals(out: Sender<Message>) -> Outcome {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT])?;
    thread::spawn(move || {
        for _ in signals.forever() {
            if out.send(Message::Signal).is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// Whether the terminal is in `top`'s state (raw mode, alternate screen,
/// hidden cursor), so that it is restored exactly once.
static ENTERED: AtomicBool = AtomicBool::new(false);

/// Puts the terminal back as it was: raw mode off, the main screen back,
/// the cursor shown. Does nothing if `top` had not changed it or already
/// restored it. Failures are ignored: a terminal that hung up cannot be
/// restored, and there is nowhere to report it.
fn restore() {
    if ENTERED.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let _ = execute!(
            std::io::stdout(),
            terminal::LeaveAlternateScreen,
            cursor::Show
        );
    }
}

/// The terminal while `top` draws on it; dropping it restores the terminal.
struct Screen {
    terminal: Terminal<CrosstermBackend<BufWriter<Stdout>>>,
}

impl Screen {
    /// Raw mode, the alternate screen, a hidden cursor, and a panic hook
    /// that restores the terminal before the panic's message is printed.
    fn enter() -> Result<Self, Failure> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        ENTERED.store(true, Ordering::SeqCst);
        let entered = terminal::enable_raw_mode()
            .and_then(|()| {
                execute!(
                    std::io::stdout(),
                    terminal::EnterAlternateScreen,
                    cursor::Hide
                )
            })
            .and_then(|()| {
                // A frame leaves in one write (standard output alone would
                // send it in pieces of 1 KiB): fewer packets over ssh.
                let out = BufWriter::with_capacity(FRAME_BUFFER, std::io::stdout());
                Terminal::new(CrosstermBackend::new(out))
            });
        match entered {
            Ok(terminal) => Ok(Self { terminal }),
            Err(e) => {
                restore();
                Err(Failure::io(format!("cannot set up the terminal: {e}")))
            }
        }
    }

    fn draw(&mut self, model: &mut view::Model) -> Outcome {
        self.terminal
            .draw(|frame| model.draw(frame, roster::now()))
            .map(|_| ())
            .map_err(|e| Failure::io(format!("cannot draw on the terminal: {e}")))
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}
