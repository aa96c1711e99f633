//! The real Prometheus (Debian's `prometheus` package), started on loopback
//! to scrape an endpoint under test and read back through its HTTP API.

use std::{
    collections::BTreeMap,
    io::Read,
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// Where `apt-get install prometheus` puts the server.
const BINARY: &str = "/usr/bin/prometheus";
/// How long Prometheus may take to start, or a series to appear: a bound
/// on a hang, not a measure of speed.
const PATIENCE: Duration = Duration::from_secs(120);

/// One series of a query's answer: its labels (without `job` and
/// `instance`, which Prometheus adds) and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of OpenMetrics `text`: its `name{k="v",...} value` lines.
pub fn parse_text(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a value");
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let labels = labels
                .trim_end_matches('}')
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').expect("a label");
                    (key.to_owned(), value.trim_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().expect("a number"),
            }
        })
        .collect()
}

/// A Prometheus server scraping one target every second; stopped when
/// dropped.
pub struct Prometheus {
    child: Child,
    address: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`HOST:PORT`, path `/metrics`)
    /// as job `memtrace`, and waits until it is ready.
    pub fn start(target: SocketAddr) -> Self {
        assert!(
            Path::new(BINARY).exists(),
            "{BINARY} is missing: `cargo xtask setup` installs Debian's prometheus package"
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: memtrace\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let address = free_loopback_port();
        let child = Command::new(BINARY)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address={address}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prometheus");
        let prometheus = Self {
            child,
            address,
            _dir: dir,
        };
        prometheus.wait_until("Prometheus is ready", || {
            get(&format!("http://{address}/-/ready")).is_some_and(|(status, _)| status == 200)
        });
        prometheus
    }

    /// The answer to an instant PromQL query.
    pub fn query(&self, promql: &str) -> Vec<Sample> {
        let url = format!(
            "http://{}/api/v1/query?query={}",
            self.address,
            percent_encode(promql)
        );
        let json = self.api(&url);
        json["data"]["result"]
            .as_array()
            .expect("a vector result")
            .iter()
            .map(|series| {
                let mut labels: BTreeMap<String, String> = series["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect();
                let name = labels.remove("__name__").unwrap_or_default();
                labels.remove("job");
                labels.remove("instance");
                let value = series["value"][1].as_str().unwrap();
                Sample {
                    name,
                    labels,
                    value: value.parse().unwrap(),
                }
            })
            .collect()
    }

    /// What Prometheus learnt about metric family `family` from the
    /// scrapes: `(type, help, unit)`.
    pub fn metadata(&self, family: &str) -> Option<(String, String, String)> {
        let json = self.api(&format!(
            "http://{}/api/v1/metadata?metric={family}",
            self.address
        ));
        let entry = &json["data"][family][0];
        let text = |key: &str| entry[key].as_str().map(str::to_owned);
        Some((text("type")?, text("help")?, text("unit")?))
    }

    /// Waits for `done`, polling; fails the test after [`PATIENCE`].
    pub fn wait_until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done() {
            assert!(Instant::now() < deadline, "gave up waiting until {what}");
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn api(&self, url: &str) -> Value {
        let (status, body) = get(url).unwrap_or_else(|| panic!("no answer from {url}"));
        assert_eq!(status, 200, "{url}: {body}");
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["status"], "success", "{url}: {body}");
        json
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address with a port free a moment ago.
fn free_loopback_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
}

/// The status and body of `GET url`, or None if nothing answers.
pub fn get(url: &str) -> Option<(u16, String)> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let mut response = agent.get(url).call().ok()?;
    let mut body = String::new();
    response
        .body_mut()
        .as_reader()
        .read_to_string(&mut body)
        .ok()?;
    Some((response.status().as_u16(), body))
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}
