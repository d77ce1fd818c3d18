//! The simple members of the blend (`trend`, `seasonal`; `last` is one number kept by the
//! parent) and the clock that places future readings in the season.
//!
//! - **`trend`**: damped-trend exponential smoothing (Holt with damping φ) in error-correction
//!   form: with the a priori error `e = y − (ℓ + φb + s)`, `ℓ ← ℓ + φb + α e`,
//!   `b ← φb + αβ e`, and, when a season is configured, an additive seasonal index per slot
//!   `s ← s + γ(1 − α) e` (Holt–Winters). The k-step forecast is `ℓ + (φ + … + φᵏ) b + s(k)`.
//!   On a slot's first visit its index is set so the error is zero (the level then carries on
//!   unchanged), so the first season builds the profile instead of dragging the level around.
//!   Fixed, conservative gains α = 0.1, β = 0.05, γ = 0.05 (a grid search on seasonal series
//!   with trend and noise; larger slope or index gains leave the stable region of additive
//!   Holt–Winters for long seasons): the blend, not this member, copes with series they do not
//!   suit. Should the state ever stop being finite the member restarts from the current value.
//!   One such series is a ramp (a cumulative counter): with φ < 1 the slope only holds up under
//!   a standing error e (`b = αβe / (1 − φ)` at the fixed point), and the level keeps pace
//!   when `φb + αe` = the slope c, so `e = c (1 − φ) / (α(1 − φ) + αβφ)` ≈ 2.9c at the
//!   defaults, worse than `last`; it vanishes only for φ = 1. The `ar` member (a unit root
//!   plus an intercept) is exact on a ramp and the blend follows it.
//! - **`seasonal`**: for [`SeasonSpec::Steps`] the seasonal naive forecast, the value one
//!   season before the target step (a ring of the last `n` values). For
//!   [`SeasonSpec::Duration`] a seasonal profile: an exponentially weighted average of the values
//!   seen in each phase bin (weights `1/visits`, then at least 0.2), memory O(bins) whatever
//!   the sampling.

use ndarray::Array1;
use serde::{Deserialize, Serialize};

use super::SeasonSpec;

/// Level gain α of the `trend` member.
pub(super) const LEVEL_GAIN: f64 = 0.1;
/// Slope gain β of the `trend` member (the slope moves by αβ·e).
pub(super) const SLOPE_GAIN: f64 = 0.05;
/// Seasonal-index gain γ of the `trend` member.
const INDEX_GAIN: f64 = 0.05;
/// Smallest weight of a new value in a duration profile bin.
const PROFILE_MIN_WEIGHT: f64 = 0.2;
/// Smallest weight of a new interval in the mean interval between readings.
const INTERVAL_MIN_WEIGHT: f64 = 0.05;

/// The seasonal state shared by the `seasonal` and `trend` members, laid out by slot: a
/// position in the ring ([`SeasonSpec::Steps`]) or a phase bin ([`SeasonSpec::Duration`]).
/// All arrays are empty without a season. Field order is the postcard format: append only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Season {
    /// Steps: the last `n` values (ring); Duration: EW average value per bin.
    pub(super) values: Array1<f64>,
    /// Seasonal indices of the `trend` member (Holt–Winters), same layout.
    pub(super) indices: Array1<f64>,
    /// Duration: values seen per bin (saturating); Steps: empty.
    visits: Array1<u32>,
    /// Steps: the slot the next value goes to (holding the value one season before it).
    head: usize,
    /// Steps: slots written so far, at most `n`.
    filled: usize,
}

impl Season {
    pub(super) fn new(spec: Option<SeasonSpec>) -> Self {
        let (slots, bins) = match spec {
            None => (0, 0),
            Some(SeasonSpec::Steps(steps)) => (steps, 0),
            Some(SeasonSpec::Duration { bins, .. }) => (bins, bins),
        };
        Self {
            values: Array1::zeros(slots),
            indices: Array1::zeros(slots),
            visits: Array1::zeros(bins),
            head: 0,
            filled: 0,
        }
    }

    /// Whether `slot` has held a value.
    pub(super) fn seen(&self, slot: usize) -> bool {
        if self.visits.is_empty() {
            self.filled == self.values.len() || slot < self.filled
        } else {
            self.visits.get(slot).is_some_and(|&visits| visits > 0)
        }
    }

    /// The slot of the value `steps` readings after the last one, if it can be placed.
    pub(super) fn slot_ahead(
        &self,
        spec: Option<SeasonSpec>,
        clock: &Clock,
        steps: usize,
    ) -> Option<usize> {
        match spec? {
            SeasonSpec::Steps(n) => Some((self.head + (steps - 1) % n) % n),
            SeasonSpec::Duration { period_ms, bins } => {
                Some(phase_bin(clock.time_ahead(steps)?, period_ms, bins))
            }
        }
    }

