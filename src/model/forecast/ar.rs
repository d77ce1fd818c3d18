//! The `ar` and `ar_log` members: recursive least squares (RLS) with a forgetting factor on a
//! set of lagged values plus an intercept.
//!
//! # The lags
//! [`LagSet`] holds the lags, built once from the parameters: the short lags `1..=lags`, and for
//! every step season `m` the lags `m − 1, m, m + 1` (plus `2m − 1, 2m, 2m + 1` for the shortest
//! season). A seasonal lag and its two neighbours let the regression express the seasonal
//! naive forecast (`y_{t+1−m}`), the seasonal random walk with drift
//! (`y_t + y_{t+1−m} − y_{t−m}`) and a cycle whose period is not exactly `m` readings (real
//! daily cycles drift by an hour a day on some M4 series), and the second season back averages
//! out one noisy day. This is a sparse seasonal AR (SARIMA's autoregressive part, estimated
//! online). On the M4 Hourly dev half it is by far the strongest member (BENCHMARKS.md).
//!
//! # Why RLS
//! RLS needs no learning rate, converges in a few dozen samples and, with the internal
//! normalisation below, does not care whether the series is in pascals (1e5) or in volts
//! (1e-3). Its O(p²) cost is fine for p ≤ 45 inputs.
//!
//! # How the pieces fit
//! - **History.** A ring of the last `max lag` values (in the member's own units: the `ar_log`
//!   member is fed `ln y`). The parent's `seasonal` member reads the seasonal naive forecast from
//!   the `ar` ring, so the values are kept once.
//! - **Normalisation.** Inputs and target are centred and scaled by a running mean and
//!   standard deviation (`z = (y − m) / s`) so that the intercept and the lag columns are not
//!   nearly collinear at a large offset, and so that the initial covariance and the covariance
//!   cap mean the same thing at any scale. Lag coefficients are invariant under this change of
//!   coordinates; only the intercept is not, so whenever `(m, s)` moves the intercept weight is
//!   re-anchored to keep the model's forecast in the original units unchanged, and P is
//!   carried along with the centre ([`ArMember::shift_covariance`]): the readings already
//!   learnt are re-expressed around the new centre instead of being taken as centred on it.
//!   That matters for trending series, whose mean moves every step: without it a ramp's lags
//!   look like the same constant for ever and its slope never enters P. Normalisation is thus
//!   a conditioning device and not a moving target for the learner. The running mean and
//!   variance use weights `1/n` (Welford) until `n` reaches the forgetting memory
//!   `1/(1 − λ)`, then `1 − λ`.
//! - **Regularised forgetting.** Forgetting fades the prior `w ~ N(0, δ I)` too, which leaves
//!   the directions a collinear window does not excite (a ramp: `y_{t−2} = y_{t−1} − c`) with
//!   no information, and their weights free to drift to 1e40. The prior is therefore
//!   forgotten towards itself: the information gets `(1 − λ) δ⁻¹ I` back every step
//!   ([`ArMember::regularise`]), a permanent ridge of `δ⁻¹ = 0.01` in normalised units.
//! - **Covariance wind-up guard.** With forgetting, directions of P that the input does not
//!   excite would grow by 1/λ per step (a constant signal overflows P within ~150k steps at
//!   λ = 0.995); the ridge above keeps them near δ. As a second guard the trace of P is capped
//!   at its initial value `p · δ`: when an update exceeds it, P is rescaled. In normal
//!   operation trace(P) ≈ p(1 − λ) ≪ cap, so the cap only acts during wind-up, and when the
//!   signal starts moving again the model adapts as fast as a fresh one. P is kept exactly
//!   symmetric (every rank-one downdate is written with a symmetric product), and reset to
//!   `δ·I` if it ever stops being positive on its diagonal.
//! - **Spikes and level shifts** are handled by the blend (see the parent module): this member
//!   learns the clipped value the blend hands it, and after a level shift the blend puts the raw
//!   values back into the ring ([`ArMember::restore_recent`]), moves the older history to the
//!   new level ([`ArMember::shift_level`]) and opens the intercept
//!   ([`ArMember::open_intercept`]).
//!
//! Nothing on the update path allocates: the input and gain vectors live on the stack.

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use super::{SeasonSpec, Seasons, MAX_HORIZON, MAX_LAGS, MAX_SEASONS};

