//! Nothing escapes silently (issue 7): one case per path on which a call could once pass with
//! no trace, or a verdict be lost. Each case runs a real program under every engine it applies
//! to and asserts that the call is denied or counted, and the exit status. One module per area:
//! `addr` (what the kernel accepts as a destination), `shim` (the shim's mapping and first-call
//! wait), `load` (what loading the shim costs a process), `lost` (losses failing enforce runs),
//! `outputs` (report files), `tree` (leftover processes), `stderr` (where the denial line goes).

#[path = "../common/mod.rs"]
mod common;

mod addr;
mod hot_path;
mod load;
mod lost;
mod outputs;
mod shim;
mod stderr;
mod supervisor;
mod tree;
