//! Live terminal reporting of sweep events: a progress bar with the running
//! cells, elapsed time and ETA on a TTY; plain timestamped lines otherwise
//! (pipes, CI logs), with a heartbeat per running build at least every
//! [`HEARTBEAT`] so a long build is never a silent one.
//!
//! A build's progress is the compile steps make has printed against the
//! count of the last build of the same inputs ([`crate::build::Estimate`]);
//! its ETA scales that build's time by the fraction left.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub const HEARTBEAT: Duration = Duration::from_secs(60);

/// KMATRIX_HEARTBEAT_SECS shortens it (the fast tests see a heartbeat
/// without waiting a minute).
fn heartbeat() -> Duration {
    std::env::var("KMATRIX_HEARTBEAT_SECS").ok().and_then(|s| s.parse().ok()).map(Duration::from_secs).unwrap_or(HEARTBEAT)
}

struct Running {
    label: String,
    started: Instant,
    objects: u64,
    estimate: Option<crate::build::Estimate>,
    last_beat: Instant,
}

impl Running {
    fn status(&self) -> String {
        let el = self.started.elapsed().as_secs();
        let mut s = format!("{}: {} objects, {}m{:02}s", self.label, self.objects, el / 60, el % 60);
        if let Some(e) = self.estimate.filter(|e| e.objects > 0) {
            let frac = (self.objects as f64 / e.objects as f64).min(0.99);
            let left = (e.seconds * (1.0 - frac)).max(0.0) as u64;
            s.push_str(&format!(" ({:.0}% of last build's {}, ETA {}m{:02}s)", frac * 100.0, e.objects, left / 60, left % 60));
        }
        s
    }
}

use indicatif::{ProgressBar, ProgressStyle};

use super::events::Event;

pub struct Progress {
    start: Instant,
    bar: Option<ProgressBar>,
    running: Vec<String>,
    builds: BTreeMap<String, Running>,
    heartbeat: Duration,
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
        Progress { start: Instant::now(), bar, running: Vec::new(), builds: BTreeMap::new(), heartbeat: heartbeat() }
    }

    /// Called about once a second: the heartbeat of plain output.
    pub fn tick(&mut self) {
        if self.bar.is_some() {
            return;
        }
        let every = self.heartbeat;
        let due: Vec<String> = self.builds.values_mut().filter(|b| b.last_beat.elapsed() >= every).map(|b| {
            b.last_beat = Instant::now();
            b.status()
        }).collect();
        for line in due {
            self.line(&format!("building {line}"));
        }
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
            let builds = self.builds.values().map(Running::status);
            b.set_message(builds.chain(self.running.iter().cloned()).collect::<Vec<_>>().join(", "));
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
            Event::BuildStarted { build, arch, toolchain, cells, estimate } => {
                let now = Instant::now();
                self.builds.insert(build.clone(), Running { label: format!("{build} {arch}/{toolchain}"), started: now, objects: 0, estimate: *estimate, last_beat: now });
                self.update();
                let est = estimate.map(|e| format!(", last time {} objects in {:.0}s", e.objects, e.seconds)).unwrap_or_default();
                self.line(&format!("build {build} {arch}/{toolchain} ({cells} cells{est})"));
            }
            Event::BuildProgress { build, objects } => {
                if let Some(b) = self.builds.get_mut(build) {
                    b.objects = *objects;
                }
                self.update();
            }
            Event::BuildFinished { build, ok, reused, seconds, detail, .. } => {
                self.builds.remove(build);
                let what = if *reused { "reused".to_string() } else if *ok { format!("built in {seconds:.0}s") } else { format!("FAILED: {}", detail.as_deref().unwrap_or("")) };
                self.line(&format!("build {build} {what}"));
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
                let v = r.verdict.name().to_uppercase();
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
