//! Compiles `init.c` into a static binary for a board's arch with the `cc`
//! crate and the toolchain's compiler, cached by (source, compiler, flags).

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::cache::Cache;
use crate::descriptor::{Arch, Toolchain};
use crate::error::{Error, Result};
use crate::host;

pub const INIT_C: &str = include_str!("init.c");

/// Returns the path of a static init for this arch, building it if needed.
pub fn build(cache: &Cache, arch: &Arch, tc: &Toolchain) -> Result<PathBuf> {
    let t = tc.target(&arch.id)?;
    let cc = host::which(&t.cc).ok_or_else(|| Error::MissingTool { tool: t.cc.clone(), package: t.packages.first().cloned() })?;
    let identity = crate::build::tool_version(&cc, &tc.version_args);
    let key = hex::encode(Sha256::digest(format!("{INIT_C}\0{}\0{identity}\0{}\0-Os -static -no-pie", cc.display(), t.cflags.join(" ")).as_bytes()));
    cache.artifact("inits", &key, "init", &|tmp| {
        let src = tmp.with_extension("c");
        std::fs::write(&src, INIT_C).map_err(Error::io(format!("cannot write {}", src.display())))?;
        // cc resolves flags for the target triple; the toolchain's compiler
        // and cflags (clang's --target) are the authority, so defaults stay off.
        let tool = cc::Build::new()
            .compiler(&cc)
            .target(&arch.triple)
            .host(&arch.triple)
            .opt_level_str("s")
            .debug(false)
            .cargo_metadata(false)
            .cargo_warnings(false)
            .warnings(false)
            .no_default_flags(true)
            .flags(&t.cflags)
            .try_get_compiler()
            .map_err(|e| Error::Infra(format!("cannot set up {} for {}: {e}", cc.display(), arch.triple)))?;
        let mut cmd = tool.to_command();
        // Not stripped: instruction counting finds kmx_marker_reached in
        // the symbol table. -no-pie: its address must be the same in every
        // boot (a static PIE is loaded at a random base).
        cmd.args(["-Os", "-static", "-no-pie", "-o"]).arg(tmp).arg(&src);
        let out_put = crate::process::output(cmd, &cc.display().to_string());
        let _ = std::fs::remove_file(&src);
        let out_put = out_put?;
        if !out_put.success() {
            return Err(Error::Infra(format!(
                "compiling the init for {} with {} failed (is the cross libc installed? Debian: {}):\n{}",
                arch.id,
                cc.display(),
                t.packages.join(" "),
                String::from_utf8_lossy(&out_put.stderr)
            )));
        }
        Ok(())
    })
}
