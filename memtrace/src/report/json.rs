//! `--json`: one object per interval and a final one, one per line.
//!
//! The schema is versioned (`schema_version`); fields are only ever added
//! within a version. docs/json-schema.md describes every field.

use serde_json::{json, Map, Value};

use super::{
    history::Trend,
    snapshot::{GoHeapSide, GrowthFrom, Snapshot},
    whole::{Member, Whole},
};
use crate::{
    attribution::{CallRow, FaultRow, GrowthRow, StackCoverage, StackRow},
    model::{Call, CallStats},
    proc::CgroupMemory,
    runtime::RuntimeInfo,
    symbolize::Completeness,
};

pub const SCHEMA_VERSION: u32 = 1;

pub fn to_json(snapshot: &Snapshot) -> Value {
    let activity = &snapshot.activity;
    let model = &snapshot.model;
    let kernel = snapshot.kernel.map(|kernel| {
        json!({
            "rss_bytes": kernel.rss,
            "anon_bytes": kernel.anon,
            "file_bytes": kernel.file,
            "shmem_bytes": kernel.shmem,
            "swap_bytes": kernel.swap,
            "lazyfree_bytes": kernel.lazyfree,
            "anon_huge_bytes": kernel.anon_huge,
            "reading": snapshot.kernel_reading.name(),
            "status": {
                "rss_bytes": kernel.status.rss,
                "anon_bytes": kernel.status.anon,
                "file_bytes": kernel.status.file,
                "shmem_bytes": kernel.status.shmem,
                "swap_bytes": kernel.status.swap,
            },
        })
    });
    let mut calls = Map::new();
    let mut madvise = Map::new();
    for (call, stats) in &activity.calls {
        match call {
            Call::Madvise(advice) => madvise.insert(advice.to_string(), call_stats(stats)),
            other => calls.insert(other.name(), call_stats(stats)),
        };
    }
    let released: Map<String, Value> = activity
        .released
        .iter()
        .map(|(how, bytes)| (how.name(), json!(bytes)))
        .collect();
    let faults = &activity.faults;
    let lost = &snapshot.lost;
    let mut value = json!({
        "schema": "memtrace.snapshot",
        "schema_version": SCHEMA_VERSION,
        "type": if snapshot.is_final { "final" } else { "interval" },
        "seq": snapshot.seq,
        "elapsed_s": snapshot.elapsed.as_secs_f64(),
        "timestamp_unix_ms": snapshot.unix_ms,
        "scope": if snapshot.whole.is_some() { "cgroup" } else { "process" },
        // A cgroup's whole is of no one process.
        "pid": snapshot.whole.is_none().then_some(snapshot.pid),
        "pid_in_namespace": snapshot.pid_in_namespace,
        "command": snapshot.command,
        "state": snapshot.state.name(),
        "rss_bytes": snapshot.rss(),
        "lazyfree_bytes": snapshot.lazyfree(),
        "unexplained_bytes": snapshot.unexplained(),
        "in_flight_bytes": snapshot.reconcile.in_flight,
        "kernel": kernel,
        "model": {
            "rss_bytes": model.rss,
            "anon_bytes": model.anon,
            "file_bytes": model.file,
            "shmem_bytes": model.shmem,
            "lazyfree_bytes": model.lazyfree,
            "in_use_bytes": model.in_use,
            "zero_page_bytes": model.zero_page,
            "by_cause": {
                "fault": model.by_cause.fault,
                "fault_around": model.by_cause.fault_around,
                "populate": model.by_cause.populate,
                "before_attach": model.by_cause.before_attach,
                "exec": model.by_cause.exec,
                "unobserved": model.by_cause.unobserved,
            },
        },
        "address_space_bytes": snapshot.address_space,
        "mapped_bytes": activity.call_stats(Call::Mmap).bytes,
        "unmapped_bytes": activity.call_stats(Call::Munmap).bytes,
        "calls": calls,
        "madvise": madvise,
        "released_bytes": released,
        "lazyfree": {
            "marked_bytes": activity.lazyfree.marked,
            "reused_bytes": activity.lazyfree.reused,
            "unobserved_bytes": activity.lazyfree.unobserved,
        },
        "faults": {
            "count": faults.count,
            "bytes": faults.paged_in_bytes(),
            "paged_in": faults.paged_in,
            "write": faults.write,
            "protection": faults.protection,
            "instruction": faults.instruction,
            "kernel_mode": faults.kernel_mode,
            "copy_on_write": faults.copy_on_write,
            "zero_page": faults.zero_page,
            "outside_mappings": faults.outside_mappings,
        },
        "records": {
            "seen": snapshot.records,
            "lost_total": lost.records(),
            "lost": {
                "faults": lost.faults,
                "syscalls": lost.syscalls,
                "lifecycle": lost.lifecycle,
                "reclaim": lost.reclaim,
                "undecodable": lost.undecodable,
            },
            "stacks_not_stored": lost.stacks,
            "stack_samples_lost": lost.stack_samples,
            "stack_samples_skipped": lost.stack_samples_skipped,
            "targets_lost": lost.targets,
            "stack_walks": snapshot.stack_walks,
            "counters_unreadable": lost.counters_unreadable,
        },
        "process_madvise_unresolved": {
            "calls": snapshot.process_madvise_unresolved.calls,
            "bytes": snapshot.process_madvise_unresolved.bytes,
        },
        "approximate": snapshot.approximate,
        "reconcile": {
            "scanned_vmas": snapshot.reconcile.scanned_vmas,
            "added_bytes": snapshot.reconcile.added,
            "removed_bytes": snapshot.reconcile.removed,
            "residual_bytes": snapshot.reconcile.residual,
        },
        "top_ranges": snapshot.top_ranges.iter().map(|row| json!({
            "start": format!("{:#x}", row.start),
            "end": format!("{:#x}", row.end),
            "mapping": row.mapping,
            "created_by": row.created_by.name(),
            "stack_id": row.stack.map(|stack| stack.to_string()),
            "resident_bytes": row.resident,
            "lazyfree_bytes": row.lazyfree,
        })).collect::<Vec<_>>(),
        "top_stacks": snapshot.top_stacks.iter().map(stack_row).collect::<Vec<_>>(),
        "top_calls": snapshot.top_calls.iter().map(call_row).collect::<Vec<_>>(),
    });
    // Inserted apart: one json! for everything exceeds the macro's recursion limit.
    value["top_faults"] = json!(snapshot
        .top_faults
        .iter()
        .map(fault_row)
        .collect::<Vec<_>>());
    value["trend"] = trend(snapshot);
    value["cgroup"] = json!(snapshot.cgroup.as_ref().map(cgroup));
    value["growth"] = json!(snapshot.growth.iter().map(growth_row).collect::<Vec<_>>());
    match &snapshot.growth_from {
        GrowthFrom::FirstInterval => {}
        GrowthFrom::Moment(since) => value["growth_since_s"] = json!(since.as_secs_f64()),
        GrowthFrom::Capture(base) => value["growth_base"] = json!(base),
    }
    value["profile_serving_bytes"] = json!(snapshot.profile_serving);
    value["growers"] = json!(snapshot
        .growers
        .iter()
        .map(|(who, grown)| json!({"responsible": who, "grown_bytes": grown}))
        .collect::<Vec<_>>());
    value["stacks"] = stack_coverage(&snapshot.stack_coverage);
    let footprint = &snapshot.footprint;
    value["memtrace"] = json!({
        "rss_bytes": footprint.rss,
        "unwind_table_bytes": footprint.unwind_tables,
        "stacks_held": footprint.stacks,
        "kernel_map_bytes": footprint.kernel_maps,
    });
    value["runtime"] = json!(snapshot.runtime.as_ref().map(runtime));
    value["go_heap"] = json!(snapshot.go_heap.as_ref().map(go_heap));
    value["whole"] = json!(snapshot.whole.as_deref().map(whole));
    value
}

