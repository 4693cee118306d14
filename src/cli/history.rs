//! `kmatrix history`: every night's verdict and times of the matching cells,
//! from a results root's history.sqlite; `--flaky` counts flakes per cell.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::cli::list::table;
use crate::cli::{Ctx, OK};
use crate::error::{Error, Result};
use crate::history::History;
use crate::plan;
use crate::sweep::results::Verdict;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The results root of `kmatrix sweep --history ROOT`.
    #[arg(long, value_name = "ROOT", env = "KMATRIX_HISTORY")]
    history: PathBuf,
    /// Only cells matching key=pattern (board, arch, toolchain, kernel, config).
    #[arg(long = "filter", value_name = "KEY=PATTERN", value_parser = plan::parse_filter)]
    filters: Vec<crate::descriptor::Rule>,
    /// Per cell: how many nights passed, were flaky, failed.
    #[arg(long)]
    flaky: bool,
    /// At most this many nights per cell (the newest).
    #[arg(long, value_name = "N")]
    last: Option<usize>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

pub fn run(_ctx: &Ctx, a: Args) -> Result<i32> {
    if !a.history.join("history.sqlite").is_file() {
        return Err(Error::Usage(format!("{} holds no history.sqlite (written by `kmatrix sweep --history {}`)", a.history.display(), a.history.display())));
    }
    let mut h = History::open(&a.history)?;
    h.sync()?;
    // Arch is not stored per point: filters on it match through the board.
    let points = h.points(&|p| a.filters.iter().all(|r| r.matches(&p.board, r.arch.as_deref().unwrap_or("*"), &p.toolchain, &p.kernel, &p.config)))?;
    let mut by_cell: BTreeMap<(String, String, String, String), Vec<&crate::history::Point>> = BTreeMap::new();
    for p in &points {
        by_cell.entry((p.board.clone(), p.toolchain.clone(), p.kernel.clone(), p.config.clone())).or_default().push(p);
    }
    if let Some(n) = a.last {
        for v in by_cell.values_mut() {
            let skip = v.len().saturating_sub(n);
            v.drain(..skip);
        }
    }
    if a.flaky {
        let mut t = table(["board", "toolchain", "kernel", "config", "nights", "pass", "flaky", "failed", "last flaky"]);
        for ((b, tc, k, c), v) in &by_cell {
            let n = |f: &dyn Fn(Verdict) -> bool| v.iter().filter(|p| f(p.verdict)).count().to_string();
            let last = v.iter().rev().find(|p| p.verdict == Verdict::Flaky).map(|p| p.run.clone()).unwrap_or_else(|| "-".into());
            t.add_row([b.clone(), tc.clone(), k.clone(), c.clone(), v.len().to_string(), n(&|x| x == Verdict::Pass), n(&|x| x == Verdict::Flaky), n(&|x| x.is_kernel_failure()), last]);
        }
        println!("{t}");
        return Ok(OK);
    }
    match a.format {
        Format::Json => {
            let flat: Vec<&crate::history::Point> = by_cell.values().flatten().copied().collect();
            println!("{}", serde_json::to_string_pretty(&flat).expect("serialises"));
        }
        Format::Table => {
            let mut t = table(["board", "toolchain", "kernel", "config", "night", "release", "verdict", "boot to marker", "build", "detail"]);
            let secs = |x: Option<f64>| x.map(|s| format!("{s:.2}s")).unwrap_or_else(|| "-".into());
            for ((b, tc, k, c), v) in &by_cell {
                for p in v {
                    let build = match p.build_reused {
                        Some(true) => "reused".to_string(),
                        _ => p.build_seconds.map(|s| format!("{s:.0}s")).unwrap_or_else(|| "-".into()),
                    };
                    let detail: String = p.detail.as_deref().unwrap_or("").chars().take(60).collect();
                    t.add_row([b.clone(), tc.clone(), k.clone(), c.clone(), p.run.clone(), p.kernel_release.clone().unwrap_or_else(|| "-".into()), p.verdict.name().to_string(), secs(p.boot_to_marker_seconds), build, detail]);
                }
            }
            println!("{t}");
            println!("{} results of {} cells", points.len(), by_cell.len());
        }
    }
    Ok(OK)
}
