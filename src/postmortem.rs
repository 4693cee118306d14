//! Post-mortem dumps (`--dump`): a panicked guest is paused over QMP and its
//! memory written to an ELF vmcore (carrying the kernel's VMCOREINFO note
//! where the board has QEMU's vmcoreinfo device); drgn — from PyPI, pinned
//! by version and sha256, in a venv in the cache — then reads the panicking
//! task's backtrace out of it with the build's vmlinux.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::cache::Cache;
use crate::error::{Error, Result};

pub const DRGN_VERSION: &str = "0.3.0";

/// The wheels kmatrix installs, by (python tag, machine): pip's
/// `--require-hashes` refuses anything else it downloads.
const DRGN_WHEELS: &[(&str, &str, &str)] = &[(
    "cp311",
    "x86_64",
    "69c8b8ce9d1b714f1bcd871101b88f41694d0bc1746485b18d4f1238c72a884d",
)];

/// What a dump gave.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Dump {
    pub vmcore: Option<PathBuf>,
    pub bytes: u64,
    /// The panicking task and its frames, innermost first (`function
    /// (file:line)`).
    pub task: Option<String>,
    pub frames: Vec<String>,
    /// Why there is no dump or no backtrace.
    pub error: Option<String>,
}

impl Dump {
    /// One line for a report: the first frames past panic's own.
    pub fn summary(&self) -> String {
        match (&self.error, self.frames.is_empty()) {
            (Some(e), _) => format!("dump: {e}"),
            (None, true) => "dump: no frames".into(),
            (None, false) => {
                let names: Vec<&str> = self
                    .frames
                    .iter()
                    .map(|f| f.split_whitespace().next().unwrap_or("?"))
                    .collect();
                format!(
                    "backtrace: {}",
                    names
                        .iter()
                        .take(8)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(" < ")
                )
            }
        }
    }
}

/// Pauses the guest and dumps its memory into `out` (synchronously).
pub fn pause_and_dump(qmp: &Path, out: &Path) -> std::result::Result<u64, String> {
    let mut q = crate::emulator::qmp::Qmp::connect(qmp, Duration::from_secs(5))?;
    q.execute("stop", serde_json::json!({}))?;
    q.execute(
        "dump-guest-memory",
        serde_json::json!({ "paging": false, "protocol": format!("file:{}", out.display()) }),
    )?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    if bytes == 0 {
        // MIPS: QEMU says nothing is wrong and leaves an empty file.
        return Err("QEMU wrote an empty dump".into());
    }
    Ok(bytes)
}

/// drgn: `drgn` on PATH, else kmatrix's venv (made on first use).
pub fn drgn(cache: &Cache, say: &dyn Fn(&str)) -> Result<Vec<String>> {
    if let Some(p) = crate::host::which("drgn") {
        return Ok(vec![p.display().to_string()]);
    }
    let dir = cache.dir("tools")?.join(format!("drgn-{DRGN_VERSION}"));
    let python = dir.join("bin/python3");
    let run = vec![python.display().to_string(), "-m".into(), "drgn".into()];
    if python.exists() {
        return Ok(run);
    }
    let _lock = cache.lock(&format!("tools/drgn-{DRGN_VERSION}"), say)?;
    if python.exists() {
        return Ok(run);
    }
    let tag = python_tag().ok_or_else(|| Error::MissingTool {
        tool: "python3".into(),
        package: Some("python3".into()),
    })?;
    let machine = std::env::consts::ARCH;
    let Some((_, _, sha)) = DRGN_WHEELS
        .iter()
        .find(|(t, m, _)| *t == tag && *m == machine)
    else {
        return Err(Error::Infra(format!(
            "kmatrix pins no drgn {DRGN_VERSION} wheel for {tag} on {machine}: put drgn on PATH (`pip install drgn`)"
        )));
    };
    say(&format!(
        "installing drgn {DRGN_VERSION} from PyPI into {} (sha256-pinned)",
        dir.display()
    ));
    let tmp = dir.with_extension(format!("tmp.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let venv = std::process::Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&tmp)
        .output()
        .map_err(|e| crate::process::spawn_error("python3", e).with_package("python3-venv"))?;
    if !venv.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::Infra(format!(
            "python3 -m venv failed (Debian package: python3-venv): {}",
            String::from_utf8_lossy(&venv.stderr).trim()
        )));
    }
    let req = tmp.join("requirements.txt");
    std::fs::write(&req, format!("drgn=={DRGN_VERSION} --hash=sha256:{sha}\n"))
        .map_err(Error::io(format!("cannot write {}", req.display())))?;
    let pip = std::process::Command::new(tmp.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary=:all:",
            "--require-hashes",
            "-r",
        ])
        .arg(&req)
        .output()
        .map_err(|e| crate::process::spawn_error("pip", e))?;
    if !pip.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::Infra(format!(
            "pip could not install drgn {DRGN_VERSION}: {}",
            String::from_utf8_lossy(&pip.stderr).trim()
        )));
    }
    // Run as `python3 -m drgn`: a venv moved whole still finds its
    // packages (its scripts' #! lines would not).
    std::fs::rename(&tmp, &dir).map_err(Error::io(format!("cannot write {}", dir.display())))?;
    Ok(run)
}

