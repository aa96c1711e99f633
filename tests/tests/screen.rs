//! What memtrace shows people, read back as they would read it: the live
//! screen in a real terminal (tmux, at 80×24 and 200×50, keys sent with
//! `send-keys`, the screen read with `capture-pane`), the parts of RSS in
//! the final report and the verdict, and the `--json` file as it is
//! written.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use memtrace_tests::{
    kernel::folio_batches_bytes,
    memtrace::{binary, require_root, run, snapshots_in, verdict, words, Finished, Tracing},
    workloads::ensure_built,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const PAGE: u64 = 4096;

/// A tmux server of its own (`-L`), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Runs `command` (a shell line) in a new detached session of
    /// `width`×`height`.
    fn start(width: u16, height: u16, command: &str) -> Self {
        require_root();
        static SERVERS: AtomicUsize = AtomicUsize::new(0);
        let socket = format!(
            "memtrace-test-{}-{}",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::SeqCst)
        );
        let tmux = Self { socket };
        tmux.run(&[
            "new-session",
            "-d",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            command,
        ]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs (cargo xtask setup installs it)");
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The screen as it is now, and everything scrolled off it.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-S", "-", "-E", "-"])
    }

    fn keys(&self, keys: &str) {
        self.run(&["send-keys", keys]);
    }

    /// Waits until the screen shows something `wanted` accepts.
    fn wait_for(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if wanted(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

const HEADER: &str = "── memtrace · pid ";

/// The elapsed time the header shows (`… · 3.0s · running`).
fn elapsed_shown(screen: &str) -> f64 {
    let header = screen
        .lines()
        .find(|line| line.starts_with(HEADER))
        .unwrap_or_else(|| panic!("no header:\n{screen}"));
    header
        .split(" · ")
        .find_map(|part| part.strip_suffix('s')?.parse().ok())
        .unwrap_or_else(|| panic!("no elapsed time in {header:?}"))
}

fn lines_of(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect()
}

/// memtrace on the screen at `width`×`height`, tracing memops that touches
/// 48 MiB in `op_touch`, gives 16 MiB back with MADV_FREE, and holds.
fn the_screen_at(width: u16, height: u16) {
    let workloads = ensure_built().expect("workloads build");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.jsonl");
    let pprof = dir.path().join("final.pb.gz");
    let profiles = dir.path().join("profiles");
    let command = format!(
        "{} --json {} --pprof {} --pprof-dir {} -i 0.5 -- {} map A 64M \\; touch A 0 48M \\; \
         free A 0 16M \\; hold 120; echo memtrace-exited-with=$?; sleep 600",
        binary().display(),
        json.display(),
        pprof.display(),
        profiles.display(),
        workloads.memops.display(),
    );
    let tmux = Tmux::start(width, height, &command);

    // While the workload runs, its allocating function is among the top
    // stacks, and the screen holds one header: drawn over, not scrolled.
    let first = tmux.wait_for("op_touch among the stacks, after the free", |screen| {
        screen.contains("op_touch") && screen.contains("MADV_FREE")
    });
    assert_eq!(first.matches(HEADER).count(), 1, "{first}");
    assert!(
        first.contains("In use, by the stack that faulted it in"),
        "{first}"
    );
    let row = first
        .lines()
        .find(|line| line.contains("op_touch"))
        .unwrap();
    assert!(row.trim_start().starts_with("32.0 MiB"), "{row}");
    let later = tmux.wait_for("two more intervals", |screen| {
        elapsed_shown(screen) >= elapsed_shown(&first) + 1.0
    });
    assert_eq!(later.matches(HEADER).count(), 1, "{later}");
    for line in later.lines() {
        assert!(line.chars().count() <= usize::from(width), "{line}");
    }

    // `t` ranks the stacks by lazily freed bytes, and back.
    tmux.keys("t");
    let lazy = tmux.wait_for("the lazily freed view", |screen| {
        screen.contains("Lazily freed (MADV_FREE")
    });
    let row = lazy.lines().find(|line| line.contains("op_touch")).unwrap();
    assert!(row.trim_start().starts_with("16.0 MiB"), "{row}");
    tmux.keys("t");
    tmux.wait_for("the in-use view again", |screen| {
        screen.contains("In use, by the stack")
    });

    // `p` writes a profile now, into --pprof-dir (created), and says where.
    tmux.keys("p");
    let said = tmux.wait_for("the profile written", |screen| screen.contains("wrote "));
    let written: Vec<PathBuf> = std::fs::read_dir(&profiles)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(written.len(), 1, "{written:?}");
    assert!(
        std::fs::metadata(&written[0]).unwrap().len() > 0,
        "{}",
        written[0].display()
    );
    assert!(
        said.contains(&profiles.display().to_string()),
        "the status line names the directory:\n{said}"
    );

    // The JSON lines are in the file while it runs.
    let so_far = lines_of(&json);
    assert!(
        so_far.len() >= 2 && so_far.iter().all(|line| line["type"] == "interval"),
        "{so_far:?}"
    );

    // `q` stops with the final report, on the terminal given back.
    tmux.keys("q");
    let end = tmux.wait_for("memtrace to exit", |screen| {
        screen.contains("memtrace-exited-with=")
    });
    assert!(end.contains("memtrace-exited-with=0"), "{end}");
    assert!(end.contains("Verdict: RSS"), "{end}");
    assert_eq!(
        tmux.run(&["display-message", "-p", "#{alternate_on}"])
            .trim(),
        "0",
        "still on the alternate screen"
    );
    let lines = lines_of(&json);
    assert_eq!(lines.last().unwrap()["type"], "final", "{lines:?}");
    assert!(std::fs::metadata(&pprof).unwrap().len() > 0);
}

#[test]
fn the_screen_at_80_by_24() {
    the_screen_at(80, 24);
}

#[test]
fn the_screen_at_200_by_50() {
    the_screen_at(200, 50);
}

/// The PID of memtrace started by the shell in `tmux`'s pane.
fn memtrace_in(tmux: &Tmux) -> i32 {
    let shell: i32 = tmux
        .run(&["display-message", "-p", "#{pane_pid}"])
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = std::fs::read_dir("/proc").unwrap().find_map(|entry| {
            let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let after = &stat[stat.rfind(')')? + 2..];
            let parent: i32 = after.split(' ').nth(1)?.parse().ok()?;
            (parent == shell && stat.contains("(memtrace)")).then_some(pid)
        });
        if let Some(pid) = found {
            return pid;
        }
        assert!(Instant::now() < deadline, "no memtrace under pid {shell}");
        thread::sleep(Duration::from_millis(100));
    }
}

fn assert_terminal_given_back(tmux: &Tmux, end: &str) {
    assert_eq!(
        tmux.run(&["display-message", "-p", "#{alternate_on}"])
            .trim(),
        "0",
        "still on the alternate screen:\n{end}"
    );
}

/// SIGTERM, Ctrl-C (a key in raw mode) and an error each give the terminal
/// back: the normal screen, the final report (or the error) on it.
#[test]
fn every_way_out_gives_the_terminal_back() {
    let workloads = ensure_built().expect("workloads build");
    let hold = format!(
        "{} -i 0.5 -- {} map A 8M \\; touch A 0 8M \\; hold 120; echo memtrace-exited-with=$?; sleep 600",
        binary().display(),
        workloads.memops.display()
    );
    for stop in ["SIGTERM", "Ctrl-C"] {
        let tmux = Tmux::start(80, 24, &hold);
        tmux.wait_for("the screen", |screen| screen.contains("op_touch"));
        match stop {
            // SAFETY: signalling the memtrace this test started.
            "SIGTERM" => assert_eq!(unsafe { libc::kill(memtrace_in(&tmux), libc::SIGTERM) }, 0),
            _ => tmux.keys("C-c"),
        }
        let end = tmux.wait_for("memtrace to exit", |screen| {
            screen.contains("memtrace-exited-with=")
        });
        assert!(end.contains("memtrace-exited-with=0"), "{stop}: {end}");
        assert!(end.contains("Verdict: RSS"), "{stop}: {end}");
        assert_terminal_given_back(&tmux, &end);
    }
    let failing = format!(
        "{} -- /nonexistent/program; echo memtrace-exited-with=$?; sleep 600",
        binary().display()
    );
    let tmux = Tmux::start(80, 24, &failing);
    let end = tmux.wait_for("memtrace to fail", |screen| {
        screen.contains("memtrace-exited-with=")
    });
    assert!(end.contains("memtrace-exited-with=12"), "{end}");
    assert!(
        end.contains("memtrace: cannot start /nonexistent/program"),
        "{end}"
    );
    assert_terminal_given_back(&tmux, &end);
}

/// The final report's `parts` line: each part in KiB, and RSS.
fn parts(finished: &Finished) -> (Vec<(String, u64)>, u64) {
    // With `--json -` the report goes to standard error.
    let report = finished.stderr();
    let line = report
        .iter()
        .find(|line| line.starts_with("parts "))
        .unwrap_or_else(|| panic!("no parts line:\n{}", report.join("\n")));
    let kib = |text: &str| -> u64 {
        text.trim()
            .strip_suffix(" KiB")
            .unwrap_or_else(|| panic!("{text:?} in {line}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .replace(',', "")
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    let (sum, rss) = line["parts".len()..].split_once(" = RSS ").unwrap();
    let parts = sum
        .split(" + ")
        .map(|part| {
            let name = part.trim().rsplitn(3, ' ').nth(2).unwrap().to_owned();
            (name, kib(part))
        })
        .collect();
    (parts, kib(rss))
}

/// The verdict's shares of RSS (`24.0 MiB (55%) is ...`), in order.
fn shares(verdict: &str) -> Vec<u64> {
    let first = verdict.split(".\n").next().unwrap();
    first
        .match_indices("%) ")
        .map(|(at, _)| {
            let open = first[..at].rfind('(').unwrap();
            first[open + 1..at].parse().unwrap()
        })
        .collect()
}

/// The parts of RSS name every byte once: they add up to RSS, and RSS is
/// the kernel's (or, once the process is gone, the model's) to a page.
fn assert_parts_add_up(finished: &Finished, json: &[Value]) {
    finished.assert_code(0);
    let (parts, rss) = parts(finished);
    let names: Vec<&str> = parts.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "in use",
            "lazily freed",
            "file-backed",
            "resident before attach",
            "unexplained"
        ]
    );
    let sum: u64 = parts.iter().map(|(_, bytes)| bytes).sum();
    assert_eq!(sum, rss, "{parts:?}");
    let last = json.last().expect("a final snapshot");
    assert_eq!(last["type"], "final");
    let kernel_rss = last
        .pointer("/kernel/rss_bytes")
        .or_else(|| last.pointer("/model/rss_bytes"))
        .and_then(Value::as_u64)
        .expect("an RSS in the final snapshot");
    assert!(
        rss.abs_diff(kernel_rss) <= PAGE,
        "parts {rss} vs {kernel_rss}"
    );
    let text = verdict(finished);
    let shares = shares(&text);
    assert!(!shares.is_empty(), "{text}");
    assert_eq!(shares.iter().sum::<u64>(), 100, "{text}");
}

#[test]
fn the_parts_of_rss_add_up_for_a_c_program() {
    let workloads = ensure_built().expect("workloads build");
    let memops = workloads.memops.to_str().unwrap();
    let args = format!(
        "--json - -q -i 0.3 -d 2 -- {memops} map A 64M ; touch A 0 48M ; free A 0 16M ; hold 30"
    );
    let finished = run(&words(&args), Duration::from_secs(60));
    let json = finished.snapshots();
    assert_parts_add_up(&finished, &json);
    let (parts, _) = parts(&finished);
    // The part is the kernel's LazyFree, which counts a page only once the
    // per-CPU folio batch (31 pages) it waits in drains: up to that many
    // pages a CPU may still be on their way.
    let (name, lazily_freed) = &parts[1];
    assert_eq!(name, "lazily freed");
    assert!(
        (16 * MIB - folio_batches_bytes()..=16 * MIB).contains(lazily_freed),
        "{parts:?}"
    );
}

#[test]
fn the_parts_of_rss_add_up_for_a_go_program_and_its_folded_stacks_are_merged() {
    let workloads = ensure_built().expect("workloads build");
    let dir = tempfile::tempdir().unwrap();
    let folded = dir.path().join("go.folded");
    let args = format!(
        "--json - -q -i 0.3 -d 4 --folded {} -- env GODEBUG=madvdontneed=0 {} -alloc-mib 128 \
         -hold 30s",
        folded.display(),
        workloads.goheap.display()
    );
    let finished = run(&words(&args), Duration::from_secs(120));
    let json = finished.snapshots();
    assert_parts_add_up(&finished, &json);
    let text = std::fs::read_to_string(&folded).unwrap();
    let mut stacks: Vec<&str> = text
        .lines()
        .map(|line| line.rsplit_once(' ').unwrap().0)
        .collect();
    let count = stacks.len();
    stacks.sort_unstable();
    stacks.dedup();
    assert_eq!(stacks.len(), count, "a stack on two lines:\n{text}");
}

#[test]
fn the_parts_of_rss_add_up_for_the_demo_named_as_such() {
    let finished = run(&["-q", "--json", "-", "demo"], Duration::from_secs(60));
    let json = finished.snapshots();
    assert_parts_add_up(&finished, &json);
    let report = finished.stderr().join("\n");
    assert!(report.contains("(memtrace demo)"), "{report}");
    assert!(!report.contains("(memtrace) "), "{report}");
}

#[test]
fn options_go_before_demo_too() {
    let dir = tempfile::tempdir().unwrap();
    let folded = dir.path().join("d.folded");
    let finished = run(
        &["-q", "--folded", folded.to_str().unwrap(), "demo"],
        Duration::from_secs(60),
    );
    finished.assert_code(0);
    assert!(std::fs::read_to_string(&folded)
        .unwrap()
        .contains("memtrace::demo::touch"));
}

#[test]
fn json_lines_are_in_the_file_as_they_are_written() {
    let workloads = ensure_built().expect("workloads build");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.jsonl");
    let memops = workloads.memops.to_str().unwrap();
    let args = format!(
        "--json {} -q -i 0.2 -- {memops} map A 8M ; touch A 0 8M ; hold 3",
        json.display()
    );
    let tracing = Tracing::start_with_env(
        &words(&args),
        &[("SUDO_UID", "65534"), ("SUDO_GID", "65534")],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        assert!(Instant::now() < deadline, "lines so far: {seen:?}");
        thread::sleep(Duration::from_millis(100));
        seen = lines_of(&json);
    }
    assert!(
        seen.iter().all(|line| line["type"] == "interval"),
        "{seen:?}"
    );
    let finished = tracing.finish(Duration::from_secs(60));
    finished.assert_code(0);
    let lines = lines_of(&json);
    assert_eq!(lines.last().unwrap()["type"], "final");
    assert_eq!(
        snapshots_in(std::fs::read_to_string(&json).unwrap().lines()).len(),
        lines.len()
    );
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&json).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    assert_eq!(meta.mode() & 0o777, 0o644);
}
