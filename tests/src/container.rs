//! Real containers for the integration tests: an image made from the test
//! workloads and a static busybox, and containers run from it with podman.
//!
//! Nothing is pulled from a registry. [`Image::get`] lays out a root
//! filesystem (busybox and its applet links in `/bin`, the static workloads
//! and the `mix.sh` entrypoint in `/workloads`), and `podman import`s it
//! under a tag named after the hash of its contents, so a run whose inputs
//! did not change reuses the image already there.
//!
//! Containers run with runc and podman's cgroupfs manager (crun refuses a
//! hybrid cgroup layout, systemd is not needed), explicit ulimits (podman's
//! defaults exceed the hard limits of a test host), no network, and a
//! memory limit without swap. A [`Container`] is removed when dropped.
//!
//! ```no_run
//! use memtrace_tests::container::{Container, Image, LEAKER};
//! let container = Container::run(Image::get(), "oom", 200 << 20, &[LEAKER]);
//! assert_eq!(container.wait_exit(std::time::Duration::from_secs(60)), 137);
//! assert!(container.oom_killed());
//! ```

use std::{
    collections::HashMap,
    fs::{self, File},
    io::{self, Read},
    os::unix::fs::{symlink, OpenOptionsExt},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicUsize, Ordering},
        OnceLock,
    },
    thread,
    time::{Duration, Instant},
};

use crate::{
    running::Running,
    workloads::{build_dir, ensure_built, run},
};

/// The static busybox (Debian's busybox-static) and the applets the image
/// links to it.
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "sleep", "echo", "cat", "ls", "ps", "kill", "touch", "true", "false", "[", "test", "env",
];

/// `memops` (static): the memory-operation interpreter.
pub const MEMOPS: &str = "/workloads/memops";
/// `pressure` (static C): fills, gives back lazily, grows until killed.
pub const PRESSURE: &str = "/workloads/pressure";
/// `leaker` (static Go): grows its heap until killed.
pub const LEAKER: &str = "/workloads/leaker";
/// `goheap` (static Go): allocates a known heap, holds it, exits.
pub const GOHEAP: &str = "/workloads/goheap";
/// The entrypoint that starts and stops a C and a Go workload over ~20 s.
pub const MIX: &str = "/workloads/mix.sh";

/// Every podman command runs with these: runc, and cgroups managed by
/// podman itself.
const PODMAN_GLOBAL: &[&str] = &["--runtime", "runc", "--cgroup-manager=cgroupfs"];
/// The repository the test image is tagged in.
const REPOSITORY: &str = "localhost/memtrace-test";

/// The test image, imported into podman's storage.
#[derive(Debug)]
pub struct Image {
    tag: String,
}

impl Image {
    /// The image of this run's workloads, built and imported once per
    /// process (and not at all when podman already holds an image of the
    /// same contents). Panics, saying why, when that fails.
    pub fn get() -> &'static Image {
        static IMAGE: OnceLock<Image> = OnceLock::new();
        IMAGE.get_or_init(build_image)
    }

    /// `localhost/memtrace-test:<hash of the root filesystem>`.
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

fn build_image() -> Image {
    let workloads = ensure_built().unwrap_or_else(|error| panic!("{error}"));
    let dir = build_dir().join("image");
    fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("creating {}: {error}", dir.display()));
    // Test processes building at once take turns; released when dropped.
    let lock = File::create(dir.join(".lock")).expect("create the image lock file");
    lock.lock().expect("lock the image directory");

    let rootfs = dir.join("rootfs");
    if rootfs.exists() {
        fs::remove_dir_all(&rootfs).expect("remove the previous root filesystem");
    }
    for sub in ["bin", "workloads", "tmp", "proc", "sys", "dev", "etc"] {
        fs::create_dir_all(rootfs.join(sub)).expect("create the root filesystem");
    }
    assert!(
        Path::new(BUSYBOX).is_file(),
        "the test image needs a static {BUSYBOX}: apt-get install -y busybox-static"
    );
    copy(Path::new(BUSYBOX), &rootfs.join("bin/busybox"));
    for applet in APPLETS {
        symlink("busybox", rootfs.join("bin").join(applet)).expect("link a busybox applet");
    }
    let mix = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads/container/mix.sh");
    for (from, to) in [
        (&workloads.memops_static, MEMOPS),
        (&workloads.pressure, PRESSURE),
        (&workloads.leaker, LEAKER),
        (&workloads.goheap, GOHEAP),
        (&mix, MIX),
    ] {
        copy(from, &rootfs.join(to.trim_start_matches('/')));
    }

    // Same contents, same bytes: names sorted, times, owners fixed.
    let tarball = dir.join("rootfs.tar");
    run_tool(
        Command::new("tar")
            .args([
                "--sort=name",
                "--mtime=@0",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
            ])
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tarball)
            .arg("."),
    );
    let sum = run_tool(Command::new("sha256sum").arg(&tarball));
    let tag = format!("{REPOSITORY}:{}", &sum[..16]);
    let exists = podman_command(&["image", "exists", &tag])
        .status()
        .expect("run podman");
    if !exists.success() {
        podman(&["import", tarball.to_str().expect("a UTF-8 path"), &tag]);
    }
    Image { tag }
}

