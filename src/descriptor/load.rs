//! Discovery and validation of descriptors: built-in files layered under a
//! project directory, parsed with spans, resolved into a [`Registry`].
//!
//! Layering works like a project config over a tool's defaults: the shipped
//! descriptors are compiled into the binary, and a directory (the current one,
//! or `-C <dir>`) holding `arches/`, `boards/`, `toolchains/`, `fragments/`
//! or `matrix.toml` adds files or replaces built-in ones with the same id.
//! The file stem is the id.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use include_dir::{include_dir, Dir};
use serde::de::DeserializeOwned;
use target_lexicon::{Endianness, PointerWidth, Triple};
use toml::Spanned;

use super::diag::{suggest, Diagnostic, Diagnostics, SourceFile};
use super::model::*;
use super::schema::*;
use crate::kconfig::{self, Fragment};

static BUILTIN_ARCHES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/arches");
static BUILTIN_BOARDS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/boards");
static BUILTIN_TOOLCHAINS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/toolchains");
static BUILTIN_FRAGMENTS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/fragments");
static BUILTIN_MATRIX: &str = include_str!("../../matrix.toml");

/// Where descriptors come from.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    /// A project directory layered over the built-in descriptors.
    pub dir: Option<PathBuf>,
    /// Ignore the built-in descriptors (used by tests of a single layer).
    pub no_builtin: bool,
}

/// Files of one kind, by id, after layering.
type Files = BTreeMap<String, SourceFile>;

struct Collected {
    arches: Files,
    boards: Files,
    toolchains: Files,
    fragments: Files,
    matrix: Option<SourceFile>,
}

fn collect(layers: &Layers, diags: &mut Diagnostics) -> Collected {
    let mut c = Collected {
        arches: Files::new(),
        boards: Files::new(),
        toolchains: Files::new(),
        fragments: Files::new(),
        matrix: None,
    };
    if !layers.no_builtin {
        for (dir, name, ext, out) in [
            (&BUILTIN_ARCHES, "arches", "toml", &mut c.arches),
            (&BUILTIN_BOARDS, "boards", "toml", &mut c.boards),
            (&BUILTIN_TOOLCHAINS, "toolchains", "toml", &mut c.toolchains),
            (&BUILTIN_FRAGMENTS, "fragments", "config", &mut c.fragments),
        ] {
            for f in dir.files() {
                let p = f.path();
                if p.extension().and_then(|e| e.to_str()) != Some(ext) {
                    continue;
                }
                let id = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
                let text = f.contents_utf8().unwrap_or_default();
                out.insert(id, SourceFile { display: format!("<builtin>/{name}/{}", p.display()), text: text.into() });
            }
        }
        c.matrix = Some(SourceFile { display: "<builtin>/matrix.toml".into(), text: BUILTIN_MATRIX.into() });
    }
    if let Some(dir) = &layers.dir {
        for (name, ext, out) in [
            ("arches", "toml", &mut c.arches),
            ("boards", "toml", &mut c.boards),
            ("toolchains", "toml", &mut c.toolchains),
            ("fragments", "config", &mut c.fragments),
        ] {
            let sub = dir.join(name);
            let Ok(rd) = std::fs::read_dir(&sub) else { continue };
            let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for p in paths {
                if p.extension().and_then(|e| e.to_str()) != Some(ext) {
                    continue;
                }
                let id = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
                if let Some(f) = read_source(&p, diags) {
                    out.insert(id, f);
                }
            }
        }
        let m = dir.join("matrix.toml");
        if m.exists()
            && let Some(f) = read_source(&m, diags) {
                c.matrix = Some(f);
            }
    }
    c
}

fn read_source(path: &Path, diags: &mut Diagnostics) -> Option<SourceFile> {
    let display = display_path(path);
    match std::fs::read_to_string(path) {
        Ok(text) => Some(SourceFile { display, text: text.into() }),
        Err(e) => {
            diags.items.push(Diagnostic {
                file: None,
                span: None,
                message: format!("cannot read {display}: {e}"),
                label: None,
                help: None,
            });
            None
        }
    }
}

/// Paths under the current directory are shown relative to it.
fn display_path(p: &Path) -> String {
    let cwd = std::env::current_dir().ok();
    let rel = cwd.as_deref().and_then(|c| p.strip_prefix(c).ok()).unwrap_or(p);
    rel.strip_prefix(".").unwrap_or(rel).display().to_string()
}

fn parse_toml<T: DeserializeOwned>(file: &SourceFile, diags: &mut Diagnostics) -> Option<T> {
    match toml::from_str::<T>(&file.text) {
        Ok(v) => Some(v),
        Err(e) => {
            let msg = e.message().trim_end().to_string();
            match e.span() {
                Some(span) => {
                    diags.error(file, span, msg);
                }
                None => {
                    diags.file_error(file, msg);
                }
            }
            None
        }
    }
}

