//! The labels a pushed profile series carries, checked the way Pyroscope
//! and Parca check them.
//!
//! Both servers key a series by Prometheus-style labels: names match
//! `[a-zA-Z_][a-zA-Z0-9_]*` (Parca rejects anything else), no name twice
//! (both reject duplicates), `__name__` is the profile's name (both reject
//! a series without it). Pyroscope also caps a series at 30 labels and a
//! value at 2048 bytes. Checking here turns a server's 400, found at 3 a.m.
//! with every window dropped, into an error when the agent starts.

/// The profile name memory profiles carry in `__name__`, as Grafana Alloy
/// and parca-agent send for memory.
pub const PROFILE_NAME: &str = "memory";

/// Pyroscope's cap on labels per series.
const MAX_LABELS: usize = 30;
/// Pyroscope's cap on the length of a label value, in bytes.
const MAX_VALUE_BYTES: usize = 2048;

/// What one target's profiles are labelled with; the caller fills it from
/// what it knows of the process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetLabels {
    /// The application, as Pyroscope's `service_name` (and the legacy
    /// `/ingest` application name).
    pub service_name: String,
    /// The machine's host name.
    pub host: String,
    pub pid: u32,
    /// The process's command name.
    pub command: String,
    /// The container id, when the process runs in one.
    pub container: Option<String>,
    /// The process's cgroup (v2 path), when known.
    pub cgroup: Option<String>,
    /// More labels from the configuration, such as `env = "prod"`.
    pub extra: Vec<(String, String)>,
}

/// Why a label set would be refused by the servers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("service_name is empty")]
    NoServiceName,
    #[error("label name `{0}` is not [a-zA-Z_][a-zA-Z0-9_]*")]
    InvalidName(String),
    #[error("label name `{0}` is reserved (names starting with `__`)")]
    Reserved(String),
    #[error("label `{0}` is given twice")]
    Duplicate(String),
    #[error("{0} labels, more than the {MAX_LABELS} a series may have")]
    TooMany(usize),
}

/// A checked, sorted label set with `__name__` first, as sent with every
/// profile of one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesLabels(Vec<(String, String)>);

impl SeriesLabels {
    /// The series of `target`'s memory profiles. Empty optional values are
    /// left out (an empty label is no label), and values longer than
    /// Pyroscope accepts are cut at a character boundary.
    ///
    /// # Errors
    ///
    /// A [`LabelError`] for what a server would refuse: an empty service
    /// name, a bad or reserved extra label name, a name given twice, or too
    /// many labels.
    pub fn new(target: &TargetLabels) -> Result<Self, LabelError> {
        if target.service_name.trim().is_empty() {
            return Err(LabelError::NoServiceName);
        }
        let own = [
            ("service_name", Some(target.service_name.clone())),
            ("host", Some(target.host.clone())),
            ("pid", Some(target.pid.to_string())),
            ("command", Some(target.command.clone())),
            ("container", target.container.clone()),
            ("cgroup", target.cgroup.clone()),
        ];
        let mut labels = vec![("__name__".to_owned(), PROFILE_NAME.to_owned())];
        for (name, value) in own {
            if let Some(value) = value.filter(|value| !value.is_empty()) {
                labels.push((name.to_owned(), value));
            }
        }
        for (name, value) in &target.extra {
            check_name(name)?;
            if name.starts_with("__") {
                return Err(LabelError::Reserved(name.clone()));
            }
            if labels.iter().any(|(taken, _)| taken == name) {
                return Err(LabelError::Duplicate(name.clone()));
            }
            if !value.is_empty() {
                labels.push((name.clone(), value.clone()));
            }
        }
        if labels.len() > MAX_LABELS {
            return Err(LabelError::TooMany(labels.len()));
        }
        for (_, value) in &mut labels {
            truncate(value, MAX_VALUE_BYTES);
        }
        labels[1..].sort();
        Ok(Self(labels))
    }

    /// The labels, `__name__` first and the rest by name.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// The value of label `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(label, _)| label == name)
            .map(|(_, value)| value.as_str())
    }

    /// The application name (`service_name`).
    pub fn service_name(&self) -> &str {
        self.get("service_name")
            .expect("SeriesLabels::new always sets service_name")
    }
}

