//! The kernel's RSS counters (`tp_btf/rss_stat`).
//!
//! The target's own updates (its faults, unmaps, madvise) are already seen as
//! faults and syscalls, so they only teach us the target's `mm_struct`. An
//! update to that `mm` made by another task is the interesting case: kswapd or
//! direct reclaim taking lazily freed pages back, swap-out, the OOM reaper.
//! Those send a doorbell record; the agent measures the change in /proc.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use memtrace_common::{
    Counter, ReclaimRecord, RecordHeader, RecordKind, RECLAIM_NOTICE_INTERVAL_NS,
};

use crate::{
    maps::{count, floor, follow_forks, wakeup_flags, EVENTS, MMS},
    target::{owner_of_mm, target_state, Current},
};

#[btf_tracepoint(function = "rss_stat")]
pub fn rss_stat(ctx: BtfTracePointContext) -> i32 {
    if floor() {
        return 0;
    }
    let mm: u64 = ctx.arg(0);
    let member: i32 = ctx.arg(1);
    let current = Current::get();

    if let Some(state) = target_state(current.tgid) {
        // SAFETY: map value pointer, valid for this program run.
        let state = unsafe { &mut *state };
        // Learn the mm once per address space (exec resets it). A target can
        // also touch another process's counters (process_madvise, ptrace), so
        // only the first mm it updates is taken as its own.
        if state.mm == 0 {
            state.mm = mm;
            if follow_forks() {
                // A full MMS map only loses reclaim notices, which the agent
                // still sees in /proc at its next reconciliation.
                let _ = MMS.insert(mm, current.tgid, 0);
            }
        }
        return 0;
    }

    let Some(owner) = owner_of_mm(mm) else {
        return 0;
    };
    count(Counter::ForeignRssChanges);
    // SAFETY: map value pointer; racing CPUs can at worst both send a notice.
    let owner = unsafe { &mut *owner };
    // SAFETY: a helper with no arguments; only reached off the hot path.
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(owner.last_reclaim_ns) < RECLAIM_NOTICE_INTERVAL_NS {
        return 0;
    }
    owner.last_reclaim_ns = now;
    let record = ReclaimRecord {
        header: RecordHeader::new(RecordKind::Reclaim, owner.tgid, current.tid, member as u8),
        actor_pid: current.tgid,
        member: member as u32,
    };
    if EVENTS
        .output::<ReclaimRecord>(&record, wakeup_flags())
        .is_err()
    {
        count(Counter::LostReclaim);
    }
    0
}

/// An address space is being torn down: forget its mm, since the address may
/// be reused for another process's.
#[btf_tracepoint(function = "exit_mmap")]
pub fn exit_mmap(ctx: BtfTracePointContext) -> i32 {
    if floor() {
        return 0;
    }
    let mm: u64 = ctx.arg(0);
    if let Some(owner) = owner_of_mm(mm) {
        // SAFETY: map value pointer, valid for this program run.
        unsafe { (*owner).mm = 0 };
    }
    if follow_forks() && MMS.get_ptr(mm).is_some() {
        let _ = MMS.remove(mm);
    }
    0
}
