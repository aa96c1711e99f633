//! Who is being traced.

use aya_ebpf::bindings::BPF_NOEXIST;
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use memtrace_common::{
    Counter, LifecycleKind, LifecycleRecord, RecordHeader, RecordKind, StackSource, TargetState,
};

use crate::maps::{
    cgroup_mode, cgroup_stacks, count, follow_forks, immediate_wakeup, CGROUP, EVENTS, MMS,
    PRIMARY, TARGETS,
};

/// The calling thread, split into process and thread ids.
#[derive(Clone, Copy)]
pub(crate) struct Current {
    pub(crate) tgid: u32,
    pub(crate) tid: u32,
}

impl Current {
    pub(crate) fn get() -> Self {
        let pid_tgid = bpf_get_current_pid_tgid();
        Self {
            tgid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
        }
    }

    /// The caller if its process is traced, and how its stacks are taken.
    /// All threads of a target share its tgid, so threads started after
    /// attaching are covered with no work.
    // Inlined: a function returning an `Option` gets a BTF union the
    // kernel's BTF loader refuses.
    #[inline(always)]
    pub(crate) fn target() -> Option<(Self, StackSource)> {
        let current = Self::get();
        let state = match target_state(current.tgid) {
            Some(state) => state,
            None if cgroup_mode() => discover(current)?,
            None => return None,
        };
        // SAFETY: map value pointer, valid for this program run.
        let stacks = StackSource::from_u32(unsafe { (*state).stacks }).unwrap_or(StackSource::Off);
        Some((current, stacks))
    }
}

pub(crate) fn is_target(tgid: u32) -> bool {
    target_state(tgid).is_some()
}

/// The current process, if it is under the traced cgroup: from now on a
/// target, and the agent is told so. Every process of the host not yet
/// traced comes here in cgroup mode, so the cheap test comes first.
#[inline(always)]
fn discover(current: Current) -> Option<*mut TargetState> {
    if !CGROUP.current_task_under_cgroup(0).unwrap_or(false) {
        return None;
    }
    let state = TargetState {
        tgid: current.tgid,
        stacks: cgroup_stacks(),
        ..TargetState::default()
    };
    if TARGETS
        .insert(current.tgid, state, BPF_NOEXIST.into())
        .is_err()
        && TARGETS.get_ptr(current.tgid).is_none()
    {
        count(Counter::LostTargets);
        return None;
    }
    let record = LifecycleRecord {
        header: RecordHeader::new(
            RecordKind::Lifecycle,
            current.tgid,
            current.tid,
            LifecycleKind::Found as u8,
        ),
        other_pid: 0,
        flags: 0,
        rss_kib: [0; 3],
    };
    if EVENTS
        .output::<LifecycleRecord>(&record, immediate_wakeup())
        .is_err()
    {
        count(Counter::LostLifecycle);
    }
    TARGETS.get_ptr_mut(current.tgid)
}

/// The kernel's state for traced process `tgid`, if it is traced.
#[inline(always)]
pub(crate) fn target_state(tgid: u32) -> Option<*mut TargetState> {
    if let Some(primary) = PRIMARY.get_ptr_mut(0) {
        // SAFETY: array value pointer, valid for this program run.
        if tgid != 0 && unsafe { (*primary).tgid } == tgid {
            return Some(primary);
        }
    }
    if follow_forks() {
        return TARGETS.get_ptr_mut(tgid);
    }
    None
}

/// The traced process whose address space is `mm`, if any.
pub(crate) fn owner_of_mm(mm: u64) -> Option<*mut TargetState> {
    if let Some(primary) = PRIMARY.get_ptr_mut(0) {
        // SAFETY: array value pointer, valid for this program run.
        let (tgid, primary_mm) = unsafe { ((*primary).tgid, (*primary).mm) };
        if tgid != 0 && primary_mm == mm {
            return Some(primary);
        }
    }
    if !follow_forks() {
        return None;
    }
    let owner = MMS.get_ptr(mm)?;
    // SAFETY: map value pointer, valid for this program run.
    TARGETS.get_ptr_mut(unsafe { *owner })
}

/// Stop tracing `tgid`: its pid may be reused at once by another process.
pub(crate) fn forget_target(tgid: u32) {
    if let Some(primary) = PRIMARY.get_ptr_mut(0) {
        // SAFETY: array value pointer, valid for this program run.
        let primary = unsafe { &mut *primary };
        if primary.tgid == tgid {
            primary.tgid = 0;
            return;
        }
    }
    if TARGETS.get_ptr(tgid).is_some() {
        let _ = TARGETS.remove(tgid);
    }
}
