//! `kind = "anomaly"`: is a key with several fields (a pump's vibration, current, pressure,
//! temperatures, flow) in its normal state, and did its state just change?
//!
//! Each field has a [`FieldMonitor`]. The key's **state probability** is the smallest of its
//! fields' state probabilities times the number of fields (Bonferroni: the chance that *some*
//! field looks this unusual by chance), and `anomaly_score = 1 − p`. Taking the most unusual
//! field rather than a distance over all fields (Hotelling's T²) keeps the fields that carry
//! no signal from drowning the one that does: on SKAB a valve closure shows in the flow rate
//! (and a rotor imbalance in the vibration) while current, pressure and voltage stay noise;
//! T² over all eight fields had an F1 of 0.73, the most unusual field 0.80 (BENCHMARKS.md).
//!
//! The key is **anomalous** from the reading whose score exceeds `threshold` until its state
//! probability has been above 100 × (1 − `threshold`) for [`HOLD`] readings in a row (a state,
//! with hysteresis, not a flicker). A **change** is reported at the reading where a field's
//! change probability (times the number of fields) falls below 1 − `threshold`; that field then
//! starts a new segment. The first `warmup` readings are learnt and never flagged.
//!
//! The kind of an anomaly is `level_shift` when a change was reported within the smoothing
//! window before it began, else `drift` (a state that built up); `anomaly_field` is the field
//! with the smallest state probability.

use serde::{Deserialize, Deserializer, Serialize};

use super::calibration::score;
use super::monitor::{FieldMonitor, SETTLE};
use super::AnomalyKind;
use crate::model::ModelError;

/// Readings with a state probability above 100 × (1 − threshold) before an anomaly ends.
pub const HOLD: u32 = 10;
/// How much more likely than the threshold the state must be for a reading to count
/// towards the end of an anomaly.
const RELEASE_FACTOR: f64 = 100.0;
/// Largest number of fields.
pub const MAX_STATE_FIELDS: usize = 64;

/// Parameters of a [`StateDetector`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StateParams {
    /// `anomaly_score` above which a reading is anomalous and a change is reported, in (0, 1)
    /// (default 0.9999: one reading in ten thousand of a key in its normal state).
    pub threshold: f64,
    /// Readings learnt before anything is flagged (default 300): the key's normal.
    pub warmup: u64,
    /// Readings the deviation from the baseline is averaged over (default 5).
    pub smoothing: u32,
}

impl Default for StateParams {
    fn default() -> Self {
        Self {
            threshold: 0.9999,
            warmup: 300,
            smoothing: 5,
        }
    }
}

impl StateParams {
    /// Check every parameter's range.
    ///
    /// # Errors
    /// [`ModelError::InvalidParams`] naming every parameter out of range.
    pub fn validate(&self) -> Result<(), ModelError> {
        let errors: Vec<_> = [
            super::ranges::THRESHOLD.check(self.threshold),
            super::ranges::SMOOTHING.check(self.smoothing),
        ]
        .into_iter()
        .filter_map(Result::err)
        .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ModelError::OutOfRange(errors))
        }
    }
}

/// The verdict on one reading of a [`StateDetector`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StateVerdict {
    /// The key is in an anomalous state.
    pub anomaly: bool,
    /// `1 − p` of the state (see the module documentation); 0 while warming up.
    pub score: f64,
    /// The largest deviation of a field from its baseline, in its robust standard deviations.
    pub sigma: f64,
    /// What kind of anomaly the key is in (while `anomaly`).
    pub kind: Option<AnomalyKind>,
    /// The index of the most unusual field (while `anomaly`).
    pub field: Option<usize>,
    /// A change point is reported at this reading.
    pub change: bool,
    /// Still learning the key's normal (`warmup` readings).
    pub warming_up: bool,
}

/// Multivariate state and change detector of one key; see the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct StateDetector {
    state: DetectorState,
}

/// The serialised fields. Field order is the postcard format: append only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DetectorState {
    params: StateParams,
    fields: Vec<FieldMonitor>,
    /// Readings seen.
    seen: u64,
    /// The key is anomalous.
    flagged: bool,
    /// Consecutive readings counting towards the end of the anomaly.
    calm: u32,
    /// Readings since the last reported change (saturating).
    since_change: u32,
    /// The kind of the current anomaly.
    kind: Option<AnomalyKind>,
}

