//! Types shared by memtrace's kernel programs (`memtrace-ebpf`) and its agent
//! (`memtrace`).
//!
//! Everything here is `#[repr(C)]` plain data: the kernel writes these bytes
//! into the ring buffer and maps, the agent reads them back. Changing a layout
//! changes both sides at once, which is the point of keeping them in one crate.
#![no_std]

pub mod config;
pub mod counters;
pub mod record;

pub use config::StackMode;
pub use counters::Counter;
pub use record::*;
