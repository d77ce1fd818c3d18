//! Counters shared by every driver: readings, outputs, prequential error sums (errors, labels,
//! cluster distances) and drops by reason, plus the rate limiter that keeps bad input from
//! flooding the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::codec::DropReason;

/// How often a given drop reason may produce a log line.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

const REASONS: usize = DropReason::ALL.len();

/// An `f64` sum updated without a lock (compare-and-swap on its bits).
#[derive(Debug, Default)]
pub struct AtomicF64(AtomicU64);

impl AtomicF64 {
    /// Add `v`.
    pub fn add(&self, v: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }

    /// The current value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Lets one log line through per [`LOG_EVERY`] and counts the ones it held back.
#[derive(Debug, Default)]
pub struct LogLimiter {
    /// Milliseconds since the process epoch of the last line let through, plus one (0 = never).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

fn process_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl LogLimiter {
    /// Call `log(suppressed_since_last_line)` unless a line was let through less than
    /// [`LOG_EVERY`] ago, in which case the event is only counted.
    pub fn hit(&self, log: impl FnOnce(u64)) {
        let now = process_epoch().elapsed().as_millis() as u64 + 1;
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64;
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log(self.suppressed.swap(0, Ordering::Relaxed));
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Drops counted per reason, each reason with its own log rate limit.
#[derive(Debug, Default)]
pub struct DropCounters {
    counts: [AtomicU64; REASONS],
    limiters: [LogLimiter; REASONS],
}

impl DropCounters {
    /// Count one drop and log it through the reason's rate limiter.
    pub fn record(&self, reason: DropReason, log: impl FnOnce(u64)) {
        self.counts[reason.index()].fetch_add(1, Ordering::Relaxed);
        self.limiters[reason.index()].hit(log);
    }

    /// Count `n` drops without logging (the caller logs its own summary).
    pub fn add(&self, reason: DropReason, n: u64) {
        self.counts[reason.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// Drops so far for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason.index()].load(Ordering::Relaxed)
    }

    /// Drops so far, every reason.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// `(reason, count)` for each reason with a non-zero count.
    pub fn nonzero(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL
            .iter()
            .map(|&r| (r, self.get(r)))
            .filter(|&(_, n)| n > 0)
            .collect()
    }
}

/// Per-pipeline counters, updated by whichever thread runs the key.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Readings decoded and accepted.
    pub readings: AtomicU64,
    /// Output messages produced.
    pub outputs: AtomicU64,
    /// Readings that had a forecast to score (prequential count).
    pub scored: AtomicU64,
    /// Sum of absolute forecast errors.
    pub abs_error_sum: AtomicF64,
    /// Sum of squared forecast errors.
    pub sq_error_sum: AtomicF64,
    /// Readings dropped, by reason.
    pub drops: DropCounters,
    /// Key actors of this pipeline currently resident (daemon only).
    pub resident_keys: AtomicU64,
    /// Readings flagged as anomalies.
    pub anomalies: AtomicU64,
    /// Labelled readings scored (classification).
    pub labelled: AtomicU64,
    /// Labelled readings whose predicted label was right.
    pub correct: AtomicU64,
    /// Sum of the log losses of labelled readings.
    pub log_loss_sum: AtomicF64,
    /// Readings assigned to a cluster (kmeans, after each key's warm-up).
    pub clustered: AtomicU64,
    /// Sum of their distances to the assigned cluster's centre (standardised units).
    pub distance_sum: AtomicF64,
    /// Readings a `filter` operator stopped.
    pub filtered: AtomicU64,
    /// Readings a `window` operator dropped: later than the allowed lateness.
    pub late: AtomicU64,
    /// Readings a `dedupe` operator dropped: their event time was seen before.
    pub duplicates: AtomicU64,
}

impl PipelineStats {
    /// Record one prequential error.
    pub fn record_error(&self, error: f64) {
        self.scored.fetch_add(1, Ordering::Relaxed);
        self.abs_error_sum.add(error.abs());
        self.sq_error_sum.add(error * error);
    }

    /// Record one scored label (classification).
    pub fn record_label(&self, correct: bool, log_loss: f64) {
        self.labelled.fetch_add(1, Ordering::Relaxed);
        if correct {
            self.correct.fetch_add(1, Ordering::Relaxed);
        }
        self.log_loss_sum.add(log_loss);
    }

    /// Record one cluster assignment (kmeans) at `distance` from its centre.
    pub fn record_distance(&self, distance: f64) {
        self.clustered.fetch_add(1, Ordering::Relaxed);
        self.distance_sum.add(distance);
    }

    /// A consistent-enough copy for the stats line and metrics.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            readings: self.readings.load(Ordering::Relaxed),
            outputs: self.outputs.load(Ordering::Relaxed),
            scored: self.scored.load(Ordering::Relaxed),
            abs_error_sum: self.abs_error_sum.get(),
            sq_error_sum: self.sq_error_sum.get(),
            dropped: self.drops.total(),
            anomalies: self.anomalies.load(Ordering::Relaxed),
            labelled: self.labelled.load(Ordering::Relaxed),
            correct: self.correct.load(Ordering::Relaxed),
            clustered: self.clustered.load(Ordering::Relaxed),
            distance_sum: self.distance_sum.get(),
        }
    }
}

/// Plain values of [`PipelineStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StatsSnapshot {
    /// Readings accepted.
    pub readings: u64,
    /// Outputs produced.
    pub outputs: u64,
    /// Readings scored.
    pub scored: u64,
    /// Sum of absolute errors.
    pub abs_error_sum: f64,
    /// Sum of squared errors.
    pub sq_error_sum: f64,
    /// Readings dropped.
    pub dropped: u64,
    /// Readings flagged as anomalies.
    pub anomalies: u64,
    /// Labelled readings scored.
    pub labelled: u64,
    /// Labelled readings predicted right.
    pub correct: u64,
    /// Readings assigned to a cluster.
    pub clustered: u64,
    /// Sum of their distances to the assigned centre.
    pub distance_sum: f64,
}

impl StatsSnapshot {
    /// Mean absolute error of the readings scored between `earlier` and `self`
    /// (`None` when none were scored).
    pub fn mae_since(&self, earlier: &StatsSnapshot) -> Option<f64> {
        let n = self.scored.saturating_sub(earlier.scored);
        (n > 0).then(|| (self.abs_error_sum - earlier.abs_error_sum) / n as f64)
    }

