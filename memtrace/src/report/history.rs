//! RSS and its parts over time: a compact history, the trend it shows, and
//! a small chart for the live view.
//!
//! A leak is growth that persists; a garbage-collected heap rises and falls
//! (a sawtooth); most processes are steady. memtrace only calls something a
//! leak suspect when the in-use part of RSS (RSS minus lazily freed memory,
//! which is already given back, and minus what the program spent serving
//! heap profiles, which memtrace's own `--go-pprof` requests cause) grows
//! through the whole recent history, and that history is long enough: at
//! least [`MIN_SPAN`] and [`MIN_POINTS`] intervals. A one-off ramp (a
//! program allocating its working set at start) is not growth that
//! persists, and is never turned into a rate per minute.

use std::{fmt::Write as _, time::Duration};

/// One interval's numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Point {
    pub elapsed: Duration,
    pub unix_ms: u64,
    pub rss: u64,
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
    pub swap: u64,
    pub lazyfree: u64,
    pub unexplained: u64,
    /// The Go heap profile's inuse_space, with `--go-pprof`.
    pub go_heap_inuse: Option<u64>,
    pub cgroup_current: Option<u64>,
    /// In-use bytes the program faulted in while serving heap profiles
    /// (`runtime/pprof`): what memtrace's own `--go-pprof` requests cost
    /// it, not its own growth.
    pub profile_serving: u64,
}

impl Point {
    /// RSS not already given back.
    pub fn in_use(&self) -> u64 {
        self.rss.saturating_sub(self.lazyfree)
    }

    /// What the trend follows: in-use bytes, less those spent serving heap
    /// profiles, so the verdict is the same with and without `--go-pprof`.
    fn trend_bytes(&self) -> u64 {
        self.in_use().saturating_sub(self.profile_serving)
    }
}

/// What the recent history looks like.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Trend {
    /// Too short a history to say: it needs this much longer.
    Unknown {
        needs: Duration,
    },
    Steady,
    /// In-use memory grew through the whole window, at this rate.
    Growing {
        bytes_per_minute: f64,
    },
    /// Rises and falls, as a garbage-collected heap does.
    Sawtooth {
        cycles: usize,
    },
}

impl Trend {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Unknown { .. } => "unknown",
            Self::Steady => "steady",
            Self::Growing { .. } => "growing",
            Self::Sawtooth { .. } => "sawtooth",
        }
    }

    /// How much longer the history must be before a trend is judged.
    pub fn needs(&self) -> Duration {
        match self {
            Self::Unknown { needs } => *needs,
            _ => Duration::ZERO,
        }
    }
}

/// Points kept before the history is thinned to every other point.
const CAPACITY: usize = 4096;
/// Intervals the trend looks back over (further back when they span less
/// than [`MIN_SPAN`]).
const WINDOW: usize = 60;
/// The fewest intervals, and the shortest time, a trend is judged on.
pub const MIN_POINTS: usize = 8;
pub const MIN_SPAN: Duration = Duration::from_secs(10);
/// The later half of the window must add at least this share of the whole
/// rise for growth to count as persistent: a ramp then a plateau adds it
/// all early; a leak, even one that grows in steps (a garbage-collected
/// heap growing a slice by doubling), keeps adding.
const LATER_HALF_SHARE: f64 = 1.0 / 4.0;
/// Changes smaller than this share of the peak are noise.
const NOISE: f64 = 0.02;

#[derive(Clone, Debug, Default)]
pub struct History {
    points: Vec<Point>,
}

impl History {
    pub fn push(&mut self, point: Point) {
        if self.points.len() == CAPACITY {
            // Keep the whole span at half the resolution: memory stays flat
            // however long memtrace runs.
            let mut index = 0;
            self.points.retain(|_| {
                index += 1;
                index % 2 == 1
            });
        }
        self.points.push(point);
    }

    pub fn points(&self) -> &[Point] {
        &self.points
    }

    pub fn last(&self) -> Option<&Point> {
        self.points.last()
    }

    /// The trend of in-use memory over the last [`WINDOW`] points, or over
    /// the last [`MIN_SPAN`] if those span less.
    pub fn trend(&self) -> Trend {
        let Some(last) = self.points.last() else {
            return Trend::Unknown { needs: MIN_SPAN };
        };
        let by_count = self.points.len().saturating_sub(WINDOW);
        let by_time = self
            .points
            .partition_point(|point| point.elapsed + MIN_SPAN <= last.elapsed)
            .saturating_sub(1);
        trend(&self.points[by_count.min(by_time)..])
    }

