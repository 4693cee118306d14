//! The fast test tier: a fake kernel tree (tests/fixtures/fake-linux, a
//! Makefile with kbuild's interface) and a fake emulator
//! (tests/fixtures/fake-qemu, a POSIX sh script that prints what kmatrix's
//! init would print). No cross compiler, no kernel build, no QEMU: only make,
//! sh, coreutils, gzip, cpio and the host gcc (for kmatrix's own static init).
//!
//! Knobs (see the fixtures' headers):
//! - kernel config lines, e.g. in a `--fragment` file or a matrix config:
//!   `CONFIG_FAKE_BUILD_FAIL=y`, `CONFIG_FAKE_BUILD_SECONDS=N`,
//!   `CONFIG_FAKE_CONFIG_SECONDS=N`, `CONFIG_FAKE_DROPPED_<X>=y` (dropped by
//!   olddefconfig: a config mismatch), `CONFIG_FAKE_BOOT="panic"`;
//! - kernel command-line words (a board's `cmdline`, or `--append`):
//!   `fake.boot=ok|panic|oops|hang|exit|stale|flood|bytewise`,
//!   `fake.boot_seconds=N`, `fake.flood_bytes=N`, `fake.byte_delay=S`.
//!
//! Every make invocation appends `<goals> O=<dir> pid=<pid>` to
//! `<project>/fake-make.log`; every emulator start appends its argv to
//! `<project>/fake-qemu.log`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The shipped x86_64 PC board, the template of every fake board.
const PC_BOARD: &str = include_str!("../../boards/qemu-x86_64-pc.toml");

