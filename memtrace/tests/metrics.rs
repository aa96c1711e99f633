//! The metrics endpoint scraped by the real Prometheus.
//!
//! memtrace's metrics server serves numbers the test controls; Prometheus
//! (Debian's package, started on loopback) scrapes it every second, and
//! the test reads every series back through Prometheus's query API and
//! compares it with what was served, value for value. It also checks that
//! Prometheus took the OpenMetrics metadata (types, units), that a target
//! left out disappears, and that the PromQL queries the README gives
//! answer what they claim.

use std::collections::BTreeMap;

use memtrace::export::{
    metrics::{
        AgentCounts, CgroupUsage, Metrics, MetricsServer, RssParts, TargetMetrics, CONTENT_TYPE,
    },
    push::{DestinationCounts, DropReason},
};
use memtrace_tests::prometheus::{get, parse_text, Prometheus, Sample};

const MIB: u64 = 1 << 20;

fn api(in_use: u64) -> TargetMetrics {
    TargetMetrics {
        target: "api".into(),
        pid: 4242,
        command: "api-server".into(),
        rss: RssParts {
            in_use,
            lazily_freed: 24 * MIB,
            file: 3 * MIB + 4096,
            shmem: 8192,
        },
        unexplained_bytes: 12288,
        released_bytes: vec![
            ("munmap".into(), 8 * MIB),
            ("MADV_DONTNEED".into(), 16 * MIB),
            ("MADV_FREE".into(), 24 * MIB),
        ],
        page_faults: 16_526,
        trend_bytes_per_second: Some(-1536.5),
        cgroup: Some(CgroupUsage {
            usage_bytes: 200 * MIB,
            limit_bytes: Some(512 * MIB),
        }),
    }
}

fn batch() -> TargetMetrics {
    TargetMetrics {
        target: "batch".into(),
        pid: 99,
        command: "batch".into(),
        rss: RssParts {
            in_use: 5 * MIB,
            lazily_freed: 0,
            file: MIB,
            shmem: 0,
        },
        page_faults: 1280,
        cgroup: Some(CgroupUsage {
            usage_bytes: 7 * MIB,
            limit_bytes: None,
        }),
        ..TargetMetrics::default()
    }
}

fn push_counts() -> DestinationCounts {
    let mut dropped = DropReason::ALL.map(|reason| (reason, 0));
    dropped[DropReason::QueueFull as usize].1 = 3;
    dropped[DropReason::RetriesExhausted as usize].1 = 2;
    DestinationCounts {
        destination: "pyroscope".into(),
        sent: 120,
        sent_bytes: 1 << 24,
        retries: 9,
        dropped,
        last_error: None,
    }
}

/// Samples sorted by name and labels, for comparing sets.
fn sorted(mut samples: Vec<Sample>) -> Vec<Sample> {
    samples.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
    samples
}

fn value_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == wanted)
        .map(|s| s.value)
}

type Labels<'a> = Vec<(&'a str, &'a str)>;

const ALL: &str = r#"{__name__=~"memtrace_.*",job="memtrace"}"#;

