//! Running one boot and judging it from the console.
//!
//! The verdict never rests on the emulator's exit status: with `panic=-1`
//! and `-no-reboot` a panicking kernel makes QEMU exit 0 exactly like a
//! clean poweroff. PASS needs this boot's own markers from kmatrix's init
//! (carrying a per-boot nonce); a panic, an oops, a silent console or an
//! overall timeout each give their own outcome. The emulator runs in its own
//! process group, which is killed as a whole when the boot ends.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regex::Regex;
use serde::Serialize;

use crate::command::CommandSpec;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Outcome {
    Pass,
    /// The init ran but a command it ran failed.
    CmdFail { failed: Vec<usize> },
    /// The emulator ended without this boot's marker.
    BootFail { reason: String },
    Panic { line: String },
    Oops { line: String },
    Timeout { reason: String },
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::CmdFail { .. } => "cmd-fail",
            Outcome::BootFail { .. } => "boot-fail",
            Outcome::Panic { .. } => "panic",
            Outcome::Oops { .. } => "oops",
            Outcome::Timeout { .. } => "timeout",
        }
    }
    /// The reason or kernel line behind a non-pass outcome.
    pub fn detail(&self) -> Option<String> {
        match self {
            Outcome::Pass => None,
            Outcome::CmdFail { failed } => Some(format!("command(s) {failed:?} exited non-zero")),
            Outcome::BootFail { reason } | Outcome::Timeout { reason } => Some(reason.clone()),
            Outcome::Panic { line } | Outcome::Oops { line } => Some(line.clone()),
        }
    }

    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Pass)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CmdResult {
    pub index: usize,
    pub status: i32,
    pub output: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BootResult {
    pub outcome: Outcome,
    /// From spawn to the boot marker.
    pub boot_to_marker: Option<Duration>,
    pub total: Duration,
    pub log: PathBuf,
    pub cmds: Vec<CmdResult>,
    pub warnings: Vec<String>,
    pub exit_status: Option<i32>,
    pub uname: Option<String>,
}

pub struct BootSpec {
    pub command: CommandSpec,
    pub nonce: String,
    pub timeout: Duration,
    /// Kill when the console stays silent this long (None: never).
    pub no_output_timeout: Option<Duration>,
    pub log: PathBuf,
    /// Echo the console to stdout as it arrives.
    pub echo: bool,
    /// The guest console is this file, which the emulator writes (gem5's
    /// m5out/<terminal>); the emulator's own output then goes to
    /// `<log>.emulator` and never counts as console.
    pub console_file: Option<PathBuf>,
}

/// Console-line patterns (LAVA's and syzkaller's kernel message starts).
struct Patterns {
    panic: Regex,
    oops: Regex,
    warning: Regex,
}

impl Patterns {
    fn new() -> Self {
        Patterns {
            panic: Regex::new(r"Kernel panic - not syncing|PANIC: double fault").expect("valid"),
            oops: Regex::new(r"Oops(?: -|:)|kernel BUG at|\bBUG: |Unable to handle kernel|general protection fault|Internal error: |Unhandled fault: ").expect("valid"),
            warning: Regex::new(r"WARNING: (?:CPU|at) ").expect("valid"),
        }
    }
}

/// Set by SIGINT/SIGTERM: every wait loop checks it and cleans up.
pub fn interrupted() -> &'static Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let f = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let _ = signal_hook::flag::register(sig, f.clone());
        }
        f
    })
}

/// Spawns in a new process group; the child dies with kmatrix (PDEATHSIG).
pub fn spawn_group(cmd: &CommandSpec, stdout: Stdio, stdin: Stdio) -> Result<Child> {
    let mut c = cmd.to_command();
    c.stdout(stdout).stderr(Stdio::piped()).stdin(stdin).process_group(0);
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    c.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingTool { tool: cmd.program.clone(), package: None },
        _ => Error::Io { context: format!("cannot start {}", cmd.program), source: e },
    })
}

