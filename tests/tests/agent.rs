//! `memtrace agent` as it runs on a host: it finds the processes of a
//! target by their command name, follows what they fork, finds a restarted
//! one again, serves numbers that the real Prometheus scrapes and that
//! match what the kernel says, writes profile windows that `go tool pprof`
//! reads, and stops cleanly on SIGTERM.

use std::{
    fs,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use memtrace_tests::{
    gotool,
    memtrace::{run, Line, Tracing},
    prometheus::{get, parse_text, Prometheus, Sample},
    running::Running,
    workloads::ensure_built,
};

const MIB: u64 = 1 << 20;
/// The workload's command name: unique on the host, so the agent's target
/// selects it and nothing else.
const SERVICE: &str = "mtagent_svc";

/// A field of /proc/PID/smaps_rollup, in bytes.
fn rollup(pid: u32, field: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("{field} in smaps_rollup of {pid}"))
}

/// The agent's `/metrics` now.
fn scrape(address: SocketAddr) -> Vec<Sample> {
    let (status, text) = get(&format!("http://{address}/metrics")).expect("the agent answers");
    assert_eq!(status, 200);
    parse_text(&text)
}

/// The value of the agent's own (unlabelled) series `name`.
fn agent_value(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .find(|sample| sample.name == name && sample.labels.is_empty())
        .unwrap_or_else(|| panic!("no {name} in {samples:?}"))
        .value
}

