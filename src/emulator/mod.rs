//! Emulator backends: the one place that knows how each kind of emulator
//! runs a board.
//!
//! A board descriptor's `[qemu]` or `[gem5]` table is resolved into a
//! [`descriptor::Emulator`](crate::descriptor::Emulator); [`backend`] turns it
//! into a [`Backend`], and callers ask the backend instead of matching on
//! the kind: its command line, where the guest console and the gdb stub
//! appear, what it supports, how it is located or installed, which files a
//! boot stages for it and how its failures read. Each backend lives in one
//! module ([`qemu`], [`gem5`]); a new emulator is one more module, its schema
//! table and one arm in [`backend`]. Per-board facts stay in TOML.
//!
//! Nothing is spawned to build a command line, so the exact argv is
//! golden-tested per board and printed by `kmatrix show`.

pub mod gem5;
pub mod insns;
pub mod qemu;
pub mod qmp;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::command::CommandSpec;
use crate::descriptor::{Board, Emulator, Registry};
use crate::error::Result;
use crate::outcome::SkipReason;

/// What one boot feeds the emulator, whatever its kind.
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
    /// KGDB's serial line on 127.0.0.1:port (boards with `features().kgdb`).
    pub kgdb_port: Option<u16>,
    /// The console is the user's terminal.
    pub interactive: bool,
    pub extra_args: Vec<String>,
    /// The emulator's installation, for one built from source ([`Backend::locate`]).
    pub install: Option<Install>,
    /// The boot's run directory (the emulator's output directory lives there).
    pub run_dir: Option<PathBuf>,
    /// Files [`Backend::prepare`] put in place, by the placeholder names
    /// the board's argument templates use.
    pub staged: Staged,
    /// Machine state: written after the boot marker, or restored from.
    pub checkpoint: Option<Checkpoint>,
    /// Host directories shared into the guest (9p).
    pub shares: Vec<Share>,
    /// A user-mode (slirp) network.
    pub net: Option<Net>,
    /// Disks on the board's block device, in order (the first is /dev/vda).
    pub disks: Vec<Disk>,
    /// Machine snapshots (QEMU): where they are kept and the monitor socket.
    pub snapshot: Option<Snapshot>,
    /// Count guest instructions (backends with `features().insn_count`).
    pub insns: Option<insns::Counting>,
    /// `--dump`: QMP on this unix socket and the board's dump devices.
    pub dump_qmp: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The qcow2 that holds the saved machine state (not a guest disk).
    pub store: PathBuf,
    /// The QMP unix socket (in the run directory, which is 0700).
    pub qmp: PathBuf,
    /// Start from this saved snapshot.
    pub load: Option<String>,
}

/// A host directory the guest mounts at `/mnt/<tag>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub path: PathBuf,
    pub tag: String,
}

/// User-mode networking: the guest is 10.0.2.15/24, the host 10.0.2.2.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Net {
    /// TCP `(host port on 127.0.0.1, guest port)`.
    pub forwards: Vec<(u16, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub file: PathBuf,
    /// `raw` or `qcow2`.
    pub format: String,
    pub readonly: bool,
}

/// Files a backend stages for one boot, by name.
pub type Staged = BTreeMap<String, PathBuf>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub dir: PathBuf,
    /// Start from the checkpoint in `dir` instead of writing one.
    pub restore: bool,
}

/// An emulator built from source: its binary and the tree it was built in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Install {
    pub binary: PathBuf,
    pub root: PathBuf,
    pub version: Option<String>,
}

/// Looks up a recorded from-source build: `(build key, variant)` (for gem5
/// the ISA and `opt`/`fast`) → its installation.
pub type Finder<'a> = dyn Fn(&str, &str) -> Option<Install> + 'a;

/// What a backend can do beyond booting to a console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Features {
    /// Save the machine after the boot marker and start later boots from it.
    pub checkpoints: bool,
    /// Host directories shared into the guest.
    pub shares: bool,
    /// User-mode networking with forwarded ports.
    pub net: bool,
    /// Disks (and so a disk root).
    pub disks: bool,
    /// Save a running machine by name and start later boots from it.
    pub snapshots: bool,
    /// Count the guest's instructions (`--count-insns`).
    pub insn_count: bool,
    /// A serial line for KGDB (`debug --kgdb`).
    pub kgdb: bool,
}

/// How a debugger finds the emulator's gdb stub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GdbPort {
    /// kmatrix picks a free loopback port and passes it to the emulator.
    Chosen,
    /// The emulator picks one and announces it on its output, under a
    /// listener name ending with this suffix.
    Announced(String),
}

