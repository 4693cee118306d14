//! `kmatrix export slurm|lava|k8s|gha --plan plan.json`: a plan (from
//! `kmatrix plan --out`) handed to an engine (see [`crate::export`]).

use std::path::{Path, PathBuf};

use crate::cli::run::load_plan;
use crate::cli::sweep::{execute, Execution};
use crate::cli::Ctx;
use crate::error::{exit, Error, Result};
use crate::export;
use crate::plan::CellState;
use crate::sweep::results::Results;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    engine: Engine,
}

#[derive(Debug, clap::Subcommand)]
enum Engine {
    /// Batch scripts: a build job array, a boot array after it, a merge job.
    Slurm(SlurmArgs),
    /// One LAVA job per QEMU cell (builds the kernels it needs first).
    Lava(LavaArgs),
    /// A Kubernetes Indexed Job (one completion index per shard) and its plan ConfigMap.
    K8s(K8sArgs),
    /// A GitHub Actions workflow: shards in matrices of at most 256 jobs, then a merge.
    Gha(GhaArgs),
}

#[derive(Debug, clap::Args)]
struct PlanArg {
    /// A plan written by `kmatrix plan --out`.
    #[arg(long, value_name = "FILE")]
    plan: PathBuf,
}

#[derive(Debug, clap::Args)]
struct SlurmArgs {
    #[command(flatten)]
    plan: PlanArg,
    /// Directory for the scripts, Slurm's logs, the parts and the merge
    /// (on a file system every node sees).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// CPUs per task: a build's make jobs, a boot array task's emulators.
    #[arg(long, default_value = "2")]
    cpus_per_task: u32,
    /// Slurm partition of all three jobs (else the cluster's default).
    #[arg(long)]
    partition: Option<String>,
    /// Time limit of a build task, in minutes.
    #[arg(long, value_name = "MINUTES")]
    build_minutes: Option<u32>,
    /// Submit the jobs with sbatch.
    #[arg(long)]
    submit: bool,
    /// With --submit: wait for the merge job and exit with its code (the
    /// matrix's: 0 pass, 1 a kernel failed, 2 infrastructure).
    #[arg(long, requires = "submit")]
    wait: bool,
}

#[derive(Debug, clap::Args)]
struct LavaArgs {
    #[command(flatten)]
    plan: PlanArg,
    /// Directory for jobs/, devices/ (for lava-run) and files/ (kernels,
    /// dtbs, initramfs images).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// URL a lab fetches DIR/files/ from (default: file:// paths).
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// The CPU budget for building the kernels the jobs need.
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
}

#[derive(Debug, clap::Args)]
struct K8sArgs {
    #[command(flatten)]
    plan: PlanArg,
    /// Container image holding kmatrix, the project and the host packages.
    #[arg(long)]
    image: String,
    /// Shards (completion indexes); default: one per kernel build.
    #[arg(long)]
    shards: Option<usize>,
    #[arg(long, default_value = "2")]
    parallelism: usize,
    /// Retries of a shard that failed for infrastructure reasons.
    #[arg(long, default_value = "2")]
    retries: u32,
    /// The project directory inside the image.
    #[arg(long, default_value = "/project")]
    project: String,
    /// PersistentVolumeClaim for the parts (ReadWriteMany).
    #[arg(long, default_value = "kmatrix-results")]
    results_claim: String,
    /// PersistentVolumeClaim for a shared build cache (default: none, per pod).
    #[arg(long)]
    cache_claim: Option<String>,
    #[arg(long, default_value = "2")]
    cpus: u32,
    /// Write the manifest here (default: stdout).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct GhaArgs {
    #[command(flatten)]
    plan: PlanArg,
    /// Shards; default: one per kernel build.
    #[arg(long)]
    shards: Option<usize>,
    /// The plan's path in the repository (default: --plan as given).
    #[arg(long)]
    plan_path: Option<String>,
    /// Commands that install kmatrix and its host packages on a runner.
    #[arg(long, default_value = "cargo install --locked --path .\nsudo \"$(command -v kmatrix)\" setup")]
    setup: String,
    #[arg(long, default_value = "ubuntu-latest")]
    runs_on: String,
    /// Write the workflow here (default: stdout).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(Error::io(format!("cannot resolve {}", p.display())))
}

