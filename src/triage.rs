//! Triage of a panic or oops: the call trace of a console log decoded to
//! file:line by the kernel's own `scripts/decode_stacktrace.sh`.
//!
//! Only the relevant part of the log goes to the script (see [`excerpt`]):
//! from the first fatal report (`Kernel panic`, `Oops`, `BUG:`, `Unable to
//! handle kernel`...) or, when there is none, the first `Call trace:`, at
//! most [`EXCERPT_LINES`] lines, without kmatrix's and QEMU's own lines.
//!
//! The script picks its binutils from the environment, as kbuild does
//! (both the 6.1 and the 6.12 script): with `LLVM` unset, `addr2line` (and,
//! from 6.12 on, `nm`) are `${CROSS_COMPILE}addr2line`; with `LLVM=1`
//! `llvm-addr2line`, with `LLVM=-14` `llvm-addr2line-14`, with
//! `LLVM=/opt/llvm/bin/` `/opt/llvm/bin/llvm-addr2line`. (`UTIL_PREFIX` and
//! `UTIL_SUFFIX` are computed by the script, not read from the
//! environment.) The 6.1 script runs the host's plain `nm` whatever the
//! toolchain. [`Tools::new`] mirrors that from the make variables of the
//! build, and every tool is looked up before anything runs: a missing one
//! is [`Error::MissingTool`] with its Debian package, never a trace that
//! silently stays undecoded.
//!
//! The console is guest output, and the script splices the words of a
//! trace into `awk` programs and bash arithmetic; so characters that could
//! leave a quoted string or start an expansion (`$`, `` ` ``, `"`, `\`) and
//! control characters are removed before it sees a line, and it runs in an
//! empty directory of its own (which is also its `TMPDIR`). No shell ever
//! sees a path or a variable: bash gets argv words.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::process::{Group, Mode};

/// Lines of the console log given to the script, at most.
pub const EXCERPT_LINES: usize = 200;
/// A longer console line is cut here (printk's own limit is 1024).
pub const EXCERPT_LINE_CHARS: usize = 1024;
/// Decoded output kept, at most (the rest is counted and said).
pub const OUTPUT_LIMIT: usize = 256 * 1024;
/// Default bound of one decode: the script runs `nm` over vmlinux once per
/// distinct function and `addr2line -i` once per frame; a DWARF vmlinux
/// takes well under a second for each.
pub const TIMEOUT: Duration = Duration::from_secs(120);
/// Lines searched back from a `Call trace:` for the report's first line.
const BACK_CONTEXT: usize = 40;
/// What the script said on stderr, kept for an error message.
const STDERR_LIMIT: usize = 16 * 1024;

/// Decodes the call trace of a console log with
/// `bash <source>/scripts/decode_stacktrace.sh <vmlinux> <source>`, the tools
/// chosen from the build's `make_vars` (see [`crate::recipe::make_vars`]).
/// `None` when the log has no trace. Bounded by [`TIMEOUT`]; see
/// [`decode_with`].
pub fn decode(source_dir: &Path, vmlinux: &Path, console_log: &Path, make_vars: &[(String, String)]) -> Result<Option<String>> {
    decode_with(source_dir, vmlinux, console_log, make_vars, TIMEOUT)
}

