//! `kmatrix debug`: gdb on a kernel in one command. Builds with the `debug`
//! profile, boots halted with `nokaslr` and a loopback gdbstub on a free
//! port, and starts gdb-multiarch with the arch's settings, the lx-* scripts
//! and a breakpoint. `--attach PORT` joins a VM started by `boot --gdb`.
//! `--kgdb` debugs through the kernel's own stub instead: the board's KGDB
//! serial line on a loopback port, `kgdboc=` and `kgdbwait`. `--kdb` puts
//! the kernel's own shell (kdb) on that line instead of gdb.

use std::path::PathBuf;

use crate::build::BuildOutcome;
use crate::cli::build::{progress, report_failure, say, BuildArgs};
use crate::cli::{select_board, Ctx};
use crate::debug::{self, Session};
use crate::error::{Error, Result};
use crate::machine::{self, BootOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub build: BuildArgs,
    #[command(flatten)]
    pub lab: crate::cli::lab::LabArgs,
    /// Breakpoint location (repeatable; default start_kernel, none with --kgdb).
    #[arg(long = "break", value_name = "LOCATION")]
    pub breaks: Vec<String>,
    /// Debug through KGDB over the board's second serial line: the kernel
    /// boots to `kgdbwait` and gdb attaches at its breakpoint.
    #[arg(long, conflicts_with = "attach")]
    pub kgdb: bool,
    /// kdb, the kernel's own debugger shell, on the KGDB serial line: the
    /// kernel stops at `kgdbwait` and the line joins your terminal (with
    /// --batch, the --ex commands run at kdb's prompt, then `go`).
    #[arg(long, conflicts_with_all = ["attach", "kgdb", "breaks"])]
    pub kdb: bool,
    /// Run without a terminal: attach, continue to the breakpoint, run the
    /// --ex commands, exit.
    #[arg(long)]
    pub batch: bool,
    /// A gdb command to run after stopping (repeatable).
    #[arg(long = "ex", value_name = "GDB-COMMAND", allow_hyphen_values = true)]
    pub ex: Vec<String>,
    /// Attach to a VM already waiting on 127.0.0.1:PORT (`kmatrix boot --gdb`).
    #[arg(long, value_name = "PORT")]
    pub attach: Option<u16>,
    /// Put a kernel module into the initramfs (/lib/modules/<name>; repeatable).
    #[arg(long = "module", value_name = "FILE.ko")]
    pub modules: Vec<PathBuf>,
    /// Run a command in the guest after boot (repeatable), e.g. an insmod.
    #[arg(long = "cmd", value_name = "COMMAND")]
    pub cmds: Vec<String>,
    #[arg(long, value_name = "ARGS")]
    pub append: Vec<String>,
    #[arg(long, short)]
    pub verbose: bool,
}

pub fn run(ctx: &Ctx, mut a: Args) -> Result<i32> {
    let reg = ctx.registry()?;
    let board = select_board(&reg, a.build.arch.as_deref(), a.build.board.as_deref())?;
    let arch = &reg.arches[&board.arch];
    if a.build.profile.is_none() {
        a.build.profile = Some("debug".into());
    }
    let backend = crate::emulator::of(board);
    let kgdb_tty = match (a.kgdb || a.kdb, backend.kgdb_tty()) {
        (false, _) => None,
        (true, Some(tty)) => Some(tty),
        (true, None) => {
            return Err(Error::Usage(format!(
                "board {} ({}) has no KGDB serial line for --{}: a QEMU board declares one as [qemu.kgdb] (args with {{port}}, and the guest's tty); `kmatrix debug` without it uses the emulator's own stub",
                board.id,
                backend.kind(),
                if a.kdb { "kdb" } else { "kgdb" }
            )))
        }
    };
    let mut opts = a.build.options()?;
    opts.work = if a.attach.is_some() { crate::preflight::Work::Attach } else { crate::preflight::Work::Debug };
    let manifest = match machine::build(&ctx.cache, &reg, board, &opts, &progress(a.verbose))? {
        BuildOutcome::Built { manifest, .. } => *manifest,
        other => return Ok(report_failure(&other)),
    };
    if !manifest.dir.join("vmlinux-gdb.py").exists() {
        say("vmlinux-gdb.py is missing (CONFIG_GDB_SCRIPTS off?): the lx-* commands will not work");
    }
    if a.kdb && !std::fs::read_to_string(manifest.dir.join(".config")).unwrap_or_default().contains("\nCONFIG_KGDB_KDB=y") {
        return Err(Error::Usage(format!("--kdb needs CONFIG_KGDB_KDB=y, which the kernel in {} does not have (the `debug` profile turns it on)", manifest.dir.display())));
    }
    if a.breaks.is_empty() && kgdb_tty.is_none() {
        // KGDB starts after start_kernel: its first stop is kgdbwait's.
        a.breaks.push("start_kernel".into());
    }
    let helpers = crate::gdb::write_helpers(&ctx.cache.root.join("gdb")).map_err(Error::io("cannot write the gdb helpers"))?;
    let mut session = Session {
        helpers: Some(helpers),
        arch,
        manifest: &manifest,
        port: 0,
        breakpoints: a.breaks.clone(),
        batch: a.batch.then(|| a.ex.clone()),
        // Under KGDB the kernel is already stopped when gdb attaches.
        continue_first: kgdb_tty.is_none(),
    };
    if let Some(port) = a.attach {
        session.port = port;
        let gdb = debug::gdb_command(&session);
        return crate::process::foreground(&gdb).map_err(|e| e.with_package("gdb-multiarch"));
    }
    let install = backend.locate(&|k: &str, v: &str| ctx.built(k, v))?;
    let port = debug::free_port()?;
    session.port = port;
    let run_dir = ctx.cache.dir("runs")?.join(format!("{}-{}-debug", machine::stamp(), board.id));
    let mut append = a.append.clone();
    // A randomised kernel never hits a breakpoint set from vmlinux.
    append.push("nokaslr".into());
    if let Some(tty) = &kgdb_tty {
        append.push(format!("kgdboc={tty},115200"));
        append.push("kgdbwait".into());
    }
    let lab = a.lab.parse()?;
    let bopts = BootOptions {
        cmds: a.cmds.clone(),
        append,
        modules: a.modules.clone(),
        install,
        gdb_port: kgdb_tty.is_none().then_some(port),
        halted: kgdb_tty.is_none(),
        kgdb_port: kgdb_tty.is_some().then_some(port),
        lab,
        ..Default::default()
    };
    let prepared = machine::prepare_boot(&ctx.cache, &reg, board, &opts.toolchain, &manifest, &bopts, &run_dir, &say)?;
    let log = run_dir.join("console.log");
    let console = prepared.console_file.clone().unwrap_or_else(|| log.clone());
    say(&format!("guest console: {}", console.display()));
    if a.kdb {
        return debug::run_kdb(&prepared.command, &log, &console, port, a.batch.then_some(&a.ex[..]), board.timeout);
    }
    let wait_for = if kgdb_tty.is_some() {
        say(&format!("KGDB serial line: 127.0.0.1:{port}; gdb attaches when the kernel waits for it"));
        Some(debug::KGDB_WAITING)
    } else {
        if backend.gdb_port() == crate::emulator::GdbPort::Chosen {
            say(&format!("gdbstub: 127.0.0.1:{port}"));
        }
        None
    };
    debug::run(&prepared.command, &log, &console, &mut session, backend, wait_for, board.timeout)
}
