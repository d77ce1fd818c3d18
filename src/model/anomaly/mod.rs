//! Per-key anomaly detection: calibrated scores that mean the same rarity on every key.
//!
//! - [`AnomalyDetector`] (`residual`): `[pipelines.anomaly]` of a forecast or regression
//!   pipeline — spikes, level shifts, drifts and seasonal context of one predicted field,
//!   from its prediction residuals and its long-run level. Flags *events*: a level shift is
//!   flagged once, then learnt.
//! - [`StateDetector`] (`state`): `kind = "anomaly"` — whether a key with several fields is in
//!   its normal *state* (flagged for as long as it is not), and the change points of its
//!   fields.
//!
//! Both turn every statistic into a tail probability `p` under the key's own normal behaviour
//! (`calibration`), built from per-field baselines that cannot collapse and keep learning
//! through anomalies (`monitor`); `anomaly_score = 1 − p`.

mod calibration;
mod monitor;
mod residual;
mod state;

pub use calibration::gaussian_tail;

/// The ranges of the anomaly detectors' parameters (the config loader reads the keys with
/// them).
pub mod ranges {
    use crate::model::param::{IntRange, Range};

    /// `threshold`: the rarity of a flagged reading.
    pub const THRESHOLD: Range = Range::new(
        "threshold",
        "between 0 and 1, exclusive: a rarity such as 0.9999",
        |t| t > 0.0 && t < 1.0,
    );
    /// `smoothing`: readings the state detector's score is smoothed over.
    pub const SMOOTHING: IntRange = IntRange::new("smoothing", 1, 10_000);
}
pub use residual::{AnomalyDetector, AnomalyParams, AnomalyVerdict};
pub use state::{StateDetector, StateParams, StateVerdict, MAX_STATE_FIELDS};

use serde::{Deserialize, Serialize};

/// What an anomaly is about (`anomaly_kind` in the output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnomalyKind {
    /// One reading far from its prediction.
    Spike,
    /// The level changed: a run of large errors, a persistent bias, or (for a state) a change
    /// point at the onset.
    LevelShift,
    /// The level moved away from its long-run normal gradually.
    Drift,
    /// Unlike the same phase of the season (a holiday on a weekday).
    Context,
}

impl AnomalyKind {
    /// The name in output messages.
    pub fn name(&self) -> &'static str {
        match self {
            AnomalyKind::Spike => "spike",
            AnomalyKind::LevelShift => "level_shift",
            AnomalyKind::Drift => "drift",
            AnomalyKind::Context => "context",
        }
    }
}

#[cfg(test)]
mod tests;
