//! Planning: the matrix expanded into cells, each with a stable id, and the
//! kernel builds they share. Nothing runs here; the plan is data that the
//! runner executes and that `kmatrix plan` prints.

use std::collections::BTreeMap;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::descriptor::{ConfigSpec, InitramfsMode, KernelSpec, Matrix, Registry, Rule, Version};
use crate::outcome::SkipReason;
use crate::recipe::{self, ConfigInputs};

/// What the planner may ask about the host. Kept as a trait so plans are
/// testable without the tools installed.
pub trait Probe {
    /// Whether the toolchain's compiler for this arch is installed.
    fn toolchain_installed(&self, toolchain: &str, cc: &str) -> bool;
    fn built(&self, key: &str, variant: &str) -> Option<crate::emulator::Install>;
    /// The first line of the compiler's `--version`, if it is installed.
    fn compiler_version(&self, _cc: &str, _args: &[String]) -> Option<String> {
        None
    }
    /// The version a kernel will have (declared, or read without unpacking).
    fn kernel_version(&self, k: &KernelSpec) -> Option<Version> {
        crate::source::planned_version(&k.source, k.version.as_deref())
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase", tag = "state", content = "reason")]
pub enum CellState {
    Pending,
    Skip(crate::outcome::SkipReason),
}

#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub id: String,
    pub board: String,
    pub arch: String,
    pub toolchain: String,
    pub kernel: String,
    pub kernel_version: Option<String>,
    pub config: String,
    pub emulator: String,
    /// Id of the build this cell boots (shared with other cells).
    pub build: String,
    pub timeout_secs: u64,
    /// Guest commands for this cell (from `[[override]] cmds`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cmds: Vec<String>,
    /// Dump the guest on a panic (`[[override]] dump = true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dump: bool,
    #[serde(flatten)]
    pub state: CellState,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildUnit {
    pub id: String,
    pub arch: String,
    pub toolchain: String,
    pub kernel: KernelSpec,
    pub config: String,
    pub inputs: ConfigInputs,
    /// Union of the make targets of the boards booting it.
    pub targets: Vec<String>,
    /// The first line of the compiler's `--version` where the plan was made
    /// (part of the plan's id, not of the build's: a compiler update is the
    /// same cell of the nightly, built by another compiler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiler: Option<String>,
    pub cells: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub schema: u32,
    /// Content address of everything the plan runs: cell and build ids (they
    /// hash the descriptors' effective content), the kernel sources' sha256
    /// and the compilers. Shards and merges of one plan share it.
    pub id: String,
    pub matrix: String,
    /// The `--filter`s it was made with (`run --plan` plans again with them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    /// Kernel label → what its tree is (tarball sha256, git commit, URL
    /// sha256), when [`identify`] was called.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, String>,
    pub cells: Vec<Cell>,
    pub builds: Vec<BuildUnit>,
}

pub const PLAN_SCHEMA: u32 = 1;

pub fn short_hash(value: &impl Serialize) -> String {
    let json = serde_json::to_vec(value).expect("plan inputs serialise");
    hex::encode(&Sha256::digest(&json)[..6])
}

struct Coord<'a> {
    board: &'a str,
    toolchain: &'a str,
    kernel: &'a KernelSpec,
    config: &'a ConfigSpec,
}

fn coords<'a>(reg: &'a Registry, m: &'a Matrix, filters: &[Rule]) -> Vec<Coord<'a>> {
    // A filter naming configs takes them from every defined config, so a
    // config left off the default axis (defconfig) can still be selected.
    let named: Vec<&str> = filters.iter().filter_map(|r| r.config.as_deref()).collect();
    let configs: Vec<&ConfigSpec> = if named.is_empty() {
        m.configs.iter().collect()
    } else {
        m.all_configs.iter().filter(|c| named.iter().all(|p| crate::descriptor::glob(p, &c.id))).collect()
    };
    let toolchains: Vec<&str> = m.toolchains.iter().chain(&m.optional_toolchains).map(String::as_str).collect();
    let mut out: Vec<Coord<'a>> = Vec::new();
    let excluded = |b: &str, t: &str, k: &str, c: &str| {
        let arch = &reg.boards[b].arch;
        m.exclude.iter().any(|r| r.matches(b, arch, t, k, c))
    };
    for b in &m.boards {
        for t in &toolchains {
            for k in &m.kernels {
                for c in configs.iter().copied() {
                    if !excluded(b, t, &k.id, &c.id) {
                        out.push(Coord { board: b, toolchain: t, kernel: k, config: c });
                    }
                }
            }
        }
    }
    // Include rules add combinations beyond the axes: a field names (or globs)
    // any known id; an absent field takes the axis values.
    for rule in &m.include {
        let boards: Vec<&str> = match &rule.board {
            Some(p) => reg.boards.keys().filter(|b| crate::descriptor::glob(p, b)).map(String::as_str).collect(),
            None => m.boards.iter().map(String::as_str).collect(),
        };
        let tcs: Vec<&str> = match &rule.toolchain {
            Some(p) => reg.toolchains.keys().filter(|t| crate::descriptor::glob(p, t)).map(String::as_str).collect(),
            None => toolchains.clone(),
        };
        for b in boards {
            if rule.arch.as_ref().is_some_and(|p| !crate::descriptor::glob(p, &reg.boards[b].arch)) {
                continue;
            }
            for t in &tcs {
                for k in m.kernels.iter().filter(|k| rule.kernel.as_ref().is_none_or(|p| crate::descriptor::glob(p, &k.id))) {
                    for c in configs.iter().copied().filter(|c| rule.config.as_ref().is_none_or(|p| crate::descriptor::glob(p, &c.id))) {
                        if !out.iter().any(|x| x.board == b && x.toolchain == *t && x.kernel.id == k.id && x.config.id == c.id) {
                            out.push(Coord { board: b, toolchain: t, kernel: k, config: c });
                        }
                    }
                }
            }
        }
    }
    out
}

/// Keeps only the cells every filter rule matches (and their builds).
pub fn filter(plan: &mut Plan, rules: &[crate::descriptor::Rule]) {
    plan.cells.retain(|c| rules.iter().all(|r| r.matches(&c.board, &c.arch, &c.toolchain, &c.kernel, &c.config)));
    let keep: std::collections::BTreeSet<&str> = plan.cells.iter().map(|c| c.id.as_str()).collect();
    for b in &mut plan.builds {
        b.cells.retain(|c| keep.contains(c.as_str()));
    }
    plan.builds.retain(|b| !b.cells.is_empty());
}

/// Parses `key=glob` filters (board, arch, toolchain, kernel, config).
pub fn parse_filter(s: &str) -> Result<crate::descriptor::Rule, String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("filter `{s}`: expected key=pattern"))?;
    let mut r = crate::descriptor::Rule::default();
    let slot = match k {
        "board" => &mut r.board,
        "arch" => &mut r.arch,
        "toolchain" => &mut r.toolchain,
        "kernel" => &mut r.kernel,
        "config" => &mut r.config,
        _ => return Err(format!("filter `{s}`: key must be board, arch, toolchain, kernel or config")),
    };
    *slot = Some(v.to_string());
    Ok(r)
}

