//! One run of one variant of a workload.
//!
//! Every variant goes through the same handshake: the workload warms up,
//! prints `ready` and waits; the tracer is attached (memtrace already is: it
//! started the workload); then one line on its stdin starts the measured
//! part, which the workload times itself. Start-up costs (memtrace loading
//! its programs, bpftrace compiling its script) are outside every variant's
//! seconds, and memtrace gets no idle time to catch up on the warm-up's
//! events that the peers, attaching later, never see.

use std::{
    fs,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde_json::Value;

use super::{
    variant::{Attached, Peer, Variant},
    workload::{parse_outcome, Outcome, Workload},
};
use crate::{
    child::{Line, Started},
    snapshot::final_snapshot,
};

/// Warm-up plus, for memtrace, loading and attaching its programs.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// The measured part; generous, since a run that is merely slow must not
/// fail (only a hung one).
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// bpftrace compiling and attaching its one-liner, perf opening its events.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(120);
/// A peer printing its maps or writing its file after SIGINT.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a peer gets to exit after a SIGINT before it gets another.
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

/// What one run measured.
pub struct Measured {
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
}

/// Runs `variant` of `workload` once; `round` keeps its files apart.
pub fn once(
    workload: &Workload,
    variant: Variant,
    setting: &Setting,
    round: u32,
) -> Result<Measured> {
    let json = setting.scratch.join(format!(
        "{}-{}-{round}.json",
        workload.benchmark.name(),
        variant.slug()
    ));
    let mut target = Started::spawn(&mut launch(workload, variant, setting.memtrace, &json))?;
    if variant.is_memtrace() {
        target.sample_memory(HWM_PERIOD);
    }
    let benchmark = workload.benchmark;
    target.wait_for(
        "`ready`",
        READY_TIMEOUT,
        |line| matches!(line, Line::Stdout(text) if benchmark.is_ready(text)),
    )?;
    let peer = match variant.peer(target.pid(), setting.scratch) {
        Some(peer) => Some(attach(peer)?),
        None => None,
    };
    target.send_line("go")?;
    let finished = target.finish(RUN_TIMEOUT)?;
    if let Some(peer) = peer {
        stop(peer)?;
    }
    let outcome = parse_outcome(&finished.stdout, benchmark)?;
    let memtrace = if variant.is_memtrace() {
        Some(Traced {
            snapshot: final_snapshot(&json)?,
            cpu: finished.cpu,
            peak_rss_bytes: finished
                .samples
                .iter()
                .map(|sample| sample.hwm_bytes)
                .max()
                .unwrap_or(0),
        })
    } else {
        None
    };
    Ok(Measured { outcome, memtrace })
}

/// The command that starts the workload: itself, or memtrace starting it.
fn launch(workload: &Workload, variant: Variant, memtrace: &Path, json: &Path) -> Command {
    match variant.memtrace_args(json) {
        Some(args) => {
            let mut command = Command::new(memtrace);
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

/// Starts a peer and returns once it is really attached.
fn attach(peer: Peer) -> Result<Started> {
    let Peer {
        mut command,
        attached,
    } = peer;
    let mut started = Started::spawn(&mut command)?;
    match attached {
        Attached::Says(text) => {
            started.wait_for(&format!("`{text}`"), ATTACH_TIMEOUT, |line| {
                line.text() == text
            })?;
            Ok(started)
        }
        Attached::Wrote(path) => {
            let started = wait_until_written(started, &path)?;
            thread::sleep(PERF_GRACE);
            Ok(started)
        }
    }
}

/// Waits until `peer` has written something to `path`.
fn wait_until_written(peer: Started, path: &Path) -> Result<Started> {
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    while fs::metadata(path).map_or(true, |metadata| metadata.len() == 0) {
        if !peer.is_running()? {
            // finish() says how it failed, with its last lines.
            peer.finish(STOP_TIMEOUT)?;
            bail!("the peer exited before writing {}", path.display());
        }
        if Instant::now() > deadline {
            bail!(
                "the peer wrote nothing to {} within {ATTACH_TIMEOUT:?}",
                path.display()
            );
        }
        thread::sleep(POLL);
    }
    Ok(peer)
}

/// Stops a peer the way a user would, with Ctrl-C (perf record also stops
/// by itself when the workload exits). The SIGINT is repeated now and then:
/// one that reaches bpftrace before it is done attaching is lost, and it
/// then runs forever.
fn stop(mut peer: Started) -> Result<()> {
    let deadline = Instant::now() + STOP_TIMEOUT;
    while peer.is_running()? && Instant::now() < deadline {
        peer.interrupt()?;
        peer.wait_exit(INTERRUPT_AGAIN)?;
    }
    peer.finish(Duration::ZERO).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workload::Benchmark;

    #[test]
    fn memtrace_variants_start_the_workload_under_memtrace() {
        let workload = Workload::new(Benchmark::MmapChurn, "/w/mmap_churn".into(), true);
        let memtrace = Path::new("/t/memtrace");
        let json = Path::new("/s/x.json");
        assert_eq!(
            crate::process::describe(&launch(&workload, Variant::Memtrace, memtrace, json)),
            "/t/memtrace -q --json /s/x.json -- /w/mmap_churn --ops 50000 --warmup 2000 --wait"
        );
        assert_eq!(
            crate::process::describe(&launch(&workload, Variant::PerfRecord, memtrace, json)),
            "/w/mmap_churn --ops 50000 --warmup 2000 --wait"
        );
    }
}
