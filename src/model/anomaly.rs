//! Per-key anomaly detection on forecast residuals.
//!
//! The caller forecasts a reading, then hands the residual `observed − forecast` (the forecast
//! made *before* the reading was seen) to [`AnomalyDetector::observe`]. The score is the
//! residual in units of a robust scale of past residuals; a reading is flagged when the score
//! exceeds [`AnomalyParams::threshold`].
//!
//! # Robust scale
//! The scale is `√(π/2) · E|r|`, an exponentially weighted mean absolute residual (weights
//! `1/n`, then at least 1/50: a memory of about 50 readings) scaled to equal the standard
//! deviation for Gaussian residuals, so the threshold reads as "σ". Mean absolute deviation
//! rather than variance: one large residual moves it linearly, not quadratically.
//!
//! # Flagged residuals update the scale, clipped
//! After the first 10 residuals every residual enters the scale clipped to
//! `threshold · scale`. A spike therefore raises the scale by at most
//! `(threshold·√(2/π) − 1)/50 ≈ 4 %` (default threshold), so the next spike a few readings
//! later is still flagged. Leaving flagged residuals out entirely would be more robust still,
//! but a real change of regime (a noisier sensor) would then be flagged for ever: with clipped
//! updates the scale grows by up to ~4 % per reading and adapts within a few dozen readings.
//!
//! The detector does not decide whether the model learns the reading:
//! [`AnomalyDetector::should_learn`] answers that from [`AnomalyParams::learn_anomalies`] (a
//! forecaster that skips a reading should be moved on with `Forecaster::skip_at`, so that a
//! step season stays in phase).

use serde::{Deserialize, Deserializer, Serialize};

use super::ModelError;

/// `√(π/2)`: standard deviation / mean absolute deviation of a normal distribution.
const GAUSSIAN_SCALE: f64 = 1.253_314_137_315_500_3;
/// Smallest weight of a new residual in the mean absolute residual (memory ≈ 50 readings).
const SCALE_MIN_WEIGHT: f64 = 0.02;
/// Residuals seen before the clipping of residuals (at `threshold · scale`) starts.
const CLIP_WARMUP: u64 = 10;

/// Parameters of an [`AnomalyDetector`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AnomalyParams {
    /// A reading is flagged when |residual| > `threshold` · robust scale (a finite number > 0,
    /// default 4.0; the scale equals σ for Gaussian residuals).
    pub threshold: f64,
    /// Whether the model should still learn flagged readings (default `false`: an anomaly is
    /// kept out of the model); see [`AnomalyDetector::should_learn`].
    pub learn_anomalies: bool,
    /// Residuals observed before flags are raised (default 30); the scale is learnt meanwhile.
    pub warmup: u64,
}

impl Default for AnomalyParams {
    fn default() -> Self {
        Self {
            threshold: 4.0,
            learn_anomalies: false,
            warmup: 30,
        }
    }
}

impl AnomalyParams {
    /// Check every parameter's range.
    ///
    /// # Errors
    /// [`ModelError::InvalidParams`] naming every parameter out of range, its value and the
    /// accepted range.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.threshold.is_finite() && self.threshold > 0.0 {
            Ok(())
        } else {
            Err(ModelError::InvalidParams(format!(
                "threshold must be a finite number > 0 (got {})",
                self.threshold
            )))
        }
    }
}

/// The verdict on one residual.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalyVerdict {
    /// |residual| / robust scale; 0 during the warm-up and for a non-finite residual. Finite
    /// (at most `f64::MAX`, reached when the scale is 0 and the residual is not).
    pub score: f64,
    /// `score > threshold`.
    pub anomaly: bool,
}

/// Anomaly detector of one key: a robust running scale of forecast residuals; see the
/// [module documentation](self).
///
/// The struct is the whole state. It serialises with serde; deserialising checks the
/// parameters and that the scale is a finite number ≥ 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct AnomalyDetector {
    state: DetectorState,
}

