//! `kmatrix plan`: the matrix expanded into cells, as a table or JSON.

use crate::cli::list::table;
use crate::cli::{Ctx, OK};
use crate::error::{Error, Result};
use crate::plan::{self, CellState, Probe};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Only cells matching key=pattern (as `sweep --filter`).
    #[arg(long = "filter", value_name = "KEY=PATTERN", value_parser = plan::parse_filter)]
    filters: Vec<crate::descriptor::Rule>,
    /// Also write the plan as JSON to FILE (atomically), for `kmatrix run
    /// --plan`, `kmatrix export` and the engines.
    #[arg(long, value_name = "FILE")]
    out: Option<std::path::PathBuf>,
}

/// Probes the real host.
pub struct HostProbe<'a>(pub &'a Ctx);

impl Probe for HostProbe<'_> {
    fn toolchain_installed(&self, _toolchain: &str, cc: &str) -> bool {
        crate::host::which(cc).is_some()
    }
    fn built(&self, key: &str, variant: &str) -> Option<crate::emulator::Install> {
        self.0.built(key, variant)
    }
    fn compiler_version(&self, cc: &str, args: &[String]) -> Option<String> {
        crate::host::which(cc).map(|p| crate::build::tool_version(&p, args))
    }
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let reg = ctx.registry()?;
    let mut plan = plan::plan_filtered(&reg, &HostProbe(ctx), &a.filters).ok_or_else(|| Error::Usage("no matrix.toml found (built-in or in the project directory)".into()))?;
    plan::identify(&mut plan, &reg.matrix.as_ref().map(|m| m.kernels.clone()).unwrap_or_default(), &ctx.cache);
    if let Some(out) = &a.out {
        crate::cache::write_atomic(out, serde_json::to_string_pretty(&plan).expect("plan serialises").as_bytes())?;
    }
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&plan).expect("plan serialises")),
        Format::Table => {
            let mut t = table(["cell", "board", "arch", "toolchain", "kernel", "config", "build", "state"]);
            for c in &plan.cells {
                let state = match &c.state {
                    CellState::Pending => "pending".to_string(),
                    CellState::Skip(r) => format!("skip: {r}"),
                };
                t.add_row([c.id.clone(), c.board.clone(), c.arch.clone(), c.toolchain.clone(), c.kernel.clone(), c.config.clone(), c.build.clone(), state]);
            }
            println!("{t}");
            let skipped = plan.cells.iter().filter(|c| c.state != CellState::Pending).count();
            println!("{} cells ({} to run, {} skipped), {} kernel builds", plan.cells.len(), plan.cells.len() - skipped, skipped, plan.builds.len());
            if let Some(out) = &a.out {
                println!("plan {}: {}", plan.id, out.display());
            }
        }
    }
    Ok(OK)
}
