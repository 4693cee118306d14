//! The nightly in the fast tier (fake kernel tree, fake emulator): two
//! nights into one history root, a regression, a flaky cell, the history
//! database, the nightly lock, kernel versions, version-dependent
//! descriptor values, git trees and the build heartbeat.

mod common;
use common::fake::{stderr, stdout, toml_str, FakeProject};
use serde_json::Value;
use std::path::Path;

fn code(o: &std::process::Output) -> Option<i32> {
    o.status.code()
}

fn latest_results(root: &Path) -> Value {
    let mut runs: Vec<_> = std::fs::read_dir(root).unwrap().flatten().map(|e| e.path()).filter(|p| p.join("results.json").is_file()).collect();
    runs.sort();
    serde_json::from_str(&std::fs::read_to_string(runs.last().unwrap().join("results.json")).unwrap()).unwrap()
}

fn cell<'a>(r: &'a Value, board: &str) -> &'a Value {
    r["cells"].as_array().unwrap().iter().find(|c| c["board"] == board).unwrap_or_else(|| panic!("no cell {board}: {r}"))
}

/// fake-pc stays healthy on night 1 and breaks on night 2 (a fragment);
/// fake-flaky runs a command that fails on every other boot.
fn two_board_matrix(p: &FakeProject) -> String {
    let counter = p.path().join("flaky-counter");
    let cmd = format!("n=$(cat {c} 2>/dev/null || echo 0); echo $((n+1)) > {c}; [ $((n % 2)) = 1 ]", c = counter.display());
    format!(
        "boards = [\"fake-pc\", \"fake-flaky\"]\ntoolchains = [\"gcc\"]\nkernels = [\"fake\"]\nconfigs = [\"tiny\"]\n\n\
         [kernel.fake]\nversion = \"6.1\"\npath = {}\n\n[config.tiny]\n\n\
         [[override]]\nboard = \"fake-flaky\"\ncmds = [{}]\n",
        p.tarball_toml(),
        toml_str(&cmd)
    )
}

#[test]
fn night_two_regresses_one_cell_the_flaky_one_stays_flaky_and_history_has_both() {
    let p = FakeProject::new();
    p.add_board("fake-flaky", &[]);
    p.write_matrix(&two_board_matrix(&p));
    let root = p.path().join("nightly");
    let root_s = root.display().to_string();

    let n1 = p.kmatrix(&["sweep", "--history", &root_s]);
    assert_eq!(code(&n1), Some(0), "flaky is no failure; nothing to compare with:\n{}", stdout(&n1));
    assert!(stdout(&n1).contains("no earlier complete run"), "{}", stdout(&n1));
    let r1 = latest_results(&root);
    assert_eq!(cell(&r1, "fake-pc")["verdict"], "pass");
    let f1 = cell(&r1, "fake-flaky");
    assert_eq!(f1["verdict"], "flaky", "{f1}");
    assert_eq!(f1["attempts"], 2);
    assert!(f1["detail"].as_str().unwrap().starts_with("attempt 1: cmd-fail"), "{f1}");
    assert!(stdout(&n1).contains("flaky"), "the table shows flaky:\n{}", stdout(&n1));

    // Night 2: a fragment breaks fake-pc's build.
    p.write("fragments/breaker.config", "CONFIG_FAKE_BUILD_FAIL=y\n");
    let board = std::fs::read_to_string(p.path().join("boards/fake-pc.toml")).unwrap();
    assert!(board.contains("fragments = [\"common\"]"), "{board}");
    p.write("boards/fake-pc.toml", &board.replace("fragments = [\"common\"]", "fragments = [\"common\", \"breaker\"]"));
    std::thread::sleep(std::time::Duration::from_millis(1100)); // a new dated directory
    let n2 = p.kmatrix(&["sweep", "--history", &root_s]);
    let out = stdout(&n2);
    assert_eq!(code(&n2), Some(1), "a regression exits 1:\n{out}");
    assert!(out.contains("1 regressions"), "{out}");
    assert!(out.contains("regressions:\n  fake-pc gcc fake tiny: pass -> build-fail"), "{out}");
    assert!(out.contains("flaky:\n  fake-flaky gcc fake tiny: flaky -> flaky"), "{out}");
    assert!(!out.contains("fake-flaky gcc fake tiny: flaky -> cmd-fail"), "{out}");
    let r2 = latest_results(&root);
    assert_eq!(cell(&r2, "fake-flaky")["verdict"], "flaky");
    let runs: Vec<_> = std::fs::read_dir(&root).unwrap().flatten().filter(|e| e.path().join("report.html").is_file()).collect();
    assert_eq!(runs.len(), 2, "each night writes report.html");

    let h = p.kmatrix(&["history", "--history", &root_s]);
    let text = stdout(&h);
    assert_eq!(code(&h), Some(0), "{text}{}", stderr(&h));
    assert!(text.contains("4 results of 2 cells"), "{text}");
    assert_eq!(text.matches("build-fail").count(), 1, "{text}");
    let fl = p.kmatrix(&["history", "--history", &root_s, "--flaky", "--filter", "board=fake-flaky"]);
    let line = stdout(&fl).lines().find(|l| l.contains("fake-flaky")).unwrap_or_default().to_string();
    let nums: Vec<&str> = line.split_whitespace().filter(|w| w.chars().all(|c| c.is_ascii_digit())).collect();
    assert_eq!(nums, ["2", "0", "2", "0"], "2 nights, 0 pass, 2 flaky, 0 failed: {line}");
}

