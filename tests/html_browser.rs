//! The HTML report as a browser sees it: a page built from results, a
//! comparison and history points (several boards, two toolchains, two
//! kernels, a regression, a flaky cell, a skip, six runs of trends) is
//! rendered by Debian's headless Chromium, which must load it without
//! console errors, lay it out (a screenshot) and keep its structure (the
//! DOM it dumps). Runs with KMATRIX_TEST_REAL=1 (CI sets it, so a missing
//! chromium fails there); set KMATRIX_HTML_SHOT=<file.png> to keep the
//! screenshot (and the page, as <file>.html) for a look.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kmatrix::history::Point;
use kmatrix::outcome::Verdict;
use kmatrix::sweep::compare::{compare, Kind};
use kmatrix::sweep::html::page;
use kmatrix::sweep::report::Layout;
use kmatrix::sweep::results::{CellResult, Environment, KernelInfo, Results};

const BOARDS: [(&str, &str); 3] = [("qemu-x86_64", "x86_64"), ("qemu-aarch64-virt", "aarch64"), ("qemu-arm-versatilepb", "arm")];
const TOOLCHAINS: [&str; 2] = ["gcc", "clang"];
const KERNELS: [&str; 2] = ["6.1", "6.12"];
const CONFIGS: [&str; 2] = ["tiny", "debug"];
const RUNS: usize = 6;
const DAY: u64 = 86_400;
const FIRST_RUN: u64 = 1_767_232_800; // 2026-01-01 02:00 UTC

/// What a cell did in the run `run` (0-based; the last is the current one).
fn verdict(board: &str, toolchain: &str, kernel: &str, config: &str, run: usize) -> Verdict {
    let last = RUNS - 1;
    match (board, toolchain, kernel, config) {
        ("qemu-aarch64-virt", "clang", "6.12", "tiny") if run == last => Verdict::Panic,
        ("qemu-x86_64", "gcc", "6.1", "tiny") if run == last => Verdict::Flaky,
        ("qemu-x86_64", "gcc", "6.1", "tiny") if run == 2 => Verdict::BootFail,
        ("qemu-arm-versatilepb", "clang", "6.12", _) => Verdict::Skip,
        ("qemu-arm-versatilepb", "gcc", "6.12", "debug") if run < last => Verdict::Timeout,
        ("qemu-arm-versatilepb", "clang", "6.1", "debug") if run == 3 => Verdict::InfraError,
        _ => Verdict::Pass,
    }
}

/// A boot time that wanders a little from run to run, as real ones do.
fn boot_time(board_index: usize, series: usize, run: usize) -> f64 {
    let base = [0.9, 1.6, 2.4][board_index] + series as f64 * 0.12;
    base + ((run * 7 + series * 3) % 5) as f64 * 0.06
}

