//! The HTML report: one static, self-contained page (inline CSS and SVG,
//! no script, nothing fetched) that lives in the results directory, so the
//! cells' relative log paths are its links.
//!
//! It owns what the page says and how it looks: the header (when, where and
//! with what the run was made), the comparison with the previous run, the
//! matrix grid (regressions outlined, flakes striped, never mistakable for a
//! pass) and per-board trend charts drawn from the history index.

use std::collections::{BTreeMap, BTreeSet};

use super::compare::{Change, Comparison, Kind};
use super::report::{self, esc, Layout};
use super::results::{CellResult, Environment, KernelInfo, Results};
use crate::history::Point;
use crate::outcome::Class;

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em 2em;color:#1a1a1a}
h1{margin:0 0 .2em}h2{margin:1.5em 0 .5em;padding-bottom:.1em;border-bottom:1px solid #ddd}h3{margin:.2em 0;font-size:15px}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.35em .5em;vertical-align:top;text-align:left}th{background:#f3f3f3}
code{font-size:12px}a{color:#0645ad}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:.1em 1em;margin:.4em 0 1em}dl.facts dt{color:#555}dl.facts dd{margin:0}
.about{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}.about table{font-size:13px}.about caption{text-align:left;font-weight:bold;padding-bottom:.2em}
.banner{padding:.4em .8em;background:#fff1a8;border:1px solid #c9a400;display:inline-block}
.summary{font-size:16px;font-weight:bold}
.chg{margin:.5em 0;padding:.2em .8em;border-left:4px solid #bbb}.chg ul{margin:.2em 0 .4em;padding-left:1.4em}
.chg.regression{border:2px solid #c00;border-left-width:6px;background:#fde8e8}.chg.regression h3{color:#b00;font-size:17px}
.chg.new-failure{border-left-color:#c00;background:#fdf1f1}.chg.fix{border-left-color:#2a8a2a}.chg.flaky{border-left-color:#d4a800;background:#fffbe0}
.chg.slower{border-left-color:#c66}.chg.faster{border-left-color:#6a6}
.key span{display:inline-block;padding:.1em .5em;margin-right:.4em;border:1px solid #ccc}
td.cell{min-width:9em;max-width:24em}th.rep{color:#aaa;font-weight:normal}
.pass{background:#d9f2d9}.fail{background:#f8d0d0}.skip{background:#eee;color:#666}.infra{background:#ead9f5}
.flaky{background:repeating-linear-gradient(135deg,#fff1a8 0 8px,#ffe566 8px 16px)}
td.regressed{box-shadow:inset 0 0 0 3px #d00}td.new-failure{outline:2px dashed #d00;outline-offset:-3px}
.badge{display:inline-block;font-size:10px;font-weight:bold;letter-spacing:.03em;padding:0 .4em;border-radius:3px;margin-left:.3em;text-transform:uppercase;vertical-align:1px}
.badge.regressed,.badge.new-failure{background:#d00;color:#fff}.badge.flaky{background:#8a6d00;color:#fff}.badge.fixed{background:#2a8a2a;color:#fff}
.badge.new,.badge.changed{background:#555;color:#fff}.badge.slower{background:#fff;color:#b00;border:1px solid #b00}.badge.faster{background:#fff;color:#280;border:1px solid #280}
.t{color:#333}.links{font-size:12px}small.detail{display:block;font:11px/1.3 monospace;color:#333;word-break:break-word;margin-top:.2em}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(620px,1fr));gap:1.2em}
figure{margin:0;border:1px solid #ddd;padding:.5em .6em}figcaption{font-weight:bold;font-size:15px}
svg{width:100%;height:auto;display:block}svg text{font:10px sans-serif;fill:#333}svg .title{font-weight:bold;font-size:11px}
ul.legend{list-style:none;padding:0;margin:.2em 0;display:flex;flex-wrap:wrap;gap:.1em 1.1em;font-size:12px}
.sw{display:inline-block;width:20px;margin-right:.3em;vertical-align:middle;border-top:3px solid}
";

/// The whole page. `cmp` is the comparison with the previous run, `trends`
/// the history's points (any boards, any runs; empty when there is none).
pub fn page(r: &Results, layout: &Layout, cmp: Option<&Comparison>, trends: &[Point]) -> String {
    let mut s = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>kmatrix results {}</title>\n<style>{STYLE}</style></head><body>\n",
        esc(&utc(r.started_at))
    );
    s.push_str(&header(r));
    s.push_str(&summary(r));
    if let Some(c) = cmp {
        s.push_str(&since(c, r));
    }
    s.push_str(&matrix(r, layout, cmp));
    s.push_str(&trends_section(trends));
    s.push_str("</body></html>\n");
    s
}

// ---- header ----

fn header(r: &Results) -> String {
    let mut s = String::from("<header>\n<h1>kmatrix results</h1>\n");
    if r.interrupted {
        s.push_str("<p class=\"banner\">This sweep was interrupted: cells it did not finish are missing.</p>\n");
    } else if !r.complete {
        s.push_str("<p class=\"banner\">This sweep is incomplete: cells it did not finish are missing.</p>\n");
    }
    s.push_str("<dl class=\"facts\">\n");
    for (k, v) in facts(r) {
        s.push_str(&format!("<dt>{}</dt><dd>{}</dd>\n", esc(k), esc(&v)));
    }
    s.push_str("</dl>\n");
    let env = environment(r);
    s.push_str("<div class=\"about\">\n");
    s.push_str(&kernels_table(&env.kernels));
    s.push_str(&two_columns("Toolchains", "toolchain", "version", env.toolchains.iter().map(|(k, v)| (k.as_str(), v.join("\n")))));
    s.push_str(&two_columns("Emulators", "binary", "version", env.emulators.iter().map(|(k, v)| (k.as_str(), v.clone()))));
    s.push_str("</div>\n</header>\n");
    s
}

fn facts(r: &Results) -> Vec<(&'static str, String)> {
    let mut v = vec![("started", utc(r.started_at))];
    v.push(("finished", r.finished_at.map(utc).unwrap_or_else(|| "not finished".into())));
    if let Some(w) = r.wall_seconds {
        v.push(("wall time", duration(w)));
    }
    v.push(("jobs", r.jobs.to_string()));
    match &r.environment {
        Some(e) => {
            v.push(("host", e.host.clone()));
            v.push(("host kernel", e.host_kernel.clone()));
            v.push(("OS", e.os.clone().unwrap_or_else(|| "unknown".into())));
        }
        None => v.push(("host", "not recorded (results from an older kmatrix)".into())),
    }
    v.push(("kmatrix", r.kmatrix_version.clone()));
    if let Some(k) = r.peak_rss_kib {
        v.push(("peak memory", format!("{} MiB", k / 1024)));
    }
    v
}

/// The recorded environment, or what the cells say about it when the
/// results predate it (emulator versions are then unknown).
fn environment(r: &Results) -> Environment {
    if let Some(e) = &r.environment {
        return e.clone();
    }
    let mut e = Environment::default();
    for c in &r.cells {
        let k = e.kernels.entry(c.kernel.clone()).or_default();
        if k.source.is_none() {
            k.source.clone_from(&c.kernel_source);
        }
        push_new(&mut k.releases, c.kernel_release.clone());
        push_new(&mut k.commits, c.git.as_ref().map(|g| format!("{}{}", g.commit, if g.dirty { "-dirty" } else { "" })));
        push_new(e.toolchains.entry(c.toolchain.clone()).or_default(), c.toolchain_version.clone());
        e.emulators.entry(c.emulator.clone()).or_insert_with(|| "version not recorded".into());
    }
    e
}

fn push_new(v: &mut Vec<String>, x: Option<String>) {
    if let Some(x) = x
        && !v.contains(&x)
    {
        v.push(x);
    }
}

fn kernels_table(kernels: &BTreeMap<String, KernelInfo>) -> String {
    let mut s = String::from("<table class=\"kernels\"><caption>Kernels</caption>\n<tr><th>kernel</th><th>source</th><th>built releases</th><th>git commits</th></tr>\n");
    for (label, k) in kernels {
        s.push_str(&format!(
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td><code>{}</code></td></tr>\n",
            esc(label),
            esc(k.source.as_deref().unwrap_or("-")),
            lines(&k.releases),
            lines(&k.commits)
        ));
    }
    s.push_str("</table>\n");
    s
}

fn two_columns<'a>(caption: &str, a: &str, b: &str, rows: impl Iterator<Item = (&'a str, String)>) -> String {
    let mut s = format!("<table><caption>{caption}</caption>\n<tr><th>{a}</th><th>{b}</th></tr>\n");
    for (k, v) in rows {
        let v = if v.is_empty() { "-".to_string() } else { esc(&v).replace('\n', "<br>") };
        s.push_str(&format!("<tr><td>{}</td><td><code>{v}</code></td></tr>\n", esc(k)));
    }
    s.push_str("</table>\n");
    s
}

fn lines(v: &[String]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.iter().map(|l| esc(l)).collect::<Vec<_>>().join("<br>")
}

fn summary(r: &Results) -> String {
    format!("<p class=\"summary\">{}</p>\n", esc(&report::summary(r)))
}

// ---- the comparison ----

fn kind_class(k: Kind) -> &'static str {
    match k {
        Kind::Regression => "regression",
        Kind::NewFailure => "new-failure",
        Kind::Fix => "fix",
        Kind::Flaky => "flaky",
        Kind::New => "new",
        Kind::Removed => "removed",
        Kind::Changed => "changed",
        Kind::Slower => "slower",
        Kind::Faster => "faster",
    }
}

/// "Since <previous>": every change, grouped by kind in `Kind`'s order,
/// which puts what pages someone (regressions, new failures) first.
fn since(cmp: &Comparison, r: &Results) -> String {
    let mut s = format!("<section class=\"since\">\n<h2>Since <code>{}</code></h2>\n", esc(&cmp.previous));
    let mut by: BTreeMap<Kind, Vec<&Change>> = BTreeMap::new();
    for c in &cmp.changes {
        by.entry(c.kind).or_default().push(c);
    }
    if by.is_empty() {
        s.push_str("<p>No changes.</p>\n");
    }
    for (kind, changes) in by {
        s.push_str(&format!("<div class=\"chg {}\"><h3>{} ({})</h3><ul>\n", kind_class(kind), esc(kind.title()), changes.len()));
        for c in changes {
            let line = esc(&c.line());
            match cell_of(r, c) {
                Some(cell) if kind != Kind::Removed => s.push_str(&format!("<li><a href=\"#cell-{}\">{line}</a></li>\n", esc(&cell.id))),
                _ => s.push_str(&format!("<li>{line}</li>\n")),
            }
        }
        s.push_str("</ul></div>\n");
    }
    s.push_str("</section>\n");
    s
}

fn same_cell(c: &Change, cell: &CellResult) -> bool {
    c.board == cell.board && c.toolchain == cell.toolchain && c.kernel == cell.kernel && c.config == cell.config
}

fn cell_of<'a>(r: &'a Results, c: &Change) -> Option<&'a CellResult> {
    r.cells.iter().find(|cell| same_cell(c, cell))
}

// ---- the matrix ----

fn class_css(c: Class) -> &'static str {
    match c {
        Class::Pass => "pass",
        Class::Flaky => "flaky",
        Class::KernelFail => "fail",
        Class::Skip => "skip",
        Class::Infra => "infra",
    }
}

/// The badge a change puts on its grid cell. Flaky has none here: the
/// cell's own verdict already carries the flaky badge.
fn change_badge(k: Kind) -> Option<(&'static str, &'static str)> {
    match k {
        Kind::Regression => Some(("regressed", "regressed")),
        Kind::NewFailure => Some(("new-failure", "new failure")),
        Kind::Fix => Some(("fixed", "fixed")),
        Kind::Flaky => None,
        Kind::New => Some(("new", "new")),
        Kind::Removed => None,
        Kind::Changed => Some(("changed", "changed")),
        Kind::Slower => Some(("slower", "slower")),
        Kind::Faster => Some(("faster", "faster")),
    }
}

fn matrix(r: &Results, layout: &Layout, cmp: Option<&Comparison>) -> String {
    let g = report::grid(r, layout);
    let mut s = String::from(
        "<section class=\"matrix\">\n<h2>Matrix</h2>\n<p class=\"key\"><span class=\"pass\">pass</span><span class=\"flaky\">flaky: passed on a retry</span><span class=\"fail\">kernel failure</span><span class=\"infra\">infra error</span><span class=\"skip\">skipped</span><span class=\"fail\" style=\"box-shadow:inset 0 0 0 3px #d00\">regressed</span></p>\n<table class=\"matrix\">\n<tr>",
    );
    for n in &g.row_names {
        s.push_str(&format!("<th>{n}</th>"));
    }
    for c in &g.cols {
        s.push_str(&format!("<th>{}</th>", esc(c)));
    }
    s.push_str("</tr>\n");
    let mut prev: Option<&Vec<String>> = None;
    for row in &g.rows {
        s.push_str("<tr>");
        // A row coordinate equal to the row above (and all coordinates left
        // of it) is greyed, so each group's first row names it.
        let same = row.iter().zip(prev.into_iter().flatten()).take_while(|(a, b)| a == b).count();
        for (i, v) in row.iter().enumerate() {
            let rep = if i < same { " class=\"rep\"" } else { "" };
            s.push_str(&format!("<th{rep}>{}</th>", esc(v)));
        }
        for col in &g.cols {
            let all = g.cells.get(&(row.clone(), col.clone())).map(Vec::as_slice).unwrap_or_default();
            match g.get(row, col) {
                Some(shown) => s.push_str(&grid_cell(shown, all, cmp)),
                None => s.push_str("<td>-</td>"),
            }
        }
        s.push_str("</tr>\n");
        prev = Some(row);
    }
    s.push_str("</table>\n</section>\n");
    s
}

/// One grid cell: `shown` (the worst of `all`, the cells the layout folds
/// together here) and the changes of any of them.
fn grid_cell(shown: &CellResult, all: &[&CellResult], cmp: Option<&Comparison>) -> String {
    let kinds: BTreeSet<Kind> = cmp.into_iter().flat_map(|c| &c.changes).filter(|ch| all.iter().any(|cell| same_cell(ch, cell))).map(|ch| ch.kind).collect();
    let class = shown.verdict.class();
    let mut td = format!("cell {}", class_css(class));
    for k in [Kind::Regression, Kind::NewFailure] {
        if kinds.contains(&k) {
            td.push(' ');
            td.push_str(change_badge(k).map_or("", |b| b.0));
        }
    }
    let mut s = format!("<td class=\"{td}\" id=\"cell-{}\">", esc(&shown.id));
    for other in all.iter().filter(|c| c.id != shown.id) {
        s.push_str(&format!("<span id=\"cell-{}\"></span>", esc(&other.id)));
    }
    s.push_str(&format!("<b>{}</b>", esc(shown.verdict.name())));
    if let Some(t) = shown.boot_to_marker_seconds {
        s.push_str(&format!(" <span class=\"t\">{t:.2}s</span>"));
    } else if let Some(t) = shown.boot_seconds {
        s.push_str(&format!(" <span class=\"t\">(ran {t:.1}s)</span>"));
    }
    if class == Class::Flaky {
        s.push_str("<span class=\"badge flaky\">flaky</span>");
    }
    for (css, label) in kinds.iter().filter_map(|k| change_badge(*k)) {
        s.push_str(&format!("<span class=\"badge {css}\">{label}</span>"));
    }
    if let Some(n) = shown.attempts.filter(|n| *n > 1) {
        s.push_str(&format!(" <span class=\"t\">{n} attempts</span>"));
    }
    s.push_str(&links(shown));
    if let Some(d) = &shown.detail {
        s.push_str(&format!("<small class=\"detail\">{}</small>", esc(d)));
    }
    s.push_str("</td>");
    s
}

fn links(c: &CellResult) -> String {
    let console = if c.console_log_cut { "console (cut)" } else { "console" };
    let links: Vec<String> = [(&c.build_log, "build log"), (&c.console_log, console), (&c.stack_log, "decoded stack"), (&c.backtrace_log, "backtrace (dump)")]
        .into_iter()
        .filter_map(|(path, label)| path.as_ref().map(|p| format!("<a href=\"{}\">{label}</a>", esc(&href(p)))))
        .collect();
    if links.is_empty() {
        return String::new();
    }
    format!("<div class=\"links\">{}</div>", links.join(" · "))
}

/// A relative path as a URL path: what a browser would misread (`#`, `?`,
/// `%`, spaces) percent-encoded, the separators kept.
fn href(path: &str) -> String {
    let mut s = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~+,=@".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

// ---- dates ----

/// `YYYY-MM-DD HH:MM:SS UTC` of Unix seconds.
fn utc(secs: u64) -> String {
    super::results::utc(secs).replace('T', " ").replace('Z', " UTC")
}

fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{secs:.1}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m {:02}s", s / 3600, s % 3600 / 60, s % 60),
    }
}

// ---- trends ----

fn trends_section(points: &[Point]) -> String {
    let mut s = String::from("<section class=\"trends\">\n<h2>Trends</h2>\n");
    if points.is_empty() {
        s.push_str("<p>no history yet (run <code>kmatrix sweep --history DIR</code>)</p>\n</section>\n");
        return s;
    }
    let mut boards: BTreeMap<&str, Vec<&Point>> = BTreeMap::new();
    for p in points {
        boards.entry(p.board.as_str()).or_default().push(p);
    }
    s.push_str("<div class=\"charts\">\n");
    for (board, points) in boards {
        s.push_str(&trend_figure(board, &Board::new(&points)));
    }
    s.push_str("</div>\n</section>\n");
    s
}

/// One board's history, indexed: runs by time, one series per
/// (toolchain, kernel, config).
struct Board<'a> {
    runs: Vec<(u64, &'a str)>,
    series: Vec<(&'a str, &'a str, &'a str)>,
    /// (series, run) → point.
    at: BTreeMap<(usize, usize), &'a Point>,
}

impl<'a> Board<'a> {
    fn new(points: &[&'a Point]) -> Board<'a> {
        let runs: BTreeSet<(u64, &str)> = points.iter().map(|p| (p.started_at, p.run.as_str())).collect();
        let series: BTreeSet<_> = points.iter().map(|p| series_key(p)).collect();
        let runs: Vec<_> = runs.into_iter().collect();
        let series: Vec<_> = series.into_iter().collect();
        let at = points
            .iter()
            .map(|p| {
                let s = series.binary_search(&series_key(p)).expect("collected above");
                let r = runs.binary_search(&(p.started_at, p.run.as_str())).expect("collected above");
                ((s, r), *p)
            })
            .collect();
        Board { runs, series, at }
    }

    fn point(&self, series: usize, run: usize) -> Option<&'a Point> {
        self.at.get(&(series, run)).copied()
    }
}

fn series_key(p: &Point) -> (&str, &str, &str) {
    (p.toolchain.as_str(), p.kernel.as_str(), p.config.as_str())
}

// Chart geometry, in SVG user units (the SVG scales to its box).
const WIDTH: f64 = 660.0;
const LEFT: f64 = 68.0;
const RIGHT: f64 = 14.0;
const BOOT_TOP: f64 = 20.0;
const BOOT_HEIGHT: f64 = 150.0;
const STRIP_ROW: f64 = 7.0;
const BUILD_HEIGHT: f64 = 60.0;
/// Run names are cut to this many characters, and slanted this much so
/// that ~20 fit side by side.
const LABEL_CHARS: usize = 18;
const LABEL_SLANT: f64 = 50.0;
/// Width of a label character: 10px digits are ~6.4 units wide.
const CHAR_WIDTH: f64 = 6.4;

/// Colours for series, none red or yellow (those mean failed and flaky);
/// series past the palette repeat it dashed.
const PALETTE: [&str; 10] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#393b79", "#637939"];

fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

fn dash(i: usize) -> &'static str {
    if i < PALETTE.len() { "" } else { " stroke-dasharray=\"5 3\"" }
}

fn x_of(run: usize, runs: usize) -> f64 {
    LEFT + (WIDTH - LEFT - RIGHT) * (run as f64 + 0.5) / runs as f64
}

/// A value axis: `top` is where `max` (a round number) is drawn.
struct Panel {
    top: f64,
    height: f64,
    max: f64,
    step: f64,
}

impl Panel {
    fn new(top: f64, height: f64, steps: f64, values: impl Iterator<Item = f64>) -> Panel {
        let (max, step) = scale(values.fold(0.0, f64::max), steps);
        Panel { top, height, max, step }
    }

    fn y(&self, v: f64) -> f64 {
        self.top + self.height * (1.0 - v / self.max)
    }

    fn bottom(&self) -> f64 {
        self.top + self.height
    }

    /// Gridlines and tick labels, and the panel's title above it.
    fn axis(&self, title: &str) -> String {
        let mut s = format!("<text class=\"title\" x=\"{LEFT}\" y=\"{:.1}\">{}</text>\n", self.top - 7.0, esc(title));
        let ticks = (self.max / self.step).round() as usize;
        for i in 0..=ticks {
            let v = self.step * i as f64;
            let y = self.y(v);
            s.push_str(&format!(
                "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
                WIDTH - RIGHT,
                if i == 0 { "#888" } else { "#e4e4e4" },
                LEFT - 5.0,
                y + 3.5,
                tick_label(v, self.step)
            ));
        }
        s
    }
}

/// A round axis maximum at or above `max`, and the step of its ticks
/// (1, 2, 2.5 or 5 × 10ⁿ, at most `steps` of them).
fn scale(max: f64, steps: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 1.0 / steps.floor());
    }
    let raw = max / steps;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].into_iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn tick_label(v: f64, step: f64) -> String {
    let decimals = (0..4).find(|d| {
        let x = step * 10f64.powi(*d);
        (x - x.round()).abs() < 1e-6
    }).unwrap_or(4) as usize;
    format!("{v:.decimals$}s")
}

fn trend_figure(board: &str, b: &Board) -> String {
    let boot = Panel::new(BOOT_TOP, BOOT_HEIGHT, 5.0, b.at.values().filter(|p| plotted(p)).filter_map(|p| p.boot_to_marker_seconds));
    let strip_top = boot.bottom() + 8.0;
    let strip_bottom = strip_top + STRIP_ROW * b.series.len() as f64 + 4.0;
    let build = Panel::new(strip_bottom + 26.0, BUILD_HEIGHT, 3.0, b.at.values().filter_map(|p| fresh_build(p)));
    let longest = b.runs.iter().map(|(_, name)| name.chars().count().min(LABEL_CHARS)).max().unwrap_or(0);
    let height = build.bottom() + 16.0 + longest as f64 * CHAR_WIDTH * LABEL_SLANT.to_radians().sin();
    let mut s = format!(
        "<figure class=\"trend\" id=\"trend-{}\"><figcaption>{}</figcaption>\n<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"boot and build times of {} per run\">\n",
        esc(board),
        esc(board),
        esc(board)
    );
    s.push_str(&run_lines(b, boot.top, build.bottom()));
    s.push_str(&boot.axis("boot to marker"));
    s.push_str(&boot_series(b, &boot));
    s.push_str(&fail_strip(b, strip_top, strip_bottom));
    s.push_str(&build.axis("build time (fresh builds; reused ones left out)"));
    s.push_str(&build_series(b, &build));
    s.push_str(&run_labels(b, build.bottom()));
    s.push_str("</svg>\n");
    s.push_str(&legend(b));
    s.push_str("</figure>\n");
    s
}

/// Boots drawn on the time axis: those that passed, at once or on a retry.
fn plotted(p: &Point) -> bool {
    match p.verdict.class() {
        Class::Pass | Class::Flaky => p.boot_to_marker_seconds.is_some(),
        Class::KernelFail | Class::Skip | Class::Infra => false,
    }
}

fn fresh_build(p: &Point) -> Option<f64> {
    p.build_seconds.filter(|_| p.build_reused != Some(true))
}

/// Faint verticals through every run, so a run reads across both panels.
fn run_lines(b: &Board, top: f64, bottom: f64) -> String {
    (0..b.runs.len())
        .map(|r| {
            let x = x_of(r, b.runs.len());
            format!("<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{top:.1}\" y2=\"{bottom:.1}\" stroke=\"#f0f0f0\"/>\n")
        })
        .collect()
}

/// What a marker says on hover.
fn tip(p: &Point) -> String {
    let mut s = format!("{} ({})\n{} {} {}: {}", p.run, utc(p.started_at), p.toolchain, p.kernel, p.config, p.verdict.name());
    if let Some(t) = p.boot_to_marker_seconds {
        s.push_str(&format!(", boot to marker {t:.2}s"));
    }
    if p.attempts > 1 {
        s.push_str(&format!(", {} attempts", p.attempts));
    }
    if let Some(b) = fresh_build(p) {
        s.push_str(&format!(", built in {}", duration(b)));
    }
    for (k, v) in [("release", &p.kernel_release), ("commit", &p.git_commit), ("", &p.detail)] {
        if let Some(v) = v {
            s.push_str(&format!("\n{k}{}{v}", if k.is_empty() { "" } else { " " }));
        }
    }
    format!("<title>{}</title>", esc(&s))
}

fn polyline(points: &[(f64, f64)], series: usize, width: f64) -> String {
    if points.len() < 2 {
        return String::new();
    }
    let pts: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    format!("<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{width}\"{}/>\n", pts.join(" "), colour(series), dash(series))
}

/// Each series' boot times: lines broken where a run of it failed, a
/// circle per pass and a yellow diamond per flaky pass.
fn boot_series(b: &Board, panel: &Panel) -> String {
    let n = b.runs.len();
    let mut lines = String::new();
    let mut markers = String::new();
    for si in 0..b.series.len() {
        let mut segment = Vec::new();
        for ri in 0..n {
            let Some(p) = b.point(si, ri) else { continue };
            let Some(t) = p.boot_to_marker_seconds.filter(|_| plotted(p)) else {
                lines.push_str(&polyline(&segment, si, 1.6));
                segment.clear();
                continue;
            };
            let (x, y) = (x_of(ri, n), panel.y(t));
            segment.push((x, y));
            markers.push_str(&boot_marker(p, si, x, y));
        }
        lines.push_str(&polyline(&segment, si, 1.6));
    }
    lines + &markers
}

fn boot_marker(p: &Point, series: usize, x: f64, y: f64) -> String {
    let c = colour(series);
    if p.verdict.class() == Class::Flaky {
        format!(
            "<path class=\"pt flaky\" d=\"M{x:.1},{:.1}l6,6l-6,6l-6,-6z\" fill=\"#ffd21f\" stroke=\"{c}\" stroke-width=\"2\">{}</path>\n",
            y - 6.0,
            tip(p)
        )
    } else {
        format!("<circle class=\"pt pass\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{c}\">{}</circle>\n", tip(p))
    }
}

/// Under the boot panel, one row per series: a red cross for a run whose
/// kernel failed, a purple square for an infra error (skips show nothing).
fn fail_strip(b: &Board, top: f64, bottom: f64) -> String {
    let n = b.runs.len();
    let mut s = format!(
        "<rect x=\"{LEFT}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#fff4f4\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" style=\"fill:#c00\">failed</text>\n",
        WIDTH - LEFT - RIGHT,
        bottom - top,
        LEFT - 5.0,
        (top + bottom) / 2.0 + 3.5
    );
    for si in 0..b.series.len() {
        let y = top + 5.5 + STRIP_ROW * si as f64;
        // A short stroke of the series' colour names the row.
        s.push_str(&format!("<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{}\" stroke-width=\"3\"/>\n", LEFT + 6.0, colour(si)));
        for ri in 0..n {
            let Some(p) = b.point(si, ri) else { continue };
            let x = x_of(ri, n);
            match p.verdict.class() {
                Class::KernelFail => s.push_str(&format!(
                    "<path class=\"pt fail\" d=\"M{:.1},{:.1}l6,6m0,-6l-6,6\" stroke=\"#d00\" stroke-width=\"2\">{}</path>\n",
                    x - 3.0,
                    y - 3.0,
                    tip(p)
                )),
                Class::Infra => s.push_str(&format!(
                    "<rect class=\"pt infra\" x=\"{:.1}\" y=\"{:.1}\" width=\"6\" height=\"6\" fill=\"#8e44ad\">{}</rect>\n",
                    x - 3.0,
                    y - 3.0,
                    tip(p)
                )),
                Class::Pass | Class::Flaky | Class::Skip => {}
            }
        }
    }
    s
}

/// Fresh builds only: a reused build took no time worth charting.
fn build_series(b: &Board, panel: &Panel) -> String {
    let n = b.runs.len();
    let mut lines = String::new();
    let mut markers = String::new();
    for si in 0..b.series.len() {
        let mut pts = Vec::new();
        for ri in 0..n {
            let Some(p) = b.point(si, ri) else { continue };
            let Some(t) = fresh_build(p) else { continue };
            let (x, y) = (x_of(ri, n), panel.y(t));
            pts.push((x, y));
            markers.push_str(&format!("<circle class=\"bpt\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"{}\">{}</circle>\n", colour(si), tip(p)));
        }
        lines.push_str(&polyline(&pts, si, 1.0));
    }
    if markers.is_empty() {
        return format!("<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">every build was reused</text>\n", WIDTH / 2.0, panel.top + panel.height / 2.0);
    }
    lines + &markers
}

/// Run names under the x axis, slanted so ~20 fit; past 40 runs only every
/// k-th is named (each still has its vertical line).
fn run_labels(b: &Board, axis: f64) -> String {
    let n = b.runs.len();
    let every = n.div_ceil(40).max(1);
    let mut s = String::new();
    for (ri, (at, name)) in b.runs.iter().enumerate().filter(|(i, _)| i % every == 0) {
        let x = x_of(ri, n);
        let short: String = if name.chars().count() > LABEL_CHARS { name.chars().take(LABEL_CHARS - 1).chain(['…']).collect() } else { name.to_string() };
        s.push_str(&format!(
            "<text transform=\"translate({x:.1},{:.1}) rotate(-{LABEL_SLANT})\" text-anchor=\"end\"><title>{} ({})</title>{}</text>\n",
            axis + 10.0,
            esc(name),
            esc(&utc(*at)),
            esc(&short)
        ));
    }
    s
}

fn legend(b: &Board) -> String {
    let mut s = String::from("<ul class=\"legend\">");
    for (i, (toolchain, kernel, config)) in b.series.iter().enumerate() {
        let style = if dash(i).is_empty() { "solid" } else { "dashed" };
        // Such a series draws nothing: say why rather than leave it blank.
        let skipped = (0..b.runs.len()).all(|r| b.point(i, r).is_none_or(|p| p.verdict.class() == Class::Skip));
        s.push_str(&format!(
            "<li><span class=\"sw\" style=\"border-top:3px {style} {}\"></span>{} {} {}{}</li>",
            colour(i),
            esc(toolchain),
            esc(kernel),
            esc(config),
            if skipped { " (skipped)" } else { "" }
        ));
    }
    s.push_str(
        "<li>● pass</li><li><span style=\"color:#d4a800\">◆</span> flaky</li><li><span style=\"color:#d00\">✕</span> kernel failed</li><li><span style=\"color:#8e44ad\">■</span> infra error</li></ul>\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Verdict;
    use crate::sweep::compare::compare;

    fn cell(board: &str, toolchain: &str, v: Verdict) -> CellResult {
        CellResult {
            id: format!("id-{board}-{toolchain}"),
            board: board.into(),
            arch: "x86_64".into(),
            toolchain: toolchain.into(),
            kernel: "6.1".into(),
            kernel_version: Some("6.1".into()),
            kernel_release: Some("6.1.0".into()),
            kernel_source: Some("/usr/src/linux-source-6.1.tar.xz".into()),
            git: None,
            toolchain_version: Some(format!("{toolchain} 12.2.0")),
            config: "tiny".into(),
            emulator: "qemu-system-x86_64".into(),
            build: "b".into(),
            verdict: v,
            detail: (v != Verdict::Pass).then(|| format!("{} <detail>", v.name())),
            build_seconds: Some(100.0),
            build_cpu_seconds: Some(190.0),
            build_reused: Some(false),
            boot_seconds: Some(1.5),
            boot_to_marker_seconds: matches!(v, Verdict::Pass | Verdict::Flaky).then_some(0.5),
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
        r.started_at = 1_709_164_800;
        r.complete = true;
        r.cells = cells;
        r
    }

    fn point(board: &str, toolchain: &str, run: usize, v: Verdict) -> Point {
        Point {
            run: format!("run-{run}"),
            started_at: 1_700_000_000 + run as u64 * 86_400,
            board: board.into(),
            toolchain: toolchain.into(),
            kernel: "6.1".into(),
            config: "tiny".into(),
            kernel_release: None,
            git_commit: None,
            verdict: v,
            detail: None,
            attempts: 1,
            build_seconds: Some(90.0 + run as f64),
            build_reused: Some(run % 2 == 1),
            boot_to_marker_seconds: matches!(v, Verdict::Pass | Verdict::Flaky).then_some(0.4 + run as f64 / 10.0),
            console_log: None,
        }
    }

    /// The `<svg>…</svg>` elements of a page.
    fn svgs(h: &str) -> Vec<&str> {
        h.match_indices("<svg").map(|(i, _)| &h[i..i + h[i..].find("</svg>").unwrap()]).collect()
    }

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_709_164_800 + 3_723), "2024-02-29 01:02:03 UTC");
        assert_eq!(utc(4_102_444_799), "2099-12-31 23:59:59 UTC");
        assert_eq!(duration(3_723.0), "1h 02m 03s");
        assert_eq!(duration(65.0), "1m 05s");
    }

    #[test]
    fn escapes_everything_it_is_given() {
        let mut c = cell("<b&\"x\">", "gcc", Verdict::Panic);
        c.console_log = Some("logs/a b#c.log".into());
        let r = results(vec![c]);
        let pts = [point("<b&\"x\">", "<gcc>", 0, Verdict::Pass)];
        let h = page(&r, &Layout::default(), None, &pts);
        assert!(!h.contains("<b&"), "{h}");
        assert!(!h.contains("<detail>") && !h.contains("<gcc>"), "{h}");
        assert!(h.contains("&lt;b&amp;&quot;x&quot;&gt;"), "{h}");
        assert!(h.contains("panic &lt;detail&gt;"), "{h}");
        assert!(h.contains("href=\"logs/a%20b%23c.log\""), "{h}");
    }

    #[test]
    fn regressed_and_flaky_cells_stand_out() {
        let old = results(vec![cell("a", "gcc", Verdict::Pass), cell("b", "gcc", Verdict::Pass), cell("c", "gcc", Verdict::Pass)]);
        let new = results(vec![cell("a", "gcc", Verdict::Panic), cell("b", "gcc", Verdict::Flaky), cell("c", "gcc", Verdict::Pass)]);
        let cmp = compare(&old, &new, "2024-02-28");
        let h = page(&new, &Layout::default(), Some(&cmp), &[]);
        assert!(h.contains("<td class=\"cell fail regressed\" id=\"cell-id-a-gcc\">"), "{h}");
        assert!(h.contains("<span class=\"badge regressed\">regressed</span>"), "{h}");
        assert!(h.contains("<td class=\"cell flaky\" id=\"cell-id-b-gcc\">"), "{h}");
        assert!(h.contains("<span class=\"badge flaky\">flaky</span>"), "{h}");
        assert!(h.contains("<td class=\"cell pass\" id=\"cell-id-c-gcc\">"), "{h}");
        // Regressions come first in the comparison, linked to their cell.
        let since = &h[h.find("<section class=\"since\">").unwrap()..];
        assert!(since.find("chg regression").unwrap() < since.find("chg flaky").unwrap(), "{since}");
        assert!(since.contains("<a href=\"#cell-id-a-gcc\">a gcc 6.1 tiny: pass -&gt; panic"), "{since}");
        assert!(h.contains(&format!("<p class=\"summary\">{}</p>", report::summary(&new))), "{h}");
    }

    #[test]
    fn one_chart_per_board_with_every_point() {
        let mut pts = Vec::new();
        for run in 0..3 {
            for tc in ["gcc", "clang"] {
                let v = match (run, tc) {
                    (1, "clang") => Verdict::Panic,
                    (2, "clang") => Verdict::Flaky,
                    (2, "gcc") => Verdict::Skip,
                    _ => Verdict::Pass,
                };
                pts.push(point("qemu-a", tc, run, v));
            }
            pts.push(point("qemu-b", "gcc", run, if run == 0 { Verdict::InfraError } else { Verdict::Pass }));
        }
        let h = page(&results(vec![]), &Layout::default(), None, &pts);
        let s = svgs(&h);
        assert_eq!(s.len(), 2, "{h}");
        // qemu-a: 3 passes + 1 flaky plotted, 1 failure in the strip, the skip not drawn.
        assert_eq!(s[0].matches("class=\"pt ").count(), 5, "{}", s[0]);
        assert_eq!(s[0].matches("class=\"pt fail\"").count(), 1);
        assert_eq!(s[0].matches("class=\"pt flaky\"").count(), 1);
        // Builds of runs 0 and 2 were fresh, run 1's reused.
        assert_eq!(s[0].matches("class=\"bpt\"").count(), 4);
        assert_eq!(s[1].matches("class=\"pt ").count(), 3, "{}", s[1]);
        assert_eq!(s[1].matches("class=\"pt infra\"").count(), 1);
        assert!(s[0].contains(">run-2</text>"), "{}", s[0]);
    }

    #[test]
    fn without_history_or_environment() {
        let h = page(&results(vec![cell("a", "gcc", Verdict::Pass)]), &Layout::default(), None, &[]);
        assert!(h.contains("no history yet (run <code>kmatrix sweep --history DIR</code>)"), "{h}");
        assert!(h.contains("not recorded"), "{h}");
        // The kernels table falls back to what the cells recorded.
        assert!(h.contains("<code>/usr/src/linux-source-6.1.tar.xz</code></td><td>6.1.0</td>"), "{h}");
        assert!(h.contains("gcc 12.2.0"), "{h}");
        assert_eq!(svgs(&h).len(), 0);
    }

    #[test]
    fn axis_scales_are_round() {
        assert_eq!(scale(0.93, 5.0), (1.0, 0.2));
        assert_eq!(scale(3.4, 5.0), (4.0, 1.0));
        assert_eq!(scale(41.2, 5.0), (50.0, 10.0));
        assert_eq!(scale(470.0, 3.0), (600.0, 200.0));
        assert_eq!(scale(0.0, 4.0), (1.0, 0.25));
        assert_eq!(tick_label(0.5, 0.25), "0.50s");
    }
}
