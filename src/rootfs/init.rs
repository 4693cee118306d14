//! Compiles `init.c` into a static binary for a board's arch with the `cc`
//! crate and the toolchain's compiler, cached by (source, compiler, flags).

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::cache::Cache;
use crate::descriptor::{Arch, Toolchain};
use crate::error::{Error, Result};
use crate::host;

pub const INIT_C: &str = include_str!("init.c");

/// Distinguishes concurrent builders of the same init (threads of a sweep).
fn tmp_suffix() -> String {
    format!("{}-{:?}", std::process::id(), std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "")
}

/// Returns the path of a static init for this arch, building it if needed.
pub fn build(cache: &Cache, arch: &Arch, tc: &Toolchain) -> Result<PathBuf> {
    let t = tc.target(&arch.id)?;
    let cc = host::which(&t.cc).ok_or_else(|| Error::MissingTool { tool: t.cc.clone(), package: t.packages.first().cloned() })?;
    let identity = crate::build::tool_version(&cc, &tc.version_args);
    let key = hex::encode(Sha256::digest(format!("{INIT_C}\0{}\0{identity}\0{}", cc.display(), t.cflags.join(" ")).as_bytes()));
    let dir = cache.dir("inits")?.join(&key[..16]);
    let out = dir.join("init");
    if out.is_file() {
        return Ok(out);
    }
    let _lock = cache.lock(&format!("inits/{}", &key[..16]), &|_| {})?;
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("cannot create {}", dir.display())))?;
    let src = dir.join(format!("init.{}.c", tmp_suffix()));
    std::fs::write(&src, INIT_C).map_err(Error::io(format!("cannot write {}", src.display())))?;
    // cc resolves flags for the target triple; the toolchain's compiler and
    // cflags (clang's --target) are the authority, so defaults stay off.
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
    let tmp = dir.join(format!("init.tmp.{}", tmp_suffix()));
    let mut cmd = tool.to_command();
    cmd.args(["-Os", "-static", "-s", "-o"]).arg(&tmp).arg(&src);
    let out_put = crate::process::output(cmd, &cc.display().to_string())?;
    if !out_put.success() {
        return Err(Error::Infra(format!(
            "compiling the init for {} with {} failed (is the cross libc installed? Debian: {}):\n{}",
            arch.id,
            cc.display(),
            t.packages.join(" "),
            String::from_utf8_lossy(&out_put.stderr)
        )));
    }
    let _ = std::fs::remove_file(&src);
    std::fs::rename(&tmp, &out).map_err(Error::io(format!("cannot write {}", out.display())))?;
    Ok(out)
}
