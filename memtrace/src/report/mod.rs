//! What memtrace tells people: the live view, the final report, the verdict
//! and the JSON lines, all from a [`snapshot::Snapshot`].

pub mod assemble;
pub mod format;
pub mod history;
pub mod json;
pub mod live;
pub mod mappings;
pub mod merge;
pub mod screen;
pub mod snapshot;
pub mod state;
pub mod verdict;
pub mod whole;
