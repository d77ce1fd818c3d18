//! `[pipelines.anomaly]` of a forecast or regression pipeline: flags readings far from their
//! prediction, level shifts and drifts, and readings unlike the same phase of the season.
//!
//! The caller hands each reading's residual `observed − prediction` (the prediction made
//! before it was seen), the observed value and, for a seasonal forecast, the seasonal
//! reference (the value one season before) to [`AnomalyDetector::observe`]. Five statistics,
//! each turned into the probability `p` of being at least as extreme in normal operation:
//!
//! | component | statistic | p | kind |
//! |---|---|---|---|
//! | one reading | `z = residual / σ`, calibrated (`z / c`, c² the recent mean of z², capped) | Gaussian two-sided tail | `spike` |
//! | the last ~10 readings | EW mean of the capped z² | χ²/ν tail, ν = 19 | `level_shift` |
//! | persistent bias | two-sided CUSUM of the capped z, k = ½ | `e^{−S}` | `level_shift` |
//! | away from the long-run level | the value's smoothed deviation from its slow baseline ([`FieldMonitor`]) | Gaussian tail | `drift` |
//! | unlike the same phase | `(value − seasonal reference) / its spread`, calibrated | Gaussian tail | `context` |
//!
//! `anomaly_score = 1 − p`, p the smallest component times the number of components
//! (Bonferroni), so `threshold` is a rarity: 0.9999 flags about one reading in ten thousand of
//! a key behaving normally, whatever its units and noise. `anomaly_sigma` is the raw |z|.
//!
//! **σ cannot collapse.** σ is √(π/2) × an EW mean absolute residual (weights `1/n`, then
//! 1/50), floored at a hundredth of the value's long-run spread and at 1e-6 of its level: a
//! constant start or a quiet stretch leaves a floor, not 0. Each residual enters σ clipped to
//! 6σ — one spike does not blind the detector — except when the previous residual was beyond
//! 6σ too: two in a row are a noisier regime, learnt at once, not a run of flags.
//!
//! **Flagged once, then learnt.** After a flag the statistics that raised it start again: the
//! window and the CUSUM are reset after a `level_shift`, the baseline moves to the new level
//! after a `drift`. The model keeps learning: [`AnomalyVerdict::learn_residual`] is the
//! residual clipped to the threshold's z (winsorised), which the pipeline lets the model learn
//! instead of the raw value (unless `learn_anomalies = true`), so an anomaly moves the model
//! a bounded amount and a real change is learnt within a few readings.

use serde::{Deserialize, Deserializer, Serialize};

use super::calibration::{chi2_mean_tail, cusum_tail, gaussian_quantile, gaussian_tail, score};
use super::monitor::{FieldMonitor, ALLOWANCE, GAUSSIAN_SCALE};
use super::AnomalyKind;
use crate::model::ModelError;

/// Smallest weight of a new residual in σ (memory ≈ 50 readings).
const SCALE_MIN_WEIGHT: f64 = 0.02;
/// Residuals beyond this many σ enter σ clipped (unless the previous one was beyond too).
const SCALE_CLIP_SIGMAS: f64 = 6.0;
/// σ is at least this fraction of the value's long-run spread …
const FLOOR_OF_SPREAD: f64 = 0.01;
/// … and of its level.
const FLOOR_OF_LEVEL: f64 = 1e-6;
/// Smallest weight of a new z² in the calibration c² (memory ≈ 1000 readings).
const CALIBRATION_MIN_WEIGHT: f64 = 0.001;
/// Weight of a new z² in the window statistic (≈ the last 10 readings).
const WINDOW_WEIGHT: f64 = 0.1;
/// Readings the value's smoothed deviation from its baseline is averaged over.
const LEVEL_SMOOTHING: f64 = 10.0;
/// Smallest weight of a new value in the seasonal context's spread.
const CONTEXT_MIN_WEIGHT: f64 = 0.005;

