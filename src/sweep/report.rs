//! Reports rendered from `results.json`: terminal table (comfy-table),
//! markdown, JSON, JUnit XML and the HTML page (`html`); comparing two
//! runs is `compare`'s.

use std::collections::BTreeMap;
use std::time::Duration;

use comfy_table::{presets, Cell, Color, Table};

use super::results::{CellResult, Results, Verdict};
use crate::outcome::Class;

/// A cell coordinate a table axis can be made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Key {
    Board,
    Arch,
    Toolchain,
    Kernel,
    Config,
    /// qemu or gem5: `--rows arch --cols emulator` puts the same kernel's
    /// QEMU and gem5 boots side by side.
    Emulator,
}

impl Key {
    fn of(self, c: &CellResult) -> &str {
        match self {
            Key::Board => &c.board,
            Key::Arch => &c.arch,
            Key::Toolchain => &c.toolchain,
            Key::Kernel => &c.kernel,
            Key::Config => &c.config,
            Key::Emulator => &c.emulator,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Key::Board => "board",
            Key::Arch => "arch",
            Key::Toolchain => "toolchain",
            Key::Kernel => "kernel",
            Key::Config => "config",
            Key::Emulator => "emulator",
        }
    }
}

/// Which coordinates make the rows and which the columns.
#[derive(Debug, Clone)]
pub struct Layout {
    pub rows: Vec<Key>,
    pub cols: Vec<Key>,
}

impl Default for Layout {
    /// Boards × toolchains against kernels × configs.
    fn default() -> Self {
        Layout { rows: vec![Key::Board, Key::Toolchain], cols: vec![Key::Kernel, Key::Config] }
    }
}

pub(crate) struct Grid<'a> {
    pub(crate) row_names: Vec<&'static str>,
    pub(crate) rows: Vec<Vec<String>>,
    pub(crate) cols: Vec<String>,
    /// (row, column) → the cells there (several when the layout leaves a
    /// coordinate out; the worst verdict is shown).
    pub(crate) cells: BTreeMap<(Vec<String>, String), Vec<&'a CellResult>>,
}

pub(crate) fn grid<'a>(r: &'a Results, l: &Layout) -> Grid<'a> {
    let mut rows = Vec::new();
    let mut cols = Vec::new();
    let mut cells: BTreeMap<(Vec<String>, String), Vec<&CellResult>> = BTreeMap::new();
    for c in &r.cells {
        let row: Vec<String> = l.rows.iter().map(|k| k.of(c).to_string()).collect();
        let col = l.cols.iter().map(|k| k.of(c)).collect::<Vec<_>>().join(" ");
        if !rows.contains(&row) {
            rows.push(row.clone());
        }
        if !cols.contains(&col) {
            cols.push(col.clone());
        }
        cells.entry((row, col)).or_default().push(c);
    }
    rows.sort();
    Grid { row_names: l.rows.iter().map(|k| k.name()).collect(), rows, cols, cells }
}

impl<'a> Grid<'a> {
    /// The cell to show: the worst verdict when several fall together.
    pub(crate) fn get(&self, row: &[String], col: &str) -> Option<&'a CellResult> {
        self.cells.get(&(row.to_vec(), col.to_string())).and_then(|v| {
            v.iter().copied().max_by_key(|c| match c.verdict.class() {
                // A skip says nothing about the kernel: anything that ran wins.
                Class::Skip => 0,
                Class::Pass => 1,
                Class::Flaky => 2,
                Class::Infra => 3,
                Class::KernelFail => 4,
            })
        })
    }
}

fn short(c: &CellResult) -> String {
    match (c.verdict, c.boot_to_marker_seconds) {
        (Verdict::Pass, Some(t)) => format!("pass {t:.2}s"),
        (Verdict::Flaky, Some(t)) => format!("flaky {t:.2}s"),
        (v, _) => v.name().to_string(),
    }
}

fn color(v: Verdict) -> Color {
    match v.class() {
        Class::Pass => Color::Green,
        Class::Flaky => Color::Yellow,
        Class::Skip => Color::DarkGrey,
        Class::Infra => Color::Magenta,
        Class::KernelFail => Color::Red,
    }
}

