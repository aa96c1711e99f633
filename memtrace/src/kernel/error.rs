use std::path::PathBuf;

/// Why memtrace could not start tracing. Each variant maps to its own exit
/// code (see `crate::exit`), so scripts can tell them apart.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE); missing: {missing}")]
    NotPrivileged { missing: String },

    #[error("no kernel BTF at {path}: this kernel was built without CONFIG_DEBUG_INFO_BTF, or pass --btf FILE")]
    NoBtf { path: PathBuf },

    #[error("tracefs is not mounted at /sys/kernel/tracing and could not be mounted ({reason}); as root run: mount -t tracefs nodev /sys/kernel/tracing")]
    NoTracefs { reason: String },

    #[error("this kernel has no tracepoint {category}:{name}, which memtrace needs")]
    MissingTracepoint { category: String, name: String },

    #[error("tracepoint {tracepoint} is not laid out as memtrace expects: {detail}")]
    TracepointFormat { tracepoint: String, detail: String },

    #[error("the kernel refused program {program}: {detail}")]
    Load { program: String, detail: String },

    #[error("could not attach program {program}: {detail}")]
    Attach { program: String, detail: String },

    #[error("kernel map {map}: {detail}")]
    Map { map: &'static str, detail: String },
}
