//! One contract, checked by a model (`roster::testing::model`): random
//! sequences of every operation, valid and invalid, give the same answers,
//! the same errors and the same state on each implementation as on a plain
//! model of the contract.

use roster::MemoryRegistry;

roster::roster_conformance!(model: memory_registry, MemoryRegistry::new());
roster::roster_conformance!(model: sqlite_registry, roster::testing::temporary_sqlite()?);