    /// Mean distance to the assigned cluster of the readings clustered between `earlier` and
    /// `self` (kmeans).
    pub fn mean_distance_since(&self, earlier: &StatsSnapshot) -> Option<f64> {
        let n = self.clustered.saturating_sub(earlier.clustered);
        (n > 0).then(|| (self.distance_sum - earlier.distance_sum) / n as f64)
    }

    /// Accuracy of the labelled readings scored between `earlier` and `self`.
    pub fn accuracy_since(&self, earlier: &StatsSnapshot) -> Option<f64> {
        let n = self.labelled.saturating_sub(earlier.labelled);
        (n > 0).then(|| self.correct.saturating_sub(earlier.correct) as f64 / n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_lets_the_first_line_through_and_counts_the_rest() {
        let limiter = LogLimiter::default();
        let mut lines = Vec::new();
        for _ in 0..100 {
            limiter.hit(|suppressed| lines.push(suppressed));
        }
        assert_eq!(lines, vec![0]);
        assert_eq!(limiter.suppressed.load(Ordering::Relaxed), 99);
    }

    #[test]
    fn drops_are_counted_per_reason() {
        let drops = DropCounters::default();
        drops.record(DropReason::MalformedJson, |_| {});
        drops.record(DropReason::MalformedJson, |_| {});
        drops.record(DropReason::NonFinite, |_| {});
        assert_eq!(drops.get(DropReason::MalformedJson), 2);
        assert_eq!(drops.get(DropReason::NonFinite), 1);
        assert_eq!(drops.total(), 3);
        assert_eq!(
            drops.nonzero(),
            vec![(DropReason::MalformedJson, 2), (DropReason::NonFinite, 1)]
        );
    }

    #[test]
    fn atomic_sum_and_interval_mae() {
        let stats = PipelineStats::default();
        let first = stats.snapshot();
        stats.record_error(-1.0);
        stats.record_error(3.0);
        let second = stats.snapshot();
        assert_eq!(second.sq_error_sum, 10.0);
        assert_eq!(second.mae_since(&first), Some(2.0));
        assert_eq!(second.mae_since(&second), None);
    }

    #[test]
    fn interval_mean_distance_counts_only_clustered_readings() {
        let stats = PipelineStats::default();
        stats.record_distance(0.5);
        let first = stats.snapshot();
        stats.record_distance(1.0);
        stats.record_distance(2.0);
        stats.record_error(10.0);
        let second = stats.snapshot();
        assert_eq!(second.clustered, 3);
        assert_eq!(second.mean_distance_since(&first), Some(1.5));
        assert_eq!(second.mean_distance_since(&second), None);
    }
}
