//! `cargo xtask fuzz`: every cargo-fuzz target in `fuzz/` for a bounded
//! time, one after the other; fails if any of them crashed.
//!
//! Each target starts from its committed corpus (`fuzz/corpus/<target>/`),
//! read-only: the inputs libFuzzer finds go to a temporary directory, so a
//! run never grows the committed corpus. Growing it is a deliberate step
//! (see `fuzz/README.md`). A crashing input is kept in
//! `fuzz/artifacts/<target>/`, where cargo-fuzz puts it.

use std::{
    io::{self, Write as _},
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::{process, workspace};

/// Seconds per target with `--smoke`: the corpus and some 100,000 to
/// 5,000,000 new inputs per target, within CI's budget.
const SMOKE_SECONDS: u64 = 20;
/// Seconds per target otherwise.
const DEFAULT_SECONDS: u64 = 60;
/// An input that takes longer than this is reported as a hang.
const UNIT_TIMEOUT_SECONDS: u64 = 10;

/// Runs every fuzz target for `seconds` each (default: 20 with `smoke`,
/// else 60) and reports how many inputs each one ran.
pub fn run(smoke: bool, seconds: Option<u64>) -> Result<()> {
    let seconds = seconds.unwrap_or(if smoke {
        SMOKE_SECONDS
    } else {
        DEFAULT_SECONDS
    });
    if process::probe(cargo_fuzz().arg("--version")).is_none() {
        bail!("cargo-fuzz is not installed for the nightly toolchain; run `cargo xtask setup`");
    }
    // One build with its output shown, so the runs below start at once.
    process::streamed(cargo_fuzz().arg("build"))?;
    let targets = process::captured(cargo_fuzz().arg("list"))?;
    let targets: Vec<&str> = targets.lines().map(str::trim).collect();
    let mut failures = Vec::new();
    for target in &targets {
        print!("fuzz: {target} for {seconds} s ... ");
        // A failed flush only delays the line.
        let _ = io::stdout().flush();
        let started = Instant::now();
        match run_target(target, seconds) {
            Ok(executions) => println!(
                "{executions} inputs in {} s",
                started.elapsed().as_secs_f64().round()
            ),
            Err(err) => {
                println!("FAILED");
                failures.push(format!("{err:#}"));
            }
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} fuzz targets failed:\n\n{}",
            failures.len(),
            targets.len(),
            failures.join("\n\n")
        );
    }
    println!("fuzz: {} targets, no crash", targets.len());
    Ok(())
}

/// `cargo +nightly fuzz` on the workspace's fuzz crate (cargo-fuzz needs
/// nightly for the sanitizer flags).
fn cargo_fuzz() -> Command {
    let mut command = Command::new("rustup");
    command
        .args(["run", "nightly", "cargo", "fuzz"])
        .current_dir(workspace::root());
    command
}

/// Fuzzes `target` for `seconds`; returns how many inputs it ran.
fn run_target(target: &str, seconds: u64) -> Result<u64> {
    let found = tempfile::tempdir().context("cannot create a temporary corpus directory")?;
    let seeds = Path::new("fuzz/corpus").join(target);
    let mut command = cargo_fuzz();
    command.args(["run", target]).arg(found.path());
    if workspace::root().join(&seeds).is_dir() {
        command.arg(&seeds);
    }
    command.args([
        "--".into(),
        format!("-max_total_time={seconds}"),
        format!("-timeout={UNIT_TIMEOUT_SECONDS}"),
        "-print_final_stats=1".into(),
    ]);
    // libFuzzer prints the stack of a panic; Rust's own backtrace would
    // repeat it.
    let output = command
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{}`", process::describe(&command)))?;
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "fuzz target {target} failed ({}); {}\n{}",
            output.status,
            artifact(&log).map_or("no crash input was written".into(), |path| format!(
                "crash input: {path}; reproduce in the workspace root with \
                 `cargo +nightly fuzz run {target} {path}`"
            )),
            failure_report(&log)
        );
    }
    executions(&log)
        .with_context(|| format!("fuzz target {target}: libFuzzer's output has no execution count"))
}

/// The number of inputs run, from libFuzzer's final statistics
/// (`stat::number_of_executed_units: N`) or else its last `#N DONE` line.
fn executions(log: &str) -> Option<u64> {
    let stat = log
        .lines()
        .find_map(|line| line.strip_prefix("stat::number_of_executed_units:"));
    let done = || {
        log.lines()
            .rev()
            .filter(|line| line.contains("DONE"))
            .find_map(|line| line.strip_prefix('#')?.split_whitespace().next())
    };
    stat.or_else(done)?.trim().parse().ok()
}

/// Where libFuzzer wrote the input that crashed, timed out or ran out of
/// memory.
fn artifact(log: &str) -> Option<&str> {
    log.lines()
        .find_map(|line| line.split_once("Test unit written to "))
        .map(|(_, path)| path.trim())
}

/// The part of the output that explains a failure: from the panic or the
/// sanitizer's report to the line naming the crash input (cargo-fuzz then
/// repeats the input as a byte list, which can run to megabytes), else the
/// whole output.
fn failure_report(log: &str) -> &str {
    let Some(start) = ["panicked at", "==ERROR:", "== ERROR:", "ALARM:"]
        .iter()
        .filter_map(|marker| log.find(marker))
        .min()
    else {
        return log;
    };
    let start = log[..start].rfind('\n').map_or(0, |newline| newline + 1);
    let end = log[start..]
        .find("Test unit written to ")
        .and_then(|at| {
            log[start + at..]
                .find('\n')
                .map(|newline| start + at + newline + 1)
        })
        .unwrap_or(log.len());
    &log[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executions_come_from_the_final_stats_or_the_done_line() {
        let log = "#2\tINITED cov: 110 ft: 110 corp: 12/864b\n\
                   #81234\tDONE   cov: 140 ft: 300 corp: 40/2Kb lim: 176 exec/s: 4061\n\
                   Done 81234 runs in 21 second(s)\n\
                   stat::number_of_executed_units: 81235\n\
                   stat::average_exec_per_sec:     4061\n";
        assert_eq!(executions(log), Some(81235));
        let without_stats = &log[..log.find("stat::").unwrap()];
        assert_eq!(executions(without_stats), Some(81234));
        assert_eq!(executions("error: could not compile\n"), None);
    }

    #[test]
    fn the_crash_input_and_its_explanation_are_found() {
        let log = "#1234\tNEW    cov: 300\n\
                   \n\
                   thread '<unnamed>' panicked at memtrace/src/proc/smaps.rs:12:5:\n\
                   index out of bounds\n\
                   ==4242== ERROR: libFuzzer: deadly signal\n\
                   artifact_prefix='fuzz/artifacts/proc_smaps/'; \
                   Test unit written to fuzz/artifacts/proc_smaps/crash-da39a3ee\n\
                   Base64: AAAA\n";
        assert_eq!(
            artifact(log),
            Some("fuzz/artifacts/proc_smaps/crash-da39a3ee")
        );
        let report = failure_report(log);
        assert!(report.starts_with("thread '<unnamed>' panicked at memtrace/src/proc/smaps.rs"));
        assert!(report.ends_with("Test unit written to fuzz/artifacts/proc_smaps/crash-da39a3ee\n"));
        assert_eq!(artifact("error: could not compile\n"), None);
        assert_eq!(
            failure_report("error: could not compile\n"),
            "error: could not compile\n"
        );
    }
}
