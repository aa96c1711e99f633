//! `cargo xtask soak --agent --minutes N`: `memtrace agent` left running for
//! N minutes on three workloads that keep restarting, and checked for what
//! an always-on agent must not do: grow, hold more stacks than its cap, keep
//! processes that ended, lose records, miss a restarted process, fail to
//! push a process's profile windows, overfill its profile directory, or
//! fail to stop on SIGTERM.
//!
//! The workloads run under names of their own (copies in a temporary
//! directory), so the agent's command-name targets select only them. Each
//! is started again and again from a thread of its own, and each run is a
//! new process the agent has to find, and drop once it ended:
//!
//! - `soak_churn` (target `churn`): gochurn, a Go heap churn, restarted
//!   every quarter of the soak (at least every 20 s, so a 1-minute soak sees
//!   restarts, and at most every 3 minutes), each run churning until 2 s
//!   before the next;
//! - `soak_svc` (target `svc`): memops started every 10 s with a script
//!   that maps, touches, frees, forks a child that touches what it
//!   inherited, and exits some 7 s later; the child is one the agent has to
//!   follow from its fork;
//! - `soak_nofp` (target `nofp`): the fault storm built without frame
//!   pointers, so the agent unwinds its stacks from `.eh_frame` tables,
//!   restarted every 4/3 of the churn's period (so their restarts mostly
//!   fall apart). Each run waits until 2 s before the next, then faults in
//!   8 rounds of 16 MiB (a fraction of a second of CPU) and exits.
//!
//! Restarts fall half-way between 10-s marks of the soak, and every sample
//! on one, so no sample lands in the gap between two runs or just as a
//! process is taken on; the last run of each goes on past the soak's end,
//! so the last sample sees the agent as loaded as the first.
//!
//! Every sample period (as the memtrace soak: 10 s for a 1-minute soak, a
//! minute otherwise) the agent's VmRSS and CPU time are read from /proc,
//! its own series from its `/metrics`, and its profile directory is listed.
//! In between, the directory is listed every second, so every window is
//! seen before the cap has the agent remove it. At the end it gets SIGTERM
//! and must exit 0, and [`AgentVerdict::judge`] says whether the soak
//! passed.

mod verdict;

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, RecvTimeoutError, Sender},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use memtrace_tests::workloads::Workloads;
use serde_json::{json, Value};

use self::verdict::{
    forked_child, http_body, kibibytes, Adopted, AgentEvidence, AgentReading, AgentVerdict, Run,
    Scrape, Spool, Tally, TargetRuns, Windows, MAX_TRACED, STACK_CAP,
};
use super::{
    cpu_share_after_warmup, fail_on, read_process, rss_summary, write_json, Churn, Growth, Options,
    Schedule, FINISH_TIMEOUT, WORKLOAD_EXTRA,
};
use crate::{
    bench::workload::{parse_outcome, Benchmark},
    child::{Finished, Line, Started},
    text::{mark, mebibytes, thousands},
};

/// The Go churn's command name, and its target's.
const CHURN: &str = "soak_churn";
const CHURN_TARGET: &str = "churn";
/// The restarting service's command name, and its target's.
const SERVICE: &str = "soak_svc";
const SERVICE_TARGET: &str = "svc";
/// The program without frame pointers: its command name, and its target's.
const NOFP: &str = "soak_nofp";
const NOFP_TARGET: &str = "nofp";
/// Each target's name and its workload's command name, in the order the
/// table and the verdict show them.
const TARGETS: [(&str, &str); 3] = [
    (CHURN_TARGET, CHURN),
    (SERVICE_TARGET, SERVICE),
    (NOFP_TARGET, NOFP),
];
/// How often the service is started again.
const SERVICE_EVERY: Duration = Duration::from_secs(10);
/// One run of the service: 64 MiB mapped and touched, half given back with
/// MADV_FREE, a child forked that writes 16 MiB of it (copy-on-write) and
/// lives 2 s, then 5 s of holding before it exits.
const SERVICE_SCRIPT: &str =
    "map A 64M ; touch A 0 64M ; free A 0 32M ; fork_touch A 0 16M 2 ; hold 5";
