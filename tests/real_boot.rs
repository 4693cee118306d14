//! The real path: real kernels (Debian's linux-source), real cross
//! compilers, real qemu-system-*. Runs only with KMATRIX_TEST_REAL=1 (CI sets
//! it, so a missing tool fails there); otherwise each test says it skipped.
//!
//! One kernel per machine serves the whole real tier: the `debug` profile
//! (`--profile debug`, the matrix's `debug` config), built by gcc from 6.1,
//! arm's by clang from 6.12 (tests/common `shared_kernel`), which boot, gdb,
//! module and sweep tests all use. Kernels are built once into a shared
//! cache (KMATRIX_TEST_CACHE, default target/kmatrix-test-cache) and reused
//! by every test and every later run, two builds at a time at most
//! (`common::build`).

mod common;
use common::kmatrix;
use std::process::Output;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Builds (or reuses) a machine's kernel (`common::build`: in a build slot
/// the first time).
fn ensure_built(extra: &[&str]) {
    let mut args = vec!["build"];
    args.extend_from_slice(extra);
    let out = common::build(&args);
    assert_eq!(out.status.code(), Some(0), "build failed");
}

fn boot_check(arch: &str) {
    ensure_built(&[&["--arch", arch, "--profile", "debug"][..], common::shared_kernel(arch)].concat());
    let out = kmatrix(&[&["boot", "--arch", arch, "--profile", "debug"][..], common::shared_kernel(arch), &["--check"]].concat());
    let s = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(s.starts_with("PASS"), "{s}");
    assert!(s.contains("boot to marker"), "{s}");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn boot_check_x86_64() {
    boot_check("x86_64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn boot_check_aarch64() {
    boot_check("aarch64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn boot_check_arm_versatilepb() {
    boot_check("arm");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn boot_check_mips64_big_endian() {
    boot_check("mips64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn boot_check_mips64el() {
    boot_check("mips64el");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn aarch64_cmd_prints_guest_output() {
    ensure_built(&["--arch", "aarch64", "--profile", "debug"]);
    let out = kmatrix(&["boot", "--arch", "aarch64", "--profile", "debug", "--cmd", "cat /proc/cpuinfo", "--cmd", "uname -m"]);
    let s = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(s.contains("$ cat /proc/cpuinfo"), "{s}");
    assert!(s.contains("CPU implementer"), "guest /proc/cpuinfo not shown: {s}");
    assert!(s.contains("aarch64\n[exit status 0]"), "{s}");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn failing_guest_command_fails_the_check() {
    ensure_built(&["--arch", "aarch64", "--profile", "debug"]);
    let out = kmatrix(&["boot", "--arch", "aarch64", "--profile", "debug", "--cmd", "exit 7"]);
    let s = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(s.contains("[exit status 7]"), "{s}");
    assert!(s.starts_with("CMD-FAIL") || s.contains("\nCMD-FAIL"), "{s}");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn dropped_config_symbol_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let frag = dir.path().join("virtio.config");
    // VIRTIO_BLK needs BLOCK and VIRTIO, both off in tinyconfig:
    // olddefconfig silently drops it.
    std::fs::write(&frag, "CONFIG_VIRTIO_BLK=y\n").unwrap();
    // Stops after configuring: no build slot needed.
    let out = kmatrix(&["build", "--arch", "x86_64", "--fragment", frag.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("CONFIG_VIRTIO_BLK: requested y, got is not set (from virtio)"), "{err}");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn missing_init_is_a_panic_not_a_pass() {
    // The shared arm kernel, told to run an init that does not exist: the
    // kernel panics ("No working init found"), QEMU exits 0 under
    // -no-reboot, and the verdict must still be PANIC.
    ensure_built(&[&["--arch", "arm", "--profile", "debug"][..], common::shared_kernel("arm")].concat());
    let out = kmatrix(&[&["boot", "--arch", "arm", "--profile", "debug"][..], common::shared_kernel("arm"), &["--append", "rdinit=/does-not-exist init=/does-not-exist", "--check"]].concat());
    let s = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(s.starts_with("PANIC"), "a kernel that finds no init must not pass: {s}");
    assert!(s.contains("Kernel panic - not syncing"), "{s}");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn hanging_init_is_a_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("hang.c");
    let bin = dir.path().join("hang");
    std::fs::write(&src, "#include <unistd.h>\nint main(void) { for (;;) pause(); }\n").unwrap();
    let st = std::process::Command::new("gcc").args(["-static", "-Os", "-o"]).arg(&bin).arg(&src).status().unwrap();
    assert!(st.success(), "host gcc -static failed");
    ensure_built(&["--arch", "x86_64", "--profile", "debug"]);
    let t = std::time::Instant::now();
    let out = kmatrix(&["boot", "--arch", "x86_64", "--profile", "debug", "--check", "--init", bin.to_str().unwrap(), "--no-output-timeout", "5", "--timeout", "90"]);
    let s = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(s.starts_with("TIMEOUT"), "{s}");
    assert!(t.elapsed().as_secs() < 60, "the silent-console watchdog, not the overall timeout, must fire");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn doctor_finds_everything_for_qemu_boards() {
    for arch in ["x86_64", "aarch64", "arm", "mips64", "mips64el"] {
        let out = kmatrix(&["doctor", "--arch", arch]);
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    }
}
