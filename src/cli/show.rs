//! `kmatrix show`: the resolved build recipe, the emulator argv and the gdb
//! setup for one machine, exactly as kmatrix would run them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::cli::{print_json, select_board, Ctx, Format, OK};
use crate::command::CommandSpec;
use crate::descriptor::{Arch, Board};
use crate::descriptor::diag::suggest;
use crate::emulator::{self, BootInputs};
use crate::error::{Error, Result};
use crate::gdb;
use crate::recipe::{self, Paths};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Arch (or alias); picks the arch's default board.
    #[arg(long)]
    arch: Option<String>,
    /// Board id.
    #[arg(long, conflicts_with = "arch")]
    board: Option<String>,
    #[arg(long, default_value = "gcc")]
    toolchain: String,
    /// A config of matrix.toml (default: the board's own base and fragment).
    #[arg(long)]
    config: Option<String>,
    /// Kernel image to show in the emulator argv.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Initramfs to show in the emulator argv.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    #[arg(long, value_name = "PATH")]
    dtb: Option<PathBuf>,
    /// Output format (`text` is an alias of `table`); JSON is one object
    /// with every command as an argv array.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

struct Shown {
    toolchain: String,
    recipe: recipe::Recipe,
    image: String,
    dtb: Option<String>,
    emulator: CommandSpec,
    gdb: Vec<String>,
}

/// A command in `--format json`: the argv as it is executed, the variables
/// set on top of the inherited environment, and the working directory.
#[derive(Serialize)]
struct JsonCommand {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: Option<String>,
}

impl From<&CommandSpec> for JsonCommand {
    fn from(c: &CommandSpec) -> Self {
        JsonCommand {
            argv: std::iter::once(c.program.clone()).chain(c.args.iter().cloned()).collect(),
            env: c.env.iter().cloned().collect(),
            cwd: c.cwd.as_ref().map(|d| d.display().to_string()),
        }
    }
}

/// `kmatrix show --format json`.
#[derive(Serialize)]
struct Json<'a> {
    board: JsonBoard<'a>,
    arch: JsonArch<'a>,
    toolchain: &'a str,
    recipe: JsonRecipe,
    artefacts: JsonArtefacts,
    emulator: JsonEmulator,
    gdb: JsonGdb<'a>,
}

#[derive(Serialize)]
struct JsonBoard<'a> {
    id: &'a str,
    description: &'a str,
    origin: &'a str,
}

#[derive(Serialize)]
struct JsonArch<'a> {
    id: &'a str,
    kernel_arch: &'a str,
    triple: &'a str,
    endian: &'a str,
    pointer_width: u8,
}

/// The steps in order: copy `base_file` (when set) to `<build>/.config`,
/// run `configure[0]`, write `fragments` (later ones win), run the rest of
/// `configure`, check every requested symbol is in `.config`, run `build`.
#[derive(Serialize)]
struct JsonRecipe {
    source: String,
    build_dir: String,
    make_vars: BTreeMap<String, String>,
    base_file: Option<String>,
    configure: Vec<JsonCommand>,
    fragments: Vec<JsonFragment>,
    build: JsonCommand,
    targets: Vec<String>,
}

#[derive(Serialize)]
struct JsonFragment {
    name: String,
    file: String,
    symbols: usize,
    origin: String,
}

#[derive(Serialize)]
struct JsonArtefacts {
    image: String,
    dtb: Option<String>,
    vmlinux: String,
    system_map: String,
    config: String,
}

#[derive(Serialize)]
struct JsonEmulator {
    kind: &'static str,
    poweroff: &'static str,
    #[serde(flatten)]
    command: JsonCommand,
}

#[derive(Serialize)]
struct JsonGdb<'a> {
    program: &'static str,
    commands: &'a [String],
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let reg = ctx.registry()?;
    let board = select_board(&reg, a.arch.as_deref(), a.board.as_deref())?;
    let arch = &reg.arches[&board.arch];
    let tc = reg.toolchain(&a.toolchain)?;
    tc.target(&arch.id)?;
    let config = match &a.config {
        None => None,
        Some(id) => {
            let m = reg.matrix.as_ref().ok_or_else(|| Error::Usage("no matrix.toml: --config needs one".into()))?;
            Some(m.all_configs.iter().find(|c| &c.id == id).ok_or_else(|| {
                Error::Usage(format!("unknown config `{id}`; {}", suggest(id, "configs", m.all_configs.iter().map(|c| c.id.as_str()))))
            })?)
        }
    };
    let inputs = recipe::config_inputs(&reg, arch, board, config);
    let paths = Paths::placeholders();
    // Exactly what `build` runs (the same function, asked of the request).
    let targets = recipe::targets(board, &[], &recipe::requested(&inputs));
    let r = recipe::recipe(&paths, arch, tc, &inputs, &targets, crate::host::which("ccache").is_some(), "@0");
    let image = paths.build.join(&board.kernel.image);
    let dtb = board.kernel.dtb.as_ref().map(|d| paths.build.join(d));
    let backend = emulator::of(board);
    let install = backend.locate(&|k: &str, v: &str| ctx.built(k, v)).ok().flatten();
    let inputs_boot = BootInputs {
        kernel: a.kernel.clone().unwrap_or_else(|| image.clone()),
        initrd: Some(a.initrd.clone().unwrap_or_else(|| PathBuf::from("<initramfs.cpio.gz>"))),
        dtb: a.dtb.clone().or(dtb.clone()),
        install,
        ..Default::default()
    };
    let emu = emulator::command(board, &inputs_boot);
    let attach = gdb::Attach { vmlinux: paths.build.join("vmlinux"), build_dir: paths.build.clone(), port: 1234, breakpoints: vec!["start_kernel".into()], helpers: None };
    // The port is only known at run time: a free one kmatrix picks, or the
    // one the emulator announces. Show that instead of a made-up number.
    let announced = format!("<port {} announces>", backend.kind());
    let port_word = match backend.gdb_port() {
        emulator::GdbPort::Announced(_) => announced.as_str(),
        emulator::GdbPort::Chosen => "<free port>",
    };
    let gdb_cmds: Vec<String> = gdb::setup_commands(arch, &attach)
        .into_iter()
        .map(|c| if c.starts_with("target remote ") { format!("target remote 127.0.0.1:{port_word}") } else { c })
        .collect();
    let shown = Shown {
        toolchain: tc.id.clone(),
        image: image.display().to_string(),
        dtb: dtb.map(|d| d.display().to_string()),
        recipe: r,
        emulator: emu,
        gdb: gdb_cmds,
    };
    match a.format {
        Format::Json => print_json(&json(&shown, board, arch, &inputs, &paths)),
        Format::Table => print_text(&shown, board, arch, &inputs),
    }
    Ok(OK)
}

