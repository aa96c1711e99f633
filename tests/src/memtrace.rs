//! Running the real memtrace binary against a workload, as root, and reading
//! what it reports.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc::{self, Receiver},
        Arc,
    },
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

    /// Waits for a JSON snapshot on stdout (`--json -`) that `wanted`
    /// accepts, and returns it.
    pub fn wait_for_snapshot(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        let line = self.wait_for(Duration::from_secs(60), |line| {
            matches!(line, Line::Stdout(text) if snapshots_in([text.as_str()]).iter().any(&wanted))
        });
        match line {
            Line::Stdout(text) | Line::Stderr(text) => {
                serde_json::from_str(&text).expect("a snapshot line")
            }
        }
    }

    /// Waits until memtrace has read /proc after the workload went quiet:
    /// for a snapshot that `settled` accepts (it shows the workload's last
    /// operation), then for the next one, whose reconciliation read /proc
    /// after that. A fixed pause is not enough where memtrace runs slowly
    /// (an emulated guest).
    pub fn wait_until_settled(&mut self, settled: impl Fn(&Value) -> bool) {
        let seq = |snapshot: &Value| number(snapshot, "/seq");
        let shown = seq(&self.wait_for_snapshot(settled));
        self.wait_for_snapshot(|snapshot| seq(snapshot) > shown);
    }

    /// Waits until memtrace says it attached (or started the command).
    pub fn wait_attached(&mut self) {
        self.wait_for(Duration::from_secs(60), |line| {
            matches!(line, Line::Stderr(l) if ["memtrace: attached", "memtrace: started", "memtrace: tracing"].iter().any(|said| l.starts_with(said)))
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

/// A command line put together from runs of words written as one string
/// (memtrace's options, a memops script) and single arguments that may hold
/// spaces (paths, URLs), so every script reads as one line:
///
/// ```
/// # use memtrace_tests::memtrace::Argv;
/// let memops = "/target dir/workloads/memops";
/// let args = Argv::new()
///     .words("--json - -q --")
///     .arg(memops)
///     .words("map A 32M ; touch A 0 32M ; hold 1.2");
/// assert_eq!(args[4], memops);
/// assert_eq!(args.len(), 16);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Argv<'a>(Vec<&'a str>);

impl<'a> Argv<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the words of `text`, split on whitespace.
    pub fn words(mut self, text: &'a str) -> Self {
        self.0.extend(words(text));
        self
    }

    /// Adds `arg` as one argument, whatever it holds.
    pub fn arg(mut self, arg: &'a str) -> Self {
        self.0.push(arg);
        self
    }

    /// Adds `args` as they are.
    pub fn args(mut self, args: &[&'a str]) -> Self {
        self.0.extend_from_slice(args);
        self
    }
}

impl<'a> std::ops::Deref for Argv<'a> {
    type Target = [&'a str];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// Reads a whole-number field of a snapshot by JSON pointer (e.g.
/// `/madvise/MADV_FREE/bytes`). A missing field fails the test, naming the
/// pointer and the keys that are there: a renamed key must never read as 0.
/// Where absence is the point, say so with [`assert_absent`].
pub fn number(snapshot: &Value, pointer: &str) -> u64 {
    let Some(value) = snapshot.pointer(pointer) else {
        panic!(
            "the snapshot has no {pointer}: {}",
            nearest(snapshot, pointer)
        );
    };
    value
        .as_u64()
        .unwrap_or_else(|| panic!("the snapshot's {pointer} is {value}, not a whole number"))
}

/// Fails unless the snapshot has nothing at `pointer`, while the object
/// that would hold it is there: for entries that appear only once something
/// happened (an advice under `madvise`, a kind under `released_bytes`).
pub fn assert_absent(snapshot: &Value, pointer: &str) {
    let (parent, _) = pointer
        .rsplit_once('/')
        .unwrap_or_else(|| panic!("{pointer:?} is not a JSON pointer"));
    assert!(
        snapshot.pointer(parent).is_some_and(Value::is_object),
        "the snapshot has no object {parent}: {}",
        nearest(snapshot, pointer)
    );
    if let Some(value) = snapshot.pointer(pointer) {
        panic!("the snapshot's {pointer} is {value}, expected none");
    }
}

/// What the snapshot has where `pointer` leads nowhere: the keys of the
/// deepest object along it.
fn nearest(snapshot: &Value, pointer: &str) -> String {
    let deepest = pointer
        .match_indices('/')
        .map(|(at, _)| &pointer[..at])
        .take_while(|prefix| snapshot.pointer(prefix).is_some())
        .last()
        .unwrap_or("");
    match snapshot.pointer(deepest) {
        Some(Value::Object(fields)) => format!(
            "{} has keys {:?}",
            if deepest.is_empty() { "it" } else { deepest },
            fields.keys().collect::<Vec<_>>()
        ),
        Some(other) => format!("{deepest} is {other}"),
        None => "it is empty".into(),
    }
}

/// Rows of `list` (e.g. `top_faults`) whose frames include `function`. The
/// list, and every row's frames, must be there.
pub fn rows_with<'a>(snapshot: &'a Value, list: &str, function: &str) -> Vec<&'a Value> {
    let Some(rows) = snapshot[list].as_array() else {
        panic!(
            "the snapshot has no list {list}: {}",
            nearest(snapshot, &format!("/{list}"))
        );
    };
    rows.iter()
        .filter(|row| {
            let Some(frames) = row["frames"].as_array() else {
                panic!("a row of {list} has no frames: {row}");
            };
            frames.iter().any(|frame| frame.as_str() == Some(function))
        })
        .collect()
}

/// The sum of `field` over the rows of `list` whose frames include
/// `function` (0 when there are none); every such row must have the field.
pub fn bytes_at(snapshot: &Value, list: &str, function: &str, field: &str) -> u64 {
    rows_with(snapshot, list, function)
        .iter()
        .map(|row| {
            row[field]
                .as_u64()
                .unwrap_or_else(|| panic!("a row of {list} has no whole number {field}: {row}"))
        })
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
    verdicts(finished).swap_remove(0)
}

/// Every verdict memtrace printed, in order (with --follow-forks, the
/// primary target's first; for a cgroup, the OOM killer's victims' before
/// the whole's), each with its continuation lines. At least one.
pub fn verdicts(finished: &Finished) -> Vec<String> {
    let mut verdicts: Vec<Vec<&str>> = Vec::new();
    let mut inside = false;
    for line in &finished.lines {
        let (Line::Stdout(line) | Line::Stderr(line)) = line;
        if line.starts_with("Verdict:") {
            verdicts.push(vec![line]);
            inside = true;
        } else if inside && line.starts_with("  ") {
            verdicts.last_mut().expect("opened above").push(line);
        } else {
            inside = false;
        }
    }
    assert!(
        !verdicts.is_empty(),
        "no verdict in:\n{}",
        finished.transcript()
    );
    verdicts.into_iter().map(|lines| lines.join("\n")).collect()
}

/// A stand-in for a broken heap-profile endpoint on loopback: it accepts
/// connections and answers each with `reply` (or never answers, for
/// `None`), until dropped. It counts the connections it accepted, so a test
/// can tell when memtrace has just started a fetch.
pub struct FakeEndpoint {
    pub addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
}

impl FakeEndpoint {
    pub fn start(reply: Option<Vec<u8>>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local address");
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let (stopped, accepted) = (stop.clone(), connections.clone());
        thread::spawn(move || {
            let mut held = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        accepted.fetch_add(1, Ordering::SeqCst);
                        match &reply {
                            Some(bytes) => {
                                let _ = stream.set_nonblocking(false);
                                let _ = stream.write_all(bytes);
                            }
                            // Keep it open, say nothing.
                            None => held.push(stream),
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self {
            addr,
            stop,
            connections,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/debug/pprof/heap", self.addr)
    }

    /// Waits until a connection comes after the ones accepted so far.
    pub fn wait_for_next_connection(&self, timeout: Duration) {
        let before = self.connections.load(Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        while self.connections.load(Ordering::SeqCst) == before {
            assert!(
                Instant::now() < deadline,
                "no new connection to {} within {timeout:?}",
                self.addr
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for FakeEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
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

    fn snapshot() -> Value {
        serde_json::json!({
            "madvise": {"MADV_FREE": {"calls": 1, "bytes": 4096}},
            "top_faults": [
                {"frames": ["op_touch", "main"], "count": 3},
                {"frames": ["other"], "count": 5},
            ],
        })
    }

    #[test]
    fn numbers_are_read_by_pointer() {
        assert_eq!(number(&snapshot(), "/madvise/MADV_FREE/bytes"), 4096);
    }

    #[test]
    #[should_panic(expected = "the snapshot has no /madvise/MADV_DONTNEED/bytes: \
                               /madvise has keys [\"MADV_FREE\"]")]
    fn a_missing_number_fails_naming_what_is_there() {
        number(&snapshot(), "/madvise/MADV_DONTNEED/bytes");
    }

    #[test]
    #[should_panic(expected = "it has keys [\"madvise\", \"top_faults\"]")]
    fn a_missing_top_level_number_shows_the_top_level_keys() {
        number(&snapshot(), "/records/lost_total");
    }

    #[test]
    fn absence_is_asserted_explicitly() {
        assert_absent(&snapshot(), "/madvise/MADV_DONTNEED");
    }

    #[test]
    #[should_panic(expected = "expected none")]
    fn an_entry_that_is_there_is_not_absent() {
        assert_absent(&snapshot(), "/madvise/MADV_FREE");
    }

    #[test]
    #[should_panic(expected = "the snapshot has no object /calls")]
    fn absence_needs_the_object_that_would_hold_it() {
        assert_absent(&snapshot(), "/calls/mmap");
    }

    #[test]
    fn rows_are_summed_by_function() {
        assert_eq!(bytes_at(&snapshot(), "top_faults", "op_touch", "count"), 3);
        assert_eq!(bytes_at(&snapshot(), "top_faults", "nowhere", "count"), 0);
    }

    #[test]
    #[should_panic(expected = "the snapshot has no list top_stacks")]
    fn a_missing_list_fails() {
        rows_with(&snapshot(), "top_stacks", "op_touch");
    }

    #[test]
    #[should_panic(expected = "a row of top_faults has no whole number paged_in_bytes")]
    fn a_row_without_the_field_fails() {
        bytes_at(&snapshot(), "top_faults", "op_touch", "paged_in_bytes");
    }
}
