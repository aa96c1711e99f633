//! The bounded queue between the tracing side and a destination's sender
//! thread.
//!
//! Adding never blocks and never grows the queue past its capacity: when
//! it is full the oldest window goes, since a continuous profiler's newest
//! window is worth the most. The sender thread waits on the queue for work,
//! and sleeps its backoff on it too, so that closing the queue wakes it at
//! once.

use std::{
    collections::VecDeque,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use super::window::Window;

#[derive(Debug)]
pub(super) struct WindowQueue {
    state: Mutex<State>,
    changed: Condvar,
    capacity: usize,
}

#[derive(Debug)]
struct State {
    windows: VecDeque<Arc<Window>>,
    /// Set when the queue is closed: what is queued may be sent until
    /// then, and nothing after.
    deadline: Option<Instant>,
}

impl WindowQueue {
    /// A queue holding at most `capacity` windows (at least one).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                windows: VecDeque::new(),
                deadline: None,
            }),
            changed: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    /// Adds `window`, returning the oldest window if it had to go to make
    /// room. After [`WindowQueue::close`] the window itself is returned.
    pub(super) fn push(&self, window: Arc<Window>) -> Option<Arc<Window>> {
        let mut state = self.lock();
        if state.deadline.is_some() {
            return Some(window);
        }
        let evicted = if state.windows.len() >= self.capacity {
            state.windows.pop_front()
        } else {
            None
        };
        state.windows.push_back(window);
        self.changed.notify_all();
        evicted
    }

    /// The oldest window, waiting for one; None once the queue is closed
    /// and its deadline has passed, or it is closed and empty.
    pub(super) fn pop(&self) -> Option<Arc<Window>> {
        let mut state = self.lock();
        loop {
            match state.deadline {
                Some(deadline) if Instant::now() >= deadline => return None,
                Some(_) => return state.windows.pop_front(),
                None => {
                    if let Some(window) = state.windows.pop_front() {
                        return Some(window);
                    }
                }
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Sleeps `wait`, or less if the queue's deadline comes first; false
    /// if the deadline has passed (the caller should give up).
    pub(super) fn sleep(&self, wait: Duration) -> bool {
        let start = Instant::now();
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            if state.deadline.is_some_and(|deadline| now >= deadline) {
                return false;
            }
            let left = wait.saturating_sub(now - start);
            if left.is_zero() {
                return true;
            }
            let nap = match state.deadline {
                Some(deadline) => left.min(deadline - now),
                None => left,
            };
            state = self
                .changed
                .wait_timeout(state, nap)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Accepts no more windows; those queued may be sent until `deadline`.
    pub(super) fn close(&self, deadline: Instant) {
        self.lock().deadline = Some(deadline);
        self.changed.notify_all();
    }

    /// Empties the queue, returning what it held.
    pub(super) fn drain(&self) -> Vec<Arc<Window>> {
        self.lock().windows.drain(..).collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::export::push::labels::{SeriesLabels, TargetLabels};

    fn window(n: u64) -> Arc<Window> {
        let labels = SeriesLabels::new(&TargetLabels {
            service_name: "app".into(),
            ..TargetLabels::default()
        })
        .unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(n);
        Arc::new(Window {
            labels,
            start: at,
            end: at,
            profile: Vec::new(),
        })
    }

    fn end(window: &Window) -> u64 {
        window.end.duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn a_full_queue_drops_its_oldest() {
        let queue = WindowQueue::new(3);
        for n in 0..3 {
            assert_eq!(queue.push(window(n)), None);
        }
        let evicted = queue.push(window(3)).unwrap();
        assert_eq!(end(&evicted), 0);
        let evicted = queue.push(window(4)).unwrap();
        assert_eq!(end(&evicted), 1);
        let left: Vec<u64> = (0..3).map(|_| end(&queue.pop().unwrap())).collect();
        assert_eq!(left, [2, 3, 4]);
    }

    #[test]
    fn a_closed_queue_refuses_windows_and_ends_at_its_deadline() {
        let queue = WindowQueue::new(4);
        queue.push(window(1));
        queue.close(Instant::now() + Duration::from_secs(60));
        assert_eq!(end(&queue.push(window(2)).unwrap()), 2, "refused");
        assert_eq!(end(&queue.pop().unwrap()), 1, "queued ones still go");
        assert_eq!(queue.pop(), None, "closed and empty");

        let late = WindowQueue::new(4);
        late.push(window(1));
        late.close(Instant::now());
        assert_eq!(late.pop(), None, "past the deadline nothing goes");
        assert_eq!(late.drain().len(), 1);
    }

    #[test]
    fn closing_wakes_a_waiting_sender() {
        let queue = Arc::new(WindowQueue::new(1));
        let waiting = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || queue.pop())
        };
        let sleeping = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || queue.sleep(Duration::from_secs(3600)))
        };
        std::thread::sleep(Duration::from_millis(50));
        queue.close(Instant::now());
        assert_eq!(waiting.join().unwrap(), None);
        assert!(!sleeping.join().unwrap(), "the sleep is cut short");
    }
}
