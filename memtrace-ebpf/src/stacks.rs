//! User stacks: walked by frame pointers in the kernel where the code keeps
//! them, or copied for the agent to unwind with the binaries' own unwind
//! tables where it does not; and reused for later events at the same place.
//!
//! Frame pointers (Go, code built with `-fno-omit-frame-pointer`): the
//! kernel's own walker (`bpf_get_stackid`) reads the frame that the
//! outermost function points at even when that pointer is 0 or garbage, and
//! a faulting read costs about a microsecond on a VM; this walker checks each
//! frame pointer before reading through it. Stacks go into `STACKS` under a
//! hash of their frames; records carry the hash.
//!
//! Samples (most distribution packages and release builds): the registers
//! and up to `STACK_BYTES` of the stack go into the ring buffer as a
//! [`StackSampleRecord`], under a sample id that records carry; the agent
//! unwinds it, as `perf --call-graph dwarf` does.
//!
//! Either way a walk or copy is only done when an event comes from a new
//! place: the same thread, instruction, stack pointer and caller as the last
//! walk reuse it for at most `STACK_PERIOD` events. The caller comes from the
//! frame pointer, from the top of the stack in a syscall wrapper, or, in code
//! without frame pointers, from where the agent said the instruction's
//! return address is (`FRAME_HINTS`); with none of these, nothing is reused,
//! so the innermost function and its caller are always the event's own.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_probe_read_user, bpf_probe_read_user_buf,
        generated::{bpf_get_current_task_btf, bpf_get_smp_processor_id, bpf_task_pt_regs},
    },
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray},
};
use memtrace_common::{
    config::{
        DEFAULT_STACK_ENTRIES, MAX_FRAME_HINTS, MAX_STACK_COPY, MAX_STACK_FRAMES, STACK_COPY_PIECE,
    },
    stack_key, Counter, FrameHint, FrameHintKey, RecordHeader, RecordKind, StackFrames,
    StackSampleRecord, StackSource, NO_STACK,
};

use crate::{
    maps::{count, ring_half_full, stack_bytes, stack_period, wakeup_flags, EVENTS},
    target::Current,
};

/// User stacks by the hash of their frames. The agent copies new ones out and
/// deletes them, so the map only holds stacks it has not read yet.
#[map]
pub(crate) static STACKS: HashMap<u64, StackFrames> =
    HashMap::with_max_entries(DEFAULT_STACK_ENTRIES, 0);

/// Room for one walk per CPU: a stack is too big for the 512-byte BPF stack.
#[map]
static SCRATCH: PerCpuArray<StackFrames> = PerCpuArray::with_max_entries(1, 0);

/// Room for one stack sample per CPU: the record, then the copied stack. The
/// copy starts at the stack pointer rounded down to a piece, so it has room
/// for one piece more than the most it copies above the stack pointer.
#[repr(C)]
pub(crate) struct SampleBuffer {
    record: StackSampleRecord,
    bytes: [u8; MAX_STACK_COPY + STACK_COPY_PIECE],
}

#[map]
static SAMPLES: PerCpuArray<SampleBuffer> = PerCpuArray::with_max_entries(1, 0);

/// Stack samples taken on each CPU so far, for their ids.
#[map]
static SAMPLE_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Where the return address is at instructions of traced processes, as the
/// agent learnt from unwinding samples taken there.
#[map]
pub(crate) static FRAME_HINTS: LruHashMap<FrameHintKey, FrameHint> =
    LruHashMap::with_max_entries(MAX_FRAME_HINTS, 0);

/// Offsets in x86-64 `struct pt_regs` (arch/x86/include/uapi/asm/ptrace.h).
const PT_REGS_BP: usize = 4 * 8;
const PT_REGS_IP: usize = 16 * 8;
const PT_REGS_CS: usize = 17 * 8;
const PT_REGS_SP: usize = 19 * 8;

/// The user code segment of 32-bit (compat) code on x86-64 (`__USER32_CS`).
const USER32_CS: u64 = 0x23;

