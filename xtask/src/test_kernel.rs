//! `cargo xtask test-kernel`: the foundation, attribution and kernel-layout
//! integration tests on a second kernel, the long-term one production hosts run rather
//! than this machine's.
//!
//! Debian 12's kernel (6.1, with BTF; `cargo xtask setup` installs it) boots
//! in a qemu guest with virtme-ng, over this machine's own filesystem, read
//! only except for the workloads' build directory, and runs the memtrace
//! binary and test executables built here. qemu's KVM acceleration fails on
//! this project's VM ("failed to set MSR 0x10a", then a guest that never
//! boots), so the guest is emulated (TCG): it boots in about 40 s and runs
//! several times slower than the host.

use std::{
    io,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    thread,
    time::Instant,
};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::{privilege, process, setup, workspace};

/// The kernel series under test: Debian 12's, from `linux-image-amd64`.
const KERNEL_SERIES: &str = "6.1";
/// The integration tests (tests/tests/NAME.rs) run in the guest: the
/// foundation and attribution tests, and those about what differs between
/// kernels (tracepoint layouts, 32-bit programs, a process's exit, the
/// children it forks, a cgroup on cgroup v2 alone).
const TESTS: &[&str] = &["foundation", "attribution", "kernels", "forks", "cgroups"];
/// Enough for the tests' largest workload (512 MiB of Go heap) beside
/// memtrace, and a CPU for each.
const GUEST_MEMORY: &str = "2G";
const GUEST_CPUS: &str = "2";
/// How long the guest may take (coreutils' `timeout`): it boots in about
/// 40 s and runs the tests in about 2 minutes, while a kernel that cannot
/// boot hangs without a word.
const GUEST_TIMEOUT: &str = "20m";
/// `timeout`'s exit status when the time ran out (and when it then had to
/// kill).
const TIMED_OUT: [i32; 2] = [124, 137];

pub fn run() -> Result<()> {
    if !privilege::is_root()? {
        bail!(
            "xtask test-kernel must run as root (the tests in the guest load eBPF programs as \
             the same user): run it with sudo, e.g. `sudo -E env \"PATH=$PATH\" cargo xtask \
             test-kernel`"
        );
    }
    setup::run(setup::Mode::Install)?;
    let started = Instant::now();
    let memtrace = workspace::build_memtrace()?;
    // Built here: the guest cannot write the build cache or the target
    // directory, only check that the workloads are up to date.
    let workloads =
        memtrace_tests::workloads::ensure_built().context("cannot build the test workloads")?;
    let tests = build_tests()?;
    let kernel = guest_kernel(Path::new("/boot"))?;
    let script = guest_script(&memtrace, &tests);
    let mut guest = vng(&kernel, &workloads_dir(workloads)?, &script)?;
    println!(
        "test-kernel: booting {} (emulated) to run the {} tests",
        kernel.display(),
        TESTS.join(" and ")
    );
    let status = relayed(&mut guest)?;
    match status.code() {
        Some(0) => {}
        Some(code) if TIMED_OUT.contains(&code) => bail!(
            "the guest did not finish within {GUEST_TIMEOUT} (a kernel that cannot boot hangs \
             without output)"
        ),
        _ => bail!(
            "the tests failed in the guest, or it did not boot ({status}; its output is above)"
        ),
    }
    println!(
        "test-kernel: the {} tests passed on Linux {KERNEL_SERIES} ({}) in {} s",
        TESTS.join(" and "),
        kernel.display(),
        started.elapsed().as_secs()
    );
    Ok(())
}

/// Builds the integration tests (release, as `cargo xtask test` runs them)
/// and returns their executables, in the order of [`TESTS`].
fn build_tests() -> Result<Vec<PathBuf>> {
    let mut cargo = workspace::cargo();
    cargo.args([
        "test",
        "--release",
        "--no-run",
        "--message-format=json",
        "-p",
        "memtrace-tests",
    ]);
    for test in TESTS {
        cargo.args(["--test", test]);
    }
    let description = process::describe(&cargo);
    // Cargo's progress goes to the terminal; its JSON comes back.
    let output = cargo
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start `{description}`"))?;
    if !output.status.success() {
        bail!("`{description}` failed ({})", output.status);
    }
    let messages = String::from_utf8_lossy(&output.stdout);
    TESTS
        .iter()
        .map(|test| {
            test_executable(&messages, test)
                .with_context(|| format!("`{description}` built no test executable {test}"))
        })
        .collect()
}

