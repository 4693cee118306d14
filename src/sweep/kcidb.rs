//! KCIDB v5 (KernelCI's results database): a results directory as
//! checkouts (one per kernel tree), builds and tests (one `boot` test per
//! cell), every id prefixed with the origin, and its submission over HTTP
//! with a bearer token. The schema is kcidb-io's (`kcidb_io.schema.LATEST`,
//! v5.3); the tests validate against it.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::results::{CellResult, Results, Verdict};
use crate::error::{Error, Result};

pub const MAJOR: u32 = 5;
pub const MINOR: u32 = 3;

/// An origin as KCIDB wants it: `^[a-z0-9_]+$`.
pub fn check_origin(o: &str) -> Result<()> {
    if o.is_empty() || !o.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(Error::Usage(format!("KCIDB origin `{o}`: only a-z, 0-9 and _")));
    }
    Ok(())
}

fn test_status(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass | Verdict::Flaky => "PASS",
        Verdict::BootFail | Verdict::Panic | Verdict::Oops | Verdict::Timeout | Verdict::CmdFail => "FAIL",
        Verdict::InfraError => "ERROR",
        Verdict::Skip => "SKIP",
        // Never booted: its kernel did not build.
        Verdict::BuildFail => "MISS",
    }
}

fn put(m: &mut Map<String, Value>, k: &str, v: Option<impl Into<Value>>) {
    if let Some(v) = v {
        m.insert(k.into(), v.into());
    }
}

/// The KCIDB document for `r` (ids unique to this run: a nightly reusing
/// yesterday's build still reports its own build and tests).
pub fn render(r: &Results, origin: &str) -> Value {
    let run = r.started_at;
    let start = super::results::utc(run);
    let mut checkouts: BTreeMap<String, Value> = BTreeMap::new();
    let mut builds: BTreeMap<String, (Vec<&CellResult>, String)> = BTreeMap::new();
    let mut tests = Vec::new();
    // A skipped cell never unpacked its tree: it has the source its kernel
    // label had elsewhere in the run.
    let known = |c: &CellResult| {
        c.kernel_source.clone().or_else(|| r.environment.as_ref().and_then(|e| e.kernels.get(&c.kernel)).and_then(|k| k.source.clone())).or_else(|| r.cells.iter().find(|o| o.kernel == c.kernel && o.kernel_source.is_some()).and_then(|o| o.kernel_source.clone()))
    };
    for c in &r.cells {
        let source = known(c).unwrap_or_default();
        let commit = c.git.as_ref().map(|g| g.commit.clone());
        let checkout = format!("{origin}:{}-{}", c.kernel, crate::plan::short_hash(&(&source, &commit, &c.kernel_version)));
        checkouts.entry(checkout.clone()).or_insert_with(|| {
            let mut m = Map::new();
            m.insert("id".into(), json!(checkout));
            m.insert("origin".into(), json!(origin));
            m.insert("tree_name".into(), json!(c.kernel));
            put(&mut m, "git_commit_hash", commit.clone());
            m.insert("start_time".into(), json!(start));
            m.insert("valid".into(), json!(true));
            m.insert("misc".into(), json!({"source": source, "version": c.kernel_version}));
            Value::Object(m)
        });
        builds.entry(c.build.clone()).or_insert_with(|| (Vec::new(), checkout.clone())).0.push(c);
        let mut t = Map::new();
        t.insert("id".into(), json!(format!("{origin}:{}-{run}", c.id)));
        t.insert("build_id".into(), json!(format!("{origin}:{}-{run}", c.build)));
        t.insert("origin".into(), json!(origin));
        t.insert("path".into(), json!("boot"));
        t.insert("comment".into(), json!(format!("{} {} {} {}", c.board, c.toolchain, c.kernel, c.config)));
        t.insert("environment".into(), json!({"comment": format!("{} ({})", c.board, c.emulator), "misc": {"board": c.board, "emulator": c.emulator}}));
        t.insert("start_time".into(), json!(start));
        put(&mut t, "duration", c.boot_seconds);
        t.insert("status".into(), json!(test_status(c.verdict)));
        let mut misc = Map::new();
        misc.insert("verdict".into(), json!(c.verdict.name()));
        put(&mut misc, "detail", c.detail.clone());
        put(&mut misc, "console_log", c.console_log.clone());
        put(&mut misc, "attempts", c.attempts);
        t.insert("misc".into(), Value::Object(misc));
        tests.push(Value::Object(t));
    }
    let records: BTreeMap<&str, &super::results::BuildRecord> = r.builds.iter().map(|b| (b.id.as_str(), b)).collect();
    let builds: Vec<Value> = builds
        .into_iter()
        .map(|(id, (cells, checkout))| {
            // What a booted cell says of the build, when one booted.
            let c = cells.iter().copied().find(|c| c.toolchain_version.is_some()).unwrap_or(cells[0]);
            let status = match records.get(id.as_str()) {
                Some(b) if b.ok => "PASS",
                Some(_) => "FAIL",
                None if cells.iter().any(|c| c.verdict == Verdict::BuildFail) => "FAIL",
                None if cells.iter().all(|c| c.verdict == Verdict::Skip) => "SKIP",
                None if cells.iter().all(|c| matches!(c.verdict, Verdict::Skip | Verdict::InfraError)) => "ERROR",
                None => "PASS",
            };
            let mut m = Map::new();
            m.insert("id".into(), json!(format!("{origin}:{id}-{run}")));
            m.insert("checkout_id".into(), json!(checkout));
            m.insert("origin".into(), json!(origin));
            m.insert("start_time".into(), json!(start));
            put(&mut m, "duration", c.build_seconds);
            m.insert("architecture".into(), json!(c.arch));
            put(&mut m, "compiler", c.toolchain_version.clone().or_else(|| Some(c.toolchain.clone())));
            m.insert("config_name".into(), json!(c.config));
            m.insert("status".into(), json!(status));
            let mut misc = Map::new();
            misc.insert("kmatrix_build".into(), json!(id));
            misc.insert("toolchain".into(), json!(c.toolchain));
            put(&mut misc, "kernel_release", c.kernel_release.clone());
            put(&mut misc, "build_log", c.build_log.clone());
            put(&mut misc, "reused", c.build_reused);
            if status == "FAIL" {
                put(&mut misc, "detail", c.detail.clone());
            }
            m.insert("misc".into(), Value::Object(misc));
            Value::Object(m)
        })
        .collect();
    json!({
        "version": {"major": MAJOR, "minor": MINOR},
        "checkouts": checkouts.into_values().collect::<Vec<_>>(),
        "builds": builds,
        "tests": tests,
    })
}

/// POSTs the document to `url` with `Authorization: Bearer <token>`.
pub fn submit(doc: &Value, url: &str, token: &str) -> Result<String> {
    if !(url.starts_with("https://") || url.starts_with("http://127.0.0.1") || url.starts_with("http://localhost") || url.starts_with("http://[::1]")) {
        return Err(Error::Usage(format!("{url}: KCIDB submissions carry a token, so only https:// (or http:// to loopback)")));
    }
    let client = reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(60)).build().map_err(|e| Error::Infra(format!("HTTP client: {e}")))?;
    let resp = client
        .post(url)
        .bearer_auth(token)
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(doc).expect("serialises"))
        .send()
        .map_err(|e| Error::Infra(format!("KCIDB submission to {url} failed: {e}")))?;
    let status = resp.status();
    let body = resp.text().unwrap_or_default();
    if !status.is_success() {
        return Err(Error::Infra(format!("KCIDB at {url} answered {status}: {}", body.trim())));
    }
    Ok(format!("{status} {}", body.trim()))
}
