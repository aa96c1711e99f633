//! mmap, munmap, mremap, brk, madvise and process_madvise.
//!
//! The entry tracepoint saves the arguments and the caller's stack under the
//! thread id; the exit tracepoint adds the result and sends one record. A
//! record therefore says what was asked and what the kernel did (the address
//! mmap chose, the new break, or the error).

use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};
use memtrace_common::{
    config::MAX_IOVECS, Counter, IoVec, PendingSyscall, ProcessMadviseRecord, RecordKind,
    SyscallOp, SyscallRecord,
};

use crate::{
    maps::{count, wakeup_flags, EVENTS, PENDING},
    stacks::syscall_stack,
    target::{header, Current},
};

/// Offset of the first argument in a `syscalls:sys_enter_*` record, and of
/// `ret` in a `sys_exit_*` record (see the events' `format` files).
const FIRST_ARG_OFFSET: usize = 16;
const RET_OFFSET: usize = 16;

macro_rules! traced_syscall {
    ($enter:ident, $exit:ident, $enter_name:tt, $exit_name:tt, $op:expr, $argc:expr) => {
        #[tracepoint(category = "syscalls", name = $enter_name)]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            on_enter(&ctx, $op, $argc);
            0
        }

        #[tracepoint(category = "syscalls", name = $exit_name)]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            on_exit(&ctx, $op);
            0
        }
    };
}

traced_syscall!(
    sys_enter_mmap,
    sys_exit_mmap,
    "sys_enter_mmap",
    "sys_exit_mmap",
    SyscallOp::Mmap,
    6
);
traced_syscall!(
    sys_enter_munmap,
    sys_exit_munmap,
    "sys_enter_munmap",
    "sys_exit_munmap",
    SyscallOp::Munmap,
    2
);
traced_syscall!(
    sys_enter_mremap,
    sys_exit_mremap,
    "sys_enter_mremap",
    "sys_exit_mremap",
    SyscallOp::Mremap,
    5
);
traced_syscall!(
    sys_enter_brk,
    sys_exit_brk,
    "sys_enter_brk",
    "sys_exit_brk",
    SyscallOp::Brk,
    1
);
traced_syscall!(
    sys_enter_madvise,
    sys_exit_madvise,
    "sys_enter_madvise",
    "sys_exit_madvise",
    SyscallOp::Madvise,
    3
);
traced_syscall!(
    sys_enter_process_madvise,
    sys_exit_process_madvise,
    "sys_enter_process_madvise",
    "sys_exit_process_madvise",
    SyscallOp::ProcessMadvise,
    5
);

fn on_enter(ctx: &TracePointContext, op: SyscallOp, argc: usize) {
    let Some(current) = Current::target() else {
        return;
    };
    let mut args = [0u64; 6];
    for (i, arg) in args.iter_mut().enumerate() {
        if i < argc {
            // SAFETY: in bounds of the tracepoint record for `argc` arguments.
            *arg = unsafe { ctx.read_at::<u64>(FIRST_ARG_OFFSET + i * 8) }.unwrap_or(0);
        }
    }
    let pending = PendingSyscall {
        args,
        stack: syscall_stack(),
        op: op as u8,
        _pad: [0; 7],
    };
    if PENDING.insert(current.tid, pending, 0).is_err() {
        count(Counter::LostPending);
    }
}

fn on_exit(ctx: &TracePointContext, op: SyscallOp) {
    let Some(current) = Current::target() else {
        return;
    };
    let Some(pending) = PENDING.get_ptr(current.tid) else {
        return;
    };
    // SAFETY: the entry stays valid until removed below; copy it out first.
    let pending = unsafe { *pending };
    // Removal can only fail if the entry is already gone; nothing to undo.
    let _ = PENDING.remove(current.tid);
    if pending.op != op as u8 {
        return;
    }
    // SAFETY: `ret` is in every sys_exit record.
    let ret = unsafe { ctx.read_at::<i64>(RET_OFFSET) }.unwrap_or(0);
    let mut record_header = header(RecordKind::Syscall, current.tgid, current.tid, op as u8);
    record_header.stack = pending.stack;

    if op == SyscallOp::ProcessMadvise {
        record_header.kind = RecordKind::ProcessMadvise as u8;
        send_process_madvise(record_header, ret, &pending.args);
        return;
    }
    let record = SyscallRecord {
        header: record_header,
        ret,
        args: pending.args,
    };
    if EVENTS
        .output::<SyscallRecord>(&record, wakeup_flags())
        .is_err()
    {
        count(Counter::LostSyscalls);
    }
}

/// process_madvise(pidfd, iovec *vec, vlen, advice, flags): the ranges live in
/// the caller's memory, so read the first `MAX_IOVECS` of them.
fn send_process_madvise(record_header: memtrace_common::RecordHeader, ret: i64, args: &[u64; 6]) {
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
