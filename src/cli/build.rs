//! `kmatrix build`: build a machine's kernel without booting it.

use std::path::PathBuf;

use crate::build::BuildOutcome;
use crate::cli::{select_board, Ctx};
use crate::descriptor::SourceSpec;
use crate::error::{exit, Error, Result};
use crate::machine::{self, BuildOptions};

/// Options shared by every command that builds a kernel.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Arch (or alias such as arm64); picks the arch's default board.
    #[arg(long)]
    pub arch: Option<String>,
    /// Board id (see `kmatrix list boards`).
    #[arg(long, conflicts_with = "arch")]
    pub board: Option<String>,
    #[arg(long, default_value = "gcc")]
    pub toolchain: String,
    /// A config of matrix.toml.
    #[arg(long)]
    pub config: Option<String>,
    /// A profile: `debug` adds DWARF, GDB_SCRIPTS, KALLSYMS, no KASLR.
    #[arg(long)]
    pub profile: Option<String>,
    /// Kernel source: a directory (a git working tree too) or a tarball
    /// (default: --kernel, else the first kernel of matrix.toml).
    #[arg(long, value_name = "DIR|TARBALL", conflicts_with_all = ["source_url", "kernel"])]
    pub source: Option<PathBuf>,
    /// A kernel of matrix.toml (`debian-6.12`) or a Debian linux-source
    /// version (`6.1`: /usr/src/linux-source-6.1.tar.xz).
    #[arg(long, value_name = "ID|VERSION", conflicts_with = "source_url")]
    pub kernel: Option<String>,
    /// Kernel tarball URL (https), verified against --sha256 before use.
    #[arg(long, value_name = "URL", requires = "sha256")]
    pub source_url: Option<String>,
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Extra config fragment file, merged last (repeatable).
    #[arg(long = "fragment", value_name = "FILE")]
    pub fragments: Vec<PathBuf>,
    /// Build even when olddefconfig dropped or changed requested symbols.
    #[arg(long)]
    pub allow_config_mismatch: bool,
    /// Parallel compile jobs (one make jobserver).
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
}

impl BuildArgs {
    pub fn options(&self) -> Result<BuildOptions> {
        let source = match (&self.source, &self.source_url, &self.sha256) {
            (Some(p), _, _) => Some(SourceSpec::Path { path: p.clone() }),
            (None, Some(u), Some(h)) => {
                if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(Error::Usage("--sha256 must be 64 hexadecimal digits".into()));
                }
                Some(SourceSpec::Url { url: u.clone(), sha256: h.to_ascii_lowercase() })
            }
            _ => None,
        };
        Ok(BuildOptions {
            toolchain: self.toolchain.clone(),
            config: self.config.clone(),
            profile: self.profile.clone(),
            source,
            kernel: self.kernel.clone(),
            fragments: self.fragments.clone(),
            allow_config_mismatch: self.allow_config_mismatch,
            jobs: self.jobs.unwrap_or_else(machine::default_jobs),
            work: crate::preflight::Work::Build,
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub build: BuildArgs,
    /// Print make's output as it runs.
    #[arg(long, short)]
    pub verbose: bool,
}

/// Progress from the builder: kmatrix's own steps, or every make line.
pub fn progress(verbose: bool) -> impl Fn(&str) {
    move |l: &str| {
        const STEPS: &[&str] = &["configuring", "building", "unpacking", "downloading", "waiting for", "waited"];
        if verbose || STEPS.iter().any(|s| l.starts_with(s)) {
            say(l);
        }
    }
}

pub fn say(msg: &str) {
    eprintln!("kmatrix: {msg}");
}

/// Prints a failed build's outcome; returns the exit code.
pub fn report_failure(outcome: &BuildOutcome) -> i32 {
    match outcome {
        BuildOutcome::Built { .. } => exit::OK,
        BuildOutcome::ConfigMismatch { mismatches, config } => {
            eprintln!("BUILD-FAIL  requested config symbols did not land in {}:", config.display());
            for m in mismatches {
                eprintln!("  {m}");
            }
            eprintln!("(a dependency is missing from the fragments; --allow-config-mismatch builds anyway)");
            exit::KERNEL_FAILURE
        }
        BuildOutcome::Failed { log, errors, step } => {
            eprintln!("BUILD-FAIL  {step} failed; log: {}", log.display());
            for e in errors {
                eprintln!("  {e}");
            }
            exit::KERNEL_FAILURE
        }
    }
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let reg = ctx.registry()?;
    let board = select_board(&reg, a.build.arch.as_deref(), a.build.board.as_deref())?;
    let opts = a.build.options()?;
    let echo = progress(a.verbose);
    let outcome = machine::build(&ctx.cache, &reg, board, &opts, &echo)?;
    match &outcome {
        BuildOutcome::Built { manifest, reused } => {
            println!("{} {} kernel for {} ({})", if *reused { "reused" } else { "built" }, manifest.arch, board.id, manifest.toolchain_version);
            if !*reused {
                println!("build time: {:.0}s", manifest.build_seconds);
            }
            for (k, v) in crate::build::artefacts(manifest) {
                println!("  {k:<11} {v}");
            }
            for w in &manifest.config_warnings {
                println!("  warning: {w}");
            }
            Ok(exit::OK)
        }
        other => Ok(report_failure(other)),
    }
}
