//! `kmatrix setup`: install what `doctor` finds missing with apt-get
//! (idempotent; every command is printed before it runs), and fetch
//! Debian's busybox-static for the selected foreign arches.

use std::process::Command;

use crate::cli::doctor::{missing, selection};
use crate::cli::Ctx;
use crate::command::CommandSpec;
use crate::error::{exit, Error, Result};
use crate::host;
use crate::rootfs::busybox;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub sel: crate::cli::doctor::Args,
    /// Print the commands without running them.
    #[arg(long)]
    pub dry_run: bool,
}

/// Always wanted: the default kernel source, busybox for interactive boots,
/// ccache for fast rebuilds, a cpio to inspect images.
const BASE: &[&str] = &["linux-source-6.1", "busybox-static", "ccache", "gdb-multiarch", "qemu-utils", "e2fsprogs"];

fn sudo() -> Vec<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 { vec![] } else { vec!["sudo".into()] }
}

fn run_cmd(argv: &[String], dry: bool) -> Result<()> {
    let c = CommandSpec::new(&argv[0]).args(argv[1..].iter().cloned());
    println!("+ {c}");
    if dry {
        return Ok(());
    }
    let st = Command::new(&argv[0]).args(&argv[1..]).status().map_err(Error::io(format!("cannot run {}", argv[0])))?;
    if st.success() { Ok(()) } else { Err(Error::Infra(format!("`{c}` failed ({st})"))) }
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let reg = ctx.registry()?;
    let (boards, tcs) = selection(&reg, a.sel.arch.as_deref(), a.sel.board.as_deref(), &a.sel.toolchains)?;
    let reqs = host::requirements(&reg, &boards, &tcs, true);
    let mut pkgs: Vec<String> = missing(&reqs).iter().map(|r| r.package.clone()).collect();
    pkgs.extend(BASE.iter().filter(|p| !host::package_installed(p)).map(|p| p.to_string()));
    pkgs.sort();
    pkgs.dedup();
    // Foreign Debian arches whose busybox-static the guests use.
    let host_arch = busybox::host_debian_arch();
    let mut foreign: Vec<String> = boards
        .iter()
        .filter_map(|b| reg.arches[&b.arch].debian_arch.clone())
        .filter(|d| Some(d) != host_arch.as_ref())
        .collect();
    foreign.sort();
    foreign.dedup();
    let enabled = Command::new("dpkg").arg("--print-foreign-architectures").output().map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
    let to_enable: Vec<&String> = foreign.iter().filter(|f| !enabled.split_whitespace().any(|e| e == f.as_str())).collect();
    for f in &to_enable {
        run_cmd(&[sudo(), vec!["dpkg".into(), "--add-architecture".into(), f.to_string()]].concat(), a.dry_run)?;
    }
    if !pkgs.is_empty() || !to_enable.is_empty() {
        run_cmd(&[sudo(), vec!["apt-get".into(), "update".into(), "-q".into()]].concat(), a.dry_run)?;
    }
    if !pkgs.is_empty() {
        let mut argv = sudo();
        argv.extend(["apt-get", "install", "-y", "-q", "--no-install-recommends"].map(String::from));
        if let Some(pin) = qemu_utils_pin(&pkgs) {
            println!("qemu-utils is at another version than the qemu-system packages apt will install: pinning {pin}");
            pkgs.retain(|p| p != "qemu-utils");
            pkgs.push(pin);
            argv.push("--allow-downgrades".into());
        }
        argv.extend(pkgs.iter().cloned());
        run_cmd(&argv, a.dry_run)?;
    } else {
        println!("all packages are installed");
    }
    if !a.dry_run {
        let mut arches: Vec<&str> = boards.iter().map(|b| b.arch.as_str()).collect();
        arches.sort();
        arches.dedup();
        for id in arches {
            let arch = &reg.arches[id];
            if arch.debian_arch.is_some() {
                let p = busybox::locate(&ctx.cache, arch, None)?;
                println!("busybox for {}: {}", arch.id, p.display());
            }
        }
    }
    Ok(exit::OK)
}

/// QEMU's packages must share one version: a machine image with a newer
/// qemu-utils (seen: 10.0.2 from bookworm-backports with no backports
/// source) makes apt refuse Debian 12's qemu-system-* ("Breaks"). Returns
/// `qemu-utils=<qemu-system's candidate>` when a qemu-system package is to
/// be installed and the installed qemu-utils is at another version.
fn qemu_utils_pin(pkgs: &[String]) -> Option<String> {
    if !pkgs.iter().any(|p| p.starts_with("qemu-system-")) {
        return None;
    }
    let out = Command::new("apt-cache").args(["policy", "qemu-system-common"]).output().ok()?;
    let policy = String::from_utf8_lossy(&out.stdout);
    let candidate = policy.lines().find_map(|l| l.trim().strip_prefix("Candidate:")).map(str::trim)?;
    if candidate == "(none)" {
        return None;
    }
    let installed = Command::new("dpkg-query").args(["-W", "-f=${Version}", "qemu-utils"]).output().ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match installed {
        Some(v) if v != candidate => Some(format!("qemu-utils={candidate}")),
        _ => None,
    }
}
