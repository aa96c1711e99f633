//! Which processes of the host the agent traces, and for which target:
//! /proc is read every second and each process matched against the
//! targets (by PID, command name, cgroup or container) when first seen and
//! again when its command name changes (a forked shell that execs the
//! program). A target that restarts is a new process, found the same way.

use std::{collections::HashMap, fs};

use super::config::{Selector, TargetConfig};
use crate::proc::{cgroup_membership, container_id_in_path, ProcessView};

/// A process seen on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    /// Its start time: a PID reused by another process is seen anew.
    start_time: u64,
    /// Its command name when last matched.
    command: String,
    /// A target selected it: it is the caller's until it ends, whatever it
    /// execs.
    selected: bool,
}

#[derive(Default)]
pub struct Selection {
    seen: HashMap<u32, Seen>,
}

/// What a target selector is checked against: the facts of one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub pid: u32,
    pub command: String,
    /// Its cgroup's path (the memory controller's, or v2's).
    pub cgroup: Option<String>,
}

/// The first of `targets` that selects the process described by `facts`.
pub fn target_of(targets: &[TargetConfig], facts: &Facts) -> Option<usize> {
    targets
        .iter()
        .position(|target| selects(&target.selector, facts))
}

fn selects(selector: &Selector, facts: &Facts) -> bool {
    let cgroup = facts.cgroup.as_deref();
    match selector {
        Selector::Pid(pid) => facts.pid == *pid,
        Selector::Command(pattern) => pattern.matches(&facts.command),
        Selector::Cgroup(path) => cgroup.is_some_and(|cgroup| {
            let path = path.trim_end_matches('/');
            cgroup == path
                || cgroup
                    .strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('/'))
        }),
        Selector::Container(id) => cgroup
            .and_then(container_id_in_path)
            .is_some_and(|found| found.starts_with(&id.to_ascii_lowercase())),
    }
}

impl Selection {
    /// Processes started (or renamed) since the last scan that a target
    /// selects, with the target's index. A process is found once: it is
    /// the caller's then, until it ends. Processes gone are forgotten.
    pub fn scan(&mut self, targets: &[TargetConfig]) -> Vec<(u32, usize)> {
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        let me = std::process::id();
        let mut alive = HashMap::with_capacity(self.seen.len());
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            let view = ProcessView::new(pid);
            let (Some(start_time), Some(command)) = (view.start_time(), view.comm()) else {
                continue;
            };
            let before = self
                .seen
                .remove(&pid)
                .filter(|seen| seen.start_time == start_time);
            let settled = before
                .as_ref()
                .is_some_and(|seen| seen.selected || seen.command == command);
            let mut selected = before.is_some_and(|seen| seen.selected);
            if !settled && view.kernel_thread_name().is_none() {
                let facts = Facts {
                    pid,
                    command: command.clone(),
                    cgroup: cgroup_membership(pid),
                };
                if let Some(target) = target_of(targets, &facts) {
                    found.push((pid, target));
                    selected = true;
                }
            }
            alive.insert(
                pid,
                Seen {
                    start_time,
                    command,
                    selected,
                },
            );
        }
        self.seen = alive;
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::AgentConfig;

    const ID: &str = "45eae9c15f399f68fdbc25b893434097883407d04188624d98dd00e23efe0703";

    fn targets() -> Vec<TargetConfig> {
        let text = format!(
            "[[target]]\nname = \"one\"\npid = 42\n\
             [[target]]\nname = \"java\"\ncommand = \"java*\"\n\
             [[target]]\nname = \"api\"\ncgroup = \"/system.slice/api.service\"\n\
             [[target]]\nname = \"web\"\ncontainer = \"{}\"\n",
            &ID[..8]
        );
        AgentConfig::parse(&text, std::path::Path::new("test.toml"))
            .unwrap()
            .targets
    }

    fn facts(pid: u32, command: &str, cgroup: &str) -> Facts {
        Facts {
            pid,
            command: command.into(),
            cgroup: Some(cgroup.into()),
        }
    }

    #[test]
    fn each_selector_picks_its_processes_and_no_others() {
        let targets = targets();
        let of = |facts: Facts| target_of(&targets, &facts);
        assert_eq!(of(facts(42, "anything", "/")), Some(0));
        assert_eq!(of(facts(7, "java", "/")), Some(1));
        assert_eq!(of(facts(7, "javac", "/user.slice")), Some(1));
        assert_eq!(of(facts(7, "ajava", "/")), None);
        assert_eq!(of(facts(7, "sh", "/system.slice/api.service")), Some(2));
        assert_eq!(
            of(facts(7, "sh", "/system.slice/api.service/worker")),
            Some(2)
        );
        assert_eq!(of(facts(7, "sh", "/system.slice/api.service2")), None);
        let in_container = format!("/machine.slice/libpod-{ID}.scope");
        assert_eq!(of(facts(7, "nginx", &in_container)), Some(3));
        let other = format!("/machine.slice/libpod-ff{}.scope", &ID[2..]);
        assert_eq!(of(facts(7, "nginx", &other)), None);
    }

    #[test]
    fn a_scan_finds_a_matching_process_once_and_forgets_the_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = child.id();
        let targets = vec![TargetConfig {
            name: "sleeper".into(),
            selector: Selector::Pid(pid),
            service_name: "sleeper".into(),
            labels: Vec::new(),
        }];
        let mut selection = Selection::default();
        assert_eq!(selection.scan(&targets), [(pid, 0)]);
        assert_eq!(selection.scan(&targets), []);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(selection.scan(&targets), []);
        assert!(!selection.seen.contains_key(&pid));
    }
}