    /// The slot of a reading at `time_ms` that is about to be learnt.
    pub(super) fn slot_at(&self, spec: Option<SeasonSpec>, time_ms: i64) -> Option<usize> {
        match spec? {
            SeasonSpec::Steps(_) => Some(self.head),
            SeasonSpec::Duration { period_ms, bins } => Some(phase_bin(time_ms, period_ms, bins)),
        }
    }

    /// The `seasonal` member's forecast for `slot`: `None` for a slot never seen.
    pub(super) fn seasonal_forecast(&self, slot: Option<usize>) -> Option<f64> {
        let slot = slot?;
        if self.seen(slot) {
            self.values.get(slot).copied()
        } else {
            None
        }
    }

    /// Record the value `y` of the reading in `slot` (after the `trend` member has used the
    /// slot's seen state).
    pub(super) fn record(&mut self, slot: Option<usize>, y: f64) {
        let Some(slot) = slot else { return };
        if self.visits.is_empty() {
            if let Some(value) = self.values.get_mut(slot) {
                *value = y;
            }
            let n = self.values.len();
            if n > 0 {
                self.head = (slot + 1) % n;
                self.filled = (self.filled + 1).min(n);
            }
        } else if let (Some(value), Some(visits)) =
            (self.values.get_mut(slot), self.visits.get_mut(slot))
        {
            *visits = visits.saturating_add(1);
            let weight = (1.0 / f64::from(*visits)).max(PROFILE_MIN_WEIGHT);
            *value += weight * (y - *value);
        }
    }

    /// Steps: move the ring on by an imputed value (no profile update for a duration season:
    /// time alone places its readings).
    pub(super) fn skip(&mut self, slot: Option<usize>, value: f64) {
        if self.visits.is_empty() {
            self.record(slot, value);
        }
    }

    /// Steps: overwrite the most recent `raw.len()` values (most recent first) with `raw`.
    pub(super) fn restore_recent(&mut self, raw: &[f64]) {
        let n = self.values.len();
        if !self.visits.is_empty() || n == 0 {
            return;
        }
        for (back, &value) in raw.iter().enumerate().take(self.filled) {
            let slot = (self.head + n - 1 - back % n) % n;
            if let Some(entry) = self.values.get_mut(slot) {
                *entry = value;
            }
        }
    }

    /// Whether a deserialised season fits `spec`; the error says what does not.
    pub(super) fn check(&self, spec: Option<SeasonSpec>) -> Result<(), String> {
        let (slots, bins) = match spec {
            None => (0, 0),
            Some(SeasonSpec::Steps(steps)) => (steps, 0),
            Some(SeasonSpec::Duration { bins, .. }) => (bins, bins),
        };
        if self.values.len() != slots || self.indices.len() != slots || self.visits.len() != bins {
            return Err(format!(
                "season has {}/{}/{} slots, expected {slots}/{slots}/{bins}",
                self.values.len(),
                self.indices.len(),
                self.visits.len()
            ));
        }
        if (slots > 0 && self.head >= slots) || self.filled > slots {
            return Err(format!(
                "season position {} / filled {} out of {slots} slots",
                self.head, self.filled
            ));
        }
        if !self
            .values
            .iter()
            .chain(self.indices.iter())
            .all(|value| value.is_finite())
        {
            return Err("a seasonal number is not finite".into());
        }
        Ok(())
    }
}

/// The phase bin of `time_ms`: `⌊(t mod period) / period · bins⌋`, in exact integer arithmetic.
fn phase_bin(time_ms: i64, period_ms: u64, bins: usize) -> usize {
    let period = i128::from(period_ms).max(1);
    let phase = i128::from(time_ms).rem_euclid(period);
    let bin = phase * bins as i128 / period;
    usize::try_from(bin)
        .unwrap_or(0)
        .min(bins.saturating_sub(1))
}

/// The `trend` member: damped Holt (Holt–Winters with the seasonal indices of a [`Season`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(super) struct Trend {
    /// Level ℓ.
    pub(super) level: f64,
    /// Slope b per reading.
    pub(super) slope: f64,
}

impl Trend {
    /// The forecast `ℓ + damped·b + s(slot)`, where `damped = φ + … + φᵏ`. With a season it is
    /// `None` for a slot not seen yet.
    pub(super) fn forecast(
        &self,
        season: &Season,
        seasonal: bool,
        slot: Option<usize>,
        damped: f64,
    ) -> Option<f64> {
        let base = self.level + damped * self.slope;
        if !seasonal {
            return Some(base);
        }
        let slot = slot?;
        if !season.seen(slot) {
            return None;
        }
        Some(base + season.indices.get(slot).copied().unwrap_or(0.0))
    }