/// Loads and validates every descriptor. All problems are reported at once.
pub fn load(layers: &Layers) -> Result<Registry, Vec<Diagnostic>> {
    let mut d = Diagnostics::default();
    let files = collect(layers, &mut d);

    let mut fragments = BTreeMap::new();
    for (id, file) in &files.fragments {
        if let Some(frag) = fragment_file(id, file, &mut d) {
            fragments.insert(id.clone(), frag);
        }
    }

    let raw_arches: Vec<(String, SourceFile, RawArch)> = files
        .arches
        .iter()
        .filter_map(|(id, f)| parse_toml(f, &mut d).map(|r| (id.clone(), f.clone(), r)))
        .collect();
    let raw_boards: Vec<(String, SourceFile, RawBoard)> = files
        .boards
        .iter()
        .filter_map(|(id, f)| parse_toml(f, &mut d).map(|r| (id.clone(), f.clone(), r)))
        .collect();
    let raw_toolchains: Vec<(String, SourceFile, RawToolchain)> = files
        .toolchains
        .iter()
        .filter_map(|(id, f)| parse_toml(f, &mut d).map(|r| (id.clone(), f.clone(), r)))
        .collect();

    // Arch names: ids and aliases must be unique across all arches.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    // Every arch file counts as a name, even one that failed to parse: its own
    // errors are reported once, not again on each board that names it.
    for id in files.arches.keys() {
        names.insert(id.clone(), id.clone());
    }
    for (id, file, raw) in &raw_arches {
        for a in &raw.aliases {
            match names.get(a.get_ref()) {
                Some(owner) => {
                    let what = if owner == a.get_ref() { "an arch id".to_string() } else { format!("an alias of `{owner}`") };
                    d.error(file, a.span(), format!("duplicate arch name `{}`: already {what}", a.get_ref()))
                        .label("duplicate");
                }
                None => {
                    names.insert(a.get_ref().clone(), id.clone());
                }
            }
        }
    }

    let mut arches = BTreeMap::new();
    for (id, file, raw) in raw_arches {
        if let Some(a) = resolve_arch(&id, &file, raw, &mut d) {
            arches.insert(id, a);
        }
    }
    let arch_ids: Vec<String> = arches.keys().cloned().collect();
    let resolve_arch_name = |n: &str| names.get(n).cloned();

    let mut toolchains = BTreeMap::new();
    for (id, file, raw) in raw_toolchains {
        if let Some(t) = resolve_toolchain(&id, &file, raw, &resolve_arch_name, &arch_ids, &mut d) {
            toolchains.insert(id, t);
        }
    }

    let mut boards = BTreeMap::new();
    // Fragment files with errors still exist: no second "unknown fragment".
    let fragment_ids: Vec<String> = files.fragments.keys().cloned().collect();
    for (id, file, raw) in raw_boards {
        if let Some(b) = resolve_board(&id, &file, raw, &arches, &resolve_arch_name, &fragment_ids, &mut d) {
            boards.insert(id, b);
        }
    }

    // An arch's default board must exist and be a board of that arch.
    for (id, file, raw) in files.arches.iter().filter_map(|(id, f)| {
        toml::from_str::<RawArch>(&f.text).ok().map(|r| (id, f, r))
    }) {
        if let Some(db) = &raw.default_board {
            match boards.get(db.get_ref()) {
                None if files.boards.contains_key(db.get_ref()) => {} // the board has its own errors
                None => {
                    d.error(file, db.span(), format!("unknown board `{}`", db.get_ref()))
                        .label("no such board")
                        .help(suggest(db.get_ref(), "boards", files.boards.keys().map(String::as_str)));
                }
                Some(b) if &b.arch != id => {
                    d.error(file, db.span(), format!("board `{}` is for arch `{}`, not `{id}`", db.get_ref(), b.arch));
                }
                Some(_) => {}
            }
        }
    }

    let mut reg = Registry { arches, boards, toolchains, fragments, matrix: None };
    if let Some(mfile) = &files.matrix
        && let Some(raw) = parse_toml::<RawMatrix>(mfile, &mut d) {
            reg.matrix = resolve_matrix(mfile, raw, &reg, &files, &resolve_arch_name, &mut d);
        }

    if d.is_empty() { Ok(reg) } else { Err(d.sorted()) }
}

fn fragment_file(id: &str, file: &SourceFile, d: &mut Diagnostics) -> Option<Fragment> {
    match kconfig::parse(&file.text) {
        Ok(entries) => Some(Fragment { name: id.to_string(), origin: file.display.clone(), entries }),
        Err(errs) => {
            for e in errs {
                d.error(file, e.span, e.message);
            }
            None
        }
    }
}

/// Parses config lines held in a TOML string, mapping errors back into the
/// TOML file. Literal strings (`'''`) map exactly; for basic strings with
/// escapes, errors point at the string's start.
fn inline_fragment(name: &str, file: &SourceFile, s: &Spanned<String>, d: &mut Diagnostics) -> Option<Fragment> {
    match kconfig::parse(s.get_ref()) {
        Ok(entries) => Some(Fragment { name: name.to_string(), origin: file.display.clone(), entries }),
        Err(errs) => {
            let base = content_offset(&file.text, s);
            for e in errs {
                let span = match base {
                    Some(b) => b + e.span.start..b + e.span.end,
                    None => s.span(),
                };
                d.error(file, span, e.message);
            }
            None
        }
    }
}

