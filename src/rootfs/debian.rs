//! `kmatrix rootfs debian`: a whole Debian bookworm per arch (systemd, dbus,
//! sshd, cloud-init, locales) bootstrapped by mmdebstrap into a directory —
//! foreign arches run their maintainer scripts under qemu-user through
//! binfmt_misc — then turned into an ext4 image by `mke2fs -d` without
//! mounting. Cached by recipe; the package versions that went in are kept
//! next to the image (`packages.tsv`, the first piece of a lockfile).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use sha2::{Digest, Sha256};

use crate::cache::Cache;
use crate::command::CommandSpec;
use crate::descriptor::Arch;
use crate::error::{Error, Result};
use crate::process::{Group, Mode};

pub const SUITE: &str = "bookworm";

/// Sparse: about 600 MB of it is used after the bootstrap.
pub const DEFAULT_SIZE_MIB: u64 = 2048;

/// On top of mmdebstrap's minbase. Without dbus `systemctl poweroff` says
/// "Failed to connect to bus", exits 0 and does nothing; without locales
/// cloud-init's locale module fails and `cloud-init status` says error.
pub const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "dbus",
    "udev",
    "openssh-server",
    "cloud-init",
    "locales",
    "iproute2",
    "netbase",
];

/// Bumped whenever what goes into the image changes outside the lists above.
const RECIPE_VERSION: u32 = 1;

/// The files laid over the bootstrapped tree (path, content; a content
/// starting with `->` is a symlink target).
const OVERLAY: &[(&str, &str)] = &[
    // DHCP from QEMU's user-mode network on whatever the NIC is called.
    (
        "etc/systemd/network/20-wired.network",
        "[Match]\nName=e*\n\n[Network]\nDHCP=yes\n",
    ),
    (
        "etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
        "->/lib/systemd/system/systemd-networkd.service",
    ),
    // mmdebstrap copies the host's resolv.conf and hostname: the guest's
    // are QEMU's user-mode DNS and a neutral name (cloud-init sets the real
    // one).
    ("etc/resolv.conf", "nameserver 10.0.2.3\n"),
    ("etc/hostname", "debian\n"),
    // systemd raises kernel.pid_max to 4194304; a kernel with BASE_SMALL
    // (tinyconfig's) caps it at 32768, and the refused write fails
    // systemd-sysctl.service, so the system is "degraded" for nothing.
    ("etc/sysctl.d/50-pid-max.conf", "->/dev/null"),
    // Only the seed kmatrix attaches (probing EC2, GCE... over a network
    // that has none of them costs minutes), and networkd keeps the network.
    (
        "etc/cloud/cloud.cfg.d/90-kmatrix.cfg",
        "datasource_list: [ NoCloud, None ]\nnetwork: {config: disabled}\n",
    ),
    // The serial console logs root in: a learner's boot lands in a shell,
    // and the login prompt still shows when the system is up.
    (
        "etc/systemd/system/serial-getty@.service.d/autologin.conf",
        "[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 %I $TERM\n",
    ),
];

/// One cached image and what went into it.
#[derive(Debug, Clone)]
pub struct Image {
    pub path: PathBuf,
    /// `package<TAB>version<TAB>architecture`, one per line.
    pub packages: PathBuf,
    pub debian_arch: String,
}

/// Why a kmatrix arch has no Debian root (big-endian mips64 has no port).
pub fn debian_arch(arch: &Arch) -> Result<&str> {
    arch.debian_arch.as_deref().ok_or_else(|| {
        Error::Usage(format!(
            "arch `{}` has no Debian port (bookworm's are amd64, arm64, armel, armhf, i386, mips64el, mipsel, ppc64el and s390x): no `kmatrix rootfs debian` for it; `kmatrix rootfs build` makes kmatrix's own busybox root",
            arch.id
        ))
    })
}

fn recipe_key(debian_arch: &str, mirror: Option<&str>, size_mib: u64) -> String {
    let mut h = Sha256::new();
    h.update(format!("{RECIPE_VERSION}\0{SUITE}\0{debian_arch}\0{mirror:?}\0{PACKAGES:?}\0{OVERLAY:?}\0{size_mib}").as_bytes());
    hex::encode(h.finalize())
}

