//! Loading memtrace's kernel programs, attaching them, and taking out the maps
//! the agent reads.

use aya::{
    maps::{Array, CgroupArray, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use memtrace_common::{
    config, Counter, FrameHint, FrameHintKey, KernelLayout, StackFrames, StackMode, StackSource,
    TargetState, FIELD_ABSENT,
};

use super::{btf, preflight, tracefs, KernelError};

/// The object built from `memtrace-ebpf` by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace"));

/// A program and the tracepoint it attaches to: (program, category, name).
type Hook = (&'static str, &'static str, &'static str);

/// Classic tracepoints, always attached.
const CLASSIC: &[Hook] = &[
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sched_process_exit", "sched", "sched_process_exit"),
    ("task_newtask", "task", "task_newtask"),
    ("mark_victim", "oom", "mark_victim"),
];

/// BTF tracepoints, always attached. The category is only used to check
/// that the tracepoint exists.
const BTF: &[Hook] = &[
    ("page_fault_user", "exceptions", "page_fault_user"),
    ("page_fault_kernel", "exceptions", "page_fault_kernel"),
    ("rss_stat", "kmem", "rss_stat"),
    ("exit_mmap", "mmap", "exit_mmap"),
];

/// The memory syscalls, seen on the raw `sys_exit` (a BTF tracepoint).
const SYSCALLS_RAW: &[Hook] = &[("sys_exit", "raw_syscalls", "sys_exit")];

/// The memory syscalls, one classic tracepoint each.
const SYSCALLS_PER_CALL: &[Hook] = &[
    ("sys_exit_mmap", "syscalls", "sys_exit_mmap"),
    ("sys_exit_munmap", "syscalls", "sys_exit_munmap"),
    ("sys_exit_mremap", "syscalls", "sys_exit_mremap"),
    ("sys_exit_brk", "syscalls", "sys_exit_brk"),
    ("sys_exit_madvise", "syscalls", "sys_exit_madvise"),
    (
        "sys_exit_process_madvise",
        "syscalls",
        "sys_exit_process_madvise",
    ),
];

/// Where the memory syscalls are seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyscallHook {
    /// One BTF program on `raw_syscalls:sys_exit`: it runs for every
    /// syscall on the machine and returns at once for all but six numbers;
    /// 32-bit processes' calls are seen too.
    #[default]
    Raw,
    /// One classic program per call on `syscalls:sys_exit_*`: the kernel
    /// runs them only for those calls, at the cost of a trace record each;
    /// 32-bit processes' calls are not traced there.
    PerCall,
}

impl SyscallHook {
    fn hooks(self) -> &'static [Hook] {
        match self {
            Self::Raw => SYSCALLS_RAW,
            Self::PerCall => SYSCALLS_PER_CALL,
        }
    }
}

/// The classic and BTF tracepoints memtrace attaches to with `hook`.
fn hooks(hook: SyscallHook) -> (Vec<Hook>, Vec<Hook>) {
    let mut classic = CLASSIC.to_vec();
    let mut btf = BTF.to_vec();
    match hook {
        SyscallHook::Raw => btf.extend_from_slice(hook.hooks()),
        SyscallHook::PerCall => classic.extend_from_slice(hook.hooks()),
    }
    (classic, btf)
}

/// Every tracepoint memtrace attaches to with `hook`, as (category, name).
pub fn required_tracepoints(hook: SyscallHook) -> Vec<(&'static str, &'static str)> {
    let (classic, btf) = hooks(hook);
    classic
        .iter()
        .chain(&btf)
        .map(|&(_, category, name)| (category, name))
        .collect()
}

#[derive(Clone, Debug)]
pub struct TracerOptions {
    pub stack_mode: StackMode,
    /// Faults between stack walks of one thread in sampled mode.
    pub stack_period: u32,
    pub follow_forks: bool,
    /// Ring buffer size in bytes: a power of two, at least one page.
    pub ring_bytes: u32,
    /// Distinct user stacks the kernel can hold.
    pub stack_entries: u32,
    /// Bytes waiting in the ring buffer that wake the agent (capped by
    /// [`TracerOptions::effective_wakeup_bytes`]).
    pub wakeup_bytes: u32,
    /// Bytes of user stack a stack sample copies (a multiple of
    /// `STACK_COPY_PIECE`, at most `MAX_STACK_COPY`).
    pub stack_bytes: u32,
    /// BTF file to use instead of /sys/kernel/btf/vmlinux.
    pub btf_path: Option<std::path::PathBuf>,
    pub syscall_hook: SyscallHook,
    /// Every program returns at once (the benchmark's floor).
    pub floor: bool,
    /// Trace every process under this cgroup, found by the kernel side at
    /// its first event.
    pub cgroup: Option<CgroupFilter>,
}

/// `--cgroup`/`--container` in the kernel: processes are tested against a
/// cgroup v2 directory (there is one on hybrid hosts too).
#[derive(Clone, Debug)]
pub struct CgroupFilter {
    /// The cgroup's directory in the v2 hierarchy.
    pub dir: std::path::PathBuf,
    /// How the stacks of processes found there are taken until the agent
    /// has looked at their program.
    pub stacks: StackSource,
}

impl Default for TracerOptions {
    fn default() -> Self {
        Self {
            stack_mode: StackMode::Sampled,
            stack_period: 64,
            follow_forks: false,
            ring_bytes: 8 * 1024 * 1024,
            stack_entries: config::DEFAULT_STACK_ENTRIES,
            wakeup_bytes: 1024 * 1024,
            stack_bytes: config::DEFAULT_STACK_COPY,
            btf_path: None,
            syscall_hook: SyscallHook::default(),
            floor: false,
            cgroup: None,
        }
    }
}

impl TracerOptions {
    /// The wake-up threshold actually used: never more than an eighth of the
    /// ring buffer, so a small ring (`--ring-size 8K`) still wakes the agent
    /// long before it is full instead of never.
    pub fn effective_wakeup_bytes(&self) -> u32 {
        self.wakeup_bytes.min(self.ring_bytes / 8).max(1)
    }
}

/// The maps the agent reads, taken out of the loaded object so each part of
/// the agent can own the one it uses.
pub struct Maps {
    pub events: RingBuf<MapData>,
    pub stacks: HashMap<MapData, u64, StackFrames>,
    pub hints: FrameHints,
    pub targets: Targets,
    pub counters: KernelCounters,
}

/// The loaded, attached programs. Dropping it detaches every program; the
/// maps live until their last handle is dropped too.
pub struct Tracer {
    ebpf: Ebpf,
    classic: Vec<Hook>,
    btf: Vec<Hook>,
}

impl Tracer {
    /// Checks the machine, loads every program and returns the maps. Nothing
    /// is attached yet: add the targets first, then [`Tracer::attach`].
    pub fn load(options: &TracerOptions) -> Result<(Self, Maps), KernelError> {
        preflight::check_privileges()?;
        let btf_path = options
            .btf_path
            .as_deref()
            .unwrap_or(std::path::Path::new(preflight::SYSFS_BTF));
        let btf = preflight::load_btf(btf_path)?;
        let tracefs = preflight::ensure_tracefs()?;
        preflight::check_tracepoints(tracefs, &required_tracepoints(options.syscall_hook))?;
        let layout = KernelLayout {
            task_pagefault_disabled: btf::member_offset(
                &std::fs::read(btf_path).unwrap_or_default(),
                "task_struct",
                "pagefault_disabled",
            )
            .unwrap_or(FIELD_ABSENT),
            ..tracefs::tracepoint_layout(tracefs)?
        };
        if options.syscall_hook == SyscallHook::PerCall && layout.syscall_exit_ret == FIELD_ABSENT {
            return Err(KernelError::TracepointFormat {
                tracepoint: "syscalls:sys_exit_mmap".into(),
                detail: "it has no field ret".into(),
            });
        }
        let (classic, btf_hooks) = hooks(options.syscall_hook);

        let stack_mode = options.stack_mode as u32;
        let follow_forks = u32::from(options.follow_forks);
        let floor = u32::from(options.floor);
        let cgroup_mode = u32::from(options.cgroup.is_some());
        let cgroup_stacks = options
            .cgroup
            .as_ref()
            .map_or(StackSource::Off, |cgroup| cgroup.stacks) as u32;
        let wakeup_bytes = options.effective_wakeup_bytes();
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global(config::STACK_MODE_GLOBAL, &stack_mode, true)
            .override_global(config::STACK_PERIOD_GLOBAL, &options.stack_period, true)
            .override_global(config::FOLLOW_FORKS_GLOBAL, &follow_forks, true)
            .override_global(config::WAKEUP_BYTES_GLOBAL, &wakeup_bytes, true)
            .override_global(config::STACK_BYTES_GLOBAL, &options.stack_bytes, true)
            .override_global(config::KERNEL_LAYOUT_GLOBAL, &layout, true)
            .override_global(config::FLOOR_GLOBAL, &floor, true)
            .override_global(config::CGROUP_MODE_GLOBAL, &cgroup_mode, true)
            .override_global(config::CGROUP_STACKS_GLOBAL, &cgroup_stacks, true)
            .map_max_entries("EVENTS", options.ring_bytes)
            .map_max_entries("STACKS", options.stack_entries)
            .load(EBPF_OBJECT)
            .map_err(|err| KernelError::Load {
                program: "memtrace".into(),
                detail: err.to_string(),
            })?;
        load_programs(&mut ebpf, &btf, &classic, &btf_hooks)?;
        if let Some(cgroup) = &options.cgroup {
            set_cgroup(&mut ebpf, &cgroup.dir)?;
        }

        let maps = Maps {
            targets: Targets(Some(TargetMaps {
                primary: Array::try_from(take_map(&mut ebpf, "PRIMARY")?)
                    .map_err(map_err("PRIMARY"))?,
                followed: HashMap::try_from(take_map(&mut ebpf, "TARGETS")?)
                    .map_err(map_err("TARGETS"))?,
            })),
            events: RingBuf::try_from(take_map(&mut ebpf, "EVENTS")?).map_err(map_err("EVENTS"))?,
            stacks: HashMap::try_from(take_map(&mut ebpf, "STACKS")?).map_err(map_err("STACKS"))?,
            hints: FrameHints(Some(
                HashMap::try_from(take_map(&mut ebpf, "FRAME_HINTS")?)
                    .map_err(map_err("FRAME_HINTS"))?,
            )),
            counters: KernelCounters {
                map: PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?)
                    .map_err(map_err("COUNTERS"))?,
            },
        };
        Ok((
            Self {
                ebpf,
                classic,
                btf: btf_hooks,
            },
            maps,
        ))
    }

    /// Attach every program. From here on events flow.
    pub fn attach(&mut self) -> Result<(), KernelError> {
        for &(program, category, name) in &self.classic {
            let tracepoint: &mut TracePoint = program_mut(&mut self.ebpf, program)?;
            tracepoint
                .attach(category, name)
                .map_err(|err| attach_err(program, &err))?;
        }
        for &(program, _, _) in &self.btf {
            let tracepoint: &mut BtfTracePoint = program_mut(&mut self.ebpf, program)?;
            tracepoint
                .attach()
                .map_err(|err| attach_err(program, &err))?;
        }
        Ok(())
    }
}

