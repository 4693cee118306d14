//! The on-disk cache: where sources, builds, rootfs images and emulator
//! builds live, the atomic-write rule every writer follows, and the
//! per-entry locks that let concurrent kmatrix runs share one cache.
//!
//! Every entry that is written (an unpacked source, a build key's tree, a
//! download, busybox, an init, an initramfs, a gem5 bootloader) is written
//! under [`Cache::lock`]: a second run that needs the same entry waits for
//! the first, says so once, and then reuses what the first made; two makes
//! never run in one tree. The locks are `flock(2)` locks on files under
//! `locks/`, so the kernel releases them when their holder dies, however it
//! dies. They hold on local file systems and on NFSv4 (Linux maps `flock`
//! to NFS byte-range locks there), not on NFSv3 without lockd.
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
//! initramfs/<hash>.cpio         initramfs images linked into kernels (gem5 x86)
//! gem5-bootloaders/<hash>/      gem5 bootloaders built from the gem5 tree
//! sources/by-path/<hash>        tarball hash memo by (path, size, mtime)
//! gdb/                          kmatrix's gdb helper scripts
//! runs/<stamp>-<board>/         console logs of boots
//! locks/<entry>.lock            the per-entry locks (content: holder pid, since)
//! ```

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

    /// Takes the exclusive lock of a cache entry (`builds/<key>`,
    /// `sources/<hash>`...), waiting while another process holds it. The
    /// wait is said once through `say` (which entry, held by which pid,
    /// since when). Ctrl-C while waiting gives `Interrupted`.
    pub fn lock(&self, entry: &str, say: &dyn Fn(&str)) -> Result<EntryLock> {
        let (mut file, path) = self.lock_file(entry)?;
        let waited = match file.try_lock() {
            Ok(()) => None,
            Err(std::fs::TryLockError::WouldBlock) => {
                // The holder writes its pid just after it takes the lock: a
                // waiter that arrives in between reads an empty file, so it
                // looks again for a moment before saying it does not know.
                let mut holder = String::new();
                for _ in 0..40 {
                    holder.clear();
                    let _ = file.rewind();
                    let _ = file.read_to_string(&mut holder);
                    if holder.contains("pid=") {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(25));
                }
                say(&format!("waiting for {entry}: {}", describe_holder(holder.trim())));
                let t = Instant::now();
                loop {
                    match file.try_lock() {
                        Ok(()) => break,
                        Err(std::fs::TryLockError::WouldBlock) => {}
                        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(format!("cannot lock {}", path.display()))(e)),
                    }
                    if crate::process::is_interrupted() {
                        return Err(Error::Interrupted);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Some(t.elapsed())
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(format!("cannot lock {}", path.display()))(e)),
        };
        if let Some(w) = waited {
            say(&format!("waited {:.1}s for {entry}", w.as_secs_f64()));
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "pid={} since={now}", std::process::id());
        Ok(EntryLock { _file: file, waited })
    }

    /// A file made once per content key: `<kind>/<key16>/<file>`. The
    /// first caller (under the entry's lock) runs `make` with a temporary
    /// path in that directory and the file is renamed into place, so a
    /// concurrent or killed maker never leaves a partial one behind.
    pub fn artifact(&self, kind: &str, key: &str, file: &str, make: &dyn Fn(&Path) -> Result<()>) -> Result<PathBuf> {
        let short = &key[..key.len().min(16)];
        let dir = self.dir(kind)?.join(short);
        let out = dir.join(file);
        if out.is_file() {
            return Ok(out);
        }
        let _lock = self.lock(&format!("{kind}/{short}"), &|_| {})?;
        if out.is_file() {
            return Ok(out);
        }
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("cannot create {}", dir.display())))?;
        let tmp = dir.join(format!("{file}.tmp.{}", std::process::id()));
        let r = make(&tmp);
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r?;
        std::fs::rename(&tmp, &out).map_err(Error::io(format!("cannot write {}", out.display())))?;
        Ok(out)
    }

    /// The lock if nobody holds it now (`cache gc` skips entries in use).
    pub fn try_lock(&self, entry: &str) -> Result<Option<EntryLock>> {
        let (file, path) = self.lock_file(entry)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(EntryLock { _file: file, waited: None })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(format!("cannot lock {}", path.display()))(e)),
        }
    }

    fn lock_file(&self, entry: &str) -> Result<(std::fs::File, PathBuf)> {
        let dir = self.dir("locks")?;
        let name: String = entry.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect();
        let path = dir.join(format!("{name}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(Error::io(format!("cannot open the lock {}", path.display())))?;
        Ok((file, path))
    }

}

/// An entry's lock; released when dropped (or when the process dies, and
/// every child it was handed to with [`crate::process::inherit_fd`]).
pub struct EntryLock {
    _file: std::fs::File,
    /// How long this run waited for another holder.
    pub waited: Option<Duration>,
}

impl EntryLock {
    pub fn fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self._file.as_raw_fd()
    }
}

/// "held by pid 123 (since 12:03:04, 75s ago)" from a lock file's content.
fn describe_holder(content: &str) -> String {
    let field = |k: &str| content.split_whitespace().find_map(|w| w.strip_prefix(k)).map(str::to_string);
    let (Some(pid), since) = (field("pid="), field("since=").and_then(|s| s.parse::<u64>().ok())) else {
        return "held by another kmatrix run".into();
    };
    match since {
        Some(t) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(t);
            let day = t % 86400;
            format!("held by pid {pid} since {:02}:{:02}:{:02} UTC ({}s ago)", day / 3600, day / 60 % 60, day % 60, now.saturating_sub(t))
        }
        None => format!("held by pid {pid}"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A holder that has taken the lock but not yet written its pid (the
    /// window CI once hit) is still named once it writes it.
    #[test]
    fn a_waiter_names_a_holder_that_writes_its_pid_just_after_locking() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::new(Some(root.path().to_path_buf()));
        let (holder, path) = cache.lock_file("builds/x").unwrap();
        holder.lock().unwrap();
        let said = Arc::new(Mutex::new(Vec::new()));
        let waiter = {
            let (cache, said) = (Cache::new(Some(root.path().to_path_buf())), said.clone());
            std::thread::spawn(move || {
                let _l = cache.lock("builds/x", &|s| said.lock().unwrap().push(s.to_string())).unwrap();
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        std::fs::write(&path, "pid=4242 since=0").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        drop(holder);
        waiter.join().unwrap();
        let said = said.lock().unwrap();
        assert!(said.first().is_some_and(|l| l.starts_with("waiting for builds/x: held by pid 4242")), "{said:?}");
    }
}
