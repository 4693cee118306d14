//! `kmatrix check` on invalid descriptors: every case under
//! tests/fixtures/invalid/<case>/ is a project directory layered over the
//! built-in descriptors. The real binary runs with the case directory as its
//! working directory (so paths print relative, `boards/x.toml:5:1`), must
//! exit 2, must name the expected `file:line:col` locations, and its stderr is
//! snapshotted (tests/snapshots/invalid_descriptors__<case>.snap).

use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn fixtures(group: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(group)
}

/// Runs `kmatrix -C <dir> check` from inside `dir`; returns (exit code, stderr).
fn check(dir: &Path) -> (Option<i32>, String) {
    // Canonical, so that the loader's "relative to the current directory"
    // stripping sees the same prefix as getcwd() in the child.
    let dir = dir.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let out = Command::cargo_bin("kmatrix")
        .unwrap()
        .current_dir(&dir)
        .env_remove("KMATRIX_GEM5")
        .env("KMATRIX_CACHE_DIR", dir.join("no-such-cache"))
        .env("RUST_BACKTRACE", "0")
        .arg("-C")
        .arg(&dir)
        .arg("check")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8(out.stderr).expect("utf-8 stderr"))
}

/// One invalid case: its directory and the locations its errors must name,
/// as `file:line:col` (or just `file` for an error about a whole file).
struct Case {
    dir: &'static str,
    locations: &'static [&'static str],
    /// How many errors `check` must report.
    errors: usize,
}

const CASES: &[Case] = &[
    // Unknown keys: `deny_unknown_fields` points at the misspelt key.
    Case { dir: "board-unknown-key", locations: &["boards/typo.toml:16:1"], errors: 1 },
    Case { dir: "arch-unknown-key", locations: &["arches/riscv64.toml:12:1"], errors: 1 },
    Case { dir: "toolchain-unknown-key", locations: &["toolchains/gcc-12.toml:8:1"], errors: 1 },
    Case { dir: "matrix-unknown-key", locations: &["matrix.toml:5:1"], errors: 1 },
    // Types and syntax.
    Case { dir: "board-memory-integer", locations: &["boards/qemu-x86_64-pc.toml:8:10"], errors: 1 },
    Case { dir: "toml-syntax-error", locations: &["boards/qemu-x86_64-pc.toml:4:34"], errors: 1 },
    Case { dir: "toml-syntax-eof", locations: &["boards/qemu-x86_64-pc.toml:16:25"], errors: 1 },
    // Cross-references.
    Case { dir: "board-unknown-arch", locations: &["boards/qemu-riscv64-virt.toml:2:8"], errors: 1 },
    Case { dir: "board-unknown-fragment", locations: &["boards/qemu-x86_64-pc.toml:12:24"], errors: 1 },
    Case { dir: "arch-unknown-default-board", locations: &["arches/x86_64.toml:6:17"], errors: 1 },
    Case { dir: "arch-duplicate-alias", locations: &["arches/riscv64.toml:2:20"], errors: 1 },
    Case { dir: "toolchain-unknown-target-arch", locations: &["toolchains/gcc.toml:9:1"], errors: 1 },
    // Arch semantics.
    Case { dir: "arch-invalid-triple", locations: &["arches/riscv64.toml:4:10"], errors: 1 },
    Case { dir: "arch-endian-contradicts-triple", locations: &["arches/riscv64.toml:5:10"], errors: 1 },
    // Kernel config lines: inside a TOML literal string they map to the exact
    // line and column; inside a basic string with escapes, to the string.
    Case { dir: "board-bad-config-line", locations: &["boards/qemu-x86_64-pc.toml:15:20"], errors: 1 },
    Case { dir: "matrix-config-basic-string", locations: &["matrix.toml:11:10"], errors: 1 },
    Case { dir: "fragment-bad-line", locations: &["fragments/net.config:3:3"], errors: 1 },
    // Board values.
    Case { dir: "board-bad-duration", locations: &["boards/qemu-x86_64-pc.toml:7:11"], errors: 1 },
    Case { dir: "board-bad-memory-size", locations: &["boards/qemu-x86_64-pc.toml:8:10"], errors: 1 },
    Case { dir: "gem5-unknown-placeholder", locations: &["boards/gem5-arm.toml:21:13"], errors: 1 },
    Case { dir: "gem5-bad-terminal", locations: &["boards/gem5-arm.toml:18:12"], errors: 1 },
    Case { dir: "board-qemu-and-gem5", locations: &["boards/qemu-aarch64-virt.toml:14:1"], errors: 1 },
    Case { dir: "board-missing-emulator", locations: &["--> boards/qemu-x86_64-pc.toml\n"], errors: 1 },
    // The matrix.
    Case { dir: "matrix-unknown-board", locations: &["matrix.toml:1:29"], errors: 1 },
    Case { dir: "matrix-duplicate-board", locations: &["matrix.toml:4:3"], errors: 1 },
    Case { dir: "matrix-url-without-sha256", locations: &["matrix.toml:8:7"], errors: 1 },
    Case { dir: "matrix-include-matches-nothing", locations: &["matrix.toml:12:9"], errors: 1 },
    // Everything is reported in one run, across files, sorted by file and position.
    Case {
        dir: "multiple-errors",
        locations: &[
            "boards/qemu-x86_64-pc.toml:5:12",
            "boards/qemu-x86_64-pc.toml:7:11",
            "boards/qemu-x86_64-pc.toml:8:10",
            "boards/qemu-x86_64-pc.toml:12:14",
            "boards/qemu-x86_64-pc.toml:17:7",
            "matrix.toml:1:11",
            "matrix.toml:2:29",
            "matrix.toml:3:22",
            "matrix.toml:9:10",
        ],
        errors: 9,
    },
];

