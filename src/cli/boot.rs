//! `kmatrix boot`: build (when needed) and boot a kernel; `--check` gives a
//! verdict, `--cmd` runs commands in the guest, otherwise the console is
//! the terminal.

use std::path::PathBuf;
use std::time::Duration;

use crate::boot::{self, BootSpec};
use crate::build::BuildOutcome;
use crate::cli::build::{progress, report_failure, say, BuildArgs};
use crate::cli::{select_board, Ctx};
use crate::error::{exit, Result};
use crate::machine;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub build: BuildArgs,
    #[command(flatten)]
    pub lab: crate::cli::lab::LabArgs,
    /// Boot non-interactively and print a verdict (exit 0 pass, 1 kernel failure, 2 kmatrix error).
    #[arg(long)]
    pub check: bool,
    /// Run a shell command in the guest and print its output and exit status (repeatable).
    #[arg(long = "cmd", value_name = "COMMAND")]
    pub cmds: Vec<String>,
    /// Extra kernel command-line words.
    #[arg(long, value_name = "ARGS")]
    pub append: Vec<String>,
    /// Use this static binary as /init instead of kmatrix's.
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
    /// A static busybox for the guest (default: Debian's busybox-static for the arch).
    #[arg(long, value_name = "FILE")]
    pub busybox: Option<PathBuf>,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u64>,
    #[arg(long)]
    pub smp: Option<u32>,
    /// Extra emulator argument (repeatable; passed as one argv word each).
    #[arg(long = "emu-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub emu_args: Vec<String>,
    /// Overall boot timeout in seconds (default: the board's).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Fail when the console is silent this long (seconds; 0 disables).
    #[arg(long, value_name = "SECS", default_value = "60")]
    pub no_output_timeout: u64,
    /// Cap of the console log in MiB (the console is still read and judged
    /// past it; the cut is said in the log and the result).
    #[arg(long, value_name = "MIB", default_value = "64")]
    pub console_log_limit: u64,
    /// Show the guest console while checking.
    #[arg(long)]
    pub console: bool,
    /// Print make's output while building.
    #[arg(long, short)]
    pub verbose: bool,
    /// Start halted with a gdbstub on a free loopback port and print how to
    /// attach (`kmatrix debug --attach PORT`). Implies --profile debug.
    #[arg(long, conflicts_with = "check")]
    pub gdb: bool,
    /// Put a kernel module into the initramfs (/lib/modules/<name>; repeatable).
    #[arg(long = "module", value_name = "FILE.ko")]
    pub modules: Vec<PathBuf>,
    /// Count the guest instructions executed until the boot marker and
    /// until the emulator exits (QEMU: a TCG plugin kmatrix builds).
    #[arg(long)]
    pub count_insns: bool,
    /// When the kernel panics, pause the guest, dump its memory over QMP
    /// and show the panicking task's backtrace (drgn). QEMU on boards with
    /// [qemu.dump]; with --check or --cmd. Implies --profile debug.
    #[arg(long)]
    pub dump: bool,
    /// gem5: take a checkpoint right after the boot marker, into DIR.
    #[arg(long, value_name = "DIR", conflicts_with = "restore")]
    pub checkpoint: Option<PathBuf>,
    /// gem5: start from the checkpoint in DIR (taken with --checkpoint by
    /// the same kernel); the guest then runs this boot's --cmd.
    #[arg(long, value_name = "DIR")]
    pub restore: Option<PathBuf>,
}

/// `--rootfs debian`'s default limit.
const DISTRO_TIMEOUT: Duration = Duration::from_secs(1800);