fn content_offset(text: &str, s: &Spanned<String>) -> Option<usize> {
    let span = s.span();
    let raw = text.get(span.clone())?;
    for q in ["'''", "\"\"\"", "'", "\""] {
        if let Some(inner) = raw.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            let mut off = span.start + q.len();
            let mut inner = inner;
            if q.len() == 3 {
                if let Some(r) = inner.strip_prefix("\r\n") {
                    off += 2;
                    inner = r;
                } else if let Some(r) = inner.strip_prefix('\n') {
                    off += 1;
                    inner = r;
                }
            }
            return (inner == s.get_ref()).then_some(off);
        }
    }
    None
}

/// A version range value, or an error at its span.
fn range(file: &SourceFile, s: &Spanned<String>, d: &mut Diagnostics) -> Option<crate::version::Range> {
    match crate::version::Range::parse(s.get_ref()) {
        Ok(r) => Some(r),
        Err(e) => {
            d.error(file, s.span(), format!("invalid version range `{}`: {e}", s.get_ref()))
                .help("comparators with operators, comma-separated: `>=6.5`, `>=6.1, <6.12`, `=6.1`");
            None
        }
    }
}

/// `[[kernel.when]]` entries; `owner` names what may not appear (an arch
/// has no make targets, image or dtb of its own to replace).
fn resolve_when(name: &str, file: &SourceFile, raw: &[Spanned<RawKernelWhen>], arch_level: bool, d: &mut Diagnostics) -> Vec<KernelWhen> {
    let mut out = Vec::new();
    for w in raw {
        let span = w.span();
        let w = w.get_ref();
        if arch_level && (w.make_targets.is_some() || w.image.is_some() || w.dtb.is_some()) {
            d.error(file, span.clone(), "an arch's [[kernel.when]] may only give `config`").help("version-dependent make targets, image and dtb belong in the board's [[kernel.when]]");
        }
        let r = range(file, &w.kernel, d);
        let config = w.config.as_ref().and_then(|c| inline_fragment(name, file, c, d));
        if let Some(kernel) = r {
            out.push(KernelWhen {
                kernel,
                make_targets: w.make_targets.as_ref().map(|v| v.iter().map(|t| t.get_ref().clone()).collect()),
                image: w.image.as_ref().map(|t| t.get_ref().clone()),
                dtb: w.dtb.as_ref().map(|t| t.get_ref().clone()),
                config,
            });
        }
    }
    out
}

pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" | "min" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        "w" => n * 604800,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// "512M", "512MiB", "2G", "2GiB" → MiB.
pub fn parse_memory(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mib = match unit {
        "M" | "MiB" => n,
        "G" | "GiB" => n * 1024,
        _ => return None,
    };
    (mib > 0).then_some(mib)
}

fn resolve_arch(id: &str, file: &SourceFile, raw: RawArch, d: &mut Diagnostics) -> Option<Arch> {
    let before = d.items.len();
    let endian = match raw.endian.get_ref().as_str() {
        "little" => Some(Endian::Little),
        "big" => Some(Endian::Big),
        other => {
            d.error(file, raw.endian.span(), format!("invalid endian `{other}`")).help("expected `little` or `big`");
            None
        }
    };
    let mut pointer_width = 0;
    match Triple::from_str(raw.triple.get_ref()) {
        Err(e) => {
            d.error(file, raw.triple.span(), format!("invalid target triple `{}`: {e}", raw.triple.get_ref()))
                .help("a GNU triple such as `aarch64-linux-gnu` or `mips64-unknown-linux-gnuabi64`");
        }
        Ok(t) => {
            let te = match t.endianness() {
                Ok(Endianness::Little) => Some(Endian::Little),
                Ok(Endianness::Big) => Some(Endian::Big),
                Err(_) => None,
            };
            if let (Some(e), Some(te)) = (endian, te)
                && e != te {
                    d.error(file, raw.endian.span(), format!("endian `{}` contradicts triple `{}`, which is {}-endian", e.as_str(), raw.triple.get_ref(), te.as_str()));
                }
            pointer_width = match t.pointer_width() {
                Ok(PointerWidth::U16) => 16,
                Ok(PointerWidth::U32) => 32,
                Ok(PointerWidth::U64) => 64,
                Err(_) => 0,
            };
        }
    }
    if let Some(abi) = &raw.gdb.mips_abi
        && !["auto", "n32", "o32", "n64", "o64", "eabi32", "eabi64"].contains(&abi.get_ref().as_str()) {
            d.error(file, abi.span(), format!("invalid gdb mips-abi `{}`", abi.get_ref())).help("one of auto, n32, o32, n64, o64, eabi32, eabi64");
        }
    if let Some(bp) = &raw.gdb.breakpoint
        && !["break", "hbreak"].contains(&bp.get_ref().as_str()) {
            d.error(file, bp.span(), format!("invalid gdb breakpoint kind `{}`", bp.get_ref())).help("`break` or `hbreak`");
        }
    let mut profiles = BTreeMap::new();
    for (name, p) in &raw.profiles {
        if let Some(c) = &p.config
            && let Some(f) = inline_fragment(&format!("{id}-{name}"), file, c, d) {
                profiles.insert(name.clone(), f);
            }
    }
    let when = resolve_when(id, file, &raw.kernel.when, true, d);
    if d.items.len() != before {
        return None;
    }
    Some(Arch {
        id: id.to_string(),
        origin: file.display.clone(),
        description: raw.description.unwrap_or_default(),
        aliases: raw.aliases.into_iter().map(Spanned::into_inner).collect(),
        kernel_arch: raw.kernel_arch.into_inner(),
        triple: raw.triple.into_inner(),
        endian: endian?,
        pointer_width,
        default_board: raw.default_board.map(Spanned::into_inner),
        debian_arch: raw.debian_arch.map(Spanned::into_inner),
        make_targets: raw.kernel.make_targets.into_iter().map(Spanned::into_inner).collect(),
        image: raw.kernel.image.into_inner(),
        gdb: Gdb {
            architecture: raw.gdb.architecture.into_inner(),
            mips_abi: raw.gdb.mips_abi.map(Spanned::into_inner),
            breakpoint: raw.gdb.breakpoint.map(Spanned::into_inner).unwrap_or_else(|| "break".into()),
        },
        profiles,
        when,
    })
}

