//! The on-disk cache: where sources, builds, rootfs images and emulator
//! builds live, and the atomic-write rule every writer follows.
//!
//! Layout under the cache root:
//!
//! ```text
//! downloads/<sha256>.tar.*      verified downloads
//! sources/<sha256>/             unpacked kernel trees (one per source hash)
//! configs/<input-hash>.json     config inputs → final build key (warm path)
//! builds/<key>/                 O= build trees with manifest.json
//! inits/<hash>/init             compiled static init programs
//! busybox/<debian-arch>/        busybox-static extracted from Debian's .deb
//! emulators/gem5-<ISA>.json     recorded gem5 installations
//! runs/<stamp>-<board>/         console logs of boots
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::emulator::Gem5Install;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
}

impl Cache {
    /// `--cache-dir`, else `$KMATRIX_CACHE_DIR`, else `$XDG_CACHE_HOME/kmatrix`,
    /// else `~/.cache/kmatrix`.
    pub fn new(explicit: Option<PathBuf>) -> Cache {
        let root = explicit
            .or_else(|| std::env::var_os("KMATRIX_CACHE_DIR").map(PathBuf::from))
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("kmatrix")))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kmatrix")))
            .unwrap_or_else(|| PathBuf::from(".kmatrix-cache"));
        Cache { root }
    }

    pub fn dir(&self, sub: &str) -> Result<PathBuf> {
        let d = self.root.join(sub);
        std::fs::create_dir_all(&d).map_err(Error::io(format!("cannot create {}", d.display())))?;
        Ok(d)
    }

    pub fn gem5_record(&self, isa: &str) -> PathBuf {
        self.root.join("emulators").join(format!("gem5-{isa}.json"))
    }

    /// A gem5 recorded by `kmatrix emulator build gem5`, if its binary exists.
    pub fn gem5(&self, isa: &str) -> Option<Gem5Install> {
        let text = std::fs::read_to_string(self.gem5_record(isa)).ok()?;
        let inst: Gem5Install = serde_json::from_str(&text).ok()?;
        inst.binary.is_file().then_some(inst)
    }
}

/// Writes a file so that readers see the old content or the new, never a
/// part: a temporary file in the same directory, fsync'd, then renamed.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(Error::io(format!("cannot create {}", dir.display())))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(Error::io(format!("cannot write in {}", dir.display())))?;
    tmp.write_all(data).and_then(|_| tmp.as_file().sync_all()).map_err(Error::io(format!("cannot write {}", path.display())))?;
    tmp.persist(path).map_err(|e| Error::Io { context: format!("cannot write {}", path.display()), source: e.error })?;
    Ok(())
}
