//! A cgroup as the thing traced (`--cgroup`, `--container`): every process
//! in it and its descendants, those already there when memtrace attaches,
//! those it finds later, until the cgroup is removed.

use std::path::PathBuf;

use memtrace_common::StackSource;

use super::{traced::Traced, SessionError};
use crate::{
    capture::{CaptureError, In, Out},
    kernel::CgroupFilter,
    proc::{resolve_container, Cgroup, CgroupMemory, CgroupVersion, ProcError},
    report::{
        merge::Past,
        whole::{ContainerMeta, Member, Subject},
    },
};

/// A container id as runtimes show it: its first 12 digits.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// The cgroup asked for.
#[derive(Debug, Clone)]
pub enum CgroupTarget {
    Path(PathBuf),
    Container(String),
}

pub struct CgroupScope {
    pub cgroup: Cgroup,
    pub subject: Subject,
    /// What its earlier snapshots leave (history, trend).
    pub past: Past,
    /// Processes that ended since attaching.
    pub ended: u64,
    /// Of them, those the OOM killer took, as they were last seen.
    pub oom_killed: Vec<Member>,
    /// Its figures as last read (kept for the report once it is gone).
    pub last_memory: Option<CgroupMemory>,
}

impl CgroupScope {
    pub fn open(target: &CgroupTarget) -> Result<Self, SessionError> {
        let (cgroup, container) = match target {
            CgroupTarget::Path(path) => (Cgroup::open(path)?, None),
            CgroupTarget::Container(given) => {
                let container = resolve_container(given)?;
                (container.cgroup.clone(), Some(container))
            }
        };
        let subject = Subject {
            label: match &container {
                Some(container) => container
                    .name
                    .clone()
                    .unwrap_or_else(|| short_id(&container.id).to_owned()),
                None => cgroup.path.clone(),
            },
            path: cgroup.path.clone(),
            container: container.map(|container| ContainerMeta {
                id: container.id,
                name: container.name,
                runtime: container.runtime.map(str::to_owned),
            }),
        };
        Ok(Self {
            cgroup,
            subject,
            past: Past::default(),
            ended: 0,
            oom_killed: Vec::new(),
            last_memory: None,
        })
    }

    /// What a capture keeps of the cgroup opened: enough to report it where
    /// neither the cgroup nor its container runtime is (see
    /// [`CgroupScope::described`]).
    pub fn describe(&self) -> Vec<u8> {
        let mut out = Out::default();
        let cgroup = &self.cgroup;
        out.text(&cgroup.path);
        out.bytes(&[match cgroup.version {
            CgroupVersion::V1 => 1,
            CgroupVersion::V2 => 2,
        }]);
        out.text(&cgroup.memory_dir.to_string_lossy());
        out.optional_text(
            cgroup
                .unified_dir
                .as_ref()
                .map(|dir| dir.to_string_lossy())
                .as_deref(),
        );
        out.text(&self.subject.label);
        let container = self.subject.container.as_ref();
        out.bytes(&[u8::from(container.is_some())]);
        if let Some(container) = container {
            out.text(&container.id);
            out.optional_text(container.name.as_deref());
            out.optional_text(container.runtime.as_deref());
        }
        out.0
    }

    /// The cgroup a capture describes (see [`CgroupScope::describe`]).
    pub fn described(bytes: &[u8]) -> Result<Self, CaptureError> {
        let mut input = In::new(bytes, 0);
        let path = input.text("cgroup path")?;
        let version = match input.u8("cgroup version")? {
            1 => CgroupVersion::V1,
            _ => CgroupVersion::V2,
        };
        let memory_dir = PathBuf::from(input.text("memory directory")?);
        let unified_dir = input.optional_text("unified directory")?.map(PathBuf::from);
        let label = input.text("label")?;
        let container = if input.u8("container")? != 0 {
            Some(ContainerMeta {
                id: input.text("container id")?,
                name: input.optional_text("container name")?,
                runtime: input.optional_text("container runtime")?,
            })
        } else {
            None
        };
        Ok(Self {
            subject: Subject {
                label,
                path: path.clone(),
                container,
            },
            cgroup: Cgroup {
                path,
                version,
                memory_dir,
                unified_dir,
            },
            past: Past::default(),
            ended: 0,
            oom_killed: Vec::new(),
            last_memory: None,
        })
    }

    /// How the kernel side finds the cgroup's processes by itself: through
    /// its v2 directory. Without one (a host with only cgroup v1), the
    /// processes are found by reading the cgroup's process lists each
    /// interval, and their children by following forks.
    pub fn kernel_filter(&self, stacks: StackSource) -> Option<CgroupFilter> {
        self.cgroup
            .unified_dir
            .clone()
            .map(|dir| CgroupFilter { dir, stacks })
    }

    /// Adds the cgroup's processes not traced yet to `traced`, before the
    /// programs are attached; they are seeded afterwards (see
    /// [`Self::seed_all`]).
    pub fn add_all(&self, traced: &mut Traced) -> Result<Vec<u32>, SessionError> {
        let pids = self.cgroup.processes().map_err(|source| SessionError::Io {
            what: "cannot list the cgroup's processes",
            source,
        })?;
        let mut added = Vec::new();
        for pid in pids {
            if traced.get(pid).is_none() && traced.add_running(pid).is_ok() {
                added.push(pid);
            }
        }
        Ok(added)
    }

    /// Seeds processes just added; those gone meanwhile are dropped.
    pub fn seed_all(traced: &mut Traced, pids: &[u32]) -> Result<(), SessionError> {
        for &pid in pids {
            match traced.seed(pid) {
                Ok(()) => {}
                Err(SessionError::Proc(ProcError::Gone { .. })) => {
                    traced.remove(pid);
                }
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    /// Takes in processes that came into the cgroup without the kernel
    /// side seeing them yet (or, without a v2 directory, at all).
    pub fn rescan(&self, traced: &mut Traced) -> Result<(), SessionError> {
        let added = self.add_all(traced)?;
        for &pid in &added {
            if let Some(process) = traced.get(pid) {
                eprintln!("memtrace: found pid {pid} ({})", process.command);
            }
        }
        Self::seed_all(traced, &added)
    }

    /// Whether the cgroup is gone (its container stopped).
    pub fn removed(&self) -> bool {
        !self.cgroup.exists()
    }
}