/// The bounds of the churn's restart period (a quarter of the soak).
const CHURN_EVERY_LEAST: Duration = Duration::from_secs(20);
const CHURN_EVERY_MOST: Duration = Duration::from_secs(180);
/// Samples are taken on multiples of this from the soak's start (its
/// periods are 10 s and a minute), and every restart period is one too.
const GRID: Duration = Duration::from_secs(10);
/// A run of the churn or of the program without frame pointers ends this
/// long before the next starts, so runs never overlap and their starts keep
/// time.
const RESTART_GAP: Duration = Duration::from_secs(2);
/// One run of the program without frame pointers once it is told to go:
/// eight rounds of 16 MiB of page faults. No warm-up, so every fault comes
/// after the wait in which the agent takes the process on.
const NOFP_ARGS: [&str; 7] = ["--mib", "16", "--rounds", "8", "--warmup", "0", "--wait"];
/// How long a run may go on past what it was asked to do before it is
/// killed.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the profile directory is listed between samples: far less
/// than the agent takes to write the windows its cap holds.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// The agent's `--interval` and `--push-interval`, in seconds.
const INTERVAL_S: u64 = 1;
const PUSH_INTERVAL_S: u64 = 10;
/// The profile directory's `max_size`, small so that a soak of a few
/// minutes fills it (a window is 1 to 2 KiB) and the oldest have to go.
const SPOOL_CAP: &str = "64K";
const SPOOL_CAP_BYTES: u64 = 64 << 10;
/// How long the agent may take to load and say it runs.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a scrape of /metrics may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often to check whether a process exited.
const POLL: Duration = Duration::from_millis(50);
/// How many of the agent's last stderr lines a failure quotes.
const QUOTED_LINES: usize = 20;

pub fn run(options: &Options, memtrace: &Path, programs: &Workloads) -> Result<()> {
    let schedule = Schedule::new(options.minutes);
    let periods = Periods::new(schedule.length);
    let dir = tempfile::Builder::new()
        .prefix("memtrace-soak-agent-")
        .tempdir()
        .context("cannot make the soak's directory")?;
    let churn_program = copy_as(&programs.gochurn, dir.path(), CHURN)?;
    let service_program = copy_as(&programs.memops, dir.path(), SERVICE)?;
    let nofp_program = copy_as(&programs.fault_storm_nofp, dir.path(), NOFP)?;
    let spool_dir = dir.path().join("profiles");
    fs::create_dir(&spool_dir).with_context(|| format!("cannot make {}", spool_dir.display()))?;
    let config = dir.path().join("agent.toml");
    fs::write(
        &config,
        format!("[pprof_dir]\nmax_size = \"{SPOOL_CAP}\"\n"),
    )
    .with_context(|| format!("cannot write {}", config.display()))?;
    let port = free_port()?;
    let args = agent_args(&config, port, &spool_dir);
    println!("\n{}", header(options, schedule, periods, memtrace, &args));

    let start = Instant::now();
    let mut agent = Agent::spawn(memtrace, &args, dir.path(), port)?;
    agent.wait_ready(READY_TIMEOUT)?;
    // Every restart half-way between two samples' marks (see the module
    // doc), the first as soon as the agent runs.
    let first = start + half_way(start.elapsed());
    let until = start + schedule.length;
    let workloads = [
        (
            CHURN_TARGET,
            Restarting::start(first, periods.churn, until, move |time| {
                churn_run(&churn_program, time)
            }),
        ),
        (
            SERVICE_TARGET,
            Restarting::start(first, SERVICE_EVERY, until, move |_| {
                service_run(&service_program)
            }),
        ),
        (
            NOFP_TARGET,
            Restarting::start(first, periods.nofp, until, move |time| {
                nofp_run(&nofp_program, time)
            }),
        ),
    ];

    println!("{}", row_header());
    let mut readings: Vec<AgentReading> = Vec::new();
    let mut mappings = Growth::default();
    let mut windows = Windows::default();
    let mut ended_early = None;
    for at in schedule.times() {
        watch_spool(start + at, &spool_dir, &mut windows);
        let elapsed = start.elapsed();
        let previous = readings.last().map(|r| &r.reading);
        let reading = match agent.has_exited()? {
            false => read_process(agent.pid(), elapsed, previous)?,
            true => None,
        };
        let Some(reading) = reading else {
            ended_early = Some(elapsed);
            break;
        };
        mappings.observe(
            agent.pid(),
            elapsed,
            schedule.warmup,
            previous.map(|r| r.elapsed),
        );
        let reading = AgentReading {
            reading,
            scrape: scrape(port),
            spool: spool(&spool_dir),
            targets: tallies(&agent.stderr(), &windows),
        };
        println!("{}", row(&reading, schedule.period));
        readings.push(reading);
    }

    let runs = workloads.map(|(target, workload)| (target, workload.stop()));
    let exit = agent.terminate(FINISH_TIMEOUT);
    // The windows of the processes still traced, pushed as the agent ended.
    note_windows(&spool_dir, &mut windows);
    let stderr = agent.stderr();
    let adopted = runs
        .each_ref()
        .map(|(target, _)| Adopted::pids(stderr.iter().map(String::as_str), target));
    let targets: Vec<TargetRuns> = runs
        .iter()
        .zip(&adopted)
        .map(|((name, runs), adopted)| TargetRuns {
            name,
            runs,
            adopted,
        })
        .collect();
    let spooled = spool(&spool_dir);
    let verdict = AgentVerdict::judge(&AgentEvidence {
        readings: &readings,
        warmup: schedule.warmup,
        ended_early,
        exit: &exit,
        mappings: mappings.pair(),
        spool: spooled,
        spool_cap: SPOOL_CAP_BYTES,
        windows: &windows,
        targets: &targets,
    });
    println!("\n{}", summary(&verdict, &readings, spooled, &exit));

    write_json(
        options,
        schedule,
        json!({
            "agent": true,
            "agent_command": command_line(&args),
            "service_script": SERVICE_SCRIPT,
            "nofp_args": NOFP_ARGS.join(" "),
            "restart_every_s": {
                CHURN_TARGET: periods.churn.as_secs(),
                SERVICE_TARGET: SERVICE_EVERY.as_secs(),
                NOFP_TARGET: periods.nofp.as_secs(),
            },
            "samples": readings.iter().map(AgentReading::to_json).collect::<Vec<_>>(),
            "runs": runs_json(&targets),
            "agent_exit": match &exit {
                Ok(()) => Value::from("0"),
                Err(why) => Value::from(why.as_str()),
            },
            "pprof_files": spooled.files,
            "pprof_bytes": spooled.bytes,
            "pprof_cap_bytes": SPOOL_CAP_BYTES,
            "verdict": verdict.to_json(),
            "passed": verdict.problems.is_empty(),
        }),
    )?;
    let problems: Vec<String> = verdict
        .problems
        .iter()
        .map(|problem| format!("agent: {problem}"))
        .collect();
    fail_on(&problems)?;
    let traced: Vec<String> = verdict
        .targets
        .iter()
        .map(|target| format!("{} of {}", target.adoption.describe(), target.name))
        .collect();
    println!(
        "\nsoak passed: after {} minute(s) the agent's RSS is flat, its stacks are bounded, it \
         lost no records, traced {} and dropped them, wrote windows of every process it traced, \
         kept its profile directory under {}, and exited 0 on SIGTERM",
        options.minutes,
        traced.join(", "),
        kibibytes(SPOOL_CAP_BYTES)
    );
    Ok(())
}

