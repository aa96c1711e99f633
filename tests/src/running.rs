//! A workload started directly by a test (for `memtrace -p`), with its
//! stdout read line by line and its stdin open for the word to go on.

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{self, Receiver},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::memtrace::{Argv, Finished, Tracing};

pub struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Running {
    /// Starts `program ARGS` with `env` added to its environment.
    pub fn start<S: AsRef<OsStr>>(
        program: impl AsRef<OsStr>,
        args: &[S],
        env: &[(&str, &str)],
    ) -> Self {
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start the workload");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        // Read to the end: a Go program dies of SIGPIPE if nobody reads.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            lines,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a line containing `text`.
    pub fn wait_for(&mut self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(_) => panic!("the workload did not print {text:?} within {timeout:?}"),
            }
        }
    }

    /// Waits for the JSON event `{"event":NAME,...}` a Go workload prints.
    pub fn wait_event(&mut self, name: &str, timeout: Duration) -> Value {
        let line = self.wait_for(&format!("\"event\":\"{name}\""), timeout);
        serde_json::from_str(&line).expect("a JSON event line")
    }

    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to the workload");
        stdin.flush().expect("flush");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Attaches memtrace (`--go-pprof` at the workload's endpoint, after
/// `before`: `record -o FILE`, say) to a running Go workload started with
/// `-pprof 127.0.0.1:0 -wait`, lets it go, and stops memtrace once `done`
/// was printed and two more intervals passed.
pub fn attach_with_heap_profile(mut workload: Running, done: &str, before: &[&str]) -> Finished {
    const MINUTE: Duration = Duration::from_secs(60);
    let (pid, url) = heap_endpoint(&mut workload);
    let mut tracing = Tracing::start(
        &Argv::new()
            .args(before)
            .words("-p")
            .arg(&pid)
            .words("--go-pprof")
            .arg(&url)
            .words("--json - -q -i 0.4"),
    );
    tracing.wait_attached();
    workload.send_line("go");
    workload.wait_event(done, MINUTE);
    thread::sleep(Duration::from_millis(1500));
    tracing.signal(libc::SIGINT);
    let finished = tracing.finish(MINUTE);
    finished.assert_code(0);
    finished
}

/// The PID of a Go workload started with `-pprof 127.0.0.1:0 -wait`, and
/// its heap profile's URL, once it is ready.
pub fn heap_endpoint(workload: &mut Running) -> (String, String) {
    const MINUTE: Duration = Duration::from_secs(60);
    let address = workload.wait_event("pprof", MINUTE)["addr"]
        .as_str()
        .expect("address")
        .to_owned();
    workload.wait_event("ready", MINUTE);
    let url = format!("http://{address}/debug/pprof/heap");
    (workload.pid().to_string(), url)
}
