//! Executes a plan: one worker thread per kernel build, every make and every
//! emulator holding tokens of one GNU make jobserver, so that at no moment
//! more than `--jobs` compile jobs and boots run across the whole sweep.
//!
//! A worker configures and builds its kernel (make gets the jobserver via
//! MAKEFLAGS, never `-j`), then boots each cell that uses that kernel, each
//! boot holding one token. A failed build gives its cells `build-fail`; a
//! missing tool or failed download gives `infra-error`; a kernel failure
//! never stops the other workers. Results go out as [`Event`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use super::events::Event;
use super::results::{CellResult, Verdict};
use crate::boot::{self, BootSpec};
use crate::build::{self, BuildOutcome, Request};
use crate::cache::Cache;
use crate::descriptor::Registry;
use crate::error::{Error, Result};
use crate::machine::{self, BootOptions};
use crate::plan::{BuildUnit, Cell, CellState, Plan};
use crate::source::{self, Source};

pub struct Options {
    pub jobs: usize,
    pub dir: PathBuf,
    /// Cells already finished (resume): not run again.
    pub done: BTreeSet<String>,
    pub no_output_timeout: Option<Duration>,
    /// Bytes of console log kept per boot.
    pub console_log_limit: u64,
    /// Boots of a cell that failed at boot time before it counts (a pass
    /// on a retry makes it `flaky`).
    pub retries: u32,
    /// Build the kernels and boot nothing (`run --plan --build ID`): a
    /// failed build still gives its cells `build-fail`.
    pub build_only: bool,
    /// Boot through LAVA (`lava-run`) instead of the board's emulator, or
    /// only write each cell's LAVA job.
    pub lava: Option<crate::export::lava::Mode>,
}

/// At most this many builds configure and compile at once (the rest wait
/// for a slot): their make jobs share one jobserver anyway, and finished
/// kernels then boot while others still build, instead of every build
/// ending together at the close of the night.
struct Slots {
    free: std::sync::Mutex<usize>,
    cv: std::sync::Condvar,
}

impl Slots {
    fn acquire(&self) -> SlotGuard<'_> {
        let mut n = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *n == 0 {
            n = self.cv.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n -= 1;
        SlotGuard(self)
    }
}

struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.cv.notify_one();
    }
}

/// Whether a boot failure is worth another boot: the kernel was built and
/// started, and what it did may depend on timing.
fn retryable(v: Verdict) -> bool {
    match v {
        Verdict::BootFail | Verdict::Panic | Verdict::Oops | Verdict::Timeout | Verdict::CmdFail => true,
        Verdict::Pass | Verdict::Flaky | Verdict::BuildFail | Verdict::InfraError | Verdict::Skip => false,
    }
}

fn base_result(c: &Cell) -> CellResult {
    CellResult {
        id: c.id.clone(),
        board: c.board.clone(),
        arch: c.arch.clone(),
        toolchain: c.toolchain.clone(),
        kernel: c.kernel.clone(),
        kernel_version: c.kernel_version.clone(),
        kernel_release: None,
        kernel_source: None,
        git: None,
        toolchain_version: None,
        config: c.config.clone(),
        emulator: c.emulator.clone(),
        build: c.build.clone(),
        verdict: Verdict::Skip,
        detail: None,
        build_seconds: None,
        build_cpu_seconds: None,
        build_reused: None,
        boot_seconds: None,
        boot_to_marker_seconds: None,
        build_log: None,
        console_log: None,
        console_log_cut: false,
        attempts: None,
        stack_log: None,
        backtrace_log: None,
    }
}

/// Copies a log into the results directory (the cache may be collected).
fn keep_log(dir: &Path, src: &Path, name: &str) -> Option<String> {
    let rel = format!("logs/{name}");
    std::fs::create_dir_all(dir.join("logs")).ok()?;
    std::fs::copy(src, dir.join(&rel)).ok()?;
    Some(rel)
}