fn load_programs(
    ebpf: &mut Ebpf,
    btf: &Btf,
    classic: &[Hook],
    btf_hooks: &[Hook],
) -> Result<(), KernelError> {
    for &(program, _, _) in classic {
        let tracepoint: &mut TracePoint = program_mut(ebpf, program)?;
        tracepoint.load().map_err(|err| load_err(program, &err))?;
    }
    for &(program, _, name) in btf_hooks {
        let tracepoint: &mut BtfTracePoint = program_mut(ebpf, program)?;
        tracepoint
            .load(name, btf)
            .map_err(|err| load_err(program, &err))?;
    }
    Ok(())
}

fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P, KernelError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program>,
{
    ebpf.program_mut(name)
        .and_then(|program| program.try_into().ok())
        .ok_or_else(|| KernelError::Load {
            program: name.to_owned(),
            detail: "not found in the embedded object (build mismatch)".into(),
        })
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, KernelError> {
    ebpf.take_map(name).ok_or(KernelError::Map {
        map: name,
        detail: "not found in the embedded object (build mismatch)".into(),
    })
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> KernelError {
    move |err| KernelError::Map {
        map,
        detail: err.to_string(),
    }
}

/// The verifier's log is long; its last lines name the failing instruction.
fn load_err(program: &str, err: &aya::programs::ProgramError) -> KernelError {
    let detail = match err {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            format!(
                "{io_error}; verifier: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        }
        other => other.to_string(),
    };
    KernelError::Load {
        program: program.to_owned(),
        detail,
    }
}

fn attach_err(program: &str, err: &aya::programs::ProgramError) -> KernelError {
    KernelError::Attach {
        program: program.to_owned(),
        detail: err.to_string(),
    }
}

/// The kernel side's per-CPU counters.
pub struct KernelCounters {
    map: PerCpuArray<MapData, u64>,
}

impl KernelCounters {
    /// The sum over CPUs of `counter`.
    pub fn read(&self, counter: Counter) -> Result<u64, KernelError> {
        let values = self
            .map
            .get(&(counter as u32), 0)
            .map_err(map_err("COUNTERS"))?;
        Ok(values.iter().sum())
    }
}

/// Puts the cgroup at `dir` in slot 0 of the `CGROUP` map.
fn set_cgroup(ebpf: &mut Ebpf, dir: &std::path::Path) -> Result<(), KernelError> {
    let refused = |detail: String| KernelError::Map {
        map: "CGROUP",
        detail: format!("{}: {detail}", dir.display()),
    };
    let file = std::fs::File::open(dir).map_err(|err| refused(err.to_string()))?;
    let map = ebpf
        .map_mut("CGROUP")
        .ok_or_else(|| refused("no such map in the object".into()))?;
    let mut cgroups = CgroupArray::try_from(map).map_err(|err| refused(err.to_string()))?;
    cgroups
        .set(0, file, 0)
        .map_err(|err| refused(err.to_string()))
}

/// The processes the kernel side traces: the target, and the children it
/// follows. Detached (no programs loaded: a capture played back), every
/// change is taken and goes nowhere.
pub struct Targets(Option<TargetMaps>);

struct TargetMaps {
    primary: Array<MapData, TargetState>,
    followed: HashMap<MapData, u32, TargetState>,
}

impl Targets {
    pub fn detached() -> Self {
        Self(None)
    }

    /// Trace process `tgid` (all its threads, and with `follow_forks` the
    /// children it forks from now on), taking its stacks from `stacks`.
    pub fn set_primary(&mut self, tgid: u32, stacks: StackSource) -> Result<(), KernelError> {
        let Some(maps) = &mut self.0 else {
            return Ok(());
        };
        let state = TargetState {
            tgid,
            stacks: stacks as u32,
            ..TargetState::default()
        };
        maps.primary.set(0, state, 0).map_err(map_err("PRIMARY"))
    }

    /// Trace process `tgid` too (one found in the traced cgroup, or
    /// selected by the agent), taking its stacks from `stacks`.
    pub fn follow(&mut self, tgid: u32, stacks: StackSource) -> Result<(), KernelError> {
        let Some(maps) = &mut self.0 else {
            return Ok(());
        };
        let state = TargetState {
            tgid,
            stacks: stacks as u32,
            ..TargetState::default()
        };
        maps.followed
            .insert(tgid, state, 0)
            .map_err(map_err("TARGETS"))
    }

    /// Takes the stacks of traced process `tgid` from `stacks` from now on
    /// (its program changed with exec).
    pub fn set_stacks(&mut self, tgid: u32, stacks: StackSource) -> Result<(), KernelError> {
        let Some(maps) = &mut self.0 else {
            return Ok(());
        };
        let stacks = stacks as u32;
        if let Ok(mut state) = maps.primary.get(&0, 0) {
            if state.tgid == tgid {
                state.stacks = stacks;
                return maps.primary.set(0, state, 0).map_err(map_err("PRIMARY"));
            }
        }
        match maps.followed.get(&tgid, 0) {
            Ok(mut state) => {
                state.stacks = stacks;
                maps.followed
                    .insert(tgid, state, 0)
                    .map_err(map_err("TARGETS"))
            }
            // Gone already: nothing to change.
            Err(_) => Ok(()),
        }
    }

    /// Stops tracing `tgid`, which has exited: its PID may be reused.
    pub fn forget(&mut self, tgid: u32) {
        let Some(maps) = &mut self.0 else {
            return;
        };
        if maps
            .primary
            .get(&0, 0)
            .is_ok_and(|state| state.tgid == tgid)
        {
            let _ = maps.primary.set(0, TargetState::default(), 0);
        }
        let _ = maps.followed.remove(&tgid);
    }
}

/// Where the return address is at instructions of traced processes, learnt
/// by unwinding samples taken there (see `memtrace_common::FrameHint`);
/// detached, as [`Targets`].
pub struct FrameHints(Option<HashMap<MapData, FrameHintKey, FrameHint>>);

impl FrameHints {
    pub fn detached() -> Self {
        Self(None)
    }

    /// Where the return address is at code address `ip` of process `tgid`.
    /// The map is an LRU: old hints make room for new ones, which only costs
    /// samples.
    pub fn insert(&mut self, tgid: u32, ip: u64, hint: FrameHint) {
        let key = FrameHintKey { tgid, _pad: 0, ip };
        if let Some(map) = &mut self.0 {
            // A failed insert only means more samples are taken there.
            let _ = map.insert(key, hint, 0);
        }
    }

    /// Forgets every hint of `tgid`, whose program was replaced by exec.
    pub fn forget(&mut self, tgid: u32) {
        let Some(map) = &mut self.0 else {
            return;
        };
        let keys: Vec<FrameHintKey> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|key| key.tgid == tgid)
            .collect();
        for key in keys {
            let _ = map.remove(&key);
        }
    }
}

/// Bytes of kernel memory memtrace's maps take, as the kernel accounts them
/// (the `memlock` of every BPF map this process holds).
pub fn maps_memory() -> u64 {
    let Ok(fds) = std::fs::read_dir("/proc/self/fdinfo") else {
        return 0;
    };
    fds.filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .filter(|info| info.lines().any(|line| line.starts_with("map_type:")))
        .filter_map(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("memlock:"))
                .and_then(|bytes| bytes.trim().parse::<u64>().ok())
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_ring_buffer_still_wakes_the_agent() {
        for (ring_bytes, wakeup) in [(8 << 20, 1 << 20), (1 << 20, 128 << 10), (8192, 1024)] {
            let options = TracerOptions {
                ring_bytes,
                ..TracerOptions::default()
            };
            assert_eq!(options.effective_wakeup_bytes(), wakeup, "{ring_bytes}");
            assert!(options.effective_wakeup_bytes() < ring_bytes);
        }
    }
}