/// How often the churn and the program without frame pointers are started
/// again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Periods {
    churn: Duration,
    nofp: Duration,
}

impl Periods {
    /// The churn every quarter of the soak, within its bounds, so a short
    /// soak sees restarts too; the other every 4/3 of that, so their
    /// restarts mostly fall apart. Both on the [`GRID`], so they fall
    /// between samples.
    fn new(length: Duration) -> Self {
        let churn = (length / 4).clamp(CHURN_EVERY_LEAST, CHURN_EVERY_MOST);
        let grid = GRID.as_secs();
        let churn = churn.as_secs() / grid * grid;
        Self {
            churn: Duration::from_secs(churn),
            nofp: Duration::from_secs((churn * 4 / 3 + grid / 2) / grid * grid),
        }
    }
}

/// The first time, from the soak's start, at or after `elapsed` and
/// half-way between two marks of the [`GRID`].
fn half_way(elapsed: Duration) -> Duration {
    let grid = GRID.as_millis() as u64;
    let marks = (elapsed.as_millis() as u64)
        .saturating_sub(grid / 2)
        .div_ceil(grid);
    Duration::from_millis(grid / 2 + marks * grid)
}

/// When a run started at `at` has to end: when the next starts, or, for
/// the last, [`WORKLOAD_EXTRA`] past the soak's end (`until`), so the agent
/// still traces it at the last sample.
fn run_end(at: Instant, every: Duration, until: Instant) -> Instant {
    match at + every < until {
        true => at + every,
        false => until + WORKLOAD_EXTRA,
    }
}

/// `program` copied into `dir` as `name`, so its command name is `name`.
fn copy_as(program: &Path, dir: &Path, name: &str) -> Result<PathBuf> {
    let copy = dir.join(name);
    fs::copy(program, &copy)
        .with_context(|| format!("cannot copy {} to {}", program.display(), copy.display()))?;
    Ok(copy)
}

/// A port on 127.0.0.1 that nothing listens on now.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("cannot find a free port for the agent's metrics")?;
    Ok(listener.local_addr()?.port())
}

