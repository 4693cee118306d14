//! Real sweeps (KMATRIX_TEST_REAL=1): the default matrix on the five QEMU
//! machines, and a matrix of fault cells that must each be classified right
//! while the healthy cell passes. Shares the kernel cache with real_boot.rs.

mod common;
use common::cache;
use std::path::Path;

use serde_json::Value;

fn kmatrix(dir: &Path, args: &[&str]) -> std::process::Output {
    common::kmatrix_in(dir, args)
}

fn results(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap()
}

/// The default matrix's `debug` config, cut down to the real tier's shared
/// kernels (tests/common `shared_kernel`): arm's is clang from 6.12, every
/// other machine's gcc from 6.1. So the sweep builds nothing the boot, gdb
/// and lab tests do not build too.
fn shared_kernels_matrix() -> String {
    let mut m = String::from(
        r#"boards = ["qemu-x86_64-pc", "qemu-aarch64-virt", "qemu-arm-versatilepb", "qemu-mips64-malta", "qemu-mips64el-malta", "gem5-arm", "gem5-x86"]
toolchains = ["gcc", "clang"]
kernels = ["debian-6.1", "debian-6.12"]
configs = ["debug"]
[kernel."debian-6.1"]
version = "6.1"
[kernel."debian-6.12"]
version = "6.12"
[config.debug]
profile = "debug"
"#,
    );
    for board in ["qemu-x86_64-pc", "qemu-aarch64-virt", "qemu-arm-versatilepb", "qemu-mips64-malta", "qemu-mips64el-malta", "gem5-*"] {
        let (toolchain, kernel) = if board == "qemu-arm-versatilepb" { ("gcc", "debian-6.1") } else { ("clang", "debian-6.12") };
        m += &format!("[[exclude]]\nboard = \"{board}\"\ntoolchain = \"{toolchain}\"\n[[exclude]]\nboard = \"{board}\"\nkernel = \"{kernel}\"\n");
    }
    m
}

