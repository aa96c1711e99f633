//! Prometheus metrics of the traced targets, in OpenMetrics text.
//!
//! The caller fills a [`TargetMetrics`] per target each interval and hands
//! the lot to [`Metrics::update_targets`] (and the push counters to
//! [`Metrics::update_push`]); [`MetricsServer`] serves [`Metrics::encode`]
//! on `/metrics`. The families and their labels are described in
//! `families.rs` and in the README's "Always on" section.

mod families;
mod input;
mod server;

use std::sync::{Arc, Mutex};

use prometheus_client::registry::Registry;

pub use input::{AgentCounts, CgroupUsage, RssParts, TargetMetrics};
pub use server::{MetricsServer, CONTENT_TYPE};

use super::push::DestinationCounts;

/// The latest numbers, shared between the tracing side and the server.
#[derive(Clone)]
pub struct Metrics {
    state: Arc<Mutex<State>>,
    registry: Arc<Registry>,
}

/// What the next scrape shows.
#[derive(Debug, Default)]
struct State {
    targets: Vec<TargetMetrics>,
    agent: AgentCounts,
    push: Vec<DestinationCounts>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(families::Families(Arc::clone(&state))));
        Self {
            state,
            registry: Arc::new(registry),
        }
    }

    /// Replaces every target's numbers: a target left out is no longer
    /// shown.
    pub fn update_targets(&self, targets: Vec<TargetMetrics>) {
        self.lock().targets = targets;
    }

    /// Replaces the agent's own numbers.
    pub fn update_agent(&self, agent: AgentCounts) {
        self.lock().agent = agent;
    }

    /// Replaces the push counters.
    pub fn update_push(&self, push: Vec<DestinationCounts>) {
        self.lock().push = push;
    }

    /// The metrics as OpenMetrics text (served as [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing into a String cannot fail");
        text
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::push::{DestinationCounts, DropReason};

    fn api() -> TargetMetrics {
        TargetMetrics {
            target: "api".into(),
            pid: 4242,
            command: "api-server".into(),
            rss: RssParts {
                in_use: 1000,
                lazily_freed: 200,
                file: 30,
                shmem: 4,
            },
            unexplained_bytes: 5,
            released_bytes: vec![("munmap".into(), 4096), ("MADV_DONTNEED".into(), 8192)],
            page_faults: 77,
            trend_bytes_per_second: Some(-12.5),
            cgroup: Some(CgroupUsage {
                usage_bytes: 5000,
                limit_bytes: Some(10_000),
            }),
        }
    }

    #[test]
    fn every_family_in_openmetrics_text() {
        let metrics = Metrics::new();
        metrics.update_targets(vec![
            api(),
            TargetMetrics {
                target: "batch".into(),
                pid: 7,
                command: "batch".into(),
                trend_bytes_per_second: None,
                cgroup: Some(CgroupUsage {
                    usage_bytes: 1,
                    limit_bytes: None,
                }),
                ..TargetMetrics::default()
            },
        ]);
        metrics.update_agent(AgentCounts {
            lost_records: 3,
            traced_processes: 2,
            stacks: 900,
            stacks_pruned: 40,
            resident_bytes: 12_345,
        });
        let mut dropped = DropReason::ALL.map(|reason| (reason, 0));
        dropped[DropReason::RetriesExhausted as usize].1 = 2;
        metrics.update_push(vec![DestinationCounts {
            destination: "pyroscope".into(),
            sent: 9,
            sent_bytes: 900,
            retries: 4,
            dropped,
            last_error: None,
        }]);
        let text = metrics.encode();
        let api = r#"target="api",pid="4242",command="api-server""#;
        let batch = r#"target="batch",pid="7",command="batch""#;
        for line in [
            "# TYPE memtrace_rss_bytes gauge".to_owned(),
            "# UNIT memtrace_rss_bytes bytes".to_owned(),
            format!(r#"memtrace_rss_bytes{{{api},part="in_use"}} 1000"#),
            format!(r#"memtrace_rss_bytes{{{api},part="lazily_freed"}} 200"#),
            format!(r#"memtrace_rss_bytes{{{api},part="file"}} 30"#),
            format!(r#"memtrace_rss_bytes{{{api},part="shmem"}} 4"#),
            format!(r#"memtrace_unexplained_bytes{{{api}}} 5"#),
            "# TYPE memtrace_released_bytes counter".to_owned(),
            format!(r#"memtrace_released_bytes_total{{{api},advice="munmap"}} 4096"#),
            format!(r#"memtrace_released_bytes_total{{{api},advice="MADV_DONTNEED"}} 8192"#),
            format!(r#"memtrace_page_faults_total{{{api}}} 77"#),
            format!(r#"memtrace_rss_trend_bytes_per_second{{{api}}} -12.5"#),
            format!(r#"memtrace_cgroup_usage_bytes{{{api}}} 5000"#),
            format!(r#"memtrace_cgroup_limit_bytes{{{api}}} 10000"#),
            format!(r#"memtrace_cgroup_usage_bytes{{{batch}}} 1"#),
            "memtrace_lost_records_total 3".to_owned(),
            "memtrace_traced_processes 2".to_owned(),
            "memtrace_stacks 900".to_owned(),
            "memtrace_stacks_pruned_total 40".to_owned(),
            "memtrace_agent_resident_bytes 12345".to_owned(),
            r#"memtrace_push_sent_windows_total{destination="pyroscope"} 9"#.to_owned(),
            r#"memtrace_push_retries_total{destination="pyroscope"} 4"#.to_owned(),
            r#"memtrace_push_dropped_windows_total{destination="pyroscope",reason="retries_exhausted"} 2"#.to_owned(),
            r#"memtrace_push_dropped_windows_total{destination="pyroscope",reason="queue_full"} 0"#.to_owned(),
            "# EOF".to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // Unknown values are absent, not zero.
        assert!(!text.contains(&format!("memtrace_rss_trend_bytes_per_second{{{batch}}}")));
        assert!(!text.contains(&format!("memtrace_cgroup_limit_bytes{{{batch}}}")));
    }

    #[test]
    fn a_target_left_out_is_gone() {
        let metrics = Metrics::new();
        metrics.update_targets(vec![api()]);
        assert!(metrics.encode().contains(r#"target="api""#));
        metrics.update_targets(Vec::new());
        let text = metrics.encode();
        assert!(!text.contains(r#"target="api""#), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
