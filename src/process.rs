//! Every process kmatrix starts: spawning, output pumping, stopping, the
//! interrupt flag, and the guarantee that nothing outlives kmatrix.
//!
//! A child runs in a process group of its own ([`Group`]), so that `make`
//! and every compiler it forks, or an emulator and its helpers, are stopped
//! together (SIGTERM, a grace period, SIGKILL). Three layers make sure no
//! group survives kmatrix, however it ends:
//!
//! - normal paths stop their groups, and dropping a [`Group`] kills it;
//! - SIGINT/SIGTERM set [`interrupted`], which every wait loop checks;
//! - for SIGKILL, which no handler sees, a *watchdog* process forked at
//!   start-up ([`start_watchdog`]) holds one end of a socket pair. kmatrix
//!   sends it each child's group id as soon as the child has exec'd (a
//!   child whose exec failed is never registered, so no stale id can later
//!   hit an unrelated group). When kmatrix dies, the kernel closes
//!   kmatrix's end, the watchdog reads EOF, and it stops every group still
//!   registered: SIGTERM, then SIGKILL. Each leader also gets SIGTERM from
//!   `PR_SET_PDEATHSIG` the moment kmatrix dies, which covers the instant
//!   between exec and registration; make then deletes its half-written
//!   targets and scons records what it built. (A `SOCK_SEQPACKET` pair rather than a pipe: each
//!   message arrives whole, and `MSG_NOSIGNAL` means a dead watchdog can
//!   never SIGPIPE kmatrix.) `PR_SET_PDEATHSIG` alone would stop only the
//!   direct child (make), leaving its compilers running.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::command::CommandSpec;
use crate::error::{Error, Result};

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

pub fn is_interrupted() -> bool {
    interrupted().load(Ordering::Relaxed)
}

/// kmatrix's end of the watchdog's socket pair (-1: no watchdog, e.g. in
/// unit tests).
static WATCHDOG: AtomicI32 = AtomicI32::new(-1);

/// How long the watchdog waits after SIGTERM before SIGKILL: short enough
/// that nothing is alive 5 s after kmatrix died.
const WATCHDOG_GRACE_MS: u64 = 2000;

/// Forks the watchdog. Call once, first thing in `main`, while the process
/// has one thread and only fds 0-2 (the child inherits nothing else).
pub fn start_watchdog() {
    if WATCHDOG.load(Ordering::Relaxed) >= 0 {
        return;
    }
    let mut fds = [0i32; 2];
    let warn = |what: &str| eprintln!("kmatrix: warning: cannot start the watchdog ({what}: {}); if kmatrix is killed with SIGKILL, its builds may outlive it", std::io::Error::last_os_error());
    // SAFETY: plain syscalls; the child branch below only makes
    // async-signal-safe calls and never returns.
    unsafe {
        if libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) != 0 {
            warn("socketpair");
            return;
        }
        let pid = libc::fork();
        if pid < 0 {
            warn("fork");
            libc::close(fds[0]);
            libc::close(fds[1]);
            return;
        }
        if pid == 0 {
            libc::close(fds[1]);
            watchdog_main(fds[0]);
        }
        libc::close(fds[0]);
    }
    WATCHDOG.store(fds[1], Ordering::Relaxed);
}

