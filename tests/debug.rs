//! Real gdb sessions (KMATRIX_TEST_REAL=1): each QEMU machine stops at
//! start_kernel with a source-level backtrace and working lx-* scripts, and
//! a module's init function is reachable after insmod via lx-symbols; and
//! through KGDB instead of the emulator's stub, gdb stops at `kgdbwait`'s
//! breakpoint over the board's second serial line; and kdb's shell on that
//! line runs `bt` and `go`.

mod common;
use common::kmatrix;

fn stops_at_start_kernel(arch: &str) {
    common::build_shared(arch);
    let out = kmatrix(&[&["debug", "--arch", arch][..], common::shared_kernel(arch), &["--batch", "--ex", "bt", "--ex", "lx-version"]].concat());
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{s}");
    let bt = regex::Regex::new(r"start_kernel \(\) at \S*init/main\.c:\d+").unwrap();
    assert!(bt.is_match(&s), "no start_kernel frame with init/main.c:<line>: {s}");
    assert!(s.contains(&format!("Linux version {}.", common::shared_version(arch))), "lx-version did not print the banner: {s}");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn gdb_x86_64() {
    stops_at_start_kernel("x86_64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn gdb_aarch64() {
    stops_at_start_kernel("aarch64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn gdb_arm_versatilepb() {
    stops_at_start_kernel("arm");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn gdb_mips64_big_endian() {
    stops_at_start_kernel("mips64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn gdb_mips64el() {
    stops_at_start_kernel("mips64el");
}

/// The same kernel, no emulator stub: `kgdboc=` on the board's KGDB line
/// and `kgdbwait`, so the kernel stops in kgdb_breakpoint during boot.
fn stops_at_the_kgdb_breakpoint(arch: &str) {
    common::build_shared(arch);
    let out = kmatrix(&[&["debug", "--arch", arch][..], common::shared_kernel(arch), &["--kgdb", "--batch", "--ex", "bt", "--ex", "lx-version"]].concat());
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{s}");
    let bt = regex::Regex::new(r"kgdb_breakpoint \(\) at \S*kernel/debug/debug_core\.c:\d+").unwrap();
    assert!(bt.is_match(&s), "no kgdb_breakpoint frame at kernel/debug/debug_core.c:<line>: {s}");
    assert!(s.contains("kgdb_initial_breakpoint") || s.contains("kgdb_register_io_module"), "not kgdbwait's stop: {s}");
    assert!(s.contains(&format!("Linux version {}.", common::shared_version(arch))), "lx-version over KGDB: {s}");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn kgdb_x86_64() {
    stops_at_the_kgdb_breakpoint("x86_64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn kgdb_aarch64() {
    stops_at_the_kgdb_breakpoint("aarch64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn kgdb_arm_versatilepb() {
    stops_at_the_kgdb_breakpoint("arm");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn kgdb_mips64_big_endian() {
    stops_at_the_kgdb_breakpoint("mips64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn kgdb_mips64el() {
    stops_at_the_kgdb_breakpoint("mips64el");
}

/// The same line with kdb: the kernel stops at `kgdbwait` in kdb's shell;
/// `bt` there shows kgdb's breakpoint trap, and after `go` the kernel runs on to
/// its init (kmatrix waits for "Run /init as init process").
fn kdb_shell_at_kgdbwait(arch: &str) {
    common::build_shared(arch);
    let out = kmatrix(&[&["debug", "--arch", arch][..], common::shared_kernel(arch), &["--kdb", "--batch", "--ex", "bt", "--ex", "go"]].concat());
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(s.contains("kdb> "), "no kdb prompt: {s}");
    // kgdbwait's breakpoint trap, taken by pid 1 during boot, entered kdb
    // (the frames past the trap differ: arm inlines kgdb_breakpoint, MIPS's
    // unwinder stops at the exception).
    assert!(s.contains("Stack traceback for pid 1") && s.contains("kgdb_handle_exception"), "kdb's bt is not kgdbwait's stop: {s}");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn kdb_x86_64() {
    kdb_shell_at_kgdbwait("x86_64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn kdb_aarch64() {
    kdb_shell_at_kgdbwait("aarch64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn kdb_arm_versatilepb() {
    kdb_shell_at_kgdbwait("arm");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn kdb_mips64_big_endian() {
    kdb_shell_at_kgdbwait("mips64");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn kdb_mips64el() {
    kdb_shell_at_kgdbwait("mips64el");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn breaks_in_a_module_init_after_insmod() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kmx_hello.c"),
        "#include <linux/module.h>\n#include <linux/init.h>\nstatic int __init kmx_hello_init(void)\n{\n\tpr_info(\"kmx_hello loaded\\n\");\n\treturn 0;\n}\nstatic void __exit kmx_hello_exit(void) {}\nmodule_init(kmx_hello_init);\nmodule_exit(kmx_hello_exit);\nMODULE_LICENSE(\"GPL\");\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("Kbuild"), "obj-m := kmx_hello.o\n").unwrap();
    let d = dir.path().to_str().unwrap();
    common::build_shared("aarch64");
    let out = kmatrix(&["module", "build", "--arch", "aarch64", d]);
    assert_eq!(out.status.code(), Some(0));
    let ko = dir.path().join("kmx_hello.ko");
    assert!(ko.is_file());
    let out = kmatrix(&[
        "debug", "--arch", "aarch64", "--module", ko.to_str().unwrap(), "--cmd", "insmod /lib/modules/kmx_hello.ko",
        "--break", "do_init_module", "--batch",
        "--ex", &format!("lx-symbols {d}"), "--ex", &format!("kmx-module-symbols mod {}", ko.display()), "--ex", "break kmx_hello_init", "--ex", "continue", "--ex", "bt",
    ]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("kmx_hello_init () at"), "did not stop in the module's init: {s}");
}
