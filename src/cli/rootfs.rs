//! `kmatrix rootfs build --arch X`: kmatrix's userland (init, busybox) as an
//! ext4 disk root for `boot --rootfs`, made without mounting or root.

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
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let Cmd::Build { arch, board, toolchain, busybox, size, out } = a.cmd;
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
