//! The sweep: every cell of the plan run in parallel on one CPU budget,
//! classified, and written incrementally to a results directory.
//!
//! Planning ([`crate::plan`]), execution ([`runner`]) and reporting
//! ([`report`], [`progress`]) are separate; they meet only in [`Event`]s
//! and in the [`results::Results`] file, which every reporter reads.

pub mod compare;
pub mod environment;
pub mod events;
pub mod html;
pub mod kcidb;
pub mod merge;
pub mod progress;
pub mod report;
pub mod results;
pub mod runner;

pub use events::Event;
