//! [`Pusher`]: hands windows to one sender thread per destination, so a
//! server that is down or slow never holds up tracing, nor another
//! destination.
//!
//! Each destination has a bounded queue (the oldest window goes when it is
//! full) and a thread that delivers windows in order, retrying transient
//! failures with backoff (see [`super::retry`]). Every window ends up
//! either sent or dropped with a reason, and counted.

use std::{
    io,
    sync::Arc,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use super::{
    deliver::Deliver,
    queue::WindowQueue,
    retry::RetryPolicy,
    stats::{DestinationCounts, DestinationStats, DropReason},
    window::Window,
};

/// How windows wait and are retried, for every destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushOptions {
    /// Windows buffered per destination while it is slow or down.
    pub queue: usize,
    pub retry: RetryPolicy,
}

impl Default for PushOptions {
    /// Ten windows: ten minutes of history at the default 60 s interval.
    fn default() -> Self {
        Self {
            queue: 10,
            retry: RetryPolicy::default(),
        }
    }
}

/// Sends every window it is given to every destination, in the background.
pub struct Pusher {
    lanes: Vec<Lane>,
}

/// One destination's queue, counters and thread.
struct Lane {
    name: String,
    queue: Arc<WindowQueue>,
    stats: Arc<DestinationStats>,
    thread: Option<JoinHandle<()>>,
}

impl Pusher {
    /// Starts a sender thread for each destination.
    ///
    /// # Errors
    ///
    /// The system's error if a thread cannot be started.
    pub fn start(destinations: Vec<Box<dyn Deliver>>, options: PushOptions) -> io::Result<Self> {
        let mut pusher = Self { lanes: Vec::new() };
        for destination in destinations {
            let name = destination.name().to_owned();
            let queue = Arc::new(WindowQueue::new(options.queue));
            let stats = Arc::new(DestinationStats::default());
            let thread = {
                let (queue, stats) = (Arc::clone(&queue), Arc::clone(&stats));
                thread::Builder::new()
                    .name(format!("push-{name}"))
                    .spawn(move || run(destination, &queue, &stats, options.retry))?
            };
            pusher.lanes.push(Lane {
                name,
                queue,
                stats,
                thread: Some(thread),
            });
        }
        Ok(pusher)
    }

    /// Queues `window` for every destination; never waits for the network.
    /// A full queue drops its oldest window (counted as `queue_full`).
    pub fn push(&self, window: Window) {
        let window = Arc::new(window);
        for lane in &self.lanes {
            if lane.queue.push(Arc::clone(&window)).is_some() {
                lane.stats.dropped(DropReason::QueueFull, None);
            }
        }
    }

    /// Each destination's counts so far.
    pub fn counts(&self) -> Vec<DestinationCounts> {
        self.lanes
            .iter()
            .map(|lane| lane.stats.counts(&lane.name))
            .collect()
    }

    /// Stops taking windows and gives those queued until `grace` has passed
    /// to get through; what is left then is dropped (as `shutdown`). Returns
    /// the final counts. A request under way when the time is up finishes
    /// first, so this may take up to one request timeout longer.
    pub fn shutdown(mut self, grace: Duration) -> Vec<DestinationCounts> {
        self.stop(grace);
        self.counts()
    }

    fn stop(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        for lane in &self.lanes {
            lane.queue.close(deadline);
        }
        for lane in &mut self.lanes {
            if let Some(thread) = lane.thread.take() {
                let _ = thread.join();
            }
            for _ in lane.queue.drain() {
                lane.stats.dropped(DropReason::Shutdown, None);
            }
        }
    }
}

