//! Builds the kernel programs (`memtrace-ebpf`) with aya-build so a plain
//! `cargo build` produces one binary with the eBPF object embedded.
//!
//! That needs a nightly toolchain with rust-src and bpf-linker built against
//! the nightly's LLVM; `cargo xtask setup` installs them. If they are missing,
//! say so here rather than in a wall of linker errors.

use std::{env, path::Path, process::Command};

use anyhow::{bail, Context as _};

fn main() -> anyhow::Result<()> {
    let manifest_dir = env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let ebpf_dir = Path::new(&manifest_dir)
        .parent()
        .context("memtrace crate has no parent directory")?
        .join("memtrace-ebpf");
    println!("cargo:rerun-if-changed=../memtrace-common/src");

    if Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!(
            "bpf-linker is not installed; run `cargo xtask setup` \
             (it installs the nightly toolchain, rust-src, LLVM 22 and bpf-linker)"
        );
    }
    let ebpf_dir = ebpf_dir
        .to_str()
        .context("memtrace-ebpf path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "memtrace-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
