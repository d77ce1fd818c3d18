//! Forecasting of a scalar series, 1..=`horizon` steps ahead: an online blend of simple
//! forecasters, each scored on its own errors at every step of the horizon.
//!
//! # Members
//! - `last`: the naive forecast, the last value (flat for every step).
//! - `seasonal` (only with a season): for [`SeasonSpec::Steps`] the value one season before the
//!   target step (seasonal naive, on the shortest season); for [`SeasonSpec::Duration`] an
//!   exponentially weighted profile per phase bin.
//! - `trend`: damped-trend exponential smoothing (Holt, damping φ), with seasonal indices
//!   (Holt–Winters) when a season is configured, on `ln y` (multiplicative) while the series is
//!   positive, additive otherwise; the `members` submodule has the gains.
//! - `drift`: the last value plus the recent trend of the last few differences, so that a short
//!   series has a trend from its third reading.
//! - `ar`: recursive least squares on the short lags `1..=lags` and, for every step season
//!   `m`, the lags `m − 1, m, m + 1` (and `2m ± 1, 2m` for the shortest), plus an intercept
//!   (see the `ar` submodule); k steps ahead by iterating its one-step forecast.
//! - `ar_log`: the same regression on `ln y`, while every value seen is positive: seasonality
//!   and trend that scale with the level (multiplicative), chosen by the blend where they fit.
//!
//! # Blend
//! The steps of the horizon are cut into bands (`[1]`, `[2, 3]`, `[4, 7]`, …): each member is
//! scored on its own errors at the steps of each band, and each band has its own weights
//! `w_m ∝ exp(−η (E_m − E_best) / E_best)` (the `scoring` submodule has how this is done in
//! O(bands × members) memory, and why this rule). So the far steps of a daily series follow
//! the seasonal members while the first steps follow `last` or `ar`. Before any member has
//! been scored the blend is the last value.
//!
//! # Intervals
//! From the blend's own errors at each step: an error scale per band, interpolated between
//! bands, times a multiplier calibrated online so that the share of errors outside the
//! interval is the nominal `2(1 − Φ(interval_z))` (5 % for the default 1.96) whatever the
//! error distribution. A step's interval is published once its band has scored 20 errors
//! over two cycles (about 20 readings for the first step, `≈ 2 × step` readings for the far
//! ones); before that [`Forecaster::calibrated_steps`] says so and the pipeline publishes
//! `null` bounds and `warming_up: true`. With `min`/`max` set, forecasts and bounds are kept
//! inside them (`min = 0` for a series that cannot be negative).
//!
//! # Spikes and level shifts
//! Once the one-step error scale σ is established (`2(lags + 1) + 10` residuals), an a priori
//! blend error beyond `3σ` is an outlier: it is clipped to `±3σ`, and every member learns the
//! same clipped value (forecast ± 3σ), so a spike neither moves any member much nor sits in a
//! window or a season ring. A level shift is not a spike: when the next reading is an outlier
//! too and within `3σ` of the first, the two are taken for a new level — the raw values are
//! put back (AR rings, last value), the AR intercepts are opened and the trend level
//! re-anchored — so a shift is learnt at its second reading. After [`MAX_CLIPPED_RUN`]
//! outliers in a row the next one is accepted whatever it is (a ramp of outliers). Whether
//! an outlier is more often the start of a shift or a lone spike is learnt per key (the
//! outcome of its last few outliers): on a series whose outliers are shifts, the forecast
//! published after an outlier already assumes the new level.
//!
//! An outlier that is also *absurd* — beyond the range of the values accepted so far by more
//! than [`ABSURD_REACH`] times their magnitude (a sensor fault, a unit error: 1e12 in a series
//! around 20) — is not learnt at all, not even clipped: every member moves past it as past a
//! skipped reading, and neither the error scales, the member weights nor the interval
//! calibration see it, so a burst of them leaves the forecast and its interval as they were.
//! Only a run of more than [`MAX_ABSURD_RUN`] outliers is taken for a new level, and one so
//! far away that nothing learnt in the old units applies: the key starts afresh from the
//! run's latest raw readings (keeping its clock), so a real move that far is forecast from
//! reading `MAX_ABSURD_RUN + 2` on and has intervals again once they are calibrated. The prequential metrics still score such readings (the
//! pipeline's `RegressionMetrics`, winsorised there).
//!
//! # Time
//! [`Forecaster::learn_at`] takes the reading's event time. It places a duration season's phase
//! and estimates the typical interval between readings (EW mean of the positive Δt) to place
//! the next steps. [`OnlineModel::learn_one`] uses a synthetic time one typical interval after
//! the last reading: right for step seasons and no season, whose members ignore time; a
//! duration season needs `learn_at`.
//!
//! Non-finite values are ignored; finite magnitudes beyond 1e100 (whose squares would
//! overflow) are moved past like skipped readings, so a step season stays in phase. Nothing on the update path
//! allocates: rings and score tables are allocated in [`Forecaster::new`], scratch vectors
//! live on the stack. State: `O(p² + max lag + slots + horizon)` numbers, p the AR inputs;
//! README "Memory per key" has the bytes.

mod ar;
mod members;
mod scoring;

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use self::ar::{ArMember, LagSet};
use self::members::{Clock, Drift, Season, Trend};
use self::scoring::{Bands, Intervals, Scoring};
use super::{ModelError, OnlineModel, Prediction};

/// Largest accepted number of short lags.
pub const MAX_LAGS: usize = 32;
/// Largest accepted horizon.
pub const MAX_HORIZON: usize = 64;
/// Largest accepted [`SeasonSpec::Steps`] season.
pub const MAX_SEASON_STEPS: usize = 10_000;
/// Largest accepted number of phase bins of a [`SeasonSpec::Duration`] season.
pub const MAX_SEASON_BINS: usize = 1440;
/// Largest number of seasons of one series.
pub const MAX_SEASONS: usize = 3;
/// Consecutive outliers that are clipped before the next one is taken for a level shift.
pub const MAX_CLIPPED_RUN: usize = 2;
/// Consecutive absurd outliers (far outside every value seen, see [`ABSURD_REACH`]) that are
/// skipped before the next one is taken for a level shift: a burst of up to this many faulty
/// readings leaves the model as it was, a real move that far is learnt at its next reading.
pub const MAX_ABSURD_RUN: usize = 6;
/// An outlier is absurd when it lies beyond the range of the accepted values by more than this
/// many times their magnitude (the larger of their span and their largest absolute value):
/// for a series that has stayed within 13..27, beyond 27 + 270 or below 13 − 270. Judged on
/// the key's own values, so it means the same on every scale.
pub const ABSURD_REACH: f64 = 10.0;
/// Number of blend members.
pub const MEMBERS: usize = 6;
/// Member names, in the order of [`Forecaster::member_weights`].
pub const MEMBER_NAMES: [&str; MEMBERS] = ["last", "seasonal", "trend", "drift", "ar", "ar_log"];

