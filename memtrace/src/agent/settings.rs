//! The agent's settings from its command line and environment on top of
//! its configuration file: each flag is written into the file's table
//! before the table is checked, so a value is refused the same way, with
//! the same words, wherever it came from.

use std::{
    fs,
    path::{Path, PathBuf},
};

use toml::{Table, Value};

use super::config::{AgentConfig, ConfigError};
use crate::cli::AgentArgs;

/// Where the agent looks for its file when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/memtrace/agent.toml";

/// The size cap of a `--pprof-dir` that the file does not give one.
const DEFAULT_PPROF_DIR_SIZE: &str = "1G";

/// The settings `args` give, over the file they name (or the default file,
/// when it exists).
///
/// # Errors
///
/// A [`ConfigError`] naming the file (or the command line) and the key at
/// fault.
pub fn settings(args: &AgentArgs) -> Result<AgentConfig, ConfigError> {
    let (path, text) = match &args.config {
        Some(path) => (path.clone(), read(path)?),
        None if Path::new(DEFAULT_CONFIG).is_file() => {
            let path = PathBuf::from(DEFAULT_CONFIG);
            let text = read(&path)?;
            (path, text)
        }
        None => (PathBuf::from("the command line"), String::new()),
    };
    let syntax = |message: String| ConfigError::Syntax {
        path: path.clone(),
        message: message.trim_end().replace('\n', " "),
    };
    let mut table: Table = text
        .parse()
        .map_err(|err: toml::de::Error| syntax(err.to_string()))?;
    if let Some(metrics) = &args.metrics {
        table.insert("metrics".into(), Value::String(metrics.clone()));
    }
    if let Some(host) = &args.host {
        table.insert("host".into(), Value::String(host.clone()));
    }
    if let Some(seconds) = args.interval {
        table.insert("interval".into(), Value::Float(seconds));
    }
    if let Some(seconds) = args.push_interval {
        table.insert("push_interval".into(), Value::Float(seconds));
    }
    if let Some(dir) = &args.pprof_dir {
        let entry = table
            .entry("pprof_dir")
            .or_insert_with(|| Value::Table(Table::new()));
        let Value::Table(pprof_dir) = entry else {
            return Err(syntax("pprof_dir is not a table".into()));
        };
        pprof_dir.insert("path".into(), Value::String(dir.display().to_string()));
        pprof_dir
            .entry("max_size")
            .or_insert_with(|| Value::String(DEFAULT_PPROF_DIR_SIZE.into()));
    }
    if !args.targets.is_empty() {
        let entry = table
            .entry("target")
            .or_insert_with(|| Value::Array(Vec::new()));
        let Value::Array(targets) = entry else {
            return Err(syntax("target is not an array of tables".into()));
        };
        for given in &args.targets {
            targets.push(Value::Table(target(given).map_err(|message| {
                ConfigError::Invalid {
                    path: PathBuf::from("the command line"),
                    key: format!("--target {given}"),
                    message,
                }
            })?));
        }
    }
    let text = toml::to_string(&table).map_err(|err| syntax(err.to_string()))?;
    AgentConfig::parse(&text, &path)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// One `--target NAME=KIND:VALUE` as a `[[target]]` table.
fn target(given: &str) -> Result<Table, String> {
    let shape = "is not NAME=pid:PID, NAME=command:GLOB, NAME=cgroup:PATH or NAME=container:ID";
    let (name, selector) = given.split_once('=').ok_or(shape)?;
    let (kind, value) = selector.split_once(':').ok_or(shape)?;
    let value = match kind {
        "pid" => Value::Integer(
            value
                .parse()
                .map_err(|_| format!("`{value}` is not a process ID"))?,
        ),
        "command" | "cgroup" | "container" => Value::String(value.to_owned()),
        _ => return Err(format!("`{kind}` is not pid, command, cgroup or container")),
    };
    let mut table = Table::new();
    table.insert("name".into(), Value::String(name.to_owned()));
    table.insert(kind.into(), value);
    Ok(table)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser as _;

    use super::*;
    use crate::agent::config::Selector;

    fn args(extra: &[&str]) -> AgentArgs {
        AgentArgs::try_parse_from(std::iter::once("memtrace agent").chain(extra.iter().copied()))
            .unwrap()
    }

    #[test]
    fn flags_alone_make_a_configuration() {
        let config = settings(&args(&[
            "--target",
            "api=command:api-*",
            "--target",
            "one=pid:42",
            "--metrics",
            "127.0.0.1:9464",
            "--interval",
            "2.5",
            "--pprof-dir",
            "/tmp/profiles",
        ]))
        .unwrap();
        assert_eq!(config.targets.len(), 2);
        assert_eq!(config.targets[0].name, "api");
        assert!(
            matches!(&config.targets[0].selector, Selector::Command(glob) if glob.as_str() == "api-*")
        );
        assert_eq!(config.targets[1].selector, Selector::Pid(42));
        assert_eq!(config.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(config.interval, Duration::from_millis(2500));
        let dir = config.pprof_dir.unwrap();
        assert_eq!(dir.path, PathBuf::from("/tmp/profiles"));
        assert_eq!(dir.max_bytes, 1 << 30);
    }

    #[test]
    fn flags_override_the_file_and_add_to_its_targets() {
        let dir = std::env::temp_dir().join(format!("memtrace-settings-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("agent.toml");
        fs::write(
            &file,
            "interval = 30\nmetrics = \"0.0.0.0:1\"\n[[target]]\nname = \"db\"\ncgroup = \"/db\"\n\
             [pprof_dir]\npath = \"/var/x\"\nmax_size = \"5M\"\n",
        )
        .unwrap();
        let config = settings(&args(&[
            "--config",
            file.to_str().unwrap(),
            "--target",
            "web=container:3f4a9c",
            "--metrics",
            "127.0.0.1:2",
            "--pprof-dir",
            "/var/y",
        ]))
        .unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(config.interval, Duration::from_secs(30));
        assert_eq!(config.metrics, Some("127.0.0.1:2".parse().unwrap()));
        let names: Vec<_> = config.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["db", "web"]);
        let pprof_dir = config.pprof_dir.unwrap();
        assert_eq!(pprof_dir.path, PathBuf::from("/var/y"));
        assert_eq!(pprof_dir.max_bytes, 5 << 20);
    }

    #[test]
    fn bad_flags_are_refused_with_what_is_wrong() {
        for (given, words) in [
            ("api", "is not NAME=pid:PID"),
            ("api=java", "is not NAME=pid:PID"),
            (
                "api=exe:java",
                "`exe` is not pid, command, cgroup or container",
            ),
            ("api=pid:twelve", "`twelve` is not a process ID"),
        ] {
            let err = settings(&args(&["--target", given]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(words), "{given}: {err}");
        }
        let err = settings(&args(&["--target", "a=pid:1", "--interval", "0"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("interval"), "{err}");
        let err = settings(&args(&[])).unwrap_err().to_string();
        assert!(err.contains("no [[target]]"), "{err}");
    }
}
