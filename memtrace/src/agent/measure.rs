//! A target process's metrics, from its snapshot: the same figures the
//! report shows, as numbers Prometheus keeps.

use crate::{
    export::metrics::{CgroupUsage, RssParts, TargetMetrics},
    report::{history::Trend, snapshot::Snapshot},
};

/// The metrics of the process `snapshot` is of, under target `target`.
pub fn target_metrics(target: &str, snapshot: &Snapshot) -> TargetMetrics {
    let (anon, file, shmem) = snapshot.resident_kinds();
    let lazily_freed = snapshot.lazyfree();
    let activity = &snapshot.activity;
    TargetMetrics {
        target: target.to_owned(),
        pid: snapshot.pid,
        command: snapshot.command.clone(),
        rss: RssParts {
            in_use: anon.saturating_sub(lazily_freed),
            lazily_freed,
            file,
            shmem,
        },
        unexplained_bytes: snapshot.unexplained(),
        released_bytes: activity
            .released
            .iter()
            .map(|(release, &bytes)| (release.name(), bytes))
            .collect(),
        page_faults: activity.faults.count,
        trend_bytes_per_second: slope(snapshot.trend),
        cgroup: snapshot.cgroup.as_ref().map(|memory| CgroupUsage {
            usage_bytes: memory.current,
            limit_bytes: memory.max,
        }),
    }
}

/// In-use memory's growth per second, where the history says it: 0 when
/// steady, none while too short to tell or when it rises and falls.
fn slope(trend: Trend) -> Option<f64> {
    match trend {
        Trend::Growing { bytes_per_minute } => Some(bytes_per_minute / 60.0),
        Trend::Steady => Some(0.0),
        Trend::Unknown { .. } | Trend::Sawtooth { .. } => None,
    }
}