const LAST: usize = 0;
const SEASONAL: usize = 1;
const TREND: usize = 2;
const DRIFT: usize = 3;
const AR: usize = 4;
const AR_LOG: usize = 5;

/// A priori errors beyond this many residual standard deviations are clipped (3σ clipped so
/// much of the heavy-tailed M4 series that their sMAPE rose from 9.7 to 11.4).
const CLIP_SIGMAS: f64 = 6.0;
/// Targets of larger magnitude are ignored like non-finite ones (their squares would overflow).
const MAX_ABS_VALUE: f64 = 1e100;
/// Member forecasts of larger magnitude (or not finite) are left out: squared errors of such
/// forecasts would overflow.
const MAX_FORECAST: f64 = 1e150;
/// A member forecast further than this many spans of the values seen beyond them is left out.
const PLAUSIBLE_SPANS: f64 = 2.0;
/// Smallest weight of a new error in the outlier test's scale σ (a memory of about 50
/// readings: the scale must follow a change of the noise level within a day of hourly data,
/// or a noisier regime would be clipped for hundreds of readings).
const SCALE_MIN_WEIGHT: f64 = 0.02;
/// Smallest weight of a new outcome in the share of outliers that were level shifts.
const SHIFT_RATE_MIN_WEIGHT: f64 = 0.2;

/// Seasonality of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeasonSpec {
    /// A season of this many readings (2..=10 000), for regular sampling: the `seasonal`
    /// member forecasts the value one season back, the `ar` members get seasonal lags.
    Steps(usize),
    /// A season in event time, for irregular sampling: a profile of `bins` phase bins
    /// (2..=1440), phase = `(t mod period_ms) / period_ms`. Needs [`Forecaster::learn_at`].
    Duration {
        /// Length of the season in milliseconds (≥ 1, at most `i64::MAX`).
        period_ms: u64,
        /// Number of phase bins (2..=1440).
        bins: usize,
    },
}

impl SeasonSpec {
    /// The length used to order seasons: readings or milliseconds.
    fn length(&self) -> u64 {
        match *self {
            SeasonSpec::Steps(steps) => steps as u64,
            SeasonSpec::Duration { period_ms, .. } => period_ms,
        }
    }
}

/// Up to [`MAX_SEASONS`] seasons of one kind (all [`SeasonSpec::Steps`] or all
/// [`SeasonSpec::Duration`]), shortest first: e.g. daily and weekly on hourly data,
/// `[24, 168]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seasons {
    len: u8,
    /// The seasons, then `Steps(0)` fillers.
    specs: [SeasonSpec; MAX_SEASONS],
}

impl Default for Seasons {
    fn default() -> Self {
        Self::NONE
    }
}

impl Seasons {
    /// No season.
    pub const NONE: Seasons = Seasons {
        len: 0,
        specs: [SeasonSpec::Steps(0); MAX_SEASONS],
    };

    /// One season.
    pub fn one(spec: SeasonSpec) -> Self {
        let mut seasons = Self::NONE;
        seasons.specs[0] = spec;
        seasons.len = 1;
        seasons
    }

    /// Seasons from a list in any order; they are sorted, shortest first.
    ///
    /// # Errors
    /// A message when there are more than [`MAX_SEASONS`], when steps and durations are mixed,
    /// or when two seasons have the same length. Each season's range is checked by
    /// [`ForecastParams::validate`].
    pub fn new(specs: &[SeasonSpec]) -> Result<Self, String> {
        if specs.len() > MAX_SEASONS {
            return Err(format!(
                "at most {MAX_SEASONS} seasons (got {})",
                specs.len()
            ));
        }
        let steps = specs
            .iter()
            .filter(|s| matches!(s, SeasonSpec::Steps(_)))
            .count();
        if steps != 0 && steps != specs.len() {
            return Err(
                "seasons must all be numbers of readings or all durations, not a mix".into(),
            );
        }
        let mut seasons = Self::NONE;
        seasons.specs[..specs.len()].copy_from_slice(specs);
        seasons.len = specs.len() as u8;
        seasons.specs[..specs.len()].sort_by_key(SeasonSpec::length);
        let sorted = seasons.as_slice();
        if sorted
            .windows(2)
            .any(|pair| pair[0].length() == pair[1].length())
        {
            return Err("two seasons have the same length".into());
        }
        Ok(seasons)
    }

    /// The seasons, shortest first.
    pub fn as_slice(&self) -> &[SeasonSpec] {
        &self.specs[..(self.len as usize).min(MAX_SEASONS)]
    }

    /// The shortest season (the `seasonal` and `trend` members'), if any.
    pub fn primary(&self) -> Option<SeasonSpec> {
        self.as_slice().first().copied()
    }

    /// Whether there is no season.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Parameters of a [`Forecaster`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ForecastParams {
    /// Number of short lags (1..=lags) the `ar` members use (1..=32, default 4).
    pub lags: usize,
    /// RLS forgetting factor λ in [0.9, 1] (default 0.995, a memory of about 200 readings);
    /// 1 never forgets.
    pub forgetting: f64,
    /// The interval's nominal coverage as a Gaussian quantile (> 0, default 1.96: 95 %
    /// intervals); the interval itself is calibrated on the errors seen, not Gaussian.
    pub interval_z: f64,
    /// Seasonality (default none).
    pub seasons: Seasons,
    /// Number of steps forecast by [`Forecaster::forecast_into`] (1..=64, default 1).
    pub horizon: usize,
    /// Trend damping φ in (0, 1] (default 0.98); 1 is Holt's undamped linear trend.
    pub damping: f64,
    /// Forecasts and bounds are never below this (e.g. 0 for a series that cannot be
    /// negative).
    pub min: Option<f64>,
    /// Forecasts and bounds are never above this.
    pub max: Option<f64>,
}

impl Default for ForecastParams {
    fn default() -> Self {
        Self {
            lags: 4,
            forgetting: 0.995,
            interval_z: 1.96,
            seasons: Seasons::NONE,
            horizon: 1,
            damping: 0.98,
            min: None,
            max: None,
        }
    }
}

/// The ranges of the numeric [`ForecastParams`] (the config loader reads the keys with them).
pub mod ranges {
    use crate::model::param::{common, IntRange, Range};

    /// `lags`: the AR member's lags.
    pub const LAGS: IntRange = IntRange::new("lags", 1, super::MAX_LAGS as i64);
    /// `season` given as a number of readings.
    pub const SEASON_STEPS: IntRange = IntRange::new("season", 2, super::MAX_SEASON_STEPS as i64);
    /// `season_bins`: the phase bins of a duration season.
    pub const SEASON_BINS: IntRange =
        IntRange::new("season_bins", 2, super::MAX_SEASON_BINS as i64);
    /// `horizon`: steps ahead forecast.
    pub const HORIZON: IntRange = IntRange::new("horizon", 1, super::MAX_HORIZON as i64);

