//! The events joining the sweep runner to its reporters. Every reporter
//! (terminal lines, live progress, the results writer) sees the same stream.

use std::path::PathBuf;

use super::results::CellResult;

#[derive(Debug, Clone)]
pub enum Event {
    RunStarted { dir: PathBuf, cells: usize, to_run: usize, builds: usize, jobs: usize },
    /// `estimate`: what the last build of the same inputs took.
    BuildStarted { build: String, arch: String, toolchain: String, cells: usize, estimate: Option<crate::build::Estimate> },
    /// Compile steps make has printed so far (sent every few seconds).
    BuildProgress { build: String, objects: u64 },
    BuildFinished { build: String, ok: bool, reused: bool, seconds: f64, cpu_seconds: f64, detail: Option<String> },
    BootStarted { cell: String, board: String },
    /// Something a user should see: a wait for a cache entry another run
    /// holds, a pre-flight finding.
    Note { build: Option<String>, message: String },
    CellFinished(Box<CellResult>),
    RunFinished { interrupted: bool },
}
