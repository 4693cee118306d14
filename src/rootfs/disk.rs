//! Disk roots: kmatrix's userland (init, busybox, init scripts) as an ext4
//! image, made without mounting or root privileges (`mke2fs -d` copies a
//! staged directory), cached by content; the qcow2 overlay a boot writes
//! to, so the image itself is never changed by a boot; and conf disks, the
//! small read-only disks that carry a boot's configuration to an init that
//! has no initramfs (a disk root, a restored snapshot).

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::image::{self, Entry};
use crate::cache::Cache;
use crate::command::CommandSpec;
use crate::error::{Error, Result};

/// Builds (or finds in the cache) the ext4 root image of `spec`'s userland.
pub fn build(cache: &Cache, spec: &image::Spec, size_mib: u64) -> Result<PathBuf> {
    // No /kmatrix.conf in the image: each boot brings its own on a conf
    // disk, so one image serves every boot.
    let entries = image::entries(spec, false)?;
    let mut h = Sha256::new();
    h.update(format!("{entries:?}\0{size_mib}").as_bytes());
    let key = hex::encode(h.finalize());
    cache.artifact("rootfs", &key, "root.ext4", &|tmp| {
        let dir = tmp.parent().unwrap_or(Path::new("."));
        let stage = tempfile::Builder::new().prefix("stage").tempdir_in(dir).map_err(Error::io("cannot make a staging directory"))?;
        for e in &entries {
            stage_entry(stage.path(), e)?;
        }
        let _ = std::fs::remove_file(tmp);
        let cmd = CommandSpec::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", "kmatrix-root", "-E", "root_owner=0:0", "-d"])
            .arg(stage.path().display().to_string())
            .arg(tmp.display().to_string())
            .arg(format!("{size_mib}M"));
        let res = crate::process::output_spec(&cmd).map_err(|e| e.with_package("e2fsprogs"))?;
        if !res.success() {
            return Err(Error::Infra(format!("`{cmd}` failed: {}", String::from_utf8_lossy(&res.stderr).trim())));
        }
        Ok(())
    })
}

/// Writes one entry under `root`. Device nodes are left out (making them
/// needs root); the kernel's own initramfs provides the early console and
/// devtmpfs the rest.
fn stage_entry(root: &Path, e: &Entry) -> Result<()> {
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    let io = |p: &Path| Error::io(format!("cannot stage {}", p.display()));
    match e {
        Entry::Dir { path, mode } => {
            let p = at(path);
            std::fs::create_dir_all(&p).map_err(io(&p))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).map_err(io(&p))
        }
        Entry::File { path, mode, data } => {
            let p = at(path);
            std::fs::write(&p, data).map_err(io(&p))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).map_err(io(&p))
        }
        Entry::Symlink { path, target } => {
            let p = at(path);
            symlink(target, &p).map_err(io(&p))
        }
        Entry::CharDev { .. } => Ok(()),
    }
}

/// A qcow2 overlay over `image` in `run_dir`: the boot writes there.
pub fn overlay(image: &Path, run_dir: &Path) -> Result<PathBuf> {
    let out = run_dir.join("root.qcow2");
    let _ = std::fs::remove_file(&out);
    let format = if is_qcow2(image) { "qcow2" } else { "raw" };
    let cmd = CommandSpec::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", format, "-b"])
        .arg(image.display().to_string())
        .arg(out.display().to_string());
    let res = crate::process::output_spec(&cmd).map_err(|e| e.with_package("qemu-utils"))?;
    if !res.success() {
        return Err(Error::Infra(format!("`{cmd}` failed: {}", String::from_utf8_lossy(&res.stderr).trim())));
    }
    Ok(out)
}

/// qcow2 images start with "QFI\xfb"; anything else is taken as raw.
pub fn is_qcow2(file: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(file).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"QFI\xfb"
}

/// A conf disk's bytes: the init's configuration in one 4 KiB block,
/// marked so the init finds it among the block devices (`/dev/vd*`).
pub fn conf_disk(conf: &str) -> Result<Vec<u8>> {
    let mut b = format!("KMATRIX-CONF\n{conf}").into_bytes();
    if b.len() >= 4096 {
        return Err(Error::Usage(format!("the guest configuration ({} bytes with its commands) does not fit a 4 KiB conf disk", b.len())));
    }
    b.resize(4096, 0);
    Ok(b)
}