/// Lags of the regression at most: the short lags, three per season and three for the second
/// multiple of the shortest season.
pub(super) const MAX_AR_LAGS: usize = MAX_LAGS + 3 * MAX_SEASONS + 3;
/// Inputs of the regression at most: the lags plus the intercept.
const MAX_INPUTS: usize = MAX_AR_LAGS + 1;
/// Errors beyond this many mean absolute errors are clipped before the RLS learns them
/// (≈ 3.75 σ for Gaussian errors: almost never in normal operation).
const HUBER_SCALES: f64 = 3.0;
/// The Huber scale is at least this fraction of the series' standard deviation.
const HUBER_FLOOR: f64 = 0.1;
/// Errors learnt unclipped first, to set the scale.
const HUBER_WARMUP: u64 = 10;
/// A growth of the normalisation scale beyond this factor in one reading is carried into P.
const SCALE_JUMP: f64 = 1.01;
/// Normalised inputs beyond this skip the RLS step (see [`ArMember::learn`]).
const MAX_NORMALISED_INPUT: f64 = 1e3;
/// Initial covariance δ (in normalised units): a weak prior, |w| of a few units is plausible.
pub(super) const INITIAL_COVARIANCE: f64 = 100.0;
/// The normalisation scale is at least this fraction of |mean| (a constant signal has s = 0).
const SCALE_FLOOR_RELATIVE: f64 = 1e-9;
/// … and at least this (a constant zero signal has m = s = 0).
const SCALE_FLOOR_ABSOLUTE: f64 = 1e-30;

/// The lags of the `ar` members, ascending and distinct; derived from the parameters (not
/// stored with the state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LagSet {
    /// Lags fit in u16: at most 2 × 10 000 + 1 (a key's state holds one, so it is kept small).
    lags: [u16; MAX_AR_LAGS],
    len: u8,
}

impl LagSet {
    /// The short lags `1..=short`, and the seasonal lags of every step season in `seasons`.
    pub(super) fn new(short: usize, seasons: &Seasons) -> Self {
        let mut set = Self {
            lags: [0; MAX_AR_LAGS],
            len: 0,
        };
        for lag in 1..=short.min(MAX_LAGS) {
            set.insert(lag);
        }
        for (index, spec) in seasons.as_slice().iter().enumerate() {
            if let SeasonSpec::Steps(m) = *spec {
                for lag in [m - 1, m, m + 1] {
                    set.insert(lag);
                }
                if index == 0 {
                    for lag in [2 * m - 1, 2 * m, 2 * m + 1] {
                        set.insert(lag);
                    }
                }
            }
        }
        set
    }

    fn insert(&mut self, lag: usize) {
        let Ok(lag) = u16::try_from(lag) else { return };
        let len = usize::from(self.len);
        if lag == 0 || len == MAX_AR_LAGS {
            return;
        }
        if let Err(at) = self.lags[..len].binary_search(&lag) {
            self.lags.copy_within(at..len, at + 1);
            self.lags[at] = lag;
            self.len += 1;
        }
    }

    /// The lags, ascending.
    pub(super) fn as_slice(&self) -> &[u16] {
        &self.lags[..usize::from(self.len)]
    }

    /// The largest lag: the length of the history ring.
    pub(super) fn max(&self) -> usize {
        self.as_slice().last().map_or(1, |&lag| lag as usize)
    }
}

/// State of an RLS member. Field order is the postcard format: append only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct ArMember {
    /// The last `max lag` values (ring); `history[head]` is overwritten next.
    pub(super) history: Array1<f64>,
    /// Index of the oldest value (the next one to be overwritten).
    head: usize,
    /// Number of valid values in the ring.
    pub(super) filled: usize,
    /// RLS weights in normalised units: one per lag of the [`LagSet`], then the intercept.
    pub(super) weights: Array1<f64>,
    /// RLS inverse-correlation matrix P, p × p, symmetric (stored as its upper triangle:
    /// see [`packed_covariance`]).
    #[serde(with = "packed_covariance")]
    pub(super) covariance: Array2<f64>,
    /// Running mean of the series (normalisation centre m).
    mean: f64,
    /// Running variance of the series (normalisation scale s = √variance, floored).
    variance: f64,
    /// Values folded into the normalisation.
    count: u64,
    /// Running mean absolute a priori error (original units), the Huber scale.
    error_scale: f64,
    /// Errors folded into `error_scale`.
    errors: u64,
}

impl ArMember {
    pub(super) fn new(lags: &LagSet) -> Self {
        let inputs = lags.as_slice().len() + 1;
        Self {
            history: Array1::zeros(lags.max()),
            head: 0,
            filled: 0,
            weights: Array1::zeros(inputs),
            covariance: Array2::eye(inputs) * INITIAL_COVARIANCE,
            mean: 0.0,
            variance: 0.0,
            count: 0,
            error_scale: 0.0,
            errors: 0,
        }
    }

    /// Number of lag inputs.
    fn lags(&self) -> usize {
        self.weights.len().saturating_sub(1)
    }

    /// Whether every lag has a value.
    pub(super) fn ready(&self) -> bool {
        self.filled == self.history.len()
    }