pub fn run(ctx: &Ctx, mut a: Args) -> Result<i32> {
    // gdb, the lab devices and dumps (VMCOREINFO) need the debug profile's kernel.
    if (a.gdb || a.lab.any() || a.dump) && a.build.profile.is_none() {
        a.build.profile = Some("debug".into());
    }
    let mut lab = a.lab.parse()?;
    let reg = ctx.registry()?;
    let board = select_board(&reg, a.build.arch.as_deref(), a.build.board.as_deref())?;
    if lab.distro.is_some() {
        // Made before the kernel: a missing port or tool is said at once.
        let arch = &reg.arches[&board.arch];
        let size = crate::rootfs::debian::DEFAULT_SIZE_MIB;
        let img = match crate::rootfs::debian::find(&ctx.cache, arch, None, size)? {
            Some(img) => img,
            None => crate::rootfs::debian::build(&ctx.cache, arch, None, size, &say)?,
        };
        lab.rootfs = Some(img.path);
    }
    let mut opts = a.build.options()?;
    opts.work = crate::preflight::Work::Boot;
    let interactive = !a.check && a.cmds.is_empty() && !a.count_insns;
    let backend = crate::emulator::of(board);
    if a.dump
        && let Err(why) = backend.dump_args()
    {
        // Said before a build that could take half an hour.
        return Err(crate::error::Error::Usage(format!("board `{}` cannot dump a panicked guest (--dump): {why}", board.id)));
    }
    let install = backend.locate(&|k: &str, v: &str| ctx.built(k, v))?;
    // Pre-flight for the shell: an interactive boot needs busybox (found or
    // fetched now, before a build that could take half an hour).
    if interactive && board.kernel.initramfs != crate::descriptor::InitramfsMode::Embedded {
        crate::rootfs::busybox::locate(&ctx.cache, &reg.arches[&board.arch], a.busybox.as_deref())?;
    }
    let manifest = match machine::build(&ctx.cache, &reg, board, &opts, &progress(a.verbose))? {
        BuildOutcome::Built { manifest, reused } => {
            if !reused {
                say(&format!("built in {:.0}s: {}", manifest.build_seconds, manifest.dir.display()));
            }
            manifest
        }
        other => return Ok(report_failure(&other)),
    };

    let run_dir = ctx.cache.dir("runs")?.join(format!("{}-{}", machine::stamp(), board.id));
    let (checkpoint, restore) = machine::checkpoint_dirs(board, &manifest, a.checkpoint.as_deref(), a.restore.as_deref())?;
    let gdb_port = if a.gdb { Some(crate::debug::free_port()?) } else { None };
    let mut append = a.append.clone();
    if a.gdb {
        append.push("nokaslr".into());
    }
    let bopts = machine::BootOptions {
        cmds: a.cmds.clone(),
        append,
        init: a.init.clone(),
        busybox: a.busybox.clone(),
        memory_mib: a.memory,
        smp: a.smp,
        emu_args: a.emu_args.clone(),
        interactive,
        install,
        modules: a.modules.clone(),
        gdb_port,
        halted: a.gdb,
        kgdb_port: None,
        checkpoint,
        restore,
        lab,
        count_insns: a.count_insns,
        dump: a.dump,
    };
    let prepared = machine::prepare_boot(&ctx.cache, &reg, board, &opts.toolchain, &manifest, &bopts, &run_dir, &say)?;
    let (cmd, nonce) = (prepared.command, prepared.nonce);
    let sel = match (&a.build.arch, &a.build.board) {
        (_, Some(b)) => format!("--board {b}"),
        (Some(x), None) => format!("--arch {x}"),
        _ => String::new(),
    };
    let attach_hint = |port: u16| {
        say(&format!("the machine waits for a debugger on 127.0.0.1:{port}; attach with:"));
        say(&format!("  kmatrix debug {sel} --attach {port}"));
    };
    // An announced port is only known once the emulator runs.
    if let (Some(port), crate::emulator::GdbPort::Chosen) = (gdb_port, backend.gdb_port()) {
        attach_hint(port);
    }
    if let Some(s) = &prepared.ssh {
        say(&format!("ssh into the guest once it is up: kmatrix ssh {sel}   (or: {})", s.command_line()));
    }
    if interactive {
        say(&backend.interactive_banner(board, &run_dir));
        say(&format!("{cmd}"));
        return backend.interactive(&cmd, &run_dir, &mut |port| attach_hint(port));
    }
    let probe = prepared.ssh.as_ref().map(|s| boot::distro::Probe { ssh: s.clone(), cmds: a.cmds.clone(), poweroff: board.poweroff.as_str().to_string() });
    // A whole OS under TCG takes minutes (cloud-init, sshd's host keys),
    // and its console may rest while it works.
    let timeout = a.timeout.map(Duration::from_secs).unwrap_or(if probe.is_some() { DISTRO_TIMEOUT } else { board.timeout });
    let no_output = (a.no_output_timeout > 0 && backend.silence_is_a_hang() && probe.is_none()).then(|| Duration::from_secs(a.no_output_timeout));
    let vmcore = run_dir.join("vmcore");
    let at_panic: Option<boot::PanicHook> = prepared.dump_qmp.clone().map(|q| -> boot::PanicHook {
        let out = vmcore.clone();
        Box::new(move || crate::postmortem::pause_and_dump(&q, &out))
    });
    let r = boot::run(&BootSpec { command: cmd, nonce, timeout, no_output_timeout: no_output, log: run_dir.join("console.log"), echo: a.console, console_file: prepared.console_file.clone(), cmds: a.cmds.len(), log_limit: a.console_log_limit << 20, explain: prepared.explain, at_snapshot: prepared.at_snapshot, probe, at_panic })?;

    print_result(&r, &a.cmds, &board.id);
    if a.dump {
        let d = match &r.dumped {
            None => crate::postmortem::Dump { error: Some("the kernel did not panic: nothing dumped".into()), ..Default::default() },
            Some(Err(e)) => crate::postmortem::Dump { error: Some(format!("no dump: {e}")), ..Default::default() },
            Some(Ok(bytes)) => crate::postmortem::analyze(&ctx.cache, &vmcore, *bytes, &manifest.vmlinux, &say),
        };
        print_dump(&d);
    }
    if let Some(log) = &prepared.insns_log {
        let c = crate::emulator::insns::read(log);
        let n = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        println!("instructions: to the marker {}, to the end {} ({})", n(c.to_marker), n(c.total), log.display());
    }
    Ok(if r.outcome.passed() { exit::OK } else { exit::KERNEL_FAILURE })
}


