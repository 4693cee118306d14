//! `kmatrix list [arches|boards|toolchains] [--format table|json]`.

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use serde::Serialize;

use crate::cli::{print_json, Ctx, Format, OK};
use crate::descriptor::Registry;
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Arches,
    Boards,
    Toolchains,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to list (all three when omitted).
    kind: Option<Kind>,
    /// Output format; JSON is one object with an array for each kind listed
    /// (`arches`, `boards`, `toolchains`).
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Serialize)]
struct ArchRow<'a> {
    id: &'a str,
    aliases: &'a [String],
    kernel_arch: &'a str,
    triple: &'a str,
    endian: &'a str,
    pointer_width: u8,
    default_board: Option<&'a str>,
    description: &'a str,
    origin: &'a str,
}

#[derive(Serialize)]
struct BoardRow<'a> {
    id: &'a str,
    arch: &'a str,
    emulator: &'a str,
    /// The table's "machine" column: `<qemu binary> -M <machine>` or
    /// `gem5 <ISA> <script>`.
    machine: String,
    /// The emulator table's main facts (qemu: binary, machine; gem5: isa,
    /// variant, script).
    emulator_facts: std::collections::BTreeMap<&'static str, String>,
    description: &'a str,
    origin: &'a str,
}

#[derive(Serialize)]
struct ToolchainRow<'a> {
    id: &'a str,
    kind: String,
    arches: Vec<&'a str>,
    description: &'a str,
    origin: &'a str,
}

#[derive(Serialize, Default)]
struct Listing<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    arches: Option<Vec<ArchRow<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    boards: Option<Vec<BoardRow<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    toolchains: Option<Vec<ToolchainRow<'a>>>,
}

fn listing(reg: &Registry, kind: Option<Kind>) -> Listing<'_> {
    let want = |k: Kind| kind.is_none_or(|x| x == k);
    let arches = want(Kind::Arches).then(|| {
        reg.arches
            .values()
            .map(|x| ArchRow {
                id: &x.id,
                aliases: &x.aliases,
                kernel_arch: &x.kernel_arch,
                triple: &x.triple,
                endian: x.endian.as_str(),
                pointer_width: x.pointer_width,
                default_board: x.default_board.as_deref(),
                description: &x.description,
                origin: &x.origin,
            })
            .collect()
    });
    let boards = want(Kind::Boards).then(|| {
        reg.boards
            .values()
            .map(|b| {
                let backend = crate::emulator::of(b);
                BoardRow {
                    id: &b.id,
                    arch: &b.arch,
                    emulator: b.emulator.kind(),
                    machine: backend.machine(),
                    emulator_facts: backend.facts(),
                    description: &b.description,
                    origin: &b.origin,
                }
            })
            .collect()
    });
    let toolchains = want(Kind::Toolchains).then(|| {
        reg.toolchains
            .values()
            .map(|tc| ToolchainRow {
                id: &tc.id,
                kind: format!("{:?}", tc.kind).to_lowercase(),
                arches: tc.targets.keys().map(String::as_str).collect(),
                description: &tc.description,
                origin: &tc.origin,
            })
            .collect()
    });
    Listing { arches, boards, toolchains }
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let reg = ctx.registry()?;
    let l = listing(&reg, a.kind);
    if a.format == Format::Json {
        print_json(&l);
        return Ok(OK);
    }
    if let Some(rows) = &l.arches {
        let mut t = table(["arch", "aliases", "ARCH=", "triple", "endian", "default board"]);
        for x in rows {
            t.add_row([x.id, &x.aliases.join(", "), x.kernel_arch, x.triple, x.endian, x.default_board.unwrap_or_default()].map(str::to_string));
        }
        println!("{t}");
    }
    if let Some(rows) = &l.boards {
        let mut t = table(["board", "arch", "emulator", "machine", "description"]);
        for b in rows {
            t.add_row([b.id, b.arch, b.emulator, &b.machine, b.description].map(str::to_string));
        }
        println!("{t}");
    }
    if let Some(rows) = &l.toolchains {
        let mut t = table(["toolchain", "kind", "arches", "description"]);
        for tc in rows {
            t.add_row([tc.id, &tc.kind, &tc.arches.join(", "), tc.description].map(str::to_string));
        }
        println!("{t}");
    }
    Ok(OK)
}

pub(crate) fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY).set_header(header);
    t
}