/// The executable cargo built for integration test `name`, from its JSON
/// messages (one `compiler-artifact` per line).
fn test_executable(messages: &str, name: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| {
            message["reason"] == "compiler-artifact"
                && message["profile"]["test"] == true
                && message["target"]["name"] == name
                && message["target"]["kind"][0] == "test"
        })
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
}

/// The newest kernel of the series under test in `boot`.
fn guest_kernel(boot: &Path) -> Result<PathBuf> {
    let prefix = format!("vmlinuz-{KERNEL_SERIES}.");
    let entries = boot
        .read_dir()
        .with_context(|| format!("cannot list {}", boot.display()))?;
    let names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    newest_kernel(&names, &prefix)
        .map(|name| boot.join(name))
        .with_context(|| {
            format!(
                "no Linux {KERNEL_SERIES} kernel ({}{prefix}*) to boot: `cargo xtask setup` \
                 installs Debian 12's (linux-image-amd64)",
                boot.display()
            )
        })
}

/// Among file `names`, the one starting with `prefix` whose version
/// (`6.1.0-57-amd64`) is highest, comparing its numbers as numbers.
fn newest_kernel<'a>(names: &'a [String], prefix: &str) -> Option<&'a str> {
    let numbers = |name: &str| -> Vec<u64> {
        name.split(|c: char| !c.is_ascii_digit())
            .filter_map(|part| part.parse().ok())
            .collect()
    };
    names
        .iter()
        .filter(|name| name.starts_with(prefix))
        .max_by_key(|name| numbers(name))
        .map(String::as_str)
}

/// The directory the tests build the workloads in, which the guest must be
/// able to write (the build takes a lock there, even when all is built).
fn workloads_dir(workloads: &memtrace_tests::workloads::Workloads) -> Result<PathBuf> {
    workloads
        .memops
        .parent()
        .map(Path::to_path_buf)
        .context("the workloads have no directory")
}

/// What the guest runs: the kernel set up as the host is, then each test
/// executable with memtrace's binary named, stopping at the first failure.
fn guest_script(memtrace: &Path, tests: &[PathBuf]) -> String {
    let mut lines = vec![
        "set -e".to_owned(),
        "echo \"test-kernel: the guest runs Linux $(uname -r)\"".to_owned(),
        // memtrace needs BTF; say so plainly if this kernel has none.
        "test -r /sys/kernel/btf/vmlinux || { echo 'test-kernel: no /sys/kernel/btf/vmlinux'; \
         exit 1; }"
            .to_owned(),
        // Debian's kernels default to transparent huge pages for every
        // mapping; the tests count 4 KiB faults, as on the host (madvise).
        "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled".to_owned(),
        // The attribution tests limit workloads in memory cgroups.
        "echo +memory > /sys/fs/cgroup/cgroup.subtree_control".to_owned(),
        format!("export MEMTRACE_BIN={} RUST_BACKTRACE=1", quoted(memtrace)),
    ];
    // One test at a time: the guest's two CPUs are emulated, and two
    // workloads of hundreds of MiB traced side by side take longer than
    // the tests' own time limits.
    lines.extend(
        tests
            .iter()
            .map(|test| format!("{} --test-threads=1", quoted(test))),
    );
    lines.join("\n")
}

