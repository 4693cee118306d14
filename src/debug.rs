//! Debug sessions: a kernel built with the `debug` profile, booted halted at
//! reset with `nokaslr` and a gdbstub on 127.0.0.1 at a free port, and
//! gdb-multiarch attached with the arch's settings and the kernel's lx-*
//! scripts. Also out-of-tree modules built against a cached kernel.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use crate::build::Manifest;
use crate::command::CommandSpec;
use crate::descriptor::{Arch, Toolchain};
use crate::error::{Error, Result};
use crate::gdb::{self, Attach};
use crate::recipe;
use crate::source::Source;

/// A free TCP port on loopback (the OS picks; two sessions never collide
/// on a fixed 1234).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(Error::io("cannot find a free port"))?;
    Ok(l.local_addr().map_err(Error::io("cannot find a free port"))?.port())
}

pub struct Session<'a> {
    /// kmatrix's gdb helper script, sourced after the kernel's.
    pub helpers: Option<PathBuf>,
    pub arch: &'a Arch,
    pub manifest: &'a Manifest,
    pub port: u16,
    pub breakpoints: Vec<String>,
    /// Run these after attaching (and `continue`), then exit.
    pub batch: Option<Vec<String>>,
    /// Continue to the first breakpoint before handing over.
    pub continue_first: bool,
}

pub fn gdb_command(s: &Session) -> CommandSpec {
    let attach = Attach {
        vmlinux: s.manifest.vmlinux.clone(),
        build_dir: s.manifest.dir.clone(),
        port: s.port,
        breakpoints: s.breakpoints.clone(),
        helpers: s.helpers.clone(),
    };
    let mut extra = Vec::new();
    if s.continue_first {
        extra.push("continue".to_string());
    }
    if let Some(b) = &s.batch {
        extra.extend(b.iter().cloned());
    }
    gdb::command(s.arch, &attach, s.batch.is_some(), &extra)
}

/// Starts the emulator (halted, console to a file) and runs gdb against it.
/// Returns gdb's exit status; the emulator's process group is always killed.
/// `log` takes the emulator's output; `console` is where the guest console
/// appears (the same file for QEMU, gem5's terminal file for gem5). When
/// the backend's stub port is announced, it replaces `s.port`.
/// What a kernel booted with `kgdbwait` prints when it stops for gdb
/// (kernel/debug/debug_core.c, 6.1 and 6.12).
pub const KGDB_WAITING: &str = "KGDB: Waiting for connection from remote gdb";

pub fn run(emulator: &CommandSpec, log: &Path, console: &Path, s: &mut Session, backend: &dyn crate::emulator::Backend, wait_for: Option<&str>, timeout: std::time::Duration) -> Result<i32> {
    // Both streams go to `log`, where an emulator also announces its ports.
    let (mut emu, rx) = crate::boot::spawn_announcing(emulator, log)?;
    if let crate::emulator::GdbPort::Announced(name) = backend.gdb_port() {
        s.port = crate::boot::wait_listener(&mut emu, &rx, &name, log, backend.explainer(), &mut |_, _| {})?;
        eprintln!("kmatrix: {}'s gdb stub: 127.0.0.1:{}", backend.kind(), s.port);
    }
    if let Some(text) = wait_for {
        // A serial stub (KGDB) answers only once the kernel waits: gdb
        // talking earlier would time out on a line nobody reads.
        let start = std::time::Instant::now();
        loop {
            let seen = std::fs::read_to_string(console).unwrap_or_default();
            if seen.contains(text) {
                break;
            }
            let why = if let Some(st) = emu.try_wait() {
                Some(format!("the emulator exited ({}) before the console printed \"{text}\"", describe_status(st)))
            } else if start.elapsed() > timeout {
                Some(format!("no \"{text}\" on the console within {}s", timeout.as_secs()))
            } else {
                None
            };
            if let Some(why) = why {
                emu.stop(std::time::Duration::from_secs(1));
                let tail: Vec<&str> = seen.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(Error::Infra(format!("{why}; console {}:\n{}", console.display(), tail.join("\n"))));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    if s.batch.is_none() {
        console_pane(console, emu.id());
    }
    let gdb = gdb_command(s);
    // gdb owns the terminal: it stays in kmatrix's process group.
    let status = crate::process::foreground(&gdb);
    let emu_exit = emu.try_wait();
    emu.stop(std::time::Duration::from_secs(1));
    let emu_died = emu_exit.is_some_and(|st| st != 0);
    if let Some(st) = emu_exit.filter(|_| emu_died) {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        eprintln!("kmatrix: the emulator died while gdb ran ({}){}; log: {}", describe_status(st), (backend.explainer())(&text).map(|r| format!(": {r}")).unwrap_or_default(), log.display());
    }
    let code = status.map_err(|e| e.with_package("gdb-multiarch"))?;
    // A dead emulator is never a successful session, whatever gdb's last command did.
    Ok(if emu_died && code == 0 { 1 } else { code })
}

/// `exit status: N` or `signal: N (SIGSEGV)` for an exit code from [`crate::process`].
fn describe_status(code: i32) -> String {
    match code {
        c if c > 128 => {
            let sig = c - 128;
            let name = match sig {
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGKILL => " (SIGKILL)",
                _ => "",
            };
            format!("signal: {sig}{name}")
        }
        c => format!("exit status: {c}"),
    }
}

/// Inside tmux, shows the guest console in a pane under gdb's; the pane
/// closes when the emulator exits.
fn console_pane(console: &Path, emulator_pid: u32) {
    if std::env::var_os("TMUX").is_none() || crate::host::which("tmux").is_none() {
        return;
    }
    let _ = std::process::Command::new("tmux")
        .args(["split-window", "-d", "-v", "-l", "30%", "tail", &format!("--pid={emulator_pid}"), "-n", "+1", "-F"])
        .arg(console)
        .status();
}

/// `make M=<dir> modules` against a built kernel; returns the .ko files.
pub fn build_module(cache: &crate::cache::Cache, arch: &Arch, tc: &Toolchain, source: &Source, manifest: &Manifest, dir: &Path) -> Result<(bool, Vec<PathBuf>, String)> {
    // modules_prepare runs make in the kernel's tree: one make at a time.
    let _tree = cache.lock(&format!("builds/{}", manifest.key), &|m| eprintln!("kmatrix: {m}"))?;
    let dir = dir.canonicalize().map_err(Error::io(format!("cannot find module directory {}", dir.display())))?;
    let ccache = crate::host::which("ccache").is_some();
    let mut cmd = CommandSpec::new("make").arg("-C").arg(source.dir.display().to_string()).arg(format!("O={}", manifest.dir.display()));
    for (k, v) in recipe::make_vars(arch, tc, ccache) {
        cmd = cmd.arg(format!("{k}={v}"));
    }
    for (k, v) in recipe::reproducible_env(&source.timestamp) {
        cmd = cmd.env(k, v);
    }
    // modules_prepare writes scripts/module.lds; kernels built before their
    // config had modules may lack it. It is a no-op when up to date.
    let prepare = cmd.clone().arg("modules_prepare");
    let p = crate::process::output_spec(&prepare)?;
    let mut log = format!("$ {prepare}\n{}", p.text());
    if !p.success() {
        return Ok((false, vec![], log));
    }
    cmd = cmd.arg(format!("M={}", dir.display())).arg("modules");
    let out = crate::process::output_spec(&cmd)?;
    log.push_str(&format!("$ {cmd}\n{}", out.text()));
    let kos = std::fs::read_dir(&dir)
        .map_err(Error::io(format!("cannot list {}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "ko"))
        .collect();
    Ok((out.success(), kos, log))
}

