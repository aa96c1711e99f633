//! memtrace under load and in company: a full ring buffer counted and
//! corrected, two instances on one process, forks followed or not, outputs
//! and commands under sudo, and the environment kept private.

use std::{os::unix::fs::MetadataExt, time::Duration};

use memtrace_tests::{
    kernel::within,
    memtrace::{bytes_at, last_running, number, run, verdict, words, Argv, Line, Tracing},
    running::Running,
    workloads::ensure_built,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn a_full_ring_buffer_is_counted_shown_and_corrected_from_proc() {
    let workloads = ensure_built().expect("workloads build");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.jsonl");
    // One 8 KiB ring buffer cannot hold a 256 MiB fault storm while
    // memtrace is stopped and drains nothing (running, it may keep up).
    let mut tracing = Tracing::start(
        &Argv::new()
            .words("--ring-size 8K -i 0.3 --json")
            .arg(json.to_str().unwrap())
            .words("--")
            .arg(workloads.memops.to_str().unwrap())
            .words("map A 256M ; wait ; touch A 0 256M ; hold 1.2"),
    );
    tracing.wait_for_stdout("op 0 map");
    tracing.signal(libc::SIGSTOP);
    tracing.send_line("go");
    tracing.wait_for_stdout("op 2 touch");
    tracing.signal(libc::SIGCONT);
    let finished = tracing.finish(MINUTE);
    finished.assert_code(0);
    let text = std::fs::read_to_string(&json).unwrap();
    let snapshots = memtrace_tests::memtrace::snapshots_in(text.lines());
    let snapshot = last_running(&snapshots);
    assert!(number(&snapshot, "/records/lost/faults") > 1000);
    // The total is every kind's losses added up (the storm's faults most
    // of all; a few lifecycle or syscall records may go with them).
    let kinds = snapshot["records"]["lost"]
        .as_object()
        .expect("lost by kind");
    let by_kind: u64 = kinds
        .values()
        .map(|lost| lost.as_u64().expect("a count"))
        .sum();
    assert_eq!(
        number(&snapshot, "/records/lost_total"),
        by_kind,
        "{kinds:?}"
    );
    assert_eq!(snapshot["approximate"], true);
    // Re-reading /proc puts the totals right, and the pages no event
    // explains are said to be unexplained.
    let rss = number(&snapshot, "/kernel/rss_bytes");
    assert!(within(number(&snapshot, "/model/rss_bytes"), rss, 1.0));
    // Every lost fault left at least its page resident with no event (a
    // whole huge page where the kernel maps those).
    let lost_pages = number(&snapshot, "/records/lost/faults") * 4096;
    let unexplained = number(&snapshot, "/unexplained_bytes");
    assert!(
        unexplained >= lost_pages,
        "unexplained {unexplained} for {lost_pages} lost; model {}",
        snapshot["model"]
    );
    let shown = finished.stdout().join("\n");
    assert!(shown.contains("APPROXIMATE (records lost)"), "{shown}");
    let text = verdict(&finished);
    assert!(
        text.contains("records were lost (ring buffer full)"),
        "{text}"
    );
    // After the workload exited, the final report still holds the model
    // against the kernel's last reading, and still says what is
    // unexplained.
    let last = snapshots.last().expect("a final snapshot");
    assert_eq!(
        (&last["type"], &last["state"]),
        (&"final".into(), &"exited".into())
    );
    assert_eq!(
        last["kernel"]["reading"], "last_before_exit",
        "{}",
        last["kernel"]
    );
    assert_eq!(
        number(last, "/kernel/rss_bytes"),
        number(&snapshot, "/kernel/rss_bytes")
    );
    assert!(
        text.contains("is unexplained: resident with no event memtrace saw"),
        "{text}"
    );
}

#[test]
fn two_memtraces_on_one_process_both_count_exactly() {
    let workloads = ensure_built().expect("workloads build");
    let mut workload = Running::start(
        &workloads.memops,
        &words("wait ; map A 32M ; touch A 0 32M ; free A 0 16M ; hold 1.5"),
        &[],
    );
    let pid = workload.pid().to_string();
    let args = ["-p", pid.as_str(), "--json", "-", "-q", "-i", "0.3"];
    let mut first = Tracing::start(&args);
    let mut second = Tracing::start(&args);
    first.wait_attached();
    second.wait_attached();
    workload.send_line("go");
    workload.wait_for("op 4 hold", MINUTE);
    for tracing in [first, second] {
        let finished = tracing.finish(MINUTE);
        finished.assert_code(0);
        let last = finished.snapshots().last().cloned().unwrap();
        assert_eq!(number(&last, "/madvise/MADV_FREE/resident_bytes"), 16 * MIB);
        assert_eq!(
            bytes_at(&last, "top_faults", "op_touch", "paged_in_bytes"),
            32 * MIB
        );
    }
}

#[test]
fn forked_children_are_followed_only_when_asked() {
    let workloads = ensure_built().expect("workloads build");
    let memops = workloads.memops.to_str().unwrap();
    let script = "map A 32M ; touch A 0 32M ; fork_touch A 0 16M ; hold 0.6";
    let args = Argv::new()
        .words("--json - -q -i 0.3 --")
        .arg(memops)
        .words(script);
    let alone = run(&args, MINUTE);
    alone.assert_code(0);
    let parent_pid = alone.snapshots()[0]["pid"].as_u64().unwrap();
    assert!(
        alone.snapshots().iter().all(|s| s["pid"] == parent_pid),
        "children not followed"
    );
    // The child's copy-on-write faults are not the parent's.
    let parent_faults = number(alone.snapshots().last().unwrap(), "/faults/protection");
    assert!(
        parent_faults < 1000,
        "parent protection faults {parent_faults}"
    );

    let args = Argv::new()
        .words("--follow-forks --json - -q -i 0.3 --")
        .arg(memops)
        .words(script);
    let followed = run(&args, MINUTE);
    followed.assert_code(0);
    let parent_pid = followed.snapshots()[0]["pid"].as_u64().unwrap();
    let child: Vec<Value> = followed
        .snapshots()
        .into_iter()
        .filter(|s| s["pid"] != parent_pid)
        .collect();
    let last = child.last().expect("the child's snapshots");
    assert_eq!(last["type"], "final");
    assert_eq!(last["state"], "exited");
    // The child started with the parent's 32 MiB (shared, counted in its
    // RSS) and wrote 16 MiB of it: copy-on-write faults, no new RSS.
    assert!(number(last, "/faults/protection") >= 4096);
    assert!(within(number(last, "/model/rss_bytes"), 32 * MIB, 3.0));
    assert!(followed
        .stderr()
        .iter()
        .any(|line| line.contains("following pid")));
}

#[test]
fn under_sudo_outputs_and_the_command_belong_to_the_user() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let json = dir.path().join("out.jsonl");
    let finished = Tracing::start_with_env(
        &Argv::new()
            .words("--json")
            .arg(json.to_str().unwrap())
            .words("-q -- sh -c")
            .arg("id -u; id -g; sleep 0.5"),
        &[("SUDO_UID", "65534"), ("SUDO_GID", "65534")],
    )
    .finish(MINUTE);
    finished.assert_code(0);
    let ids: Vec<&str> = finished.stdout().into_iter().take(2).collect();
    assert_eq!(
        ids,
        ["65534", "65534"],
        "the command ran as the invoking user"
    );
    let meta = std::fs::metadata(&json).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (65534, 65534),
        "the output is the user's"
    );
}

