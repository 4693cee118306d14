//! Running one boot and judging it from the console.
//!
//! The verdict never rests on the emulator's exit status: with `panic=-1`
//! and `-no-reboot` a panicking kernel makes QEMU exit 0 exactly like a
//! clean poweroff. PASS needs this boot's own markers from kmatrix's init
//! (carrying a per-boot nonce); a panic, an oops, a silent console or an
//! overall timeout each give their own outcome ([`console::judge`]). The
//! emulator runs in a process group of its own ([`crate::process`]), which
//! is stopped as a whole when the boot ends.
//!
//! Memory stays bounded whatever the guest prints: console bytes travel
//! through a bounded channel, the console log is cut at
//! [`BootSpec::log_limit`] (the cut is written into the log and the
//! result), and [`console::Console`] keeps bounded state.

pub mod console;
pub mod distro;
pub mod interactive;

pub use console::CmdResult;
pub use interactive::{bridge, run_interactive, run_terminal, spawn_announcing, wait_listener};

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::command::CommandSpec;
use crate::error::{Error, Result};
use crate::outcome::Outcome;
use crate::process::{self, Group, Mode};
use console::{Console, Stop, StopPolicy};

/// Default cap of a boot's console log.
pub const DEFAULT_LOG_LIMIT: u64 = 64 << 20;

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
    /// A whole-OS boot: from spawn to the getty's login prompt and to the
    /// first ssh command that ran, and what systemd said of the boot.
    pub login_at: Option<Duration>,
    pub ssh_at: Option<Duration>,
    pub system_state: Option<String>,
    /// `--dump`: what [`BootSpec::at_panic`] gave, if the guest panicked.
    #[serde(skip)]
    pub dumped: Option<std::result::Result<u64, String>>,
    /// Console bytes read in all, and whether the log was cut.
    pub console_bytes: u64,
    pub log_cut: bool,
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
    /// `m5out/<terminal>`); the emulator's own output then goes to
    /// `<log>.emulator` and never counts as console.
    pub console_file: Option<PathBuf>,
    /// Guest commands asked for (their results are kept, no more).
    pub cmds: usize,
    /// The console log stops growing here; the console is still read and
    /// judged to the end.
    pub log_limit: u64,
    /// Picks the emulator's own error line (its backend's [`crate::emulator::Backend::explainer`]).
    pub explain: crate::emulator::Explain,
    /// Run once when the init says it waits for a snapshot; an error ends
    /// the boot as an infrastructure error.
    pub at_snapshot: Option<SnapshotHook>,
    /// A whole-OS boot is judged by this probe (ssh into the guest), not by
    /// kmatrix's init markers; it runs on its own thread from the spawn.
    pub probe: Option<distro::Probe>,
    /// `--dump`: run when the guest has panicked and before it is stopped
    /// (pauses it and dumps its memory; Ok is the dump's size).
    pub at_panic: Option<PanicHook>,
}

pub type PanicHook = Box<dyn Fn() -> std::result::Result<u64, String> + Send + Sync>;

/// What saves the machine while the guest waits.
pub type SnapshotHook = Box<dyn Fn() -> std::result::Result<(), String> + Send + Sync>;

enum Chunk {
    Console(Vec<u8>),
    /// The emulator's own output when the console is a file.
    Emu(Vec<u8>),
    Eof,
}

/// Chunks in flight between the readers and the judge: with 8 KiB reads,
/// at most 512 KiB buffered however fast the guest prints.
const CHANNEL_DEPTH: usize = 64;

/// Follows a file the emulator appends to, from its creation until `stop`
/// is set; then reads what is left and ends with Eof.
fn tail(path: PathBuf, stop: Arc<AtomicBool>, tx: mpsc::SyncSender<Chunk>) {
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
                if tx.send(Chunk::Console(buf[..n].to_vec())).is_err() {
                    return;
                }
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

/// Pumps a pipe into the channel until EOF (or the judge is gone).
fn pump(stream: impl Read + Send + 'static, emu: bool, tx: mpsc::SyncSender<Chunk>) {
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
                    if tx.send(if emu { Chunk::Emu(v) } else { Chunk::Console(v) }).is_err() {
                        return;
                    }
                }
            }
        }
    });
}


