//! Separate debug files from debuginfod servers, as elfutils' client gets
//! them: opt-in through `DEBUGINFOD_URLS` (space-separated), fetched by
//! build id (`GET URL/buildid/HEX/debuginfo`) into the same cache
//! (`DEBUGINFOD_CACHE_PATH`, else `$XDG_CACHE_HOME/debuginfod_client`,
//! else `~/.cache/debuginfod_client`), with a timeout
//! (`DEBUGINFOD_TIMEOUT`, seconds).
//!
//! Fetches run on a thread of their own: tracing never waits for a server,
//! and a server that is down or slow only means names without file and line.

use std::{
    collections::HashMap,
    io::Read as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc, Mutex,
    },
    time::Duration,
};

/// The largest debug file memtrace takes from a server.
const MAX_DEBUG_FILE: u64 = 1 << 30;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What is known of one build id.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Lookup {
    Pending,
    Found(PathBuf),
    Missing,
}

struct Shared {
    lookups: Mutex<HashMap<String, Lookup>>,
    /// Debug files delivered so far.
    found: AtomicU64,
}

/// A handle on the debuginfod client; clones share its cache and thread.
#[derive(Clone)]
pub struct Debuginfod {
    shared: Arc<Shared>,
    requests: mpsc::Sender<String>,
    cache: PathBuf,
    /// `found` as of this handle's last look.
    seen: u64,
}

impl std::fmt::Debug for Debuginfod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Debuginfod")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Debuginfod {
    /// A client for the servers `DEBUGINFOD_URLS` names; `None` when it
    /// names none.
    pub fn from_env() -> Option<Self> {
        let urls: Vec<String> = std::env::var("DEBUGINFOD_URLS")
            .ok()?
            .split_whitespace()
            .map(|url| url.trim_end_matches('/').to_owned())
            .collect();
        if urls.is_empty() {
            return None;
        }
        let timeout = std::env::var("DEBUGINFOD_TIMEOUT")
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .filter(|&seconds| seconds > 0)
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        Some(Self::new(urls, cache_dir(), timeout))
    }

    pub fn new(urls: Vec<String>, cache: PathBuf, timeout: Duration) -> Self {
        let shared = Arc::new(Shared {
            lookups: Mutex::new(HashMap::new()),
            found: AtomicU64::new(0),
        });
        let (requests, incoming) = mpsc::channel::<String>();
        let worker = shared.clone();
        let dir = cache.clone();
        std::thread::spawn(move || {
            let agent = ureq::Agent::config_builder()
                .timeout_global(Some(timeout))
                .build()
                .new_agent();
            for build_id in incoming {
                let lookup = match urls
                    .iter()
                    .find_map(|url| fetch(&agent, url, &build_id, &dir))
                {
                    Some(path) => {
                        worker.found.fetch_add(1, Ordering::SeqCst);
                        Lookup::Found(path)
                    }
                    None => Lookup::Missing,
                };
                if let Ok(mut lookups) = worker.lookups.lock() {
                    lookups.insert(build_id, lookup);
                }
            }
        });
        Self {
            shared,
            requests,
            cache,
            seen: 0,
        }
    }

    /// The debug file of `build_id` if it is here (cached now or before);
    /// otherwise asks the servers for it in the background and says `None`.
    pub fn debug_file(&mut self, build_id: &str) -> Option<PathBuf> {
        if !build_id.bytes().all(|byte| byte.is_ascii_hexdigit()) || build_id.is_empty() {
            return None;
        }
        let mut lookups = self.shared.lookups.lock().ok()?;
        match lookups.get(build_id) {
            Some(Lookup::Found(path)) => return Some(path.clone()),
            Some(Lookup::Pending | Lookup::Missing) => return None,
            None => {}
        }
        let cached = cached_file(&self.cache, build_id);
        if cached.metadata().is_ok_and(|meta| meta.len() > 0) {
            lookups.insert(build_id.to_owned(), Lookup::Found(cached.clone()));
            return Some(cached);
        }
        lookups.insert(build_id.to_owned(), Lookup::Pending);
        let _ = self.requests.send(build_id.to_owned());
        None
    }

    /// Whether debug files arrived since this handle last asked.
    pub fn take_arrivals(&mut self) -> bool {
        let found = self.shared.found.load(Ordering::SeqCst);
        let arrived = found != self.seen;
        self.seen = found;
        arrived
    }
}

/// Where elfutils' client caches: the same place, so each reuses the
/// other's downloads.
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DEBUGINFOD_CACHE_PATH") {
        return dir.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME").map_or_else(
        || {
            std::env::var_os("HOME")
                .map_or_else(|| PathBuf::from("/root"), PathBuf::from)
                .join(".cache")
        },
        PathBuf::from,
    );
    base.join("debuginfod_client")
}

fn cached_file(cache: &Path, build_id: &str) -> PathBuf {
    cache.join(build_id).join("debuginfo")
}

/// Fetches `build_id`'s debug file from `url` into the cache; `None` when the
/// server does not have it or cannot be reached.
fn fetch(agent: &ureq::Agent, url: &str, build_id: &str, cache: &Path) -> Option<PathBuf> {
    let response = agent
        .get(&format!("{url}/buildid/{build_id}/debuginfo"))
        .call()
        .ok()?;
    let mut bytes = Vec::new();
    response
        .into_body()
        .into_reader()
        .take(MAX_DEBUG_FILE)
        .read_to_end(&mut bytes)
        .ok()?;
    if !bytes.starts_with(b"\x7fELF") {
        return None;
    }
    let path = cached_file(cache, build_id);
    let dir = path.parent()?;
    std::fs::create_dir_all(dir).ok()?;
    // Whole or not at all: written aside, then renamed into place.
    let partial = dir.join(format!(".debuginfo.memtrace-{}", std::process::id()));
    std::fs::write(&partial, &bytes).ok()?;
    std::fs::rename(&partial, &path).ok()?;
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_server_says_missing_and_never_blocks() {
        let cache = tempfile::tempdir().unwrap();
        // Nothing listens on port 1 of loopback.
        let mut client = Debuginfod::new(
            vec!["http://127.0.0.1:1".into()],
            cache.path().to_owned(),
            Duration::from_secs(2),
        );
        let started = std::time::Instant::now();
        assert_eq!(client.debug_file("abcd"), None);
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "asking must not wait"
        );
        for _ in 0..100 {
            if client.shared.lookups.lock().unwrap().get("abcd") == Some(&Lookup::Missing) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            client.shared.lookups.lock().unwrap().get("abcd"),
            Some(&Lookup::Missing)
        );
        assert!(!client.take_arrivals());
        assert_eq!(client.debug_file("abcd"), None);
    }

    #[test]
    fn a_cached_file_is_used_without_asking() {
        let cache = tempfile::tempdir().unwrap();
        let path = cached_file(cache.path(), "beef");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"\x7fELF...").unwrap();
        let mut client =
            Debuginfod::new(Vec::new(), cache.path().to_owned(), Duration::from_secs(1));
        assert_eq!(client.debug_file("beef"), Some(path));
        assert_eq!(client.debug_file("not hex"), None);
    }
}
