//! Why a session ended in failure. `main` turns each variant into its own
//! exit code (see [`crate::exit`]), so scripts can tell them apart.

use crate::{
    capture::CaptureError,
    gopprof::GoPprofError,
    kernel::KernelError,
    proc::{CgroupError, ProcError},
    safe_file::OutputError,
};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no process with PID {pid}")]
    NoSuchProcess { pid: u32 },
    #[error("pid {pid} is a kernel thread ({name}); memtrace traces user processes")]
    KernelThread { pid: u32, name: String },
    #[error("process {pid} exited while memtrace was attaching")]
    ExitedWhileAttaching { pid: u32 },
    /// `--cgroup` or `--container` names nothing that can be traced.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("cannot start {command}: {source}")]
    Launch {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Output(#[from] OutputError),
    /// `--go-pprof` names a bad file or URL.
    #[error(transparent)]
    GoPprof(#[from] GoPprofError),
    /// Ctrl-C while memtrace was already stopping: it stops at once and
    /// writes nothing.
    #[error("interrupted; no report written")]
    Interrupted,
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// A capture that reads but cannot be played back.
    #[error("capture {}: {why}", path.display())]
    Unplayable {
        path: std::path::PathBuf,
        why: String,
    },
    #[error("capture {}: {source}", path.display())]
    Capture {
        path: std::path::PathBuf,
        #[source]
        source: CaptureError,
    },
}
