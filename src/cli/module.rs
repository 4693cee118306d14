//! `kmatrix module build --arch X <dir>`: build an out-of-tree kernel module
//! against the cached kernel (the `debug` profile unless told otherwise).

use std::path::PathBuf;

use crate::build::BuildOutcome;
use crate::cli::build::{progress, report_failure, say, BuildArgs};
use crate::cli::{select_board, Ctx};
use crate::error::{exit, Error, Result};
use crate::machine;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Build the module in DIR (holding a Kbuild or Makefile with obj-m).
    Build {
        #[command(flatten)]
        build: BuildArgs,
        dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let Cmd::Build { mut build, dir } = a.cmd;
    let reg = ctx.registry()?;
    let board = select_board(&reg, build.arch.as_deref(), build.board.as_deref())?;
    if build.profile.is_none() {
        build.profile = Some("debug".into());
    }
    let opts = build.options()?;
    let manifest = match machine::build(&ctx.cache, &reg, board, &opts, &progress(false))? {
        BuildOutcome::Built { manifest, .. } => *manifest,
        other => return Ok(report_failure(&other)),
    };
    let config = std::fs::read_to_string(&manifest.config).unwrap_or_default();
    if !config.lines().any(|l| l == "CONFIG_MODULES=y") {
        return Err(Error::Usage("this kernel has no module support (CONFIG_MODULES); use --profile debug or a fragment with CONFIG_MODULES=y".into()));
    }
    let arch = &reg.arches[&board.arch];
    let tc = &reg.toolchains[&opts.toolchain];
    let source = crate::source::resolve(&machine::source_spec(&reg, &opts), &ctx.cache, &say)?;
    let (ok, kos, log) = crate::debug::build_module(&ctx.cache, arch, tc, &source, &manifest, &dir)?;
    if !ok {
        eprintln!("{log}");
        eprintln!("BUILD-FAIL  module in {}", dir.display());
        return Ok(exit::KERNEL_FAILURE);
    }
    println!("built against {} ({})", manifest.dir.display(), board.id);
    for k in kos {
        println!("  {}", k.display());
    }
    Ok(exit::OK)
}
