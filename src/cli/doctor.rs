//! `kmatrix doctor`: what the selected boards and toolchains need on the
//! host, what is missing, and the Debian package for each.

use crate::cli::list::table;
use crate::cli::{select_board, Ctx};
use crate::descriptor::{Board, Registry, Toolchain};
use crate::error::{exit, Error, Result};
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

pub fn selection<'r>(reg: &'r Registry, arch: Option<&str>, board: Option<&str>, tcs: &[String]) -> Result<(Vec<&'r Board>, Vec<&'r Toolchain>)> {
    let boards = if arch.is_some() || board.is_some() { vec![select_board(reg, arch, board)?] } else { reg.boards.values().collect() };
    let toolchains = tcs
        .iter()
        .map(|t| reg.toolchains.get(t).ok_or_else(|| Error::Usage(format!("unknown toolchain `{t}`"))))
        .collect::<Result<Vec<_>>>()?;
    Ok((boards, toolchains))
}

pub fn missing(reqs: &[Requirement]) -> Vec<&Requirement> {
    reqs.iter().filter(|r| !r.satisfied()).collect()
}

/// Debian packages gem5's scons build needs (gem5's building docs).
const GEM5_BUILD_DEPS: &str = "g++ scons m4 python3-dev zlib1g-dev libprotobuf-dev protobuf-compiler libgoogle-perftools-dev libboost-all-dev pkg-config";

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let reg = ctx.registry()?;
    let (boards, tcs) = selection(&reg, a.arch.as_deref(), a.board.as_deref(), &a.toolchains)?;
    let reqs = host::requirements(&reg, &boards, &tcs, true);
    let mut t = table(["", "needs", "Debian package", "for"]);
    let mut miss = Vec::new();
    for r in &reqs {
        let ok = r.satisfied();
        if !ok {
            miss.push(r.package.clone());
        }
        t.add_row([if ok { "ok" } else { "MISSING" }.to_string(), r.what.clone(), r.package.clone(), r.needed_by.clone()]);
    }
    println!("{t}");
    if let Ok(src) = crate::source::system_tarball() {
        println!("kernel source: {}", src.display());
    } else {
        println!("kernel source: MISSING (Debian package linux-source-6.1, or pass --source/--source-url)");
        miss.push("linux-source-6.1".into());
    }
    println!("ccache: {}", if host::which("ccache").is_some() { "yes" } else { "no (optional; Debian package ccache makes rebuilds fast)" });
    // gem5 is built from source, not installed: not a missing package, but
    // its boards skip until it is there.
    let mut isas: Vec<&str> = boards
        .iter()
        .filter_map(|b| match &b.emulator {
            crate::descriptor::Emulator::Gem5(g) => Some(g.isa.as_str()),
            _ => None,
        })
        .collect();
    isas.sort();
    isas.dedup();
    for isa in isas {
        match ctx.gem5_install(isa, "opt") {
            Some(g) => println!("gem5 {isa}: {} ({})", g.binary.display(), g.version.as_deref().unwrap_or("version unknown")),
            None => println!(
                "gem5 {isa}: not built; its boards skip (`kmatrix emulator build gem5 --isa {isa} --source <gem5 tree>`; build deps: {GEM5_BUILD_DEPS})"
            ),
        }
    }
    miss.sort();
    miss.dedup();
    if miss.is_empty() {
        println!("everything needed is installed");
        Ok(exit::OK)
    } else {
        println!("missing packages: {}\nrun `kmatrix setup` to install them", miss.join(" "));
        Ok(exit::INFRA)
    }
}
