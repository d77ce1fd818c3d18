//! Prequential metrics (regression, binary classification and clustering): running sums that
//! can be merged across keys.

use serde::{Deserialize, Serialize};

/// Errors are winsorised at this many of the model's own error scales (its residual standard
/// deviation, see [`RegressionMetrics::update_within`]): an honest error of a Gaussian model
/// is never that large, an absurd reading (1e12 in a series around 20) counts as
/// `10σ` instead of dominating the key's MAE for millions of readings.
pub const ERROR_CAP_SCALES: f64 = 10.0;

/// Errors scored before the model's scale is used for the cap: a model's first residuals are
/// too few for its scale to say what an honest error is.
pub const SCALE_WARMUP: u64 = 20;

/// Largest error magnitude scored whatever the scale: its square (1e200) and the sum of
/// billions of them stay finite, so finite inputs never make the metrics infinite.
pub const MAX_SCORED_ERROR: f64 = 1e100;

/// Running error sums of a regression model, evaluated prequentially (each prediction is
/// scored against the reading's target before the model learns it).
///
/// Each error is winsorised before it is added: at [`ERROR_CAP_SCALES`] times the model's
/// error scale when the caller has one ([`update_within`](Self::update_within)), and always at
/// [`MAX_SCORED_ERROR`]. So the MAE and RMSE are those of the errors the model makes on
/// plausible readings, one absurd reading moves them by at most `10σ / count`, and no finite
/// input makes them infinite. Only sums are kept, so aggregates of a pipeline are the
/// [`merge`](Self::merge) of its keys' metrics. With no scored pair yet, [`mae`](Self::mae) and [`rmse`](Self::rmse) return `0.0`
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

    /// Score one prediction `y_hat` against the target `y` without a model scale (the error
    /// is only capped at [`MAX_SCORED_ERROR`]); returns the error as scored.
    ///
    /// A pair with a non-finite member is ignored (`None`): one bad value would otherwise turn
    /// the aggregate into `NaN` for good.
    pub fn update(&mut self, y: f64, y_hat: f64) -> Option<f64> {
        self.update_within(y, y_hat, None)
    }

    /// Score one prediction `y_hat` against the target `y`, the error winsorised at
    /// [`ERROR_CAP_SCALES`] times `scale`, the model's own error scale before it learns `y`
    /// (its residual standard deviation; `None`, zero or not finite: no scale yet, only
    /// [`MAX_SCORED_ERROR`] applies; also for the first [`SCALE_WARMUP`] errors). Returns the error as scored (`y − ŷ`, capped), for
    /// aggregates kept elsewhere.
    ///
    /// A pair with a non-finite member is ignored (`None`).
    pub fn update_within(&mut self, y: f64, y_hat: f64, scale: Option<f64>) -> Option<f64> {
        if !(y.is_finite() && y_hat.is_finite()) {
            return None;
        }
        let cap = scale
            .filter(|scale| self.count >= SCALE_WARMUP && scale.is_finite() && *scale > 0.0)
            .map_or(MAX_SCORED_ERROR, |scale| {
                (ERROR_CAP_SCALES * scale).min(MAX_SCORED_ERROR)
            });
        // `y − ŷ` of two finite values can overflow to ±inf: clamped like any other.
        let error = (y - y_hat).clamp(-cap, cap);
        self.count += 1;
        self.sum_abs_err += error.abs();
        self.sum_sq_err += error * error;
        Some(error)
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

/// Probabilities are clamped to `[LOG_LOSS_CLAMP, 1 − LOG_LOSS_CLAMP]` for the log loss (the
/// probability of the observed label, to keep the clamp exact on both sides), so a
/// confident mistake costs at most −ln(1e-15) ≈ 34.5 instead of infinity.
pub const LOG_LOSS_CLAMP: f64 = 1e-15;

/// Running sums of a binary classifier, evaluated prequentially (each predicted probability is
/// scored against the reading's label before the model learns it).
///
/// Only sums are kept, so aggregates are the [`merge`](Self::merge) of the keys' metrics. With
/// no scored pair yet, [`accuracy`](Self::accuracy) and [`log_loss`](Self::log_loss) return
/// `0.0`; read [`count`](Self::count) to tell "no data" apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassificationMetrics {
    /// Number of scored (label, probability) pairs.
    pub count: u64,
    /// Pairs whose thresholded prediction equals the label.
    pub correct: u64,
    /// Sum of the log losses `−ln p` (positive label) or `−ln(1 − p)` (negative label), with
    /// the probability of the observed label clamped to `[1e-15, 1 − 1e-15]`.
    pub log_loss_sum: f64,
}