/// The serialised fields of an [`AnomalyDetector`]. Field order is the postcard format:
/// append only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DetectorState {
    params: AnomalyParams,
    /// EW mean of the (clipped) absolute residuals.
    mean_abs_residual: f64,
    /// Finite residuals observed.
    observed: u64,
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
            },
        })
    }

    /// The parameters the detector was built with.
    pub fn params(&self) -> &AnomalyParams {
        &self.state.params
    }

    /// The robust scale of the residuals (≈ σ for Gaussian residuals); `None` before the first
    /// residual.
    pub fn scale(&self) -> Option<f64> {
        (self.state.observed > 0).then_some(GAUSSIAN_SCALE * self.state.mean_abs_residual)
    }

    /// Finite residuals observed so far.
    pub fn observed(&self) -> u64 {
        self.state.observed
    }

    /// Score the residual (observed − prediction made before it): score = |residual| / robust
    /// scale (0 during the warm-up), flagged when score > threshold. Then fold the residual,
    /// clipped to `threshold · scale`, into the scale (see the module documentation for why
    /// flagged residuals count, clipped). A non-finite residual (no prediction) scores 0, is
    /// not flagged and leaves the detector unchanged.
    pub fn observe(&mut self, residual: f64) -> AnomalyVerdict {
        let state = &mut self.state;
        if !residual.is_finite() {
            return AnomalyVerdict {
                score: 0.0,
                anomaly: false,
            };
        }
        let threshold = state.params.threshold;
        let magnitude = residual.abs();
        let scale = GAUSSIAN_SCALE * state.mean_abs_residual;
        let score = if state.observed < state.params.warmup || magnitude == 0.0 {
            0.0
        } else {
            (magnitude / scale).min(f64::MAX)
        };
        let clipped = if state.observed >= CLIP_WARMUP {
            magnitude.min(threshold * scale)
        } else {
            magnitude
        };
        state.observed += 1;
        let weight = (1.0 / state.observed as f64).max(SCALE_MIN_WEIGHT);
        state.mean_abs_residual += weight * (clipped - state.mean_abs_residual);
        AnomalyVerdict {
            score,
            anomaly: score > threshold,
        }
    }

    /// Whether the model should learn the reading behind `verdict`: always unless it was
    /// flagged and [`AnomalyParams::learn_anomalies`] is off.
    pub fn should_learn(&self, verdict: &AnomalyVerdict) -> bool {
        !verdict.anomaly || self.state.params.learn_anomalies
    }
}

