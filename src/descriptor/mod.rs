//! Machine descriptors: arches, boards, toolchains, config fragments and the
//! matrix, from TOML files to a validated [`Registry`].

pub mod diag;
pub mod load;
pub mod model;
mod schema;

pub use diag::Diagnostic;
pub use load::{load, Layers};
pub use model::*;
