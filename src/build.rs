//! Kernel builds: configure, check the config, compile out of tree, record
//! the artefacts.
//!
//! Two cache levels make a warm run spawn no make at all:
//! - `configs/<input-key>.json` maps the config *inputs* (source hash, arch,
//!   toolchain identity, base, fragments) to the build key;
//! - `builds/<build-key>/` is keyed by sha256 of (source, final .config,
//!   toolchain identity, make variables) and holds `manifest.json` once a
//!   build of every requested target completed.
//!
//! A build that fails keeps its tree (the next attempt is incremental) and
//! records its first error lines; it never writes a manifest.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cache::{write_atomic, Cache};
use crate::command::CommandSpec;
use crate::process::{Group, Mode};
use crate::descriptor::{Arch, Board, Toolchain};
use crate::error::{Error, Result};
use crate::kconfig::{self, Mismatch};
use crate::recipe::{self, ConfigInputs, Paths};
use crate::source::Source;

/// Bumped when the layout or meaning of cached builds changes.
const CACHE_SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u32,
    pub key: String,
    pub dir: PathBuf,
    pub arch: String,
    pub toolchain: String,
    pub toolchain_version: String,
    pub source: String,
    pub targets: Vec<String>,
    pub image: PathBuf,
    pub vmlinux: PathBuf,
    pub dtb: Option<PathBuf>,
    pub system_map: PathBuf,
    pub config: PathBuf,
    pub build_log: PathBuf,
    pub build_seconds: f64,
    /// CPU seconds (user + sys) of configure and make, all jobs together.
    #[serde(default)]
    pub cpu_seconds: f64,
    pub config_warnings: Vec<Mismatch>,
    /// Compile and link steps make printed (`CC`, `LD`...): the next build
    /// of the same inputs estimates its progress by it.
    #[serde(default)]
    pub objects: u64,
}

impl Manifest {
    /// The release the kernel reports (`uname -r`), as its build wrote it.
    pub fn kernel_release(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("include/config/kernel.release")).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    }
}

/// How a build ended. Failures are outcomes, not errors.
#[derive(Debug, Clone)]
pub enum BuildOutcome {
    Built { manifest: Box<Manifest>, reused: bool },
    /// olddefconfig dropped or changed requested symbols.
    ConfigMismatch { mismatches: Vec<Mismatch>, config: PathBuf },
    /// make failed: the log and its first error lines.
    Failed { log: PathBuf, errors: Vec<String>, step: String },
}

pub struct Request<'a> {
    pub arch: &'a Arch,
    pub board: &'a Board,
    pub toolchain: &'a Toolchain,
    pub inputs: ConfigInputs,
    pub source: &'a Source,
    /// Let olddefconfig drop requested symbols with only a warning.
    pub allow_config_mismatch: bool,
    /// Targets beyond the board's (other boards sharing this build).
    pub extra_targets: Vec<String>,
}

/// What the last build of the same inputs took: the base of a running
/// build's progress and ETA.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Estimate {
    pub objects: u64,
    pub seconds: f64,
}

/// A kbuild progress line (`  CC      init/main.o`, `  LD      vmlinux`).
pub fn is_object_line(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("  ") else { return false };
    let word: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
    (2..=8).contains(&word.len())
        && word.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && rest[word.len()..].starts_with(' ')
}

/// Estimates are keyed by what makes two builds alike, without the source's
/// content: tonight's tarball estimates from last night's of the same series.
fn estimate_file(cache: &Cache, req: &Request) -> Option<PathBuf> {
    let series = req.source.version.as_ref().map(|v| v.to_string().rsplit_once('.').map(|(a, _)| a.to_string()).unwrap_or_default());
    let key = sha(&(&req.arch.id, &req.toolchain.id, req.inputs.identity(), series, req.source.mutable.then_some(&req.source.hash)));
    Some(cache.dir("estimates").ok()?.join(format!("{}.json", &key[..24])))
}

pub fn estimate(cache: &Cache, req: &Request) -> Option<Estimate> {
    serde_json::from_str(&std::fs::read_to_string(estimate_file(cache, req)?).ok()?).ok()
}

/// First line of `<tool> --version`: part of every cache key, so a
/// compiler upgrade rebuilds.
pub fn tool_version(tool: &Path, args: &[String]) -> String {
    let mut c = Command::new(tool);
    c.args(args);
    crate::process::output(c, &tool.display().to_string())
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_string())
        .unwrap_or_default()
}

fn sha(parts: &impl Serialize) -> String {
    hex::encode(Sha256::digest(serde_json::to_vec(parts).expect("serialises")))
}