/// [`decode`] with another time bound. When the script is still running at
/// `timeout`, its whole process group is stopped and what it had printed
/// is returned with a last `# kmatrix:` line saying so. Ctrl-C stops it
/// and returns [`Error::Interrupted`].
pub fn decode_with(source_dir: &Path, vmlinux: &Path, console_log: &Path, make_vars: &[(String, String)], timeout: Duration) -> Result<Option<String>> {
    let log = std::fs::File::open(console_log).map_err(Error::io(format!("cannot open {}", console_log.display())))?;
    let Some(lines) = excerpt(log) else { return Ok(None) };

    let script = source_dir.join("scripts/decode_stacktrace.sh");
    let text = std::fs::read_to_string(&script)
        .map_err(|e| Error::Infra(format!("cannot read {} ({e}): is {} a kernel tree?", script.display(), source_dir.display())))?;
    if !vmlinux.is_file() {
        return Err(Error::Infra(format!("{} not found: the trace needs the vmlinux of the kernel that printed it", vmlinux.display())));
    }
    let tools = Tools::new(&text, make_vars);
    let bash = tools.check()?;
    // The script strips this prefix from addr2line's paths; kbuild records
    // the real path of the tree (its Makefile uses $(realpath)).
    let base = std::fs::canonicalize(source_dir).unwrap_or_else(|_| source_dir.to_path_buf());
    let scratch = tempfile::Builder::new().prefix("kmatrix-triage").tempdir().map_err(Error::io("cannot create a scratch directory"))?;

    let mut c = Command::new(bash);
    c.arg(&script).arg(vmlinux).arg(&base).current_dir(scratch.path());
    for k in ["ARCH", "CROSS_COMPILE", "LLVM", "AFLAGS", "UTIL_PREFIX", "UTIL_SUFFIX", "DEBUGINFOD_URLS"] {
        c.env_remove(k);
    }
    c.envs(tools.env.iter().map(|(k, v)| (k, v))).env("LC_ALL", "C").env("TMPDIR", scratch.path());
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut input = String::new();
    for l in &lines {
        if tools.disassemble {
            input.push_str(l);
        } else {
            input.push_str(&l.replace("Code:", "Code (not disassembled):"));
        }
        input.push('\n');
    }
    run(c, input, timeout).map(Some)
}

/// The tools the script will run, from its text (6.1 or 6.12) and the
/// build's make variables, and the environment that makes it pick them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    /// `ARCH`, `CROSS_COMPILE`, `LLVM` as the build had them (also read by
    /// `scripts/decodecode` for `Code:` lines).
    pub env: Vec<(String, String)>,
    pub addr2line: String,
    pub nm: String,
    /// Whether `scripts/decodecode` can disassemble `Code:` lines: it runs
    /// `${CROSS_COMPILE}as` and `objdump` whatever `LLVM` says, so an LLVM
    /// build without `CROSS_COMPILE` for a foreign arch cannot. Otherwise
    /// they are passed through as `Code (not disassembled):`.
    pub disassemble: bool,
    /// Program → Debian package (None: not from a package kmatrix knows).
    pub packages: Vec<(String, Option<String>)>,
}

impl Tools {
    pub fn new(script: &str, make_vars: &[(String, String)]) -> Tools {
        // The last assignment wins, as on make's command line.
        let var = |k: &str| make_vars.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let mut env = Vec::new();
        for k in ["ARCH", "CROSS_COMPILE", "LLVM"] {
            if let Some(v) = var(k) {
                env.push((k.to_string(), v));
            }
        }
        let cross = var("CROSS_COMPILE").unwrap_or_default();
        let llvm = var("LLVM").filter(|v| !v.is_empty());
        // The script's own UTIL_PREFIX/UTIL_SUFFIX logic.
        let (prefix, suffix) = match &llvm {
            None => (cross.clone(), String::new()),
            Some(l) if l.ends_with('/') => (format!("{l}llvm-"), String::new()),
            Some(l) if l.starts_with('-') => ("llvm-".to_string(), l.clone()),
            Some(_) => ("llvm-".to_string(), String::new()),
        };
        let addr2line = format!("{prefix}addr2line{suffix}");
        // 6.12 has NM=${UTIL_PREFIX}nm${UTIL_SUFFIX}; 6.1 runs plain `nm`.
        let nm = if script.contains("${UTIL_PREFIX}nm") { format!("{prefix}nm{suffix}") } else { "nm".to_string() };
        let package = |tool: &str| -> Option<String> {
            if tool == "nm" || tool == "addr2line" {
                return Some("binutils".into());
            }
            match &llvm {
                Some(l) if l.ends_with('/') => None,
                Some(l) if l.starts_with('-') => Some(format!("llvm{l}")),
                Some(_) => Some("llvm".into()),
                // Debian's gcc cross packages pull in binutils-<triple>.
                None => {
                    let triple = cross.strip_suffix('-').unwrap_or(&cross);
                    (!triple.is_empty() && !triple.contains('/')).then(|| format!("binutils-{triple}"))
                }
            }
        };
        let packages = vec![
            ("bash".to_string(), Some("bash".to_string())),
            ("awk".to_string(), Some("mawk".to_string())),
            (addr2line.clone(), package(&addr2line)),
            (nm.clone(), package(&nm)),
        ];
        let native = var("ARCH").is_none_or(|a| is_host_arch(&a));
        let disassemble = (!cross.is_empty() || native) && ["as", "objdump", "strip"].iter().all(|t| crate::host::which(&format!("{cross}{t}")).is_some());
        Tools { env, addr2line, nm, disassemble, packages }
    }

