//! The command line. Options go before or after `demo` alike (they are
//! global); every value is bounded, and every mistake is one plain line
//! (see [`usage`]).

mod usage;

use std::{ffi::OsString, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use memtrace_common::{
    config::{MAX_STACK_COPY, STACK_COPY_PIECE},
    StackMode,
};

pub use usage::Usage;

/// Explains a live process's memory: where every resident byte came from,
/// what was given back and how, and what RSS really holds.
#[derive(Debug, Parser)]
#[command(
    name = "memtrace",
    version,
    about,
    after_help = "Examples:\n  sudo memtrace -p 1234\n  sudo memtrace agent --config /etc/memtrace/agent.toml   (see memtrace agent --help)\n  sudo memtrace --json out.jsonl --pprof heap.pb.gz -- ./server --port 8080\n  sudo memtrace demo\n\nOn a terminal memtrace shows a live screen (keys: q quit with the final report, t in use or\nlazily freed, p write a pprof profile now); with --log, or when output is not a terminal,\nit prints a block of lines every interval instead.",
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Trace the running process PID.
    #[arg(short, long, value_name = "PID", value_parser = parse_pid, global = true)]
    pub pid: Option<u32>,

    /// Trace every process in the cgroup at PATH (a directory under
    /// /sys/fs/cgroup, v1 or v2) and its descendants, those that start
    /// later too.
    #[arg(long, value_name = "PATH", global = true)]
    pub cgroup: Option<PathBuf>,

    /// Trace every process of a container, by its id (or the start of it)
    /// or its name (podman, docker, nerdctl, crictl).
    #[arg(long, value_name = "ID|NAME", global = true)]
    pub container: Option<String>,

    #[command(flatten)]
    pub options: TraceOptions,

    /// Start CMD and trace it from its first instruction (run as the invoking
    /// user under sudo).
    #[arg(last = true, value_name = "CMD")]
    pub cmd: Vec<OsString>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace a built-in workload that maps memory, touches it, and gives it
    /// back with MADV_FREE, MADV_DONTNEED and munmap.
    Demo,
    /// Trace as usual and also write what the trace consumed to a capture
    /// FILE, to report later, elsewhere (`memtrace report FILE`).
    Record {
        /// The capture file to write.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Keep the capture within BYTES (e.g. 512M); past that it says so
        /// and records nothing more.
        #[arg(long, value_name = "BYTES", value_parser = parse_size)]
        max_size: Option<u64>,
        /// Also carry what naming reads of every code file (its symbols and
        /// debug sections, and its separate debug file), as it is mapped: a
        /// report then names what the recording did not, such as a capture
        /// cut short before its first interval.
        #[arg(long)]
        embed_debug: bool,
        /// Start CMD and record it from its first instruction.
        #[arg(last = true, value_name = "CMD")]
        cmd: Vec<OsString>,
    },
    /// Report a capture written by `memtrace record`, as the live trace
    /// would have: its final report and verdict, and the outputs asked for
    /// (--json, --pprof, --folded, --flamegraph...).
    Report {
        /// The capture file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Only say what the capture holds and where it ends.
        #[arg(long, conflicts_with_all = ["at", "from", "to"])]
        contents: bool,
        /// Report the trace as it stood SECS into the recording (as --to).
        #[arg(long, value_name = "SECS", value_parser = parse_moment, conflicts_with_all = ["from", "to"])]
        at: Option<Duration>,
        /// Measure growth from SECS into the recording, instead of from the
        /// first interval.
        #[arg(long, value_name = "SECS", value_parser = parse_moment)]
        from: Option<Duration>,
        /// Stop the report SECS into the recording: the final report,
        /// verdict and outputs are as of then.
        #[arg(long, value_name = "SECS", value_parser = parse_moment)]
        to: Option<Duration>,
        /// Measure growth against BASE: another capture of the same program
        /// (what it held at its end, by stack names), or a moment of this
        /// one in seconds (as --from).
        #[arg(long, value_name = "BASE", conflicts_with_all = ["contents", "from"])]
        diff_base: Option<PathBuf>,
    },
    /// The demo's workload itself (what `memtrace demo` runs and traces).
    #[command(hide = true)]
    DemoWorkload {
        /// Seconds to hold the memory at the end.
        #[arg(long, default_value_t = 2.0)]
        hold: f64,
    },
}