/// Lines of a build log that look like the cause of a failure
/// (tuxmake's patterns), first ones first.
pub fn first_errors(log: &str, max: usize) -> Vec<String> {
    const PATTERNS: &[&str] = &[
        "error:",
        "compiler lacks",
        "no configuration exists",
        "not found",
        "no such file or directory",
        "no rule to make target",
        "undefined reference to",
        "cannot open",
        "*** ",
    ];
    let hits: Vec<&str> = log
        .lines()
        .filter(|l| {
            let low = l.to_ascii_lowercase();
            PATTERNS.iter().any(|p| low.contains(p))
        })
        .collect();
    // make's own "*** [...] Error 1" lines only say which rule failed: the
    // tool's message (compiler, script) comes first.
    let (make, tools): (Vec<&str>, Vec<&str>) = hits.into_iter().partition(|l| l.trim_start().starts_with("make"));
    tools.into_iter().chain(make).take(max).map(|l| l.trim().to_string()).collect()
}

/// Runs one command with output appended to `log`; stdout lines also go to
/// `echo` (progress). With a jobserver, one token is held for the child's
/// implicit job slot and make receives the jobserver through MAKEFLAGS
/// (never `-j`). The child and everything it forks form one process group
/// (see [`crate::process`]), stopped on SIGINT/SIGTERM and by the watchdog
/// if kmatrix is killed. Returns success and the CPU seconds of the child
/// and its descendants.
fn run_logged(cmd: &CommandSpec, log: &Path, jobs: Option<&jobserver::Client>, hold: Option<&crate::cache::EntryLock>, echo: &dyn Fn(&str)) -> Result<(bool, f64)> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(Error::io(format!("cannot open {}", log.display())))?;
    writeln!(f, "$ {cmd}").map_err(Error::io("cannot write the build log"))?;
    let token = jobs.map(|j| j.acquire()).transpose().map_err(Error::io("jobserver"))?;
    let mut c = cmd.to_command();
    c.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
    if let Some(j) = jobs {
        j.configure_make(&mut c);
    }
    if let Some(l) = hold {
        // The entry stays locked until make's last compiler is gone, even
        // if kmatrix is killed first: no next run starts make in a tree an
        // old one still writes.
        crate::process::inherit_fd(&mut c, l.fd());
    }
    let mut child = Group::spawn(c, &cmd.program, Mode::Group)?;
    // Bounded: a chatty make waits for the log writer instead of filling memory.
    let (tx, rx) = std::sync::mpsc::sync_channel::<(bool, String)>(1024);
    let out = child.child_mut().stdout.take().expect("piped");
    let err = child.child_mut().stderr.take().expect("piped");
    for (is_out, stream) in [(true, Box::new(out) as Box<dyn std::io::Read + Send>), (false, Box::new(err))] {
        let tx = tx.clone();
        std::thread::spawn(move || crate::process::for_each_line(stream, |line| tx.send((is_out, line)).is_ok()));
    }
    drop(tx);
    let mut result = None;
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok((is_out, line)) => {
                let _ = writeln!(f, "{line}");
                if is_out {
                    echo(&line);
                }
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if result.is_none() {
            result = child.try_wait_rusage();
        }
        if let Some((code, cpu)) = result {
            // Exited: drain the remaining output, then report.
            while let Ok((is_out, line)) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
                let _ = writeln!(f, "{line}");
                if is_out {
                    echo(&line);
                }
            }
            writeln!(f, "# exit: {code}").map_err(Error::io("cannot write the build log"))?;
            drop(token);
            return Ok((code == 0, cpu));
        }
        if crate::process::is_interrupted() {
            child.stop(std::time::Duration::from_secs(3));
            let _ = writeln!(f, "# interrupted");
            return Err(Error::Interrupted);
        }
    }
}