fn resolve_toolchain(
    id: &str,
    file: &SourceFile,
    raw: RawToolchain,
    arch_name: &dyn Fn(&str) -> Option<String>,
    arch_ids: &[String],
    d: &mut Diagnostics,
) -> Option<Toolchain> {
    let before = d.items.len();
    let kind = match raw.kind.get_ref().as_str() {
        "gcc" => Some(ToolchainKind::Gcc),
        "llvm" => Some(ToolchainKind::Llvm),
        other => {
            d.error(file, raw.kind.span(), format!("invalid toolchain kind `{other}`")).help("`gcc` or `llvm`");
            None
        }
    };
    // The table key's own span is not kept by serde; blame the table body.
    let mut targets = BTreeMap::new();
    for (arch, t) in raw.targets {
        let Some(resolved) = arch_name(&arch) else {
            d.error(file, t.span(), format!("unknown arch `{arch}` in [targets.{arch}]"))
                .help(suggest(&arch, "arches", arch_ids.iter().map(String::as_str)));
            continue;
        };
        let span = t.span();
        let t = t.into_inner();
        if kind == Some(ToolchainKind::Gcc) && t.cross_compile.is_none() {
            d.error(file, span, format!("gcc target `{arch}` needs `cross-compile` (\"\" for the host compiler)"));
        }
        targets.insert(
            resolved,
            ToolchainTarget {
                cross_compile: t.cross_compile.map(Spanned::into_inner),
                cc: t.cc.into_inner(),
                cflags: t.cflags,
                packages: t.packages.into_iter().map(Spanned::into_inner).collect(),
            },
        );
    }
    let mut needs = Vec::new();
    for n in &raw.needs {
        let n = n.get_ref();
        if let (Some(kernel), Some(version)) = (range(file, &n.kernel, d), range(file, &n.version, d)) {
            needs.push(Needs { kernel, version });
        }
    }
    let mut unsupported = Vec::new();
    for u in &raw.unsupported {
        let u = u.get_ref();
        if let Some(a) = &u.arch
            && !arch_ids.iter().any(|x| glob(a.get_ref(), x)) {
                d.error(file, a.span(), format!("`{}` matches no arch", a.get_ref())).help(suggest(a.get_ref(), "arches", arch_ids.iter().map(String::as_str)));
            }
        let kernel = u.kernel.as_ref().map(|k| range(file, k, d));
        if matches!(kernel, Some(None)) {
            continue;
        }
        unsupported.push(Unsupported {
            arch: u.arch.as_ref().map(|a| a.get_ref().clone()),
            board: u.board.as_ref().map(|b| b.get_ref().clone()),
            kernel: kernel.flatten(),
            reason: u.reason.clone(),
        });
    }
    if d.items.len() != before {
        return None;
    }
    Some(Toolchain {
        id: id.to_string(),
        origin: file.display.clone(),
        description: raw.description.unwrap_or_default(),
        kind: kind?,
        version_args: raw.version_args,
        make_vars: raw.make_vars.into_iter().map(|(k, v)| (k, v.into_inner())).collect(),
        targets,
        needs,
        unsupported,
    })
}

