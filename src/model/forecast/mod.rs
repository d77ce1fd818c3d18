//! Forecasting of a scalar series, 1..=`horizon` steps ahead: an online blend of simple
//! forecasters.
//!
//! # Members
//! - `last`: the naive forecast, the last value (flat for every step).
//! - `trend`: damped-trend exponential smoothing (Holt, damping φ), with additive seasonal
//!   indices (Holt–Winters) when a season is configured; the `members` submodule has the gains.
//! - `seasonal` (only with a season): for [`SeasonSpec::Steps`] the value one season before the
//!   target step; for [`SeasonSpec::Duration`] an exponentially weighted profile per phase bin.
//! - `ar`: recursive least squares on the last `lags` values plus an intercept (see the `ar`
//!   submodule), k steps ahead by iterating its one-step forecast.
//!
//! # Blend
//! Each member's a priori one-step errors feed an exponentially weighted mean squared error
//! `E_m` (weights `1/n`, then at least 0.01: a memory of about 100 readings). A member joins
//! the blend after 10 scored errors; the weights are
//! `w_m ∝ exp(−η (E_m − E_best) / E_best)` with η = 10, renormalised over the members that can
//! forecast the target step (a seasonal member has no value for a bin it has never seen).
//! Before any member qualifies the blend is the last value.
//!
//! Why this rule: squared error is convex, so the blend's error is at most the weighted mean of
//! its members' errors, and with these weights that mean exceeds the best member's by at most
//! `Σ_m r_m e^{−η r_m} ≤ (M − 1)/(e·η) ≈ 11 %` of it (`r_m` = relative excess error, M = 4) — in
//! practice far less, because a clearly worse member (r ≳ 0.3) gets a weight below 5 %, and
//! members that are about equally good share the weight, and averaging forecasters whose errors
//! are not perfectly correlated is where the blend beats its best member. Inverse-error weights
//! were rejected: they keep a 2× worse member at a third of the weight of the best one, which
//! costs several percent on a random walk where `last` is optimal. Relative (not absolute)
//! error makes η scale-free. The same weights are used for every step of the horizon (errors
//! are only scored one step ahead).
//!
//! # Intervals
//! `value ± z·σ·√k` for step k, where σ² is the mean squared a priori one-step error of the
//! blend (weights `1/n`, then `1 − λ` with the forgetting factor λ). The √k scaling is exact for
//! a random walk and conservative (too wide) for mean-reverting series, whose error variance
//! levels off; it ignores the estimation error of the members' parameters. For the second
//! reading, when no error has been seen yet, the interval is deliberately wide:
//! `±z·max(|value|, 1)·√k`.
//!
//! # Spikes and level shifts
//! Once σ is established (`2(lags + 1) + 10` residuals), an a priori blend error beyond `3σ` is
//! clipped to `±3σ`, and every member learns the same clipped value (forecast ± 3σ), so a spike
//! neither moves any member much nor sits in a window or a season ring. A level shift is not a
//! spike: after [`MAX_CLIPPED_RUN`] consecutive outliers the next one is accepted unclipped, the
//! raw values of the clipped readings are restored (AR window, season ring, last value), the
//! AR intercept is opened and the trend level re-anchored, so the blend follows a 50σ shift
//! within a few readings.
//!
//! # Time
//! [`Forecaster::learn_at`] takes the reading's event time. It places a duration season's phase
//! and estimates the typical interval between readings (EW mean of the positive Δt) to place
//! the next steps. [`OnlineModel::learn_one`] uses a synthetic time one typical interval after
//! the last reading: right for step seasons and no season, whose members ignore time; a
//! duration season needs `learn_at`.
//!
//! Non-finite values (and magnitudes beyond 1e100) are ignored. Nothing on the update path
//! allocates: rings are allocated in [`Forecaster::new`], scratch vectors live on the stack.
//! State: `O(lags² + slots)` numbers, `slots` = 2·steps or 2·bins (+ a visit count per bin).

mod ar;
mod members;

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use self::ar::ArMember;
use self::members::{Clock, Season, Trend};
use super::{ModelError, OnlineModel, Prediction};