/// Parameters of an [`AnomalyDetector`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AnomalyParams {
    /// `anomaly_score` above which a reading is flagged, in (0, 1) (default 0.9999: about one
    /// reading in ten thousand of a key behaving normally).
    pub threshold: f64,
    /// Whether the model learns a flagged reading as it is (default `false`: it learns the
    /// reading winsorised, see [`AnomalyVerdict::learn_residual`]).
    pub learn_anomalies: bool,
    /// Residuals observed before anything is flagged (default 100); the scales are learnt
    /// meanwhile.
    pub warmup: u64,
}

impl Default for AnomalyParams {
    fn default() -> Self {
        Self {
            threshold: 0.9999,
            learn_anomalies: false,
            warmup: 100,
        }
    }
}

impl AnomalyParams {
    /// Check every parameter's range.
    ///
    /// # Errors
    /// [`ModelError::InvalidParams`] naming the parameter out of range.
    pub fn validate(&self) -> Result<(), ModelError> {
        super::ranges::THRESHOLD
            .check(self.threshold)
            .map_err(|e| ModelError::OutOfRange(vec![e]))
    }
}

/// The verdict on one residual.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalyVerdict {
    /// `1 − p` (see the module documentation), in [0, 1]; 0 during the warm-up.
    pub score: f64,
    /// |residual| / σ (the raw size of the error); 0 during the warm-up.
    pub sigma: f64,
    /// `score > threshold`.
    pub anomaly: bool,
    /// What the flag is about (when `anomaly`).
    pub kind: Option<AnomalyKind>,
    /// A level shift or a drift is reported at this reading.
    pub change: bool,
    /// The residual the model should learn: the residual itself, or, for a flagged reading
    /// when `learn_anomalies` is off, the residual clipped to the threshold's z · σ.
    pub learn_residual: f64,
}

/// Anomaly detector of one key on its prediction residuals; see the [module
/// documentation](self).
///
/// The struct is the whole state. It serialises with serde; deserialising checks the
/// parameters and that every statistic is a finite number ≥ 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct AnomalyDetector {
    state: DetectorState,
}

/// The serialised fields. Field order is the postcard format: append only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DetectorState {
    params: AnomalyParams,
    /// EW mean absolute residual (σ = √(π/2) × this, floored).
    mean_abs_residual: f64,
    /// Residuals observed.
    observed: u64,
    /// The sign of the previous residual when it was beyond [`SCALE_CLIP_SIGMAS`], else 0.
    previous_beyond: i8,
    /// Residuals σ has learnt from since its schedule (weights `1/n`) last started: at the
    /// first residual, and again when two residuals in a row are beyond 6σ (a new regime).
    scale_count: u64,
    /// EW mean of the capped z² (the calibration c²).
    calibration: f64,
    /// EW mean of the capped calibrated z² over the last ~10 readings.
    window: f64,
    /// CUSUM of upward and downward calibrated z.
    up: f64,
    down: f64,
    /// The value's long-run level.
    level: FieldMonitor,
    /// EW mean |value − seasonal reference|.
    context_abs: f64,
    /// EW mean of the capped context z².
    context_calibration: f64,
    /// Context deviations observed.
    context_observed: u64,
    /// The z of the threshold's tail: where z is capped (derived from the parameters).
    #[serde(skip)]
    cap: f64,
}

impl AnomalyDetector {
    /// A fresh detector.
    ///
    /// # Errors
    /// [`ModelError::InvalidParams`] when `params` fail [`AnomalyParams::validate`].
    pub fn new(params: AnomalyParams) -> Result<Self, ModelError> {
        params.validate()?;
        Ok(Self {
            state: DetectorState {
                params,
                mean_abs_residual: 0.0,
                observed: 0,
                previous_beyond: 0,
                scale_count: 0,
                calibration: 1.0,
                window: 1.0,
                up: 0.0,
                down: 0.0,
                level: FieldMonitor::new(),
                context_abs: 0.0,
                context_calibration: 1.0,
                context_observed: 0,
                cap: gaussian_quantile(1.0 - params.threshold),
            },
        })
    }

    /// The parameters the detector was built with.
    pub fn params(&self) -> &AnomalyParams {
        &self.state.params
    }