/// Why an emulator's run failed, from its own output.
pub type Explain = fn(&str) -> Option<String>;

/// What [`Backend::prepare`] may use to stage a boot's files.
pub struct Prepare<'a> {
    pub cache: &'a crate::cache::Cache,
    pub reg: &'a Registry,
    pub board: &'a Board,
    pub toolchain: &'a str,
    pub install: Option<&'a Install>,
    pub run_dir: &'a Path,
    /// The guest init's configuration (the same text the initramfs carries).
    pub init_conf: &'a str,
}

/// One kind of emulator. Every method returns data; only
/// [`Backend::interactive`] runs anything.
pub trait Backend: Sync {
    /// The name results and reports show (`qemu`, `gem5`).
    fn kind(&self) -> &'static str;
    /// One line naming the emulated machine, for `kmatrix list`.
    fn machine(&self) -> String;
    /// The descriptor facts `kmatrix list --format json` shows.
    fn facts(&self) -> BTreeMap<&'static str, String>;
    fn features(&self) -> Features;
    /// The installation a boot needs (None: a Debian package's binary on
    /// PATH, checked by [`Backend::requirements`]), or an
    /// [`Error::EmulatorNotInstalled`](crate::error::Error) saying how to get it.
    fn locate(&self, built: &Finder) -> Result<Option<Install>>;
    /// Why this board's cells cannot run on this host, as a skip reason.
    fn unavailable(&self, built: &Finder) -> Option<SkipReason> {
        match self.locate(built) {
            Err(crate::error::Error::EmulatorNotInstalled { emulator, hint }) => Some(SkipReason::EmulatorNotInstalled { emulator, hint }),
            _ => None,
        }
    }
    /// How to build the emulator when it is built from source rather than
    /// installed from a package (None).
    fn build_hint(&self) -> Option<String>;
    /// Host packages the board needs to run.
    fn requirements(&self, board: &Board) -> Vec<crate::host::Requirement>;
    /// `(name, version line)` for a report's header.
    fn describe(&self, built: &Finder) -> (String, String);
    /// Puts the files one boot needs into its run directory.
    fn prepare(&self, p: &Prepare) -> Result<Staged>;
    /// The argv of one boot.
    fn command(&self, board: &Board, inputs: &BootInputs) -> CommandSpec;
    /// Where the guest console appears when it is not the emulator's stdout.
    fn console_file(&self, run_dir: &Path) -> Option<PathBuf>;
    fn gdb_port(&self) -> GdbPort;
    /// The guest's tty for KGDB's serial line (`kgdboc=`), where there is one.
    fn kgdb_tty(&self) -> Option<String> {
        None
    }
    /// `--dump`: the extra emulator arguments a post-mortem dump needs, or
    /// why this machine cannot give one.
    fn dump_args(&self) -> std::result::Result<Vec<String>, String> {
        Err(format!("the {} backend has no guest-memory dump", self.kind()))
    }
    /// Whether a silent console means a hung guest (else only the overall
    /// timeout applies).
    fn silence_is_a_hang(&self) -> bool;
    /// Picks the line of the emulator's own output that explains a failure.
    fn explainer(&self) -> Explain;
    /// Runs a boot whose console is the user's terminal; `on_gdb_port` hears
    /// an announced gdb port. Returns the exit code for kmatrix.
    fn interactive(&self, cmd: &CommandSpec, run_dir: &Path, on_gdb_port: &mut dyn FnMut(u16)) -> Result<i32>;
    /// What the user is told before an interactive boot.
    fn interactive_banner(&self, board: &Board, run_dir: &Path) -> String;
}

/// The one place an emulator kind is matched.
pub fn backend(e: &Emulator) -> &dyn Backend {
    match e {
        Emulator::Qemu(q) => q,
        Emulator::Gem5(g) => g,
    }
}

/// The backend of a board.
pub fn of(board: &Board) -> &dyn Backend {
    backend(&board.emulator)
}

pub fn command(board: &Board, inputs: &BootInputs) -> CommandSpec {
    of(board).command(board, inputs)
}

/// The board's command line plus the boot's additions.
pub fn cmdline(board: &Board, inputs: &BootInputs) -> String {
    let mut parts: Vec<&str> = board.cmdline.split_whitespace().collect();
    parts.extend(inputs.append.iter().map(String::as_str));
    parts.join(" ")
}

pub(crate) fn path(p: &Option<PathBuf>, placeholder: &str) -> String {
    p.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| placeholder.to_string())
}

/// The emulator a board runs on and its version, for a report's header.
pub fn describe(board: &Board, built: &Finder) -> (String, String) {
    of(board).describe(built)
}
