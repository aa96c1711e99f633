//! Running the Go toolchain from tests, hermetically.
//!
//! The tests that use Go check this crate against the real consumer and
//! producer of the format. They fail rather than skip when `go` is missing,
//! so a machine without it cannot pass them by accident.

// Each test crate compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// A `go` command working in `dir`, with every cache, download and setting
/// kept inside `dir` and the network off.
pub fn go(dir: &Path) -> Command {
    let mut command = Command::new("go");
    command
        .current_dir(dir)
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", dir.join("gocache"))
        .env("GOPATH", dir.join("gopath"))
        // Where pprof would write anything of its own.
        .env("PPROF_TMPDIR", dir)
        .env("HOME", dir);
    command
}

/// What a successful command printed.
pub struct Printed {
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` and returns what it printed, failing the test with its
/// stderr if it does not succeed (or with the setup advice if `go` is
/// missing).
pub fn run(command: &mut Command) -> Printed {
    let output: Output = match command.output() {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
            "`go` is not on PATH; these tests run the real Go toolchain. \
             Run the project setup, which installs it (`apt-get install -y golang-go`)."
        ),
        Err(err) => panic!("cannot run {command:?}: {err}"),
    };
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed with {}:\n{stderr}",
        output.status
    );
    Printed {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr,
    }
}

/// Runs `go tool pprof` with `args`, expecting it to read the profile
/// without a complaint.
///
/// Numbers are printed with `-unit=B` so they are exact and can be compared
/// with what was written.
pub fn pprof(dir: &Path, args: &[&str], profile: &Path) -> String {
    let printed = run(go(dir)
        .args(["tool", "pprof", "-unit=B"])
        .args(args)
        .arg(profile));
    // A warning here means pprof disagreed with the profile, e.g. tried to
    // symbolize locations the mapping says are symbolized.
    assert_eq!(
        printed.stderr, "",
        "pprof warned; it printed:\n{}",
        printed.stdout
    );
    printed.stdout
}

/// A row of `-top`: function, flat and cum.
pub type TopRow = (String, i64, i64);

/// The total and rows of `-top` output, whose table looks like
///
/// ```text
/// Showing nodes accounting for 4718592B, 100% of 4718592B total
///       flat  flat%   sum%        cum   cum%
///   3145728B 66.67% 66.67%   3145728B 66.67%  main.allocate
/// ```
pub fn parse_top(output: &str) -> (i64, Vec<TopRow>) {
    let summary = output
        .lines()
        .find(|line| line.starts_with("Showing nodes accounting for"))
        .unwrap_or_else(|| panic!("no summary line in:\n{output}"));
    let total = summary
        .split(" of ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(" total"))
        .unwrap_or_else(|| panic!("unexpected summary {summary:?}"));
    let rows = output
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("flat"))
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), 6, "unexpected row {line:?}");
            (fields[5].to_owned(), number(fields[0]), number(fields[3]))
        })
        .collect();
    (number(total), rows)
}

/// The samples of `-traces` output: value, labels and frames (leaf first).
/// Each sample sits between separator lines:
///
/// ```text
/// -----------+-------------------------------------------------------
///     region:  heap
///   3145728B   main.allocate
///              main.main
/// ```
pub fn parse_traces(output: &str) -> Vec<(i64, Vec<String>, Vec<String>)> {
    let body = output
        .split_once("-----------+")
        .unwrap_or_else(|| panic!("no traces in:\n{output}"))
        .1;
    body.split("-----------+")
        .map(|block| block.lines().skip(1).collect::<Vec<_>>())
        .filter(|lines| !lines.is_empty())
        .map(|lines| {
            let (labels, frames): (Vec<&str>, Vec<&str>) =
                lines.iter().partition(|line| line.contains(':'));
            let (value, first) = frames[0]
                .trim()
                .split_once(char::is_whitespace)
                .unwrap_or_else(|| panic!("unexpected trace line {:?}", frames[0]));
            let frames = std::iter::once(first)
                .chain(frames[1..].iter().copied())
                .map(|frame| frame.trim().to_owned())
                .collect();
            let labels = labels
                .iter()
                .map(|label| label.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect();
            (number(value), labels, frames)
        })
        .collect()
}

/// A number as pprof prints it with `-unit=B`: `3145728B`, `1152` or `0`.
fn number(text: &str) -> i64 {
    let digits = text.strip_suffix('B').unwrap_or(text);
    digits
        .parse()
        .unwrap_or_else(|err| panic!("{text:?} is not a number: {err}"))
}