fn json<'a>(s: &'a Shown, board: &'a Board, arch: &'a Arch, inputs: &recipe::ConfigInputs, paths: &Paths) -> Json<'a> {
    let at = |p: &str| paths.build.join(p).display().to_string();
    Json {
        board: JsonBoard { id: &board.id, description: &board.description, origin: &board.origin },
        arch: JsonArch { id: &arch.id, kernel_arch: &arch.kernel_arch, triple: &arch.triple, endian: arch.endian.as_str(), pointer_width: arch.pointer_width },
        toolchain: &s.toolchain,
        recipe: JsonRecipe {
            source: paths.source.display().to_string(),
            build_dir: paths.build.display().to_string(),
            make_vars: s.recipe.make_vars.iter().cloned().collect(),
            base_file: s.recipe.base_file.as_ref().map(|f| f.display().to_string()),
            configure: s.recipe.configure.iter().map(JsonCommand::from).collect(),
            fragments: inputs
                .fragments
                .iter()
                .enumerate()
                .map(|(i, f)| JsonFragment { name: f.name.clone(), file: paths.fragment_file(i, f).display().to_string(), symbols: f.entries.len(), origin: f.origin.clone() })
                .collect(),
            build: (&s.recipe.build).into(),
            targets: s.recipe.targets.clone(),
        },
        artefacts: JsonArtefacts { image: s.image.clone(), dtb: s.dtb.clone(), vmlinux: at("vmlinux"), system_map: at("System.map"), config: at(".config") },
        emulator: JsonEmulator { kind: board.emulator.kind(), poweroff: board.poweroff.as_str(), command: (&s.emulator).into() },
        gdb: JsonGdb { program: "gdb-multiarch", commands: &s.gdb },
    }
}

fn print_text(s: &Shown, board: &Board, arch: &Arch, inputs: &recipe::ConfigInputs) {
    println!("board      {}  {}  ({})", board.id, board.description, board.origin);
    println!("arch       {}  ARCH={}  triple {} ({}-endian, {}-bit)", arch.id, arch.kernel_arch, arch.triple, arch.endian.as_str(), arch.pointer_width);
    let vars: Vec<String> = s.recipe.make_vars.iter().filter(|(k, _)| k != "ARCH").map(|(k, v)| format!("{k}={v}")).collect();
    println!("toolchain  {}  {}", s.toolchain, vars.join(" "));
    println!();
    println!("build recipe (source <source>, output <build>):");
    let mut n = 1;
    if let Some(f) = &s.recipe.base_file {
        println!("  {n}. cp {} <build>/.config", f.display());
        n += 1;
    }
    let mut steps = s.recipe.configure.iter();
    if let Some(first) = steps.next() {
        println!("  {n}. {first}");
        n += 1;
    }
    if !inputs.fragments.is_empty() {
        println!("  {n}. write the fragments, later ones win:");
        for (i, f) in inputs.fragments.iter().enumerate() {
            println!("       {}  ({} symbols from {})", Paths::placeholders().fragment_file(i, f).display(), f.entries.len(), f.origin);
        }
        n += 1;
    }
    for step in steps {
        println!("  {n}. {step}");
        n += 1;
    }
    println!("  {n}. check that every requested symbol is in <build>/.config");
    println!("  {}. {}", n + 1, s.recipe.build);
    println!();
    println!("artefacts:  image {}{}", s.image, s.dtb.as_ref().map(|d| format!(", dtb {d}")).unwrap_or_default());
    println!("            vmlinux <build>/vmlinux, System.map <build>/System.map, config <build>/.config");
    println!();
    println!("emulator ({}, poweroff by {}):", board.emulator.kind(), board.poweroff.as_str());
    println!("  {}", s.emulator);
    println!();
    println!("gdb setup (gdb-multiarch):");
    for c in &s.gdb {
        println!("  {c}");
    }
}
