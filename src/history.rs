//! The nightly history: a results root holding one dated directory per run
//! and `history.sqlite`, an index of every cell result of every run (the
//! directories stay the record; the database is rebuilt from them when it
//! is missing a run).
//!
//! The root is also where nightlies serialise: [`NightlyLock`] is held for
//! a whole sweep, so a second one started while the first still runs says
//! who holds it and exits instead of overlapping.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::sweep::results::{Results, Verdict};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    dir TEXT NOT NULL UNIQUE,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    complete INTEGER NOT NULL,
    interrupted INTEGER NOT NULL,
    kmatrix_version TEXT NOT NULL,
    host TEXT
);
CREATE TABLE IF NOT EXISTS cells (
    run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    cell TEXT NOT NULL,
    board TEXT NOT NULL,
    arch TEXT NOT NULL,
    toolchain TEXT NOT NULL,
    kernel TEXT NOT NULL,
    config TEXT NOT NULL,
    kernel_release TEXT,
    git_commit TEXT,
    verdict TEXT NOT NULL,
    detail TEXT,
    attempts INTEGER NOT NULL,
    build_seconds REAL,
    build_reused INTEGER,
    boot_seconds REAL,
    boot_to_marker_seconds REAL,
    console_log TEXT,
    PRIMARY KEY (run, board, toolchain, kernel, config)
);
CREATE INDEX IF NOT EXISTS cells_by_coord ON cells (board, toolchain, kernel, config);
";

/// One cell of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// The run's directory name under the root (its date).
    pub run: String,
    pub started_at: u64,
    pub board: String,
    pub toolchain: String,
    pub kernel: String,
    pub config: String,
    pub kernel_release: Option<String>,
    pub git_commit: Option<String>,
    pub verdict: Verdict,
    pub detail: Option<String>,
    pub attempts: u32,
    pub build_seconds: Option<f64>,
    pub build_reused: Option<bool>,
    pub boot_to_marker_seconds: Option<f64>,
    /// Relative to the run's directory.
    pub console_log: Option<String>,
}

pub struct History {
    root: PathBuf,
    db: Connection,
}

fn db_err(e: rusqlite::Error) -> Error {
    Error::Infra(format!("history database: {e}"))
}