#[derive(Debug, Clone, Args)]
pub struct TraceOptions {
    /// Seconds between live updates and reconciliations with /proc, from
    /// 0.01 to 3600.
    #[arg(short, long, value_name = "SECS", default_value = "1", value_parser = parse_interval, global = true)]
    pub interval: Duration,

    /// Stop after SECS, at most a year (default: until Ctrl-C or the target
    /// exits).
    #[arg(short, long, value_name = "SECS", value_parser = parse_duration, global = true)]
    pub duration: Option<Duration>,

    /// Write one JSON object per interval and a final one to FILE (`-` for
    /// standard output); each line is in FILE as soon as it is written.
    #[arg(long, value_name = "FILE", global = true)]
    pub json: Option<PathBuf>,

    /// Write the final profile (gzipped profile.proto, for `go tool pprof`).
    #[arg(long, value_name = "FILE", global = true)]
    pub pprof: Option<PathBuf>,

    /// Also write a profile every SECS (0.01 to 86400) into --pprof-dir
    /// (timestamped names), to diff two moments with `go tool pprof
    /// -diff_base`.
    #[arg(long, value_name = "SECS", value_parser = parse_pprof_every, requires = "pprof_dir", global = true)]
    pub pprof_every: Option<Duration>,

    /// Directory for profiles written along the way (--pprof-every, the
    /// screen's `p` key); created if missing.
    #[arg(long, value_name = "DIR", global = true)]
    pub pprof_dir: Option<PathBuf>,

    /// Write resident bytes by fault stack in folded format (flame graphs).
    #[arg(long, value_name = "FILE", global = true)]
    pub folded: Option<PathBuf>,

    /// Write a flame graph (SVG) of resident bytes by fault stack.
    #[arg(long, value_name = "FILE", global = true)]
    pub flamegraph: Option<PathBuf>,

    /// Write the history of RSS and its parts, one CSV row per interval.
    #[arg(long, value_name = "FILE", global = true)]
    pub history: Option<PathBuf>,

    /// The target's Go heap profile: a net/http/pprof URL
    /// (http://127.0.0.1:6060/debug/pprof/heap) or a saved profile file.
    #[arg(long, value_name = "URL|FILE", global = true)]
    pub go_pprof: Option<String>,

    /// Allow a --go-pprof URL on a host other than this one's loopback.
    #[arg(long, requires = "go_pprof", global = true)]
    pub go_pprof_remote: bool,

    /// How page faults get their stacks.
    #[arg(long, value_enum, default_value_t = Stacks::Sampled, global = true)]
    pub stacks: Stacks,

    /// In sampled mode, the most faults from one site that reuse one walked
    /// stack (1 to 65536).
    #[arg(long, value_name = "N", default_value = "64", value_parser = parse_stack_period, global = true)]
    pub stack_period: u32,

    /// How stacks are taken: by frame pointers, by unwinding a copy of the
    /// stack with the binaries' unwind tables (code built without frame
    /// pointers), or `auto`: frame pointers only for statically linked Go
    /// programs.
    #[arg(long, value_enum, default_value_t = Unwind::Auto, global = true)]
    pub unwind: Unwind,

    /// Bytes of stack each unwound sample copies, above the stack pointer
    /// (1K to 30K; deeper stacks are cut and said so).
    #[arg(long, value_name = "BYTES", default_value = "16K", value_parser = parse_stack_bytes, global = true)]
    pub stack_bytes: u32,

    /// A directory of separate debug files (`.build-id/xx/yyyy.debug`, or
    /// the files `.gnu_debuglink` names), searched before /usr/lib/debug.
    /// Repeatable. debuginfod is asked too when DEBUGINFOD_URLS is set.
    #[arg(long, value_name = "DIR", global = true)]
    pub debug_dir: Vec<PathBuf>,

    /// Where the memory syscalls are seen: `raw`, one program on every
    /// syscall's return that gives up at once on all but six calls (32-bit
    /// programs' calls are seen too), or `per-call`, where the kernel runs a
    /// program only for those six (other processes' syscalls run none).
    #[arg(long, value_enum, default_value_t = Hook::Raw, global = true)]
    pub syscall_hook: Hook,

    /// Benchmarks: load the programs on the same tracepoints, returning at
    /// once (what any tracer there pays before doing anything).
    #[arg(long, hide = true, global = true)]
    pub floor: bool,

