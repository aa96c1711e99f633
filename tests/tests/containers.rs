//! Containers (issue 17), with a real runtime: podman runs an image built
//! from the test workloads (`memtrace_tests::container`), and memtrace or
//! the test reads the processes and their memory cgroup from the host.
//!
//! - A static Go program OOM-killed in a container, traced by its host PID,
//!   is named by its own functions, with whole stacks, after it is gone.
//! - A kernel fact the cgroup explanation rests on: MADV_FREE moves pages
//!   to the inactive file list, out of Kubernetes' working set.
//! - The workloads the whole-container tests use run in the container:
//!   `mix.sh` starts and stops a C and a Go workload; `pressure` has its
//!   lazily freed pages reclaimed, then is OOM-killed.

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use memtrace_tests::{
    container::{Container, Image, LEAKER, MEMOPS, MIX, PRESSURE},
    kernel::{cpus, folio_batches_bytes, smaps_rollup},
    memtrace::{Argv, Tracing},
    stacks::frames,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const MINUTE: Duration = Duration::from_secs(60);
/// A base page: the slack below is counted in pages.
const PAGE: u64 = 4096;

/// Exit code of a process killed by SIGKILL, as podman reports it.
const KILLED: i32 = 128 + libc::SIGKILL;

/// Whether memtrace left `frame` unnamed: `module+0xOFFSET`, or a bare
/// address.
fn unnamed(frame: &str) -> bool {
    frame.contains("+0x") || frame.starts_with("0x")
}

/// The "fix first" case: a static Go program in a container with a
/// 200 MiB limit grows until the OOM killer ends it, with memtrace attached
/// by its host PID. Its binary exists only in the container's image, which
/// is out of reach (/proc/PID/root) once the process is gone. memtrace is
/// stopped from the moment the program starts growing until the container
/// has exited, so it reads every event, and names every stack, after that:
/// the order of things, without its race. The frames must still be
/// the program's own functions, and the stack, which reaches
/// `runtime.goexit`, must be called whole (the issue saw `leaker+0x…`
/// frames and "built without frame pointers").
#[test]
fn a_static_go_program_oom_killed_in_a_container_is_named_by_its_own_functions() {
    let container = Container::run(
        Image::get(),
        "memtrace-oom",
        200 * MIB,
        &[LEAKER, "-wait-usr1"],
    );
    container.wait_for_log("\"waiting\"", MINUTE);
    let pid = container.main_pid();
    let pid_arg = pid.to_string();
    let mut tracing = Tracing::start(&["-p", &pid_arg, "--json", "-", "-q", "-i", "0.3"]);
    tracing.wait_attached();
    // memtrace reads the events, and names their stacks, only once the
    // container is gone.
    tracing.signal(libc::SIGSTOP);
    // SAFETY: signalling the container's first process, which waits for it.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGUSR1) }, 0);
    assert_eq!(container.wait_exit(MINUTE), KILLED);
    tracing.signal(libc::SIGCONT);
    let finished = tracing.finish(2 * MINUTE);
    finished.assert_code(0);
    assert_eq!(
        container.oom_killed_pids(),
        [pid],
        "the kernel logged no OOM kill of {pid}"
    );

    let snapshots = finished.snapshots();
    let last = snapshots.last().expect("a final snapshot");
    assert_eq!(last["type"], "final", "{last}");
    assert_eq!(last["state"], "oom_killed", "{last}");
    let rows = last["top_stacks"]
        .as_array()
        .unwrap_or_else(|| panic!("no top_stacks in {last}"));
    let resident = |row: &Value| {
        ["in_use_bytes", "lazyfree_bytes"]
            .iter()
            .map(|field| {
                row[field]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no {field} in {row}"))
            })
            .sum::<u64>()
    };
    let top = rows
        .iter()
        .max_by_key(|row| resident(row))
        .expect("a stack holding resident bytes");
    let top_frames = frames(top);
    // Most of the 200 MiB the program grew to before the kill.
    assert!(resident(top) > 100 * MIB, "{top}");
    let unnamed_frames: Vec<&&str> = top_frames.iter().filter(|frame| unnamed(frame)).collect();
    assert!(
        unnamed_frames.is_empty(),
        "unnamed frames {unnamed_frames:?} in {top_frames:?}"
    );
    assert_eq!(
        top_frames,
        [
            "main.retain",
            "main.grow",
            "main.main",
            "runtime.main",
            "runtime.goexit"
        ]
    );
    assert_eq!(top["end"], "complete", "{top}");
}

/// The memory cgroup's figures the working set is made of.
#[derive(Debug, Clone, Copy)]
struct Lists {
    inactive_file: u64,
    anon: u64,
    rss: u64,
    usage: u64,
}

impl Lists {
    fn read(container: &Container) -> Self {
        let stat = container.memory_stat();
        let get = |key: &str| -> u64 {
            *stat
                .get(key)
                .unwrap_or_else(|| panic!("no {key} in memory.stat: {stat:?}"))
        };
        let usage =
            std::fs::read_to_string(container.cgroup_memory_dir().join("memory.usage_in_bytes"))
                .expect("memory.usage_in_bytes (cgroup v1)")
                .trim()
                .parse()
                .expect("a number of bytes");
        Self {
            inactive_file: get("total_inactive_file"),
            anon: get("total_inactive_anon") + get("total_active_anon"),
            rss: get("total_rss"),
            usage,
        }
    }

    /// Kubernetes' working set: usage minus inactive file.
    fn working_set(&self) -> u64 {
        self.usage.saturating_sub(self.inactive_file)
    }
}

/// `after - before`, signed.
fn change(before: u64, after: u64) -> i64 {
    after as i64 - before as i64
}

/// The kernel fact the cgroup verdict rests on, measured on this host's
/// cgroup v1 memory controller: a program faults in 64 MiB of anonymous
/// memory, then gives it back with MADV_FREE. The kernel moves the lazily
/// freed pages from the anon lists to the inactive FILE list, where they
/// stay counted in the cgroup's RSS and usage: Kubernetes' working set
/// (usage − inactive_file) drops by 64 MiB while nothing left memory.
///
/// Slack: pages reach and leave the LRU lists through per-CPU batches of at
/// most 31 folios (the freshly faulted, and the newly lazy), and the
/// memcg's per-CPU statistics are flushed to memory.stat only once 64
/// pages per CPU changed; usage_in_bytes also keeps a per-CPU stock of up
/// to 64 pages. So each figure may lag by (31 + 64) pages per CPU: 760 KiB
/// on two CPUs, far below the 64 MiB that moves.
#[test]
fn madv_free_pages_move_to_the_inactive_file_list_and_out_of_the_working_set() {
    const MOVED: u64 = 64 * MIB;
    let slack = folio_batches_bytes() + cpus() * 64 * PAGE;
    let container = Container::run(
        Image::get(),
        "memtrace-madvfree",
        512 * MIB,
        &["sleep", "600"],
    );
    // Base pages whatever the host's THP setting: a batch of 31 huge pages
    // would be larger than what moves.
    let mut memops = container.exec(
        &Argv::new()
            .arg(MEMOPS)
            .words("map A 64M ; nohugepage A 0 64M ; touch A 0 64M ; wait ; free A 0 64M ; wait"),
    );
    let pid_inside: u32 = memops
        .wait_for("pid ", MINUTE)
        .trim_start_matches("pid ")
        .parse()
        .expect("memops prints its PID");
    memops.wait_for("op 2 touch", MINUTE);
    let host_pid = container.host_pid(pid_inside);
    let before = Lists::read(&container);
    memops.send_line("go");
    memops.wait_for("op 4 free", MINUTE);
    let after = Lists::read(&container);
    let lazy_free = smaps_rollup(host_pid)["LazyFree"];
    memops.send_line("go");
    eprintln!(
        "MADV_FREE of {} MiB in container {}: before {before:?}, after {after:?}, \
         working set {} -> {} bytes, the process's LazyFree {lazy_free} bytes; slack {slack} bytes",
        MOVED / MIB,
        container.name(),
        before.working_set(),
        after.working_set(),
    );

    let moved = MOVED as i64;
    let slack = slack as i64;
    let near = |actual: i64, expected: i64| (actual - expected).abs() <= slack;
    assert!(near(lazy_free as i64, moved), "LazyFree {lazy_free}");
    let to_inactive_file = change(before.inactive_file, after.inactive_file);
    assert!(
        near(to_inactive_file, moved),
        "inactive_file grew by {to_inactive_file}"
    );
    let from_anon = change(before.anon, after.anon);
    assert!(
        near(from_anon, -moved),
        "the anon lists changed by {from_anon}"
    );
    let rss = change(before.rss, after.rss);
    assert!(
        near(rss, 0),
        "rss changed by {rss}: lazily freed pages still count in it"
    );
    let usage = change(before.usage, after.usage);
    assert!(near(usage, 0), "usage changed by {usage}");
    let working_set = change(before.working_set(), after.working_set());
    assert!(
        near(working_set, -moved),
        "the working set changed by {working_set}"
    );
}

/// `mix.sh` runs in the container: over its rounds a C workload and a Go
/// workload start and exit (new PIDs each round), each allocating what it
/// says, and the entrypoint ends well.
#[test]
fn the_mix_entrypoint_starts_and_stops_a_c_and_a_go_workload() {
    const ROUNDS: usize = 2;
    let container = Container::run(Image::get(), "memtrace-mix", 256 * MIB, &[MIX, "2"]);
    let mut seen: HashMap<String, Vec<u32>> = HashMap::new();
    let deadline = std::time::Instant::now() + MINUTE;
    while container.is_running() {
        for pid in container.host_pids() {
            // A process may exit between the listing and the read.
            if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
                let pids = seen.entry(comm.trim().to_owned()).or_default();
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mix.sh ran over a minute"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(container.wait_exit(MINUTE), 0, "{}", container.logs());
    for workload in ["memops", "goheap"] {
        let pids = seen.get(workload).map_or(0, Vec::len);
        assert_eq!(pids, ROUNDS, "{workload} processes seen: {seen:?}");
    }
    let logs = container.logs();
    let count = |text: &str| logs.lines().filter(|line| line.contains(text)).count();
    assert_eq!(count("mix: round "), ROUNDS, "{logs}");
    assert_eq!(count("mix: done"), 1, "{logs}");
    // memops touched 24 MiB (6144 pages), goheap allocated 32 MiB.
    assert_eq!(count("op 1 touch A"), ROUNDS, "{logs}");
    assert_eq!(count("ret=6144"), ROUNDS, "{logs}");
    assert_eq!(count("\"alloc_bytes\":33554432"), ROUNDS, "{logs}");
}

/// `pressure` runs into a 128 MiB limit: of its 48 MiB working set it gives
/// 32 MiB back lazily, then grows 4 MiB at a time. The kernel takes the
/// lazily freed pages back as it grows past what fits beside the whole
/// working set, and kills it only once less than a step of them is left.
#[test]
fn pressure_has_its_lazily_freed_pages_reclaimed_then_is_oom_killed() {
    const LIMIT: u64 = 128 * MIB;
    const FILLED: u64 = 48 * MIB;
    const LAZY: u64 = 32 * MIB;
    const STEP: u64 = 4 * MIB;
    let container = Container::run(
        Image::get(),
        "memtrace-pressure",
        LIMIT,
        &Argv::new()
            .arg(PRESSURE)
            .words("--fill-mib 48 --free-mib 32 --step-mib 4 --every-ms 50"),
    );
    assert_eq!(container.wait_exit(MINUTE), KILLED, "{}", container.logs());
    assert!(container.oom_killed(), "the kernel logged no OOM kill");
    let logs = container.logs();
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let number = |line: &Value, key: &str| {
        line[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key} in {line}"))
    };
    let report = lines.first().expect("the pressure report");
    assert_eq!(number(report, "filled"), FILLED);
    assert_eq!(number(report, "lazily_freed"), LAZY);
    let (Some(first), Some(last)) = (lines.get(1), lines.last()) else {
        panic!("no step before the kill:\n{logs}");
    };
    // Pages become lazily free through a per-CPU batch of 31.
    let slack = folio_batches_bytes();
    assert!(number(first, "lazyfree") + slack >= LAZY, "{first}");
    assert!(
        number(last, "grown") > LIMIT - FILLED,
        "grew no more than fits beside the whole working set:\n{logs}"
    );
    assert!(
        number(last, "lazyfree") < STEP + slack,
        "killed with a step's worth of lazily freed pages left:\n{logs}"
    );
}

/// The JSON lines of a whole-container trace: one per process per
/// interval, and one for the container as a whole.
fn by_scope(snapshots: &[Value], scope: &str) -> Vec<Value> {
    snapshots
        .iter()
        .filter(|snapshot| snapshot["scope"] == scope)
        .cloned()
        .collect()
}

/// For each whole-container line, whether every process running at its
/// reading still runs at the next one. A process that exits unmaps its
/// memory (memory.stat's anon falls at once) before the kernel frees and
/// uncharges the pages, in batches, a few milliseconds later: a reading
/// taken in between finds the charge tens of MiB above the parts
/// memory.stat names (seen here: 24.9 MB of 42.7 MB as a 36 MiB Go program
/// exited). Each interval's process lines come before its whole line.
fn steady_readings(snapshots: &[Value]) -> Vec<bool> {
    // The processes running at each reading.
    let mut readings: Vec<BTreeSet<u64>> = vec![BTreeSet::new()];
    for snapshot in snapshots {
        if snapshot["scope"] == "cgroup" {
            readings.push(BTreeSet::new());
            continue;
        }
        if snapshot["scope"] == "process" && snapshot["state"] == "running" {
            readings
                .last_mut()
                .expect("one open reading")
                .insert(field(snapshot, "/pid"));
        }
    }
    readings.pop();
    (0..readings.len())
        .map(|at| {
            readings
                .get(at + 1)
                .is_none_or(|next| readings[at].is_subset(next))
        })
        .collect()
}

fn field(value: &Value, pointer: &str) -> u64 {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no {pointer} in {value}"))
}

fn signed(value: &Value, pointer: &str) -> i64 {
    value
        .pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("no {pointer} in {value}"))
}

/// Issue 17: `--container NAME` traces every process of a container, those
/// there when memtrace attaches, those its shell starts later (a C and a Go
/// workload, round after round), and one `podman exec` puts in from
/// outside; until the container stops. Every process's figures match the
/// kernel's, and the container's charge is explained by parts the kernel
/// names, page cache and kernel memory among them.
#[test]
fn a_container_is_traced_whole_by_its_name() {
    let container = Container::run(Image::get(), "memtrace-mix", 256 * MIB, &[MIX, "3"]);
    container.wait_for_log("mix: round 1", MINUTE);
    let mut tracing = Tracing::start(&[
        "--container",
        container.name(),
        "--json",
        "-",
        "-q",
        "-i",
        "0.5",
    ]);
    tracing.wait_attached();
    // Page cache no process maps: a file written inside the container.
    let mut writer = container.exec(&[
        "/bin/sh",
        "-c",
        "dd if=/dev/zero of=/tmp/cache bs=1M count=16 2>/dev/null; echo written; sleep 3",
    ]);
    writer.wait_for("written", MINUTE);
    assert_eq!(container.wait_exit(MINUTE), 0, "{}", container.logs());
    let finished = tracing.finish(MINUTE);
    finished.assert_code(0);
    // `podman exec` puts its process in the container from outside: the
    // kernel side finds it at its first event.
    assert!(
        finished
            .stderr()
            .iter()
            .any(|line| line.starts_with("memtrace: found pid")),
        "the exec'd process was not found:\n{}",
        finished.transcript()
    );
    let snapshots = finished.snapshots();

    let processes = by_scope(&snapshots, "process");
    let commands: Vec<&str> = processes
        .iter()
        .filter_map(|snapshot| snapshot["command"].as_str())
        .collect();
    for workload in ["memops", "goheap", "mix.sh"] {
        assert!(
            commands.contains(&workload),
            "{workload} not traced: {commands:?}"
        );
    }
    // The exec'd shell (`sh`; the container's own is `mix.sh`), or its `dd`.
    assert!(
        commands.contains(&"sh") || commands.contains(&"dd"),
        "the exec'd shell is not traced: {commands:?}\n{}",
        finished.stderr().join("\n")
    );
    // Every process's figures, as the kernel read them (smaps_rollup) at
    // the same moment, within 1%; except where its mappings changed while
    // /proc was read, which memtrace says (`in_flight_bytes`) and compares
    // at the next reading.
    let mut compared = 0;
    for snapshot in &processes {
        if snapshot["state"] != "running"
            || snapshot["kernel"]["reading"] != "current"
            || field(snapshot, "/in_flight_bytes") > 0
        {
            continue;
        }
        let kernel = field(snapshot, "/kernel/rss_bytes");
        let model = field(snapshot, "/model/rss_bytes");
        assert!(
            model.abs_diff(kernel) * 100 <= kernel,
            "pid {} ({}): model {model}, kernel {kernel}, {}",
            snapshot["pid"],
            snapshot["command"],
            snapshot["reconcile"]
        );
        compared += 1;
    }
    assert!(compared >= 10, "only {compared} readings compared");

    let wholes = by_scope(&snapshots, "cgroup");
    assert!(wholes.len() >= 5, "{} whole-container lines", wholes.len());
    let mut explained = 0;
    for (whole, steady) in wholes.iter().zip(steady_readings(&snapshots)) {
        assert_eq!(whole["pid"], Value::Null, "{whole}");
        assert_eq!(whole["whole"]["container"]["id"], container.id(), "{whole}");
        if !steady {
            continue;
        }
        // memory.usage_in_bytes is what the named parts add up to, within
        // 2%, and the charge the kernel takes ahead in per-CPU batches
        // (MEMCG_CHARGE_BATCH, 64 pages a CPU), which memory.stat does not
        // show yet.
        let current = field(whole, "/whole/charge/current_bytes");
        let other = signed(whole, "/whole/charge/other_bytes");
        let batches = 64 * PAGE * cpus();
        assert!(
            other.unsigned_abs() <= current / 50 + batches,
            "{other} of {current} charged bytes in no named part: {}",
            whole["whole"]["charge"]
        );
        explained += 1;
    }
    assert!(
        explained >= 10,
        "only {explained} steady readings of {}",
        wholes.len()
    );
    let cache = wholes
        .iter()
        .map(|whole| field(whole, "/whole/charge/unmapped_cache_bytes"))
        .max()
        .unwrap_or(0);
    assert!(
        cache >= 15 * MIB,
        "the 16 MiB file is not page cache: {cache}"
    );
    let last = wholes.last().expect("a final whole");
    assert_eq!(last["type"], "final", "{last}");
    assert_eq!(last["whole"]["removed"], true, "{last}");
    let verdict = memtrace_tests::memtrace::verdicts(&finished).pop().unwrap();
    for named in ["page cache", "kernel memory", "working set"] {
        assert!(verdict.contains(named), "{named} not in: {verdict}");
    }
}

/// Issue 17: a container whose process grows into its limit. The lazily
/// freed pages are reclaimed first, then the OOM killer ends the process;
/// memtrace writes its post-mortem (report and profile) there and then,
/// and the container's final report names the process and the function
/// that grew.
#[test]
fn an_oom_kill_in_a_container_gets_its_post_mortem() {
    let dir = tempfile::tempdir().unwrap();
    // The shell waits for memtrace to attach before the workload starts.
    let container = Container::run(
        Image::get(),
        "memtrace-pressure",
        128 * MIB,
        &["/bin/sh", "-c", &format!("sleep 3; exec {PRESSURE}")],
    );
    let mut tracing = Tracing::start(
        &Argv::new()
            .words("--container")
            .arg(container.name())
            .words("--json - -q -i 0.3 --pprof-dir")
            .arg(dir.path().to_str().unwrap()),
    );
    tracing.wait_attached();
    assert_eq!(container.wait_exit(MINUTE), KILLED, "{}", container.logs());
    let finished = tracing.finish(MINUTE);
    finished.assert_code(0);
    let pid = container.oom_killed_pids();
    assert_eq!(pid.len(), 1, "the kernel's OOM kills: {pid:?}");

    // The victim's own last snapshot: killed, holding what it grew, and
    // its lazily freed pages taken back by the kernel before the kill.
    let snapshots = finished.snapshots();
    let victim = by_scope(&snapshots, "process")
        .into_iter()
        .rfind(|snapshot| snapshot["pid"] == pid[0])
        .expect("the victim's snapshots");
    assert_eq!(victim["state"], "oom_killed", "{victim}");
    let reclaimed = field(&victim, "/released_bytes/reclaim of MADV_FREE pages");
    assert!(reclaimed >= 16 * MIB, "{}", victim["released_bytes"]);
    assert_eq!(
        victim["top_stacks"][0]["frames"][1], "grow_until_killed",
        "{victim}"
    );

    // Its post-mortem profile, written when it was killed, read by pprof.
    let said = finished
        .stderr()
        .into_iter()
        .find(|line| line.contains("was killed by the OOM killer: its profile is"))
        .unwrap_or_else(|| panic!("no post-mortem:\n{}", finished.transcript()))
        .to_owned();
    let profile = said.rsplit(' ').next().expect("a path");
    let top = memtrace_tests::gotool::pprof(&["-top", "-unit=MB", profile]);
    assert!(top.contains("grow_until_killed"), "{top}");

    // The container's final report names the victim and what grew.
    let last = by_scope(&snapshots, "cgroup").pop().expect("a final whole");
    let killed = &last["whole"]["oom_killed"][0];
    assert_eq!(killed["pid"], pid[0], "{last}");
    assert_eq!(killed["command"], "pressure", "{killed}");
    assert_eq!(
        killed["top_stack"], "map_and_fill ← grow_until_killed",
        "{killed}"
    );
    // The container's verdict, after the victim's own.
    let verdict = memtrace_tests::memtrace::verdicts(&finished).pop().unwrap();
    assert!(
        verdict.contains(&format!("The OOM killer took pid {} (pressure)", pid[0]))
            && verdict.contains("grow_until_killed"),
        "{verdict}"
    );
}