fn python_tag() -> Option<String> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The panicking task: drgn's crashed thread (the task on the CPU that
/// called panic), its frames innermost first.
const SCRIPT: &str = r#"
import sys
try:
    t = prog.crashed_thread()
except Exception as e:
    print(f"KMX-ERROR cannot find the panicking task: {e}")
    sys.exit(0)
task = t.object
print(f"KMX-TASK pid {t.tid} ({task.comm.string_().decode(errors='replace')})")
for f in t.stack_trace():
    # Past the first frame (ret_from_fork...) the unwinder reads garbage.
    if f.pc == 0:
        break
    name = f.name or hex(f.pc)
    try:
        file, line, _ = f.source()
        where = f" ({file}:{line})"
    except LookupError:
        where = ""
    print(f"KMX-FRAME {name}{where}")
"#;

/// Reads the backtrace of the panicking task from `vmcore`.
pub fn backtrace(
    cache: &Cache,
    vmcore: &Path,
    vmlinux: &Path,
    say: &dyn Fn(&str),
) -> Result<(String, Vec<String>)> {
    let drgn = drgn(cache, say)?;
    let script = vmcore.with_file_name("backtrace.py");
    std::fs::write(&script, SCRIPT)
        .map_err(Error::io(format!("cannot write {}", script.display())))?;
    let out = std::process::Command::new(&drgn[0])
        .args(&drgn[1..])
        .args(["-q", "--main-symbols", "-c"])
        .arg(vmcore)
        .arg("-s")
        .arg(vmlinux)
        .arg(&script)
        .output()
        .map_err(|e| crate::process::spawn_error("drgn", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if let Some(e) = text.lines().find_map(|l| l.strip_prefix("KMX-ERROR ")) {
        return Err(Error::Infra(e.to_string()));
    }
    let task = text
        .lines()
        .find_map(|l| l.strip_prefix("KMX-TASK "))
        .map(str::to_string);
    let frames = relative(text.lines().filter_map(|l| l.strip_prefix("KMX-FRAME ")).map(str::to_string).collect());
    match task {
        Some(t) if out.status.success() => Ok((t, frames)),
        _ => Err(Error::Infra(format!(
            "drgn found no backtrace: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("no output")
                .trim()
        ))),
    }
}

/// Source paths relative to the kernel tree, whose root is where panic()'s
/// own file, kernel/panic.c, sits.
fn relative(frames: Vec<String>) -> Vec<String> {
    let root = frames.iter().find_map(|f| {
        let i = f.find("/kernel/panic.c:")?;
        let start = f.find(" (")? + 2;
        (start <= i).then(|| f[start..=i].to_string())
    });
    match root {
        Some(r) => frames.into_iter().map(|f| f.replace(&r, "")).collect(),
        None => frames,
    }
}

/// The backtrace out of a dump made by [`pause_and_dump`]. Errors are kept
/// in the result: a failed analysis never changes the boot's verdict.
pub fn analyze(
    cache: &Cache,
    vmcore: &Path,
    bytes: u64,
    vmlinux: &Path,
    say: &dyn Fn(&str),
) -> Dump {
    let mut d = Dump {
        vmcore: Some(vmcore.to_path_buf()),
        bytes,
        ..Default::default()
    };
    match backtrace(cache, vmcore, vmlinux, say) {
        Ok((task, frames)) => {
            d.task = Some(task);
            d.frames = frames;
        }
        Err(e) => d.error = Some(e.to_string()),
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_relative_to_the_tree() {
        let f = relative(vec!["panic (/c/src/linux-6.1/kernel/panic.c:459)".into(), "kernel_init (/c/src/linux-6.1/init/main.c:1530)".into(), "0xffff".into()]);
        assert_eq!(f, ["panic (kernel/panic.c:459)", "kernel_init (init/main.c:1530)", "0xffff"]);
    }

    #[test]
    fn summary_names_the_frames() {
        let d = Dump {
            frames: vec![
                "panic (kernel/panic.c:340)".into(),
                "kernel_init (init/main.c:1520)".into(),
                "ret_from_fork".into(),
            ],
            ..Default::default()
        };
        assert_eq!(
            d.summary(),
            "backtrace: panic < kernel_init < ret_from_fork"
        );
        let e = Dump {
            error: Some("no dump: QEMU wrote an empty dump".into()),
            ..Default::default()
        };
        assert_eq!(e.summary(), "dump: no dump: QEMU wrote an empty dump");
    }
}