/// The cached image for `arch` if it was built already.
pub fn find(
    cache: &Cache,
    arch: &Arch,
    mirror: Option<&str>,
    size_mib: u64,
) -> Result<Option<Image>> {
    let da = debian_arch(arch)?;
    let dir = entry_dir(cache, &recipe_key(da, mirror, size_mib))?;
    let img = dir.join("root.ext4");
    Ok(img.is_file().then(|| Image {
        path: img,
        packages: dir.join("packages.tsv"),
        debian_arch: da.to_string(),
    }))
}

fn entry_dir(cache: &Cache, key: &str) -> Result<PathBuf> {
    Ok(cache.dir("rootfs-debian")?.join(&key[..16]))
}

/// Builds (or finds) the image. `say` gets mmdebstrap's progress lines.
pub fn build(
    cache: &Cache,
    arch: &Arch,
    mirror: Option<&str>,
    size_mib: u64,
    say: &dyn Fn(&str),
) -> Result<Image> {
    let da = debian_arch(arch)?.to_string();
    let key = recipe_key(&da, mirror, size_mib);
    let dir = entry_dir(cache, &key)?;
    let host = host_debian_arch();
    let foreign = host.as_deref() != Some(da.as_str());
    let path = cache.artifact("rootfs-debian", &key, "root.ext4", &|tmp| {
        require("mmdebstrap", "mmdebstrap")?;
        require("mke2fs", "e2fsprogs")?;
        // The tree's owners must be real (root's, dpkg's...) for mke2fs to
        // copy them: mmdebstrap's root mode. Its unshare mode would leave
        // them shifted into the user's subordinate ids.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Error::Usage("`kmatrix rootfs debian` runs as root (mmdebstrap's root mode keeps the tree's owners for mke2fs -d): run it with sudo".into()));
        }
        if foreign {
            // mmdebstrap's own words are "install arch-test for foreign
            // architecture support"; arch-test is only a Recommends.
            require("arch-test", "arch-test")?;
            ensure_binfmt(&da, say)?;
        }
        let work = tempfile::Builder::new().prefix("bootstrap").tempdir_in(&dir).map_err(Error::io("cannot make a bootstrap directory"))?;
        let overlay = work.path().join("overlay");
        write_overlay(&overlay)?;
        // A directory, not a tarball: Debian's mke2fs is built without
        // libarchive, so its -d takes directories only.
        let tree = work.path().join("root");
        let mut cmd = CommandSpec::new("mmdebstrap")
            .arg(format!("--arch={da}"))
            .arg("--variant=minbase")
            .arg(format!("--include={}", PACKAGES.join(",")))
            .arg(format!("--customize-hook=sync-in {} /", overlay.display()))
            .arg(format!("--customize-hook=copy-out /var/lib/dpkg/status {}", work.path().display()))
            .arg(SUITE)
            .arg(tree.display().to_string());
        if let Some(m) = mirror {
            cmd = cmd.arg(m.to_string());
        }
        say(&format!("bootstrapping Debian {SUITE} for {da}{} (minutes; the log is {})", if foreign { " under qemu-user" } else { "" }, dir.join("bootstrap.log").display()));
        run_logged(&cmd, &dir.join("bootstrap.log"), say)?;
        let mk = CommandSpec::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", "debian-root", "-d"])
            .arg(tree.display().to_string())
            .arg(tmp.display().to_string())
            .arg(format!("{size_mib}M"));
        let out = crate::process::output_spec(&mk).map_err(|e| e.with_package("e2fsprogs"))?;
        if !out.success() {
            return Err(Error::Infra(format!("`{mk}` failed: {}", out.text().trim())));
        }
        let status = std::fs::read_to_string(work.path().join("status")).map_err(Error::io("mmdebstrap copied out no /var/lib/dpkg/status"))?;
        crate::cache::write_atomic(&dir.join("packages.tsv"), packages_tsv(&status).as_bytes())?;
        Ok(())
    })?;
    Ok(Image {
        path,
        packages: dir.join("packages.tsv"),
        debian_arch: da,
    })
}

fn require(tool: &str, package: &str) -> Result<()> {
    match crate::host::which(tool) {
        Some(_) => Ok(()),
        None => Err(Error::MissingTool {
            tool: tool.into(),
            package: Some(package.into()),
        }),
    }
}

