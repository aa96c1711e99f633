//! Everything that talks to the kernel's BPF subsystem: checking that this
//! machine can run memtrace, loading and attaching the programs, and handing
//! out the maps they share with the agent.

mod error;
mod loader;
pub mod preflight;

pub use error::KernelError;
pub use loader::{KernelCounters, Maps, Tracer, TracerOptions};
