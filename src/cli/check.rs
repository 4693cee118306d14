//! `kmatrix check`: validate every descriptor and the matrix.

use crate::cli::{Ctx, OK};
use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(ctx: &Ctx, _: Args) -> Result<i32> {
    let reg = ctx.registry()?;
    let cells = reg.matrix.as_ref().map(|m| {
        m.boards.len() * (m.toolchains.len() + m.optional_toolchains.len()) * m.kernels.len() * m.configs.len()
    });
    println!(
        "ok: {} arches, {} boards, {} toolchains, {} fragments{}",
        reg.arches.len(),
        reg.boards.len(),
        reg.toolchains.len(),
        reg.fragments.len(),
        cells.map(|c| format!(", matrix.toml ({c} combinations before rules)")).unwrap_or_default()
    );
    Ok(OK)
}
