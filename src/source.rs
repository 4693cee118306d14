//! Kernel sources: a directory, a local tarball, or an https URL with a
//! required sha256; the default is the newest /usr/src/linux-source-*.tar.xz
//! (Debian's linux-source package). Tarballs are unpacked once per content
//! hash into the cache.
//!
//! Downloads stream into a temporary file in the destination directory while
//! being hashed; only a verified file is renamed into place, so a mismatch
//! or an interrupted transfer never leaves anything that could be used.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::cache::{write_atomic, Cache};
use crate::descriptor::SourceSpec;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Source {
    /// The kernel tree (holds the top-level Makefile).
    pub dir: PathBuf,
    /// Content hash of the tarball, or a hash of the directory's path.
    pub hash: String,
    /// A user directory may change between runs: always run make on it.
    pub mutable: bool,
    /// KBUILD_BUILD_TIMESTAMP: fixed per source for reproducible builds.
    pub timestamp: String,
    pub label: String,
    /// VERSION.PATCHLEVEL.SUBLEVEL of the tree's Makefile.
    pub version: Option<crate::version::Version>,
    /// For a git working tree: the commit checked out and whether files differ from it.
    pub git: Option<Git>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Git {
    pub commit: String,
    pub dirty: bool,
}

/// `git rev-parse HEAD` and `git status --porcelain` of a working tree;
/// None when it is not one (or git is missing).
pub fn git_info(dir: &Path) -> Option<Git> {
    if !dir.join(".git").exists() {
        return None;
    }
    let run = |args: &[&str]| {
        let mut c = Command::new("git");
        c.arg("-C").arg(dir).args(args);
        crate::process::output(c, "git").ok().filter(|o| o.success()).map(|o| String::from_utf8_lossy(&o.stdout).to_string())
    };
    let commit = run(&["rev-parse", "HEAD"])?.trim().to_string();
    // Untracked files count: a new source file changes what is built.
    let dirty = !run(&["status", "--porcelain"])?.trim().is_empty();
    Some(Git { commit, dirty })
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(Error::io(format!("cannot open {}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(Error::io(format!("cannot read {}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// /usr/src/linux-source-<version>.tar.xz; without a version, the newest.
/// A missing version is an error naming its package, never another version.
pub fn system_tarball(version: Option<&str>) -> Result<PathBuf> {
    if let Some(v) = version {
        let p = PathBuf::from(format!("/usr/src/linux-source-{v}.tar.xz"));
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::MissingTool { tool: p.display().to_string(), package: Some(format!("linux-source-{v}")) })
        };
    }
    let mut found: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir("/usr/src")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            let v = name.strip_prefix("linux-source-")?.strip_suffix(".tar.xz")?;
            let key = v.split(['.', '-']).map(|x| x.parse().unwrap_or(0)).collect();
            Some((key, p))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).ok_or_else(|| Error::MissingTool {
        tool: "/usr/src/linux-source-*.tar.xz (a kernel source)".into(),
        package: Some("linux-source-6.1".into()),
    })
}

/// The version a source will have, known without unpacking it: the
/// declared one, a /usr/src tarball's name, a directory's Makefile. None
/// for other tarballs and URLs (known once unpacked).
pub fn planned_version(spec: &SourceSpec, declared: Option<&str>) -> Option<crate::version::Version> {
    use crate::version::{of_tree, Version};
    if let Some(v) = declared.and_then(Version::parse) {
        return Some(v);
    }
    match spec {
        SourceSpec::System { version } => {
            let p = system_tarball(version.as_deref()).ok()?;
            let name = p.file_name()?.to_str()?.strip_prefix("linux-source-")?.strip_suffix(".tar.xz")?.to_string();
            Version::parse(&name)
        }
        SourceSpec::Path { path } if path.is_dir() => of_tree(path),
        _ => None,
    }
}

/// What a kernel's tree is, for a plan's id: `sha256:<hex>` of a tarball
/// (or a URL's declared hash), `git:<commit>[-dirty]` of a git tree, the
/// path of any other directory; `missing: <why>` when it cannot be read.
pub fn identity(spec: &SourceSpec, cache: &Cache) -> String {
    let tarball_id = |p: &Path| tarball_hash(p, cache).map(|h| format!("sha256:{h}")).unwrap_or_else(|e| format!("missing: {e}"));
    match spec {
        SourceSpec::System { version } => match system_tarball(version.as_deref()) {
            Ok(p) => tarball_id(&p),
            Err(e) => format!("missing: {e}"),
        },
        SourceSpec::Url { sha256, .. } => format!("sha256:{sha256}"),
        SourceSpec::Path { path } if path.is_file() => tarball_id(path),
        SourceSpec::Path { path } if path.is_dir() => match git_info(path) {
            Some(g) => format!("git:{}{}", g.commit, if g.dirty { "-dirty" } else { "" }),
            None => format!("dir:{}", path.canonicalize().unwrap_or_else(|_| path.clone()).display()),
        },
        SourceSpec::Path { path } => format!("missing: {}", path.display()),
    }
}

pub fn resolve(spec: &SourceSpec, cache: &Cache, say: &dyn Fn(&str)) -> Result<Source> {
    match spec {
        SourceSpec::System { version } => tarball(&system_tarball(version.as_deref())?, cache, say),
        SourceSpec::Path { path } if path.is_dir() => directory(path),
        SourceSpec::Path { path } if path.is_file() => tarball(path, cache, say),
        SourceSpec::Path { path } => Err(Error::Usage(format!("kernel source {}: no such file or directory", path.display()))),
        SourceSpec::Url { url, sha256 } => {
            let file = fetch(url, sha256, cache, say)?;
            tarball(&file, cache, say)
        }
    }
}

fn directory(path: &Path) -> Result<Source> {
    let dir = path.canonicalize().map_err(Error::io(format!("cannot resolve {}", path.display())))?;
    if !dir.join("Makefile").is_file() || !dir.join("Kconfig").is_file() {
        return Err(Error::Usage(format!("{} is not a kernel tree (no Makefile and Kconfig)", dir.display())));
    }
    let hash = hex::encode(Sha256::digest(dir.display().to_string().as_bytes()));
    let version = crate::version::of_tree(&dir);
    let git = git_info(&dir);
    Ok(Source { label: dir.display().to_string(), dir, hash, mutable: true, timestamp: "@0".into(), version, git })
}

/// Remembers a tarball's hash by (path, size, mtime) so a warm run does not
/// re-read 140 MB.
fn tarball_hash(path: &Path, cache: &Cache) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(Error::io(format!("cannot stat {}", path.display())))?;
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
    let key = hex::encode(Sha256::digest(format!("{}\0{}\0{mtime}", path.display(), meta.len()).as_bytes()));
    let memo = cache.dir("sources/by-path")?.join(&key[..32]);
    if let Ok(h) = std::fs::read_to_string(&memo)
        && h.len() == 64 {
            return Ok(h);
        }
    let h = sha256_file(path)?;
    write_atomic(&memo, h.as_bytes())?;
    Ok(h)
}

fn tarball(path: &Path, cache: &Cache, say: &dyn Fn(&str)) -> Result<Source> {
    let (dir, hash) = unpack(path, cache, "Makefile", say)?;
    let timestamp = std::fs::metadata(dir.join("Makefile"))
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| format!("@{}", d.as_secs()))
        .unwrap_or_else(|| "@0".into());
    let version = crate::version::of_tree(&dir);
    Ok(Source { dir, hash, mutable: false, timestamp, label: path.display().to_string(), version, git: None })
}

