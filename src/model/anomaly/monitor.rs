//! What is normal for one field, and how far a reading is from it: the building block of both
//! detectors.
//!
//! - **Baseline**: an exponentially weighted mean and mean absolute deviation of the field
//!   (weights `1/n`, then at least `1/2000`: the key's long-run normal). While the key is
//!   flagged the baseline still learns, at a tenth of the weight and from a deviation
//!   winsorised at 4 spreads, so that an anomaly does not become the new normal within its
//!   own duration but a lasting change of regime is learnt in time — one event never freezes
//!   a key. The spread is floored at `1e-9·|mean|`, so it is never 0.
//! - **Smoothed deviation**: the deviation from the baseline in spreads (σ-equivalent:
//!   `(x − mean) / (√(π/2)·spread)`), capped at 6σ and averaged over the last few readings
//!   (EW, `smoothing`): a state that persists adds up, one reading — however wild — does not.
//! - **Calibration**: the variance of the smoothed deviation while nothing is flagged (weights
//!   `1/n`, then `1/2000`): the smoothed deviation in units of its own normal spread is then a
//!   standard score whatever the field's autocorrelation, and its Gaussian tail is the state's
//!   probability.
//! - **Change**: a two-sided CUSUM of the deviation from the mean of the current segment
//!   (`S ← max(0, S ± z − k)`, k = ½, z in spreads), whose stationary tail `e^{−S}` is the
//!   change's probability. When the detector reports a change the field starts a new segment;
//!   its mean is learnt over the next readings (`1/n`, then `1/200`), and no change is
//!   measured from it until it has seen [`SETTLE`] readings.

use serde::{Deserialize, Serialize};

use super::calibration::{cusum_tail, gaussian_tail};

/// `√(π/2)`: standard deviation / mean absolute deviation of a normal distribution.
pub(super) const GAUSSIAN_SCALE: f64 = 1.253_314_137_315_500_3;
/// Smallest weight of a new reading in the baseline and in the calibration.
const BASELINE_MIN_WEIGHT: f64 = 1.0 / 2000.0;
/// Weight of a flagged reading in the baseline, relative to a normal one.
pub(super) const FLAGGED_WEIGHT: f64 = 0.1;
/// Deviations are winsorised at this many spreads before a flagged reading is learnt.
const WINSOR_SPREADS: f64 = 4.0;
/// Deviations are capped at this many σ before they are smoothed.
const SMOOTHING_CAP: f64 = 6.0;
/// CUSUM allowance k, in spreads.
pub(super) const ALLOWANCE: f64 = 0.5;
/// Readings a new segment learns its mean from before changes are measured from it.
pub(super) const SETTLE: u32 = 30;
/// Smallest weight of a new reading in a segment's mean.
const SEGMENT_MIN_WEIGHT: f64 = 1.0 / 200.0;
/// Readings of baseline before deviations from it are smoothed and calibrated.
const BASELINE_WARMUP: f64 = 20.0;
/// Readings of calibration before the state's probability is trusted.
const CALIBRATION_WARMUP: u64 = 20;

/// One field's baseline, smoothed deviation, calibration and change detector. Field order is
/// the postcard format: append only.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(super) struct FieldMonitor {
    /// Baseline mean.
    mean: f64,
    /// Baseline mean absolute deviation.
    spread: f64,
    /// Readings folded into the baseline (flagged ones count a tenth).
    weight_sum: f64,
    /// EW mean of the deviation in spreads (σ-equivalent).
    smoothed: f64,
    /// EW mean of `smoothed²` over unflagged readings.
    variance: f64,
    /// Readings folded into `variance`.
    calibrated: u64,
    /// Mean of the current segment.
    segment_mean: f64,
    /// Readings of the current segment (saturating).
    segment_len: u32,
    /// CUSUM of upward and downward deviations from the segment mean.
    up: f64,
    down: f64,
    /// EW mean of the deviation over four times `smoothing` (a slower state: drifts).
    slow: f64,
    /// EW mean of `slow²` over unflagged readings.
    slow_variance: f64,
    /// A new level was accepted: the baseline mean follows the new segment's mean (and the
    /// state is not scored) until the segment has settled.
    following: bool,
}