    /// `forgetting`: of the AR member's recursive least squares.
    pub const FORGETTING: Range = common::FORGETTING;
    /// `interval_z`.
    pub const INTERVAL_Z: Range = common::INTERVAL_Z;
    /// `damping`: of the damped trend.
    pub const DAMPING: Range = Range::new("damping", "greater than 0 and at most 1", |phi| {
        phi > 0.0 && phi <= 1.0
    });
}

impl ForecastParams {
    /// Check every parameter's range.
    ///
    /// # Errors
    /// [`ModelError::InvalidParams`] naming every parameter out of range, its value and the
    /// accepted range.
    pub fn validate(&self) -> Result<(), ModelError> {
        let mut problems = Vec::new();
        for check in [
            ranges::LAGS.check(self.lags),
            ranges::HORIZON.check(self.horizon),
        ] {
            if let Err(e) = check {
                problems.push(e.to_string());
            }
        }
        for (range, value) in [
            (ranges::FORGETTING, self.forgetting),
            (ranges::INTERVAL_Z, self.interval_z),
            (ranges::DAMPING, self.damping),
        ] {
            if let Err(e) = range.check(value) {
                problems.push(e.to_string());
            }
        }
        let seasons = &self.seasons;
        if usize::from(seasons.len) > MAX_SEASONS
            || seasons.specs[usize::from(seasons.len).min(MAX_SEASONS)..]
                .iter()
                .any(|spec| *spec != SeasonSpec::Steps(0))
        {
            problems.push(format!("season list is malformed (at most {MAX_SEASONS})"));
        } else if let Err(problem) = Seasons::new(seasons.as_slice()) {
            problems.push(format!("season {problem}"));
        }
        for spec in seasons.as_slice() {
            match *spec {
                SeasonSpec::Steps(steps) => {
                    if let Err(e) = ranges::SEASON_STEPS.check(steps) {
                        problems.push(e.to_string());
                    }
                }
                SeasonSpec::Duration { period_ms, bins } => {
                    if !(1..=i64::MAX as u64).contains(&period_ms) {
                        problems.push(format!(
                            "season period_ms must be between 1 and {} (got {period_ms})",
                            i64::MAX
                        ));
                    }
                    if let Err(e) = ranges::SEASON_BINS.check(bins) {
                        problems.push(e.to_string());
                    }
                }
            }
        }
        for (name, bound) in [("min", self.min), ("max", self.max)] {
            if let Some(value) = bound {
                if !value.is_finite() {
                    problems.push(format!("{name} must be a finite number (got {value})"));
                }
            }
        }
        if let (Some(min), Some(max)) = (self.min, self.max) {
            if min >= max {
                problems.push(format!("min must be below max (got {min} and {max})"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError::InvalidParams(problems.join("; ")))
        }
    }

    /// The nominal share of values outside the interval, `2(1 − Φ(z))`.
    fn miss_rate(&self) -> f64 {
        2.0 * (1.0 - standard_normal_cdf(self.interval_z))
    }

    fn clamp(&self, value: f64) -> f64 {
        let value = self.min.map_or(value, |min| value.max(min));
        self.max.map_or(value, |max| value.min(max))
    }
}

/// Φ(x) by the Abramowitz–Stegun 7.1.26 erf approximation (|error| < 1.5e-7): only the
/// nominal miss rate of the interval depends on it.
fn standard_normal_cdf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs() / std::f64::consts::SQRT_2);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-(x * x) / 2.0).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Forecaster of a scalar series: an online blend of the members named in [`MEMBER_NAMES`],
/// 1..=`horizon` steps ahead; see the [module documentation](self) for the design.
///
/// The struct is the whole model state. It serialises with serde; deserialising checks that
/// the state is consistent (shapes, finiteness, parameters) and fails rather than producing a
/// model that could panic or emit `NaN`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Forecaster {
    state: ForecasterState,
}

/// What the parameters imply, rebuilt on construction and deserialisation (not stored).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Derived {
    lags: LagSet,
    bands: Bands,
    /// The interval's nominal miss rate.
    miss_rate: f64,
}

impl Derived {
    fn new(params: &ForecastParams) -> Self {
        Self {
            lags: LagSet::new(params.lags, &params.seasons),
            bands: Bands::new(params.horizon),
            miss_rate: params.miss_rate(),
        }
    }
}

/// Every member's one-step forecast and the blend of them (before the outlier offset and
/// the bounds), from one state.
#[derive(Debug, Clone, Copy)]
struct OneStep {
    members: [Option<f64>; MEMBERS],
    blend: f64,
}

/// The one-step blend of the current state, computed once per reading where the state changes
/// and read by the published forecast, the next `predict_one` and the next reading's outlier
/// test (four computations per reading before). Not stored; always equal (a cache).
#[derive(Debug, Clone, Copy, Default)]
struct StepCache(Option<f64>);

impl PartialEq for StepCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The serialised fields of a [`Forecaster`]. Kept separate so that deserialisation can go
/// through [`ForecasterState::check`]. Field order is the postcard format: append only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ForecasterState {
    params: ForecastParams,
    /// The `last` member: the latest accepted (possibly clipped) value.
    last: f64,
    trend: Trend,
    drift: Drift,
    season: Season,
    ar: ArMember,
    /// The `ar_log` member, fed `ln y` while `positive`; only with a step season (without one
    /// it was the `ar` member's twin and cost a second regression per reading).
    ar_log: Option<Box<ArMember>>,
    /// Every accepted value so far was > 0 (the `ar_log` member is in use).
    positive: bool,
    clock: Clock,
    /// Readings so far, learnt or skipped (the slot of a step season).
    position: u64,
    scoring: Scoring,
    /// Running mean of squared (clipped) a priori one-step blend errors (σ², original units),
    /// the scale of the outlier test.
    mean_sq_error: f64,
    /// Number of blend errors folded into `mean_sq_error`.
    residuals: u64,
    /// Consecutive readings whose a priori error was beyond the clipping threshold.
    outlier_run: u32,
    /// Raw values of the latest clipped readings, most recent first (entry j is valid while
    /// `j < outlier_run`).
    clipped_raw: [f64; MAX_CLIPPED_RUN],
    /// Raw minus accepted value of the latest outlier while one is pending, else 0: added to
    /// the published forecasts when outliers of this key tend to be level shifts.
    pending_offset: f64,
    /// EW share of this key's resolved outliers that were level shifts (0.5 before any).
    shift_rate: f64,
    /// Outliers resolved (as a shift or a spike).
    shift_events: u32,
    /// Accepted learn calls.
    updates: u64,
    /// Sum of the clipped errors of the current run of outliers (what the members learnt of
    /// them), 0 outside a run.
    run_clipping: f64,
    /// Smallest accepted value so far.
    low: f64,
    /// Largest accepted value so far.
    high: f64,
    #[serde(skip, default = "Derived::placeholder")]
    derived: Derived,
    #[serde(skip)]
    cache: StepCache,
}

