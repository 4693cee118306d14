//! The lab options shared by `boot` and `debug`: `--share`, `--net`,
//! `--forward`, `--disk`, parsed into the emulator's inputs.

use std::path::PathBuf;

use crate::emulator::{Disk, Net, Share};
use crate::machine::Lab;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, clap::Args)]
pub struct LabArgs {
    /// Share a host directory into the guest over 9p, mounted at
    /// /mnt/TAG (default tag host0, host1, ...; repeatable). Implies
    /// --profile debug.
    #[arg(long = "share", value_name = "HOST_DIR[:TAG]")]
    pub shares: Vec<String>,
    /// Give the guest a network: `user` (QEMU's user-mode network; the
    /// guest is 10.0.2.15, the host 10.0.2.2). Implies --profile debug.
    #[arg(long, value_name = "user")]
    pub net: Option<String>,
    /// Forward a TCP port on the host's 127.0.0.1 to a guest port
    /// (repeatable; implies --net user).
    #[arg(long = "forward", value_name = "HOST_PORT:GUEST_PORT")]
    pub forwards: Vec<String>,
    /// Attach a disk image on the board's block device (/dev/vda, vdb, ...
    /// in order; repeatable). Implies --profile debug.
    #[arg(long = "disk", value_name = "FILE[,format=raw|qcow2][,readonly]")]
    pub disks: Vec<String>,
    /// Boot this ext4 image (`kmatrix rootfs build`) as the root, /dev/vda,
    /// with no initramfs; the boot writes to a qcow2 overlay, never to the
    /// image. `debian`: a whole Debian (`kmatrix rootfs debian`, made when
    /// missing) with systemd, a cloud-init seed and ssh on a forwarded
    /// loopback port (`kmatrix ssh`). Implies --profile debug.
    #[arg(long, value_name = "IMG|debian")]
    pub rootfs: Option<PathBuf>,
    /// The guest's hostname (`--rootfs debian`; default kmx-<arch>).
    #[arg(long, value_name = "NAME", requires = "rootfs")]
    pub hostname: Option<String>,
    /// After the --cmd commands, save the machine under NAME (QEMU; kept
    /// per board and kernel build). Implies --profile debug.
    #[arg(long, value_name = "NAME", conflicts_with = "snapshot_load")]
    pub snapshot_save: Option<String>,
    /// Start from the snapshot NAME; the restored guest runs this boot's
    /// --cmd commands. Implies --profile debug.
    #[arg(long, value_name = "NAME")]
    pub snapshot_load: Option<String>,
}


impl LabArgs {
    /// Whether any lab device is asked for (they need the lab kernel).
    pub fn any(&self) -> bool {
        !self.shares.is_empty() || self.net.is_some() || !self.forwards.is_empty() || !self.disks.is_empty() || self.rootfs.is_some() || self.snapshot_save.is_some() || self.snapshot_load.is_some()
    }

    pub fn parse(&self) -> Result<Lab> {
        let shares = self.shares.iter().enumerate().map(|(n, s)| share(n, s)).collect::<Result<Vec<_>>>()?;
        let mut seen = std::collections::BTreeSet::new();
        for s in &shares {
            if !seen.insert(&s.tag) {
                return Err(Error::Usage(format!("--share: the tag `{}` is used twice", s.tag)));
            }
        }
        let net = match self.net.as_deref() {
            None if self.forwards.is_empty() => None,
            None | Some("user") => Some(Net { forwards: self.forwards.iter().map(|f| forward(f)).collect::<Result<_>>()? }),
            Some("tap") | Some("bridge") => {
                return Err(Error::Usage(
                    "--net tap/bridge is not supported: it needs CAP_NET_ADMIN and a host bridge; use --net user (with --forward for inbound ports)".into(),
                ))
            }
            Some(other) => return Err(Error::Usage(format!("--net {other}: expected `user`"))),
        };
        let disks = self.disks.iter().map(|d| disk(d)).collect::<Result<Vec<_>>>()?;
        let debian = self.rootfs.as_deref() == Some(std::path::Path::new("debian"));
        if let Some(h) = &self.hostname
            && !crate::boot::distro::valid_hostname(h)
        {
            return Err(Error::Usage(format!("--hostname {h:?}: letters, digits and '-' only, at most 63")));
        }
        if self.hostname.is_some() && !debian {
            return Err(Error::Usage("--hostname goes with --rootfs debian (cloud-init sets it)".into()));
        }
        let rootfs = match &self.rootfs {
            _ if debian => None,
            Some(p) if p.is_file() => Some(p.canonicalize().map_err(Error::io(format!("--rootfs {}", p.display())))?),
            Some(p) => return Err(Error::Usage(format!("--rootfs {}: no such image (make one with `kmatrix rootfs build --arch <arch>`, or say `--rootfs debian`)", p.display()))),
            None => None,
        };
        let distro = debian.then(|| crate::machine::Distro { hostname: self.hostname.clone() });
        Ok(Lab { shares, net, disks, rootfs, distro, snapshot_save: self.snapshot_save.clone(), snapshot_load: self.snapshot_load.clone() })
    }
}

