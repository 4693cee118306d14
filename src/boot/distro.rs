//! Whole-OS boots (`boot --rootfs debian`): the cloud-init NoCloud seed that
//! carries the ssh key and hostname, and the probe that judges the boot
//! over ssh instead of kmatrix's init markers — systemd reached its target
//! (`systemctl is-system-running --wait`), the commands ran, and the guest
//! powers itself off.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use super::CmdResult;
use super::console::{Console, Stop};
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::outcome::{Outcome, Verdict};

/// How to reach the guest's sshd through the forwarded loopback port.
#[derive(Debug, Clone)]
pub struct Ssh {
    pub port: u16,
    pub key: PathBuf,
    pub user: String,
}

impl Ssh {
    /// ssh's argv up to (not including) the remote command. Host keys are
    /// new on every boot (a fresh overlay): none is recorded.
    pub fn argv(&self) -> Vec<String> {
        let mut v: Vec<String> = ["ssh", "-i"].map(String::from).to_vec();
        v.push(self.key.display().to_string());
        v.extend(["-p".to_string(), self.port.to_string()]);
        for o in [
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "LogLevel=ERROR",
            "BatchMode=yes",
            "IdentitiesOnly=yes",
            "ConnectTimeout=10",
            "ServerAliveInterval=5",
            "ServerAliveCountMax=6",
        ] {
            v.extend(["-o".to_string(), o.to_string()]);
        }
        v.push(format!("{}@127.0.0.1", self.user));
        v
    }

    /// The line a user can paste.
    pub fn command_line(&self) -> String {
        self.argv()
            .iter()
            .map(|a| crate::command::shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// What the probe does once the guest is up.
#[derive(Debug, Clone)]
pub struct Probe {
    pub ssh: Ssh,
    /// The user's `--cmd` commands, each run by the guest's shell.
    pub cmds: Vec<String>,
    /// `poweroff` or `reboot` (the board's; QEMU runs with -no-reboot).
    pub poweroff: String,
}

#[derive(Debug, Clone, Default)]
pub struct ProbeResult {
    /// From the spawn to the first ssh command that ran.
    pub ssh_at: Option<Duration>,
    /// `systemctl is-system-running --wait`: running, degraded...
    pub state: Option<String>,
    pub failed_units: Vec<String>,
    pub uname: Option<String>,
    pub cmds: Vec<CmdResult>,
    pub warnings: Vec<String>,
    /// Why the probe gave up, when it did.
    pub error: Option<String>,
}

/// Runs the probe on its own thread; its result comes on the channel.
pub fn spawn(p: Probe, start: Instant, stop: Arc<AtomicBool>) -> mpsc::Receiver<ProbeResult> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run(&p, start, &stop));
    });
    rx
}