/// The pids the agent has series of for target `svc`.
fn pids_served(address: SocketAddr) -> Vec<u32> {
    let mut pids: Vec<u32> = scrape(address)
        .into_iter()
        .filter(|sample| {
            sample.name == "memtrace_page_faults_total" && sample.labels["target"] == "svc"
        })
        .map(|sample| sample.labels["pid"].parse().unwrap())
        .collect();
    pids.sort_unstable();
    pids
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the agent serves series of exactly the processes `pids`.
fn wait_pids(address: SocketAddr, pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let served = pids_served(address);
        if served == pids {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "series of {served:?}, not of {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The metrics address the agent says it serves on.
fn metrics_address(agent: &mut Tracing) -> SocketAddr {
    let line = agent.wait_for(
        Duration::from_secs(60),
        |line| matches!(line, Line::Stderr(text) if text.contains("/metrics")),
    );
    let text = stderr_text(&line);
    let start = text.find("http://").expect("an URL") + "http://".len();
    let end = start + text[start..].find("/metrics").unwrap();
    text[start..end].parse().unwrap()
}

fn wait_tracing(agent: &mut Tracing, pid: u32) {
    let wanted = format!("tracing pid {pid} ({SERVICE}) for svc");
    agent.wait_for(
        Duration::from_secs(30),
        |line| matches!(line, Line::Stderr(text) if text.contains(&wanted)),
    );
}

/// Starts the service: it waits for a line on stdin, then maps 48 MiB,
/// touches it, gives 16 MiB back with MADV_FREE and reports; at the next
/// line it forks a child that touches 8 MiB and exits after 3 s.
fn start_service(program: &Path) -> Running {
    Running::start(
        program,
        &[
            "wait",
            ";",
            "map",
            "A",
            "48M",
            ";",
            "touch",
            "A",
            "0",
            "48M",
            ";",
            "free",
            "A",
            "0",
            "16M",
            ";",
            "report",
            ";",
            "wait",
            ";",
            "fork_touch",
            "A",
            "0",
            "8M",
            "3",
            ";",
            "hold_forever",
        ],
        &[],
    )
}

#[test]
fn the_agent_follows_a_service_through_forks_and_restarts_and_prometheus_reads_it_exactly() {
    let workloads = ensure_built().expect("workloads build");
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join(SERVICE);
    fs::copy(&workloads.memops, &program).unwrap();
    let profiles = dir.path().join("profiles");

    let mut agent = Tracing::start(&[
        "agent",
        "--target",
        &format!("svc=command:{SERVICE}"),
        "--metrics",
        "127.0.0.1:0",
        "--interval",
        "0.5",
        "--push-interval",
        "2",
        "--pprof-dir",
        profiles.to_str().unwrap(),
    ]);
    let address = metrics_address(&mut agent);

    // Started after the agent: found by its name within a second or so.
    let mut first = start_service(&program);
    let pid = first.pid();
    wait_tracing(&mut agent, pid);
    first.send_line("go");
    first.wait_for(" report - ", Duration::from_secs(30));

    // The real Prometheus scrapes the agent; in-use RSS (anonymous minus
    // lazily freed) and the lazily freed part match the kernel's figures.
    let prometheus = Prometheus::start(address);
    let series = |part: &str| -> Option<f64> {
        prometheus
            .query(&format!(
                r#"memtrace_rss_bytes{{target="svc",pid="{pid}",part="{part}"}}"#
            ))
            .first()
            .map(|sample: &Sample| sample.value)
    };
    let kernel_in_use = rollup(pid, "Anonymous") - rollup(pid, "LazyFree");
    let kernel_lazyfree = rollup(pid, "LazyFree");
    assert!(
        kernel_in_use >= 32 * MIB,
        "the workload holds 32 MiB in use"
    );
    // The kernel moves pages to its lazily-free list in batches: a few
    // may still be on their way.
    assert!(
        kernel_lazyfree > 15 * MIB,
        "nothing reclaimed the freed pages: {kernel_lazyfree}"
    );
    prometheus.wait_until("Prometheus has the service's in-use RSS", || {
        series("in_use").is_some_and(|value| {
            (value - kernel_in_use as f64).abs() <= kernel_in_use as f64 * 0.01
        })
    });
    let lazily_freed = series("lazily_freed").expect("a lazily freed series");
    assert!(
        (lazily_freed - kernel_lazyfree as f64).abs() <= kernel_lazyfree as f64 * 0.01,
        "lazily freed {lazily_freed}, the kernel's {kernel_lazyfree}"
    );
    let released = prometheus.query(&format!(
        r#"memtrace_page_faults_total{{target="svc",pid="{pid}"}}"#
    ));
    assert!(
        released
            .first()
            .is_some_and(|s| s.value >= (48 * MIB / 4096) as f64),
        "every page touched is a fault: {released:?}"
    );
    // The README's "real usage" query: RSS minus lazily freed.
    let real_usage = prometheus.query(&format!(
        r#"sum without (part) (memtrace_rss_bytes{{pid="{pid}",part!="lazily_freed"}})"#
    ));
    let kernel_real = rollup(pid, "Rss") - kernel_lazyfree;
    assert!(
        real_usage
            .first()
            .is_some_and(|s| (s.value - kernel_real as f64).abs() <= kernel_real as f64 * 0.01),
        "RSS minus lazily freed is the kernel's {kernel_real}: {real_usage:?}"
    );

    // A child it forks is the target's too, from its fork.
    first.send_line("go");
    let child_line = agent.wait_for(Duration::from_secs(30), |line| {
        matches!(line, Line::Stderr(text)
            if text.contains(&format!("({SERVICE}) for svc")) && !text.contains(&format!("pid {pid} ")))
    });
    let child: u32 = stderr_text(&child_line)
        .split_whitespace()
        .skip_while(|word| *word != "pid")
        .nth(1)
        .and_then(|word| word.parse().ok())
        .expect("the child's pid");
    wait_until("the child has series", Duration::from_secs(15), || {
        pids_served(address).contains(&child)
    });
    // It exits after a few seconds: its series go, its parent's stay.
    first.wait_for(&format!("child={child}"), Duration::from_secs(30));
    wait_pids(address, &[pid]);

    // Restarted: the old process's series go, the new one is found.
    drop(first);
    let second = start_service(&program);
    let restarted = second.pid();
    wait_tracing(&mut agent, restarted);
    wait_pids(address, &[restarted]);

    // Its windows are profiles `go tool pprof` reads, named for the
    // service and the process; the first process's last window too.
    wait_until(
        "a window of the restarted service",
        Duration::from_secs(15),
        || window_of(&profiles, restarted).is_some(),
    );
    let window = window_of(&profiles, pid).expect("the first process's last window");
    let top = gotool::pprof(&["-raw", window.to_str().unwrap()]);
    assert!(top.contains("inuse_space"), "{top}");
    assert!(top.contains("op_touch"), "the fault site is named:\n{top}");

    let samples = scrape(address);
    assert_eq!(agent_value(&samples, "memtrace_traced_processes"), 1.0);
    assert_eq!(agent_value(&samples, "memtrace_lost_records_total"), 0.0);
    assert!(agent_value(&samples, "memtrace_stacks") > 0.0);

    // SIGTERM: the last windows go out and the agent exits 0.
    agent.signal(libc::SIGTERM);
    let finished = agent.finish(Duration::from_secs(30));
    finished.assert_code(0);
    assert!(
        finished
            .stderr()
            .iter()
            .any(|line| line.contains("window(s) sent, 0 dropped")),
        "{}",
        finished.transcript()
    );
    drop(second);
}

fn stderr_text(line: &Line) -> &str {
    match line {
        Line::Stderr(text) => text,
        Line::Stdout(text) => panic!("wanted a line of stderr, not {text}"),
    }
}

/// The newest window file of process `pid` under `dir`.
fn window_of(dir: &Path, pid: u32) -> Option<std::path::PathBuf> {
    let suffix = format!("-svc-{pid}.pb.gz");
    let mut files: Vec<_> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with(&suffix))
        })
        .collect();
    files.sort();
    files.pop()
}

#[test]
fn bad_settings_are_one_line_and_exit_10() {
    for (args, words) in [
        (vec!["agent", "--target", "svc=exe:x"], "`exe` is not pid"),
        (
            vec!["agent", "--config", "/nonexistent/agent.toml"],
            "cannot read",
        ),
        (
            vec!["agent", "--target", "svc=pid:1", "--interval", "0"],
            "interval",
        ),
    ] {
        let finished = run(&args, Duration::from_secs(10));
        finished.assert_code(10);
        let stderr = finished.stderr();
        assert_eq!(stderr.len(), 1, "{}", finished.transcript());
        assert!(stderr[0].contains(words), "{}", finished.transcript());
    }
}
