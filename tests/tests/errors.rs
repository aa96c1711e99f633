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
    assert_eq!(lines.len(), 1, "one line of error, got:\n{stderr}");
    let error = lines[0];
    assert!(
        error.starts_with("memtrace: ") && error.contains(says),
        "expected an error saying {says:?}, got:\n{stderr}"
    );
    assert!(
        !error.starts_with("memtrace: memtrace") && !error.contains("error:"),
        "{error}"
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
    assert_fails(&output, 5, "memtrace: needs root");
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
}

#[test]
fn a_kernel_thread() {
    // PID 2 is kthreadd on every Linux system.
    assert_fails(
        &memtrace(&["-p", "2"]),
        3,
        "pid 2 is a kernel thread (kthreadd); memtrace traces user processes",
    );
}

#[test]
fn a_directory_as_an_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    for option in ["--json", "--pprof", "--folded", "--flamegraph", "--history"] {
        for force in [&[][..], &["--force"][..]] {
            let mut args = vec![option, path, "-p", "1"];
            args.extend_from_slice(force);
            assert_fails(
                &memtrace(&args),
                11,
                &format!("{path} is a directory; give a file name"),
            );
        }
    }
    assert!(dir.path().is_dir());
}

#[test]
fn a_missing_pprof_dir_is_made_for_the_invoking_user() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles/today");
    let output = Command::new(binary())
        .args([
            "-q",
            "-i",
            "0.2",
            "-d",
            "1.5",
            "--pprof-every",
            "0.3",
            "--pprof-dir",
        ])
        .arg(&profiles)
        .arg("demo")
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .output()
        .expect("run memtrace");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let meta = std::fs::metadata(&profiles).unwrap();
    assert!(meta.is_dir());
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    // One along the way at least, and the final one.
    let written: Vec<_> = std::fs::read_dir(&profiles).unwrap().collect();
    assert!(written.len() >= 2, "{written:?}");
}

/// Every class of command-line mistake the parser finds: one plain line,
/// exit 2.
#[test]
fn command_line_mistakes() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--no-such-flag"],
            "memtrace: there is no option --no-such-flag",
        ),
        (
            &["--jsn", "out", "demo"],
            "memtrace: there is no option --jsn; did you mean --json?",
        ),
        (
            &["demo", "--json"],
            "memtrace: --json needs a value (FILE) after it",
        ),
        (&["-p"], "memtrace: -p needs a value (PID) after it"),
        (&["-p", "0"], "memtrace: -p needs a process ID above 0"),
        (
            &["-p", "12ab"],
            "memtrace: -p needs a process ID (a whole number), not `12ab`",
        ),
        (
            &["-p", "1", "--", "true"],
            "memtrace: -p and -- COMMAND cannot go together",
        ),
        (
            &["-p", "1", "demo"],
            "memtrace: `demo` traces its own workload",
        ),
        (
            &["--stacks", "most", "demo"],
            "memtrace: --stacks takes one of sampled, all, none",
        ),
        (
            &["-i", "1e20", "demo"],
            "memtrace: -i needs a number of seconds from 0.01 to 3600",
        ),
        (
            &["-i", "1e-10", "demo"],
            "memtrace: -i needs a number of seconds from 0.01 to 3600",
        ),
        (
            &["-i", "0", "demo"],
            "memtrace: -i needs a number of seconds",
        ),
        (
            &["-d", "1e19", "demo"],
            "memtrace: -d needs a number of seconds from 0.01 to 31536000",
        ),
        (
            &["-d", "nan", "demo"],
            "memtrace: -d needs a number of seconds",
        ),
        (
            &["--pprof-every", "1e12", "--pprof-dir", "/tmp", "demo"],
            "memtrace: --pprof-every needs a number of seconds from 0.01 to 86400",
        ),
        (
            &["--pprof-every", "1", "demo"],
            "memtrace: --pprof-every needs --pprof-dir DIR",
        ),
        (
            &["--ring-size", "3M", "demo"],
            "memtrace: --ring-size needs a power of two from 4K to 1G",
        ),
        (
            &["--ring-size", "99999999999999999999", "demo"],
            "memtrace: --ring-size needs a size",
        ),
        (
            &["--stack-period", "0", "demo"],
            "memtrace: --stack-period needs a whole number from 1 to 65536",
        ),
        (
            &["--json", "a", "--json", "b", "demo"],
            "memtrace: --json is given more than once",
        ),
        (&["--quiet=yes", "demo"], "memtrace: -q takes no value"),
        (&["--force=yes", "demo"], "memtrace: --force takes no value"),
        (
            &["ls", "-l"],
            "memtrace: unexpected `ls`: to trace a command, put it after --",
        ),
    ];
    for (args, says) in cases {
        let output = memtrace(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.stdout.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        assert!(stderr.starts_with(says), "{args:?}: {stderr}");
        assert_fails(&output, 2, says);
    }
}

#[test]
fn help_and_version_print_as_usual() {
    for flag in ["--help", "-h"] {
        let output = memtrace(&[flag]);
        assert_eq!(output.status.code(), Some(0));
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(
            help.contains("--interval <SECS>") && help.contains("3600"),
            "{help}"
        );
        assert!(output.stderr.is_empty());
    }
    let output = memtrace(&["--version"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("memtrace "));
}
