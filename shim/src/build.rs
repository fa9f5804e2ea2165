//! Link options of the shim, which the loader maps into every process of a run: each dynamic
//! symbol it imports or binds costs a lookup at every process start.
//! - `-nostartfiles`: no crtbegin/crtend; they import `__cxa_finalize`, `__gmon_start__` and
//!   the `_ITM_*` pair (four lookups) for C++ and profiling hooks the shim never uses (its
//!   constructor is a plain `.init_array` entry, which the loader runs without them).
//! - `-Bsymbolic`: the shim's references to its own exported functions (`listen`,
//!   `getaddrinfo`, ... compared with what `dlsym(RTLD_NEXT)` returns) bind inside the shim
//!   at link time instead of through a lookup each at load.
//! - `-z noseparate-code`, `--no-rosegment`, `-z norelro`: two LOAD segments, one read and
//!   execute (the headers, read-only data and code), one read and write (the rest), so the
//!   loader maps the shim with two `mmap`s and no `mprotect` (lld's default was four segments,
//!   one more `mmap` and an `mprotect` for RELRO). What this gives up, for a library loaded
//!   into test processes only: read-only data is executable too (as every GNU ld layout was
//!   before `-z separate-code`), and the few words RELRO would make read-only after relocation
//!   (the constructor's `.init_array` entry, `.data.rel.ro`'s pointers, `.dynamic`) stay
//!   writable; the shim imports nothing, so it has no GOT slots of other libraries to protect.
//!   The zero-filled part of the writable segment (`.bss`) fits in the page its file part ends
//!   in, so the loader needs no anonymous mapping for it either: the large tables are mapped by
//!   the process when it needs them (src/tables.rs). tests/escapes/load.rs holds the shim to
//!   this layout.
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
