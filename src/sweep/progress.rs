//! Live terminal reporting of sweep events: a progress bar with the running
//! cells, elapsed time and ETA on a TTY; plain timestamped lines otherwise
//! (pipes, CI logs).

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::events::Event;
use super::results::Verdict;

pub struct Progress {
    start: Instant,
    bar: Option<ProgressBar>,
    running: Vec<String>,
}

impl Progress {
    /// A live view when stderr is a terminal and not in CI.
    pub fn new() -> Self {
        let live = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        let bar = live.then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} cells, ETA {eta}  {msg}")
                    .expect("valid template"),
            );
            b.enable_steady_tick(std::time::Duration::from_millis(200));
            b
        });
        Progress { start: Instant::now(), bar, running: Vec::new() }
    }

    fn line(&self, msg: &str) {
        let t = self.start.elapsed().as_secs();
        let text = format!("[{:>3}:{:02}] {msg}", t / 60, t % 60);
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn update(&self) {
        if let Some(b) = &self.bar {
            b.set_message(self.running.join(", "));
        }
    }

    pub fn event(&mut self, e: &Event) {
        match e {
            Event::RunStarted { dir, cells, to_run, builds, jobs } => {
                if let Some(b) = &self.bar {
                    b.set_length(*cells as u64);
                }
                self.line(&format!("sweep: {cells} cells ({to_run} to run), {builds} kernel builds, {jobs} jobs; results in {}", dir.display()));
            }
            Event::BuildStarted { build, arch, toolchain, cells } => {
                self.running.push(format!("build {arch}/{toolchain}"));
                self.update();
                self.line(&format!("build {build} {arch}/{toolchain} ({cells} cells)"));
            }
            Event::BuildFinished { build, ok, reused, seconds, detail, .. } => {
                self.running.retain(|r| !r.starts_with("build ") || !r.contains(build.as_str()));
                let what = if *reused { "reused".to_string() } else if *ok { format!("built in {seconds:.0}s") } else { format!("FAILED: {}", detail.as_deref().unwrap_or("")) };
                self.line(&format!("build {build} {what}"));
                self.running.retain(|r| !r.starts_with("build "));
                self.update();
            }
            Event::Note { build, message } => {
                self.line(&match build {
                    Some(b) => format!("build {b}: {message}"),
                    None => message.clone(),
                });
            }
            Event::BootStarted { board, .. } => {
                self.running.push(format!("boot {board}"));
                self.update();
            }
            Event::CellFinished(r) => {
                self.running.retain(|x| x != &format!("boot {}", r.board));
                if let Some(b) = &self.bar {
                    b.inc(1);
                }
                self.update();
                let time = r.boot_to_marker_seconds.map(|t| format!(" (marker {t:.2}s)")).unwrap_or_default();
                let detail = r.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
                let v = if r.verdict == Verdict::Pass { "PASS".to_string() } else { r.verdict.name().to_uppercase() };
                self.line(&format!("{v:<11} {} {} {} {}{time}{detail}", r.board, r.toolchain, r.kernel, r.config));
            }
            Event::RunFinished { interrupted } => {
                if let Some(b) = &self.bar {
                    b.finish_and_clear();
                }
                if *interrupted {
                    self.line("interrupted: finished cells are saved; `kmatrix sweep --resume <dir>` runs the rest");
                }
            }
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}