fn whole(whole: &Whole) -> Value {
    let member = |member: &Member| {
        json!({
            "pid": member.pid,
            "pid_in_namespace": member.pid_in_namespace,
            "command": member.command,
            "state": member.state.name(),
            "rss_bytes": member.rss,
            "anon_bytes": member.anon,
            "file_bytes": member.file,
            "shmem_bytes": member.shmem,
            "lazyfree_bytes": member.lazyfree,
            "unexplained_bytes": member.unexplained,
            "top_stack": member.top,
        })
    };
    let subject = &whole.subject;
    json!({
        "label": subject.label,
        "cgroup_path": subject.path,
        "container": subject.container.as_ref().map(|container| json!({
            "id": container.id,
            "name": container.name,
            "runtime": container.runtime,
        })),
        "processes": whole.members.iter().map(member).collect::<Vec<_>>(),
        "ended": whole.ended,
        "oom_killed": whole.oom_killed.iter().map(member).collect::<Vec<_>>(),
        "charge": whole.charge.map(|charge| json!({
            "current_bytes": charge.current,
            "anon_bytes": charge.anon,
            "file_bytes": charge.file,
            "file_mapped_bytes": charge.file_mapped,
            "shmem_bytes": charge.shmem,
            "kernel_bytes": charge.kernel,
            "other_bytes": charge.other,
            "lazyfree_bytes": charge.lazyfree,
            "reclaimable_bytes": charge.reclaimable,
            "working_set_bytes": charge.working_set,
            "processes_rss_bytes": charge.processes_rss,
            "processes_anon_bytes": charge.processes_anon,
            "processes_file_bytes": charge.processes_file,
            "processes_shmem_bytes": charge.processes_shmem,
            "unmapped_cache_bytes": charge.unmapped_cache(),
            "shared_anon_bytes": charge.shared_anon(),
        })),
        "removed": whole.removed,
        "time_to_limit_s": whole.time_to_limit.map(|left| left.as_secs_f64()),
    })
}

