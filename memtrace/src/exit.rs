//! memtrace's exit codes: one per way it can fail, so scripts can tell them
//! apart. The README lists them.

use crate::{agent::AgentError, capture::CaptureError, kernel::KernelError, session::SessionError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    Success = 0,
    /// An error not listed below.
    Failure = 1,
    /// Bad command line.
    Usage = 2,
    /// No process with that PID, or it is a kernel thread (no user memory);
    /// no such cgroup or running container.
    NoSuchProcess = 3,
    /// The target exited before memtrace could attach.
    ExitedWhileAttaching = 4,
    /// Not root, and missing CAP_BPF, CAP_PERFMON or CAP_SYS_PTRACE.
    NotPrivileged = 5,
    NoBtf = 6,
    /// tracefs is not mounted and could not be mounted.
    NoTracefs = 7,
    MissingTracepoint = 8,
    /// The kernel refused to load or attach a program, or a map.
    KernelRefused = 9,
    /// A profile or other input file is corrupt or unreadable.
    BadInput = 10,
    /// An output file cannot be written (exists without --force, a symlink,
    /// no permission).
    Output = 11,
    /// The command after `--` could not be started.
    CommandFailed = 12,
    /// Stopped by a second Ctrl-C before the final report was written.
    Interrupted = 13,
    /// The capture was written by a newer memtrace, in a format this one
    /// does not read.
    NewerCapture = 14,
}

impl From<&CaptureError> for ExitCode {
    fn from(error: &CaptureError) -> Self {
        match error {
            CaptureError::Newer { .. } => Self::NewerCapture,
            CaptureError::NotACapture | CaptureError::Corrupt { .. } | CaptureError::Read(_) => {
                Self::BadInput
            }
            CaptureError::Write(_) => Self::Output,
            CaptureError::LimitTooSmall { .. } => Self::Usage,
            CaptureError::EntryTooLarge { .. } => Self::Failure,
        }
    }
}

impl From<&SessionError> for ExitCode {
    fn from(error: &SessionError) -> Self {
        match error {
            SessionError::NoSuchProcess { .. }
            | SessionError::KernelThread { .. }
            | SessionError::Cgroup(_) => Self::NoSuchProcess,
            SessionError::ExitedWhileAttaching { .. } => Self::ExitedWhileAttaching,
            SessionError::Kernel(kernel) => kernel.into(),
            SessionError::Launch { .. } => Self::CommandFailed,
            SessionError::Output(_) => Self::Output,
            SessionError::GoPprof(_) => Self::BadInput,
            SessionError::Interrupted => Self::Interrupted,
            SessionError::Io { .. } | SessionError::Proc(_) | SessionError::Unplayable { .. } => {
                Self::Failure
            }
            SessionError::Capture { source, .. } => source.into(),
        }
    }
}

impl From<&AgentError> for ExitCode {
    fn from(error: &AgentError) -> Self {
        match error {
            AgentError::Config(_) | AgentError::PprofDir(_) => Self::BadInput,
            AgentError::Session(session) => session.into(),
            AgentError::Metrics { .. } | AgentError::Push(_) | AgentError::Io { .. } => {
                Self::Failure
            }
        }
    }
}

impl From<&KernelError> for ExitCode {
    fn from(error: &KernelError) -> Self {
        match error {
            KernelError::NotPrivileged { .. } => Self::NotPrivileged,
            KernelError::NoBtf { .. } => Self::NoBtf,
            KernelError::NoTracefs { .. } => Self::NoTracefs,
            KernelError::MissingTracepoint { .. } | KernelError::TracepointFormat { .. } => {
                Self::MissingTracepoint
            }
            KernelError::Load { .. } | KernelError::Attach { .. } | KernelError::Map { .. } => {
                Self::KernelRefused
            }
        }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        Self::from(code as u8)
    }
}