    /// Every tool on PATH, or the first missing one as a typed error; the
    /// path of bash.
    pub fn check(&self) -> Result<PathBuf> {
        for (tool, package) in &self.packages {
            if crate::host::which(tool).is_none() {
                return Err(Error::MissingTool { tool: tool.clone(), package: package.clone() });
            }
        }
        crate::host::which("bash").ok_or_else(|| Error::MissingTool { tool: "bash".into(), package: Some("bash".into()) })
    }
}

/// Whether kbuild's `ARCH=` names the machine kmatrix runs on.
fn is_host_arch(kernel_arch: &str) -> bool {
    let host: &[&str] = match std::env::consts::ARCH {
        "x86_64" | "x86" => &["x86", "x86_64", "i386"],
        "aarch64" => &["arm64"],
        "arm" => &["arm"],
        "riscv64" => &["riscv"],
        "powerpc64" => &["powerpc"],
        "mips" | "mips64" => &["mips"],
        "loongarch64" => &["loongarch"],
        "s390x" => &["s390"],
        _ => &[],
    };
    host.contains(&kernel_arch)
}

/// Runs the script with `input` on stdin, bounded in time and output.
fn run(c: Command, input: String, timeout: Duration) -> Result<String> {
    let mut g = Group::spawn(c, "bash", Mode::Group)?;
    let mut stdin = g.child_mut().stdin.take().expect("piped");
    // A thread: the excerpt may be larger than a pipe's buffer. A write
    // error only means the script is gone; its exit says why.
    std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = read_bounded(g.child_mut().stdout.take().expect("piped"), OUTPUT_LIMIT, false);
    let err = read_bounded(g.child_mut().stderr.take().expect("piped"), STDERR_LIMIT, true);
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Some(c) = g.try_wait() {
            break Some(c);
        }
        if crate::process::is_interrupted() {
            g.stop(Duration::from_secs(1));
            return Err(Error::Interrupted);
        }
        if Instant::now() >= deadline {
            g.stop(Duration::from_secs(1));
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The group is gone, so the pipes are at EOF; still, never wait on a
    // descendant that left the group and kept them open.
    let wait = |rx: mpsc::Receiver<(Vec<u8>, usize)>| rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
    let (stdout, cut) = wait(out);
    let (stderr, _) = wait(err);
    // The script ends every decoded frame with "$symbol $module": a
    // trailing blank when there is no module.
    let mut text: String = String::from_utf8_lossy(&stdout).lines().map(|l| l.trim_end().to_string() + "\n").collect();
    let stderr = String::from_utf8_lossy(&stderr);
    match code {
        Some(0) => {}
        Some(c) if text.trim().is_empty() => {
            return Err(Error::Infra(format!("decode_stacktrace.sh failed (exit status {c}): {}", stderr.trim())));
        }
        Some(c) => text.push_str(&format!("\n# kmatrix: decode_stacktrace.sh exited with status {c}: {}\n", stderr.trim())),
        None => text.push_str(&format!("\n# kmatrix: decode_stacktrace.sh stopped after {} s; the rest of the trace is not decoded\n", timeout.as_secs())),
    }
    if cut > 0 {
        text.push_str(&format!("\n# kmatrix: decoded output cut at {OUTPUT_LIMIT} bytes ({cut} more dropped)\n"));
    }
    Ok(text)
}

/// Reads a stream to its end on a thread, keeping `limit` bytes (the first,
/// or the last with `tail`) and the count of the others.
fn read_bounded(mut r: impl Read + Send + 'static, limit: usize, tail: bool) -> mpsc::Receiver<(Vec<u8>, usize)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut kept, mut dropped) = (Vec::new(), 0usize);
        let mut buf = [0u8; 8192];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > limit {
                let over = kept.len() - limit;
                dropped += over;
                if tail {
                    kept.drain(..over);
                } else {
                    kept.truncate(limit);
                }
            }
        }
        let _ = tx.send((kept, dropped));
    });
    rx
}