/// The console log, cut at its limit.
struct Log {
    file: std::fs::File,
    written: u64,
    limit: u64,
    cut: bool,
}

impl Log {
    fn write(&mut self, bytes: &[u8]) {
        if self.cut {
            return;
        }
        let room = self.limit.saturating_sub(self.written) as usize;
        let n = bytes.len().min(room);
        let _ = self.file.write_all(&bytes[..n]);
        self.written += n as u64;
        if n < bytes.len() {
            self.cut = true;
            let _ = writeln!(self.file, "\n# kmatrix: console log cut at {} bytes (--console-log-limit); the console was still read and judged", self.limit);
        }
    }
}

/// Keeps the tail of the emulator's own output: enough for its last error.
struct EmuTail {
    file: Option<std::fs::File>,
    text: String,
}

impl EmuTail {
    fn push(&mut self, bytes: &[u8]) {
        if let Some(f) = self.file.as_mut() {
            let _ = f.write_all(bytes);
        }
        self.text.push_str(&String::from_utf8_lossy(bytes));
        if self.text.len() > 64 * 1024 {
            let cut = self.text.len() - 32 * 1024;
            let cut = (cut..self.text.len()).find(|&i| self.text.is_char_boundary(i)).unwrap_or(0);
            self.text.drain(..cut);
        }
    }
}

