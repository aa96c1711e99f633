//! The deployment files in `deploy/`: the systemd unit passes
//! `systemd-analyze verify`, the Kubernetes manifest parses and grants the
//! same capabilities as the unit and no others, the configuration they
//! carry loads, and memtrace really traces with nothing but those
//! capabilities.

use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use memtrace::agent::config::AgentConfig;
use memtrace_tests::{
    memtrace::{binary, require_root, snapshots_in},
    running::Running,
};
use serde::Deserialize as _;
use serde_json::Value;

/// What memtrace needs, and all it gets: load eBPF programs (BPF), attach
/// them to tracepoints (PERFMON), read other processes' /proc files
/// (SYS_PTRACE, DAC_READ_SEARCH when other users own them), name deleted
/// files through map_files (CHECKPOINT_RESTORE).
const CAPABILITIES: [&str; 5] = [
    "BPF",
    "PERFMON",
    "SYS_PTRACE",
    "DAC_READ_SEARCH",
    "CHECKPOINT_RESTORE",
];

const EXEC_START: &str = "/usr/local/bin/memtrace agent --config /etc/memtrace/agent.toml";

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

fn unit() -> String {
    std::fs::read_to_string(deploy("memtrace-agent.service")).unwrap()
}

/// The value of `key=` in the unit (the last one, as systemd takes it).
fn unit_setting(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .rev()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
}

/// The manifest's documents, as JSON values.
fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(deploy("memtrace-agent.daemonset.yaml")).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|document| {
            let yaml = serde_norway::Value::deserialize(document).expect("valid YAML");
            serde_json::to_value(yaml).unwrap()
        })
        .collect()
}

fn document<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    documents
        .iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the manifest"))
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = unit();
    assert_eq!(
        unit_setting(&unit, "ExecStart").as_deref(),
        Some(EXEC_START)
    );
    // verify checks that ExecStart's program exists: point it at the
    // binary under test, and change nothing else.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memtrace-agent.service");
    let binary = binary();
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/memtrace", binary.to_str().unwrap()),
    )
    .unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (systemd) is needed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    // verify only warns (exit 0) about unknown keys and bad values.
    assert_eq!(stderr, "", "systemd-analyze verify complained");
}

#[test]
fn the_unit_and_the_daemonset_grant_exactly_the_listed_capabilities() {
    let unit = unit();
    let bounding = unit_setting(&unit, "CapabilityBoundingSet").unwrap();
    let in_unit: Vec<&str> = bounding
        .split_whitespace()
        .map(|cap| cap.strip_prefix("CAP_").unwrap_or(cap))
        .collect();
    assert_eq!(in_unit, CAPABILITIES);
    assert_eq!(
        unit_setting(&unit, "NoNewPrivileges").as_deref(),
        Some("yes")
    );
    assert_eq!(unit_setting(&unit, "AmbientCapabilities"), None);

    let documents = manifest();
    for document in &documents {
        assert!(
            document["apiVersion"].is_string() && document["metadata"]["name"].is_string(),
            "not a Kubernetes object: {document}"
        );
    }
    let daemonset = document(&documents, "DaemonSet");
    assert_eq!(daemonset["apiVersion"], "apps/v1");
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(
        pod["hostPID"], true,
        "the agent must see the node's processes"
    );
    assert_eq!(
        daemonset["spec"]["selector"]["matchLabels"],
        daemonset["spec"]["template"]["metadata"]["labels"]
    );
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let agent = &containers[0];
    assert_eq!(
        agent["args"],
        serde_json::json!(["agent", "--config", "/etc/memtrace/agent.toml"])
    );
    let security = &agent["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let added: Vec<&str> = security["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cap| cap.as_str().unwrap())
        .collect();
    assert_eq!(added, CAPABILITIES);

    // The node's BTF, tracefs and /proc, read-only.
    let volumes = pod["volumes"].as_array().unwrap();
    let host_path = |volume: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == volume)
            .and_then(|v| v["hostPath"]["path"].as_str())
    };
    let mounts = agent["volumeMounts"].as_array().unwrap();
    for host in ["/sys/kernel/btf", "/sys/kernel/tracing", "/proc"] {
        let mount = mounts
            .iter()
            .find(|m| host_path(m["name"].as_str().unwrap()) == Some(host))
            .unwrap_or_else(|| panic!("{host} is not mounted"));
        assert_eq!(mount["readOnly"], true, "{host}");
    }

    // The configuration it carries loads.
    let config = document(&documents, "ConfigMap")["data"]["agent.toml"]
        .as_str()
        .unwrap();
    let config = AgentConfig::parse(config, Path::new("agent.toml")).unwrap();
    assert_eq!(config.metrics.unwrap().port(), 9464);
    assert_eq!(agent["ports"][0]["containerPort"], 9464);
}

/// `setpriv` running memtrace as root with only `capabilities` (and no
/// new privileges), with `args`.
fn memtrace_with(capabilities: &[&str], args: &[&str]) -> std::process::Output {
    let bounding: Vec<String> = capabilities
        .iter()
        .map(|cap| format!("+{}", cap.to_lowercase()))
        .collect();
    Command::new("timeout")
        .arg("120")
        .arg("setpriv")
        .arg("--no-new-privs")
        .arg(format!("--bounding-set=-all,{}", bounding.join(",")))
        .arg(binary())
        .args(args)
        .output()
        .expect("setpriv (util-linux) is needed")
}

fn without(missing: &str) -> Vec<&'static str> {
    CAPABILITIES
        .iter()
        .copied()
        .filter(|cap| *cap != missing)
        .collect()
}

/// The last snapshot memtrace printed, failing unless it succeeded.
fn last_snapshot(output: &std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{:?}: {}{stdout}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    snapshots_in(stdout.lines()).pop().expect("snapshots")
}

#[test]
fn memtrace_traces_with_only_the_listed_capabilities() {
    require_root();
    // Another user's process, as the agent's targets are.
    let other_user = Running::start(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sleep",
            "600",
        ],
        &[],
    );
    let pid = other_user.pid().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n" {
        assert!(Instant::now() < deadline, "sleep did not start");
        thread::sleep(Duration::from_millis(10));
    }
    let trace = ["-p", pid.as_str(), "-d", "2", "--json", "-"];

    let last = last_snapshot(&memtrace_with(&CAPABILITIES, &trace));
    let kernel_rss = last["kernel"]["rss_bytes"].as_u64().unwrap();
    assert!(kernel_rss > 0, "{last}");
    assert_eq!(
        last["model"]["rss_bytes"].as_u64(),
        Some(kernel_rss),
        "{last}"
    );
    assert_eq!(last["records"]["lost_total"], 0, "{last}");

    // Without DAC_READ_SEARCH the process's pagemap (mode 0400, its
    // owner's) cannot be opened, and the model cannot see its pages.
    let output = memtrace_with(&without("DAC_READ_SEARCH"), &trace);
    let blind = snapshots_in(String::from_utf8_lossy(&output.stdout).lines()).pop();
    assert!(
        !output.status.success()
            || blind.is_some_and(|last| last["model"]["rss_bytes"].as_u64() != Some(kernel_rss)),
        "DAC_READ_SEARCH is not needed after all"
    );
    // Without BPF or PERFMON the programs cannot be loaded or attached.
    for missing in ["BPF", "PERFMON"] {
        let output = memtrace_with(&without(missing), &trace);
        assert!(
            !output.status.success(),
            "without {missing}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    drop(other_user);
}