pub fn plan(reg: &Registry, probe: &dyn Probe) -> Option<Plan> {
    plan_filtered(reg, probe, &[])
}

/// The plan with only the cells every filter matches (configs named by a
/// filter may come from outside the default axis).
pub fn plan_filtered(base: &Registry, probe: &dyn Probe, filters: &[Rule]) -> Option<Plan> {
    let m = base.matrix.as_ref()?;
    let mut cells = Vec::new();
    let mut builds: BTreeMap<String, BuildUnit> = BTreeMap::new();
    // The registry as each kernel version sees it ([[kernel.when]]).
    let versions: BTreeMap<&str, Option<Version>> = m.kernels.iter().map(|k| (k.id.as_str(), probe.kernel_version(k))).collect();
    let regs: BTreeMap<&str, Registry> = versions.iter().map(|(k, v)| (*k, base.for_kernel(v.as_ref()))).collect();
    let mut compilers: BTreeMap<(String, String), (Option<String>, Option<Version>)> = BTreeMap::new();
    for c in coords(base, m, filters) {
        let reg = &regs[c.kernel.id.as_str()];
        let kernel_version = versions[c.kernel.id.as_str()].as_ref();
        let board = &reg.boards[c.board];
        let arch = &reg.arches[&board.arch];
        let tc = &reg.toolchains[c.toolchain];
        let inputs = recipe::config_inputs(reg, arch, board, Some(c.config));
        let embedded = board.kernel.initramfs == InitramfsMode::Embedded;
        let build_id = short_hash(&(&c.kernel.source, &arch.id, &tc.id, inputs.identity(), embedded));
        let id = short_hash(&(c.board, c.toolchain, &c.kernel, &c.config.id, &build_id, &board.emulator, &board.cmdline));
        let matching = || m.overrides.iter().rev().filter(|o| o.rule.matches(c.board, &arch.id, c.toolchain, &c.kernel.id, &c.config.id));
        let timeout = matching().find_map(|o| o.timeout).or(m.timeout).unwrap_or(board.timeout);
        let cmds = matching().find_map(|o| o.cmds.clone()).unwrap_or_default();
        let dump = matching().find_map(|o| o.dump).unwrap_or(false);
        let state = match tc.targets.get(&arch.id) {
            None => CellState::Skip(SkipReason::ToolchainCannotBuild { toolchain: tc.id.clone(), arch: arch.id.clone() }),
            Some(t) if m.optional_toolchains.contains(&tc.id) && !probe.toolchain_installed(&tc.id, &t.cc) => {
                CellState::Skip(SkipReason::OptionalToolchainMissing { toolchain: tc.id.clone(), packages: t.packages.clone() })
            }
            Some(t) => {
                let compiler = compilers
                    .entry((tc.id.clone(), t.cc.clone()))
                    .or_insert_with(|| {
                        let line = probe.compiler_version(&t.cc, &tc.version_args);
                        let v = line.as_deref().and_then(Version::from_tool_line);
                        (line, v)
                    })
                    .1
                    .clone();
                let unavailable = || crate::emulator::of(board).unavailable(&|k: &str, v: &str| probe.built(k, v));
                match reg.incompatibility(board, tc, kernel_version, compiler.as_ref()).or_else(unavailable) {
                    Some(why) => CellState::Skip(why),
                    None => CellState::Pending,
                }
            }
        };
        let unit = builds.entry(build_id.clone()).or_insert_with(|| BuildUnit {
            id: build_id.clone(),
            arch: arch.id.clone(),
            toolchain: tc.id.clone(),
            kernel: c.kernel.clone(),
            config: c.config.id.clone(),
            inputs: inputs.clone(),
            targets: Vec::new(),
            compiler: tc.targets.get(&arch.id).and_then(|t| compilers.get(&(tc.id.clone(), t.cc.clone()))).and_then(|c| c.0.clone()),
            cells: Vec::new(),
        });
        for t in &board.kernel.make_targets {
            if !unit.targets.contains(t) {
                unit.targets.push(t.clone());
            }
        }
        unit.cells.push(id.clone());
        cells.push(Cell {
            id,
            board: board.id.clone(),
            arch: arch.id.clone(),
            toolchain: tc.id.clone(),
            kernel: c.kernel.id.clone(),
            kernel_version: c.kernel.version.clone().or_else(|| kernel_version.map(|v| v.to_string())),
            config: c.config.id.clone(),
            emulator: board.emulator.kind().to_string(),
            build: build_id,
            timeout_secs: timeout.as_secs(),
            cmds,
            dump,
            state,
        });
    }
    let mut plan = Plan {
        schema: PLAN_SCHEMA,
        id: String::new(),
        matrix: m.origin.clone(),
        filters: filters.iter().flat_map(rule_strings).collect(),
        sources: BTreeMap::new(),
        cells,
        builds: builds.into_values().collect(),
    };
    filter(&mut plan, filters);
    plan.id = plan_id(&plan);
    Some(plan)
}

