//! Shared by the real-path tests: the switch, the shared kernel cache, and
//! running the kmatrix binary.
#![allow(dead_code)]

pub mod fake;
pub mod procs;
use std::path::{Path, PathBuf};
use std::process::Output;

// The real tier: tests that need compilers, QEMU and gdb carry
// `#[cfg_attr(not(kmatrix_real), ignore = "...")]`; build.rs sets
// `kmatrix_real` when KMATRIX_TEST_REAL=1 (CI), so without it they show as
// `ignored` with the reason, never as a silent pass.

/// The kernel cache shared by every real test (built once per machine).
pub fn cache() -> PathBuf {
    std::env::var_os("KMATRIX_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/kmatrix-test-cache"))
}

/// Runs kmatrix in `dir` with the shared cache; echoes its output.
pub fn kmatrix_in(dir: &Path, args: &[&str]) -> Output {
    let out = assert_cmd::Command::cargo_bin("kmatrix")
        .unwrap()
        .current_dir(dir)
        .env("KMATRIX_CACHE_DIR", cache())
        .env("CI", "1")
        .args(args)
        .timeout(std::time::Duration::from_secs(2400))
        .output()
        .unwrap();
    eprintln!("$ kmatrix {}\n{}{}", args.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

/// Runs kmatrix from an empty directory (only the built-in descriptors).
pub fn kmatrix(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    kmatrix_in(dir.path(), args)
}