/// A frame further than this above the stack pointer is not on this stack.
const MAX_STACK_SPAN: u64 = 64 * 1024 * 1024;

/// Addresses from here up belong to the kernel (x86-64, 4- and 5-level
/// paging).
pub(crate) const USER_SPACE_END: u64 = 0x00ff_ffff_ffff_f000;

/// The registers a walk starts from: the user context of the current thread.
#[derive(Clone, Copy)]
pub(crate) struct UserRegs {
    pub(crate) ip: u64,
    pub(crate) sp: u64,
    pub(crate) bp: u64,
    /// Running 32-bit code, whose stacks memtrace does not walk.
    pub(crate) compat: bool,
}

impl UserRegs {
    /// From a `struct pt_regs *` the verifier knows as such (a BTF
    /// tracepoint's argument, or `bpf_task_pt_regs`): plain loads, which the
    /// verifier turns into fault-safe reads, cost far less than a helper call.
    pub(crate) fn from_pt_regs(regs: *const u8) -> Option<Self> {
        if regs.is_null() {
            return None;
        }
        // SAFETY: `regs` is a kernel-verified pointer to a `struct pt_regs`,
        // and every offset is inside it.
        let read =
            |offset: usize| unsafe { core::ptr::read_volatile(regs.add(offset).cast::<u64>()) };
        Some(Self {
            ip: read(PT_REGS_IP),
            sp: read(PT_REGS_SP),
            bp: read(PT_REGS_BP),
            compat: read(PT_REGS_CS) == USER32_CS,
        })
    }

    /// The current thread's user registers, saved on entry to the kernel.
    pub(crate) fn current() -> Option<Self> {
        // SAFETY: helpers with a valid task pointer from the kernel.
        let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) };
        Self::from_pt_regs(regs as *const u8)
    }

    /// The word on top of the stack: in a syscall wrapper that keeps no
    /// frame, the return address into its caller.
    pub(crate) fn top_of_stack(&self) -> u64 {
        read_user(self.sp)
    }
}

fn read_user(address: u64) -> u64 {
    // SAFETY: user read checked by the helper.
    unsafe { bpf_probe_read_user(address as *const u64) }.unwrap_or(0)
}

/// What an event is, for finding its stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// A page fault, at the faulting instruction.
    Fault,
    /// A syscall, in a wrapper that keeps no frame of its own (glibc's
    /// `munmap`, Go's `runtime.madvise`): its return address is on top of
    /// the stack, and the function that called it is the one that matters.
    Syscall,
}

/// Where and how to find one event's stack.
pub(crate) struct StackRequest<'a> {
    pub(crate) regs: UserRegs,
    pub(crate) current: Current,
    pub(crate) source: StackSource,
    pub(crate) kind: EventKind,
    /// Reuse walks for events at the same place (`--stacks sampled`), in
    /// this slot of this cache.
    pub(crate) reuse: Option<(&'a PerCpuArray<SiteCache>, u32)>,
}

impl StackRequest<'_> {
    /// The event's stack key (a walked stack's hash, or a sample id), or
    /// `NO_STACK`.
    #[inline(always)]
    pub(crate) fn stack(&self) -> u64 {
        let regs = &self.regs;
        if regs.compat || self.source == StackSource::Off {
            return NO_STACK;
        }
        if let Some((cache, slot)) = self.reuse {
            if let Some(stack) = SiteCache::reuse(cache, slot, self.current.tid, regs) {
                return stack;
            }
        }
        let tgid = self.current.tgid;
        let caller_at = match (self.source, self.kind) {
            (_, EventKind::Syscall) => Some(CallerAt::TopOfStack),
            (StackSource::FramePointers, EventKind::Fault) => Some(CallerAt::FramePointer),
            // Known only once the agent has unwound a sample taken here.
            _ => hint(tgid, regs.ip),
        };
        let stack = match self.source {
            StackSource::FramePointers => walk(regs, self.kind),
            _ if ring_half_full() => {
                count(Counter::StackSamplesSkipped);
                walk(regs, self.kind)
            }
            _ => sample(regs, self.current, self.kind),
        };
        if let (Some((cache, slot)), Some(caller_at)) = (self.reuse, caller_at) {
            let frame = caller_at.frame(regs);
            // The caller's caller: through the frame pointers of code that
            // keeps them, else where the agent said it is.
            let outer_at = match self.source {
                StackSource::FramePointers => Some(CallerAt::FramePointer),
                _ => frame.and_then(|frame| hint(tgid, read_user(frame.return_address_at))),
            };
            let outer = outer_return(frame, outer_at);
            SiteCache::store(cache, slot, self.current.tid, regs, caller_at, outer, stack);
        }
        stack
    }
}

