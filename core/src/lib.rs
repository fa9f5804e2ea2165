//! nettrap-core: the pieces that must be identical wherever a call is intercepted.
//!
//! The LD_PRELOAD shim (inside the test's processes) and the seccomp supervisor (inside the
//! `nettrap` launcher) both decode the destination of a call, ask the same compiled policy what
//! to do with it, and append the same event record to the run's shared event log. Keeping these
//! here is what makes "one policy decision, one place" true.
//!
//! Everything outside the `alloc` feature is `no_std`, allocation-free and lock-free, because the
//! shim calls it inside other people's programs: after `fork()`, inside signal handlers, on any
//! thread.

#![no_std]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod addr;
pub mod event;
pub mod glob;
pub mod msg;
pub mod names;
pub mod policy;
pub mod test_id;