    /// Learn `y` (the first value when `first`). `shift` re-anchors the level on `y`: the
    /// blend has recognised a level shift.
    pub(super) fn learn(
        &mut self,
        season: &mut Season,
        slot: Option<usize>,
        y: f64,
        damping: f64,
        first: bool,
        shift: bool,
    ) {
        if first {
            self.level = y;
            self.slope = 0.0;
            if let Some(index) = slot.and_then(|slot| season.indices.get_mut(slot)) {
                *index = 0.0;
            }
            return;
        }
        let predicted_level = self.level + damping * self.slope;
        let seen = slot.is_some_and(|slot| season.seen(slot));
        let index = slot.and_then(|slot| season.indices.get_mut(slot));
        match index {
            Some(index) if !seen => {
                // First visit of the slot: it takes the deviation, the level carries on.
                *index = y - predicted_level;
                self.level = predicted_level;
                self.slope *= damping;
            }
            Some(index) => {
                let error = y - (predicted_level + *index);
                if shift {
                    self.level = y - *index;
                } else {
                    self.level = predicted_level + LEVEL_GAIN * error;
                    *index += INDEX_GAIN * (1.0 - LEVEL_GAIN) * error;
                }
                self.slope = damping * self.slope + LEVEL_GAIN * SLOPE_GAIN * error;
            }
            None => {
                let error = y - predicted_level;
                self.level = if shift {
                    y
                } else {
                    predicted_level + LEVEL_GAIN * error
                };
                self.slope = damping * self.slope + LEVEL_GAIN * SLOPE_GAIN * error;
            }
        }
        let index_finite = slot
            .and_then(|slot| season.indices.get(slot))
            .is_none_or(|index| index.is_finite());
        if !(self.level.is_finite() && self.slope.is_finite() && index_finite) {
            // Cannot happen with the gains above and |y| ≤ 1e100; never let it reach a forecast.
            self.level = y;
            self.slope = 0.0;
            if let Some(index) = slot.and_then(|slot| season.indices.get_mut(slot)) {
                *index = 0.0;
            }
        }
    }

    /// Move on by one reading without learning from it.
    pub(super) fn skip(&mut self, damping: f64) {
        self.level += damping * self.slope;
        self.slope *= damping;
    }
}

/// Event time of the readings and the typical interval between them, to place the next
/// readings of a duration season.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(super) struct Clock {
    /// The latest reading time seen (ms).
    pub(super) last_time_ms: i64,
    /// EW mean of the positive intervals between readings (ms); weights `1/n`, then ≥ 0.05.
    pub(super) mean_interval_ms: f64,
    /// Positive intervals folded into the mean.
    intervals: u64,
}

impl Clock {
    pub(super) fn new() -> Self {
        Self {
            last_time_ms: 0,
            mean_interval_ms: 0.0,
            intervals: 0,
        }
    }

    /// Fold in a reading at `time_ms` (`first` for the first reading). Readings out of order or
    /// at the same time do not count as intervals.
    pub(super) fn observe(&mut self, time_ms: i64, first: bool) {
        if first {
            self.last_time_ms = time_ms;
            return;
        }
        let interval = time_ms.saturating_sub(self.last_time_ms);
        if interval > 0 {
            self.intervals += 1;
            let weight = (1.0 / self.intervals as f64).max(INTERVAL_MIN_WEIGHT);
            self.mean_interval_ms += weight * (interval as f64 - self.mean_interval_ms);
            self.last_time_ms = time_ms;
        }
    }

    /// The expected time of the reading `steps` after the last one; `None` before the first
    /// interval.
    pub(super) fn time_ahead(&self, steps: usize) -> Option<i64> {
        if self.intervals == 0 {
            return None;
        }
        let ahead = (steps as f64 * self.mean_interval_ms).round();
        // `as` saturates for out-of-range floats.
        Some(self.last_time_ms.saturating_add(ahead as i64))
    }

    /// A time for a reading that comes without one: one typical interval (at least 1 ms) after
    /// the last.
    pub(super) fn synthetic_next(&self, first: bool) -> i64 {
        if first {
            return 0;
        }
        let step = self.mean_interval_ms.round().max(1.0);
        self.last_time_ms.saturating_add(step as i64)
    }

    pub(super) fn check(&self) -> Result<(), String> {
        if !(self.mean_interval_ms.is_finite() && self.mean_interval_ms >= 0.0) {
            return Err(format!("mean interval {} ms", self.mean_interval_ms));
        }
        Ok(())
    }
}
