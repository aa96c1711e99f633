//! Page faults on user addresses: `page_fault_user` (the program touched
//! memory) and `page_fault_kernel` on a user address (the kernel touched the
//! program's memory for it, as `read(2)` into a fresh buffer does).
//!
//! This is the hot path: a fault storm runs it hundreds of thousands of times
//! a second, so it does as little as it can. BTF tracepoints are called with
//! the tracepoint's arguments directly, without the perf record a classic
//! tracepoint fills first; the record carries no timestamp (see
//! `memtrace_common::record`); and in sampled mode most faults reuse the
//! stack of the last fault at the same place after reading a single word of
//! user memory.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, generated::bpf_get_current_task_btf},
    macros::{btf_tracepoint, map},
    maps::PerCpuArray,
    programs::BtfTracePointContext,
};
use memtrace_common::{
    config::{MAX_STACK_COPY, STACK_COPY_PIECE},
    Counter, FaultRecord, RecordHeader, RecordKind, StackMode, StackSource, FIELD_ABSENT, NO_STACK,
};

use crate::{
    maps::{count, floor, kernel_layout, stack_mode, wakeup_flags, Busy, Exclusive, EVENTS},
    stacks::{EventKind, SiteCache, StackRequest, UserRegs, USER_SPACE_END},
    target::Current,
};

/// The last stack taken for a fault on this CPU, for sampled mode.
#[map]
static FAULT_SITES: PerCpuArray<SiteCache> = PerCpuArray::with_max_entries(1, 0);

#[btf_tracepoint(function = "page_fault_user")]
pub fn page_fault_user(ctx: BtfTracePointContext) -> i32 {
    if floor() {
        return 0;
    }
    let Some((current, stacks)) = Current::target() else {
        return 0;
    };
    let address: u64 = ctx.arg(0);
    let regs: *const u8 = ctx.arg(1);
    let error_code: u64 = ctx.arg(2);
    fault(
        current,
        stacks,
        address,
        error_code,
        UserRegs::from_pt_regs(regs),
    );
    0
}

#[btf_tracepoint(function = "page_fault_kernel")]
pub fn page_fault_kernel(ctx: BtfTracePointContext) -> i32 {
    if floor() {
        return 0;
    }
    let Some((current, stacks)) = Current::target() else {
        return 0;
    };
    let address: u64 = ctx.arg(0);
    if address >= USER_SPACE_END {
        return 0;
    }
    // The fault's own registers are the kernel's; the user stack is the one
    // saved when the thread entered the kernel.
    let regs = UserRegs::current();
    if pagefault_disabled() && regs.is_some_and(|regs| in_stack_copy(address, &regs)) {
        return 0;
    }
    let error_code: u64 = ctx.arg(2);
    fault(current, stacks, address, error_code, regs);
    0
}

/// Whether a fault taken with page faults disabled is a tracer's copy of
/// the task's stack (another memtrace's, perf's; memtrace's own are told
/// by `Exclusive`): such a read gives up rather than map the page, so the
/// process took no fault. Other faults with page faults disabled are the
/// kernel's own copies to user memory (`read(2)` into a fresh buffer on
/// recent kernels), which map the page right after through
/// `fault_in_writeable`, with no fault of their own to see.
#[inline(always)]
fn in_stack_copy(address: u64, regs: &UserRegs) -> bool {
    address >= regs.sp && address - regs.sp < (MAX_STACK_COPY + STACK_COPY_PIECE) as u64
}

/// Whether the current task takes this fault with page faults disabled.
fn pagefault_disabled() -> bool {
    let offset = kernel_layout().task_pagefault_disabled;
    if offset == FIELD_ABSENT {
        return false;
    }
    // SAFETY: a helper with no arguments, and a kernel read the helper
    // checks, at the member's offset from BTF.
    unsafe {
        let task = bpf_get_current_task_btf().cast::<u8>();
        bpf_probe_read_kernel(task.add(offset as usize).cast::<i32>()).is_ok_and(|count| count != 0)
    }
}

#[inline(always)]
fn fault(
    current: Current,
    stacks: StackSource,
    address: u64,
    error_code: u64,
    regs: Option<UserRegs>,
) {
    let stack = match Exclusive::take(current.tid) {
        Ok(_running) => fault_stack(current, stacks, regs),
        // One of our own reads of this thread's memory faulted: the process
        // took no fault.
        Err(Busy::Nested) => return,
        Err(Busy::Preempted) => NO_STACK,
    };
    let Some(mut entry) = EVENTS.reserve::<FaultRecord>(0) else {
        count(Counter::LostFaults);
        return;
    };
    let mut header = RecordHeader::new(
        RecordKind::Fault,
        current.tgid,
        current.tid,
        error_code as u8,
    );
    header.stack = stack;
    entry.write(FaultRecord { header, address });
    entry.submit(wakeup_flags());
}

#[inline(always)]
fn fault_stack(current: Current, stacks: StackSource, regs: Option<UserRegs>) -> u64 {
    let mode = StackMode::from_u32(stack_mode());
    let Some(regs) = regs else {
        return NO_STACK;
    };
    let reuse = match mode {
        Some(StackMode::None) | None => return NO_STACK,
        Some(StackMode::All) => None,
        Some(StackMode::Sampled) => Some((&FAULT_SITES, 0)),
    };
    StackRequest {
        regs,
        current,
        source: stacks,
        kind: EventKind::Fault,
        reuse,
    }
    .stack()
}
