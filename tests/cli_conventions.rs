//! The conventions of a Unix/Rust command line: shell completions,
//! `--format json` on every command that prints a table, NO_COLOR, and a
//! closed stdout ending the process quietly. Fast: no compiler, emulator or
//! kernel source is needed; every run is from an empty directory with an
//! empty cache.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command as StdCommand, Output, Stdio};

use assert_cmd::cargo::CommandCargoExt;
use serde_json::Value;
use tempfile::TempDir;

/// An empty project directory and an empty cache.
struct Env {
    dir: TempDir,
    cache: TempDir,
}

impl Env {
    fn new() -> Env {
        Env { dir: TempDir::new().unwrap(), cache: TempDir::new().unwrap() }
    }

    fn command(&self, args: &[&str]) -> StdCommand {
        let mut c = StdCommand::cargo_bin("kmatrix").unwrap();
        c.current_dir(self.dir.path())
            .env("KMATRIX_CACHE_DIR", self.cache.path())
            .env_remove("KMATRIX_GEM5")
            .env_remove("NO_COLOR")
            .args(args);
        c
    }

    fn output(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
    }

    /// stdout of a run that must exit 0.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(0), "kmatrix {}:\n{stdout}\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        stdout
    }
}

/// stdout parsed as exactly one JSON document.
fn json(stdout: &str, what: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{what}: not one JSON document ({e}):\n{stdout}"))
}

