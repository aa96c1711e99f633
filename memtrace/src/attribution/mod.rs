//! Attribution: who holds the resident bytes and who gave memory back, by
//! stack, with the frames named. It sits between the model and what is made
//! of it: the report's tables and the exported profiles both come from here.

mod coverage;
mod growth;
mod holders;
mod rows;

pub use coverage::{coverage, gives_back, StackCoverage};
pub use growth::{
    growth, growth_by_responsible, growth_from_names, in_use_by_names, responsible,
    serves_profiles, NamedBaseline, GOROUTINE_STACKS, PROFILE_SERVING,
};
pub use holders::{in_use_serving_profiles, resident_by_holder, resident_under, Held, Holder};
pub use rows::{
    top_calls, top_faults, top_ranges, top_stacks, CallRow, FaultRow, GrowthRow, RangeRow, StackRow,
};
