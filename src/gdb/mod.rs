//! gdb setup for a kernel: the commands that make gdb-multiarch understand a
//! vmlinux on a given arch and attach to an emulator's stub on loopback,
//! plus kmatrix's own gdb helpers (`kmatrix.py`).

use std::path::PathBuf;

use crate::command::CommandSpec;
use crate::descriptor::Arch;

#[derive(Debug, Clone)]
pub struct Attach {
    pub vmlinux: PathBuf,
    /// The kernel build directory (holds vmlinux-gdb.py for the lx-* commands).
    pub build_dir: PathBuf,
    pub port: u16,
    pub breakpoints: Vec<String>,
    /// kmatrix's gdb helpers (written by [`write_helpers`]).
    pub helpers: Option<PathBuf>,
}

/// gdb commands kmatrix adds (`kmx-module-symbols`).
pub const HELPERS_PY: &str = include_str!("kmatrix.py");

/// Writes the helper script into `dir`; returns its path.
pub fn write_helpers(dir: &std::path::Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let p = dir.join("kmatrix-gdb.py");
    std::fs::write(&p, HELPERS_PY)?;
    Ok(p)
}

/// Commands in the order gdb must see them. vmlinux is loaded first: its ELF
/// header settles architecture, endianness and (on mips) the n64 ABI, and the
/// explicit settings then pin what stubs without a target description (QEMU
/// MIPS, gem5 x86) would otherwise leave gdb to guess wrong.
pub fn setup_commands(arch: &Arch, a: &Attach) -> Vec<String> {
    let mut v = vec![
        "set pagination off".to_string(),
        "set confirm off".to_string(),
        format!("add-auto-load-safe-path {}", a.build_dir.display()),
        format!("file {}", a.vmlinux.display()),
        format!("set architecture {}", arch.gdb.architecture),
        format!("set endian {}", arch.endian.as_str()),
    ];
    if let Some(abi) = &arch.gdb.mips_abi {
        v.push(format!("set mips abi {abi}"));
    }
    v.push(format!("source {}/vmlinux-gdb.py", a.build_dir.display()));
    if let Some(h) = &a.helpers {
        v.push(format!("source {}", h.display()));
    }
    // gem5 opens its stub only once the simulation starts, seconds after
    // launch: gdb retries a refused connection until this timeout.
    v.push("set tcp connect-timeout 60".to_string());
    v.push(format!("target remote 127.0.0.1:{}", a.port));
    for b in &a.breakpoints {
        v.push(format!("{} {b}", arch.gdb.breakpoint));
    }
    v
}

/// `gdb-multiarch` with the setup commands as `-ex` arguments.
pub fn command(arch: &Arch, a: &Attach, batch: bool, extra: &[String]) -> CommandSpec {
    let mut c = CommandSpec::new("gdb-multiarch").args(["-nx", "-q"]);
    if batch {
        c = c.arg("-batch");
    }
    for cmd in setup_commands(arch, a).into_iter().chain(extra.iter().cloned()) {
        c = c.args(["-ex".to_string(), cmd]);
    }
    c
}
