//! gem5 full-system boots, for real: gem5-arm (the same kernel as QEMU virt,
//! with gem5's bootloader and an initrd) and gem5-x86 (initramfs linked into
//! the kernel, the boot's configuration fetched with `m5 readfile`), a
//! checkpoint taken after the boot marker and restored with other commands,
//! and gdb on gem5's stub.
//!
//! gem5 takes hours to build and no package has it, so CI has none: these
//! tests need KMATRIX_TEST_REAL=1 *and* a gem5 build, found under
//! KMATRIX_TEST_GEM5 (a gem5 source tree with build/<ISA>/gem5.{opt,fast});
//! without one they show as ignored, with that reason. The stand-in tests
//! (a script as gem5) run in CI.

mod common;
use common::kmatrix;
use std::path::PathBuf;
use std::process::Output;


/// The gem5 binary for `isa` under KMATRIX_TEST_GEM5 (the tests that call
/// this are ignored without it); a tree without that build fails the test.
fn gem5(isa: &str) -> PathBuf {
    let root = PathBuf::from(std::env::var_os("KMATRIX_TEST_GEM5").expect("KMATRIX_TEST_GEM5 is set (see build.rs)"));
    ["opt", "fast"]
        .iter()
        .map(|v| root.join(format!("build/{isa}/gem5.{v}")))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("KMATRIX_TEST_GEM5={} has no build/{isa}/gem5.opt or gem5.fast", root.display()))
}

/// A stand-in gem5 tree: a "binary" that plays the guest from the readfile
/// configuration kmatrix hands it (nonce, commands) and writes the console
/// to <outdir>/<terminal> as gem5 does (system.terminal on ARM,
/// system.pc.com_1.device on X86), plus a bootloader makefile. It
/// checks kmatrix's side of the contract where no gem5 exists (CI).
fn fake_gem5(dir: &std::path::Path, isa: &str) -> PathBuf {
    let bin = dir.join(format!("build/{isa}/gem5.opt"));
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::create_dir_all(dir.join("configs/deprecated/example")).unwrap();
    std::fs::write(dir.join("configs/deprecated/example/fs.py"), "# stand-in\n").unwrap();
    std::fs::create_dir_all(dir.join("system/arm/bootloader/arm64")).unwrap();
    std::fs::write(dir.join("system/arm/bootloader/arm64/makefile"), "$(BUILDDIR)/boot.arm64:\n\techo $(CROSS_COMPILE) > $@\n").unwrap();
    let script = r#"#!/bin/sh
echo "fake gem5: $*"
for a in "$@"; do
  case "$a" in
    --outdir=*) out="${a#--outdir=}" ;;
    --script=*) conf="${a#--script=}" ;;
    --kernel=*) [ -f "${a#--kernel=}" ] || { echo "fatal: Could not load kernel file ${a#--kernel=}"; exit 1; } ;;
    --bootloader=*) [ -f "${a#--bootloader=}" ] || { echo "fatal: no bootloader"; exit 1; } ;;
  esac
done
mkdir -p "$out"
t="$out/__TERMINAL__"
nonce=$(sed -n 's/^nonce=//p' "$conf")
echo "Booting Linux (fake)" > "$t"
echo "KMATRIX-BOOT-OK nonce=$nonce machine=fake release=6.1" >> "$t"
i=0
sed -n 's/^cmd=//p' "$conf" | while read -r c; do
  printf 'KMATRIX-CMD-BEGIN %d nonce=%s
ran: %s

KMATRIX-CMD-END %d status=0 nonce=%s
' $i "$nonce" "$c" $i "$nonce" >> "$t"
  i=$((i+1))
