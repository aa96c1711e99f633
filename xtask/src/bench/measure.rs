//! One run of one variant of a workload, measured the way its row is (see
//! [`Method`]).
//!
//! Timed rows go through one handshake for every variant: the workload
//! warms up, prints `ready` and waits; the tracer is attached (memtrace
//! already is: it started the workload); then one line on its stdin starts
//! the measured part, which the workload times itself. Start-up costs
//! (memtrace loading its programs, bpftrace compiling its script) are
//! outside every variant's seconds, and memtrace gets no idle time to catch
//! up on the warm-up's events that the peers, attaching later, never see.
//!
//! The neighbour row attaches every tracer (memtrace by `-p`) to an idle
//! `sleep` and times a syscall-bound workload nobody traces; the attach
//! rows time each tracer from its start until it says it is attached to a
//! waiting workload.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use super::{
    kernel_stats::{KernelRun, Window},
    variant::{Attached, Files, Peer, Variant},
    workload::{parse_outcome, Method, Outcome, Workload, IDLE_SECONDS},
};
use crate::{
    child::{Finished, Line, Started},
    snapshot::final_snapshot,
};

/// Warm-up plus, for memtrace, loading and attaching its programs.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// The measured part; generous, since a run that is merely slow must not
/// fail (only a hung one).
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// bpftrace compiling and attaching its one-liner, perf opening its events,
/// memtrace loading its programs.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(120);
/// A tracer printing its maps or report, or writing its file, after SIGINT
/// (perf with DWARF call graphs writes gigabytes).
const STOP_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a tracer gets to exit after a SIGINT before it gets another.
const INTERRUPT_AGAIN: Duration = Duration::from_secs(5);
/// perf enables its events just after writing its header.
const PERF_GRACE: Duration = Duration::from_secs(1);
/// How often memtrace's VmHWM is read: often enough to catch the final
/// report's growth before it exits.
const HWM_PERIOD: Duration = Duration::from_millis(50);
const POLL: Duration = Duration::from_millis(20);

/// Where the harness finds memtrace and puts its files.
pub struct Setting<'a> {
    pub memtrace: &'a Path,
    pub scratch: &'a Path,
}

/// Which kind of run: timed, or with BPF run-time stats on (never both:
/// the stats cost the programs a little).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Timing,
    KernelStats,
}

/// What one run measured.
pub struct Measured {
    /// The workload's result; for attach rows, its seconds are the tracer's
    /// attach latency.
    pub outcome: Outcome,
    /// For memtrace variants: its figures.
    pub memtrace: Option<Traced>,
}

/// memtrace's side of a run.
pub struct Traced {
    /// Its final JSON snapshot.
    pub snapshot: Value,
    /// Its own CPU time, start to exit.
    pub cpu: Duration,
    /// Its own peak RSS.
    pub peak_rss_bytes: u64,
    /// Its programs' run time over the measured part, in stats runs.
    pub kernel: Option<KernelRun>,
}

/// Runs `variant` of `workload` once; `round` keeps its files apart.
pub fn once(
    workload: &Workload,
    variant: Variant,
    setting: &Setting,
    round: u32,
    purpose: Purpose,
) -> Result<Measured> {
    let suffix = match purpose {
        Purpose::Timing => "",
        Purpose::KernelStats => "-stats",
    };
    let json = setting.scratch.join(format!(
        "{}-{}{suffix}-{round}.json",
        workload.benchmark.name(),
        variant.slug()
    ));
    let files = Files {
        memtrace: setting.memtrace,
        json: &json,
        scratch: setting.scratch,
    };
    let stats = purpose == Purpose::KernelStats;
    match workload.benchmark.method() {
        Method::Timed => timed(workload, variant, &files, stats),
        Method::Neighbour => beside(workload, variant, &files, stats),
        Method::Attach => attaching(workload, variant, &files),
    }
}