/// What one reading says about one field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct FieldReading {
    /// Deviation from the baseline in spreads (σ-equivalent), not smoothed.
    pub(super) sigma: f64,
    /// Probability of a smoothed deviation at least this large in normal operation; 1 before
    /// the calibration has enough readings.
    pub(super) state: f64,
    /// Probability of the CUSUM at least this large without a change; 1 while the segment
    /// settles.
    pub(super) change: f64,
}

impl FieldMonitor {
    pub(super) fn new() -> Self {
        Self {
            mean: 0.0,
            spread: 0.0,
            weight_sum: 0.0,
            smoothed: 0.0,
            variance: 0.0,
            calibrated: 0,
            segment_mean: 0.0,
            segment_len: 0,
            up: 0.0,
            down: 0.0,
            slow: 0.0,
            slow_variance: 0.0,
            following: false,
        }
    }

    /// The spread in σ-equivalent units, floored.
    pub(super) fn sigma_scale(&self) -> f64 {
        (GAUSSIAN_SCALE * self.spread)
            .max(1e-9 * self.mean.abs())
            .max(f64::MIN_POSITIVE)
    }

    /// Every reading learnt so far had the same value (the spread is at its floor).
    fn constant(&self) -> bool {
        self.weight_sum >= BASELINE_WARMUP && GAUSSIAN_SCALE * self.spread <= 1e-9 * self.mean.abs()
    }

    /// The baseline mean.
    pub(super) fn mean(&self) -> f64 {
        self.mean
    }

    /// Score `x` against what was learnt so far (before learning it); `smoothing` is the
    /// smoothed deviation's window in readings.
    pub(super) fn score(&mut self, x: f64, smoothing: f64) -> FieldReading {
        if self.weight_sum == 0.0 {
            return FieldReading {
                sigma: 0.0,
                state: 1.0,
                change: 1.0,
            };
        }
        let scale = self.sigma_scale();
        let sigma = (x - self.mean) / scale;
        if self.weight_sum < BASELINE_WARMUP || (self.constant() && x != self.mean) {
            // The baseline of a handful of readings says nothing yet (its spread is nearly 0):
            // neither smoothed nor calibrated on, or the first readings' huge deviations would
            // stay in the calibration for good.
            return FieldReading {
                sigma: 0.0,
                state: 1.0,
                change: 1.0,
            };
        }
        // Capped before it is averaged: a lasting deviation saturates the average as surely
        // as a large one, and one spike moves it by at most cap / smoothing.
        let capped = sigma.clamp(-SMOOTHING_CAP, SMOOTHING_CAP);
        self.smoothed += (capped - self.smoothed) / smoothing.max(1.0);
        // The variance of an EW average of iid standard scores; the smoothed deviation is
        // never taken as less variable than that (a very regular series — a repeating pattern
        // — has an almost constant average, and any reading would look extreme against it).
        let iid = 1.0 / (2.0 * smoothing.max(1.0) - 1.0);
        let long = 4.0 * smoothing.max(1.0);
        self.slow += (capped - self.slow) / long;
        let state = if self.calibrated >= CALIBRATION_WARMUP && !self.following {
            let iid_long = 1.0 / (2.0 * long - 1.0);
            let fast = gaussian_tail(self.smoothed / self.variance.max(iid).sqrt());
            let slow = gaussian_tail(self.slow / self.slow_variance.max(iid_long).sqrt());
            (2.0 * fast.min(slow)).min(1.0)
        } else {
            1.0
        };
        let change = if self.segment_len >= SETTLE {
            // Increments in units of the long-run standard deviation: real fields are
            // autocorrelated, and a CUSUM of autocorrelated increments wanders far more than
            // its iid tail says (20 false changes per SKAB experiment). The smoothed
            // deviation's variance measures the inflation: it is 1/(2w − 1) for iid readings.
            let inflation = if self.calibrated >= CALIBRATION_WARMUP {
                (self.variance / iid).max(1.0)
            } else {
                1.0
            };
            let z = (x - self.segment_mean) / (scale * inflation.sqrt());
            self.up = (self.up + z - ALLOWANCE).max(0.0);
            self.down = (self.down - z - ALLOWANCE).max(0.0);
            cusum_tail(self.up.max(self.down), ALLOWANCE)
        } else {
            1.0
        };
        FieldReading {
            sigma,
            state,
            change,
        }
    }

