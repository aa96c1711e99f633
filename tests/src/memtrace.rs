//! Running the real memtrace binary against a workload, as root, and reading
//! what it reports.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// The memtrace binary under test: `MEMTRACE_BIN`, or the workspace's
/// release build (`cargo xtask test` builds it first).
pub fn binary() -> PathBuf {
    let path = std::env::var_os("MEMTRACE_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/memtrace"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "no memtrace binary at {}: build it with `cargo build --release -p memtrace` \
         (`cargo xtask test` does) or set MEMTRACE_BIN",
        path.display()
    );
    path
}

/// These tests load eBPF programs: without root they must fail, not skip.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "memtrace's integration tests load real eBPF programs and must run as root"
    );
}

/// A line memtrace or the traced program printed, as it arrived.
#[derive(Debug, Clone)]
pub enum Line {
    Stdout(String),
    Stderr(String),
}

/// A running memtrace.
pub struct Tracing {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Line>,
    seen: Vec<Line>,
}

impl Tracing {
    /// Starts memtrace with `args` (stdin piped: with `-- CMD` it is the
    /// command's stdin).
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// The same, with `env` added to memtrace's environment.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        require_root();
        let mut child = Command::new(binary())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start memtrace");
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let out = sender.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = out.send(Line::Stdout(line));
            }
        });
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = sender.send(Line::Stderr(line));
            }
        });
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line matching `wanted`; panics with everything seen after
    /// `timeout`.
    pub fn wait_for(&mut self, timeout: Duration, wanted: impl Fn(&Line) -> bool) -> Line {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "timed out after {timeout:?} waiting for a line; saw:\n{}",
                    self.transcript()
                ),
            }
        }
    }

    /// Waits for a stdout line containing `text`.
    pub fn wait_for_stdout(&mut self, text: &str) -> String {
        let text = text.to_owned();
        match self.wait_for(
            Duration::from_secs(60),
            |line| matches!(line, Line::Stdout(l) if l.contains(&text)),
        ) {
            Line::Stdout(line) | Line::Stderr(line) => line,
        }
    }

    /// Waits until memtrace says it attached (or started the command).
    pub fn wait_attached(&mut self) {
        self.wait_for(Duration::from_secs(60), |line| {
            matches!(line, Line::Stderr(l) if l.starts_with("memtrace: attached") || l.starts_with("memtrace: started"))
        });
    }

    /// Writes a line to the traced command's stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to stdin");
        stdin.flush().expect("flush stdin");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to memtrace.
    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits for memtrace to exit and collects everything it printed.
    pub fn finish(mut self, timeout: Duration) -> Finished {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for memtrace") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "memtrace did not exit within {timeout:?}; saw:\n{}",
                    self.transcript()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        // The reader threads end with the pipes.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        Finished {
            status,
            lines: std::mem::take(&mut self.seen),
        }
    }

    fn transcript(&self) -> String {
        transcript(&self.seen)
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn transcript(lines: &[Line]) -> String {
    lines
        .iter()
        .map(|line| match line {
            Line::Stdout(l) => format!("  out| {l}"),
            Line::Stderr(l) => format!("  err| {l}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What memtrace printed, once it exited.
pub struct Finished {
    pub status: ExitStatus,
    pub lines: Vec<Line>,
}

impl Finished {
    pub fn stdout(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|line| match line {
                Line::Stdout(l) => Some(l.as_str()),
                Line::Stderr(_) => None,
            })
            .collect()
    }

    pub fn stderr(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|line| match line {
                Line::Stderr(l) => Some(l.as_str()),
                Line::Stdout(_) => None,
            })
            .collect()
    }

    /// The JSON snapshots memtrace wrote to stdout (`--json -`).
    pub fn snapshots(&self) -> Vec<Value> {
        snapshots_in(self.stdout())
    }

    /// Panics with the transcript unless memtrace exited with `code`.
    pub fn assert_code(&self, code: i32) {
        assert_eq!(
            self.status.code(),
            Some(code),
            "memtrace exited with {:?}, expected {code}; transcript:\n{}",
            self.status,
            transcript(&self.lines)
        );
    }

    pub fn transcript(&self) -> String {
        transcript(&self.lines)
    }
}

/// Snapshots among `lines` (other lines are the traced program's).
pub fn snapshots_in<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<Value> {
    lines
        .into_iter()
        .filter(|line| line.starts_with('{'))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|value| value["schema"] == "memtrace.snapshot")
        .collect()
}

/// Runs memtrace to completion with `args`.
pub fn run(args: &[&str], timeout: Duration) -> Finished {
    Tracing::start(args).finish(timeout)
}

/// The last snapshot taken while the workload was still running (the
/// kernel's numbers are there only while it runs).
pub fn last_running(snapshots: &[Value]) -> Value {
    snapshots
        .iter()
        .rev()
        .find(|s| s["state"] == "running" && !s["kernel"].is_null())
        .cloned()
        .expect("a snapshot taken while the workload ran")
}

/// Splits a script or command line on whitespace (the tests' words have no
/// spaces in them).
pub fn words(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

/// Reads a numeric field of a snapshot by JSON pointer (e.g.
/// `/madvise/MADV_FREE/bytes`); missing counts as 0.
pub fn number(snapshot: &Value, pointer: &str) -> u64 {
    snapshot
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// Rows of `list` (e.g. `top_faults`) whose frames include `function`.
pub fn rows_with<'a>(snapshot: &'a Value, list: &str, function: &str) -> Vec<&'a Value> {
    snapshot[list]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|row| {
                    row["frames"].as_array().is_some_and(|frames| {
                        frames.iter().any(|frame| frame.as_str() == Some(function))
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The sum of `field` over the rows of `list` whose frames include
/// `function`.
pub fn bytes_at(snapshot: &Value, list: &str, function: &str, field: &str) -> u64 {
    rows_with(snapshot, list, function)
        .iter()
        .map(|row| row[field].as_u64().unwrap_or(0))
        .sum()
}

/// The size written just before `marker` in `text` (`"32.0 MiB (50%) is
/// memory..."` → 32 MiB), as memtrace's verdict writes sizes.
pub fn size_before(text: &str, marker: &str) -> Option<u64> {
    let at = text.find(marker)?;
    let before = text[..at].trim_end();
    // Skip a share in parentheses: "32.0 MiB (50%)".
    let before = match before.strip_suffix(')') {
        Some(rest) => rest[..rest.rfind('(')?].trim_end(),
        None => before,
    };
    let mut words = before.rsplit(' ');
    let unit = words.next()?;
    let value: f64 = words.next()?.parse().ok()?;
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((value * scale) as u64)
}

/// The verdict memtrace printed (it starts with `Verdict:`).
pub fn verdict(finished: &Finished) -> String {
    let text: Vec<&str> = finished
        .lines
        .iter()
        .map(|line| match line {
            Line::Stdout(l) | Line::Stderr(l) => l.as_str(),
        })
        .skip_while(|line| !line.starts_with("Verdict:"))
        .take_while(|line| line.starts_with("Verdict:") || line.starts_with("  "))
        .collect();
    assert!(
        !text.is_empty(),
        "no verdict in:\n{}",
        finished.transcript()
    );
    text.join("\n")
}

/// A stand-in for a broken heap-profile endpoint on loopback: it accepts
/// connections and answers each with `reply` (or never answers, for
/// `None`), until dropped.
pub struct FakeEndpoint {
    pub addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FakeEndpoint {
    pub fn start(reply: Option<Vec<u8>>) -> Self {
        use std::sync::{atomic::AtomicBool, Arc};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        thread::spawn(move || {
            let mut held = Vec::new();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => match &reply {
                        Some(bytes) => {
                            let _ = stream.set_nonblocking(false);
                            let _ = stream.write_all(bytes);
                        }
                        // Keep it open, say nothing.
                        None => held.push(stream),
                    },
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self { addr, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}/debug/pprof/heap", self.addr)
    }
}

impl Drop for FakeEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// An HTTP 200 response with `body`.
pub fn http_ok(content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    reply.extend_from_slice(body);
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_back_from_the_verdicts_wording() {
        let text = "RSS 270.9 MiB: 256.3 MiB (95%) is memory the program gave back";
        assert_eq!(
            size_before(text, " is memory"),
            Some((256.3 * 1048576.0) as u64)
        );
        assert_eq!(size_before(text, ": 256"), Some((270.9 * 1048576.0) as u64));
        assert_eq!(size_before(text, "nowhere"), None);
    }
}
