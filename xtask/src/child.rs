//! Programs the harness starts: their output lines as they arrive (so every
//! wait has a timeout), and their own CPU time and memory.
//!
//! memtrace starts the workload as its child and reaps it, so the rusage
//! `wait4` returns for memtrace includes the workload's CPU time, and its
//! `ru_maxrss` is the larger of the two processes' peaks (the fault storm's
//! 64 MiB). memtrace's own figures are therefore read from /proc instead:
//! CPU time from /proc/PID/stat while it is a zombie (waited for with
//! WNOWAIT, before reaping), peak RSS from VmHWM sampled while it runs.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read, Write as _},
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, Sender},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::process;

/// How often to check whether a program exited.
const POLL: Duration = Duration::from_millis(10);
/// How many of a program's last lines an error quotes.
const TRANSCRIPT_LINES: usize = 20;
/// How long to wait for the output pipes to close once a program exited
/// (a grandchild could hold them open).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A line a program printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Stdout(String),
    Stderr(String),
}

impl Line {
    pub fn text(&self) -> &str {
        match self {
            Self::Stdout(text) | Self::Stderr(text) => text,
        }
    }
}

/// A running program with its stdin, stdout and stderr piped.
pub struct Started {
    child: Child,
    description: String,
    stdin: Option<ChildStdin>,
    lines: Receiver<Line>,
    seen: Vec<Line>,
    sampler: Option<Sampler>,
    /// Whether we sent SIGINT, after which dying of it is a normal exit:
    /// perf record re-raises it once it has written its file.
    interrupted: bool,
}

/// A program that exited successfully.
#[derive(Debug)]
pub struct Finished {
    /// Everything it printed on stdout.
    pub stdout: Vec<String>,
    /// Its own user + system CPU time, without its children's.
    pub cpu: Duration,
    /// What the status sampler read, if one was started.
    pub samples: Vec<Sample>,
}

impl Started {
    pub fn spawn(command: &mut Command) -> Result<Self> {
        let description = process::describe(command);
        // A harness started in the background (`cmd &`, nohup) ignores
        // SIGINT, and ignored signals stay ignored across exec: its children
        // would not hear the interrupt it sends them. They get the default.
        // SAFETY: the closure runs between fork and exec, and only calls
        // signal(2), which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start `{description}`"))?;
        let (sender, lines) = mpsc::channel();
        forward(child.stdout.take(), Line::Stdout, sender.clone());
        forward(child.stderr.take(), Line::Stderr, sender);
        Ok(Self {
            stdin: child.stdin.take(),
            child,
            description,
            lines,
            seen: Vec::new(),
            sampler: None,
            interrupted: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads the program's VmRSS and VmHWM every `period` until it exits;
    /// [`Finished::samples`] has them.
    pub fn sample_memory(&mut self, period: Duration) {
        self.sampler = Some(Sampler::start(self.pid(), period));
    }

    /// The stdout lines that arrived since the last call, without waiting,
    /// for a caller that follows a long run's output as it goes. They are
    /// handed over, not kept: [`Finished::stdout`] has only the lines that
    /// arrive after the last call. Stderr lines are kept for error messages.
    pub fn take_stdout(&mut self) -> Vec<String> {
        let mut stdout = Vec::new();
        while let Ok(line) = self.lines.try_recv() {
            match line {
                Line::Stdout(text) => stdout.push(text),
                stderr @ Line::Stderr(_) => self.seen.push(stderr),
            }
        }
        stdout
    }

    /// Waits up to `timeout` for a line for which `wanted` is true.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        wanted: impl Fn(&Line) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = wanted(&line);
                    self.seen.push(line);
                    if found {
                        return Ok(());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!("{}", self.failure(&format!("no {what} within {timeout:?}")))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("{}", self.failure(&format!("it exited before {what}")))
                }
            }
        }
    }

