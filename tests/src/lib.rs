//! Helpers for the integration tests.
//!
//! - [`workloads`] builds and locates the workload programs the tests trace.

pub mod workloads;
