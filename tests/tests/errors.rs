//! Bad input ends memtrace with one clear line and a documented exit code,
//! never a panic: each case here provokes one for real.

use std::{
    path::Path,
    process::{Command, Output},
};

use memtrace_tests::memtrace::{binary, require_root};

/// Runs `script` under `sh -c` with `$MEMTRACE` set, as root.
fn shell(script: &str) -> Output {
    require_root();
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("MEMTRACE", binary())
        .output()
        .expect("run sh")
}

fn memtrace(args: &[&str]) -> Output {
    require_root();
    Command::new(binary())
        .args(args)
        .output()
        .expect("run memtrace")
}

/// Exactly one line of error on stderr, naming the problem, and `code`.
fn assert_fails(output: &Output, code: i32, says: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit status {:?}; stderr:\n{stderr}",
        output.status
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    let error = lines.last().copied().unwrap_or_default();
    assert!(
        error.starts_with("memtrace: ") && error.contains(says),
        "expected an error saying {says:?}, got:\n{stderr}"
    );
}

/// A PID no process has.
fn unused_pid() -> u32 {
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(32768);
    (2..max)
        .rev()
        .find(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        .expect("a free pid")
}

#[test]
fn a_pid_that_does_not_exist() {
    let pid = unused_pid().to_string();
    assert_fails(
        &memtrace(&["-p", &pid]),
        3,
        &format!("no process with PID {pid}"),
    );
}

#[test]
fn a_pid_that_exits_while_memtrace_attaches() {
    // Loading the programs takes longer than this process lives.
    let output = shell("sleep 0.2 & exec \"$MEMTRACE\" -p $!");
    assert_fails(&output, 4, "exited while memtrace was attaching");
}

#[test]
fn without_root() {
    let output =
        shell("exec setpriv --reuid=65534 --regid=65534 --clear-groups \"$MEMTRACE\" -p 1");
    assert_fails(&output, 5, "needs root");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("CAP_BPF") && stderr.contains("CAP_PERFMON"),
        "{stderr}"
    );
}

#[test]
fn without_btf() {
    let output = memtrace(&["--btf", "/nonexistent/vmlinux", "-p", "1"]);
    assert_fails(&output, 6, "no kernel BTF at /nonexistent/vmlinux");
}

#[test]
fn without_tracefs_and_no_right_to_mount_it() {
    // A private mount namespace with tracefs unmounted, and a root that may
    // not mount (no CAP_SYS_ADMIN).
    let output = shell(
        "exec unshare -m --propagation private sh -c \
         'umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug 2>/dev/null; \
          exec capsh --drop=cap_sys_admin -- -c \"exec $MEMTRACE -p 1\"'",
    );
    assert_fails(&output, 7, "mount -t tracefs nodev /sys/kernel/tracing");
}

#[test]
fn without_tracefs_as_root_it_mounts_it() {
    let output = shell(
        "exec unshare -m --propagation private sh -c \
         'umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug 2>/dev/null; \
          test ! -d /sys/kernel/tracing/events || exit 99; \
          sleep 5 & exec \"$MEMTRACE\" -q -d 0.5 -p $!'",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}

#[test]
fn a_tracepoint_this_kernel_lacks() {
    // tracefs as the kernel would show it without exceptions:page_fault_user,
    // bind-mounted over the real one in a private mount namespace.
    let fake = tempfile::tempdir().unwrap();
    require_root();
    let output = Command::new("sh")
        .arg("-c")
        .arg(
            "(cd /sys/kernel/tracing/events && find . -mindepth 2 -maxdepth 2 -type d) | \
               grep -v '^./exceptions/page_fault_user$' | \
               (mkdir \"$FAKE/events\" && cd \"$FAKE/events\" && xargs mkdir -p) && \
             exec unshare -m --propagation private sh -c \
               'mount --bind \"$FAKE\" /sys/kernel/tracing && exec \"$MEMTRACE\" -p 1'",
        )
        .env("MEMTRACE", binary())
        .env("FAKE", fake.path())
        .output()
        .expect("run sh");
    assert_fails(&output, 8, "no tracepoint exceptions:page_fault_user");
}

#[test]
fn a_command_that_cannot_start() {
    let output = memtrace(&["-q", "--", "/nonexistent/program"]);
    assert_fails(&output, 12, "cannot start /nonexistent/program");
}

#[test]
fn an_output_that_exists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.json");
    std::fs::write(&path, "keep me").unwrap();
    let output = memtrace(&["--json", path.to_str().unwrap(), "-p", "1"]);
    assert_fails(&output, 11, "already exists (use --force to replace it)");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
}

#[test]
fn nothing_to_trace() {
    assert_fails(&memtrace(&[]), 2, "say what to trace");
    let output = memtrace(&["--no-such-flag"]);
    assert_eq!(output.status.code(), Some(2));
}
