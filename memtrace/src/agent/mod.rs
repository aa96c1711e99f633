//! `memtrace agent`: the long-running mode for a host. It traces the
//! processes its configuration selects ([`selection`]), as they start and
//! restart, serves Prometheus metrics of each ([`measure`]) and pushes a
//! memory profile window of each to Pyroscope, Parca or a directory, with
//! its own memory bounded ([`run`]).
//!
//! Settings come from a TOML file ([`config`]), with the command line and
//! environment on top ([`settings`]).

pub mod config;
mod error;
mod measure;
mod run;
mod selection;
mod settings;

pub use error::AgentError;
pub use run::{run, STACK_CAP};
pub use settings::{settings, DEFAULT_CONFIG};