impl StateDetector {
    /// A fresh detector of `fields` fields.
    ///
    /// # Errors
    /// [`ModelError::InvalidParams`] when `params` fail [`StateParams::validate`] or `fields`
    /// is not in 1..=64.
    pub fn new(params: StateParams, fields: usize) -> Result<Self, ModelError> {
        params.validate()?;
        if !(1..=MAX_STATE_FIELDS).contains(&fields) {
            return Err(ModelError::InvalidParams(format!(
                "an anomaly model needs 1 to {MAX_STATE_FIELDS} features (got {fields})"
            )));
        }
        Ok(Self {
            state: DetectorState {
                params,
                fields: vec![FieldMonitor::new(); fields],
                seen: 0,
                flagged: false,
                calm: 0,
                since_change: u32::MAX,
                kind: None,
            },
        })
    }

    /// The parameters.
    pub fn params(&self) -> &StateParams {
        &self.state.params
    }

    /// Number of fields.
    pub fn dim(&self) -> usize {
        self.state.fields.len()
    }

    /// Readings seen.
    pub fn updates(&self) -> u64 {
        self.state.seen
    }

    /// Whether the key is anomalous now.
    pub fn anomalous(&self) -> bool {
        self.state.flagged
    }

    /// Each field's baseline mean (what is normal for it).
    pub fn baselines(&self) -> impl Iterator<Item = f64> + '_ {
        self.state.fields.iter().map(FieldMonitor::mean)
    }

    /// Score one reading (`values` in field order; a non-finite value is neither scored nor
    /// learnt), then learn it.
    pub fn observe(&mut self, values: &[f64]) -> StateVerdict {
        let state = &mut self.state;
        let params = state.params;
        let fields = state.fields.len() as f64;
        let smoothing = f64::from(params.smoothing);
        let warming_up = state.seen < params.warmup;
        let (mut state_p, mut change_p) = (1.0f64, 1.0f64);
        let (mut worst, mut worst_change, mut sigma) = (None, None, 0.0f64);
        for (index, (monitor, &x)) in state.fields.iter_mut().zip(values).enumerate() {
            if !x.is_finite() {
                continue;
            }
            let reading = monitor.score(x, smoothing);
            sigma = sigma.max(reading.sigma.abs());
            if reading.state < state_p {
                state_p = reading.state;
                worst = Some(index);
            }
            if reading.change < change_p {
                change_p = reading.change;
                worst_change = Some(index);
            }
        }
        state_p = (state_p * fields).min(1.0);
        change_p = (change_p * fields).min(1.0);
        let alarm = 1.0 - params.threshold;
        // During the warm-up changes restart the segments as usual, silently: the segments the
        // warm-up ends with are settled, not a CUSUM wound up by the warm-up's own changes.
        let restart = change_p < alarm;
        let mut change = false;
        if !warming_up {
            change = restart;
            if change {
                state.since_change = 0;
            } else {
                state.since_change = state.since_change.saturating_add(1);
            }
            if state.flagged {
                state.calm = if state_p > RELEASE_FACTOR * alarm {
                    state.calm + 1
                } else {
                    0
                };
                if state.calm >= HOLD {
                    state.flagged = false;
                    state.calm = 0;
                    state.kind = None;
                }
            } else if state_p < alarm
                || (state.since_change <= SETTLE && state_p < RELEASE_FACTOR * alarm)
            {
                state.flagged = true;
                state.calm = 0;
                state.kind = Some(if state.since_change <= params.smoothing.max(1) * 2 {
                    AnomalyKind::LevelShift
                } else {
                    AnomalyKind::Drift
                });
            }
        }
        let flagged = state.flagged;
        for (index, (monitor, &x)) in state.fields.iter_mut().zip(values).enumerate() {
            if !x.is_finite() {
                continue;
            }
            monitor.learn(x, flagged);
            if restart
                && (Some(index) == worst_change || monitor.change_probability() * fields < alarm)
            {
                monitor.restart_segment(x);
            }
        }
        state.seen += 1;
        StateVerdict {
            anomaly: flagged,
            score: if warming_up { 0.0 } else { score(state_p) },
            sigma,
            kind: state.kind.filter(|_| flagged),
            field: worst.filter(|_| flagged),
            change,
            warming_up,
        }
    }
}

impl<'de> Deserialize<'de> for StateDetector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let state = DetectorState::deserialize(deserializer)?;
        let invalid = |what: String| serde::de::Error::custom(ModelError::InvalidState(what));
        state
            .params
            .validate()
            .map_err(|error| invalid(error.to_string()))?;
        if !(1..=MAX_STATE_FIELDS).contains(&state.fields.len()) {
            return Err(invalid(format!("{} fields", state.fields.len())));
        }
        for monitor in &state.fields {
            monitor.check().map_err(invalid)?;
        }
        Ok(Self { state })
    }
}
