//! A static busybox for the guest: the user's own, or Debian's
//! `busybox-static` for the arch (the host's install when the arch matches,
//! else the .deb fetched with `apt-get download` and unpacked into the cache).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cache::Cache;
use crate::descriptor::Arch;
use crate::error::{Error, Result};

/// Applets linked into /bin (busybox resolves the name from argv[0]).
pub const APPLETS: &[&str] = &[
    "sh", "ash", "cat", "cp", "dd", "df", "dmesg", "echo", "env", "false", "free", "grep", "head", "hostname", "insmod",
    "kill", "ln", "ls", "lsmod", "mkdir", "mknod", "modprobe", "mount", "mv", "ps", "pwd", "readlink", "rm", "rmmod", "sed",
    "sleep", "sync", "tail", "test", "top", "touch", "true", "umount", "uname", "uptime", "vi", "wc", "awk", "find", "nc", "wget",
    "chmod", "stat", "sysctl", "init", "poweroff", "reboot", "halt", "cttyhack", "clear", "more", "less", "ip", "ifconfig",
];

pub fn host_debian_arch() -> Option<String> {
    let out = Command::new("dpkg").arg("--print-architecture").output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Finds (or fetches) busybox for an arch.
pub fn locate(cache: &Cache, arch: &Arch, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return if p.is_file() { Ok(p.to_path_buf()) } else { Err(Error::Usage(format!("--busybox {}: no such file", p.display()))) };
    }
    let deb_arch = arch.debian_arch.as_deref().ok_or_else(|| {
        Error::Usage(format!("Debian has no busybox-static for arch `{}`; pass --busybox <static busybox binary>", arch.id))
    })?;
    if host_debian_arch().as_deref() == Some(deb_arch) {
        let p = PathBuf::from("/bin/busybox");
        return if p.is_file() { Ok(p) } else { Err(Error::MissingTool { tool: "busybox".into(), package: Some("busybox-static".into()) }) };
    }
    let dir = cache.root.join("busybox").join(deb_arch);
    let bin = dir.join("bin/busybox");
    if bin.is_file() {
        return Ok(bin);
    }
    let _lock = cache.lock(&format!("busybox/{deb_arch}"), &|m| eprintln!("kmatrix: {m}"))?;
    if bin.is_file() {
        return Ok(bin);
    }
    fetch_deb(&dir, deb_arch)?;
    if bin.is_file() { Ok(bin) } else { Err(Error::Infra(format!("busybox-static:{deb_arch} has no bin/busybox"))) }
}

fn fetch_deb(dir: &Path, deb_arch: &str) -> Result<()> {
    let tmp = tempfile::tempdir().map_err(Error::io("cannot create a temporary directory"))?;
    // apt drops root privileges to `_apt` for downloads: let it write here.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777));
    let pkg = format!("busybox-static:{deb_arch}");
    let mut apt = Command::new("apt-get");
    apt.args(["download", "-q", &pkg]).current_dir(tmp.path());
    let st = crate::process::output(apt, "apt-get")?;
    if !st.success() {
        return Err(Error::Infra(format!(
            "`apt-get download {pkg}` failed: the {deb_arch} architecture may not be enabled (run `kmatrix setup`, which runs `dpkg --add-architecture {deb_arch}` and `apt-get update`), or pass --busybox"
        )));
    }
    let deb = std::fs::read_dir(tmp.path())
        .map_err(Error::io("cannot list download directory"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| Error::Infra(format!("apt-get download {pkg} produced no .deb")))?;
    let stage = tmp.path().join("x");
    let mut x = Command::new("dpkg-deb");
    x.arg("-x").arg(&deb).arg(&stage);
    let st = crate::process::output(x, "dpkg-deb")?;
    if !st.success() {
        return Err(Error::Infra(format!("dpkg-deb -x {} failed", deb.display())));
    }
    let data = std::fs::read(stage.join("bin/busybox")).map_err(Error::io("cannot read the unpacked busybox"))?;
    crate::cache::write_atomic(&dir.join("bin/busybox"), &data)?;
    std::fs::set_permissions(dir.join("bin/busybox"), std::fs::Permissions::from_mode(0o755)).map_err(Error::io("cannot make busybox executable"))?;
    Ok(())
}