/// SIGTERM to the group, then SIGKILL after a grace period.
pub fn kill_group(child: &mut Child, grace: Duration) -> Option<i32> {
    let pgid = child.id() as i32;
    // SAFETY: signalling our own child's process group.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let t = Instant::now();
    while t.elapsed() < grace {
        if let Ok(Some(st)) = child.try_wait() {
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    child.wait().ok().and_then(|s| s.code())
}

/// What the console has shown so far.
struct Console {
    start: Instant,
    pats: Patterns,
    ok_marker: String,
    done_marker: String,
    begin_re: Regex,
    end_re: Regex,
    marker_at: Option<Duration>,
    done: bool,
    panic_line: Option<String>,
    oops_line: Option<String>,
    warnings: Vec<String>,
    cmds: Vec<CmdResult>,
    current: Option<CmdResult>,
    uname: Option<String>,
}

impl Console {
    fn new(nonce: &str, start: Instant) -> Self {
        let n = regex::escape(nonce);
        Console {
            start,
            pats: Patterns::new(),
            ok_marker: format!("KMATRIX-BOOT-OK nonce={nonce}"),
            done_marker: format!("KMATRIX-DONE nonce={nonce}"),
            begin_re: Regex::new(&format!(r"KMATRIX-CMD-BEGIN (\d+) nonce={n}")).expect("valid"),
            end_re: Regex::new(&format!(r"KMATRIX-CMD-END (\d+) status=(-?\d+) nonce={n}")).expect("valid"),
            marker_at: None,
            done: false,
            panic_line: None,
            oops_line: None,
            warnings: Vec::new(),
            cmds: Vec::new(),
            current: None,
            uname: None,
        }
    }

    fn line(&mut self, l: &str) {
        if l.contains(&self.ok_marker) {
            if self.marker_at.is_none() {
                self.marker_at = Some(self.start.elapsed());
                self.uname = l.split_once("machine=").map(|(_, r)| r.to_string());
            }
        } else if l.contains(&self.done_marker) {
            self.done = true;
        } else if let Some(c) = self.begin_re.captures(l) {
            self.current = Some(CmdResult { index: c[1].parse().unwrap_or(0), status: -1, output: String::new() });
        } else if let Some(c) = self.end_re.captures(l) {
            if let Some(mut cur) = self.current.take() {
                cur.status = c[2].parse().unwrap_or(-1);
                // init.c prints a newline before the END marker.
                if cur.output.ends_with('\n') {
                    cur.output.pop();
                }
                self.cmds.push(cur);
            }
        } else if let Some(cur) = self.current.as_mut() {
            cur.output.push_str(l);
            cur.output.push('\n');
        }
        if self.panic_line.is_none() && self.pats.panic.is_match(l) {
            self.panic_line = Some(l.trim().to_string());
        } else if self.oops_line.is_none() && self.pats.oops.is_match(l) && !l.contains("KMATRIX-") {
            self.oops_line = Some(l.trim().to_string());
        } else if self.pats.warning.is_match(l) && self.warnings.len() < 20 {
            self.warnings.push(l.trim().to_string());
        }
    }
}

enum Chunk {
    Out(Vec<u8>),
    Err(Vec<u8>),
    /// The emulator's own output when the console is a file.
    Emu(Vec<u8>),
    Eof,
}

/// Follows a file the emulator appends to, from its creation until `stop`
/// is set; then reads what is left and ends with Eof.
fn tail(path: PathBuf, stop: Arc<AtomicBool>, tx: mpsc::Sender<Chunk>) {
    let mut file: Option<std::fs::File> = None;
    let mut buf = [0u8; 8192];
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if file.is_none() {
            file = std::fs::File::open(&path).ok();
        }
        let mut got = 0;
        if let Some(f) = file.as_mut() {
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got += n;
                let _ = tx.send(Chunk::Out(buf[..n].to_vec()));
            }
        }
        if stopping {
            let _ = tx.send(Chunk::Eof);
            return;
        }
        if got == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The last line of the emulator's own output that explains a failure
/// (gem5's `fatal:`/`panic:`, QEMU's `qemu-system-…:` errors).
pub(crate) fn emulator_error(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .find(|l| l.starts_with("fatal:") || l.starts_with("panic:") || l.contains("qemu-system-") || l.starts_with("gem5 has encountered a segmentation fault"))
        .map(|l| l.trim().to_string())
}

pub fn run(spec: &BootSpec) -> Result<BootResult> {
    let interrupted = interrupted();
    if let Some(dir) = spec.log.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("cannot create {}", dir.display())))?;
    }
    let mut log = std::fs::File::create(&spec.log).map_err(Error::io(format!("cannot create {}", spec.log.display())))?;
    let _ = writeln!(log, "# {}", spec.command);
    let start = Instant::now();
    let mut child = spawn_group(&spec.command, Stdio::piped(), Stdio::null())?;
    let (tx, rx) = mpsc::channel();
    let to_file = spec.console_file.is_some();
    let stop_tail = Arc::new(AtomicBool::new(false));
    let mut streams = 2;
    if let Some(f) = &spec.console_file {
        let (f, stop, tx) = (f.clone(), stop_tail.clone(), tx.clone());
        std::thread::spawn(move || tail(f, stop, tx));
        streams = 3;
    }
    let mut emu_log = if to_file {
        let p = spec.log.with_extension("emulator.log");
        Some(std::fs::File::create(&p).map_err(Error::io(format!("cannot create {}", p.display())))?)
    } else {
        None
    };
    let mut emu_text = String::new();
    for (stream, is_err) in [
        (Box::new(child.stdout.take().expect("piped")) as Box<dyn Read + Send>, false),
        (Box::new(child.stderr.take().expect("piped")) as Box<dyn Read + Send>, true),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut s = stream;
            let mut buf = [0u8; 8192];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Chunk::Eof);
                        return;
                    }
                    Ok(n) => {
                        let v = buf[..n].to_vec();
                        let _ = tx.send(if to_file {
                            Chunk::Emu(v)
                        } else if is_err {
                            Chunk::Err(v)
                        } else {
                            Chunk::Out(v)
                        });
                    }
                }
            }
        });
    }
    drop(tx);

    let mut con = Console::new(&spec.nonce, start);
    let mut line = Vec::<u8>::new();
    let mut last_output = Instant::now();
    let mut eofs = 0;
    let mut timeout: Option<String> = None;
    let mut done_at: Option<Instant> = None;
    let mut panic_at: Option<Instant> = None;
    let exit_status;

    let feed = |bytes: &[u8], line: &mut Vec<u8>, con: &mut Console, log: &mut std::fs::File| {
        let _ = log.write_all(bytes);
        if spec.echo {
            let _ = std::io::stdout().write_all(bytes);
            let _ = std::io::stdout().flush();
        }
        for &b in bytes {
            if b == b'\n' {
                con.line(String::from_utf8_lossy(line).trim_end_matches('\r'));
                line.clear();
            } else if line.len() < 64 * 1024 {
                // A line longer than this is noise; the bound keeps memory flat.
                line.push(b);
            }
        }
    };

    let mut emu = |bytes: &[u8]| {
        if let Some(f) = emu_log.as_mut() {
            let _ = f.write_all(bytes);
        }
        // Keep the tail only: enough for the last error line.
        emu_text.push_str(&String::from_utf8_lossy(bytes));
        if emu_text.len() > 64 * 1024 {
            let cut = emu_text.len() - 32 * 1024;
            let cut = (cut..emu_text.len()).find(|&i| emu_text.is_char_boundary(i)).unwrap_or(0);
            emu_text.drain(..cut);
        }
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Chunk::Out(bytes)) | Ok(Chunk::Err(bytes)) => {
                last_output = Instant::now();
                feed(&bytes, &mut line, &mut con, &mut log);
            }
            Ok(Chunk::Emu(bytes)) => emu(&bytes),
            Ok(Chunk::Eof) => eofs += 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => eofs = streams,
        }
        if let Ok(Some(st)) = child.try_wait() {
            // The emulator is gone: drain the pipes and the console file,
            // then judge.
            stop_tail.store(true, Ordering::Relaxed);
            while eofs < streams {
                match rx.recv_timeout(Duration::from_millis(500)) {
                    Ok(Chunk::Out(b)) | Ok(Chunk::Err(b)) => feed(&b, &mut line, &mut con, &mut log),
                    Ok(Chunk::Emu(b)) => emu(&b),
                    Ok(Chunk::Eof) => eofs += 1,
                    Err(_) => break,
                }
            }
            if !line.is_empty() {
                con.line(String::from_utf8_lossy(&line).trim_end_matches('\r'));
            }
            exit_status = st.code();
            break;
        }
        let now = Instant::now();
        if con.panic_line.is_some() && panic_at.is_none() {
            panic_at = Some(now);
        }
        if con.done && done_at.is_none() {
            done_at = Some(now);
        }
        // After a panic keep a moment of trace, then stop the machine.
        if panic_at.is_some_and(|t| now.duration_since(t) > Duration::from_millis(500)) {
            exit_status = kill_group(&mut child, Duration::from_millis(500));
            break;
        }
        // The guest said it is done but the machine keeps running.
        if done_at.is_some_and(|t| now.duration_since(t) > Duration::from_secs(10)) {
            con.warnings.push("the machine did not stop after the init finished; killed".into());
            exit_status = kill_group(&mut child, Duration::from_millis(500));
            break;
        }
        if now.duration_since(start) > spec.timeout {
            timeout = Some(format!("no result within {}s", spec.timeout.as_secs()));
            exit_status = kill_group(&mut child, Duration::from_secs(1));
            break;
        }
        if let Some(n) = spec.no_output_timeout
            && now.duration_since(last_output) > n {
                timeout = Some(format!("console silent for {}s", n.as_secs()));
                exit_status = kill_group(&mut child, Duration::from_secs(1));
                break;
            }
        if interrupted.load(Ordering::Relaxed) {
            kill_group(&mut child, Duration::from_secs(1));
            return Err(Error::Interrupted);
        }
    }
    stop_tail.store(true, Ordering::Relaxed);
    let total = start.elapsed();
    let emu_error = emulator_error(&emu_text);
    let _ = writeln!(log, "\n# kmatrix: emulator exit status {exit_status:?} after {:.2}s", total.as_secs_f64());

    let Console { panic_line, oops_line, marker_at, done, cmds, warnings, uname, .. } = con;
    let outcome = if let Some(l) = panic_line {
        Outcome::Panic { line: l }
    } else if let Some(l) = oops_line {
        Outcome::Oops { line: l }
    } else if let Some(r) = timeout {
        Outcome::Timeout { reason: if marker_at.is_some() { format!("{r} (after the boot marker)") } else { r } }
    } else if !done {
        Outcome::BootFail {
            reason: match marker_at {
                Some(_) => format!("the init did not finish (emulator exit status {exit_status:?})"),
                None => format!(
                    "no boot marker; emulator exited with status {}{}",
                    exit_status.map(|c| c.to_string()).unwrap_or_else(|| "unknown".into()),
                    emu_error.map(|e| format!(" ({e})")).unwrap_or_default()
                ),
            },
        }
    } else {
        let failed: Vec<usize> = cmds.iter().filter(|c| c.status != 0).map(|c| c.index).collect();
        if failed.is_empty() { Outcome::Pass } else { Outcome::CmdFail { failed } }
    };
    Ok(BootResult { outcome, boot_to_marker: marker_at, total, log: spec.log.clone(), cmds, warnings, exit_status, uname })
}