/// A timed row: memtrace starts the workload, peers attach after warm-up.
fn timed(workload: &Workload, variant: Variant, files: &Files, stats: bool) -> Result<Measured> {
    let mut target = Started::spawn(&mut launch(workload, variant, files))?;
    if variant.is_memtrace() {
        target.sample_memory(HWM_PERIOD);
    }
    wait_ready(&mut target, workload)?;
    let window = open_window(stats && variant.is_memtrace(), target.pid())?;
    let peer = match variant.tracer(target.pid(), files, false) {
        Some(peer) => Some(attach(peer, variant.is_memtrace(), files.json)?),
        None => None,
    };
    target.send_line("go")?;
    let finished = target.finish(RUN_TIMEOUT)?;
    if let Some(peer) = peer {
        stop(peer)?;
    }
    let outcome = parse_outcome(&finished.stdout, workload.benchmark)?;
    let memtrace = if variant.is_memtrace() {
        Some(traced(files.json, &finished, window)?)
    } else {
        None
    };
    Ok(Measured { outcome, memtrace })
}

/// The neighbour row: the tracer watches an idle `sleep` while the
/// workload, untraced, runs beside it.
fn beside(workload: &Workload, variant: Variant, files: &Files, stats: bool) -> Result<Measured> {
    let idle = Started::spawn(Command::new("sleep").arg(IDLE_SECONDS.to_string()))?;
    let tracer = match variant.tracer(idle.pid(), files, true) {
        Some(peer) => Some(attach(peer, variant.is_memtrace(), files.json)?),
        None => None,
    };
    let window = match &tracer {
        Some(tracer) => open_window(stats && variant.is_memtrace(), tracer.started.pid())?,
        None => None,
    };
    let mut neighbour = Started::spawn(Command::new(&workload.program).args(workload.args()))?;
    wait_ready(&mut neighbour, workload)?;
    neighbour.send_line("go")?;
    let finished = neighbour.finish(RUN_TIMEOUT)?;
    let outcome = parse_outcome(&finished.stdout, workload.benchmark)?;
    let stopped = tracer.map(stop).transpose()?;
    drop(idle);
    let memtrace = match stopped {
        Some(stopped) if variant.is_memtrace() => Some(traced(files.json, &stopped, window)?),
        _ => None,
    };
    Ok(Measured { outcome, memtrace })
}

/// An attach row: how long the tracer takes from its start until it says
/// it is attached to the waiting workload.
fn attaching(workload: &Workload, variant: Variant, files: &Files) -> Result<Measured> {
    let mut target = Started::spawn(Command::new(&workload.program).args(workload.args()))?;
    wait_ready(&mut target, workload)?;
    let Some(peer) = variant.tracer(target.pid(), files, true) else {
        bail!("{} does not attach to a process", variant.label());
    };
    let tracer = attach(peer, variant.is_memtrace(), files.json)?;
    let latency = tracer.latency;
    let stopped = stop(tracer)?;
    target.send_line("go")?;
    let finished = target.finish(RUN_TIMEOUT)?;
    let mut outcome = parse_outcome(&finished.stdout, workload.benchmark)?;
    outcome.seconds = latency.as_secs_f64();
    let memtrace = if variant.is_memtrace() {
        Some(traced(files.json, &stopped, None)?)
    } else {
        None
    };
    Ok(Measured { outcome, memtrace })
}

/// Waits for the workload's `ready`.
fn wait_ready(target: &mut Started, workload: &Workload) -> Result<()> {
    let benchmark = workload.benchmark;
    target.wait_for(
        "`ready`",
        READY_TIMEOUT,
        |line| matches!(line, Line::Stdout(text) if benchmark.is_ready(text)),
    )
}

/// A window on memtrace `pid`'s programs, when `wanted`.
fn open_window(wanted: bool, pid: u32) -> Result<Option<Window>> {
    wanted
        .then(|| Window::open(pid).context("cannot measure memtrace's programs"))
        .transpose()
}

/// memtrace's figures once it exited (`finished`), its JSON in `json`.
fn traced(json: &Path, finished: &Finished, window: Option<Window>) -> Result<Traced> {
    Ok(Traced {
        snapshot: final_snapshot(json)?,
        cpu: finished.cpu,
        peak_rss_bytes: finished
            .samples
            .iter()
            .map(|sample| sample.hwm_bytes)
            .max()
            .unwrap_or(0),
        kernel: window
            .map(|window| window.close(finished.cpu))
            .transpose()?,
    })
}

/// The command that starts the workload: itself, or memtrace starting it.
fn launch(workload: &Workload, variant: Variant, files: &Files) -> Command {
    match variant.memtrace_args(files.json) {
        Some(args) => {
            let mut command = Command::new(files.memtrace);
            command
                .args(args)
                .arg("--")
                .arg(&workload.program)
                .args(workload.args());
            command
        }
        None => {
            let mut command = Command::new(&workload.program);
            command.args(workload.args());
            command
        }
    }
}

