//! The agent's configuration file (`/etc/memtrace/agent.toml`; the
//! documented example is `deploy/agent.toml`).
//!
//! The file is read into plain serde structs that refuse unknown keys (a
//! typo fails at start, not silently), then checked and turned into typed
//! settings: every URL, label and size that a server or the kernel would
//! refuse later is refused here, with the key it came from. Durations are
//! numbers of seconds, as on the command line; sizes are bytes or `512M`.
//! Secrets come inline or, better, from a file (a Kubernetes Secret or
//! systemd credential), read once at load.

use std::{
    collections::BTreeMap,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    cli::parse_size,
    export::push::{
        Auth, BaseUrl, Endpoint, Protocol, PushOptions, RetryPolicy, SeriesLabels, TargetLabels,
    },
};

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The agent's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// How often each target's model is reconciled with /proc and the
    /// metrics are updated.
    pub interval: Duration,
    /// How often a profile window is pushed.
    pub push_interval: Duration,
    /// Where `/metrics` is served, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// The `host` label; None for the machine's host name.
    pub host: Option<String>,
    pub targets: Vec<TargetConfig>,
    pub push: PushOptions,
    /// Profiling servers to push to.
    pub endpoints: Vec<Endpoint>,
    pub pprof_dir: Option<PprofDirConfig>,
}

/// Which processes a target is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// One process.
    Pid(u32),
    /// Processes whose command name (`/proc/PID/comm`) matches a glob.
    Command(CommandPattern),
    /// Processes in a cgroup (v2 path, e.g. `/system.slice/api.service`).
    Cgroup(String),
    /// Processes of a container, by id (or its first characters).
    Container(String),
}

/// A glob on a command name: `*` matches any run of characters, `?` any
/// one, everything else itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandPattern(String);

impl CommandPattern {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `command` matches the whole pattern.
    pub fn matches(&self, command: &str) -> bool {
        glob_matches(
            &self.0.chars().collect::<Vec<_>>(),
            &command.chars().collect::<Vec<_>>(),
        )
    }
}

/// Iterative glob matching with one backtrack point (the last `*`), linear
/// in practice and never exponential.
fn glob_matches(pattern: &[char], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// One `[[target]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetConfig {
    /// The `target` label of its metrics.
    pub name: String,
    pub selector: Selector,
    /// Its profiles' `service_name`.
    pub service_name: String,
    /// Labels for its profiles: the file's `[labels]`, then its own.
    pub labels: Vec<(String, String)>,
}

/// `[pprof_dir]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PprofDirConfig {
    pub path: PathBuf,
    pub max_bytes: u64,
}

impl AgentConfig {
    /// Reads and checks the file at `path`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the file, and the key at fault.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Checks the configuration `text`, read from `path` (named in errors,
    /// and the base of relative secret files).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for bad TOML, an unknown key, or a value the
    /// agent or a server would refuse.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: raw::Config = toml::from_str(text).map_err(|err| ConfigError::Syntax {
            path: path.to_owned(),
            message: err.to_string().trim_end().replace('\n', " "),
        })?;
        Checker { path }.config(raw)
    }
}

/// Turns the raw file into settings, naming the file in every error.
struct Checker<'a> {
    path: &'a Path,
}

