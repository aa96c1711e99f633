//! Mistakes on the command line, said the way the rest of memtrace says
//! things: one line, plain words, naming the option and what it needs. The
//! argument parser's own errors (several lines, `error:`, a usage dump,
//! parser jargon) are translated from what they carry, not passed on.

use clap::{
    error::{ContextKind, ContextValue, ErrorKind},
    CommandFactory,
};

use super::Cli;

/// What `main` does with a command line it cannot run.
#[derive(Debug)]
pub enum Usage {
    /// `--help` or `--version`: printed as clap writes them, exit 0.
    Show(String),
    /// A mistake, in one line (without the `memtrace: ` every error starts
    /// with); exit 2.
    Bad(String),
}

impl Usage {
    pub fn from_clap(err: &clap::Error) -> Self {
        match err.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                Self::Show(err.render().to_string())
            }
            _ => Self::Bad(explain(err)),
        }
    }
}

fn text(err: &clap::Error, kind: ContextKind) -> Option<String> {
    match err.get(kind)? {
        ContextValue::String(text) => Some(text.clone()),
        ContextValue::Strings(texts) => Some(texts.join(", ")),
        ContextValue::StyledStr(styled) => Some(styled.to_string()),
        ContextValue::StyledStrs(styled) => Some(
            styled
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ContextValue::Number(number) => Some(number.to_string()),
        ContextValue::Bool(_) | ContextValue::None => None,
        _ => None,
    }
}

/// An argument as clap names it (`--pid <PID>`, `[CMD]...`) as people type
/// it: its short form when it has one (`-p`), else its long one; a command
/// as `-- COMMAND`.
fn option_name(described: &str) -> String {
    let flag = described.split([' ', '=']).next().unwrap_or(described);
    if !flag.starts_with('-') {
        // `report FILE`'s one positional; any other is the command.
        return match value_name(described) {
            Some("FILE") => "FILE".to_owned(),
            _ => "-- COMMAND".to_owned(),
        };
    }
    let long = flag.trim_start_matches('-');
    Cli::command()
        .get_arguments()
        .find(|arg| {
            arg.get_long() == Some(long) || arg.get_short().is_some_and(|s| s.to_string() == long)
        })
        .and_then(|arg| arg.get_short())
        .map_or_else(|| flag.to_owned(), |short| format!("-{short}"))
}

/// What a value-taking option expects, from clap's `--json <FILE>`.
fn value_name(described: &str) -> Option<&str> {
    let start = described.find('<')?;
    let end = described[start..].find('>')? + start;
    Some(&described[start + 1..end])
}

fn explain(err: &clap::Error) -> String {
    let arg = text(err, ContextKind::InvalidArg).unwrap_or_default();
    let value = text(err, ContextKind::InvalidValue).unwrap_or_default();
    let option = option_name(&arg);
    match err.kind() {
        ErrorKind::ValueValidation => match std::error::Error::source(err) {
            Some(problem) => format!("{option} {problem}"),
            None => format!("{option} cannot take `{value}`"),
        },
        ErrorKind::InvalidValue if value.is_empty() => format!(
            "{option} needs a value ({}) after it",
            value_name(&arg).unwrap_or("see --help")
        ),
        ErrorKind::InvalidValue => match text(err, ContextKind::ValidValue) {
            Some(valid) => format!("{option} takes one of {valid}, not `{value}`"),
            None => format!("{option} cannot take `{value}`"),
        },
        ErrorKind::UnknownArgument if arg.starts_with('-') => {
            let suggestion = text(err, ContextKind::SuggestedArg)
                .map(|suggested| format!("; did you mean {suggested}?"))
                .unwrap_or_else(|| " (see memtrace --help)".to_owned());
            format!("there is no option {arg}{suggestion}")
        }
        ErrorKind::UnknownArgument | ErrorKind::InvalidSubcommand => {
            let word = text(err, ContextKind::InvalidSubcommand).unwrap_or(arg);
            format!(
                "unexpected `{word}`: to trace a command, put it after -- (memtrace -- {word} ...)"
            )
        }
        ErrorKind::ArgumentConflict => {
            let prior = text(err, ContextKind::PriorArg).unwrap_or_default();
            let other = option_name(&prior);
            if prior.is_empty() || other == option {
                format!("{option} is given more than once")
            } else {
                format!("{option} and {other} cannot go together")
            }
        }
        ErrorKind::MissingRequiredArgument => {
            let missing = option_name(&arg);
            match missing.as_str() {
                "--pprof-dir" => "--pprof-every needs --pprof-dir DIR to write into".to_owned(),
                "--go-pprof" => "--go-pprof-remote goes with --go-pprof URL".to_owned(),
                "FILE" => "report needs the capture FILE to read".to_owned(),
                _ => format!("{missing} is needed too"),
            }
        }
        ErrorKind::TooManyValues | ErrorKind::NoEquals if !arg.is_empty() => {
            format!("{option} takes no value")
        }
        ErrorKind::InvalidUtf8 => "arguments must be valid UTF-8".to_owned(),
        _ => fallback(err),
    }
}

/// Clap's own first line, without its `error: ` and quoting style.
fn fallback(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let first = rendered.lines().next().unwrap_or("bad command line");
    first
        .strip_prefix("error: ")
        .unwrap_or(first)
        .replace('\'', "`")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse;

    fn said(args: &[&str]) -> String {
        let mut argv = vec!["memtrace"];
        argv.extend_from_slice(args);
        match parse(argv) {
            Err(Usage::Bad(line)) => line,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    #[test]
    fn every_mistake_is_one_plain_line() {
        let cases: &[(&[&str], &str)] = &[
            (&["-p", "0"], "-p needs a process ID above 0"),
            (
                &["-p", "x"],
                "-p needs a process ID (a whole number), not `x`",
            ),
            (
                &["--no-such-flag"],
                "there is no option --no-such-flag (see memtrace --help)",
            ),
            (
                &["--jsn", "x", "demo"],
                "there is no option --jsn; did you mean --json?",
            ),
            (&["--json"], "--json needs a value (FILE) after it"),
            (
                &["-i", "1e20", "demo"],
                "-i needs a number of seconds from 0.01 to 3600 (an hour), not 1e20",
            ),
            (
                &["-i", "soon", "demo"],
                "-i needs a number of seconds from 0.01 to 3600 (an hour), not `soon`",
            ),
            (
                &["-d", "1e19", "demo"],
                "-d needs a number of seconds from 0.01 to 31536000 (a year), not 1e19",
            ),
            (
                &["--stacks", "some", "demo"],
                "--stacks takes one of sampled, all, none, not `some`",
            ),
            (
                &["--pprof-every", "1", "demo"],
                "--pprof-every needs --pprof-dir DIR to write into",
            ),
            (
                &["--json", "a", "--json", "b", "demo"],
                "--json is given more than once",
            ),
            (&["--force=yes", "demo"], "--force takes no value"),
            (
                &["ls"],
                "unexpected `ls`: to trace a command, put it after -- (memtrace -- ls ...)",
            ),
            (
                &["demo", "extra"],
                "unexpected `extra`: to trace a command, put it after -- (memtrace -- extra ...)",
            ),
            (
                &["--ring-size", "3M", "demo"],
                "--ring-size needs a power of two from 4K to 1G, not 3M",
            ),
            (
                &["--stack-period", "0", "demo"],
                "--stack-period needs a whole number from 1 to 65536, not `0`",
            ),
        ];
        for (args, expected) in cases {
            let line = said(args);
            assert_eq!(&line, expected, "{args:?}");
            assert!(!line.contains('\n') && !line.contains("error"), "{line}");
        }
    }

    #[test]
    fn a_pid_and_a_command_are_one_too_many() {
        let cli = parse(["memtrace", "-p", "1", "--", "ls"]).unwrap();
        assert!(matches!(
            cli.invocation(),
            Err(Usage::Bad(line)) if line == "-p and -- COMMAND cannot go together: trace one process, cgroup, container or command"
        ));
    }

    #[test]
    fn help_and_version_are_shown() {
        assert!(
            matches!(parse(["memtrace", "--help"]), Err(Usage::Show(help)) if help.contains("--interval"))
        );
        assert!(
            matches!(parse(["memtrace", "--version"]), Err(Usage::Show(v)) if v.starts_with("memtrace "))
        );
    }
}