    /// σ of the residuals, floored (≈ their standard deviation when Gaussian); `None` before
    /// the first residual.
    pub fn scale(&self) -> Option<f64> {
        (self.state.observed > 0).then(|| self.state.sigma())
    }

    /// Finite residuals observed so far.
    pub fn observed(&self) -> u64 {
        self.state.observed
    }

    /// Score the residual of a reading with value `value` (`context`: the value one season
    /// before, for a seasonal forecast), then learn from it. A non-finite residual (no
    /// prediction) scores 0 and is not flagged; the value still feeds the long-run level.
    pub fn observe(&mut self, residual: f64, value: f64, context: Option<f64>) -> AnomalyVerdict {
        self.state.observe(residual, value, context)
    }

    /// Whether the model should learn the reading behind `verdict` at all: always (a flagged
    /// reading is learnt winsorised, see [`AnomalyVerdict::learn_residual`]).
    pub fn should_learn(&self, _verdict: &AnomalyVerdict) -> bool {
        true
    }
}

impl DetectorState {
    fn sigma(&self) -> f64 {
        let floor = (FLOOR_OF_SPREAD * self.level.sigma_scale())
            .max(FLOOR_OF_LEVEL * self.level.mean().abs())
            .max(f64::MIN_POSITIVE);
        (GAUSSIAN_SCALE * self.mean_abs_residual).max(floor)
    }

