//! The simple members of the blend (`trend`, `drift`, the duration `seasonal` profile; `last`
//! is one number kept by the parent and the step `seasonal` member reads the `ar` ring) and the
//! clock that places future readings in a season.
//!
//! - **`trend`**: damped-trend exponential smoothing (Holt with damping φ) in error-correction
//!   form: with the a priori error `e = z − (ℓ + φb + s)`, `ℓ ← ℓ + φb + α e`,
//!   `b ← φb + αβ e`, and, when a season is configured, a seasonal index per slot of the
//!   shortest season `s ← s + γ e` (Holt–Winters). The k-step forecast is
//!   `ℓ + (φ + … + φᵏ) b + s(k)`. The member works on `z = ln y` while every value seen is
//!   positive — multiplicative seasonality and trend, the common case for loads, flows and
//!   counts, whose daily swing grows with their level — and restarts on `z = y` (additive) at
//!   the first value ≤ 0. On a slot's first visit its index is set so the error is zero (the
//!   level then carries on unchanged), so the first season builds the profile instead of
//!   dragging the level around; at the end of the first season of a step season the member
//!   restarts from it (the classical start: the season's mean and mean difference give the
//!   level and slope, the deviations from that line the indices). Fixed gains (α = 0.3, β = 0.1, γ = 0.5): a
//!   responsive member — a slow Holt–Winters (α = 0.1, γ = 0.05) was the weakest member on
//!   every real series tried, and the `ar` members already give the smooth seasonal
//!   forecasts; the blend copes with series these gains do not suit. Should the state ever stop
//!   being finite the member restarts from the current value. One such series is a ramp (a
//!   cumulative counter): with φ < 1 the slope only holds up under a standing error e
//!   (`b = αβe / (1 − φ)` at the fixed point), and the level keeps pace when `φb + αe` = the
//!   slope c, so `e = c (1 − φ) / (α(1 − φ) + αβφ)` ≈ 0.4c at the defaults; it vanishes only
//!   for φ = 1. The `ar` member (a unit root plus an intercept) is exact on a ramp and the
//!   blend follows it.
//! - **`drift`**: the last value plus the recent trend, `y_t + (φ + … + φᵏ) d` with `d` an
//!   exponentially weighted mean of the last differences (weights `1/n`, then 0.3: a memory of
//!   about three readings). It forecasts a trend from the second reading on, which is what
//!   short series (a few readings per key: growth curves, batch measurements) need while the
//!   other members still learn.
//! - **`seasonal`** for [`SeasonSpec::Duration`] seasons: a seasonal profile per season, an
//!   exponentially weighted average of the values seen in each phase bin (weights `1/visits`,
//!   then at least 0.2), memory O(bins) whatever the sampling. The forecast is the profile of
//!   the longest season whose bin of the target time has been seen.

use serde::{Deserialize, Serialize};

use super::{SeasonSpec, Seasons};

/// Level gain α of the `trend` member.
pub(super) const LEVEL_GAIN: f64 = 0.3;
/// Slope gain β of the `trend` member (the slope moves by αβ·e).
pub(super) const SLOPE_GAIN: f64 = 0.1;
/// Seasonal-index gain γ of the `trend` member (the index moves by γ·e).
const INDEX_GAIN: f64 = 0.5;
/// Smallest weight of a new difference in the `drift` member's slope.
const DRIFT_MIN_WEIGHT: f64 = 0.3;
/// Smallest weight of a new value in a duration profile bin.
const PROFILE_MIN_WEIGHT: f64 = 0.2;
/// Smallest weight of a new interval in the mean interval between readings.
const INTERVAL_MIN_WEIGHT: f64 = 0.05;

/// The seasonal state of the `trend` and duration `seasonal` members. All arrays are empty
/// without a season (plain vectors, not ndarray: three empty ndarray headers were a tenth of a
/// key's state). Field order is the postcard format: append only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Season {
    /// Seasonal indices of the `trend` member (Holt–Winters), one per slot of the shortest
    /// season (its steps, or its bins), in the member's units (`ln y` or `y`).
    pub(super) indices: Vec<f64>,
    /// Duration seasons: EW average value per phase bin, the seasons' bins one after another
    /// (shortest season first).
    pub(super) profiles: Vec<f64>,
    /// Duration seasons: values seen per bin (saturating), same layout as `profiles`.
    visits: Vec<u32>,
}

/// Slots of the `trend` member's indices and bins of the duration profiles for `seasons`.
fn shape(seasons: &Seasons) -> (usize, usize) {
    let slots = match seasons.primary() {
        None => 0,
        Some(SeasonSpec::Steps(steps)) => steps,
        Some(SeasonSpec::Duration { bins, .. }) => bins,
    };
    let bins = seasons
        .as_slice()
        .iter()
        .map(|spec| match *spec {
            SeasonSpec::Steps(_) => 0,
            SeasonSpec::Duration { bins, .. } => bins,
        })
        .sum();
    (slots, bins)
}

