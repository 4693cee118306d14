//! `kmatrix ssh [--arch X] [-- COMMAND...]`: into the newest running
//! whole-OS boot (`boot --rootfs debian`) through its forwarded loopback port.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{Ctx, select_board};
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only boots of this arch's default board.
    #[arg(long)]
    arch: Option<String>,
    #[arg(long)]
    board: Option<String>,
    /// A boot's run directory (default: the newest one whose sshd answers).
    #[arg(long, value_name = "DIR")]
    run: Option<PathBuf>,
    /// Print the ssh command instead of running it.
    #[arg(long)]
    print: bool,
    /// Run this in the guest instead of a login shell.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let board = match (&a.arch, &a.board) {
        (None, None) => None,
        _ => Some(
            select_board(&ctx.registry()?, a.arch.as_deref(), a.board.as_deref())?
                .id
                .clone(),
        ),
    };
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = match &a.run {
        Some(d) => vec![(std::time::SystemTime::now(), d.clone())],
        None => std::fs::read_dir(ctx.cache.root.join("runs"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().join("ssh.json").is_file())
                    .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                    .collect()
            })
            .unwrap_or_default(),
    };
    dirs.sort();
    for (_, d) in dirs.into_iter().rev() {
        let Ok(text) = std::fs::read_to_string(d.join("ssh.json")) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if board
            .as_ref()
            .is_some_and(|b| v["board"].as_str() != Some(b))
        {
            continue;
        }
        let (Some(port), Some(key), Some(user)) = (
            v["port"].as_u64().and_then(|p| u16::try_from(p).ok()),
            v["key"].as_str(),
            v["user"].as_str(),
        ) else {
            continue;
        };
        // The forward listens for as long as that QEMU runs.
        if TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_millis(300),
        )
        .is_err()
        {
            continue;
        }
        let s = crate::boot::distro::Ssh {
            port,
            key: key.into(),
            user: user.into(),
        };
        let mut argv = s.argv();
        // A terminal session keeps ssh's interactive defaults.
        if a.command.is_empty() {
            if let Some(i) = argv.iter().position(|x| x == "BatchMode=yes") {
                argv.drain(i - 1..=i);
            }
            argv.insert(1, "-t".into());
        }
        argv.extend(a.command.iter().cloned());
        if a.print {
            println!(
                "{}",
                argv.iter()
                    .map(|x| crate::command::shell_quote(x))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            return Ok(crate::error::exit::OK);
        }
        use std::os::unix::process::CommandExt;
        let e = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
        return Err(crate::process::spawn_error("ssh", e).with_package("openssh-client"));
    }
    Err(Error::Usage(format!(
        "no running whole-OS boot{} answers on its ssh port (start one with `kmatrix boot --arch <arch> --rootfs debian`)",
        board.map(|b| format!(" of {b}")).unwrap_or_default()
    )))
}