impl History {
    /// Opens (creating) `<root>/history.sqlite`.
    pub fn open(root: &Path) -> Result<History> {
        std::fs::create_dir_all(root).map_err(Error::io(format!("cannot create {}", root.display())))?;
        let db = Connection::open(root.join("history.sqlite")).map_err(db_err)?;
        // Readers (`kmatrix history`) may run while a nightly writes.
        db.busy_timeout(std::time::Duration::from_secs(30)).map_err(db_err)?;
        db.execute_batch("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;").map_err(db_err)?;
        db.execute_batch(SCHEMA).map_err(db_err)?;
        Ok(History { root: root.to_path_buf(), db })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Records a run (replacing what was recorded for its directory).
    pub fn record(&mut self, dir_name: &str, r: &Results) -> Result<()> {
        let tx = self.db.transaction().map_err(db_err)?;
        tx.execute("DELETE FROM runs WHERE dir = ?1", params![dir_name]).map_err(db_err)?;
        tx.execute(
            "INSERT INTO runs (dir, started_at, finished_at, complete, interrupted, kmatrix_version, host) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                dir_name,
                r.started_at as i64,
                r.finished_at.map(|t| t as i64),
                r.complete,
                r.interrupted,
                r.kmatrix_version,
                r.environment.as_ref().map(|e| e.host.clone())
            ],
        )
        .map_err(db_err)?;
        let run = tx.last_insert_rowid();
        {
            let mut ins = tx
                .prepare(
                    "INSERT OR REPLACE INTO cells (run, cell, board, arch, toolchain, kernel, config, kernel_release, git_commit, verdict, detail, attempts, build_seconds, build_reused, boot_seconds, boot_to_marker_seconds, console_log)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
                )
                .map_err(db_err)?;
            for c in &r.cells {
                ins.execute(params![
                    run,
                    c.id,
                    c.board,
                    c.arch,
                    c.toolchain,
                    c.kernel,
                    c.config,
                    c.kernel_release,
                    c.git.as_ref().map(|g| format!("{}{}", g.commit, if g.dirty { "-dirty" } else { "" })),
                    c.verdict.name(),
                    c.detail,
                    c.attempts.unwrap_or(1),
                    c.build_seconds,
                    c.build_reused,
                    c.boot_seconds,
                    c.boot_to_marker_seconds,
                    c.console_log,
                ])
                .map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)
    }

    /// Indexes run directories under the root that the database lacks
    /// (a database deleted or copied from elsewhere).
    pub fn sync(&mut self) -> Result<()> {
        let known: Vec<String> = {
            let mut q = self.db.prepare("SELECT dir FROM runs").map_err(db_err)?;
            q.query_map([], |r| r.get(0)).map_err(db_err)?.collect::<std::result::Result<_, _>>().map_err(db_err)?
        };
        for (name, _) in runs(&self.root) {
            if !known.contains(&name)
                && let Ok(r) = Results::load(&self.root.join(&name)) {
                    self.record(&name, &r)?;
                }
        }
        Ok(())
    }

    /// Every cell result, oldest run first; `keep` filters by coordinates.
    pub fn points(&self, keep: &dyn Fn(&Point) -> bool) -> Result<Vec<Point>> {
        let mut q = self
            .db
            .prepare(
                "SELECT runs.dir, runs.started_at, board, toolchain, kernel, config, kernel_release, git_commit, verdict, detail, attempts, build_seconds, build_reused, boot_to_marker_seconds, console_log
                 FROM cells JOIN runs ON runs.id = cells.run ORDER BY runs.started_at, runs.dir, board, toolchain, kernel, config",
            )
            .map_err(db_err)?;
        let rows = q
            .query_map([], |r| {
                let verdict: String = r.get(8)?;
                Ok(Point {
                    run: r.get(0)?,
                    started_at: r.get::<_, i64>(1)? as u64,
                    board: r.get(2)?,
                    toolchain: r.get(3)?,
                    kernel: r.get(4)?,
                    config: r.get(5)?,
                    kernel_release: r.get(6)?,
                    git_commit: r.get(7)?,
                    verdict: Verdict::ALL.into_iter().find(|v| v.name() == verdict).unwrap_or(Verdict::InfraError),
                    detail: r.get(9)?,
                    attempts: r.get(10)?,
                    build_seconds: r.get(11)?,
                    build_reused: r.get(12)?,
                    boot_to_marker_seconds: r.get(13)?,
                    console_log: r.get(14)?,
                })
            })
            .map_err(db_err)?;
        let mut out = Vec::new();
        for p in rows {
            let p = p.map_err(db_err)?;
            if keep(&p) {
                out.push(p);
            }
        }
        Ok(out)
    }
}

/// Run directories under a results root, oldest first, with their results
/// (unreadable ones left out). Names are `kmatrix::machine::stamp()`s, so
/// their order is their time order.
pub fn runs(root: &Path) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("results.json").is_file())
        .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
        .collect();
    v.sort();
    v
}

/// The newest complete, uninterrupted run before `current`.
pub fn previous_complete(root: &Path, current: &str) -> Option<(String, Results)> {
    runs(root)
        .into_iter()
        .rev()
        .filter(|(name, _)| name.as_str() < current)
        .find_map(|(name, dir)| Results::load(&dir).ok().filter(|r| r.complete && !r.interrupted).map(|r| (name, r)))
}

/// Held for a whole nightly: `<root>/.nightly.lock`, flock'd.
pub struct NightlyLock {
    _file: std::fs::File,
}

impl NightlyLock {
    pub fn take(root: &Path) -> Result<NightlyLock> {
        std::fs::create_dir_all(root).map_err(Error::io(format!("cannot create {}", root.display())))?;
        let path = root.join(".nightly.lock");
        let mut f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(Error::io(format!("cannot open {}", path.display())))?;
        match f.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(Error::Usage(format!(
                    "another sweep is running on {} ({}): nightlies do not overlap",
                    root.display(),
                    holder.trim()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::Io { context: format!("cannot lock {}", path.display()), source: e }),
        }
        use std::io::Write;
        let _ = f.set_len(0);
        let _ = write!(f, "pid {} since {}", std::process::id(), crate::machine::stamp());
        Ok(NightlyLock { _file: f })
    }
}
