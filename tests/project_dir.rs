//! A project directory layered over the built-in descriptors: run from the
//! current directory (no `-C`), a new board is listed, shown and planned, and
//! a file with a built-in's id replaces the built-in.

use std::path::Path;

use assert_cmd::Command;
use tempfile::TempDir;

/// The real binary, run from `dir`, with an empty cache and no gem5.
fn kmatrix(dir: &Path, cache: &Path, args: &[&str]) -> String {
    let out = Command::cargo_bin("kmatrix")
        .unwrap()
        .current_dir(dir)
        .env("KMATRIX_CACHE_DIR", cache)
        .env_remove("KMATRIX_GEM5")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "kmatrix {}:\n{stdout}\n{stderr}", args.join(" "));
    stdout
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// The shipped aarch64 virt board with `-cpu max`.
fn virt_max() -> String {
    let shipped = include_str!("../boards/qemu-aarch64-virt.toml");
    let out = shipped
        .replace("description = \"QEMU AArch64 virt\"", "description = \"QEMU AArch64 virt, every CPU feature (-cpu max)\"")
        .replace("cpu = \"cortex-a57\"", "cpu = \"max\"");
    assert_ne!(out, shipped);
    assert!(out.contains("cpu = \"max\"") && out.contains("-cpu max"));
    out
}

#[test]
fn project_board_is_listed_shown_and_planned() {
    let dir = TempDir::new().unwrap();
    let cache = TempDir::new().unwrap();
    write(dir.path(), "boards/qemu-aarch64-virt-max.toml", &virt_max());

    let list = kmatrix(dir.path(), cache.path(), &["list", "boards"]);
    let row = list.lines().find(|l| l.contains("qemu-aarch64-virt-max")).unwrap_or_else(|| panic!("not listed:\n{list}"));
    assert!(row.contains("aarch64") && row.contains("qemu-system-aarch64 -M virt") && row.contains("every CPU feature"), "{row}");
    // The built-ins are still there.
    assert!(list.contains("qemu-aarch64-virt ") && list.contains("qemu-x86_64-pc"), "{list}");

    let show = kmatrix(dir.path(), cache.path(), &["show", "--board", "qemu-aarch64-virt-max"]);
    assert!(show.starts_with("board      qemu-aarch64-virt-max  QEMU AArch64 virt, every CPU feature (-cpu max)  (boards/qemu-aarch64-virt-max.toml)"), "{show}");
    let argv = show.lines().find(|l| l.trim_start().starts_with("qemu-system-aarch64 ")).unwrap_or_else(|| panic!("no argv:\n{show}"));
    assert!(argv.contains(" -M virt -cpu max -m 512M "), "{argv}");
    assert!(!argv.contains("cortex-a57"), "{argv}");

    write(
        dir.path(),
        "matrix.toml",
        r#"
boards = ["qemu-aarch64-virt-max"]
toolchains = ["gcc"]
kernels = ["debian-6.1"]
configs = ["tiny"]

[kernel."debian-6.1"]
version = "6.1"

[config.tiny]
"#,
    );
    let plan: serde_json::Value = serde_json::from_str(&kmatrix(dir.path(), cache.path(), &["plan", "--format", "json"])).unwrap();
    assert_eq!(plan["matrix"], "matrix.toml");
    let cells = plan["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 1, "{plan:#}");
    assert_eq!(cells[0]["board"], "qemu-aarch64-virt-max");
    assert_eq!(cells[0]["arch"], "aarch64");
    assert_eq!(cells[0]["toolchain"], "gcc");
    assert_eq!(cells[0]["state"], "pending");
}

#[test]
fn project_file_overrides_builtin_with_same_id() {
    let dir = TempDir::new().unwrap();
    let cache = TempDir::new().unwrap();
    let shipped = include_str!("../boards/qemu-x86_64-pc.toml");
    let big = shipped.replace("memory = \"512M\"", "memory = \"1G\"");
    assert_ne!(big, shipped);
    write(dir.path(), "boards/qemu-x86_64-pc.toml", &big);

    let show = kmatrix(dir.path(), cache.path(), &["show", "--board", "qemu-x86_64-pc"]);
    // The project file, not `<builtin>/boards/qemu-x86_64-pc.toml`.
    assert!(show.lines().next().unwrap().ends_with("(boards/qemu-x86_64-pc.toml)"), "{show}");
    let argv = show.lines().find(|l| l.trim_start().starts_with("qemu-system-x86_64 ")).unwrap_or_else(|| panic!("no argv:\n{show}"));
    assert!(argv.contains(" -m 1024M "), "{argv}");
    assert!(!argv.contains("512M"), "{argv}");

    // Replaced, not added: still one qemu-x86_64-pc and seven boards.
    let list = kmatrix(dir.path(), cache.path(), &["list", "boards"]);
    assert_eq!(list.lines().filter(|l| l.contains("qemu-x86_64-pc")).count(), 1, "{list}");
    let check = kmatrix(dir.path(), cache.path(), &["check"]);
    assert!(check.contains(" 7 boards,"), "{check}");

    // Without the project file, the built-in's memory again.
    let empty = TempDir::new().unwrap();
    let show = kmatrix(empty.path(), cache.path(), &["show", "--board", "qemu-x86_64-pc"]);
    assert!(show.contains(" -m 512M "), "{show}");
    assert!(show.lines().next().unwrap().ends_with("(<builtin>/boards/qemu-x86_64-pc.toml)"), "{show}");
}