impl Checker<'_> {
    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn config(&self, raw: raw::Config) -> Result<AgentConfig, ConfigError> {
        let interval = self.seconds("interval", raw.interval.unwrap_or(10.0))?;
        let push_interval = self.seconds("push_interval", raw.push_interval.unwrap_or(60.0))?;
        let metrics = raw
            .metrics
            .map(|text| {
                text.parse::<SocketAddr>().map_err(|_| {
                    self.invalid(
                        "metrics",
                        format!("`{text}` is not an address like 0.0.0.0:9464"),
                    )
                })
            })
            .transpose()?;
        if raw.target.is_empty() {
            return Err(self.invalid("target", "no [[target]]: say which processes to trace"));
        }
        let mut targets: Vec<TargetConfig> = Vec::new();
        for (n, target) in raw.target.into_iter().enumerate() {
            let target = self.target(n, target, &raw.labels, raw.host.as_deref())?;
            if targets.iter().any(|other| other.name == target.name) {
                return Err(self.invalid(
                    format!("target[{n}].name"),
                    format!("`{}` names two targets", target.name),
                ));
            }
            targets.push(target);
        }
        let push = self.push_options(&raw.push)?;
        let endpoints = self.endpoints(&raw.push)?;
        let pprof_dir = raw
            .pprof_dir
            .map(|dir| {
                let max_bytes = match dir.max_size {
                    raw::Size::Bytes(bytes) => bytes,
                    raw::Size::Text(text) => parse_size(&text)
                        .map_err(|message| self.invalid("pprof_dir.max_size", message))?,
                };
                if max_bytes == 0 {
                    return Err(self.invalid("pprof_dir.max_size", "must be more than 0"));
                }
                Ok(PprofDirConfig {
                    path: dir.path,
                    max_bytes,
                })
            })
            .transpose()?;
        Ok(AgentConfig {
            interval,
            push_interval,
            metrics,
            host: raw.host,
            targets,
            push,
            endpoints,
            pprof_dir,
        })
    }

    fn seconds(&self, key: &str, seconds: f64) -> Result<Duration, ConfigError> {
        if seconds > 0.0 && seconds.is_finite() && seconds < 1e9 {
            Ok(Duration::from_secs_f64(seconds))
        } else {
            Err(self.invalid(
                key,
                format!("{seconds} is not a positive number of seconds"),
            ))
        }
    }

    fn target(
        &self,
        n: usize,
        raw: raw::Target,
        shared_labels: &BTreeMap<String, String>,
        host: Option<&str>,
    ) -> Result<TargetConfig, ConfigError> {
        let key = |field: &str| format!("target[{n}].{field}");
        let selectors = [
            raw.pid.map(Selector::Pid),
            raw.command
                .map(|glob| Selector::Command(CommandPattern(glob))),
            raw.cgroup.map(Selector::Cgroup),
            raw.container.map(Selector::Container),
        ];
        let mut chosen = selectors.into_iter().flatten();
        let selector = match (chosen.next(), chosen.next()) {
            (Some(selector), None) => selector,
            _ => {
                return Err(self.invalid(
                    key("pid"),
                    "give exactly one of pid, command, cgroup or container",
                ))
            }
        };
        let empty = match &selector {
            Selector::Pid(0) => return Err(self.invalid(key("pid"), "0 is no process")),
            Selector::Pid(_) => None,
            Selector::Command(CommandPattern(text)) => text.trim().is_empty().then_some("command"),
            Selector::Cgroup(text) => text.trim().is_empty().then_some("cgroup"),
            Selector::Container(text) => text.trim().is_empty().then_some("container"),
        };
        if let Some(field) = empty {
            return Err(self.invalid(key(field), "is empty"));
        }
        let name = raw.name.trim().to_owned();
        if name.is_empty() {
            return Err(self.invalid(key("name"), "is empty"));
        }
        let service_name = raw.service_name.unwrap_or_else(|| name.clone());
        let mut labels: Vec<(String, String)> = shared_labels.clone().into_iter().collect();
        for (label, value) in raw.labels {
            if shared_labels.contains_key(&label) {
                return Err(self.invalid(
                    key("labels"),
                    format!("`{label}` is also in [labels]; give it in one place"),
                ));
            }
            labels.push((label, value));
        }
        // The labels a pushed profile will carry, checked now rather than
        // refused by a server every window.
        SeriesLabels::new(&TargetLabels {
            service_name: service_name.clone(),
            host: host.unwrap_or("").to_owned(),
            pid: 1,
            command: "x".into(),
            container: Some("x".into()),
            cgroup: Some("x".into()),
            extra: labels.clone(),
        })
        .map_err(|err| self.invalid(key("labels"), err.to_string()))?;
        Ok(TargetConfig {
            name,
            selector,
            service_name,
            labels,
        })
    }

    fn push_options(&self, raw: &raw::Push) -> Result<PushOptions, ConfigError> {
        let defaults = PushOptions::default();
        let queue = raw.queue.unwrap_or(defaults.queue);
        if queue == 0 {
            return Err(self.invalid("push.queue", "must hold at least 1 window"));
        }
        let seconds = |key: &str, value: Option<f64>, default: Duration| match value {
            Some(value) => self.seconds(key, value),
            None => Ok(default),
        };
        let retry = RetryPolicy {
            max_retries: raw.max_retries.unwrap_or(defaults.retry.max_retries),
            min_backoff: seconds(
                "push.min_backoff",
                raw.min_backoff,
                defaults.retry.min_backoff,
            )?,
            max_backoff: seconds(
                "push.max_backoff",
                raw.max_backoff,
                defaults.retry.max_backoff,
            )?,
        };
        if retry.min_backoff > retry.max_backoff {
            return Err(self.invalid("push.min_backoff", "is longer than push.max_backoff"));
        }
        Ok(PushOptions { queue, retry })
    }

    fn endpoints(&self, raw: &raw::Push) -> Result<Vec<Endpoint>, ConfigError> {
        let timeout = match raw.timeout {
            Some(seconds) => self.seconds("push.timeout", seconds)?,
            None => Duration::from_secs(10),
        };
        let servers = raw
            .pyroscope
            .iter()
            .enumerate()
            .map(|(n, server)| (format!("push.pyroscope[{n}]"), "pyroscope", server))
            .chain(
                raw.parca
                    .iter()
                    .enumerate()
                    .map(|(n, server)| (format!("push.parca[{n}]"), "parca", server)),
            );
        let mut endpoints: Vec<Endpoint> = Vec::new();
        for (key, kind, server) in servers {
            let key = |field: &str| format!("{key}.{field}");
            let protocol = match (kind, server.api.as_deref()) {
                ("pyroscope", None | Some("push")) => Protocol::Pyroscope,
                ("pyroscope", Some("ingest")) => Protocol::PyroscopeIngest,
                ("parca", None | Some("writeraw")) => Protocol::Parca,
                (_, Some(other)) => {
                    let known = if kind == "parca" {
                        "writeraw"
                    } else {
                        "push or ingest"
                    };
                    return Err(self.invalid(key("api"), format!("`{other}`: use {known}")));
                }
                _ => unreachable!("two kinds of server"),
            };
            let url = BaseUrl::parse(&server.url)
                .map_err(|err| self.invalid(key("url"), err.to_string()))?;
            let name = server.name.clone().unwrap_or_else(|| kind.to_owned());
            if endpoints.iter().any(|other| other.name == name) {
                return Err(self.invalid(
                    key("name"),
                    format!("`{name}` names two servers; give each its own name"),
                ));
            }
            let auth = self.auth(&key, server)?;
            endpoints.push(Endpoint {
                name,
                protocol,
                url,
                auth,
                tenant: server.tenant.clone(),
                timeout,
            });
        }
        Ok(endpoints)
    }

    fn auth(
        &self,
        key: &dyn Fn(&str) -> String,
        server: &raw::Server,
    ) -> Result<Option<Auth>, ConfigError> {
        let bearer = self.secret(
            key,
            "bearer_token",
            &server.bearer_token,
            &server.bearer_token_file,
        )?;
        let basic = match &server.basic_auth {
            Some(basic) => Some(Auth::Basic {
                username: basic.username.clone(),
                password: self
                    .secret(
                        key,
                        "basic_auth.password",
                        &basic.password,
                        &basic.password_file,
                    )?
                    .unwrap_or_default(),
            }),
            None => None,
        };
        match (basic, bearer) {
            (Some(_), Some(_)) => Err(self.invalid(
                key("basic_auth"),
                "give basic_auth or a bearer token, not both",
            )),
            (Some(basic), None) => Ok(Some(basic)),
            (None, Some(token)) => Ok(Some(Auth::Bearer(token))),
            (None, None) => Ok(None),
        }
    }

    /// A secret given inline or in a file (read now, without its trailing
    /// newline), not both.
    fn secret(
        &self,
        key: &dyn Fn(&str) -> String,
        field: &str,
        inline: &Option<String>,
        file: &Option<PathBuf>,
    ) -> Result<Option<String>, ConfigError> {
        match (inline, file) {
            (Some(_), Some(_)) => Err(self.invalid(
                key(field),
                format!("give {field} or {field}_file, not both"),
            )),
            (Some(secret), None) => Ok(Some(secret.clone())),
            (None, Some(file)) => {
                let file = self
                    .path
                    .parent()
                    .map_or_else(|| file.clone(), |dir| dir.join(file));
                let secret = fs::read_to_string(&file).map_err(|err| {
                    self.invalid(
                        format!("{}_file", key(field)),
                        format!("cannot read {}: {err}", file.display()),
                    )
                })?;
                Ok(Some(secret.trim_end_matches(['\n', '\r']).to_owned()))
            }
            (None, None) => Ok(None),
        }
    }
}