pub fn build(cache: &Cache, req: &Request, jobs: &jobserver::Client, echo: &dyn Fn(&str)) -> Result<BuildOutcome> {
    let arch = req.arch;
    let tc = req.toolchain;
    let target = tc.target(&arch.id)?;
    let cc = crate::host::which(&target.cc).ok_or_else(|| Error::MissingTool { tool: target.cc.clone(), package: target.packages.first().cloned() })?;
    let version = tool_version(&cc, &tc.version_args);
    let ccache = crate::host::which("ccache").is_some();
    let vars = recipe::make_vars(arch, tc, false);
    // A board that links its initramfs into the kernel (gem5 x86) adds it
    // to the config here, for every caller alike: the key follows it.
    let mut inputs = req.inputs.clone();
    crate::machine::embed_initramfs(cache, arch, tc, req.board, &mut inputs)?;
    let input_key = sha(&(CACHE_SCHEMA, &req.source.hash, &arch.id, &version, &vars, inputs.identity(), req.allow_config_mismatch));

    let configs = cache.dir("configs")?;
    let builds = cache.dir("builds")?;
    let memo = configs.join(format!("{}.json", &input_key[..32]));
    let base_targets = recipe::targets(req.board, &req.extra_targets, &|_| false);

    // One run at a time configures these inputs; a second waits, then
    // takes the warm path below.
    let _inputs_lock = cache.lock(&format!("configs/{}", &input_key[..32]), echo)?;
    // Warm path: inputs seen before and their build complete.
    if !req.source.mutable
        && let Some(key) = std::fs::read_to_string(&memo).ok().and_then(|s| serde_json::from_str::<String>(&s).ok())
            && let Some(m) = read_manifest(&builds.join(&key))
                && base_targets.iter().all(|t| m.targets.contains(t)) {
                    touch(&m);
            return Ok(BuildOutcome::Built { manifest: Box::new(m), reused: true });
                }

    // Configure in a staging directory; the final .config names the build.
    let stage = tempfile::Builder::new().prefix("stage-").tempdir_in(&builds).map_err(Error::io("cannot create a staging directory"))?;
    let paths = Paths { source: req.source.dir.clone(), build: stage.path().to_path_buf() };
    let r = recipe::recipe(&paths, arch, tc, &inputs, &base_targets, ccache, &req.source.timestamp);
    let log = stage.path().join("config.log");
    for (i, f) in inputs.fragments.iter().enumerate() {
        let p = paths.fragment_file(i, f);
        std::fs::create_dir_all(p.parent().expect("has parent")).map_err(Error::io("cannot create the fragment directory"))?;
        std::fs::write(&p, f.to_file_text()).map_err(Error::io(format!("cannot write {}", p.display())))?;
    }
    if let Some(base) = &r.base_file {
        std::fs::copy(base, stage.path().join(".config")).map_err(Error::io(format!("cannot read config base {}", base.display())))?;
    }
    echo(&format!("configuring ({} fragments)", inputs.fragments.len()));
    let mut cpu = 0.0;
    for step in &r.configure {
        // Configuring is one job: it holds one token of the shared budget.
        let (ok, c) = run_logged(step, &log, Some(jobs), None, &|_| {})?;
        cpu += c;
        if !ok {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let kept = keep_failed(stage, &builds, "config")?;
            let errors = first_errors(&text, 10);
            record_failure(&kept, "configure", &errors);
            return Ok(BuildOutcome::Failed { log: kept.join("config.log"), errors, step: "configure".into() });
        }
    }
    let config_text = std::fs::read_to_string(stage.path().join(".config")).map_err(Error::io("cannot read the final .config"))?;
    let final_config = kconfig::parse_dotconfig(&config_text);
    let mismatches: Vec<Mismatch> = kconfig::check(&inputs.fragments, &final_config)
        .into_iter()
        .filter(|m| !inputs.allow_missing.contains(&m.symbol))
        .collect();
    if !mismatches.is_empty() && !req.allow_config_mismatch {
        let kept = keep_failed(stage, &builds, "config")?;
        return Ok(BuildOutcome::ConfigMismatch { mismatches, config: kept.join(".config") });
    }

    let key = sha(&(CACHE_SCHEMA, &req.source.hash, &config_text, &version, &vars))[..32].to_string();
    let dir = builds.join(&key);
    // Other inputs can configure to the same kernel: the tree itself is
    // locked too, from here to the manifest, so one make runs in it.
    let _tree_lock = cache.lock(&format!("builds/{key}"), echo)?;
    if dir.join(".config").is_file() {
        // Same config built (or started) before: make continues there.
        drop(stage);
    } else {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(Error::io(format!("cannot clear {}", dir.display())))?;
        }
        let kept = stage.keep();
        if let Err(e) = std::fs::rename(&kept, &dir) {
            // Another build with the same final config got there first.
            let _ = std::fs::remove_dir_all(&kept);
            if !dir.join(".config").is_file() {
                return Err(Error::Io { context: format!("cannot move the build into {}", dir.display()), source: e });
            }
        }
    }
    write_atomic(&memo, serde_json::to_string(&key).expect("serialises").as_bytes())?;

    if let Some(m) = read_manifest(&dir)
        && base_targets.iter().all(|t| m.targets.contains(t)) && !req.source.mutable {
            touch(&m);
            return Ok(BuildOutcome::Built { manifest: Box::new(m), reused: true });
        }
    let targets = recipe::targets(req.board, &req.extra_targets, &|sym| final_config.get(sym).map(String::as_str) == Some("y"));
    let paths = Paths { source: req.source.dir.clone(), build: dir.clone() };
    let r = recipe::recipe(&paths, arch, tc, &inputs, &targets, ccache, &req.source.timestamp);
    let log = dir.join("build.log");
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(dir.join("failure.json"));
    echo(&format!("building {} in {}", targets.join(" "), dir.display()));
    let t0 = Instant::now();
    let objects = std::sync::atomic::AtomicU64::new(0);
    let count = |l: &str| {
        if is_object_line(l) {
            objects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        echo(l)
    };
    let (ok, c) = run_logged(&r.build, &log, Some(jobs), Some(&_tree_lock), &count)?;
    cpu += c;
    let secs = t0.elapsed().as_secs_f64();
    let objects = objects.into_inner();
    if ok
        && let Some(f) = estimate_file(cache, req) {
            let _ = write_atomic(&f, serde_json::to_string(&Estimate { objects, seconds: secs }).expect("serialises").as_bytes());
        }
    if !ok {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let errors = first_errors(&text, 10);
        record_failure(&dir, "build", &errors);
        return Ok(BuildOutcome::Failed { errors, log, step: "build".into() });
    }
    let image = dir.join(&req.board.kernel.image);
    if !image.is_file() {
        return Ok(BuildOutcome::Failed { errors: vec![format!("make succeeded but {} is missing", image.display())], log, step: "build".into() });
    }
    let m = Manifest {
        schema: CACHE_SCHEMA,
        key,
        arch: arch.id.clone(),
        toolchain: tc.id.clone(),
        toolchain_version: version,
        source: req.source.label.clone(),
        targets,
        image,
        vmlinux: dir.join("vmlinux"),
        dtb: req.board.kernel.dtb.as_ref().map(|d| dir.join(d)),
        system_map: dir.join("System.map"),
        config: dir.join(".config"),
        build_log: log,
        build_seconds: secs,
        cpu_seconds: cpu,
        config_warnings: mismatches,
        dir: dir.clone(),
        objects,
    };
    write_atomic(&dir.join("manifest.json"), serde_json::to_string_pretty(&m).expect("serialises").as_bytes())?;
    Ok(BuildOutcome::Built { manifest: Box::new(m), reused: false })
}

