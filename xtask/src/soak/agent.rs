//! `cargo xtask soak --agent --minutes N`: `memtrace agent` left running for
//! N minutes on a churning Go heap and a service that keeps restarting, and
//! checked for what an always-on agent must not do: grow, hold more stacks
//! than its cap, keep processes that ended, lose records, miss a restarted
//! process, overfill its profile directory, or fail to stop on SIGTERM.
//!
//! The workloads run under names of their own (copies in a temporary
//! directory), so the agent's command-name targets select only them:
//! `soak_churn`, gochurn running for the whole soak, and `soak_svc`, memops
//! started every 10 s with a script that maps, touches, frees, forks a
//! child that touches what it inherited, and exits some 7 s later. Each run
//! is a new process the agent has to find, and its child one it has to
//! follow from its fork; both have to be dropped when they end.
//!
//! Every sample period (as the memtrace soak: 10 s for a 1-minute soak, a
//! minute otherwise) the agent's VmRSS and CPU time are read from /proc,
//! its own series from its `/metrics`, and its profile directory is listed.
//! At the end it gets SIGTERM and must exit 0, and [`AgentVerdict::judge`]
//! says whether the soak passed.

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
    forked_child, http_body, kibibytes, Adopted, AgentEvidence, AgentReading, AgentVerdict, Scrape,
    ServiceRun, Spool, MAX_TRACED, STACK_CAP,
};
use super::{
    cpu_share_after_warmup, fail_on, read_process, rss_summary, write_json, Churn, Growth, Options,
    Schedule, FINISH_TIMEOUT,
};
use crate::{
    bench::workload::{parse_outcome, Benchmark},
    child::Started,
    text::{mark, mebibytes, thousands},
};

/// The long-lived churn's command name, and its target's.
const CHURN: &str = "soak_churn";
const CHURN_TARGET: &str = "churn";
/// The restarting service's command name, and its target's.
const SERVICE: &str = "soak_svc";
const SERVICE_TARGET: &str = "svc";
/// How often the service is started again.
const RESTART_EVERY: Duration = Duration::from_secs(10);
/// One run of the service: 64 MiB mapped and touched, half given back with
/// MADV_FREE, a child forked that writes 16 MiB of it (copy-on-write) and
/// lives 2 s, then 5 s of holding before it exits.
const SERVICE_SCRIPT: &str =
    "map A 64M ; touch A 0 64M ; free A 0 32M ; fork_touch A 0 16M 2 ; hold 5";
