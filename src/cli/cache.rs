//! `kmatrix cache ls [--format table|json]` / `kmatrix cache gc`: what the cache holds, and
//! removing old or excess builds.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::cli::list::table;
use crate::cli::{print_json, Ctx, Format};
use crate::descriptor::load::{parse_duration, parse_memory};
use crate::error::{exit, Error, Result};

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// List kernel builds in the cache.
    Ls {
        /// Output format; JSON is an array of builds (name, path,
        /// size_bytes, age_seconds, build_seconds, cpu_seconds, what).
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Remove builds (oldest first) older than a duration or beyond a size.
    Gc {
        /// e.g. 30d, 12h, 2w.
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
        /// e.g. 20G, 500M.
        #[arg(long, value_name = "SIZE")]
        max_size: Option<String>,
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Builds used more recently than this are never collected: a run may be
/// booting them (a boot holds no lock on the build it reused).
const RECENT_USE: Duration = Duration::from_secs(3600);

fn du(p: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(p) else { return 0 };
    if m.is_dir() {
        std::fs::read_dir(p).into_iter().flatten().filter_map(|e| e.ok()).map(|e| du(&e.path())).sum()
    } else {
        m.len()
    }
}

struct Entry {
    name: String,
    size: u64,
    age: Duration,
    what: String,
    /// Wall and CPU seconds of the make that built it.
    build: Option<(f64, f64)>,
}

/// One build in `cache ls --format json`.
#[derive(Serialize)]
struct JsonEntry<'a> {
    name: &'a str,
    path: String,
    size_bytes: u64,
    /// Since last use (the manifest's modification time).
    age_seconds: u64,
    /// `null` for an incomplete build (no manifest).
    build_seconds: Option<f64>,
    cpu_seconds: Option<f64>,
    what: &'a str,
}

fn entries(ctx: &Ctx) -> Vec<Entry> {
    let builds = ctx.cache.root.join("builds");
    let mut v: Vec<Entry> = std::fs::read_dir(&builds)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| {
            let p = e.path();
            let manifest: Option<crate::build::Manifest> = std::fs::read_to_string(p.join("manifest.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
            // Last use: the manifest is rewritten by builds; boots read it.
            let age = std::fs::metadata(p.join("manifest.json")).or_else(|_| std::fs::metadata(&p)).ok().and_then(|m| m.modified().ok()).and_then(|t| SystemTime::now().duration_since(t).ok()).unwrap_or_default();
            Entry {
                name: e.file_name().to_string_lossy().into_owned(),
                size: du(&p),
                age,
                build: manifest.as_ref().map(|m| (m.build_seconds, m.cpu_seconds)),
                what: manifest.map(|m| format!("{} {} ({})", m.arch, m.toolchain, m.targets.join(" "))).unwrap_or_else(|| "incomplete".into()),
            }
        })
        .collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.age));
    v
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    match a.cmd {
        Cmd::Ls { format: Format::Json } => {
            let list = entries(ctx);
            let builds = ctx.cache.root.join("builds");
            let v: Vec<JsonEntry> = list
                .iter()
                .map(|e| JsonEntry {
                    name: &e.name,
                    path: builds.join(&e.name).display().to_string(),
                    size_bytes: e.size,
                    age_seconds: e.age.as_secs(),
                    build_seconds: e.build.map(|b| b.0),
                    cpu_seconds: e.build.map(|b| b.1),
                    what: &e.what,
                })
                .collect();
            print_json(&v);
            Ok(exit::OK)
        }
        Cmd::Ls { format: Format::Table } => {
            let mut t = table(["build", "size", "age", "build time (CPU)", "kernel"]);
            let mut total = 0;
            for e in entries(ctx) {
                total += e.size;
                let time = e.build.map(|(w, c)| format!("{w:.0}s ({c:.0}s)")).unwrap_or_else(|| "-".into());
                t.add_row([e.name, format!("{} MiB", e.size >> 20), format!("{}h", e.age.as_secs() / 3600), time, e.what]);
            }
            println!("{t}");
            println!("cache {}: builds {} MiB", ctx.cache.root.display(), total >> 20);
            Ok(exit::OK)
        }
        Cmd::Gc { older_than, max_size, dry_run } => {
            let age = older_than.as_deref().map(|s| parse_duration(s).ok_or_else(|| Error::Usage(format!("--older-than {s}: expected e.g. 30d, 12h")))).transpose()?;
            let max = max_size.as_deref().map(|s| parse_memory(s).map(|mib| mib << 20).ok_or_else(|| Error::Usage(format!("--max-size {s}: expected e.g. 20G, 500M")))).transpose()?;
            if age.is_none() && max.is_none() {
                return Err(Error::Usage("give --older-than and/or --max-size".into()));
            }
            let list = entries(ctx);
            let mut total: u64 = list.iter().map(|e| e.size).sum();
            let mut freed = 0;
            for e in &list {
                let too_old = age.is_some_and(|a| e.age > a);
                let too_big = max.is_some_and(|m| total > m);
                if too_old || too_big {
                    // A build another run is making now, or reused within
                    // the hour (a sweep may be booting it), is left alone.
                    let Some(_lock) = ctx.cache.try_lock(&format!("builds/{}", e.name))? else {
                        println!("skipping {} (in use by another kmatrix run)", e.name);
                        continue;
                    };
                    if e.age < RECENT_USE {
                        println!("skipping {} (used {}s ago)", e.name, e.age.as_secs());
                        continue;
                    }
                    println!("{} {} ({} MiB, {})", if dry_run { "would remove" } else { "removing" }, e.name, e.size >> 20, e.what);
                    if !dry_run {
                        std::fs::remove_dir_all(ctx.cache.root.join("builds").join(&e.name)).map_err(Error::io(format!("cannot remove {}", e.name)))?;
                    }
                    total -= e.size;
                    freed += e.size;
                }
            }
            println!("freed {} MiB", freed >> 20);
            Ok(exit::OK)
        }
    }
}