impl Drop for Pusher {
    /// Stops at once: windows still queued are dropped.
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

/// A sender thread: delivers windows until the queue is closed.
fn run(
    mut destination: Box<dyn Deliver>,
    queue: &WindowQueue,
    stats: &DestinationStats,
    retry: RetryPolicy,
) {
    let mut rng = fastrand::Rng::new();
    while let Some(window) = queue.pop() {
        send(&mut *destination, &window, queue, stats, retry, &mut rng);
    }
}

/// Delivers one window, retrying while that may help, and counts how it
/// ended.
fn send(
    destination: &mut dyn Deliver,
    window: &Window,
    queue: &WindowQueue,
    stats: &DestinationStats,
    retry: RetryPolicy,
    rng: &mut fastrand::Rng,
) {
    let mut retries = 0;
    loop {
        if let Some(max_age) = destination.max_age() {
            let age = window.end.elapsed().unwrap_or_default();
            if age > max_age {
                let message = format!(
                    "{}: a window {} s old is past the server's ingestion window",
                    destination.name(),
                    age.as_secs()
                );
                stats.dropped(DropReason::Expired, Some(&message));
                return;
            }
        }
        let failure = match destination.deliver(window) {
            Ok(()) => {
                stats.sent(window.profile.len());
                return;
            }
            Err(failure) => failure,
        };
        if !failure.retry {
            stats.dropped(DropReason::Rejected, Some(&failure.message));
            return;
        }
        if retries >= retry.max_retries {
            stats.dropped(DropReason::RetriesExhausted, Some(&failure.message));
            return;
        }
        retries += 1;
        stats.retried(&failure.message);
        let wait = retry.delay(retries, failure.retry_after, rng);
        if !queue.sleep(wait) {
            stats.dropped(DropReason::Shutdown, Some(&failure.message));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        sync::{
            atomic::{AtomicUsize, Ordering},
            Mutex,
        },
        time::{SystemTime, UNIX_EPOCH},
    };

    use super::*;
    use crate::export::push::{
        deliver::Failure,
        labels::{SeriesLabels, TargetLabels},
    };

    /// A destination that answers from a script (then succeeds), and
    /// counts its attempts.
    struct Scripted {
        answers: VecDeque<Result<(), Failure>>,
        attempts: Arc<AtomicUsize>,
        delivered: Arc<Mutex<Vec<SystemTime>>>,
        /// Held by the test to keep every delivery waiting.
        gate: Arc<Mutex<()>>,
        max_age: Option<Duration>,
    }

    impl Scripted {
        fn new(answers: Vec<Result<(), Failure>>) -> Self {
            Self {
                answers: answers.into(),
                attempts: Arc::default(),
                delivered: Arc::default(),
                gate: Arc::default(),
                max_age: None,
            }
        }
    }

    impl Deliver for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }

        fn deliver(&mut self, window: &Window) -> Result<(), Failure> {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            drop(self.gate.lock().unwrap());
            let answer = self.answers.pop_front().unwrap_or(Ok(()));
            if answer.is_ok() {
                self.delivered.lock().unwrap().push(window.end);
            }
            answer
        }

        fn max_age(&self) -> Option<Duration> {
            self.max_age
        }
    }

    fn window(end: SystemTime) -> Window {
        Window {
            labels: SeriesLabels::new(&TargetLabels {
                service_name: "app".into(),
                ..TargetLabels::default()
            })
            .unwrap(),
            start: end,
            end,
            profile: vec![0; 10],
        }
    }

    fn fast(max_retries: u32) -> PushOptions {
        PushOptions {
            queue: 4,
            retry: RetryPolicy {
                max_retries,
                min_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(4),
            },
        }
    }

    fn busy() -> Failure {
        Failure::transient("HTTP 503")
    }

    #[test]
    fn transient_failures_are_retried_until_delivered() {
        let scripted = Scripted::new(vec![Err(busy()), Err(busy()), Ok(())]);
        let attempts = Arc::clone(&scripted.attempts);
        let pusher = Pusher::start(vec![Box::new(scripted)], fast(5)).unwrap();
        pusher.push(window(SystemTime::now()));
        let counts = pusher.shutdown(Duration::from_secs(10)).remove(0);
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
        assert_eq!((counts.sent, counts.sent_bytes, counts.retries), (1, 10, 2));
        assert_eq!(counts.dropped_total(), 0);
        assert_eq!(counts.last_error.as_deref(), Some("HTTP 503"));
    }

