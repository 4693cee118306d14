//! The resolved, validated machine model that the rest of kmatrix uses.
//!
//! Every cross-reference here has been checked (a board's arch exists, a
//! toolchain target names a known arch...), so consumers index freely.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::kconfig::Fragment;
pub use crate::version::{Range, Version};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Endian {
    Little,
    Big,
}

impl Endian {
    pub fn as_str(self) -> &'static str {
        match self {
            Endian::Little => "little",
            Endian::Big => "big",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Arch {
    pub id: String,
    pub origin: String,
    pub description: String,
    pub aliases: Vec<String>,
    pub kernel_arch: String,
    pub triple: String,
    pub endian: Endian,
    pub pointer_width: u8,
    pub default_board: Option<String>,
    pub debian_arch: Option<String>,
    pub make_targets: Vec<String>,
    pub image: String,
    pub gdb: Gdb,
    /// Per-profile extra config (e.g. frame pointers for `debug`).
    pub profiles: BTreeMap<String, Fragment>,
    /// Config lines for kernel version ranges, merged into each board's.
    pub when: Vec<KernelWhen>,
}

/// Values that hold for kernels in a version range (`[[kernel.when]]`).
#[derive(Debug, Clone, Serialize)]
pub struct KernelWhen {
    pub kernel: Range,
    pub make_targets: Option<Vec<String>>,
    pub image: Option<String>,
    pub dtb: Option<String>,
    pub config: Option<Fragment>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Gdb {
    pub architecture: String,
    pub mips_abi: Option<String>,
    pub breakpoint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Poweroff {
    /// The guest powers the machine off (`reboot(RB_POWER_OFF)`).
    Poweroff,
    /// The guest reboots and `-no-reboot` turns that into an exit.
    Reboot,
    /// The init executes gem5's `m5 exit` instruction.
    M5Exit,
}

impl Poweroff {
    pub fn as_str(self) -> &'static str {
        match self {
            Poweroff::Poweroff => "poweroff",
            Poweroff::Reboot => "reboot",
            Poweroff::M5Exit => "m5-exit",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InitramfsMode {
    /// Passed to the emulator (`-initrd`).
    External,
    /// Linked into the kernel with CONFIG_INITRAMFS_SOURCE.
    Embedded,
}

/// The first step of configuring a kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "value")]
pub enum ConfigBase {
    /// A make target: tinyconfig, allnoconfig, defconfig, versatile_defconfig...
    Target(String),
    /// The board's `defconfig`.
    BoardDefconfig,
    /// A complete .config file.
    File(PathBuf),
}

impl ConfigBase {
    pub fn parse(s: &str) -> Option<ConfigBase> {
        if s == "board" {
            Some(ConfigBase::BoardDefconfig)
        } else if s.contains('/') || s.ends_with(".config") {
            Some(ConfigBase::File(PathBuf::from(s)))
        } else if matches!(s, "tinyconfig" | "allnoconfig" | "allyesconfig" | "allmodconfig" | "defconfig")
            || s.ends_with("_defconfig")
        {
            Some(ConfigBase::Target(s.to_string()))
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Board {
    pub id: String,
    pub origin: String,
    pub description: String,
    pub arch: String,
    pub console: String,
    pub cmdline: String,
    pub poweroff: Poweroff,
    pub defconfig: String,
    pub timeout: Duration,
    pub memory_mib: u64,
    pub host_packages: Vec<String>,
    /// Kernel versions the board runs; None: any.
    pub kernels: Option<Range>,
    pub kernel: BoardKernel,
    /// Config lines per profile, added after the arch's.
    pub profiles: BTreeMap<String, Fragment>,
    pub emulator: Emulator,
}

#[derive(Debug, Clone, Serialize)]
pub struct BoardKernel {
    pub base: ConfigBase,
    /// Named fragments from `fragments/`, in order.
    pub fragments: Vec<String>,
    /// The board's own lines, as a fragment named after the board.
    pub config: Option<Fragment>,
    pub make_targets: Vec<String>,
    pub image: String,
    pub dtb: Option<String>,
    pub initramfs: InitramfsMode,
    /// Applied by [`Registry::for_kernel`].
    pub when: Vec<KernelWhen>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Emulator {
    Qemu(Qemu),
    Gem5(Gem5),
}

impl Emulator {
    pub fn kind(&self) -> &'static str {
        crate::emulator::backend(self).kind()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Qemu {
    pub binary: String,
    pub machine: String,
    pub cpu: Option<String>,
    pub smp: u32,
    pub extra_args: Vec<String>,
    /// Argument templates of the lab devices (None: the machine has none).
    pub share: Option<Vec<String>>,
    pub net: Option<Vec<String>>,
    pub disk: Option<Vec<String>>,
    /// The guest names disks in the reverse of their creation order.
    pub disk_reversed: bool,
    /// KGDB's serial line (None: the board has none).
    pub kgdb: Option<Kgdb>,
    /// `--dump`: the extra arguments (Ok), or why the machine cannot (Err);
    /// None when the descriptor says nothing.
    pub dump: Option<std::result::Result<Vec<String>, String>>,
    /// `[qemu.lava]`: the machine as a LAVA device, or why not. Not part of
    /// a cell's identity: it changes nothing kmatrix itself runs.
    #[serde(skip)]
    pub lava: Option<std::result::Result<Lava, String>>,
}

/// A QEMU board as LAVA's `qemu` device type sees it.
#[derive(Debug, Clone, Default)]
pub struct Lava {
    pub arch: String,
    pub context: serde_json::Map<String, serde_json::Value>,
    pub extra_options: Vec<String>,
}

/// A serial line for KGDB: argument templates (`{port}`: the loopback TCP
/// port gdb connects to) and the guest's name for it.
#[derive(Debug, Clone, Serialize)]
pub struct Kgdb {
    pub args: Vec<String>,
    pub tty: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Gem5 {
    pub isa: String,
    pub variant: String,
    pub script: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub halted_args: Vec<String>,
    pub checkpoint_args: Vec<String>,
    pub restore_args: Vec<String>,
    pub bootloader: Option<Gem5Bootloader>,
    /// SimObject path of the console Terminal (the file in m5out, and the
    /// name gem5 announces its port under).
    pub terminal: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, Hash)]
pub struct Gem5Bootloader {
    pub source: String,
    pub image: String,
}

/// Placeholders a gem5 board may use in `args` and `env`. `{name:py}` gives
/// the value as a Python string literal (for `--param` statements).
pub const GEM5_PLACEHOLDERS: &[&str] = &[
    "gem5-root",
    "outdir",
    "kernel",
    "initrd",
    "disk-image",
    "memory",
    "cmdline",
    "gdb-port",
    "dtb",
    "bootloader",
    "readfile",
    "checkpoint-dir",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolchainKind {
    Gcc,
    Llvm,
}

#[derive(Debug, Clone, Serialize)]
pub struct Toolchain {
    pub id: String,
    pub origin: String,
    pub description: String,
    pub kind: ToolchainKind,
    pub version_args: Vec<String>,
    pub make_vars: BTreeMap<String, String>,
    /// arch id → how to target it.
    pub targets: BTreeMap<String, ToolchainTarget>,
    pub needs: Vec<Needs>,
    pub unsupported: Vec<Unsupported>,
}

/// Kernels in `kernel` build only with a compiler in `version`.
#[derive(Debug, Clone, Serialize)]
pub struct Needs {
    pub kernel: Range,
    pub version: Range,
}

/// A combination the toolchain cannot do; every given field must match.
#[derive(Debug, Clone, Serialize)]
pub struct Unsupported {
    pub arch: Option<String>,
    pub board: Option<String>,
    pub kernel: Option<Range>,
    pub reason: String,
}

impl Toolchain {
    /// This toolchain's target for an arch, or the typed error.
    pub fn target(&self, arch: &str) -> Result<&ToolchainTarget, crate::error::Error> {
        self.targets.get(arch).ok_or_else(|| crate::error::Error::ToolchainCannotBuild { toolchain: self.id.clone(), arch: arch.to_string() })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ToolchainTarget {
    pub cross_compile: Option<String>,
    pub cc: String,
    pub cflags: Vec<String>,
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    pub origin: String,
    pub timeout: Option<Duration>,
    /// Board ids, after expanding the `arches` axis to default boards.
    pub boards: Vec<String>,
    pub toolchains: Vec<String>,
    pub optional_toolchains: Vec<String>,
    pub kernels: Vec<KernelSpec>,
    /// The config axis (`configs = [...]`).
    pub configs: Vec<ConfigSpec>,
    /// Every `[config.<id>]`, listed or not: a `--filter config=<id>` or
    /// `--config <id>` may select one the axis leaves out (`defconfig`).
    pub all_configs: Vec<ConfigSpec>,
    pub include: Vec<Rule>,
    pub exclude: Vec<Rule>,
    pub overrides: Vec<Override>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelSpec {
    pub id: String,
    pub version: Option<String>,
    pub source: SourceSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum SourceSpec {
    /// /usr/src/linux-source-<version>.tar.xz (Debian's linux-source-<version>),
    /// or the newest one when no version is given.
    System { version: Option<String> },
    /// A directory or a tarball.
    Path { path: PathBuf },
    Url { url: String, sha256: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfigSpec {
    pub id: String,
    pub description: String,
    /// None: the board's base.
    pub base: Option<ConfigBase>,
    pub fragments: Vec<String>,
    pub profile: Option<String>,
    pub config: Option<Fragment>,
    pub allow_missing: Vec<String>,
}

/// Per-cell settings for the cells a rule matches (the last match wins).
#[derive(Debug, Clone, Serialize)]
pub struct Override {
    pub rule: Rule,
    pub timeout: Option<Duration>,
    pub cmds: Option<Vec<String>>,
    pub dump: Option<bool>,
}

/// Glob patterns over a cell's coordinates; `None` matches everything.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rule {
    pub board: Option<String>,
    pub arch: Option<String>,
    pub toolchain: Option<String>,
    pub kernel: Option<String>,
    pub config: Option<String>,
}

impl Rule {
    pub fn matches(&self, board: &str, arch: &str, toolchain: &str, kernel: &str, config: &str) -> bool {
        let m = |p: &Option<String>, v: &str| p.as_deref().is_none_or(|p| glob(p, v));
        m(&self.board, board) && m(&self.arch, arch) && m(&self.toolchain, toolchain) && m(&self.kernel, kernel) && m(&self.config, config)
    }
}

/// `*` matches any run of characters; everything else is literal.
pub fn glob(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == value;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !value.starts_with(first) || value.len() < first.len() + last.len() || !value.ends_with(last) {
        return false;
    }
    let mut rest = &value[first.len()..value.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Everything kmatrix knows about machines, after layering and validation.
#[derive(Debug, Clone, Serialize)]
pub struct Registry {
    pub arches: BTreeMap<String, Arch>,
    pub boards: BTreeMap<String, Board>,
    pub toolchains: BTreeMap<String, Toolchain>,
    pub fragments: BTreeMap<String, Fragment>,
    pub matrix: Option<Matrix>,
}

impl Registry {
    /// A toolchain by id, or the typed error with the closest name.
    pub fn toolchain(&self, name: &str) -> Result<&Toolchain, crate::error::Error> {
        self.toolchains.get(name).ok_or_else(|| crate::error::Error::UnknownToolchain {
            name: name.to_string(),
            suggestion: super::diag::suggest(name, "toolchains", self.toolchains.keys().map(String::as_str)),
        })
    }

    /// An arch by id or alias.
    pub fn arch(&self, name: &str) -> Option<&Arch> {
        self.arches.get(name).or_else(|| self.arches.values().find(|a| a.aliases.iter().any(|x| x == name)))
    }

    /// The registry as it holds for one kernel version: every board's
    /// `[[kernel.when]]` entries that match are applied, and its arch's
    /// config lines merged in. An unknown version applies none.
    pub fn for_kernel(&self, version: Option<&Version>) -> Registry {
        let mut reg = self.clone();
        let Some(v) = version else { return reg };
        for b in reg.boards.values_mut() {
            let arch_when = self.arches.get(&b.arch).map(|a| a.when.as_slice()).unwrap_or_default();
            for w in arch_when.iter().chain(&self.boards[&b.id].kernel.when).filter(|w| w.kernel.contains(v)) {
                if let Some(t) = &w.make_targets {
                    b.kernel.make_targets = t.clone();
                }
                if let Some(i) = &w.image {
                    b.kernel.image = i.clone();
                }
                if let Some(d) = &w.dtb {
                    b.kernel.dtb = Some(d.clone());
                }
                if let Some(c) = &w.config {
                    match &mut b.kernel.config {
                        Some(f) => f.entries.extend(c.entries.iter().cloned()),
                        None => b.kernel.config = Some(Fragment { name: b.id.clone(), ..c.clone() }),
                    }
                }
            }
        }
        reg
    }

    /// Why this board cannot run this kernel with this toolchain, if it
    /// cannot: the board's kernel range, the toolchain's `unsupported`
    /// entries, the compiler version the kernel needs. Unknown versions
    /// pass the version checks (the build then says what it says).
    pub fn incompatibility(&self, board: &Board, tc: &Toolchain, kernel: Option<&Version>, compiler: Option<&Version>) -> Option<crate::outcome::SkipReason> {
        use crate::outcome::SkipReason;
        if let (Some(r), Some(v)) = (&board.kernels, kernel)
            && !r.contains(v) {
                return Some(SkipReason::KernelOutOfRange { board: board.id.clone(), range: r.to_string(), version: v.to_string() });
            }
        for u in &tc.unsupported {
            let arch_ok = u.arch.as_deref().is_none_or(|p| glob(p, &board.arch));
            let board_ok = u.board.as_deref().is_none_or(|p| glob(p, &board.id));
            let kernel_ok = match (&u.kernel, kernel) {
                (None, _) => true,
                (Some(r), Some(v)) => r.contains(v),
                (Some(_), None) => false,
            };
            if arch_ok && board_ok && kernel_ok {
                return Some(SkipReason::Unsupported { toolchain: tc.id.clone(), reason: u.reason.clone() });
            }
        }
        if let (Some(k), Some(c)) = (kernel, compiler) {
            for n in tc.needs.iter().filter(|n| n.kernel.contains(k)) {
                if !n.version.contains(c) {
                    return Some(SkipReason::CompilerTooOld { toolchain: tc.id.clone(), version: c.to_string(), kernel: k.to_string(), needs: n.version.to_string() });
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob("gem5-*", "gem5-arm"));
        assert!(glob("*", "x"));
        assert!(glob("qemu-*-malta", "qemu-mips64el-malta"));
        assert!(!glob("qemu-*-malta", "qemu-x86_64-pc"));
        assert!(glob("exact", "exact"));
        assert!(!glob("a*a", "a"));
    }
}