pub fn summary(r: &Results) -> String {
    let (pass, fail, skip, infra) = r.counts();
    let mut s = format!("{pass} passed, {fail} failed, {skip} skipped");
    let flaky = r.flaky();
    if flaky > 0 {
        s = format!("{pass} passed, {flaky} flaky, {fail} failed, {skip} skipped");
    }
    if infra > 0 {
        s.push_str(&format!(", {infra} infra errors"));
    }
    if !r.complete {
        s.push_str(" (incomplete run)");
    }
    s
}

pub fn table(r: &Results, colour: bool, layout: &Layout) -> String {
    let g = grid(r, layout);
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED);
    if !colour {
        t.force_no_tty();
    } else {
        t.enforce_styling();
    }
    let mut header: Vec<Cell> = g.row_names.iter().map(Cell::new).collect();
    header.extend(g.cols.iter().map(Cell::new));
    t.set_header(header);
    for row in &g.rows {
        let mut cells: Vec<Cell> = row.iter().map(Cell::new).collect();
        for col in &g.cols {
            cells.push(match g.get(row, col) {
                Some(cell) => Cell::new(short(cell)).fg(color(cell.verdict)),
                None => Cell::new("-"),
            });
        }
        t.add_row(cells);
    }
    let mut out = format!("{t}\n");
    for c in r.cells.iter().filter(|c| c.verdict != Verdict::Pass) {
        if let Some(d) = &c.detail {
            out.push_str(&format!("{:<11} {} {} {} {}: {d}\n", c.verdict.name(), c.board, c.toolchain, c.kernel, c.config));
        }
    }
    out.push_str(&summary(r));
    out
}

pub fn markdown(r: &Results, layout: &Layout) -> String {
    let g = grid(r, layout);
    let mut s = String::from("|");
    for n in &g.row_names {
        s.push_str(&format!(" {n} |"));
    }
    for c in &g.cols {
        s.push_str(&format!(" {c} |"));
    }
    s.push_str("\n|");
    s.push_str(&"---|".repeat(g.row_names.len() + g.cols.len()));
    s.push('\n');
    for row in &g.rows {
        s.push('|');
        for v in row {
            s.push_str(&format!(" {v} |"));
        }
        for col in &g.cols {
            let v = g.get(row, col).map(short).unwrap_or_else(|| "-".into());
            s.push_str(&format!(" {v} |"));
        }
        s.push('\n');
    }
    s.push_str(&format!("\n{}\n", summary(r)));
    s
}