impl ClassificationMetrics {
    /// Empty metrics (no scored pair).
    pub fn new() -> Self {
        Self::default()
    }

    /// Score the predicted probability `p` of a positive label against the label `y`; the
    /// prediction is positive when `p ≥ threshold` (0.5 for the usual rule).
    ///
    /// A non-finite `p` is ignored, like a non-finite regression pair.
    pub fn update(&mut self, y: bool, p: f64, threshold: f64) {
        if !p.is_finite() {
            return;
        }
        self.count += 1;
        self.correct += u64::from((p >= threshold) == y);
        // Clamp the probability given to the observed label rather than p itself: 1 − 1e-15 is
        // not representable to better than 10 %, so clamping p would make −ln(1 − p) of a
        // confident mistake on a negative label 34.5395 instead of −ln(1e-15) = 34.5388.
        let observed = if y { p } else { 1.0 - p };
        self.log_loss_sum -= observed.clamp(LOG_LOSS_CLAMP, 1.0 - LOG_LOSS_CLAMP).ln();
    }

    /// Fraction of correct predictions; `0.0` when `count == 0`.
    pub fn accuracy(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.correct as f64 / self.count as f64
        }
    }

    /// Mean log loss (cross-entropy, nats); `0.0` when `count == 0`.
    pub fn log_loss(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.log_loss_sum / self.count as f64
        }
    }

    /// Add `other`'s pairs to these metrics (as if every pair had been scored here).
    pub fn merge(&mut self, other: &Self) {
        self.count += other.count;
        self.correct += other.correct;
        self.log_loss_sum += other.log_loss_sum;
    }
}

/// Running sums of a clustering, evaluated prequentially: each reading's distance to the
/// cluster it was assigned to *before* the model learnt it (inertia per reading, as a
/// distance; lower is tighter).
///
/// Distances are in the model's standardised units, so the mean of one key is comparable over
/// time and across keys with the same features. Only sums are kept, so aggregates are the
/// [`merge`](Self::merge) of the keys' metrics. With no assignment yet,
/// [`mean_distance`](Self::mean_distance) returns `0.0`; read [`count`](Self::count) to tell
/// "no data" apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusteringMetrics {
    /// Number of readings assigned to a cluster (after the model's warm-up).
    pub count: u64,
    /// Sum of their distances to the assigned cluster's centre.
    pub distance_sum: f64,
}

impl ClusteringMetrics {
    /// Empty metrics (no assignment).
    pub fn new() -> Self {
        Self::default()
    }

    /// Score one assignment at `distance` from its cluster's centre. A non-finite or negative
    /// distance is ignored, like a non-finite regression pair.
    pub fn update(&mut self, distance: f64) {
        if !(distance.is_finite() && distance >= 0.0) {
            return;
        }
        self.count += 1;
        self.distance_sum += distance;
    }

