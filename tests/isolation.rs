//! One kmatrix run never hurts another (fast tier: fake kernel tree and
//! fake emulator, seconds, no cross compiler):
//! - two sweeps and a boot started together on one cache share one build;
//! - kill -9 of kmatrix during configure, make or a boot leaves no process
//!   of its tree alive 5 s later, and `--resume` completes;
//! - a 1 GB console flood keeps kmatrix's RSS under 64 MB and is a timeout;
//! - a marker fed byte by byte passes;
//! - a missing emulator is an infra-error before any make.

mod common;
use common::procs::{descendants, survivors};
use common::fake::{stderr, stdout, FakeProject};

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

fn results(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap()
}

fn verdicts(r: &Value) -> Vec<(String, String)> {
    r["cells"].as_array().unwrap().iter().map(|c| (c["board"].as_str().unwrap().to_string(), c["verdict"].as_str().unwrap().to_string())).collect()
}




fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn matrix_with(p: &FakeProject, boards: &[&str], config: &str) -> String {
    format!(
        "boards = {boards:?}\ntoolchains = [\"gcc\"]\nkernels = [\"fake\"]\nconfigs = [\"tiny\"]\n\n[kernel.fake]\nversion = \"6.1\"\npath = {}\n\n[config.tiny]\nconfig = '''\n{config}\n'''\n",
        p.tarball_toml()
    )
}

#[test]
fn two_sweeps_and_a_boot_on_one_cache_share_one_build() {
    let p = FakeProject::new();
    // Slow enough that all three arrive while the first builds.
    p.write_matrix(&matrix_with(&p, &["fake-pc"], "CONFIG_FAKE_BUILD_SECONDS=3"));
    let tarball = p.tarball.display().to_string();
    let r1 = p.path().join("r1");
    let r2 = p.path().join("r2");
    let runs = [
        p.spawn(&["sweep", "--results-dir", r1.to_str().unwrap()]),
        p.spawn(&["sweep", "--results-dir", r2.to_str().unwrap()]),
        p.spawn(&["boot", "--board", "fake-pc", "--config", "tiny", "--source", &tarball, "--check"]),
    ];
    let outs: Vec<_> = runs.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    let mut waited = 0;
    for (i, o) in outs.iter().enumerate() {
        eprintln!("--- run {i} [exit {:?}]\n{}{}", o.status.code(), stdout(o), stderr(o));
        assert_eq!(o.status.code(), Some(0), "run {i} failed");
        waited += usize::from(stderr(o).contains("waiting for configs/") || stderr(o).contains("waiting for builds/"));
    }
    assert!(stdout(&outs[2]).starts_with("PASS"), "{}", stdout(&outs[2]));
    for r in [&r1, &r2] {
        assert_eq!(verdicts(&results(r)), [("fake-pc".to_string(), "pass".to_string())]);
    }
    assert_eq!(p.build_lines().len(), 1, "exactly one make built the kernel: {:#?}", p.make_log());
    assert_eq!(waited, 2, "both later runs said they waited");
    // The waiter says who holds the entry.
    let said: Vec<String> = outs.iter().flat_map(|o| stderr(o).lines().filter(|l| l.contains("waiting for")).map(str::to_string).collect::<Vec<_>>()).collect();
    assert!(said.iter().all(|l| l.contains("held by pid ")), "{said:#?}");
}

