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
//!   `--no-rosegment` is lld's (rust-lld, rustc's linker on x86_64 Linux since 1.90); GNU ld
//!   rejects it, and needs it not: with `-z noseparate-code` it lays the headers, read-only
//!   data and code out in one segment anyway. So it is passed only when a probe (a tiny library
//!   linked as rustc links this one) shows the linker takes it.
//! - A linker script fragment (`INSERT AFTER .got`, which lld and GNU ld both take) puts the
//!   zero-initialised statics (`.bss`) into `.data`: the writable segment is then all file, and
//!   the loader needs no anonymous mapping for a zero-filled part, wherever the code's size puts
//!   the segment's start in its page (a few KB of zeros in the file; the large tables are mapped
//!   by the process when it needs them, src/tables.rs). tests/escapes/load.rs holds the shim to
//!   this layout.
//! - `--defsym memcpy=nettrap_memcpy` (and memset, bcmp, strlen): the memory functions the
//!   compiler calls bind to the shim's own (src/mem.rs), local to it, instead of four imports.
fn main() {
    for arg in [
        "-nostartfiles",
        "-Wl,-Bsymbolic",
        "-Wl,-z,noseparate-code",
        "-Wl,-z,norelro",
        "-Wl,--defsym=memcpy=nettrap_memcpy",
        "-Wl,--defsym=memset=nettrap_memset",
        "-Wl,--defsym=bcmp=nettrap_bcmp",
        "-Wl,--defsym=strlen=nettrap_strlen",
    ] {
        println!("cargo:rustc-link-arg-cdylib={arg}");
    }
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let script = out.join("bss_in_data.ld");
    std::fs::write(
        &script,
        "SECTIONS\n{\n  .data : { *(.data .data.*) *(.bss .bss.*) *(COMMON) }\n}\nINSERT AFTER .got;\n",
    )
    .expect("cannot write the shim's linker script");
    println!("cargo:rustc-link-arg-cdylib=-Wl,-T,{}", script.display());
    if linker_takes("-Wl,--no-rosegment") {
        println!("cargo:rustc-link-arg-cdylib=-Wl,--no-rosegment");
    }
}

/// Whether the linker rustc uses for the shim accepts `arg`: an empty library linked with it,
/// with this build's compiler, target, flags and linker.
fn linker_takes(arg: &str) -> bool {
    use std::path::PathBuf;
    let var = |key: &str| std::env::var_os(key);
    let out = PathBuf::from(var("OUT_DIR").expect("OUT_DIR"));
    let src = out.join("link_probe.rs");
    if std::fs::write(&src, "").is_err() {
        return false;
    }
    let mut cmd = std::process::Command::new(var("RUSTC").unwrap_or_else(|| "rustc".into()));
    cmd.args([
        "--crate-type",
        "cdylib",
        "--crate-name",
        "link_probe",
        "--emit",
        "link",
    ])
    .arg("--out-dir")
    .arg(&out)
    .arg("--target")
    .arg(var("TARGET").expect("TARGET"));
    if let Ok(flags) = std::env::var("CARGO_ENCODED_RUSTFLAGS") {
        cmd.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    }
    if let Some(linker) = var("RUSTC_LINKER") {
        cmd.arg("-C").arg({
            let mut a = std::ffi::OsString::from("linker=");
            a.push(linker);
            a
        });
    }
    cmd.arg("-C")
        .arg(format!("link-arg={arg}"))
        .arg(&src)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let takes = cmd.status().is_ok_and(|s| s.success());
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(out.join("liblink_probe.so"));
    takes
}
