//! Who is being traced.

use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use memtrace_common::{StackSource, TargetState};

use crate::maps::{follow_forks, MMS, PRIMARY, TARGETS};

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
    pub(crate) fn target() -> Option<(Self, StackSource)> {
        let current = Self::get();
        let state = target_state(current.tgid)?;
        // SAFETY: map value pointer, valid for this program run.
        let stacks = StackSource::from_u32(unsafe { (*state).stacks }).unwrap_or(StackSource::Off);
        Some((current, stacks))
    }
}

pub(crate) fn is_target(tgid: u32) -> bool {
    target_state(tgid).is_some()
}

/// The kernel's state for traced process `tgid`, if it is traced.
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
