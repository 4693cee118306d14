//! `kmatrix plan --format json`: the shipped matrix from an empty project
//! directory, and a custom matrix exercising include/exclude/override rules
//! and a toolchain that cannot build every arch.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

/// `kmatrix plan --format json` run from `dir` with an empty cache and no
/// gem5, parsed.
fn plan(dir: &Path) -> Value {
    let cache = TempDir::new().unwrap();
    let out = Command::cargo_bin("kmatrix")
        .unwrap()
        .current_dir(dir)
        .env("KMATRIX_CACHE_DIR", cache.path())
        .env_remove("KMATRIX_GEM5")
        .args(["plan", "--format", "json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}:\n{stdout}"))
}

fn cells(plan: &Value) -> &Vec<Value> {
    plan["cells"].as_array().expect("cells")
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("`{key}` is not a string: {v}"))
}

/// Invariants of every plan: complete cells, unique ids, every cell in
/// exactly one build and that build the one it names.
fn check_shape(plan: &Value) {
    assert_eq!(plan["schema"], 1);
    let mut ids = BTreeSet::new();
    for c in cells(plan) {
        for key in ["id", "board", "arch", "toolchain", "kernel", "config", "emulator", "build"] {
            assert!(!s(c, key).is_empty(), "empty `{key}`: {c}");
        }
        match s(c, "state") {
            "pending" => assert!(c.get("reason").is_none(), "{c}"),
            "skip" => assert!(!s(c, "reason").is_empty(), "{c}"),
            other => panic!("state `{other}`: {c}"),
        }
        assert!(c["timeout_secs"].as_u64().unwrap() > 0, "{c}");
        assert!(ids.insert(s(c, "id").to_string()), "duplicate cell id: {c}");
    }
    let build_of: BTreeMap<&str, &str> = cells(plan).iter().map(|c| (s(c, "id"), s(c, "build"))).collect();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut build_ids = BTreeSet::new();
    for b in plan["builds"].as_array().unwrap() {
        assert!(build_ids.insert(s(b, "id")), "duplicate build id: {b}");
        assert!(!b["cells"].as_array().unwrap().is_empty(), "build without cells: {b}");
        for id in b["cells"].as_array().unwrap() {
            let id = id.as_str().unwrap();
            *seen.entry(id.to_string()).or_default() += 1;
            assert_eq!(build_of.get(id).copied(), Some(s(b, "id")), "cell {id} is listed by build {} but names another", s(b, "id"));
        }
    }
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), ids, "builds must list every cell");
    assert!(seen.values().all(|&n| n == 1), "a cell is listed by several builds: {seen:?}");
}

const QEMU_BOARDS: [&str; 5] = ["qemu-aarch64-virt", "qemu-arm-versatilepb", "qemu-mips64-malta", "qemu-mips64el-malta", "qemu-x86_64-pc"];

