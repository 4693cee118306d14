//! Pre-flight: before the first configure, every tool the selected work
//! needs (build tools, the compiler and its cross libc, the emulator,
//! gdb-multiarch for debug) is looked up, so a missing one is reported in
//! well under a second with its Debian package instead of after a
//! 20-minute build. The list comes from [`crate::host::requirements`],
//! i.e. from the descriptors.

use std::fmt;

use crate::descriptor::{Board, Registry, Toolchain};
use crate::host::{self, Check, Requirement};

/// The unmet requirements of a set of tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing(pub Vec<Requirement>);

impl Missing {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .0
            .iter()
            .map(|r| match &r.check {
                Check::Program(p) => format!("`{p}` (Debian package: {})", r.package),
                Check::Package => format!("Debian package {}", r.package),
            })
            .collect();
        write!(f, "missing {}; `kmatrix setup` installs {}", items.join(", "), if items.len() == 1 { "it" } else { "them" })
    }
}

/// A program that is not on PATH. Packages without a program (a cross
/// libc, libelf-dev) are not refused here: a self-built cross compiler or a
/// kernel that needs no libelf works without them, and when one is really
/// missing the build or init compile says which (see [`warnings`]).
fn unmet(r: &Requirement) -> bool {
    matches!(r.check, Check::Program(_)) && !r.satisfied()
}

/// Packages dpkg says are not installed (where dpkg can tell).
pub fn warnings(reg: &Registry, board: &Board, tc: &Toolchain) -> Vec<String> {
    if host::which("dpkg-query").is_none() {
        return vec![];
    }
    host::requirements(reg, &[board], &[tc], false)
        .into_iter()
        .filter(|r| r.check == Check::Package && !r.satisfied())
        .map(|r| format!("Debian package {} is not installed (needed by {}); the build may fail", r.package, r.needed_by))
        .collect()
}

/// How far the work goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Work {
    #[default]
    Build,
    /// Build, then gdb-multiarch against an emulator started elsewhere.
    Attach,
    Boot,
    /// Boot with gdb-multiarch attached.
    Debug,
}

/// What building with `tc` for `board` (then booting it, then attaching
/// gdb, as far as `work` goes) needs and this host lacks.
pub fn check(reg: &Registry, board: &Board, tc: &Toolchain, work: Work) -> Missing {
    let boots = matches!(work, Work::Boot | Work::Debug);
    Missing(
        host::requirements(reg, &[board], &[tc], matches!(work, Work::Debug | Work::Attach))
            .into_iter()
            // The emulator's requirement is the one needed by the board itself.
            .filter(|r| boots || r.needed_by != board.id)
            .filter(unmet)
            .collect(),
    )
}

/// [`check`] as a result: `Err(MissingTools)` when anything is missing.
pub fn require(reg: &Registry, board: &Board, tc: &Toolchain, work: Work) -> crate::error::Result<()> {
    let m = check(reg, board, tc, work);
    if !m.is_empty() {
        return Err(crate::error::Error::MissingTools(m));
    }
    for w in warnings(reg, board, tc) {
        eprintln!("kmatrix: warning: {w}");
    }
    Ok(())
}
