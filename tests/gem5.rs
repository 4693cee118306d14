//! gem5 full-system boots, for real: gem5-arm (the same kernel as QEMU virt,
//! with gem5's bootloader and an initrd) and gem5-x86 (initramfs linked into
//! the kernel, the boot's configuration fetched with `m5 readfile`), a
//! checkpoint taken after the boot marker and restored with other commands,
//! and gdb on gem5's stub.
//!
//! gem5 takes hours to build and no package has it, so CI has none: these
//! tests need KMATRIX_TEST_REAL=1 *and* a gem5 build, found under
//! KMATRIX_TEST_GEM5 (a gem5 source tree with build/<ISA>/gem5.{opt,fast}).
//! Without one each test prints why it skipped.

mod common;
use common::{kmatrix, real};
use std::path::PathBuf;
use std::process::Output;
use std::sync::Mutex;

/// One gem5 run at a time: each is a single-threaded simulation of minutes.
static LOCK: Mutex<()> = Mutex::new(());

fn gem5(isa: &str) -> Option<PathBuf> {
    if !real() {
        return None;
    }
    let Some(root) = std::env::var_os("KMATRIX_TEST_GEM5").map(PathBuf::from) else {
        eprintln!("skipped: gem5 not built (set KMATRIX_TEST_GEM5 to a gem5 tree with build/{isa}/gem5.opt or gem5.fast; CI has no gem5)");
        return None;
    };
    let found = ["opt", "fast"].iter().map(|v| root.join(format!("build/{isa}/gem5.{v}"))).find(|p| p.is_file());
    if found.is_none() {
        eprintln!("skipped: gem5 not built for {isa} under {}", root.display());
    }
    found
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn run(bin: &PathBuf, args: &[&str]) -> (Option<i32>, String) {
    let mut v = vec!["--gem5", bin.to_str().unwrap()];
    v.extend_from_slice(args);
    let out = kmatrix(&v);
    (out.status.code(), stdout(&out))
}

#[test]
fn gem5_arm_boot_check() {
    let Some(bin) = gem5("ARM") else { return };
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (code, s) = run(&bin, &["boot", "--board", "gem5-arm", "--check", "--cmd", "cat /proc/cmdline"]);
    assert_eq!(code, Some(0), "{s}");
    assert!(s.starts_with("PASS"), "{s}");
    assert!(s.contains("boot to marker"), "{s}");
    // The board's command line reaches the guest (starter_fs.py would drop it).
    assert!(s.contains("lpj=19988480"), "{s}");
}

#[test]
fn gem5_x86_boot_check() {
    let Some(bin) = gem5("X86") else { return };
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (code, s) = run(&bin, &["boot", "--board", "gem5-x86", "--check", "--cmd", "cat /proc/cmdline"]);
    assert_eq!(code, Some(0), "{s}");
    assert!(s.starts_with("PASS"), "{s}");
    assert!(s.contains("x86_64"), "{s}");
}

#[test]
fn gem5_arm_checkpoint_and_restore() {
    let Some(bin) = gem5("ARM") else { return };
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let cpt = dir.path().join("cpt");
    let cpt = cpt.to_str().unwrap();
    let (code, s) = run(&bin, &["boot", "--board", "gem5-arm", "--check", "--checkpoint", cpt, "--cmd", "echo first-run"]);
    assert_eq!(code, Some(0), "{s}");
    assert!(std::fs::read_dir(cpt).unwrap().flatten().any(|e| e.file_name().to_string_lossy().starts_with("cpt.")));
    // The restored guest resumes after the marker and runs this boot's commands.
    let (code, s) = run(&bin, &["boot", "--board", "gem5-arm", "--check", "--restore", cpt, "--cmd", "echo restored-run"]);
    assert_eq!(code, Some(0), "{s}");
    assert!(s.contains("restored-run"), "{s}");
    assert!(!s.contains("first-run"), "{s}");
}

#[test]
fn gem5_arm_gdb() {
    let Some(bin) = gem5("ARM") else { return };
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (code, s) = run(&bin, &["debug", "--board", "gem5-arm", "--batch", "--ex", "bt", "--ex", "lx-version"]);
    assert_eq!(code, Some(0), "{s}");
    assert!(s.contains("start_kernel"), "{s}");
    assert!(s.contains("Linux version 6.1"), "{s}");
}
