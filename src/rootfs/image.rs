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
    /// QEMU: wait after the commands for the host to save the machine.
    pub snapshot: bool,
    /// The configuration's generation (a waiting init takes a higher one).
    pub generation: u64,
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
    if c.snapshot {
        s.push_str("snapshot=1\n");
    }
    if c.generation > 0 {
        s.push_str(&format!("gen={}\n", c.generation));
    }
    s
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).map_err(Error::io(format!("cannot read {}", p.display())))
}

/// One thing in kmatrix's guest userland.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { path: String, mode: u32 },
    File { path: String, mode: u32, data: Vec<u8> },
    Symlink { path: String, target: String },
    CharDev { path: String, mode: u32, major: u32, minor: u32 },
}

/// The userland: directories, /init, its configuration (when `with_conf`;
/// a disk root gets it from the kernel command line), busybox with its
/// applets and init scripts, and the modules.
pub fn entries(spec: &Spec, with_conf: bool) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for d in ["/", "/dev", "/proc", "/sys", "/tmp", "/root", "/bin", "/sbin", "/etc", "/lib", "/lib/modules", "/mnt"] {
        out.push(Entry::Dir { path: d.into(), mode: if d == "/tmp" { 0o1777 } else { 0o755 } });
    }
    out.push(Entry::CharDev { path: "/dev/console".into(), mode: 0o600, major: 5, minor: 1 });
    out.push(Entry::File { path: "/init".into(), mode: 0o755, data: read(&spec.init)? });
    if with_conf {
        out.push(Entry::File { path: "/kmatrix.conf".into(), mode: 0o644, data: conf_text(&spec.conf).into_bytes() });
    }
    if let Some(bb) = &spec.busybox {
        out.push(Entry::File { path: "/bin/busybox".into(), mode: 0o755, data: read(bb)? });
        for a in APPLETS {
            let dir = if ["init", "poweroff", "reboot", "halt", "insmod", "rmmod", "lsmod", "modprobe", "sysctl", "ifconfig"].contains(a) { "/sbin" } else { "/bin" };
            out.push(Entry::Symlink { path: format!("{dir}/{a}"), target: "/bin/busybox".into() });
        }
        out.push(Entry::Dir { path: "/etc/init.d".into(), mode: 0o755 });
        out.push(Entry::File { path: "/etc/inittab".into(), mode: 0o644, data: INITTAB.as_bytes().to_vec() });
        out.push(Entry::File { path: "/etc/init.d/rcS".into(), mode: 0o755, data: RCS.as_bytes().to_vec() });
        out.push(Entry::File { path: "/etc/fstab".into(), mode: 0o644, data: FSTAB.as_bytes().to_vec() });
    }
    for m in &spec.modules {
        let name = m.file_name().and_then(|n| n.to_str()).ok_or_else(|| Error::Usage(format!("bad module path {}", m.display())))?;
        out.push(Entry::File { path: format!("/lib/modules/{name}"), mode: 0o644, data: read(m)? });
    }
    Ok(out)
}

/// The archive bytes (uncompressed newc).
pub fn archive(spec: &Spec) -> Result<Vec<u8>> {
    let io = |e: std::io::Error| Error::Io { context: "cannot write the initramfs".into(), source: e };
    let mut w = Writer::new(Vec::new());
    for e in entries(spec, true)? {
        match e {
            Entry::Dir { path, mode } => w.dir(&path, mode),
            Entry::File { path, mode, data } => w.file(&path, mode, &data),
            Entry::Symlink { path, target } => w.symlink(&path, &target),
            Entry::CharDev { path, mode, major, minor } => w.char_dev(&path, mode, major, minor),
        }
        .map_err(io)?;
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
