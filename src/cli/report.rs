//! `kmatrix report <results-dir>`: render a sweep's results.

use std::path::PathBuf;

use crate::cli::Ctx;
use crate::error::{exit, Result};
use crate::sweep::report;
use crate::sweep::results::Results;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Markdown,
    Json,
    Junit,
    Html,
    /// KCIDB v5.3 (KernelCI's results database) JSON.
    Kcidb,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A results directory written by `kmatrix sweep`.
    dir: PathBuf,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Compare with an earlier results directory: regressions, fixes,
    /// flakes, new and removed cells, boot times beyond noise (exit 1 when
    /// a kernel fails that did not before).
    #[arg(long, value_name = "DIR")]
    compare: Option<PathBuf>,
    /// A nightly's results root: the HTML page gets its trend charts and is
    /// compared with the previous complete run there (unless --compare).
    #[arg(long, value_name = "ROOT", env = "KMATRIX_HISTORY")]
    history: Option<PathBuf>,
    /// Coordinates making the table's rows (default: board,toolchain).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "board,toolchain")]
    rows: Vec<report::Key>,
    /// Coordinates making the columns (default: kernel,config).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "kernel,config")]
    cols: Vec<report::Key>,
    /// `--format kcidb`: the origin prefixing every id (a-z, 0-9, _).
    #[arg(long, default_value = "kmatrix")]
    origin: String,
    /// `--format kcidb`: POST the document to URL (https, or http to
    /// loopback) with `Authorization: Bearer $KCIDB_TOKEN`.
    #[arg(long, value_name = "URL")]
    submit: Option<String>,
}

pub fn run(_ctx: &Ctx, a: Args) -> Result<i32> {
    let r = Results::load(&a.dir)?;
    if let (Format::Html, Some(root)) = (a.format, &a.history) {
        let name = a.dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let cmp = match &a.compare {
            Some(prev) => Some(crate::sweep::compare::compare(&Results::load(prev)?, &r, &prev.display().to_string())),
            None => crate::history::previous_complete(root, &name).map(|(p, old)| crate::sweep::compare::compare(&old, &r, &p)),
        };
        let mut h = crate::history::History::open(root)?;
        h.sync()?;
        let points = h.points(&|_| true)?;
        print!("{}", crate::sweep::html::page(&r, &report::Layout { rows: a.rows, cols: a.cols }, cmp.as_ref(), &points));
        return Ok(exit::OK);
    }
    if let Some(prev) = &a.compare {
        let old = Results::load(prev)?;
        let c = crate::sweep::compare::compare(&old, &r, &prev.display().to_string());
        print!("{}", c.text());
        return Ok(if c.new_failures() > 0 { exit::KERNEL_FAILURE } else { exit::OK });
    }
    if a.submit.is_some() && !matches!(a.format, Format::Kcidb) {
        return Err(crate::error::Error::Usage("--submit is for --format kcidb".into()));
    }
    let layout = report::Layout { rows: a.rows, cols: a.cols };
    match a.format {
        Format::Table => println!("{}", report::table(&r, crate::cli::colour(std::io::IsTerminal::is_terminal(&std::io::stdout())), &layout)),
        Format::Markdown => print!("{}", report::markdown(&r, &layout)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&r).expect("serialises")),
        Format::Junit => println!("{}", report::junit(&r)),
        Format::Html => print!("{}", report::html(&r, &layout)),
        Format::Kcidb => {
            crate::sweep::kcidb::check_origin(&a.origin)?;
            let doc = crate::sweep::kcidb::render(&r, &a.origin);
            match &a.submit {
                Some(url) => {
                    let token = std::env::var("KCIDB_TOKEN").ok().filter(|t| !t.is_empty()).ok_or_else(|| crate::error::Error::Usage("--submit needs the submission token in KCIDB_TOKEN".into()))?;
                    let answer = crate::sweep::kcidb::submit(&doc, url, &token)?;
                    println!("submitted {} builds and {} tests to {url}: {answer}", doc["builds"].as_array().map_or(0, Vec::len), doc["tests"].as_array().map_or(0, Vec::len));
                }
                None => println!("{}", serde_json::to_string_pretty(&doc).expect("serialises")),
            }
        }
    }
    Ok(exit::OK)
}
