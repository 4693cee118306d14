//! One night against the one before: regressions, fixes, new and removed
//! cells, flakes, and boot times that moved beyond noise. Cells are matched
//! by their coordinates (board, toolchain, kernel, config), not by id: an
//! id changes whenever an input does, and that is exactly what a nightly
//! compares across.

use std::collections::BTreeMap;

use serde::Serialize;

use super::results::{CellResult, Results, Verdict};
use crate::outcome::Class;

/// A boot-to-marker time counts as changed only beyond both: QEMU boots of
/// 1-3 s move by tenths of a second from one run to the next on a loaded
/// host (seen here), so neither a ratio nor a delta alone is enough.
pub const NOISE_RATIO: f64 = 0.30;
pub const NOISE_SECONDS: f64 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Passed (or was flaky) before, a kernel failure now.
    Regression,
    /// A cell that has no earlier result and fails.
    NewFailure,
    Fix,
    /// Failed on a first attempt and passed on a retry.
    Flaky,
    New,
    Removed,
    /// Another change of verdict (e.g. to or from skip or infra-error).
    Changed,
    Slower,
    Faster,
}

impl Kind {
    pub fn title(self) -> &'static str {
        match self {
            Kind::Regression => "regressions",
            Kind::NewFailure => "new cells failing",
            Kind::Fix => "fixes",
            Kind::Flaky => "flaky",
            Kind::New => "new cells",
            Kind::Removed => "removed cells",
            Kind::Changed => "other changes",
            Kind::Slower => "slower boots",
            Kind::Faster => "faster boots",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub kind: Kind,
    pub board: String,
    pub toolchain: String,
    pub kernel: String,
    pub config: String,
    pub before: Option<Verdict>,
    pub after: Option<Verdict>,
    pub before_seconds: Option<f64>,
    pub after_seconds: Option<f64>,
    pub detail: Option<String>,
}

impl Change {
    pub fn name(&self) -> String {
        format!("{} {} {} {}", self.board, self.toolchain, self.kernel, self.config)
    }

    pub fn line(&self) -> String {
        let v = |x: Option<Verdict>| x.map(|v| v.name().to_string()).unwrap_or_else(|| "-".into());
        let detail = self.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
        match self.kind {
            Kind::Slower | Kind::Faster => format!(
                "{}: boot to marker {:.2}s -> {:.2}s",
                self.name(),
                self.before_seconds.unwrap_or(0.0),
                self.after_seconds.unwrap_or(0.0)
            ),
            Kind::New | Kind::NewFailure => format!("{}: {}{detail}", self.name(), v(self.after)),
            Kind::Removed => format!("{}: was {}", self.name(), v(self.before)),
            _ => format!("{}: {} -> {}{detail}", self.name(), v(self.before), v(self.after)),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The earlier run's directory (as given).
    pub previous: String,
    pub changes: Vec<Change>,
}

impl Comparison {
    pub fn count(&self, kind: Kind) -> usize {
        self.changes.iter().filter(|c| c.kind == kind).count()
    }

    /// Kernel failures the earlier run did not have: what pages someone.
    pub fn new_failures(&self) -> usize {
        self.count(Kind::Regression) + self.count(Kind::NewFailure)
    }

    pub fn of(&self, board: &str, toolchain: &str, kernel: &str, config: &str) -> Option<&Change> {
        self.changes
            .iter()
            .filter(|c| !matches!(c.kind, Kind::Slower | Kind::Faster))
            .find(|c| c.board == board && c.toolchain == toolchain && c.kernel == kernel && c.config == config)
    }

    pub fn text(&self) -> String {
        let mut s = format!(
            "against {}: {} regressions, {} fixes, {} flaky, {} new ({} failing), {} removed, {} other changes, {} slower, {} faster\n",
            self.previous,
            self.count(Kind::Regression),
            self.count(Kind::Fix),
            self.count(Kind::Flaky),
            self.count(Kind::New) + self.count(Kind::NewFailure),
            self.count(Kind::NewFailure),
            self.count(Kind::Removed),
            self.count(Kind::Changed),
            self.count(Kind::Slower),
            self.count(Kind::Faster),
        );
        let mut by: BTreeMap<Kind, Vec<&Change>> = BTreeMap::new();
        for c in &self.changes {
            by.entry(c.kind).or_default().push(c);
        }
        for (k, v) in by {
            s.push_str(&format!("{}:\n", k.title()));
            for c in v {
                s.push_str(&format!("  {}\n", c.line()));
            }
        }
        s
    }
}

type Key = (String, String, String, String);

fn key(c: &CellResult) -> Key {
    (c.board.clone(), c.toolchain.clone(), c.kernel.clone(), c.config.clone())
}

fn change(kind: Kind, c: &CellResult, before: Option<&CellResult>, after: Option<&CellResult>) -> Change {
    Change {
        kind,
        board: c.board.clone(),
        toolchain: c.toolchain.clone(),
        kernel: c.kernel.clone(),
        config: c.config.clone(),
        before: before.map(|b| b.verdict),
        after: after.map(|a| a.verdict),
        before_seconds: before.and_then(|b| b.boot_to_marker_seconds),
        after_seconds: after.and_then(|a| a.boot_to_marker_seconds),
        detail: after.and_then(|a| a.detail.clone()),
    }
}

/// Whether a run of this verdict passed in the end.
fn passed(v: Verdict) -> bool {
    matches!(v.class(), Class::Pass | Class::Flaky)
}

pub fn compare(old: &Results, new: &Results, previous: &str) -> Comparison {
    let before: BTreeMap<Key, &CellResult> = old.cells.iter().map(|c| (key(c), c)).collect();
    let after: BTreeMap<Key, &CellResult> = new.cells.iter().map(|c| (key(c), c)).collect();
    let mut changes = Vec::new();
    for (k, c) in &after {
        let Some(o) = before.get(k) else {
            let kind = if c.verdict.is_kernel_failure() { Kind::NewFailure } else { Kind::New };
            changes.push(change(kind, c, None, Some(c)));
            continue;
        };
        let kind = match (o.verdict, c.verdict) {
            (_, Verdict::Flaky) => Some(Kind::Flaky),
            (a, b) if passed(a) && b.is_kernel_failure() => Some(Kind::Regression),
            (a, b) if a.is_kernel_failure() && passed(b) => Some(Kind::Fix),
            (a, b) if a == b => None,
            // Another kernel failure than before is no news for a pager.
            (a, b) if a.is_kernel_failure() && b.is_kernel_failure() => Some(Kind::Changed),
            // Infra or skip before, failing now: nobody saw it pass.
            (_, b) if b.is_kernel_failure() => Some(Kind::NewFailure),
            _ => Some(Kind::Changed),
        };
        if let Some(kind) = kind {
            changes.push(change(kind, c, Some(o), Some(c)));
        }
        if let (Some(a), Some(b)) = (o.boot_to_marker_seconds, c.boot_to_marker_seconds)
            && passed(o.verdict) && passed(c.verdict) {
                let d = b - a;
                if d.abs() > NOISE_SECONDS && d.abs() > NOISE_RATIO * a {
                    changes.push(change(if d > 0.0 { Kind::Slower } else { Kind::Faster }, c, Some(o), Some(c)));
                }
            }
    }
    for (k, o) in &before {
        if !after.contains_key(k) {
            changes.push(change(Kind::Removed, o, Some(o), None));
        }
    }
    changes.sort_by_key(|c| (c.kind, c.name()));
    Comparison { previous: previous.to_string(), changes }
}
