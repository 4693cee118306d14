//! kmatrix's own errors and the process exit codes they map to.
//!
//! A kernel that fails to build or boot is not an error here: it is an
//! outcome (see `boot::Outcome`). An `Error` means kmatrix could not do its
//! job: bad input, a missing tool, a failed download, an I/O failure.

use crate::descriptor::Diagnostic;

/// Documented exit codes (README, "Exit codes").
pub mod exit {
    /// Everything passed (or was skipped).
    pub const OK: i32 = 0;
    /// A kernel failed: build-fail, boot-fail, panic, oops, timeout.
    pub const KERNEL_FAILURE: i32 = 1;
    /// kmatrix could not do its job: usage, descriptors, missing tools, I/O.
    pub const INFRA: i32 = 2;
    /// Stopped by SIGINT/SIGTERM.
    pub const INTERRUPTED: i32 = 130;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} descriptor error{} found", .0.len(), if .0.len() == 1 { "" } else { "s" })]
    Descriptors(Vec<Diagnostic>),
    #[error("{0}")]
    Usage(String),
    #[error("`{tool}` not found{}", package.as_ref().map(|p| format!(" (Debian package: {p}; `kmatrix setup` installs it)")).unwrap_or_default())]
    MissingTool { tool: String, package: Option<String> },
    #[error("unknown toolchain `{name}`; {suggestion}")]
    UnknownToolchain { name: String, suggestion: String },
    #[error("toolchain `{toolchain}` cannot build arch `{arch}` (it has no [targets.{arch}])")]
    ToolchainCannotBuild { toolchain: String, arch: String },
    /// An emulator kmatrix does not install from a package (gem5).
    #[error("{emulator} not built: {hint}")]
    EmulatorNotInstalled { emulator: String, hint: String },
    #[error("{0}")]
    Infra(String),
    /// Pre-flight found tools missing before anything was built.
    #[error("{0}")]
    MissingTools(crate::preflight::Missing),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sha256 mismatch for {what}: expected {expected}, got {actual}")]
    ChecksumMismatch { what: String, expected: String, actual: String },
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Interrupted => exit::INTERRUPTED,
            Error::Descriptors(_)
            | Error::Usage(_)
            | Error::UnknownToolchain { .. }
            | Error::ToolchainCannotBuild { .. }
            | Error::EmulatorNotInstalled { .. }
            | Error::MissingTool { .. }
            | Error::MissingTools(_)
            | Error::Infra(_)
            | Error::Io { .. }
            | Error::ChecksumMismatch { .. } => exit::INFRA,
        }
    }

    /// A missing tool learns the Debian package that provides it.
    pub fn with_package(self, package: &str) -> Error {
        match self {
            Error::MissingTool { tool, package: None } => Error::MissingTool { tool, package: Some(package.to_string()) },
            e => e,
        }
    }

    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
