//! `kmatrix merge DIR... --into OUT`: one plan's part results joined into
//! one results directory (see [`crate::sweep::merge`]).

use std::path::PathBuf;

use crate::cli::Ctx;
use crate::error::{exit, Result};
use crate::sweep::report;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Results directories of `kmatrix run --plan` parts (any order).
    #[arg(required = true, value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// The merged results directory.
    #[arg(long, value_name = "OUT")]
    into: PathBuf,
}

pub fn run(_ctx: &Ctx, a: Args) -> Result<i32> {
    let m = crate::sweep::merge::merge(&a.dirs, &a.into)?;
    println!("{}", report::table(&m.results, crate::cli::colour(std::io::IsTerminal::is_terminal(&std::io::stdout())), &report::Layout::default()));
    for n in &m.results.notes {
        println!("note: {n}");
    }
    println!("merged {} parts: {} cells into {}", m.parts, m.results.cells.len(), a.into.display());
    if !m.missing.is_empty() {
        println!("INCOMPLETE: {} planned cells have no result (a part did not run or did not finish):", m.missing.len());
        for c in &m.missing {
            println!("  {c}");
        }
        // Missing results are the infrastructure's failure, whatever the rest say.
        return Ok(if m.results.interrupted { exit::INTERRUPTED } else { exit::INFRA });
    }
    Ok(m.results.exit_code())
}
