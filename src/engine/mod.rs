//! Engines: how a run's calls are intercepted.
//!
//! `preload` puts the shim into every dynamically linked process of the tree through
//! `LD_PRELOAD`. (The seccomp engine, for what bypasses libc, is tracked separately.)

pub mod preload;