#[test]
fn a_failure_that_recurs_on_retry_is_a_failure_and_retries_zero_counts_the_first() {
    let p = FakeProject::new();
    p.add_board("fake-panic", &["fake.boot=panic"]);
    p.write_matrix(&p.default_matrix().replace("boards = [\"fake-pc\"]", "boards = [\"fake-panic\"]"));
    let out = p.kmatrix(&["sweep", "--results-dir", "r"]);
    assert_eq!(code(&out), Some(1), "{}", stdout(&out));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(p.path().join("r/results.json")).unwrap()).unwrap();
    let c = cell(&r, "fake-panic");
    assert_eq!(c["verdict"], "panic", "{c}");
    assert_eq!(c["attempts"], 2);
    assert!(c["detail"].as_str().unwrap().contains("again on 1 retries"), "{c}");
    assert_eq!(p.qemu_log().len(), 2);

    let out = p.kmatrix(&["sweep", "--results-dir", "r0", "--retries", "0"]);
    assert_eq!(code(&out), Some(1));
    assert_eq!(p.qemu_log().len(), 3, "no retry with --retries 0");
}

#[test]
fn a_second_nightly_on_the_same_root_is_refused_while_the_first_runs() {
    let p = FakeProject::new();
    p.write_matrix(&p.default_matrix().replace("[config.tiny]\n", "[config.tiny]\nconfig = \"CONFIG_FAKE_BUILD_SECONDS=8\"\n"));
    let root = p.path().join("nightly").display().to_string();
    let mut first = p.spawn(&["sweep", "--history", &root]);
    let lock = p.path().join("nightly/.nightly.lock");
    let t = std::time::Instant::now();
    while !std::fs::read_to_string(&lock).unwrap_or_default().starts_with("pid") {
        assert!(t.elapsed().as_secs() < 30, "the first nightly never took its lock");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let second = p.kmatrix(&["sweep", "--history", &root]);
    assert_eq!(code(&second), Some(2), "{}", stderr(&second));
    assert!(stderr(&second).contains("another sweep is running on"), "{}", stderr(&second));
    assert!(first.wait().unwrap().success());
}

#[test]
fn a_kernel_is_the_version_it_declares_or_an_infra_error() {
    let p = FakeProject::new();
    // The fake tree is 6.1.0: declared 6.12, it must not be labelled 6.12.
    p.write_matrix(&p.default_matrix().replace("version = \"6.1\"", "version = \"6.12\""));
    let out = p.kmatrix(&["sweep", "--results-dir", "r"]);
    assert_eq!(code(&out), Some(2), "{}", stdout(&out));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(p.path().join("r/results.json")).unwrap()).unwrap();
    let c = cell(&r, "fake-pc");
    assert_eq!(c["verdict"], "infra-error");
    assert!(c["detail"].as_str().unwrap().contains("declared as 6.12, but"), "{c}");
    assert!(p.build_lines().is_empty(), "nothing was built");

    // A Debian linux-source version that is not installed names its package.
    p.write_matrix(
        "boards = [\"fake-pc\"]\ntoolchains = [\"gcc\"]\nkernels = [\"nine\"]\nconfigs = [\"tiny\"]\n[kernel.nine]\nversion = \"9.9\"\n[config.tiny]\n",
    );
    let out = p.kmatrix(&["sweep", "--results-dir", "r2"]);
    assert_eq!(code(&out), Some(2));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(p.path().join("r2/results.json")).unwrap()).unwrap();
    let d = cell(&r, "fake-pc")["detail"].as_str().unwrap().to_string();
    assert!(d.contains("/usr/src/linux-source-9.9.tar.xz") && d.contains("linux-source-9.9"), "{d}");

    // The release the kernel reports is recorded beside the matrix's label.
    p.write_matrix(&p.default_matrix());
    let out = p.kmatrix(&["sweep", "--results-dir", "r3"]);
    assert_eq!(code(&out), Some(0), "{}", stdout(&out));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(p.path().join("r3/results.json")).unwrap()).unwrap();
    let c = cell(&r, "fake-pc");
    assert_eq!(c["kernel_release"], "6.1.0-fake");
    assert_eq!(c["kernel_version"], "6.1");
    assert!(c["kernel_source"].as_str().unwrap().ends_with("fake-linux.tar.gz"), "{c}");
    let env = &r["environment"];
    assert_eq!(env["kernels"]["fake"]["releases"][0], "6.1.0-fake", "{env}");
    assert!(env["toolchains"]["gcc"][0].as_str().unwrap().contains("gcc"), "{env}");
}