fn verdict<'a>(r: &'a Value, board: &str, config: &str) -> &'a str {
    r["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["board"] == board && c["config"] == config)
        .unwrap_or_else(|| panic!("no cell {board}/{config}"))["verdict"]
        .as_str()
        .unwrap()
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn default_matrix_passes_on_the_qemu_machines_and_warm_rerun_builds_nothing() {
    // One real sweep at a time: each boots several machines at once.
    let _g = common::exclusive("real-sweep");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("matrix.toml"), shared_kernels_matrix()).unwrap();
    let res = dir.path().join("r1");
    let out = kmatrix(dir.path(), &["sweep", "--results-dir", res.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let r = results(&res);
    assert_eq!(r["schema"], 1);
    assert_eq!(r["complete"], true);
    for b in ["qemu-x86_64-pc", "qemu-aarch64-virt", "qemu-arm-versatilepb", "qemu-mips64-malta", "qemu-mips64el-malta"] {
        assert_eq!(verdict(&r, b, "debug"), "pass", "{b}");
    }
    for b in ["gem5-arm", "gem5-x86"] {
        assert_eq!(verdict(&r, b, "debug"), "skip", "{b}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("5 passed, 0 failed, 2 skipped"), "{stdout}");

    // Warm: nothing changed, so no make runs and every build is reused.
    let res2 = dir.path().join("r2");
    let t = std::time::Instant::now();
    let out = kmatrix(dir.path(), &["sweep", "--results-dir", res2.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let r2 = results(&res2);
    for c in r2["cells"].as_array().unwrap().iter().filter(|c| c["verdict"] == "pass") {
        assert_eq!(c["build_reused"], true, "{c}");
    }
    eprintln!("warm sweep: {:.1}s", t.elapsed().as_secs_f64());

    // Reports render from the results directory.
    for fmt in ["table", "markdown", "json", "junit", "html"] {
        let o = kmatrix(dir.path(), &["report", res2.to_str().unwrap(), "--format", fmt]);
        assert_eq!(o.status.code(), Some(0), "{fmt}");
        assert!(!o.stdout.is_empty(), "{fmt}");
    }
    let o = kmatrix(dir.path(), &["report", res2.to_str().unwrap(), "--compare", res.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(": 0 regressions, 0 fixes, 0 flaky"), "{text}");
    // Every cell says what it built: the matrix's label and the real release.
    for c in r2["cells"].as_array().unwrap().iter().filter(|c| c["verdict"] == "pass") {
        let v = common::shared_version(c["arch"].as_str().unwrap());
        assert_eq!(c["kernel"], format!("debian-{v}"));
        assert!(c["kernel_release"].as_str().unwrap().starts_with(&format!("{v}.")), "{c}");
    }
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn linux_6_12_built_by_clang_boots_on_versatilepb_with_the_dtb_where_6_5_moved_it() {
    // One real cell covers the new axis values: Debian's 6.12 source, clang
    // (LLVM=1), and a version-dependent descriptor value (the dtb path). It
    // is the shared arm kernel of the real tier (tests/common), so it costs
    // a boot, not a build.
    let _g = common::exclusive("real-sweep");
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("r");
    let out = kmatrix(
        dir.path(),
        &["sweep", "--filter", "board=qemu-arm-versatilepb", "--filter", "kernel=debian-6.12", "--filter", "toolchain=clang", "--filter", "config=debug", "--results-dir", res.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let r = results(&res);
    let cells = r["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 1, "{r}");
    let c = &cells[0];
    assert_eq!(c["verdict"], "pass", "{c}");
    assert_eq!(c["kernel"], "debian-6.12");
    assert_eq!(c["kernel_version"], "6.12");
    assert!(c["kernel_release"].as_str().unwrap().starts_with("6.12."), "{c}");
    assert!(c["kernel_source"].as_str().unwrap().ends_with("linux-source-6.12.tar.xz"), "{c}");
    assert!(c["toolchain_version"].as_str().unwrap().contains("clang"), "{c}");
    let log = std::fs::read_to_string(res.join(c["build_log"].as_str().unwrap())).unwrap();
    assert!(log.contains("LLVM=1") && log.contains("arm/versatile-pb.dtb"), "the build used LLVM=1 and the vendor dtb path");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("debian-6.12 debug"), "{table}");
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn fault_cells_are_each_classified_while_the_healthy_cell_passes() {
    let _g = common::exclusive("real-sweep");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("boards")).unwrap();
    let virt = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("boards/qemu-aarch64-virt.toml")).unwrap();
    // Same kernel, an init that does not exist: "Requested init ... failed" panic.
    std::fs::write(p.join("boards/virt-panic.toml"), virt.replace("panic=-1\"", "panic=-1 rdinit=/does-not-exist\"")).unwrap();
    // Same kernel; the cell's guest command never returns (see [[override]]).
    std::fs::write(p.join("boards/virt-hang.toml"), &virt).unwrap();
    std::fs::write(p.join("boards/virt-noemu.toml"), virt.replace("qemu-system-aarch64", "qemu-system-kmatrix-missing")).unwrap();
    std::fs::write(
        p.join("matrix.toml"),
        r#"
boards = ["qemu-aarch64-virt", "virt-panic", "virt-hang", "virt-noemu"]
toolchains = ["gcc"]
kernels = ["debian-6.1"]
configs = ["tiny", "broken"]

[kernel."debian-6.1"]
version = "6.1"

[config.tiny]
# The debug profile: the shared aarch64 kernel of the real tier.
profile = "debug"

[config.broken]
# gen_initramfs fails on a source that does not exist: the build breaks.
config = '''
CONFIG_INITRAMFS_SOURCE="/nonexistent/kmatrix-test"
'''

[[exclude]]
board = "virt-*"
config = "broken"

[[override]]
board = "virt-hang"
cmds = ["sleep 600"]
"#,
    )
    .unwrap();
    let res = p.join("results");
    let out = kmatrix(p, &["sweep", "--no-output-timeout", "15", "--results-dir", res.to_str().unwrap()]);
    let r = results(&res);
    assert_eq!(verdict(&r, "qemu-aarch64-virt", "tiny"), "pass");
    assert_eq!(verdict(&r, "qemu-aarch64-virt", "broken"), "build-fail");
    assert_eq!(verdict(&r, "virt-panic", "tiny"), "panic");
    assert_eq!(verdict(&r, "virt-hang", "tiny"), "timeout");
    assert_eq!(verdict(&r, "virt-noemu", "tiny"), "infra-error");
    // An infra error outranks kernel failures in the exit code.
    assert_eq!(out.status.code(), Some(2));
    let panic = r["cells"].as_array().unwrap().iter().find(|c| c["board"] == "virt-panic").unwrap();
    assert!(panic["detail"].as_str().unwrap().contains("Kernel panic - not syncing"), "{panic}");
    assert!(res.join(panic["console_log"].as_str().unwrap()).is_file());
    // Panic triage: the debug kernel's stack, decoded to file:line.
    let stack = std::fs::read_to_string(res.join(panic["stack_log"].as_str().unwrap_or_else(|| panic!("no stack_log: {panic}")))).unwrap();
    assert!(stack.contains("panic (kernel/panic.c:") && stack.contains("(init/main.c:"), "{stack}");
    let html = kmatrix(p, &["report", res.to_str().unwrap(), "--format", "html"]);
    assert!(String::from_utf8_lossy(&html.stdout).contains("Kernel panic - not syncing"));
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn interrupted_sweep_keeps_valid_results_kills_children_and_resumes() {
    let _g = common::exclusive("real-sweep");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("boards")).unwrap();
    let virt = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("boards/qemu-aarch64-virt.toml")).unwrap();
    std::fs::write(p.join("boards/virt-slow.toml"), &virt).unwrap();
    // The shared aarch64 kernel (gcc, 6.1, debug profile): a kernel without
    // a version would be the newest installed source, one more build.
    let matrix = |cmd: &str| {
        format!(
            "boards = [\"qemu-aarch64-virt\", \"virt-slow\"]\ntoolchains = [\"gcc\"]\nkernels = [\"k\"]\nconfigs = [\"tiny\"]\n[kernel.k]\nversion = \"6.1\"\n[config.tiny]\nprofile = \"debug\"\n[[override]]\nboard = \"virt-slow\"\ncmds = [\"{cmd}\"]\n"
        )
    };
    std::fs::write(p.join("matrix.toml"), matrix("sleep 600")).unwrap();
    let res = p.join("results");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_kmatrix"))
        .current_dir(p)
        .env("KMATRIX_CACHE_DIR", cache())
        .env("CI", "1")
        .args(["sweep", "--no-output-timeout", "300", "--results-dir", res.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the healthy cell is recorded and the slow one is booting.
    let t = std::time::Instant::now();
    loop {
        assert!(t.elapsed().as_secs() < 600, "sweep never got going");
        let n = std::fs::read_to_string(res.join("results.json")).ok().and_then(|s| serde_json::from_str::<Value>(&s).ok()).map(|v| v["cells"].as_array().map(|a| a.len()).unwrap_or(0)).unwrap_or(0);
        if n >= 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The slow cell's emulator must be running when the signal comes, or
    // the orphan check below proves nothing.
    let t = std::time::Instant::now();
    loop {
        assert!(t.elapsed().as_secs() < 120, "the slow cell's emulator never started");
        let q = std::process::Command::new("pgrep").args(["-f", &format!("qemu-system-aarch64.*{}", res.display())]).output().unwrap();
        if !q.stdout.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    // SAFETY: signalling our own child.
    unsafe { libc_kill(child.id() as i32, 2) };
    let out = child.wait_with_output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(130), "Ctrl-C exits 130");
    let r = results(&res);
    assert_eq!(r["interrupted"], true);
    assert_eq!(r["complete"], false);
    assert_eq!(r["cells"].as_array().unwrap().len(), 1);
    assert_eq!(verdict(&r, "qemu-aarch64-virt", "tiny"), "pass");
    // No emulator of this run survives kmatrix.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let left = std::process::Command::new("pgrep").args(["-f", res.to_str().unwrap()]).output().unwrap();
    assert!(left.stdout.is_empty(), "processes left behind: {}", String::from_utf8_lossy(&left.stdout));

    // Resume runs only the missing cell (now quick) and keeps the first.
    std::fs::write(p.join("matrix.toml"), matrix("true")).unwrap();
    let out = kmatrix(p, &["sweep", "--resume", res.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let r2 = results(&res);
    assert_eq!(r2["complete"], true);
    assert_eq!(verdict(&r2, "virt-slow", "tiny"), "pass");
    // The whole record, boot times included: a re-run would change them.
    let first = |r: &Value| r["cells"].as_array().unwrap().iter().find(|c| c["board"] == "qemu-aarch64-virt").unwrap().clone();
    assert_eq!(first(&r), first(&r2), "the finished cell was not run again");
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