/// How long one run of the service may take before it is killed.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(60);
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
    let dir = tempfile::Builder::new()
        .prefix("memtrace-soak-agent-")
        .tempdir()
        .context("cannot make the soak's directory")?;
    let churn_program = copy_as(&programs.gochurn, dir.path(), CHURN)?;
    let service_program = copy_as(&programs.memops, dir.path(), SERVICE)?;
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
    println!("\n{}", header(options, schedule, memtrace, &args));

    let start = Instant::now();
    let mut agent = Agent::spawn(memtrace, &args, dir.path(), port)?;
    agent.wait_ready(READY_TIMEOUT)?;
    let mut churn_command = Command::new(&churn_program);
    churn_command
        .args(["-seconds", &schedule.workload_seconds().to_string()])
        .env("GODEBUG", Churn::Free.godebug());
    let churn = Started::spawn(&mut churn_command)?;
    let service = Service::start(service_program, start + schedule.length);

    println!("{}", row_header());
    let mut readings: Vec<AgentReading> = Vec::new();
    let mut mappings = Growth::default();
    let mut ended_early = None;
    for at in schedule.times() {
        thread::sleep((start + at).saturating_duration_since(Instant::now()));
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
            adopted: Adopted::pids(agent.stderr().iter().map(String::as_str), SERVICE_TARGET).len()
                as u64,
        };
        println!("{}", row(&reading, schedule.period));
        readings.push(reading);
    }

    let service_runs = service.stop();
    let exit = agent.terminate(FINISH_TIMEOUT);
    let stderr = agent.stderr();
    let adopted = Adopted::pids(stderr.iter().map(String::as_str), SERVICE_TARGET);
    let churn_outcome = churn
        .finish(FINISH_TIMEOUT)
        .and_then(|finished| parse_outcome(&finished.stdout, Benchmark::GoChurn))
        .and_then(|outcome| outcome.field("num_gc"))
        .map_err(|err| super::shorten_lines(&format!("{err:#}")));
    let spooled = spool(&spool_dir);
    let verdict = AgentVerdict::judge(&AgentEvidence {
        readings: &readings,
        warmup: schedule.warmup,
        ended_early,
        exit: &exit,
        mappings: mappings.pair(),
        spool: spooled,
        spool_cap: SPOOL_CAP_BYTES,
        service: &service_runs,
        adopted: &adopted,
        churn_failed: churn_outcome.as_ref().err().map(String::as_str),
    });
    println!(
        "\n{}",
        summary(&verdict, &readings, spooled, &exit, &churn_outcome)
    );

    write_json(
        options,
        schedule,
        json!({
            "agent": true,
            "agent_command": command_line(&args),
            "service_script": SERVICE_SCRIPT,
            "samples": readings.iter().map(AgentReading::to_json).collect::<Vec<_>>(),
            "service_runs": service_runs.iter().map(|run| json!({
                "pid": run.pid,
                "child": run.child,
                "failed": run.failed,
                "traced": adopted.contains(&run.pid),
                "child_traced": run.child.map(|child| adopted.contains(&child)),
            })).collect::<Vec<_>>(),
            "agent_exit": match &exit {
                Ok(()) => Value::from("0"),
                Err(why) => Value::from(why.as_str()),
            },
            "pprof_files": spooled.files,
            "pprof_bytes": spooled.bytes,
            "pprof_cap_bytes": SPOOL_CAP_BYTES,
            "churn_num_gc": churn_outcome.as_ref().ok(),
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
    println!(
        "\nsoak passed: after {} minute(s) the agent's RSS is flat, its stacks are bounded, it \
         lost no records, traced {} and dropped them, kept its profile directory under {}, \
         and exited 0 on SIGTERM",
        options.minutes,
        verdict.adoption.describe(),
        kibibytes(SPOOL_CAP_BYTES)
    );
    Ok(())
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

/// The agent's arguments: both targets by command name, metrics on `port`,
/// readings every second, a profile window every 10 s into `spool_dir`
/// (capped by `config`).
fn agent_args(config: &Path, port: u16, spool_dir: &Path) -> Vec<String> {
    vec![
        "agent".to_owned(),
        "--config".to_owned(),
        config.display().to_string(),
        "--target".to_owned(),
        format!("{CHURN_TARGET}=command:{CHURN}"),
        "--target".to_owned(),
        format!("{SERVICE_TARGET}=command:{SERVICE}"),
        "--metrics".to_owned(),
        format!("127.0.0.1:{port}"),
        "--interval".to_owned(),
        INTERVAL_S.to_string(),
        "--push-interval".to_owned(),
        PUSH_INTERVAL_S.to_string(),
        "--pprof-dir".to_owned(),
        spool_dir.display().to_string(),
    ]
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

/// The profile windows in `dir` now.
fn spool(dir: &Path) -> Spool {
    let files = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.metadata().ok())
        .filter(fs::Metadata::is_file);
    files.fold(Spool::default(), |spool, file| Spool {
        files: spool.files + 1,
        bytes: spool.bytes + file.len(),
    })
}

/// The service, started every [`RESTART_EVERY`] from a thread until the
/// soak ends or [`Service::stop`].
struct Service {
    /// Dropped to stop: the thread waits on it between runs.
    stop: Sender<()>,
    thread: JoinHandle<Vec<ServiceRun>>,
}

impl Service {
    fn start(program: PathBuf, until: Instant) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            let mut runs = vec![Self::run_once(&program)];
            let mut next = Instant::now() + RESTART_EVERY;
            while next < until {
                let wait = next.saturating_duration_since(Instant::now());
                if stopped.recv_timeout(wait) != Err(RecvTimeoutError::Timeout) {
                    break;
                }
                runs.push(Self::run_once(&program));
                next += RESTART_EVERY;
            }
            runs
        });
        Self { stop, thread }
    }

    fn run_once(program: &Path) -> ServiceRun {
        let spawned = Command::new(program)
            .args(SERVICE_SCRIPT.split_whitespace())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(err) => {
                return ServiceRun {
                    pid: 0,
                    child: None,
                    failed: Some(format!("cannot start {}: {err}", program.display())),
                }
            }
        };
        let pid = child.id();
        let status = wait_timeout(&mut child, SERVICE_TIMEOUT);
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
            Ok(None) => Some(format!("still running after {SERVICE_TIMEOUT:?}; killed")),
            Err(err) => Some(format!("cannot wait for it: {err}")),
        };
        ServiceRun {
            pid,
            child: forked_child(&stdout),
            failed,
        }
    }

    /// Starts no more runs and waits for the current one to end.
    fn stop(self) -> Vec<ServiceRun> {
        drop(self.stop);
        self.thread.join().unwrap_or_default()
    }
}

