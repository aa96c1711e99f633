//! `--follow-forks` with a process that runs many threads: threads are not
//! processes, so they never take the places of the children it forks.

use std::time::Duration;

use memtrace_tests::{
    memtrace::{number, run},
    workloads::ensure_built,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;

#[test]
fn a_child_forked_after_a_thousand_threads_is_followed() {
    let workloads = ensure_built().expect("workloads build");
    // More threads than memtrace keeps traced processes (1024).
    let finished = run(
        &[
            "--follow-forks",
            "--json",
            "-",
            "-q",
            "-i",
            "0.3",
            "--",
            workloads.many_threads.to_str().unwrap(),
            "--threads",
            "1100",
            "--mib",
            "32",
        ],
        Duration::from_secs(120),
    );
    finished.assert_code(0);
    let said: Value = finished
        .stdout()
        .into_iter()
        .find(|line| line.starts_with("{\"child\""))
        .and_then(|line| serde_json::from_str(line).ok())
        .expect("the child's line");
    let child = said["child"].as_u64().unwrap();
    let snapshots: Vec<Value> = finished
        .snapshots()
        .into_iter()
        .filter(|snapshot| snapshot["pid"].as_u64() == Some(child))
        .collect();
    let last = snapshots
        .last()
        .unwrap_or_else(|| panic!("child {child} not followed:\n{}", finished.transcript()));
    // Every page it wrote, faulted in under its own pid.
    assert!(
        number(last, "/faults/bytes") >= 32 * MIB,
        "{}",
        finished.transcript()
    );
    assert_eq!(number(last, "/records/lost_total"), 0);
}