/// The watchdog: collects `+<id>` / `-<id>` lines (an id < 0 is a process
/// group, > 0 a single process) until EOF, then stops what is left.
///
/// # Safety
/// Runs in a forked child: only async-signal-safe calls, no allocation.
unsafe fn watchdog_main(fd: i32) -> ! {
    unsafe {
        // Its own group: a kill of kmatrix's group does not take it along,
        // and terminal signals do not reach it.
        libc::setpgid(0, 0);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE, libc::SIGQUIT] {
            libc::signal(sig, libc::SIG_IGN);
        }
        // Out of the way of 0-2 (which may have been closed when kmatrix
        // started, so that the socket got one of them).
        let moved = libc::fcntl(fd, libc::F_DUPFD, 10);
        let fd = if moved >= 0 {
            libc::close(fd);
            moved
        } else {
            fd
        };
        // Never hold the caller's stdout/stderr open (a test harness waits
        // for their EOF).
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for t in 0..3 {
                libc::dup2(null, t);
            }
            if null > 2 {
                libc::close(null);
            }
        }
        // Nothing else inherited stays open here (an outer make's jobserver,
        // a harness's pipes): only 0-2 (/dev/null) and our socket.
        if fd > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (fd - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (fd + 1) as u32, u32::MAX, 0u32);
        let mut ids = [0i32; 4096];
        let mut n = 0usize;
        let mut buf = [0u8; 512];
        let mut line = [0u8; 32];
        let mut len = 0usize;
        loop {
            let r = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            if r < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            if r <= 0 {
                break;
            }
            for &b in &buf[..r as usize] {
                if b != b'\n' {
                    if len < line.len() {
                        line[len] = b;
                        len += 1;
                    }
                    continue;
                }
                if let Some((add, id)) = parse_entry(&line[..len]) {
                    if add {
                        if n < ids.len() {
                            ids[n] = id;
                            n += 1;
                        }
                    } else if let Some(i) = ids[..n].iter().position(|&x| x == id) {
                        ids[i] = ids[n - 1];
                        n -= 1;
                    }
                }
                len = 0;
            }
        }
        for &id in &ids[..n] {
            libc::kill(id, libc::SIGTERM);
        }
        let mut waited = 0;
        while waited < WATCHDOG_GRACE_MS && ids[..n].iter().any(|&id| libc::kill(id, 0) == 0) {
            libc::usleep(50_000);
            waited += 50;
        }
        for &id in &ids[..n] {
            libc::kill(id, libc::SIGKILL);
        }
        libc::_exit(0)
    }
}

/// `+123`, `--456` → (add, id). No allocation (used by the watchdog).
fn parse_entry(l: &[u8]) -> Option<(bool, i32)> {
    let (&op, rest) = l.split_first()?;
    let (neg, digits) = match rest.split_first() {
        Some((b'-', d)) => (true, d),
        _ => (false, rest),
    };
    if digits.is_empty() || digits.len() > 10 {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(d - b'0');
    }
    let v = i32::try_from(v).ok()?;
    match op {
        b'+' => Some((true, if neg { -v } else { v })),
        b'-' => Some((false, if neg { -v } else { v })),
        _ => None,
    }
}