/// The file as written, before checking.
mod raw {
    use std::{collections::BTreeMap, path::PathBuf};

    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Config {
        pub interval: Option<f64>,
        pub push_interval: Option<f64>,
        pub metrics: Option<String>,
        pub host: Option<String>,
        #[serde(default)]
        pub labels: BTreeMap<String, String>,
        #[serde(default)]
        pub target: Vec<Target>,
        #[serde(default)]
        pub push: Push,
        pub pprof_dir: Option<PprofDir>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Target {
        pub name: String,
        pub pid: Option<u32>,
        pub command: Option<String>,
        pub cgroup: Option<String>,
        pub container: Option<String>,
        pub service_name: Option<String>,
        #[serde(default)]
        pub labels: BTreeMap<String, String>,
    }

    #[derive(Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Push {
        pub queue: Option<usize>,
        pub timeout: Option<f64>,
        pub max_retries: Option<u32>,
        pub min_backoff: Option<f64>,
        pub max_backoff: Option<f64>,
        #[serde(default)]
        pub pyroscope: Vec<Server>,
        #[serde(default)]
        pub parca: Vec<Server>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Server {
        pub name: Option<String>,
        pub url: String,
        pub api: Option<String>,
        pub tenant: Option<String>,
        pub basic_auth: Option<BasicAuth>,
        pub bearer_token: Option<String>,
        pub bearer_token_file: Option<PathBuf>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct BasicAuth {
        pub username: String,
        pub password: Option<String>,
        pub password_file: Option<PathBuf>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct PprofDir {
        pub path: PathBuf,
        pub max_size: Size,
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    pub(super) enum Size {
        Bytes(u64),
        Text(String),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(text, Path::new("/etc/memtrace/agent.toml"))
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    const ONE_TARGET: &str = "[[target]]\nname = \"api\"\ncommand = \"api-*\"\n";

    #[test]
    fn the_documented_example_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        let example = include_str!("../../../deploy/agent.toml");
        fs::write(&path, example).unwrap();
        fs::write(dir.path().join("pyroscope-token"), "glc_secret\n").unwrap();
        let config = AgentConfig::load(&path).unwrap();
        assert_eq!(config.metrics, Some("0.0.0.0:9464".parse().unwrap()));
        assert_eq!(config.push_interval, Duration::from_secs(60));
        assert!(!config.targets.is_empty());
        let pyroscope = &config.endpoints[0];
        assert_eq!(pyroscope.protocol, Protocol::Pyroscope);
        assert_eq!(
            pyroscope.auth,
            Some(Auth::Basic {
                username: "123456".into(),
                password: "glc_secret".into()
            }),
            "the password comes from the file, without its newline"
        );
        assert!(config.pprof_dir.unwrap().max_bytes > 0);
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let config = parse(ONE_TARGET).unwrap();
        assert_eq!(config.interval, Duration::from_secs(10));
        assert_eq!(config.push_interval, Duration::from_secs(60));
        assert_eq!(config.metrics, None);
        assert_eq!(config.push, PushOptions::default());
        assert!(config.endpoints.is_empty() && config.pprof_dir.is_none());
        let target = &config.targets[0];
        assert_eq!(target.service_name, "api", "the target's name");
        assert_eq!(
            target.selector,
            Selector::Command(CommandPattern("api-*".into()))
        );
    }

    #[test]
    fn servers_become_endpoints() {
        let config = parse(&format!(
            "{ONE_TARGET}[push]\ntimeout = 2.5\n\
             [[push.pyroscope]]\nurl = \"http://127.0.0.1:4040/\"\ntenant = \"team-a\"\n\
             bearer_token = \"t\"\n\
             [[push.pyroscope]]\nname = \"old\"\nurl = \"http://old:4040\"\napi = \"ingest\"\n\
             [[push.parca]]\nurl = \"https://parca:7070\"\n"
        ))
        .unwrap();
        let summary: Vec<_> = config
            .endpoints
            .iter()
            .map(|e| (e.name.as_str(), e.protocol, e.url.as_str(), e.timeout))
            .collect();
        let timeout = Duration::from_millis(2500);
        assert_eq!(
            summary,
            [
                (
                    "pyroscope",
                    Protocol::Pyroscope,
                    "http://127.0.0.1:4040",
                    timeout
                ),
                ("old", Protocol::PyroscopeIngest, "http://old:4040", timeout),
                ("parca", Protocol::Parca, "https://parca:7070", timeout),
            ]
        );
        assert_eq!(config.endpoints[0].tenant.as_deref(), Some("team-a"));
        assert_eq!(config.endpoints[0].auth, Some(Auth::Bearer("t".into())));
    }

    #[test]
    fn mistakes_are_refused_with_their_key() {
        let cases = [
            ("", "target: no [[target]]"),
            ("intervall = 5\n", "unknown field `intervall`"),
            ("[[target]]\nname = \"a\"\n", "target[0].pid: give exactly one of"),
            (
                "[[target]]\nname = \"a\"\npid = 1\ncommand = \"x\"\n",
                "target[0].pid: give exactly one of",
            ),
            ("[[target]]\nname = \"a\"\npid = 0\n", "target[0].pid: 0 is no process"),
            ("[[target]]\nname = \" \"\npid = 1\n", "target[0].name: is empty"),
            (
                "[[target]]\nname = \"a\"\npid = 1\n[[target]]\nname = \"a\"\npid = 2\n",
                "target[1].name: `a` names two targets",
            ),
            (
                "[[target]]\nname = \"a\"\npid = 1\nlabels = { \"bad-name\" = \"x\" }\n",
                "target[0].labels: label name `bad-name` is not",
            ),
            (
                "[[target]]\nname = \"a\"\npid = 1\nlabels = { pid = \"x\" }\n",
                "target[0].labels: label `pid` is given twice",
            ),
            (
                "[labels]\nenv = \"a\"\n[[target]]\nname = \"a\"\npid = 1\nlabels = { env = \"b\" }\n",
                "target[0].labels: `env` is also in [labels]",
            ),
            ("push_interval = 0\n", "push_interval: 0 is not a positive number"),
            ("metrics = \"9464\"\n", "metrics: `9464` is not an address"),
        ];
        for (text, expected) in cases {
            let text = if text.contains("[[target]]") {
                text.to_owned()
            } else if text.is_empty() {
                String::new()
            } else {
                format!("{text}{ONE_TARGET}")
            };
            let message = error(&text);
            assert!(
                message.starts_with("/etc/memtrace/agent.toml: ") && message.contains(expected),
                "{text:?}: {message:?} should contain {expected:?}"
            );
        }
        let server_cases = [
            ("[[push.pyroscope]]\nurl = \"ftp://x\"\n", "push.pyroscope[0].url: `ftp://x`: give an http"),
            ("[[push.pyroscope]]\nurl = \"http://x\"\napi = \"grpc\"\n", "push.pyroscope[0].api: `grpc`: use push or ingest"),
            ("[[push.parca]]\nurl = \"http://x\"\napi = \"push\"\n", "push.parca[0].api: `push`: use writeraw"),
            (
                "[[push.pyroscope]]\nurl = \"http://x\"\n[[push.pyroscope]]\nurl = \"http://y\"\n",
                "push.pyroscope[1].name: `pyroscope` names two servers",
            ),
            (
                "[[push.pyroscope]]\nurl = \"http://x\"\nbearer_token = \"a\"\nbasic_auth = { username = \"u\", password = \"p\" }\n",
                "push.pyroscope[0].basic_auth: give basic_auth or a bearer token, not both",
            ),
            (
                "[[push.pyroscope]]\nurl = \"http://x\"\nbearer_token = \"a\"\nbearer_token_file = \"f\"\n",
                "push.pyroscope[0].bearer_token: give bearer_token or bearer_token_file, not both",
            ),
            (
                "[[push.pyroscope]]\nurl = \"http://x\"\nbearer_token_file = \"/nonexistent/token\"\n",
                "push.pyroscope[0].bearer_token_file: cannot read /nonexistent/token",
            ),
            ("[push]\nqueue = 0\n", "push.queue: must hold at least 1 window"),
            ("[push]\nmin_backoff = 10\nmax_backoff = 5\n", "push.min_backoff: is longer than push.max_backoff"),
            ("[pprof_dir]\npath = \"/x\"\nmax_size = \"12Q\"\n", "pprof_dir.max_size: needs a size in K, M or G, not `12Q`"),
            ("[pprof_dir]\npath = \"/x\"\nmax_size = 0\n", "pprof_dir.max_size: must be more than 0"),
        ];
        for (text, expected) in server_cases {
            let message = error(&format!("{ONE_TARGET}{text}"));
            assert!(
                message.contains(expected),
                "{text:?}: {message:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn sizes_are_bytes_or_text() {
        let with_size = |size: &str| {
            parse(&format!(
                "{ONE_TARGET}[pprof_dir]\npath = \"/x\"\nmax_size = {size}\n"
            ))
            .unwrap()
            .pprof_dir
            .unwrap()
            .max_bytes
        };
        assert_eq!(with_size("4096"), 4096);
        assert_eq!(with_size("\"512M\""), 512 << 20);
        assert_eq!(with_size("\"1G\""), 1 << 30);
    }

    #[test]
    fn command_globs_match_whole_names() {
        let glob = |pattern: &str| CommandPattern(pattern.into());
        let cases = [
            ("java", "java", true),
            ("java", "javac", false),
            ("java*", "javac", true),
            ("*sql*", "postgresql", true),
            ("*sql*", "postgres", false),
            ("api-?", "api-1", true),
            ("api-?", "api-12", false),
            ("*", "", true),
            ("a*b*c", "aXXbYYbZZc", true),
            ("a*b*c", "aXXbYYbZZ", false),
            ("", "x", false),
        ];
        for (pattern, command, expected) in cases {
            assert_eq!(
                glob(pattern).matches(command),
                expected,
                "{pattern} vs {command}"
            );
        }
    }
}
