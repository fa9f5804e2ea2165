//! Link options of the shim, which the loader maps into every process of a run: each dynamic
//! symbol it imports or binds costs a lookup at every process start.
//! - `-nostartfiles`: no crtbegin/crtend; they import `__cxa_finalize`, `__gmon_start__` and
//!   the `_ITM_*` pair (four lookups) for C++ and profiling hooks the shim never uses (its
//!   constructor is a plain `.init_array` entry, which the loader runs without them).
//! - `-Bsymbolic`: the shim's references to its own exported functions (`listen`,
//!   `getaddrinfo`, ... compared with what `dlsym(RTLD_NEXT)` returns) bind inside the shim
//!   at link time instead of through a lookup each at load.
//! - `-z noseparate-code`: code and read-only data share LOAD segments (fewer mappings).
//! - `--defsym memcpy=nettrap_memcpy` (and memset, bcmp, strlen): the memory functions the
//!   compiler calls bind to the shim's own (src/mem.rs), local to it, instead of four imports.
fn main() {
    for arg in [
        "-nostartfiles",
        "-Wl,-Bsymbolic",
        "-Wl,-z,noseparate-code",
        "-Wl,-z,norelro",
        "-Wl,--no-rosegment",
        "-Wl,--defsym=memcpy=nettrap_memcpy",
        "-Wl,--defsym=memset=nettrap_memset",
        "-Wl,--defsym=bcmp=nettrap_bcmp",
        "-Wl,--defsym=strlen=nettrap_strlen",
    ] {
        println!("cargo:rustc-link-arg-cdylib={arg}");
    }
}
