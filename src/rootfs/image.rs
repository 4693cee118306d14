//! Assembles an initramfs: /init (kmatrix's init), /kmatrix.conf, optional
//! busybox with rcS/fstab/inittab for interactive use, optional modules.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;

use super::busybox::APPLETS;
use super::cpio::Writer;
use crate::descriptor::Poweroff;
use crate::error::{Error, Result};

/// What /init is told to do.
#[derive(Debug, Clone)]
pub struct InitConf {
    pub nonce: String,
    pub poweroff: Poweroff,
    pub cmds: Vec<String>,
    pub shell: bool,
    /// gem5: fetch the configuration from the host with `m5 readfile`.
    pub readfile: bool,
    /// gem5: take a checkpoint after the boot marker.
    pub checkpoint: bool,
    /// 9p shares to mount: `(tag, guest directory)`.
    pub shares: Vec<(String, String)>,
    /// Static network: `<ip>/<len> <gateway>`.
    pub net: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub init: PathBuf,
    pub busybox: Option<PathBuf>,
    pub conf: InitConf,
    /// Kernel modules put into /lib/modules/.
    pub modules: Vec<PathBuf>,
}

const INITTAB: &str = "::sysinit:/etc/init.d/rcS\n::respawn:/bin/cttyhack /bin/sh -l\n::ctrlaltdel:/sbin/reboot\n::shutdown:/bin/umount -a -r\n::shutdown:/init --shutdown\n";
const RCS: &str = "#!/bin/sh\nmount -a\n/init --lab\nmkdir -p /dev/pts\nmount -t devpts devpts /dev/pts 2>/dev/null\nhostname kmatrix\necho\necho \"kmatrix: $(uname -sr) on $(uname -m). 'poweroff' (or 'reboot') ends the VM; Ctrl-A x stops the emulator.\"\n";
const FSTAB: &str = "proc /proc proc defaults 0 0\nsysfs /sys sysfs defaults 0 0\ndevtmpfs /dev devtmpfs defaults 0 0\ntmpfs /tmp tmpfs defaults 0 0\n";

/// /kmatrix.conf (also what gem5's `m5 readfile` hands the init).
pub fn conf_text(c: &InitConf) -> String {
    let mut s = format!("nonce={}\npoweroff={}\n", c.nonce, c.poweroff.as_str());
    if c.readfile {
        s.push_str("readfile=1\n");
    }
    if c.checkpoint {
        s.push_str("checkpoint=1\n");
    }
    for cmd in &c.cmds {
        // One command per line: a newline would start a new key.
        s.push_str(&format!("cmd={}\n", cmd.replace('\n', " ")));
    }
    if c.shell {
        s.push_str("shell=1\n");
    }
    for (tag, dir) in &c.shares {
        s.push_str(&format!("share={tag} {dir}\n"));
    }
    if let Some(n) = &c.net {
        s.push_str(&format!("net={n}\n"));
    }
    s
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).map_err(Error::io(format!("cannot read {}", p.display())))
}

/// The archive bytes (uncompressed newc).
pub fn archive(spec: &Spec) -> Result<Vec<u8>> {
    let io = |e: std::io::Error| Error::Io { context: "cannot write the initramfs".into(), source: e };
    let mut w = Writer::new(Vec::new());
    for d in ["/", "/dev", "/proc", "/sys", "/tmp", "/root", "/bin", "/sbin", "/etc", "/lib", "/lib/modules"] {
        w.dir(d, if d == "/tmp" { 0o1777 } else { 0o755 }).map_err(io)?;
    }
    w.char_dev("/dev/console", 0o600, 5, 1).map_err(io)?;
    w.file("/init", 0o755, &read(&spec.init)?).map_err(io)?;
    w.file("/kmatrix.conf", 0o644, conf_text(&spec.conf).as_bytes()).map_err(io)?;
    if let Some(bb) = &spec.busybox {
        w.file("/bin/busybox", 0o755, &read(bb)?).map_err(io)?;
        for a in APPLETS {
            let dir = if ["init", "poweroff", "reboot", "halt", "insmod", "rmmod", "lsmod", "modprobe", "sysctl", "ifconfig"].contains(a) { "/sbin" } else { "/bin" };
            w.symlink(&format!("{dir}/{a}"), "/bin/busybox").map_err(io)?;
        }
        w.dir("/etc/init.d", 0o755).map_err(io)?;
        w.file("/etc/inittab", 0o644, INITTAB.as_bytes()).map_err(io)?;
        w.file("/etc/init.d/rcS", 0o755, RCS.as_bytes()).map_err(io)?;
        w.file("/etc/fstab", 0o644, FSTAB.as_bytes()).map_err(io)?;
    }
    for m in &spec.modules {
        let name = m.file_name().and_then(|n| n.to_str()).ok_or_else(|| Error::Usage(format!("bad module path {}", m.display())))?;
        w.file(&format!("/lib/modules/{name}"), 0o644, &read(m)?).map_err(io)?;
    }
    w.finish().map_err(io)
}

/// Writes the initramfs, gzip-compressed when `gzip` (what `-initrd` gets);
/// uncompressed for CONFIG_INITRAMFS_SOURCE.
pub fn write(spec: &Spec, out: &Path, gzip: bool) -> Result<()> {
    let data = archive(spec)?;
    let bytes = if gzip {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(&data).and_then(|_| e.finish()).map_err(Error::io("cannot compress the initramfs"))?
    } else {
        data
    };
    crate::cache::write_atomic(out, &bytes)
}
