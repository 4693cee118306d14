//! Build recipes: how a kernel for one (board, toolchain, config) is
//! configured and compiled, as a list of commands.
//!
//! The builder runs exactly these commands and `kmatrix show` prints them, so
//! what a user reads is what runs. No `-j` is ever passed: parallelism comes
//! from the jobserver the runner hands to make through MAKEFLAGS.

use std::path::PathBuf;

use serde::Serialize;

use crate::command::CommandSpec;
use crate::descriptor::{Arch, Board, ConfigBase, ConfigSpec, Registry, Toolchain, ToolchainKind};
use crate::kconfig::Fragment;

/// Everything that determines a kernel configuration, resolved.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigInputs {
    /// A make target (tinyconfig, versatile_defconfig...) or a .config file.
    pub base: ConfigBase,
    /// In merge order: later fragments win.
    pub fragments: Vec<Fragment>,
    /// Symbols allowed to differ from the request in the final .config.
    pub allow_missing: Vec<String>,
    pub profile: Option<String>,
}

/// Resolves the board's and the matrix config's layers into one list.
pub fn config_inputs(reg: &Registry, arch: &Arch, board: &Board, config: Option<&ConfigSpec>) -> ConfigInputs {
    let base = match config.and_then(|c| c.base.clone()).unwrap_or_else(|| board.kernel.base.clone()) {
        ConfigBase::BoardDefconfig => ConfigBase::Target(board.defconfig.clone()),
        b => b,
    };
    let mut fragments: Vec<Fragment> = board.kernel.fragments.iter().map(|f| reg.fragments[f].clone()).collect();
    fragments.extend(board.kernel.config.clone());
    let mut profile = None;
    if let Some(c) = config {
        fragments.extend(c.fragments.iter().map(|f| reg.fragments[f].clone()));
        if let Some(p) = &c.profile {
            fragments.push(reg.fragments[p].clone());
            fragments.extend(arch.profiles.get(p).cloned());
            fragments.extend(board.profiles.get(p).cloned());
            profile = Some(p.clone());
        }
        fragments.extend(c.config.clone());
    }
    ConfigInputs {
        base,
        fragments,
        allow_missing: config.map(|c| c.allow_missing.clone()).unwrap_or_default(),
        profile,
    }
}

impl ConfigInputs {
    /// What determines the configured kernel: the base and the requested
    /// lines in merge order. Fragment names and origins are left out, so two
    /// boards asking for the same config share one build.
    pub fn identity(&self) -> impl Serialize + '_ {
        let lines: Vec<String> = self.fragments.iter().flat_map(|f| f.entries.iter().map(|e| e.line())).collect();
        (&self.base, lines, &self.allow_missing)
    }
}

/// Where a recipe runs.
#[derive(Debug, Clone)]
pub struct Paths {
    pub source: PathBuf,
    pub build: PathBuf,
}

impl Paths {
    /// Placeholders for `kmatrix show`.
    pub fn placeholders() -> Paths {
        Paths { source: PathBuf::from("<source>"), build: PathBuf::from("<build>") }
    }