/// The agent's arguments: every target by command name, metrics on
/// `port`, readings every second, a profile window every 10 s into
/// `spool_dir` (capped by `config`).
fn agent_args(config: &Path, port: u16, spool_dir: &Path) -> Vec<String> {
    let mut args = vec![
        "agent".to_owned(),
        "--config".to_owned(),
        config.display().to_string(),
    ];
    for (target, command) in TARGETS {
        args.extend(["--target".to_owned(), format!("{target}=command:{command}")]);
    }
    args.extend([
        "--metrics".to_owned(),
        format!("127.0.0.1:{port}"),
        "--interval".to_owned(),
        INTERVAL_S.to_string(),
        "--push-interval".to_owned(),
        PUSH_INTERVAL_S.to_string(),
        "--pprof-dir".to_owned(),
        spool_dir.display().to_string(),
    ]);
    args
}

/// The agent's command as the report shows it.
fn command_line(args: &[String]) -> String {
    format!("memtrace {}", args.join(" "))
}

/// The agent, its stderr going to a file the soak reads as it goes.
struct Agent {
    child: Child,
    stderr: PathBuf,
    port: u16,
}

impl Agent {
    fn spawn(memtrace: &Path, args: &[String], dir: &Path, port: u16) -> Result<Self> {
        let stderr = dir.join("agent.stderr");
        let file = |path: &Path| {
            fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))
        };
        let child = Command::new(memtrace)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file(&dir.join("agent.stdout"))?)
            .stderr(file(&stderr)?)
            .spawn()
            .with_context(|| format!("cannot start {}", memtrace.display()))?;
        Ok(Self {
            child,
            stderr,
            port,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stderr lines so far.
    fn stderr(&self) -> Vec<String> {
        fs::read_to_string(&self.stderr)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Its last stderr lines, for an error message.
    fn quoted(&self) -> String {
        let lines = self.stderr();
        let tail = &lines[lines.len().saturating_sub(QUOTED_LINES)..];
        let quoted: Vec<String> = tail
            .iter()
            .map(|line| format!("\n    err| {line}"))
            .collect();
        super::shorten_lines(&quoted.concat())
    }

    fn has_exited(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_some())
    }

    /// Waits until the agent serves its metrics, or fails with its stderr.
    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the agent exited ({status}) before serving /metrics:{}",
                    self.quoted()
                );
            }
            if scrape(self.port).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the agent did not serve /metrics within {timeout:?}:{}",
                    self.quoted()
                );
            }
            thread::sleep(POLL * 4);
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the agent to exit (killing
    /// it after that); `Err` says why it did not exit 0.
    fn terminate(&mut self, timeout: Duration) -> Result<(), String> {
        if let Some(status) = self.child.try_wait().map_err(|err| err.to_string())? {
            return Err(format!("it had already exited ({status}){}", self.quoted()));
        }
        let pid = libc::pid_t::try_from(self.pid()).map_err(|err| err.to_string())?;
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // unreaped child's, so it cannot have been reused.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(format!(
                "cannot send SIGTERM: {}",
                std::io::Error::last_os_error()
            ));
        }
        let status = wait_timeout(&mut self.child, timeout).map_err(|err| err.to_string())?;
        match status {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("it exited with {status}{}", self.quoted())),
            None => Err(format!(
                "still running {timeout:?} after SIGTERM; killed{}",
                self.quoted()
            )),
        }
    }
}

impl Drop for Agent {
    /// An agent left running (after an error) is stopped.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits up to `timeout` for `child` to exit, killing it after that; its
/// status, or `None` when it had to be killed.
fn wait_timeout(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            child.wait()?;
            return Ok(None);
        }
        thread::sleep(POLL);
    }
}

/// The agent's own series from `GET http://127.0.0.1:PORT/metrics`.
fn scrape(port: u16) -> Result<Scrape, String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let get = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&address, SCRAPE_TIMEOUT)?;
        stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
        stream.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    };
    let response = get().map_err(|err| format!("GET http://{address}/metrics: {err}"))?;
    Scrape::parse(http_body(&response)?)
}

/// The files in `dir` now, by name, with their sizes.
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let entries = fs::read_dir(dir).into_iter().flatten();
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let metadata = entry.metadata().ok().filter(fs::Metadata::is_file)?;
            Some((entry.file_name().into_string().ok()?, metadata.len()))
        })
        .collect()
}

/// The profile windows in `dir` now.
fn spool(dir: &Path) -> Spool {
    listing(dir)
        .iter()
        .fold(Spool::default(), |spool, (_, bytes)| Spool {
            files: spool.files + 1,
            bytes: spool.bytes + bytes,
        })
}

