//! `memtrace agent`: the long-running mode for a host, tracing the
//! processes its configuration selects, serving Prometheus metrics and
//! pushing memory profiles every window.
//!
//! For now this holds the configuration ([`config`]); the agent's loop
//! builds on it.

pub mod config;