fn host_debian_arch() -> Option<String> {
    let out = std::process::Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Foreign maintainer scripts run through binfmt_misc and qemu-user-static.
/// arch-test says whether that works; when it does not, the entries that
/// qemu-user-static registers are enabled (which mounts binfmt_misc).
fn ensure_binfmt(da: &str, say: &dyn Fn(&str)) -> Result<()> {
    let works = || {
        std::process::Command::new("arch-test")
            .arg(da)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works() {
        return Ok(());
    }
    require("update-binfmts", "binfmt-support")?;
    say(&format!(
        "{da} binaries do not run here yet: enabling qemu-user-static's binfmt_misc entries (`update-binfmts --enable`)"
    ));
    let _ = std::process::Command::new("update-binfmts")
        .arg("--enable")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if works() {
        return Ok(());
    }
    Err(Error::Infra(format!(
        "{da} binaries cannot run on this host (`arch-test {da}` fails even after `update-binfmts --enable`): install qemu-user-static (its package registers the entries); binfmt_misc needs root, or a container that allows it"
    )))
}

fn write_overlay(root: &Path) -> Result<()> {
    for (rel, content) in OVERLAY {
        let p = root.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)
                .map_err(Error::io(format!("cannot create {}", d.display())))?;
        }
        match content.strip_prefix("->") {
            Some(target) => std::os::unix::fs::symlink(target, &p),
            None => std::fs::write(&p, content),
        }
        .map_err(Error::io(format!("cannot write {}", p.display())))?;
    }
    Ok(())
}

/// Runs `cmd` with its output in `log`; its `I:`/`E:`/`W:` lines go to `say`.
fn run_logged(cmd: &CommandSpec, log: &Path, say: &dyn Fn(&str)) -> Result<()> {
    let mut file = std::fs::File::create(log)
        .map_err(Error::io(format!("cannot create {}", log.display())))?;
    let mut g = Group::spawn_spec(
        cmd,
        Stdio::piped(),
        Stdio::piped(),
        Stdio::null(),
        Mode::Group,
    )?;
    let mut out = g.child_mut().stdout.take().expect("piped");
    let err = g.child_mut().stderr.take().expect("piped");
    let t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let mut last_error = String::new();
    crate::process::for_each_line(err, |line| {
        use std::io::Write;
        let _ = writeln!(file, "{line}");
        if line.starts_with("E: ") {
            last_error = line.clone();
        }
        if line.starts_with("I: ") || line.starts_with("E: ") || line.starts_with("W: ") {
            say(line.trim_end());
        }
        !crate::process::is_interrupted()
    });
    if crate::process::is_interrupted() {
        g.stop(std::time::Duration::from_secs(2));
        return Err(Error::Interrupted);
    }
    let stdout = t.join().unwrap_or_default();
    {
        use std::io::Write;
        let _ = file.write_all(&stdout);
    }
    let code = g.wait()?;
    if code != 0 {
        return Err(Error::Infra(format!(
            "`{}` failed (exit {code}){}; the log is {}",
            cmd.program,
            if last_error.is_empty() {
                String::new()
            } else {
                format!(": {last_error}")
            },
            log.display()
        )));
    }
    Ok(())
}

/// dpkg's status file as `package<TAB>version<TAB>architecture` lines,
/// installed packages only, sorted.
pub fn packages_tsv(status: &str) -> String {
    let mut rows = Vec::new();
    for stanza in status.split("\n\n") {
        let field = |k: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
        };
        let installed = field("Status:").is_some_and(|s| s.ends_with(" installed"));
        if let (true, Some(p), Some(v)) = (installed, field("Package:"), field("Version:")) {
            rows.push(format!(
                "{p}\t{v}\t{}",
                field("Architecture:").unwrap_or_default()
            ));
        }
    }
    rows.sort();
    rows.dedup();
    let mut s = rows.join("\n");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_becomes_sorted_installed_rows() {
        let status = "Package: zlib1g\nStatus: install ok installed\nArchitecture: arm64\nVersion: 1:1.2.13\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: bash\nStatus: install ok installed\nArchitecture: arm64\nVersion: 5.2.15-2+b7\n";
        assert_eq!(
            packages_tsv(status),
            "bash\t5.2.15-2+b7\tarm64\nzlib1g\t1:1.2.13\tarm64\n"
        );
    }

    #[test]
    fn key_follows_arch_and_mirror() {
        assert_ne!(
            recipe_key("arm64", None, 2048),
            recipe_key("armel", None, 2048)
        );
        assert_ne!(
            recipe_key("arm64", None, 2048),
            recipe_key("arm64", Some("http://m/debian"), 2048)
        );
        assert_eq!(
            recipe_key("arm64", None, 2048),
            recipe_key("arm64", None, 2048)
        );
    }
}