    /// Writes `line` to the program's stdin and closes it.
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        let mut stdin = self.stdin.take().context("stdin already closed")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("cannot write to the stdin of `{}`", self.description))
    }

    /// Whether the program has not exited yet (without reaping it, so
    /// [`Self::finish`] can still read its figures).
    pub fn is_running(&self) -> Result<bool> {
        Ok(!self.exited_unreaped()?)
    }

    /// Sends SIGINT, which bpftrace and perf take as "print and stop".
    pub fn interrupt(&mut self) -> Result<()> {
        let pid = libc::pid_t::try_from(self.pid()).context("pid out of range")?;
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // child's, which cannot be reused before we reap it.
        if unsafe { libc::kill(pid, libc::SIGINT) } != 0 {
            bail!(
                "cannot interrupt `{}`: {}",
                self.description,
                std::io::Error::last_os_error()
            );
        }
        self.interrupted = true;
        Ok(())
    }

    /// Waits up to `timeout` for the program to exit; whether it did. It is
    /// left unreaped for [`Self::finish`].
    pub fn wait_exit(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.exited_unreaped()? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            thread::sleep(POLL);
        }
    }

    /// Waits up to `timeout` for the program to exit (killing it after
    /// that), and fails unless it exited successfully.
    pub fn finish(mut self, timeout: Duration) -> Result<Finished> {
        drop(self.stdin.take());
        if !self.wait_exit(timeout)? {
            let message = self.failure(&format!("still running after {timeout:?}; killed"));
            bail!("{message}");
        }
        // Read while it is a zombie: its pid cannot be reused yet, and the
        // figures are final.
        let cpu = own_cpu(self.pid())?;
        let samples = self.sampler.take().map(Sampler::stop).unwrap_or_default();
        let status = self.child.wait()?;
        self.drain();
        let stopped_as_asked = self.interrupted && status.signal() == Some(libc::SIGINT);
        if !status.success() && !stopped_as_asked {
            bail!("{}", self.failure(&format!("it failed ({status})")));
        }
        let stdout = self
            .seen
            .drain(..)
            .filter_map(|line| match line {
                Line::Stdout(text) => Some(text),
                Line::Stderr(_) => None,
            })
            .collect();
        Ok(Finished {
            stdout,
            cpu,
            samples,
        })
    }

    /// Whether the program exited, leaving it a zombie: `waitid` with
    /// WNOWAIT reports the exit without reaping.
    fn exited_unreaped(&self) -> Result<bool> {
        // SAFETY: an all-zero siginfo_t is valid; waitid fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t.
        let result = unsafe {
            libc::waitid(
                libc::P_PID,
                self.pid(),
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if result != 0 {
            bail!(
                "cannot wait for `{}`: {}",
                self.description,
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: waitid succeeded, so si_pid is set: 0 when nothing exited.
        Ok(unsafe { info.si_pid() } != 0)
    }

    /// Collects the lines still in the pipes.
    fn drain(&mut self) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
    }

    /// An error message: the command, what went wrong, and its last lines.
    fn failure(&mut self, what: &str) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        let tail = &self.seen[self.seen.len().saturating_sub(TRANSCRIPT_LINES)..];
        let mut message = format!("`{}`: {what}", self.description);
        if !tail.is_empty() {
            message.push_str("; its last lines:");
        }
        for line in tail {
            let stream = match line {
                Line::Stdout(_) => "out",
                Line::Stderr(_) => "err",
            };
            message.push_str(&format!("\n    {stream}| {}", line.text()));
        }
        message
    }
}

impl Drop for Started {
    /// A program left running (after an error) is killed, and its sampler
    /// stopped, so nothing the harness started outlives it.
    fn drop(&mut self) {
        if let Some(sampler) = self.sampler.take() {
            sampler.stop();
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends each line read from `pipe` to `sender`, from a thread of its own.
fn forward<R: Read + Send + 'static>(
    pipe: Option<R>,
    wrap: fn(String) -> Line,
    sender: Sender<Line>,
) {
    if let Some(pipe) = pipe {
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if sender.send(wrap(line)).is_err() {
                    break;
                }
            }
        });
    }
}

/// A process's own user + system CPU time from /proc/PID/stat, which,
/// unlike wait4's rusage, leaves out the children it reaped.
pub(crate) fn own_cpu(pid: u32) -> Result<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    let ticks = cpu_ticks(&stat).with_context(|| format!("unexpected /proc/{pid}/stat: {stat}"))?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).context("no _SC_CLK_TCK")?;
    Ok(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line. The command
/// name in field 2 may hold spaces and parentheses, so fields are counted
/// from its closing parenthesis.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// One reading of a program's memory from /proc/PID/status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at: Instant,
    /// VmRSS: resident now.
    pub rss_bytes: u64,
    /// VmHWM: the most it has had resident so far.
    pub hwm_bytes: u64,
}

impl Sample {
    /// A reading of process `pid` now; `None` once it has exited (or before
    /// it is in memory).
    pub(crate) fn read(pid: u32) -> Option<Self> {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Self::parse(&status, Instant::now())
    }

    /// The reading in `status`, taken `at`. A zombie's status has no Vm
    /// lines, and one read while the program is still being exec'd says
    /// 0 kB: neither is the program's.
    fn parse(status: &str, at: Instant) -> Option<Self> {
        let rss_kib = status_kib(status, "VmRSS").filter(|&kib| kib > 0)?;
        Some(Self {
            at,
            rss_bytes: rss_kib * 1024,
            hwm_bytes: status_kib(status, "VmHWM")? * 1024,
        })
    }
}