    /// A sparkline of in-use RSS over the last `width` points.
    pub fn sparkline(&self, width: usize) -> String {
        const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
        let window = &self.points[self.points.len().saturating_sub(width)..];
        let max = window.iter().map(|point| point.rss).max().unwrap_or(0);
        let mut line = String::new();
        for point in window {
            let level = if max == 0 {
                0
            } else {
                ((point.rss as f64 / max as f64) * (BARS.len() - 1) as f64).round() as usize
            };
            line.push(BARS[level.min(BARS.len() - 1)]);
        }
        line
    }

    /// The history as CSV, one row per point.
    pub fn csv(&self) -> String {
        let mut text = String::from(
            "elapsed_s,timestamp_unix_ms,rss_bytes,anon_bytes,file_bytes,shmem_bytes,swap_bytes,\
             lazyfree_bytes,in_use_bytes,unexplained_bytes,go_heap_inuse_bytes,cgroup_current_bytes\n",
        );
        let optional = |value: Option<u64>| value.map(|v| v.to_string()).unwrap_or_default();
        for p in &self.points {
            let _ = writeln!(
                text,
                "{:.3},{},{},{},{},{},{},{},{},{},{},{}",
                p.elapsed.as_secs_f64(),
                p.unix_ms,
                p.rss,
                p.anon,
                p.file,
                p.shmem,
                p.swap,
                p.lazyfree,
                p.in_use(),
                p.unexplained,
                optional(p.go_heap_inuse),
                optional(p.cgroup_current),
            );
        }
        text
    }
}

/// How much longer than `window` the history must be to judge a trend.
fn still_needed(window: &[Point]) -> Duration {
    let span = match (window.first(), window.last()) {
        (Some(first), Some(last)) => last.elapsed.saturating_sub(first.elapsed),
        _ => Duration::ZERO,
    };
    let for_span = MIN_SPAN.saturating_sub(span);
    let missing = MIN_POINTS.saturating_sub(window.len()) as u32;
    let for_points = match window.len() {
        0 | 1 => Duration::ZERO,
        points => span / (points as u32 - 1) * missing,
    };
    for_span.max(for_points)
}

fn trend(window: &[Point]) -> Trend {
    let needs = still_needed(window);
    if !needs.is_zero() {
        return Trend::Unknown { needs };
    }
    let values: Vec<f64> = window.iter().map(|p| p.trend_bytes() as f64).collect();
    let peak = values.iter().cloned().fold(0.0, f64::max);
    if peak == 0.0 {
        return Trend::Steady;
    }
    let noise = peak * NOISE;
    let cycles = drops(&values, noise);
    // Growth that persists, judged on the means of the window's quarters:
    // the last well above the first, and above the one before it (still
    // growing at the end); of the others, most above the one before and
    // none far below it (a leak in a garbage-collected heap grows in steps,
    // and falls back a little at each collection); the later half adding a
    // fair share of the rise (not a ramp and a plateau); and more rise than
    // the deepest fall (not the swing of a garbage-collected heap).
    let quarter = values.len() / 4;
    let means: Vec<f64> = (0..4)
        .map(|q| {
            let part = &values[q * quarter..(q + 1) * quarter];
            part.iter().sum::<f64>() / part.len() as f64
        })
        .collect();
    let rise = means[3] - means[0];
    let steps: Vec<f64> = means.windows(2).map(|pair| pair[1] - pair[0]).collect();
    let persistent = rise > 2.0 * noise
        && steps[2] > noise / 4.0
        && steps.iter().filter(|&&step| step > noise / 4.0).count() >= 2
        && steps.iter().all(|&step| step > -rise / 4.0)
        && means[3] - means[1] >= rise * LATER_HALF_SHARE
        && rise > deepest_fall(&values);
    if persistent {
        return Trend::Growing {
            bytes_per_minute: slope(window) * 60.0,
        };
    }
    if cycles >= 2 {
        return Trend::Sawtooth { cycles };
    }
    Trend::Steady
}

/// The most the values fall below the highest before them.
fn deepest_fall(values: &[f64]) -> f64 {
    let mut peak = f64::MIN;
    let mut deepest: f64 = 0.0;
    for &value in values {
        peak = peak.max(value);
        deepest = deepest.max(peak - value);
    }
    deepest
}