/// Starts of a fatal report (the console judge's panic and oops patterns).
fn is_fatal(l: &str) -> bool {
    const FATAL: &[&str] = &[
        "Kernel panic - not syncing",
        "PANIC: double fault",
        "Oops: ",
        "Oops - ",
        "kernel BUG at",
        "BUG: ",
        "Unable to handle kernel",
        "general protection fault",
        "Internal error: ",
        "Unhandled fault: ",
    ];
    FATAL.iter().any(|p| l.contains(p))
}

fn is_trace(l: &str) -> bool {
    l.contains("Call trace:") || l.contains("Call Trace:")
}

/// The first line of a non-fatal report (a warning, a hung task...), when
/// it is found a few lines before its `Call trace:`.
fn is_report_start(l: &str) -> bool {
    l.contains("[ cut here ]") || l.contains("WARNING: ") || l.contains("INFO: ")
}

/// kmatrix's own lines (the emulator command heading the log, its notes),
/// boot markers and QEMU's messages.
fn is_noise(index: usize, raw: &str) -> bool {
    let l = raw.trim_start();
    (index == 0 && l.starts_with("# ")) || l.starts_with("# kmatrix") || l.contains("KMATRIX-") || l.starts_with("qemu-system-")
}

/// A console line as the script may see it: no escape sequences or
/// control characters, none of `$ ` " \`, at most [`EXCERPT_LINE_CHARS`].
pub fn clean_line(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(EXCERPT_LINE_CHARS));
    let mut chars = raw.chars().peekable();
    let mut n = 0;
    while let Some(ch) = chars.next() {
        if n >= EXCERPT_LINE_CHARS {
            break;
        }
        match ch {
            // ESC [ params final-byte (colours), or ESC and one byte.
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\t' => {
                out.push(' ');
                n += 1;
            }
            '$' | '`' | '"' | '\\' => {}
            c if c.is_control() => {}
            c => {
                out.push(c);
                n += 1;
            }
        }
    }
    out.trim_end().to_string()
}