/// Runs the emulator on the user's terminal (interactive console).
pub fn run_interactive(cmd: &CommandSpec) -> Result<i32> {
    let mut c = cmd.to_command();
    let st = c.status().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingTool { tool: cmd.program.clone(), package: None },
        _ => Error::Io { context: format!("cannot start {}", cmd.program), source: e },
    })?;
    Ok(st.code().unwrap_or(1))
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
pub fn spawn_announcing(cmd: &CommandSpec, log: &std::path::Path) -> Result<(Child, mpsc::Receiver<(String, u16)>)> {
    let out = std::fs::File::create(log).map_err(Error::io(format!("cannot create {}", log.display())))?;
    let mut err_log = out.try_clone().map_err(Error::io("dup"))?;
    let mut child = spawn_group(cmd, Stdio::from(out), Stdio::null())?;
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let re = Regex::new(r"^(\S+): Listening for connections on port (\d+)").expect("valid");
        for line in std::io::BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            let _ = writeln!(err_log, "{line}");
            if let Some(c) = re.captures(&line)
                && let Ok(port) = c[2].parse() {
                    let _ = tx.send((c[1].to_string(), port));
                }
        }
    });
    Ok((child, rx))
}

/// Waits for the listener whose name ends with `name` (e.g. `.remote_gdb`);
/// others are passed to `other`. Fails when the emulator exits first.
pub fn wait_listener(child: &mut Child, rx: &mpsc::Receiver<(String, u16)>, name: &str, log: &std::path::Path, other: &mut dyn FnMut(&str, u16)) -> Result<u16> {
    let start = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((n, port)) if n.ends_with(name) => return Ok(port),
            Ok((n, port)) => other(&n, port),
            Err(_) => {}
        }
        if let Ok(Some(st)) = child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let why = emulator_error(&text).or_else(|| text.lines().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_string()));
            return Err(Error::Infra(format!(
                "the emulator exited ({st}) before its {} opened{}; log: {}",
                name.trim_start_matches('.'),
                why.map(|e| format!(": {e}")).unwrap_or_default(),
                log.display()
            )));
        }
        if interrupted().load(Ordering::Relaxed) {
            kill_group(child, Duration::from_secs(1));
            return Err(Error::Interrupted);
        }
        if start.elapsed() > Duration::from_secs(300) {
            kill_group(child, Duration::from_secs(1));
            return Err(Error::Infra(format!("no {} listener after 300s; log: {}", name.trim_start_matches('.'), log.display())));
        }
    }
}