/// Falls from a local peak by more than `noise`.
fn drops(values: &[f64], noise: f64) -> usize {
    let mut count = 0;
    let mut peak = values[0];
    for &value in &values[1..] {
        if value > peak {
            peak = value;
        } else if peak - value > noise {
            count += 1;
            peak = value;
        }
    }
    count
}

/// Least-squares slope of the trend's bytes, per second.
fn slope(window: &[Point]) -> f64 {
    let n = window.len() as f64;
    let xs: Vec<f64> = window.iter().map(|p| p.elapsed.as_secs_f64()).collect();
    let ys: Vec<f64> = window.iter().map(|p| p.trend_bytes() as f64).collect();
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let covariance: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let variance: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if variance == 0.0 {
        0.0
    } else {
        covariance / variance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn history(values: impl IntoIterator<Item = u64>) -> History {
        let mut history = History::default();
        for (second, rss) in values.into_iter().enumerate() {
            history.push(Point {
                elapsed: Duration::from_secs(second as u64),
                rss,
                ..Point::default()
            });
        }
        history
    }

    #[test]
    fn steady_memory_is_steady() {
        let h = history((0..30).map(|i| 100 * MIB + (i % 3) * 1024));
        assert_eq!(h.trend(), Trend::Steady);
    }

    #[test]
    fn persistent_growth_is_growing_with_its_slope() {
        let h = history((0..30).map(|i| 100 * MIB + i * 2 * MIB));
        let Trend::Growing { bytes_per_minute } = h.trend() else {
            panic!("{:?}", h.trend());
        };
        assert!((bytes_per_minute - 120.0 * MIB as f64).abs() < MIB as f64);
    }

    #[test]
    fn a_garbage_collected_heap_is_a_sawtooth_not_a_leak() {
        let h = history((0..40).map(|i| 100 * MIB + (i % 10) * 5 * MIB));
        assert_eq!(h.trend(), Trend::Sawtooth { cycles: 3 });
    }

    #[test]
    fn lazily_freed_growth_is_not_a_leak() {
        let mut h = History::default();
        for i in 0..30u64 {
            h.push(Point {
                elapsed: Duration::from_secs(i),
                rss: 100 * MIB + i * 4 * MIB,
                lazyfree: i * 4 * MIB,
                ..Point::default()
            });
        }
        assert_eq!(h.trend(), Trend::Steady);
    }

    #[test]
    fn too_little_history_says_so() {
        assert!(matches!(
            history([MIB, 2 * MIB]).trend(),
            Trend::Unknown { .. }
        ));
    }

    /// Points every `step` seconds with these in-use values.
    fn spaced(step: f64, values: impl IntoIterator<Item = u64>) -> History {
        let mut history = History::default();
        for (index, in_use) in values.into_iter().enumerate() {
            history.push(Point {
                elapsed: Duration::from_secs_f64(step * index as f64),
                rss: in_use,
                ..Point::default()
            });
        }
        history
    }

    #[test]
    fn the_trend_needs_a_minimum_window_of_time_and_points_and_says_how_long() {
        // Nine seconds of steady growth, as `-d 9` gives: not yet a trend.
        let h = spaced(1.0, (0..9).map(|i| 100 * MIB + i * 4 * MIB));
        let Trend::Unknown { needs } = h.trend() else {
            panic!("{:?}", h.trend());
        };
        assert_eq!(needs, Duration::from_secs(2));
        // Many points, too little time.
        let h = spaced(0.1, (0..20).map(|i| 100 * MIB + i * MIB));
        assert!(matches!(h.trend(), Trend::Unknown { needs } if needs > Duration::from_secs(8)));
        // Enough time, too few points: three more intervals of 5 s.
        let h = spaced(5.0, (0..5).map(|i| 100 * MIB + i * 10 * MIB));
        assert_eq!(
            h.trend(),
            Trend::Unknown {
                needs: Duration::from_secs(15)
            }
        );
        // With both, steady growth is a trend, at its rate.
        let h = spaced(1.0, (0..12).map(|i| 100 * MIB + i * 4 * MIB));
        assert!(matches!(h.trend(), Trend::Growing { bytes_per_minute }
            if (bytes_per_minute - 240.0 * MIB as f64).abs() < MIB as f64));
    }

    #[test]
    fn a_one_off_ramp_is_not_extrapolated_into_a_leak() {
        // 32 MiB allocated over the first two seconds, then nothing.
        let ramp = [8, 24, 40].map(|mib| mib * MIB);
        let h = spaced(
            1.0,
            ramp.into_iter().chain(std::iter::repeat_n(40 * MIB, 18)),
        );
        assert_eq!(h.trend(), Trend::Steady);
        // Even with a little real growth after it: the growth must run
        // through the whole window, not sit in one step of it.
        let h = spaced(
            1.0,
            ramp.into_iter()
                .chain((0..18).map(|i| 40 * MIB + i * 64 * 1024)),
        );
        assert_eq!(h.trend(), Trend::Steady);
    }

    #[test]
    fn a_leak_that_grows_in_steps_is_growing() {
        // What memtrace saw of reqleak (MiB in use every 0.4 s): a slice
        // grown by doubling, collected now and then.
        let seen = [
            31, 40, 72, 103, 117, 158, 190, 229, 251, 286, 300, 300, 300, 300, 364, 418, 296, 296,
            317, 317, 317, 317, 346, 449, 514, 514, 514, 516, 568, 668, 760, 760, 760,
        ];
        let h = spaced(0.4, seen.map(|mib| mib * MIB));
        assert!(
            matches!(h.trend(), Trend::Growing { .. }),
            "{:?}",
            h.trend()
        );
        // Nor is it thrown off when one quarter happens to hold a
        // collection and sits a little below the one before.
        let seen = [
            27, 58, 52, 109, 115, 117, 166, 229, 229, 229, 229, 324, 324, 324, 378, 442, 442, 442,
            502, 437, 437, 437, 380, 380, 380, 380, 380, 400, 495, 593, 643, 643,
        ];
        let h = spaced(0.4, seen.map(|mib| mib * MIB));
        assert!(
            matches!(h.trend(), Trend::Growing { .. }),
            "{:?}",
            h.trend()
        );
        // Growth that stopped half way through the window is not.
        let h = spaced(1.0, (0..24).map(|i| 100 * MIB + i.min(12) * 4 * MIB));
        assert!(
            !matches!(h.trend(), Trend::Growing { .. }),
            "{:?}",
            h.trend()
        );
        // Nor is a garbage-collected heap's swing caught in a rising phase.
        let h = spaced(1.0, (0..24).map(|i| 100 * MIB + ((i + 3) % 16) * 4 * MIB));
        assert!(
            !matches!(h.trend(), Trend::Growing { .. }),
            "{:?}",
            h.trend()
        );
    }

    #[test]
    fn memory_spent_serving_heap_profiles_is_not_growth() {
        // In-use memory creeps up by what each profile request costs the
        // program; without the requests it is flat.
        let mut with_requests = History::default();
        let mut without = History::default();
        for i in 0..30u64 {
            let served = i * MIB;
            with_requests.push(Point {
                elapsed: Duration::from_secs(i),
                rss: 40 * MIB + served,
                profile_serving: served,
                ..Point::default()
            });
            without.push(Point {
                elapsed: Duration::from_secs(i),
                rss: 40 * MIB,
                ..Point::default()
            });
        }
        assert_eq!(with_requests.trend(), Trend::Steady);
        assert_eq!(with_requests.trend(), without.trend());
    }

    #[test]
    fn a_fast_interval_looks_back_at_least_the_minimum_window() {
        // 0.1 s intervals: 60 points are 6 s, less than the window needs.
        let h = spaced(0.1, (0..150).map(|i| 100 * MIB + i * MIB));
        assert!(
            matches!(h.trend(), Trend::Growing { .. }),
            "{:?}",
            h.trend()
        );
    }

    #[test]
    fn a_long_history_is_thinned_not_grown() {
        let h = history((0..3 * CAPACITY as u64).map(|i| i * MIB));
        assert!(h.points().len() <= CAPACITY);
        assert_eq!(h.points()[0].rss, 0);
        assert_eq!(h.last().unwrap().rss, (3 * CAPACITY as u64 - 1) * MIB);
    }

    #[test]
    fn csv_has_a_row_per_point() {
        let csv = history([MIB, 2 * MIB]).csv();
        assert_eq!(csv.lines().count(), 3);
        assert!(csv.lines().nth(2).unwrap().starts_with("1.000,0,2097152,"));
    }

    #[test]
    fn sparkline_scales_to_the_peak() {
        assert_eq!(history([0, 4 * MIB, 8 * MIB]).sparkline(10), "▁▅█");
    }
}
