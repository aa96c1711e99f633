//! Profiles people already know how to read: pprof's profile.proto (for
//! `go tool pprof`), folded stacks and flame graphs; and for the agent,
//! profiles pushed to Pyroscope and Parca ([`push`]) and Prometheus
//! metrics ([`metrics`]).

pub mod flamegraph;
pub mod folded;
pub mod metrics;
pub mod pprof;
pub mod push;

use crate::symbolize::Namer;

/// One process's part of a profile: a profile of a cgroup has one per
/// process, each with its own address space.
pub struct Part<'a> {
    pub namer: Namer<'a>,
    pub pid: u32,
    pub command: String,
    /// The program file, whose mapping pprof wants first.
    pub executable: Option<String>,
}

impl Part<'_> {
    /// The frame that stands for the process at the root of its stacks,
    /// when several processes share a profile.
    pub fn root_frame(&self) -> String {
        format!("{} (pid {})", self.command, self.pid)
    }
}
