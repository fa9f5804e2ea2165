//! What loading the shim costs every process of a run (issue 10: start-up near an empty
//! library's): the shim nettrap writes for a run is read back and its program headers checked,
//! so a change of link options or a new large `static` that would cost every process start one
//! more system call fails here rather than only in a benchmark (shim/src/build.rs says why each
//! holds, src/tables.rs how the large tables stay out of the loader's way).
//! - Two LOAD segments (read+execute, read+write): the loader maps them with two `mmap`s.
//! - No RELRO segment: no `mprotect` after relocation.
//! - The writable segment's zero-filled part (`.bss`) ends in the page its file part ends in:
//!   the loader maps no anonymous memory for it.

use crate::common::*;

const PT_LOAD: u32 = 1;
const PT_GNU_RELRO: u32 = 0x6474_e552;
const PF_W: u32 = 2;
const PAGE: u64 = 4096;

/// (type, flags, vaddr, filesz, memsz) of each program header of a 64-bit little-endian ELF.
fn program_headers(elf: &[u8]) -> Vec<(u32, u32, u64, u64, u64)> {
    assert_eq!(&elf[..6], b"\x7fELF\x02\x01", "a 64-bit little-endian ELF");
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
    (0..usize::from(phnum))
        .map(|i| {
            let p = phoff + i * usize::from(phentsize);
            (
                u32_at(p),
                u32_at(p + 4),
                u64_at(p + 16),
                u64_at(p + 32),
                u64_at(p + 40),
            )
        })
        .collect()
}

#[test]
fn the_loader_maps_the_shim_with_two_mappings_and_nothing_else() {
    let dir = scratch("load-layout");
    let run = run_in(
        "load-layout",
        &dir,
        &["--engine", "preload"],
        &["sh", "-c", r#"printf '%s' "$LD_PRELOAD""#],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let path = run.stdout();
    assert!(path.ends_with("libnettrap_shim.so"), "{path:?}");
    assert_two_mappings(&std::fs::read(path.trim()).unwrap());
}

/// The shim builds, with the same layout, when rustc links with GNU ld (as rustc does before
/// 1.90, within nettrap's rust-version, and on targets other than x86_64-unknown-linux-gnu;
/// or when a project's cargo configuration picks its linker): lld's `--no-rosegment` is not an
/// option GNU ld knows (shim/src/build.rs passes it only to a linker that takes it).
#[test]
fn the_shim_builds_and_keeps_its_layout_with_gnu_ld() {
    // Its own target directory, kept between runs (only the first is slow).
    let target = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("shim-gnu-ld");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["build", "--profile", "shim", "--quiet", "--manifest-path"])
        .arg(repo().join("shim/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        // -fuse-ld=bfd after rustc's own -fuse-ld=lld (rust-lld since Rust 1.90) wins.
        .env("RUSTFLAGS", "-Clink-arg=-fuse-ld=bfd")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building the shim with GNU ld (binutils' ld.bfd) failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built = target.join("shim/libnettrap_shim.so");
    let elf = std::fs::read(&built).unwrap();
    let comment = String::from_utf8_lossy(&elf);
    assert!(
        !comment.contains("Linker: LLD"),
        "{} was linked by lld, not GNU ld",
        built.display()
    );
    assert_two_mappings(&elf);
}

/// Two LOAD segments, no RELRO, and a zero-filled part that needs no mapping of its own.
fn assert_two_mappings(elf: &[u8]) {
    let headers = program_headers(elf);
    let loads: Vec<_> = headers.iter().filter(|h| h.0 == PT_LOAD).collect();
    assert_eq!(loads.len(), 2, "LOAD segments: {headers:x?}");
    assert!(
        !headers.iter().any(|h| h.0 == PT_GNU_RELRO),
        "a RELRO segment (one mprotect per process): {headers:x?}"
    );
    let writable: Vec<_> = loads.iter().filter(|h| h.1 & PF_W != 0).collect();
    assert_eq!(writable.len(), 1, "{headers:x?}");
    let &&(_, _, vaddr, filesz, memsz) = writable[0];
    let file_end = (vaddr + filesz).next_multiple_of(PAGE);
    assert!(
        vaddr + memsz <= file_end,
        "the zero-filled part ({} bytes) runs {} bytes past the page the file part ends in: \
         the loader maps anonymous memory for it in every process (move a large static out: \
         shim/src/tables.rs)",
        memsz - filesz,
        vaddr + memsz - file_end
    );
}
