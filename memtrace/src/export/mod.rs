//! Profiles people already know how to read: pprof's profile.proto (for
//! `go tool pprof`), folded stacks and flame graphs.

pub mod flamegraph;
pub mod folded;
pub mod pprof;
