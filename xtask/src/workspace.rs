//! Where things are: the workspace, its target directory, the memtrace
//! binary, programs on PATH.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::process;

/// The workspace root, so tasks behave the same from any directory.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A cargo command in the workspace root. It uses the cargo that runs us
/// (`CARGO`), so `cargo +toolchain xtask` stays on that toolchain.
pub fn cargo() -> Command {
    let mut cargo = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.current_dir(root());
    cargo
}

/// Builds memtrace (release) with its output shown, and returns the binary.
pub fn build_memtrace() -> Result<PathBuf> {
    process::streamed(cargo().args(["build", "--release", "-p", "memtrace"]))?;
    memtrace_binary()
}

/// The release memtrace binary, in the target directory.
pub fn memtrace_binary() -> Result<PathBuf> {
    Ok(target_dir()?.join("release").join("memtrace"))
}

/// The target directory, wherever it is (CARGO_TARGET_DIR,
/// `build.target-dir`): cargo metadata resolves both.
pub fn target_dir() -> Result<PathBuf> {
    let metadata =
        process::captured(cargo().args(["metadata", "--format-version", "1", "--no-deps"]))?;
    target_directory(&metadata)
}

fn target_directory(metadata: &str) -> Result<PathBuf> {
    let metadata: serde_json::Value =
        serde_json::from_str(metadata).context("cargo metadata printed invalid JSON")?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}

/// Where `program` would be found on PATH, as the shell's `command -v` says.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_directory_comes_from_cargo_metadata() {
        let metadata = r#"{"packages":[],"target_directory":"/work/main/target","version":1}"#;
        assert_eq!(
            target_directory(metadata).unwrap(),
            Path::new("/work/main/target")
        );
        assert!(target_directory(r#"{"version":1}"#).is_err());
        assert!(target_directory("not json").is_err());
    }

    #[test]
    fn find_on_path_finds_executables_only() {
        assert!(find_on_path("sh").is_some_and(|path| path.ends_with("sh")));
        assert_eq!(find_on_path("surely-no-such-program-here"), None);
    }

    #[test]
    fn the_workspace_root_holds_the_workspace_manifest() {
        assert!(root().join("Cargo.toml").is_file());
        assert!(root().join("memtrace").is_dir());
    }
}
