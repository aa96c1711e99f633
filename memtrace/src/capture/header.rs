//! The capture's header: the machine and the moment it was recorded on, so
//! a report elsewhere knows what it reads.

use super::{
    format::{In, Out},
    CaptureError,
};
use crate::machine::Machine;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The memtrace that recorded it.
    pub memtrace_version: String,
    /// `uname -r` of the recording machine.
    pub kernel_release: String,
    pub page_size: u64,
    pub host_name: String,
    /// The three clocks read together when recording started, in ns:
    /// entry times count from `monotonic_ns`; the other two turn them into
    /// wall-clock time and into the kernel's boot-time stamps.
    pub realtime_ns: u64,
    pub boottime_ns: u64,
    pub monotonic_ns: u64,
    /// The command line that recorded it.
    pub command: Vec<String>,
}

impl Header {
    /// This machine, now, recording with `command`.
    pub fn of_this_machine(command: Vec<String>) -> Self {
        let Machine {
            kernel_release,
            host_name,
        } = Machine::this();
        // SAFETY: sysconf has no preconditions.
        let page_size = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0);
        Self {
            memtrace_version: env!("CARGO_PKG_VERSION").to_owned(),
            kernel_release,
            page_size,
            host_name,
            realtime_ns: clock_ns(libc::CLOCK_REALTIME),
            boottime_ns: clock_ns(libc::CLOCK_BOOTTIME),
            monotonic_ns: clock_ns(libc::CLOCK_MONOTONIC),
            command,
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Out::default();
        out.text(&self.memtrace_version);
        out.text(&self.kernel_release);
        out.u64(self.page_size);
        out.text(&self.host_name);
        out.u64(self.realtime_ns);
        out.u64(self.boottime_ns);
        out.u64(self.monotonic_ns);
        out.u32(super::format::len32(self.command.len()));
        for arg in &self.command {
            out.text(arg);
        }
        out.0
    }

    /// Decodes a header's fields; bytes after them (fields a later minor
    /// revision appended) are left alone.
    pub(super) fn decode(input: &mut In<'_>) -> Result<Self, CaptureError> {
        let memtrace_version = input.text("memtrace version")?;
        let kernel_release = input.text("kernel release")?;
        let page_size = input.u64("page size")?;
        let host_name = input.text("host name")?;
        let realtime_ns = input.u64("clock")?;
        let boottime_ns = input.u64("clock")?;
        let monotonic_ns = input.u64("clock")?;
        let count = input.u32("argument count")?;
        // Each argument takes at least its length's 4 bytes: a count the
        // header cannot hold fails on reading, before allocating for it.
        let mut command = Vec::new();
        for _ in 0..count {
            command.push(input.text("argument")?);
        }
        Ok(Self {
            memtrace_version,
            kernel_release,
            page_size,
            host_name,
            realtime_ns,
            boottime_ns,
            monotonic_ns,
            command,
        })
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the struct it is given.
    unsafe { libc::clock_gettime(clock, &mut now) };
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}
