//! The console judge: what the guest console showed, and the pure function
//! from that (and how the run stopped) to an [`Outcome`]. Nothing here
//! spawns or waits, so every verdict rule is unit-tested on plain bytes.
//!
//! Memory is bounded whatever the guest prints: a line is cut at
//! [`LINE_LIMIT`], a command's output at [`CMD_OUTPUT_LIMIT`], and only a
//! few warnings and as many command results as commands were asked for are
//! kept.

use std::time::{Duration, Instant};

use regex::Regex;
use serde::Serialize;

use crate::outcome::{Outcome, Verdict};

/// A longer console line is noise; the rest of it is dropped.
pub const LINE_LIMIT: usize = 64 * 1024;
/// Output kept per guest command.
pub const CMD_OUTPUT_LIMIT: usize = 1 << 20;
const WARNINGS_KEPT: usize = 20;

#[derive(Debug, Clone, Serialize)]
pub struct CmdResult {
    pub index: usize,
    pub status: i32,
    pub output: String,
    /// Bytes of output beyond [`CMD_OUTPUT_LIMIT`] that were dropped.
    #[serde(skip_serializing_if = "is_zero")]
    pub output_cut: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
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

/// What the console has shown so far.
pub struct Console {
    start: Instant,
    pats: Patterns,
    ok_marker: String,
    done_marker: String,
    snapshot_marker: String,
    begin_re: Regex,
    end_re: Regex,
    /// Bytes of the line being assembled (reads split lines anywhere).
    partial: Vec<u8>,
    max_cmds: usize,
    pub marker_at: Option<Duration>,
    pub done: bool,
    /// The init waits for the host to save the machine (`snapshot=1`).
    pub snapshot_ready: bool,
    pub panic_line: Option<String>,
    pub oops_line: Option<String>,
    pub warnings: Vec<String>,
    pub cmds: Vec<CmdResult>,
    current: Option<CmdResult>,
    pub uname: Option<String>,
    /// When a getty's `<host> login:` line came (a whole-OS root).
    pub login_at: Option<Duration>,
}

impl Console {
    /// `cmds`: how many guest commands were asked for (results beyond that
    /// are not kept).
    pub fn new(nonce: &str, start: Instant, cmds: usize) -> Self {
        let n = regex::escape(nonce);
        Console {
            start,
            pats: Patterns::new(),
            ok_marker: format!("KMATRIX-BOOT-OK nonce={nonce}"),
            done_marker: format!("KMATRIX-DONE nonce={nonce}"),
            snapshot_marker: format!("KMATRIX-SNAPSHOT-READY nonce={nonce}"),
            begin_re: Regex::new(&format!(r"KMATRIX-CMD-BEGIN (\d+) nonce={n}")).expect("valid"),
            end_re: Regex::new(&format!(r"KMATRIX-CMD-END (\d+) status=(-?\d+) nonce={n}")).expect("valid"),
            partial: Vec::new(),
            max_cmds: cmds,
            marker_at: None,
            done: false,
            snapshot_ready: false,
            panic_line: None,
            oops_line: None,
            warnings: Vec::new(),
            cmds: Vec::new(),
            current: None,
            uname: None,
            login_at: None,
        }
    }

    /// Console bytes as they arrive, split anywhere (even one byte a read).
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(i) = memchr(b'\n', rest) {
            self.push_partial(&rest[..i]);
            let line = std::mem::take(&mut self.partial);
            self.line(String::from_utf8_lossy(&line).trim_end_matches('\r'));
            self.partial = line;
            self.partial.clear();
            rest = &rest[i + 1..];
        }
        self.push_partial(rest);
    }

    fn push_partial(&mut self, b: &[u8]) {
        let room = LINE_LIMIT.saturating_sub(self.partial.len());
        self.partial.extend_from_slice(&b[..b.len().min(room)]);
    }