impl Derived {
    /// Replaced by [`ForecasterState::check`] right after deserialising.
    fn placeholder() -> Self {
        Self::new(&ForecastParams::default())
    }
}

/// Member forecasts along the horizon, computed once per call for the AR members.
struct Paths {
    ar: [f64; MAX_HORIZON],
    ar_ready: bool,
    /// `ln y` units.
    ar_log: [f64; MAX_HORIZON],
    ar_log_ready: bool,
}

impl Forecaster {
    /// A fresh forecaster.
    ///
    /// # Errors
    /// [`ModelError::InvalidParams`] when `params` fail [`ForecastParams::validate`].
    pub fn new(params: ForecastParams) -> Result<Self, ModelError> {
        params.validate()?;
        let derived = Derived::new(&params);
        Ok(Self {
            state: ForecasterState {
                params,
                last: 0.0,
                trend: Trend::new(),
                drift: Drift::new(),
                season: Season::new(&params.seasons),
                ar: ArMember::new(&derived.lags),
                ar_log: matches!(params.seasons.primary(), Some(SeasonSpec::Steps(_)))
                    .then(|| Box::new(ArMember::new(&derived.lags))),
                positive: true,
                clock: Clock::new(),
                position: 0,
                scoring: Scoring::new(&derived.bands, params.interval_z),
                mean_sq_error: 0.0,
                residuals: 0,
                outlier_run: 0,
                clipped_raw: [0.0; MAX_CLIPPED_RUN],
                pending_offset: 0.0,
                shift_rate: 0.5,
                shift_events: 0,
                updates: 0,
                run_clipping: 0.0,
                low: 0.0,
                high: 0.0,
                derived,
                cache: StepCache::default(),
            },
        })
    }

    /// The parameters the forecaster was built with.
    pub fn params(&self) -> &ForecastParams {
        &self.state.params
    }

    /// Learn the value `y` of a reading at event time `time_ms` (milliseconds, any epoch).
    ///
    /// The time places the reading in a [`SeasonSpec::Duration`] season and feeds the estimate
    /// of the interval between readings; readings at the same time or out of order are learnt
    /// but do not count as intervals. Non-finite `y` leaves the model unchanged; a finite `y`
    /// beyond 1e100 in magnitude is moved past like [`skip_at`](Self::skip_at) (nothing is
    /// learnt from it, a step season stays in phase).
    pub fn learn_at(&mut self, time_ms: i64, y: f64) {
        self.learn_forecast_at(time_ms, y, &mut []);
    }

    /// [`learn_at`](Self::learn_at), then [`forecast_into`](Self::forecast_into) `out`, sharing
    /// the work of both (the AR paths are computed once). Returns the steps written (0 when
    /// `y` was ignored and nothing had been learnt before).
    pub fn learn_forecast_at(&mut self, time_ms: i64, y: f64, out: &mut [Prediction]) -> usize {
        if !y.is_finite() {
            return self.state.forecast_into(out);
        }
        if y.abs() > MAX_ABS_VALUE {
            // A reading that happened with a value no model can use (its square overflows):
            // moved past like a skipped one, so that a step season stays in phase, without
            // ending a run of outliers.
            return self.state.advance_imputed(time_ms, out);
        }
        self.state.learn(time_ms, y, out)
    }

    /// Move the forecaster past a reading at `time_ms` without learning it, e.g. one flagged
    /// as an anomaly: every member moves on with the blend's forecast as an imputed value, so a
    /// step season stays in phase, and no weight, error statistic or [`updates`] count
    /// changes. Does nothing before the first value.
    ///
    /// [`updates`]: OnlineModel::updates
    pub fn skip_at(&mut self, time_ms: i64) {
        self.state.skip(time_ms, &mut []);
    }

    /// [`skip_at`](Self::skip_at), then [`forecast_into`](Self::forecast_into) `out`.
    pub fn skip_forecast_at(&mut self, time_ms: i64, out: &mut [Prediction]) -> usize {
        self.state.skip(time_ms, out)
    }

    /// [`skip_at`](Self::skip_at) with a synthetic time one typical interval after the last
    /// reading (for step seasons and no season).
    pub fn skip(&mut self) {
        let time_ms = self.state.clock.synthetic_next(self.state.updates == 0);
        self.state.skip(time_ms, &mut []);
    }

    /// Forecasts for 1..=`n` steps ahead into `out[..n]`, `n = min(out.len(), horizon)`;
    /// returns `n`, or 0 (leaving `out` alone) before the first value. Steps at or beyond
    /// [`calibrated_steps`](Self::calibrated_steps) have no interval yet: their `lower` and
    /// `upper` equal `value`.
    pub fn forecast_into(&self, out: &mut [Prediction]) -> usize {
        self.state.forecast_into(out)
    }

    /// The published one-step point forecast, without its interval (what
    /// [`OnlineModel::predict_one`] returns as `value`, for less work); `None` before the first
    /// value.
    pub fn forecast_value(&self) -> Option<f64> {
        let state = &self.state;
        (state.updates > 0).then(|| state.published(state.one_step_blend()))
    }

    /// The seasonal context of a next reading of value `y`, for an anomaly detector: the
    /// value at the same phase of the longest season, one season and two seasons before the
    /// reading (when the history holds both), whichever is nearer `y` — a reading is unusual
    /// for its phase only if it is unlike both, so one unusual season (a holiday) does not
    /// make the same phase of the next season look unusual. With a season in event time: its
    /// profile's forecast. `None` without a season or before a season has been seen.
    pub fn seasonal_reference(&self, y: f64) -> Option<f64> {
        let state = &self.state;
        if state.updates == 0 {
            return None;
        }
        let longest = state
            .params
            .seasons
            .as_slice()
            .iter()
            .filter_map(|spec| match spec {
                SeasonSpec::Steps(m) => Some(*m),
                SeasonSpec::Duration { .. } => None,
            })
            .max();
        match longest {
            Some(m) => {
                let one = state.ar.value_at_lag(m)?;
                Some(match state.ar.value_at_lag(2 * m) {
                    Some(two) if (two - y).abs() < (one - y).abs() => two,
                    _ => one,
                })
            }
            None => state.seasonal_forecast(1),
        }
    }

    /// How many of the first steps have a calibrated interval (0..=horizon): the interval of
    /// step k is published once its band of steps has scored enough errors.
    pub fn calibrated_steps(&self) -> usize {
        let state = &self.state;
        let bands = &state.derived.bands;
        (1..=state.params.horizon)
            .take_while(|&k| state.scoring.has_interval(bands, k))
            .count()
    }

    /// Whether [`learn_at`](Self::learn_at) would move past `y` as an absurd value (far outside
    /// everything this key has done, or beyond 1e100) instead of learning it: for the
    /// prequential metrics, which winsorise exactly those readings.
    pub fn is_absurd(&self, y: f64) -> bool {
        self.state.would_skip_as_absurd(y)
    }