    /// Ring buffer size, a power of two from 4K to 1G (e.g. 16M).
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = parse_ring_size, global = true)]
    pub ring_size: u32,

    /// Also trace the children the target forks, each as its own address
    /// space.
    #[arg(long, global = true)]
    pub follow_forks: bool,

    /// Replace output files that already exist.
    #[arg(long, global = true)]
    pub force: bool,

    /// No live view; only the final report.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Print the live view as lines every interval, even on a terminal (no
    /// screen).
    #[arg(long, global = true)]
    pub log: bool,

    /// Kernel BTF file, when /sys/kernel/btf/vmlinux is missing.
    #[arg(long, value_name = "FILE", global = true)]
    pub btf: Option<PathBuf>,

    /// `memtrace record`: where the capture goes.
    #[arg(skip)]
    pub record: Option<RecordTo>,
}

/// Where `memtrace record` writes its capture, and how much it may take.
#[derive(Debug, Clone)]
pub struct RecordTo {
    pub path: PathBuf,
    pub max_size: Option<u64>,
    /// `--embed-debug`.
    pub embed_debug: bool,
    /// The command line, for the capture's header.
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Stacks {
    /// Walk a fault's stack unless its thread just faulted from the same
    /// site (same instruction, frame and caller): then reuse that stack, for
    /// at most --stack-period faults.
    Sampled,
    /// Walk every fault's stack.
    All,
    /// No stacks for faults (syscalls still get theirs).
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Hook {
    Raw,
    PerCall,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Unwind {
    /// Frame pointers for statically linked Go programs, unwind tables for
    /// everything else.
    Auto,
    /// Walk frame pointers in the kernel.
    Fp,
    /// Copy stacks and unwind them with `.eh_frame` / `.debug_frame`.
    Dwarf,
}

impl From<Stacks> for StackMode {
    fn from(stacks: Stacks) -> Self {
        match stacks {
            Stacks::Sampled => StackMode::Sampled,
            Stacks::All => StackMode::All,
            Stacks::None => StackMode::None,
        }
    }
}

/// What to trace, as the command line says it.
pub enum Invocation {
    Pid(u32),
    Command(Vec<OsString>),
    Cgroup(PathBuf),
    Container(String),
    Demo,
    /// `memtrace report FILE`: replayed, or with `--contents` only
    /// described.
    Report {
        file: PathBuf,
        contents: bool,
        window: Window,
        /// Another capture to measure growth against (`--diff-base FILE`).
        diff_base: Option<PathBuf>,
    },
    /// The demo's own workload, holding its memory for the seconds given.
    DemoWorkload(f64),
}

/// `memtrace agent`'s command line, apart from tracing's options: each
/// setting overrides the configuration file's (see deploy/agent.toml).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "memtrace agent",
    about = "Run on the host for good: trace the processes the configuration selects, as they \
             start and restart, serve Prometheus metrics and push memory profiles to Pyroscope, \
             Parca or a directory.",
    after_help = "Examples:\n  sudo memtrace agent --config /etc/memtrace/agent.toml\n  sudo memtrace agent --target api=command:'api-server*' --metrics 127.0.0.1:9464",
    disable_help_subcommand = true
)]
pub struct AgentArgs {
    /// The configuration file (default /etc/memtrace/agent.toml when it
    /// exists).
    #[arg(long, value_name = "FILE", env = "MEMTRACE_AGENT_CONFIG")]
    pub config: Option<PathBuf>,

    /// A target besides the file's: NAME=pid:PID, NAME=command:GLOB,
    /// NAME=cgroup:PATH or NAME=container:ID (repeat for more).
    #[arg(long = "target", value_name = "NAME=KIND:VALUE")]
    pub targets: Vec<String>,

    /// Serve Prometheus metrics on http://ADDR/metrics.
    #[arg(long, value_name = "ADDR", env = "MEMTRACE_METRICS")]
    pub metrics: Option<String>,

    /// Seconds between reconciliations with /proc and metric updates.
    #[arg(long, value_name = "SECS", env = "MEMTRACE_INTERVAL")]
    pub interval: Option<f64>,

    /// Seconds per profile window pushed.
    #[arg(long, value_name = "SECS", env = "MEMTRACE_PUSH_INTERVAL")]
    pub push_interval: Option<f64>,

    /// The `host` label of pushed profiles (default: the machine's host
    /// name).
    #[arg(long, value_name = "NAME", env = "MEMTRACE_HOST")]
    pub host: Option<String>,

