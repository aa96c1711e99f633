//! User stacks, walked by frame pointers and stored once per distinct stack.
//!
//! The kernel's own walker (`bpf_get_stackid`) reads the frame that the
//! outermost function points at even when that pointer is 0 or garbage, as
//! glibc's start code and Go's `goexit` leave it, and a faulting read costs
//! about a microsecond on a VM: more than everything else the fault program
//! does. This walker checks each frame pointer before reading through it, so
//! a walk ends without a fault. Stacks go into `STACKS` under a 64-bit hash
//! of their frames; records carry the hash.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_probe_read_user,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use memtrace_common::{
    config::{DEFAULT_STACK_ENTRIES, MAX_STACK_FRAMES},
    Counter, StackFrames, NO_STACK,
};

use crate::maps::{count, stack_period};

/// User stacks by the hash of their frames. The agent copies new ones out and
/// deletes them, so the map only holds stacks it has not read yet.
#[map]
pub(crate) static STACKS: HashMap<u64, StackFrames> =
    HashMap::with_max_entries(DEFAULT_STACK_ENTRIES, 0);

/// Room for one walk per CPU: a stack is too big for the 512-byte BPF stack.
#[map]
static SCRATCH: PerCpuArray<StackFrames> = PerCpuArray::with_max_entries(1, 0);

/// Offsets in x86-64 `struct pt_regs` (arch/x86/include/uapi/asm/ptrace.h).
const PT_REGS_BP: usize = 4 * 8;
const PT_REGS_IP: usize = 16 * 8;
const PT_REGS_SP: usize = 19 * 8;

/// A frame further than this above the stack pointer is not on this stack.
const MAX_STACK_SPAN: u64 = 64 * 1024 * 1024;

/// The registers a walk starts from: the user context of the current thread.
#[derive(Clone, Copy)]
pub(crate) struct UserRegs {
    pub(crate) ip: u64,
    pub(crate) sp: u64,
    pub(crate) bp: u64,
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
        unsafe {
            Some(Self {
                ip: core::ptr::read_volatile(regs.add(PT_REGS_IP).cast::<u64>()),
                sp: core::ptr::read_volatile(regs.add(PT_REGS_SP).cast::<u64>()),
                bp: core::ptr::read_volatile(regs.add(PT_REGS_BP).cast::<u64>()),
            })
        }
    }

    /// The word on top of the stack: in a syscall wrapper that keeps no
    /// frame, the return address into its caller.
    pub(crate) fn top_of_stack(&self) -> u64 {
        // SAFETY: user read checked by the helper.
        unsafe { bpf_probe_read_user(self.sp as *const u64) }.unwrap_or(0)
    }

    /// The return address of the innermost frame (its caller), read through
    /// the frame pointer; zero when the frame pointer is not usable.
    pub(crate) fn caller(&self) -> u64 {
        if !frame_pointer_plausible(self.bp, self.sp) {
            return 0;
        }
        // SAFETY: user read checked by the helper.
        unsafe { bpf_probe_read_user((self.bp + 8) as *const u64) }.unwrap_or(0)
    }

    /// The current thread's user registers, saved on entry to the kernel.
    pub(crate) fn current() -> Option<Self> {
        // SAFETY: helpers with a valid task pointer from the kernel.
        let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) };
        Self::from_pt_regs(regs as *const u8)
    }
}

/// A walk in progress over the per-CPU scratch frames.
pub(crate) struct Walk {
    frames: *mut StackFrames,
    /// Frames known so far (`ips[..len]`).
    len: usize,
    fp: u64,
    sp: u64,
    done: bool,
}

impl Walk {
    /// Starts a walk at the instruction pointer; no user memory read yet.
    pub(crate) fn start(regs: &UserRegs) -> Option<Self> {
        let frames = SCRATCH.get_ptr_mut(0)?;
        // SAFETY: per-CPU slot; programs do not nest on one CPU here.
        unsafe {
            (*frames).ips[0] = regs.ip;
            (*frames).len = 1;
        }
        Some(Self {
            frames,
            len: 1,
            fp: regs.bp,
            sp: regs.sp,
            done: false,
        })
    }

    /// Syscall wrappers (glibc's `munmap`, Go's `runtime.madvise`) keep no
    /// frame of their own, so the frame-pointer chain skips the function
    /// that called them: the one that matters. Their return address is at
    /// the top of the stack; take it when the frame pointer shows the
    /// wrapper made no frame (it still points above the stack pointer, into
    /// the caller's frame) and the word there is not a stack address.
    pub(crate) fn add_leaf_caller(&mut self, regs: &UserRegs) {
        if self.len != 1 || regs.bp <= regs.sp {
            return;
        }
        let word = regs.top_of_stack();
        let on_stack = word >= regs.sp && word - regs.sp <= MAX_STACK_SPAN;
        if word == 0 || word >= USER_SPACE_END || on_stack {
            return;
        }
        // SAFETY: per-CPU slot owned by this walk; index 1 < MAX_STACK_FRAMES.
        unsafe {
            (*self.frames).ips[1] = word;
            (*self.frames).len = 2;
        }
        self.len = 2;
    }