    /// Standard deviation of the blend's a priori one-step errors so far (original units,
    /// outliers clipped); `None` before the first error.
    pub fn residual_std(&self) -> Option<f64> {
        (self.state.residuals > 0).then(|| self.state.mean_sq_error.sqrt())
    }

    /// The members' blend weights for the next step, by name (see [`MEMBER_NAMES`]); they sum
    /// to 1 once the first value has been seen (all weight on `last` until another member has
    /// been scored), and are all 0 before.
    pub fn member_weights(&self) -> [(&'static str, f64); MEMBERS] {
        let state = &self.state;
        let mut weights = [0.0; MEMBERS];
        if state.updates > 0 {
            let paths = state.paths(1);
            let forecasts = state.member_forecasts(1, &paths);
            state.normalised_weights(1, &forecasts, &mut weights);
        }
        let mut named = [("", 0.0); MEMBERS];
        for ((entry, name), weight) in named.iter_mut().zip(MEMBER_NAMES).zip(weights) {
            *entry = (name, weight);
        }
        named
    }

    /// Every member's forecast for step `k` (1..=horizon) and its blend weight there, by name;
    /// `None` for a member without a forecast (its weight is then 0). Empty names before the
    /// first value.
    pub fn members_at(&self, k: usize) -> [(&'static str, Option<f64>, f64); MEMBERS] {
        let state = &self.state;
        let mut named = [("", None, 0.0); MEMBERS];
        if state.updates == 0 || k == 0 || k > state.params.horizon {
            return named;
        }
        let paths = state.paths(k);
        let forecasts = state.member_forecasts(k, &paths);
        let mut weights = [0.0; MEMBERS];
        state.normalised_weights(k, &forecasts, &mut weights);
        for (m, entry) in named.iter_mut().enumerate() {
            *entry = (MEMBER_NAMES[m], forecasts[m], weights[m]);
        }
        named
    }

    /// Root mean squared a priori one-step error of each member (recent, EW), by name; `None`
    /// for a member that has not been scored yet.
    pub fn member_rmse(&self) -> [(&'static str, Option<f64>); MEMBERS] {
        let state = &self.state;
        let rmse = state.scoring.member_rmse(&state.derived.bands, 1);
        let mut named = [("", None); MEMBERS];
        for ((entry, name), value) in named.iter_mut().zip(MEMBER_NAMES).zip(rmse) {
            *entry = (name, value);
        }
        named
    }

    /// The lags of the `ar` members, ascending (the order of [`lag_coefficients`]).
    ///
    /// [`lag_coefficients`]: Self::lag_coefficients
    pub fn lags(&self) -> &[u16] {
        self.state.derived.lags.as_slice()
    }

    /// The `ar` member's autoregressive coefficients, in the order of [`lags`](Self::lags).
    /// They are the same in original and normalised units; all zero until the member has
    /// learnt.
    pub fn lag_coefficients(&self) -> &[f64] {
        self.state.ar.lag_coefficients()
    }

    /// The `ar` member's intercept in original units: forecast = Σ coefficient·lag + intercept.
    pub fn intercept(&self) -> f64 {
        self.state.ar.intercept()
    }
}

impl OnlineModel for Forecaster {
    /// Forecast the next value (step 1 of [`Forecaster::forecast_into`]); `x` is ignored (pass
    /// `&[]`): the inputs are the series' own past. `None` only before the first value.
    fn predict_one(&self, _x: &[f64]) -> Option<Prediction> {
        let mut out = [Prediction {
            value: 0.0,
            lower: 0.0,
            upper: 0.0,
        }];
        (self.state.forecast_into(&mut out) == 1).then_some(out[0])
    }

    /// Learn the next value `y` of the series at a synthetic time (see
    /// [`Forecaster::learn_at`]); `x` is ignored (pass `&[]`). Non-finite `y` (and
    /// |y| > 1e100) leave the model unchanged.
    fn learn_one(&mut self, _x: &[f64], y: f64) {
        let time_ms = self.state.clock.synthetic_next(self.state.updates == 0);
        self.learn_at(time_ms, y);
    }

    fn updates(&self) -> u64 {
        self.state.updates
    }
}

/// φ + φ² + … + φᵏ.
fn damped_sum(damping: f64, steps: usize) -> f64 {
    if damping >= 1.0 {
        steps as f64
    } else {
        damping * (1.0 - damping.powi(steps as i32)) / (1.0 - damping)
    }
}

fn sane(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite() && v.abs() <= MAX_FORECAST)
}

impl ForecasterState {
    /// The AR paths for steps `1..=steps` (iterated one-step forecasts) from the current state.
    fn paths(&self, steps: usize) -> Paths {
        let steps = steps.clamp(1, MAX_HORIZON);
        let lags = &self.derived.lags;
        let mut paths = Paths {
            ar: [0.0; MAX_HORIZON],
            ar_ready: false,
            ar_log: [0.0; MAX_HORIZON],
            ar_log_ready: false,
        };
        paths.ar_ready = self.ar.trained() && self.ar.forecast_steps(lags, &mut paths.ar[..steps]);
        if let Some(ar_log) = self
            .ar_log
            .as_ref()
            .filter(|ar| self.positive && ar.trained())
        {
            paths.ar_log_ready = ar_log.forecast_steps(lags, &mut paths.ar_log[..steps]);
        }
        paths
    }

    /// The one-step blend of the current state (before the outlier offset and the bounds),
    /// from the cache when it has it.
    fn one_step_blend(&self) -> f64 {
        match self.cache {
            StepCache(Some(blend)) => blend,
            StepCache(None) => self.one_step().blend,
        }
    }

    /// The one-step forecasts of the current state.
    fn one_step(&self) -> OneStep {
        let lags = &self.derived.lags;
        let ar = self.ar.trained().then(|| self.ar.forecast(lags)).flatten();
        let ar_log = self
            .ar_log
            .as_ref()
            .filter(|ar| self.positive && ar.trained())
            .and_then(|ar| ar.forecast(lags));
        let members = self.members_with(1, ar, ar_log);
        OneStep {
            members,
            blend: self.blend(1, &members),
        }
    }

    /// The `trend` member's seasonal index for step `k`: `None` without a season, `Some(None)`
    /// for a slot not seen yet.
    fn trend_index(&self, k: usize) -> Option<Option<f64>> {
        let seasons = &self.params.seasons;
        seasons.primary()?;
        let slot = Season::slot(
            seasons,
            self.position + k as u64 - 1,
            self.clock.time_ahead(k),
        );
        Some(slot.and_then(|slot| {
            self.season
                .seen(seasons, slot, self.position)
                .then(|| self.season.indices.get(slot).copied())
                .flatten()
        }))
    }

    /// The `seasonal` member's forecast for step `k`.
    fn seasonal_forecast(&self, k: usize) -> Option<f64> {
        match self.params.seasons.primary()? {
            SeasonSpec::Steps(m) => {
                // The value one season before the target: lag m·⌈k/m⌉ − k + 1.
                let lag = m * k.div_ceil(m) - k + 1;
                self.ar.value_at_lag(lag)
            }
            SeasonSpec::Duration { .. } => self
                .season
                .profile_forecast(&self.params.seasons, self.clock.time_ahead(k)?),
        }
    }

    /// Every member's forecast for step `k` (≥ 1) from the current state; a member that has
    /// no forecast, or whose forecast is not a finite number of a sane magnitude, is `None`
    /// (left out of the blend and not scored).
    fn member_forecasts(&self, k: usize, paths: &Paths) -> [Option<f64>; MEMBERS] {
        let ar = paths
            .ar_ready
            .then(|| paths.ar.get(k - 1).copied())
            .flatten();
        let ar_log = paths
            .ar_log_ready
            .then(|| paths.ar_log.get(k - 1).copied())
            .flatten();
        self.members_with(k, ar, ar_log)
    }

    /// [`member_forecasts`](Self::member_forecasts) given the AR members' forecasts of step
    /// `k` (`ar_log` in `ln y`).
    fn members_with(
        &self,
        k: usize,
        ar: Option<f64>,
        ar_log: Option<f64>,
    ) -> [Option<f64>; MEMBERS] {
        let damped = damped_sum(self.params.damping, k);
        let mut out = [None; MEMBERS];
        out[LAST] = Some(self.last);
        out[SEASONAL] = self.seasonal_forecast(k);
        out[TREND] = sane(self.trend.forecast(self.trend_index(k), damped));
        out[DRIFT] = sane(self.drift.forecast(self.last, damped));
        out[AR] = sane(ar);
        if self.positive {
            out[AR_LOG] = sane(ar_log.map(f64::exp));
        }
        // A forecast far outside everything the series has done is a member gone unstable
        // (an iterated AR with an explosive root, a drift on a spike): leave it out rather
        // than let it into the blend and the error scales.
        let (low, high) = self.plausible();
        for forecast in &mut out {
            *forecast = forecast.filter(|value| (low..=high).contains(value));
        }
        out
    }

    /// The range a member forecast must fall in: the values seen so far widened by twice their
    /// span on each side.
    fn plausible(&self) -> (f64, f64) {
        let span = (self.high - self.low).max(1e-9 * self.high.abs().max(self.low.abs()));
        (
            self.low - PLAUSIBLE_SPANS * span,
            self.high + PLAUSIBLE_SPANS * span,
        )
    }

    /// Blend weights of step `k` over the members that have a forecast, summing to 1 (all on
    /// `last` when none has been scored).
    fn normalised_weights(
        &self,
        k: usize,
        forecasts: &[Option<f64>; MEMBERS],
        out: &mut [f64; MEMBERS],
    ) {
        let raw = self.scoring.weights(&self.derived.bands, k);
        let mut total = 0.0;
        for (m, (weight, forecast)) in out.iter_mut().zip(forecasts).enumerate() {
            *weight = match (raw, forecast) {
                (Some(raw), Some(_)) => raw[m],
                _ => 0.0,
            };
            total += *weight;
        }
        if total > 0.0 {
            for weight in out.iter_mut() {
                *weight /= total;
            }
        } else {
            *out = [0.0; MEMBERS];
            out[LAST] = 1.0;
        }
    }

    /// The blended forecast of step `k` (before the outlier offset and the bounds).
    fn blend(&self, k: usize, forecasts: &[Option<f64>; MEMBERS]) -> f64 {
        let mut weights = [0.0; MEMBERS];
        self.normalised_weights(k, forecasts, &mut weights);
        let mut sum = 0.0;
        for (weight, forecast) in weights.iter().zip(forecasts) {
            if let Some(value) = forecast {
                sum += weight * value;
            }
        }
        if sum.is_finite() {
            sum
        } else {
            self.last
        }
    }

    /// The published point forecast for a blend value: the outlier offset when outliers of
    /// this key tend to be shifts, then the bounds.
    fn published(&self, blend: f64) -> f64 {
        let offset = if self.shift_rate >= 0.5 {
            self.pending_offset
        } else {
            0.0
        };
        self.params.clamp(blend + offset)
    }

    /// The prediction of step `k` for a published value; `intervals` for a whole horizon
    /// (`None`: one step).
    fn prediction(&self, intervals: Option<&Intervals<'_>>, value: f64, k: usize) -> Prediction {
        let interval = match intervals {
            Some(intervals) => intervals.interval(k, value),
            None => self.scoring.interval(&self.derived.bands, k, value),
        };
        match interval {
            Some((lower, upper)) => Prediction {
                value,
                lower: self.params.clamp(lower),
                upper: self.params.clamp(upper),
            },
            None => Prediction {
                value,
                lower: value,
                upper: value,
            },
        }
    }

    /// Fill `out` (at most `horizon` steps): step 1 from `one_step`, the others from `paths`,
    /// which must reach that far when there are others.
    fn fill(&self, one_step: f64, paths: Option<&Paths>, out: &mut [Prediction]) -> usize {
        let steps = out.len().min(self.params.horizon);
        let intervals = (steps > 1).then(|| self.scoring.intervals(&self.derived.bands));
        for (index, prediction) in out.iter_mut().take(steps).enumerate() {
            let k = index + 1;
            let blend = match (k, paths) {
                (1, _) => one_step,
                (_, Some(paths)) => self.blend(k, &self.member_forecasts(k, paths)),
                (_, None) => return index,
            };
            *prediction = self.prediction(intervals.as_ref(), self.published(blend), k);
        }
        steps
    }

    fn forecast_into(&self, out: &mut [Prediction]) -> usize {
        if self.updates == 0 {
            return 0;
        }
        let steps = out.len().min(self.params.horizon);
        let blend = self.one_step_blend();
        let paths = (steps > 1).then(|| self.paths(steps));
        self.fill(blend, paths.as_ref(), out)
    }

    /// Residuals needed before σ is trusted for clipping: enough for RLS to have converged.
    fn clip_warmup(&self) -> u64 {
        2 * (self.params.lags as u64 + 1) + 10
    }

    /// Fold an outlier's outcome (`true`: it was a level shift) into the shift rate.
    fn resolve_outlier(&mut self, shift: bool) {
        self.shift_events = self.shift_events.saturating_add(1);
        let weight = (1.0 / f64::from(self.shift_events)).max(SHIFT_RATE_MIN_WEIGHT);
        let outcome = if shift { 1.0 } else { 0.0 };
        self.shift_rate += weight * (outcome - self.shift_rate);
    }

    fn learn(&mut self, time_ms: i64, y: f64, out: &mut [Prediction]) -> usize {
        let first = self.updates == 0;
        let damping = self.params.damping;
        let mut accepted = y;
        let mut shift = false;
        if !first {
            let forecast = self.one_step_blend();
            let error = y - forecast;
            let threshold = self.outlier_threshold(y, forecast);
            let established = self.residuals >= self.clip_warmup();
            let mut scored_error = error;
            if established && error.abs() > threshold {
                self.outlier_run = self.outlier_run.saturating_add(1);
                let run = self.outlier_run as usize;
                if self.absurd(y) && run > MAX_ABSURD_RUN {
                    return self.restart_at_new_level(time_ms, y, out);
                }
                if self.absurd(y) {
                    // Far outside everything this key has done (a faulty sensor, a unit
                    // error): nothing is learnt from it, not even clipped — members, error
                    // scales, weights and interval calibration move on as for a skipped
                    // reading — and the published forecast stays at the old level until
                    // the run is long enough to be a new level.
                    self.clipped_raw.copy_within(..MAX_CLIPPED_RUN - 1, 1);
                    self.clipped_raw[0] = y;
                    self.pending_offset = 0.0;
                    return self.advance_imputed(time_ms, out);
                }
                // A second outlier at less than half its distance to the forecast from the
                // first one: a new level (or a new regime), not two spikes.
                let apart = (y - self.clipped_raw[0]).abs();
                let consistent = run >= 2 && (apart < 0.5 * error.abs() || apart <= threshold);
                if consistent || run > MAX_CLIPPED_RUN {
                    shift = true;
                } else {
                    scored_error = threshold.copysign(error);
                    accepted = forecast + scored_error;
                    self.clipped_raw.copy_within(..MAX_CLIPPED_RUN - 1, 1);
                    self.clipped_raw[0] = y;
                    self.pending_offset = y - accepted;
                    self.run_clipping += scored_error;
                }
            } else if self.outlier_run > 0 {
                self.resolve_outlier(false);
                self.outlier_run = 0;
                self.pending_offset = 0.0;
                self.run_clipping = 0.0;
            }
            if shift {
                // Put the clipped readings back as they were: they were the new level; the
                // older history moves to it.
                // The forecast has already moved by the clipped part of the run's outliers.
                self.shift_history(y, forecast - self.run_clipping);
                self.resolve_outlier(true);
                self.outlier_run = 0;
                self.pending_offset = 0.0;
                self.run_clipping = 0.0;
                scored_error = error.clamp(-threshold, threshold);
                // Forecasts made before the shift say nothing about the members' skill.
                self.scoring.drop_pending();
            } else {
                let miss_rate = self.derived.miss_rate;
                self.scoring
                    .arrive(&self.derived.bands, Some(accepted), miss_rate);
            }
            self.residuals += 1;
            let alpha = (1.0 / self.residuals as f64).max(SCALE_MIN_WEIGHT);
            self.mean_sq_error += alpha * (scored_error * scored_error - self.mean_sq_error);
        }

        if self.trend.log && accepted <= 0.0 {
            // The `trend` member restarts additive: its indices were in `ln y`.
            self.season.indices.fill(0.0);
        }
        let slot = Season::slot(&self.params.seasons, self.position, Some(time_ms));
        let seen =
            slot.is_some_and(|slot| self.season.seen(&self.params.seasons, slot, self.position));
        let index = slot
            .and_then(|slot| self.season.indices.get_mut(slot))
            .map(|index| (index, seen));
        self.trend.learn(index, accepted, damping, first, shift);
        if !(first || shift) {
            self.drift.learn(accepted - self.last);
        }
        self.season
            .record_profiles(&self.params.seasons, time_ms, accepted);
        let lags = self.derived.lags;
        let forgetting = self.params.forgetting;
        self.cache = StepCache::default();
        self.ar.learn(&lags, accepted, forgetting);
        if let Some(SeasonSpec::Steps(m)) = self.params.seasons.primary() {
            if self.position + 1 == m as u64 && !shift {
                // The first season is complete: the `trend` member starts from it.
                let ar = &self.ar;
                let values = (1..=m).rev().filter_map(|lag| ar.value_at_lag(lag));
                self.trend
                    .start_from_season(&mut self.season.indices, values, 0);
            }
        }
        if self.positive && accepted > 0.0 {
            if let Some(ar_log) = &mut self.ar_log {
                ar_log.learn(&lags, accepted.ln(), forgetting);
            }
        } else {
            self.positive = false;
        }
        if shift {
            self.ar.open_intercept();
            if let Some(ar_log) = &mut self.ar_log {
                ar_log.open_intercept();
            }
        }
        self.last = accepted;
        if first {
            (self.low, self.high) = (accepted, accepted);
        } else {
            self.low = self.low.min(accepted);
            self.high = self.high.max(accepted);
        }
        self.clock.observe(time_ms, first);
        self.position += 1;
        self.updates += 1;
        self.record_origin(out)
    }

    fn skip(&mut self, time_ms: i64, out: &mut [Prediction]) -> usize {
        // The clipped readings are no longer the most recent ones.
        self.outlier_run = 0;
        self.pending_offset = 0.0;
        self.run_clipping = 0.0;
        self.advance_imputed(time_ms, out)
    }

    /// A run of more than [`MAX_ABSURD_RUN`] outliers ends with the absurd reading `y`: the
    /// series now lives more than [`ABSURD_REACH`] times its old magnitude away (a re-ranged
    /// sensor, a unit change), where nothing the members learnt in the old units applies (a
    /// member shifted by 500 times the old range forecasts the new level with the old
    /// dynamics and is wrong by more than the new noise). The key starts afresh from the
    /// run's latest raw readings and `y`, keeping only its clock and its record of outliers.
    fn restart_at_new_level(&mut self, time_ms: i64, y: f64, out: &mut [Prediction]) -> usize {
        let Ok(fresh) = Forecaster::new(self.params) else {
            // Unreachable: the parameters were validated when the model was built.
            return self.advance_imputed(time_ms, out);
        };
        let count = (self.outlier_run as usize)
            .saturating_sub(1)
            .min(MAX_CLIPPED_RUN);
        let raw = self.clipped_raw;
        let (clock, shift_rate, shift_events) = (self.clock, self.shift_rate, self.shift_events);
        *self = fresh.state;
        self.clock = clock;
        self.shift_rate = shift_rate;
        self.shift_events = shift_events;
        self.resolve_outlier(true);
        let interval = clock.mean_interval_ms.max(1.0);
        // Oldest first, at the times they probably had (before the clock's latest: they are
        // not counted as intervals again).
        for (k, &value) in raw.iter().enumerate().take(count).rev() {
            let back = ((k + 1) as f64 * interval).round() as i64;
            self.learn(time_ms.saturating_sub(back), value, &mut []);
        }
        self.learn(time_ms, y, out)
    }

    /// The outlier test's threshold for a reading `y` forecast at `forecast`: `6σ`, floored at
    /// a relative 1e-9 of the level (rounding noise on a constant series is not an outlier).
    fn outlier_threshold(&self, y: f64, forecast: f64) -> f64 {
        (CLIP_SIGMAS * self.mean_sq_error.sqrt())
            .max(1e-9 * y.abs().max(forecast.abs()))
            .max(f64::MIN_POSITIVE)
    }

    /// Whether learning `y` next would move past it as an absurd value rather than learn it.
    fn would_skip_as_absurd(&self, y: f64) -> bool {
        if self.updates == 0 || !y.is_finite() {
            return false;
        }
        if y.abs() > MAX_ABS_VALUE {
            return true;
        }
        // The range test first: it is cheap and false for almost every reading, which then
        // costs no blend forecast.
        if !(self.absurd(y)
            && (self.outlier_run as usize) < MAX_ABSURD_RUN
            && self.residuals >= self.clip_warmup())
        {
            return false;
        }
        let forecast = self.one_step_blend();
        (y - forecast).abs() > self.outlier_threshold(y, forecast)
    }

    /// Whether `y` is an absurd value for this key (see [`ABSURD_REACH`]).
    fn absurd(&self, y: f64) -> bool {
        let magnitude = (self.high - self.low)
            .max(self.high.abs())
            .max(self.low.abs());
        let reach = ABSURD_REACH * magnitude;
        y > self.high + reach || y < self.low - reach
    }

    /// Move every member past a reading with the blend's forecast as an imputed value,
    /// learning nothing (no weight, error statistic or update count changes); a run of
    /// outliers in progress is left as it is.
    fn advance_imputed(&mut self, time_ms: i64, out: &mut [Prediction]) -> usize {
        if self.updates == 0 {
            return 0;
        }
        let imputed = self.one_step_blend();
        self.cache = StepCache::default();
        let miss_rate = self.derived.miss_rate;
        self.scoring.arrive(&self.derived.bands, None, miss_rate);
        self.trend.skip(self.params.damping);
        self.ar.skip(imputed);
        if let Some(ar_log) = self.ar_log.as_mut().filter(|_| self.positive) {
            // The ring would need ln of a value ≤ 0: keep it in phase with the last value.
            let value = if imputed > 0.0 {
                imputed
            } else {
                self.last.max(f64::MIN_POSITIVE)
            };
            ar_log.skip(value.ln());
        }
        self.last = imputed;
        self.clock.observe(time_ms, false);
        self.position += 1;
        self.record_origin(out)
    }

    /// At this origin: each band records its members' and the blend's forecasts for its step,
    /// and `out` gets the published forecasts; the AR paths are computed once for both.
    fn record_origin(&mut self, out: &mut [Prediction]) -> usize {
        let bands = self.derived.bands;
        let published = out.len().min(self.params.horizon);
        let needed = self.scoring.max_step_to_record(&bands).max(published);
        self.cache = StepCache::default();
        let step = self.one_step();
        let paths = (needed > 1).then(|| self.paths(needed));
        for b in 0..bands.len() {
            let k = self.scoring.step_to_record(&bands, b);
            let (forecasts, blend) = match (k, &paths) {
                (1, _) | (_, None) => (step.members, step.blend),
                (_, Some(paths)) => {
                    let forecasts = self.member_forecasts(k, paths);
                    (forecasts, self.blend(k, &forecasts))
                }
            };
            let value = self.published(blend);
            self.scoring.record(&bands, b, &forecasts, value);
        }
        let written = self.fill(step.blend, paths.as_ref(), out);
        self.cache = StepCache(Some(step.blend));
        written
    }

    /// A level shift confirmed by the reading `y`, whose forecast was `forecast`: the clipped
    /// readings were real, put them back; the older short-term past moves by the shift
    /// (`y − forecast`, or its ratio in `ln y`), so that the members forecast the new level at
    /// once and keep their dynamics; the recent trend was the jump, not a trend.
    fn shift_history(&mut self, y: f64, forecast: f64) {
        let count = (self.outlier_run as usize)
            .saturating_sub(1)
            .min(MAX_CLIPPED_RUN)
            .min(self.updates as usize);
        let raw = &self.clipped_raw[..count];
        let delta = y - forecast;
        self.ar.restore_recent(raw);
        let short = self.params.lags;
        self.ar.shift_level(delta, count, short);
        let positive = y > 0.0 && forecast > 0.0 && raw.iter().all(|&value| value > 0.0);
        if let Some(ar_log) = self.ar_log.as_mut().filter(|_| self.positive && positive) {
            let mut logs = [0.0; MAX_CLIPPED_RUN];
            for (log, &value) in logs.iter_mut().zip(raw) {
                *log = value.ln();
            }
            ar_log.restore_recent(&logs[..count]);
            ar_log.shift_level((y / forecast).ln(), count, short);
        }
        self.drift.slope = 0.0;
        if let Some(&latest) = raw.first() {
            self.last = latest;
        }
    }

    /// Whether a deserialised state is one [`Forecaster`] can run on without panicking or
    /// producing non-finite forecasts; rebuilds what the parameters imply.
    fn check(&mut self) -> Result<(), ModelError> {
        self.params
            .validate()
            .map_err(|error| ModelError::InvalidState(error.to_string()))?;
        self.derived = Derived::new(&self.params);
        let invalid = |what: String| ModelError::InvalidState(what);
        let lags = self.derived.lags;
        self.ar.check(&lags).map_err(invalid)?;
        let wants_log = matches!(self.params.seasons.primary(), Some(SeasonSpec::Steps(_)));
        match &self.ar_log {
            Some(ar_log) if wants_log => ar_log.check(&lags).map_err(invalid)?,
            None if !wants_log => {}
            _ => return Err(invalid("the ar_log member does not fit the seasons".into())),
        }
        self.season.check(&self.params.seasons).map_err(invalid)?;
        self.scoring.check(&self.derived.bands).map_err(invalid)?;
        self.clock.check().map_err(invalid)?;
        let scalars = [
            self.last,
            self.trend.level,
            self.trend.slope,
            self.drift.slope,
            self.mean_sq_error,
            self.pending_offset,
            self.shift_rate,
            self.low,
            self.high,
            self.run_clipping,
        ];
        if !scalars
            .iter()
            .chain(&self.clipped_raw)
            .all(|value| value.is_finite())
        {
            return Err(invalid("a number is not finite".into()));
        }
        if self.mean_sq_error < 0.0 || !(0.0..=1.0).contains(&self.shift_rate) {
            return Err(invalid("a variance or rate is out of range".into()));
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Forecaster {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut state = ForecasterState::deserialize(deserializer)?;
        state.check().map_err(serde::de::Error::custom)?;
        Ok(Self { state })
    }
}

impl fmt::Display for ForecastParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lags={} forgetting={} interval_z={} horizon={} damping={}",
            self.lags, self.forgetting, self.interval_z, self.horizon, self.damping
        )?;
        for spec in self.seasons.as_slice() {
            match *spec {
                SeasonSpec::Steps(steps) => write!(f, " season={steps} steps")?,
                SeasonSpec::Duration { period_ms, bins } => {
                    write!(f, " season={period_ms} ms in {bins} bins")?
                }
            }
        }
        if let Some(min) = self.min {
            write!(f, " min={min}")?;
        }
        if let Some(max) = self.max {
            write!(f, " max={max}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
