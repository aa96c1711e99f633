//! The metric families, written at each scrape from the latest numbers.
//!
//! Values are set, not counted up: the model already holds totals since
//! attaching, so the families are written from a snapshot with
//! prometheus-client's constant metrics. A target that is gone is simply
//! absent from the next scrape, and Prometheus marks its series stale.
//!
//! Every series is labelled by `target`, `pid` and `command` only (never a
//! stack or an address), plus a small fixed set (`part`, `advice`,
//! `destination`, `reason`), so the number of series stays bounded.

use std::sync::{Arc, Mutex};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Unit,
};

use super::{input::TargetMetrics, State};

/// Writes the families from the shared state.
#[derive(Debug)]
pub(super) struct Families(pub(super) Arc<Mutex<State>>);

type Labels<'a> = Vec<(&'static str, &'a str)>;

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let targets = &state.targets;
        let pids: Vec<String> = targets.iter().map(|t| t.pid.to_string()).collect();
        let target_labels = |n: usize| -> Labels<'_> {
            let target = &targets[n];
            vec![
                ("target", target.target.as_str()),
                ("pid", pids[n].as_str()),
                ("command", target.command.as_str()),
            ]
        };

        let bytes = Unit::Bytes;
        write_family(
            &mut encoder,
            "memtrace_rss",
            "Resident memory by part: in_use, lazily_freed (given back with MADV_FREE, \
             still counted in RSS), file and shmem; the parts add up to RSS",
            Some(&bytes),
            MetricType::Gauge,
            targets.iter().enumerate().flat_map(|(n, target)| {
                target
                    .rss
                    .labelled()
                    .map(|(part, value)| (with(target_labels(n), "part", part), value))
            }),
        )?;
        write_family(
            &mut encoder,
            "memtrace_unexplained",
            "Resident bytes memtrace cannot say where they came from",
            Some(&bytes),
            MetricType::Gauge,
            targets
                .iter()
                .enumerate()
                .map(|(n, t)| (target_labels(n), t.unexplained_bytes)),
        )?;

        write_family(
            &mut encoder,
            "memtrace_released",
            "Bytes taken out of RSS since attaching, by how (munmap, MADV_DONTNEED, ...)",
            Some(&bytes),
            MetricType::Counter,
            targets.iter().enumerate().flat_map(|(n, target)| {
                target
                    .released_bytes
                    .iter()
                    .map(move |(advice, value)| (with(target_labels(n), "advice", advice), *value))
            }),
        )?;

        write_family(
            &mut encoder,
            "memtrace_page_faults",
            "Page faults of the target since attaching",
            None,
            MetricType::Counter,
            targets
                .iter()
                .enumerate()
                .map(|(n, t)| (target_labels(n), t.page_faults)),
        )?;

        let slope = Unit::Other("bytes_per_second".to_owned());
        let mut family = encoder.encode_descriptor(
            "memtrace_rss_trend",
            "How fast in-use RSS grows (negative: shrinks)",
            Some(&slope),
            MetricType::Gauge,
        )?;
        for (n, target) in targets.iter().enumerate() {
            if let Some(slope) = target.trend_bytes_per_second.filter(|s| s.is_finite()) {
                ConstGauge::new(slope).encode(family.encode_family(&target_labels(n))?)?;
            }
        }

        write_family(
            &mut encoder,
            "memtrace_cgroup_usage",
            "Memory use of the target's cgroup (memory.current)",
            Some(&bytes),
            MetricType::Gauge,
            cgroup_values(targets, &target_labels, |cgroup| Some(cgroup.usage_bytes)),
        )?;
        write_family(
            &mut encoder,
            "memtrace_cgroup_limit",
            "Memory limit of the target's cgroup (memory.max); absent when unlimited",
            Some(&bytes),
            MetricType::Gauge,
            cgroup_values(targets, &target_labels, |cgroup| cgroup.limit_bytes),
        )?;

        // The kernel side counts what it loses for every traced process
        // together: these are the agent's, not a target's.
        let agent = &state.agent;
        write_family(
            &mut encoder,
            "memtrace_lost_records",
            "Records the kernel side could not deliver since the agent started (models may be off)",
            None,
            MetricType::Counter,
            std::iter::once((Labels::new(), agent.lost_records)),
        )?;
        write_family(
            &mut encoder,
            "memtrace_traced_processes",
            "Processes the agent traces now",
            None,
            MetricType::Gauge,
            std::iter::once((Labels::new(), agent.traced_processes)),
        )?;
        write_family(
            &mut encoder,
            "memtrace_stacks",
            "Call stacks the agent holds",
            None,
            MetricType::Gauge,
            std::iter::once((Labels::new(), agent.stacks)),
        )?;
        write_family(
            &mut encoder,
            "memtrace_stacks_pruned",
            "Call stacks dropped to keep the agent under its cap (their counts kept as [pruned stacks])",
            None,
            MetricType::Counter,
            std::iter::once((Labels::new(), agent.stacks_pruned)),
        )?;
        write_family(
            &mut encoder,
            "memtrace_agent_resident",
            "The agent's own RSS",
            Some(&bytes),
            MetricType::Gauge,
            std::iter::once((Labels::new(), agent.resident_bytes)),
        )?;

        let push = &state.push;
        write_family(
            &mut encoder,
            "memtrace_push_sent_windows",
            "Profile windows delivered, by destination",
            None,
            MetricType::Counter,
            push.iter()
                .map(|d| (vec![("destination", d.destination.as_str())], d.sent)),
        )?;
        write_family(
            &mut encoder,
            "memtrace_push_retries",
            "Push attempts repeated after a failure, by destination",
            None,
            MetricType::Counter,
            push.iter()
                .map(|d| (vec![("destination", d.destination.as_str())], d.retries)),
        )?;
        write_family(
            &mut encoder,
            "memtrace_push_dropped_windows",
            "Profile windows never delivered, by destination and reason",
            None,
            MetricType::Counter,
            push.iter().flat_map(|d| {
                d.dropped.iter().map(|(reason, count)| {
                    (
                        vec![
                            ("destination", d.destination.as_str()),
                            ("reason", reason.name()),
                        ],
                        *count,
                    )
                })
            }),
        )?;
        Ok(())
    }
}

/// `labels` and one more.
fn with<'a>(mut labels: Labels<'a>, name: &'static str, value: &'a str) -> Labels<'a> {
    labels.push((name, value));
    labels
}

fn cgroup_values<'a>(
    targets: &'a [TargetMetrics],
    target_labels: &'a impl Fn(usize) -> Labels<'a>,
    value: impl Fn(&super::input::CgroupUsage) -> Option<u64> + 'a,
) -> impl Iterator<Item = (Labels<'a>, u64)> + 'a {
    targets.iter().enumerate().filter_map(move |(n, target)| {
        let value = value(target.cgroup.as_ref()?)?;
        Some((target_labels(n), value))
    })
}

/// One family of `kind` (gauge or counter) with its series.
fn write_family<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    series: impl Iterator<Item = (Labels<'a>, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut descriptor = encoder.encode_descriptor(name, help, unit, kind)?;
    for (labels, value) in series {
        let metric = descriptor.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(value).encode(metric)?,
            _ => ConstGauge::new(value).encode(metric)?,
        }
    }
    Ok(())
}