/// Copies a file, keeping its permissions.
fn copy(from: &Path, to: &Path) {
    fs::copy(from, to)
        .unwrap_or_else(|error| panic!("copying {} to {}: {error}", from.display(), to.display()));
}

/// Runs a tool that must succeed; returns its stdout. A tool that fails
/// fails the test with what it said.
fn run_tool(command: &mut Command) -> String {
    run(command).unwrap_or_else(|error| panic!("{error}"))
}

/// `podman ARGS`, run in a directory of the build's own: conmon 2.1 writes
/// an `oom` file into its working directory when a container's process is
/// OOM-killed.
fn podman_command(args: &[&str]) -> Command {
    let dir = build_dir().join("podman");
    fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("creating {}: {error}", dir.display()));
    let mut command = Command::new("podman");
    command.current_dir(dir).args(PODMAN_GLOBAL).args(args);
    command
}

/// Runs `podman ARGS`, which must succeed; returns its stdout, trimmed.
fn podman(args: &[&str]) -> String {
    run_tool(&mut podman_command(args)).trim().to_owned()
}

/// A running (or exited) container, removed when dropped.
#[derive(Debug)]
pub struct Container {
    id: String,
    name: String,
    /// The memory cgroup's path below the controller's root, as the
    /// kernel names it.
    cgroup_path: String,
    memory_dir: PathBuf,
}

impl Container {
    /// Runs `argv` detached in a new container of `image`, named
    /// `NAME_PREFIX-<test process>-<n>`, with `memory_limit` bytes of memory
    /// and no swap.
    pub fn run(image: &Image, name_prefix: &str, memory_limit: u64, argv: &[&str]) -> Container {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "{name_prefix}-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        );
        let limit = format!("{memory_limit}b");
        let mut args = vec![
            "run",
            "--detach",
            "--name",
            &name,
            "--network",
            "none",
            "--memory",
            &limit,
            // Swap as large as memory means none: the limit ends in an OOM kill.
            "--memory-swap",
            &limit,
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
            // `podman logs` reads a file, whatever the host's default driver.
            "--log-driver",
            "k8s-file",
            image.tag(),
        ];
        args.extend_from_slice(argv);
        // Removed on drop, whatever fails next: a failed run may leave a
        // created container behind.
        let mut container = Container {
            id: String::new(),
            name: name.clone(),
            cgroup_path: String::new(),
            memory_dir: PathBuf::new(),
        };
        let output = podman(&args);
        // The id is the last line: podman may warn before it.
        container.id = output.lines().last().unwrap_or_default().to_owned();
        (container.cgroup_path, container.memory_dir) = memory_cgroup_of(container.main_pid());
        container
    }

    /// The runtime's id: 64 hex digits.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host PID of the container's first process; panics once it has
    /// exited.
    pub fn main_pid(&self) -> u32 {
        let pid: u32 = self
            .inspect("{{.State.Pid}}")
            .parse()
            .expect("podman's .State.Pid is a number");
        assert_ne!(pid, 0, "container {} is not running", self.name);
        pid
    }