#[test]
fn builtin_matrix() {
    let dir = TempDir::new().unwrap();
    let p = plan(dir.path());
    check_shape(&p);
    assert_eq!(p["matrix"], "<builtin>/matrix.toml");
    let cells = cells(&p);

    // Stable: the same ids (and builds) on a second run, in another directory.
    let other = TempDir::new().unwrap();
    let again = plan(other.path());
    let ids = |p: &Value| -> Vec<(String, String)> { self::cells(p).iter().map(|c| (s(c, "id").to_string(), s(c, "build").to_string())).collect() };
    assert_eq!(ids(&p), ids(&again));

    // (7 boards x gcc + 5 QEMU boards x clang; gem5 x clang is excluded)
    // x the 6.1 and 6.12 kernels x the tiny and debug configs; defconfig is
    // defined but off the axis.
    assert_eq!(cells.len(), 48, "{p:#}");
    for c in cells {
        let k = s(c, "kernel");
        assert!(["debian-6.1", "debian-6.12"].contains(&k), "{c}");
        assert_eq!(c["kernel_version"], k.strip_prefix("debian-").unwrap());
        assert!(["tiny", "debug"].contains(&s(c, "config")), "{c}");
    }
    // The 6.12 versatilepb kernel builds its dtb from the vendor directory.
    for b in p["builds"].as_array().unwrap().iter().filter(|b| s(b, "arch") == "arm") {
        let targets: Vec<&str> = b["targets"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        let want = if b["kernel"]["id"] == "debian-6.12" { "arm/versatile-pb.dtb" } else { "versatile-pb.dtb" };
        assert!(targets.contains(&want), "{b}");
    }
    // gem5-arm boots qemu-aarch64-virt's kernel: one build per kernel and
    // config serves both (their descriptors keep the same config lines).
    for k in ["debian-6.1", "debian-6.12"] {
        for cfg in ["tiny", "debug"] {
            let build = |board: &str| cells.iter().find(|c| s(c, "board") == board && s(c, "kernel") == k && s(c, "config") == cfg && s(c, "toolchain") == "gcc").map(|c| s(c, "build").to_string());
            assert_eq!(build("gem5-arm"), build("qemu-aarch64-virt"), "gem5-arm and virt build apart for {k} {cfg}");
        }
    }
    let cells: Vec<Value> = cells.iter().filter(|c| s(c, "config") == "tiny" && s(c, "kernel") == "debian-6.1").cloned().collect();
    let cells = &cells;

    let gem5: Vec<&Value> = cells.iter().filter(|c| s(c, "emulator") == "gem5").collect();
    assert_eq!(gem5.iter().map(|c| s(c, "board")).collect::<Vec<_>>(), ["gem5-arm", "gem5-x86"]);
    for c in &gem5 {
        assert_eq!(s(c, "toolchain"), "gcc");
        assert_eq!(s(c, "state"), "skip", "{c}");
        assert!(s(c, "reason").contains("gem5 not built"), "{c}");
        assert_eq!(c["timeout_secs"], 1800);
    }

    for board in QEMU_BOARDS {
        let c = cells.iter().find(|c| s(c, "board") == board && s(c, "toolchain") == "gcc").unwrap_or_else(|| panic!("no {board} x gcc cell"));
        assert_eq!(s(c, "state"), "pending", "{c}");
        assert_eq!(s(c, "emulator"), "qemu");
        assert_eq!(c["timeout_secs"], 120);
        // clang is on the axis like gcc (a missing one is an infra error of
        // its cells, found by pre-flight), unless a descriptor says why not.
        let clang = cells.iter().find(|c| s(c, "board") == board && s(c, "toolchain") == "clang").unwrap_or_else(|| panic!("no {board} x clang cell"));
        if s(clang, "state") == "skip" {
            assert!(s(clang, "reason").starts_with("clang: "), "{clang}");
        }
    }
}

const CUSTOM_MATRIX: &str = r#"
boards = ["qemu-x86_64-pc", "qemu-aarch64-virt", "qemu-arm-versatilepb"]
toolchains = ["gcc", "x86only"]
kernels = ["debian-6.1"]
configs = ["tiny", "debug"]
timeout = "5m"

[kernel."debian-6.1"]
version = "6.1"

[config.tiny]

[config.debug]
profile = "debug"

# No debug builds of the ARM926 board.
[[exclude]]
board = "qemu-arm-*"
config = "debug"

# One combination beyond the axes: a board not in `boards`.
[[include]]
board = "qemu-mips64el-malta"
toolchain = "gcc"
config = "tiny"

[[override]]
board = "qemu-*"
timeout = "7m"

# Later overrides win.
[[override]]
board = "qemu-aarch64-*"
timeout = "10m"

[[override]]
arch = "x86_64"
config = "debug"
timeout = "90s"
"#;

const X86_ONLY: &str = r#"
description = "a host compiler that only targets x86_64"
kind = "gcc"
version-args = ["--version"]

[targets.x86_64]
cross-compile = ""
cc = "gcc"
"#;

#[test]
fn custom_matrix_rules() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("matrix.toml"), CUSTOM_MATRIX).unwrap();
    std::fs::create_dir(dir.path().join("toolchains")).unwrap();
    std::fs::write(dir.path().join("toolchains/x86only.toml"), X86_ONLY).unwrap();
    let p = plan(dir.path());
    check_shape(&p);
    assert_eq!(p["matrix"], "matrix.toml");

    let got: BTreeSet<(String, String, String)> =
        cells(&p).iter().map(|c| (s(c, "board").to_string(), s(c, "toolchain").to_string(), s(c, "config").to_string())).collect();
    let mut want = BTreeSet::new();
    for b in ["qemu-x86_64-pc", "qemu-aarch64-virt", "qemu-arm-versatilepb"] {
        for t in ["gcc", "x86only"] {
            for c in ["tiny", "debug"] {
                if !(b == "qemu-arm-versatilepb" && c == "debug") {
                    want.insert((b.to_string(), t.to_string(), c.to_string()));
                }
            }
        }
    }
    want.insert(("qemu-mips64el-malta".into(), "gcc".into(), "tiny".into()));
    assert_eq!(got, want);
    assert_eq!(cells(&p).len(), want.len(), "no combination twice");

    for c in cells(&p) {
        let (board, arch, tc, config) = (s(c, "board"), s(c, "arch"), s(c, "toolchain"), s(c, "config"));
        // Overrides: the last matching one wins; the matrix timeout (5m) is
        // shadowed by `qemu-*` everywhere here.
        let timeout = match (arch, config) {
            ("x86_64", "debug") => 90,
            ("aarch64", _) => 600,
            _ => 420,
        };
        assert_eq!(c["timeout_secs"], timeout, "{c}");
        if tc == "x86only" && arch != "x86_64" {
            assert_eq!(s(c, "state"), "skip", "{c}");
            assert!(s(c, "reason").contains("cannot build arch"), "{c}");
            assert_eq!(s(c, "reason"), format!("toolchain `x86only` cannot build arch `{arch}`"));
        } else {
            assert_eq!(s(c, "state"), "pending", "{board} {tc} {config}: {c}");
        }
    }

    // One board per arch here: one build per (arch, toolchain, config), and
    // a build's coordinates are those of its cells.
    let builds = p["builds"].as_array().unwrap();
    let keys: BTreeSet<(&str, &str, &str)> = cells(&p).iter().map(|c| (s(c, "arch"), s(c, "toolchain"), s(c, "config"))).collect();
    let build_keys: BTreeSet<(&str, &str, &str)> = builds.iter().map(|b| (s(b, "arch"), s(b, "toolchain"), s(b, "config"))).collect();
    assert_eq!(builds.len(), keys.len());
    assert_eq!(build_keys, keys);
}

#[test]
fn matrix_timeout_applies_without_overrides() {
    let dir = TempDir::new().unwrap();
    let m = CUSTOM_MATRIX.split("[[override]]").next().unwrap();
    std::fs::write(dir.path().join("matrix.toml"), m).unwrap();
    std::fs::create_dir(dir.path().join("toolchains")).unwrap();
    std::fs::write(dir.path().join("toolchains/x86only.toml"), X86_ONLY).unwrap();
    let p = plan(dir.path());
    check_shape(&p);
    assert!(cells(&p).iter().all(|c| c["timeout_secs"] == 300), "{p:#}");
}