/// What runs, how it is read and what is checked.
fn header(options: &Options, schedule: Schedule, memtrace: &Path, args: &[String]) -> String {
    format!(
        "{}\nmemtrace: {}\nOne memtrace agent for {} minute(s):\n  {}\n\
         Targets, copies of the test workloads under names of their own:\n  \
         {CHURN:<12}GODEBUG={} gochurn -seconds {}, for the whole soak\n  \
         {SERVICE:<12}memops {}, started every {} s\n\
         Every {} s: the agent's VmRSS, its own CPU time in the period, its /metrics \
         (memtrace_traced_processes, memtrace_stacks, memtrace_stacks_pruned_total, \
         memtrace_lost_records_total), its --pprof-dir, and the service's processes it said it \
         traces.\nChecks: RSS flat after the first {} s (the last sample at most {}% above the \
         first after it), stacks under the cap of {} (or flat), no records lost, at most {} \
         processes traced at once, every scrape answered, profile windows written and the \
         directory under its cap of {}, all but one of the service's runs and of their children \
         traced, exit 0 on SIGTERM. CPU time is not judged.\n",
        options.command_line(),
        memtrace.display(),
        options.minutes,
        command_line(args),
        Churn::Free.godebug(),
        schedule.workload_seconds(),
        SERVICE_SCRIPT,
        RESTART_EVERY.as_secs(),
        schedule.period.as_secs(),
        schedule.warmup.as_secs(),
        super::checks::FLAT_PERCENT,
        thousands(STACK_CAP),
        MAX_TRACED,
        kibibytes(SPOOL_CAP_BYTES),
    )
}

fn row_header() -> String {
    format!(
        "{:>8}  {:>11}  {:>15}  {:>6}  {:>8}  {:>7}  {:>4}  {:>18}  {:>10}",
        "elapsed",
        "agent RSS",
        "CPU in period",
        "traced",
        "stacks",
        "pruned",
        "lost",
        "pprof dir",
        "svc traced"
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
    format!(
        "{:>6} s  {:>11}  {:>15}  {traced:>6}  {stacks:>8}  {pruned:>7}  {lost:>4}  {:>18}  {:>10}",
        reading.reading.elapsed.as_secs_f64().round(),
        mebibytes(reading.reading.rss_bytes),
        format!("{cpu:.2} s ({share:.1}%)"),
        reading.spool.describe(),
        reading.adopted,
    )
}

fn summary(
    verdict: &AgentVerdict,
    readings: &[AgentReading],
    spooled: Spool,
    exit: &Result<(), String>,
    churn: &Result<u64, String>,
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
    line(
        "service traced",
        format!(
            "{} {}",
            verdict.adoption.describe(),
            mark(verdict.adoption.is_enough())
        ),
    );
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
    line(
        "churn",
        match churn {
            Ok(collections) => {
                format!("{CHURN}'s heap collected {} times", thousands(*collections))
            }
            Err(why) => format!("✗ {why}"),
        },
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
    fn the_agent_traces_both_workloads_by_command_name() {
        let args = agent_args(Path::new("/t/agent.toml"), 9464, Path::new("/t/profiles"));
        assert_eq!(
            command_line(&args),
            "memtrace agent --config /t/agent.toml --target churn=command:soak_churn --target \
             svc=command:soak_svc --metrics 127.0.0.1:9464 --interval 1 --push-interval 10 \
             --pprof-dir /t/profiles"
        );
        assert!(
            CHURN.len() <= 15 && SERVICE.len() <= 15,
            "command names are 15 bytes"
        );
    }

    #[test]
    fn agent_rows_line_up_under_the_header() {
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
            adopted: 11,
        };
        let line = row(&reading, Duration::from_secs(10));
        assert_eq!(
            line,
            "    60 s     35.0 MiB    0.89 s (8.9%)       3    12,345        0     0   \
             12 files, 512 KiB          11"
        );
        assert_eq!(line.chars().count(), row_header().chars().count());
        let failed = AgentReading {
            scrape: Err("refused".to_owned()),
            ..reading
        };
        assert!(row(&failed, Duration::from_secs(10)).contains("     -         -        -     -"));
    }
}