/// Formats `<op><id>\n` into `buf` without allocating; returns its length.
fn format_entry(buf: &mut [u8; 16], op: u8, id: i32) -> usize {
    let mut digits = [0u8; 11];
    let mut k = 0;
    let mut v = i64::from(id).unsigned_abs();
    loop {
        digits[k] = b'0' + (v % 10) as u8;
        k += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut n = 0;
    buf[n] = op;
    n += 1;
    if id < 0 {
        buf[n] = b'-';
        n += 1;
    }
    while k > 0 {
        k -= 1;
        buf[n] = digits[k];
        n += 1;
    }
    buf[n] = b'\n';
    n + 1
}

fn tell_watchdog(op: u8, id: i32) {
    let fd = WATCHDOG.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let mut buf = [0u8; 16];
    let n = format_entry(&mut buf, op, id);
    // SAFETY: one small message on our own socket. MSG_NOSIGNAL: no
    // SIGPIPE if the watchdog is gone; MSG_DONTWAIT: a stopped watchdog
    // (full queue) never blocks kmatrix.
    unsafe { libc::send(fd, buf.as_ptr().cast(), n, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
}

/// Lets the child (and everything it forks) inherit `fd`, e.g. a cache
/// entry's lock: the lock then lives until the last of them exits, not
/// only until kmatrix does.
pub fn inherit_fd(c: &mut Command, fd: i32) {
    // SAFETY: fcntl is async-signal-safe; it clears FD_CLOEXEC in the
    // child's copy of the fd table only.
    unsafe {
        c.pre_exec(move || {
            libc::fcntl(fd, libc::F_SETFD, 0);
            Ok(())
        });
    }
}

/// How a child relates to kmatrix's terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A process group of its own (builds, non-interactive emulators).
    Group,
    /// Stays in kmatrix's group so it can own the terminal (interactive
    /// QEMU, gdb); stopped as a single process.
    Foreground,
}

/// A running child and, in [`Mode::Group`], its whole process group.
/// Dropping it kills what is still running.
pub struct Group {
    child: Child,
    mode: Mode,
    program: String,
    reaped: Option<i32>,
}

/// The `NotFound` → missing-tool mapping, written once.
pub fn spawn_error(program: &str, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingTool { tool: program.to_string(), package: None },
        _ => Error::Io { context: format!("cannot start {program}"), source: e },
    }
}

impl Group {
    /// Spawns `c` (its stdio already chosen by the caller).
    pub fn spawn(mut c: Command, program: &str, mode: Mode) -> Result<Group> {
        if mode == Mode::Group {
            c.process_group(0);
        }
        // With a watchdog, a group leader gets SIGTERM when kmatrix dies
        // (time to clean up; the watchdog sends SIGKILL later); without one,
        // SIGKILL.
        let deathsig = if mode == Mode::Group && WATCHDOG.load(Ordering::Relaxed) >= 0 { libc::SIGTERM } else { libc::SIGKILL };
        // SAFETY: prctl is async-signal-safe; the closure touches only the child.
        unsafe {
            c.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, deathsig);
                Ok(())
            });
        }
        let child = c.spawn().map_err(|e| spawn_error(program, e))?;
        let g = Group { child, mode, program: program.to_string(), reaped: None };
        tell_watchdog(b'+', g.target());
        Ok(g)
    }

    pub fn spawn_spec(spec: &CommandSpec, stdout: Stdio, stderr: Stdio, stdin: Stdio, mode: Mode) -> Result<Group> {
        let mut c = spec.to_command();
        c.stdout(stdout).stderr(stderr).stdin(stdin);
        Group::spawn(c, &spec.program, mode)
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    fn target(&self) -> i32 {
        let pid = self.child.id() as i32;
        if self.mode == Mode::Group { -pid } else { pid }
    }

    /// Non-blocking: the exit code once the leader exited (128+signal for a
    /// signal). Stragglers of the group are killed then.
    pub fn try_wait(&mut self) -> Option<i32> {
        if self.reaped.is_none()
            && let Ok(Some(st)) = self.child.try_wait()
        {
            self.finish(code_of(st));
        }
        self.reaped
    }

    /// Like [`try_wait`](Self::try_wait), also returning the CPU seconds
    /// (user + sys) of the child and every descendant it waited for.
    pub fn try_wait_rusage(&mut self) -> Option<(i32, f64)> {
        if self.reaped.is_some() {
            return self.reaped.map(|c| (c, 0.0));
        }
        let pid = self.child.id() as i32;
        let mut status = 0;
        // SAFETY: wait4 on our own child; rusage is written by the kernel.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r != pid {
            return None;
        }
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
        self.finish(code);
        Some((code, secs(ru.ru_utime) + secs(ru.ru_stime)))
    }

    /// Waits for the leader, polling so that an interrupt is noticed (the
    /// group then gets SIGTERM and 3 s before SIGKILL).
    pub fn wait(&mut self) -> Result<i32> {
        self.wait_grace(Duration::from_secs(3))
    }

    /// [`wait`](Self::wait) with another grace period after an interrupt
    /// (scons needs time to record what it built).
    pub fn wait_grace(&mut self, grace: Duration) -> Result<i32> {
        loop {
            if let Some(c) = self.try_wait() {
                return Ok(c);
            }
            if is_interrupted() {
                self.stop(grace);
                return Err(Error::Interrupted);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(&mut self, code: i32) {
        self.reaped = Some(code);
        if self.mode == Mode::Group {
            // The leader is gone; what else is in its group goes too.
            // SAFETY: signalling our own (now leaderless) group.
            unsafe { libc::kill(self.target(), libc::SIGKILL) };
        }
        tell_watchdog(b'-', self.target());
    }

    /// SIGTERM, then SIGKILL after `grace`; returns the exit code.
    pub fn stop(&mut self, grace: Duration) -> Option<i32> {
        if let Some(c) = self.reaped {
            return Some(c);
        }
        // SAFETY: signalling our own child (group).
        unsafe { libc::kill(self.target(), libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < grace {
            if let Some(c) = self.try_wait() {
                return Some(c);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe { libc::kill(self.target(), libc::SIGKILL) };
        let st = self.child.wait().ok().map(code_of);
        if let Some(c) = st {
            self.finish(c);
        }
        st
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            self.stop(Duration::from_millis(500));
        }
    }
}

fn code_of(st: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

/// Longest line kept by [`for_each_line`]; the rest of a longer one is
/// dropped (a tool printing megabytes without a newline stays bounded).
pub const LINE_LIMIT: usize = 64 * 1024;

/// Calls `f` for every line of `r` (lossy UTF-8, at most [`LINE_LIMIT`]
/// bytes each) until EOF or until `f` returns false.
pub fn for_each_line(r: impl Read, mut f: impl FnMut(String) -> bool) {
    let mut r = std::io::BufReader::new(r);
    let mut line = Vec::new();
    loop {
        let buf = match std::io::BufRead::fill_buf(&mut r) {
            Ok([]) | Err(_) => break,
            Ok(b) => b,
        };
        let (chunk, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        let room = LINE_LIMIT.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = end.unwrap_or(buf.len());
        std::io::BufRead::consume(&mut r, used);
        if end.is_some() && !f(String::from_utf8_lossy(&std::mem::take(&mut line)).into_owned()) {
            return;
        }
    }
    if !line.is_empty() {
        f(String::from_utf8_lossy(&line).into_owned());
    }
}

/// At most this much of a captured stream is kept (its tail).
const CAPTURE_LIMIT: usize = 4 << 20;

/// Reads a stream to its end on a thread, keeping at most the last
/// `CAPTURE_LIMIT` bytes.
fn capture(r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut r = r;
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.len() > 2 * CAPTURE_LIMIT {
                out.drain(..out.len() - CAPTURE_LIMIT);
            }
        }
        out
    })
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == 0
    }
    pub fn text(&self) -> String {
        format!("{}{}", String::from_utf8_lossy(&self.stdout), String::from_utf8_lossy(&self.stderr))
    }
}

/// Runs a command to completion in its own group with stdout and stderr
/// captured (bounded); Ctrl-C stops it and returns `Interrupted`.
pub fn output(c: Command, program: &str) -> Result<Output> {
    let mut c = c;
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut g = Group::spawn(c, program, Mode::Group)?;
    let out = capture(g.child.stdout.take().expect("piped"));
    let err = capture(g.child.stderr.take().expect("piped"));
    let code = g.wait()?;
    Ok(Output { code, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() })
}

pub fn output_spec(spec: &CommandSpec) -> Result<Output> {
    output(spec.to_command(), &spec.program)
}

/// Runs a command with the terminal (stdio inherited), in kmatrix's
/// group; returns its exit code.
pub fn foreground(spec: &CommandSpec) -> Result<i32> {
    let mut g = Group::spawn_spec(spec, Stdio::inherit(), Stdio::inherit(), Stdio::inherit(), Mode::Foreground)?;
    // Ctrl-C reaches the foreground child too; it decides what it means
    // (gdb interrupts the target, QEMU passes it to the guest).
    loop {
        if let Some(c) = g.try_wait() {
            return Ok(c);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        for id in [1, -1, 42, -123456, i32::MAX, -i32::MAX] {
            let mut b = [0u8; 16];
            let n = format_entry(&mut b, b'+', id);
            assert_eq!(b[n - 1], b'\n');
            assert_eq!(parse_entry(&b[..n - 1]), Some((true, id)), "{id}");
            let n = format_entry(&mut b, b'-', id);
            assert_eq!(parse_entry(&b[..n - 1]), Some((false, id)));
        }
        assert_eq!(parse_entry(b"+"), None);
        assert_eq!(parse_entry(b"x12"), None);
        assert_eq!(parse_entry(b"+1a"), None);
    }

    #[test]
    fn a_group_is_killed_as_a_whole() {
        // sh starts a grandchild; stopping the group ends both.
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let spec = CommandSpec::new("sh").arg("-c").arg(format!("sleep 30 & echo $! > {}; wait", pidfile.display()));
        let mut g = Group::spawn_spec(&spec, Stdio::null(), Stdio::null(), Stdio::null(), Mode::Group).unwrap();
        let t = Instant::now();
        while !pidfile.is_file() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
            assert!(t.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(10));
        }
        let grandchild: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        g.stop(Duration::from_millis(500));
        std::thread::sleep(Duration::from_millis(100));
        // Gone, or a zombie waiting for its new parent to reap it.
        let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, r)| r.chars().next().unwrap_or('?'));
        assert!(state.is_none() || state == Some('Z'), "the grandchild survived its group: {stat}");
    }

    #[test]
    fn lines_are_bounded_and_split_anywhere() {
        let mut input = b"one\ntwo\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 3 * LINE_LIMIT));
        input.extend_from_slice(b"\nlast");
        let mut got = Vec::new();
        for_each_line(&input[..], |l| {
            got.push(l);
            true
        });
        assert_eq!(got.len(), 4);
        assert_eq!((got[0].as_str(), got[1].as_str(), got[3].as_str()), ("one", "two", "last"));
        assert_eq!(got[2].len(), LINE_LIMIT);
    }

    #[test]
    fn a_missing_program_is_a_missing_tool() {
        let e = output_spec(&CommandSpec::new("kmatrix-no-such-program")).unwrap_err();
        assert!(matches!(e, Error::MissingTool { .. }), "{e}");
    }
}
