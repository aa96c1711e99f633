//! `memtrace -p PID`, `memtrace -- CMD` and `memtrace demo` end to end:
//! the real eBPF programs against workloads doing known operations, with
//! the numbers held against what the workload did and what /proc says.

use std::{collections::HashMap, time::Duration};

use memtrace_tests::{
    kernel::{smaps_rollup, within},
    memtrace::{bytes_at, last_running, number, rows_with, words, Argv, Tracing},
    running::Running,
    workloads::ensure_built,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// map 64 MiB, touch it all, MADV_FREE 32, MADV_DONTNEED 16, munmap 16.
const SCRIPT: &str =
    "map A 64M ; touch A 0 64M ; free A 0 32M ; dontneed A 32M 16M ; unmap A 48M 16M";

fn assert_known_operations(snapshot: &Value) {
    assert_eq!(number(snapshot, "/madvise/MADV_FREE/calls"), 1);
    assert_eq!(number(snapshot, "/madvise/MADV_FREE/bytes"), 32 * MIB);
    assert_eq!(
        number(snapshot, "/madvise/MADV_FREE/resident_bytes"),
        32 * MIB
    );
    assert_eq!(number(snapshot, "/madvise/MADV_DONTNEED/bytes"), 16 * MIB);
    assert_eq!(
        number(snapshot, "/madvise/MADV_DONTNEED/resident_bytes"),
        16 * MIB
    );
    assert_eq!(
        bytes_at(snapshot, "top_calls", "op_unmap", "resident_bytes"),
        16 * MIB,
        "munmap of 16 MiB by op_unmap"
    );
}

/// The model against the kernel as the test itself read it.
fn assert_matches_kernel(snapshot: &Value, kernel: &HashMap<String, u64>) {
    let (rss, lazyfree) = (kernel["Rss"], kernel["LazyFree"]);
    let model_rss = number(snapshot, "/model/rss_bytes");
    let model_lazyfree = number(snapshot, "/model/lazyfree_bytes");
    assert!(
        within(model_rss, rss, 1.0),
        "model RSS {model_rss}, kernel {rss}"
    );
    assert!(
        within(model_lazyfree, lazyfree, 1.0),
        "model LazyFree {model_lazyfree}, kernel {lazyfree}"
    );
    let unexplained = number(snapshot, "/unexplained_bytes");
    assert!(
        unexplained * 100 <= rss,
        "unexplained {unexplained} of RSS {rss}"
    );
    assert_eq!(number(snapshot, "/records/lost_total"), 0);
}

#[test]
fn traces_a_command_from_its_first_instruction_and_counts_exactly() {
    let workloads = ensure_built().expect("workloads build");
    let memops = workloads.memops.to_str().unwrap().to_owned();
    let script = format!("{SCRIPT} ; wait");
    let mut tracing = Tracing::start(
        &Argv::new()
            .words("--json - -q -i 0.2 --")
            .arg(&memops)
            .words(&script),
    );
    let pid: u32 = tracing.wait_for_stdout("pid ")[4..].parse().unwrap();
    // `wait` prints its line once it is over: the unmap's line says the
    // workload is now waiting.
    tracing.wait_for_stdout("op 4 unmap");
    // The workload now waits on stdin: read the kernel's view, and let
    // memtrace take a snapshot of the same state.
    let kernel = smaps_rollup(pid);
    tracing.wait_until_settled(|snapshot| !rows_with(snapshot, "top_calls", "op_unmap").is_empty());
    tracing.send_line("go");
    let finished = tracing.finish(Duration::from_secs(60));
    finished.assert_code(0);
    let snapshots = finished.snapshots();
    let snapshot = &last_running(&snapshots);
    assert_known_operations(snapshot);
    assert_matches_kernel(snapshot, &kernel);

    // Every touched page was faulted in by op_touch, exactly once, and
    // what it still holds is the 32 MiB lazily freed.
    assert_eq!(
        bytes_at(snapshot, "top_faults", "op_touch", "paged_in_bytes"),
        64 * MIB
    );
    assert_eq!(bytes_at(snapshot, "top_faults", "op_touch", "count"), 16384);
    assert_eq!(
        bytes_at(snapshot, "top_stacks", "op_touch", "lazyfree_bytes"),
        32 * MIB
    );
    assert_eq!(
        bytes_at(snapshot, "top_stacks", "op_touch", "in_use_bytes"),
        0
    );
    let last = snapshots.last().unwrap();
    assert_eq!(last["type"], "final");
    assert_eq!(last["state"], "exited");
}

#[test]
fn attaches_to_a_running_process_and_credits_what_was_there_before() {
    let workloads = ensure_built().expect("workloads build");
    let mut workload = Running::start(
        &workloads.memops,
        &words(
            "map A 64M ; touch A 0 64M ; wait ; free A 0 32M ; dontneed A 32M 16M ; unmap A 48M 16M ; wait",
        ),
        &[],
    );
    let minute = Duration::from_secs(60);
    workload.wait_for("op 1 touch", minute);
    let pid = workload.pid().to_string();

    let mut tracing = Tracing::start(&["-p", &pid, "--json", "-", "-q", "-i", "0.2"]);
    tracing.wait_attached();
    workload.send_line("go");
    workload.wait_for("op 5 unmap", minute);
    let kernel = smaps_rollup(workload.pid());
    std::thread::sleep(Duration::from_millis(700));
    tracing.signal(libc::SIGINT);
    let finished = tracing.finish(minute);
    finished.assert_code(0);

    let snapshots = finished.snapshots();
    let snapshot = snapshots.last().unwrap();
    assert_eq!(snapshot["type"], "final");
    assert_eq!(snapshot["state"], "running");
    assert_known_operations(snapshot);
    assert_matches_kernel(snapshot, &kernel);
    // The 64 MiB were touched before memtrace attached: no fault for them,
    // and what is left of them is credited to "resident before attach".
    let faulted = rows_with(snapshot, "top_faults", "op_touch");
    assert!(faulted.is_empty(), "faults by op_touch: {faulted:?}");
    let before = number(snapshot, "/model/by_cause/before_attach");
    assert!(
        before >= 32 * MIB && before <= kernel["Rss"],
        "before attach {before}"
    );
}

#[test]
fn the_demo_reports_what_it_did() {
    let finished =
        memtrace_tests::memtrace::run(&["demo", "--json", "-", "-q"], Duration::from_secs(60));
    finished.assert_code(0);
    let snapshots = finished.snapshots();
    let last = snapshots.last().expect("a final snapshot");
    assert_eq!(number(last, "/madvise/MADV_FREE/bytes"), 24 * MIB);
    assert_eq!(number(last, "/madvise/MADV_FREE/resident_bytes"), 24 * MIB);
    assert_eq!(number(last, "/madvise/MADV_DONTNEED/bytes"), 16 * MIB);
    assert_eq!(
        number(last, "/madvise/MADV_DONTNEED/resident_bytes"),
        16 * MIB
    );
    let verdict = finished.stderr().join("\n");
    assert!(verdict.contains("24.0 MiB with MADV_FREE"), "{verdict}");
}
