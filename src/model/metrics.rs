//! Prequential regression metrics: running sums that can be merged across keys.

use serde::{Deserialize, Serialize};

/// Running error sums of a regression model, evaluated prequentially (each prediction is
/// scored against the reading's target before the model learns it).
///
/// Only sums are kept, so aggregates of a pipeline are the [`merge`](Self::merge) of its keys'
/// metrics. With no scored pair yet, [`mae`](Self::mae) and [`rmse`](Self::rmse) return `0.0`
/// rather than `NaN` or an `Option`, so they can be exported as gauges unconditionally; read
/// [`count`](Self::count) to tell "no data" from "perfect".
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    /// Number of scored (target, prediction) pairs.
    pub count: u64,
    /// Sum of |y − ŷ|.
    pub sum_abs_err: f64,
    /// Sum of (y − ŷ)².
    pub sum_sq_err: f64,
}

impl RegressionMetrics {
    /// Empty metrics (no scored pair).
    pub fn new() -> Self {
        Self::default()
    }

    /// Score one prediction `y_hat` against the target `y`.
    ///
    /// A pair with a non-finite member is ignored: one bad value would otherwise turn the
    /// aggregate into `NaN` for good.
    pub fn update(&mut self, y: f64, y_hat: f64) {
        let error = y - y_hat;
        if !error.is_finite() {
            return;
        }
        self.count += 1;
        self.sum_abs_err += error.abs();
        self.sum_sq_err += error * error;
    }

    /// Mean absolute error; `0.0` when `count == 0`.
    pub fn mae(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_abs_err / self.count as f64
        }
    }

    /// Root mean squared error; `0.0` when `count == 0`.
    pub fn rmse(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            (self.sum_sq_err / self.count as f64).sqrt()
        }
    }

    /// Add `other`'s pairs to these metrics (as if every pair had been scored here).
    pub fn merge(&mut self, other: &RegressionMetrics) {
        self.count += other.count;
        self.sum_abs_err += other.sum_abs_err;
        self.sum_sq_err += other.sum_sq_err;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOLERANCE: f64 = 1e-12;

    #[test]
    fn empty_metrics_report_zero_not_nan() {
        let metrics = RegressionMetrics::new();
        assert_eq!(metrics.count, 0);
        assert_eq!(metrics.mae(), 0.0);
        assert_eq!(metrics.rmse(), 0.0);
    }

    #[test]
    fn mae_and_rmse_match_hand_computed_values() {
        // errors: 1, -2, 3, 0 → |e| sum 6, e² sum 14 over 4 pairs.
        let mut metrics = RegressionMetrics::new();
        for (y, y_hat) in [(2.0, 1.0), (3.0, 5.0), (10.0, 7.0), (4.0, 4.0)] {
            metrics.update(y, y_hat);
        }
        assert_eq!(metrics.count, 4);
        assert!((metrics.mae() - 1.5).abs() < TOLERANCE);
        assert!((metrics.rmse() - 3.5f64.sqrt()).abs() < TOLERANCE);
    }

    #[test]
    fn merge_equals_scoring_all_pairs_in_one() {
        let pairs = [(1.0, 0.5), (2.0, 3.0), (-1.0, 1.0), (0.25, 0.0), (8.0, 6.5)];
        let mut all = RegressionMetrics::new();
        let mut left = RegressionMetrics::new();
        let mut right = RegressionMetrics::new();
        for (i, &(y, y_hat)) in pairs.iter().enumerate() {
            all.update(y, y_hat);
            if i < 2 {
                left.update(y, y_hat);
            } else {
                right.update(y, y_hat);
            }
        }
        left.merge(&right);
        assert_eq!(left.count, all.count);
        assert!((left.mae() - all.mae()).abs() < TOLERANCE);
        assert!((left.rmse() - all.rmse()).abs() < TOLERANCE);
        // |e| = 0.5, 1, 2, 0.25, 1.5 → 5.25 / 5
        assert!((left.mae() - 1.05).abs() < TOLERANCE);
    }

    #[test]
    fn non_finite_pairs_are_not_scored() {
        let mut metrics = RegressionMetrics::new();
        metrics.update(1.0, 2.0);
        metrics.update(f64::NAN, 2.0);
        metrics.update(1.0, f64::INFINITY);
        assert_eq!(metrics.count, 1);
        assert_eq!(metrics.mae(), 1.0);
        assert_eq!(metrics.rmse(), 1.0);
    }
}
