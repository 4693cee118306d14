//! The one vocabulary of results: [`Verdict`] (what happened to a cell, a
//! build or a boot), its [`Class`], the [`Outcome`] a boot or build ends
//! with, and typed [`SkipReason`]s.
//!
//! Every reporter matches [`Verdict`] or [`Class`] without a wildcard arm,
//! so a new verdict is a compile error wherever it must be handled.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Pass,
    /// Failed, then passed when retried: the kernel boots, but not always.
    Flaky,
    BuildFail,
    BootFail,
    Panic,
    Oops,
    Timeout,
    CmdFail,
    InfraError,
    Skip,
}

/// What a verdict means for the exit code and the colours of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Pass,
    /// Passed on a retry: shown apart, never as a plain pass (exit 0).
    Flaky,
    /// The kernel failed (exit 1).
    KernelFail,
    Skip,
    /// kmatrix could not do its job (exit 2).
    Infra,
}

impl Verdict {
    pub const ALL: [Verdict; 10] = [
        Verdict::Pass,
        Verdict::Flaky,
        Verdict::BuildFail,
        Verdict::BootFail,
        Verdict::Panic,
        Verdict::Oops,
        Verdict::Timeout,
        Verdict::CmdFail,
        Verdict::InfraError,
        Verdict::Skip,
    ];

    /// The serialised name (`build-fail`...).
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Flaky => "flaky",
            Verdict::BuildFail => "build-fail",
            Verdict::BootFail => "boot-fail",
            Verdict::Panic => "panic",
            Verdict::Oops => "oops",
            Verdict::Timeout => "timeout",
            Verdict::CmdFail => "cmd-fail",
            Verdict::InfraError => "infra-error",
            Verdict::Skip => "skip",
        }
    }

    pub fn class(self) -> Class {
        match self {
            Verdict::Pass => Class::Pass,
            Verdict::Flaky => Class::Flaky,
            Verdict::BuildFail | Verdict::BootFail | Verdict::Panic | Verdict::Oops | Verdict::Timeout | Verdict::CmdFail => Class::KernelFail,
            Verdict::InfraError => Class::Infra,
            Verdict::Skip => Class::Skip,
        }
    }

    /// The kernel (not kmatrix) failed.
    pub fn is_kernel_failure(self) -> bool {
        self.class() == Class::KernelFail
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a boot (or a build) ended: the verdict and, unless it passed, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub verdict: Verdict,
    /// The reason, the kernel line (panic, oops), or the first build error.
    pub detail: Option<String>,
}

impl Outcome {
    pub fn pass() -> Outcome {
        Outcome { verdict: Verdict::Pass, detail: None }
    }

    pub fn new(verdict: Verdict, detail: impl Into<String>) -> Outcome {
        Outcome { verdict, detail: Some(detail.into()) }
    }

    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }
}

/// Why a cell is not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The toolchain has no target for the board's arch.
    ToolchainCannotBuild { toolchain: String, arch: String },
    /// An optional toolchain (matrix `optional-toolchains`) is not installed.
    OptionalToolchainMissing { toolchain: String, packages: Vec<String> },
    /// The board's emulator is not installed; `hint` says how to get it.
    EmulatorNotInstalled { emulator: String, hint: String },
    /// The board declares the kernel versions it runs (`kernels = ...`).
    KernelOutOfRange { board: String, range: String, version: String },
    /// The toolchain's descriptor says it cannot do this combination.
    Unsupported { toolchain: String, reason: String },
    /// The kernel needs a newer compiler than the one installed.
    CompilerTooOld { toolchain: String, version: String, kernel: String, needs: String },
    /// The engine running this part of the plan cannot run the board
    /// (`run --lava` on a gem5 or mips64el board).
    EngineCannotRun { engine: String, board: String, reason: String },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::ToolchainCannotBuild { toolchain, arch } => write!(f, "toolchain `{toolchain}` cannot build arch `{arch}`"),
            SkipReason::OptionalToolchainMissing { toolchain, packages } => {
                write!(f, "optional toolchain `{toolchain}` not installed (Debian: {})", packages.join(" "))
            }
            SkipReason::EmulatorNotInstalled { emulator, hint } => write!(f, "{emulator} not built: {hint}"),
            SkipReason::KernelOutOfRange { board, range, version } => write!(f, "board `{board}` runs kernels {range}, not {version}"),
            SkipReason::Unsupported { toolchain, reason } => write!(f, "{toolchain}: {reason}"),
            SkipReason::EngineCannotRun { engine, board, reason } => write!(f, "{engine} cannot run board `{board}`: {reason}"),
            SkipReason::CompilerTooOld { toolchain, version, kernel, needs } => {
                write!(f, "kernel {kernel} needs {toolchain} {needs}; the installed one is {version}")
            }
        }
    }
}

/// Serialised as its sentence (plan.json's `reason`).
impl Serialize for SkipReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_serde_names() {
        for v in Verdict::ALL {
            assert_eq!(serde_json::to_value(v).unwrap(), v.name(), "{v:?}");
        }
    }
}
