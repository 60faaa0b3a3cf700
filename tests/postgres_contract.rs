//! The contract of `roster::testing` (conformance cases, model check, claim
//! property) against PostgreSQL: a real server, the one `ROSTER_PG_URL`
//! names or a throwaway cluster the tests start, each registry in a fresh
//! schema. PostgreSQL keeps times to the microsecond.

mod common;

roster::roster_conformance!(
    postgres,
    crate::common::pg::fresh()?,
    precision = roster::testing::Precision::Microseconds
);

// claim's generic path: the eligible agents read in one transaction, a
// router (DefaultRouter itself, given explicitly) asked, the slot taken if
// its choice is still eligible.
roster::roster_conformance!(
    claims: postgres_generic_path,
    crate::common::pg::fresh_with(roster::PostgresOptions::new().router(roster::DefaultRouter::new()))?,
    precision = roster::testing::Precision::Microseconds
);
