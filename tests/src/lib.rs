//! Helpers for memtrace's integration tests, which load the real eBPF
//! programs as root and trace real workload processes.
//!
//! - [`workloads`] builds and locates the workload programs the tests trace;
//! - [`memtrace`] runs the memtrace binary and reads its JSON output;
//! - [`kernel`] reads what the kernel says, to hold memtrace's numbers
//!   against;
//! - [`running`] starts a workload for `memtrace -p` to attach to;
//! - [`container`] builds a test image and runs podman containers from it;
//! - [`stacks`] reads stacks out of memtrace's JSON and profiles;
//! - [`receivers`] stands in for Pyroscope and Parca, taking profile
//!   pushes and refusing what they refuse;
//! - [`gotool`] runs `go tool pprof` on profiles;
//! - [`prometheus`] runs the real Prometheus against a metrics endpoint.

pub mod container;
pub mod gotool;
pub mod kernel;
pub mod memtrace;
pub mod prometheus;
pub mod receivers;
pub mod running;
pub mod stacks;
pub mod workloads;
