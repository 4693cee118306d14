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

/// A requirement not met on this host. Packages are only checked where
/// dpkg can tell (elsewhere the compiler check must do).
fn unmet(r: &Requirement, have_dpkg: bool) -> bool {
    match r.check {
        Check::Program(_) => !r.satisfied(),
        Check::Package => have_dpkg && !r.satisfied(),
    }
}

/// How far the work goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Work {
    #[default]
    Build,
    Boot,
    /// Boot with gdb-multiarch attached.
    Debug,
}

/// What building with `tc` for `board` (then booting it, then attaching
/// gdb, as far as `work` goes) needs and this host lacks.
pub fn check(reg: &Registry, board: &Board, tc: &Toolchain, work: Work) -> Missing {
    let have_dpkg = host::which("dpkg-query").is_some();
    Missing(
        host::requirements(reg, &[board], &[tc], work == Work::Debug)
            .into_iter()
            // The emulator's requirement is the one needed by the board itself.
            .filter(|r| work != Work::Build || r.needed_by != board.id)
            .filter(|r| unmet(r, have_dpkg))
            .collect(),
    )
}

/// [`check`] as a result: `Err(MissingTools)` when anything is missing.
pub fn require(reg: &Registry, board: &Board, tc: &Toolchain, work: Work) -> crate::error::Result<()> {
    let m = check(reg, board, tc, work);
    if m.is_empty() { Ok(()) } else { Err(crate::error::Error::MissingTools(m)) }
}