/// `path` as one shell word.
fn quoted(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// Runs `command` with its output copied to ours through pipes, and
/// returns how it ended. qemu opens its output as /proc/self/fd/1 and
/// /proc/self/fd/2, which truncates a file they lead to (a CI log) and
/// writes it from offset 0: a pipe keeps what came before.
fn relayed(command: &mut Command) -> Result<ExitStatus> {
    let description = process::describe(command);
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{description}`"))?;
    let (mut stdout, mut stderr) = (
        child.stdout.take().context("piped stdout")?,
        child.stderr.take().context("piped stderr")?,
    );
    let errors = thread::spawn(move || io::copy(&mut stderr, &mut io::stderr()));
    let copied = io::copy(&mut stdout, &mut io::stdout());
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for `{description}`"))?;
    copied.context("cannot copy the guest's output")?;
    errors
        .join()
        .map_err(|_| anyhow::anyhow!("the thread copying the guest's errors panicked"))?
        .context("cannot copy the guest's errors")?;
    Ok(status)
}

/// virtme-ng booting `kernel` to run `script`, with `writable` the one
/// directory the guest may write, and the tests' package as its working
/// directory (cargo runs integration tests there); stopped after
/// [`GUEST_TIMEOUT`].
fn vng(kernel: &Path, writable: &Path, script: &str) -> Result<Command> {
    let bin = setup::virtme_ng_bin()?;
    // vng runs virtme-run, next to it.
    let path = std::env::join_paths(
        std::iter::once(bin.clone()).chain(
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths),
        ),
    )
    .context("PATH with virtme-ng's directory")?;
    let mut vng = Command::new("timeout");
    vng.args(["--kill-after=30s", GUEST_TIMEOUT])
        .arg(bin.join("vng"))
        .env("PATH", path)
        .arg("--run")
        .arg(kernel)
        .args([
            "--disable-kvm",
            "--memory",
            GUEST_MEMORY,
            "--cpus",
            GUEST_CPUS,
        ])
        .arg("--rwdir")
        .arg(writable)
        .arg("--cwd")
        .arg(workspace::root().join("tests"))
        .arg("--exec")
        .arg(script)
        .stdin(Stdio::null());
    Ok(vng)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_kernel_of_the_series_is_chosen_by_its_numbers() {
        let names: Vec<String> = [
            "config-6.1.0-57-amd64",
            "vmlinuz-6.1.0-9-amd64",
            "vmlinuz-6.1.0-57-amd64",
            "vmlinuz-6.12.1-amd64",
            "initrd.img-6.1.0-57-amd64",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            newest_kernel(&names, "vmlinuz-6.1."),
            Some("vmlinuz-6.1.0-57-amd64")
        );
        assert_eq!(newest_kernel(&names, "vmlinuz-5.10."), None);
    }

    #[test]
    fn test_executables_come_from_cargos_messages() {
        let messages = r#"{"reason":"compiler-artifact","profile":{"test":false},"target":{"name":"foundation","kind":["lib"]},"executable":null}
{"reason":"compiler-artifact","profile":{"test":true},"target":{"name":"foundation","kind":["test"]},"executable":"/t/release/deps/foundation-0123"}
{"reason":"compiler-artifact","profile":{"test":true},"target":{"name":"attribution","kind":["test"]},"executable":"/t/release/deps/attribution-4567"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            test_executable(messages, "attribution"),
            Some(PathBuf::from("/t/release/deps/attribution-4567"))
        );
        assert_eq!(
            test_executable(messages, "foundation"),
            Some(PathBuf::from("/t/release/deps/foundation-0123"))
        );
        assert_eq!(test_executable(messages, "profiles"), None);
    }

    #[test]
    fn the_guest_script_sets_the_kernel_up_then_runs_each_test() {
        let script = guest_script(
            Path::new("/w/target/release/memtrace"),
            &[
                PathBuf::from("/w/deps/foundation-1"),
                PathBuf::from("/w/it's"),
            ],
        );
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines[0], "set -e");
        assert!(script.contains("echo madvise > /sys/kernel/mm/transparent_hugepage/enabled"));
        assert!(
            script.contains("export MEMTRACE_BIN='/w/target/release/memtrace' RUST_BACKTRACE=1")
        );
        assert_eq!(
            lines[lines.len() - 2..],
            [
                "'/w/deps/foundation-1' --test-threads=1",
                r"'/w/it'\''s' --test-threads=1"
            ]
        );
    }
}