/// Notes the windows in `dir` now.
fn note_windows(dir: &Path, windows: &mut Windows) {
    windows.observe(listing(dir).into_iter().map(|(name, _)| name));
}

/// Waits until `deadline`, noting the windows in `dir` every
/// [`WATCH_EVERY`]: the agent removes the oldest to stay under the cap, so
/// they are counted as they arrive.
fn watch_spool(deadline: Instant, dir: &Path, windows: &mut Windows) {
    loop {
        note_windows(dir, windows);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        thread::sleep(left.min(WATCH_EVERY));
    }
}

/// Each target's PIDs the agent said (in its stderr `lines`) it traces, and
/// its windows seen.
fn tallies(lines: &[String], windows: &Windows) -> Vec<Tally> {
    TARGETS
        .iter()
        .map(|&(target, _)| Tally {
            target,
            traced: Adopted::pids(lines.iter().map(String::as_str), target).len() as u64,
            windows: windows.count(target),
        })
        .collect()
}

/// A workload started at `first` and every `every` after, from a thread,
/// until the soak ends or [`Restarting::stop`], each run a new process.
struct Restarting {
    /// Dropped to stop: the thread waits on it between runs.
    stop: Sender<()>,
    thread: JoinHandle<Vec<Run>>,
}

impl Restarting {
    /// `run_once` runs the workload to its end, given the time it has (see
    /// [`run_end`]).
    fn start(
        first: Instant,
        every: Duration,
        until: Instant,
        mut run_once: impl FnMut(Duration) -> Run + Send + 'static,
    ) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            let mut runs = Vec::new();
            let mut next = first;
            while next < until {
                let wait = next.saturating_duration_since(Instant::now());
                if stopped.recv_timeout(wait) != Err(RecvTimeoutError::Timeout) {
                    break;
                }
                let end = run_end(next, every, until);
                runs.push(run_once(end.saturating_duration_since(Instant::now())));
                next += every;
            }
            runs
        });
        Self { stop, thread }
    }

    /// Starts no more runs and waits for the current one to end.
    fn stop(self) -> Vec<Run> {
        drop(self.stop);
        self.thread.join().unwrap_or_default()
    }
}

/// One run of the service.
fn service_run(program: &Path) -> Run {
    let spawned = Command::new(program)
        .args(SERVICE_SCRIPT.split_whitespace())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            return Run {
                pid: 0,
                child: None,
                failed: Some(format!("cannot start {}: {err}", program.display())),
            }
        }
    };
    let pid = child.id();
    let status = wait_timeout(&mut child, RUN_TIMEOUT);
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(pipe) = child.stdout.as_mut() {
        let _ = pipe.read_to_string(&mut stdout);
    }
    if let Some(pipe) = child.stderr.as_mut() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let failed = match status {
        Ok(Some(status)) if status.success() => None,
        Ok(Some(status)) => Some(format!("{status}: {}", stderr.trim())),
        Ok(None) => Some(format!("still running after {RUN_TIMEOUT:?}; killed")),
        Err(err) => Some(format!("cannot wait for it: {err}")),
    };
    Run {
        pid,
        child: forked_child(&stdout),
        failed,
    }
}

/// One run of the churn, given `time`: it churns until [`RESTART_GAP`]
/// before that is up.
fn churn_run(program: &Path, time: Duration) -> Run {
    let seconds = time.saturating_sub(RESTART_GAP).as_secs().max(1);
    let mut command = Command::new(program);
    command
        .args(["-seconds", &seconds.to_string()])
        .env("GODEBUG", Churn::Free.godebug());
    benchmark_run(&mut command, Benchmark::GoChurn, |started| {
        started.finish(Duration::from_secs(seconds) + RUN_TIMEOUT)
    })
}

/// One run of the program without frame pointers, given `time`: it says it
/// is ready at once and waits (the agent finds it meanwhile) until
/// [`RESTART_GAP`] before that is up, then faults and exits.
fn nofp_run(program: &Path, time: Duration) -> Run {
    let pause = time.saturating_sub(RESTART_GAP);
    let benchmark = Benchmark::FaultStormNoFp;
    let mut command = Command::new(program);
    command.args(NOFP_ARGS);
    benchmark_run(&mut command, benchmark, |mut started| {
        started.wait_for(
            "ready",
            RUN_TIMEOUT,
            |line| matches!(line, Line::Stdout(text) if benchmark.is_ready(text)),
        )?;
        thread::sleep(pause);
        started.send_line("go")?;
        started.finish(RUN_TIMEOUT)
    })
}

