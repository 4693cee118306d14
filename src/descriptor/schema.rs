//! The on-disk shape of every descriptor, exactly as TOML spells it.
//!
//! These `Raw*` types are only a parsing contract: `deny_unknown_fields` turns
//! a misspelt key into an error with a span, and `Spanned` keeps the location
//! of every value that a later cross-check may have to blame. Nothing outside
//! `descriptor` sees them; `resolve` turns them into the model types.
//!
//! Enums are externally tagged tables (`[qemu]` / `[gem5]`) and nothing is
//! `flatten`ed or `untagged`: both lose spans and disable unknown-key checks.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub type S<T> = Spanned<T>;

/// `arches/<id>.toml`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawArch {
    pub description: Option<String>,
    #[serde(default)]
    pub aliases: Vec<S<String>>,
    /// Kbuild's `ARCH=`.
    pub kernel_arch: S<String>,
    /// GNU triple, checked with target-lexicon.
    pub triple: S<String>,
    pub endian: S<String>,
    pub default_board: Option<S<String>>,
    /// Debian's name for the architecture (busybox-static packages).
    pub debian_arch: Option<S<String>>,
    pub kernel: RawArchKernel,
    pub gdb: RawGdb,
    #[serde(default)]
    pub profiles: BTreeMap<String, RawArchProfile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawArchKernel {
    pub make_targets: Vec<S<String>>,
    pub image: S<String>,
    /// Values for a kernel version range (only `config` at the arch level).
    #[serde(default)]
    pub when: Vec<S<RawKernelWhen>>,
}

