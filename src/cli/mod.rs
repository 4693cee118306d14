//! The command line: argument parsing and dispatch. One file per subcommand,
//! each a thin layer over the library; errors become exit codes here.

mod boot;
mod build;
mod cache;
mod check;
mod completions;
mod debug;
mod emulator;
mod doctor;
mod history;
mod lab;
mod list;
mod module;
mod plan;
mod report;
mod rootfs;
mod run;
mod export;
mod merge;
mod setup;
mod show;
mod snapshot;
mod ssh;
mod sweep;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::cache::Cache;
use crate::descriptor::{self, Board, Layers, Registry};
use crate::error::{exit, Error, Result};

#[derive(Debug, Parser)]
#[command(name = "kmatrix", version, about = "Build Linux kernels for many architectures, boot them under QEMU and gem5, debug them with gdb, and report what works.")]
pub struct Cli {
    /// Project directory whose arches/, boards/, toolchains/, fragments/ and
    /// matrix.toml add to or override the built-in descriptors.
    #[arg(short = 'C', long = "dir", global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Cache directory for sources, builds and images.
    #[arg(long, global = true, env = "KMATRIX_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// A gem5 binary to use for gem5 boards (its source tree is found from
    /// build/<ISA>/gem5.<variant>).
    #[arg(long, global = true, env = "KMATRIX_GEM5", value_name = "PATH")]
    pub gem5: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Validate every descriptor and matrix.toml.
    Check(check::Args),
    /// List arches, boards or toolchains.
    List(list::Args),
    /// Show the build recipe, emulator argv and gdb setup for a machine.
    Show(show::Args),
    /// Expand matrix.toml into cells.
    Plan(plan::Args),
    /// What the host needs for the selected boards, and what is missing.
    Doctor(doctor::DoctorArgs),
    /// Install what `doctor` finds missing (apt-get).
    Setup(setup::Args),
    /// Build a machine's kernel without booting it.
    Build(build::Args),
    /// Build (when needed) and boot a kernel: interactive, --check or --cmd.
    Boot(boot::Args),
    /// Run every cell of matrix.toml in parallel; write a results directory.
    Sweep(sweep::Args),
    /// Run a part of a plan written by `kmatrix plan --out` (a shard, cells, or one build).
    Run(run::Args),
    /// Join the results directories of a plan's parts into one.
    Merge(merge::Args),
    /// Hand a plan to an engine: Slurm, LAVA, Kubernetes, GitHub Actions.
    Export(export::Args),
    /// Render a sweep's results (table, markdown, json, junit, html) or compare two runs.
    Report(report::Args),
    /// A nightly's cell results over time (from `sweep --history ROOT`).
    History(history::Args),
    /// Inspect or trim the build cache.
    Cache(cache::Args),
    /// gdb on a kernel: debug build, halted boot, gdb-multiarch attached.
    Debug(debug::Args),
    /// Out-of-tree kernel modules.
    Module(module::Args),
    /// Build gem5 from source and record it for the gem5 boards.
    Emulator(emulator::Args),
    /// Build guest root filesystems (an ext4 disk root, or a whole Debian, for `boot --rootfs`).
    Rootfs(rootfs::Args),
    /// QEMU snapshots of a running interactive boot, and those in the cache.
    Snapshot(snapshot::Args),
    /// ssh into a running whole-OS boot (`boot --rootfs debian`).
    Ssh(ssh::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::Args),
}

/// Shared state of one invocation.
pub struct Ctx {
    pub layers: Layers,
    pub cache: Cache,
    pub gem5: Option<PathBuf>,
}

impl Ctx {
    pub fn registry(&self) -> Result<Registry> {
        descriptor::load(&self.layers).map_err(Error::Descriptors)
    }

    /// An emulator built from source ([`crate::emulator::Finder`]): gem5
    /// from --gem5, else the one recorded in the cache for the ISA.
    pub fn built(&self, isa: &str, _variant: &str) -> Option<crate::emulator::Install> {
        match &self.gem5 {
            Some(bin) => crate::emulator::gem5::from_binary(bin),
            None => crate::emulator::gem5::recorded(&self.cache, isa),
        }
    }
}