/// Largest accepted number of lags.
pub const MAX_LAGS: usize = 32;
/// Largest accepted horizon.
pub const MAX_HORIZON: usize = 64;
/// Largest accepted [`SeasonSpec::Steps`] season.
pub const MAX_SEASON_STEPS: usize = 10_000;
/// Largest accepted number of phase bins of a [`SeasonSpec::Duration`] season.
pub const MAX_SEASON_BINS: usize = 1440;
/// Consecutive outliers that are clipped before the next one is taken for a level shift.
pub const MAX_CLIPPED_RUN: usize = 2;
/// Number of blend members.
pub const MEMBERS: usize = 4;
/// Member names, in the order of [`Forecaster::member_weights`].
pub const MEMBER_NAMES: [&str; MEMBERS] = ["last", "trend", "seasonal", "ar"];

/// Index of the `last` member (the fallback of the blend).
const LAST: usize = 0;

/// A priori errors beyond this many residual standard deviations are clipped.
const CLIP_SIGMAS: f64 = 3.0;
/// Targets of larger magnitude are ignored like non-finite ones (their squares would overflow).
const MAX_ABS_VALUE: f64 = 1e100;
/// Member forecasts of larger magnitude (or not finite) are left out: squared errors of such
/// forecasts would overflow.
const MAX_FORECAST: f64 = 1e150;
/// Scored errors before a member joins the blend.
const BLEND_WARMUP: u64 = 10;
/// Smallest weight of a new squared error in a member's mean (memory ≈ 100 readings).
const BLEND_ERROR_MIN_WEIGHT: f64 = 0.01;
/// η of the exponential weights on relative excess error.
const BLEND_SHARPNESS: f64 = 10.0;

/// Seasonality of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeasonSpec {
    /// A season of this many readings (2..=10 000), for regular sampling: the `seasonal`
    /// member forecasts the value one season back (a ring of the last `n` values).
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

/// Parameters of a [`Forecaster`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ForecastParams {
    /// Number of past values the `ar` member uses (1..=32, default 4).
    pub lags: usize,
    /// RLS forgetting factor λ in [0.9, 1] (default 0.995, a memory of about 200 readings);
    /// 1 never forgets. Also the memory of the residual variance.
    pub forgetting: f64,
    /// Half-width of the one-step prediction interval in residual standard deviations (> 0,
    /// default 1.96 ≈ 95 % for Gaussian residuals).
    pub interval_z: f64,
    /// Seasonality, if any (default `None`).
    pub season: Option<SeasonSpec>,
    /// Number of steps forecast by [`Forecaster::forecast_into`] (1..=64, default 1).
    pub horizon: usize,
    /// Trend damping φ in (0, 1] (default 0.98); 1 is Holt's undamped linear trend.
    pub damping: f64,
}

impl Default for ForecastParams {
    fn default() -> Self {
        Self {
            lags: 4,
            forgetting: 0.995,
            interval_z: 1.96,
            season: None,
            horizon: 1,
            damping: 0.98,
        }
    }
}

impl ForecastParams {
    /// Check every parameter's range.
    ///
    /// # Errors
    /// [`ModelError::InvalidParams`] naming every parameter out of range, its value and the
    /// accepted range.
    pub fn validate(&self) -> Result<(), ModelError> {
        let mut problems = Vec::new();
        if !(1..=MAX_LAGS).contains(&self.lags) {
            problems.push(format!(
                "lags must be between 1 and {MAX_LAGS} (got {})",
                self.lags
            ));
        }
        if !(0.9..=1.0).contains(&self.forgetting) {
            problems.push(format!(
                "forgetting must be between 0.9 and 1 (got {})",
                self.forgetting
            ));
        }
        if !(self.interval_z.is_finite() && self.interval_z > 0.0) {
            problems.push(format!(
                "interval_z must be a finite number > 0 (got {})",
                self.interval_z
            ));
        }
        match self.season {
            None => {}
            Some(SeasonSpec::Steps(steps)) if !(2..=MAX_SEASON_STEPS).contains(&steps) => {
                problems.push(format!(
                    "season steps must be between 2 and {MAX_SEASON_STEPS} (got {steps})"
                ));
            }
            Some(SeasonSpec::Steps(_)) => {}
            Some(SeasonSpec::Duration { period_ms, bins }) => {
                if !(1..=i64::MAX as u64).contains(&period_ms) {
                    problems.push(format!(
                        "season period_ms must be between 1 and {} (got {period_ms})",
                        i64::MAX
                    ));
                }
                if !(2..=MAX_SEASON_BINS).contains(&bins) {
                    problems.push(format!(
                        "season bins must be between 2 and {MAX_SEASON_BINS} (got {bins})"
                    ));
                }
            }
        }
        if !(1..=MAX_HORIZON).contains(&self.horizon) {
            problems.push(format!(
                "horizon must be between 1 and {MAX_HORIZON} (got {})",
                self.horizon
            ));
        }
        if !(self.damping > 0.0 && self.damping <= 1.0) {
            problems.push(format!("damping must be in (0, 1] (got {})", self.damping));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError::InvalidParams(problems.join("; ")))
        }
    }
}

