//! exec, exit, fork and OOM kills of a target.
//!
//! These are rare, so classic tracepoints (stable field offsets in their
//! `format` files) are cheap enough and wake the agent at once.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use memtrace_common::{
    Counter, LifecycleKind, LifecycleRecord, RecordHeader, RecordKind, TargetState,
};

use crate::{
    maps::{count, follow_forks, immediate_wakeup, EVENTS, TARGETS},
    target::{forget_target, is_target, target_state, Current},
};

// Field offsets from events/sched/*/format and events/oom/mark_victim/format.
const EXIT_GROUP_DEAD: usize = 32;
const FORK_CHILD_PID: usize = 20;
const OOM_PID: usize = 8;
const OOM_ANON_RSS: usize = 24;
const OOM_FILE_RSS: usize = 32;
const OOM_SHMEM_RSS: usize = 40;

fn send(kind: LifecycleKind, tgid: u32, tid: u32, other_pid: u32, rss_kib: [u64; 3]) {
    let record = LifecycleRecord {
        header: RecordHeader::new(RecordKind::Lifecycle, tgid, tid, kind as u8),
        other_pid,
        _pad: 0,
        rss_kib,
    };
    if EVENTS
        .output::<LifecycleRecord>(&record, immediate_wakeup())
        .is_err()
    {
        count(Counter::LostLifecycle);
    }
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let Some(current) = Current::target() else {
        return 0;
    };
    if let Some(state) = target_state(current.tgid) {
        // SAFETY: map value pointer. The new address space has a new mm,
        // learnt again from its first RSS update.
        unsafe { (*state).mm = 0 };
    }
    send(LifecycleKind::Exec, current.tgid, current.tid, 0, [0; 3]);
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let current = Current::get();
    if !is_target(current.tgid) {
        return 0;
    }
    // SAFETY: in bounds of the sched_process_exit record.
    let group_dead = unsafe { ctx.read_at::<u8>(EXIT_GROUP_DEAD) }.unwrap_or(0) != 0;
    if !group_dead {
        // With --follow-forks a new thread's id may have been added as if it
        // were a process (the fork tracepoint cannot tell); drop it with it.
        if current.tid != current.tgid && follow_forks() {
            forget_target(current.tid);
        }
        return 0;
    }
    // Forget the process here, not in the agent: its pid may be reused at
    // once, and the new process must not be taken for the target.
    forget_target(current.tgid);
    send(LifecycleKind::Exit, current.tgid, current.tid, 0, [0; 3]);
    0
}

#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    let Some(current) = Current::target() else {
        return 0;
    };
    // SAFETY: in bounds of the sched_process_fork record.
    let child = unsafe { ctx.read_at::<i32>(FORK_CHILD_PID) }.unwrap_or(0) as u32;
    if follow_forks() {
        // Added here so the child's first faults are not missed; a thread's
        // id added this way never matches a tgid and is dropped at its exit.
        let state = TargetState {
            tgid: child,
            ..TargetState::default()
        };
        let _ = TARGETS.insert(child, state, 0);
    }
    send(
        LifecycleKind::Fork,
        current.tgid,
        current.tid,
        child,
        [0; 3],
    );
    0
}

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    // SAFETY: in bounds of the mark_victim record.
    let (victim, rss_kib) = unsafe {
        (
            ctx.read_at::<i32>(OOM_PID).unwrap_or(0) as u32,
            [
                ctx.read_at::<u64>(OOM_ANON_RSS).unwrap_or(0),
                ctx.read_at::<u64>(OOM_FILE_RSS).unwrap_or(0),
                ctx.read_at::<u64>(OOM_SHMEM_RSS).unwrap_or(0),
            ],
        )
    };
    // The OOM killer runs in whichever task ran out of memory; the victim is
    // named in the record. Its pid is a thread id, normally the leader's.
    if !is_target(victim) {
        return 0;
    }
    let current = Current::get();
    send(
        LifecycleKind::OomVictim,
        victim,
        current.tid,
        victim,
        rss_kib,
    );
    0
}