/// Where the caller's return address is and what it holds, `(0, 0)` when
/// it cannot be found. Zeros written out on every path, not an `Option`:
/// LLVM leaves a `None`'s payload undefined, and spills that register
/// anyway, which the verifier rejects as a read of an uninitialised one.
#[inline(always)]
fn outer_return(frame: Option<CallerFrame>, outer_at: Option<CallerAt>) -> (u64, u64) {
    let (Some(frame), Some(at)) = (frame, outer_at) else {
        return (0, 0);
    };
    match at.frame(&frame.caller) {
        Some(outer) => (outer.return_address_at, outer.caller.ip),
        None => (0, 0),
    }
}

/// Where the caller of the function an event happened in is found.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallerAt {
    /// Through the frame pointer (code that keeps them).
    FramePointer,
    /// On top of the stack (a syscall wrapper that keeps no frame).
    TopOfStack,
    /// This far above the stack pointer, as the agent learnt from the unwind
    /// tables.
    Offset(u32),
}

/// A frame's return address, and the registers its caller resumes with.
#[derive(Clone, Copy)]
struct CallerFrame {
    return_address_at: u64,
    caller: UserRegs,
}

impl CallerAt {
    /// Where the return address is, from the registers alone.
    fn address(self, regs: &UserRegs) -> Option<u64> {
        match self {
            Self::FramePointer => frame_pointer_plausible(regs.bp, regs.sp).then_some(regs.bp + 8),
            Self::TopOfStack => Some(regs.sp),
            Self::Offset(offset) => Some(regs.sp + u64::from(offset)),
        }
    }

    fn read(self, regs: &UserRegs) -> u64 {
        self.address(regs).map_or(0, read_user)
    }

    /// The return address's place and the caller's registers: its stack
    /// pointer just above the return address, and its frame pointer (the
    /// saved one in a frame-pointer frame; otherwise unchanged, as code
    /// without frame pointers leaves it).
    fn frame(self, regs: &UserRegs) -> Option<CallerFrame> {
        let at = self.address(regs)?;
        let bp = match self {
            Self::FramePointer => read_user(regs.bp),
            _ => regs.bp,
        };
        Some(CallerFrame {
            return_address_at: at,
            caller: UserRegs {
                ip: read_user(at),
                sp: at + 8,
                bp,
                compat: false,
            },
        })
    }
}

/// Where the agent said the return address is at `ip` of process `tgid`.
#[inline(always)]
fn hint(tgid: u32, ip: u64) -> Option<CallerAt> {
    let key = FrameHintKey { tgid, _pad: 0, ip };
    // SAFETY: a map value, read at once.
    let hint = unsafe { FRAME_HINTS.get(&key) }?;
    Some(if hint.frame_pointer != 0 {
        CallerAt::FramePointer
    } else {
        CallerAt::Offset(hint.return_address_offset)
    })
}

