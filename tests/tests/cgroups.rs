//! `--cgroup PATH` (issue 17) on either cgroup version: this host's memory
//! controller is on v1 (with an empty v2 hierarchy beside it, as container
//! runtimes use it); `cargo xtask test-kernel` runs the same test on a
//! kernel with cgroup v2 alone. No container runtime: the test makes the
//! cgroup and moves its workloads in, as a runtime would.

use std::{
    process::{Child, Command},
    time::{Duration, Instant},
};

use memtrace_tests::{
    kernel::MemoryCgroup,
    memtrace::{Argv, Tracing},
    workloads::ensure_built,
};
use serde_json::Value;

const MINUTE: Duration = Duration::from_secs(60);

/// `memops SCRIPT`, started by a shell that first moves into `cgroup`;
/// returns once it is there.
fn start_in(cgroup: &MemoryCgroup, memops: &str, script: &str) -> Child {
    // memops takes `;` as a word of its own, which the shell must not see.
    let script = script.replace(';', "\\;");
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("{} {memops} {script}", cgroup.enter()))
        .spawn()
        .expect("start a workload in the cgroup");
    let procs = cgroup.path().join("cgroup.procs");
    let deadline = Instant::now() + MINUTE;
    while !std::fs::read_to_string(&procs)
        .unwrap_or_default()
        .lines()
        .any(|pid| pid == child.id().to_string())
    {
        assert!(
            Instant::now() < deadline,
            "the workload never entered the cgroup"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

/// A process there before memtrace attaches and one moved in afterwards,
/// from outside, are both traced, each exactly; when the cgroup is removed
/// memtrace stops, and says the figures are the last read.
#[test]
fn a_cgroup_by_path_is_traced_until_it_is_removed() {
    let workloads = ensure_built().expect("workloads build");
    let memops = workloads.memops.to_str().unwrap();
    let cgroup = MemoryCgroup::new("memtrace-by-path");
    let mut before = start_in(&cgroup, memops, "map A 16M ; touch A 0 16M ; hold 4");
    let mut tracing = Tracing::start(
        &Argv::new()
            .words("--cgroup")
            .arg(cgroup.path().to_str().unwrap())
            .words("--json - -q -i 0.3"),
    );
    tracing.wait_attached();
    let mut after = start_in(&cgroup, memops, "map B 8M ; touch B 0 8M ; hold 1.5");
    assert!(after.wait().unwrap().success());
    assert!(before.wait().unwrap().success());
    // Both gone and reaped: the cgroup can go, as a container's does.
    cgroup.remove();
    let finished = tracing.finish(MINUTE);
    finished.assert_code(0);

    let snapshots = finished.snapshots();
    let processes: Vec<&Value> = snapshots
        .iter()
        .filter(|snapshot| snapshot["scope"] == "process")
        .collect();
    let mut pids: Vec<u64> = processes
        .iter()
        .filter(|snapshot| snapshot["command"] == "memops")
        .filter_map(|snapshot| snapshot["pid"].as_u64())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(
        pids,
        [u64::from(before.id()), u64::from(after.id())],
        "{}",
        finished.transcript()
    );
    // The one that came later was found by the kernel side.
    assert!(
        finished.stderr().iter().any(|line| *line
            == format!("memtrace: found pid {} (sh)", after.id())
            || *line == format!("memtrace: found pid {} (memops)", after.id())),
        "{}",
        finished.transcript()
    );
    // Its faults, all seen: 8 MiB under its own stacks.
    let last_of_after = processes
        .iter()
        .rfind(|snapshot| snapshot["pid"] == after.id())
        .expect("the later process's snapshots");
    let paged_in = last_of_after["faults"]["bytes"]
        .as_u64()
        .expect("faults.bytes");
    assert!(paged_in >= 8 << 20, "{}", last_of_after["faults"]);
    // Every reading against the kernel's, within 1%.
    for snapshot in &processes {
        if snapshot["state"] != "running" || snapshot["kernel"]["reading"] != "current" {
            continue;
        }
        let kernel = snapshot["kernel"]["rss_bytes"]
            .as_u64()
            .expect("kernel rss");
        let model = snapshot["model"]["rss_bytes"].as_u64().expect("model rss");
        assert!(
            model.abs_diff(kernel) * 100 <= kernel,
            "pid {}: model {model}, kernel {kernel}",
            snapshot["pid"]
        );
    }
    let last = snapshots.last().expect("a final snapshot");
    assert_eq!(last["scope"], "cgroup", "{last}");
    assert_eq!(last["type"], "final", "{last}");
    assert_eq!(last["whole"]["removed"], true, "{last}");
    assert_eq!(last["whole"]["container"], Value::Null, "{last}");
    assert_eq!(last["whole"]["ended"], 2, "{}", last["whole"]);
}
