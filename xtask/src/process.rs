//! Running other programs: the one place that decides how their output is
//! shown and how their failures are reported.

use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

/// How many lines of a failed command's stderr to show: enough to hold the
/// error itself, not the whole build log before it.
const STDERR_TAIL_LINES: usize = 30;

/// Runs `command` with its output captured and returns its stdout. On failure
/// the error names the command and shows the tail of its stderr, since the
/// output was not shown while it ran.
pub fn captured(command: &mut Command) -> Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{}`", describe(command)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}); the end of its stderr:\n{}",
            describe(command),
            output.status,
            tail(&String::from_utf8_lossy(&output.stderr), STDERR_TAIL_LINES)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `command` with its output going straight to ours, for long steps
/// whose progress and diagnostics the user wants to see as they happen.
pub fn streamed(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot start `{}`", describe(command)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(command));
    }
    Ok(())
}

/// Runs a probe such as `tool --version`: its stdout when it started and
/// succeeded, `None` otherwise (the caller reports what that means).
pub fn probe(command: &mut Command) -> Option<String> {
    let output = command.stdin(Stdio::null()).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The command line as a user would type it, for messages.
pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `lines` lines of `text`, indented so they stand out under the
/// message that quotes them.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_only_the_last_lines_indented() {
        assert_eq!(tail("a\nb\nc\n", 2), "    b\n    c");
        assert_eq!(tail("only\n", 5), "    only");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn describe_joins_program_and_arguments() {
        let mut command = Command::new("cargo");
        command.args(["fmt", "--all", "--", "--check"]);
        assert_eq!(describe(&command), "cargo fmt --all -- --check");
    }

    #[test]
    fn captured_reports_the_stderr_tail_of_a_failing_command() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo first >&2; echo last >&2; exit 3"]);
        let message = captured(&mut command).unwrap_err().to_string();
        assert!(message.contains("sh -c"), "{message}");
        assert!(message.contains("exit status: 3"), "{message}");
        assert!(message.ends_with("    first\n    last"), "{message}");
    }

    #[test]
    fn probe_returns_stdout_only_on_success() {
        assert_eq!(
            probe(Command::new("sh").args(["-c", "echo hi"])).as_deref(),
            Some("hi\n")
        );
        assert_eq!(
            probe(Command::new("sh").args(["-c", "echo hi; false"])),
            None
        );
        assert_eq!(probe(&mut Command::new("/nonexistent/program")), None);
    }
}