impl Season {
    pub(super) fn new(seasons: &Seasons) -> Self {
        let (slots, bins) = shape(seasons);
        Self {
            indices: vec![0.0; slots],
            profiles: vec![0.0; bins],
            visits: vec![0; bins],
        }
    }

    /// The `trend` member's slot of the reading `position` (0-based count of readings, learnt
    /// or skipped) at `time_ms`.
    pub(super) fn slot(seasons: &Seasons, position: u64, time_ms: Option<i64>) -> Option<usize> {
        match seasons.primary()? {
            SeasonSpec::Steps(n) => Some((position % n as u64) as usize),
            SeasonSpec::Duration { period_ms, bins } => Some(phase_bin(time_ms?, period_ms, bins)),
        }
    }

    /// Whether the `trend` member's `slot` has been visited, `position` readings in.
    pub(super) fn seen(&self, seasons: &Seasons, slot: usize, position: u64) -> bool {
        match seasons.primary() {
            None => false,
            Some(SeasonSpec::Steps(n)) => position >= n as u64 || (slot as u64) < position,
            Some(SeasonSpec::Duration { .. }) => {
                self.visits.get(slot).is_some_and(|&visits| visits > 0)
            }
        }
    }

    /// The duration `seasonal` member's forecast for a reading at `time_ms`: the profile of the
    /// longest season whose bin has been seen; `None` when none has (or without a duration
    /// season).
    pub(super) fn profile_forecast(&self, seasons: &Seasons, time_ms: i64) -> Option<f64> {
        let mut offset = 0;
        let mut found = None;
        for spec in seasons.as_slice() {
            let SeasonSpec::Duration { period_ms, bins } = *spec else {
                return None;
            };
            let index = offset + phase_bin(time_ms, period_ms, bins);
            if self.visits.get(index).is_some_and(|&visits| visits > 0) {
                found = self.profiles.get(index).copied();
            }
            offset += bins;
        }
        found
    }

    /// Fold the value `y` of a reading at `time_ms` into the duration profiles.
    pub(super) fn record_profiles(&mut self, seasons: &Seasons, time_ms: i64, y: f64) {
        let mut offset = 0;
        for spec in seasons.as_slice() {
            let SeasonSpec::Duration { period_ms, bins } = *spec else {
                return;
            };
            let index = offset + phase_bin(time_ms, period_ms, bins);
            if let (Some(value), Some(visits)) =
                (self.profiles.get_mut(index), self.visits.get_mut(index))
            {
                *visits = visits.saturating_add(1);
                let weight = (1.0 / f64::from(*visits)).max(PROFILE_MIN_WEIGHT);
                *value += weight * (y - *value);
            }
            offset += bins;
        }
    }

    /// Whether a deserialised season fits `seasons`; the error says what does not.
    pub(super) fn check(&self, seasons: &Seasons) -> Result<(), String> {
        let (slots, bins) = shape(seasons);
        if self.indices.len() != slots || self.profiles.len() != bins || self.visits.len() != bins {
            return Err(format!(
                "season has {}/{}/{} slots, expected {slots}/{bins}/{bins}",
                self.indices.len(),
                self.profiles.len(),
                self.visits.len()
            ));
        }
        if !self
            .indices
            .iter()
            .chain(self.profiles.iter())
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

/// The `trend` member: damped Holt–Winters with the seasonal indices of a [`Season`], on
/// `ln y` while the series is positive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(super) struct Trend {
    /// Level ℓ (member units).
    pub(super) level: f64,
    /// Slope b per reading (member units).
    pub(super) slope: f64,
    /// The member works on `ln y` (every value so far was positive).
    pub(super) log: bool,
}

impl Trend {
    pub(super) fn new() -> Self {
        Self {
            level: 0.0,
            slope: 0.0,
            log: true,
        }
    }

    /// The member's units of a value: `ln y` or `y`.
    pub(super) fn units(&self, y: f64) -> f64 {
        if self.log {
            y.ln()
        } else {
            y
        }
    }

    /// The forecast `ℓ + damped·b + s(slot)` in original units, where `damped = φ + … + φᵏ`.
    /// With a season it is `None` for a slot not seen yet.
    pub(super) fn forecast(&self, index: Option<Option<f64>>, damped: f64) -> Option<f64> {
        let seasonal = match index {
            None => 0.0,
            Some(None) => return None,
            Some(Some(index)) => index,
        };
        let z = self.level + damped * self.slope + seasonal;
        Some(if self.log { z.exp() } else { z })
    }

