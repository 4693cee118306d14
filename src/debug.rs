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
        wait_console(&mut emu, console, text, timeout)?;
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

/// Waits until the guest console shows `text`; an emulator that exits
/// first, or a deadline passed, is an infrastructure error quoting the
/// console's last lines (the emulator is stopped).
fn wait_console(emu: &mut crate::process::Group, console: &Path, text: &str, timeout: std::time::Duration) -> Result<()> {
    let start = std::time::Instant::now();
    loop {
        let seen = std::fs::read_to_string(console).unwrap_or_default();
        if seen.contains(text) {
            return Ok(());
        }
        let why = if let Some(st) = emu.try_wait() {
            Some(format!("the emulator exited ({}) before the console printed \"{text}\"", describe_status(st)))
        } else if start.elapsed() > timeout {
            Some(format!("no \"{text}\" on the console within {}s", timeout.as_secs()))
        } else if crate::process::is_interrupted() {
            emu.stop(std::time::Duration::from_secs(1));
            return Err(Error::Interrupted);
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

/// kdb's prompt ends so on SMP (`[0]kdb> `) and UP kernels alike
/// (kernel/debug/kdb/kdb_main.c, PROMPT), and its pager's so (MOREPROMPT).
pub const KDB_PROMPT: &str = "kdb> ";
const KDB_MORE: &str = "more> ";

/// What the kernel prints once it runs on past the debugger at boot
/// (init/main.c, 6.1 and 6.12).
pub const KDB_RESUMED: &str = "Run /init as init process";

/// `debug --kdb`: starts the emulator, waits for `kgdbwait`, and connects to
/// the KGDB serial line on 127.0.0.1:`port`, where kdb has its shell. With
/// `batch`, runs each command at kdb's prompt, then `go`, and waits for the
/// kernel to run on to its init; otherwise joins the line to the user's
/// terminal until Ctrl-A x or the emulator exits. The emulator is always
/// stopped at the end.
pub fn run_kdb(emulator: &CommandSpec, log: &Path, console: &Path, port: u16, batch: Option<&[String]>, timeout: std::time::Duration) -> Result<i32> {
    use std::io::Write;
    let (mut emu, _rx) = crate::boot::spawn_announcing(emulator, log)?;
    wait_console(&mut emu, console, KGDB_WAITING, timeout)?;
    let sock = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(Error::io(format!("cannot connect to the KGDB serial line on 127.0.0.1:{port}")))?;
    let Some(cmds) = batch else {
        eprintln!("kmatrix: kdb on the KGDB serial line (127.0.0.1:{port}): `help`, `bt`, `ps`, `go` to run on; Ctrl-A x stops the machine");
        // Its first prompt went out before we connected: ask for another.
        let _ = (&sock).write_all(b"\r");
        let r = crate::boot::bridge(sock, &mut emu);
        emu.stop(std::time::Duration::from_secs(1));
        return r.map(|()| 0);
    };
    let mut cmds: Vec<String> = cmds.to_vec();
    if cmds.last().map(|c| c.trim()) != Some("go") {
        cmds.push("go".into());
    }
    let step = std::time::Duration::from_secs(60).min(timeout);
    let r = kdb_batch(sock, &cmds, step, &mut std::io::stdout());
    let r = r.and_then(|()| wait_console(&mut emu, console, KDB_RESUMED, timeout));
    emu.stop(std::time::Duration::from_secs(1));
    r.map(|()| 0)
}

/// Runs `cmds` at kdb's prompt on `line`, copying what kdb prints to `out`:
/// waits for the prompt, types each command and a carriage return, pages
/// through `more>` with a space, and after the last command (`go`) waits
/// for no prompt. Each wait has `step`.
pub fn kdb_batch(mut line: std::net::TcpStream, cmds: &[String], step: std::time::Duration, out: &mut dyn std::io::Write) -> Result<()> {
    use std::io::Write;
    line.set_read_timeout(Some(std::time::Duration::from_millis(200))).map_err(Error::io("kdb line"))?;
    fn wait_prompt(line: &mut std::net::TcpStream, what: &str, step: std::time::Duration, out: &mut dyn std::io::Write) -> Result<()> {
        use std::io::{Read, Write};
        let mut seen = Vec::new();
        let start = std::time::Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            match line.read(&mut buf) {
                Ok(0) => return Err(Error::Infra(format!("the KGDB serial line closed while waiting for kdb's prompt {what}"))),
                Ok(n) => {
                    let _ = out.write_all(&buf[..n]);
                    seen.extend_from_slice(&buf[..n]);
                    let tail = String::from_utf8_lossy(&seen[seen.len().saturating_sub(16)..]).into_owned();
                    let tail = tail.trim_end_matches([' ', '\r', '\n']);
                    if tail.ends_with(KDB_MORE.trim_end()) {
                        line.write_all(b" ").map_err(Error::io("kdb line"))?;
                    } else if tail.ends_with(KDB_PROMPT.trim_end()) {
                        return Ok(());
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) => {}
                Err(e) => return Err(Error::Infra(format!("the KGDB serial line: {e}"))),
            }
            if start.elapsed() > step {
                return Err(Error::Infra(format!(
                    "no kdb prompt on the KGDB serial line within {}s {what} (a kernel without CONFIG_KGDB_KDB speaks only gdb's protocol there)",
                    step.as_secs()
                )));
            }
        }
    }
    // kdb printed its first prompt when it stopped, likely before anyone
    // listened (QEMU drops a socket line's output while no client is
    // connected): an empty line asks for a new one. Whatever else comes in
    // the next moment (that first prompt, if it was kept) is read too, so
    // that it is not taken for the prompt after the first command.
    line.write_all(b"\r").map_err(Error::io("kdb line"))?;
    wait_prompt(&mut line, "at kgdbwait", step, out)?;
    drain(&mut line, std::time::Duration::from_millis(500), out);
    for (i, c) in cmds.iter().enumerate() {
        line.write_all(format!("{}\r", c.trim()).as_bytes()).map_err(Error::io("kdb line"))?;
        if i + 1 < cmds.len() {
            wait_prompt(&mut line, &format!("after `{}`", c.trim()), step, out)?;
        }
    }
    // What kdb says after the last command (`go`: nothing, or its echo).
    drain(&mut line, std::time::Duration::from_millis(500), out);
    let _ = out.write_all(b"\n");
    Ok(())
}

/// Copies what arrives on `line` during `quiet` to `out`.
fn drain(line: &mut std::net::TcpStream, quiet: std::time::Duration, out: &mut dyn std::io::Write) {
    use std::io::Read;
    let start = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < quiet {
        match line.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let _ = out.write_all(&buf[..n]);
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) => {}
            Err(_) => break,
        }
    }
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


#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Read, Write};

    /// A stand-in kdb on a socket: a prompt, a paged `bt`, then `go`.
    fn fake_kdb(l: TcpListener) -> Vec<String> {
        let (c, _) = l.accept().unwrap();
        let mut w = c.try_clone().unwrap();
        let mut r = std::io::BufReader::new(c);
        let mut got = Vec::new();
        // The banner and first prompt, which a real line may have dropped.
        w.write_all(b"\r\nEntering kdb (current=0xffff, pid 1) due to Keyboard Entry\r\n[0]kdb> ").unwrap();
        let read_cmd = |r: &mut std::io::BufReader<std::net::TcpStream>| {
            let mut v = Vec::new();
            r.read_until(b'\r', &mut v).unwrap();
            String::from_utf8(v).unwrap().trim().to_string()
        };
        assert_eq!(read_cmd(&mut r), "", "an empty line first, for a fresh prompt");
        w.write_all(b"\r\n[0]kdb> ").unwrap();
        let bt = read_cmd(&mut r);
        w.write_all(format!("{bt}\r\nStack traceback for pid 1\r\n kgdb_breakpoint+0x10\r\nmore> ").as_bytes()).unwrap();
        let mut space = [0u8; 1];
        r.read_exact(&mut space).unwrap();
        got.push(format!("{bt}|{}", space[0] as char));
        w.write_all(b"\r\n kernel_init+0x20\r\n[0]kdb> ").unwrap();
        got.push(read_cmd(&mut r));
        got
    }

    #[test]
    fn kdb_batch_types_each_command_pages_and_ends_with_go() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || fake_kdb(l));
        let line = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut out = Vec::new();
        kdb_batch(line, &["bt".into(), "go".into()], std::time::Duration::from_secs(10), &mut out).unwrap();
        assert_eq!(server.join().unwrap(), ["bt| ", "go"]);
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("kgdb_breakpoint+0x10") && out.contains("kernel_init+0x20"), "{out}");
    }

    #[test]
    fn a_line_without_kdb_is_an_error_naming_the_config() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        // gdb's protocol only: no prompt ever comes.
        let server = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            c.write_all(b"$T05thread:01;#07").unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1500));
        });
        let line = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let e = kdb_batch(line, &["go".into()], std::time::Duration::from_secs(1), &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("CONFIG_KGDB_KDB"), "{e}");
        server.join().unwrap();
    }
}
