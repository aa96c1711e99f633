//! Medians, ratios and goals: the arithmetic behind the tables, kept apart
//! from the running so it can be tested without root.

use super::variant::Variant;

/// The median of `values` (the mean of the middle two for an even count):
/// robust to the one slow round a VM's host-side faults can cause.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        len if len % 2 == 1 => Some(sorted[middle]),
        _ => Some((sorted[middle - 1] + sorted[middle]) / 2.0),
    }
}

/// How many times `base` `value` is; infinite when `base` is zero, so a
/// broken baseline shows up instead of dividing to NaN silently.
pub fn ratio(value: f64, base: f64) -> f64 {
    if base == 0.0 {
        f64::INFINITY
    } else {
        value / base
    }
}

/// What a variant should achieve, from the overhead issue. Goals are
/// reported, never enforced: timings on a shared VM are too noisy to fail on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// At most this many times the untraced median.
    RatioAtMost(f64),
    /// A lower median than the other variant's.
    FasterThan(Variant),
    /// A median no higher than the other variant's.
    NoSlowerThan(Variant),
    /// A median at most this many times the other variant's.
    TimesAtMost(Variant, f64),
    /// A median of at most this many seconds (attach latency).
    SecondsAtMost(f64),
}

impl Goal {
    /// The goal as the table shows it, e.g. `≤ 1.25x`.
    pub fn describe(self) -> String {
        match self {
            Self::RatioAtMost(limit) => format!("≤ {limit:.2}x"),
            Self::FasterThan(other) => format!("< {}", other.label()),
            Self::NoSlowerThan(other) => format!("≤ {}", other.label()),
            Self::TimesAtMost(other, limit) => format!("≤ {limit:.2}x {}", other.label()),
            Self::SecondsAtMost(limit) => format!("≤ {:.0} ms", limit * 1e3),
        }
    }

    /// Whether a variant with this `ratio` and `median` met the goal; `None`
    /// when the variant it is compared with did not run.
    pub fn met(
        self,
        ratio: f64,
        median: f64,
        median_of: impl Fn(Variant) -> Option<f64>,
    ) -> Option<bool> {
        match self {
            Self::RatioAtMost(limit) => Some(ratio <= limit),
            Self::FasterThan(other) => median_of(other).map(|theirs| median < theirs),
            Self::NoSlowerThan(other) => median_of(other).map(|theirs| median <= theirs),
            Self::TimesAtMost(other, limit) => {
                median_of(other).map(|theirs| median <= theirs * limit)
            }
            Self::SecondsAtMost(limit) => Some(median <= limit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[0.7]), Some(0.7));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn median_ignores_one_outlier() {
        assert_eq!(median(&[0.70, 0.71, 1.60, 0.69, 0.72]), Some(0.71));
    }

    #[test]
    fn ratio_against_the_baseline() {
        assert_eq!(ratio(1.5, 1.0), 1.5);
        assert_eq!(ratio(0.5, 2.0), 0.25);
        assert_eq!(ratio(1.0, 0.0), f64::INFINITY);
    }

    #[test]
    fn ratio_goals_include_their_limit() {
        let none = |_| None;
        let goal = Goal::RatioAtMost(1.25);
        assert_eq!(goal.met(1.25, 0.0, none), Some(true));
        assert_eq!(goal.met(1.26, 0.0, none), Some(false));
        assert_eq!(goal.describe(), "≤ 1.25x");
        assert_eq!(Goal::RatioAtMost(1.05).describe(), "≤ 1.05x");
    }

    #[test]
    fn faster_than_compares_medians_and_needs_the_other_variant() {
        let goal = Goal::FasterThan(Variant::BpftraceStacks);
        let bpftrace = |variant| (variant == Variant::BpftraceStacks).then_some(1.0);
        assert_eq!(goal.met(9.0, 0.9, bpftrace), Some(true));
        assert_eq!(goal.met(9.0, 1.0, bpftrace), Some(false));
        assert_eq!(goal.met(9.0, 0.9, |_| None), None);
        assert_eq!(goal.describe(), "< bpftrace ustack");
        let goal = Goal::NoSlowerThan(Variant::BpftraceStacks);
        assert_eq!(goal.met(9.0, 1.0, bpftrace), Some(true));
        assert_eq!(goal.met(9.0, 1.01, bpftrace), Some(false));
        assert_eq!(goal.met(9.0, 0.5, |_| None), None);
        assert_eq!(goal.describe(), "≤ bpftrace ustack");
        let goal = Goal::TimesAtMost(Variant::Memtrace, 1.05);
        let memtrace = |variant| (variant == Variant::Memtrace).then_some(2.0);
        assert_eq!(goal.met(9.0, 2.1, memtrace), Some(true));
        assert_eq!(goal.met(9.0, 2.11, memtrace), Some(false));
        assert_eq!(goal.met(9.0, 2.0, |_| None), None);
        assert_eq!(goal.describe(), "≤ 1.05x memtrace");
    }

    #[test]
    fn seconds_goals_look_at_the_median_not_the_ratio() {
        let goal = Goal::SecondsAtMost(0.25);
        assert_eq!(goal.met(f64::NAN, 0.25, |_| None), Some(true));
        assert_eq!(goal.met(0.1, 0.26, |_| None), Some(false));
        assert_eq!(goal.describe(), "≤ 250 ms");
    }
}
