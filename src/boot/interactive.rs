//! Interactive consoles: QEMU on the user's terminal, and gem5's terminal
//! (a loopback port the emulator announces) bridged to it. Also the
//! listener announcements gem5 makes for its terminal and gdb stub.

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use regex::Regex;

use crate::command::CommandSpec;
use crate::error::{Error, Result};
use crate::process::{self, Group, Mode};

/// Runs the emulator on the user's terminal (interactive console).
pub fn run_interactive(cmd: &CommandSpec) -> Result<i32> {
    // It keeps kmatrix's process group: it owns the terminal.
    process::foreground(cmd)
}

/// Restores the terminal's settings when dropped.
struct RawMode(Option<libc::termios>);

impl RawMode {
    fn enter() -> RawMode {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a zeroed, then filled, termios.
        unsafe {
            if libc::isatty(0) != 1 {
                return RawMode(None);
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return RawMode(None);
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
            RawMode(Some(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restores the settings read in enter().
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, t);
            }
        }
    }
}

/// Starts an emulator that announces its listeners on stderr, as gem5 does
/// ("system.terminal: Listening for connections on port 3456"; gem5 picks
/// the next free port when one is taken). Both streams go to `log`; each
/// announcement arrives on the channel as (listener name, port).
pub fn spawn_announcing(cmd: &CommandSpec, log: &std::path::Path) -> Result<(Group, mpsc::Receiver<(String, u16)>)> {
    let out = std::fs::File::create(log).map_err(Error::io(format!("cannot create {}", log.display())))?;
    let mut err_log = out.try_clone().map_err(Error::io("dup"))?;
    let mut child = Group::spawn_spec(cmd, Stdio::from(out), Stdio::piped(), Stdio::null(), Mode::Group)?;
    let stderr = child.child_mut().stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let re = Regex::new(r"^(\S+): Listening for connections on port (\d+)").expect("valid");
        process::for_each_line(stderr, |line| {
            let _ = writeln!(err_log, "{line}");
            if let Some(c) = re.captures(&line)
                && let Ok(port) = c[2].parse()
            {
                let _ = tx.send((c[1].to_string(), port));
            }
            true
        });
    });
    Ok((child, rx))
}

/// Waits for the listener whose name ends with `name` (e.g. `.remote_gdb`);
/// others are passed to `other`. Fails when the emulator exits first.
pub fn wait_listener(child: &mut Group, rx: &mpsc::Receiver<(String, u16)>, name: &str, log: &std::path::Path, explain: crate::emulator::Explain, other: &mut dyn FnMut(&str, u16)) -> Result<u16> {
    let start = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((n, port)) if n.ends_with(name) => return Ok(port),
            Ok((n, port)) => other(&n, port),
            Err(_) => {}
        }
        if let Some(st) = child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let why = explain(&text).or_else(|| text.lines().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_string()));
            return Err(Error::Infra(format!(
                "the emulator exited (status {st}) before its {} opened{}; log: {}",
                name.trim_start_matches('.'),
                why.map(|e| format!(": {e}")).unwrap_or_default(),
                log.display()
            )));
        }
        if process::is_interrupted() {
            child.stop(Duration::from_secs(1));
            return Err(Error::Interrupted);
        }
        if start.elapsed() > Duration::from_secs(300) {
            child.stop(Duration::from_secs(1));
            return Err(Error::Infra(format!("no {} listener after 300s; log: {}", name.trim_start_matches('.'), log.display())));
        }
    }
}

/// An interactive console on gem5's terminal: starts the emulator (its own
/// output in `emu_log`), connects to the loopback port the terminal
/// announces, and joins it to the user's terminal. Ctrl-A x stops the
/// machine, as in QEMU; the session also ends when the emulator exits.
/// Other listeners (the gdb stub) are reported through `other`.
pub fn run_terminal(cmd: &CommandSpec, terminal: &str, emu_log: &std::path::Path, explain: crate::emulator::Explain, other: &mut dyn FnMut(&str, u16)) -> Result<i32> {
    use std::net::TcpStream;
    let (mut child, rx) = spawn_announcing(cmd, emu_log)?;
    let port = wait_listener(&mut child, &rx, terminal, emu_log, explain, other)?;
    let sock = TcpStream::connect(("127.0.0.1", port)).map_err(Error::io(format!("cannot connect to the console on 127.0.0.1:{port}")))?;
    std::thread::spawn(move || {
        // Later announcements (none expected) are dropped.
        for _ in rx {}
    });
    bridge(sock, &mut child)?;
    Ok(child.stop(Duration::from_secs(1)).unwrap_or(0))
}

/// Joins a guest serial line on a socket to the user's terminal (raw mode)
/// until Ctrl-A x or until `child` (the emulator) exits. Ctrl-A Ctrl-A
/// sends one Ctrl-A, as in QEMU.
pub fn bridge(sock: std::net::TcpStream, child: &mut Group) -> Result<()> {
    let _raw = RawMode::enter();
    let mut from_guest = sock.try_clone().map_err(Error::io("dup"))?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut out = std::io::stdout();
        while let Ok(n) = from_guest.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
        }
    });
    let (tx, rx) = mpsc::channel::<u8>();
    std::thread::spawn(move || {
        let mut b = [0u8; 1];
        while let Ok(1) = std::io::stdin().read(&mut b) {
            if tx.send(b[0]).is_err() {
                break;
            }
        }
    });
    let mut to_guest = sock;
    let mut escape = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(b) if escape => {
                escape = false;
                if b == b'x' {
                    break;
                }
                let _ = to_guest.write_all(&[0x01, b][usize::from(b == 0x01)..]);
            }
            Ok(0x01) => escape = true,
            Ok(b) => {
                let _ = to_guest.write_all(&[b]);
            }
            Err(_) => {}
        }
        if child.try_wait().is_some() {
            break;
        }
    }
    Ok(())
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_bridge_connects_to_the_announced_port() {
        // The "emulator" opens its terminal (and a gdb stub) a moment after
        // starting and says so on stderr, as gem5 does.
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            c.write_all(b"console banner\r\n").unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        let script = format!(
            "echo emulator-log-line; sleep 0.3; echo 'system.remote_gdb: Listening for connections on port 7001' >&2; \
             echo 'system.terminal: Listening for connections on port {port}' >&2; sleep 1.5"
        );
        let cmd = CommandSpec::new("sh").arg("-c").arg(script);
        let mut seen = Vec::new();
        let st = run_terminal(&cmd, "system.terminal", &dir.path().join("gem5.log"), |_| None, &mut |n, p| seen.push((n.to_string(), p))).unwrap();
        server.join().unwrap();
        assert_eq!(st, 0);
        assert_eq!(seen, [("system.remote_gdb".to_string(), 7001)]);
        let log = std::fs::read_to_string(dir.path().join("gem5.log")).unwrap();
        assert!(log.contains("emulator-log-line") && log.contains("system.terminal: Listening"), "{log}");
    }

    #[test]
    fn terminal_bridge_reports_an_emulator_that_dies_first() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = CommandSpec::new("sh").arg("-c").arg("echo 'SimObjectCliWrapperException: tried to set or unsettableobject parameter' >&2; exit 1");
        let e = run_terminal(&cmd, "system.terminal", &dir.path().join("gem5.log"), |_| None, &mut |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("SimObjectCliWrapperException"), "{e}");
    }
}
