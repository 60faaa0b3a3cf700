//! The conformance cases of `roster::testing`, one `#[test]` per case, run
//! against every `AgentRegistry` implementation: the same calls must give the
//! same answers and the same errors. The cases live in `src/testing/cases.rs`.

use roster::MemoryRegistry;

roster::roster_conformance!(cases: memory_registry, MemoryRegistry::new());
roster::roster_conformance!(cases: sqlite_registry, roster::testing::temporary_sqlite()?);
