//! One policy (`roster::testing::claims`): for random registries and random
//! tasks, `claim` picks the agent that `DefaultRouter` picks over `list()`, or
//! both find none, on each implementation.

use roster::MemoryRegistry;

roster::roster_conformance!(claims: memory_registry, MemoryRegistry::new());
roster::roster_conformance!(claims: sqlite_registry, roster::testing::temporary_sqlite()?);
