//! The contract every [`AgentRegistry`] keeps, as tests a backend crate runs
//! with one line.
//!
//! Compiled only with the cargo feature `testing`. A registry passes the
//! contract when it passes three parts, each written once here and run
//! against every implementation:
//!
//! - [`cases`]: the conformance cases, one per rule of the trait's
//!   documentation or of the README; each case's first doc line quotes the
//!   rule it checks.
//! - [`model`]: random sequences of every operation, valid and invalid, give
//!   the same answers, the same errors and the same state as a plain model of
//!   the contract.
//! - [`claims`]: for random registries and tasks, `claim` picks the agent
//!   that [`DefaultRouter`](crate::DefaultRouter) picks over `list()`.
//!
//! # The one line
//!
//! In a backend crate, with roster in `[dev-dependencies]` and its `testing`
//! feature on, a test file such as `tests/contract.rs` holds:
//!
//! ```
//! use roster::MemoryRegistry;
//!
//! roster::roster_conformance!(memory_registry, MemoryRegistry::new());
//! # fn main() {}
//! ```
//!
//! [`roster_conformance!`](crate::roster_conformance) expands into one
//! `#[test]` per case and per property, in a module of the given name
//! (`memory_registry::cases::list_is_ordered_by_id`,
//! `memory_registry::model::registry_agrees_with_the_model`, ...). The
//! second argument is a factory: an expression evaluated afresh for every
//! test (and for every generated input of a property), which must give a
//! new, empty registry. It may use `?` on any error, and it gives either a
//! registry or a [`FreshRegistry`], which keeps alongside the registry
//! whatever must outlive it: a temporary directory, a scratch database.
//!
//! ```
//! use roster::SqliteRegistry;
//! use roster::testing::FreshRegistry;
//!
//! roster::roster_conformance!(sqlite_registry, {
//!     let dir = tempfile::tempdir()?;
//!     let registry = SqliteRegistry::open(dir.path().join("roster.db"))?;
//!     FreshRegistry::with_guard(registry, dir)
//! });
//! # fn main() {}
//! ```
//!
//! ([`temporary_sqlite`] is that factory, ready made.)
//!
//! # Timestamp precision
//!
//! The only parameter a backend gives the contract is the precision to which
//! it keeps `last_heartbeat`. roster's own registries keep nanoseconds, the
//! default; a backend that keeps microseconds, as PostgreSQL does, says so,
//! and the cases then compare registered and heartbeat times to the
//! microsecond (every other field stays exact):
//!
//! ```
//! use roster::MemoryRegistry;
//! use roster::testing::Precision;
//!
//! roster::roster_conformance!(
//!     memory_registry,
//!     MemoryRegistry::new(),
//!     precision = Precision::Microseconds
//! );
//! # fn main() {}
//! ```
//!
//! # One part at a time
//!
//! `roster_conformance!(cases: NAME, FACTORY)`, `model: ...` and
//! `claims: ...` expand into one part only, directly in module `NAME`. A
//! harness without the macro can run the same tests through [`Contract`]
//! and the case table [`CASES`].

pub mod cases;
pub mod claims;
pub mod model;

use std::any::Any;
use std::fmt;
use std::ops::Deref;

use chrono::{DateTime, TimeDelta, Utc};

use crate::registry::AgentRegistry;

/// What a factory or a test of the contract can fail with, besides a failed
/// assertion (which panics, as in any test).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A conformance case: it receives a fresh, empty registry and checks one
/// rule of the contract, failing by panic or by returning an error.
pub type Case = fn(&Subject<'_>) -> crate::Result<()>;

/// A conformance case and its name, as listed in [`CASES`].
#[derive(Clone, Copy, Debug)]
pub struct NamedCase {
    /// The case's function name in [`cases`].
    pub name: &'static str,
    /// The case itself.
    pub run: Case,
}

/// Every conformance case of [`cases`], in the order of the suite: the same
/// list [`roster_conformance!`](crate::roster_conformance) expands.
pub const CASES: &[NamedCase] = crate::roster_conformance!(@each_case table);

/// How finely a backend keeps `last_heartbeat`.
///
/// A backend keeps a time to its precision when what it gives back differs
/// from what it was given by less than one unit: truncating and rounding
/// both qualify.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Precision {
    /// Exactly, to the nanosecond (roster's own registries; the default).
    #[default]
    Nanoseconds,
    /// To the microsecond (PostgreSQL's `timestamptz`).
    Microseconds,
    /// To the millisecond.
    Milliseconds,
}

