//! `kmatrix doctor`: what the selected boards and toolchains need on the
//! host, what is missing, and the Debian package for each.

use serde::Serialize;

use crate::cli::list::table;
use crate::cli::{print_json, select_board, Ctx, Format};
use crate::descriptor::{Board, Registry, Toolchain};
use crate::error::{exit, Result};
use crate::host::{self, Requirement};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this arch's default board (default: every board).
    #[arg(long)]
    pub arch: Option<String>,
    #[arg(long, conflicts_with = "arch")]
    pub board: Option<String>,
    /// Toolchains to check (default: gcc).
    #[arg(long = "toolchain", default_values_t = vec!["gcc".to_string()])]
    pub toolchains: Vec<String>,
}

/// `doctor`'s own arguments: the selection (shared with `setup`) and the
/// output format.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub sel: Args,
    /// Output format; JSON is one object whose `requirements` each have
    /// what, package, needed_by and satisfied.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub fn selection<'r>(reg: &'r Registry, arch: Option<&str>, board: Option<&str>, tcs: &[String]) -> Result<(Vec<&'r Board>, Vec<&'r Toolchain>)> {
    let boards = if arch.is_some() || board.is_some() { vec![select_board(reg, arch, board)?] } else { reg.boards.values().collect() };
    let toolchains = tcs
        .iter()
        .map(|t| reg.toolchain(t))
        .collect::<Result<Vec<_>>>()?;
    Ok((boards, toolchains))
}

pub fn missing(reqs: &[Requirement]) -> Vec<&Requirement> {
    reqs.iter().filter(|r| !r.satisfied()).collect()
}

/// Debian packages gem5's scons build needs (gem5's building docs).

#[derive(Serialize)]
struct Item<'a> {
    what: &'a str,
    package: &'a str,
    needed_by: &'a str,
    satisfied: bool,
}

#[derive(Serialize)]
struct KernelSource {
    /// The system's kernel source tarball, when there is one.
    path: Option<String>,
    package: &'static str,
    satisfied: bool,
}

/// An emulator built from source (gem5 per ISA), not installed from a package.
#[derive(Serialize)]
struct Built {
    emulator: String,
    /// Built (or given with --gem5); without it its boards skip.
    built: bool,
    /// Its version and binary, or how to build it.
    detail: String,
}

/// What `doctor` found; `--format json` prints it as it is.
#[derive(Serialize)]
struct Report<'a> {
    requirements: Vec<Item<'a>>,
    kernel_source: KernelSource,
    ccache: bool,
    built_emulators: Vec<Built>,
    /// Debian packages to install (`kmatrix setup` does), sorted.
    missing_packages: Vec<String>,
    /// Nothing is missing (exit status 0; otherwise the infra error status).
    ok: bool,
}

const KERNEL_SOURCE_PACKAGE: &str = "linux-source-6.1";

pub fn run(ctx: &Ctx, a: DoctorArgs) -> Result<i32> {
    let reg = ctx.registry()?;
    let (boards, tcs) = selection(&reg, a.sel.arch.as_deref(), a.sel.board.as_deref(), &a.sel.toolchains)?;
    let reqs = host::requirements(&reg, &boards, &tcs, true);
    let requirements: Vec<Item> = reqs.iter().map(|r| Item { what: &r.what, package: &r.package, needed_by: &r.needed_by, satisfied: r.satisfied() }).collect();
    let source = crate::source::system_tarball(None).ok();
    let kernel_source = KernelSource { satisfied: source.is_some(), path: source.map(|p| p.display().to_string()), package: KERNEL_SOURCE_PACKAGE };
    // An emulator built from source is not a missing package, but its
    // boards skip until it is there.
    let find = |k: &str, v: &str| ctx.built(k, v);
    let mut built_emulators: Vec<Built> = Vec::new();
    for b in &boards {
        let backend = crate::emulator::of(b);
        let Some(hint) = backend.build_hint() else { continue };
        let (emulator, version) = backend.describe(&find);
        if built_emulators.iter().any(|e| e.emulator == emulator) {
            continue;
        }
        let built = backend.locate(&find).is_ok();
        built_emulators.push(Built { emulator, built, detail: if built { version } else { format!("not built; its boards skip ({hint})") } });
    }
    let mut missing_packages: Vec<String> = requirements.iter().filter(|r| !r.satisfied).map(|r| r.package.to_string()).collect();
    if !kernel_source.satisfied {
        missing_packages.push(KERNEL_SOURCE_PACKAGE.into());
    }
    missing_packages.sort();
    missing_packages.dedup();
    let report = Report { ok: missing_packages.is_empty(), requirements, kernel_source, ccache: host::which("ccache").is_some(), built_emulators, missing_packages };
    match a.format {
        Format::Json => print_json(&report),
        Format::Table => print_table(&report),
    }
    Ok(if report.ok { exit::OK } else { exit::INFRA })
}

fn print_table(r: &Report) {
    let mut t = table(["", "needs", "Debian package", "for"]);
    for i in &r.requirements {
        t.add_row([if i.satisfied { "ok" } else { "MISSING" }, i.what, i.package, i.needed_by]);
    }
    println!("{t}");
    match &r.kernel_source.path {
        Some(p) => println!("kernel source: {p}"),
        None => println!("kernel source: MISSING (Debian package {KERNEL_SOURCE_PACKAGE}, or pass --source/--source-url)"),
    }
    println!("ccache: {}", if r.ccache { "yes" } else { "no (optional; Debian package ccache makes rebuilds fast)" });
    for e in &r.built_emulators {
        println!("{}: {}", e.emulator, e.detail);
    }
    if r.ok {
        println!("everything needed is installed");
    } else {
        println!("missing packages: {}\nrun `kmatrix setup` to install them", r.missing_packages.join(" "));
    }
}