/// Unpacks a source tarball into the cache once (content-addressed); returns
/// the tree (the directory holding `marker`) and the tarball's sha256. Also
/// used for gem5's source (marker SConstruct).
pub fn unpack(path: &Path, cache: &Cache, marker: &str, say: &dyn Fn(&str)) -> Result<(PathBuf, String)> {
    let hash = tarball_hash(path, cache)?;
    let root = cache.dir("sources")?.join(&hash[..32]);
    let _lock = cache.lock(&format!("sources/{}", &hash[..32]), say)?;
    let done = root.join(".kmatrix-complete");
    if !done.exists() {
        say(&format!("unpacking {} into {}", path.display(), root.display()));
        let sources = cache.dir("sources")?;
        let tmp = tempfile::Builder::new().prefix("unpack-").tempdir_in(&sources).map_err(Error::io("cannot create a temporary directory"))?;
        let mut tar = Command::new("tar");
        tar.arg("-xf").arg(path).arg("-C").arg(tmp.path());
        let out = crate::process::output(tar, "tar").map_err(|e| e.with_package("tar"))?;
        if !out.success() {
            return Err(Error::Infra(format!("tar -xf {} failed (exit {}): {}", path.display(), out.code, out.text().trim())));
        }
        std::fs::write(tmp.path().join(".kmatrix-complete"), &hash).map_err(Error::io("cannot write the unpack marker"))?;
        if root.exists() {
            // A half-unpacked tree from an interrupted run.
            std::fs::remove_dir_all(&root).map_err(Error::io(format!("cannot remove {}", root.display())))?;
        }
        let kept = tmp.keep();
        std::fs::rename(&kept, &root).map_err(Error::io(format!("cannot move the tree into {}", root.display())))?;
    }
    Ok((tree_dir(&root, marker)?, hash))
}