    #[test]
    fn retries_are_bounded() {
        let scripted = Scripted::new(vec![Err(busy()); 10]);
        let attempts = Arc::clone(&scripted.attempts);
        let pusher = Pusher::start(vec![Box::new(scripted)], fast(3)).unwrap();
        pusher.push(window(SystemTime::now()));
        let counts = pusher.shutdown(Duration::from_secs(10)).remove(0);
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            4,
            "one try and three retries"
        );
        assert_eq!(counts.dropped(DropReason::RetriesExhausted), 1);
        assert_eq!((counts.sent, counts.retries), (0, 3));
    }

    #[test]
    fn permanent_failures_are_not_retried() {
        let scripted = Scripted::new(vec![Err(Failure::permanent("HTTP 400: bad labels"))]);
        let attempts = Arc::clone(&scripted.attempts);
        let pusher = Pusher::start(vec![Box::new(scripted)], fast(5)).unwrap();
        pusher.push(window(SystemTime::now()));
        let counts = pusher.shutdown(Duration::from_secs(10)).remove(0);
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        assert_eq!(counts.dropped(DropReason::Rejected), 1);
        assert_eq!(counts.last_error.as_deref(), Some("HTTP 400: bad labels"));
    }

    #[test]
    fn windows_past_the_servers_window_are_not_sent() {
        let mut scripted = Scripted::new(vec![]);
        scripted.max_age = Some(Duration::from_secs(60));
        let attempts = Arc::clone(&scripted.attempts);
        let pusher = Pusher::start(vec![Box::new(scripted)], fast(5)).unwrap();
        pusher.push(window(SystemTime::now() - Duration::from_secs(120)));
        pusher.push(window(SystemTime::now()));
        let counts = pusher.shutdown(Duration::from_secs(10)).remove(0);
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        assert_eq!((counts.sent, counts.dropped(DropReason::Expired)), (1, 1));
    }

    /// Waits for `done` to hold, failing the test after a minute (a
    /// bound on a hang, not a measure of speed).
    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "gave up waiting until {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_stuck_destination_never_blocks_push_and_drops_its_oldest() {
        let scripted = Scripted::new(vec![]);
        let (attempts, delivered) = (
            Arc::clone(&scripted.attempts),
            Arc::clone(&scripted.delivered),
        );
        let gate = Arc::clone(&scripted.gate);
        let stuck = gate.lock().unwrap();
        let pusher = Arc::new(Pusher::start(vec![Box::new(scripted)], fast(0)).unwrap());
        let at = |n: u64| UNIX_EPOCH + Duration::from_secs(1_700_000_000 + n);
        pusher.push(window(at(0)));
        wait_until("the first window is being delivered", || {
            attempts.load(Ordering::SeqCst) == 1
        });
        // The destination is stuck on window 0; pushing must still return.
        let pushing = {
            let pusher = Arc::clone(&pusher);
            thread::spawn(move || (1..20).for_each(|n| pusher.push(window(at(n)))))
        };
        wait_until("19 pushes returned", || pushing.is_finished());
        let counts = pusher.counts().remove(0);
        assert_eq!(
            counts.dropped(DropReason::QueueFull),
            15,
            "of 19, the newest 4 stay"
        );
        drop(stuck);
        let pusher = Arc::into_inner(pusher).unwrap();
        let counts = pusher.shutdown(Duration::from_secs(60)).remove(0);
        assert_eq!(counts.sent, 5);
        let delivered = delivered.lock().unwrap().clone();
        assert_eq!(delivered, [at(0), at(16), at(17), at(18), at(19)]);
    }

    #[test]
    fn shutdown_drops_what_cannot_be_sent_in_time() {
        let scripted = Scripted::new(vec![Err(busy()); 1000]);
        let options = PushOptions {
            queue: 4,
            retry: RetryPolicy {
                max_retries: 1000,
                min_backoff: Duration::from_secs(3600),
                max_backoff: Duration::from_secs(3600),
            },
        };
        let pusher = Pusher::start(vec![Box::new(scripted)], options).unwrap();
        for _ in 0..3 {
            pusher.push(window(SystemTime::now()));
        }
        // The first window is waiting out an hour's backoff.
        thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        let counts = pusher.shutdown(Duration::from_millis(100)).remove(0);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the backoff was cut short"
        );
        assert_eq!(counts.dropped(DropReason::Shutdown), 3);
        assert_eq!(counts.sent, 0);
    }

    #[test]
    fn each_destination_has_its_own_queue() {
        let stuck = Scripted::new(vec![]);
        let gate = Arc::clone(&stuck.gate);
        let held = gate.lock().unwrap();
        let quick = Scripted::new(vec![]);
        let quick_delivered = Arc::clone(&quick.delivered);
        let pusher = Pusher::start(vec![Box::new(stuck), Box::new(quick)], fast(0)).unwrap();
        for n in 0..3 {
            pusher.push(window(UNIX_EPOCH + Duration::from_secs(n)));
        }
        wait_until("the quick destination has all three", || {
            quick_delivered.lock().unwrap().len() == 3
        });
        drop(held);
        let counts = pusher.shutdown(Duration::from_secs(60));
        assert_eq!((counts[0].sent, counts[1].sent), (3, 3));
    }
}