/// Reads /proc/PID/status periodically from a thread.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    fn start(pid: u32, period: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut samples = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                samples.extend(Sample::read(pid));
                thread::sleep(period);
            }
            samples
        });
        Self { stop, thread }
    }

    fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The value of a `Field:   123 kB` line of /proc/PID/status.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_count_from_the_end_of_the_name() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
                    150 25 3 4 20 0 4 0 100 200000000 1000 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(175));
        assert_eq!(cpu_ticks("4242 (short) S 1"), None);
        assert_eq!(cpu_ticks("no name"), None);
    }

    #[test]
    fn status_fields_in_kib() {
        let status =
            "Name:\tmemtrace\nVmPeak:\t  200000 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   30720 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(40960));
        assert_eq!(status_kib(status, "VmRSS"), Some(30720));
        assert_eq!(status_kib(status, "VmSwap"), None);
        assert_eq!(
            status_kib("Name:\tzombie\nState:\tZ (zombie)\n", "VmHWM"),
            None
        );
    }

    #[test]
    fn samples_need_a_program_in_memory() {
        let at = Instant::now();
        let status = "VmHWM:\t   40960 kB\nVmRSS:\t   30720 kB\n";
        assert_eq!(
            Sample::parse(status, at),
            Some(Sample {
                at,
                rss_bytes: 30 << 20,
                hwm_bytes: 40 << 20
            })
        );
        assert_eq!(Sample::parse("VmHWM:\t 0 kB\nVmRSS:\t 0 kB\n", at), None);
        assert_eq!(Sample::parse("State:\tZ (zombie)\n", at), None);
    }

    #[test]
    fn lines_arrive_and_cpu_time_is_the_programs_own() {
        let mut started = Started::spawn(
            Command::new("sh").args(["-c", "echo ready; read go; echo \"got $go\"; echo oops >&2"]),
        )
        .unwrap();
        started
            .wait_for("ready", Duration::from_secs(10), |line| {
                *line == Line::Stdout("ready".into())
            })
            .unwrap();
        started.send_line("go").unwrap();
        let finished = started.finish(Duration::from_secs(10)).unwrap();
        assert_eq!(finished.stdout, ["ready", "got go"]);
        assert!(finished.cpu < Duration::from_secs(5));
        assert!(finished.samples.is_empty());
    }

    /// Takes stdout until some arrived (within 10 s).
    fn first_stdout(started: &mut Started) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let taken = started.take_stdout();
            if !taken.is_empty() || Instant::now() > deadline {
                return taken;
            }
            thread::sleep(POLL);
        }
    }

    #[test]
    fn stdout_taken_along_the_way_is_handed_over_once() {
        let mut started = Started::spawn(
            Command::new("sh").args(["-c", "echo one; read go; echo two; echo three"]),
        )
        .unwrap();
        assert_eq!(first_stdout(&mut started), ["one"]);
        started.send_line("go").unwrap();
        let finished = started.finish(Duration::from_secs(10)).unwrap();
        assert_eq!(finished.stdout, ["two", "three"]);
    }

    #[test]
    fn stderr_stays_for_the_error_message_when_stdout_is_taken() {
        let mut started = Started::spawn(
            Command::new("sh").args(["-c", "echo bad thing >&2; echo out; read go; exit 3"]),
        )
        .unwrap();
        assert_eq!(first_stdout(&mut started), ["out"]);
        started.send_line("go").unwrap();
        let message = started
            .finish(Duration::from_secs(10))
            .unwrap_err()
            .to_string();
        assert!(message.ends_with("err| bad thing"), "{message}");
        assert!(!message.contains("out| out"), "{message}");
    }

    #[test]
    fn failures_quote_the_last_lines() {
        let started =
            Started::spawn(Command::new("sh").args(["-c", "echo bad thing >&2; exit 3"])).unwrap();
        let message = started
            .finish(Duration::from_secs(10))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("`sh -c echo bad thing >&2; exit 3`: it failed (exit status: 3)"),
            "{message}"
        );
        assert!(message.ends_with("err| bad thing"), "{message}");
    }

    #[test]
    fn waits_time_out_and_hung_programs_are_killed() {
        let mut started = Started::spawn(Command::new("sleep").arg("30")).unwrap();
        let message = started
            .wait_for("ready", Duration::from_millis(50), |_| true)
            .unwrap_err()
            .to_string();
        assert!(message.contains("no ready within"), "{message}");
        let message = started
            .finish(Duration::from_millis(50))
            .unwrap_err()
            .to_string();
        assert!(message.contains("still running after"), "{message}");
    }

    #[test]
    fn a_program_that_exits_early_is_reported() {
        let mut started = Started::spawn(&mut Command::new("true")).unwrap();
        let message = started
            .wait_for("ready", Duration::from_secs(10), |_| true)
            .unwrap_err()
            .to_string();
        assert!(message.contains("it exited before ready"), "{message}");
    }

    #[test]
    fn a_program_interrupted_as_asked_has_finished_well() {
        let mut started = Started::spawn(Command::new("sleep").arg("30")).unwrap();
        started.sample_memory(Duration::from_millis(10));
        thread::sleep(Duration::from_millis(100));
        assert!(started.is_running().unwrap());
        started.interrupt().unwrap();
        assert!(started.wait_exit(Duration::from_secs(10)).unwrap());
        let finished = started.finish(Duration::ZERO).unwrap();
        assert!(!finished.samples.is_empty());
    }
}
