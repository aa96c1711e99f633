//! `go tool pprof`, the reference reader of profile.proto, run on the
//! profiles memtrace writes or pushes.

use std::{path::Path, process::Command};

/// Runs `go tool pprof ARGS`, failing the test if it fails. A private home
/// and temporary directory keep it from reading or writing the user's.
pub fn pprof(args: &[&str]) -> String {
    let home = tempfile::tempdir().unwrap();
    let output = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .env("HOME", home.path())
        .env("PPROF_TMPDIR", home.path())
        .env("PPROF_BINARY_PATH", home.path())
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("`go` is needed to check pprof output; run `cargo xtask setup`");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "go tool pprof {args:?} failed: {stderr}\n{stdout}"
    );
    stdout
}

/// `go tool pprof -top` of the profile bytes `profile` by `sample_index`,
/// in bytes (`-unit=B`), written to a file in `dir` first.
pub fn top(dir: &Path, profile: &[u8], sample_index: &str) -> String {
    let path = dir.join("profile.pb.gz");
    std::fs::write(&path, profile).unwrap();
    pprof(&[
        "-top",
        "-unit=B",
        &format!("-sample_index={sample_index}"),
        path.to_str().unwrap(),
    ])
}

/// The flat and cumulative values `go tool pprof -top -unit=B` gives
/// `function`.
pub fn top_row(top: &str, function: &str) -> Option<(u64, u64)> {
    top.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 6 || fields[5..].join(" ") != function {
            return None;
        }
        let bytes = |field: &str| {
            field
                .trim_end_matches('B')
                .parse::<f64>()
                .ok()
                .map(|b| b as u64)
        };
        Some((bytes(fields[0])?, bytes(fields[3])?))
    })
}