/// The guest commands' output, the verdict line, warnings and the log path.
fn print_result(r: &boot::BootResult, cmds: &[String], board: &str) {
    for c in &r.cmds {
        let cmd = cmds.get(c.index).map(String::as_str).unwrap_or("?");
        println!("$ {cmd}");
        print!("{}", c.output);
        if !c.output.is_empty() && !c.output.ends_with('\n') {
            println!();
        }
        println!("[exit status {}]", c.status);
    }
    let name = r.outcome.verdict.name().to_uppercase();
    let verdict = match &r.outcome.detail {
        Some(d) => format!("{name}  {d}"),
        None => name,
    };
    let marker = match (r.login_at, r.ssh_at) {
        (None, None) => r.boot_to_marker.map(|d| format!("boot to marker {:.2}s, ", d.as_secs_f64())).unwrap_or_default(),
        (login, ssh) => {
            let t = |d: Option<Duration>| d.map(|d| format!("{:.1}s", d.as_secs_f64())).unwrap_or_else(|| "-".into());
            format!("login prompt {}, ssh {}, systemd {}, ", t(login), t(ssh), r.system_state.as_deref().unwrap_or("-"))
        }
    };
    println!("{verdict}  {} ({}{}total {:.2}s)", board, r.uname.as_deref().map(|u| format!("{u}; ")).unwrap_or_default(), marker, r.total.as_secs_f64());
    for w in &r.warnings {
        println!("  warning: {w}");
    }
    println!("console log: {}", r.log.display());
}

/// The dump and the panicking task's frames.
fn print_dump(d: &crate::postmortem::Dump) {
    if let Some(v) = &d.vmcore {
        println!("dump: {} ({} MiB)", v.display(), d.bytes >> 20);
    }
    if let Some(t) = &d.task {
        println!("panicking task: {t}");
    }
    for (i, f) in d.frames.iter().enumerate() {
        println!("  #{i:<2} {f}");
    }
    if let Some(e) = &d.error {
        println!("dump: {e}");
    }
}
