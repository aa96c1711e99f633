//! Page faults on user addresses: `page_fault_user` (the program touched
//! memory) and `page_fault_kernel` on a user address (the kernel touched the
//! program's memory for it, as `read(2)` into a fresh buffer does).
//!
//! This is the hot path: a fault storm runs it hundreds of thousands of times
//! a second, so it does as little as it can. BTF tracepoints are called with
//! the tracepoint's arguments directly, without the perf record a classic
//! tracepoint fills first; the record carries no timestamp (see
//! `memtrace_common::record`); and in sampled mode most faults reuse their
//! thread's last walked stack after reading a single word of user memory.

use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::PerCpuArray,
    programs::BtfTracePointContext,
};
use memtrace_common::{Counter, FaultRecord, RecordHeader, RecordKind, StackMode, NO_STACK};

use crate::{
    maps::{count, stack_mode, wakeup_flags, EVENTS},
    stacks::{Site, SiteCache, UserRegs, Walk, USER_SPACE_END},
    target::Current,
};

/// The last stack walked for a fault on this CPU, for sampled mode.
#[map]
static FAULT_SITES: PerCpuArray<SiteCache> = PerCpuArray::with_max_entries(1, 0);

#[btf_tracepoint(function = "page_fault_user")]
pub fn page_fault_user(ctx: BtfTracePointContext) -> i32 {
    let Some(current) = Current::target() else {
        return 0;
    };
    let address: u64 = ctx.arg(0);
    let regs: *const u8 = ctx.arg(1);
    let error_code: u64 = ctx.arg(2);
    let stack = fault_stack(UserRegs::from_pt_regs(regs), current.tid);
    emit(current, address, error_code, stack);
    0
}

#[btf_tracepoint(function = "page_fault_kernel")]
pub fn page_fault_kernel(ctx: BtfTracePointContext) -> i32 {
    let Some(current) = Current::target() else {
        return 0;
    };
    let address: u64 = ctx.arg(0);
    if address >= USER_SPACE_END {
        return 0;
    }
    let error_code: u64 = ctx.arg(2);
    // The fault's own registers are the kernel's; the user stack is the one
    // saved when the thread entered the kernel.
    let stack = fault_stack(UserRegs::current(), current.tid);
    emit(current, address, error_code, stack);
    0
}

fn emit(current: Current, address: u64, error_code: u64, stack: u64) {
    let Some(mut entry) = EVENTS.reserve::<FaultRecord>(0) else {
        count(Counter::LostFaults);
        return;
    };
    let mut record_header = RecordHeader::new(
        RecordKind::Fault,
        current.tgid,
        current.tid,
        error_code as u8,
    );
    record_header.stack = stack;
    entry.write(FaultRecord {
        header: record_header,
        address,
    });
    entry.submit(wakeup_flags());
}

fn fault_stack(regs: Option<UserRegs>, tid: u32) -> u64 {
    let mode = StackMode::from_u32(stack_mode());
    if mode == Some(StackMode::None) {
        return NO_STACK;
    }
    let Some(regs) = regs else {
        return NO_STACK;
    };
    if mode == Some(StackMode::All) {
        return walk(&regs);
    }
    sampled(&regs, tid)
}

fn walk(regs: &UserRegs) -> u64 {
    count(Counter::FaultStackWalks);
    Walk::start(regs).map_or(NO_STACK, Walk::store)
}

/// Reuse the thread's last stack while faults come from the same site (same
/// instruction, frame pointer and caller), for at most `STACK_PERIOD` faults;
/// walk the whole stack otherwise.
fn sampled(regs: &UserRegs, tid: u32) -> u64 {
    let site = Site {
        tid,
        ip: regs.ip,
        bp: regs.bp,
        caller: regs.caller(),
    };
    SiteCache::stack_at(&FAULT_SITES, 0, site, || walk(regs))
}
