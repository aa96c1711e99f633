//! mmap, munmap, mremap, brk, madvise and process_madvise, seen as they
//! return.
//!
//! One BTF program on the raw `sys_exit` tracepoint: the saved user
//! registers still hold the call's number and arguments, and the tracepoint
//! brings the result, so a record has what was asked and what the kernel did
//! (the address mmap chose, the new break, or the error) without pairing an
//! entry and an exit through a map. It runs for every syscall on the
//! machine, which costs a load and a compare for those of other processes;
//! the per-syscall tracepoints cost several times more for the target's own
//! calls, which are the ones that must be cheap.

use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::{btf_tracepoint, map},
    maps::PerCpuArray,
    programs::BtfTracePointContext,
};
use memtrace_common::{
    config::MAX_IOVECS, Counter, IoVec, ProcessMadviseRecord, RecordHeader, RecordKind, StackMode,
    SyscallOp, SyscallRecord,
};

use crate::{
    maps::{count, stack_mode, wakeup_flags, EVENTS},
    stacks::{syscall_stack, Site, SiteCache, UserRegs},
    target::Current,
};

/// x86-64 syscall numbers.
const NR_MMAP: u64 = 9;
const NR_MUNMAP: u64 = 11;
const NR_BRK: u64 = 12;
const NR_MREMAP: u64 = 25;
const NR_MADVISE: u64 = 28;
const NR_PROCESS_MADVISE: u64 = 440;

/// Offsets in x86-64 `struct pt_regs` of the syscall number and arguments.
const PT_REGS_ORIG_AX: usize = 15 * 8;
const PT_REGS_ARGS: [usize; 6] = [14 * 8, 13 * 8, 12 * 8, 7 * 8, 9 * 8, 8 * 8];

/// `-ERESTARTSYS` ..= `-ERESTART_RESTARTBLOCK`: the call is restarted and
/// returns again later; only that final return counts.
const RESTART_ERRORS: core::ops::RangeInclusive<i64> = -516..=-512;

fn op_of(number: u64) -> Option<SyscallOp> {
    Some(match number {
        NR_MMAP => SyscallOp::Mmap,
        NR_MUNMAP => SyscallOp::Munmap,
        NR_BRK => SyscallOp::Brk,
        NR_MREMAP => SyscallOp::Mremap,
        NR_MADVISE => SyscallOp::Madvise,
        NR_PROCESS_MADVISE => SyscallOp::ProcessMadvise,
        _ => return None,
    })
}

#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    let Some(current) = Current::target() else {
        return 0;
    };
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    if regs.is_null() || RESTART_ERRORS.contains(&ret) {
        return 0;
    }
    // SAFETY: `regs` is the tracepoint's `struct pt_regs *`, which the
    // verifier knows; every offset is inside it.
    let read = |offset: usize| unsafe { core::ptr::read_volatile(regs.add(offset).cast::<u64>()) };
    let Some(op) = op_of(read(PT_REGS_ORIG_AX)) else {
        return 0;
    };
    let args = PT_REGS_ARGS.map(read);
    let mut record_header =
        RecordHeader::new(RecordKind::Syscall, current.tgid, current.tid, op as u8);
    record_header.stack = UserRegs::from_pt_regs(regs).map_or(memtrace_common::NO_STACK, |user| {
        caller_stack(&user, current.tid, op)
    });
    if op == SyscallOp::ProcessMadvise {
        record_header.kind = RecordKind::ProcessMadvise as u8;
        send_process_madvise(record_header, ret, &args);
        return 0;
    }
    let record = SyscallRecord {
        header: record_header,
        ret,
        args,
    };
    if EVENTS
        .output::<SyscallRecord>(&record, wakeup_flags())
        .is_err()
    {
        count(Counter::LostSyscalls);
    }
    0
}

/// The last stack walked for each syscall on this CPU (by [`SyscallOp`]):
/// a program alternating mmap and munmap in a loop keeps both.
#[map]
static SYSCALL_SITES: PerCpuArray<SiteCache> = PerCpuArray::with_max_entries(8, 0);

/// The calling thread's stack. Syscalls always get one; unless every stack
/// is to be walked, calls from the same site (the wrapper's instruction,
/// frame pointer and return address) reuse the last walk for at most
/// `STACK_PERIOD` calls, as faults do: an allocator calling mmap in a loop
/// would otherwise walk its whole stack each time.
fn caller_stack(regs: &UserRegs, tid: u32, op: SyscallOp) -> u64 {
    if StackMode::from_u32(stack_mode()) == Some(StackMode::All) {
        return syscall_stack(regs);
    }
    let site = Site {
        tid,
        ip: regs.ip,
        bp: regs.bp,
        caller: regs.top_of_stack(),
    };
    SiteCache::stack_at(&SYSCALL_SITES, op as u32, site, || syscall_stack(regs))
}

/// process_madvise(pidfd, iovec *vec, vlen, advice, flags): the ranges live in
/// the caller's memory, so read the first `MAX_IOVECS` of them.
fn send_process_madvise(record_header: RecordHeader, ret: i64, args: &[u64; 6]) {
    let Some(mut entry) = EVENTS.reserve::<ProcessMadviseRecord>(0) else {
        count(Counter::LostSyscalls);
        return;
    };
    let record = entry.as_mut_ptr();
    let vec = args[1] as *const IoVec;
    let vlen = args[2];
    // SAFETY: `record` points into the reserved ring-buffer slot; the user
    // reads are checked by the helper.
    unsafe {
        (*record).header = record_header;
        (*record).ret = ret;
        (*record).pidfd = args[0] as i32;
        (*record).advice = args[3] as i32;
        (*record).vlen = vlen;
        for i in 0..MAX_IOVECS {
            (*record).iov[i] = if (i as u64) < vlen {
                bpf_probe_read_user(vec.add(i)).unwrap_or_default()
            } else {
                IoVec::default()
            };
        }
    }
    entry.submit(wakeup_flags());
}