#[test]
fn only_the_go_settings_are_read_from_the_environment() {
    let workloads = ensure_built().expect("workloads build");
    // The command inherits memtrace's environment, secret included.
    let finished = Tracing::start_with_env(
        &Argv::new()
            .words("--json - -q -i 0.3 --")
            .arg(workloads.goheap.to_str().unwrap())
            .words("-alloc-mib 16 -hold 1s"),
        &[
            ("API_TOKEN", "hunter2-secret"),
            ("GOGC", "150"),
            ("GODEBUG", "madvdontneed=1"),
        ],
    )
    .finish(MINUTE);
    finished.assert_code(0);
    let last = finished.snapshots().last().cloned().unwrap();
    assert_eq!(last["runtime"]["go_settings"]["GOGC"], "150");
    assert_eq!(last["runtime"]["go_settings"]["GODEBUG"], "madvdontneed=1");
    let leaked = finished.lines.iter().any(|line| match line {
        Line::Stdout(text) | Line::Stderr(text) => text.contains("hunter2"),
    });
    assert!(!leaked, "a secret leaked into memtrace's output");
}

#[test]
fn an_exec_replaces_the_model_and_says_so() {
    let workloads = ensure_built().expect("workloads build");
    let memops = workloads.memops.to_str().unwrap();
    let finished = run(
        &Argv::new()
            .words("--json - -q -i 0.3 --")
            .arg(memops)
            .words("map A 24M ; touch A 0 24M ; hold 0.5 ; exec")
            .arg(memops)
            .words("map B 8M ; touch B 0 8M ; hold 0.8"),
        MINUTE,
    );
    finished.assert_code(0);
    assert!(
        finished
            .stderr()
            .iter()
            .any(|line| line.contains("called execve")),
        "{}",
        finished.transcript()
    );
    let last = last_running(&finished.snapshots());
    // The 24 MiB went with the old address space; only the new 8 MiB count.
    assert!(number(&last, "/released_bytes/execve") >= 24 * MIB);
    assert!(within(
        number(&last, "/model/rss_bytes"),
        number(&last, "/kernel/rss_bytes"),
        1.0
    ));
    assert!(number(&last, "/model/rss_bytes") < 16 * MIB);
}