pub fn run(spec: &BootSpec) -> Result<BootResult> {
    if let Some(dir) = spec.log.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("cannot create {}", dir.display())))?;
    }
    let file = std::fs::File::create(&spec.log).map_err(Error::io(format!("cannot create {}", spec.log.display())))?;
    let mut log = Log { file, written: 0, limit: spec.log_limit, cut: false };
    let _ = writeln!(log.file, "# {}", spec.command);
    let start = Instant::now();
    let mut child = Group::spawn_spec(&spec.command, Stdio::piped(), Stdio::piped(), Stdio::null(), Mode::Group)?;
    let (tx, rx) = mpsc::sync_channel(CHANNEL_DEPTH);
    let to_file = spec.console_file.is_some();
    let stop_tail = Arc::new(AtomicBool::new(false));
    let mut streams = 2;
    if let Some(f) = &spec.console_file {
        let (f, stop, tx) = (f.clone(), stop_tail.clone(), tx.clone());
        std::thread::spawn(move || tail(f, stop, tx));
        streams = 3;
    }
    let mut emu = EmuTail {
        file: if to_file {
            let p = spec.log.with_extension("emulator.log");
            Some(std::fs::File::create(&p).map_err(Error::io(format!("cannot create {}", p.display())))?)
        } else {
            None
        },
        text: String::new(),
    };
    pump(child.child_mut().stdout.take().expect("piped"), to_file, tx.clone());
    pump(child.child_mut().stderr.take().expect("piped"), to_file, tx.clone());
    drop(tx);

    let mut con = Console::new(&spec.nonce, start, spec.cmds);
    let mut policy = StopPolicy::new(spec.timeout, spec.no_output_timeout);
    let probe_stop = Arc::new(AtomicBool::new(false));
    let probe = spec.probe.as_ref().map(|p| {
        // A guest asked to power off over ssh takes its time under TCG.
        policy.done_grace = Duration::from_secs(120);
        distro::spawn(p.clone(), start, probe_stop.clone())
    });
    let mut probed: Option<distro::ProbeResult> = None;
    let mut dumped = None;
    let mut bytes_seen = 0u64;
    let mut last_output = Instant::now();
    let mut eofs = 0;
    let mut done_at: Option<Instant> = None;
    let mut panic_at: Option<Instant> = None;
    let mut snapshot_taken = false;
    let mut feed = |bytes: &[u8], con: &mut Console, log: &mut Log| {
        bytes_seen += bytes.len() as u64;
        log.write(bytes);
        if spec.echo {
            let _ = std::io::stdout().write_all(bytes);
            let _ = std::io::stdout().flush();
        }
        con.feed(bytes);
    };
    let (stop, exit_status) = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Chunk::Console(bytes)) => {
                last_output = Instant::now();
                feed(&bytes, &mut con, &mut log);
            }
            Ok(Chunk::Emu(bytes)) => emu.push(&bytes),
            Ok(Chunk::Eof) => eofs += 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => eofs = streams,
        }
        if let Some(code) = child.try_wait() {
            // The emulator is gone: drain the pipes and the console file,
            // then judge.
            stop_tail.store(true, Ordering::Relaxed);
            while eofs < streams {
                match rx.recv_timeout(Duration::from_millis(500)) {
                    Ok(Chunk::Console(b)) => feed(&b, &mut con, &mut log),
                    Ok(Chunk::Emu(b)) => emu.push(&b),
                    Ok(Chunk::Eof) => eofs += 1,
                    Err(_) => break,
                }
            }
            break (Stop::Exited, Some(code));
        }
        let now = Instant::now();
        if con.panic_line.is_some() && panic_at.is_none() {
            panic_at = Some(now);
        }
        if probed.is_none()
            && let Some(rx) = &probe
            && let Ok(r) = rx.try_recv()
        {
            probed = Some(r);
        }
        let finished = if probe.is_some() { probed.is_some() } else { con.done };
        if finished && done_at.is_none() {
            done_at = Some(now);
        }
        if con.snapshot_ready && !snapshot_taken {
            snapshot_taken = true;
            if let Some(hook) = &spec.at_snapshot
                && let Err(why) = hook()
            {
                child.stop(Duration::from_secs(1));
                return Err(Error::Infra(format!("snapshot failed: {why}; console log: {}", spec.log.display())));
            }
        }
        let since = |t: Option<Instant>| t.map(|t| now.duration_since(t));
        if let Some(stop) = policy.check(&con, now.duration_since(start), now.duration_since(last_output), since(panic_at), since(done_at)) {
            if stop == Stop::DidNotPowerOff {
                con.warnings.push("the machine did not stop after the init finished; killed".into());
            }
            if stop == Stop::AfterPanic
                && let Some(hook) = &spec.at_panic
            {
                dumped = Some(hook());
            }
            let grace = if matches!(stop, Stop::Timeout(_)) { Duration::from_secs(1) } else { Duration::from_millis(500) };
            break (stop, child.stop(grace));
        }
        if process::is_interrupted() {
            child.stop(Duration::from_secs(1));
            return Err(Error::Interrupted);
        }
    };
    stop_tail.store(true, Ordering::Relaxed);
    probe_stop.store(true, Ordering::Relaxed);
    if probed.is_none()
        && let Some(rx) = &probe
    {
        probed = rx.recv_timeout(Duration::from_secs(15)).ok();
    }
    con.finish();
    let total = start.elapsed();
    let emu_error = (spec.explain)(&emu.text);
    if log.cut {
        con.warnings.push(format!("console log cut at {} bytes of {bytes_seen}", log.limit));
    }
    let _ = writeln!(log.file, "\n# kmatrix: emulator exit status {exit_status:?} after {:.2}s", total.as_secs_f64());
    let (outcome, mut cmds, ssh_at, system_state) = match (&spec.probe, probed) {
        (None, _) => (console::judge(&con, &stop, exit_status, emu_error.as_deref()), std::mem::take(&mut con.cmds), None, None),
        (Some(_), p) => {
            let p = p.unwrap_or_default();
            con.warnings.extend(p.warnings.iter().cloned());
            if con.uname.is_none() {
                con.uname = p.uname.clone();
            }
            (distro::judge(&con, &stop, exit_status, emu_error.as_deref(), &p), p.cmds, p.ssh_at, p.state)
        }
    };
    Ok(BootResult {
        outcome,
        boot_to_marker: con.marker_at.or(ssh_at),
        total,
        log: spec.log.clone(),
        cmds: std::mem::take(&mut cmds),
        warnings: std::mem::take(&mut con.warnings),
        exit_status,
        uname: con.uname.take(),
        login_at: con.login_at,
        ssh_at,
        system_state,
        dumped,
        console_bytes: bytes_seen,
        log_cut: log.cut,
    })
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
    use crate::outcome::Verdict;

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
            cmds: 4,
            log_limit: DEFAULT_LOG_LIMIT,
            explain: crate::emulator::qemu::explain,
            at_snapshot: None,
        probe: None,
        at_panic: None,
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
            cmds: 4,
            log_limit: DEFAULT_LOG_LIMIT,
            explain: crate::emulator::gem5::explain,
            at_snapshot: None,
        probe: None,
        at_panic: None,
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
        assert_eq!(r.outcome, Outcome::pass(), "{r:?}");
        assert_eq!(r.cmds[0].output, "hi\n");
        let emu = std::fs::read_to_string(dir.path().join("console.emulator.log")).unwrap();
        assert!(emu.contains("m5_exit"), "{emu}");
    }

    #[test]
    fn emulator_fatal_is_the_boot_fail_reason() {
        let (r, _dir) = sh_file("echo 'fatal: Could not load kernel file /x' >&2; exit 1");
        assert_eq!(r.outcome.verdict, Verdict::BootFail);
        let reason = r.outcome.detail.unwrap();
        assert!(reason.contains("fatal: Could not load kernel file"), "{reason}");
    }

    #[test]
    fn marker_and_done_pass() {
        let r = sh("echo 'KMATRIX-BOOT-OK nonce=abc machine=x86_64 release=6.1'; echo 'KMATRIX-CMD-BEGIN 0 nonce=abc'; echo hi; echo; echo 'KMATRIX-CMD-END 0 status=0 nonce=abc'; echo 'KMATRIX-DONE nonce=abc'", 10, None);
        assert_eq!(r.outcome, Outcome::pass());
        assert_eq!(r.cmds[0].output, "hi\n");
        assert!(r.boot_to_marker.is_some());
    }

    #[test]
    fn exit_zero_without_marker_is_not_a_pass() {
        let r = sh("echo booting; exit 0", 10, None);
        assert_eq!(r.outcome.verdict, Verdict::BootFail, "{:?}", r.outcome);
    }

    #[test]
    fn stale_marker_with_wrong_nonce_is_not_a_pass() {
        let r = sh("echo 'KMATRIX-BOOT-OK nonce=old'; echo 'KMATRIX-DONE nonce=old'", 10, None);
        assert_eq!(r.outcome.verdict, Verdict::BootFail, "{:?}", r.outcome);
    }

    #[test]
    fn panic_is_classified_and_killed_fast() {
        let t = Instant::now();
        let r = sh("echo '[ 1.0] Kernel panic - not syncing: No working init found.'; sleep 30", 60, None);
        assert_eq!(r.outcome, Outcome::new(Verdict::Panic, "[ 1.0] Kernel panic - not syncing: No working init found."));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn silent_console_is_a_timeout() {
        let r = sh("echo 'KMATRIX-BOOT-OK nonce=abc machine=x'; sleep 30", 60, Some(1));
        assert!(r.outcome.verdict == Verdict::Timeout && r.outcome.detail.as_deref().unwrap().contains("silent"), "{:?}", r.outcome);
    }

    #[test]
    fn failed_command_is_reported() {
        let r = sh("echo 'KMATRIX-BOOT-OK nonce=abc machine=x'; echo 'KMATRIX-CMD-BEGIN 0 nonce=abc'; echo 'KMATRIX-CMD-END 0 status=3 nonce=abc'; echo 'KMATRIX-DONE nonce=abc'", 10, None);
        assert_eq!(r.outcome.verdict, Verdict::CmdFail);
    }
}