    /// Keep every profile window as a file in DIR (at most 1G of them
    /// unless the file's [pprof_dir] says otherwise).
    #[arg(long, value_name = "DIR", env = "MEMTRACE_PPROF_DIR")]
    pub pprof_dir: Option<PathBuf>,
}

impl Cli {
    /// What the command line asks for, or why it makes no sense.
    pub fn invocation(&self) -> Result<Invocation, Usage> {
        let mut targets = Vec::new();
        if let Some(pid) = self.pid {
            targets.push(("-p", Invocation::Pid(pid)));
        }
        if let Some(path) = &self.cgroup {
            targets.push(("--cgroup", Invocation::Cgroup(path.clone())));
        }
        if let Some(container) = &self.container {
            targets.push(("--container", Invocation::Container(container.clone())));
        }
        if !self.cmd.is_empty() {
            targets.push(("-- COMMAND", Invocation::Command(self.cmd.clone())));
        }
        match (&self.command, targets.len()) {
            (Some(Command::DemoWorkload { hold }), _) => Ok(Invocation::DemoWorkload(*hold)),
            (
                Some(Command::Report {
                    file,
                    contents,
                    at,
                    from,
                    to,
                    diff_base,
                }),
                0,
            ) => {
                // A base that is no file but a number is a moment.
                let (from, diff_base) = match diff_base {
                    Some(base) if !base.is_file() => {
                        let text = base.to_string_lossy();
                        let moment = parse_moment(&text).map_err(|_| {
                            Usage::Bad(format!(
                                "--diff-base {text}: no such capture, and not a number of seconds"
                            ))
                        })?;
                        (Some(moment), None)
                    }
                    other => (*from, other.clone()),
                };
                Ok(Invocation::Report {
                    file: file.clone(),
                    contents: *contents,
                    window: Window::new(from, at.or(*to))?,
                    diff_base,
                })
            }
            (Some(Command::Report { .. }), _) => Err(Usage::Bad(
                "`report` reads a capture: leave out -p, --cgroup, --container and -- COMMAND"
                    .to_owned(),
            )),
            (Some(Command::Demo), 0) => Ok(Invocation::Demo),
            (Some(Command::Demo), _) => Err(Usage::Bad(
                "`demo` traces its own workload: leave out -p, --cgroup, --container and -- COMMAND"
                    .to_owned(),
            )),
            (None | Some(Command::Record { .. }), 0) => Err(Usage::Bad(
                "say what to trace: -p PID, --cgroup PATH, --container ID|NAME, -- COMMAND [ARGS...], \
                 or `memtrace demo` (see --help)"
                    .to_owned(),
            )),
            (None | Some(Command::Record { .. }), 1) => Ok(targets.remove(0).1),
            (None | Some(Command::Record { .. }), _) => Err(Usage::Bad(format!(
                "{} cannot go together: trace one process, cgroup, container or command",
                targets
                    .iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(" and ")
            ))),
        }
    }
}

/// Parses `args` (the program name first) into a command line, or the one
/// line that says what is wrong with it.
pub fn parse<I, T>(args: I) -> Result<Cli, Usage>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut cli = Cli::try_parse_from(&args).map_err(|err| Usage::from_clap(&err))?;
    if let Some(Command::Record {
        output,
        max_size,
        embed_debug,
        cmd,
    }) = &mut cli.command
    {
        // `record ... -- CMD` names the command the way `-- CMD` does.
        cli.cmd.append(cmd);
        cli.options.record = Some(RecordTo {
            path: output.clone(),
            max_size: *max_size,
            embed_debug: *embed_debug,
            command: args
                .iter()
                .map(|arg| arg.to_string_lossy().into_owned())
                .collect(),
        });
    }
    Ok(cli)
}

/// `memtrace agent ARGS...` as its own command line, or `None` when the
/// arguments (the program name first) are not the agent's.
pub fn parse_agent(args: &[OsString]) -> Option<Result<AgentArgs, Usage>> {
    if args.get(1).is_none_or(|arg| arg != "agent") {
        return None;
    }
    Some(AgentArgs::try_parse_from(&args[1..]).map_err(|err| Usage::from_clap(&err)))
}

fn parse_pid(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(0) => Err("needs a process ID above 0".to_owned()),
        Ok(pid) => Ok(pid),
        Err(_) => Err(format!("needs a process ID (a whole number), not `{text}`")),
    }
}

