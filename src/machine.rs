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
    let req = Request { arch, board, toolchain: tc, inputs, source: &src, allow_config_mismatch: o.allow_config_mismatch };
    build::build(cache, &req, &jobs, say)
}

pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}