#[test]
fn invalid_descriptors() {
    let root = fixtures("invalid");
    for case in CASES {
        let (code, stderr) = check(&root.join(case.dir));
        assert_eq!(code, Some(2), "{}: exit code\n{stderr}", case.dir);
        assert!(!stderr.contains("panicked"), "{}: panic\n{stderr}", case.dir);
        let mut from = 0;
        for loc in case.locations {
            // In the given order: diagnostics are sorted by file and position.
            let at = stderr[from..].find(loc).unwrap_or_else(|| panic!("{}: `{loc}` not in stderr (in order)\n{stderr}", case.dir));
            from += at + loc.len();
        }
        let summary = if case.errors == 1 { "error: 1 descriptor error found".to_string() } else { format!("error: {} descriptor errors found", case.errors) };
        assert!(stderr.trim_end().ends_with(&summary), "{}: expected `{summary}`\n{stderr}", case.dir);
        // One `error:` line per diagnostic, plus the summary.
        assert_eq!(stderr.lines().filter(|l| l.starts_with("error: ")).count(), case.errors + 1, "{}: error count\n{stderr}", case.dir);
        // Paths print relative to the case directory, never absolute.
        assert!(!stderr.contains(env!("CARGO_MANIFEST_DIR")), "{}: absolute path\n{stderr}", case.dir);
        insta::assert_snapshot!(case.dir, stderr);
    }
}

/// Every fixture directory is in the table (and so checked), and the table
/// covers at least the cases the suite promises.
#[test]
fn every_fixture_is_listed() {
    let mut dirs: Vec<String> = std::fs::read_dir(fixtures("invalid"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    dirs.sort();
    let mut listed: Vec<String> = CASES.iter().map(|c| c.dir.to_string()).collect();
    listed.sort();
    assert_eq!(dirs, listed);
    assert!(CASES.len() >= 18);
}

/// The fixtures are only wrong where they mean to be: the shipped descriptors
/// themselves pass `check`.
#[test]
fn builtin_descriptors_pass_check() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("kmatrix").unwrap().current_dir(empty.path()).arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: 5 arches, 7 boards, 2 toolchains, 2 fragments"));
}

// Regressions (tests/fixtures/known-bugs/): a project file that overrides a
// *built-in* arch with an error once made `check` panic (exit 101) in
// resolve_board. Now the arch's own error is the only one reported.

#[test]
fn known_bug_builtin_arch_override_with_invalid_triple() {
    let (code, stderr) = check(&fixtures("known-bugs").join("builtin-arch-override-with-invalid-triple"));
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("arches/aarch64.toml:4:10"), "{stderr}");
}

#[test]
fn known_bug_builtin_arch_override_with_endian_mismatch() {
    let (code, stderr) = check(&fixtures("known-bugs").join("builtin-arch-override-with-endian-mismatch"));
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("arches/mips64.toml:5:10"), "{stderr}");
}