done
echo "KMATRIX-DONE nonce=$nonce" >> "$t"
echo "Exiting @ tick 1 because m5_exit instruction encountered"
"#;
    let terminal = if isa == "X86" { "system.pc.com_1.device" } else { "system.terminal" };
    std::fs::write(&bin, script.replace("__TERMINAL__", terminal)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// kmatrix's half of a gem5 boot, with a stand-in gem5: the vmlinux of the
/// build shared with QEMU virt, the bootloader built with the board's
/// toolchain, the initrd as a --param Python literal, the console read from
/// system.terminal, the nonce and commands through the readfile.
#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn gem5_arm_plumbing_with_a_stand_in_gem5() {
    // One gem5 run at a time: each is a single-threaded simulation of minutes.
    let _g = common::exclusive("gem5");
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_gem5(dir.path(), "ARM");
    // The debug kernel: the one qemu-aarch64-virt's real tests build too.
    let (code, s) = run(&bin, &["boot", "--board", "gem5-arm", "--profile", "debug", "--check", "--cmd", "uname -m"]);
    assert_eq!(code, Some(0), "{s}");
    assert!(s.lines().any(|l| l.starts_with("PASS")), "{s}");
    assert!(s.contains("ran: uname -m"), "{s}");
    let log = s.lines().find_map(|l| l.strip_prefix("console log: ")).unwrap();
    let console = std::fs::read_to_string(log).unwrap();
    let argv = console.lines().next().unwrap();
    assert!(argv.contains("/vmlinux "), "{argv}");
    assert!(argv.contains("--bootloader=") && argv.contains("boot.arm64"), "{argv}");
    assert!(argv.contains("'--param=system.workload.initrd_filename = \""), "{argv}");
    assert!(argv.contains("--listener-mode=off"), "{argv}");
    let emu = std::fs::read_to_string(std::path::Path::new(log).with_extension("emulator.log")).unwrap();
    assert!(emu.contains("m5_exit instruction encountered"), "{emu}");
}

