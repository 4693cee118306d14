//! Guest instruction counts (`--count-insns`): the TCG plugin kmatrix
//! builds for QEMU from `insns.c` with the host's C compiler (Debian ships
//! no plugins and no plugin header), the marker address it watches for
//! (read from the init's symbol table), and the counts read back from
//! QEMU's plugin log.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::cache::Cache;
use crate::error::{Error, Result};

pub const PLUGIN_C: &str = include_str!("insns.c");

/// The init's function that runs once, right before the boot marker.
pub const MARKER_SYMBOL: &str = "kmx_marker_reached";

/// What a counting boot hands its backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counting {
    /// The plugin (shared object) to load.
    pub plugin: PathBuf,
    /// Guest virtual address whose first execution ends "to the marker",
    /// with the instruction bytes found there; None for an init without
    /// the symbol (`--init`, a disk root built from another init).
    pub marker: Option<Marker>,
    /// Where the emulator writes the counts.
    pub log: PathBuf,
}

/// Where the marker function is, and how it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub address: u64,
    /// Its first bytes (at most 16): the same address may run other code
    /// (a decompressor before paging, another process).
    pub bytes: Vec<u8>,
}

/// The counts of one boot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Guest instructions executed until the marker function ran.
    pub to_marker: Option<u64>,
    /// Until the emulator exited (the guest powered off, or was stopped).
    pub total: Option<u64>,
}

/// The plugin, built once per (source, host compiler).
pub fn plugin(cache: &Cache) -> Result<PathBuf> {
    let host = target_lexicon::HOST.to_string();
    let tool = cc::Build::new()
        .target(&host)
        .host(&host)
        .opt_level(2)
        .debug(false)
        .pic(true)
        .cargo_metadata(false)
        .cargo_warnings(false)
        .try_get_compiler()
        .map_err(|e| Error::Infra(format!("no host C compiler for the instruction-counting plugin ({e}); Debian: gcc")))?;
    let cc = tool.path().to_path_buf();
    let identity = crate::build::tool_version(&cc, &["--version".to_string()]);
    let key = hex::encode(Sha256::digest(format!("{PLUGIN_C}\0{}\0{identity}", cc.display()).as_bytes()));
    cache.artifact("plugins", &key, "insns.so", &|tmp| {
        let src = tmp.with_extension("c");
        std::fs::write(&src, PLUGIN_C).map_err(Error::io(format!("cannot write {}", src.display())))?;
        let mut cmd = tool.to_command();
        cmd.args(["-shared", "-fPIC", "-O2", "-o"]).arg(tmp).arg(&src);
        let out = crate::process::output(cmd, &cc.display().to_string()).map_err(|e| e.with_package("gcc"));
        let _ = std::fs::remove_file(&src);
        let out = out?;
        if !out.success() {
            return Err(Error::Infra(format!("compiling the instruction-counting plugin with {} failed:\n{}", cc.display(), String::from_utf8_lossy(&out.stderr))));
        }
        Ok(())
    })
}

/// The address and first bytes of [`MARKER_SYMBOL`] in a static init, or
/// None when the file is not an ELF kmatrix can read or has no such symbol
/// (stripped, or not kmatrix's init): such boots count to the end only. A
/// PIE init is refused: its address changes with every boot.
pub fn marker_address(init: &Path) -> Result<Option<Marker>> {
    use object::{Object, ObjectKind, ObjectSection, ObjectSymbol};
    let data = std::fs::read(init).map_err(Error::io(format!("cannot read {}", init.display())))?;
    let Ok(file) = object::File::parse(&*data) else {
        return Ok(None);
    };
    let Some(sym) = file.symbols().find(|s| s.name() == Ok(MARKER_SYMBOL)) else {
        return Ok(None);
    };
    if file.kind() != ObjectKind::Executable {
        return Err(Error::Usage(format!("{} is position-independent: the marker's address differs in every boot, so it cannot be counted to", init.display())));
    }
    let address = sym.address();
    let bytes = sym
        .section_index()
        .and_then(|i| file.section_by_index(i).ok())
        .and_then(|sec| {
            let d = sec.data().ok()?;
            let off = usize::try_from(address.checked_sub(sec.address())?).ok()?;
            let len = (sym.size() as usize).clamp(1, 16);
            d.get(off..off.checked_add(len)?.min(d.len())).map(<[u8]>::to_vec)
        })
        .unwrap_or_default();
    Ok(Some(Marker { address, bytes }))
}

/// The counts QEMU's plugin wrote (missing ones stay None: a boot that
/// never reached the marker, or an emulator that was killed).
pub fn read(log: &Path) -> Counts {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut c = Counts::default();
    for l in text.lines() {
        let mut w = l.split_whitespace();
        if w.next() != Some("kmx-insns") {
            continue;
        }
        match (w.next(), w.next().and_then(|n| n.parse::<u64>().ok())) {
            (Some("marker"), Some(n)) => c.to_marker = c.to_marker.or(Some(n)),
            (Some("total"), Some(n)) => c.total = Some(n),
            _ => {}
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_plugin_log() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("insns.log");
        std::fs::write(&f, "kmx-insns marker 123\nsomething else\nkmx-insns total 4567\n").unwrap();
        assert_eq!(read(&f), Counts { to_marker: Some(123), total: Some(4567) });
        assert_eq!(read(&d.path().join("none")), Counts::default());
    }

    #[test]
    fn finds_the_marker_in_an_init_built_here() {
        // The host's own compiler stands in for a cross one: the same
        // source, linked static without PIE, keeps the symbol.
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("init.c");
        std::fs::write(&src, crate::rootfs::init::INIT_C).unwrap();
        let out = d.path().join("init");
        let st = std::process::Command::new("cc").args(["-Os", "-static", "-no-pie", "-o"]).arg(&out).arg(&src).status().unwrap();
        assert!(st.success());
        let a = marker_address(&out).unwrap().expect("the symbol is there");
        assert!(a.address > 0 && !a.bytes.is_empty(), "{a:?}");
        assert_eq!(marker_address(&src).unwrap(), None, "not an ELF: no marker, no error");
        let pie = d.path().join("init.pie");
        let st = std::process::Command::new("cc").args(["-Os", "-fPIE", "-pie", "-o"]).arg(&pie).arg(&src).status().unwrap();
        assert!(st.success());
        assert!(marker_address(&pie).is_err());
    }
}
