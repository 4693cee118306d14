//! `kmatrix list [arches|boards|toolchains]`.

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};

use crate::cli::{Ctx, OK};
use crate::descriptor::Emulator;
use crate::error::Result;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    Arches,
    Boards,
    Toolchains,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to list (all three when omitted).
    kind: Option<Kind>,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let reg = ctx.registry()?;
    let all = a.kind.is_none();
    if all || matches!(a.kind, Some(Kind::Arches)) {
        let mut t = table(["arch", "aliases", "ARCH=", "triple", "endian", "default board"]);
        for x in reg.arches.values() {
            t.add_row([
                x.id.clone(),
                x.aliases.join(", "),
                x.kernel_arch.clone(),
                x.triple.clone(),
                x.endian.as_str().to_string(),
                x.default_board.clone().unwrap_or_default(),
            ]);
        }
        println!("{t}");
    }
    if all || matches!(a.kind, Some(Kind::Boards)) {
        let mut t = table(["board", "arch", "emulator", "machine", "description"]);
        for b in reg.boards.values() {
            let machine = match &b.emulator {
                Emulator::Qemu(q) => format!("{} -M {}", q.binary, q.machine),
                Emulator::Gem5(g) => format!("gem5 {} {}", g.isa, g.script.rsplit('/').next().unwrap_or("")),
            };
            t.add_row([b.id.clone(), b.arch.clone(), b.emulator.kind().to_string(), machine, b.description.clone()]);
        }
        println!("{t}");
    }
    if all || matches!(a.kind, Some(Kind::Toolchains)) {
        let mut t = table(["toolchain", "kind", "arches", "description"]);
        for tc in reg.toolchains.values() {
            let arches: Vec<&str> = tc.targets.keys().map(String::as_str).collect();
            t.add_row([tc.id.clone(), format!("{:?}", tc.kind).to_lowercase(), arches.join(", "), tc.description.clone()]);
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