pub fn junit(r: &Results) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut report = Report::new("kmatrix");
    let mut suites: BTreeMap<&str, TestSuite> = BTreeMap::new();
    for c in &r.cells {
        let v = c.verdict;
        let failed = |kind| {
            let mut s = TestCaseStatus::non_success(kind);
            s.set_type(v.name());
            s.set_message(c.detail.clone().unwrap_or_else(|| v.name().to_string()));
            s
        };
        let status = match v.class() {
            Class::Pass => TestCaseStatus::success(),
            Class::Flaky => {
                // JUnit's flaky run: passed, with the failed attempt kept.
                let mut s = TestCaseStatus::success();
                if let TestCaseStatus::Success { flaky_runs } = &mut s {
                    let mut run = quick_junit::TestRerun::new(NonSuccessKind::Failure);
                    run.set_message(c.detail.clone().unwrap_or_else(|| "failed, then passed on a retry".into()));
                    flaky_runs.push(run);
                }
                s
            }
            Class::Skip => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(c.detail.clone().unwrap_or_default());
                s
            }
            Class::Infra => failed(NonSuccessKind::Error),
            Class::KernelFail => failed(NonSuccessKind::Failure),
        };
        let mut tc = TestCase::new(format!("{}/{}/{}", c.toolchain, c.kernel, c.config), status);
        tc.set_classname(c.board.clone());
        let secs = c.build_seconds.unwrap_or(0.0) * f64::from(u8::from(c.build_reused != Some(true))) + c.boot_seconds.unwrap_or(0.0);
        tc.set_time(Duration::from_secs_f64(secs.max(0.0)));
        suites.entry(c.board.as_str()).or_insert_with(|| TestSuite::new(c.board.clone())).add_test_case(tc);
    }
    report.add_test_suites(suites.into_values());
    report.to_string().unwrap_or_default()
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The static HTML page, without a comparison or history.
pub fn html(r: &Results, layout: &Layout) -> String {
    super::html::page(r, layout, None, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(board: &str, v: Verdict) -> CellResult {
        CellResult {
            id: format!("id-{board}"),
            board: board.into(),
            arch: "x".into(),
            toolchain: "gcc".into(),
            kernel: "k".into(),
            kernel_version: None,
            kernel_release: None,
            kernel_source: None,
            git: None,
            toolchain_version: None,
            config: "tiny".into(),
            emulator: "qemu".into(),
            build: "b".into(),
            verdict: v,
            detail: (v != Verdict::Pass).then(|| "Kernel panic - not syncing: <oops>".into()),
            build_seconds: Some(100.0),
            build_cpu_seconds: Some(190.0),
            build_reused: Some(false),
            boot_seconds: Some(1.5),
            boot_to_marker_seconds: (v == Verdict::Pass).then_some(0.5),
            build_log: Some("logs/b.build.log".into()),
            console_log: Some(format!("logs/id-{board}.console.log")),
            console_log_cut: false,
            attempts: None,
            stack_log: None,
            backtrace_log: None,
        }
    }

    fn results(cells: Vec<CellResult>) -> Results {
        let mut r = Results::new(2);
        r.started_at = 0;
        r.complete = true;
        r.cells = cells;
        r
    }

    #[test]
    fn table_and_summary() {
        let r = results(vec![cell("a", Verdict::Pass), cell("b", Verdict::Panic), cell("c", Verdict::Skip)]);
        let t = table(&r, false, &Layout::default());
        assert!(t.contains("pass 0.50s"), "{t}");
        assert!(t.contains("panic"), "{t}");
        assert!(t.ends_with("1 passed, 1 failed, 1 skipped"), "{t}");
        assert_eq!(r.exit_code(), 1);
    }

    #[test]
    fn html_escapes_and_links() {
        let r = results(vec![cell("b", Verdict::Panic)]);
        let h = html(&r, &Layout::default());
        assert!(h.contains("&lt;oops&gt;"));
        assert!(h.contains("href=\"logs/id-b.console.log\""));
    }

    #[test]
    fn layout_by_arch_against_toolchain() {
        let mut a = cell("a", Verdict::Pass);
        a.arch = "mips64".into();
        let mut b = cell("b", Verdict::Panic);
        b.arch = "mips64".into();
        let mut c = cell("c", Verdict::Skip);
        c.arch = "x86_64".into();
        let mut d = cell("d", Verdict::Pass);
        d.arch = "x86_64".into();
        let r = results(vec![a, b, c, d]);
        let l = Layout { rows: vec![Key::Arch], cols: vec![Key::Toolchain] };
        let m = markdown(&r, &l);
        // Two boards of one arch fold into one cell showing the worst verdict.
        assert!(m.starts_with("| arch | gcc |\n|---|---|\n| mips64 | panic |\n| x86_64 | pass 0.50s |"), "{m}");
    }

    #[test]
    fn qemu_and_gem5_side_by_side() {
        let mut q = cell("qemu-aarch64-virt", Verdict::Pass);
        q.arch = "aarch64".into();
        q.emulator = "qemu".into();
        q.boot_to_marker_seconds = Some(0.37);
        let mut g = cell("gem5-arm", Verdict::Pass);
        g.arch = "aarch64".into();
        g.emulator = "gem5".into();
        g.boot_to_marker_seconds = Some(41.2);
        let r = results(vec![q, g]);
        let l = Layout { rows: vec![Key::Arch], cols: vec![Key::Emulator] };
        let m = markdown(&r, &l);
        assert!(m.starts_with("| arch | qemu | gem5 |\n|---|---|---|\n| aarch64 | pass 0.37s | pass 41.20s |"), "{m}");
    }

    #[test]
    fn junit_has_failures_and_skips() {
        let r = results(vec![cell("a", Verdict::Pass), cell("b", Verdict::Timeout), cell("c", Verdict::Skip)]);
        let x = junit(&r);
        assert!(x.contains("<failure"), "{x}");
        assert!(x.contains("<skipped"), "{x}");
        assert!(x.contains("type=\"timeout\""), "{x}");
    }
}