/// One ssh command, stopped when `stop` is set; (exit status, output).
fn ssh(s: &Ssh, remote: &str, stop: &AtomicBool, limit: Duration) -> Option<(i32, String)> {
    let argv = s.argv();
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..])
        .arg(remote)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().ok()?;
    let (mut out, mut err) = (child.stdout.take()?, child.stderr.take()?);
    let t = std::thread::spawn(move || {
        use std::io::Read;
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        let mut e = String::new();
        let _ = err.read_to_string(&mut e);
        s + &e
    });
    let t0 = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some((st.code().unwrap_or(-1), t.join().unwrap_or_default()));
        }
        if stop.load(Ordering::Relaxed) || t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(p: &Probe, start: Instant, stop: &AtomicBool) -> ProbeResult {
    let mut r = ProbeResult::default();
    // sshd comes up late in the boot (and generates its host keys first):
    // until then QEMU's forward resets the connection at once.
    loop {
        if stop.load(Ordering::Relaxed) {
            r.error = Some("ssh never answered".into());
            return r;
        }
        if let Some((0, _)) = ssh(&p.ssh, "true", stop, Duration::from_secs(60)) {
            r.ssh_at = Some(start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    match ssh(
        &p.ssh,
        "systemctl is-system-running --wait; uname -r; systemctl --failed --plain --no-legend",
        stop,
        Duration::from_secs(900),
    ) {
        Some((_, out)) => {
            let mut lines = out.lines();
            r.state = lines.next().map(|l| l.trim().to_string());
            r.uname = lines.next().map(|l| l.trim().to_string());
            r.failed_units = lines
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_string)
                .collect();
        }
        None => {
            r.error = Some("`systemctl is-system-running --wait` did not return".into());
            return r;
        }
    }
    for (i, c) in p.cmds.iter().enumerate() {
        match ssh(&p.ssh, c, stop, Duration::from_secs(3600)) {
            Some((status, output)) => r.cmds.push(CmdResult {
                index: i,
                status,
                output: output.trim_end_matches('\n').to_string(),
                output_cut: 0,
            }),
            None => {
                r.error = Some(format!("command {i} did not finish"));
                return r;
            }
        }
    }
    // The connection drops as the guest goes down: no status to read.
    let _ = ssh(
        &p.ssh,
        &format!("systemctl {}", p.poweroff),
        stop,
        Duration::from_secs(30),
    );
    r
}

/// The verdict of a whole-OS boot. A kernel failure on the console comes
/// first; then the probe: no ssh is a boot failure, and so is a system that
/// is not `running` (a failed unit, listed); a failed command is CmdFail.
pub fn judge(
    con: &Console,
    stop: &Stop,
    exit_status: Option<i32>,
    emu_error: Option<&str>,
    p: &ProbeResult,
) -> Outcome {
    if let Some(l) = &con.panic_line {
        return Outcome::new(Verdict::Panic, l.clone());
    }
    if let Some(l) = &con.oops_line {
        return Outcome::new(Verdict::Oops, l.clone());
    }
    if p.ssh_at.is_none() {
        let why = match stop {
            Stop::Timeout(r) => {
                return Outcome::new(
                    Verdict::Timeout,
                    format!(
                        "{r}; ssh never answered{}",
                        if con.login_at.is_some() {
                            " (the login prompt came)"
                        } else {
                            ""
                        }
                    ),
                );
            }
            _ => format!(
                "ssh never answered; emulator exited with status {}{}",
                exit_status
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "unknown".into()),
                emu_error.map(|e| format!(" ({e})")).unwrap_or_default()
            ),
        };
        return Outcome::new(Verdict::BootFail, why);
    }
    if let Some(e) = &p.error {
        return Outcome::new(
            if matches!(stop, Stop::Timeout(_)) {
                Verdict::Timeout
            } else {
                Verdict::BootFail
            },
            e.clone(),
        );
    }
    match p.state.as_deref() {
        Some("running") => {}
        other => {
            let units = if p.failed_units.is_empty() {
                String::new()
            } else {
                format!(": failed {}", p.failed_units.join(", "))
            };
            return Outcome::new(
                Verdict::BootFail,
                format!("systemd says `{}`{units}", other.unwrap_or("nothing")),
            );
        }
    }
    let failed: Vec<usize> = p
        .cmds
        .iter()
        .filter(|c| c.status != 0)
        .map(|c| c.index)
        .collect();
    if !failed.is_empty() {
        return Outcome::new(
            Verdict::CmdFail,
            format!("command(s) {failed:?} exited non-zero"),
        );
    }
    if *stop == Stop::DidNotPowerOff {
        return Outcome::new(
            Verdict::BootFail,
            "the guest did not power off after `systemctl poweroff`",
        );
    }
    Outcome::pass()
}

/// kmatrix's own ssh key for guests (made once, in the cache).
pub fn key(cache: &Cache) -> Result<PathBuf> {
    let dir = cache.dir("ssh")?;
    let key = dir.join("id_ed25519");
    if !key.is_file() {
        let _lock = cache.lock("ssh-key", &|_| {})?;
        if !key.is_file() {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "kmatrix", "-f"])
                .arg(&key)
                .output()
                .map_err(|e| {
                    crate::process::spawn_error("ssh-keygen", e).with_package("openssh-client")
                })?;
            if !out.status.success() {
                return Err(Error::Infra(format!(
                    "ssh-keygen failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
    }
    Ok(key)
}

/// A hostname cloud-init and YAML take as it is.
pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !h.starts_with('-')
}

/// The NoCloud seed's user-data: the keys for root, the hostname, and no
/// disk growing (the root is a fixed-size image behind an overlay).
pub fn user_data(hostname: &str, keys: &[String]) -> String {
    let mut s = format!(
        "#cloud-config\nhostname: {hostname}\ndisable_root: false\nssh_pwauth: false\nlocale: C.UTF-8\nresize_rootfs: false\ngrowpart: {{mode: \"off\"}}\nssh_authorized_keys:\n"
    );
    for k in keys {
        s.push_str(&format!(
            "  - \"{}\"\n",
            k.replace('\\', "\\\\").replace('"', "\\\"")
        ));
    }
    s
}

/// Writes `seed.img` (iso9660, label cidata) into `dir` with cloud-localds.
pub fn seed(dir: &Path, hostname: &str, instance: &str, keys: &[String]) -> Result<PathBuf> {
    let ud = dir.join("user-data");
    let md = dir.join("meta-data");
    std::fs::write(&ud, user_data(hostname, keys))
        .map_err(Error::io(format!("cannot write {}", ud.display())))?;
    std::fs::write(
        &md,
        format!("instance-id: {instance}\nlocal-hostname: {hostname}\n"),
    )
    .map_err(Error::io(format!("cannot write {}", md.display())))?;
    let img = dir.join("seed.img");
    let out = Command::new("cloud-localds")
        .arg(&img)
        .arg(&ud)
        .arg(&md)
        .output()
        .map_err(|e| {
            crate::process::spawn_error("cloud-localds", e).with_package("cloud-image-utils")
        })?;
    if !out.status.success() {
        return Err(Error::Infra(format!(
            "cloud-localds failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(img)
}

/// The public keys that go into the guest: kmatrix's own, then the user's
/// (`~/.ssh/id_*.pub`), so a plain `ssh -p PORT root@127.0.0.1` works too.
pub fn public_keys(key: &Path) -> Vec<String> {
    let mut v = Vec::new();
    let mut add = |p: &Path| {
        if let Ok(s) = std::fs::read_to_string(p) {
            let l = s.lines().next().unwrap_or("").trim().to_string();
            if l.starts_with("ssh-") || l.starts_with("ecdsa-") || l.starts_with("sk-") {
                v.push(l);
            }
        }
    };
    add(&key.with_extension("pub"));
    if let Some(home) = std::env::var_os("HOME") {
        for k in ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"] {
            add(&Path::new(&home).join(".ssh").join(k));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_quotes_keys() {
        let ud = user_data("kmx-arm64", &["ssh-ed25519 AAAA k\"x".into()]);
        assert!(ud.starts_with("#cloud-config\nhostname: kmx-arm64\n"));
        assert!(ud.contains("  - \"ssh-ed25519 AAAA k\\\"x\"\n"));
    }

    #[test]
    fn hostnames() {
        assert!(valid_hostname("kmx-aarch64"));
        assert!(!valid_hostname("a b"));
        assert!(!valid_hostname("x:\n  - evil"));
        assert!(!valid_hostname("-x"));
    }

    fn con(text: &str) -> Console {
        let mut c = Console::new("n", Instant::now(), 0);
        c.feed(text.as_bytes());
        c.finish();
        c
    }

    #[test]
    fn judge_needs_ssh_running_and_poweroff() {
        let up = ProbeResult {
            ssh_at: Some(Duration::from_secs(40)),
            state: Some("running".into()),
            ..Default::default()
        };
        let c = con("kmx login: root (automatic login)\n");
        assert!(c.login_at.is_some());
        assert_eq!(
            judge(&c, &Stop::Exited, Some(0), None, &up).verdict,
            Verdict::Pass
        );
        assert_eq!(
            judge(&c, &Stop::DidNotPowerOff, None, None, &up).verdict,
            Verdict::BootFail
        );
        let degraded = ProbeResult {
            state: Some("degraded".into()),
            failed_units: vec!["cloud-init.service".into()],
            ..up.clone()
        };
        let o = judge(&c, &Stop::Exited, Some(0), None, &degraded);
        assert_eq!(o.verdict, Verdict::BootFail);
        assert!(o.detail.unwrap().contains("cloud-init.service"));
        let none = ProbeResult::default();
        assert_eq!(
            judge(&c, &Stop::Exited, Some(0), None, &none).verdict,
            Verdict::BootFail
        );
        assert_eq!(
            judge(
                &c,
                &Stop::Timeout("no result within 9s".into()),
                None,
                None,
                &none
            )
            .verdict,
            Verdict::Timeout
        );
        let p = con("[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n");
        assert_eq!(
            judge(&p, &Stop::AfterPanic, None, None, &none).verdict,
            Verdict::Panic
        );
    }
}
