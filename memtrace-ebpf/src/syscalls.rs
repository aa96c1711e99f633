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
    helpers::{
        bpf_probe_read_user,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    macros::{btf_tracepoint, map, tracepoint},
    maps::PerCpuArray,
    programs::{BtfTracePointContext, TracePointContext},
};
use memtrace_common::{
    config::MAX_IOVECS, Counter, IoVec, ProcessMadviseRecord, RecordHeader, RecordKind, StackMode,
    SyscallOp, SyscallRecord, NO_STACK,
};

use crate::{
    maps::{count, floor, kernel_layout, stack_mode, wakeup_flags, Exclusive, EVENTS},
    stacks::{EventKind, SiteCache, StackRequest, UserRegs},
    target::Current,
};

/// x86-64 syscall numbers (x32 calls are the same with [`X32_SYSCALL_BIT`]).
const NR_MMAP: u64 = 9;
const NR_MUNMAP: u64 = 11;
const NR_BRK: u64 = 12;
const NR_MREMAP: u64 = 25;
const NR_MADVISE: u64 = 28;
const NR_PROCESS_MADVISE: u64 = 440;
const X32_SYSCALL_BIT: u64 = 0x4000_0000;

/// i386 syscall numbers, for 32-bit processes (compat syscalls).
const NR32_BRK: u64 = 45;
const NR32_OLD_MMAP: u64 = 90;
const NR32_MUNMAP: u64 = 91;
const NR32_MREMAP: u64 = 163;
const NR32_MMAP2: u64 = 192;
const NR32_MADVISE: u64 = 219;

/// Offsets in x86-64 `struct pt_regs` of the syscall number, the code
/// segment, and the arguments of a 64-bit and of a 32-bit call.
const PT_REGS_ORIG_AX: usize = 15 * 8;
const PT_REGS_CS: usize = 17 * 8;
const PT_REGS_ARGS: [usize; 6] = [14 * 8, 13 * 8, 12 * 8, 7 * 8, 9 * 8, 8 * 8];
const PT_REGS_ARGS32: [usize; 6] = [5 * 8, 11 * 8, 12 * 8, 13 * 8, 14 * 8, 4 * 8];
/// The user code segment of 32-bit code (`__USER32_CS`).
const USER32_CS: u64 = 0x23;

/// `-ERESTARTSYS` ..= `-ERESTART_RESTARTBLOCK`: the call is restarted and
/// returns again later; only that final return counts.
const RESTART_ERRORS: core::ops::RangeInclusive<i64> = -516..=-512;

/// A memory syscall as the number says, before knowing the caller's ABI.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    /// A 64-bit (or x32) call.
    Native(SyscallOp),
    /// A 32-bit call, valid only from 32-bit code; `old_mmap` passes its
    /// arguments in memory.
    Compat { op: SyscallOp, old_mmap: bool },
}

/// The call `number` may be, from the number alone: the cheapest rejection,
/// since this runs for every syscall on the machine.
fn call_of(number: u64) -> Option<Call> {
    let native = match number & !X32_SYSCALL_BIT {
        NR_MMAP => Some(SyscallOp::Mmap),
        NR_MUNMAP => Some(SyscallOp::Munmap),
        NR_BRK => Some(SyscallOp::Brk),
        NR_MREMAP => Some(SyscallOp::Mremap),
        NR_MADVISE => Some(SyscallOp::Madvise),
        NR_PROCESS_MADVISE => Some(SyscallOp::ProcessMadvise),
        _ => None,
    };
    if let Some(op) = native {
        return Some(Call::Native(op));
    }
    let (op, old_mmap) = match number {
        NR32_MMAP2 => (SyscallOp::Mmap, false),
        NR32_OLD_MMAP => (SyscallOp::Mmap, true),
        NR32_MUNMAP => (SyscallOp::Munmap, false),
        NR32_BRK => (SyscallOp::Brk, false),
        NR32_MREMAP => (SyscallOp::Mremap, false),
        NR32_MADVISE => (SyscallOp::Madvise, false),
        _ => return None,
    };
    Some(Call::Compat { op, old_mmap })
}

#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    if floor() {
        return 0;
    }
    syscall_exit(ctx.arg(0), || ctx.arg(1));
    0
}

/// The same, hooked per syscall (`--syscall-hook per-call`): the kernel runs
/// these only for the six calls, so other processes' syscalls run no
/// program; the registers are the task's saved user registers.
macro_rules! per_call {
    ($($name:ident => $event:literal),+) => {$(
        #[tracepoint(category = "syscalls", name = $event)]
        pub fn $name(ctx: TracePointContext) -> u32 {
            if floor() {
                return 0;
            }
            // SAFETY: helpers with the current task from the kernel.
            let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) };
            syscall_exit(regs as *const u8, || {
                // SAFETY: the offset is `ret`'s, from the format file.
                unsafe { ctx.read_at::<i64>(kernel_layout().syscall_exit_ret as usize) }
                    .unwrap_or(0)
            });
            0
        }
    )+};
}