/// An interactive console on gem5's terminal: starts the emulator (its own
/// output in `emu_log`), connects to the loopback port the terminal
/// announces, and joins it to the user's terminal. Ctrl-A x stops the
/// machine, as in QEMU; the session also ends when the emulator exits.
/// Other listeners (the gdb stub) are reported through `other`.
pub fn run_terminal(cmd: &CommandSpec, terminal: &str, emu_log: &std::path::Path, other: &mut dyn FnMut(&str, u16)) -> Result<i32> {
    use std::net::TcpStream;
    let (mut child, rx) = spawn_announcing(cmd, emu_log)?;
    let port = wait_listener(&mut child, &rx, terminal, emu_log, other)?;
    let sock = TcpStream::connect(("127.0.0.1", port)).map_err(Error::io(format!("cannot connect to the console on 127.0.0.1:{port}")))?;
    std::thread::spawn(move || {
        // Later announcements (none expected) are dropped.
        for _ in rx {}
    });
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
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
    }
    Ok(kill_group(&mut child, Duration::from_secs(1)).unwrap_or(0))
}

/// A random nonce for markers.
pub fn nonce() -> String {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: u64, silent: Option<u64>) -> BootResult {
        let dir = tempfile::tempdir().unwrap();
        let spec = BootSpec {
            command: CommandSpec::new("sh").arg("-c").arg(script),
            nonce: "abc".into(),
            timeout: Duration::from_secs(timeout),
            no_output_timeout: silent.map(Duration::from_secs),
            log: dir.path().join("console.log"),
            echo: false,
            console_file: None,
        };
        let r = run(&spec).unwrap();
        std::mem::forget(dir);
        r
    }

    /// gem5's way: the console is a file the emulator appends to, and the
    /// emulator's own output never counts as console.
    fn sh_file(script: &str) -> (BootResult, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let term = dir.path().join("m5out/system.terminal");
        let spec = BootSpec {
            command: CommandSpec::new("sh").arg("-c").arg(script).env("T", term.display().to_string()),
            nonce: "abc".into(),
            timeout: Duration::from_secs(20),
            no_output_timeout: None,
            log: dir.path().join("console.log"),
            echo: false,
            console_file: Some(term),
        };
        (run(&spec).unwrap(), dir)
    }

    #[test]
    fn console_file_is_followed_until_the_emulator_exits() {
        let (r, dir) = sh_file(
            "echo 'info: Kernel panic - not syncing (this is gem5 talking)'; sleep 0.3; mkdir -p $(dirname $T); \
             echo 'KMATRIX-BOOT-OK nonce=abc machine=aarch64 release=6.1' > $T; sleep 0.3; \
             printf 'KMATRIX-CMD-BEGIN 0 nonce=abc\\nhi\\n\\nKMATRIX-CMD-END 0 status=0 nonce=abc\\nKMATRIX-DONE nonce=abc\\n' >> $T; \
             echo 'Exiting @ tick 1 because m5_exit instruction encountered'",
        );
        assert_eq!(r.outcome, Outcome::Pass, "{r:?}");
        assert_eq!(r.cmds[0].output, "hi\n");
        let emu = std::fs::read_to_string(dir.path().join("console.emulator.log")).unwrap();
        assert!(emu.contains("m5_exit"), "{emu}");
    }

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
        let st = run_terminal(&cmd, "system.terminal", &dir.path().join("gem5.log"), &mut |n, p| seen.push((n.to_string(), p))).unwrap();
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
        let e = run_terminal(&cmd, "system.terminal", &dir.path().join("gem5.log"), &mut |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("SimObjectCliWrapperException"), "{e}");
    }

    #[test]
    fn emulator_fatal_is_the_boot_fail_reason() {
        let (r, _dir) = sh_file("echo 'fatal: Could not load kernel file /x' >&2; exit 1");
        match r.outcome {
            Outcome::BootFail { reason } => assert!(reason.contains("fatal: Could not load kernel file"), "{reason}"),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn marker_and_done_pass() {
        let r = sh("echo 'KMATRIX-BOOT-OK nonce=abc machine=x86_64 release=6.1'; echo 'KMATRIX-CMD-BEGIN 0 nonce=abc'; echo hi; echo; echo 'KMATRIX-CMD-END 0 status=0 nonce=abc'; echo 'KMATRIX-DONE nonce=abc'", 10, None);
        assert_eq!(r.outcome, Outcome::Pass);
        assert_eq!(r.cmds[0].output, "hi\n");
        assert!(r.boot_to_marker.is_some());
    }

    #[test]
    fn exit_zero_without_marker_is_not_a_pass() {
        let r = sh("echo booting; exit 0", 10, None);
        assert!(matches!(r.outcome, Outcome::BootFail { .. }), "{:?}", r.outcome);
    }

    #[test]
    fn stale_marker_with_wrong_nonce_is_not_a_pass() {
        let r = sh("echo 'KMATRIX-BOOT-OK nonce=old'; echo 'KMATRIX-DONE nonce=old'", 10, None);
        assert!(matches!(r.outcome, Outcome::BootFail { .. }), "{:?}", r.outcome);
    }

    #[test]
    fn panic_is_classified_and_killed_fast() {
        let t = Instant::now();
        let r = sh("echo '[ 1.0] Kernel panic - not syncing: No working init found.'; sleep 30", 60, None);
        assert_eq!(r.outcome, Outcome::Panic { line: "[ 1.0] Kernel panic - not syncing: No working init found.".into() });
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn silent_console_is_a_timeout() {
        let r = sh("echo 'KMATRIX-BOOT-OK nonce=abc machine=x'; sleep 30", 60, Some(1));
        assert!(matches!(&r.outcome, Outcome::Timeout { reason } if reason.contains("silent")), "{:?}", r.outcome);
    }

    #[test]
    fn failed_command_is_reported() {
        let r = sh("echo 'KMATRIX-BOOT-OK nonce=abc machine=x'; echo 'KMATRIX-CMD-BEGIN 0 nonce=abc'; echo 'KMATRIX-CMD-END 0 status=3 nonce=abc'; echo 'KMATRIX-DONE nonce=abc'", 10, None);
        assert_eq!(r.outcome, Outcome::CmdFail { failed: vec![0] });
    }
}
