//! The memory cgroup the traced process is in, and its limits: a process
//! can be killed for its cgroup's memory well before the machine runs out.

use std::path::{Path, PathBuf};

/// The cgroup's memory use and limits, in bytes (`None`: no limit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMemory {
    /// The cgroup's path, as in /proc/PID/cgroup.
    pub path: String,
    pub current: u64,
    /// The hard limit (`memory.max`, v1 `memory.limit_in_bytes`).
    pub max: Option<u64>,
    /// The throttling limit (`memory.high`, v1 `memory.soft_limit_in_bytes`).
    pub high: Option<u64>,
}

/// Where the memory controller of a process lives.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Controller {
    V1(String),
    V2(String),
}

/// The memory controller's place in /proc/PID/cgroup's text. A v1 memory
/// line wins over the v2 one: on hybrid systems the unified hierarchy has no
/// memory controller.
fn controller(text: &str) -> Option<Controller> {
    let mut v2 = None;
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if controllers.split(',').any(|name| name == "memory") {
            return Some(Controller::V1(path.to_owned()));
        }
        if id == "0" && controllers.is_empty() {
            v2 = Some(Controller::V2(path.to_owned()));
        }
    }
    v2
}

/// Reads a limit file: a number of bytes, or `max`; v1 reports "no limit"
/// as a huge number (the largest page-aligned value).
fn limit(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: u64 = text.trim().parse().ok()?;
    (value < 1 << 62).then_some(value)
}

fn number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The memory cgroup of `pid`, or `None` where there is none to read.
pub fn memory_of(pid: u32) -> Option<CgroupMemory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    match controller(&text)? {
        Controller::V1(path) => {
            let dir = PathBuf::from("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
            Some(CgroupMemory {
                current: number(&dir.join("memory.usage_in_bytes"))?,
                max: limit(&dir.join("memory.limit_in_bytes")),
                high: limit(&dir.join("memory.soft_limit_in_bytes")),
                path,
            })
        }
        Controller::V2(path) => {
            let dir = PathBuf::from("/sys/fs/cgroup").join(path.trim_start_matches('/'));
            Some(CgroupMemory {
                current: number(&dir.join("memory.current"))?,
                max: limit(&dir.join("memory.max")),
                high: limit(&dir.join("memory.high")),
                path,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_memory_wins_on_hybrid_systems() {
        let text = "12:memory:/user.slice/test\n11:cpu,cpuacct:/\n0::/user.slice\n";
        assert_eq!(
            controller(text),
            Some(Controller::V1("/user.slice/test".into()))
        );
    }

    #[test]
    fn pure_v2() {
        assert_eq!(
            controller("0::/system.slice/app.service\n"),
            Some(Controller::V2("/system.slice/app.service".into()))
        );
        assert_eq!(controller("garbage"), None);
    }

    #[test]
    fn our_own_cgroup_is_readable() {
        // Every process is in a cgroup, and this project's machines mount
        // the memory controller.
        let memory = memory_of(std::process::id()).expect("a memory cgroup");
        assert!(memory.current > 0);
        assert!(memory.path.starts_with('/'));
    }
}