impl Precision {
    /// One unit of this precision.
    pub fn unit(self) -> TimeDelta {
        match self {
            Self::Nanoseconds => TimeDelta::nanoseconds(1),
            Self::Microseconds => TimeDelta::microseconds(1),
            Self::Milliseconds => TimeDelta::milliseconds(1),
        }
    }

    /// Whether `kept` is `given` as kept to this precision: they differ by
    /// less than one unit. For nanoseconds, that is equality.
    pub fn same_instant(self, kept: DateTime<Utc>, given: DateTime<Utc>) -> bool {
        (kept - given).abs() < self.unit()
    }

    /// Whether `kept` is a time between `earliest` and `latest`, both
    /// inclusive, as kept to this precision: at most one unit short of
    /// either end. For nanoseconds, that is `earliest <= kept <= latest`.
    pub fn within(
        self,
        kept: DateTime<Utc>,
        earliest: DateTime<Utc>,
        latest: DateTime<Utc>,
    ) -> bool {
        earliest - kept < self.unit() && kept - latest < self.unit()
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Nanoseconds => "nanoseconds",
            Self::Microseconds => "microseconds",
            Self::Milliseconds => "milliseconds",
        })
    }
}

/// A new, empty registry under test, and whatever must live as long as it.
///
/// The guard, if any, is dropped after the registry: a temporary directory
/// outlives the database file in it, a scratch database outlives the
/// connections to it.
///
/// ```
/// use roster::SqliteRegistry;
/// use roster::testing::FreshRegistry;
///
/// # fn main() -> Result<(), roster::testing::BoxError> {
/// let dir = tempfile::tempdir()?;
/// let registry = SqliteRegistry::open(dir.path().join("roster.db"))?;
/// let fresh = FreshRegistry::with_guard(registry, dir);
/// assert!(fresh.list()?.is_empty());
/// # Ok(())
/// # }
/// ```
pub struct FreshRegistry {
    // Declared first: dropped before the guard.
    registry: Box<dyn AgentRegistry>,
    guard: Option<Box<dyn Any>>,
}

impl FreshRegistry {
    /// A registry that needs nothing kept alive beside it.
    pub fn new(registry: impl AgentRegistry + 'static) -> Self {
        Self {
            registry: Box::new(registry),
            guard: None,
        }
    }

    /// A registry and a guard that is dropped right after it.
    pub fn with_guard(registry: impl AgentRegistry + 'static, guard: impl Any) -> Self {
        Self {
            registry: Box::new(registry),
            guard: Some(Box::new(guard)),
        }
    }
}

impl<R: AgentRegistry + 'static> From<R> for FreshRegistry {
    fn from(registry: R) -> Self {
        Self::new(registry)
    }
}

impl Deref for FreshRegistry {
    type Target = dyn AgentRegistry;

    fn deref(&self) -> &Self::Target {
        &*self.registry
    }
}

impl fmt::Debug for FreshRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FreshRegistry")
            .field("guarded", &self.guard.is_some())
            .finish_non_exhaustive()
    }
}

/// A [`SqliteRegistry`](crate::SqliteRegistry) in a new file of a new
/// temporary directory, which is removed once the registry is dropped.
///
/// # Errors
///
/// When the directory cannot be created or the registry cannot be opened.
pub fn temporary_sqlite() -> Result<FreshRegistry, BoxError> {
    let dir = tempfile::tempdir()?;
    let registry = crate::SqliteRegistry::open(dir.path().join("roster.db"))?;
    Ok(FreshRegistry::with_guard(registry, dir))
}