    /// The host PIDs of every process in the container now, from its memory
    /// cgroup's `cgroup.procs`: none once the runtime removed the cgroup,
    /// after the last one exited.
    pub fn host_pids(&self) -> Vec<u32> {
        let procs = self.memory_dir.join("cgroup.procs");
        let text = match fs::read_to_string(&procs) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Vec::new(),
            read => read.unwrap_or_else(|error| panic!("reading {}: {error}", procs.display())),
        };
        text.lines()
            .map(|line| line.parse().expect("cgroup.procs holds PIDs"))
            .collect()
    }

    /// The host PID of the container's process that sees itself as
    /// `pid_in_container` (the last PID of its status' `NSpid` line).
    pub fn host_pid(&self, pid_in_container: u32) -> u32 {
        let pids = self.host_pids();
        pids.iter()
            .copied()
            .find(|pid| {
                fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
                    status
                        .lines()
                        .find_map(|line| line.strip_prefix("NSpid:"))
                        .and_then(|pids| pids.split_whitespace().last())
                        == Some(pid_in_container.to_string().as_str())
                })
            })
            .unwrap_or_else(|| {
                panic!(
                    "no process of container {} is PID {pid_in_container} inside it (host PIDs {pids:?})",
                    self.name
                )
            })
    }

    /// Starts `argv` in the container with `podman exec -i`: the returned
    /// workload's stdin and stdout are the process's own. Its `pid()` is
    /// podman's; find the process's with [`Container::host_pid`].
    pub fn exec(&self, argv: &[&str]) -> Running {
        let mut args: Vec<&str> = PODMAN_GLOBAL.to_vec();
        args.extend(["exec", "--interactive", &self.name]);
        args.extend_from_slice(argv);
        Running::start("podman", &args, &[])
    }

    /// The container's memory cgroup directory (v1 `/sys/fs/cgroup/memory/…`
    /// or the v2 one), as it was when the container started.
    pub fn cgroup_memory_dir(&self) -> &Path {
        &self.memory_dir
    }

    /// The memory cgroup's `memory.stat`, by key, as the kernel writes it
    /// (bytes, or counts for event counters).
    pub fn memory_stat(&self) -> HashMap<String, u64> {
        let path = self.memory_dir.join("memory.stat");
        fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
            .lines()
            .filter_map(|line| {
                let (key, value) = line.split_once(' ')?;
                Some((key.to_owned(), value.parse().ok()?))
            })
            .collect()
    }

    /// Everything the container's processes wrote to stdout and stderr.
    pub fn logs(&self) -> String {
        let output = podman_command(&["logs", &self.name])
            .output()
            .expect("run podman logs");
        assert!(
            output.status.success(),
            "podman logs {} failed: {}",
            self.name,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr)
    }

    /// Waits for a line of the logs containing `text` and returns it; panics
    /// with the logs after `timeout`.
    pub fn wait_for_log(&self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.logs();
            if let Some(line) = logs.lines().find(|line| line.contains(text)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "container {} logged no {text:?} within {timeout:?}; its logs:\n{logs}",
                self.name
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the container's first process to exit and returns its
    /// exit code (128 + the signal for a signal: 137 for SIGKILL); panics
    /// with the logs after `timeout`.
    pub fn wait_exit(&self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.inspect("{{.State.Status}} {{.State.ExitCode}}");
            if let Some(code) = state.strip_prefix("exited ") {
                return code.parse().expect("podman's exit code is a number");
            }
            assert!(
                Instant::now() < deadline,
                "container {} still {state} after {timeout:?}; its logs:\n{}",
                self.name,
                self.logs()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the container's first process still runs.
    pub fn is_running(&self) -> bool {
        self.inspect("{{.State.Running}}") == "true"
    }

    /// The host PIDs of the container's processes the OOM killer killed, as
    /// the kernel logged them: its `oom-kill:` lines name the victim's
    /// memory cgroup, and the log outlives the container. podman's own
    /// `.State.OOMKilled` is not asked: on a host whose memory controller is
    /// on cgroup v1, conmon 2.1 records no OOM kill and it stays false.
    pub fn oom_killed_pids(&self) -> Vec<u32> {
        let victim = format!("task_memcg={},", self.cgroup_path);
        kernel_log()
            .iter()
            .filter_map(|record| record.split_once("oom-kill:")?.1.split_once(&victim))
            .filter_map(|(_, rest)| {
                let pid = rest
                    .split(',')
                    .find_map(|field| field.strip_prefix("pid="))?;
                pid.parse().ok()
            })
            .collect()
    }

    /// Whether the OOM killer killed any process of the container.
    pub fn oom_killed(&self) -> bool {
        !self.oom_killed_pids().is_empty()
    }

    fn inspect(&self, format: &str) -> String {
        podman(&["container", "inspect", "--format", format, &self.name])
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman_command(&["rm", "--force", "--time", "0", &self.name]).output();
    }
}

/// The memory cgroup of process `pid`, as its path below the controller's
/// root and as a directory: the v1 memory controller's where it is mounted
/// there, else the v2 one.
fn memory_cgroup_of(pid: u32) -> (String, PathBuf) {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_else(|error| {
        panic!("reading the cgroups of {pid} (did the container exit at once?): {error}")
    });
    let entries: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(':')?;
            rest.split_once(':')
        })
        .collect();
    let v1 = entries
        .iter()
        .find(|(controllers, _)| controllers.split(',').any(|c| c == "memory"));
    let (root, path) = match v1 {
        Some((_, path)) => ("/sys/fs/cgroup/memory", *path),
        None => {
            let (_, path) = entries
                .iter()
                .find(|(controllers, _)| controllers.is_empty())
                .unwrap_or_else(|| panic!("process {pid} is in no memory cgroup: {text}"));
            ("/sys/fs/cgroup", *path)
        }
    };
    let dir = Path::new(root).join(path.trim_start_matches('/'));
    assert!(
        dir.join("memory.stat").is_file(),
        "{} has no memory.stat",
        dir.display()
    );
    (path.to_owned(), dir)
}

/// The kernel log's records still in its ring buffer, from /dev/kmsg.
fn kernel_log() -> Vec<String> {
    let mut kmsg = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .expect("open /dev/kmsg (needs root)");
    let mut records = Vec::new();
    // Each read returns one record; EPIPE says the oldest were overwritten
    // while reading, EAGAIN that there are no more.
    let mut record = vec![0; 16 << 10];
    loop {
        match kmsg.read(&mut record) {
            Ok(0) => break,
            Ok(length) => records.push(String::from_utf8_lossy(&record[..length]).into_owned()),
            Err(error) if error.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) => panic!("reading /dev/kmsg: {error}"),
        }
    }
    records
}