fn call_stats(stats: &CallStats) -> Value {
    json!({
        "calls": stats.calls,
        "failed": stats.failed,
        "bytes": stats.bytes,
        "resident_bytes": stats.resident_bytes,
    })
}

fn stack_row(row: &StackRow) -> Value {
    json!({
        "stack_id": row.stack.map(|stack| stack.to_string()),
        "frames": row.frames,
        "in_use_bytes": row.in_use,
        "lazyfree_bytes": row.lazyfree,
        "end": row.end.map(|end| end.to_string()),
        "cut_in": row.cut_in,
    })
}

/// Bytes under whole and cut stacks, and the share that is whole (`null`
/// when no bytes stand under any stack).
fn stack_coverage(coverage: &StackCoverage) -> Value {
    let side = |completeness: &Completeness| {
        json!({
            "complete_bytes": completeness.complete,
            "cut_bytes": completeness.cut,
            "complete_percent": completeness.percent_complete(),
        })
    };
    json!({
        "resident": side(&coverage.resident),
        "released": side(&coverage.released),
    })
}

fn call_row(row: &CallRow) -> Value {
    json!({
        "call": row.call,
        "stack_id": row.stack.map(|stack| stack.to_string()),
        "frames": row.frames,
        "calls": row.calls,
        "bytes": row.bytes,
        "resident_bytes": row.resident_bytes,
    })
}

fn fault_row(row: &FaultRow) -> Value {
    json!({
        "stack_id": row.stack.map(|stack| stack.to_string()),
        "frames": row.frames,
        "count": row.count,
        "paged_in_bytes": row.paged_in_bytes,
        "end": row.end.map(|end| end.to_string()),
    })
}

fn trend(snapshot: &Snapshot) -> Value {
    let trend = &snapshot.trend;
    let mut value = json!({
        "kind": trend.name(),
        "needs_seconds": trend.needs().as_secs_f64(),
    });
    match *trend {
        Trend::Growing { bytes_per_minute } => {
            value["bytes_per_minute"] = json!(bytes_per_minute);
        }
        Trend::Sawtooth { cycles } => value["cycles"] = json!(cycles),
        Trend::Steady | Trend::Unknown { .. } => {}
    }
    value
}

fn cgroup(cgroup: &CgroupMemory) -> Value {
    let stat = &cgroup.stat;
    json!({
        "path": cgroup.path,
        "version": cgroup.version.name(),
        "current_bytes": cgroup.current,
        "max_bytes": cgroup.max,
        "high_bytes": cgroup.high,
        "working_set_bytes": cgroup.working_set(),
        "stat": {
            "anon_bytes": stat.anon,
            "file_bytes": stat.file,
            "shmem_bytes": stat.shmem,
            "file_mapped_bytes": stat.file_mapped,
            "kernel_bytes": stat.kernel,
            "sock_bytes": stat.sock,
            "inactive_anon_bytes": stat.inactive_anon,
            "active_anon_bytes": stat.active_anon,
            "inactive_file_bytes": stat.inactive_file,
            "active_file_bytes": stat.active_file,
            "dirty_bytes": stat.dirty,
        },
    })
}

fn growth_row(row: &GrowthRow) -> Value {
    json!({
        "stack_id": row.stack.map(|stack| stack.to_string()),
        "frames": row.frames,
        "grown_bytes": row.grown,
    })
}

fn runtime(runtime: &RuntimeInfo) -> Value {
    json!({
        "go": runtime.go.as_ref().map(|go| json!({
            "version": go.version,
            "path": go.path,
            "module": go.module,
        })),
        "go_settings": {
            "GOGC": runtime.go_settings.gogc,
            "GOMEMLIMIT": runtime.go_settings.gomemlimit,
            "GODEBUG": runtime.go_settings.godebug,
        },
        "allocators": runtime.allocators.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

fn go_heap(heap: &GoHeapSide) -> Value {
    json!({
        "source": heap.source,
        "inuse_space_bytes": heap.inuse_space,
        "alloc_space_bytes": heap.alloc_space,
        "functions": heap.functions.iter().map(|function| json!({
            "function": function.function,
            "pprof_inuse_bytes": function.pprof_inuse,
            "kernel_resident_bytes": function.kernel_resident,
        })).collect::<Vec<_>>(),
    })
}
