//! Everything that talks to the kernel's BPF subsystem: checking that this
//! machine can run memtrace, loading and attaching the programs, and handing
//! out the maps they share with the agent.

mod btf;
mod error;
mod loader;
pub mod preflight;
mod tracefs;

pub use error::KernelError;
pub use loader::{
    maps_memory, CgroupFilter, FrameHints, KernelCounters, Maps, SyscallHook, Targets, Tracer,
    TracerOptions,
};
pub use tracefs::{find_field, Field};
