//! `kmatrix run --plan plan.json`: one part of a plan written by `kmatrix
//! plan --out` — a shard, some cells, or one kernel build and then its
//! boots — into a results directory of its own (resumed when it exists),
//! for `kmatrix merge` to join. What the engines' jobs (Slurm, Kubernetes,
//! GitHub Actions, exports) run on each node.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::plan::HostProbe;
use crate::cli::sweep::{execute, Execution};
use crate::cli::Ctx;
use crate::error::{Error, Result};
use crate::plan::{self, Plan};
use crate::sweep::report;
use crate::sweep::results::Results;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A plan written by `kmatrix plan --out`. It is planned again here
    /// (same descriptors, kernel sources and compilers, or it is refused).
    #[arg(long, value_name = "FILE")]
    plan: PathBuf,
    /// Shard I of N (1-based), balanced by kernel build: every cell of a
    /// build is in the build's shard, so each kernel is built once.
    #[arg(long, value_name = "I/N", value_parser = parse_shard, conflicts_with_all = ["cells", "build"])]
    shard: Option<(usize, usize)>,
    /// Only these cells (ids from the plan); repeatable.
    #[arg(long = "cell", value_name = "ID", conflicts_with = "build")]
    cells: Vec<String>,
    /// Only this kernel build (a build id, or its 1-based index in the
    /// plan's builds): build it and boot nothing, unless --boot.
    #[arg(long, value_name = "ID|INDEX")]
    build: Option<String>,
    /// With --build: boot the build's cells (building it first if the
    /// cache lacks it; a failed build recorded in the same directory is
    /// its cells' result).
    #[arg(long, requires = "build")]
    boot: bool,
    /// Where to write results; resumed when it already holds this plan's.
    #[arg(long, value_name = "DIR")]
    results_dir: PathBuf,
    /// The CPU budget: compile jobs plus running emulators.
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
    /// Boots of a cell that failed at boot time before the failure counts.
    #[arg(long, value_name = "N", default_value = "1")]
    retries: u32,
    /// Fail a boot whose console is silent this long (seconds; 0 disables).
    #[arg(long, value_name = "SECS", default_value = "60")]
    no_output_timeout: u64,
    /// Boot through LAVA's dispatcher (`lava-run`, as root) instead of the
    /// board's emulator: jobs, devices and LAVA's logs go into DIR, the
    /// verdicts into the results directory (QEMU boards with [qemu.lava]).
    #[arg(long, value_name = "DIR")]
    lava: Option<PathBuf>,
    /// Cap of each boot's console log in MiB.
    #[arg(long, value_name = "MIB", default_value = "64")]
    console_log_limit: u64,
}

pub fn parse_shard(s: &str) -> std::result::Result<(usize, usize), String> {
    let bad = || format!("shard `{s}`: expected I/N with 1 <= I <= N");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if i == 0 || n == 0 || i > n {
        return Err(bad());
    }
    Ok((i, n))
}

/// The plan file, checked against what this checkout and host plan now.
pub fn load_plan(ctx: &Ctx, path: &std::path::Path) -> Result<(crate::descriptor::Registry, Plan)> {
    let text = std::fs::read_to_string(path).map_err(Error::io(format!("cannot read {}", path.display())))?;
    let file: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Usage(format!("{}: not a kmatrix plan: {e}", path.display())))?;
    let id = file["id"].as_str().ok_or_else(|| Error::Usage(format!("{}: not a kmatrix plan (no id; write it with `kmatrix plan --out`)", path.display())))?;
    if file["schema"].as_u64() != Some(plan::PLAN_SCHEMA.into()) {
        return Err(Error::Usage(format!("{}: plan schema {} (this kmatrix reads {})", path.display(), file["schema"], plan::PLAN_SCHEMA)));
    }
    let filters = file["filters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| f.as_str().ok_or_else(|| "not a string".to_string()).and_then(plan::parse_filter))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Usage(format!("{}: filters: {e}", path.display())))?;
    let reg = ctx.registry()?;
    let mut now = plan::plan_filtered(&reg, &HostProbe(ctx), &filters).ok_or_else(|| Error::Usage("no matrix.toml found".into()))?;
    plan::identify(&mut now, &reg.matrix.as_ref().map(|m| m.kernels.clone()).unwrap_or_default(), &ctx.cache);
    if now.id != id {
        return Err(Error::Usage(format!(
            "{} is plan {id}, but this checkout and host plan {}: {}. Run it where it was made, or write a new one with `kmatrix plan --out`",
            path.display(),
            now.id,
            plan::difference(&file, &now)
        )));
    }
    Ok((reg, now))
}