/// Forecaster of a scalar series: an online blend of the `last`, `trend`, `seasonal` and `ar`
/// members, 1..=`horizon` steps ahead; see the [module documentation](self) for the design.
///
/// The struct is the whole model state. It serialises with serde; deserialising checks that
/// the state is consistent (shapes, finiteness, parameters) and fails rather than producing a
/// model that could panic or emit `NaN`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Forecaster {
    state: ForecasterState,
}

/// The serialised fields of a [`Forecaster`]. Kept separate so that deserialisation can go
/// through [`ForecasterState::check`]. Field order is the postcard format: append only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ForecasterState {
    params: ForecastParams,
    /// The `last` member: the latest accepted (possibly clipped) value.
    last: f64,
    trend: Trend,
    season: Season,
    ar: ArMember,
    clock: Clock,
    /// Per member: EW mean squared a priori one-step error.
    member_errors: [f64; MEMBERS],
    /// Per member: errors folded into `member_errors`.
    member_scored: [u64; MEMBERS],
    /// Per member: unnormalised blend weight (0 until the member has qualified).
    member_weights: [f64; MEMBERS],
    /// Running mean of squared a priori blend errors (σ², original units).
    mean_sq_error: f64,
    /// Number of blend errors folded into `mean_sq_error`.
    residuals: u64,
    /// Consecutive readings whose a priori error was beyond the clipping threshold.
    outlier_run: u32,
    /// Raw values of the latest clipped readings, most recent first (entry j is valid while
    /// `j < outlier_run`).
    clipped_raw: [f64; MAX_CLIPPED_RUN],
    /// Accepted learn calls.
    updates: u64,
}

