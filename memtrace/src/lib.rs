//! memtrace: explains a live process's RSS.
//!
//! The crate is laid out the way data flows, bottom up; each module uses
//! only those below it (`cargo xtask layers` checks it):
//!
//! - [`machine`]: the machine's kernel release and host name;
//! - [`kernel`]: checks the machine, loads and attaches the eBPF programs
//!   (built from `memtrace-ebpf`), hands out their maps;
//! - [`capture`]: the capture file `memtrace record` writes and
//!   `memtrace report` reads;
//! - [`intake`]: ring-buffer records decoded into typed events, and the user
//!   stacks they name;
//! - [`model`]: the address-space model, pure logic, kept current by events
//!   and reconciled with [`proc`], the kernel's own view;
//! - [`symbolize`]: stack addresses to function names;
//! - [`attribution`]: who holds the resident bytes and who gave memory back,
//!   by stack, with names;
//! - [`report`] and [`export`]: the snapshot, live view, verdict and JSON;
//!   pprof, folded stacks and flame graphs;
//! - [`runtime`]: what the target runs on (Go version and settings, malloc
//!   implementation), for the verdict's advice;
//! - [`gopprof`]: a Go program's own heap profile, from its net/http/pprof
//!   endpoint or a saved file, shown beside RSS;
//! - [`session`]: runs it all for one target, and [`exit`] turns how it
//!   ended into an exit code; [`safe_file`] writes files safely as root;
//! - [`agent`]: the always-on mode for a host: targets selected as processes
//!   start, Prometheus metrics, profiles pushed every window.

pub mod agent;
pub mod attribution;
pub mod capture;
pub mod cli;
pub mod demo;
pub mod elf;
pub mod exit;
pub mod export;
pub mod gopprof;
pub mod intake;
pub mod kernel;
pub mod machine;
pub mod model;
pub mod proc;
pub mod report;
pub mod runtime;
pub mod safe_file;
pub mod session;
pub mod symbolize;
pub mod unwind;