/// gem5-x86's kernel carries kmatrix's init (CONFIG_INITRAMFS_SOURCE, a
/// content-addressed cpio in the cache); the boot passes no initrd and hands
/// the nonce and commands over through the readfile. Fast tier: the fake
/// kernel tree keeps the config line, so no real kernel is built for this.
#[test]
fn gem5_x86_embedded_initramfs_with_a_stand_in_gem5() {
    let p = common::fake::FakeProject::new();
    let tarball = p.tarball.display().to_string();
    let out = p.kmatrix(&["build", "--board", "gem5-x86", "--source", &tarball]);
    let s = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{s}");
    let config = s.lines().find_map(|l| l.trim().strip_prefix(".config")).unwrap().trim().to_string();
    let text = std::fs::read_to_string(&config).unwrap();
    let cpio = text.lines().find_map(|l| l.strip_prefix("CONFIG_INITRAMFS_SOURCE=")).unwrap().trim_matches('"').to_string();
    let data = std::fs::read(&cpio).unwrap();
    let has = |name: &str| data.windows(name.len()).any(|w| w == name.as_bytes());
    assert!(has("init\0") && has("kmatrix.conf\0"), "{cpio}");
    // busybox too: the image cannot change per boot and --cmd needs a shell.
    assert!(has("bin/busybox\0") && has("bin/sh\0"), "{cpio}");
    assert!(has("readfile=1"), "{cpio}");

    let dir = tempfile::tempdir().unwrap();
    let bin = fake_gem5(dir.path(), "X86");
    let out = p.kmatrix(&["--gem5", bin.to_str().unwrap(), "boot", "--board", "gem5-x86", "--source", &tarball, "--check", "--cmd", "true"]);
    let s = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{s}");
    let log = s.lines().find_map(|l| l.strip_prefix("console log: ")).unwrap();
    let argv = std::fs::read_to_string(log).unwrap().lines().next().unwrap().to_string();
    assert!(!argv.contains("initrd"), "{argv}");
    assert!(argv.contains("--script="), "{argv}");
    assert!(argv.contains("/vmlinux "), "{argv}");
    // The console came from the board's terminal file, not system.terminal.
    assert!(s.contains("ran: true"), "{s}");
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn run(bin: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let mut v = vec!["--gem5", bin.to_str().unwrap()];
    v.extend_from_slice(args);
    let out = kmatrix(&v);
    (out.status.code(), stdout(&out))
}

#[test]
#[cfg_attr(not(all(kmatrix_real, kmatrix_gem5)), ignore = "needs a gem5 build: set KMATRIX_TEST_REAL=1 and KMATRIX_TEST_GEM5=<gem5 tree> (CI has no gem5)")]
fn gem5_arm_boot_check() {
    let bin = gem5("ARM");
    let _g = common::exclusive("gem5");
    let (code, s) = run(&bin, &["boot", "--board", "gem5-arm", "--check", "--cmd", "cat /proc/cmdline"]);
    assert_eq!(code, Some(0), "{s}");
    assert!(s.lines().any(|l| l.starts_with("PASS")), "{s}");
    assert!(s.contains("boot to marker"), "{s}");
    // The board's command line reaches the guest (starter_fs.py would drop it).
    assert!(s.contains("lpj=19988480"), "{s}");
}

#[test]
#[cfg_attr(not(all(kmatrix_real, kmatrix_gem5)), ignore = "needs a gem5 build: set KMATRIX_TEST_REAL=1 and KMATRIX_TEST_GEM5=<gem5 tree> (CI has no gem5)")]
fn gem5_x86_boot_check() {
    let bin = gem5("X86");
    let _g = common::exclusive("gem5");
    let (code, s) = run(&bin, &["boot", "--board", "gem5-x86", "--check", "--cmd", "cat /proc/cmdline"]);
    assert_eq!(code, Some(0), "{s}");
    assert!(s.lines().any(|l| l.starts_with("PASS")), "{s}");
    assert!(s.contains("x86_64"), "{s}");
    // fs.py passes --command-line through (lpj is the board's).
    assert!(s.contains("lpj=7999923"), "{s}");
}

/// A checkpoint taken after the boot marker, then restored: the restored
/// guest resumes after the marker and runs the new boot's commands.
fn checkpoint_and_restore(isa: &str, board: &str) {
    let bin = gem5(isa);
    let _g = common::exclusive("gem5");
    let dir = tempfile::tempdir().unwrap();
    let cpt = dir.path().join("cpt");
    let cpt = cpt.to_str().unwrap();
    let (code, s) = run(&bin, &["boot", "--board", board, "--check", "--checkpoint", cpt, "--cmd", "echo first-run"]);
    assert_eq!(code, Some(0), "{s}");
    assert!(std::fs::read_dir(cpt).unwrap().flatten().any(|e| e.file_name().to_string_lossy().starts_with("cpt.")));
    let (code, s) = run(&bin, &["boot", "--board", board, "--check", "--restore", cpt, "--cmd", "echo restored-run"]);
    assert_eq!(code, Some(0), "{s}");
    assert!(s.contains("restored-run"), "{s}");
    assert!(!s.contains("first-run"), "{s}");
}

#[test]
#[cfg_attr(not(all(kmatrix_real, kmatrix_gem5)), ignore = "needs a gem5 build: set KMATRIX_TEST_REAL=1 and KMATRIX_TEST_GEM5=<gem5 tree> (CI has no gem5)")]
fn gem5_arm_checkpoint_and_restore() {
    checkpoint_and_restore("ARM", "gem5-arm");
}

#[test]
#[cfg_attr(not(all(kmatrix_real, kmatrix_gem5)), ignore = "needs a gem5 build: set KMATRIX_TEST_REAL=1 and KMATRIX_TEST_GEM5=<gem5 tree> (CI has no gem5)")]
fn gem5_x86_checkpoint_and_restore() {
    checkpoint_and_restore("X86", "gem5-x86");
}

/// gdb on gem5's stub: stopped at start_kernel, the lx-* scripts loaded.
fn gdb(isa: &str, board: &str) {
    let bin = gem5(isa);
    let _g = common::exclusive("gem5");
    let (code, s) = run(&bin, &["debug", "--board", board, "--batch", "--ex", "bt", "--ex", "lx-version"]);
    assert_eq!(code, Some(0), "{s}");
    assert!(s.contains("start_kernel"), "{s}");
    assert!(s.contains("Linux version 6.1"), "{s}");
}

#[test]
#[cfg_attr(not(all(kmatrix_real, kmatrix_gem5)), ignore = "needs a gem5 build: set KMATRIX_TEST_REAL=1 and KMATRIX_TEST_GEM5=<gem5 tree> (CI has no gem5)")]
fn gem5_arm_gdb() {
    gdb("ARM", "gem5-arm");
}

/// gem5 x86's stub has no target description (gdb is told i386:x86-64).
/// A stock gem5.fast segfaults here (see debug::gdb_crash_reason); gem5.opt
/// or a fixed remote_gdb.cc works.
#[test]
#[cfg_attr(not(all(kmatrix_real, kmatrix_gem5)), ignore = "needs a gem5 build: set KMATRIX_TEST_REAL=1 and KMATRIX_TEST_GEM5=<gem5 tree> (CI has no gem5)")]
fn gem5_x86_gdb() {
    gdb("X86", "gem5-x86");
}
