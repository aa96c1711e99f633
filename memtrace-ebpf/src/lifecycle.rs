//! exec, exit, new processes and OOM kills of a target.
//!
//! These are rare, so classic tracepoints are cheap enough, and they wake
//! the agent at once. Their fields are not where one kernel version puts
//! them on another (a fixed `comm[16]` or a `__data_loc` string before them,
//! fields added over the years), so their offsets come from the running
//! kernel's `format` files, read by the agent at load time
//! ([`KernelLayout`]); a field this kernel lacks is not read.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use memtrace_common::{
    Counter, LifecycleKind, LifecycleRecord, RecordHeader, RecordKind, TargetState, CLONE_VM,
    FIELD_ABSENT,
};

use crate::{
    maps::{count, floor, follow_forks, immediate_wakeup, kernel_layout, EVENTS, TARGETS},
    target::{forget_target, is_target, target_state, Current},
};

/// `clone(2)`'s flag for a new thread of the same process.
const CLONE_THREAD: u64 = 0x10000;

#[inline(always)]
fn send(kind: LifecycleKind, tgid: u32, tid: u32, other_pid: u32, flags: u32, rss_kib: [u64; 3]) {
    let record = LifecycleRecord {
        header: RecordHeader::new(RecordKind::Lifecycle, tgid, tid, kind as u8),
        other_pid,
        flags,
        rss_kib,
    };
    if EVENTS
        .output::<LifecycleRecord>(&record, immediate_wakeup())
        .is_err()
    {
        count(Counter::LostLifecycle);
    }
}

/// The field at `offset` of the tracepoint's record, if this kernel has it.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    if offset == FIELD_ABSENT {
        return None;
    }
    // SAFETY: the offset is the field's, from the tracepoint's format file,
    // and the helper checks the read.
    unsafe { ctx.read_at::<T>(offset as usize) }.ok()
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    if floor() {
        return 0;
    }
    let Some((current, _)) = Current::target() else {
        return 0;
    };
    if let Some(state) = target_state(current.tgid) {
        // SAFETY: map value pointer. The new address space has a new mm,
        // learnt again from its first RSS update.
        unsafe { (*state).mm = 0 };
    }
    send(LifecycleKind::Exec, current.tgid, current.tid, 0, 0, [0; 3]);
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    if floor() {
        return 0;
    }
    let current = Current::get();
    if !is_target(current.tgid) {
        return 0;
    }
    match field::<u8>(&ctx, kernel_layout().exit_group_dead) {
        // The last thread: forget the process here, not in the agent, since
        // its pid may be reused at once, and the new process must not be
        // taken for the target.
        Some(dead) if dead != 0 => {
            forget_target(current.tgid);
            send(LifecycleKind::Exit, current.tgid, current.tid, 0, 0, [0; 3]);
        }
        Some(_) => {}
        // Kernels before `group_dead` (6.1): every thread's exit is said,
        // and the agent asks /proc whether the process is gone.
        None => send(
            LifecycleKind::ThreadExit,
            current.tgid,
            current.tid,
            0,
            0,
            [0; 3],
        ),
    }
    0
}

/// A new task: a thread of a target, or a new process forked by one.
/// `task_newtask` runs in the parent before the child first runs, and names
/// the clone flags, which tell the two apart.
#[tracepoint(category = "task", name = "task_newtask")]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    if floor() {
        return 0;
    }
    let Some((current, stacks)) = Current::target() else {
        return 0;
    };
    let fields = kernel_layout();
    let (Some(child), Some(flags)) = (
        field::<i32>(&ctx, fields.newtask_pid),
        field::<u64>(&ctx, fields.newtask_clone_flags),
    ) else {
        return 0;
    };
    if flags & CLONE_THREAD != 0 {
        return 0;
    }
    let child = child as u32;
    if follow_forks() {
        // Added here so the child's first faults are not missed.
        let state = TargetState {
            tgid: child,
            stacks: stacks as u32,
            ..TargetState::default()
        };
        if TARGETS.insert(child, state, 0).is_err() {
            count(Counter::LostTargets);
        }
    }
    send(
        LifecycleKind::Fork,
        current.tgid,
        current.tid,
        child,
        flags as u32 & CLONE_VM,
        [0; 3],
    );
    0
}

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    if floor() {
        return 0;
    }
    let fields = kernel_layout();
    // The OOM killer runs in whichever task ran out of memory; the victim is
    // named in the record. Its pid is a thread id, normally the leader's.
    let Some(victim) = field::<i32>(&ctx, fields.oom_pid) else {
        return 0;
    };
    let victim = victim as u32;
    if !is_target(victim) {
        return 0;
    }
    // Kernels before 6.8 do not say the victim's RSS.
    let rss_kib = [
        fields.oom_anon_rss,
        fields.oom_file_rss,
        fields.oom_shmem_rss,
    ]
    .map(|offset| field::<u64>(&ctx, offset).unwrap_or(0));
    let current = Current::get();
    send(
        LifecycleKind::OomVictim,
        victim,
        current.tid,
        victim,
        0,
        rss_kib,
    );
    0
}
