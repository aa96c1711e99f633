//! Profiles people already know how to read: pprof's profile.proto (for
//! `go tool pprof`), folded stacks and flame graphs; and for the agent,
//! profiles pushed to Pyroscope and Parca ([`push`]) and Prometheus
//! metrics ([`metrics`]).

pub mod flamegraph;
pub mod folded;
pub mod metrics;
pub mod pprof;
pub mod push;