/// `key=pattern` for each field a filter rule sets (what [`parse_filter`] reads).
fn rule_strings(r: &Rule) -> Vec<String> {
    [("board", &r.board), ("arch", &r.arch), ("toolchain", &r.toolchain), ("kernel", &r.kernel), ("config", &r.config)]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect()
}

fn plan_id(p: &Plan) -> String {
    let cells: Vec<&str> = p.cells.iter().map(|c| c.id.as_str()).collect();
    let builds: Vec<(&str, &Option<String>)> = p.builds.iter().map(|b| (b.id.as_str(), &b.compiler)).collect();
    short_hash(&(cells, builds, &p.sources))
}

/// Adds what each kernel's tree is to the plan and its id: a tarball's
/// sha256 (remembered by path, size and mtime), a URL's declared sha256, a
/// git tree's commit. A tree that cannot be read yet keeps a note of why,
/// so that two hosts which both lack it still agree.
pub fn identify(plan: &mut Plan, kernels: &[KernelSpec], cache: &crate::cache::Cache) {
    for k in kernels.iter().filter(|k| plan.cells.iter().any(|c| c.kernel == k.id)) {
        plan.sources.insert(k.id.clone(), crate::source::identity(&k.source, cache));
    }
    plan.id = plan_id(plan);
}

/// Why two plans differ, for `run --plan` refusing a plan.json that this
/// checkout and host no longer produce.
pub fn difference(file: &serde_json::Value, now: &Plan) -> String {
    let mut out = Vec::new();
    let empty = serde_json::Map::new();
    let old_sources = file["sources"].as_object().unwrap_or(&empty);
    for (k, v) in &now.sources {
        match old_sources.get(k).and_then(|v| v.as_str()) {
            Some(o) if o == v => {}
            Some(o) => out.push(format!("kernel `{k}` was {o}, here it is {v}")),
            None => out.push(format!("kernel `{k}` is not in it")),
        }
    }
    let old_builds: BTreeMap<&str, Option<&str>> = file["builds"].as_array().into_iter().flatten().filter_map(|b| Some((b["id"].as_str()?, b["compiler"].as_str()))).collect();
    for b in &now.builds {
        match old_builds.get(b.id.as_str()) {
            None => out.push(format!("build {} ({} {} {} {}) is not in it", b.id, b.arch, b.toolchain, b.kernel.id, b.config)),
            Some(c) if *c != b.compiler.as_deref() => {
                out.push(format!("build {} was to use {}, here the compiler is {}", b.id, c.unwrap_or("no compiler"), b.compiler.as_deref().unwrap_or("missing")))
            }
            Some(_) => {}
        }
    }
    let now_cells: std::collections::BTreeSet<&str> = now.cells.iter().map(|c| c.id.as_str()).collect();
    let gone = file["cells"].as_array().into_iter().flatten().filter_map(|c| c["id"].as_str()).filter(|id| !now_cells.contains(id)).count();
    if gone > 0 {
        out.push(format!("{gone} of its cells are not planned here (descriptors or matrix.toml changed)"));
    }
    if out.is_empty() {
        out.push("its cells differ".into());
    }
    out.truncate(5);
    out.join("; ")
}
