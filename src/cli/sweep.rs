//! `kmatrix sweep`: run every cell of matrix.toml in parallel and write a
//! results directory; `--resume <dir>` runs only the cells it lacks;
//! `--history <root>` makes it a nightly (dated run directory, comparison
//! with the previous complete run, history database, HTML report, a lock
//! against overlapping nightlies).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cli::plan::HostProbe;
use crate::cli::Ctx;
use crate::error::{exit, Error, Result};
use crate::history::{self, History, NightlyLock};
use crate::plan;
use crate::sweep::compare::{self, Comparison};
use crate::sweep::progress::Progress;
use crate::sweep::results::{now, peak_rss_kib, utc, BuildRecord, Results};
use crate::sweep::{environment, report, runner, Event};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The CPU budget: compile jobs plus running emulators, across all builds.
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
    /// Where to write results (default: kmatrix-results/<timestamp>).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["resume", "history"])]
    results_dir: Option<PathBuf>,
    /// Continue an interrupted sweep: run only the cells missing from DIR.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// A nightly's results root: this run goes into ROOT/<UTC date>/, is
    /// compared with the previous complete run there, indexed in
    /// ROOT/history.sqlite and rendered to report.html. One sweep at a time
    /// per ROOT. Exit status: 0 nothing new failed, 1 a kernel regressed
    /// (or a new cell fails), 2 infrastructure broke.
    #[arg(long, value_name = "ROOT", env = "KMATRIX_HISTORY", conflicts_with = "resume")]
    history: Option<PathBuf>,
    /// Boots of a cell that failed at boot time before the failure counts;
    /// a pass on a retry is `flaky`.
    #[arg(long, value_name = "N", default_value = "1")]
    retries: u32,
    /// Fail a boot whose console is silent this long (seconds; 0 disables).
    #[arg(long, value_name = "SECS", default_value = "60")]
    no_output_timeout: u64,
    /// Cap of each boot's console log in MiB (the cut is said in the log).
    #[arg(long, value_name = "MIB", default_value = "64")]
    console_log_limit: u64,
    /// Only cells matching key=pattern (board, arch, toolchain, kernel,
    /// config; `*` globs); repeatable, all must match. A config filter may
    /// name a config of matrix.toml that the default axis leaves out.
    #[arg(long = "filter", value_name = "KEY=PATTERN", value_parser = plan::parse_filter)]
    filters: Vec<crate::descriptor::Rule>,
}

/// A new run directory under a history root, named by its UTC start.
fn dated_dir(root: &Path) -> PathBuf {
    let base = utc(now()).replace(':', "-");
    let mut dir = root.join(&base);
    let mut n = 2;
    while dir.exists() {
        dir = root.join(format!("{base}.{n}"));
        n += 1;
    }
    dir
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let reg = ctx.registry()?;
    let mut plan = plan::plan_filtered(&reg, &HostProbe(ctx), &a.filters).ok_or_else(|| Error::Usage("no matrix.toml found".into()))?;
    plan::identify(&mut plan, &reg.matrix.as_ref().map(|m| m.kernels.clone()).unwrap_or_default(), &ctx.cache);
    let jobs = a.jobs.unwrap_or_else(crate::machine::default_jobs);
    // A resumed run of a nightly still belongs to its history root.
    let root = a.history.clone().or_else(|| {
        a.resume.as_ref().and_then(|d| d.parent()).filter(|p| p.join("history.sqlite").is_file()).map(Path::to_path_buf)
    });
    let _lock = root.as_deref().map(NightlyLock::take).transpose()?;
    let (dir, results) = match (&a.resume, &root) {
        (Some(d), _) => (d.clone(), Results::load(d)?),
        (None, Some(r)) => (dated_dir(r), Results::new(jobs)),
        (None, None) => {
            let d = a.results_dir.clone().unwrap_or_else(|| PathBuf::from("kmatrix-results").join(crate::machine::stamp()));
            (d, Results::new(jobs))
        }
    };
    let start = Instant::now();
    let opts = Execution {
        jobs,
        no_output_timeout: (a.no_output_timeout > 0).then(|| Duration::from_secs(a.no_output_timeout)),
        console_log_limit: a.console_log_limit << 20,
        retries: a.retries,
        build_only: false,
        lava: None,
    };
    let results = execute(ctx, &reg, &plan, &plan, &dir, results, &opts)?;
    println!("{}", report::table(&results, crate::cli::colour(std::io::IsTerminal::is_terminal(&std::io::stdout())), &report::Layout::default()));
    let cmp = match &root {
        Some(root) => nightly(root, &dir, &results)?,
        None => None,
    };
    println!("results: {} ({:.0}s)", dir.display(), start.elapsed().as_secs_f64());
    Ok(exit_code(&results, cmp.as_ref()))
}

