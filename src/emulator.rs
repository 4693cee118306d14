//! Emulator command lines: a board descriptor plus boot inputs → argv.
//!
//! One backend per emulator kind, none per board: everything that differs
//! between machines comes from the board descriptor. Nothing is spawned here,
//! so the exact argv is golden-tested per board and printed by `kmatrix show`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::command::CommandSpec;
use crate::descriptor::{Board, Emulator, Gem5, Qemu};

/// What one boot feeds the emulator.
#[derive(Debug, Clone, Default)]
pub struct BootInputs {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub dtb: Option<PathBuf>,
    /// Appended to the board's command line.
    pub append: Vec<String>,
    pub memory_mib: Option<u64>,
    pub smp: Option<u32>,
    /// gdbstub on 127.0.0.1:port.
    pub gdb_port: Option<u16>,
    /// Stop the CPU at reset until a debugger continues it.
    pub halted: bool,
    /// The console is the user's terminal (QEMU's monitor muxed in: Ctrl-A x quits).
    pub interactive: bool,
    pub extra_args: Vec<String>,
    /// gem5 only: output directory (m5out) and installation.
    pub outdir: Option<PathBuf>,
    pub gem5: Option<Gem5Install>,
    pub disk_image: Option<PathBuf>,
    /// gem5: the file the guest reads with `m5 readfile`.
    pub readfile: Option<PathBuf>,
    /// gem5: the bootloader binary.
    pub bootloader: Option<PathBuf>,
    /// gem5: where checkpoints are written or restored from.
    pub checkpoint_dir: Option<PathBuf>,
    /// gem5: restore the checkpoint in `checkpoint_dir`.
    pub restore: bool,
}

/// Where a gem5 build lives: the binary and the source tree holding configs/.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Gem5Install {
    pub binary: PathBuf,
    pub root: PathBuf,
    pub version: Option<String>,
}

pub fn command(board: &Board, inputs: &BootInputs) -> CommandSpec {
    match &board.emulator {
        Emulator::Qemu(q) => qemu(board, q, inputs),
        Emulator::Gem5(g) => gem5(board, g, inputs),
    }
}

/// The board's command line plus the boot's additions.
pub fn cmdline(board: &Board, inputs: &BootInputs) -> String {
    let mut parts: Vec<&str> = board.cmdline.split_whitespace().collect();
    parts.extend(inputs.append.iter().map(String::as_str));
    parts.join(" ")
}

fn path(p: &Option<PathBuf>, placeholder: &str) -> String {
    p.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| placeholder.to_string())
}

fn qemu(board: &Board, q: &Qemu, i: &BootInputs) -> CommandSpec {
    let mut c = CommandSpec::new(&q.binary).args(["-M", &q.machine]);
    if let Some(cpu) = &q.cpu {
        c = c.args(["-cpu", cpu]);
    }
    let mem = i.memory_mib.unwrap_or(board.memory_mib);
    c = c.args(["-m".to_string(), format!("{mem}M")]);
    let smp = i.smp.unwrap_or(q.smp);
    if smp != 1 {
        c = c.args(["-smp".to_string(), smp.to_string()]);
    }
    // -nodefaults: no NIC, no VGA, no default monitor. -no-reboot: a guest
    // reboot (panic=-1 after a panic, or the board's reboot-based exit)
    // ends QEMU instead of looping; verdicts come from the console, never
    // from QEMU's exit status.
    c = c.args(["-nographic", "-nodefaults", "-no-user-config", "-no-reboot"]);
    c = c.args(["-serial", if i.interactive { "mon:stdio" } else { "stdio" }]);
    c = c.args(["-kernel".to_string(), i.kernel.display().to_string()]);
    if board.kernel.dtb.is_some() || i.dtb.is_some() {
        c = c.args(["-dtb".to_string(), path(&i.dtb, "<dtb>")]);
    }
    if let Some(initrd) = &i.initrd {
        c = c.args(["-initrd".to_string(), initrd.display().to_string()]);
    }
    c = c.args(["-append".to_string(), cmdline(board, i)]);
    if let Some(port) = i.gdb_port {
        // Loopback only: a gdbstub gives full control of the guest.
        c = c.args(["-gdb".to_string(), format!("tcp:127.0.0.1:{port}")]);
    }
    if i.halted {
        c = c.arg("-S");
    }
    c.args(q.extra_args.iter().cloned()).args(i.extra_args.iter().cloned())
}