/// Shard `i` of `n`: builds dealt out heaviest first to the lightest
/// shard (weight: a build, plus a little per booted cell), in plan order
/// on ties, so every host computes the same split.
pub fn shard_builds(p: &Plan, i: usize, n: usize) -> Vec<String> {
    let weight = |b: &plan::BuildUnit| 10 + b.cells.len();
    let mut order: Vec<&plan::BuildUnit> = p.builds.iter().collect();
    order.sort_by_key(|b| std::cmp::Reverse(weight(b)));
    let mut load = vec![0usize; n];
    let mut mine = Vec::new();
    for b in order {
        let k = (0..n).min_by_key(|&k| (load[k], k)).expect("n >= 1");
        load[k] += weight(b);
        if k + 1 == i {
            mine.push(b.id.clone());
        }
    }
    mine
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let (reg, whole) = load_plan(ctx, &a.plan)?;
    let mut p = whole.clone();
    let keep: Vec<String> = if let Some((i, n)) = a.shard {
        let builds = shard_builds(&p, i, n);
        p.cells.iter().filter(|c| builds.contains(&c.build)).map(|c| c.id.clone()).collect()
    } else if !a.cells.is_empty() {
        for id in &a.cells {
            if !p.cells.iter().any(|c| &c.id == id) {
                return Err(Error::Usage(format!("no cell `{id}` in {} (see `kmatrix plan`)", a.plan.display())));
            }
        }
        a.cells.clone()
    } else if let Some(b) = &a.build {
        let unit = match b.parse::<usize>() {
            Ok(k) if k >= 1 && k <= p.builds.len() => &p.builds[k - 1],
            Ok(k) => return Err(Error::Usage(format!("build index {k}: {} has {} builds", a.plan.display(), p.builds.len()))),
            Err(_) => p.builds.iter().find(|u| &u.id == b).ok_or_else(|| Error::Usage(format!("no build `{b}` in {}", a.plan.display())))?,
        };
        unit.cells.clone()
    } else {
        p.cells.iter().map(|c| c.id.clone()).collect()
    };
    // The part keeps the whole plan's id: its results merge with the others'.
    p.cells.retain(|c| keep.contains(&c.id));
    for b in &mut p.builds {
        b.cells.retain(|c| keep.contains(c));
    }
    p.builds.retain(|b| !b.cells.is_empty());
    if a.lava.is_some() {
        for c in p.cells.iter_mut().filter(|c| c.state == plan::CellState::Pending) {
            if let Err(reason) = crate::export::lava::of(&reg.boards[&c.board]) {
                c.state = plan::CellState::Skip(crate::outcome::SkipReason::EngineCannotRun { engine: "LAVA".into(), board: c.board.clone(), reason });
            }
        }
    }
    let jobs = a.jobs.unwrap_or_else(crate::machine::default_jobs);
    let dir = &a.results_dir;
    let results = if dir.join("results.json").is_file() {
        let r = Results::load(dir)?;
        if r.plan.as_deref() != Some(p.id.as_str()) {
            return Err(Error::Usage(format!("{} holds results of plan {}, not of {}", dir.display(), r.plan.as_deref().unwrap_or("(none)"), p.id)));
        }
        r
    } else {
        Results::new(jobs)
    };
    let start = std::time::Instant::now();
    let build_only = a.build.is_some() && !a.boot;
    let e = Execution {
        jobs,
        no_output_timeout: (a.no_output_timeout > 0).then(|| Duration::from_secs(a.no_output_timeout)),
        console_log_limit: a.console_log_limit << 20,
        retries: a.retries,
        build_only,
        lava: a.lava.clone().map(|out| crate::export::lava::Mode { out, run: true, base_url: None }),
    };
    let results = execute(ctx, &reg, &p, &whole, dir, results, &e)?;
    if build_only {
        for b in &results.builds {
            println!("{} {} {}", if b.ok { "built" } else { "BUILD-FAIL" }, b.id, b.detail.as_deref().unwrap_or(if b.reused { "(reused)" } else { "" }));
        }
    } else {
        println!("{}", report::table(&results, crate::cli::colour(std::io::IsTerminal::is_terminal(&std::io::stdout())), &report::Layout::default()));
    }
    println!("results: {} ({} of {} cells, {:.0}s)", dir.display(), results.cells.len(), p.cells.len(), start.elapsed().as_secs_f64());
    Ok(results.exit_code())
}