    /// Whether the regression has learnt from at least twice as many readings as it has inputs
    /// since every lag had a value: before that its forecasts (iterated ones above all) are
    /// the transient of a fresh RLS, and scoring them would hold the member's weight down long
    /// after it has converged.
    pub(super) fn trained(&self) -> bool {
        self.ready() && self.count >= (self.history.len() + 2 * self.weights.len()) as u64
    }

    /// The value `lag` readings back (1 = the latest); `None` beyond what the ring holds.
    pub(super) fn value_at_lag(&self, lag: usize) -> Option<f64> {
        let n = self.history.len();
        if lag == 0 || lag > self.filled {
            return None;
        }
        // head is the oldest slot, so the latest is head − 1.
        let mut index = self.head + n - lag;
        if index >= n {
            index -= n;
        }
        self.history.get(index).copied()
    }

    /// Normalisation scale s.
    fn scale(&self) -> f64 {
        self.variance
            .sqrt()
            .max(SCALE_FLOOR_RELATIVE * self.mean.abs())
            .max(SCALE_FLOOR_ABSOLUTE)
    }

    /// The lag coefficients, in the order of the [`LagSet`].
    pub(super) fn lag_coefficients(&self) -> &[f64] {
        let lags = self.lags();
        self.weights
            .as_slice()
            .and_then(|weights| weights.get(..lags))
            .unwrap_or(&[])
    }

    /// The intercept in original units.
    pub(super) fn intercept(&self) -> f64 {
        let lags = self.lags();
        let lag_sum: f64 = self.weights.iter().take(lags).sum();
        let intercept = self.weights.get(lags).copied().unwrap_or(0.0);
        (1.0 - lag_sum) * self.mean + self.scale() * intercept
    }

    /// The normalised inputs of the regression for the next value: `x[..lags]` and the
    /// intercept's 1. `false` until every lag has a value.
    fn inputs(&self, lags: &LagSet, x: &mut [f64; MAX_INPUTS]) -> bool {
        let count = self.lags();
        if !self.ready() || lags.as_slice().len() != count {
            return false;
        }
        let inv_scale = 1.0 / self.scale();
        let (Some(history), n) = (self.history.as_slice(), self.history.len()) else {
            return false;
        };
        // The ring is full: lag k is at head − k (mod n), head the oldest value.
        let base = self.head + n;
        for (xi, &lag) in x.iter_mut().zip(lags.as_slice()) {
            let mut index = base - usize::from(lag);
            if index >= n {
                index -= n;
            }
            let value = history.get(index).copied().unwrap_or(self.mean);
            *xi = (value - self.mean) * inv_scale;
        }
        x[count] = 1.0;
        true
    }

    /// One-step forecast; `None` until every lag has a value.
    pub(super) fn forecast(&self, lags: &LagSet) -> Option<f64> {
        let mut x = [0.0; MAX_INPUTS];
        self.inputs(lags, &mut x).then(|| self.predict_inputs(&x))
    }

    /// The forecast in original units for the normalised inputs `x`.
    fn predict_inputs(&self, x: &[f64; MAX_INPUTS]) -> f64 {
        let normalised: f64 = self.weights.iter().zip(x).map(|(w, xi)| w * xi).sum();
        self.mean + self.scale() * normalised
    }

    /// Forecasts 1..=`out.len()` steps ahead by iterating the one-step model on its own
    /// forecasts. Returns `false` (and leaves `out` alone) until every lag has a value.
    pub(super) fn forecast_steps(&self, lags: &LagSet, out: &mut [f64]) -> bool {
        let Some(weights) = self.weights.as_slice() else {
            return false;
        };
        let count = self.lags();
        if !self.ready() || out.len() > MAX_HORIZON || lags.as_slice().len() != count {
            return false;
        }
        let scale = self.scale();
        let inv_scale = 1.0 / scale;
        let intercept = weights.get(count).copied().unwrap_or(0.0);
        // Normalised forecasts as they are made; lag k of step h reads forecast h − k when
        // k < h, else the ring at lag k − h + 1.
        let mut path = [0.0; MAX_HORIZON];
        for step in 0..out.len() {
            let mut normalised = intercept;
            for (weight, &lag) in weights.iter().zip(lags.as_slice()) {
                let lag = lag as usize;
                let z = if lag <= step {
                    path[step - lag]
                } else {
                    let value = self.value_at_lag(lag - step).unwrap_or(self.mean);
                    (value - self.mean) * inv_scale
                };
                normalised += weight * z;
            }
            path[step] = normalised;
            out[step] = self.mean + scale * normalised;
        }
        true
    }