/// `failure.json` beside a failed build: its step and first error lines.
fn record_failure(dir: &Path, step: &str, errors: &[String]) {
    let v = serde_json::json!({ "step": step, "errors": errors });
    let _ = write_atomic(&dir.join("failure.json"), v.to_string().as_bytes());
}

/// A reuse is a use: `cache gc` ages builds by their manifest's mtime.
fn touch(m: &Manifest) {
    if let Ok(f) = std::fs::File::options().append(true).open(m.dir.join("manifest.json")) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

fn read_manifest(dir: &Path) -> Option<Manifest> {
    let m: Manifest = serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).ok()?).ok()?;
    (m.schema == CACHE_SCHEMA && m.image.is_file()).then_some(m)
}

/// Keeps a failed staging tree for inspection under builds/failed-<what>-*.
fn keep_failed(stage: tempfile::TempDir, builds: &Path, what: &str) -> Result<PathBuf> {
    let kept = stage.keep();
    let name = kept.file_name().and_then(|n| n.to_str()).unwrap_or("x").trim_start_matches("stage-").to_string();
    let dest = builds.join(format!("failed-{what}-{name}"));
    std::fs::rename(&kept, &dest).map_err(Error::io("cannot keep the failed build"))?;
    Ok(dest)
}

/// Summary of `manifest` artefacts for printing.
pub fn artefacts(m: &Manifest) -> BTreeMap<&'static str, String> {
    let mut a = BTreeMap::new();
    a.insert("image", m.image.display().to_string());
    a.insert("vmlinux", m.vmlinux.display().to_string());
    if let Some(d) = &m.dtb {
        a.insert("dtb", d.display().to_string());
    }
    a.insert("System.map", m.system_map.display().to_string());
    a.insert(".config", m.config.display().to_string());
    a.insert("build log", m.build_log.display().to_string());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_errors_finds_compiler_errors() {
        let log = "  CC init/main.o\nmake[2]: *** [x] Error 1\ninit/main.c:3:1: error: expected ';'\nok\n";
        let e = first_errors(log, 5);
        assert_eq!(e.len(), 2);
        assert!(e[0].contains("error: expected"), "{e:?}");
    }
}
