//! Joining the results directories of one plan's parts (`kmatrix run
//! --plan` shards, builds, cells; engine jobs) into the results directory
//! a one-machine sweep of that plan would have written: the same cells in
//! the same order, their logs beside them, nothing lost or duplicated.
//! A cell two parts both ran (a retried job) keeps the result that
//! finished last, and the merge says so; parts of different plans are
//! refused; cells no part ran make the merge incomplete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::results::{BuildRecord, CellResult, Environment, Results};
use crate::error::{Error, Result};

pub struct Merged {
    pub results: Results,
    /// Planned cells no part has a result for: "id (board toolchain kernel config)".
    pub missing: Vec<String>,
    pub parts: usize,
}

struct Part {
    dir: PathBuf,
    plan_text: String,
    plan: serde_json::Value,
    results: Results,
}

fn load(dir: &Path) -> Result<Part> {
    let p = dir.join("plan.json");
    let plan_text = std::fs::read_to_string(&p).map_err(Error::io(format!("cannot read {} (is {} a kmatrix results directory?)", p.display(), dir.display())))?;
    let plan: serde_json::Value = serde_json::from_str(&plan_text).map_err(|e| Error::Usage(format!("{}: not a kmatrix plan: {e}", p.display())))?;
    let results = Results::load(dir)?;
    Ok(Part { dir: dir.to_path_buf(), plan_text, plan, results })
}

fn plan_id(p: &Part) -> Option<&str> {
    p.plan["id"].as_str()
}

fn describe(c: &CellResult) -> String {
    format!("{} ({} {} {} {})", c.id, c.board, c.toolchain, c.kernel, c.config)
}

/// Copies `rel` (a file or a directory) from one results directory into
/// another: hard links where the file system allows (vmcores are guest-RAM
/// sized), else copies. A file already there from another cell is kept.
fn bring(from: &Path, to: &Path, rel: &str) -> Result<()> {
    let (src, dst) = (from.join(rel), to.join(rel));
    let Ok(meta) = std::fs::symlink_metadata(&src) else { return Ok(()) };
    // QMP and monitor sockets, fifos and links are no record of the run.
    if src == dst || !(meta.is_dir() || meta.is_file()) {
        return Ok(());
    }
    if meta.is_dir() {
        std::fs::create_dir_all(&dst).map_err(Error::io(format!("cannot create {}", dst.display())))?;
        for e in std::fs::read_dir(&src).map_err(Error::io(format!("cannot list {}", src.display())))? {
            let e = e.map_err(Error::io(format!("cannot list {}", src.display())))?;
            let name = e.file_name();
            bring(from, to, &format!("{rel}/{}", name.to_string_lossy()))?;
        }
        return Ok(());
    }
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(Error::io(format!("cannot create {}", parent.display())))?;
    }
    let _ = std::fs::remove_file(&dst);
    if std::fs::hard_link(&src, &dst).is_err() {
        std::fs::copy(&src, &dst).map_err(Error::io(format!("cannot copy {} to {}", src.display(), dst.display())))?;
    }
    Ok(())
}