#[allow(clippy::too_many_arguments)]
fn resolve_board(
    id: &str,
    file: &SourceFile,
    raw: RawBoard,
    arches: &BTreeMap<String, Arch>,
    arch_name: &dyn Fn(&str) -> Option<String>,
    fragment_ids: &[String],
    d: &mut Diagnostics,
) -> Option<Board> {
    let before = d.items.len();
    let arch_id = arch_name(raw.arch.get_ref());
    if arch_id.is_none() {
        d.error(file, raw.arch.span(), format!("unknown arch `{}`", raw.arch.get_ref()))
            .label("no such arch")
            .help(suggest(raw.arch.get_ref(), "arches", arches.keys().map(String::as_str)));
    }
    let poweroff = match raw.poweroff.get_ref().as_str() {
        "poweroff" => Some(Poweroff::Poweroff),
        "reboot" => Some(Poweroff::Reboot),
        "m5-exit" => Some(Poweroff::M5Exit),
        other => {
            d.error(file, raw.poweroff.span(), format!("invalid poweroff `{other}`")).help("one of `poweroff`, `reboot`, `m5-exit`");
            None
        }
    };
    let timeout = parse_duration(raw.timeout.get_ref());
    if timeout.is_none() {
        d.error(file, raw.timeout.span(), format!("invalid duration `{}`", raw.timeout.get_ref())).help("a positive number with a unit: `90s`, `10m`, `1h`");
    }
    let memory = parse_memory(raw.memory.get_ref());
    if memory.is_none() {
        d.error(file, raw.memory.span(), format!("invalid memory size `{}`", raw.memory.get_ref())).help("a size such as `512M`, `512MiB` or `2G`");
    }
    let base = ConfigBase::parse(raw.kernel.base.get_ref());
    if base.is_none() || base == Some(ConfigBase::BoardDefconfig) {
        d.error(file, raw.kernel.base.span(), format!("invalid config base `{}`", raw.kernel.base.get_ref()))
            .help("tinyconfig, allnoconfig, a *defconfig target, or a path to a .config file");
    }
    for f in &raw.kernel.fragments {
        if !fragment_ids.contains(f.get_ref()) {
            d.error(file, f.span(), format!("unknown fragment `{}`", f.get_ref()))
                .label("no such file in fragments/")
                .help(suggest(f.get_ref(), "fragments", fragment_ids.iter().map(String::as_str)));
        }
    }
    let config = raw.kernel.config.as_ref().and_then(|c| inline_fragment(id, file, c, d));
    let mut profiles = BTreeMap::new();
    for (name, p) in &raw.profiles {
        if let Some(c) = &p.config
            && let Some(f) = inline_fragment(&format!("{id}-{name}"), file, c, d) {
                profiles.insert(name.clone(), f);
            }
    }
    let when = resolve_when(id, file, &raw.kernel.when, false, d);
    let kernels = raw.kernels.as_ref().and_then(|k| range(file, k, d));
    let initramfs = match raw.kernel.initramfs.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("external") => InitramfsMode::External,
        Some("embedded") => InitramfsMode::Embedded,
        Some(other) => {
            let s = raw.kernel.initramfs.as_ref().map(|s| s.span()).unwrap_or(0..0);
            d.error(file, s, format!("invalid initramfs mode `{other}`")).help("`external` (passed to the emulator) or `embedded` (linked into the kernel)");
            InitramfsMode::External
        }
    };
    let emulator = match (raw.qemu, raw.gem5) {
        (Some(q), None) => {
            let q = q.into_inner();
            if let Some(smp) = &q.smp
                && *smp.get_ref() == 0 {
                    d.error(file, smp.span(), "smp must be at least 1");
                }
            let binary_span = q.binary.span();
            Some(Emulator::Qemu(Qemu {
                binary: q.binary.into_inner(),
                machine: q.machine.into_inner(),
                cpu: q.cpu.map(Spanned::into_inner),
                smp: q.smp.map(Spanned::into_inner).unwrap_or(1),
                extra_args: q.extra_args.into_iter().map(Spanned::into_inner).collect(),
                share: q.share.map(|x| x.args.into_iter().map(Spanned::into_inner).collect()),
                net: q.net.map(|x| x.args.into_iter().map(Spanned::into_inner).collect()),
                disk_reversed: q.disk.as_ref().is_some_and(|x| x.reversed),
                disk: q.disk.map(|x| x.args.into_iter().map(Spanned::into_inner).collect()),
                kgdb: q.kgdb.map(|k| Kgdb { args: k.args.into_iter().map(Spanned::into_inner).collect(), tty: k.tty.into_inner() }),
                dump: q.dump.map(|x| match x.unsupported {
                    Some(why) => {
                        if !x.args.is_empty() {
                            d.error(file, why.span(), "[qemu.dump] has `args` and `unsupported`: a machine dumps or says why not, not both");
                        }
                        Err(why.into_inner())
                    }
                    None => Ok(x.args.into_iter().map(Spanned::into_inner).collect()),
                }),
                lava: q.lava.map(|l| match (l.unsupported, l.arch) {
                    (Some(why), arch) => {
                        if arch.is_some() || !l.context.is_empty() || !l.extra_options.is_empty() {
                            d.error(file, why.span(), "[qemu.lava] has `unsupported` and settings: a machine runs on LAVA or says why not, not both");
                        }
                        Err(why.into_inner())
                    }
                    (None, Some(arch)) => Ok(Lava {
                        arch: arch.into_inner(),
                        context: l.context.into_iter().map(|(k, v)| (k, serde_json::to_value(v.into_inner()).unwrap_or(serde_json::Value::Null))).collect(),
                        extra_options: l.extra_options.into_iter().map(Spanned::into_inner).collect(),
                    }),
                    (None, None) => {
                        d.error(file, binary_span, "[qemu.lava] needs `arch` (LAVA's name for it) or `unsupported` (why LAVA cannot run the machine)");
                        Err("no LAVA arch".into())
                    }
                }),
            }))
        }
        (None, Some(g)) => {
            let g = g.into_inner();
            if !["ARM", "X86", "RISCV", "MIPS", "POWER", "SPARC"].contains(&g.isa.get_ref().as_str()) {
                d.error(file, g.isa.span(), format!("unknown gem5 ISA `{}`", g.isa.get_ref())).help("one of ARM, X86, RISCV, MIPS, POWER, SPARC");
            }
            for s in g.args.iter().chain(g.env.values()).chain(&g.halted_args).chain(&g.checkpoint_args).chain(&g.restore_args) {
                check_placeholders(file, s, d);
            }
            if let Some(t) = &g.terminal {
                let ok = !t.get_ref().is_empty() && t.get_ref().split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                if !ok {
                    d.error(file, t.span(), format!("`{}` is not a SimObject path", t.get_ref())).help("dotted identifiers, e.g. `system.terminal` or `system.pc.com_1.device`");
                }
            }
            let strings = |v: Vec<Spanned<String>>| v.into_iter().map(Spanned::into_inner).collect::<Vec<_>>();
            Some(Emulator::Gem5(Gem5 {
                isa: g.isa.into_inner(),
                variant: g.variant.map(Spanned::into_inner).unwrap_or_else(|| "opt".into()),
                script: g.script.into_inner(),
                args: g.args.into_iter().map(Spanned::into_inner).collect(),
                env: g.env.into_iter().map(|(k, v)| (k, v.into_inner())).collect(),
                halted_args: strings(g.halted_args),
                checkpoint_args: strings(g.checkpoint_args),
                restore_args: strings(g.restore_args),
                bootloader: g.bootloader.map(|b| Gem5Bootloader { source: b.source.into_inner(), image: b.image.into_inner() }),
                terminal: g.terminal.map(Spanned::into_inner).unwrap_or_else(|| "system.terminal".into()),
            }))
        }
        (Some(q), Some(_)) => {
            d.error(file, q.span(), "a board has one emulator: `[qemu]` or `[gem5]`, not both");
            None
        }
        (None, None) => {
            d.file_error(file, "missing emulator table").help("add a `[qemu]` or a `[gem5]` table");
            None
        }
    };
    if d.items.len() != before {
        return None;
    }
    // An arch that failed its own validation has already been reported.
    let arch = arches.get(arch_id.as_ref()?)?;
    Some(Board {
        id: id.to_string(),
        origin: file.display.clone(),
        description: raw.description.unwrap_or_default(),
        arch: arch.id.clone(),
        console: raw.console.into_inner(),
        cmdline: raw.cmdline.into_inner(),
        poweroff: poweroff?,
        defconfig: raw.defconfig.into_inner(),
        timeout: timeout?,
        memory_mib: memory?,
        host_packages: raw.host_packages.into_iter().map(Spanned::into_inner).collect(),
        kernels,
        kernel: BoardKernel {
            base: base?,
            fragments: raw.kernel.fragments.into_iter().map(Spanned::into_inner).collect(),
            config,
            make_targets: raw
                .kernel
                .make_targets
                .map(|v| v.into_iter().map(Spanned::into_inner).collect())
                .unwrap_or_else(|| arch.make_targets.clone()),
            image: raw.kernel.image.map(Spanned::into_inner).unwrap_or_else(|| arch.image.clone()),
            dtb: raw.kernel.dtb.map(Spanned::into_inner),
            initramfs,
            when,
        },
        profiles,
        emulator: emulator?,
    })
}