    fn observe(&mut self, residual: f64, value: f64, context: Option<f64>) -> AnomalyVerdict {
        let params = self.params;
        let cap = self.cap;
        let warming_up = self.observed < params.warmup;
        let value_ok = value.is_finite();
        let level = if value_ok {
            Some(self.level.score(value, LEVEL_SMOOTHING))
        } else {
            None
        };
        if !residual.is_finite() {
            if let Some(value) = value.is_finite().then_some(value) {
                self.level.learn(value, false);
            }
            return AnomalyVerdict {
                score: 0.0,
                sigma: 0.0,
                anomaly: false,
                kind: None,
                change: false,
                learn_residual: residual,
            };
        }
        let sigma = self.sigma();
        let z = residual / sigma;
        // Two residuals in a row beyond 6σ are not two spikes: on the same side the level
        // moved (a level shift the forecast has not caught up with yet), on either side the
        // errors are now larger (a new regime, or the first errors after a constant start).
        let beyond = z.abs() > SCALE_CLIP_SIGMAS;
        let side = if beyond { z.signum() as i8 } else { 0 };
        let regime = beyond && self.previous_beyond != 0;
        let shifted = regime && self.previous_beyond == side;
        let calibrated = z / self.calibration.sqrt().max(1e-9);
        let capped = calibrated.clamp(-cap, cap);
        self.window += WINDOW_WEIGHT * (capped * capped - self.window);
        self.up = (self.up + capped - ALLOWANCE).max(0.0);
        self.down = (self.down - capped - ALLOWANCE).max(0.0);

        let mut components = [
            (gaussian_tail(calibrated), AnomalyKind::Spike),
            (
                chi2_mean_tail(self.window, 2.0 / WINDOW_WEIGHT - 1.0),
                AnomalyKind::LevelShift,
            ),
            (
                cusum_tail(self.up.max(self.down), ALLOWANCE),
                AnomalyKind::LevelShift,
            ),
            (level.map_or(1.0, |l| l.state), AnomalyKind::Drift),
            (1.0, AnomalyKind::Context),
        ];
        let mut context_z = None;
        if let (Some(reference), true) = (context.filter(|c| c.is_finite()), value_ok) {
            let deviation = value - reference;
            if self.context_observed > 0 {
                let spread = (GAUSSIAN_SCALE * self.context_abs).max(sigma);
                let zc = deviation / spread / self.context_calibration.sqrt().max(1e-9);
                components[4].0 = gaussian_tail(zc);
                context_z = Some((deviation / spread, zc));
            }
            self.context_observed += 1;
            let weight = (1.0 / self.context_observed as f64).max(CONTEXT_MIN_WEIGHT);
            let clipped = deviation
                .abs()
                .min(SCALE_CLIP_SIGMAS * (GAUSSIAN_SCALE * self.context_abs).max(sigma));
            self.context_abs += weight * (clipped - self.context_abs);
        }
        let used = if context.is_some() { 5.0 } else { 4.0 };
        let (p, kind) = components.iter().take(used as usize).copied().fold(
            (1.0f64, AnomalyKind::Spike),
            |best, c| {
                if c.0 < best.0 {
                    c
                } else {
                    best
                }
            },
        );
        let p = (p * used).min(1.0);
        let kind = if shifted {
            AnomalyKind::LevelShift
        } else {
            kind
        };
        let anomaly = !warming_up && score(p) > params.threshold;
        let kind = anomaly.then_some(kind);

        // Learning. One residual beyond 6σ enters σ clipped (one spike does not blind the
        // detector); the second in a row enters as it is and restarts σ's schedule, so that σ
        // is the new regime's within a few readings instead of ~50 readings of flags.
        let magnitude = residual.abs();
        let entering = if beyond && !regime && self.observed >= 1 {
            SCALE_CLIP_SIGMAS * sigma
        } else {
            magnitude
        };
        self.previous_beyond = side;
        self.observed += 1;
        self.scale_count = if regime { 2 } else { self.scale_count + 1 };
        let weight = (1.0 / self.scale_count as f64).max(SCALE_MIN_WEIGHT);
        self.mean_abs_residual += weight * (entering - self.mean_abs_residual);
        // The calibration restarts with σ: z of the old σ says nothing about the new regime.
        let calibration_weight = (1.0 / self.scale_count as f64).max(CALIBRATION_MIN_WEIGHT);
        let z_capped = z.clamp(-cap, cap);
        self.calibration += calibration_weight * (z_capped * z_capped - self.calibration);
        self.calibration = self.calibration.max(1e-6);
        if let Some((raw, _)) = context_z {
            let raw = raw.clamp(-cap, cap);
            self.context_calibration += (1.0 / self.context_observed as f64)
                .max(CALIBRATION_MIN_WEIGHT)
                * (raw * raw - self.context_calibration);
            self.context_calibration = self.context_calibration.max(1e-6);
        }
        if value_ok {
            self.level.learn(value, anomaly);
        }
        match kind {
            Some(AnomalyKind::LevelShift) => {
                self.window = 1.0;
                self.up = 0.0;
                self.down = 0.0;
                // The new level is the value's normal from now on (not a drift to flag next).
                self.level.accept(value);
            }
            Some(AnomalyKind::Drift) => {
                self.level.accept(value);
            }
            _ => {}
        }
        let learn_residual = if anomaly && !params.learn_anomalies {
            residual.clamp(-cap * sigma, cap * sigma)
        } else {
            residual
        };
        AnomalyVerdict {
            score: if warming_up { 0.0 } else { score(p) },
            sigma: if warming_up {
                0.0
            } else {
                z.abs().min(f64::MAX)
            },
            anomaly,
            kind,
            change: matches!(kind, Some(AnomalyKind::LevelShift | AnomalyKind::Drift)),
            learn_residual,
        }
    }
}

impl<'de> Deserialize<'de> for AnomalyDetector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut state = DetectorState::deserialize(deserializer)?;
        let invalid = |what: String| serde::de::Error::custom(ModelError::InvalidState(what));
        state
            .params
            .validate()
            .map_err(|error| invalid(error.to_string()))?;
        state.cap = gaussian_quantile(1.0 - state.params.threshold);
        let numbers = [
            state.mean_abs_residual,
            state.calibration,
            state.window,
            state.up,
            state.down,
            state.context_abs,
            state.context_calibration,
        ];
        if !numbers.iter().all(|v| v.is_finite() && *v >= 0.0) {
            return Err(invalid("a statistic is not a finite number ≥ 0".into()));
        }
        state.level.check().map_err(invalid)?;
        Ok(Self { state })
    }
}