per_call!(
    sys_exit_mmap => "sys_exit_mmap",
    sys_exit_munmap => "sys_exit_munmap",
    sys_exit_mremap => "sys_exit_mremap",
    sys_exit_brk => "sys_exit_brk",
    sys_exit_madvise => "sys_exit_madvise",
    sys_exit_process_madvise => "sys_exit_process_madvise"
);

/// Records a returning memory syscall of a target from its saved user
/// registers `regs` and its result (asked for only when the call is one).
#[inline(always)]
fn syscall_exit(regs: *const u8, ret: impl FnOnce() -> i64) {
    if regs.is_null() {
        return;
    }
    // SAFETY: `regs` is a `struct pt_regs *` the verifier knows as such (the
    // tracepoint's, or the task's); every offset is inside it.
    let read = |offset: usize| unsafe { core::ptr::read_volatile(regs.add(offset).cast::<u64>()) };
    let Some(call) = call_of(read(PT_REGS_ORIG_AX)) else {
        return;
    };
    let Some((current, stacks)) = Current::target() else {
        return;
    };
    let ret = ret();
    if RESTART_ERRORS.contains(&ret) {
        return;
    }
    let compat = read(PT_REGS_CS) == USER32_CS;
    // Held while user memory is read, so that a fault in those reads is not
    // taken for the process's own (see `Exclusive`).
    let running = Exclusive::take(current.tid);
    let (op, args) = match (call, compat) {
        // Calls numbered from 403 on have one number in both tables.
        (Call::Native(SyscallOp::ProcessMadvise), true) => (
            SyscallOp::ProcessMadvise,
            PT_REGS_ARGS32.map(|offset| read(offset) & 0xffff_ffff),
        ),
        // Otherwise 32-bit code's numbers mean other calls in the 64-bit
        // table, and the other way round.
        (Call::Native(_), true) | (Call::Compat { .. }, false) => return,
        (Call::Native(op), false) => (op, PT_REGS_ARGS.map(read)),
        (Call::Compat { op, old_mmap }, true) => {
            let Some(args) = compat_args(PT_REGS_ARGS32.map(read), op, old_mmap) else {
                count(Counter::LostSyscalls);
                return;
            };
            (op, args)
        }
    };
    let mut record_header =
        RecordHeader::new(RecordKind::Syscall, current.tgid, current.tid, op as u8);
    record_header.stack = match (&running, UserRegs::from_pt_regs(regs)) {
        (Ok(_), Some(user)) => StackRequest {
            regs: user,
            current,
            source: stacks,
            kind: EventKind::Syscall,
            reuse: (StackMode::from_u32(stack_mode()) != Some(StackMode::All))
                .then_some((&SYSCALL_SITES, op as u32)),
        }
        .stack(),
        _ => NO_STACK,
    };
    if op == SyscallOp::ProcessMadvise {
        record_header.kind = RecordKind::ProcessMadvise as u8;
        send_process_madvise(record_header, ret, &args, compat);
        return;
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
}

/// A 32-bit call's arguments in the 64-bit call's order and units: 32-bit
/// values, `mmap2`'s offset in pages made bytes, and the old `mmap`'s
/// arguments read from the structure it points to.
#[inline(always)]
fn compat_args(raw: [u64; 6], op: SyscallOp, old_mmap: bool) -> Option<[u64; 6]> {
    let mut args = raw.map(|arg| arg & 0xffff_ffff);
    if op == SyscallOp::Mmap {
        if old_mmap {
            // SAFETY: user read checked by the helper.
            let fields = unsafe { bpf_probe_read_user(args[0] as *const [u32; 6]) }.ok()?;
            args = fields.map(u64::from);
        } else {
            args[5] <<= 12;
        }
        // The descriptor is a signed 32-bit number (-1 for anonymous).
        args[4] = (args[4] as u32 as i32) as i64 as u64;
    }
    Some(args)
}

/// The last stack taken for each syscall on this CPU (by [`SyscallOp`]): a
/// program alternating mmap and munmap in a loop keeps both.
#[map]
static SYSCALL_SITES: PerCpuArray<SiteCache> = PerCpuArray::with_max_entries(8, 0);

/// process_madvise(pidfd, iovec *vec, vlen, advice, flags): the ranges live in
/// the caller's memory, so read the first `MAX_IOVECS` of them (32-bit
/// callers' iovecs are two 32-bit words).
#[inline(always)]
fn send_process_madvise(record_header: RecordHeader, ret: i64, args: &[u64; 6], compat: bool) {
    let Some(mut entry) = EVENTS.reserve::<ProcessMadviseRecord>(0) else {
        count(Counter::LostSyscalls);
        return;
    };
    let record = entry.as_mut_ptr();
    let vec = args[1];
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
            (*record).iov[i] = if (i as u64) >= vlen {
                IoVec::default()
            } else if compat {
                bpf_probe_read_user((vec + 8 * i as u64) as *const [u32; 2])
                    .map(|[base, len]| IoVec {
                        base: base.into(),
                        len: len.into(),
                    })
                    .unwrap_or_default()
            } else {
                bpf_probe_read_user((vec as *const IoVec).add(i)).unwrap_or_default()
            };
        }
    }
    entry.submit(wakeup_flags());
}