fn merge_env(into: &mut Environment, e: &Environment) {
    let add = |list: &mut String, v: &str| {
        if !v.is_empty() && !list.split(", ").any(|x| x == v) {
            if !list.is_empty() {
                list.push_str(", ");
            }
            list.push_str(v);
        }
    };
    add(&mut into.host, &e.host);
    add(&mut into.host_kernel, &e.host_kernel);
    if into.os.is_none() {
        into.os = e.os.clone();
    }
    for (k, info) in &e.kernels {
        let mine = into.kernels.entry(k.clone()).or_default();
        if mine.source.is_none() {
            mine.source = info.source.clone();
        }
        for r in &info.releases {
            if !mine.releases.contains(r) {
                mine.releases.push(r.clone());
            }
        }
        for c in &info.commits {
            if !mine.commits.contains(c) {
                mine.commits.push(c.clone());
            }
        }
    }
    for (t, lines) in &e.toolchains {
        let mine = into.toolchains.entry(t.clone()).or_default();
        for l in lines {
            if !mine.contains(l) {
                mine.push(l.clone());
            }
        }
    }
    for (k, v) in &e.emulators {
        into.emulators.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

/// Merges `dirs` into `out` (created; a previous merge of the same plan
/// there is replaced).
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<Merged> {
    if dirs.is_empty() {
        return Err(Error::Usage("nothing to merge: name the parts' results directories".into()));
    }
    let mut parts = dirs.iter().map(|d| load(d)).collect::<Result<Vec<_>>>()?;
    let first = plan_id(&parts[0]).ok_or_else(|| Error::Usage(format!("{}/plan.json has no id: it was written by an older kmatrix", parts[0].dir.display())))?.to_string();
    for p in &parts {
        let id = plan_id(p).unwrap_or("(none)");
        if id != first {
            return Err(Error::Usage(format!(
                "{} holds results of plan {id}, {} of plan {first}: results of different plans cannot be merged",
                p.dir.display(),
                parts[0].dir.display()
            )));
        }
        if let Some(r) = &p.results.plan
            && r != id {
                return Err(Error::Usage(format!("{}: results.json is of plan {r}, plan.json of {id}", p.dir.display())));
            }
    }
    if let Ok(existing) = Results::load(out)
        && existing.plan.as_deref() != Some(first.as_str()) && !parts.iter().any(|p| p.dir == out) {
            return Err(Error::Usage(format!("{} already holds results of plan {}: merge into a new directory", out.display(), existing.plan.as_deref().unwrap_or("(none)"))));
        }
    // Later-finished parts win; the command line breaks ties.
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by_key(|&i| (parts[i].results.finished_at.unwrap_or(parts[i].results.started_at), i));
    let mut cells: BTreeMap<String, (usize, CellResult)> = BTreeMap::new();
    let mut builds: BTreeMap<String, BuildRecord> = BTreeMap::new();
    let mut notes = Vec::new();
    for &i in &order {
        for c in &parts[i].results.cells {
            if let Some((j, old)) = cells.get(&c.id) {
                notes.push(format!(
                    "cell {} is in {} ({}) and {} ({}): kept {}'s, which finished later",
                    describe(c),
                    parts[*j].dir.display(),
                    old.verdict.name(),
                    parts[i].dir.display(),
                    c.verdict.name(),
                    parts[i].dir.display()
                ));
            }
            cells.insert(c.id.clone(), (i, c.clone()));
        }
        for b in &parts[i].results.builds {
            builds.insert(b.id.clone(), b.clone());
        }
    }
    std::fs::create_dir_all(out).map_err(Error::io(format!("cannot create {}", out.display())))?;
    let mut r = Results::new(parts.iter().map(|p| p.results.jobs).max().unwrap_or(1));
    r.started_at = parts.iter().map(|p| p.results.started_at).min().unwrap_or(r.started_at);
    r.finished_at = parts.iter().filter_map(|p| p.results.finished_at).max();
    r.wall_seconds = r.finished_at.map(|f| f.saturating_sub(r.started_at) as f64);
    r.peak_rss_kib = parts.iter().filter_map(|p| p.results.peak_rss_kib).max();
    r.plan = Some(first.clone());
    let mut env: Option<Environment> = None;
    for &i in &order {
        if let Some(e) = &parts[i].results.environment {
            merge_env(env.get_or_insert_with(Environment::default), e);
        }
    }
    r.environment = env;
    for (i, c) in cells.values() {
        let from = &parts[*i].dir;
        for rel in [&c.build_log, &c.console_log, &c.stack_log, &c.backtrace_log].into_iter().flatten() {
            bring(from, out, rel)?;
        }
        let attempts = c.attempts.unwrap_or(1);
        for n in 1..=attempts.max(1) {
            let name = if n == 1 { c.id.clone() } else { format!("{}.attempt{n}", c.id) };
            bring(from, out, &format!("runs/{name}"))?;
            bring(from, out, &format!("logs/{name}.console.log"))?;
        }
    }
    let planned: Vec<(String, String)> = parts[0]
        .plan["cells"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or("?").to_string();
            Some((c["id"].as_str()?.to_string(), format!("{} {} {} {}", s("board"), s("toolchain"), s("kernel"), s("config"))))
        })
        .collect();
    let missing: Vec<String> = planned.iter().filter(|(id, _)| !cells.contains_key(id)).map(|(id, what)| format!("{id} ({what})")).collect();
    r.cells = cells.into_values().map(|(_, c)| c).collect();
    r.builds = builds.into_values().collect();
    r.complete = missing.is_empty();
    // An interrupted part matters only while its cells are missing.
    r.interrupted = !r.complete && parts.iter().any(|p| p.results.interrupted);
    r.notes = notes;
    r.sort();
    let n = parts.len();
    let plan_text = std::mem::take(&mut parts[0].plan_text);
    crate::cache::write_atomic(&out.join("plan.json"), plan_text.as_bytes())?;
    r.save(out)?;
    Ok(Merged { results: r, missing, parts: n })
}
