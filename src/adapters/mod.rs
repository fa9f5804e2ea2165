//! Runner adapters: what a test runner does, published into the attribution timeline
//! (`src/attribution/SPEC.md`).

pub mod go;