#[test]
fn completions_are_generated_for_every_shell() {
    let env = Env::new();
    for shell in ["bash", "zsh"] {
        let script = env.ok(&["completions", shell]);
        assert!(!script.trim().is_empty(), "{shell}: empty");
        assert!(script.contains("sweep"), "{shell} completions do not mention `sweep`:\n{script}");
        assert!(script.contains("kmatrix"), "{shell}:\n{script}");
    }
    for shell in ["fish", "elvish", "powershell"] {
        assert!(env.ok(&["completions", shell]).contains("sweep"), "{shell}");
    }
    // An unknown shell is a usage error (clap's exit status 2), not a panic.
    let out = env.output(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn list_json() {
    let env = Env::new();
    let all = json(&env.ok(&["list", "--format", "json"]), "list");
    for key in ["arches", "boards", "toolchains"] {
        assert!(all[key].as_array().is_some_and(|a| !a.is_empty()), "{key}: {all:#}");
    }
    let boards = all["boards"].as_array().unwrap();
    let virt = boards.iter().find(|b| b["id"] == "qemu-aarch64-virt").unwrap_or_else(|| panic!("no qemu-aarch64-virt: {all:#}"));
    assert_eq!(virt["arch"], "aarch64");
    assert_eq!(virt["emulator"], "qemu");
    assert_eq!(virt["machine"], "qemu-system-aarch64 -M virt");
    let aarch64 = all["arches"].as_array().unwrap().iter().find(|a| a["id"] == "aarch64").unwrap();
    assert_eq!(aarch64["kernel_arch"], "arm64");
    assert_eq!(aarch64["default_board"], "qemu-aarch64-virt");
    assert!(aarch64["aliases"].as_array().unwrap().iter().any(|a| a == "arm64"), "{aarch64:#}");
    let gcc = all["toolchains"].as_array().unwrap().iter().find(|t| t["id"] == "gcc").unwrap();
    assert_eq!(gcc["kind"], "gcc");

    // One kind: only its key.
    let only = json(&env.ok(&["list", "boards", "--format", "json"]), "list boards");
    let keys: Vec<&String> = only.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["boards"], "{only:#}");
    assert_eq!(only["boards"], all["boards"]);

    // The default is still the table.
    assert!(env.ok(&["list", "boards"]).starts_with('┌'));
}

#[test]
fn show_json() {
    let env = Env::new();
    let v = json(&env.ok(&["show", "--arch", "aarch64", "--format", "json"]), "show");
    assert_eq!(v["board"]["id"], "qemu-aarch64-virt");
    assert_eq!(v["arch"]["id"], "aarch64");
    assert_eq!(v["toolchain"], "gcc");
    let build = v["recipe"]["build"]["argv"].as_array().unwrap_or_else(|| panic!("no recipe.build.argv: {v:#}"));
    assert_eq!(build[0], "make", "{v:#}");
    assert!(build.iter().any(|a| a == "ARCH=arm64"), "{build:?}");
    assert!(build.iter().all(Value::is_string));
    assert_eq!(v["recipe"]["build"]["env"]["KBUILD_BUILD_TIMESTAMP"], "@0");
    let configure = v["recipe"]["configure"].as_array().unwrap();
    assert!(!configure.is_empty() && configure.iter().all(|c| c["argv"].as_array().is_some_and(|a| !a.is_empty())), "{v:#}");
    assert!(!v["recipe"]["fragments"].as_array().unwrap().is_empty());
    let emu = v["emulator"]["argv"].as_array().unwrap();
    assert_eq!(emu[0], "qemu-system-aarch64");
    assert!(emu.windows(2).any(|w| w[0] == "-M" && w[1] == "virt"), "{emu:?}");
    assert_eq!(v["emulator"]["kind"], "qemu");
    let gdb = v["gdb"]["commands"].as_array().unwrap();
    assert!(gdb.iter().any(|c| c == "break start_kernel"), "{gdb:?}");
    assert_eq!(v["artefacts"]["vmlinux"], "<build>/vmlinux");

    // The text form is unchanged and still accepts its old name.
    let text = env.ok(&["show", "--arch", "aarch64"]);
    assert!(text.starts_with("board      qemu-aarch64-virt  "), "{text}");
    assert_eq!(env.ok(&["show", "--arch", "aarch64", "--format", "text"]), text);
    assert_eq!(env.ok(&["show", "--arch", "aarch64", "--format", "table"]), text);
}

#[test]
fn doctor_json() {
    let env = Env::new();
    let out = env.output(&["doctor", "--format", "json"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let v = json(&stdout, "doctor");
    let reqs = v["requirements"].as_array().unwrap_or_else(|| panic!("no requirements: {v:#}"));
    assert!(!reqs.is_empty());
    for r in reqs {
        assert!(r["satisfied"].is_boolean(), "{r:#}");
        for key in ["what", "package", "needed_by"] {
            assert!(r[key].is_string(), "{key}: {r:#}");
        }
    }
    assert!(v["kernel_source"]["satisfied"].is_boolean(), "{v:#}");
    // The exit status is the same as the table's: non-zero when anything
    // is missing.
    let all_there = reqs.iter().all(|r| r["satisfied"] == true) && v["kernel_source"]["satisfied"] == true;
    assert_eq!(v["ok"], all_there, "{v:#}");
    assert_eq!(v["missing_packages"].as_array().unwrap().is_empty(), all_there);
    assert_eq!(out.status.success(), all_there, "{:?}", out.status);
    let table = env.output(&["doctor"]);
    assert_eq!(table.status.code(), out.status.code());
}

#[test]
fn cache_ls_json() {
    let env = Env::new();
    assert_eq!(json(&env.ok(&["cache", "ls", "--format", "json"]), "cache ls"), Value::Array(vec![]));

    // A finished build and an incomplete one.
    let builds = env.cache.path().join("builds");
    std::fs::create_dir_all(builds.join("k2")).unwrap();
    std::fs::create_dir_all(builds.join("k1")).unwrap();
    std::fs::write(
        builds.join("k1/manifest.json"),
        serde_json::json!({
            "schema": 1, "key": "k1", "dir": builds.join("k1"), "arch": "aarch64", "toolchain": "gcc",
            "toolchain_version": "12", "source": "linux-6.1", "targets": ["Image", "vmlinux"],
            "image": "/i", "vmlinux": "/v", "dtb": null, "system_map": "/s", "config": "/c", "build_log": "/l",
            "build_seconds": 12.5, "cpu_seconds": 20.0, "config_warnings": []
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(builds.join("k1/Image"), vec![0u8; 4096]).unwrap();
    let v = json(&env.ok(&["cache", "ls", "--format", "json"]), "cache ls");
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 2, "{v:#}");
    let k1 = list.iter().find(|e| e["name"] == "k1").unwrap();
    assert!(k1["size_bytes"].as_u64().unwrap() >= 4096, "{k1:#}");
    assert!(k1["age_seconds"].is_u64());
    assert_eq!(k1["build_seconds"], 12.5);
    assert_eq!(k1["cpu_seconds"], 20.0);
    assert_eq!(k1["what"], "aarch64 gcc (Image vmlinux)");
    let k2 = list.iter().find(|e| e["name"] == "k2").unwrap();
    assert!(k2["build_seconds"].is_null());
    assert_eq!(k2["what"], "incomplete");

    let table = env.ok(&["cache", "ls"]);
    assert!(table.contains("aarch64 gcc (Image vmlinux)") && table.contains("incomplete"), "{table}");
}

#[test]
fn no_color_means_no_escape_sequences() {
    let env = Env::new();
    for args in [&["list"][..], &["show", "--arch", "aarch64"], &["cache", "ls"]] {
        let out = env.command(args).env("NO_COLOR", "1").stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success());
        for s in [&out.stdout, &out.stderr] {
            let s = String::from_utf8_lossy(s);
            assert!(!s.contains("\x1b["), "kmatrix {}: colour with NO_COLOR:\n{s}", args.join(" "));
        }
    }
}

#[test]
fn colour_decision() {
    use kmatrix::cli::colour_with;
    use std::ffi::OsStr;
    assert!(colour_with(true, None));
    assert!(!colour_with(false, None));
    assert!(!colour_with(true, Some(OsStr::new("1"))));
    assert!(!colour_with(true, Some(OsStr::new("false"))), "any non-empty value disables colour");
    assert!(colour_with(true, Some(OsStr::new(""))), "an empty NO_COLOR is ignored");
    assert!(!colour_with(false, Some(OsStr::new(""))));
}

/// A results directory with one pass and one kernel failure.
fn results_dir(root: &Path) -> std::path::PathBuf {
    let dir = root.join("results");
    std::fs::create_dir_all(&dir).unwrap();
    let cell = |id: &str, kernel: &str, verdict: &str| {
        serde_json::json!({
            "id": id, "board": "qemu-aarch64-virt", "arch": "aarch64", "toolchain": "gcc", "kernel": kernel,
            "kernel_version": "6.1", "config": "tiny", "emulator": "qemu", "build": "b", "verdict": verdict,
            "detail": null, "boot_to_marker_seconds": 1.5
        })
    };
    let results = serde_json::json!({
        "schema": kmatrix::sweep::results::RESULTS_SCHEMA, "kmatrix_version": "0", "started_at": 0, "finished_at": 1,
        "complete": true, "interrupted": false, "jobs": 1,
        "cells": [cell("c1", "a", "pass"), cell("c2", "b", "panic")]
    });
    std::fs::write(dir.join("results.json"), results.to_string()).unwrap();
    dir
}

/// The report table on a terminal is coloured, and not with NO_COLOR set
/// (needs util-linux `script` for the terminal).
#[test]
fn no_color_on_a_terminal() {
    // util-linux `script` is in bsdutils, which every Debian has: a missing
    // one fails the test rather than skipping it.
    assert!(StdCommand::new("script").arg("--version").output().is_ok(), "no `script` (util-linux, Debian package bsdutils) to give kmatrix a terminal");
    let env = Env::new();
    let dir = results_dir(env.dir.path());
    let bin = assert_cmd::cargo::cargo_bin("kmatrix");
    let on_tty = |no_color: Option<&str>| {
        let mut c = StdCommand::new("script");
        c.args(["-qec", &format!("'{}' report '{}'", bin.display(), dir.display()), "/dev/null"])
            .current_dir(env.dir.path())
            .env("KMATRIX_CACHE_DIR", env.cache.path())
            .env_remove("NO_COLOR")
            .stdin(Stdio::null());
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        let out = c.output().unwrap();
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success() && s.contains("panic"), "{s}\n{}", String::from_utf8_lossy(&out.stderr));
        s
    };
    assert!(on_tty(None).contains("\x1b["), "no colour on a terminal");
    let plain = on_tty(Some("1"));
    assert!(!plain.contains("\x1b["), "colour despite NO_COLOR=1:\n{plain}");
    assert!(plain.contains("pass 1.50s"), "{plain}");
    assert!(on_tty(Some("")).contains("\x1b["), "an empty NO_COLOR must not disable colour");
}

/// `kmatrix <args> | head -c <n>`: reads `n` bytes (none: the read end is
/// closed before kmatrix writes), closes the pipe, returns the status and
/// stderr.
fn closed_stdout(env: &Env, args: &[&str], n: usize) -> (std::process::ExitStatus, String) {
    let mut child = env.command(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = vec![0u8; n];
    stdout.read_exact(&mut buf).unwrap();
    drop(stdout);
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    (child.wait().unwrap(), stderr)
}

#[test]
fn closed_stdout_ends_quietly() {
    let env = Env::new();
    for (args, n) in [(&["list", "boards"][..], 10), (&["list", "boards"], 0), (&["list"], 0), (&["show", "--arch", "aarch64", "--format", "json"], 0), (&["completions", "bash"], 0)] {
        let (status, stderr) = closed_stdout(&env, args, n);
        assert!(!stderr.contains("panicked"), "kmatrix {} | head -c {n}: {stderr}", args.join(" "));
        assert!(stderr.is_empty(), "kmatrix {} | head -c {n}: {stderr}", args.join(" "));
        // Like other Unix tools: done, or ended by SIGPIPE.
        assert!(status.success() || status.signal() == Some(libc::SIGPIPE), "kmatrix {} | head -c {n}: {status:?}", args.join(" "));
    }
    // With the read end closed before kmatrix starts, the write always
    // fails: SIGPIPE, not a panic's exit status 101. (Closing it after the
    // spawn races with a fast kmatrix that fits its output in the pipe.)
    let (r, w) = std::io::pipe().unwrap();
    drop(r);
    let status = env.command(&["list"]).stdin(Stdio::null()).stdout(w).stderr(Stdio::null()).status().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?}");
}

/// A board without a KGDB line is told so before anything is built.
#[test]
fn kgdb_on_a_board_without_a_kgdb_line_is_a_usage_error() {
    let env = Env::new();
    for flag in ["--kgdb", "--kdb"] {
        let out = env.output(&["debug", "--board", "gem5-arm", flag, "--batch"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(&format!("board gem5-arm (gem5) has no KGDB serial line for {flag}")) && err.contains("[qemu.kgdb]"), "{err}");
        assert!(!err.contains("building"), "{err}");
    }
    // kdb is a shell, not gdb: gdb breakpoints do not apply.
    let out = env.output(&["debug", "--arch", "x86_64", "--kdb", "--break", "start_kernel"]);
    assert_eq!(out.status.code(), Some(2));
}

/// A machine that cannot dump says why, naming its descriptor's reason,
/// before anything is built; so does an arch with no Debian port, and a
/// hostname that cloud-init or YAML would not take.
#[test]
fn dump_and_debian_limits_are_usage_errors() {
    let env = Env::new();
    for (arch, why) in [("mips64el", "cannot dump MIPS guests"), ("arm", "no fw_cfg with DMA")] {
        let out = env.output(&["boot", "--arch", arch, "--check", "--dump"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("cannot dump a panicked guest (--dump)") && err.contains(why), "{err}");
        assert!(!err.contains("unpacking") && !err.contains("building"), "{err}");
    }
    let out = env.output(&["rootfs", "debian", "--arch", "mips64"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("has no Debian port"), "{err}");
    let out = env.output(&["boot", "--arch", "mips64", "--rootfs", "debian", "--check"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no Debian port"));
    let out = env.output(&["boot", "--arch", "x86_64", "--rootfs", "debian", "--hostname", "a b", "--check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--hostname"), "{err}");
    let out = env.output(&["ssh", "--print"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no running whole-OS boot"), "{err}");
}