/// The registry a conformance [`Case`] checks, with the backend's
/// [`Precision`]. It dereferences to the registry under test.
pub struct Subject<'a> {
    registry: &'a dyn AgentRegistry,
    precision: Precision,
}

impl Subject<'_> {
    /// The precision to which the registry keeps `last_heartbeat`.
    pub fn precision(&self) -> Precision {
        self.precision
    }
}

/// Every call goes to the registry under test.
impl<'a> std::ops::Deref for Subject<'a> {
    type Target = dyn AgentRegistry + 'a;

    fn deref(&self) -> &Self::Target {
        self.registry
    }
}

impl fmt::Debug for Subject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subject")
            .field("precision", &self.precision)
            .finish_non_exhaustive()
    }
}

/// A backend's side of the contract: its factory and its precision. The
/// tests [`roster_conformance!`](crate::roster_conformance) generates are
/// one call each on a `Contract`.
///
/// ```
/// use roster::MemoryRegistry;
/// use roster::testing::{CASES, Contract, FreshRegistry};
///
/// # fn main() -> Result<(), roster::testing::BoxError> {
/// let contract = Contract::new(|| Ok(FreshRegistry::new(MemoryRegistry::new())));
/// for case in CASES {
///     contract.run(case.run)?;
/// }
/// # Ok(())
/// # }
/// ```
pub struct Contract {
    factory: Box<dyn Fn() -> Result<FreshRegistry, BoxError>>,
    precision: Precision,
    source_file: Option<&'static str>,
}

impl Contract {
    /// The contract for the registries `factory` makes: it must give a new,
    /// empty registry on every call. The precision is nanoseconds until
    /// [`precision`](Contract::precision) says otherwise.
    pub fn new(factory: impl Fn() -> Result<FreshRegistry, BoxError> + 'static) -> Self {
        Self {
            factory: Box::new(factory),
            precision: Precision::default(),
            source_file: None,
        }
    }

    /// The precision to which the backend keeps `last_heartbeat`.
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The test file that runs the contract (`file!()`, as the macro gives
    /// it): proptest keeps the failing inputs of the properties beside it
    /// (for `tests/NAME.rs`, in `tests/NAME.proptest-regressions`) and runs
    /// them first next time. Without it, failing inputs are not kept.
    pub fn source_file(mut self, source_file: &'static str) -> Self {
        self.source_file = Some(source_file);
        self
    }

    /// A new, empty registry from the factory.
    ///
    /// # Errors
    ///
    /// Whatever the factory fails with.
    pub fn fresh(&self) -> Result<FreshRegistry, BoxError> {
        (self.factory)()
    }

    /// Runs one conformance case on a fresh registry.
    ///
    /// # Errors
    ///
    /// Whatever the factory or the case fails with; a failed assertion
    /// panics.
    pub fn run(&self, case: Case) -> Result<(), BoxError> {
        let fresh = self.fresh()?;
        case(&Subject {
            registry: &*fresh,
            precision: self.precision,
        })?;
        Ok(())
    }

    /// The proptest configuration of a property run with `cases` inputs.
    pub(crate) fn proptest_config(&self, cases: u32) -> proptest::test_runner::Config {
        proptest::test_runner::Config {
            cases,
            source_file: self.source_file,
            ..proptest::test_runner::Config::default()
        }
    }
}

impl fmt::Debug for Contract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Contract")
            .field("precision", &self.precision)
            .field("source_file", &self.source_file)
            .finish_non_exhaustive()
    }
}