#[test]
fn version_ranges_pick_values_and_skip_boards_outside_their_kernels() {
    let p = FakeProject::new();
    let board = std::fs::read_to_string(p.path().join("boards/fake-pc.toml")).unwrap();
    // Values for 6.1 (the fake tree) apply; those for <6 do not.
    let when = "\n[[kernel.when]]\nkernel = \"<6\"\nmake-targets = [\"oldImage\"]\nimage = \"arch/x86/boot/oldImage\"\n\n\
                [[kernel.when]]\nkernel = \">=6.1, <6.2\"\nmake-targets = [\"zImage\"]\nimage = \"arch/x86/boot/zImage\"\nconfig = \"CONFIG_FAKE_WHEN=y\"\n";
    let with_when = board.replacen("\n[qemu]", &format!("{when}\n[qemu]"), 1);
    assert_ne!(with_when, board, "the board has a [qemu] table");
    p.write("boards/fake-pc.toml", &with_when);
    p.write("boards/fake-old.toml", &board.replacen("memory = ", "kernels = \"<6\"\nmemory = ", 1));
    p.write_matrix(&p.default_matrix().replace("boards = [\"fake-pc\"]", "boards = [\"fake-pc\", \"fake-old\"]"));
    let out = p.kmatrix(&["sweep", "--results-dir", "r"]);
    assert_eq!(code(&out), Some(0), "{}", stdout(&out));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(p.path().join("r/results.json")).unwrap()).unwrap();
    assert_eq!(cell(&r, "fake-pc")["verdict"], "pass");
    let old = cell(&r, "fake-old");
    assert_eq!(old["verdict"], "skip");
    assert_eq!(old["detail"], "board `fake-old` runs kernels <6, not 6.1.0");
    let qemu = p.qemu_log();
    assert!(qemu[0].contains("/arch/x86/boot/zImage "), "{}", qemu[0]);
    let builds = p.build_lines();
    assert!(builds[0].starts_with("zImage vmlinux O="), "{builds:?}");
    let config = std::fs::read_to_string(qemu[0].split(" -kernel ").nth(1).unwrap().split(' ').next().unwrap()).unwrap();
    assert!(config.lines().any(|l| l == "CONFIG_FAKE_WHEN=y"), "{config}");

    // A bad range is an error at its file:line:col.
    p.write("boards/fake-bad.toml", &board.replacen("memory = ", "kernels = \"6.5\"\nmemory = ", 1));
    let out = p.kmatrix(&["plan"]);
    assert_eq!(code(&out), Some(2));
    let err = stderr(&out);
    assert!(err.contains("invalid version range `6.5`") && err.contains("boards/fake-bad.toml:"), "{err}");
}