/// The part of a console log the decoder gets, cleaned (see
/// [`clean_line`]), or None when the log has no trace.
///
/// It starts at the first fatal report (`Kernel panic - not syncing`,
/// `Oops`, `BUG:`, `kernel BUG at`, `Unable to handle kernel`, `general
/// protection fault`, `Internal error:`...) and ends after its `---[ end
/// Kernel panic` line. Without a fatal report, it is the first `Call
/// trace:` (a warning, a hung task), from the report's first line when
/// that is a few lines above (`[ cut here ]`, `WARNING:`, `INFO:`), to
/// its `---[ end trace`. At most [`EXCERPT_LINES`] lines either way.
pub fn excerpt(log: impl Read) -> Option<Vec<String>> {
    let mut back: VecDeque<String> = VecDeque::with_capacity(BACK_CONTEXT);
    let mut fallback: Option<Vec<String>> = None;
    let mut fallback_open = false;
    let mut fatal: Option<Vec<String>> = None;
    let mut index = 0;
    crate::process::for_each_line(log, |raw| {
        let i = index;
        index += 1;
        if is_noise(i, &raw) {
            return true;
        }
        let l = clean_line(&raw);
        if let Some(f) = fatal.as_mut() {
            let end = l.contains("---[ end Kernel panic");
            f.push(l);
            return !(end || f.len() >= EXCERPT_LINES);
        }
        if is_fatal(&l) {
            fatal = Some(vec![l]);
            return true;
        }
        if fallback_open {
            let f = fallback.as_mut().expect("open");
            let end = l.contains("---[ end trace");
            f.push(l.clone());
            fallback_open = !(end || f.len() >= EXCERPT_LINES);
        } else if fallback.is_none() && is_trace(&l) {
            // The nearest report line, and the ones right above it (a
            // `[ cut here ]` above its `WARNING:`).
            let mut from = back.iter().rposition(|b| is_report_start(b)).unwrap_or(back.len());
            while from > 0 && from < back.len() && is_report_start(&back[from - 1]) {
                from -= 1;
            }
            let mut f: Vec<String> = back.iter().skip(from).cloned().collect();
            f.push(l.clone());
            fallback_open = f.len() < EXCERPT_LINES;
            fallback = Some(f);
        }
        if back.len() == BACK_CONTEXT {
            back.pop_front();
        }
        back.push_back(l);
        true
    });
    fatal.or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PANIC: &str = "\
# qemu-system-aarch64 -M virt -append 'console=ttyAMA0 rdinit=/does-not-exist'
[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x000f0510]
[    0.000000] Linux version 6.1.0 (kmatrix@kmatrix)
[    0.412000] Run /does-not-exist as init process
[    0.413000] Kernel panic - not syncing: No working init found.  Try passing init= option to kernel. See Linux Documentation/admin-guide/init.rst for guidance.\r
[    0.413100] CPU: 0 PID: 1 Comm: swapper/0 Not tainted 6.1.0 #1
[    0.413200] Hardware name: linux,dummy-virt (DT)
[    0.413300] Call trace:
[    0.413400]  dump_backtrace.part.0+0xe0/0xf0
[    0.413500]  show_stack+0x18/0x40
[    0.413600]  dump_stack_lvl+0x68/0x84
[    0.413700]  panic+0x170/0x328
[    0.413800]  kernel_init+0xf4/0x12c
[    0.413900]  ret_from_fork+0x10/0x20
[    0.414000] ---[ end Kernel panic - not syncing: No working init found. ]---
qemu-system-aarch64: terminating on signal 15 from pid 1234

# kmatrix: emulator exit status Some(0) after 2.00s
";

    fn ex(s: &str) -> Option<Vec<String>> {
        excerpt(s.as_bytes())
    }

    #[test]
    fn a_panic_is_cut_from_its_first_line_to_its_end() {
        let e = ex(PANIC).unwrap();
        assert!(e[0].ends_with("Kernel panic - not syncing: No working init found.  Try passing init= option to kernel. See Linux Documentation/admin-guide/init.rst for guidance."), "{e:?}");
        assert_eq!(e[7], "[    0.413700]  panic+0x170/0x328");
        assert!(e.last().unwrap().contains("---[ end Kernel panic"));
        assert_eq!(e.len(), 11);
        assert!(e.iter().all(|l| !l.contains("qemu-system") && !l.contains("kmatrix") && !l.contains('\r')));
    }

    #[test]
    fn no_trace_is_none() {
        let log = "# qemu-system-x86_64 -append 'oops=panic BUG:'\n[    0.1] Linux version 6.1.0\nKMATRIX-BOOT-OK nonce=1 Kernel panic - not syncing\n# kmatrix: emulator exit status Some(0)\n";
        assert_eq!(ex(log), None);
        assert_eq!(ex(""), None);
    }

    #[test]
    fn the_first_fatal_report_wins_over_an_earlier_warning() {
        let log = "\
[    1.0] ------------[ cut here ]------------
[    1.0] WARNING: CPU: 0 PID: 1 at lib/foo.c:12 foo+0x10/0x20
[    1.0] Call trace:
[    1.0]  foo+0x10/0x20
[    1.0] ---[ end trace 0000000000000000 ]---
[    2.0] Unable to handle kernel NULL pointer dereference at virtual address 0000000000000000
[    2.0] Internal error: Oops: 0000000096000005 [#1] PREEMPT SMP
[    2.0] pc : bar+0x4/0x8
[    2.0] Call trace:
[    2.0]  bar+0x4/0x8
[    2.0] ---[ end trace 0000000000000000 ]---
[    2.0] Kernel panic - not syncing: Oops: Fatal exception
[    2.0] ---[ end Kernel panic - not syncing: Oops: Fatal exception ]---
[    3.0] after the end
";
        let e = ex(log).unwrap();
        assert!(e[0].contains("Unable to handle kernel"), "{e:?}");
        assert_eq!(e.len(), 8);
        assert!(e.last().unwrap().contains("---[ end Kernel panic"));
    }

    #[test]
    fn a_lone_warning_starts_at_its_cut_here_line() {
        let mut log = String::from(
            "[    0.5] unrelated\n[    1.0] ------------[ cut here ]------------\n[    1.0] WARNING: CPU: 0 PID: 1 at lib/foo.c:12 foo+0x10/0x20\n[    1.0] Modules linked in:\n[    1.0] Call trace:\n[    1.0]  foo+0x10/0x20\n[    1.0] ---[ end trace 0 ]---\n",
        );
        log.push_str("[    5.0] Call Trace:\n[    5.0]  second+0x1/0x2\n");
        let e = ex(&log).unwrap();
        assert_eq!(e.len(), 6, "{e:?}");
        assert!(e[0].contains("cut here"));
        assert!(e[5].contains("---[ end trace"));
        // A trace with no report line above starts at itself.
        let e = ex("[ 1.0] x\n[ 1.0] Call Trace:\n[ 1.0]  a+0x1/0x2\n").unwrap();
        assert_eq!(e, ["[ 1.0] Call Trace:", "[ 1.0]  a+0x1/0x2"]);
    }

    #[test]
    fn an_endless_trace_is_bounded() {
        let mut log = String::from("[ 0.1] BUG: soft lockup - CPU#0 stuck for 22s!\n");
        for i in 0..1000 {
            log.push_str(&format!("[ 0.1]  f{i}+0x1/0x2\n"));
        }
        let e = ex(&log).unwrap();
        assert_eq!(e.len(), EXCERPT_LINES);
        assert_eq!(e[EXCERPT_LINES - 1], format!("[ 0.1]  f{}+0x1/0x2", EXCERPT_LINES - 2));
        let e = ex(&format!("Call trace:\n{log}")).unwrap();
        assert!(e[0].contains("BUG: soft lockup"), "a fatal report after a trace still wins");
    }

    #[test]
    fn lines_are_cleaned_of_what_a_shell_or_awk_could_act_on() {
        assert_eq!(clean_line("\u{1b}[31m[ 1.0]\u{1b}[0m  a$(touch x)+0x1/0x2\r"), "[ 1.0]  a(touch x)+0x1/0x2");
        assert_eq!(clean_line("x\"||system(\"id\")||\" `id` \\n\ty\u{7}"), "x||system(id)|| id n y");
        let long = "a".repeat(3 * EXCERPT_LINE_CHARS);
        assert_eq!(clean_line(&long).len(), EXCERPT_LINE_CHARS);
        assert_eq!(clean_line("ünïcode ok"), "ünïcode ok");
    }

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const SCRIPT_6_1: &str = "READELF=${UTIL_PREFIX}readelf${UTIL_SUFFIX}\nADDR2LINE=${UTIL_PREFIX}addr2line${UTIL_SUFFIX}\n";
    const SCRIPT_6_12: &str =
        "READELF=${UTIL_PREFIX}readelf${UTIL_SUFFIX}\nADDR2LINE=${UTIL_PREFIX}addr2line${UTIL_SUFFIX}\nNM=${UTIL_PREFIX}nm${UTIL_SUFFIX}\n";

    #[test]
    fn gcc_builds_use_the_cross_binutils() {
        let v = vars(&[("ARCH", "arm64"), ("CROSS_COMPILE", "aarch64-linux-gnu-"), ("CC", "ccache aarch64-linux-gnu-gcc")]);
        let t = Tools::new(SCRIPT_6_12, &v);
        assert_eq!(t.addr2line, "aarch64-linux-gnu-addr2line");
        assert_eq!(t.nm, "aarch64-linux-gnu-nm");
        assert_eq!(t.env, vars(&[("ARCH", "arm64"), ("CROSS_COMPILE", "aarch64-linux-gnu-")]));
        assert!(t.packages.contains(&("aarch64-linux-gnu-addr2line".into(), Some("binutils-aarch64-linux-gnu".into()))));
        // 6.1 runs the host's nm.
        let t = Tools::new(SCRIPT_6_1, &v);
        assert_eq!((t.addr2line.as_str(), t.nm.as_str()), ("aarch64-linux-gnu-addr2line", "nm"));
        assert!(t.packages.contains(&("nm".into(), Some("binutils".into()))));
        // x86_64 with the host gcc: no prefix.
        let t = Tools::new(SCRIPT_6_12, &vars(&[("ARCH", "x86")]));
        assert_eq!((t.addr2line.as_str(), t.nm.as_str()), ("addr2line", "nm"));
        assert!(t.packages.contains(&("addr2line".into(), Some("binutils".into()))));
    }

    #[test]
    fn llvm_builds_use_llvm_binutils_like_the_script() {
        let t = Tools::new(SCRIPT_6_12, &vars(&[("ARCH", "arm64"), ("LLVM", "1"), ("CC", "ccache clang")]));
        assert_eq!((t.addr2line.as_str(), t.nm.as_str()), ("llvm-addr2line", "llvm-nm"));
        assert_eq!(t.env, vars(&[("ARCH", "arm64"), ("LLVM", "1")]));
        assert!(t.packages.contains(&("llvm-addr2line".into(), Some("llvm".into()))));
        let t = Tools::new(SCRIPT_6_12, &vars(&[("LLVM", "-14"), ("CROSS_COMPILE", "aarch64-linux-gnu-")]));
        assert_eq!((t.addr2line.as_str(), t.nm.as_str()), ("llvm-addr2line-14", "llvm-nm-14"));
        assert!(t.packages.contains(&("llvm-addr2line-14".into(), Some("llvm-14".into()))));
        let t = Tools::new(SCRIPT_6_1, &vars(&[("LLVM", "/opt/llvm/bin/")]));
        assert_eq!((t.addr2line.as_str(), t.nm.as_str()), ("/opt/llvm/bin/llvm-addr2line", "nm"));
        assert!(t.packages.contains(&("/opt/llvm/bin/llvm-addr2line".into(), None)));
        // The last assignment wins; an empty LLVM is no LLVM.
        let t = Tools::new(SCRIPT_6_12, &vars(&[("LLVM", "1"), ("LLVM", ""), ("CROSS_COMPILE", "mips64-linux-gnuabi64-")]));
        assert_eq!(t.addr2line, "mips64-linux-gnuabi64-addr2line");
    }

    #[test]
    fn code_lines_are_disassembled_only_with_a_matching_assembler() {
        let t = Tools::new(SCRIPT_6_12, &vars(&[("ARCH", "arm64"), ("LLVM", "1")]));
        assert_eq!(t.disassemble, is_host_arch("arm64") && crate::host::which("objdump").is_some());
        let t = Tools::new(SCRIPT_6_12, &vars(&[("ARCH", "arm64"), ("CROSS_COMPILE", "kmatrix-nonexistent-")]));
        assert!(!t.disassemble);
        assert!(is_host_arch(if cfg!(target_arch = "x86_64") { "x86" } else { "" }) == cfg!(target_arch = "x86_64"));
    }

    #[test]
    fn a_missing_addr2line_is_a_missing_tool_with_its_package() {
        let t = Tools::new(SCRIPT_6_12, &vars(&[("CROSS_COMPILE", "kmatrix-nonexistent-linux-gnu-")]));
        match t.check() {
            Err(Error::MissingTool { tool, package }) => {
                assert_eq!(tool, "kmatrix-nonexistent-linux-gnu-addr2line");
                assert_eq!(package.as_deref(), Some("binutils-kmatrix-nonexistent-linux-gnu"));
            }
            other => panic!("{other:?}"),
        }
    }

    /// A fake kernel tree whose script echoes its input, args and tool env.
    fn fake_tree(body: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("scripts")).unwrap();
        std::fs::write(d.path().join("scripts/decode_stacktrace.sh"), body).unwrap();
        std::fs::write(d.path().join("vmlinux"), "").unwrap();
        std::fs::write(d.path().join("console.log"), PANIC).unwrap();
        d
    }

    #[test]
    fn the_script_gets_argv_env_and_the_excerpt_on_stdin() {
        if crate::host::which("addr2line").is_none() || crate::host::which("nm").is_none() {
            return;
        }
        let d = fake_tree("echo \"args=$# [$2] ARCH=$ARCH CC=${CROSS_COMPILE-unset} LLVM=${LLVM-unset} pwd=$PWD\"\nwhile read -r l; do echo \"> $l\"; done\n");
        let p = d.path();
        let base = std::fs::canonicalize(p).unwrap();
        let out = decode(p, &p.join("vmlinux"), &p.join("console.log"), &vars(&[("ARCH", "x86")])).unwrap().unwrap();
        let first = out.lines().next().unwrap();
        assert!(first.starts_with(&format!("args=2 [{}] ARCH=x86 CC=unset LLVM=unset pwd=", base.display())), "{out}");
        assert!(first.contains("kmatrix-triage"), "it runs in a scratch directory of its own: {first}");
        assert!(out.contains("> [    0.413700]  panic+0x170/0x328"), "{out}");
        assert_eq!(out.lines().filter(|l| l.starts_with("> ")).count(), 11, "{out}");
    }

    #[test]
    fn code_lines_are_kept_from_a_decodecode_that_cannot_assemble_them() {
        let v = vars(&[("ARCH", "arm64"), ("LLVM", "1")]);
        let t = Tools::new(SCRIPT_6_1, &v);
        if t.check().is_err() || t.disassemble {
            return;
        }
        let d = fake_tree("while read -r l; do echo \"> $l\"; done\n");
        let p = d.path();
        std::fs::write(p.join("oops.log"), "Internal error: Oops: 96000005 [#1] SMP\nCode: d503233f a9be7bfd (b9400000)\n").unwrap();
        let out = decode(p, &p.join("vmlinux"), &p.join("oops.log"), &v).unwrap().unwrap();
        assert!(out.contains("> Code (not disassembled): d503233f a9be7bfd (b9400000)"), "{out}");
    }

    #[test]
    fn a_hung_script_is_stopped_at_the_deadline() {
        if crate::host::which("addr2line").is_none() || crate::host::which("nm").is_none() {
            return;
        }
        let d = fake_tree("echo decoded-so-far\nsleep 30 & wait\n");
        let p = d.path();
        let t = Instant::now();
        let out = decode_with(p, &p.join("vmlinux"), &p.join("console.log"), &[], Duration::from_millis(500)).unwrap().unwrap();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert!(out.starts_with("decoded-so-far\n"), "{out}");
        assert!(out.contains("stopped after"), "{out}");
    }

    #[test]
    fn a_failing_script_is_an_infra_error_and_no_trace_runs_nothing() {
        if crate::host::which("addr2line").is_none() || crate::host::which("nm").is_none() {
            return;
        }
        let d = fake_tree("echo 'ERROR! vmlinux image must be specified' >&2\nexit 1\n");
        let p = d.path();
        let e = decode(p, &p.join("vmlinux"), &p.join("console.log"), &[]).unwrap_err();
        assert!(matches!(&e, Error::Infra(m) if m.contains("vmlinux image must be specified")), "{e}");
        std::fs::write(p.join("quiet.log"), "[ 0.1] Linux version 6.1.0\n").unwrap();
        // No trace: None, even for a tree without the script.
        assert!(decode(Path::new("/nonexistent"), Path::new("/nonexistent"), &p.join("quiet.log"), &[]).unwrap().is_none());
    }

    /// The real thing, on a kernel built with `--profile debug`:
    /// `KMATRIX_TRIAGE_SRC=<source tree> KMATRIX_TRIAGE_VMLINUX=<build>/vmlinux
    /// KMATRIX_TRIAGE_LOG=<console.log> KMATRIX_TRIAGE_VARS="ARCH=arm64
    /// CROSS_COMPILE=aarch64-linux-gnu-" cargo test --lib triage -- --ignored --nocapture`
    #[test]
    #[ignore = "needs a real kernel: set KMATRIX_TRIAGE_SRC, _VMLINUX, _LOG (and _VARS)"]
    fn decodes_a_real_console_log() {
        let (Ok(src), Ok(vmlinux), Ok(log)) =
            (std::env::var("KMATRIX_TRIAGE_SRC"), std::env::var("KMATRIX_TRIAGE_VMLINUX"), std::env::var("KMATRIX_TRIAGE_LOG"))
        else {
            eprintln!("KMATRIX_TRIAGE_SRC/_VMLINUX/_LOG not set: nothing to decode");
            return;
        };
        let v: Vec<(String, String)> = std::env::var("KMATRIX_TRIAGE_VARS")
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|w| w.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        let t = Instant::now();
        let out = decode(Path::new(&src), Path::new(&vmlinux), Path::new(&log), &v).unwrap().expect("the log has a trace");
        println!("{out}");
        eprintln!("decoded in {:.1}s", t.elapsed().as_secs_f64());
        assert!(out.lines().any(|l| l.contains(".c:")), "no frame was decoded to file:line");
    }
}
