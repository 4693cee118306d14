//! The fast tier's smoke test: build, boot, sweep and the failure verdicts
//! against the fake kernel tree and the fake emulator (tests/common/fake.rs).
//! Needs only make, sh, coreutils, gzip, cpio and the host gcc; seconds.

mod common;
use common::fake::{stderr, stdout, FakeProject};

fn code(o: &std::process::Output) -> Option<i32> {
    o.status.code()
}

#[test]
fn build_prints_artefacts_and_a_second_build_reuses_it() {
    let p = FakeProject::new();
    let tarball = p.tarball.display().to_string();
    let out = p.kmatrix(&["build", "--board", "fake-pc", "--source", &tarball]);
    let text = stdout(&out);
    assert_eq!(code(&out), Some(0), "{text}{}", stderr(&out));
    assert!(text.starts_with("built x86_64 kernel for fake-pc"), "{text}");
    let image = text.lines().find_map(|l| l.trim().strip_prefix("image")).map(str::trim).unwrap_or_else(|| panic!("no image line:\n{text}"));
    assert!(image.ends_with("arch/x86/boot/bzImage"), "{image}");
    for k in ["vmlinux", "System.map", ".config", "build log"] {
        assert!(text.lines().any(|l| l.trim_start().starts_with(k)), "no {k} artefact:\n{text}");
    }
    // The image is the final .config: the board's and the common fragment's
    // symbols landed.
    let config = std::fs::read_to_string(image).unwrap();
    for sym in ["CONFIG_64BIT=y", "CONFIG_SERIAL_8250_CONSOLE=y", "CONFIG_PRINTK=y", "CONFIG_FAKE_BASE=\"tinyconfig\""] {
        assert!(config.lines().any(|l| l == sym), "{sym} missing from the image:\n{config}");
    }
    let builds = p.build_lines();
    assert_eq!(builds.len(), 1, "one make build: {:#?}", p.make_log());
    assert!(builds[0].starts_with("bzImage vmlinux O="), "{}", builds[0]);

    let again = p.kmatrix(&["build", "--board", "fake-pc", "--source", &tarball]);
    assert_eq!(code(&again), Some(0));
    assert!(stdout(&again).starts_with("reused x86_64 kernel for fake-pc"), "{}", stdout(&again));
    assert_eq!(p.build_lines().len(), 1, "the warm build ran make: {:#?}", p.make_log());
}

#[test]
fn boot_check_passes_and_runs_commands() {
    let p = FakeProject::new();
    let tarball = p.tarball.display().to_string();
    let out = p.kmatrix(&["boot", "--board", "fake-pc", "--source", &tarball, "--check"]);
    let text = stdout(&out);
    assert_eq!(code(&out), Some(0), "{text}{}", stderr(&out));
    assert!(text.starts_with("PASS  fake-pc (x86_64 release=6.1.0-fake; boot to marker"), "{text}");
    assert!(text.contains("console log: "), "{text}");
    let qemu = p.qemu_log();
    assert_eq!(qemu.len(), 1, "{qemu:#?}");
    assert!(qemu[0].contains(" -M pc ") && qemu[0].contains(" -kernel ") && qemu[0].contains(" -initrd "), "{}", qemu[0]);

    let out = p.kmatrix(&["boot", "--board", "fake-pc", "--source", &tarball, "--cmd", "echo hi", "--cmd", "exit 3"]);
    let text = stdout(&out);
    assert_eq!(code(&out), Some(1), "exit 3 is a failed command:\n{text}{}", stderr(&out));
    assert!(text.starts_with("$ echo hi\nhi\n[exit status 0]\n$ exit 3\n[exit status 3]\n"), "{text}");
    assert!(text.contains("CMD-FAIL  command(s) [1] exited non-zero  fake-pc"), "{text}");

    let out = p.kmatrix(&["boot", "--board", "fake-pc", "--source", &tarball, "--cmd", "echo hi"]);
    let text = stdout(&out);
    assert_eq!(code(&out), Some(0), "{text}{}", stderr(&out));
    assert!(text.starts_with("$ echo hi\nhi\n[exit status 0]\nPASS  fake-pc"), "{text}");
    // Three boots, one kernel build.
    assert_eq!(p.build_lines().len(), 1, "{:#?}", p.make_log());
}

