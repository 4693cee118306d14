//! `kmatrix sweep`: run every cell of matrix.toml in parallel and write a
//! results directory; `--resume <dir>` runs only the cells it lacks.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cli::plan::HostProbe;
use crate::cli::Ctx;
use crate::error::{Error, Result};
use crate::plan;
use crate::sweep::progress::Progress;
use crate::sweep::results::{now, peak_rss_kib, Results};
use crate::sweep::{report, runner, Event};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The CPU budget: compile jobs plus running emulators, across all builds.
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
    /// Where to write results (default: kmatrix-results/<timestamp>).
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    results_dir: Option<PathBuf>,
    /// Continue an interrupted sweep: run only the cells missing from DIR.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Fail a boot whose console is silent this long (seconds; 0 disables).
    #[arg(long, value_name = "SECS", default_value = "60")]
    no_output_timeout: u64,
    /// Cap of each boot's console log in MiB (the cut is said in the log).
    #[arg(long, value_name = "MIB", default_value = "64")]
    console_log_limit: u64,
    /// Only cells matching key=pattern (board, arch, toolchain, kernel,
    /// config; `*` globs); repeatable, all must match.
    #[arg(long = "filter", value_name = "KEY=PATTERN", value_parser = plan::parse_filter)]
    filters: Vec<crate::descriptor::Rule>,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let reg = ctx.registry()?;
    let plan = plan::plan_filtered(&reg, &HostProbe(ctx), &a.filters).ok_or_else(|| Error::Usage("no matrix.toml found".into()))?;
    let jobs = a.jobs.unwrap_or_else(crate::machine::default_jobs);
    let (dir, mut results) = match &a.resume {
        Some(d) => (d.clone(), Results::load(d)?),
        None => {
            let d = a.results_dir.clone().unwrap_or_else(|| PathBuf::from("kmatrix-results").join(crate::machine::stamp()));
            (d, Results::new(jobs))
        }
    };
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("cannot create {}", dir.display())))?;
    crate::cache::write_atomic(&dir.join("plan.json"), serde_json::to_string_pretty(&plan).expect("serialises").as_bytes())?;
    let done = runner::finished(&results);
    // Results of cells no longer in the plan, or to be re-run, are dropped.
    let planned: std::collections::BTreeSet<&str> = plan.cells.iter().map(|c| c.id.as_str()).collect();
    results.cells.retain(|c| planned.contains(c.id.as_str()) && done.contains(&c.id));
    results.interrupted = false;
    results.jobs = jobs;
    results.save(&dir)?;

    let opts = runner::Options {
        jobs,
        dir: dir.clone(),
        done,
        no_output_timeout: (a.no_output_timeout > 0).then(|| Duration::from_secs(a.no_output_timeout)),
        console_log_limit: a.console_log_limit << 20,
    };
    let start = Instant::now();
    let (tx, rx) = mpsc::channel::<Event>();
    let mut progress = Progress::new();
    let gem5 = |isa: &str, variant: &str| ctx.gem5_install(isa, variant);
    let run_result = std::thread::scope(|s| {
        let h = s.spawn(|| runner::run(&ctx.cache, &reg, &plan, &opts, &gem5, tx));
        // Every event reaches every reporter: the live view and the results file.
        for e in rx {
            progress.event(&e);
            match e {
                Event::CellFinished(r) => {
                    results.cells.push(*r);
                    results.save(&dir)?;
                }
                Event::RunFinished { interrupted } => results.interrupted = interrupted,
                _ => {}
            }
        }
        h.join().unwrap_or_else(|_| Err(Error::Infra("the sweep runner panicked".into())))
    });
    results.complete = plan.cells.iter().all(|c| results.cells.iter().any(|r| r.id == c.id));
    results.finished_at = Some(now());
    results.wall_seconds = Some(start.elapsed().as_secs_f64());
    results.peak_rss_kib = peak_rss_kib();
    results.cells.sort_by(|a, b| (&a.board, &a.toolchain, &a.kernel, &a.config).cmp(&(&b.board, &b.toolchain, &b.kernel, &b.config)));
    results.save(&dir)?;
    run_result?;
    println!("{}", report::table(&results, crate::cli::colour(std::io::IsTerminal::is_terminal(&std::io::stdout())), &report::Layout::default()));
    println!("results: {} ({:.0}s)", dir.display(), start.elapsed().as_secs_f64());
    Ok(results.exit_code())
}
