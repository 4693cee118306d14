//! One machine end to end: pick the board, build its kernel, assemble the
//! initramfs, and produce the emulator command. Shared by `kmatrix build`,
//! `kmatrix boot` and (later) the sweep runner.

use std::path::PathBuf;

use crate::build::{self, BuildOutcome, Request};
use crate::cache::Cache;
use crate::descriptor::{Board, ConfigSpec, Registry, SourceSpec};
use crate::error::{Error, Result};
use crate::kconfig::{self, Fragment};
use crate::recipe;
use crate::source;

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub toolchain: String,
    /// A config of matrix.toml.
    pub config: Option<String>,
    /// A profile (fragment id + the arch's additions), e.g. `debug`.
    pub profile: Option<String>,
    pub source: Option<SourceSpec>,
    /// User fragment files, merged last.
    pub fragments: Vec<PathBuf>,
    pub allow_config_mismatch: bool,
    pub jobs: usize,
}

pub fn build(cache: &Cache, reg: &Registry, board: &Board, o: &BuildOptions, say: &dyn Fn(&str)) -> Result<BuildOutcome> {
    let arch = &reg.arches[&board.arch];
    let tc = reg.toolchains.get(&o.toolchain).ok_or_else(|| {
        Error::Usage(format!("unknown toolchain `{}`; {}", o.toolchain, crate::descriptor::diag::suggest(&o.toolchain, "toolchains", reg.toolchains.keys().map(String::as_str))))
    })?;
    let mut spec: Option<ConfigSpec> = match &o.config {
        None => None,
        Some(id) => Some(
            reg.matrix
                .as_ref()
                .and_then(|m| m.configs.iter().find(|c| &c.id == id))
                .cloned()
                .ok_or_else(|| Error::Usage(format!("unknown config `{id}` (configs come from matrix.toml)")))?,
        ),
    };
    if let Some(p) = &o.profile {
        if !reg.fragments.contains_key(p) {
            return Err(Error::Usage(format!("unknown profile `{p}`: no fragments/{p}.config")));
        }
        let s = spec.get_or_insert_with(|| ConfigSpec {
            id: "cli".into(),
            description: String::new(),
            base: None,
            fragments: vec![],
            profile: None,
            config: None,
            allow_missing: vec![],
        });
        s.profile = Some(p.clone());
    }
    let mut inputs = recipe::config_inputs(reg, arch, board, spec.as_ref());
    for f in &o.fragments {
        let text = std::fs::read_to_string(f).map_err(Error::io(format!("cannot read fragment {}", f.display())))?;
        let entries = kconfig::parse(&text).map_err(|errs| {
            let e = &errs[0];
            let line = text[..e.span.start].matches('\n').count() + 1;
            Error::Usage(format!("{}:{line}: {}", f.display(), e.message))
        })?;
        inputs.fragments.push(Fragment { name: f.file_stem().and_then(|s| s.to_str()).unwrap_or("user").to_string(), origin: f.display().to_string(), entries });
    }
    let source_spec = o.source.clone().unwrap_or(SourceSpec::System);
    let src = source::resolve(&source_spec, cache, say)?;
    let jobs = jobserver::Client::new(o.jobs.max(1)).map_err(Error::io("cannot create the make jobserver"))?;
    let req = Request { arch, board, toolchain: tc, inputs, source: &src, allow_config_mismatch: o.allow_config_mismatch, extra_targets: vec![] };
    build::build(cache, &req, &jobs, say)
}

pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// How to boot a built kernel.
#[derive(Debug, Clone, Default)]
pub struct BootOptions {
    pub cmds: Vec<String>,
    pub append: Vec<String>,
    pub init: Option<PathBuf>,
    pub busybox: Option<PathBuf>,
    pub memory_mib: Option<u64>,
    pub smp: Option<u32>,
    pub emu_args: Vec<String>,
    pub interactive: bool,
    pub gem5: Option<crate::emulator::Gem5Install>,
    pub modules: Vec<PathBuf>,
    /// gdbstub on 127.0.0.1:port.
    pub gdb_port: Option<u16>,
    /// CPU stopped at reset until the debugger continues.
    pub halted: bool,
}

/// A boot ready to run: the emulator argv and the marker nonce.
pub struct PreparedBoot {
    pub command: crate::command::CommandSpec,
    pub nonce: String,
    pub run_dir: PathBuf,
}

/// Writes the initramfs for this boot into `run_dir` and renders the
/// emulator command.
#[allow(clippy::too_many_arguments)]
pub fn prepare_boot(
    cache: &Cache,
    reg: &Registry,
    board: &Board,
    toolchain: &str,
    manifest: &build::Manifest,
    o: &BootOptions,
    run_dir: &std::path::Path,
    say: &dyn Fn(&str),
) -> Result<PreparedBoot> {
    use crate::rootfs::{busybox, image, init};
    let arch = &reg.arches[&board.arch];
    let tc = reg.toolchains.get(toolchain).ok_or_else(|| Error::Usage(format!("unknown toolchain `{toolchain}`")))?;
    let init_bin = match &o.init {
        Some(p) => p.clone(),
        None => init::build(cache, arch, tc)?,
    };
    let bb = if o.interactive || !o.cmds.is_empty() {
        match busybox::locate(cache, arch, o.busybox.as_deref()) {
            Ok(p) => Some(p),
            Err(e) if !o.interactive => {
                say(&format!("no busybox ({e}); commands run without a shell"));
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let nonce = crate::boot::nonce();
    let initrd = run_dir.join("initramfs.cpio.gz");
    let spec = image::Spec {
        init: init_bin,
        busybox: bb.clone(),
        conf: image::InitConf { nonce: nonce.clone(), poweroff: board.poweroff, cmds: o.cmds.clone(), shell: false },
        modules: o.modules.clone(),
    };
    image::write(&spec, &initrd, true)?;
    let mut append = o.append.clone();
    if o.interactive && bb.is_some() {
        // busybox init reads /etc/inittab: rcS, then a respawning shell.
        append.push("rdinit=/sbin/init".into());
    }
    let inputs = crate::emulator::BootInputs {
        kernel: manifest.image.clone(),
        initrd: Some(initrd),
        dtb: manifest.dtb.clone(),
        append,
        memory_mib: o.memory_mib,
        smp: o.smp,
        interactive: o.interactive,
        extra_args: o.emu_args.clone(),
        outdir: Some(run_dir.join("m5out")),
        gem5: o.gem5.clone(),
        gdb_port: o.gdb_port,
        halted: o.halted,
        ..Default::default()
    };
    Ok(PreparedBoot { command: crate::emulator::command(board, &inputs), nonce, run_dir: run_dir.to_path_buf() })
}

/// A unique run directory name.
pub fn stamp() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}-{:06}", now.as_secs(), now.subsec_micros())
}
