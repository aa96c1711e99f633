//! When a failed push is tried again, and how long to wait first.
//!
//! Only failures that may pass are retried: the network (refused, reset,
//! timed out), 408, 429, and the server errors a restart or an overloaded
//! server answer with (500, 502, 503, 504). Grafana Alloy retries 500 too;
//! memtrace's profiles are valid by construction, so a 500 is the server's
//! trouble, not ours, and bounded retries cost little. Everything else —
//! 400 (a profile or label the server refuses), 401/403 (credentials),
//! 404 (wrong URL), 413, 415, 422 — fails the same way every time, so the
//! window is dropped at once.
//!
//! Waits grow exponentially with jitter, so a fleet of agents that lost
//! the server together does not come back in step: before retry `n` the
//! wait is uniform in `[min·2^(n-1), min·2^n)`, capped at `max`. A server's
//! `Retry-After` lengthens the wait (never beyond `max`).

use std::time::Duration;

/// How often and how patiently a window is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 never retries.
    pub max_retries: u32,
    /// The wait before the first retry is at least this.
    pub min_backoff: Duration,
    /// No wait is longer than this.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// Five retries from 1 s, waits capped at 30 s: a window gives up after
    /// about a minute of waiting, about one default push interval.
    fn default() -> Self {
        Self {
            max_retries: 5,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry `retry` (1 for the first), with jitter from
    /// `rng`, at least `retry_after` if the server asked for it.
    pub fn delay(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        rng: &mut fastrand::Rng,
    ) -> Duration {
        let floor = self
            .min_backoff
            .saturating_mul(1 << retry.saturating_sub(1).min(30))
            .min(self.max_backoff);
        let ceiling = floor.saturating_mul(2).min(self.max_backoff);
        let spread = ceiling.saturating_sub(floor);
        let jitter = spread.mul_f64(rng.f64());
        let backoff = floor + jitter;
        match retry_after {
            Some(asked) => backoff.max(asked.min(self.max_backoff)),
            None => backoff,
        }
    }
}

/// What an HTTP status means for a push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Stored.
    Delivered,
    /// May work later.
    Retry,
    /// Will fail the same way every time.
    GiveUp,
}

/// The verdict on a push the server answered with `status`.
pub fn verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500 | 502 | 503 | 504 => Verdict::Retry,
        _ => Verdict::GiveUp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_that_may_pass_are_retried_and_no_others() {
        for status in [200, 202, 204] {
            assert_eq!(verdict(status), Verdict::Delivered, "{status}");
        }
        for status in [408, 429, 500, 502, 503, 504] {
            assert_eq!(verdict(status), Verdict::Retry, "{status}");
        }
        for status in [301, 400, 401, 403, 404, 405, 409, 413, 415, 422, 499, 501] {
            assert_eq!(verdict(status), Verdict::GiveUp, "{status}");
        }
    }

    #[test]
    fn waits_double_within_their_jitter_range_and_stop_at_the_cap() {
        let policy = RetryPolicy {
            max_retries: 10,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
        };
        let mut rng = fastrand::Rng::with_seed(7);
        let ms = Duration::from_millis;
        let ranges = [
            (1, ms(500), ms(1000)),
            (2, ms(1000), ms(2000)),
            (3, ms(2000), ms(4000)),
            (4, ms(4000), ms(5000)),
            (5, ms(5000), ms(5000)),
            (40, ms(5000), ms(5000)),
        ];
        for (retry, low, high) in ranges {
            let waits: Vec<_> = (0..200)
                .map(|_| policy.delay(retry, None, &mut rng))
                .collect();
            assert!(
                waits.iter().all(|wait| (low..=high).contains(wait)),
                "retry {retry}: {waits:?} outside {low:?}..={high:?}"
            );
            if low != high {
                let (first, last) = (waits.iter().min(), waits.iter().max());
                assert!(
                    last.unwrap().saturating_sub(*first.unwrap()) > (high - low) / 2,
                    "retry {retry}: the jitter spreads the waits"
                );
            }
        }
    }

    #[test]
    fn retry_after_lengthens_the_wait_up_to_the_cap() {
        let policy = RetryPolicy {
            max_retries: 3,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        };
        let mut rng = fastrand::Rng::with_seed(1);
        let asked = policy.delay(1, Some(Duration::from_secs(12)), &mut rng);
        assert_eq!(asked, Duration::from_secs(12));
        let capped = policy.delay(1, Some(Duration::from_secs(3600)), &mut rng);
        assert_eq!(capped, Duration::from_secs(30));
        let shorter = policy.delay(3, Some(Duration::from_millis(1)), &mut rng);
        assert!(shorter >= Duration::from_secs(4), "{shorter:?}");
    }
}