/// Seconds from `least` to `most` (`most_words` says the most in words).
fn seconds_within(text: &str, least: f64, most: f64, most_words: &str) -> Result<Duration, String> {
    let range = format!("from {least} to {most} ({most_words})");
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("needs a number of seconds {range}, not `{text}`"))?;
    if !(least..=most).contains(&seconds) {
        return Err(format!("needs a number of seconds {range}, not {text}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `--interval`: 10 ms (reading /proc more often would be most of the
/// work) to an hour.
fn parse_interval(text: &str) -> Result<Duration, String> {
    seconds_within(text, 0.01, 3600.0, "an hour")
}

/// `--duration`: up to a year.
fn parse_duration(text: &str) -> Result<Duration, String> {
    seconds_within(text, 0.01, 365.0 * 86400.0, "a year")
}

/// A moment in a recording (`report --at`, `--from`, `--to`): from its
/// start to a year into it.
fn parse_moment(text: &str) -> Result<Duration, String> {
    seconds_within(text, 0.0, 365.0 * 86400.0, "a year")
}

/// The part of a recording a report covers, in time since recording began.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// Growth is measured from the first interval at or after this.
    pub from: Option<Duration>,
    /// The report stops at the last step at or before this.
    pub to: Option<Duration>,
}

impl Window {
    fn new(from: Option<Duration>, to: Option<Duration>) -> Result<Self, Usage> {
        if let (Some(from), Some(to)) = (from, to) {
            if from >= to {
                return Err(Usage::Bad(format!(
                    "--from {} s must come before --to {} s",
                    from.as_secs_f64(),
                    to.as_secs_f64()
                )));
            }
        }
        Ok(Self { from, to })
    }
}

/// `--pprof-every`: up to a day.
fn parse_pprof_every(text: &str) -> Result<Duration, String> {
    seconds_within(text, 0.01, 86400.0, "a day")
}

fn parse_stack_period(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(period @ 1..=65536) => Ok(period),
        _ => Err(format!(
            "needs a whole number from 1 to 65536, not `{text}`"
        )),
    }
}

/// Sizes like `16M`, `256K`, `1G` or plain bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("needs a size such as 16M, not `{text}`"))?;
    let shift = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return Err(format!("needs a size in K, M or G, not `{text}`")),
    };
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("needs a smaller size than {text}"))
}

fn parse_stack_bytes(text: &str) -> Result<u32, String> {
    let bytes = parse_size(text)?;
    let piece = STACK_COPY_PIECE as u64;
    if !(piece..=MAX_STACK_COPY as u64).contains(&bytes) {
        return Err(format!(
            "needs a size from 1K to {}K, not {text}",
            MAX_STACK_COPY / 1024
        ));
    }
    // Whole pieces: the kernel copies in pieces.
    Ok(bytes.div_ceil(piece) as u32 * STACK_COPY_PIECE as u32)
}