/// How a plan (or a part of it) is run, shared by `sweep` and `run --plan`.
pub struct Execution {
    pub jobs: usize,
    pub no_output_timeout: Option<Duration>,
    pub console_log_limit: u64,
    pub retries: u32,
    pub build_only: bool,
    pub lava: Option<crate::export::lava::Mode>,
}

/// Runs the cells of `plan` (a part of `whole`, or all of it) that `results` (loaded from `dir` when
/// resuming) lacks, writing `dir` after every cell; returns the final
/// results, sorted and with their environment.
pub fn execute(ctx: &Ctx, reg: &crate::descriptor::Registry, plan: &plan::Plan, whole: &plan::Plan, dir: &Path, mut results: Results, e: &Execution) -> Result<Results> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("cannot create {}", dir.display())))?;
    // plan.json is the whole plan, also in a part's directory: `merge` then
    // knows every cell the parts should have run.
    crate::cache::write_atomic(&dir.join("plan.json"), serde_json::to_string_pretty(whole).expect("serialises").as_bytes())?;
    let done = runner::finished(&results);
    // Results of cells no longer in the plan, or to be re-run, are dropped.
    let planned: std::collections::BTreeSet<&str> = plan.cells.iter().map(|c| c.id.as_str()).collect();
    results.cells.retain(|c| planned.contains(c.id.as_str()) && done.contains(&c.id));
    results.interrupted = false;
    results.jobs = e.jobs;
    results.plan = Some(plan.id.clone());
    results.save(dir)?;

    let opts = runner::Options {
        jobs: e.jobs,
        dir: dir.to_path_buf(),
        done,
        no_output_timeout: e.no_output_timeout,
        console_log_limit: e.console_log_limit,
        retries: e.retries,
        build_only: e.build_only,
        lava: e.lava.clone(),
    };
    let start = Instant::now();
    let (tx, rx) = mpsc::channel::<Event>();
    let mut progress = Progress::new();
    let built = |key: &str, variant: &str| ctx.built(key, variant);
    let run_result = std::thread::scope(|s| {
        let h = s.spawn(|| runner::run(&ctx.cache, reg, plan, &opts, &built, tx));
        // Every event reaches every reporter: the live view and the results file.
        loop {
            let e = match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(e) => e,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    progress.tick();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            progress.event(&e);
            match e {
                Event::CellFinished(r) => {
                    results.cells.push(*r);
                    results.save(dir)?;
                }
                Event::BuildFinished { build, ok, reused, seconds, cpu_seconds, detail } => {
                    results.builds.retain(|b| b.id != build);
                    results.builds.push(BuildRecord { id: build, ok, reused, seconds, cpu_seconds, detail });
                    results.save(dir)?;
                }
                Event::RunFinished { interrupted } => results.interrupted = interrupted,
                _ => {}
            }
        }
        h.join().unwrap_or_else(|_| Err(Error::Infra("the sweep runner panicked".into())))
    });
    results.complete = plan.cells.iter().all(|c| results.cells.iter().any(|r| r.id == c.id));
    results.finished_at = Some(now());
    results.wall_seconds = Some(results.wall_seconds.unwrap_or(0.0) + start.elapsed().as_secs_f64());
    results.peak_rss_kib = peak_rss_kib().max(results.peak_rss_kib);
    results.sort();
    results.environment = Some(environment::gather(reg, plan, &results, &built));
    results.save(dir)?;
    run_result?;
    Ok(results)
}

/// Compares with the previous complete run, indexes the run, writes its
/// HTML report; prints the comparison.
fn nightly(root: &Path, dir: &Path, results: &Results) -> Result<Option<Comparison>> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    let cmp = history::previous_complete(root, &name).map(|(prev, old)| compare::compare(&old, results, &prev));
    match &cmp {
        Some(c) => print!("{}", c.text()),
        None => println!("no earlier complete run in {}: nothing to compare with", root.display()),
    }
    let mut h = History::open(root)?;
    h.sync()?;
    h.record(&name, results)?;
    let points = h.points(&|_| true)?;
    let html = crate::sweep::html::page(results, &report::Layout::default(), cmp.as_ref(), &points);
    crate::cache::write_atomic(&dir.join("report.html"), html.as_bytes())?;
    println!("report: {}", dir.join("report.html").display());
    Ok(cmp)
}

/// 0 all good; 1 a kernel failed (against a previous run: only failures
/// it did not have); 2 infrastructure; 130 interrupted.
fn exit_code(r: &Results, cmp: Option<&Comparison>) -> i32 {
    let (_, _, _, infra) = r.counts();
    match cmp {
        Some(c) if !r.interrupted && infra == 0 => {
            if c.new_failures() > 0 {
                exit::KERNEL_FAILURE
            } else {
                exit::OK
            }
        }
        _ => r.exit_code(),
    }
}