/// Starts a sweep, waits for `ready`, records kmatrix's process tree, kills
/// it with SIGKILL and checks that nothing of that tree is alive 5 s later;
/// then `--resume` must complete the sweep.
fn kill9_then_resume(p: &FakeProject, ready: &str, is_ready: &dyn Fn(&FakeProject) -> bool, want_in_tree: &str) {
    let res = p.path().join("results");
    let mut child = p.spawn(&["sweep", "--results-dir", res.to_str().unwrap()]);
    let pid = child.id() as i32;
    wait_for(ready, Duration::from_secs(60), || is_ready(p));
    // Let the tree form, gathering it as it grows.
    let mut seen = BTreeMap::new();
    for _ in 0..10 {
        seen.extend(descendants(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    let names: Vec<String> = seen.keys().map(|pid| std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default().replace('\0', " ")).collect();
    assert!(names.iter().any(|n| n.contains(want_in_tree)), "no `{want_in_tree}` under kmatrix while {ready}: {names:#?}");
    common::procs::kill(pid, 9);
    let _ = child.wait();
    std::thread::sleep(Duration::from_secs(5));
    let left = survivors(&seen);
    eprintln!("{ready}: {} processes under kmatrix before kill -9, {} alive 5 s later", seen.len(), left.len());
    assert!(left.is_empty(), "alive 5 s after kill -9 ({ready}): {left:#?}");

    let out = p.kmatrix(&["sweep", "--resume", res.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "resume after kill -9 ({ready})");
    let r = results(&res);
    assert_eq!(r["complete"], true);
    assert!(verdicts(&r).iter().all(|(_, v)| v == "pass"), "{:?}", verdicts(&r));
}

#[test]
fn kill9_during_configure_leaves_nothing_and_resume_completes() {
    let p = FakeProject::new();
    p.write_matrix(&matrix_with(&p, &["fake-pc"], "CONFIG_FAKE_CONFIG_SECONDS=4"));
    kill9_then_resume(&p, "configure", &|p| p.make_log().iter().any(|l| l.starts_with("olddefconfig")), "sleep");
}

#[test]
fn kill9_during_make_leaves_nothing_and_resume_completes() {
    let p = FakeProject::new();
    p.write_matrix(&matrix_with(&p, &["fake-pc"], "CONFIG_FAKE_BUILD_SECONDS=4"));
    kill9_then_resume(&p, "make", &|p| !p.build_lines().is_empty(), "sleep");
}

#[test]
fn kill9_during_a_boot_leaves_nothing_and_resume_completes() {
    let p = FakeProject::new();
    p.add_board("fake-slow", &["fake.boot_seconds=3"]);
    p.write_matrix(&matrix_with(&p, &["fake-slow"], ""));
    kill9_then_resume(&p, "boot", &|p| !p.qemu_log().is_empty(), "fake-qemu");
}

#[test]
fn sigterm_during_make_stops_the_build_cleanly_and_exits_130() {
    let p = FakeProject::new();
    p.write_matrix(&matrix_with(&p, &["fake-pc"], "CONFIG_FAKE_BUILD_SECONDS=30"));
    let res = p.path().join("results");
    let child = p.spawn(&["sweep", "--results-dir", res.to_str().unwrap()]);
    let pid = child.id() as i32;
    wait_for("make", Duration::from_secs(60), || !p.build_lines().is_empty());
    let mut seen = BTreeMap::new();
    for _ in 0..10 {
        seen.extend(descendants(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    common::procs::kill(pid, 15);
    let out = child.wait_with_output().unwrap();
    eprintln!("SIGTERM: kmatrix exited after {:.2}s\n{}", t.elapsed().as_secs_f64(), stderr(&out));
    assert_eq!(out.status.code(), Some(130));
    assert!(t.elapsed() < Duration::from_secs(5), "the build was not stopped promptly");
    std::thread::sleep(Duration::from_secs(1));
    assert!(survivors(&seen).is_empty(), "{:#?}", survivors(&seen));
    let r = results(&res);
    assert_eq!(r["interrupted"], true);
    assert_eq!(r["complete"], false);
    assert!(r["cells"].as_array().unwrap().is_empty(), "an interrupted build is no result: {r}");
}

#[test]
fn a_gigabyte_console_flood_keeps_memory_flat_and_is_a_timeout() {
    let p = FakeProject::new();
    p.add_board("fake-flood", &["fake.boot=flood"]);
    let tarball = p.tarball.display().to_string();
    assert_eq!(p.kmatrix(&["build", "--board", "fake-flood", "--source", &tarball]).status.code(), Some(0));
    let t = Instant::now();
    let child = p.spawn(&["boot", "--board", "fake-flood", "--source", &tarball, "--check", "--no-output-timeout", "3", "--timeout", "600"]);
    let pid = child.id();
    let mut peak_kib = 0u64;
    let poll = std::thread::spawn(move || {
        // VmHWM is the peak RSS so far; read until the process is gone.
        while let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(v) = s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok()) {
                peak_kib = peak_kib.max(v);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        peak_kib
    });
    let out = child.wait_with_output().unwrap();
    let peak_kib = poll.join().unwrap();
    let text = stdout(&out);
    eprintln!("{text}{}\nflood: {:.1}s, kmatrix peak RSS {} KiB", stderr(&out), t.elapsed().as_secs_f64(), peak_kib);
    assert_eq!(out.status.code(), Some(1), "a flood is a kernel failure, not a kmatrix error");
    assert!(text.starts_with("TIMEOUT"), "{text}");
    assert!(peak_kib > 0 && peak_kib <= 64 * 1024, "peak RSS {peak_kib} KiB");
    assert!(text.contains("console log cut at 67108864 bytes of 10"), "the cut is said in the result: {text}");
    let log = text.lines().find_map(|l| l.strip_prefix("console log: ")).unwrap();
    let len = std::fs::metadata(log).unwrap().len();
    assert!(len <= (64 << 20) + 4096, "log is {len} bytes");
    assert!(std::fs::read_to_string(log).map(|s| s.contains("console log cut at")).unwrap_or(true));
}

#[test]
fn a_flood_cell_in_a_sweep_is_a_timeout_and_says_its_log_was_cut() {
    let p = FakeProject::new();
    p.add_board("fake-flood", &["fake.boot=flood", "fake.flood_bytes=8000000"]);
    p.write_matrix(&matrix_with(&p, &["fake-flood"], ""));
    let res = p.path().join("results");
    let out = p.kmatrix(&["sweep", "--no-output-timeout", "2", "--console-log-limit", "1", "--results-dir", res.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let r = results(&res);
    let c = &r["cells"][0];
    assert_eq!(c["verdict"], "timeout", "{c}");
    assert_eq!(c["console_log_cut"], true, "{c}");
    let log = std::fs::metadata(res.join(c["console_log"].as_str().unwrap())).unwrap().len();
    assert!(log < (1 << 20) + 4096, "log {log} bytes");
}

#[test]
fn a_marker_fed_byte_by_byte_passes() {
    let p = FakeProject::new();
    p.add_board("fake-bytes", &["fake.boot=bytewise"]);
    let tarball = p.tarball.display().to_string();
    let out = p.kmatrix(&["boot", "--board", "fake-bytes", "--source", &tarball, "--cmd", "echo split-ok"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("split-ok") && text.contains("PASS"), "{text}");
}

#[test]
fn a_missing_emulator_is_an_infra_error_before_any_make() {
    let p = FakeProject::new();
    let board = common::fake::board_toml("no emulator", &[]).replace(&common::fake::fake_qemu().display().to_string(), "qemu-system-kmatrix-missing");
    p.write("boards/fake-noemu.toml", &board);
    let tarball = p.tarball.display().to_string();

    let t = Instant::now();
    let out = p.kmatrix(&["boot", "--board", "fake-noemu", "--source", &tarball, "--check"]);
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`qemu-system-kmatrix-missing` (Debian package: qemu-system-x86)"), "{}", stderr(&out));
    assert!(p.make_log().is_empty(), "make ran: {:#?}", p.make_log());
    assert!(secs < 1.0, "pre-flight took {secs:.2}s");

    // In a sweep only that cell is an infra-error; the other one runs.
    p.write_matrix(&matrix_with(&p, &["fake-noemu", "fake-pc"], ""));
    let res = p.path().join("results");
    let out = p.kmatrix(&["sweep", "--results-dir", res.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let r = results(&res);
    let mut v = verdicts(&r);
    v.sort();
    assert_eq!(v, [("fake-noemu".to_string(), "infra-error".to_string()), ("fake-pc".to_string(), "pass".to_string())]);
    let noemu = r["cells"].as_array().unwrap().iter().find(|c| c["board"] == "fake-noemu").unwrap();
    assert!(noemu["detail"].as_str().unwrap().contains("Debian package: qemu-system-x86"), "{noemu}");
}

