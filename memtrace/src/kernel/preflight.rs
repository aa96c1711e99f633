//! Checks that this machine can run memtrace, each failing with a message that
//! says what is missing and how to fix it, before anything is loaded.

use std::{fs, io, path::Path};

use aya::Btf;

use super::KernelError;

/// Where tracefs lives on current kernels; the older debugfs location is
/// accepted too.
const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";
pub const SYSFS_BTF: &str = "/sys/kernel/btf/vmlinux";

const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Root, or the capabilities that loading tracing programs and reading other
/// processes' /proc files need.
pub fn check_privileges() -> Result<(), KernelError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    let mut missing = Vec::new();
    if !(has(CAP_BPF) || has(CAP_SYS_ADMIN)) {
        missing.push("CAP_BPF");
    }
    if !(has(CAP_PERFMON) || has(CAP_SYS_ADMIN)) {
        missing.push("CAP_PERFMON");
    }
    if !has(CAP_SYS_PTRACE) {
        missing.push("CAP_SYS_PTRACE");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(KernelError::NotPrivileged {
            missing: missing.join(", "),
        })
    }
}

/// The kernel's BTF at `path` (sysfs's, or a file for kernels whose BTF
/// ships separately), needed by the BTF tracepoints.
pub fn load_btf(path: &Path) -> Result<Btf, KernelError> {
    Btf::parse_file(path, aya::Endianness::default()).map_err(|_| KernelError::NoBtf {
        path: path.to_owned(),
    })
}

/// The mounted tracefs root, mounting it when it is not mounted (root can;
/// otherwise the error says how).
pub fn ensure_tracefs() -> Result<&'static Path, KernelError> {
    for root in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(root).join("events").is_dir() {
            return Ok(Path::new(root));
        }
    }
    mount_tracefs().map_err(|err| KernelError::NoTracefs {
        reason: err.to_string(),
    })?;
    Ok(Path::new(TRACEFS))
}

fn mount_tracefs() -> io::Result<()> {
    // SAFETY: all pointers are valid NUL-terminated strings; no data argument.
    let result = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    if Path::new(TRACEFS).join("events").is_dir() {
        Ok(())
    } else {
        Err(io::Error::other("mounted, but it has no events directory"))
    }
}

/// Fails naming the first of `tracepoints` (category, name) this kernel lacks.
pub fn check_tracepoints(tracefs: &Path, tracepoints: &[(&str, &str)]) -> Result<(), KernelError> {
    for (category, name) in tracepoints {
        if !tracefs.join("events").join(category).join(name).is_dir() {
            return Err(KernelError::MissingTracepoint {
                category: (*category).to_owned(),
                name: (*name).to_owned(),
            });
        }
    }
    Ok(())
}