    /// Learn the (possibly clipped) value `y`: one RLS step on the a priori error, then the
    /// normalisation and the ring.
    pub(super) fn learn(&mut self, lags: &LagSet, y: f64, forgetting: f64) {
        let mut x = [0.0; MAX_INPUTS];
        // Inputs of more than a thousand standard deviations mean the scale is stale (a
        // constant stretch has just ended, its spread was ~0): one such step would collapse
        // P to 1e-13 and stop the learning for thousands of readings. The scale catches up
        // within a reading or two; the step waits for it.
        if self.inputs(lags, &mut x) && x.iter().all(|xi| xi.abs() <= MAX_NORMALISED_INPUT) {
            let forecast = self.predict_inputs(&x);
            let error = self.robust_error(y - forecast);
            self.rls_update(&mut x, error, forgetting);
        }
        self.update_normalisation(y, forgetting);
        self.push(y);
    }

    /// The a priori error the regression learns from: clipped at [`HUBER_SCALES`] times the
    /// running mean absolute error (Huber's robust regression, online), so that a burst of
    /// large errors — a ramp the blend did not clip, the readings around a level shift —
    /// moves the weights by a bounded amount instead of wrecking them for hundreds of
    /// readings. The scale itself learns from the clipped errors, weights `1/n`, then 0.01.
    fn robust_error(&mut self, error: f64) -> f64 {
        let size = error.abs();
        if !size.is_finite() {
            return 0.0;
        }
        self.errors += 1;
        // Floored at a tenth of the series' spread: a scale learnt on a constant stretch (0)
        // must not clip every later error to nothing, which would stop the learning for good.
        let limit = HUBER_SCALES * self.error_scale.max(HUBER_FLOOR * self.scale());
        let clipped = if self.errors > HUBER_WARMUP && size > limit {
            limit.copysign(error)
        } else {
            error
        };
        let weight = (1.0 / self.errors as f64).max(0.01);
        self.error_scale += weight * (clipped.abs() - self.error_scale);
        clipped
    }

    /// Move the ring on by an imputed value without learning from it.
    pub(super) fn skip(&mut self, value: f64) {
        self.push(value);
    }

    /// Overwrite the most recent `raw.len()` values (most recent first) with `raw`: the blend
    /// puts back readings it clipped once it knows they were a level shift.
    pub(super) fn restore_recent(&mut self, raw: &[f64]) {
        let n = self.history.len();
        for (back, &value) in raw.iter().enumerate().take(self.filled) {
            let mut index = self.head + n - 1 - back;
            if index >= n {
                index -= n;
            }
            if let Some(slot) = self.history.get_mut(index) {
                *slot = value;
            }
        }
    }

    /// A level shift by `delta`: the values at lags `recent + 1..=through` (the short-term
    /// past, older than the `recent` outliers already at the new level) and the normalisation
    /// centre move by `delta`, so that the regression reads the recent past as if the series
    /// had been at the new level. The dynamics (the weights) are unchanged and the forecast
    /// moves by `delta` at once, instead of the regression taking the jump for dynamics (an
    /// AR fed a 100 → 24 drop raw forecast 310 and −535 in the readings after it on
    /// WaterFlow). The seasonal lags keep the history as it was: a drop that lasts a few
    /// hours (maintenance) must not rewrite yesterday, and a lasting shift reaches them within
    /// a season (moving the whole ring cost WaterFlow 1 % and M4 0.5 % sMAPE).
    pub(super) fn shift_level(&mut self, delta: f64, recent: usize, through: usize) {
        if !delta.is_finite() {
            return;
        }
        let n = self.history.len();
        for back in recent..through.min(self.filled) {
            let mut index = self.head + n - 1 - back;
            if index >= n {
                index -= n;
            }
            if let Some(slot) = self.history.get_mut(index) {
                *slot += delta;
            }
        }
        self.mean += delta;
    }

    fn push(&mut self, value: f64) {
        let n = self.history.len();
        if let Some(slot) = self.history.get_mut(self.head) {
            *slot = value;
            self.head = if self.head + 1 == n { 0 } else { self.head + 1 };
            self.filled = (self.filled + 1).min(n);
        }
    }