#[test]
fn a_git_tree_records_its_commit_and_builds_incrementally_in_one_directory() {
    let p = FakeProject::new();
    let tree = p.path().join("linux");
    let st = std::process::Command::new("cp").arg("-a").arg(common::fake::fake_tree()).arg(&tree).status().unwrap();
    assert!(st.success());
    let git = |args: &[&str]| {
        let o = std::process::Command::new("git").arg("-C").arg(&tree).args(["-c", "user.name=k", "-c", "user.email=k@example.org"]).args(args).output().unwrap();
        assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "base"]);
    let head = git(&["rev-parse", "HEAD"]);
    p.write_matrix(&format!(
        "boards = [\"fake-pc\"]\ntoolchains = [\"gcc\"]\nkernels = [\"tree\"]\nconfigs = [\"tiny\"]\n[kernel.tree]\npath = {}\n[config.tiny]\n",
        toml_str(&tree.display().to_string())
    ));
    let out = p.kmatrix(&["sweep", "--results-dir", "r1"]);
    assert_eq!(code(&out), Some(0), "{}", stdout(&out));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(p.path().join("r1/results.json")).unwrap()).unwrap();
    let c = cell(&r, "fake-pc");
    assert_eq!(c["git"]["commit"], head.as_str());
    assert_eq!(c["git"]["dirty"], false);
    assert_eq!(c["kernel_version"], "6.1.0", "read from the tree's Makefile");

    std::fs::write(tree.join("init-change.c"), "int x;\n").unwrap();
    let out = p.kmatrix(&["sweep", "--results-dir", "r2"]);
    assert_eq!(code(&out), Some(0));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(p.path().join("r2/results.json")).unwrap()).unwrap();
    assert_eq!(cell(&r, "fake-pc")["git"]["dirty"], true);
    // Both nights ran make in the same build directory: incremental.
    let dirs: Vec<String> = p.build_lines().iter().map(|l| l.split(" O=").nth(1).unwrap().split(' ').next().unwrap().to_string()).collect();
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    assert_eq!(dirs[0], dirs[1]);
}

#[test]
fn a_long_build_prints_a_heartbeat_with_an_estimate_from_the_last_one() {
    let p = FakeProject::new();
    p.write_matrix(&p.default_matrix().replace("[config.tiny]\n", "[config.tiny]\nconfig = \"CONFIG_FAKE_BUILD_SECONDS=3\"\n"));
    let mut c = assert_cmd::Command::cargo_bin("kmatrix").unwrap();
    let run = |c: &mut assert_cmd::Command, dir: &str| {
        c.current_dir(p.path()).env("KMATRIX_CACHE_DIR", &p.cache).env("CI", "1").env("KMATRIX_HEARTBEAT_SECS", "1").args(["sweep", "--results-dir", dir]).output().unwrap()
    };
    let out = run(&mut c, "r1");
    let err = stderr(&out);
    assert_eq!(code(&out), Some(0), "{err}");
    assert!(err.contains("building ") && err.contains("objects"), "no heartbeat:\n{err}");
    // The next build of the same inputs (a new tarball of the same series)
    // estimates from this one.
    std::fs::remove_dir_all(p.cache.join("builds")).unwrap();
    std::fs::remove_dir_all(p.cache.join("configs")).unwrap();
    let out = run(&mut assert_cmd::Command::cargo_bin("kmatrix").unwrap(), "r2");
    let err = stderr(&out);
    assert!(err.contains("last time ") && err.contains("ETA"), "no estimate:\n{err}");
}