fn gem5(board: &Board, g: &Gem5, i: &BootInputs) -> CommandSpec {
    let outdir = path(&i.outdir, "<outdir>");
    let (binary, root) = match &i.gem5 {
        Some(inst) => (inst.binary.display().to_string(), inst.root.display().to_string()),
        None => (format!("<gem5>/build/{}/gem5.{}", g.isa, g.variant), "<gem5>".to_string()),
    };
    let mem = i.memory_mib.unwrap_or(board.memory_mib);
    let mut vars: BTreeMap<&str, String> = BTreeMap::new();
    vars.insert("gem5-root", root.clone());
    vars.insert("outdir", outdir.clone());
    vars.insert("kernel", i.kernel.display().to_string());
    vars.insert("initrd", path(&i.initrd, "<initrd>"));
    vars.insert("dtb", path(&i.dtb, "<dtb>"));
    vars.insert("disk-image", path(&i.disk_image, "<disk-image>"));
    vars.insert("memory", format!("{mem}MiB"));
    vars.insert("cmdline", cmdline(board, i));
    vars.insert("gdb-port", i.gdb_port.map(|p| p.to_string()).unwrap_or_else(|| "0".into()));
    vars.insert("bootloader", path(&i.bootloader, "<bootloader>"));
    vars.insert("readfile", path(&i.readfile, "<readfile>"));
    vars.insert("checkpoint-dir", path(&i.checkpoint_dir, "<checkpoint-dir>"));
    let fill = |s: &str| {
        let mut out = s.to_string();
        for (k, v) in &vars {
            // `{name:py}`: a Python string literal, for gem5's `--param`
            // statements (which gem5 exec()s). JSON string syntax is valid
            // Python for these values.
            out = out.replace(&format!("{{{k}:py}}"), &serde_json::to_string(v).unwrap_or_default());
            out = out.replace(&format!("{{{k}}}"), v);
        }
        out
    };
    let mut c = CommandSpec::new(binary).arg(format!("--outdir={outdir}"));
    // Listeners (terminal, gdb) only when someone will connect; gem5 binds
    // them to localhost unless --allow-remote-connections is given, which
    // kmatrix never passes. The console is read from m5out/<board terminal>.
    let listen = i.gdb_port.is_some() || i.interactive;
    c = c.arg(format!("--listener-mode={}", if listen { "on" } else { "off" }));
    c = c.arg(format!("{root}/{}", g.script));
    c = c.args(g.args.iter().map(|a| fill(a)));
    if i.halted {
        c = c.args(g.halted_args.iter().map(|a| fill(a)));
    }
    if i.restore {
        c = c.args(g.restore_args.iter().map(|a| fill(a)));
    } else if i.checkpoint_dir.is_some() {
        c = c.args(g.checkpoint_args.iter().map(|a| fill(a)));
    }
    for (k, v) in &g.env {
        c = c.env(k.clone(), fill(v));
    }
    c.args(i.extra_args.iter().cloned())
}

/// How to get a gem5 for `isa` (gem5 has no Debian package): the one hint
/// every "gem5 not built" message and skip reason gives.
pub fn gem5_hint(isa: &str) -> String {
    format!("run `kmatrix emulator build gem5 --isa {isa}` or pass --gem5 <binary>")
}

pub fn gem5_missing(isa: &str) -> crate::error::Error {
    crate::error::Error::EmulatorNotInstalled { emulator: "gem5".into(), hint: gem5_hint(isa) }
}

/// Whether a silent console means a hung guest. A gem5 guest can be quiet
/// for minutes while the simulator works through the boot: only its overall
/// timeout applies.
pub fn silence_is_a_hang(board: &Board) -> bool {
    match &board.emulator {
        Emulator::Qemu(_) => true,
        Emulator::Gem5(_) => false,
    }
}

/// The emulator a board runs on and its version, for a report's header:
/// `(name, version line)`; a missing one says so instead of a version.
pub fn describe(board: &Board, gem5: &dyn Fn(&str, &str) -> Option<Gem5Install>) -> (String, String) {
    match &board.emulator {
        Emulator::Qemu(q) => {
            let v = crate::host::which(&q.binary)
                .map(|p| crate::build::tool_version(&p, &["--version".to_string()]))
                .unwrap_or_else(|| "not installed".into());
            (q.binary.clone(), v)
        }
        Emulator::Gem5(g) => {
            let v = match gem5(&g.isa, &g.variant) {
                Some(i) => format!("{} ({})", i.version.clone().unwrap_or_else(|| "gem5".into()), i.binary.display()),
                None => format!("not built: {}", gem5_hint(&g.isa)),
            };
            (format!("gem5 {} ({})", g.isa, g.variant), v)
        }
    }
}