    /// Mean distance of the readings to their assigned cluster; `0.0` when `count == 0`.
    pub fn mean_distance(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.distance_sum / self.count as f64
        }
    }

    /// Add `other`'s assignments to these metrics (as if every one had been scored here).
    pub fn merge(&mut self, other: &Self) {
        self.count += other.count;
        self.distance_sum += other.distance_sum;
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

    #[test]
    fn finite_pairs_never_make_the_metrics_infinite() {
        let mut metrics = RegressionMetrics::new();
        for _ in 0..1000 {
            metrics.update(1e300, -20.0);
            metrics.update(f64::MAX, -f64::MAX);
            metrics.update_within(-1e300, 20.0, Some(f64::MAX));
        }
        assert_eq!(metrics.count, 3000);
        assert!(metrics.mae().is_finite() && metrics.rmse().is_finite());
        assert!((metrics.mae() / MAX_SCORED_ERROR - 1.0).abs() < 1e-12);
        assert!((metrics.rmse() / MAX_SCORED_ERROR - 1.0).abs() < 1e-12);
    }

    #[test]
    fn errors_are_winsorised_at_ten_model_scales() {
        // 2000 errors of ±1 (σ = 1), then five readings of 1e12.
        let mut metrics = RegressionMetrics::new();
        for t in 0..2000 {
            let error = if t % 2 == 0 { 1.0 } else { -1.0 };
            assert_eq!(
                metrics.update_within(20.0 + error, 20.0, Some(1.0)),
                Some(error)
            );
        }
        for _ in 0..5 {
            assert_eq!(metrics.update_within(1e12, 20.0, Some(1.0)), Some(10.0));
        }
        // MAE (2000 + 50) / 2005, RMSE √((2000 + 500) / 2005).
        assert!((metrics.mae() - 2050.0 / 2005.0).abs() < TOLERANCE);
        assert!((metrics.rmse() - (2500.0f64 / 2005.0).sqrt()).abs() < TOLERANCE);
        // Without a usable scale only the absolute cap applies, and so for the first errors.
        for scale in [None, Some(0.0), Some(f64::NAN), Some(1.0)] {
            let mut fresh = RegressionMetrics::new();
            assert_eq!(fresh.update_within(1e12, 20.0, scale), Some(1e12 - 20.0));
        }
    }

    #[test]
    fn classification_metrics_match_hand_computed_values() {
        let mut metrics = ClassificationMetrics::new();
        assert_eq!((metrics.accuracy(), metrics.log_loss()), (0.0, 0.0));
        // (y, p): right, wrong, right (p = threshold counts as positive), wrong.
        for (y, p) in [(true, 0.8), (false, 0.6), (true, 0.5), (true, 0.25)] {
            metrics.update(y, p, 0.5);
        }
        assert_eq!((metrics.count, metrics.correct), (4, 2));
        assert_eq!(metrics.accuracy(), 0.5);
        let expected = -(0.8f64.ln() + 0.4f64.ln() + 0.5f64.ln() + 0.25f64.ln()) / 4.0;
        assert!((metrics.log_loss() - expected).abs() < TOLERANCE);
    }

    #[test]
    fn classification_log_loss_is_clamped_and_non_finite_ignored() {
        let mut metrics = ClassificationMetrics::new();
        metrics.update(true, 0.0, 0.5);
        metrics.update(false, 1.0, 0.5);
        metrics.update(true, f64::NAN, 0.5);
        assert_eq!((metrics.count, metrics.correct), (2, 0));
        // −ln(1e-15) each.
        assert!((metrics.log_loss() - 15.0 * 10f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn classification_merge_equals_scoring_all_pairs_in_one() {
        let pairs = [
            (true, 0.9),
            (false, 0.3),
            (false, 0.7),
            (true, 0.45),
            (true, 0.6),
        ];
        let mut all = ClassificationMetrics::new();
        let (mut left, mut right) = (ClassificationMetrics::new(), ClassificationMetrics::new());
        for (i, &(y, p)) in pairs.iter().enumerate() {
            all.update(y, p, 0.5);
            if i < 3 {
                left.update(y, p, 0.5);
            } else {
                right.update(y, p, 0.5);
            }
        }
        left.merge(&right);
        assert_eq!((left.count, left.correct), (all.count, all.correct));
        assert_eq!((left.count, left.correct), (5, 3));
        assert!((left.log_loss() - all.log_loss()).abs() < TOLERANCE);
    }

    #[test]
    fn clustering_metrics_average_and_merge_distances() {
        let mut all = ClusteringMetrics::new();
        assert_eq!((all.count, all.mean_distance()), (0, 0.0));
        let (mut left, mut right) = (ClusteringMetrics::new(), ClusteringMetrics::new());
        for (i, d) in [0.5, 1.5, 0.25, 2.0].into_iter().enumerate() {
            all.update(d);
            if i < 2 {
                left.update(d);
            } else {
                right.update(d);
            }
        }
        for bad in [f64::NAN, f64::INFINITY, -1.0] {
            all.update(bad);
        }
        left.merge(&right);
        assert_eq!(all.count, 4);
        assert!((all.mean_distance() - 1.0625).abs() < TOLERANCE);
        assert_eq!(left, all);
    }
}
