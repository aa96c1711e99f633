//! memtrace's build, set-up, test and benchmark automation (`cargo xtask ...`).
//!
//! A fresh machine has none of what building memtrace needs (bpf-linker,
//! rust-src, LLVM 22, the peers the tests compare against), so every task
//! starts from `setup`, and CI runs exactly what a developer runs:
//! `cargo xtask test`.

mod bench;
mod child;
mod fuzz;
mod layers;
mod privilege;
mod process;
mod setup;
mod snapshot;
mod soak;
mod test_kernel;
mod test_suite;
mod text;
mod workspace;

use std::{
    os::unix::process::CommandExt as _,
    process::{Command, ExitCode},
};

use anyhow::{bail, Error, Result};
use clap::{Parser, Subcommand};

use crate::privilege::Privilege;

/// memtrace's build, set-up and test automation.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what building and running memtrace needs, only what is missing.
    ///
    /// Steps: apt packages (LLVM 22, Go, bpftrace, perf, bpftool, Debian
    /// 12's kernel and qemu, ...), the nightly toolchain with rust-src,
    /// bpf-linker built against LLVM 22, cargo-fuzz, virtme-ng, tracefs
    /// mounted. Safe to run again.
    Setup {
        /// Only report what is missing; exit non-zero if anything is.
        #[arg(long)]
        check: bool,
    },
    /// Set up, then build memtrace (release) and print the binary's path.
    Build,
    /// Set up, build, then run memtrace as root (through `sudo -E` when not
    /// root) with ARGS.
    Run {
        /// Arguments for memtrace. A first `--` ends xtask's options, so to
        /// trace a command write `cargo xtask run -- -- CMD` (or put an option
        /// first: `cargo xtask run -d 10 -- CMD`).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            default_values = ["demo"],
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
    /// Run every test and check, in the order CI runs them (needs root).
    Test,
    /// Boot Debian 12's Linux 6.1 in an emulated guest over this machine's
    /// filesystem and run the foundation and attribution integration tests
    /// there (needs root).
    TestKernel,
    /// Check that memtrace's modules import only downward along the data
    /// flow (the layers are listed in xtask/src/layers.rs), with no circles.
    Layers,
    /// Measure memtrace's overhead beside bpftrace and perf on the benchmark
    /// workloads, and check memtrace's counts (needs root).
    Bench(bench::Options),
    /// Run memtrace for N minutes on churning Go heaps and check that its
    /// RSS stays flat, it loses no records and it keeps explaining the
    /// workload's RSS (needs root).
    Soak(soak::Options),
    /// Fuzz every parser of outside input (fuzz/, cargo-fuzz on nightly) for a
    /// bounded time; fails if any target crashes, naming the crash input.
    Fuzz {
        /// About 20 s per target, as CI runs it.
        #[arg(long)]
        smoke: bool,
        /// Seconds per target (default: 20 with --smoke, else 60).
        #[arg(long, value_name = "SECONDS")]
        seconds: Option<u64>,
    },
}

fn main() -> ExitCode {
    match run_task(Cli::parse().task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", report(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, without the backtrace anyhow's `Debug` adds
/// when RUST_BACKTRACE is set: these are the user's problems to fix, not
/// xtask's bugs, and the backtrace would bury the stderr tail they quote.
fn report(err: &Error) -> String {
    let mut report = format!("error: {err}");
    for cause in err.chain().skip(1) {
        report.push_str(&format!("\ncaused by: {cause}"));
    }
    report
}

fn run_task(task: Task) -> Result<()> {
    match task {
        Task::Setup { check: true } => setup::run(setup::Mode::Check),
        Task::Setup { check: false } => setup::run(setup::Mode::Install),
        Task::Build => build(),
        Task::Run { args } => run(&args),
        Task::Test => test_suite::run(),
        Task::TestKernel => test_kernel::run(),
        Task::Layers => layers::run(),
        Task::Bench(options) => bench::run(&options),
        Task::Soak(options) => soak::run(&options),
        Task::Fuzz { smoke, seconds } => fuzz::run(smoke, seconds),
    }
}

fn build() -> Result<()> {
    setup::run(setup::Mode::Install)?;
    let binary = workspace::build_memtrace()?;
    println!("{}", binary.display());
    Ok(())
}

/// Replaces this process with memtrace, so memtrace's exit code is ours, and
/// Ctrl-C goes to memtrace (which then prints its final report) with no
/// xtask process left to die of it first.
fn run(args: &[String]) -> Result<()> {
    setup::run(setup::Mode::Install)?;
    let binary = workspace::build_memtrace()?;
    let mut memtrace = match Privilege::detect()? {
        Privilege::Root => Command::new(&binary),
        // sudo sets SUDO_UID/SUDO_GID, by which memtrace writes its output
        // files as the user; -E keeps the user's environment for memtrace
        // and the command it starts.
        Privilege::Sudo => {
            let mut sudo = Command::new("sudo");
            sudo.arg("-E").arg(&binary);
            sudo
        }
        Privilege::None => bail!(
            "memtrace loads eBPF programs and needs root, and sudo is not installed; \
             run as root: {} {}",
            binary.display(),
            args.join(" ")
        ),
    };
    let err = memtrace.args(args).exec();
    bail!("cannot start {}: {err}", binary.display())
}

/// One task's options parsed from `args` alone, for the tasks' own tests.
#[cfg(test)]
fn parse_task_options<O: clap::Args>(task: &str, args: &[&str]) -> Result<O, clap::Error> {
    #[derive(Parser)]
    struct Only<O: clap::Args> {
        #[command(flatten)]
        options: O,
    }
    Only::<O>::try_parse_from(std::iter::once(task).chain(args.iter().copied()))
        .map(|only| only.options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lists_the_causes_after_the_error() {
        let err = Error::msg("cargo install failed").context("setup could not finish");
        assert_eq!(
            report(&err),
            "error: setup could not finish\ncaused by: cargo install failed"
        );
    }

    #[test]
    fn run_defaults_to_the_demo_and_passes_flags_through() {
        let args = |line: &[&str]| match Cli::try_parse_from(line).unwrap().task {
            Task::Run { args } => args,
            other => panic!("parsed {other:?}"),
        };
        assert_eq!(args(&["xtask", "run"]), ["demo"]);
        assert_eq!(
            args(&["xtask", "run", "-p", "42", "--json", "-"]),
            ["-p", "42", "--json", "-"]
        );
        assert_eq!(
            args(&["xtask", "run", "-d", "5", "--", "ls"]),
            ["-d", "5", "--", "ls"]
        );
        // A leading `--` ends xtask's own options, as with `cargo run`.
        assert_eq!(args(&["xtask", "run", "--", "--help"]), ["--help"]);
        assert_eq!(args(&["xtask", "run", "--", "--", "ls"]), ["--", "ls"]);
    }
}
