//! The isolation cases once for real (KMATRIX_TEST_REAL=1): a real kernel,
//! real gcc, real QEMU. Two sweeps on the shared cache need the same new
//! kernel; the first is killed with SIGKILL in the middle of its make. None
//! of its processes (make, gcc, cc1...) may be alive 5 s later; the second
//! sweep, which waited for the entry, continues the build in the same tree
//! and passes; the first, resumed, reuses that build. The fast tier
//! (tests/isolation.rs) covers each case on its own with fakes.
//!
//! The kernel must be one no earlier run built. On a cold cache (CI) that is
//! the shared arm debug kernel itself, which the later real tests then
//! reuse, so this costs no extra build there (cargo runs test binaries in
//! name order, and this one comes first); on a warm cache it is arm
//! tinyconfig with a LOCALVERSION unique to the run, removed afterwards.

mod common;
use common::procs::{cmdline, descendants, survivors};

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;




fn sweep(project: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kmatrix"));
    c.current_dir(project)
        .env("KMATRIX_CACHE_DIR", common::cache())
        .env("CI", "1")
        .arg("sweep")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn results(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap()
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs real compilers, QEMU and gdb-multiarch: set KMATRIX_TEST_REAL=1 (CI does)")]
fn two_real_sweeps_share_a_build_and_a_kill9_mid_make_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    // A kernel no earlier run built (see the module doc).
    let tag = format!("-kmx{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000);
    let shared_is_built = std::fs::read_dir(common::cache().join("builds")).into_iter().flatten().flatten().any(|e| {
        e.path().join("manifest.json").is_file()
            && std::fs::read_to_string(e.path().join(".config")).is_ok_and(|c| {
                c.contains("CONFIG_ARM=y") && c.contains("CONFIG_GDB_SCRIPTS=y") && c.contains("CONFIG_CC_IS_CLANG=y") && c.contains(" 6.12.") && !c.contains("-kmx")
            })
    });
    // The shared arm kernel is clang's from 6.12 (tests/common
    // `shared_kernel`); the warm-cache stand-in is gcc's quicker tinyconfig.
    // Building the shared kernel: its queue and a build slot, so other tests
    // wait for it without holding a slot (tests/common `build`).
    let _building = (!shared_is_built).then(|| common::building_shared("arm"));
    let (config, toolchain, version) = if shared_is_built {
        (format!("config = '''\nCONFIG_LOCALVERSION=\"{tag}\"\n'''"), "gcc", "6.1")
    } else {
        ("profile = \"debug\"".to_string(), "clang", "6.12")
    };
    eprintln!("kernel: {}", if shared_is_built { "arm tinyconfig with a unique LOCALVERSION (the shared one is built)" } else { "the shared arm debug kernel (cold cache)" });
    std::fs::write(
        p.join("matrix.toml"),
        format!("boards = [\"qemu-arm-versatilepb\"]\ntoolchains = [\"{toolchain}\"]\nkernels = [\"k\"]\nconfigs = [\"fresh\"]\n[kernel.k]\nversion = \"{version}\"\n[config.fresh]\n{config}\n"),
    )
    .unwrap();
    let (ra, rb) = (p.join("a"), p.join("b"));
    let mut a = sweep(p, &["--results-dir", ra.to_str().unwrap()]).spawn().unwrap();
    let a_pid = a.id() as i32;

    // A is in make, in the build tree, with compilers running.
    let t = Instant::now();
    let mut seen = BTreeMap::new();
    loop {
        assert!(t.elapsed() < Duration::from_secs(600), "sweep A never reached make");
        seen.extend(descendants(a_pid));
        let in_make = seen.keys().any(|&pid| {
            let c = cmdline(pid);
            c.starts_with("make ") && c.contains("/builds/") && !c.contains("/builds/stage-")
        });
        // gcc runs cc1; clang compiles in the driver's own process.
        let compiling = seen.keys().any(|&pid| {
            let c = cmdline(pid);
            c.contains("cc1") || (c.split_whitespace().any(|w| w == "clang" || w.ends_with("/clang")) && c.contains(" -c "))
        });
        if in_make && compiling {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // B starts now and must wait for A's entry.
    let b = sweep(p, &["--results-dir", rb.to_str().unwrap()]).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    for _ in 0..10 {
        seen.extend(descendants(a_pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    common::procs::kill(a_pid, 9);
    let _ = a.wait();
    std::thread::sleep(Duration::from_secs(5));
    let left = survivors(&seen);
    eprintln!("kill -9 mid-make: {} processes under sweep A, {} alive 5 s later", seen.len(), left.len());
    assert!(left.is_empty(), "alive 5 s after kill -9: {left:#?}");

    let out = b.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("sweep B:\n{}{err}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(0), "sweep B");
    assert!(err.contains("waiting for configs/") && err.contains("held by pid"), "B said it waited: {err}");
    let rb_json = results(&rb);
    let cell = &rb_json["cells"][0];
    assert_eq!(cell["verdict"], "pass", "{cell}");
    assert_eq!(cell["build_reused"], false, "B finished the build itself");

    // A, resumed, reuses what B built: no make at all.
    let out = sweep(p, &["--resume", ra.to_str().unwrap()]).output().unwrap();
    eprintln!("resume A:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    let ra_json = results(&ra);
    assert_eq!(ra_json["complete"], true);
    assert_eq!(ra_json["cells"][0]["verdict"], "pass");
    assert_eq!(ra_json["cells"][0]["build_reused"], true);

    // A LOCALVERSION kernel serves no other test: drop its tree.
    for e in std::fs::read_dir(common::cache().join("builds")).unwrap().flatten() {
        if std::fs::read_to_string(e.path().join(".config")).is_ok_and(|c| c.contains(&tag)) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