#[test]
fn sweep_of_the_fake_cell_passes() {
    let p = FakeProject::new();
    let res = p.path().join("R");
    let out = p.kmatrix(&["sweep", "--results-dir", res.to_str().unwrap()]);
    assert_eq!(code(&out), Some(0), "{}{}", stdout(&out), stderr(&out));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(res.join("results.json")).unwrap()).unwrap();
    assert_eq!(r["schema"], 1);
    assert_eq!(r["complete"], true, "{r:#}");
    let cells = r["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 1, "{r:#}");
    assert_eq!(cells[0]["board"], "fake-pc");
    assert_eq!(cells[0]["verdict"], "pass", "{r:#}");
    assert!(stdout(&out).contains("1 passed, 0 failed"), "{}", stdout(&out));
    assert_eq!(p.build_lines().len(), 1, "{:#?}", p.make_log());
}

#[test]
fn failures_get_their_verdicts() {
    let p = FakeProject::new();
    let tarball = p.tarball.display().to_string();
    for (board, words) in [
        ("fake-panic", "fake.boot=panic"),
        ("fake-hang", "fake.boot=hang"),
        ("fake-exit", "fake.boot=exit"),
        ("fake-oops", "fake.boot=oops"),
        ("fake-stale", "fake.boot=stale"),
    ] {
        p.add_board(board, &[words]);
    }
    let boot = |board: &str, extra: &[&str]| {
        let mut args = vec!["boot", "--board", board, "--source", &tarball, "--check"];
        args.extend_from_slice(extra);
        let t = std::time::Instant::now();
        let out = p.kmatrix(&args);
        (out, t.elapsed())
    };

    let (out, took) = boot("fake-panic", &[]);
    assert_eq!(code(&out), Some(1));
    assert!(stdout(&out).starts_with("PANIC  [    1.000000] Kernel panic - not syncing: fake panic  fake-panic"), "{}", stdout(&out));
    // The emulator sleeps 60 s after the panic; kmatrix stops it.
    assert!(took.as_secs() < 30, "{took:?}");

    let (out, took) = boot("fake-hang", &["--no-output-timeout", "2"]);
    assert_eq!(code(&out), Some(1));
    assert!(stdout(&out).starts_with("TIMEOUT  console silent for 2s (after the boot marker)"), "{}", stdout(&out));
    assert!(took.as_secs() < 30, "{took:?}");

    let (out, _) = boot("fake-exit", &[]);
    assert_eq!(code(&out), Some(1));
    assert!(stdout(&out).starts_with("BOOT-FAIL  no boot marker"), "{}", stdout(&out));

    let (out, _) = boot("fake-oops", &[]);
    assert_eq!(code(&out), Some(1));
    assert!(stdout(&out).starts_with("OOPS  [    1.000000] Unable to handle kernel NULL pointer dereference"), "{}", stdout(&out));

    // Markers of another boot (another nonce) are not this boot's.
    let (out, _) = boot("fake-stale", &[]);
    assert_eq!(code(&out), Some(1));
    assert!(stdout(&out).starts_with("BOOT-FAIL  no boot marker"), "{}", stdout(&out));

    // All of those boards share one kernel.
    assert_eq!(p.build_lines().len(), 1, "{:#?}", p.make_log());

    let boots = p.qemu_log().len();
    let frag = p.fragment("fail", "CONFIG_FAKE_BUILD_FAIL=y\n");
    let (out, _) = boot("fake-pc", &["--fragment", frag.to_str().unwrap()]);
    assert_eq!(code(&out), Some(1));
    let err = stderr(&out);
    assert!(err.contains("BUILD-FAIL  build failed; log: "), "{err}");
    assert!(err.contains("init/fake.c:1:1: error: fake build failure"), "{err}");
    assert_eq!(p.qemu_log().len(), boots, "no boot after a failed build");
    assert_eq!(p.build_lines().len(), 2, "{:#?}", p.make_log());
}