/// Checks a label name against `[a-zA-Z_][a-zA-Z0-9_]*`.
///
/// # Errors
///
/// [`LabelError::InvalidName`] if it does not match.
pub fn check_name(name: &str) -> Result<(), LabelError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(LabelError::InvalidName(name.to_owned()))
    }
}

/// `text` with every character but `[A-Za-z0-9_.-]` made `_`: an
/// application name the legacy `/ingest` accepts, and a safe file name part.
pub fn plain_name(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Cuts `value` to at most `max` bytes, at a character boundary.
fn truncate(value: &mut String, max: usize) {
    if value.len() > max {
        let end = (0..=max)
            .rev()
            .find(|&at| value.is_char_boundary(at))
            .unwrap_or(0);
        value.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> TargetLabels {
        TargetLabels {
            service_name: "checkout".into(),
            host: "node-7".into(),
            pid: 4242,
            command: "checkout-api".into(),
            container: None,
            cgroup: Some("/system.slice/checkout.service".into()),
            extra: vec![("env".into(), "prod".into())],
        }
    }

    fn pairs(labels: &SeriesLabels) -> Vec<(&str, &str)> {
        labels
            .pairs()
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect()
    }

    #[test]
    fn name_first_then_sorted_and_unknown_optionals_left_out() {
        let labels = SeriesLabels::new(&target()).unwrap();
        assert_eq!(
            pairs(&labels),
            [
                ("__name__", "memory"),
                ("cgroup", "/system.slice/checkout.service"),
                ("command", "checkout-api"),
                ("env", "prod"),
                ("host", "node-7"),
                ("pid", "4242"),
                ("service_name", "checkout"),
            ]
        );
        assert_eq!(labels.service_name(), "checkout");
        assert_eq!(labels.get("container"), None);
    }

    #[test]
    fn empty_values_are_no_labels() {
        let labels = SeriesLabels::new(&TargetLabels {
            container: Some(String::new()),
            extra: vec![("team".into(), String::new())],
            ..target()
        })
        .unwrap();
        assert_eq!(labels.get("container"), None);
        assert_eq!(labels.get("team"), None);
    }

    #[test]
    fn what_servers_refuse_is_an_error() {
        let with_extra = |name: &str| TargetLabels {
            extra: vec![(name.into(), "x".into())],
            ..target()
        };
        for bad in ["", "9lives", "has-dash", "dotted.name", "ünï"] {
            assert_eq!(
                SeriesLabels::new(&with_extra(bad)),
                Err(LabelError::InvalidName(bad.into())),
                "{bad:?}"
            );
        }
        assert_eq!(
            SeriesLabels::new(&with_extra("__name__")),
            Err(LabelError::Reserved("__name__".into()))
        );
        assert_eq!(
            SeriesLabels::new(&with_extra("pid")),
            Err(LabelError::Duplicate("pid".into()))
        );
        assert_eq!(
            SeriesLabels::new(&TargetLabels {
                service_name: "  ".into(),
                ..target()
            }),
            Err(LabelError::NoServiceName)
        );
        let crowded = TargetLabels {
            extra: (0..25).map(|n| (format!("l{n}"), "x".into())).collect(),
            ..target()
        };
        assert_eq!(SeriesLabels::new(&crowded), Err(LabelError::TooMany(31)));
        let full = TargetLabels {
            extra: (0..24).map(|n| (format!("l{n}"), "x".into())).collect(),
            ..target()
        };
        assert_eq!(SeriesLabels::new(&full).unwrap().pairs().len(), 30);
    }

    #[test]
    fn plain_names_keep_only_safe_characters() {
        assert_eq!(plain_name("shop/api v2.1-rc_3"), "shop_api_v2.1-rc_3");
        assert_eq!(plain_name("../x"), ".._x");
    }

    #[test]
    fn long_values_are_cut_at_a_character_boundary() {
        let long = format!("a{}", "é".repeat(2000));
        let labels = SeriesLabels::new(&TargetLabels {
            cgroup: Some(long.clone()),
            ..target()
        })
        .unwrap();
        let cgroup = labels.get("cgroup").unwrap();
        assert_eq!(cgroup.len(), 2047, "2048 would split an é");
        assert!(long.starts_with(cgroup));
    }
}