fn emit(out: Option<&Path>, text: &str) -> Result<()> {
    match out {
        Some(p) => {
            crate::cache::write_atomic(p, text.as_bytes())?;
            eprintln!("wrote {}", p.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    match a.engine {
        Engine::Slurm(s) => slurm(ctx, s),
        Engine::Lava(l) => lava(ctx, l),
        Engine::K8s(k) => {
            let (_, p) = load_plan(ctx, &k.plan.plan)?;
            let text = std::fs::read_to_string(&k.plan.plan).map_err(Error::io(format!("cannot read {}", k.plan.plan.display())))?;
            let o = export::k8s::Options {
                image: k.image,
                shards: k.shards.unwrap_or(p.builds.len()).max(1),
                parallelism: k.parallelism,
                retries: k.retries,
                project: k.project,
                results_claim: k.results_claim,
                cache_claim: k.cache_claim,
                cpus: k.cpus,
            };
            emit(k.out.as_deref(), &export::k8s::manifest(&p, &text, &o))?;
            Ok(exit::OK)
        }
        Engine::Gha(g) => {
            let (_, p) = load_plan(ctx, &g.plan.plan)?;
            let o = export::gha::Options {
                shards: g.shards.unwrap_or(p.builds.len()).max(1),
                plan_path: g.plan_path.unwrap_or_else(|| g.plan.plan.display().to_string()),
                setup: g.setup,
                runs_on: g.runs_on,
            };
            emit(g.out.as_deref(), &export::gha::workflow(&p, &o))?;
            Ok(exit::OK)
        }
    }
}

fn slurm(ctx: &Ctx, a: SlurmArgs) -> Result<i32> {
    let (_, p) = load_plan(ctx, &a.plan.plan)?;
    let project = ctx.layers.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let site = export::slurm::Site {
        kmatrix: std::env::current_exe().map_err(Error::io("cannot find kmatrix's own path"))?,
        project: absolute(&project)?,
        cache: absolute(&ctx.cache.root)?,
        gem5: ctx.gem5.as_deref().map(absolute).transpose()?,
        plan_file: absolute(&a.plan.plan)?,
        out: absolute(&a.out)?,
    };
    let o = export::slurm::Options { cpus_per_task: a.cpus_per_task, partition: a.partition, build_minutes: a.build_minutes };
    let s = export::slurm::write(&p, &site, &o)?;
    println!("wrote {} ({} build tasks), {}, {} and {}", s.build.display(), s.tasks, s.boot.display(), s.merge.display(), s.submit.display());
    if !a.submit {
        println!("submit with: {}", s.submit.display());
        return Ok(exit::OK);
    }
    export::slurm::submit(&s, &site.out, a.wait, &|l| println!("{l}"))
}

fn lava(ctx: &Ctx, a: LavaArgs) -> Result<i32> {
    let (reg, whole) = load_plan(ctx, &a.plan.plan)?;
    let mut p = whole.clone();
    let mut left = Vec::new();
    p.cells.retain(|c| match (&c.state, export::lava::of(&reg.boards[&c.board])) {
        (CellState::Pending, Ok(_)) => true,
        (CellState::Pending, Err(why)) => {
            left.push(format!("{} {} {} {}: {why}", c.board, c.toolchain, c.kernel, c.config));
            false
        }
        (CellState::Skip(r), _) => {
            left.push(format!("{} {} {} {}: {r}", c.board, c.toolchain, c.kernel, c.config));
            false
        }
    });
    let keep: Vec<String> = p.cells.iter().map(|c| c.id.clone()).collect();
    for b in &mut p.builds {
        b.cells.retain(|c| keep.contains(c));
    }
    p.builds.retain(|b| !b.cells.is_empty());
    let out = absolute(&a.out)?;
    // The kernels are built (or found in the cache) the way a sweep builds
    // them; each cell's boot becomes a job instead of an emulator run.
    let dir = out.join("build-results");
    let results = if dir.join("results.json").is_file() { Results::load(&dir)? } else { Results::new(1) };
    let e = Execution {
        jobs: a.jobs.unwrap_or_else(crate::machine::default_jobs),
        no_output_timeout: None,
        console_log_limit: 64 << 20,
        retries: 0,
        build_only: false,
        lava: Some(export::lava::Mode { out: out.clone(), run: false, base_url: a.base_url }),
    };
    // Every export writes every job afresh (new nonces, new files).
    let mut results = results;
    results.cells.clear();
    let r = execute(ctx, &reg, &p, &whole, &dir, results, &e)?;
    let mut written = 0;
    for c in &r.cells {
        match c.detail.as_deref() {
            Some(d) if d.starts_with("LAVA job written: ") => {
                written += 1;
                println!("{:<12} {} {} {} {}: {}", c.id, c.board, c.toolchain, c.kernel, c.config, d.trim_start_matches("LAVA job written: "));
            }
            _ => left.push(format!("{} {} {} {}: {} ({})", c.board, c.toolchain, c.kernel, c.config, c.verdict.name(), c.detail.as_deref().unwrap_or(""))),
        }
    }
    for l in &left {
        println!("not exported: {l}");
    }
    println!("{written} LAVA jobs in {}; run one locally with `lava-run --job-id N --output-dir D --device {}/devices/<board>.yaml JOB`", out.join("jobs").display(), out.display());
    Ok(if r.cells.iter().any(|c| c.verdict == crate::outcome::Verdict::BuildFail) { exit::KERNEL_FAILURE } else if written == 0 && !p.cells.is_empty() { exit::INFRA } else { exit::OK })
}