fn share(n: usize, s: &str) -> Result<Share> {
    // A tag is what follows the last ':' when it is a valid tag, so a
    // directory with a ':' in its name still works without one.
    let (dir, tag) = match s.rsplit_once(':') {
        Some((d, t)) if !d.is_empty() && valid_tag(t) => (d, t.to_string()),
        _ => (s, format!("host{n}")),
    };
    let path = PathBuf::from(dir);
    if !path.is_dir() {
        return Err(Error::Usage(format!("--share {s}: {dir} is not a directory")));
    }
    let path = path.canonicalize().map_err(Error::io(format!("--share {s}")))?;
    Ok(Share { path, tag })
}

/// 9p mount tags: short, and safe in a QEMU option and a guest path.
fn valid_tag(t: &str) -> bool {
    !t.is_empty() && t.len() <= 31 && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn forward(f: &str) -> Result<(u16, u16)> {
    let bad = || Error::Usage(format!("--forward {f}: expected HOST_PORT:GUEST_PORT (1-65535 each)"));
    let (h, g) = f.split_once(':').ok_or_else(bad)?;
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
    Ok((port(h)?, port(g)?))
}

fn disk(d: &str) -> Result<Disk> {
    let mut parts = d.split(',');
    let file = PathBuf::from(parts.next().unwrap_or_default());
    let (mut format, mut readonly) = (None, false);
    for p in parts {
        match p {
            "readonly" | "readonly=on" => readonly = true,
            "format=raw" => format = Some("raw"),
            "format=qcow2" => format = Some("qcow2"),
            other => return Err(Error::Usage(format!("--disk {d}: unknown option `{other}` (format=raw|qcow2, readonly)"))),
        }
    }
    if !file.is_file() {
        return Err(Error::Usage(format!("--disk {d}: no file {}", file.display())));
    }
    let file = file.canonicalize().map_err(Error::io(format!("--disk {d}")))?;
    let format = match format {
        Some(f) => f.to_string(),
        None => if crate::rootfs::disk::is_qcow2(&file) { "qcow2" } else { "raw" }.to_string(),
    };
    Ok(Disk { file, format, readonly })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(shares: &[&str], net: Option<&str>, fwd: &[&str]) -> LabArgs {
        LabArgs { shares: shares.iter().map(|s| s.to_string()).collect(), net: net.map(String::from), forwards: fwd.iter().map(|s| s.to_string()).collect(), disks: vec![], rootfs: None, hostname: None, snapshot_save: None, snapshot_load: None }
    }

    #[test]
    fn shares_forwards_and_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().display().to_string();
        let lab = args(&[&p, &format!("{p}:src")], None, &["10022:22"]).parse().unwrap();
        assert_eq!(lab.shares[0].tag, "host0");
        assert_eq!(lab.shares[1].tag, "src");
        assert_eq!(lab.net.unwrap().forwards, vec![(10022, 22)]);
        assert!(args(&[&format!("{p}:a"), &format!("{p}:a")], None, &[]).parse().is_err());
        assert!(args(&["/nonexistent/x"], None, &[]).parse().is_err());
        assert!(args(&[], Some("tap"), &[]).parse().unwrap_err().to_string().contains("CAP_NET_ADMIN"));
        assert!(args(&[], None, &["0:22"]).parse().is_err());
        assert!(args(&[], None, &["70000:22"]).parse().is_err());
        assert!(args(&[], None, &[]).parse().unwrap().net.is_none());
    }

    #[test]
    fn disk_format_is_sniffed() {
        let d = tempfile::tempdir().unwrap();
        let q = d.path().join("a.qcow2");
        std::fs::write(&q, b"QFI\xfb\0\0\0\x03").unwrap();
        let r = d.path().join("b.img");
        std::fs::write(&r, [0u8; 512]).unwrap();
        assert_eq!(disk(&q.display().to_string()).unwrap().format, "qcow2");
        let b = disk(&format!("{},readonly", r.display())).unwrap();
        assert_eq!((b.format.as_str(), b.readonly), ("raw", true));
        assert!(disk(&format!("{},format=vmdk", r.display())).is_err());
    }
}