    /// The emulator is gone: a last line without its newline still counts.
    pub fn finish(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(String::from_utf8_lossy(&line).trim_end_matches('\r'));
        }
    }

    fn line(&mut self, l: &str) {
        if l.contains("KMATRIX-") {
            self.marker_line(l);
        } else if let Some(cur) = self.current.as_mut() {
            let room = CMD_OUTPUT_LIMIT.saturating_sub(cur.output.len());
            if l.len() < room {
                cur.output.push_str(l);
                cur.output.push('\n');
            } else {
                cur.output_cut += l.len() + 1;
            }
        }
        if self.login_at.is_none() && is_login_prompt(l) {
            self.login_at = Some(self.start.elapsed());
        }
        if self.panic_line.is_none() && self.pats.panic.is_match(l) {
            self.panic_line = Some(l.trim().to_string());
        } else if self.oops_line.is_none() && self.pats.oops.is_match(l) && !l.contains("KMATRIX-") {
            self.oops_line = Some(l.trim().to_string());
        } else if self.warnings.len() < WARNINGS_KEPT && self.pats.warning.is_match(l) {
            self.warnings.push(l.trim().to_string());
        }
    }

    fn marker_line(&mut self, l: &str) {
        if l.contains(&self.ok_marker) {
            if self.marker_at.is_none() {
                self.marker_at = Some(self.start.elapsed());
                self.uname = l.split_once("machine=").map(|(_, r)| r.to_string());
            }
        } else if l.contains(&self.done_marker) {
            self.done = true;
        } else if l.contains(&self.snapshot_marker) {
            self.snapshot_ready = true;
        } else if let Some(c) = self.begin_re.captures(l) {
            if self.cmds.len() < self.max_cmds {
                self.current = Some(CmdResult { index: c[1].parse().unwrap_or(0), status: -1, output: String::new(), output_cut: 0 });
            }
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
            // A marker of another boot (another nonce) is command output.
            if cur.output.len() + l.len() < CMD_OUTPUT_LIMIT {
                cur.output.push_str(l);
                cur.output.push('\n');
            }
        }
    }
}

/// agetty's `<hostname> login: ` (with `root (automatic login)` after it
/// under autologin).
fn is_login_prompt(l: &str) -> bool {
    l.split_once(" login: ").is_some_and(|(host, _)| !host.is_empty() && !host.contains(char::is_whitespace))
}

fn memchr(b: u8, s: &[u8]) -> Option<usize> {
    s.iter().position(|&x| x == b)
}

/// When a running boot is stopped (the stop policy).
#[derive(Debug, Clone, Copy)]
pub struct StopPolicy {
    /// After a panic line: a moment of trace, then the machine is stopped.
    pub panic_grace: Duration,
    /// After the done marker, if the machine does not power off by itself.
    pub done_grace: Duration,
    /// Overall limit.
    pub timeout: Duration,
    /// Console silent this long (None: never).
    pub silence: Option<Duration>,
}

impl StopPolicy {
    pub fn new(timeout: Duration, silence: Option<Duration>) -> Self {
        StopPolicy { panic_grace: Duration::from_millis(500), done_grace: Duration::from_secs(10), timeout, silence }
    }

    /// Whether to stop now, and why.
    pub fn check(&self, con: &Console, since_start: Duration, since_output: Duration, since_panic: Option<Duration>, since_done: Option<Duration>) -> Option<Stop> {
        if since_panic.is_some_and(|t| t > self.panic_grace) {
            return Some(Stop::AfterPanic);
        }
        if since_done.is_some_and(|t| t > self.done_grace) {
            return Some(Stop::DidNotPowerOff);
        }
        if since_start > self.timeout {
            return Some(Stop::Timeout(format!("no result within {}s", self.timeout.as_secs())));
        }
        if let Some(n) = self.silence
            && since_output > n
        {
            return Some(Stop::Timeout(format!("console silent for {}s", n.as_secs())));
        }
        let _ = con;
        None
    }
}

/// How the run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The emulator exited by itself.
    Exited,
    AfterPanic,
    DidNotPowerOff,
    Timeout(String),
}