/// `[[kernel.when]]`: values that hold for kernels in a version range. Every
/// matching entry applies, in file order: lists and paths replace the
/// board's, config lines are merged after the board's own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawKernelWhen {
    /// A version range: `>=6.5`, `>=6.1, <6.12`.
    pub kernel: S<String>,
    pub make_targets: Option<Vec<S<String>>>,
    pub image: Option<S<String>>,
    pub dtb: Option<S<String>>,
    pub config: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawGdb {
    pub architecture: S<String>,
    pub mips_abi: Option<S<String>>,
    pub breakpoint: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawArchProfile {
    /// Extra kernel config lines this arch needs for the profile.
    pub config: Option<S<String>>,
}

/// `boards/<id>.toml`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawBoard {
    pub description: Option<String>,
    pub arch: S<String>,
    pub console: S<String>,
    pub cmdline: S<String>,
    pub poweroff: S<String>,
    pub defconfig: S<String>,
    pub timeout: S<String>,
    pub memory: S<String>,
    #[serde(default)]
    pub host_packages: Vec<S<String>>,
    /// Kernel versions the board can run (a range); cells outside are skips.
    pub kernels: Option<S<String>>,
    pub kernel: RawBoardKernel,
    /// Extra kernel config lines this board needs for a profile (the
    /// `debug` profile's lab devices: NIC, virtio transport).
    #[serde(default)]
    pub profiles: BTreeMap<String, RawArchProfile>,
    pub qemu: Option<S<RawQemu>>,
    pub gem5: Option<S<RawGem5>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawBoardKernel {
    pub base: S<String>,
    #[serde(default)]
    pub fragments: Vec<S<String>>,
    /// Kernel config lines (`CONFIG_X=y`, `# CONFIG_X is not set`).
    pub config: Option<S<String>>,
    /// Overrides the arch's make targets.
    pub make_targets: Option<Vec<S<String>>>,
    /// Overrides the arch's image path.
    pub image: Option<S<String>>,
    pub dtb: Option<S<String>>,
    pub initramfs: Option<S<String>>,
    #[serde(default)]
    pub when: Vec<S<RawKernelWhen>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawQemu {
    pub binary: S<String>,
    pub machine: S<String>,
    pub cpu: Option<S<String>>,
    pub smp: Option<S<u32>>,
    #[serde(default)]
    pub extra_args: Vec<S<String>>,
    /// Lab devices: the arguments that attach a 9p share, a user-mode NIC
    /// and a disk on this machine (placeholders in `{}`).
    pub share: Option<RawQemuDevice>,
    pub net: Option<RawQemuDevice>,
    pub disk: Option<RawQemuDevice>,
    /// KGDB's serial line: the arguments that attach it to a loopback port
    /// (`{port}`) and its tty in the guest (`kgdboc=`).
    pub kgdb: Option<RawQemuKgdb>,
    /// Post-mortem dumps (`--dump`): the devices a dump needs, or why this
    /// machine cannot give one.
    pub dump: Option<RawQemuDump>,
    /// The machine as a LAVA `qemu` device (`kmatrix export lava`), or why
    /// LAVA cannot run it.
    pub lava: Option<RawQemuLava>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawQemuLava {
    /// LAVA's name of the arch (`context: arch:`; its qemu template picks
    /// the binary by it).
    pub arch: Option<S<String>>,
    /// More of the job's `context:` (cpu, machine, no_kvm, ...).
    #[serde(default)]
    pub context: std::collections::BTreeMap<String, S<toml::Value>>,
    /// QEMU arguments beyond LAVA's own (`context: extra_options:`).
    #[serde(default)]
    pub extra_options: Vec<S<String>>,
    pub unsupported: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawQemuDump {
    #[serde(default)]
    pub args: Vec<S<String>>,
    pub unsupported: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawQemuKgdb {
    pub args: Vec<S<String>>,
    pub tty: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawQemuDevice {
    pub args: Vec<S<String>>,
    /// Disks: the guest names them in the reverse of the order they are
    /// created (virtio-mmio on virt), so kmatrix creates them reversed.
    #[serde(default)]
    pub reversed: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawGem5 {
    pub isa: S<String>,
    /// Binary variant inside `build/<ISA>/`.
    pub variant: Option<S<String>>,
    pub script: S<String>,
    pub args: Vec<S<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, S<String>>,
    /// Added when the CPU must wait for a debugger.
    #[serde(default)]
    pub halted_args: Vec<S<String>>,
    /// Added when the boot takes a checkpoint (the init asks for it after
    /// the boot marker).
    #[serde(default)]
    pub checkpoint_args: Vec<S<String>>,
    /// Added when the boot restores a checkpoint.
    #[serde(default)]
    pub restore_args: Vec<S<String>>,
    pub bootloader: Option<RawGem5Bootloader>,
    /// The SimObject path of the console's Terminal (`system.terminal` on
    /// ARM, `system.pc.com_1.device` on X86): gem5 writes the console to
    /// `m5out/<terminal>` and announces the terminal's port under that name.
    pub terminal: Option<S<String>>,
}

/// A bootloader built from gem5's tree with the board's toolchain.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawGem5Bootloader {
    /// Directory in the gem5 tree holding the makefile.
    pub source: S<String>,
    /// The file the makefile produces, e.g. `boot.arm64`.
    pub image: S<String>,
}

/// `toolchains/<id>.toml`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawToolchain {
    pub description: Option<String>,
    pub kind: S<String>,
    pub version_args: Vec<String>,
    #[serde(default)]
    pub make_vars: BTreeMap<String, S<String>>,
    pub targets: BTreeMap<String, S<RawToolchainTarget>>,
    /// The oldest compiler each kernel range builds with (the kernel's
    /// scripts/min-tool-version.sh).
    #[serde(default)]
    pub needs: Vec<S<RawNeeds>>,
    /// Combinations this toolchain cannot build or boot, and why.
    #[serde(default)]
    pub unsupported: Vec<S<RawUnsupported>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawNeeds {
    /// Kernel version range.
    pub kernel: S<String>,
    /// Compiler version range the kernel accepts.
    pub version: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawUnsupported {
    /// Arch id glob.
    pub arch: Option<S<String>>,
    /// Board id glob.
    pub board: Option<S<String>>,
    /// Kernel version range.
    pub kernel: Option<S<String>>,
    /// Shown as the skip reason.
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawToolchainTarget {
    pub cross_compile: Option<S<String>>,
    pub cc: S<String>,
    #[serde(default)]
    pub cflags: Vec<String>,
    #[serde(default)]
    pub packages: Vec<S<String>>,
}

/// `matrix.toml`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawMatrix {
    pub timeout: Option<S<String>>,
    #[serde(default)]
    pub boards: Vec<S<String>>,
    #[serde(default)]
    pub arches: Vec<S<String>>,
    pub toolchains: Vec<S<String>>,
    #[serde(default)]
    pub optional_toolchains: Vec<S<String>>,
    pub kernels: Vec<S<String>>,
    pub configs: Vec<S<String>>,
    #[serde(default)]
    pub kernel: BTreeMap<String, S<RawKernel>>,
    #[serde(default)]
    pub config: BTreeMap<String, S<RawConfig>>,
    #[serde(default)]
    pub include: Vec<S<RawRule>>,
    #[serde(default)]
    pub exclude: Vec<S<RawRule>>,
    #[serde(default, rename = "override")]
    pub overrides: Vec<S<RawOverride>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawKernel {
    /// The release the kernel is (`6.1`): selects /usr/src/linux-source-<version>
    /// when no path or url is given, and is checked against the tree.
    pub version: Option<S<String>>,
    pub path: Option<S<String>>,
    pub url: Option<S<String>>,
    pub sha256: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    pub description: Option<String>,
    /// Absent: the board's own base.
    pub base: Option<S<String>>,
    #[serde(default)]
    pub fragments: Vec<S<String>>,
    pub profile: Option<S<String>>,
    pub config: Option<S<String>>,
    /// Symbols that may be dropped by olddefconfig without failing the build.
    #[serde(default)]
    pub allow_missing: Vec<S<String>>,
}

/// Glob patterns (`*` only) on cell coordinates; an absent field matches all.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRule {
    pub board: Option<S<String>>,
    pub arch: Option<S<String>>,
    pub toolchain: Option<S<String>>,
    pub kernel: Option<S<String>>,
    pub config: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawOverride {
    pub board: Option<S<String>>,
    pub arch: Option<S<String>>,
    pub toolchain: Option<S<String>>,
    pub kernel: Option<S<String>>,
    pub config: Option<S<String>>,
    pub timeout: Option<S<String>>,
    /// Commands the guest runs after booting (through busybox sh).
    pub cmds: Option<Vec<String>>,
    /// On a panic, dump the guest's memory and read the panicking task's
    /// backtrace into the report (boards with [qemu.dump]).
    pub dump: Option<bool>,
}