fn cell(bi: usize, toolchain: &str, kernel: &str, config: &str, run: usize) -> CellResult {
    let (board, arch) = BOARDS[bi];
    let series = TOOLCHAINS.iter().position(|t| *t == toolchain).unwrap() * 4 + KERNELS.iter().position(|k| *k == kernel).unwrap() * 2 + CONFIGS.iter().position(|c| *c == config).unwrap();
    let v = verdict(board, toolchain, kernel, config, run);
    let id = format!("{board}-{toolchain}-{kernel}-{config}");
    let ran = !matches!(v, Verdict::Skip);
    let passed = matches!(v, Verdict::Pass | Verdict::Flaky);
    let detail = match v {
        Verdict::Panic => Some("Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b <clang>".to_string()),
        Verdict::Flaky => Some("boot-fail on attempt 1 (no marker before the console went quiet), passed on attempt 2".into()),
        Verdict::Skip => Some("kernel 6.12 needs clang >= 15; the installed one is 14.0.6".into()),
        Verdict::Timeout => Some("no output for 30 s".into()),
        Verdict::BootFail => Some("qemu exited before the marker".into()),
        Verdict::InfraError => Some("qemu-system-arm: cannot allocate memory".into()),
        _ => None,
    };
    CellResult {
        id: id.clone(),
        board: board.into(),
        arch: arch.into(),
        toolchain: toolchain.into(),
        kernel: kernel.into(),
        kernel_version: Some(kernel.into()),
        kernel_release: ran.then(|| format!("{kernel}.0-kmatrix")),
        kernel_source: Some(format!("/usr/src/linux-source-{kernel}.tar.xz")),
        git: None,
        toolchain_version: Some(if toolchain == "gcc" { "gcc (Debian 12.2.0-14) 12.2.0".into() } else { "Debian clang version 14.0.6".into() }),
        config: config.into(),
        emulator: format!("qemu-system-{arch}"),
        build: format!("build-{id}"),
        verdict: v,
        detail,
        build_seconds: ran.then_some(240.0 + series as f64 * 31.0 + bi as f64 * 17.0),
        build_cpu_seconds: ran.then_some(450.0),
        build_reused: ran.then_some(run % 2 == 1),
        boot_seconds: ran.then_some(boot_time(bi, series, run) + 1.0),
        boot_to_marker_seconds: passed.then(|| boot_time(bi, series, run)),
        build_log: ran.then(|| format!("logs/build-{id}.build.log")),
        console_log: ran.then(|| format!("logs/{id}.console.log")),
        console_log_cut: false,
        attempts: Some(if v == Verdict::Flaky { 2 } else { 1 }),
        stack_log: (v == Verdict::Panic).then(|| format!("logs/{id}.stack.txt")),
        backtrace_log: None,
    }
}

fn run_name(run: usize) -> String {
    format!("{}-000000", FIRST_RUN + run as u64 * DAY)
}

fn results(run: usize) -> Results {
    let mut r = Results::new(2);
    r.started_at = FIRST_RUN + run as u64 * DAY;
    r.finished_at = Some(r.started_at + 3_725);
    r.wall_seconds = Some(3_725.0);
    r.complete = true;
    for bi in 0..BOARDS.len() {
        for t in TOOLCHAINS {
            for k in KERNELS {
                for c in CONFIGS {
                    r.cells.push(cell(bi, t, k, c, run));
                }
            }
        }
    }
    r.environment = Some(environment(&r));
    r
}

fn environment(r: &Results) -> Environment {
    let mut kernels = BTreeMap::new();
    for k in KERNELS {
        kernels.insert(
            k.to_string(),
            KernelInfo { source: Some(format!("/usr/src/linux-source-{k}.tar.xz")), releases: vec![format!("{k}.0-kmatrix")], commits: vec![] },
        );
    }
    let toolchains = r.cells.iter().map(|c| (c.toolchain.clone(), vec![c.toolchain_version.clone().unwrap()])).collect();
    let emulators = r.cells.iter().map(|c| (c.emulator.clone(), format!("QEMU emulator version 7.2.15 ({})", c.emulator))).collect();
    Environment { host: "builder-01".into(), host_kernel: "Linux 6.1.0-40-amd64 x86_64".into(), os: Some("Debian GNU/Linux 12 (bookworm)".into()), kernels, toolchains, emulators }
}

fn points(all: &[Results]) -> Vec<Point> {
    all.iter()
        .enumerate()
        .flat_map(|(run, r)| {
            r.cells.iter().map(move |c| Point {
                run: run_name(run),
                started_at: r.started_at,
                board: c.board.clone(),
                toolchain: c.toolchain.clone(),
                kernel: c.kernel.clone(),
                config: c.config.clone(),
                kernel_release: c.kernel_release.clone(),
                git_commit: None,
                verdict: c.verdict,
                detail: c.detail.clone(),
                attempts: c.attempts.unwrap_or(1),
                build_seconds: c.build_seconds,
                build_reused: c.build_reused,
                boot_to_marker_seconds: c.boot_to_marker_seconds,
                console_log: c.console_log.clone(),
            })
        })
        .collect()
}

fn chromium() -> PathBuf {
    let p = PathBuf::from("/usr/bin/chromium");
    assert!(p.is_file(), "{} not found: this test needs Debian's chromium (apt-get install chromium), or unset KMATRIX_TEST_REAL", p.display());
    p
}