/// The verdict, from what the console showed and how the run ended. The
/// emulator's exit status is only ever part of a reason, never a pass.
pub fn judge(con: &Console, stop: &Stop, exit_status: Option<i32>, emu_error: Option<&str>) -> Outcome {
    if let Some(l) = &con.panic_line {
        return Outcome::new(Verdict::Panic, l.clone());
    }
    if let Some(l) = &con.oops_line {
        return Outcome::new(Verdict::Oops, l.clone());
    }
    if let Stop::Timeout(r) = stop {
        return Outcome::new(Verdict::Timeout, if con.marker_at.is_some() { format!("{r} (after the boot marker)") } else { r.clone() });
    }
    if !con.done {
        let reason = match con.marker_at {
            Some(_) => format!("the init did not finish (emulator exit status {exit_status:?})"),
            None => format!(
                "no boot marker; emulator exited with status {}{}",
                exit_status.map(|c| c.to_string()).unwrap_or_else(|| "unknown".into()),
                emu_error.map(|e| format!(" ({e})")).unwrap_or_default()
            ),
        };
        return Outcome::new(Verdict::BootFail, reason);
    }
    let failed: Vec<usize> = con.cmds.iter().filter(|c| c.status != 0).map(|c| c.index).collect();
    if failed.is_empty() { Outcome::pass() } else { Outcome::new(Verdict::CmdFail, format!("command(s) {failed:?} exited non-zero")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console(text: &[u8], chunk: usize) -> Console {
        let mut c = Console::new("abc", Instant::now(), 4);
        for part in text.chunks(chunk) {
            c.feed(part);
        }
        c.finish();
        c
    }

    const GOOD: &[u8] = b"[ 0.0] Linux version 6.1\r\nKMATRIX-BOOT-OK nonce=abc machine=x86_64 release=6.1\nKMATRIX-CMD-BEGIN 0 nonce=abc\nhi\n\nKMATRIX-CMD-END 0 status=0 nonce=abc\nKMATRIX-DONE nonce=abc\n";

    #[test]
    fn markers_split_across_reads_are_found() {
        for chunk in [1, 2, 3, 7, 4096] {
            let c = console(GOOD, chunk);
            assert_eq!(judge(&c, &Stop::Exited, Some(0), None), Outcome::pass(), "chunk {chunk}");
            assert_eq!(c.cmds[0].output, "hi\n");
            assert_eq!(c.uname.as_deref(), Some("x86_64 release=6.1"));
        }
    }

    #[test]
    fn a_last_line_without_newline_counts() {
        let c = console(b"KMATRIX-BOOT-OK nonce=abc machine=x\nKMATRIX-DONE nonce=abc", 5);
        assert!(c.done);
    }

    #[test]
    fn wrong_nonce_never_passes() {
        let c = console(b"KMATRIX-BOOT-OK nonce=old\nKMATRIX-DONE nonce=old\n", 4096);
        assert_eq!(judge(&c, &Stop::Exited, Some(0), None).verdict, Verdict::BootFail);
    }

    #[test]
    fn panic_beats_done_and_timeout() {
        let mut t = GOOD.to_vec();
        t.extend_from_slice(b"[ 2.0] Kernel panic - not syncing: Attempted to kill init!\n");
        let c = console(&t, 4096);
        let o = judge(&c, &Stop::Timeout("x".into()), None, None);
        assert_eq!(o, Outcome::new(Verdict::Panic, "[ 2.0] Kernel panic - not syncing: Attempted to kill init!"));
    }

    #[test]
    fn a_flood_without_done_is_a_timeout_and_memory_stays_flat() {
        let mut c = Console::new("abc", Instant::now(), 1);
        c.feed(b"KMATRIX-BOOT-OK nonce=abc machine=x\nKMATRIX-CMD-BEGIN 0 nonce=abc\n");
        let line = [b'x'; 1000];
        for _ in 0..4000 {
            c.feed(&line);
            c.feed(b"\n");
        }
        // One endless line as well.
        for _ in 0..200 {
            c.feed(&line);
        }
        assert!(c.partial.len() <= LINE_LIMIT);
        let o = judge(&c, &Stop::Timeout("no result within 5s".into()), None, None);
        assert_eq!(o.verdict, Verdict::Timeout);
        assert!(o.detail.unwrap().contains("after the boot marker"));
        let cur = c.current.as_ref().unwrap();
        assert!(cur.output.len() <= CMD_OUTPUT_LIMIT && cur.output_cut > 0);
    }

    #[test]
    fn exit_without_marker_names_the_emulator_error() {
        let c = console(b"booting\n", 4096);
        let o = judge(&c, &Stop::Exited, Some(1), Some("qemu-system-x86_64: -kernel x: No such file"));
        assert_eq!(o.verdict, Verdict::BootFail);
        assert!(o.detail.unwrap().contains("No such file"));
    }

    #[test]
    fn failed_command_is_cmd_fail() {
        let c = console(b"KMATRIX-BOOT-OK nonce=abc machine=x\nKMATRIX-CMD-BEGIN 0 nonce=abc\nKMATRIX-CMD-END 0 status=3 nonce=abc\nKMATRIX-DONE nonce=abc\n", 4096);
        assert_eq!(judge(&c, &Stop::Exited, Some(0), None).verdict, Verdict::CmdFail);
    }

    #[test]
    fn stop_policy_order() {
        let p = StopPolicy::new(Duration::from_secs(10), Some(Duration::from_secs(2)));
        let c = Console::new("abc", Instant::now(), 0);
        let s = Duration::from_secs;
        assert_eq!(p.check(&c, s(1), s(0), None, None), None);
        assert_eq!(p.check(&c, s(1), s(0), Some(s(1)), None), Some(Stop::AfterPanic));
        assert_eq!(p.check(&c, s(20), s(0), None, Some(s(11))), Some(Stop::DidNotPowerOff));
        assert!(matches!(p.check(&c, s(11), s(0), None, None), Some(Stop::Timeout(r)) if r.contains("within 10s")));
        assert!(matches!(p.check(&c, s(5), s(3), None, None), Some(Stop::Timeout(r)) if r.contains("silent")));
    }
}