fn check_placeholders(file: &SourceFile, s: &Spanned<String>, d: &mut Diagnostics) {
    let text = s.get_ref();
    let mut rest = text.as_str();
    let base = content_offset(&file.text, s);
    while let Some(i) = rest.find('{') {
        let Some(j) = rest[i..].find('}') else { break };
        let name = &rest[i + 1..i + j];
        let name = name.strip_suffix(":py").unwrap_or(name);
        if !GEM5_PLACEHOLDERS.contains(&name) {
            let off = text.len() - rest.len() + i;
            let span = base.map(|b| b + off..b + off + j + 1).unwrap_or(s.span());
            d.error(file, span, format!("unknown placeholder `{{{name}}}`"))
                .help(suggest(name, "placeholders", GEM5_PLACEHOLDERS.iter().copied()));
        }
        rest = &rest[i + j + 1..];
    }
}

fn check_list(
    file: &SourceFile,
    items: &[Spanned<String>],
    kind: &str,
    known: &[&str],
    d: &mut Diagnostics,
) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for it in items {
        let v = it.get_ref();
        if !known.contains(&v.as_str()) {
            d.error(file, it.span(), format!("unknown {kind} `{v}`")).label(format!("no such {kind}")).help(suggest(v, &format!("{kind}s"), known.iter().copied()));
        } else if !seen.insert(v.clone()) {
            d.error(file, it.span(), format!("duplicate {kind} `{v}`")).label("listed twice");
        } else {
            out.push(v.clone());
        }
    }
    out
}