/// How long one kmatrix run may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// Make goals that configure (not build) a kernel.
const CONFIG_GOALS: &[&str] = &["tinyconfig", "allnoconfig", "allyesconfig", "allmodconfig", "defconfig", "olddefconfig", "oldconfig", "syncconfig", "kernelrelease", "kernelversion"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The fake kernel tree (a directory source: `--source <it>` works too, but
/// is mutable, so kmatrix always runs make on it).
pub fn fake_tree() -> PathBuf {
    fixtures().join("fake-linux")
}

/// The fake emulator script.
pub fn fake_qemu() -> PathBuf {
    fixtures().join("fake-qemu")
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The fake PC board: the shipped qemu-x86_64-pc with fake-qemu as its
/// binary and `extra` appended to its command line.
pub fn board_toml(description: &str, extra_cmdline: &[&str]) -> String {
    let mut out = String::new();
    let mut binary = false;
    let mut cmdline = false;
    for line in PC_BOARD.lines() {
        if line.starts_with("binary = ") {
            out.push_str(&format!("binary = {}\n", toml_str(&fake_qemu().display().to_string())));
            binary = true;
        } else if line.starts_with("description = ") {
            out.push_str(&format!("description = {}\n", toml_str(description)));
        } else if let Some(rest) = line.strip_prefix("cmdline = \"") {
            let words = rest.strip_suffix('"').expect("cmdline is a one-line string");
            let mut all: Vec<&str> = words.split_whitespace().collect();
            all.extend_from_slice(extra_cmdline);
            out.push_str(&format!("cmdline = {}\n", toml_str(&all.join(" "))));
            cmdline = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(binary && cmdline, "boards/qemu-x86_64-pc.toml changed shape: no `binary = ` or `cmdline = \"...\"` line");
    out
}

/// A project directory wired to the fakes, with its own cache.
pub struct FakeProject {
    pub dir: tempfile::TempDir,
    /// KMATRIX_CACHE_DIR for every run (inside `dir`).
    pub cache: PathBuf,
    /// The fake kernel tree as `fake-linux.tar.gz` (one top-level directory).
    pub tarball: PathBuf,
}

impl FakeProject {
    /// `boards/fake-pc.toml`, `fake-linux.tar.gz` and a matrix.toml of one
    /// cell: fake-pc × gcc × fake × tiny.
    pub fn new() -> FakeProject {
        let dir = tempfile::Builder::new().prefix("kmatrix-fake-").tempdir().unwrap();
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&cache).unwrap();
        let tarball = dir.path().join("fake-linux.tar.gz");
        let st = Command::new("tar")
            .arg("-czf")
            .arg(&tarball)
            .arg("-C")
            .arg(fixtures())
            .arg("fake-linux")
            .status()
            .expect("tar");
        assert!(st.success(), "tar -czf {} failed", tarball.display());
        let p = FakeProject { dir, cache, tarball };
        p.add_board("fake-pc", &[]);
        p.write_matrix(&p.default_matrix());
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The tarball as a TOML string (for `[kernel.x] path = ...`).
    pub fn tarball_toml(&self) -> String {
        toml_str(&self.tarball.display().to_string())
    }

    /// The matrix `new()` writes.
    pub fn default_matrix(&self) -> String {
        format!(
            "boards = [\"fake-pc\"]\ntoolchains = [\"gcc\"]\nkernels = [\"fake\"]\nconfigs = [\"tiny\"]\n\n\
             [kernel.fake]\nversion = \"6.1\"\npath = {}\n\n\
             [config.tiny]\ndescription = \"tinyconfig + the board's fragment\"\n",
            self.tarball_toml()
        )
    }

    /// Writes a file relative to the project directory; returns its path.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Replaces matrix.toml.
    pub fn write_matrix(&self, text: &str) {
        self.write("matrix.toml", text);
    }

    /// `boards/<name>.toml`: the fake PC with `extra_cmdline` words (such as
    /// `fake.boot=panic`) on its kernel command line.
    pub fn add_board(&self, name: &str, extra_cmdline: &[&str]) -> PathBuf {
        let desc = if extra_cmdline.is_empty() { "fake PC (fake-qemu)".to_string() } else { format!("fake PC (fake-qemu, {})", extra_cmdline.join(" ")) };
        self.write(&format!("boards/{name}.toml"), &board_toml(&desc, extra_cmdline))
    }

    /// A fragment file (for `--fragment`) in the project directory.
    pub fn fragment(&self, name: &str, text: &str) -> PathBuf {
        self.write(&format!("{name}.config"), text)
    }

    pub fn make_log_path(&self) -> PathBuf {
        self.path().join("fake-make.log")
    }

    pub fn qemu_log_path(&self) -> PathBuf {
        self.path().join("fake-qemu.log")
    }

    /// Every make invocation so far: `<goals> O=<dir> pid=<pid>`.
    pub fn make_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.make_log_path()).unwrap_or_default().lines().map(str::to_string).collect()
    }

    /// The make invocations that built (not configured) a kernel.
    pub fn build_lines(&self) -> Vec<String> {
        self.make_log()
            .into_iter()
            .filter(|l| {
                let goals = l.split(" O=").next().unwrap_or("");
                !goals.split_whitespace().all(|g| CONFIG_GOALS.contains(&g) || g.ends_with("_defconfig"))
            })
            .collect()
    }

    /// Every emulator start so far: `fake-qemu pid=<pid> <argv...>`.
    pub fn qemu_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.qemu_log_path()).unwrap_or_default().lines().map(str::to_string).collect()
    }

    fn envs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KMATRIX_CACHE_DIR", self.cache.display().to_string()),
            ("CI", "1".into()),
            ("KMATRIX_FAKE_LOG", self.make_log_path().display().to_string()),
            ("KMATRIX_FAKE_QEMU_LOG", self.qemu_log_path().display().to_string()),
        ]
    }

    /// Runs kmatrix in the project directory (timeout 120 s); echoes its
    /// output to stderr (shown when a test fails).
    pub fn kmatrix(&self, args: &[&str]) -> Output {
        let mut c = assert_cmd::Command::cargo_bin("kmatrix").unwrap();
        c.current_dir(self.path()).env_remove("KMATRIX_GEM5").env_remove("MAKEFLAGS").env_remove("MAKELEVEL").args(args).timeout(TIMEOUT);
        for (k, v) in self.envs() {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        eprintln!(
            "$ kmatrix {}\n[exit {:?}]\n{}{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Starts kmatrix in the project directory with piped stdout/stderr, for
    /// tests that signal or kill it.
    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("kmatrix"));
        c.current_dir(self.path())
            .env_remove("KMATRIX_GEM5")
            .env_remove("MAKEFLAGS")
            .env_remove("MAKELEVEL")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in self.envs() {
            c.env(k, v);
        }
        c.spawn().unwrap()
    }
}

impl Default for FakeProject {
    fn default() -> Self {
        FakeProject::new()
    }
}

/// stdout of a run, lossily.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr of a run, lossily.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
