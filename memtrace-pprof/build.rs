//! Generates the Rust types of `proto/profile.proto`.
//!
//! The schema is compiled by protox, a pure-Rust protobuf compiler, so
//! building this crate needs no `protoc` on the machine.

use std::error::Error;

const PROTO_DIR: &str = "proto";
const PROTO_FILE: &str = "profile.proto";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_DIR}/{PROTO_FILE}");
    let descriptors = protox::compile([PROTO_FILE], [PROTO_DIR])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
