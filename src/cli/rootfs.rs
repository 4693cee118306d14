//! `kmatrix rootfs build --arch X`: kmatrix's userland (init, busybox) as an
//! ext4 disk root for `boot --rootfs`, made without mounting or root;
//! `kmatrix rootfs debian --arch X`: a whole Debian for `boot --rootfs debian`.

use std::path::PathBuf;

use crate::cli::build::say;
use crate::cli::{select_board, Ctx};
use crate::error::{exit, Error, Result};

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Build an ext4 root image for a machine and print its path.
    Build {
        #[arg(long)]
        arch: Option<String>,
        #[arg(long)]
        board: Option<String>,
        /// Compiles the init.
        #[arg(long, default_value = "gcc")]
        toolchain: String,
        /// A static busybox for the image (default: Debian's busybox-static for the arch).
        #[arg(long, value_name = "FILE")]
        busybox: Option<PathBuf>,
        /// Image size in MiB.
        #[arg(long, value_name = "MIB", default_value = "64")]
        size: u64,
        /// Also copy the image here (the cached one is never booted directly).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Bootstrap a whole Debian bookworm (systemd, dbus, sshd, cloud-init)
    /// for a machine's arch as an ext4 image and print its path; `kmatrix
    /// boot --rootfs debian` boots it.
    Debian {
        #[arg(long)]
        arch: Option<String>,
        #[arg(long)]
        board: Option<String>,
        /// The Debian mirror (default: mmdebstrap's, deb.debian.org).
        #[arg(long, value_name = "URL")]
        mirror: Option<String>,
        /// Image size in MiB (the image is sparse).
        #[arg(long, value_name = "MIB", default_value_t = crate::rootfs::debian::DEFAULT_SIZE_MIB)]
        size: u64,
    },
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let (arch, board, toolchain, busybox, size, out) = match a.cmd {
        Cmd::Build { arch, board, toolchain, busybox, size, out } => (arch, board, toolchain, busybox, size, out),
        Cmd::Debian { arch, board, mirror, size } => return debian(ctx, arch, board, mirror, size),
    };
    let reg = ctx.registry()?;
    let board = select_board(&reg, arch.as_deref(), board.as_deref())?;
    if size < 8 {
        return Err(Error::Usage(format!("--size {size}: at least 8 MiB")));
    }
    let arch = &reg.arches[&board.arch];
    let tc = reg.toolchain(&toolchain)?;
    let spec = crate::rootfs::image::Spec {
        init: crate::rootfs::init::build(&ctx.cache, arch, tc)?,
        busybox: match crate::rootfs::busybox::locate(&ctx.cache, arch, busybox.as_deref()) {
            Ok(p) => Some(p),
            // The init alone still boots, runs commands and has `/init kmx` tools.
            Err(e) if busybox.is_none() => {
                say(&format!("no busybox ({e}); the image has kmatrix's init only"));
                None
            }
            Err(e) => return Err(e),
        },
        conf: crate::rootfs::image::InitConf {
            nonce: String::new(),
            poweroff: board.poweroff,
            cmds: vec![],
            shell: false,
            readfile: false,
            checkpoint: false,
            shares: vec![],
            net: None,
            snapshot: false,
            generation: 0,
        },
        modules: vec![],
    };
    let img = crate::rootfs::disk::build(&ctx.cache, &spec, size)?;
    let img = match out {
        Some(dest) => {
            std::fs::copy(&img, &dest).map_err(Error::io(format!("cannot write {}", dest.display())))?;
            dest
        }
        None => img,
    };
    say(&format!("ext4 root for {} ({size} MiB; boot it with `kmatrix boot --board {} --rootfs IMG`):", board.id, board.id));
    println!("{}", img.display());
    Ok(exit::OK)
}

fn debian(ctx: &Ctx, arch: Option<String>, board: Option<String>, mirror: Option<String>, size: u64) -> Result<i32> {
    let reg = ctx.registry()?;
    let board = select_board(&reg, arch.as_deref(), board.as_deref())?;
    if size < 1024 {
        return Err(Error::Usage(format!("--size {size}: a Debian root needs at least 1024 MiB")));
    }
    let t = std::time::Instant::now();
    let img = crate::rootfs::debian::build(&ctx.cache, &reg.arches[&board.arch], mirror.as_deref(), size, &say)?;
    let n = std::fs::read_to_string(&img.packages).map(|s| s.lines().count()).unwrap_or(0);
    say(&format!(
        "Debian {} {} ({n} packages, versions in {}; {:.0}s); boot it with `kmatrix boot --board {} --rootfs debian`:",
        crate::rootfs::debian::SUITE,
        img.debian_arch,
        img.packages.display(),
        t.elapsed().as_secs_f64(),
        board.id
    ));
    println!("{}", img.path.display());
    Ok(exit::OK)
}