    /// Learn `x` after scoring it; `flagged`: the key is in an anomaly (a tenth of the weight,
    /// winsorised, and no calibration).
    pub(super) fn learn(&mut self, x: f64, flagged: bool) {
        if self.constant() && x != self.mean {
            // A field that has never varied has no spread to measure a deviation in: its
            // first change starts its baseline again (else every later reading would be
            // "infinitely" far, flagged, and learnt at a tenth of the weight: frozen).
            *self = Self::new();
        }
        if self.weight_sum == 0.0 {
            self.mean = x;
            self.segment_mean = x;
            self.weight_sum = 1.0;
            self.segment_len = 1;
            return;
        }
        let relative = if flagged { FLAGGED_WEIGHT } else { 1.0 };
        self.weight_sum += relative;
        let weight = (relative / self.weight_sum).max(relative * BASELINE_MIN_WEIGHT);
        let mut deviation = x - self.mean;
        if flagged {
            let limit = WINSOR_SPREADS * self.sigma_scale();
            deviation = deviation.clamp(-limit, limit);
        }
        self.mean += weight * deviation;
        self.spread += weight * (deviation.abs() - self.spread);
        if !flagged && self.weight_sum >= BASELINE_WARMUP {
            self.calibrated += 1;
            let calibration_weight = (1.0 / self.calibrated as f64).max(BASELINE_MIN_WEIGHT);
            self.variance += calibration_weight * (self.smoothed * self.smoothed - self.variance);
            self.slow_variance += calibration_weight * (self.slow * self.slow - self.slow_variance);
        }
        self.segment_len = self.segment_len.saturating_add(1);
        let segment_weight = (1.0 / f64::from(self.segment_len)).max(SEGMENT_MIN_WEIGHT);
        self.segment_mean += segment_weight * (x - self.segment_mean);
        if self.following {
            self.mean = self.segment_mean;
            self.following = self.segment_len < SETTLE;
        }
        if !(self.mean.is_finite() && self.spread.is_finite() && self.variance.is_finite()) {
            // Cannot happen for finite inputs below 1e100; never let it reach a score.
            *self = Self::new();
        }
    }

    /// A change was reported: the field starts a new segment at `x`.
    pub(super) fn restart_segment(&mut self, x: f64) {
        self.segment_mean = x;
        self.segment_len = 0;
        self.up = 0.0;
        self.down = 0.0;
    }

    /// A drift or a level shift of this field was reported: the level it is at now is the new
    /// normal. The baseline mean starts again at `x` and follows the mean of the next
    /// [`SETTLE`] readings (which are not scored), so it lands on the new level, not on one
    /// noisy reading; the smoothed deviations start again; the spread and the calibration
    /// stay.
    pub(super) fn accept(&mut self, x: f64) {
        if x.is_finite() && self.weight_sum > 0.0 {
            self.mean = x;
            self.smoothed = 0.0;
            self.slow = 0.0;
            self.restart_segment(x);
            self.following = true;
        }
    }

    /// The change statistic's probability without scoring a reading.
    pub(super) fn change_probability(&self) -> f64 {
        if self.segment_len >= SETTLE {
            cusum_tail(self.up.max(self.down), ALLOWANCE)
        } else {
            1.0
        }
    }

    /// Whether a deserialised monitor holds only numbers a detector can run on.
    pub(super) fn check(&self) -> Result<(), String> {
        let numbers = [
            self.mean,
            self.spread,
            self.weight_sum,
            self.smoothed,
            self.variance,
            self.segment_mean,
            self.up,
            self.down,
            self.slow,
            self.slow_variance,
        ];
        if !numbers.iter().all(|v| v.is_finite()) {
            return Err("a field monitor holds a number that is not finite".into());
        }
        if [
            self.spread,
            self.variance,
            self.slow_variance,
            self.up,
            self.down,
        ]
        .iter()
        .any(|v| *v < 0.0)
        {
            return Err("a field monitor holds a negative spread or statistic".into());
        }
        Ok(())
    }
}
