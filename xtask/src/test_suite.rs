//! `cargo xtask test`: every test and check, in order, stopping at the first
//! failure. CI runs exactly this (`.ci/run`), so a green run here is a green
//! run there.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::{bench, fuzz, layers, privilege, process, setup, soak, test_kernel, workspace};

/// One step of the suite: a title for its header line, and what it does.
struct Step {
    title: &'static str,
    run: fn() -> Result<()>,
}

/// Every step, in the order they run: cheap checks before the slow build,
/// the build before what needs its binary.
fn steps() -> Vec<Step> {
    vec![
        Step {
            title: "setup",
            run: || setup::run(setup::Mode::Install),
        },
        Step {
            title: "cargo fmt --all -- --check",
            run: check_formatting,
        },
        Step {
            title: "cargo xtask layers",
            run: layers::run,
        },
        Step {
            title: "cargo build --release -p memtrace",
            run: || workspace::build_memtrace().map(drop),
        },
        Step {
            title: "cargo clippy --release --all-targets -- -D warnings",
            run: lint,
        },
        Step {
            title: "cargo test --release",
            run: test,
        },
        Step {
            title: "cargo xtask test-kernel",
            run: test_kernel::run,
        },
        Step {
            title: "cargo xtask bench --quick",
            run: || bench::run(&bench::Options::quick()),
        },
        Step {
            title: "cargo xtask fuzz --smoke",
            run: || fuzz::run(true, None),
        },
        Step {
            title: "cargo xtask soak --minutes 1",
            run: || soak::run(&soak::Options::ci()),
        },
    ]
}

pub fn run() -> Result<()> {
    // The integration tests load eBPF programs; say so now rather than after
    // the build.
    if !privilege::is_root()? {
        bail!(
            "xtask test must run as root (the integration tests load eBPF programs): \
             run it with sudo, e.g. `sudo -E env \"PATH=$PATH\" cargo xtask test`"
        );
    }
    let steps = steps();
    let started = Instant::now();
    for (index, step) in steps.iter().enumerate() {
        let label = format!("[{}/{}] {}", index + 1, steps.len(), step.title);
        run_step(&label, step.run).with_context(|| format!("xtask test: step {label} failed"))?;
    }
    println!(
        "xtask test: {} steps passed in {}",
        steps.len(),
        seconds(started.elapsed())
    );
    Ok(())
}

/// Runs one step between a header line and a line with its outcome and time.
fn run_step(label: &str, run: fn() -> Result<()>) -> Result<()> {
    println!("\n==> {label}");
    let started = Instant::now();
    let outcome = run();
    let verdict = if outcome.is_ok() { "passed" } else { "FAILED" };
    println!("<== {label}: {verdict} in {}", seconds(started.elapsed()));
    outcome
}

fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64().round())
}

fn check_formatting() -> Result<()> {
    process::streamed(workspace::cargo().args(["fmt", "--all", "--", "--check"]))
}

/// Default workspace members only: the eBPF crate cannot build for the host.
fn lint() -> Result<()> {
    process::streamed(workspace::cargo().args([
        "clippy",
        "--release",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

/// Unit and integration tests; the integration tests run the memtrace binary
/// named by MEMTRACE_BIN.
fn test() -> Result<()> {
    let memtrace = workspace::memtrace_binary()?;
    process::streamed(
        workspace::cargo()
            .args(["test", "--release"])
            .env("MEMTRACE_BIN", memtrace)
            .env("RUST_BACKTRACE", "1"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_comes_first_and_the_build_before_the_tests() {
        let titles: Vec<_> = steps().iter().map(|step| step.title).collect();
        let position = |title: &str| titles.iter().position(|&t| t == title).unwrap();
        assert_eq!(titles[0], "setup");
        assert!(position("cargo build --release -p memtrace") < position("cargo test --release"));
        assert!(position("cargo test --release") < position("cargo xtask test-kernel"));
    }

    #[test]
    fn seconds_are_whole() {
        assert_eq!(seconds(Duration::from_millis(312_400)), "312 s");
        assert_eq!(seconds(Duration::from_millis(600)), "1 s");
    }

    #[test]
    fn a_failing_step_reports_its_error() {
        let err = run_step("[1/1] fails", || bail!("boom")).unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert!(run_step("[1/1] passes", || Ok(())).is_ok());
    }
}
