//! `kmatrix snapshot save|load|list`: QEMU snapshots of a running
//! interactive boot, from another terminal (over the QMP socket in its run
//! directory), and the snapshots kept in the cache.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::Ctx;
use crate::emulator::qmp::Qmp;
use crate::error::{exit, Error, Result};

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Save the running machine under NAME.
    Save { name: String, #[command(flatten)] run: RunArg },
    /// Bring the running machine back to the snapshot NAME.
    Load { name: String, #[command(flatten)] run: RunArg },
    /// The running machine's snapshots, or (with no boot running) every
    /// board's and kernel's in the cache.
    List { #[command(flatten)] run: RunArg },
}

#[derive(Debug, clap::Args)]
pub struct RunArg {
    /// The boot's run directory (default: the newest running one).
    #[arg(long, value_name = "DIR")]
    run: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The QMP connection of a running boot: the given run directory, else the
/// newest one whose monitor answers.
fn running(ctx: &Ctx, run: &RunArg) -> Result<Option<(PathBuf, Qmp)>> {
    let candidates: Vec<PathBuf> = match &run.run {
        Some(d) => vec![d.clone()],
        None => {
            let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(ctx.cache.root.join("runs"))
                .map(|rd| rd.flatten().filter(|e| e.path().join("qmp.sock").exists()).filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path()))).collect())
                .unwrap_or_default();
            dirs.sort();
            dirs.into_iter().rev().map(|(_, p)| p).collect()
        }
    };
    for d in candidates {
        if let Ok(q) = Qmp::connect(&d.join("qmp.sock"), Duration::from_millis(200)) {
            return Ok(Some((d, q)));
        }
        if run.run.is_some() {
            return Err(Error::Usage(format!("no running boot answers at {}/qmp.sock", d.display())));
        }
    }
    Ok(None)
}

fn need(ctx: &Ctx, run: &RunArg) -> Result<(PathBuf, Qmp)> {
    running(ctx, run)?.ok_or_else(|| {
        Error::Usage("no running boot with a monitor: start one with `kmatrix boot --arch X` (interactive, on a QEMU board, without --share or writable disks)".into())
    })
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    if let Cmd::Save { name, .. } | Cmd::Load { name, .. } = &a.cmd
        && !crate::machine::valid_snapshot_name(name)
    {
        return Err(Error::Usage(format!("snapshot name `{name}`: letters, digits, `-`, `_` and `.` only")));
    }
    match a.cmd {
        Cmd::Save { name, run } => {
            let (dir, mut q) = need(ctx, &run)?;
            q.hmp(&format!("savevm {name}")).map_err(Error::Infra)?;
            println!("saved `{name}` of the boot in {}", dir.display());
            Ok(exit::OK)
        }
        Cmd::Load { name, run } => {
            let (dir, mut q) = need(ctx, &run)?;
            if let Err(e) = q.hmp(&format!("loadvm {name}")) {
                // A failed loadvm leaves the machine paused.
                let _ = q.execute("cont", serde_json::json!({}));
                return Err(Error::Usage(e));
            }
            println!("loaded `{name}` into the boot in {}", dir.display());
            Ok(exit::OK)
        }
        Cmd::List { run } => match running(ctx, &run)? {
            Some((dir, mut q)) => {
                println!("{}:", dir.display());
                print!("{}", q.hmp("info snapshots").map_err(Error::Infra)?);
                Ok(exit::OK)
            }
            None => {
                list_stores(&ctx.cache.root.join("snapshots"))?;
                Ok(exit::OK)
            }
        },
    }
}

/// `<cache>/snapshots/<board>/<build>/vmstate.qcow2`, each listed by qemu-img.
fn list_stores(root: &Path) -> Result<()> {
    let mut stores: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|b| std::fs::read_dir(b.path()).into_iter().flatten().flatten().map(|k| k.path().join("vmstate.qcow2")))
        .filter(|p| p.is_file())
        .collect();
    stores.sort();
    if stores.is_empty() {
        println!("no snapshots in {}", root.display());
    }
    for s in stores {
        let cmd = crate::command::CommandSpec::new("qemu-img").args(["snapshot", "-U", "-l"]).arg(s.display().to_string());
        let out = crate::process::output_spec(&cmd).map_err(|e| e.with_package("qemu-utils"))?;
        let rel = s.parent().and_then(|p| p.strip_prefix(root).ok()).map(|p| p.display().to_string()).unwrap_or_default();
        println!("{rel}:");
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(())
}