    /// Follows the frame-pointer chain until `depth` frames are known or the
    /// chain ends.
    pub(crate) fn extend_to(&mut self, depth: usize) {
        // The loop variable is the slot written, so the verifier sees every
        // index bounded by the loop itself.
        for slot in 1..MAX_STACK_FRAMES {
            if slot < self.len {
                continue;
            }
            if self.done || slot >= depth {
                break;
            }
            let fp = self.fp;
            if !frame_pointer_plausible(fp, self.sp) {
                self.done = true;
                break;
            }
            // SAFETY: user read checked by the helper; `fp` was vetted above so
            // it points into this thread's stack and does not fault.
            let Ok([next_fp, return_address]) =
                (unsafe { bpf_probe_read_user(fp as *const [u64; 2]) })
            else {
                self.done = true;
                break;
            };
            if return_address == 0 {
                self.done = true;
                break;
            }
            // SAFETY: `slot < MAX_STACK_FRAMES`.
            unsafe { (*self.frames).ips[slot] = return_address };
            self.len = slot + 1;
            // Callers' frames sit above their callees'; anything else is not
            // a frame pointer.
            if next_fp <= fp {
                self.done = true;
            }
            self.fp = next_fp;
        }
        // SAFETY: per-CPU slot owned by this walk.
        unsafe { (*self.frames).len = self.len as u32 };
    }

    /// Finishes the walk and stores the stack; returns its key.
    pub(crate) fn store(mut self) -> u64 {
        self.extend_to(MAX_STACK_FRAMES);
        // SAFETY: per-CPU slot owned by this walk.
        let frames = unsafe { &*self.frames };
        let key = hash(frames);
        if STACKS.get_ptr(key).is_none() && STACKS.insert(key, frames, BPF_NOEXIST.into()).is_err()
        {
            // Another CPU may have stored the same stack meanwhile.
            if STACKS.get_ptr(key).is_none() {
                count(Counter::StacksNotStored);
            }
        }
        key
    }
}

/// A frame pointer worth following: aligned, and above the stack pointer by
/// less than any real stack, so reading through it cannot fault.
fn frame_pointer_plausible(fp: u64, sp: u64) -> bool {
    fp != 0 && fp % 8 == 0 && fp >= sp && fp - sp <= MAX_STACK_SPAN
}

/// FNV-1a over the frames; never `NO_STACK`.
fn hash(frames: &StackFrames) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for i in 0..MAX_STACK_FRAMES {
        if i >= frames.len as usize {
            break;
        }
        hash ^= frames.ips[i];
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    if hash == NO_STACK {
        1
    } else {
        hash
    }
}

/// Walks and stores the stack of the current thread, which is inside a
/// syscall.
pub(crate) fn syscall_stack(regs: &UserRegs) -> u64 {
    Walk::start(regs).map_or(NO_STACK, |mut walk| {
        walk.add_leaf_caller(regs);
        walk.store()
    })
}

/// Where an event happened, as far as one can tell without walking: the
/// thread, the instruction, the frame pointer, and the innermost caller.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Site {
    pub(crate) tid: u32,
    pub(crate) ip: u64,
    pub(crate) bp: u64,
    pub(crate) caller: u64,
}

/// The last stack walked on a CPU, and the site it was walked from: events
/// from the same site reuse it, for at most `STACK_PERIOD` events. A walk
/// reads the whole chain of frames (dozens in Go); recognising the site
/// costs at most one read.
#[repr(C)]
pub(crate) struct SiteCache {
    tid: u32,
    /// Events that may still reuse `stack`.
    remaining: u32,
    stack: u64,
    ip: u64,
    bp: u64,
    caller: u64,
}

impl SiteCache {
    /// The stack for an event at `site`, using the cache's `slot`: the
    /// cached stack while it lasts, otherwise a fresh `walk()`, cached for
    /// the events after it.
    pub(crate) fn stack_at(
        cache: &PerCpuArray<SiteCache>,
        slot: u32,
        site: Site,
        walk: impl FnOnce() -> u64,
    ) -> u64 {
        let Some(state) = cache.get_ptr_mut(slot) else {
            return walk();
        };
        // SAFETY: a per-CPU slot; programs do not nest on one CPU here.
        let state = unsafe { &mut *state };
        if state.remaining > 0
            && state.tid == site.tid
            && state.ip == site.ip
            && state.bp == site.bp
            && state.caller == site.caller
            && state.stack != NO_STACK
        {
            state.remaining -= 1;
            return state.stack;
        }
        let stack = walk();
        state.tid = site.tid;
        state.ip = site.ip;
        state.bp = site.bp;
        state.caller = site.caller;
        state.stack = stack;
        state.remaining = stack_period().saturating_sub(1);
        stack
    }
}

/// Addresses from here up belong to the kernel (x86-64, 4- and 5-level
/// paging).
pub(crate) const USER_SPACE_END: u64 = 0x00ff_ffff_ffff_f000;