    /// Learn `y` (original units; the first value when `first`). `index` is the seasonal index
    /// of the reading's slot and whether the slot was seen, `None` without a season. `shift`
    /// re-anchors the level on `y`: the blend has recognised a level shift.
    pub(super) fn learn(
        &mut self,
        index: Option<(&mut f64, bool)>,
        y: f64,
        damping: f64,
        first: bool,
        shift: bool,
    ) {
        if self.log && y <= 0.0 {
            // Not a positive series after all: restart additive.
            self.log = false;
            self.level = y;
            self.slope = 0.0;
            if let Some((index, _)) = index {
                *index = 0.0;
            }
            return;
        }
        let z = self.units(y);
        if first {
            self.level = z;
            self.slope = 0.0;
            if let Some((index, _)) = index {
                *index = 0.0;
            }
            return;
        }
        let predicted_level = self.level + damping * self.slope;
        let restart = match index {
            Some((index, false)) => {
                // First visit of the slot: it takes the deviation, the level carries on.
                *index = z - predicted_level;
                self.level = predicted_level;
                self.slope *= damping;
                !index.is_finite()
            }
            Some((index, true)) => {
                let error = z - (predicted_level + *index);
                if shift {
                    self.level = z - *index;
                } else {
                    self.level = predicted_level + LEVEL_GAIN * error;
                    *index += INDEX_GAIN * error;
                }
                self.slope = damping * self.slope + LEVEL_GAIN * SLOPE_GAIN * error;
                let restart = !index.is_finite();
                if restart {
                    *index = 0.0;
                }
                restart
            }
            None => {
                let error = z - predicted_level;
                self.level = if shift {
                    z
                } else {
                    predicted_level + LEVEL_GAIN * error
                };
                self.slope = damping * self.slope + LEVEL_GAIN * SLOPE_GAIN * error;
                false
            }
        };
        if restart || !(self.level.is_finite() && self.slope.is_finite()) {
            // Cannot happen with the gains above and |y| ≤ 1e100; never let it reach a forecast.
            self.level = z;
            self.slope = 0.0;
        }
    }

    /// Start afresh from the first full season of a step season: `values` are its `m` values,
    /// oldest first (original units). The classical Holt–Winters start: the level is the
    /// season's mean carried to its end, the slope the mean of its differences, and each
    /// slot's index its value's deviation from that line, so the first season's growth is
    /// taken for a trend and not for seasonality. `first_slot` is the slot of the oldest
    /// value.
    pub(super) fn start_from_season(
        &mut self,
        indices: &mut [f64],
        values: impl Iterator<Item = f64> + Clone,
        first_slot: usize,
    ) {
        let m = indices.len();
        let z = |y: f64| if self.log { y.ln() } else { y };
        let (mut sum, mut count) = (0.0, 0usize);
        let (mut first, mut last) = (None, None);
        for y in values.clone() {
            let value = z(y);
            sum += value;
            count += 1;
            first = first.or(Some(value));
            last = Some(value);
        }
        let (Some(first), Some(last)) = (first, last) else {
            return;
        };
        if count < 2 || count != m {
            return;
        }
        let n = count as f64;
        let slope = (last - first) / (n - 1.0);
        let mean = sum / n;
        // The line through the season's mean at its middle, with that slope.
        let line = |t: usize| mean + slope * (t as f64 - (n - 1.0) / 2.0);
        if !(slope.is_finite() && mean.is_finite()) {
            return;
        }
        for (t, y) in values.enumerate() {
            if let Some(index) = indices.get_mut((first_slot + t) % m) {
                *index = z(y) - line(t);
            }
        }
        self.slope = slope;
        self.level = line(count - 1);
    }

    /// Move on by one reading without learning from it.
    pub(super) fn skip(&mut self, damping: f64) {
        self.level += damping * self.slope;
        self.slope *= damping;
    }
}

/// The `drift` member's state: the recent trend of the last values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(super) struct Drift {
    /// EW mean of the last differences `y_t − y_{t−1}`.
    pub(super) slope: f64,
    /// Differences folded in.
    count: u64,
}

impl Drift {
    pub(super) fn new() -> Self {
        Self {
            slope: 0.0,
            count: 0,
        }
    }

    /// `last + damped·d`; `None` before the first difference.
    pub(super) fn forecast(&self, last: f64, damped: f64) -> Option<f64> {
        (self.count > 0).then_some(last + damped * self.slope)
    }

    /// Learn the difference between the new value and the previous one.
    pub(super) fn learn(&mut self, difference: f64) {
        self.count += 1;
        let weight = (1.0 / self.count as f64).max(DRIFT_MIN_WEIGHT);
        self.slope += weight * (difference - self.slope);
        if !self.slope.is_finite() {
            self.slope = 0.0;
        }
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