/// One run of a benchmark workload: `command` started, taken to its end by
/// `drive`, and failed unless it printed its result line.
fn benchmark_run(
    command: &mut Command,
    benchmark: Benchmark,
    drive: impl FnOnce(Started) -> Result<Finished>,
) -> Run {
    let mut pid = 0;
    let outcome = Started::spawn(command).and_then(|started| {
        pid = started.pid();
        parse_outcome(&drive(started)?.stdout, benchmark)
    });
    Run {
        pid,
        child: None,
        failed: outcome
            .err()
            .map(|err| super::shorten_lines(&format!("{err:#}"))),
    }
}

/// Each target's runs, and whether the agent traced them, for the report.
fn runs_json(targets: &[TargetRuns]) -> Value {
    let runs = targets.iter().map(|target| {
        let runs = target.runs.iter().map(|run| {
            json!({
                "pid": run.pid,
                "child": run.child,
                "failed": run.failed,
                "traced": target.adopted.contains(&run.pid),
                "child_traced": run.child.map(|child| target.adopted.contains(&child)),
            })
        });
        (target.name.to_owned(), runs.collect())
    });
    Value::Object(runs.collect())
}

/// What runs, how it is read and what is checked.
fn header(
    options: &Options,
    schedule: Schedule,
    periods: Periods,
    memtrace: &Path,
    args: &[String],
) -> String {
    format!(
        "{}\nmemtrace: {}\nOne memtrace agent for {} minute(s):\n  {}\n\
         Targets, copies of the test workloads under names of their own, each run a new \
         process:\n  \
         {CHURN:<12}GODEBUG={} gochurn -seconds {}, started every {} s\n  \
         {SERVICE:<12}memops {}, started every {} s\n  \
         {NOFP:<12}fault_storm_nofp {} (go after {} s), started every {} s\n\
         Restarts {} s past a {} s mark, the last run of each past the end.\n\
         Every {} s: the agent's VmRSS, its own CPU time in the period, its /metrics \
         (memtrace_traced_processes, memtrace_stacks, memtrace_stacks_pruned_total, \
         memtrace_lost_records_total), its --pprof-dir, and per target (c/s/n: {CHURN_TARGET}, \
         {SERVICE_TARGET}, {NOFP_TARGET}) the processes it said it traces and their windows seen \
         in --pprof-dir so far (listed every {} s).\nChecks: RSS flat after the first {} s (the \
         last sample at most {}% above the first after it), stacks under the cap of {} (or \
         flat), no records lost, at most {} processes traced at once, every scrape answered, \
         the directory under its cap of {}; for each target, all but one of its runs (and of \
         the service's children) traced and a window of every process traced; exit 0 on \
         SIGTERM. CPU time is not judged.\n",
        options.command_line(),
        memtrace.display(),
        options.minutes,
        command_line(args),
        Churn::Free.godebug(),
        (periods.churn - RESTART_GAP).as_secs(),
        periods.churn.as_secs(),
        SERVICE_SCRIPT,
        SERVICE_EVERY.as_secs(),
        NOFP_ARGS.join(" "),
        (periods.nofp - RESTART_GAP).as_secs(),
        periods.nofp.as_secs(),
        (GRID / 2).as_secs(),
        GRID.as_secs(),
        schedule.period.as_secs(),
        WATCH_EVERY.as_secs(),
        schedule.warmup.as_secs(),
        super::checks::FLAT_PERCENT,
        thousands(STACK_CAP),
        MAX_TRACED,
        kibibytes(SPOOL_CAP_BYTES),
    )
}

fn row_header() -> String {
    format!(
        "{:>8}  {:>11}  {:>15}  {:>6}  {:>8}  {:>7}  {:>4}  {:>18}  {:>11}  {:>13}",
        "elapsed",
        "agent RSS",
        "CPU in period",
        "traced",
        "stacks",
        "pruned",
        "lost",
        "pprof dir",
        "pids c/s/n",
        "windows c/s/n"
    )
}

fn row(reading: &AgentReading, period: Duration) -> String {
    let cpu = reading.reading.period_cpu.as_secs_f64();
    let share = cpu * 100.0 / period.as_secs_f64();
    let (traced, stacks, pruned, lost) = match &reading.scrape {
        Ok(scrape) => (
            scrape.traced.to_string(),
            thousands(scrape.stacks),
            thousands(scrape.pruned),
            thousands(scrape.lost),
        ),
        Err(_) => (
            "-".to_owned(),
            "-".to_owned(),
            "-".to_owned(),
            "-".to_owned(),
        ),
    };
    let per_target = |figure: fn(&Tally) -> u64| {
        let figures: Vec<String> = reading
            .targets
            .iter()
            .map(|t| figure(t).to_string())
            .collect();
        figures.join("/")
    };
    format!(
        "{:>6} s  {:>11}  {:>15}  {traced:>6}  {stacks:>8}  {pruned:>7}  {lost:>4}  {:>18}  {:>11}  \
         {:>13}",
        reading.reading.elapsed.as_secs_f64().round(),
        mebibytes(reading.reading.rss_bytes),
        format!("{cpu:.2} s ({share:.1}%)"),
        reading.spool.describe(),
        per_target(|tally| tally.traced),
        per_target(|tally| tally.windows),
    )
}

