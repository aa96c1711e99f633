//! Generates the Rust types of the push schemas in `proto/`, and saves the
//! compiled descriptors for readers that need the schema at run time (such
//! as a test server decoding protobuf JSON).
//!
//! The schemas are compiled by protox, a pure-Rust protobuf compiler, so
//! building this crate needs no `protoc` on the machine.

use std::{env, error::Error, fs, path::PathBuf};

use prost::Message;

const PROTO_DIR: &str = "proto";
const PROTO_FILES: [&str; 3] = [
    "types/v1/types.proto",
    "push/v1/push.proto",
    "parca/profilestore/v1alpha1/profilestore.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={PROTO_DIR}/{file}");
    }
    let descriptors = protox::compile(PROTO_FILES, [PROTO_DIR])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("descriptors.bin"), descriptors.encode_to_vec())?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