    /// Fold `value` into the running mean and variance, then re-anchor the intercept weight so
    /// that the forecast in original units does not move with the coordinates.
    fn update_normalisation(&mut self, value: f64, forgetting: f64) {
        let old_mean = self.mean;
        let old_scale = self.scale();
        self.count += 1;
        let alpha = (1.0 / self.count as f64).max(1.0 - forgetting);
        let delta = value - self.mean;
        self.mean += alpha * delta;
        self.variance = (1.0 - alpha) * (self.variance + alpha * delta * delta);
        if !self.ready() {
            // Weights are still untrained (zero): the model's prior forecast is the running mean.
            return;
        }
        let lags = self.lags();
        let new_scale = self.scale();
        if let Some(weights) = self.weights.as_slice_mut() {
            let lag_sum: f64 = weights.iter().take(lags).sum();
            if let Some(intercept) = weights.get_mut(lags) {
                *intercept =
                    (old_scale * *intercept + (old_mean - self.mean) * (1.0 - lag_sum)) / new_scale;
            }
        }
        self.shift_covariance((old_mean - self.mean) / new_scale);
        if new_scale > SCALE_JUMP * old_scale {
            // The readings learnt so far were at a smaller scale: in the new coordinates their
            // inputs are smaller by old/new, so their information R = P⁻¹ shrinks by its square
            // (P grows, up to the cap: a scale that jumps after a constant stretch starts the
            // regression afresh instead of leaving P at the 1e-13 that the stretch's tiny
            // spread made of it). A shrinking scale is not carried over (it would make P
            // tiny on a constant stretch and slow the learning when the signal returns), nor
            // is the reading-to-reading jitter of the running spread (below 1 %: a p² cost
            // per reading for nothing).
            let growth = new_scale / old_scale;
            self.covariance *= growth * growth;
            self.cap_covariance();
        }
    }

    /// Carry P along when the centre moves by `−shift` (in units of the new scale): every lag
    /// input becomes `z + shift·1`, i.e. `x' = S x` with `S = I + shift·u e_pᵀ` (u = 1 on the
    /// lags, 0 on the intercept), so the information `R = P⁻¹` of the readings already learnt
    /// becomes `S R Sᵀ` and `P' = S⁻ᵀ P S⁻¹`, as the weights become `S⁻ᵀ w` (plus the target's
    /// shift on the intercept, done by the caller).
    ///
    /// Without this the learner would see every past window as if it had been centred on
    /// today's mean. That is harmless for a stationary series, whose mean settles, but the mean
    /// of a trending series moves every step, so the lags would look the same constant for
    /// ever and the slope of the series — the lags moving relative to the intercept — would
    /// never enter P: on a ramp the regression would be unidentifiable in every coordinate
    /// system. A change of scale is not carried into P (P is read in normalised units: the
    /// prior and the cap mean the same at any scale), so after a constant stretch, whose scale
    /// is the tiny floor, P is not blown up by the first real variation.
    fn shift_covariance(&mut self, shift: f64) {
        let lags = self.lags();
        let inputs = lags + 1;
        let Some(p) = self.covariance.as_slice_mut() else {
            return;
        };
        if shift == 0.0 || !shift.is_finite() || p.len() != inputs * inputs {
            return;
        }
        // g_i = Σ_k∈lags P_ik for every row i (P e_p's partner: P u).
        let mut sums_buffer = [0.0; MAX_INPUTS];
        let sums = &mut sums_buffer[..inputs];
        for (sum, row) in sums.iter_mut().zip(p.chunks_exact(inputs)) {
            *sum = row[..lags].iter().sum();
        }
        let lag_total: f64 = sums[..lags].iter().sum();
        let corner = p[lags * inputs + lags] - 2.0 * shift * sums[lags] + shift * shift * lag_total;
        for i in 0..lags {
            let updated = p[i * inputs + lags] - shift * sums[i];
            p[i * inputs + lags] = updated;
            p[lags * inputs + i] = updated;
        }
        p[lags * inputs + lags] = corner;
        self.cap_covariance();
    }

    /// One RLS step with the a priori `error` (original units) of the inputs `x` (normalised,
    /// from [`ArMember::inputs`]).
    fn rls_update(&mut self, x_buffer: &mut [f64; MAX_INPUTS], error: f64, lambda: f64) {
        let lags = self.lags();
        let inputs = lags + 1;
        let inv_scale = 1.0 / self.scale();
        let (Some(weights), Some(p)) =
            (self.weights.as_slice_mut(), self.covariance.as_slice_mut())
        else {
            return;
        };
        if inputs > MAX_INPUTS || weights.len() != inputs || p.len() != inputs * inputs {
            return;
        }

        let mut gain_buffer = [0.0; MAX_INPUTS];
        let x = &mut x_buffer[..inputs];
        let g = &mut gain_buffer[..inputs];

        // g = P x, d = λ + xᵀ P x
        let mut denominator = lambda;
        for ((gi, row), xi) in g.iter_mut().zip(p.chunks_exact(inputs)).zip(x.iter()) {
            let mut acc = 0.0;
            for (pij, xj) in row.iter().zip(x.iter()) {
                acc += pij * xj;
            }
            *gi = acc;
            denominator += xi * acc;
        }
        let step = error * inv_scale / denominator;
        if !(denominator.is_finite() && denominator > 0.0 && step.is_finite()) {
            self.reset_covariance();
            return;
        }

        // w += P x e / d
        for (wi, gi) in weights.iter_mut().zip(g.iter()) {
            *wi += gi * step;
        }

        // P = (P − g gᵀ / d) / λ, written as P/λ − h hᵀ with h = g / √(dλ): h_i h_j = h_j h_i
        // exactly, so P stays exactly symmetric.
        let inv_lambda = 1.0 / lambda;
        let h_factor = (1.0 / (denominator * lambda)).sqrt();
        for gi in g.iter_mut() {
            *gi *= h_factor;
        }
        let h = &*g;
        let mut trace = 0.0;
        let mut min_diagonal = f64::INFINITY;
        for (i, (row, hi)) in p.chunks_exact_mut(inputs).zip(h.iter()).enumerate() {
            for (pij, hj) in row.iter_mut().zip(h.iter()) {
                *pij = *pij * inv_lambda - hi * hj;
            }
            let diagonal = row[i];
            trace += diagonal;
            min_diagonal = min_diagonal.min(diagonal);
        }

        if !(trace.is_finite() && min_diagonal > 0.0) {
            self.reset_covariance();
            return;
        }
        self.regularise(lambda);
        self.cap_covariance();
    }