    pub fn fragment_file(&self, index: usize, f: &Fragment) -> PathBuf {
        self.build.join("kmatrix-fragments").join(format!("{index:02}-{}.config", f.name))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Recipe {
    /// Variables on every make command line (ARCH, CROSS_COMPILE, LLVM, CC).
    pub make_vars: Vec<(String, String)>,
    /// Copy this file to `<build>/.config` before the first step.
    pub base_file: Option<PathBuf>,
    pub configure: Vec<CommandSpec>,
    pub build: CommandSpec,
    pub targets: Vec<String>,
}

/// Kbuild's reproducibility variables: same inputs, same bits.
pub fn reproducible_env(timestamp: &str) -> Vec<(String, String)> {
    vec![
        ("KBUILD_BUILD_TIMESTAMP".into(), timestamp.into()),
        ("KBUILD_BUILD_USER".into(), "kmatrix".into()),
        ("KBUILD_BUILD_HOST".into(), "kmatrix".into()),
    ]
}

pub fn make_vars(arch: &Arch, tc: &Toolchain, ccache: bool) -> Vec<(String, String)> {
    let t = &tc.targets[&arch.id];
    let mut v = vec![("ARCH".to_string(), arch.kernel_arch.clone())];
    if let Some(cc) = t.cross_compile.as_deref().filter(|c| !c.is_empty()) {
        v.push(("CROSS_COMPILE".into(), cc.to_string()));
    }
    for (k, val) in &tc.make_vars {
        v.push((k.clone(), val.clone()));
    }
    if ccache {
        let cc = match tc.kind {
            ToolchainKind::Gcc => format!("{}gcc", t.cross_compile.as_deref().unwrap_or("")),
            ToolchainKind::Llvm => "clang".to_string(),
        };
        v.push(("CC".into(), format!("ccache {cc}")));
    }
    v
}

pub fn recipe(
    paths: &Paths,
    arch: &Arch,
    tc: &Toolchain,
    inputs: &ConfigInputs,
    targets: &[String],
    ccache: bool,
    timestamp: &str,
) -> Recipe {
    let vars = make_vars(arch, tc, ccache);
    let env = reproducible_env(timestamp);
    let make = |goals: &[String]| {
        let mut c = CommandSpec::new("make")
            .arg("-C")
            .arg(paths.source.display().to_string())
            .arg(format!("O={}", paths.build.display()));
        for (k, v) in &vars {
            c = c.arg(format!("{k}={v}"));
        }
        for (k, v) in &env {
            c = c.env(k.clone(), v.clone());
        }
        c.args(goals.iter().cloned())
    };
    let mut configure = Vec::new();
    let base_file = match &inputs.base {
        ConfigBase::Target(t) => {
            configure.push(make(std::slice::from_ref(t)));
            None
        }
        ConfigBase::File(f) => {
            // Expand a possibly partial .config before merging.
            configure.push(make(&["olddefconfig".to_string()]));
            Some(f.clone())
        }
        ConfigBase::BoardDefconfig => unreachable!("resolved by config_inputs"),
    };
    if !inputs.fragments.is_empty() {
        // merge_config.sh -m only merges; olddefconfig then resolves
        // dependencies. (KCONFIG_ALLCONFIG + allnoconfig would force newly
        // visible symbols to n instead of their defaults.)
        let mut merge = CommandSpec::new("sh")
            .arg(paths.source.join("scripts/kconfig/merge_config.sh").display().to_string())
            .args(["-m", "-O"])
            .arg(paths.build.display().to_string())
            .arg(paths.build.join(".config").display().to_string());
        for (i, f) in inputs.fragments.iter().enumerate() {
            merge = merge.arg(paths.fragment_file(i, f).display().to_string());
        }
        configure.push(merge.cwd(paths.build.clone()));
        configure.push(make(&["olddefconfig".to_string()]));
    }
    Recipe { make_vars: vars.clone(), base_file, configure, build: make(targets), targets: targets.to_vec() }
}

/// The make targets a build runs, in order: the board's, those of other
/// boards sharing the build (`extra`), vmlinux (kept for gdb and
/// symbolisation), then by the config: `scripts_gdb` with CONFIG_GDB_SCRIPTS
/// (vmlinux-gdb.py, the lx-* commands) and `modules_prepare` with
/// CONFIG_MODULES (the linker script and headers out-of-tree modules need).
/// `enabled` says whether a symbol is `y`: the builder asks the final
/// `.config`, `kmatrix show` the requested lines ([`requested`]); the
/// config check makes the two agree.
pub fn targets(board: &Board, extra: &[String], enabled: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut t = board.kernel.make_targets.clone();
    let mut add = |x: &str| {
        if !t.iter().any(|y| y == x) {
            t.push(x.to_string());
        }
    };
    for x in extra {
        add(x);
    }
    add("vmlinux");
    if enabled("CONFIG_GDB_SCRIPTS") {
        add("scripts_gdb");
    }
    if enabled("CONFIG_MODULES") {
        add("modules_prepare");
    }
    t
}

/// Whether the requested config lines set a symbol to `y` (the last one wins).
pub fn requested(inputs: &ConfigInputs) -> impl Fn(&str) -> bool + '_ {
    move |sym: &str| {
        inputs.fragments.iter().flat_map(|f| &f.entries).rfind(|e| e.symbol == sym).is_some_and(|e| e.value.as_deref() == Some("y"))
    }
}