#[test]
fn prometheus_scrapes_every_series_as_served() {
    let metrics = Metrics::new();
    metrics.update_targets(vec![api(40 * MIB), batch()]);
    metrics.update_agent(AgentCounts {
        lost_records: 7,
        traced_processes: 2,
        stacks: 900,
        stacks_pruned: 40,
        resident_bytes: 12 * MIB,
    });
    metrics.update_push(vec![push_counts()]);
    let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), metrics.clone()).unwrap();
    let url = format!("http://{}/metrics", server.local_addr());
    let (status, text) = get(&url).unwrap();
    assert_eq!(status, 200);
    let expected = sorted(parse_text(&text));
    // api: 4 RSS parts, unexplained, 3 release kinds, faults, trend,
    // cgroup usage and limit (12); batch: RSS parts, unexplained, faults,
    // cgroup usage, no trend, no releases, no cgroup limit (7); the agent:
    // lost records, processes, stacks, pruned, its RSS (5); the
    // destination: sent, retries, five drop reasons (7).
    assert_eq!(expected.len(), 12 + 7 + 5 + 7, "{text}");

    let prometheus = Prometheus::start(server.local_addr());
    prometheus.wait_until("Prometheus has scraped every series", || {
        prometheus.query(ALL).len() == expected.len()
    });
    let scraped = sorted(prometheus.query(ALL));
    assert_eq!(
        scraped, expected,
        "what Prometheus stored is what was served"
    );

    // The numbers themselves, as the caller gave them.
    let api_labels = [
        ("target", "api"),
        ("pid", "4242"),
        ("command", "api-server"),
    ];
    let with = |extra: (&'static str, &'static str)| {
        let mut labels = api_labels.to_vec();
        labels.push(extra);
        labels
    };
    let checks: [(&str, Labels, f64); 8] = [
        (
            "memtrace_rss_bytes",
            with(("part", "in_use")),
            (40 * MIB) as f64,
        ),
        (
            "memtrace_rss_bytes",
            with(("part", "lazily_freed")),
            (24 * MIB) as f64,
        ),
        (
            "memtrace_rss_bytes",
            with(("part", "file")),
            (3 * MIB + 4096) as f64,
        ),
        (
            "memtrace_released_bytes_total",
            with(("advice", "MADV_DONTNEED")),
            (16 * MIB) as f64,
        ),
        ("memtrace_page_faults_total", api_labels.to_vec(), 16_526.0),
        (
            "memtrace_rss_trend_bytes_per_second",
            api_labels.to_vec(),
            -1536.5,
        ),
        ("memtrace_lost_records_total", Vec::new(), 7.0),
        (
            "memtrace_cgroup_limit_bytes",
            api_labels.to_vec(),
            (512 * MIB) as f64,
        ),
    ];
    for (name, labels, value) in checks {
        assert_eq!(
            value_of(&scraped, name, &labels),
            Some(value),
            "{name} {labels:?}"
        );
    }
    assert_eq!(
        value_of(
            &scraped,
            "memtrace_push_dropped_windows_total",
            &[("destination", "pyroscope"), ("reason", "queue_full")]
        ),
        Some(3.0)
    );

    // Prometheus read the OpenMetrics metadata: types and units.
    for (family, kind, unit) in [
        ("memtrace_rss_bytes", "gauge", "bytes"),
        ("memtrace_released_bytes", "counter", "bytes"),
        ("memtrace_page_faults", "counter", ""),
        (
            "memtrace_rss_trend_bytes_per_second",
            "gauge",
            "bytes_per_second",
        ),
    ] {
        let (got_kind, help, got_unit) = prometheus
            .metadata(family)
            .unwrap_or_else(|| panic!("no metadata for {family}"));
        assert_eq!(
            (got_kind.as_str(), got_unit.as_str()),
            (kind, unit),
            "{family}"
        );
        assert!(!help.is_empty());
    }

    // The README's queries.
    let real_usage = prometheus
        .query(r#"sum without (part) (memtrace_rss_bytes{part!="lazily_freed",target="api"})"#);
    assert_eq!(real_usage.len(), 1);
    assert_eq!(
        real_usage[0].value,
        (40 * MIB + 3 * MIB + 4096 + 8192) as f64
    );
    let rss_minus_lazyfree = prometheus.query(
        r#"sum without (part) (memtrace_rss_bytes{target="api"}) - ignoring (part) memtrace_rss_bytes{part="lazily_freed",target="api"}"#,
    );
    assert_eq!(rss_minus_lazyfree[0].value, real_usage[0].value);
    let lazily_freed_share = prometheus.query(
        r#"memtrace_rss_bytes{part="lazily_freed",target="api"} / ignoring (part) sum without (part) (memtrace_rss_bytes{target="api"})"#,
    );
    let rss = (40 * MIB + 24 * MIB + 3 * MIB + 4096 + 8192) as f64;
    assert_eq!(lazily_freed_share[0].value, (24 * MIB) as f64 / rss);
    let headroom = prometheus.query(r#"memtrace_cgroup_usage_bytes / memtrace_cgroup_limit_bytes"#);
    assert_eq!(
        headroom.len(),
        1,
        "only api's cgroup has a limit: {headroom:?}"
    );
    assert_eq!(headroom[0].value, 200.0 / 512.0);

    // New numbers replace the old; a target left out goes stale.
    metrics.update_targets(vec![api(41 * MIB)]);
    let in_use = r#"memtrace_rss_bytes{part="in_use",target="api"}"#;
    prometheus.wait_until("the new in-use value is scraped", || {
        prometheus
            .query(in_use)
            .first()
            .is_some_and(|s| s.value == (41 * MIB) as f64)
    });
    prometheus.wait_until("batch's series are gone", || {
        prometheus.query(r#"{target="batch"}"#).is_empty()
    });
    assert_eq!(
        prometheus.query(r#"count({__name__=~"memtrace_.*",target="api"})"#)[0].value,
        expected
            .iter()
            .filter(|s| s.labels.get("target").is_some_and(|t| t == "api"))
            .count() as f64
    );
}

#[test]
fn the_endpoint_answers_only_what_it_serves() {
    let metrics = Metrics::new();
    metrics.update_targets(vec![batch()]);
    let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), metrics).unwrap();
    let base = format!("http://{}", server.local_addr());
    let (status, text) = get(&format!("{base}/metrics?debug=1")).unwrap();
    assert_eq!(status, 200);
    assert!(text.ends_with("# EOF\n"));
    assert!(text
        .contains(r#"memtrace_page_faults_total{target="batch",pid="99",command="batch"} 1280"#));
    assert_eq!(get(&format!("{base}/")).unwrap().0, 200);
    assert_eq!(get(&format!("{base}/other")).unwrap().0, 404);
    assert_eq!(
        CONTENT_TYPE,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );

    // A request head larger than 8 KiB is refused, and the server goes on.
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(server.local_addr()).unwrap();
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let _ = stream.write_all(huge.as_bytes());
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");
    let mut stream = std::net::TcpStream::connect(server.local_addr()).unwrap();
    stream.write_all(b"POST /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 405 "), "{answer:?}");
    assert_eq!(
        get(&format!("{base}/metrics")).unwrap().0,
        200,
        "still serving"
    );
}