impl<'de> Deserialize<'de> for AnomalyDetector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let state = DetectorState::deserialize(deserializer)?;
        state
            .params
            .validate()
            .map_err(|error| ModelError::InvalidState(error.to_string()))
            .map_err(serde::de::Error::custom)?;
        if !(state.mean_abs_residual.is_finite() && state.mean_abs_residual >= 0.0) {
            return Err(serde::de::Error::custom(ModelError::InvalidState(format!(
                "mean absolute residual {} is not a finite number ≥ 0",
                state.mean_abs_residual
            ))));
        }
        Ok(Self { state })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::forecast::{ForecastParams, Forecaster, SeasonSpec, Seasons};
    use crate::model::OnlineModel;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn gaussian(rng: &mut SmallRng) -> f64 {
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn detector() -> AnomalyDetector {
        AnomalyDetector::new(AnomalyParams::default()).expect("default params are valid")
    }

    const NOISE: f64 = 0.5;

    /// 20 + 5 sin(2πt/48) + N(0, 0.5²).
    fn seasonal(t: usize, rng: &mut SmallRng) -> f64 {
        let phase = std::f64::consts::TAU * t as f64 / 48.0;
        20.0 + 5.0 * phase.sin() + NOISE * gaussian(rng)
    }

    #[test]
    fn spikes_are_flagged_with_high_recall_and_few_false_positives() {
        for seed in [1, 2, 3] {
            let mut rng = SmallRng::seed_from_u64(seed);
            let params = ForecastParams {
                seasons: Seasons::one(SeasonSpec::Steps(48)),
                ..ForecastParams::default()
            };
            let mut model = Forecaster::new(params).expect("valid");
            let mut detector = detector();
            let (mut spikes, mut caught, mut normal, mut false_alarms) = (0, 0, 0, 0);
            for t in 0..20_000 {
                let mut y = seasonal(t, &mut rng);
                let spike = rng.random::<f64>() < 0.01;
                if spike {
                    let size = rng.random_range(6.0..10.0) * NOISE;
                    y += if rng.random::<bool>() { size } else { -size };
                }
                let residual = model.predict_one(&[]).map_or(f64::NAN, |p| y - p.value);
                let verdict = detector.observe(residual);
                // Scored after the forecaster's and the detector's warm-up.
                if t >= 500 {
                    if spike {
                        spikes += 1;
                        caught += usize::from(verdict.anomaly);
                    } else {
                        normal += 1;
                        false_alarms += usize::from(verdict.anomaly);
                    }
                }
                if detector.should_learn(&verdict) {
                    model.learn_one(&[], y);
                } else {
                    model.skip();
                }
            }
            let recall = caught as f64 / spikes as f64;
            let false_positive_rate = false_alarms as f64 / normal as f64;
            assert!(spikes > 150, "{spikes}");
            // Measured (seeds 1–3): recall 0.995–1.0, false positive rate ≤ 5.2e-5.
            assert!(
                recall >= 0.9,
                "seed {seed}: recall {recall} ({caught}/{spikes})"
            );
            assert!(
                false_positive_rate <= 0.01,
                "seed {seed}: false positive rate {false_positive_rate}"
            );
        }
    }

    #[test]
    fn one_spike_does_not_blind_the_detector() {
        let mut rng = SmallRng::seed_from_u64(4);
        let mut detector = detector();
        for _ in 0..200 {
            detector.observe(gaussian(&mut rng));
        }
        let scale_before = detector.scale().expect("observed");
        let first = detector.observe(1000.0);
        assert!(first.anomaly, "{first:?}");
        for _ in 0..4 {
            let verdict = detector.observe(gaussian(&mut rng) * 0.1);
            assert!(!verdict.anomaly, "{verdict:?}");
        }
        // A 6σ residual five readings after a 1000σ spike is still flagged.
        let second = detector.observe(-6.0);
        assert!(second.anomaly, "{second:?}");
        let scale_after = detector.scale().expect("observed");
        assert!(
            scale_after <= 1.1 * scale_before,
            "{scale_after} vs {scale_before}"
        );
    }

    #[test]
    fn scale_matches_gaussian_sigma_and_adapts_to_a_noisier_regime() {
        let mut rng = SmallRng::seed_from_u64(5);
        let mut detector = detector();
        let mut flagged = 0;
        for _ in 0..5000 {
            flagged += usize::from(detector.observe(2.0 * gaussian(&mut rng)).anomaly);
        }
        let scale = detector.scale().expect("observed");
        // EW estimate over ~50 readings: within 25 % of σ = 2.
        assert!((scale - 2.0).abs() < 0.5, "{scale}");
        // P(|N| > 4) ≈ 6e-5.
        assert!(flagged <= 5, "{flagged}");
        // Noise ten times larger: flagged at first, then the scale catches up.
        let mut late_flags = 0;
        for step in 0..1000 {
            let verdict = detector.observe(20.0 * gaussian(&mut rng));
            if step >= 200 {
                late_flags += usize::from(verdict.anomaly);
            }
        }
        assert!(late_flags <= 5, "{late_flags}");
        let scale = detector.scale().expect("observed");
        assert!((scale - 20.0).abs() < 5.0, "{scale}");
    }

    #[test]
    fn warm_up_scores_zero_and_raises_no_flag() {
        let mut detector = detector();
        for i in 0..30 {
            let verdict = detector.observe(if i % 2 == 0 { 1.0 } else { 1000.0 });
            assert_eq!(
                verdict,
                AnomalyVerdict {
                    score: 0.0,
                    anomaly: false
                }
            );
        }
        assert_eq!(detector.observed(), 30);
        assert!(detector.observe(1.0e6).anomaly);
    }

    #[test]
    fn non_finite_residual_is_ignored() {
        let mut detector = detector();
        for i in 0..100 {
            detector.observe((i % 7) as f64 - 3.0);
        }
        let before = detector.clone();
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let verdict = detector.observe(bad);
            assert!(!verdict.anomaly && verdict.score == 0.0);
        }
        assert_eq!(detector, before);
    }

    #[test]
    fn zero_scale_gives_a_finite_score() {
        let mut detector = detector();
        for _ in 0..100 {
            assert!(!detector.observe(0.0).anomaly);
        }
        let verdict = detector.observe(1e-3);
        assert!(verdict.anomaly && verdict.score.is_finite(), "{verdict:?}");
    }

    #[test]
    fn should_learn_follows_learn_anomalies() {
        let flagged = AnomalyVerdict {
            score: 9.0,
            anomaly: true,
        };
        let normal = AnomalyVerdict {
            score: 1.0,
            anomaly: false,
        };
        let skipping = detector();
        assert!(!skipping.should_learn(&flagged));
        assert!(skipping.should_learn(&normal));
        let learning = AnomalyDetector::new(AnomalyParams {
            learn_anomalies: true,
            ..AnomalyParams::default()
        })
        .expect("valid");
        assert!(learning.should_learn(&flagged));
    }

    #[test]
    fn detector_state_round_trips_bit_for_bit() {
        let mut rng = SmallRng::seed_from_u64(6);
        let mut original = detector();
        for _ in 0..500 {
            original.observe(gaussian(&mut rng));
        }
        let bytes = postcard::to_stdvec(&original).expect("serialises");
        let mut restored: AnomalyDetector = postcard::from_bytes(&bytes).expect("deserialises");
        assert_eq!(restored, original);
        for _ in 0..500 {
            let residual = 3.0 * gaussian(&mut rng);
            let (a, b) = (original.observe(residual), restored.observe(residual));
            assert_eq!(a.score.to_bits(), b.score.to_bits());
            assert_eq!(a.anomaly, b.anomaly);
        }
        assert_eq!(restored, original);
    }

    #[test]
    fn corrupt_detector_state_is_rejected() {
        let mut model = detector();
        for i in 0..50 {
            model.observe(i as f64);
        }
        let rejected = |bad: &AnomalyDetector| {
            let bytes = postcard::to_stdvec(bad).expect("serialises");
            postcard::from_bytes::<AnomalyDetector>(&bytes).is_err()
        };
        for bad_scale in [f64::NAN, -1.0, f64::INFINITY] {
            let mut bad = model.clone();
            bad.state.mean_abs_residual = bad_scale;
            assert!(rejected(&bad));
        }
        let mut bad = model.clone();
        bad.state.params.threshold = 0.0;
        assert!(rejected(&bad));
        let bytes = postcard::to_stdvec(&model).expect("serialises");
        assert!(postcard::from_bytes::<AnomalyDetector>(&bytes[..bytes.len() - 3]).is_err());
    }

    #[test]
    fn params_validation_rejects_each_bad_threshold() {
        assert!(AnomalyParams::default().validate().is_ok());
        for threshold in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let params = AnomalyParams {
                threshold,
                ..AnomalyParams::default()
            };
            match AnomalyDetector::new(params) {
                Err(ModelError::InvalidParams(message)) => {
                    assert!(message.starts_with("threshold"), "{message}")
                }
                other => panic!("{params:?} accepted: {other:?}"),
            }
        }
    }
}
