//! `kmatrix emulator build gem5`: build gem5 from source with scons (classic
//! memory system, no Ruby: all an AtomicSimpleCPU boot needs, and far fewer
//! objects) and record it in the cache, where gem5 boards find it.
//! `--record <binary>` records an existing build instead. Builds resume:
//! scons picks up where an interrupted run stopped.

use std::path::PathBuf;
use std::process::Stdio;

use crate::cli::build::say;
use crate::cli::Ctx;
use crate::command::CommandSpec;
use crate::emulator::Gem5Install;
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

/// gem5's version from src/base/version.cc (`gem5Version = "24.0.0.1";`).
fn gem5_version(root: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join("src/base/version.cc")).ok()?;
    let line = text.lines().find(|l| l.contains("gem5Version"))?;
    Some(line.split('"').nth(1)?.to_string())
}

fn run_step(c: &CommandSpec, dry: bool) -> Result<()> {
    say(&format!("{c}"));
    if dry {
        return Ok(());
    }
    // Its own group, so the watchdog stops scons and its compilers if
    // kmatrix is killed; SIGTERM first, so scons records what it built.
    let mut g = crate::process::Group::spawn_spec(c, Stdio::inherit(), Stdio::inherit(), Stdio::null(), crate::process::Mode::Group).map_err(|e| e.with_package("scons"))?;
    let st = g.wait_grace(std::time::Duration::from_secs(120))?;
    if st == 0 { Ok(()) } else { Err(Error::Infra(format!("`{c}` failed (exit {st})"))) }
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let Cmd::Build { name, isa, source, source_url, sha256, variant, jobs, record, dry_run } = a.cmd;
    if name != "gem5" {
        return Err(Error::Usage(format!("cannot build emulator `{name}`: only gem5 is built from source (QEMU comes from Debian)")));
    }
    if !["ARM", "X86"].contains(&isa.as_str()) {
        return Err(Error::Usage(format!("--isa {isa}: expected ARM or X86")));
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
    let (binary, root) = match (record, source) {
        (Some(bin), _) => {
            let bin = bin.canonicalize().map_err(Error::io(format!("cannot find {}", bin.display())))?;
            // <root>/build/<ISA>/gem5.<variant>
            let root = bin.ancestors().nth(3).map(PathBuf::from).ok_or_else(|| Error::Usage("expected <gem5>/build/<ISA>/gem5.<variant>".into()))?;
            (bin, root)
        }
        (None, Some(src)) => {
            let root = src.canonicalize().map_err(Error::io(format!("cannot find {}", src.display())))?;
            if !root.join("SConstruct").is_file() {
                return Err(Error::Usage(format!("{} is not a gem5 source tree (no SConstruct)", root.display())));
            }
            let jobs = jobs.unwrap_or_else(crate::machine::default_jobs);
            let build_dir = format!("build/{isa}");
            let scons = |args: &[&str]| CommandSpec::new("scons").args(args.iter().copied()).cwd(root.clone());
            // Configured once (kconfig writes gem5.build/config); scons then resumes.
            if !root.join(&build_dir).join("gem5.build/config").exists() {
                run_step(&scons(&["defconfig", &build_dir, &format!("build_opts/{isa}")]), dry_run)?;
                // An AtomicSimpleCPU boot needs neither Ruby nor SystemC nor
                // KVM; leaving them out saves about a fifth of the objects.
                run_step(&scons(&["setconfig", &build_dir, "RUBY=n", "USE_SYSTEMC=n", "USE_KVM=n"]), dry_run)?;
            }
            let target = format!("{build_dir}/gem5.{variant}");
            run_step(&scons(&[&target, &format!("-j{jobs}"), "--ignore-style"]), dry_run)?;
            (root.join(&target), root)
        }
        (None, None) => unreachable!("clap requires --source or --record"),
    };
    if dry_run {
        return Ok(exit::OK);
    }
    if !binary.is_file() {
        return Err(Error::Infra(format!("{} was not built", binary.display())));
    }
    let inst = Gem5Install { version: gem5_version(&root), binary, root };
    crate::cache::write_atomic(&ctx.cache.gem5_record(&isa), serde_json::to_string_pretty(&inst).expect("serialises").as_bytes())?;
    println!("gem5 {} for {isa}: {} (recorded in {})", inst.version.as_deref().unwrap_or("?"), inst.binary.display(), ctx.cache.gem5_record(&isa).display());
    Ok(exit::OK)
}
