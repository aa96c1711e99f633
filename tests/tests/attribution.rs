//! Where resident bytes came from and where released bytes went, held
//! against the kernel (smaps_rollup), the workload's own account, and the
//! Go runtime's: MADV_FREE and MADV_DONTNEED, reclaim under memory pressure,
//! and the verdict's facts.

use std::time::Duration;

use memtrace_tests::{
    kernel::{folio_batches_bytes, within, MemoryCgroup},
    memtrace::{
        assert_absent, last_running, number, size_before, verdict, Argv, Finished, Tracing,
    },
    workloads::ensure_built,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const LAZILY_FREED: &str = " is memory the program already gave back with MADV_FREE";

/// The reconciliation goal: unexplained within 1% of RSS, LazyFree within
/// 1% of the kernel's, or above it by no more than the kernel's per-CPU
/// batches hold.
fn assert_reconciled(snapshot: &Value) {
    let rss = number(snapshot, "/kernel/rss_bytes");
    let lazyfree = number(snapshot, "/kernel/lazyfree_bytes");
    let unexplained = number(snapshot, "/unexplained_bytes");
    assert!(
        unexplained * 100 <= rss,
        "unexplained {unexplained} of {rss}"
    );
    let model_lazyfree = number(snapshot, "/model/lazyfree_bytes");
    let in_batches =
        model_lazyfree >= lazyfree && model_lazyfree - lazyfree <= folio_batches_bytes();
    assert!(
        within(model_lazyfree, lazyfree, 1.0) || in_batches,
        "model LazyFree {model_lazyfree} vs kernel {lazyfree}"
    );
    assert!(within(number(snapshot, "/model/rss_bytes"), rss, 1.0));
}

#[test]
fn the_verdict_states_the_madv_free_facts() {
    let workloads = ensure_built().expect("workloads build");
    let memops = workloads.memops.to_str().unwrap();
    let mut tracing = Tracing::start(
        &Argv::new()
            .words("--json - -q -i 0.3 --")
            .arg(memops)
            .words("map A 96M ; touch A 0 96M ; free A 0 64M ; dontneed A 64M 16M ; wait"),
    );
    tracing.wait_until_settled(|snapshot| snapshot.pointer("/madvise/MADV_DONTNEED").is_some());
    let finished = tracing.finish(Duration::from_secs(60));
    finished.assert_code(0);
    let snapshot = last_running(&finished.snapshots());
    assert_reconciled(&snapshot);
    let text = verdict(&finished);
    let lazy = size_before(&text, LAZILY_FREED).unwrap_or_else(|| panic!("{text}"));
    assert!(within(lazy, 64 * MIB, 1.0), "{text}");
    assert!(
        text.contains("Returning memory with MADV_DONTNEED instead of MADV_FREE"),
        "{text}"
    );
    assert!(text.contains("16.0 MiB with MADV_DONTNEED"), "{text}");
    assert!(text.contains("64.0 MiB with MADV_FREE"), "{text}");
}

#[test]
fn reclaim_of_lazily_freed_memory_under_pressure_is_seen() {
    let workloads = ensure_built().expect("workloads build");
    let cgroup = MemoryCgroup::new("memtrace-reclaim");
    let script = format!(
        "{} {} map A 128M \\; touch A 0 128M \\; free A 0 96M \\; wait \\; hold 1.5",
        cgroup.enter(),
        workloads.memops.display()
    );
    let mut tracing =
        Tracing::start(&["--json", "-", "-q", "-i", "0.3", "--", "sh", "-c", &script]);
    tracing.wait_for_stdout("op 2 free");
    tracing.wait_until_settled(|snapshot| {
        bytes_at(snapshot, "/madvise/MADV_FREE/bytes") == Some(96 * MIB)
    });
    // Under a 48 MiB limit the kernel must take back most of the 96 MiB of
    // lazily freed pages, with no call from the program.
    cgroup.limit(48 * MIB);
    tracing.wait_until_settled(|snapshot| {
        bytes_at(snapshot, "/released_bytes/reclaim of MADV_FREE pages")
            .is_some_and(|reclaimed| reclaimed >= 48 * MIB)
    });
    tracing.send_line("go");
    let finished: Finished = tracing.finish(Duration::from_secs(60));
    finished.assert_code(0);
    let snapshot = last_running(&finished.snapshots());
    assert_reconciled(&snapshot);
    let reclaimed = number(&snapshot, "/released_bytes/reclaim of MADV_FREE pages");
    let kernel_lazyfree = number(&snapshot, "/kernel/lazyfree_bytes");
    assert!(reclaimed >= 48 * MIB, "reclaimed only {reclaimed}");
    assert!(
        within(reclaimed + kernel_lazyfree, 96 * MIB, 1.0),
        "reclaimed {reclaimed} + still lazily freed {kernel_lazyfree} should be the 96 MiB freed"
    );
    let text = verdict(&finished);
    let taken = size_before(
        &text,
        " of the MADV_FREE memory was taken back by the kernel",
    )
    .unwrap_or_else(|| panic!("{text}"));
    assert!(within(taken, reclaimed, 1.0), "{text}");
}

/// The number at `pointer` in `snapshot`, if there is one.
fn bytes_at(snapshot: &Value, pointer: &str) -> Option<u64> {
    snapshot.pointer(pointer).and_then(Value::as_u64)
}

/// Traces goheap, which allocates 128 MiB and gives it back with `advice`
/// (as `GODEBUG=madvdontneed` says), until memtrace has read /proc after it
/// saw the whole release; returns the trace and the Go runtime's own
/// account of the bytes it gave back: `HeapReleased` after the release
/// less before it (the runtime counts heap it never used as released too).
fn trace_goheap(madvdontneed: u8, advice: &str) -> (Finished, u64) {
    let workloads = ensure_built().expect("workloads build");
    let godebug = format!("GODEBUG=madvdontneed={madvdontneed}");
    let mut tracing = Tracing::start(
        &Argv::new()
            .words("--json - -q -i 0.3 -- env")
            .arg(&godebug)
            .arg(workloads.goheap.to_str().unwrap())
            .words("-alloc-mib 128 -wait-end"),
    );
    let mut heap_released = |event: &str| {
        let line = tracing.wait_for_stdout(&format!("\"event\":\"{event}\""));
        let stats: Value = serde_json::from_str(&line).expect("a goheap event");
        stats["HeapReleased"].as_u64().expect("HeapReleased")
    };
    let before = heap_released("allocated");
    let released = heap_released("released") - before;
    let advised = format!("/madvise/{advice}/bytes");
    tracing.wait_until_settled(|snapshot| {
        bytes_at(snapshot, &advised).is_some_and(|bytes| within(bytes, released, 1.0))
    });
    tracing.send_line("go");
    let finished = tracing.finish(Duration::from_secs(120));
    finished.assert_code(0);
    (finished, released)
}

#[test]
fn go_with_madv_free_is_named_with_the_setting_to_change() {
    let (finished, released) = trace_goheap(0, "MADV_FREE");
    let snapshot = last_running(&finished.snapshots());
    assert_reconciled(&snapshot);
    let freed = number(&snapshot, "/madvise/MADV_FREE/bytes");
    assert_absent(&snapshot, "/madvise/MADV_DONTNEED");
    assert!(
        within(freed, released, 1.0),
        "MADV_FREE {freed}, HeapReleased {released}"
    );
    let kernel_lazyfree = number(&snapshot, "/kernel/lazyfree_bytes");
    assert!(
        within(
            number(&snapshot, "/madvise/MADV_FREE/resident_bytes"),
            kernel_lazyfree,
            1.0
        ),
        "lazily freed by MADV_FREE vs kernel LazyFree {kernel_lazyfree}"
    );
    let text = verdict(&finished);
    let lazy = size_before(&text, LAZILY_FREED).unwrap_or_else(|| panic!("{text}"));
    assert!(within(lazy, kernel_lazyfree, 1.0), "{text}");
    assert!(text.contains("GODEBUG=madvdontneed=1"), "{text}");
}

#[test]
fn go_with_madv_dontneed_follows_the_heap() {
    let (finished, released) = trace_goheap(1, "MADV_DONTNEED");
    let snapshot = last_running(&finished.snapshots());
    assert_reconciled(&snapshot);
    let dontneed = number(&snapshot, "/madvise/MADV_DONTNEED/bytes");
    assert_absent(&snapshot, "/madvise/MADV_FREE");
    assert!(
        within(dontneed, released, 1.0),
        "MADV_DONTNEED {dontneed}, HeapReleased {released}"
    );
    assert!(number(&snapshot, "/kernel/lazyfree_bytes") < MIB);
    let text = verdict(&finished);
    assert!(!text.contains("GODEBUG"), "{text}");
    assert!(
        size_before(&text, " with MADV_DONTNEED").is_some_and(|b| within(b, dontneed, 1.0)),
        "{text}"
    );
}
