//! `kmatrix emulator build gem5`: build gem5 from source
//! ([`crate::emulator::gem5::build`]) and record it in the cache, where gem5
//! boards find it. `--record <binary>` records an existing build instead.

use std::path::PathBuf;

use crate::cli::build::say;
use crate::cli::Ctx;
use crate::emulator::gem5;
use crate::error::{exit, Error, Result};

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Build an emulator from source (only gem5 is supported).
    Build {
        /// Which emulator: gem5.
        name: String,
        /// gem5 ISA: ARM or X86.
        #[arg(long)]
        isa: String,
        /// The gem5 source: a tree (git checkout, unpacked release) or a
        /// release tarball (unpacked into the cache). Keep a tree outside any
        /// repository: the build directory grows to gigabytes.
        #[arg(long, value_name = "DIR|TARBALL", required_unless_present_any = ["record", "source_url"])]
        source: Option<PathBuf>,
        /// Download the gem5 source tarball from this URL (https), verified
        /// against --sha256 before it is unpacked.
        #[arg(long, value_name = "URL", requires = "sha256", conflicts_with = "source")]
        source_url: Option<String>,
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        /// Binary variant: opt (default), fast, debug.
        #[arg(long, default_value = "opt")]
        variant: String,
        #[arg(long, short = 'j')]
        jobs: Option<usize>,
        /// Record an existing build/<ISA>/gem5.<variant> instead of building.
        #[arg(long, value_name = "BINARY")]
        record: Option<PathBuf>,
        /// Print the scons commands without running them.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let Cmd::Build { name, isa, source, source_url, sha256, variant, jobs, record, dry_run } = a.cmd;
    if name != "gem5" {
        return Err(Error::Usage(format!("cannot build emulator `{name}`: only gem5 is built from source (QEMU comes from Debian)")));
    }
    if !gem5::BUILDABLE_ISAS.contains(&isa.as_str()) {
        return Err(Error::Usage(format!("--isa {isa}: expected one of {}", gem5::BUILDABLE_ISAS.join(", "))));
    }
    // A tarball or URL becomes a tree in the cache, unpacked once.
    let source = match (source, source_url, sha256) {
        (Some(p), _, _) if p.is_file() => Some(crate::source::unpack(&p, &ctx.cache, "SConstruct", &say)?.0),
        (None, Some(url), Some(sum)) => {
            let file = crate::source::fetch(&url, &sum, &ctx.cache, &say)?;
            Some(crate::source::unpack(&file, &ctx.cache, "SConstruct", &say)?.0)
        }
        (s, _, _) => s,
    };
    let what = match (record, source) {
        (Some(bin), _) => gem5::From::Binary(bin),
        (None, Some(src)) => gem5::From::Tree(src),
        (None, None) => unreachable!("clap requires --source or --record"),
    };
    let jobs = jobs.unwrap_or_else(crate::machine::default_jobs);
    let Some(inst) = gem5::build(&isa, &variant, what, jobs, dry_run, &say)? else { return Ok(exit::OK) };
    let record = gem5::record_path(&ctx.cache, &isa);
    crate::cache::write_atomic(&record, serde_json::to_string_pretty(&inst).expect("serialises").as_bytes())?;
    println!("gem5 {} for {isa}: {} (recorded in {})", inst.version.as_deref().unwrap_or("?"), inst.binary.display(), record.display());
    Ok(exit::OK)
}