/// Resolves `--arch`/`--board` to a board: an arch picks its default board.
pub fn select_board<'r>(reg: &'r Registry, arch: Option<&str>, board: Option<&str>) -> Result<&'r Board> {
    use crate::descriptor::diag::suggest;
    match (arch, board) {
        (_, Some(b)) => reg.boards.get(b).ok_or_else(|| {
            Error::Usage(format!("unknown board `{b}`; {}", suggest(b, "boards", reg.boards.keys().map(String::as_str))))
        }),
        (Some(a), None) => {
            let arch = reg.arch(a).ok_or_else(|| {
                let names: Vec<&str> = reg.arches.values().flat_map(|x| std::iter::once(x.id.as_str()).chain(x.aliases.iter().map(String::as_str))).collect();
                Error::Usage(format!("unknown arch `{a}`; {}", suggest(a, "arches", names)))
            })?;
            let id = arch.default_board.as_ref().ok_or_else(|| Error::Usage(format!("arch `{}` has no default board; pass --board", arch.id)))?;
            Ok(&reg.boards[id])
        }
        (None, None) => Err(Error::Usage("pass --arch <arch> or --board <board> (see `kmatrix list`)".into())),
    }
}

pub fn main() -> i32 {
    // Rust starts programs with SIGPIPE ignored, so a write to a closed pipe
    // (`kmatrix list | head -1`) fails with EPIPE and println! panics. Take
    // the default action instead, like other Unix tools: the process ends
    // quietly. Children are unaffected (std resets SIGPIPE for them anyway),
    // and the watchdog still stops emulators if kmatrix dies this way.
    // SAFETY: called first thing, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    // Install the SIGINT/SIGTERM flag before any child starts.
    crate::process::interrupted();
    let ctx = Ctx {
        layers: Layers { dir: Some(cli.dir.clone().unwrap_or_else(|| PathBuf::from("."))), no_builtin: false },
        cache: Cache::new(cli.cache_dir.clone()),
        gem5: cli.gem5.clone(),
    };
    let result = match cli.command {
        Cmd::Check(a) => check::run(&ctx, a),
        Cmd::List(a) => list::run(&ctx, a),
        Cmd::Show(a) => show::run(&ctx, a),
        Cmd::Plan(a) => plan::run(&ctx, a),
        Cmd::Doctor(a) => doctor::run(&ctx, a),
        Cmd::Setup(a) => setup::run(&ctx, a),
        Cmd::Build(a) => build::run(&ctx, a),
        Cmd::Boot(a) => boot::run(&ctx, a),
        Cmd::Sweep(a) => sweep::run(&ctx, a),
        Cmd::Run(a) => run::run(&ctx, a),
        Cmd::Merge(a) => merge::run(&ctx, a),
        Cmd::Export(a) => export::run(&ctx, a),
        Cmd::Report(a) => report::run(&ctx, a),
        Cmd::History(a) => history::run(&ctx, a),
        Cmd::Cache(a) => cache::run(&ctx, a),
        Cmd::Debug(a) => debug::run(&ctx, a),
        Cmd::Module(a) => module::run(&ctx, a),
        Cmd::Emulator(a) => emulator::run(&ctx, a),
        Cmd::Rootfs(a) => rootfs::run(&ctx, a),
        Cmd::Snapshot(a) => snapshot::run(&ctx, a),
        Cmd::Ssh(a) => ssh::run(&ctx, a),
        Cmd::Completions(a) => completions::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

fn report(e: &Error) -> i32 {
    if let Error::Descriptors(diags) = e {
        for d in diags {
            eprintln!("{}\n", d.render());
        }
    }
    eprintln!("error: {e}");
    e.exit_code()
}

pub(crate) const OK: i32 = exit::OK;

/// Whether to colour what goes to a stream: only on a terminal, and never
/// when `NO_COLOR` is set to a non-empty value (<https://no-color.org>).
/// Every coloured output decides through this.
pub fn colour(stream_is_tty: bool) -> bool {
    colour_with(stream_is_tty, std::env::var_os("NO_COLOR").as_deref())
}

/// [`colour`] with the value of `NO_COLOR` given.
pub fn colour_with(stream_is_tty: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stream_is_tty && no_color.is_none_or(|v| v.is_empty())
}

/// `--format` of the commands that print a table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable table (text).
    #[default]
    #[value(alias = "text")]
    Table,
    /// One JSON document on stdout (an object or an array), snake_case keys.
    Json,
}

/// Prints `v` as one pretty JSON document on stdout.
pub fn print_json<T: serde::Serialize + ?Sized>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serialises to JSON"));
}
