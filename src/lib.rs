//! kmatrix builds Linux kernels for several architectures, boots them under
//! QEMU and gem5, attaches gdb, and reports which combinations work.
//!
//! The pipeline, one module per stage:
//!
//! 1. [`descriptor`]: TOML descriptors (arches, boards, toolchains, fragments,
//!    matrix) → a validated [`descriptor::Registry`]. Errors carry file:line:col.
//! 2. [`plan`]: the matrix → cells with stable ids, builds shared between cells.
//! 3. [`recipe`]: what a build runs (make argv), [`emulator`]: what a boot
//!    runs (emulator argv), [`gdb`]: what a debugger runs. Pure functions of
//!    the model, so `kmatrix show` prints exactly what would run.
//! 4. [`host`]: tools the host needs and the Debian packages that provide
//!    them; [`preflight`] checks them before any build.
//! 5. [`build`] (kernels, in the [`cache`] under per-entry locks), [`boot`]
//!    (one boot judged from its console), [`sweep`] (a plan run on one
//!    jobserver, as events to reporters); every child process through
//!    [`process`]; results in the vocabulary of [`outcome`].
//!
//! Glossary: *arch* is a CPU architecture descriptor (`aarch64`), `kernel-arch`
//! is kbuild's `ARCH=` (`arm64`), *triple* is a GNU target triple; a *board*
//! is one emulated machine; a *cell* is one (board, toolchain, kernel, config)
//! combination of the matrix.

pub mod boot;
pub mod build;
pub mod cache;
pub mod cli;
pub mod command;
pub mod debug;
pub mod descriptor;
pub mod emulator;
pub mod error;
pub mod export;
pub mod gdb;
pub mod history;
pub mod host;
pub mod kconfig;
pub mod machine;
pub mod outcome;
pub mod plan;
pub mod postmortem;
pub mod preflight;
pub mod process;
pub mod recipe;
pub mod rootfs;
pub mod source;
pub mod sweep;
pub mod triage;
pub mod version;