    /// Regularised forgetting: forget towards the prior, not towards nothing.
    ///
    /// Plain exponential forgetting updates the information matrix `R = P⁻¹` as
    /// `R ← λR + x xᵀ`, so the prior `δ⁻¹ I` fades as λⁿ and a direction the inputs do not
    /// excite is left with no information at all: its weight is then set by rounding noise and
    /// can drift without bound. Collinear windows are common — on a ramp `y_{t−2} = y_{t−1} − c`
    /// exactly, so the lags and the intercept are linearly dependent — and there the weights
    /// reached 1e16…1e40 within 20k readings. Here `R ← λR + (1 − λ) δ⁻¹ I + x xᵀ`: the prior's
    /// ridge `δ⁻¹ |w|²` (normalised units) keeps its full strength for ever instead of fading,
    /// so `R ⪰ δ⁻¹ I` (up to the cyclic spreading below), P stays below about δ·I and, on a
    /// collinear window, the ridge picks the smallest weights that fit: bounded, and the same
    /// forecast. On a well-excited regression the bias is negligible: a ridge of 0.01 against
    /// about `1/(1 − λ) = 200` readings of unit variance (the AR(2) coefficients move by
    /// ~1e-4). It also keeps P below the trace cap on a constant signal, where plain
    /// forgetting winds it up. The full-rank term is spread over the inputs one at a time (Gunnarsson's cyclic
    /// regularisation, 1996): each step one coordinate j gets the pseudo-observation "w_j = 0"
    /// with weight `ρ = p (1 − λ) / δ`, a rank-one update like the data's, O(p²). With λ = 1
    /// the prior never fades, and ρ = 0.
    fn regularise(&mut self, lambda: f64) {
        let inputs = self.weights.len();
        let strength = inputs as f64 * (1.0 - lambda) / INITIAL_COVARIANCE;
        let (Some(weights), Some(p)) =
            (self.weights.as_slice_mut(), self.covariance.as_slice_mut())
        else {
            return;
        };
        if strength <= 0.0 || inputs == 0 || p.len() != inputs * inputs {
            return;
        }
        let j = (self.count % inputs as u64) as usize;
        let mut column_buffer = [0.0; MAX_INPUTS];
        let column = &mut column_buffer[..inputs];
        for (ci, row) in column.iter_mut().zip(p.chunks_exact(inputs)) {
            *ci = row[j];
        }
        let denominator = 1.0 + strength * column[j];
        // w −= P e_j ρ w_j / d: the a priori error of the pseudo-observation is −w_j.
        let step = strength * weights[j] / denominator;
        for (wi, ci) in weights.iter_mut().zip(column.iter()) {
            *wi -= ci * step;
        }
        // P −= ρ P e_j e_jᵀ P / d, as h hᵀ with h = P e_j √(ρ/d): exactly symmetric.
        let h_factor = (strength / denominator).sqrt();
        for ci in column.iter_mut() {
            *ci *= h_factor;
        }
        for (row, hi) in p.chunks_exact_mut(inputs).zip(column.iter()) {
            for (pij, hj) in row.iter_mut().zip(column.iter()) {
                *pij -= hi * hj;
            }
        }
    }

    /// Rescale P when its trace exceeds the initial `p · δ` (see the module documentation).
    fn cap_covariance(&mut self) {
        let inputs = self.weights.len();
        let trace: f64 = self.covariance.diag().sum();
        let cap = INITIAL_COVARIANCE * inputs as f64;
        if trace > cap {
            self.covariance *= cap / trace;
        }
    }