fn parse_ring_size(text: &str) -> Result<u32, String> {
    let bytes = parse_size(text)?;
    if !bytes.is_power_of_two() || !(4096..=1 << 30).contains(&bytes) {
        return Err(format!("needs a power of two from 4K to 1G, not {text}"));
    }
    Ok(bytes as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("12Q").is_err());
        assert!(parse_ring_size("3M").is_err());
        assert_eq!(parse_ring_size("8k"), Ok(8192));
        assert_eq!(parse_stack_bytes("8K"), Ok(8192));
        assert_eq!(parse_stack_bytes("1500"), Ok(2048));
        assert!(parse_stack_bytes("31K").is_err());
        assert_eq!(parse_stack_bytes("30K"), Ok(30 * 1024));
        assert!(parse_stack_bytes("100").is_err());
    }

    #[test]
    fn seconds_are_bounded() {
        assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("0.01"), Ok(Duration::from_millis(10)));
        assert_eq!(parse_interval("3600"), Ok(Duration::from_secs(3600)));
        for bad in ["-1", "nan", "inf", "0", "1e-10", "1e20", "3601", "x"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("1e19").is_err());
        assert_eq!(
            parse_duration("31536000"),
            Ok(Duration::from_secs(31_536_000))
        );
        assert!(parse_pprof_every("86401").is_err());
        assert_eq!(parse_stack_period("65536"), Ok(65536));
        assert!(parse_stack_period("0").is_err());
        assert!(parse_stack_period("65537").is_err());
        assert_eq!(parse_pid("0"), Err("needs a process ID above 0".to_owned()));
    }

    #[test]
    fn pid_and_command_conflict() {
        assert!(parse(["memtrace", "-p", "1", "--", "true"])
            .unwrap()
            .invocation()
            .is_err());
        let cli = parse(["memtrace", "--json", "-", "--", "ls", "-l"]).unwrap();
        assert_eq!(cli.cmd, vec![OsString::from("ls"), OsString::from("-l")]);
    }

    #[test]
    fn options_go_before_or_after_demo() {
        for args in [
            &[
                "memtrace", "-q", "-i", "0.5", "--folded", "d.folded", "demo",
            ][..],
            &[
                "memtrace", "demo", "-q", "-i", "0.5", "--folded", "d.folded",
            ][..],
            &[
                "memtrace", "-q", "demo", "-i", "0.5", "--folded", "d.folded",
            ][..],
        ] {
            let cli = parse(args.iter().copied()).unwrap();
            assert!(matches!(cli.invocation(), Ok(Invocation::Demo)), "{args:?}");
            assert!(cli.options.quiet, "{args:?}");
            assert_eq!(cli.options.interval, Duration::from_millis(500), "{args:?}");
            assert_eq!(
                cli.options.folded,
                Some(PathBuf::from("d.folded")),
                "{args:?}"
            );
        }
        let cli = parse(["memtrace", "demo"]).unwrap();
        assert_eq!(cli.options.interval, Duration::from_secs(1));
        let cli = parse(["memtrace", "-p", "7", "demo"]).unwrap();
        assert!(cli.invocation().is_err());
    }

    #[test]
    fn record_takes_a_target_and_report_takes_none() {
        use std::path::Path;
        let cli = parse([
            "memtrace",
            "record",
            "-o",
            "c.mtc",
            "--max-size",
            "1M",
            "-d",
            "2",
            "-p",
            "7",
        ])
        .unwrap();
        assert!(matches!(cli.invocation(), Ok(Invocation::Pid(7))));
        let record = cli.options.record.unwrap();
        assert_eq!(record.path, PathBuf::from("c.mtc"));
        assert_eq!(record.max_size, Some(1 << 20));
        assert_eq!(record.command[..2], ["memtrace", "record"]);
        let cli = parse(["memtrace", "record", "-o", "c.mtc", "--", "ls", "-l"]).unwrap();
        assert!(matches!(cli.invocation(), Ok(Invocation::Command(argv)) if argv == ["ls", "-l"]));
        assert!(parse(["memtrace", "record", "-o", "c.mtc"])
            .unwrap()
            .invocation()
            .is_err());
        assert!(parse(["memtrace", "record", "-p", "7"]).is_err());
        assert!(
            matches!(parse(["memtrace", "report"]), Err(Usage::Bad(line)) if line == "report needs the capture FILE to read")
        );
        let cli = parse(["memtrace", "report", "c.mtc"]).unwrap();
        assert!(
            matches!(cli.invocation(), Ok(Invocation::Report { file, contents: false, window, diff_base: None }) if file == Path::new("c.mtc") && window == Window::default())
        );
        assert!(cli.options.record.is_none());
        assert!(parse(["memtrace", "report", "c.mtc", "-p", "7"])
            .unwrap()
            .invocation()
            .is_err());
    }

    #[test]
    fn a_report_window_and_its_base_read_as_moments_or_a_capture() {
        let invocation = |args: &[&str]| {
            let mut argv = vec!["memtrace", "report", "c.mtc"];
            argv.extend_from_slice(args);
            parse(argv).and_then(|cli| cli.invocation())
        };
        let at = Duration::from_secs(3);
        assert!(matches!(
            invocation(&["--at", "3"]),
            Ok(Invocation::Report { window: Window { from: None, to: Some(to) }, .. }) if to == at
        ));
        // A base that is a number and no file is a moment, as --from.
        assert!(matches!(
            invocation(&["--diff-base", "3", "--to", "5"]),
            Ok(Invocation::Report { window: Window { from: Some(from), .. }, diff_base: None, .. }) if from == at
        ));
        let base = tempfile::NamedTempFile::new().unwrap();
        let base_path = base.path().to_str().unwrap();
        assert!(matches!(
            invocation(&["--diff-base", base_path]),
            Ok(Invocation::Report { diff_base: Some(path), .. }) if path == base.path()
        ));
        for bad in [
            &["--from", "5", "--to", "5"][..],
            &["--diff-base", "/no/such/capture"],
            &["--at", "-1"],
            &["--at", "3", "--to", "4"],
            &["--diff-base", "3", "--from", "1"],
        ] {
            assert!(matches!(invocation(bad), Err(Usage::Bad(_))), "{bad:?}");
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