/// Walks the frame-pointer chain from `regs` and stores the stack; returns
/// its key.
fn walk(regs: &UserRegs, kind: EventKind) -> u64 {
    if kind == EventKind::Fault {
        count(Counter::FaultStackWalks);
    }
    let Some(frames) = SCRATCH.get_ptr_mut(0) else {
        return NO_STACK;
    };
    // SAFETY: this CPU's slot; memtrace's programs do not nest on a CPU (see
    // `maps::Exclusive`).
    let frames = unsafe { &mut *frames };
    // The hash is taken as frames are found: a second loop over them would
    // multiply the paths the verifier has to follow by the frame count.
    frames.ips[0] = regs.ip;
    let mut hash = stack_key::add(stack_key::EMPTY, regs.ip);
    let mut len = 1;
    if kind == EventKind::Syscall {
        if let Some(caller) = wrapper_caller(regs) {
            frames.ips[1] = caller;
            hash = stack_key::add(hash, caller);
            len = 2;
        }
    }
    let mut fp = regs.bp;
    // The loop variable is the slot written, so the verifier sees every
    // index bounded by the loop itself.
    for slot in 1..MAX_STACK_FRAMES {
        if slot < len {
            continue;
        }
        if !frame_pointer_plausible(fp, regs.sp) {
            break;
        }
        // SAFETY: user read checked by the helper; `fp` was vetted above so
        // it points into this thread's stack and does not fault.
        let Ok([next_fp, return_address]) = (unsafe { bpf_probe_read_user(fp as *const [u64; 2]) })
        else {
            break;
        };
        if return_address == 0 {
            break;
        }
        frames.ips[slot] = return_address;
        hash = stack_key::add(hash, return_address);
        len = slot + 1;
        // Callers' frames sit above their callees'; anything else is not a
        // frame pointer.
        if next_fp <= fp {
            break;
        }
        fp = next_fp;
    }
    frames.len = len as u32;
    let key = stack_key::finish(hash);
    if STACKS.get_ptr(key).is_none() && STACKS.insert(key, frames, BPF_NOEXIST.into()).is_err() {
        // Another CPU may have stored the same stack meanwhile.
        if STACKS.get_ptr(key).is_none() {
            count(Counter::StacksNotStored);
        }
    }
    key
}

/// A syscall wrapper's caller, from the top of the stack, when the frame
/// pointer shows the wrapper made no frame (it still points above the stack
/// pointer, into the caller's frame) and the word there is not a stack
/// address.
#[inline(always)]
fn wrapper_caller(regs: &UserRegs) -> Option<u64> {
    if regs.bp <= regs.sp {
        return None;
    }
    let word = regs.top_of_stack();
    let on_stack = word >= regs.sp && word - regs.sp <= MAX_STACK_SPAN;
    (word != 0 && word < USER_SPACE_END && !on_stack).then_some(word)
}

/// Copies the registers and the stack into a sample record for the agent to
/// unwind; returns the sample's id.
fn sample(regs: &UserRegs, current: Current, kind: EventKind) -> u64 {
    if kind == EventKind::Fault {
        count(Counter::FaultStackSamples);
    }
    let (Some(buffer), Some(seq)) = (SAMPLES.get_ptr_mut(0), SAMPLE_SEQ.get_ptr_mut(0)) else {
        return NO_STACK;
    };
    // SAFETY: this CPU's slots; memtrace's programs do not nest on a CPU.
    let (buffer, seq) = unsafe { (&mut *buffer, &mut *seq) };
    *seq += 1;
    // SAFETY: a helper with no arguments.
    let cpu = u64::from(unsafe { bpf_get_smp_processor_id() });
    let id = stack_key::SAMPLE_BIT | (cpu & 0xfff) << 48 | (*seq & 0xffff_ffff_ffff);
    // Pieces never cross a page boundary: the copy starts at the stack
    // pointer rounded down to a piece and stops at the first piece that
    // cannot be read, which is the end of the stack mapping.
    let base = regs.sp & !(STACK_COPY_PIECE as u64 - 1);
    let wanted = (regs.sp - base) + u64::from(stack_bytes());
    let mut len = 0usize;
    for piece in 0..=MAX_STACK_COPY / STACK_COPY_PIECE {
        let offset = piece * STACK_COPY_PIECE;
        if offset as u64 >= wanted {
            break;
        }
        let dest = &mut buffer.bytes[offset..offset + STACK_COPY_PIECE];
        // SAFETY: user read checked by the helper, into this CPU's buffer.
        if unsafe { bpf_probe_read_user_buf((base + offset as u64) as *const u8, dest) }.is_err() {
            break;
        }
        len = offset + STACK_COPY_PIECE;
    }
    let mut header = RecordHeader::new(RecordKind::StackSample, current.tgid, current.tid, 0);
    header.stack = id;
    buffer.record = StackSampleRecord {
        header,
        ip: regs.ip,
        sp: regs.sp,
        bp: regs.bp,
        len: len as u32,
        _pad: 0,
    };
    let size = size_of::<StackSampleRecord>() + len.min(MAX_STACK_COPY + STACK_COPY_PIECE);
    // SAFETY: `size` is within this CPU's buffer, whose record comes first.
    let bytes =
        unsafe { core::slice::from_raw_parts((buffer as *const SampleBuffer).cast::<u8>(), size) };
    if EVENTS.output::<[u8]>(bytes, wakeup_flags()).is_err() {
        count(Counter::LostStackSamples);
        return NO_STACK;
    }
    id
}