fn summary(
    verdict: &AgentVerdict,
    readings: &[AgentReading],
    spooled: Spool,
    exit: &Result<(), String>,
) -> String {
    let outcome = match verdict.problems.is_empty() {
        true => "passed ✓",
        false => "FAILED ✗",
    };
    let mut lines = vec![format!("memtrace agent: {outcome}")];
    let mut line = |what: &str, text: String| lines.push(format!("  {what:<22}{text}"));
    line("agent RSS", rss_summary(verdict.flatness.as_ref()));
    if let Some(Ok(scrape)) = readings.last().map(|r| &r.scrape) {
        line(
            "its own view",
            format!(
                "memtrace_agent_resident_bytes {} at the last scrape",
                mebibytes(scrape.resident_bytes)
            ),
        );
    }
    line(
        "stacks",
        verdict.stacks.map_or_else(
            || "✗ no scrape after warm-up".to_owned(),
            |stacks| format!("{} {}", stacks.describe(), mark(stacks.is_bounded())),
        ),
    );
    line(
        "records lost",
        verdict.lost.map_or_else(
            || "✗ never scraped".to_owned(),
            |lost| format!("{} {}", thousands(lost), mark(lost == 0)),
        ),
    );
    line(
        "traced at once",
        verdict.most_traced.map_or_else(
            || "✗ never scraped".to_owned(),
            |most| {
                format!(
                    "at most {most} after warm-up {} (at most {MAX_TRACED})",
                    mark(most <= MAX_TRACED)
                )
            },
        ),
    );
    for target in &verdict.targets {
        line(
            &target.name,
            format!("{} {}", target.describe(), mark(target.is_fine())),
        );
    }
    line(
        "pprof dir",
        format!(
            "{} at the end (cap {}) {}",
            spooled.describe(),
            kibibytes(SPOOL_CAP_BYTES),
            mark(spooled.files > 0 && spooled.bytes <= SPOOL_CAP_BYTES)
        ),
    );
    line(
        "end",
        match exit {
            Ok(()) => "exit 0 on SIGTERM ✓".to_owned(),
            Err(_) => "✗ did not exit 0 on SIGTERM (below)".to_owned(),
        },
    );
    line(
        "agent CPU",
        verdict
            .flatness
            .as_ref()
            .map_or_else(|| "not judged".to_owned(), cpu_share_after_warmup),
    );
    for problem in &verdict.problems {
        lines.push(format!("  ✗ {problem}"));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soak::checks::Reading;

    #[test]
    fn the_agent_traces_the_three_workloads_by_command_name() {
        let args = agent_args(Path::new("/t/agent.toml"), 9464, Path::new("/t/profiles"));
        assert_eq!(
            command_line(&args),
            "memtrace agent --config /t/agent.toml --target churn=command:soak_churn --target \
             svc=command:soak_svc --target nofp=command:soak_nofp --metrics 127.0.0.1:9464 \
             --interval 1 --push-interval 10 --pprof-dir /t/profiles"
        );
        assert!(
            TARGETS.iter().all(|(_, command)| command.len() <= 15),
            "command names are 15 bytes"
        );
    }

    /// When a workload restarted every `every` is started in a soak of
    /// `length` that reached its first half-way point at once.
    fn starts(every: Duration, length: Duration) -> Vec<Duration> {
        (0..)
            .map(|index| half_way(Duration::ZERO) + every * index)
            .take_while(|at| *at < length)
            .collect()
    }

    #[test]
    fn the_churn_and_the_c_program_restart_every_few_minutes_and_apart() {
        let periods = |minutes| {
            let Periods { churn, nofp } = Periods::new(Schedule::new(minutes).length);
            (churn.as_secs(), nofp.as_secs())
        };
        assert_eq!(periods(1), (20, 30));
        assert_eq!(periods(3), (40, 50));
        assert_eq!(periods(10), (150, 200));
        assert_eq!(periods(60), (180, 240));
        for minutes in 1..=120 {
            let length = Schedule::new(minutes).length;
            let Periods { churn, nofp } = Periods::new(length);
            for every in [churn, nofp] {
                assert!(
                    starts(every, length).len() >= 2,
                    "{minutes} minute(s): started every {every:?}, never restarted"
                );
            }
            assert_ne!(churn, nofp);
        }
        assert_eq!(
            starts(Duration::from_secs(30), Duration::from_secs(60)),
            [5, 35].map(Duration::from_secs)
        );
    }

    #[test]
    fn restarts_fall_half_way_between_samples() {
        let at = |millis| half_way(Duration::from_millis(millis)).as_millis();
        assert_eq!(
            [0, 5_000, 5_001, 12_300, 61_000].map(at),
            [5_000, 5_000, 15_000, 15_000, 65_000]
        );
        let on_grid = |time: Duration| time.as_millis().is_multiple_of(GRID.as_millis());
        for minutes in 1..=120 {
            let schedule = Schedule::new(minutes);
            let Periods { churn, nofp } = Periods::new(schedule.length);
            assert!(
                [schedule.period, churn, nofp, SERVICE_EVERY]
                    .into_iter()
                    .all(on_grid),
                "{minutes} minute(s): {schedule:?}, every {churn:?} and {nofp:?}"
            );
        }
    }

    #[test]
    fn runs_end_when_the_next_starts_and_the_last_past_the_soak() {
        let start = Instant::now();
        let seconds = Duration::from_secs;
        let until = start + seconds(180);
        let every = seconds(40);
        assert_eq!(
            run_end(start + seconds(5), every, until),
            start + seconds(45)
        );
        assert_eq!(
            run_end(start + seconds(125), every, until),
            start + seconds(165)
        );
        assert_eq!(
            run_end(start + seconds(165), every, until),
            until + WORKLOAD_EXTRA
        );
        assert_eq!(
            run_end(start + seconds(140), every, until),
            until + WORKLOAD_EXTRA,
            "the next would start as the soak ends"
        );
    }

    #[test]
    fn a_restarted_workload_runs_at_once_and_stops_when_asked() {
        let now = Instant::now();
        let hour = Duration::from_secs(3600);
        let restarting = Restarting::start(now, hour, now + 2 * hour, |time| Run {
            pid: u32::try_from(time.as_secs()).unwrap(),
            child: None,
            failed: None,
        });
        thread::sleep(Duration::from_millis(100));
        let runs = restarting.stop();
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert!((3590..3600).contains(&runs[0].pid), "{runs:?}");
    }

    #[test]
    fn a_benchmark_run_needs_its_result_line() {
        let run = |script: &str| {
            let mut command = Command::new("sh");
            command.args(["-c", script]);
            benchmark_run(&mut command, Benchmark::GoChurn, |started| {
                started.finish(Duration::from_secs(10))
            })
        };
        let done = run(r#"echo '{"benchmark":"gochurn","seconds":1.5,"operations":9}'"#);
        assert!(done.pid > 0 && done.failed.is_none(), "{done:?}");
        let silent = run("true").failed.unwrap();
        assert!(
            silent.contains("gochurn printed no result line"),
            "{silent}"
        );
        let failed = run("echo oops >&2; exit 3").failed.unwrap();
        assert!(failed.contains("it failed (exit status: 3)"), "{failed}");
    }

    #[test]
    fn agent_rows_line_up_under_the_header() {
        let tally = |target, traced, windows| Tally {
            target,
            traced,
            windows,
        };
        let reading = AgentReading {
            reading: Reading {
                elapsed: Duration::from_millis(60_004),
                rss_bytes: 35 << 20,
                cpu: Duration::from_millis(1200),
                period_cpu: Duration::from_millis(890),
                records: None,
                reconciled: None,
            },
            scrape: Ok(Scrape {
                traced: 3,
                stacks: 12_345,
                pruned: 0,
                lost: 0,
                resident_bytes: 35 << 20,
                rss_series: 12,
            }),
            spool: Spool {
                files: 12,
                bytes: 1 << 19,
            },
            targets: vec![
                tally("churn", 3, 14),
                tally("svc", 11, 20),
                tally("nofp", 2, 5),
            ],
        };
        let line = row(&reading, Duration::from_secs(10));
        assert_eq!(
            line,
            "    60 s     35.0 MiB    0.89 s (8.9%)       3    12,345        0     0   \
             12 files, 512 KiB       3/11/2        14/20/5"
        );
        assert_eq!(line.chars().count(), row_header().chars().count());
        let failed = AgentReading {
            scrape: Err("refused".to_owned()),
            ..reading
        };
        assert!(row(&failed, Duration::from_secs(10)).contains("     -         -        -     -"));
    }
}