pub fn run(
    cache: &Cache,
    reg: &Registry,
    plan: &Plan,
    opts: &Options,
    built: &(dyn Fn(&str, &str) -> Option<crate::emulator::Install> + Sync),
    tx: Sender<Event>,
) -> Result<()> {
    let interrupted = crate::process::interrupted();
    let pending: Vec<&Cell> = plan.cells.iter().filter(|c| !opts.done.contains(&c.id)).collect();
    let _ = tx.send(Event::RunStarted {
        dir: opts.dir.clone(),
        cells: plan.cells.len(),
        to_run: pending.iter().filter(|c| c.state == CellState::Pending).count(),
        // Only the builds some runnable cell needs (a gem5 board that is
        // not built skips, and its kernel is not built for it).
        builds: plan.builds.iter().filter(|u| u.cells.iter().any(|id| pending.iter().any(|c| &c.id == id && c.state == CellState::Pending))).count(),
        jobs: opts.jobs,
    });
    for c in &pending {
        if let CellState::Skip(reason) = &c.state {
            let mut r = base_result(c);
            r.detail = Some(reason.to_string());
            let _ = tx.send(Event::CellFinished(Box::new(r)));
        }
    }
    // Pre-flight, before any unpack or configure: a cell whose compiler or
    // emulator is missing is an infra-error now, and the others still run.
    let mut missing: BTreeMap<(&str, &str), crate::preflight::Missing> = BTreeMap::new();
    let mut runnable: BTreeSet<&str> = BTreeSet::new();
    for c in pending.iter().filter(|c| c.state == CellState::Pending) {
        let m = missing
            .entry((c.board.as_str(), c.toolchain.as_str()))
            .or_insert_with(|| crate::preflight::check(reg, &reg.boards[&c.board], &reg.toolchains[&c.toolchain], if opts.build_only { crate::preflight::Work::Build } else { crate::preflight::Work::Boot }));
        if m.is_empty() {
            runnable.insert(c.id.as_str());
        } else {
            let mut r = base_result(c);
            r.verdict = Verdict::InfraError;
            r.detail = Some(m.to_string());
            let _ = tx.send(Event::CellFinished(Box::new(r)));
        }
    }
    let cells: BTreeMap<&str, &Cell> = plan.cells.iter().map(|c| (c.id.as_str(), c)).collect();

    // Sources first, one at a time: unpacking is disk-bound and shared.
    let mut sources: BTreeMap<String, std::result::Result<Source, String>> = BTreeMap::new();
    for u in plan.builds.iter().filter(|u| u.cells.iter().any(|c| runnable.contains(c.as_str()))) {
        let key = serde_json::to_string(&u.kernel.source).expect("serialises");
        let note = |l: &str| {
            if l.starts_with("waiting for") || l.starts_with("waited") || l.starts_with("unpacking") {
                let _ = tx.send(Event::Note { build: None, message: l.to_string() });
            }
        };
        sources.entry(key).or_insert_with(|| source::resolve(&u.kernel.source, cache, &note).map_err(|e| e.to_string()));
    }

    // Ctrl-C while unpacking is no infra error of the cells: stop here.
    if interrupted.load(Ordering::Relaxed) {
        let _ = tx.send(Event::RunFinished { interrupted: true });
        return Ok(());
    }
    let jobs = jobserver::Client::new(opts.jobs.max(1)).map_err(Error::io("cannot create the make jobserver"))?;
    let slots = Slots { free: std::sync::Mutex::new(opts.jobs.max(1)), cv: std::sync::Condvar::new() };
    std::thread::scope(|s| {
        for unit in &plan.builds {
            let my: Vec<&Cell> = unit.cells.iter().filter(|c| runnable.contains(c.as_str())).map(|c| cells[c.as_str()]).collect();
            if my.is_empty() {
                continue;
            }
            let tx = tx.clone();
            let jobs = &jobs;
            let sources = &sources;
            let slots = &slots;
            s.spawn(move || {
                let key = serde_json::to_string(&unit.kernel.source).expect("serialises");
                let r = worker(cache, reg, unit, &my, &sources[&key], jobs, slots, opts, built, &tx);
                if let Err(e) = r {
                    // Whatever the worker could not finish is an infra error.
                    if !matches!(e, Error::Interrupted) {
                        for c in &my {
                            let mut res = base_result(c);
                            res.verdict = Verdict::InfraError;
                            res.detail = Some(e.to_string());
                            let _ = tx.send(Event::CellFinished(Box::new(res)));
                        }
                    }
                }
            });
        }
    });
    let _ = tx.send(Event::RunFinished { interrupted: interrupted.load(Ordering::Relaxed) });
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn worker(
    cache: &Cache,
    reg: &Registry,
    unit: &BuildUnit,
    cells: &[&Cell],
    source: &std::result::Result<Source, String>,
    jobs: &jobserver::Client,
    slots: &Slots,
    opts: &Options,
    built: &(dyn Fn(&str, &str) -> Option<crate::emulator::Install> + Sync),
    tx: &Sender<Event>,
) -> Result<()> {
    let interrupted = crate::process::interrupted();
    let source = source.as_ref().map_err(|e| Error::Infra(format!("kernel source: {e}")))?;
    // A result never carries a version it did not build.
    if let (Some(declared), Some(v)) = (&unit.kernel.version, &source.version)
        && !v.is_named_by(declared) {
            return Err(Error::Infra(format!("kernel `{}` is declared as {declared}, but {} is {v}", unit.kernel.id, source.label)));
        }
    // Descriptors as they hold for the tree actually unpacked.
    let reg = &reg.for_kernel(source.version.as_ref());
    let arch = &reg.arches[&unit.arch];
    let tc = &reg.toolchains[&unit.toolchain];
    let board = &reg.boards[&cells[0].board];
    let planned = cells[0].kernel_version.as_deref().and_then(crate::version::Version::parse);
    let inputs = if planned == source.version {
        unit.inputs.clone()
    } else {
        let spec = reg.matrix.as_ref().and_then(|m| m.all_configs.iter().find(|c| c.id == unit.config));
        crate::recipe::config_inputs(reg, arch, board, spec)
    };
    let mut targets = unit.targets.clone();
    for c in cells {
        for t in &reg.boards[&c.board].kernel.make_targets {
            if !targets.contains(t) {
                targets.push(t.clone());
            }
        }
    }
    let stamp = |r: &mut CellResult| {
        r.kernel_source = Some(source.label.clone());
        r.git = source.git.clone();
        if r.kernel_version.is_none() {
            r.kernel_version = source.version.as_ref().map(|v| v.to_string());
        }
    };
    let slot = slots.acquire();
    if interrupted.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    // A build unit with an embedded initramfs only serves boards that want
    // one (the plan keys builds by that), so the first board decides.
    let req = Request {
        arch,
        board,
        toolchain: tc,
        inputs,
        source,
        allow_config_mismatch: false,
        extra_targets: targets,
    };
    let estimate = build::estimate(cache, &req);
    let _ = tx.send(Event::BuildStarted { build: unit.id.clone(), arch: arch.id.clone(), toolchain: tc.id.clone(), cells: cells.len(), estimate });
    let t0 = Instant::now();
    let objects = std::sync::atomic::AtomicU64::new(0);
    let last_sent = std::sync::Mutex::new(Instant::now());
    let outcome = build::build(cache, &req, jobs, &|l: &str| {
        if l.starts_with("waiting for") || l.starts_with("waited") {
            let _ = tx.send(Event::Note { build: Some(unit.id.clone()), message: l.to_string() });
        } else if build::is_object_line(l) {
            let n = objects.fetch_add(1, Ordering::Relaxed) + 1;
            // Throttled: make prints thousands of these.
            let mut last = last_sent.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() >= Duration::from_secs(2) {
                *last = Instant::now();
                let _ = tx.send(Event::BuildProgress { build: unit.id.clone(), objects: n });
            }
        }
    })?;
    drop(slot);
    let build_log_name = format!("{}.build.log", unit.id);
    let (manifest, reused) = match outcome {
        BuildOutcome::Built { manifest, reused } => {
            let _ = tx.send(Event::BuildFinished {
                build: unit.id.clone(),
                ok: true,
                reused,
                seconds: if reused { 0.0 } else { manifest.build_seconds },
                cpu_seconds: if reused { 0.0 } else { manifest.cpu_seconds },
                detail: None,
            });
            (manifest, reused)
        }
        failed => {
            let (detail, log) = match &failed {
                BuildOutcome::ConfigMismatch { mismatches, config } => {
                    (format!("config: {}", mismatches.iter().map(|m| m.to_string()).collect::<Vec<_>>().join("; ")), config.clone())
                }
                BuildOutcome::Failed { log, errors, step } => {
                    (format!("{step}: {}", errors.first().cloned().unwrap_or_else(|| "make failed".into())), log.clone())
                }
                BuildOutcome::Built { .. } => unreachable!(),
            };
            let _ = tx.send(Event::BuildFinished { build: unit.id.clone(), ok: false, reused: false, seconds: t0.elapsed().as_secs_f64(), cpu_seconds: 0.0, detail: Some(detail.clone()) });
            let kept = keep_log(&opts.dir, &log, &build_log_name);
            for c in cells {
                let mut r = base_result(c);
                stamp(&mut r);
                r.verdict = Verdict::BuildFail;
                r.detail = Some(detail.clone());
                r.build_log = kept.clone();
                r.build_seconds = Some(t0.elapsed().as_secs_f64());
                let _ = tx.send(Event::CellFinished(Box::new(r)));
            }
            return Ok(());
        }
    };
    let build_log = keep_log(&opts.dir, &manifest.build_log, &build_log_name);
    if opts.build_only {
        return Ok(());
    }
    for c in cells {
        if interrupted.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let mut r = base_result(c);
        stamp(&mut r);
        r.kernel_release = manifest.kernel_release();
        r.toolchain_version = Some(manifest.toolchain_version.clone());
        r.build_log = build_log.clone();
        r.build_reused = Some(reused);
        r.build_seconds = Some(manifest.build_seconds);
        r.build_cpu_seconds = Some(manifest.cpu_seconds);
        let mut attempt = 1;
        let mut first: Option<(Verdict, Option<String>, String)> = None;
        loop {
            match boot_cell(cache, reg, c, &manifest, jobs, opts, built, tx, attempt) {
                Ok((res, log)) => {
                    let v = res.outcome.verdict;
                    if retryable(v) && attempt <= opts.retries && !interrupted.load(Ordering::Relaxed) {
                        let _ = tx.send(Event::Note { build: None, message: format!("{} {} {} {}: {v} on attempt {attempt}, booting again", c.board, c.toolchain, c.kernel, c.config) });
                        first.get_or_insert((v, res.outcome.detail.clone(), log));
                        attempt += 1;
                        continue;
                    }
                    r.boot_seconds = Some(res.total.as_secs_f64());
                    r.boot_to_marker_seconds = res.boot_to_marker.map(|d| d.as_secs_f64());
                    r.console_log_cut = res.log_cut;
                    r.attempts = Some(attempt);
                    match first.take() {
                        // Failed, then passed: flaky, and the failure stays visible.
                        Some((fv, fd, flog)) if v == Verdict::Pass => {
                            r.verdict = Verdict::Flaky;
                            r.detail = Some(format!("attempt 1: {fv}{}; passed on attempt {attempt} ({log})", fd.map(|d| format!(": {d}")).unwrap_or_default()));
                            r.console_log = Some(flog);
                        }
                        // Failed every time: the first failure is the result.
                        Some((fv, fd, flog)) => {
                            r.verdict = fv;
                            r.detail = Some(format!("{}{}", fd.unwrap_or_else(|| fv.name().to_string()), if v == fv { format!(" (again on {} retries)", attempt - 1) } else { format!(" (retry: {v})") }));
                            r.console_log = Some(flog);
                            if fv != Verdict::Pass {
                                r.boot_to_marker_seconds = None;
                            }
                        }
                        None => {
                            r.verdict = v;
                            r.detail = res.outcome.detail.clone();
                            r.console_log = Some(log);
                        }
                    }
                }
                Err(Error::Interrupted) => return Err(Error::Interrupted),
                Err(e) => {
                    r.verdict = Verdict::InfraError;
                    r.detail = Some(e.to_string());
                }
            }
            break;
        }
        if c.dump && r.verdict == Verdict::Panic {
            postmortem(cache, reg, c, &manifest, &opts.dir, &mut r);
        }
        if matches!(r.verdict, Verdict::Panic | Verdict::Oops)
            && let Some(log) = r.console_log.clone() {
                match triage(reg, c, source, &manifest, &opts.dir, &log) {
                    Ok(s) => r.stack_log = s,
                    Err(e) => r.detail = Some(format!("{} (stack not decoded: {e})", r.detail.as_deref().unwrap_or(""))),
                }
            }
        let _ = tx.send(Event::CellFinished(Box::new(r)));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn boot_cell(
    cache: &Cache,
    reg: &Registry,
    c: &Cell,
    manifest: &build::Manifest,
    jobs: &jobserver::Client,
    opts: &Options,
    built: &(dyn Fn(&str, &str) -> Option<crate::emulator::Install> + Sync),
    tx: &Sender<Event>,
    attempt: u32,
) -> Result<(boot::BootResult, String)> {
    let board = &reg.boards[&c.board];
    let backend = crate::emulator::of(board);
    let install = backend.locate(built)?;
    // A manifest built for another board of the same arch may lack this
    // board's image (gem5 wants vmlinux, QEMU an Image).
    let mut manifest = manifest.clone();
    manifest.image = manifest.dir.join(&board.kernel.image);
    manifest.dtb = board.kernel.dtb.as_ref().map(|d| manifest.dir.join(d));
    let name = if attempt == 1 { c.id.clone() } else { format!("{}.attempt{attempt}", c.id) };
    let run_dir = opts.dir.join("runs").join(&name);
    std::fs::create_dir_all(&run_dir).map_err(Error::io(format!("cannot create {}", run_dir.display())))?;
    // A board that cannot dump boots as usual; the cell says why it has no dump.
    let dump = c.dump && backend.dump_args().is_ok();
    let bopts = BootOptions { install, cmds: c.cmds.clone(), dump, ..Default::default() };
    let prepared = machine::prepare_boot(cache, reg, board, &c.toolchain, &manifest, &bopts, &run_dir, &|_| {})?;
    let rel = format!("logs/{name}.console.log");
    if let Some(mode) = &opts.lava {
        let _token = jobs.acquire().map_err(Error::io("jobserver"))?;
        let _ = tx.send(Event::BootStarted { cell: c.id.clone(), board: c.board.clone() });
        let title = format!("kmatrix {} {} {} {} ({})", c.board, c.toolchain, c.kernel, c.config, c.id);
        let timeout = Duration::from_secs(c.timeout_secs);
        let res = crate::export::lava::boot_cell(mode, board, &name, &title, &manifest.image, &prepared.command.args, &prepared.nonce, timeout, &opts.dir.join(&rel))?;
        return Ok((res, rel));
    }
    // One token per running emulator: boots share the budget with builds.
    let _token = jobs.acquire().map_err(Error::io("jobserver"))?;
    let _ = tx.send(Event::BootStarted { cell: c.id.clone(), board: c.board.clone() });
    let spec = BootSpec {
        command: prepared.command,
        nonce: prepared.nonce,
        timeout: Duration::from_secs(c.timeout_secs),
        no_output_timeout: opts.no_output_timeout.filter(|_| backend.silence_is_a_hang()),
        log: opts.dir.join(&rel),
        echo: false,
        console_file: prepared.console_file,
        cmds: c.cmds.len(),
        log_limit: opts.console_log_limit,
        explain: backend.explainer(),
        at_snapshot: None,
        probe: None,
        at_panic: prepared.dump_qmp.clone().map(|q| -> boot::PanicHook {
            let out = run_dir.join("vmcore");
            Box::new(move || crate::postmortem::pause_and_dump(&q, &out))
        }),
    };
    let res = boot::run(&spec)?;
    let _ = std::fs::remove_file(run_dir.join("initramfs.cpio.gz"));
    Ok((res, rel))
}

/// `dump = true`: the panicking task's backtrace out of the last attempt's
/// dump, into `logs/<cell>.backtrace.txt` and the cell's detail; why there
/// is none otherwise. The vmcore itself stays in the cell's run directory.
fn postmortem(cache: &Cache, reg: &Registry, c: &Cell, manifest: &build::Manifest, dir: &Path, r: &mut CellResult) {
    let backend = crate::emulator::of(&reg.boards[&c.board]);
    let run = dir.join("runs").join(match r.attempts {
        Some(n) if n > 1 => format!("{}.attempt{n}", c.id),
        _ => c.id.clone(),
    });
    let vmcore = run.join("vmcore");
    let d = match (backend.dump_args(), std::fs::metadata(&vmcore)) {
        (Err(why), _) => crate::postmortem::Dump { error: Some(format!("no dump on this board: {why}")), ..Default::default() },
        (Ok(_), Ok(m)) if m.len() > 0 => crate::postmortem::analyze(cache, &vmcore, m.len(), &manifest.vmlinux, &|_| {}),
        (Ok(_), _) => crate::postmortem::Dump { error: Some("no dump was written".into()), ..Default::default() },
    };
    let mut text = String::new();
    if let Some(t) = &d.task {
        text.push_str(&format!("panicking task: {t}\n"));
    }
    for (i, f) in d.frames.iter().enumerate() {
        text.push_str(&format!("#{i:<2} {f}\n"));
    }
    if !text.is_empty() {
        let rel = format!("logs/{}.backtrace.txt", c.id);
        if crate::cache::write_atomic(&dir.join(&rel), text.as_bytes()).is_ok() {
            r.backtrace_log = Some(rel);
        }
    }
    r.detail = Some(format!("{}; {}", r.detail.as_deref().unwrap_or("panic"), d.summary()));
}

/// The decoded stack of a panic or oops, written beside its console log
/// (`logs/<cell>.stack.txt`); None when the log has no trace. A decode that
/// cannot run is said in the cell's detail, never a failure of the cell.
fn triage(reg: &Registry, c: &Cell, source: &Source, manifest: &build::Manifest, dir: &Path, log: &str) -> std::result::Result<Option<String>, String> {
    let arch = &reg.arches[&c.arch];
    let tc = &reg.toolchains[&c.toolchain];
    let vars = crate::recipe::make_vars(arch, tc, false);
    match crate::triage::decode(&source.dir, &manifest.vmlinux, &dir.join(log), &vars) {
        Ok(None) => Ok(None),
        Ok(Some(text)) => {
            let rel = format!("logs/{}.stack.txt", c.id);
            crate::cache::write_atomic(&dir.join(&rel), text.as_bytes()).map_err(|e| e.to_string())?;
            Ok(Some(rel))
        }
        Err(Error::Interrupted) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Ids of cells finished in an earlier run (for `--resume`).
pub fn finished(results: &super::results::Results) -> BTreeSet<String> {
    results.cells.iter().filter(|c| c.verdict != Verdict::InfraError).map(|c| c.id.clone()).collect()
}