/// A frame pointer worth following: aligned, and above the stack pointer by
/// less than any real stack, so reading through it cannot fault.
fn frame_pointer_plausible(fp: u64, sp: u64) -> bool {
    fp != 0 && fp % 8 == 0 && fp >= sp && fp - sp <= MAX_STACK_SPAN
}

/// The last stack taken on a CPU, and the place it was taken at: events at
/// the same place (thread, instruction, stack pointer, the same caller and,
/// where it can be found, the same caller's caller) reuse it, for at most
/// `STACK_PERIOD` events.
#[repr(C)]
pub(crate) struct SiteCache {
    tid: u32,
    /// Events that may still reuse `stack`.
    remaining: u32,
    stack: u64,
    ip: u64,
    sp: u64,
    caller: u64,
    caller_at: CallerAt,
    /// Where the caller's return address was (0: not found), and what it
    /// was: at the same instruction and stack pointer, the caller's frame is
    /// at the same place.
    outer_at: u64,
    outer: u64,
}

impl SiteCache {
    /// The cached stack, if this event is at the cached place and the
    /// cached stack may still be reused.
    #[inline(always)]
    fn reuse(cache: &PerCpuArray<SiteCache>, slot: u32, tid: u32, regs: &UserRegs) -> Option<u64> {
        let state = cache.get_ptr_mut(slot)?;
        // SAFETY: this CPU's slot; memtrace's programs do not nest on a CPU.
        let state = unsafe { &mut *state };
        if state.remaining == 0
            || state.tid != tid
            || state.ip != regs.ip
            || state.sp != regs.sp
            || state.stack == NO_STACK
            || state.caller_at.read(regs) != state.caller
            || (state.outer_at != 0 && read_user(state.outer_at) != state.outer)
        {
            return None;
        }
        state.remaining -= 1;
        Some(state.stack)
    }

    /// Remembers `stack` as the one taken at this place.
    #[inline(always)]
    fn store(
        cache: &PerCpuArray<SiteCache>,
        slot: u32,
        tid: u32,
        regs: &UserRegs,
        caller_at: CallerAt,
        outer: (u64, u64),
        stack: u64,
    ) {
        let Some(state) = cache.get_ptr_mut(slot) else {
            return;
        };
        // SAFETY: this CPU's slot; memtrace's programs do not nest on a CPU.
        let state = unsafe { &mut *state };
        state.tid = tid;
        state.ip = regs.ip;
        state.sp = regs.sp;
        state.caller = caller_at.read(regs);
        state.caller_at = caller_at;
        (state.outer_at, state.outer) = outer;
        state.stack = stack;
        state.remaining = stack_period().saturating_sub(1);
    }
}