    /// After a level shift only the intercept is wrong (the dynamics, the lag coefficients, are
    /// unchanged): make it as uncertain as a fresh model's, so the next readings move it and not
    /// the lag coefficients. A Kalman filter would do the same with process noise on the
    /// intercept at a detected change.
    pub(super) fn open_intercept(&mut self) {
        let intercept = self.lags();
        if let Some(pii) = self.covariance.get_mut((intercept, intercept)) {
            *pii += INITIAL_COVARIANCE;
        }
    }

    fn reset_covariance(&mut self) {
        let inputs = self.lags() + 1;
        self.covariance.fill(0.0);
        for i in 0..inputs {
            if let Some(pii) = self.covariance.get_mut((i, i)) {
                *pii = INITIAL_COVARIANCE;
            }
        }
    }

    /// Whether a deserialised member for `lags` can run without panicking or producing
    /// non-finite forecasts; the error says what does not fit.
    pub(super) fn check(&self, lags: &LagSet) -> Result<(), String> {
        let inputs = lags.as_slice().len() + 1;
        let ring = lags.max();
        if self.history.len() != ring || !self.history.is_standard_layout() {
            return Err(format!(
                "ar history has {} values, expected {ring}",
                self.history.len()
            ));
        }
        if self.filled > ring || (ring > 0 && self.head >= ring) {
            return Err(format!(
                "ar ring position {} / filled {} out of {ring}",
                self.head, self.filled
            ));
        }
        if self.weights.len() != inputs || !self.weights.is_standard_layout() {
            return Err(format!("{} weights, expected {inputs}", self.weights.len()));
        }
        if self.covariance.dim() != (inputs, inputs) || !self.covariance.is_standard_layout() {
            return Err(format!(
                "covariance is {:?}, expected ({inputs}, {inputs})",
                self.covariance.dim()
            ));
        }
        let scalars = [self.mean, self.variance, self.error_scale];
        let all_finite = self
            .history
            .iter()
            .chain(self.weights.iter())
            .chain(self.covariance.iter())
            .chain(scalars.iter())
            .all(|value| value.is_finite());
        if !all_finite {
            return Err("an ar number is not finite".into());
        }
        if self.variance < 0.0 || self.error_scale < 0.0 {
            return Err("the ar variance is negative".into());
        }
        if self.covariance.diag().iter().any(|&pii| pii <= 0.0) {
            return Err("covariance has a non-positive diagonal".into());
        }
        Ok(())
    }
}

/// The stored form of the RLS covariance P: its upper triangle when P is exactly symmetric (it
/// always is: every update is written with symmetric products), which is 28 numbers instead
/// of 49 for 6 lags, 17 % of a forecast key's state (BENCHMARKS.md, "State on disk").
///
/// The first element says which form follows, so states of version 4, whose P was written by
/// ndarray's serde (`v = 1`, the shape, then every element), read with the same code: tag
/// [`FULL`](packed_covariance) is that layout byte for byte in postcard, and is still written
/// for a P that is not bit-for-bit symmetric, so the stored form never loses a bit.
mod packed_covariance {
    use std::fmt;

    use ndarray::Array2;
    use serde::de::{self, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserializer, Serializer};

    use super::MAX_INPUTS;

    /// ndarray's own layout (its format version `v = 1`): rows, columns, the number of
    /// elements, then the elements in row-major order.
    const FULL: u8 = 1;
    /// The size, then the upper triangle row by row (`P[i][j]` for `j ≥ i`).
    const PACKED: u8 = 2;

    fn exactly_symmetric(p: &Array2<f64>) -> bool {
        let (rows, cols) = p.dim();
        rows == cols
            && (0..rows).all(|i| (i + 1..cols).all(|j| p[(i, j)].to_bits() == p[(j, i)].to_bits()))
    }

    pub(super) fn serialize<S: Serializer>(p: &Array2<f64>, s: S) -> Result<S::Ok, S::Error> {
        let (rows, cols) = p.dim();
        if exactly_symmetric(p) {
            let mut t = s.serialize_tuple(2 + rows * (rows + 1) / 2)?;
            t.serialize_element(&PACKED)?;
            t.serialize_element(&rows)?;
            for i in 0..rows {
                for j in i..rows {
                    t.serialize_element(&p[(i, j)])?;
                }
            }
            t.end()
        } else {
            let mut t = s.serialize_tuple(4 + rows * cols)?;
            t.serialize_element(&FULL)?;
            t.serialize_element(&rows)?;
            t.serialize_element(&cols)?;
            t.serialize_element(&(rows * cols))?;
            for value in p.iter() {
                t.serialize_element(value)?;
            }
            t.end()
        }
    }

    struct CovarianceVisitor;