/// Runs headless chromium on `page` with `extra` flags; (stdout, stderr).
fn run_chromium(page: &Path, work: &Path, extra: &str) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let name = extra.trim_start_matches('-').split('=').next().unwrap().to_string();
    let (out, err) = (work.join(format!("{name}.out")), work.join(format!("{name}.err")));
    let mut child = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--enable-logging=stderr", "--v=0", "--window-size=1400,2000", extra])
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("cannot start chromium");
    // The machine may be busy with kernel builds: generous, but bounded.
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {extra} took over 180 s:\n{}", std::fs::read_to_string(&err).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (stdout, stderr) = (std::fs::read_to_string(&out).unwrap(), std::fs::read_to_string(&err).unwrap());
    assert!(status.success(), "chromium {extra}: {status}\n{stderr}");
    (stdout, stderr)
}

/// Errors the page itself raised (chromium's own noise, e.g. about D-Bus,
/// is not the page's).
fn page_errors(stderr: &str) -> Vec<&str> {
    let console = regex::Regex::new(r"ERROR:.*(CONSOLE|console)").unwrap();
    stderr.lines().filter(|l| l.contains("Uncaught") || console.is_match(l)).collect()
}

#[test]
#[cfg_attr(not(kmatrix_real), ignore = "needs Debian's chromium: set KMATRIX_TEST_REAL=1 (CI does)")]
fn chromium_renders_the_report() {
    let all: Vec<Results> = (0..RUNS).map(results).collect();
    let (previous, current) = (&all[RUNS - 2], &all[RUNS - 1]);
    let cmp = compare(previous, current, &run_name(RUNS - 2));
    assert_eq!(cmp.count(Kind::Regression), 1, "{}", cmp.text());
    assert_eq!(cmp.count(Kind::Flaky), 1, "{}", cmp.text());
    let html = page(current, &Layout::default(), Some(&cmp), &points(&all));

    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.html");
    std::fs::write(&report, &html).unwrap();
    let shot = dir.path().join("shot.png");

    let (_, stderr) = run_chromium(&report, dir.path(), &format!("--screenshot={}", shot.display()));
    assert!(page_errors(&stderr).is_empty(), "the page logged errors:\n{stderr}");
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}\n{stderr}", shot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 50_000, "a {} byte screenshot is too small to show the report", png.len());
    if let Some(keep) = std::env::var_os("KMATRIX_HTML_SHOT") {
        let keep = PathBuf::from(keep);
        if let Some(d) = keep.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::copy(&shot, &keep).unwrap();
        std::fs::copy(&report, keep.with_extension("html")).unwrap();
        eprintln!("screenshot kept at {}", keep.display());
    }

    let (dom, stderr) = run_chromium(&report, dir.path(), "--dump-dom");
    assert!(page_errors(&stderr).is_empty(), "the page logged errors:\n{stderr}");
    assert!(dom.contains("<table class=\"matrix\">"), "{dom}");
    assert_eq!(dom.matches("<svg").count(), BOARDS.len(), "one chart per board: {dom}");
    for (board, _) in BOARDS {
        assert!(dom.contains(&format!("<figure class=\"trend\" id=\"trend-{board}\">")), "{board}: {dom}");
    }
    assert!(dom.contains("<td class=\"cell fail regressed\" id=\"cell-qemu-aarch64-virt-clang-6.12-tiny\">"), "{dom}");
    assert!(dom.contains("<span class=\"badge regressed\">regressed</span>"), "{dom}");
    assert!(dom.contains("<td class=\"cell flaky\" id=\"cell-qemu-x86_64-gcc-6.1-tiny\">"), "{dom}");
    assert!(dom.contains("<span class=\"badge flaky\">flaky</span>"), "{dom}");
    assert!(dom.contains("<td class=\"cell skip\""), "{dom}");
    // Text the page escaped must come back as text, not as an element.
    assert!(dom.contains("exitcode=0x0000000b &lt;clang&gt;") && !dom.contains("<clang>"), "{dom}");
}
