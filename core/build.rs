//! Tells crates that depend on nettrap-core where its sources are (`DEP_NETTRAP_CORE_ROOT`,
//! through `links`): the launcher's build script builds the shim, which depends on this crate,
//! from a packaged copy of nettrap where `core/` is not beside it.

fn main() {
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    println!("cargo:root={root}");
    println!("cargo:rerun-if-changed=build.rs");
}