/// The tree is the root itself or its single top-level directory.
fn tree_dir(root: &Path, marker: &str) -> Result<PathBuf> {
    if root.join(marker).is_file() {
        return Ok(root.to_path_buf());
    }
    let dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(Error::io(format!("cannot list {}", root.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    match dirs.as_slice() {
        [d] if d.join(marker).is_file() => Ok(d.clone()),
        _ => Err(Error::Infra(format!("{} does not hold a source tree (no {marker})", root.display()))),
    }
}

fn url_allowed(url: &str) -> bool {
    // Plain http only to loopback (local mirrors, tests): the hash is the
    // guarantee, but there is no reason to fetch kernels in the clear.
    url.starts_with("https://") || url.starts_with("http://127.0.0.1") || url.starts_with("http://localhost")
}

/// [`download`] into the cache's `downloads/`, under the entry's lock (a
/// concurrent run fetching the same file waits and reuses it).
pub fn fetch(url: &str, sha256: &str, cache: &Cache, say: &dyn Fn(&str)) -> Result<PathBuf> {
    let dir = cache.dir("downloads")?;
    let _lock = cache.lock(&format!("downloads/{sha256}"), say)?;
    download(url, sha256, &dir, say)
}

/// Downloads `url` into `dir/<sha256>.<ext>`, verified, atomically.
pub fn download(url: &str, sha256: &str, dir: &Path, say: &dyn Fn(&str)) -> Result<PathBuf> {
    if !url_allowed(url) {
        return Err(Error::Usage(format!("refusing to download {url}: use https")));
    }
    let ext = url.rsplit('/').next().and_then(|n| n.find(".tar").map(|i| n[i..].to_string())).unwrap_or_else(|| ".tar".into());
    let dest = dir.join(format!("{sha256}{ext}"));
    if dest.is_file() && sha256_file(&dest)? == sha256 {
        return Ok(dest);
    }
    say(&format!("downloading {url}"));
    std::fs::create_dir_all(dir).map_err(Error::io(format!("cannot create {}", dir.display())))?;
    let mut resp = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .and_then(|c| c.get(url).send())
        .and_then(|r| r.error_for_status())
        .map_err(|e| Error::Infra(format!("download of {url} failed: {e}")))?;
    let mut tmp = tempfile::Builder::new().prefix(".download-").tempfile_in(dir).map_err(Error::io("cannot create a temporary file"))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = resp.read(&mut buf).map_err(|e| Error::Infra(format!("download of {url} broke off: {e}")))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        tmp.write_all(&buf[..n]).map_err(Error::io(format!("cannot write into {}", dir.display())))?;
    }
    let actual = hex::encode(h.finalize());
    if actual != sha256 {
        // Dropping `tmp` deletes the bytes: nothing unverified stays on disk.
        return Err(Error::ChecksumMismatch { what: url.to_string(), expected: sha256.to_string(), actual });
    }
    tmp.as_file().sync_all().map_err(Error::io("cannot flush the download"))?;
    tmp.persist(&dest).map_err(|e| Error::Io { context: format!("cannot write {}", dest.display()), source: e.error })?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves `body` once over HTTP on loopback; returns the URL.
    fn serve(body: &'static [u8]) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut req = [0u8; 4096];
                let _ = s.read(&mut req);
                let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = s.write_all(body);
            }
        });
        format!("http://127.0.0.1:{port}/linux-9.9.tar.xz")
    }

    #[test]
    fn tampered_download_is_rejected_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let good = hex::encode(Sha256::digest(b"the real tarball"));
        let url = serve(b"a tampered tarball");
        let err = download(&url, &good, dir.path(), &|_| {}).unwrap_err();
        assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "nothing may remain after a mismatch: {left:?}");
    }

    #[test]
    fn verified_download_lands_under_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let body: &'static [u8] = b"the real tarball";
        let good = hex::encode(Sha256::digest(body));
        let url = serve(body);
        let p = download(&url, &good, dir.path(), &|_| {}).unwrap();
        assert_eq!(p, dir.path().join(format!("{good}.tar.xz")));
        assert_eq!(std::fs::read(&p).unwrap(), body);
    }

    #[test]
    fn plain_http_elsewhere_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(download("http://example.org/x.tar.xz", &"0".repeat(64), dir.path(), &|_| {}), Err(Error::Usage(_))));
    }
}