impl Forecaster {
    /// A fresh forecaster.
    ///
    /// # Errors
    /// [`ModelError::InvalidParams`] when `params` fail [`ForecastParams::validate`].
    pub fn new(params: ForecastParams) -> Result<Self, ModelError> {
        params.validate()?;
        Ok(Self {
            state: ForecasterState {
                params,
                last: 0.0,
                trend: Trend {
                    level: 0.0,
                    slope: 0.0,
                },
                season: Season::new(params.season),
                ar: ArMember::new(params.lags),
                clock: Clock::new(),
                member_errors: [0.0; MEMBERS],
                member_scored: [0; MEMBERS],
                member_weights: [0.0; MEMBERS],
                mean_sq_error: 0.0,
                residuals: 0,
                outlier_run: 0,
                clipped_raw: [0.0; MAX_CLIPPED_RUN],
                updates: 0,
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
    /// but do not count as intervals. Non-finite `y` (and |y| > 1e100) leave the model
    /// unchanged.
    pub fn learn_at(&mut self, time_ms: i64, y: f64) {
        if !(y.is_finite() && y.abs() <= MAX_ABS_VALUE) {
            return;
        }
        self.state.learn(time_ms, y);
    }

    /// Move the forecaster past a reading at `time_ms` without learning it, e.g. one flagged
    /// as an anomaly: every member moves on with the blend's forecast as an imputed value, so a
    /// step season stays in phase, and no weight, error statistic or [`updates`] count
    /// changes. Does nothing before the first value.
    ///
    /// [`updates`]: OnlineModel::updates
    pub fn skip_at(&mut self, time_ms: i64) {
        self.state.skip(time_ms);
    }

    /// [`skip_at`](Self::skip_at) with a synthetic time one typical interval after the last
    /// reading (for step seasons and no season).
    pub fn skip(&mut self) {
        let time_ms = self.state.clock.synthetic_next(self.state.updates == 0);
        self.state.skip(time_ms);
    }

    /// Forecasts for 1..=`n` steps ahead into `out[..n]`, `n = min(out.len(), horizon)`;
    /// returns `n`, or 0 (leaving `out` alone) before the first value. Step k's interval is
    /// `value ± z·σ·√k` (see the module documentation).
    pub fn forecast_into(&self, out: &mut [Prediction]) -> usize {
        self.state.forecast_into(out)
    }

    /// Standard deviation of the blend's a priori one-step errors so far (original units);
    /// `None` before the first error.
    pub fn residual_std(&self) -> Option<f64> {
        (self.state.residuals > 0).then(|| self.state.mean_sq_error.sqrt())
    }

    /// The members' blend weights for the next step, by name (see [`MEMBER_NAMES`]); they sum
    /// to 1 once the first value has been seen (all weight on `last` until another member has
    /// qualified), and are all 0 before.
    pub fn member_weights(&self) -> [(&'static str, f64); MEMBERS] {
        let state = &self.state;
        let mut weights = [0.0; MEMBERS];
        if state.updates > 0 {
            let forecasts = state.member_forecasts_ahead(1, state.params.damping, 0.0);
            state.normalised_weights(&forecasts, &mut weights);
        }
        let mut named = [("", 0.0); MEMBERS];
        for ((entry, name), weight) in named.iter_mut().zip(MEMBER_NAMES).zip(weights) {
            *entry = (name, weight);
        }
        named
    }

    /// Root mean squared a priori one-step error of each member (recent, EW), by name; `None`
    /// for a member that has not forecast yet.
    pub fn member_rmse(&self) -> [(&'static str, Option<f64>); MEMBERS] {
        let state = &self.state;
        let mut named = [("", None); MEMBERS];
        for (m, entry) in named.iter_mut().enumerate() {
            *entry = (
                MEMBER_NAMES[m],
                (state.member_scored[m] > 0).then(|| state.member_errors[m].sqrt()),
            );
        }
        named
    }

    /// The `ar` member's autoregressive coefficients, most recent lag first. They are the same
    /// in original and normalised units; all zero until the member has learnt.
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
        let state = &self.state;
        if state.updates == 0 {
            return None;
        }
        let forecasts = state.member_forecasts_ahead(1, state.params.damping, 0.0);
        Some(state.prediction(state.blend(&forecasts), 1))
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

impl ForecasterState {
    fn seasonal(&self) -> bool {
        self.params.season.is_some()
    }

    /// Member forecasts for the reading `steps` ahead of the last one, with `damped` =
    /// φ + … + φᵏ; the `ar` entry is `ar_ahead` for steps > 1 (computed by the caller once for
    /// all steps) and the member's own one-step forecast for step 1.
    fn member_forecasts_ahead(
        &self,
        steps: usize,
        damped: f64,
        ar_ahead: f64,
    ) -> [Option<f64>; MEMBERS] {
        let slot = self
            .season
            .slot_ahead(self.params.season, &self.clock, steps);
        let ar = if steps == 1 {
            self.ar.forecast()
        } else {
            Some(ar_ahead)
        };
        self.member_forecasts(slot, damped, ar)
    }

    /// Member forecasts for a target in `slot`; a member that has no forecast, or whose
    /// forecast is not a finite number of a sane magnitude, is `None` (left out of the blend
    /// and not scored).
    fn member_forecasts(
        &self,
        slot: Option<usize>,
        damped: f64,
        ar: Option<f64>,
    ) -> [Option<f64>; MEMBERS] {
        let sane = |value: Option<f64>| value.filter(|v| v.abs() <= MAX_FORECAST);
        [
            Some(self.last),
            sane(
                self.trend
                    .forecast(&self.season, self.seasonal(), slot, damped),
            ),
            if self.seasonal() {
                self.season.seasonal_forecast(slot)
            } else {
                None
            },
            sane(ar),
        ]
    }

    /// Blend weights over the members that have a forecast, summing to 1 (all on `last` when
    /// none has qualified).
    fn normalised_weights(&self, forecasts: &[Option<f64>; MEMBERS], out: &mut [f64; MEMBERS]) {
        let mut total = 0.0;
        for ((weight, forecast), &raw) in out.iter_mut().zip(forecasts).zip(&self.member_weights) {
            *weight = if forecast.is_some() { raw } else { 0.0 };
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

    /// The blended forecast; `last` when no qualified member has a forecast.
    fn blend(&self, forecasts: &[Option<f64>; MEMBERS]) -> f64 {
        let (mut sum, mut total) = (0.0, 0.0);
        for (forecast, &weight) in forecasts.iter().zip(&self.member_weights) {
            if let Some(value) = forecast {
                if weight > 0.0 {
                    sum += weight * value;
                    total += weight;
                }
            }
        }
        if total > 0.0 {
            sum / total
        } else {
            self.last
        }
    }

    /// The prediction for step `steps` with its interval.
    fn prediction(&self, value: f64, steps: usize) -> Prediction {
        let z = self.params.interval_z;
        let spread = if self.residuals == 0 {
            // One value seen, no error yet: nothing is known about the spread.
            value.abs().max(1.0)
        } else {
            self.mean_sq_error.sqrt()
        };
        let half_width = z * spread * (steps as f64).sqrt();
        Prediction {
            value,
            lower: value - half_width,
            upper: value + half_width,
        }
    }

    fn forecast_into(&self, out: &mut [Prediction]) -> usize {
        if self.updates == 0 {
            return 0;
        }
        let steps = out.len().min(self.params.horizon);
        let mut ar = [0.0; MAX_HORIZON];
        let ar_ready = self.ar.forecast_steps(&mut ar[..steps]);
        let damping = self.params.damping;
        let (mut power, mut damped) = (1.0, 0.0);
        for (index, prediction) in out.iter_mut().take(steps).enumerate() {
            let k = index + 1;
            power *= damping;
            damped += power;
            let slot = self.season.slot_ahead(self.params.season, &self.clock, k);
            let forecasts = self.member_forecasts(slot, damped, ar_ready.then_some(ar[index]));
            *prediction = self.prediction(self.blend(&forecasts), k);
        }
        steps
    }

    /// Averaging weight of the `n`-th sample: `1/n`, then `1 − λ`.
    fn averaging_weight(&self, n: u64) -> f64 {
        (1.0 / n as f64).max(1.0 - self.params.forgetting)
    }

    /// Residuals needed before σ is trusted for clipping: enough for RLS to have converged.
    fn clip_warmup(&self) -> u64 {
        2 * (self.params.lags as u64 + 1) + 10
    }

    fn learn(&mut self, time_ms: i64, y: f64) {
        let first = self.updates == 0;
        let damping = self.params.damping;
        let slot = self.season.slot_at(self.params.season, time_ms);
        let mut accepted = y;
        let mut shift = false;
        if !first {
            let mut forecasts = self.member_forecasts(slot, damping, self.ar.forecast());
            let mut forecast = self.blend(&forecasts);
            let mut error = y - forecast;
            let threshold = CLIP_SIGMAS * self.mean_sq_error.sqrt();
            let established = self.residuals >= self.clip_warmup();
            if established && error.abs() > threshold {
                self.outlier_run = self.outlier_run.saturating_add(1);
                let run = self.outlier_run as usize;
                if run <= MAX_CLIPPED_RUN {
                    error = threshold.copysign(error);
                    accepted = forecast + error;
                    self.clipped_raw.copy_within(..MAX_CLIPPED_RUN - 1, 1);
                    self.clipped_raw[0] = y;
                } else if run == MAX_CLIPPED_RUN + 1 {
                    // A level shift, not a spike: put the clipped readings back as they were
                    // and forecast again from the real recent past.
                    self.restore_clipped();
                    shift = true;
                    forecasts = self.member_forecasts(slot, damping, self.ar.forecast());
                    forecast = self.blend(&forecasts);
                    error = y - forecast;
                }
            } else {
                self.outlier_run = 0;
            }
            self.score_members(&forecasts, accepted);
            self.residuals += 1;
            let alpha = self.averaging_weight(self.residuals);
            self.mean_sq_error += alpha * (error * error - self.mean_sq_error);
        }
        self.trend
            .learn(&mut self.season, slot, accepted, damping, first, shift);
        self.season.record(slot, accepted);
        self.ar.learn(accepted, self.params.forgetting);
        self.last = accepted;
        self.clock.observe(time_ms, first);
        self.updates += 1;
    }

    fn skip(&mut self, time_ms: i64) {
        if self.updates == 0 {
            return;
        }
        let damping = self.params.damping;
        let slot = self.season.slot_at(self.params.season, time_ms);
        let forecasts = self.member_forecasts(slot, damping, self.ar.forecast());
        let imputed = self.blend(&forecasts);
        self.trend.skip(damping);
        self.season.skip(slot, imputed);
        self.ar.skip(imputed);
        self.last = imputed;
        self.clock.observe(time_ms, false);
        // The clipped readings are no longer the most recent ones.
        self.outlier_run = 0;
    }

    /// Fold each member's error against the accepted value into its mean and refresh the
    /// blend weights.
    fn score_members(&mut self, forecasts: &[Option<f64>; MEMBERS], accepted: f64) {
        for ((forecast, error_mean), scored) in forecasts
            .iter()
            .zip(self.member_errors.iter_mut())
            .zip(self.member_scored.iter_mut())
        {
            if let Some(value) = forecast {
                let error = accepted - value;
                *scored += 1;
                let alpha = (1.0 / *scored as f64).max(BLEND_ERROR_MIN_WEIGHT);
                *error_mean += alpha * (error * error - *error_mean);
            }
        }
        let best = self
            .member_errors
            .iter()
            .zip(&self.member_scored)
            .filter(|(_, &scored)| scored >= BLEND_WARMUP)
            .map(|(&error, _)| error)
            .fold(f64::INFINITY, f64::min);
        let reference = best.max(f64::MIN_POSITIVE);
        for ((weight, &error), &scored) in self
            .member_weights
            .iter_mut()
            .zip(&self.member_errors)
            .zip(&self.member_scored)
        {
            *weight = if scored >= BLEND_WARMUP {
                (-BLEND_SHARPNESS * ((error - best) / reference).min(100.0)).exp()
            } else {
                0.0
            };
        }
    }

    /// After a level shift: the clipped readings were real, put them back.
    fn restore_clipped(&mut self) {
        let count = MAX_CLIPPED_RUN.min(self.updates as usize);
        let raw = &self.clipped_raw[..count];
        self.ar.restore_recent(raw);
        self.ar.open_intercept();
        self.season.restore_recent(raw);
        if let Some(&latest) = raw.first() {
            self.last = latest;
        }
    }

    /// Whether a deserialised state is one [`Forecaster`] can run on without panicking or
    /// producing non-finite forecasts.
    fn check(&self) -> Result<(), ModelError> {
        self.params
            .validate()
            .map_err(|error| ModelError::InvalidState(error.to_string()))?;
        let invalid = |what: String| ModelError::InvalidState(what);
        self.ar.check(self.params.lags).map_err(invalid)?;
        self.season.check(self.params.season).map_err(invalid)?;
        self.clock.check().map_err(invalid)?;
        let scalars = [
            self.last,
            self.trend.level,
            self.trend.slope,
            self.mean_sq_error,
        ];
        let all_finite = scalars
            .iter()
            .chain(&self.member_errors)
            .chain(&self.member_weights)
            .chain(&self.clipped_raw)
            .all(|value| value.is_finite());
        if !all_finite {
            return Err(invalid("a number is not finite".into()));
        }
        let negative = self.mean_sq_error < 0.0
            || self
                .member_errors
                .iter()
                .chain(&self.member_weights)
                .any(|&value| value < 0.0);
        if negative {
            return Err(invalid("a variance or weight is negative".into()));
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Forecaster {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let state = ForecasterState::deserialize(deserializer)?;
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
        match self.season {
            None => Ok(()),
            Some(SeasonSpec::Steps(steps)) => write!(f, " season={steps} steps"),
            Some(SeasonSpec::Duration { period_ms, bins }) => {
                write!(f, " season={period_ms} ms in {bins} bins")
            }
        }
    }
}

#[cfg(test)]
mod tests;
