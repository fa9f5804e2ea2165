//! Link options of the shim, which the loader maps into every process of a run: each dynamic
//! symbol it imports or binds costs a lookup at every process start.
//! - `-nostartfiles`: no crtbegin/crtend; they import `__cxa_finalize`, `__gmon_start__` and
//!   the `_ITM_*` pair (four lookups) for C++ and profiling hooks the shim never uses (its
//!   constructor is a plain `.init_array` entry, which the loader runs without them).
//! - `-Bsymbolic`: the shim's references to its own exported functions (`listen`,
//!   `getaddrinfo`, ... compared with what `dlsym(RTLD_NEXT)` returns) bind inside the shim
//!   at link time instead of through a lookup each at load.
//! - `-z noseparate-code`: code and read-only data share LOAD segments (fewer mappings).
fn main() {
    for arg in ["-nostartfiles", "-Wl,-Bsymbolic", "-Wl,-z,noseparate-code"] {
        println!("cargo:rustc-link-arg-cdylib={arg}");
    }
}