/// Panics with proptest's account of a failed property: the reason and the
/// smallest failing input it found.
pub(crate) fn report<T: fmt::Debug>(result: Result<(), proptest::test_runner::TestError<T>>) {
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// Expands the contract of [`roster::testing`](crate::testing) into
/// `#[test]` functions for one backend.
///
/// ```text
/// roster_conformance!(NAME, FACTORY);
/// roster_conformance!(NAME, FACTORY, precision = PRECISION);
/// roster_conformance!(cases: NAME, FACTORY);   // likewise model: and claims:
/// ```
///
/// - `NAME`: the module that holds the tests.
/// - `FACTORY`: an expression, evaluated afresh for every test, that gives
///   a new, empty registry: any [`AgentRegistry`](crate::AgentRegistry)
///   or a [`FreshRegistry`](crate::testing::FreshRegistry). It may use `?`
///   on any error. Paths in it resolve as in the module that invokes the
///   macro.
/// - `PRECISION`: a [`Precision`](crate::testing::Precision), nanoseconds
///   when left out.
///
/// The first form expands into the modules `NAME::cases`, `NAME::model` and
/// `NAME::claims`; `cases:`, `model:` and `claims:` expand into one of them,
/// as module `NAME`. Arms starting with `@` are internal.
///
/// ```
/// use roster::MemoryRegistry;
///
/// roster::roster_conformance!(memory_registry, MemoryRegistry::new());
/// roster::roster_conformance!(claims: sqlite_claims, roster::testing::temporary_sqlite()?);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! roster_conformance {
    (cases: $name:ident, $make:expr $(, precision = $precision:expr)? $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn contract() -> $crate::testing::Contract {
                $crate::roster_conformance!(@contract $make $(, $precision)?)
            }

            $crate::roster_conformance!(@each_case tests);
        }
    };
    (model: $name:ident, $make:expr $(, precision = $precision:expr)? $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn contract() -> $crate::testing::Contract {
                $crate::roster_conformance!(@contract $make $(, $precision)?)
            }

            $crate::roster_conformance!(@tests model; registry_agrees_with_the_model);
        }
    };
    (claims: $name:ident, $make:expr $(, precision = $precision:expr)? $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn contract() -> $crate::testing::Contract {
                $crate::roster_conformance!(@contract $make $(, $precision)?)
            }

            $crate::roster_conformance!(@tests claims;
                claim_picks_what_the_router_picks,
                claim_picks_what_the_router_picks_in_large_registries,
                rare_labels_late_in_routing_order_are_found,
                an_offline_head_of_the_routing_order_is_skipped,
            );
        }
    };
    ($name:ident, $make:expr $(, precision = $precision:expr)? $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $crate::roster_conformance!(cases: cases, $make $(, precision = $precision)?);
            $crate::roster_conformance!(model: model, $make $(, precision = $precision)?);
            $crate::roster_conformance!(claims: claims, $make $(, precision = $precision)?);
        }
    };
    (@contract $make:expr) => {
        $crate::testing::Contract::new(
            || -> ::std::result::Result<$crate::testing::FreshRegistry, $crate::testing::BoxError> {
                ::std::result::Result::Ok($crate::testing::FreshRegistry::from($make))
            },
        )
        .source_file(::std::file!())
    };
    (@contract $make:expr, $precision:expr) => {
        $crate::roster_conformance!(@contract $make).precision($precision)
    };
    (@tests $part:ident; $($test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() -> ::std::result::Result<(), $crate::testing::BoxError> {
                $crate::testing::$part::$test(&contract())
            }
        )*
    };
    // The list of conformance cases, handed to `@case_tests` or
    // `@case_table`. A new case in `testing/cases.rs` is added here.
    (@each_case $mode:ident) => {
        $crate::roster_conformance! {@case $mode;
            get_returns_exactly_what_was_registered,
            duplicate_capabilities_are_dropped_in_order,
            register_replaces_everything_including_capabilities,
            register_without_capabilities,
            list_is_ordered_by_id,
            unknown_ids_are_not_found,
            deregister_removes,
            heartbeat_sets_now_and_revives_offline,
            heartbeat_keeps_busy_busy,
            reap_marks_stale_agents_offline_once,
            reap_with_nothing_stale_is_empty,
            reap_refuses_an_impossible_ttl,
            empty_id_is_required,
            bad_ids_are_refused,
            bad_names_are_refused,
            empty_names_are_accepted,
            look_alike_ids_and_capabilities_are_refused,
            bad_capabilities_are_refused,
            load_above_max_is_refused,
            refused_input_changes_nothing,
            claim_prefers_the_lowest_usage,
            claim_critical_prefers_the_lowest_load,
            claim_ties_go_to_the_smallest_id,
            claim_skips_full_and_offline_agents,
            claim_needs_every_label,
            claim_without_labels_takes_any_agent,
            claim_with_an_unknown_label_finds_nobody,
            claim_refuses_bad_labels,
            claim_fills_capacity_exactly,
            claim_agrees_with_the_router,
            release_gives_a_slot_back,
            release_refuses_what_it_cannot_do,
            json_from_go_round_trips_exactly,
            an_agent_never_seen_is_reaped,
            drained_agents_get_no_claims_and_register_keeps_the_drain,
            set_status_changes_only_the_status,
            bad_metadata_is_refused,
            claims_are_rows_with_growing_tokens,
            claims_refuse_held_tasks_bad_ids_and_empty_leases,
            renew_extends_a_lease_and_refuses_stale_tokens,
            recover_takes_back_what_is_due_once_with_its_reason,
            register_keeps_claims_and_new_agents_do_not_inherit_them,
            every_transition_is_one_event,
            events_read_in_pages_from_a_cursor,
            watch_wakes_on_a_change_and_times_out_without_one,
        }
    };
    (@case tests; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() -> ::std::result::Result<(), $crate::testing::BoxError> {
                contract().run($crate::testing::cases::$case)
            }
        )*
    };
    (@case table; $($case:ident),* $(,)?) => {
        &[$(
            $crate::testing::NamedCase {
                name: ::std::stringify!($case),
                run: $crate::testing::cases::$case,
            },
        )*]
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `pub fn` of `cases.rs` is in [`CASES`] (and so in the macro),
    /// once, in file order, and each has a doc comment naming its rule.
    #[test]
    fn every_case_is_listed_and_says_its_rule() {
        let source = include_str!("cases.rs");
        let lines: Vec<&str> = source.lines().collect();
        let mut found = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let Some(rest) = line.trim_start().strip_prefix("pub fn ") else {
                continue;
            };
            let name = rest.split('(').next().unwrap_or_default();
            found.push(name);
            let doc: Vec<&str> = lines[..i]
                .iter()
                .rev()
                .map(|l| l.trim_start())
                .take_while(|l| l.starts_with("///"))
                .collect();
            assert!(
                doc.iter().any(|l| l.contains(": \"")),
                "case {name} has no doc line quoting its rule"
            );
        }
        let listed: Vec<&str> = CASES.iter().map(|case| case.name).collect();
        assert_eq!(listed, found);
    }

    #[test]
    fn precision_compares_to_less_than_one_unit() {
        let t = DateTime::parse_from_rfc3339("2026-11-24T15:04:05.123456789Z")
            .expect("time")
            .with_timezone(&Utc);
        let micro = DateTime::parse_from_rfc3339("2026-11-24T15:04:05.123456Z")
            .expect("time")
            .with_timezone(&Utc);
        assert!(Precision::Nanoseconds.same_instant(t, t));
        assert!(!Precision::Nanoseconds.same_instant(micro, t));
        assert!(Precision::Microseconds.same_instant(micro, t));
        assert!(Precision::Microseconds.same_instant(micro + TimeDelta::microseconds(1), t));
        assert!(!Precision::Microseconds.same_instant(micro - TimeDelta::microseconds(1), t));
        assert!(Precision::Milliseconds.same_instant(micro, t));

        let later = t + TimeDelta::seconds(1);
        assert!(Precision::Nanoseconds.within(t, t, later));
        assert!(!Precision::Nanoseconds.within(micro, t, later));
        assert!(Precision::Microseconds.within(micro, t, later));
        assert!(!Precision::Microseconds.within(micro - TimeDelta::microseconds(1), t, later));
        assert!(!Precision::Microseconds.within(later + TimeDelta::microseconds(1), t, later));
    }
}
