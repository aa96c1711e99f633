//! The command line.

use std::{ffi::OsString, num::NonZeroU32, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use memtrace_common::{
    config::{MAX_STACK_COPY, STACK_COPY_PIECE},
    StackMode,
};

/// Explains a live process's memory: where every resident byte came from,
/// what was given back and how, and what RSS really holds.
#[derive(Debug, Parser)]
#[command(
    name = "memtrace",
    version,
    about,
    after_help = "Examples:\n  sudo memtrace -p 1234\n  sudo memtrace --json out.jsonl --pprof heap.pb.gz -- ./server --port 8080\n  sudo memtrace demo",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Trace the running process PID.
    #[arg(short, long, value_name = "PID", conflicts_with = "cmd")]
    pub pid: Option<NonZeroU32>,

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
    Demo {
        #[command(flatten)]
        options: Box<TraceOptions>,
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
    /// Seconds between live updates and reconciliations with /proc.
    #[arg(short, long, value_name = "SECS", default_value = "1", value_parser = parse_seconds)]
    pub interval: Duration,

    /// Stop after SECS (default: until Ctrl-C or the target exits).
    #[arg(short, long, value_name = "SECS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,

    /// Write one JSON object per interval and a final one to FILE (`-` for
    /// standard output).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write the final profile (gzipped profile.proto, for `go tool pprof`).
    #[arg(long, value_name = "FILE")]
    pub pprof: Option<PathBuf>,

    /// Also write a profile every SECS into DIR (timestamped names), to diff
    /// two moments with `go tool pprof -diff_base`.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, requires = "pprof_dir")]
    pub pprof_every: Option<Duration>,

    /// Directory for `--pprof-every` snapshots.
    #[arg(long, value_name = "DIR", requires = "pprof_every")]
    pub pprof_dir: Option<PathBuf>,

    /// Write resident bytes by fault stack in folded format (flame graphs).
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,

    /// Write a flame graph (SVG) of resident bytes by fault stack.
    #[arg(long, value_name = "FILE")]
    pub flamegraph: Option<PathBuf>,

    /// Write the history of RSS and its parts, one CSV row per interval.
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,

    /// The target's Go heap profile: a net/http/pprof URL
    /// (http://127.0.0.1:6060/debug/pprof/heap) or a saved profile file.
    #[arg(long, value_name = "URL|FILE")]
    pub go_pprof: Option<String>,

    /// Allow a --go-pprof URL on a host other than this one's loopback.
    #[arg(long, requires = "go_pprof")]
    pub go_pprof_remote: bool,

    /// How page faults get their stacks.
    #[arg(long, value_enum, default_value_t = Stacks::Sampled)]
    pub stacks: Stacks,

    /// In sampled mode, the most faults from one site that reuse one walked
    /// stack.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub stack_period: u32,

    /// How stacks are taken: by frame pointers, by unwinding a copy of the
    /// stack with the binaries' unwind tables (code built without frame
    /// pointers), or `auto`: frame pointers only for statically linked Go
    /// programs.
    #[arg(long, value_enum, default_value_t = Unwind::Auto)]
    pub unwind: Unwind,

    /// Bytes of stack each unwound sample copies, above the stack pointer
    /// (1K to 16K; deeper stacks are cut and said so).
    #[arg(long, value_name = "BYTES", default_value = "8K", value_parser = parse_stack_bytes)]
    pub stack_bytes: u32,

    /// A directory of separate debug files (`.build-id/xx/yyyy.debug`, or
    /// the files `.gnu_debuglink` names), searched before /usr/lib/debug.
    /// Repeatable. debuginfod is asked too when DEBUGINFOD_URLS is set.
    #[arg(long, value_name = "DIR")]
    pub debug_dir: Vec<PathBuf>,

    /// Ring buffer size, a power of two (e.g. 16M).
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = parse_ring_size)]
    pub ring_size: u32,

    /// Also trace the children the target forks, each as its own address
    /// space.
    #[arg(long)]
    pub follow_forks: bool,

    /// Replace output files that already exist.
    #[arg(long)]
    pub force: bool,

    /// No live view; only the final report.
    #[arg(short, long)]
    pub quiet: bool,

    /// Kernel BTF file, when /sys/kernel/btf/vmlinux is missing.
    #[arg(long, value_name = "FILE")]
    pub btf: Option<PathBuf>,
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

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(format!("`{text}` must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Sizes like `16M`, `256K`, `1G` or plain bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. 16M)"))?;
    let shift = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (use K, M or G)")),
    };
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

fn parse_stack_bytes(text: &str) -> Result<u32, String> {
    let bytes = parse_size(text)?;
    let piece = STACK_COPY_PIECE as u64;
    if !(piece..=MAX_STACK_COPY as u64).contains(&bytes) {
        return Err(format!(
            "`{text}`: the stack copy must be from 1K to {}K",
            MAX_STACK_COPY / 1024
        ));
    }
    // Whole pieces: the kernel copies in pieces.
    Ok(bytes.div_ceil(piece) as u32 * STACK_COPY_PIECE as u32)
}

fn parse_ring_size(text: &str) -> Result<u32, String> {
    let bytes = parse_size(text)?;
    if !bytes.is_power_of_two() || !(4096..=1 << 30).contains(&bytes) {
        return Err(format!(
            "`{text}`: the ring buffer size must be a power of two from 4K to 1G"
        ));
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
        assert!(parse_stack_bytes("32K").is_err());
        assert!(parse_stack_bytes("100").is_err());
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("nan").is_err());
    }

    #[test]
    fn pid_and_command_conflict() {
        assert!(Cli::try_parse_from(["memtrace", "-p", "1", "--", "true"]).is_err());
        let cli = Cli::try_parse_from(["memtrace", "--json", "-", "--", "ls", "-l"]).unwrap();
        assert_eq!(cli.cmd, vec![OsString::from("ls"), OsString::from("-l")]);
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
