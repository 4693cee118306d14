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

/// The arguments that pick a machine's shared real-tier kernel (after
/// `--arch`). Every machine's is the debug profile built by gcc from
/// Debian's 6.1, except arm's: clang (LLVM=1) from 6.12. So the matrix's
/// second compiler, its second kernel and a version-dependent descriptor
/// value (versatilepb's dtb moved in 6.5) are built and used for real by the
/// boot, gdb, lab and sweep tests, without a kernel build of their own.
pub fn shared_kernel(arch: &str) -> &'static [&'static str] {
    if arch == "arm" {
        &["--toolchain", "clang", "--kernel", "6.12"]
    } else {
        &[]
    }
}

/// The Linux version of `shared_kernel(arch)`.
pub fn shared_version(arch: &str) -> &'static str {
    if arch == "arm" {
        "6.12"
    } else {
        "6.1"
    }
}

/// At most two kernel builds at a time, across every test process (the
/// runner may be nextest, one process per test, or libtest, one per
/// binary). Each make uses every core, but about a sixth of a build's wall
/// on two cores is serial (configure, the vmlinux link, objcopy): a second
/// build fills it, while more would only compete for memory and the 2400 s
/// timeout. The slots are flock()s on two files in the test cache, so a
/// test that crashes frees its slot with its process.
pub fn build_slot() -> FileLock {
    loop {
        for i in 0..2 {
            if let Some(l) = FileLock::take(&format!("build-slot-{i}"), false) {
                return l;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// Runs `kmatrix <args>` (a `build`) so that at most two builds run at once
/// and a test that only reuses a kernel never waits for a slot: tests that
/// ask for the same kernel queue on a lock of their own, the first takes a
/// build slot, and once one has built it a marker (keyed by the kmatrix
/// binary, so a rebuilt kmatrix with other descriptors asks again) lets the
/// rest run `kmatrix build` — a cache hit — without one. kmatrix's own cache
/// lock still decides what is built; this only spreads the machine.
pub fn build(args: &[&str]) -> Output {
    let key = kernel_key(args);
    let _same_kernel = exclusive(&key);
    let marker = cache().join("test-locks").join(format!("{key}.built"));
    let bin = std::fs::metadata(env!("CARGO_BIN_EXE_kmatrix")).and_then(|m| m.modified()).map(|t| format!("{t:?}")).unwrap_or_default();
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == bin) {
        return kmatrix(args);
    }
    let out = {
        let _slot = build_slot();
        kmatrix(args)
    };
    if out.status.success() {
        let _ = std::fs::write(&marker, bin);
    }
    out
}

fn kernel_key(args: &[&str]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    args.hash(&mut h);
    format!("kernel-{:016x}", h.finish())
}

fn shared_args(arch: &str) -> Vec<&str> {
    [&["build", "--arch", arch, "--profile", "debug"][..], shared_kernel(arch)].concat()
}

/// Builds (or reuses) `arch`'s shared real-tier kernel ([`shared_kernel`]).
pub fn build_shared(arch: &str) {
    assert_eq!(build(&shared_args(arch)).status.code(), Some(0), "building the shared {arch} kernel failed");
}

/// For a test that builds `arch`'s shared kernel by other means (a sweep):
/// holds that kernel's queue and a build slot, as [`build`] would.
pub fn building_shared(arch: &str) -> (FileLock, FileLock) {
    let same_kernel = exclusive(&kernel_key(&shared_args(arch)));
    (same_kernel, build_slot())
}

/// One test at a time holds `name` across every test process (for tests
/// that each load the machine with a whole sweep, or share one gem5).
pub fn exclusive(name: &str) -> FileLock {
    FileLock::take(name, true).expect("a blocking flock returns held")
}

/// A held flock() on `<test cache>/test-locks/<name>.lock`; dropping it
/// (or the process ending) releases it.
pub struct FileLock(#[allow(dead_code)] std::fs::File);

impl FileLock {
    fn take(name: &str, block: bool) -> Option<FileLock> {
        use std::os::fd::AsRawFd;
        let dir = cache().join("test-locks");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let path = dir.join(format!("{name}.lock"));
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let op = if block { libc::LOCK_EX } else { libc::LOCK_EX | libc::LOCK_NB };
        loop {
            if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
                return Some(FileLock(f));
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) if !block => return None,
                _ => panic!("flock {}: {e}", path.display()),
            }
        }
    }
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