/// A tracer attached to a running process.
struct Running {
    started: Started,
    /// From its start until it said it was attached.
    latency: Duration,
    /// The file it writes, removed once it is done (perf's are large).
    output: Option<PathBuf>,
    /// memtrace's JSON file: Ctrl-C gets its final report only once it has
    /// written its first interval's snapshot there (it takes its signals
    /// over just after saying it is attached; one sent in between stops it
    /// with no report).
    first_snapshot: Option<PathBuf>,
}

/// Starts a tracer and returns once it is really attached; samples its
/// memory when `is_memtrace`, whose JSON goes to `json`.
fn attach(peer: Peer, is_memtrace: bool, json: &Path) -> Result<Running> {
    let Peer {
        mut command,
        attached,
    } = peer;
    let start = Instant::now();
    let mut started = Started::spawn(&mut command)?;
    if is_memtrace {
        started.sample_memory(HWM_PERIOD);
    }
    match attached {
        Attached::Says(text) => {
            started.wait_for(&format!("`{text}`"), ATTACH_TIMEOUT, |line| {
                line.text().starts_with(text)
            })?;
            Ok(Running {
                started,
                latency: start.elapsed(),
                output: None,
                first_snapshot: is_memtrace.then(|| json.to_owned()),
            })
        }
        Attached::Wrote(path) => {
            let started = wait_for_file(started, &path, ATTACH_TIMEOUT)?;
            let latency = start.elapsed();
            thread::sleep(PERF_GRACE);
            Ok(Running {
                started,
                latency,
                output: Some(path),
                first_snapshot: None,
            })
        }
    }
}

/// Waits up to `timeout` until `peer` has written something to `path`.
fn wait_for_file(peer: Started, path: &Path, timeout: Duration) -> Result<Started> {
    let deadline = Instant::now() + timeout;
    while fs::metadata(path).map_or(true, |metadata| metadata.len() == 0) {
        if !peer.is_running()? {
            // finish() says how it failed, with its last lines.
            peer.finish(STOP_TIMEOUT)?;
            bail!("the peer exited before writing {}", path.display());
        }
        if Instant::now() > deadline {
            bail!(
                "the peer wrote nothing to {} within {timeout:?}",
                path.display()
            );
        }
        thread::sleep(POLL);
    }
    Ok(peer)
}

/// Stops a tracer the way a user would, with Ctrl-C (perf record also
/// stops by itself when the workload exits), and removes its file. The
/// SIGINT is repeated now and then: one that reaches bpftrace before it is
/// done attaching is lost, and it then runs forever.
fn stop(running: Running) -> Result<Finished> {
    let Running {
        started: mut tracer,
        output,
        first_snapshot,
        ..
    } = running;
    if let Some(json) = first_snapshot {
        tracer = wait_for_file(tracer, &json, ATTACH_TIMEOUT)?;
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while tracer.is_running()? && Instant::now() < deadline {
        tracer.interrupt()?;
        tracer.wait_exit(INTERRUPT_AGAIN)?;
    }
    let finished = tracer.finish(Duration::ZERO);
    if let Some(output) = output {
        fs::remove_file(&output).with_context(|| format!("cannot remove {}", output.display()))?;
    }
    finished
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workload::Benchmark;

    fn files() -> Files<'static> {
        Files {
            memtrace: Path::new("/t/memtrace"),
            json: Path::new("/s/x.json"),
            scratch: Path::new("/s"),
        }
    }

    #[test]
    fn memtrace_variants_start_the_workload_under_memtrace() {
        let workload = Workload::new(Benchmark::MmapChurn, "/w/mmap_churn".into(), true);
        assert_eq!(
            crate::process::describe(&launch(&workload, Variant::Memtrace, &files())),
            "/t/memtrace -q --json /s/x.json -- /w/mmap_churn --ops 50000 --warmup 2000 --wait"
        );
        assert_eq!(
            crate::process::describe(&launch(&workload, Variant::Floor, &files())),
            "/t/memtrace -q --json /s/x.json --floor -- /w/mmap_churn --ops 50000 --warmup 2000 \
             --wait"
        );
        assert_eq!(
            crate::process::describe(&launch(&workload, Variant::PerfRecord, &files())),
            "/w/mmap_churn --ops 50000 --warmup 2000 --wait"
        );
    }
}
