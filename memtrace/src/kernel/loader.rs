//! Loading memtrace's kernel programs, attaching them, and taking out the maps
//! the agent reads.

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use memtrace_common::{config, Counter, StackFrames, StackMode, TargetState};

use super::{preflight, KernelError};

/// The object built from `memtrace-ebpf` by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace"));

/// Classic tracepoints: (program, category, tracepoint).
const CLASSIC: &[(&str, &str, &str)] = &[
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sched_process_exit", "sched", "sched_process_exit"),
    ("sched_process_fork", "sched", "sched_process_fork"),
    ("mark_victim", "oom", "mark_victim"),
];

/// BTF tracepoints: (program, category, tracepoint). The category is only
/// used to check that the tracepoint exists.
const BTF: &[(&str, &str, &str)] = &[
    ("page_fault_user", "exceptions", "page_fault_user"),
    ("page_fault_kernel", "exceptions", "page_fault_kernel"),
    ("sys_exit", "raw_syscalls", "sys_exit"),
    ("rss_stat", "kmem", "rss_stat"),
    ("exit_mmap", "mmap", "exit_mmap"),
];

/// Every tracepoint memtrace attaches to, as (category, name).
pub fn required_tracepoints() -> Vec<(&'static str, &'static str)> {
    CLASSIC
        .iter()
        .chain(BTF)
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
    /// BTF file to use instead of /sys/kernel/btf/vmlinux.
    pub btf_path: Option<std::path::PathBuf>,
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
            btf_path: None,
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
    pub counters: KernelCounters,
}

/// The loaded, attached programs. Dropping it detaches every program; the
/// maps live until their last handle is dropped too.
pub struct Tracer {
    ebpf: Ebpf,
    primary: Array<MapData, TargetState>,
}

impl Tracer {
    /// Checks the machine, loads every program and returns the maps. Nothing
    /// is attached yet: add the targets first, then [`Tracer::attach`].
    pub fn load(options: &TracerOptions) -> Result<(Self, Maps), KernelError> {
        preflight::check_privileges()?;
        let btf = preflight::load_btf(options.btf_path.as_deref())?;
        let tracefs = preflight::ensure_tracefs()?;
        preflight::check_tracepoints(tracefs, &required_tracepoints())?;

        let stack_mode = options.stack_mode as u32;
        let follow_forks = u32::from(options.follow_forks);
        let wakeup_bytes = options.effective_wakeup_bytes();
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global(config::STACK_MODE_GLOBAL, &stack_mode, true)
            .override_global(config::STACK_PERIOD_GLOBAL, &options.stack_period, true)
            .override_global(config::FOLLOW_FORKS_GLOBAL, &follow_forks, true)
            .override_global(config::WAKEUP_BYTES_GLOBAL, &wakeup_bytes, true)
            .map_max_entries("EVENTS", options.ring_bytes)
            .map_max_entries("STACKS", options.stack_entries)
            .load(EBPF_OBJECT)
            .map_err(|err| KernelError::Load {
                program: "memtrace".into(),
                detail: err.to_string(),
            })?;
        load_programs(&mut ebpf, &btf)?;

        let primary =
            Array::try_from(take_map(&mut ebpf, "PRIMARY")?).map_err(map_err("PRIMARY"))?;
        let maps = Maps {
            events: RingBuf::try_from(take_map(&mut ebpf, "EVENTS")?).map_err(map_err("EVENTS"))?,
            stacks: HashMap::try_from(take_map(&mut ebpf, "STACKS")?).map_err(map_err("STACKS"))?,
            counters: KernelCounters {
                map: PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?)
                    .map_err(map_err("COUNTERS"))?,
            },
        };
        Ok((Self { ebpf, primary }, maps))
    }

    /// Trace process `tgid` (all its threads, and with `follow_forks` the
    /// children it forks from now on).
    pub fn set_target(&mut self, tgid: u32) -> Result<(), KernelError> {
        let state = TargetState {
            tgid,
            ..TargetState::default()
        };
        self.primary.set(0, state, 0).map_err(map_err("PRIMARY"))
    }

    /// Attach every program. From here on events flow.
    pub fn attach(&mut self) -> Result<(), KernelError> {
        for &(program, category, name) in CLASSIC {
            let tracepoint: &mut TracePoint = program_mut(&mut self.ebpf, program)?;
            tracepoint
                .attach(category, name)
                .map_err(|err| attach_err(program, &err))?;
        }
        for &(program, _, _) in BTF {
            let tracepoint: &mut BtfTracePoint = program_mut(&mut self.ebpf, program)?;
            tracepoint
                .attach()
                .map_err(|err| attach_err(program, &err))?;
        }
        Ok(())
    }
}

fn load_programs(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), KernelError> {
    for &(program, _, _) in CLASSIC {
        let tracepoint: &mut TracePoint = program_mut(ebpf, program)?;
        tracepoint.load().map_err(|err| load_err(program, &err))?;
    }
    for &(program, _, name) in BTF {
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
