//! `results.json`: the versioned record of a sweep (schema in README,
//! "results.json"). Rewritten atomically after every finished cell, so a
//! killed sweep leaves valid results for the cells it finished and
//! `kmatrix sweep --resume <dir>` can run only the missing ones.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cache::write_atomic;
use crate::error::{Error, Result};

pub const RESULTS_SCHEMA: u32 = 1;

pub use crate::outcome::Verdict;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellResult {
    pub id: String,
    pub board: String,
    pub arch: String,
    pub toolchain: String,
    /// The matrix's label for the kernel.
    pub kernel: String,
    /// The version the matrix declares (or the tree's, when it declares none).
    pub kernel_version: Option<String>,
    /// What the built kernel reports (include/config/kernel.release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
    /// Where the tree came from (tarball, directory, URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_source: Option<String>,
    /// A git working tree's commit and whether it differed from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<crate::source::Git>,
    /// First line of the compiler's `--version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toolchain_version: Option<String>,
    pub config: String,
    pub emulator: String,
    pub build: String,
    pub verdict: Verdict,
    /// Skip or failure reason, the panic line, or the first build error.
    pub detail: Option<String>,
    pub build_seconds: Option<f64>,
    pub build_cpu_seconds: Option<f64>,
    pub build_reused: Option<bool>,
    pub boot_seconds: Option<f64>,
    pub boot_to_marker_seconds: Option<f64>,
    /// Paths relative to the results directory.
    pub build_log: Option<String>,
    pub console_log: Option<String>,
    /// The console log was cut at `--console-log-limit` (the console was
    /// still read and judged to the end).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub console_log_cut: bool,
    /// Boots it took (retries of a failed boot included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// For panic/oops cells: the stack decoded to file:line by the
    /// kernel's scripts/decode_stacktrace.sh (relative path of the text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_log: Option<String>,
    /// For a panic with `dump = true`: the panicking task's backtrace read
    /// from the guest's memory dump by drgn (relative path of the text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backtrace_log: Option<String>,
}

/// What a report says it is about, gathered when the sweep ends.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Environment {
    pub host: String,
    /// The host's `uname -sr` and machine.
    pub host_kernel: String,
    /// PRETTY_NAME of /etc/os-release.
    pub os: Option<String>,
    /// Kernel label → what was built from it.
    pub kernels: BTreeMap<String, KernelInfo>,
    /// Toolchain id → the distinct `--version` lines its compilers gave.
    pub toolchains: BTreeMap<String, Vec<String>>,
    /// Emulator binary → its `--version` line (or why there is none).
    pub emulators: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KernelInfo {
    pub source: Option<String>,
    /// Releases the built kernels report (`uname -r`), distinct.
    pub releases: Vec<String>,
    /// Git commits (with `-dirty`), distinct.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commits: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub schema: u32,
    pub kmatrix_version: String,
    pub started_at: u64,
    pub finished_at: Option<u64>,
    /// Every planned cell has a result.
    pub complete: bool,
    pub interrupted: bool,
    pub jobs: usize,
    pub wall_seconds: Option<f64>,
    /// kmatrix's own peak resident set (KiB), all threads.
    pub peak_rss_kib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    /// The id of the plan these are results of (plan.json beside it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The kernel builds this run finished (also those no cell booted yet:
    /// `run --plan --build`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builds: Vec<BuildRecord>,
    /// What a merge had to decide (a cell two shards both ran).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub cells: Vec<CellResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    pub id: String,
    pub ok: bool,
    pub reused: bool,
    pub seconds: f64,
    pub cpu_seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Results {
    pub fn new(jobs: usize) -> Self {
        Results {
            schema: RESULTS_SCHEMA,
            kmatrix_version: env!("CARGO_PKG_VERSION").into(),
            started_at: now(),
            finished_at: None,
            complete: false,
            interrupted: false,
            jobs,
            wall_seconds: None,
            peak_rss_kib: None,
            environment: None,
            plan: None,
            builds: Vec::new(),
            notes: Vec::new(),
            cells: Vec::new(),
        }
    }

    pub fn load(dir: &Path) -> Result<Results> {
        let p = dir.join("results.json");
        let text = std::fs::read_to_string(&p).map_err(Error::io(format!("cannot read {}", p.display())))?;
        let r: Results = serde_json::from_str(&text).map_err(|e| Error::Usage(format!("{}: not a kmatrix results file: {e}", p.display())))?;
        if r.schema != RESULTS_SCHEMA {
            return Err(Error::Usage(format!("{}: results schema {} (this kmatrix reads {RESULTS_SCHEMA})", p.display(), r.schema)));
        }
        Ok(r)
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        write_atomic(&dir.join("results.json"), serde_json::to_string_pretty(self).expect("serialises").as_bytes())
    }

    /// The order every report shows: by board, toolchain, kernel, config.
    pub fn sort(&mut self) {
        self.cells.sort_by(|a, b| (&a.board, &a.toolchain, &a.kernel, &a.config).cmp(&(&b.board, &b.toolchain, &b.kernel, &b.config)));
        self.builds.sort_by(|a, b| a.id.cmp(&b.id));
    }

    pub fn flaky(&self) -> usize {
        self.cells.iter().filter(|c| c.verdict == Verdict::Flaky).count()
    }

    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let pass = self.cells.iter().filter(|c| c.verdict == Verdict::Pass).count();
        let fail = self.cells.iter().filter(|c| c.verdict.is_kernel_failure()).count();
        let skip = self.cells.iter().filter(|c| c.verdict == Verdict::Skip).count();
        let infra = self.cells.iter().filter(|c| c.verdict == Verdict::InfraError).count();
        (pass, fail, skip, infra)
    }

    /// 0 all pass or skip; 1 a kernel failed; 2 infra errors.
    pub fn exit_code(&self) -> i32 {
        use crate::error::exit;
        let (_, fail, _, infra) = self.counts();
        if self.interrupted {
            exit::INTERRUPTED
        } else if infra > 0 {
            exit::INFRA
        } else if fail > 0 {
            exit::KERNEL_FAILURE
        } else {
            exit::OK
        }
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Peak RSS of this process in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// `secs` since the epoch as UTC `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(1_796_193_012), "2026-12-02T06:30:12Z");
        assert_eq!(super::utc(951_782_400), "2000-02-29T00:00:00Z");
    }
}