    fn next<'de, T: serde::Deserialize<'de>, A: SeqAccess<'de>>(
        seq: &mut A,
        what: &str,
    ) -> Result<T, A::Error> {
        seq.next_element()?
            .ok_or_else(|| de::Error::custom(format_args!("covariance: {what} is missing")))
    }

    fn size<E: de::Error>(n: usize) -> Result<usize, E> {
        if n > MAX_INPUTS {
            return Err(E::custom(format_args!(
                "covariance of {n} inputs, at most {MAX_INPUTS}"
            )));
        }
        Ok(n)
    }

    impl<'de> Visitor<'de> for CovarianceVisitor {
        type Value = Array2<f64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a covariance matrix (packed upper triangle or full)")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            match next::<u8, A>(&mut seq, "the layout tag")? {
                PACKED => {
                    let n = size(next(&mut seq, "the size")?)?;
                    let mut p = Array2::zeros((n, n));
                    for i in 0..n {
                        for j in i..n {
                            let value: f64 = next(&mut seq, "an element")?;
                            p[(i, j)] = value;
                            p[(j, i)] = value;
                        }
                    }
                    Ok(p)
                }
                FULL => {
                    let rows = size(next(&mut seq, "the rows")?)?;
                    let cols = size(next(&mut seq, "the columns")?)?;
                    let len: usize = next(&mut seq, "the length")?;
                    if len != rows * cols {
                        return Err(de::Error::custom(format_args!(
                            "covariance of {rows} × {cols} with {len} elements"
                        )));
                    }
                    let mut data = Vec::with_capacity(len);
                    for _ in 0..len {
                        data.push(next::<f64, A>(&mut seq, "an element")?);
                    }
                    Array2::from_shape_vec((rows, cols), data).map_err(de::Error::custom)
                }
                tag => Err(de::Error::custom(format_args!(
                    "covariance layout tag {tag}, expected {FULL} or {PACKED}"
                ))),
            }
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Array2<f64>, D::Error> {
        // A tuple as long as the form needs: the elements are read one by one after the tag.
        d.deserialize_tuple(usize::MAX, CovarianceVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Packed(#[serde(with = "packed_covariance")] Array2<f64>);

    /// A symmetric P as RLS leaves it: a few rank-one downdates of δ·I.
    fn covariance(n: usize) -> Array2<f64> {
        let mut p = Array2::eye(n) * INITIAL_COVARIANCE;
        for step in 0..5 {
            let h: Vec<f64> = (0..n).map(|i| ((i * 7 + step * 3) as f64).sin()).collect();
            for i in 0..n {
                for j in 0..n {
                    p[(i, j)] = p[(i, j)] / 0.99 - h[i] * h[j];
                }
            }
        }
        p
    }

    #[test]
    fn symmetric_covariance_is_stored_as_its_upper_triangle_bit_for_bit() {
        let p = covariance(7);
        let bytes = postcard::to_stdvec(&Packed(p.clone())).unwrap();
        assert_eq!(bytes.len(), 2 + 28 * 8, "tag, size, 28 numbers");
        let back: Packed = postcard::from_bytes(&bytes).unwrap();
        assert!(back
            .0
            .iter()
            .zip(p.iter())
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn covariance_written_by_ndarray_serde_reads_the_same() {
        // State version 4 stored P with ndarray's own serde.
        let p = covariance(5);
        let legacy = postcard::to_stdvec(&p).unwrap();
        assert_eq!(legacy.len(), 4 + 25 * 8);
        let back: Packed = postcard::from_bytes(&legacy).unwrap();
        assert_eq!(back.0, p);
    }

    #[test]
    fn asymmetric_covariance_keeps_every_element() {
        let mut p = covariance(3);
        p[(0, 1)] += 1e-12;
        let bytes = postcard::to_stdvec(&Packed(p.clone())).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&p).unwrap(), "ndarray's layout");
        let back: Packed = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.0, p);
    }

    #[test]
    fn oversized_or_inconsistent_covariance_is_rejected() {
        let mut too_big = vec![2u8];
        too_big.extend(postcard::to_stdvec(&(MAX_INPUTS + 1)).unwrap());
        assert!(postcard::from_bytes::<Packed>(&too_big).is_err());
        // Full layout claiming 2 × 2 with 3 elements.
        let mut bytes = vec![1u8, 2, 2, 3];
        bytes.extend(std::iter::repeat_n(0u8, 24));
        assert!(postcard::from_bytes::<Packed>(&bytes).is_err());
        assert!(postcard::from_bytes::<Packed>(&[7u8]).is_err());
        // Truncated packed triangle.
        let full = postcard::to_stdvec(&Packed(covariance(4))).unwrap();
        assert!(postcard::from_bytes::<Packed>(&full[..full.len() - 8]).is_err());
    }
}