fn resolve_rule(file: &SourceFile, r: &RawRule, d: &mut Diagnostics, known: &BTreeMap<&str, Vec<&str>>) -> Rule {
    let mut check = |f: &Option<Spanned<String>>, kind: &str| -> Option<String> {
        let s = f.as_ref()?;
        let pat = s.get_ref();
        let names = &known[kind];
        if !names.iter().any(|n| glob(pat, n)) {
            d.error(file, s.span(), format!("`{pat}` matches no {kind}")).help(suggest(pat, &format!("{kind}s"), names.iter().copied()));
        }
        Some(pat.clone())
    };
    Rule {
        board: check(&r.board, "board"),
        arch: check(&r.arch, "arch"),
        toolchain: check(&r.toolchain, "toolchain"),
        kernel: check(&r.kernel, "kernel"),
        config: check(&r.config, "config"),
    }
}

fn resolve_matrix(
    file: &SourceFile,
    raw: RawMatrix,
    reg: &Registry,
    files: &Collected,
    arch_name: &dyn Fn(&str) -> Option<String>,
    d: &mut Diagnostics,
) -> Option<Matrix> {
    let before = d.items.len();
    // Boards that failed their own validation still count as known here, so
    // one broken board does not also flood matrix.toml with errors.
    let board_ids: Vec<&str> = files.boards.keys().map(String::as_str).collect();
    let toolchain_ids: Vec<&str> = files.toolchains.keys().map(String::as_str).collect();
    let arch_names: Vec<&str> = files.arches.keys().map(String::as_str).collect();

    let timeout = raw.timeout.as_ref().and_then(|t| {
        let v = parse_duration(t.get_ref());
        if v.is_none() {
            d.error(file, t.span(), format!("invalid duration `{}`", t.get_ref())).help("a positive number with a unit: `90s`, `10m`, `1h`");
        }
        v
    });

    let mut boards = check_list(file, &raw.boards, "board", &board_ids, d);
    for a in &raw.arches {
        match arch_name(a.get_ref()).and_then(|id| reg.arches.get(&id)) {
            None if arch_name(a.get_ref()).is_none() => {
                d.error(file, a.span(), format!("unknown arch `{}`", a.get_ref())).help(suggest(a.get_ref(), "arches", arch_names.iter().copied()));
            }
            None => {}
            Some(arch) => match &arch.default_board {
                Some(b) if !boards.contains(b) => boards.push(b.clone()),
                Some(_) => {}
                None => {
                    d.error(file, a.span(), format!("arch `{}` has no default-board", arch.id));
                }
            },
        }
    }
    if boards.is_empty() && raw.boards.is_empty() && raw.arches.is_empty() {
        d.file_error(file, "the matrix has no machines").help("list `boards = [...]` or `arches = [...]`");
    }
    let toolchains = check_list(file, &raw.toolchains, "toolchain", &toolchain_ids, d);
    let optional_toolchains = check_list(file, &raw.optional_toolchains, "toolchain", &toolchain_ids, d);
    for t in &raw.optional_toolchains {
        if toolchains.contains(t.get_ref()) {
            d.error(file, t.span(), format!("toolchain `{}` is both required and optional", t.get_ref()));
        }
    }

    let kernel_ids: Vec<&str> = raw.kernel.keys().map(String::as_str).collect();
    let kernels_listed = check_list(file, &raw.kernels, "kernel", &kernel_ids, d);
    let mut kernels = Vec::new();
    for id in &kernels_listed {
        let k = &raw.kernel[id];
        let span = k.span();
        let k = k.get_ref();
        let source = match (&k.path, &k.url, &k.sha256) {
            (Some(p), None, None) => Some(SourceSpec::Path { path: PathBuf::from(p.get_ref()) }),
            (None, None, None) => Some(SourceSpec::System { version: k.version.as_ref().map(|v| v.get_ref().clone()) }),
            (None, Some(u), Some(h)) => {
                let mut ok = true;
                if !u.get_ref().starts_with("https://") {
                    d.error(file, u.span(), format!("kernel url `{}` is not https", u.get_ref())).help("downloads are verified, but must still come over https");
                    ok = false;
                }
                if h.get_ref().len() != 64 || !h.get_ref().bytes().all(|b| b.is_ascii_hexdigit()) {
                    d.error(file, h.span(), "sha256 must be 64 hexadecimal digits");
                    ok = false;
                }
                ok.then(|| SourceSpec::Url { url: u.get_ref().clone(), sha256: h.get_ref().to_ascii_lowercase() })
            }
            (None, Some(u), None) => {
                d.error(file, u.span(), "a kernel url needs a `sha256`").help("add `sha256 = \"<64 hex digits>\"`: downloads are verified before use");
                None
            }
            (Some(p), Some(_), _) => {
                d.error(file, p.span(), "a kernel has either `path` or `url`, not both");
                None
            }
            (_, None, Some(h)) => {
                d.error(file, h.span(), "`sha256` without `url`");
                None
            }
        };
        let _ = span;
        if let Some(v) = &k.version
            && (Version::parse(v.get_ref()).is_none() || !v.get_ref().chars().all(|c| c.is_ascii_digit() || c == '.')) {
                d.error(file, v.span(), format!("invalid kernel version `{}`", v.get_ref())).help("a release such as `6.1` or `6.12.117`");
            }
        if let Some(source) = source {
            kernels.push(KernelSpec { id: id.clone(), version: k.version.as_ref().map(|v| v.get_ref().clone()), source });
        }
    }

    let config_ids: Vec<&str> = raw.config.keys().map(String::as_str).collect();
    let configs_listed = check_list(file, &raw.configs, "config", &config_ids, d);
    let fragment_ids: Vec<&str> = reg.fragments.keys().map(String::as_str).collect();
    let mut configs = Vec::new();
    // Every defined config resolves (a filter or `--config` may name one the
    // default axis leaves out); the listed ones are the axis.
    for id in &config_ids {
        let id = &id.to_string();
        let c = raw.config[id].get_ref();
        let base = c.base.as_ref().and_then(|b| {
            let v = ConfigBase::parse(b.get_ref());
            if v.is_none() {
                d.error(file, b.span(), format!("invalid config base `{}`", b.get_ref()))
                    .help("tinyconfig, allnoconfig, a *defconfig target, `board` (the board's defconfig), or a path to a .config file");
            }
            v
        });
        for f in &c.fragments {
            if !fragment_ids.contains(&f.get_ref().as_str()) {
                d.error(file, f.span(), format!("unknown fragment `{}`", f.get_ref())).help(suggest(f.get_ref(), "fragments", fragment_ids.iter().copied()));
            }
        }
        if let Some(p) = &c.profile
            && !fragment_ids.contains(&p.get_ref().as_str()) {
                d.error(file, p.span(), format!("unknown profile `{}`", p.get_ref()))
                    .help(format!("a profile is a fragment in fragments/ plus each arch's [profiles.<name>]; {}", suggest(p.get_ref(), "fragments", fragment_ids.iter().copied())));
            }
        let config = c.config.as_ref().and_then(|s| inline_fragment(&format!("config-{id}"), file, s, d));
        configs.push(ConfigSpec {
            id: id.clone(),
            description: c.description.clone().unwrap_or_default(),
            base,
            fragments: c.fragments.iter().map(|f| f.get_ref().clone()).collect(),
            profile: c.profile.as_ref().map(|p| p.get_ref().clone()),
            config,
            allow_missing: c.allow_missing.iter().map(|s| s.get_ref().clone()).collect(),
        });
    }

    let mut known: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    known.insert("board", board_ids.clone());
    known.insert("arch", arch_names.clone());
    known.insert("toolchain", toolchain_ids.clone());
    known.insert("kernel", kernel_ids.clone());
    known.insert("config", config_ids.clone());
    let include = raw.include.iter().map(|r| resolve_rule(file, r.get_ref(), d, &known)).collect();
    let exclude = raw.exclude.iter().map(|r| resolve_rule(file, r.get_ref(), d, &known)).collect();
    let mut overrides = Vec::new();
    for o in &raw.overrides {
        let o = o.get_ref();
        let rule = RawRule { board: o.board.clone(), arch: o.arch.clone(), toolchain: o.toolchain.clone(), kernel: o.kernel.clone(), config: o.config.clone() };
        let rule = resolve_rule(file, &rule, d, &known);
        let timeout = o.timeout.as_ref().and_then(|t| {
            let v = parse_duration(t.get_ref());
            if v.is_none() {
                d.error(file, t.span(), format!("invalid duration `{}`", t.get_ref())).help("a positive number with a unit: `90s`, `10m`, `1h`");
            }
            v
        });
        overrides.push(Override { rule, timeout, cmds: o.cmds.clone(), dump: o.dump });
    }

    if d.items.len() != before {
        return None;
    }
    let all_configs = configs.clone();
    let configs = configs.into_iter().filter(|c| configs_listed.contains(&c.id)).collect();
    Some(Matrix {
        origin: file.display.clone(),
        timeout,
        boards,
        toolchains,
        optional_toolchains,
        kernels,
        configs,
        all_configs,
        include,
        exclude,
        overrides,
    })
}

/// Spans of a `Spanned` inside an array are relative to the whole file.
#[allow(dead_code)]
fn span_of<T>(s: &Spanned<T>) -> Range<usize> {
    s.span()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_descriptors_are_valid() {
        let reg = load(&Layers::default()).unwrap_or_else(|d| panic!("{}", d.iter().map(|x| x.render()).collect::<Vec<_>>().join("\n")));
        assert_eq!(reg.arches.len(), 5);
        assert_eq!(reg.boards.len(), 7);
        assert!(reg.arch("arm64").is_some());
        // Every arch's default board is one of its own boards.
        for a in reg.arches.values() {
            let b = &reg.boards[a.default_board.as_ref().unwrap()];
            assert_eq!(b.arch, a.id);
        }
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_memory("512M"), Some(512));
        assert_eq!(parse_memory("2GiB"), Some(2048));
        assert_eq!(parse_memory("512"), None);
    }
}
