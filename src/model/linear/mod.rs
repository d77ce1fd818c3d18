//! Online linear regression `ŷ = Σ wᵢ·zᵢ + b` over up to [`MAX_FEATURES`] features, learnt one
//! reading at a time by SGD, Adagrad or recursive least squares (RLS).
//!
//! # How the pieces fit
//! - **Scaling** (`scale = true`, the default). A [`StandardScaler`] standardises the features:
//!   `zᵢ = (xᵢ − meanᵢ)/stdᵢ`. Inside [`learn_one`](LinearRegression::learn_one) the scaler
//!   learns the reading *first* and the weights are updated with the reading standardised by
//!   the *updated* statistics (River's pipeline order). That bounds every `|zᵢ|` by `√(n − 1)`, so
//!   the first readings of a feature in pascals (1e5) cannot throw the weights off. Predictions
//!   ([`predict_one`](LinearRegression::predict_one), [`explain`](LinearRegression::explain))
//!   use the statistics so far, which are exactly the "updated" statistics of the previous
//!   `learn_one`: predict and learn see one consistent scaler. Weights are stored in scaled
//!   units; [`original_coefficients`](LinearRegression::original_coefficients) converts.
//! - **Target anchoring** (SGD and Adagrad). The intercept is the running mean of the target
//!   plus a learnt offset, `b = ȳ + b₀`. With centred features the least-squares intercept *is*
//!   ȳ, so a target at 1e5 is right from the first reading instead of after 1e5/lr steps.
//! - **Adagrad in target units.** Adagrad's step `lr·g/√Σg²` is dimensionless, so the gradient
//!   is computed on the target divided by its running standard deviation `s_y` and the step is
//!   multiplied back by `s_y`: the same `learning_rate` works for a target in volts and one in
//!   pascals, and every step is at most `learning_rate·s_y` (Adagrad cannot diverge). SGD needs
//!   no such care: with scaled features its steps are already in target units, but it is only
//!   stable for `learning_rate < 2/(dim + 1)`, which [`LinearRegression::new`] checks.
//! - **RLS** works on `[z, 1]` with a plain intercept, no learning rate, and forgetting factor
//!   λ. With λ = 1 and no scaling it is exactly ridge regression with penalty `1/δ` towards its
//!   initial weights (δ = 1e6, a negligible prior), i.e. batch least squares after a few dozen
//!   readings. The initial intercept is the first target, so the prior does not pull a target
//!   at 1e5 towards 0. The trace of P is capped at its initial value (a feature that stops
//!   moving would otherwise wind P up by 1/λ per reading until it overflows) and P is reset if
//!   it stops being positive on its diagonal, as in [`Forecaster`](super::Forecaster).
//! - **Interval.** `value ± interval_z·σ`, σ² the running mean of squared *a priori* errors:
//!   errors of the weights *before* their update, on the reading standardised by the updated
//!   scaler (the error that drives the update, so it costs nothing extra). After warm-up it
//!   differs from the error of the prediction [`predict_one`](LinearRegression::predict_one)
//!   returned only by the scaler's last step, O(1/n). Weights are `max(1/n, 1 − λ)` (Welford,
//!   then exponential with a memory of `1/(1 − λ)` readings, λ the `forgetting` parameter, for
//!   every algorithm). The first reading's error is not counted (it meets an empty model).
//!   Before the first error the band is deliberately wide: `±interval_z·max(|value|, 1)`.
//!
//! # Robustness
//! A reading with a wrong number of features, a non-finite value or a magnitude beyond 1e100
//! (whose square would overflow the statistics) leaves the model unchanged and is not counted.
//! If an update would make a weight non-finite (SGD run with too large a learning rate on
//! unscaled features) the weights and accumulators are reset rather than poisoned. Predictions
//! never fail: a missing or non-finite feature is imputed with `z = 0` (its running mean).
//! Nothing on the update path allocates: the scaled features are computed on the fly (scratch
//! vectors for RLS live on the stack). With scaling off the scaler never learns and stays the
//! identity (mean 0, divisor 1), so one code path serves both settings.

use std::fmt;

use ndarray::{Array1, Array2};
use serde::{Deserialize, Deserializer, Serialize};

use super::{ModelError, OnlineModel, Prediction, StandardScaler};

/// Largest accepted number of features.
pub const MAX_FEATURES: usize = 64;
/// Features plus the intercept input.
pub(super) const MAX_INPUTS: usize = MAX_FEATURES + 1;
/// Inputs and targets of larger magnitude are rejected like non-finite ones.
pub(super) const MAX_ABS_VALUE: f64 = 1e100;
/// RLS initial covariance δ (in scaled units): ridge penalty 1/δ, negligible after a few readings.
const RLS_INITIAL_COVARIANCE: f64 = 1.0e6;
/// Added to Adagrad's `√Σg²` (dimensionless: gradients are in target standard deviations).
pub(super) const ADAGRAD_EPSILON: f64 = 1.0e-8;

/// The learning algorithm of a [`LinearRegression`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinearAlgorithm {
    /// Stochastic gradient descent on the squared error, step `learning_rate / t^power_t`.
    Sgd,
    /// Adagrad: per-weight step `learning_rate·s_y / √Σg²` (the default).
    Adagrad,
    /// Recursive least squares with forgetting factor `forgetting`: O(dim²) per reading, no
    /// learning rate, exact least squares.
    Rls,
}

/// Parameters of a [`LinearRegression`]; check them with [`validate`](Self::validate).
///
/// The defaults make a model that is accurate out of the box on features and targets of any
/// scale: Adagrad (robust to the learning rate, cannot diverge) at 0.1 on standardised
/// features, with the target-anchored intercept. River's `LinearRegression` defaults (plain SGD,
/// lr 0.01, unscaled) need a scaler in front and thousands of readings to move an intercept
/// far from 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinearParams {
    /// The learning algorithm (default [`LinearAlgorithm::Adagrad`]).
    pub algorithm: LinearAlgorithm,
    /// Base step size for SGD and Adagrad, in (0, 10] (default 0.1). Ignored by RLS. For SGD
    /// with scaling it must be below `2/(dim + 1)`.
    pub learning_rate: f64,
    /// SGD step schedule `learning_rate / t^power_t` at the t-th update, in [0, 1] (default
    /// 0: constant, which keeps tracking drift). Ignored by Adagrad (which decays by itself) and
    /// RLS.
    pub power_t: f64,
    /// L2 penalty on the feature weights (not the intercept) for SGD and Adagrad, finite ≥ 0
    /// (default 0). RLS is regularised by its prior and forgetting instead.
    pub l2: f64,
    /// Forgetting factor λ in [0.9, 1] (default 0.999, a memory of about 1000 readings): RLS
    /// discounts old readings by λ per reading; for every algorithm it sets the memory
    /// `1/(1 − λ)` of the residual σ of the interval. 1 never forgets.
    pub forgetting: f64,
    /// Standardise the features with a running [`StandardScaler`] (default true). Turn off
    /// only for features already of unit scale.
    pub scale: bool,
    /// Half-width of the prediction interval in residual standard deviations, finite > 0
    /// (default 1.96 ≈ 95 % for Gaussian residuals).
    pub interval_z: f64,
}

impl Default for LinearParams {
    fn default() -> Self {
        Self {
            algorithm: LinearAlgorithm::Adagrad,
            learning_rate: 0.1,
            power_t: 0.0,
            l2: 0.0,
            forgetting: 0.999,
            scale: true,
            interval_z: 1.96,
        }
    }
}

/// The ranges of the numeric [`LinearParams`] (the config loader reads the keys with them).
pub mod ranges {
    use crate::model::param::{common, Range};

    /// `learning_rate`.
    pub const LEARNING_RATE: Range = common::step_size("learning_rate");
    /// `power_t`: the decay exponent of SGD's step size.
    pub const POWER_T: Range =
        Range::new("power_t", "between 0 and 1", |p| (0.0..=1.0).contains(&p));
    /// `l2`.
    pub const L2: Range = common::non_negative("l2");
    /// `forgetting` (RLS).
    pub const FORGETTING: Range = common::FORGETTING;
    /// `interval_z`.
    pub const INTERVAL_Z: Range = common::INTERVAL_Z;
}

impl LinearParams {
    /// Check every parameter's range ([`ranges`]).
    ///
    /// # Errors
    /// [`ModelError::OutOfRange`] naming every parameter out of range, its value and the
    /// accepted range.
    pub fn validate(&self) -> Result<(), ModelError> {
        crate::model::param::check_all(&[
            (ranges::LEARNING_RATE, self.learning_rate),
            (ranges::POWER_T, self.power_t),
            (ranges::L2, self.l2),
            (ranges::FORGETTING, self.forgetting),
            (ranges::INTERVAL_Z, self.interval_z),
        ])
    }
}

impl fmt::Display for LinearParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "algorithm={:?} learning_rate={} power_t={} l2={} forgetting={} scale={} interval_z={}",
            self.algorithm,
            self.learning_rate,
            self.power_t,
            self.l2,
            self.forgetting,
            self.scale,
            self.interval_z
        )
    }
}

/// One feature's share of a prediction, from [`LinearRegression::explain`] or
/// [`LogisticRegression::explain`](super::LogisticRegression::explain).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contribution {
    /// Index of the feature in the input.
    pub feature: usize,
    /// `wᵢ·zᵢ` with `zᵢ` the scaled feature: these plus the model's `intercept()` sum to the
    /// prediction (the logit for logistic regression).
    pub scaled: f64,
    /// The same term in original units, `(wᵢ/σᵢ)·xᵢ`; the centring offset `−Σ wᵢ·meanᵢ/σᵢ` goes
    /// to the intercept returned by `original_coefficients`. Equal to `scaled` without scaling.
    pub original: f64,
}

/// Online linear regression (SGD, Adagrad or RLS on standardised features); see the [module
/// documentation](self) for the design.
///
/// The struct is the whole model state. It serialises with serde; deserialising checks that
/// the state is consistent (shapes, finiteness, parameters) and fails rather than producing a
/// model that could panic or emit `NaN`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct LinearRegression {
    state: LinearState,
}

/// The serialised fields of a [`LinearRegression`]. Field order is the postcard format: append
/// only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LinearState {
    params: LinearParams,
    /// Feature standardisation (learns only when `params.scale`).
    scaler: StandardScaler,
    /// `dim` feature weights (scaled units), then the intercept term: the intercept itself for
    /// RLS, its offset `b₀` from the target mean for SGD and Adagrad.
    weights: Array1<f64>,
    /// Adagrad's Σg² per weight (dimensionless); empty for the other algorithms.
    accumulators: Array1<f64>,
    /// RLS inverse-correlation matrix P, (dim + 1)², symmetric; 0 × 0 for the other
    /// algorithms.
    covariance: Array2<f64>,
    /// Running mean of the target (Welford over `updates` readings).
    target_mean: f64,
    /// Running sum of squared deviations of the target.
    target_m2: f64,
    /// Running mean of squared a priori errors (σ²).
    mean_sq_error: f64,
    /// Number of a priori errors folded into `mean_sq_error`.
    residuals: u64,
    /// Accepted `learn_one` calls.
    updates: u64,
}

impl LinearRegression {
    /// A fresh model for readings of `dim` features.
    ///
    /// # Errors
    /// [`ModelError::InvalidParams`] when `params` fail [`LinearParams::validate`], when `dim`
    /// is not in `1..=MAX_FEATURES`, or when SGD on scaled features is given a learning rate
    /// ≥ `2/(dim + 1)` (it would diverge).
    pub fn new(dim: usize, params: LinearParams) -> Result<Self, ModelError> {
        params.validate()?;
        check_dim(dim)?;
        let sgd_limit = 2.0 / (dim as f64 + 1.0);
        if params.algorithm == LinearAlgorithm::Sgd
            && params.scale
            && params.learning_rate >= sgd_limit
        {
            return Err(ModelError::InvalidParams(format!(
                "learning_rate must be < 2/(dim + 1) = {sgd_limit} for SGD on {dim} scaled \
                 features (got {}); larger steps diverge",
                params.learning_rate
            )));
        }
        let inputs = dim + 1;
        let accumulators = match params.algorithm {
            LinearAlgorithm::Adagrad => Array1::zeros(inputs),
            _ => Array1::zeros(0),
        };
        let covariance = match params.algorithm {
            LinearAlgorithm::Rls => Array2::eye(inputs) * RLS_INITIAL_COVARIANCE,
            _ => Array2::zeros((0, 0)),
        };
        Ok(Self {
            state: LinearState {
                params,
                scaler: StandardScaler::new(dim),
                weights: Array1::zeros(inputs),
                accumulators,
                covariance,
                target_mean: 0.0,
                target_m2: 0.0,
                mean_sq_error: 0.0,
                residuals: 0,
                updates: 0,
            },
        })
    }

    /// The parameters the model was built with.
    pub fn params(&self) -> &LinearParams {
        &self.state.params
    }

    /// Number of features.
    pub fn dim(&self) -> usize {
        self.state.dim()
    }

    /// Predict the target for features `x`: `value ± interval_z·σ`.
    ///
    /// Always a finite prediction: a missing (`x` shorter than `dim`) or non-finite feature is
    /// imputed with 0 in scaled units (its running mean when scaling, 0 otherwise); extra
    /// values are ignored. Before the first learnt reading the value is 0 with the wide band
    /// `±interval_z` (see the module documentation).
    pub fn predict_one(&self, x: &[f64]) -> Prediction {
        let state = &self.state;
        let value = state.value(x);
        let z = state.params.interval_z;
        let half_width = if state.residuals == 0 {
            z * value.abs().max(1.0)
        } else {
            z * state.mean_sq_error.sqrt()
        };
        Prediction {
            value,
            lower: value - half_width,
            upper: value + half_width,
        }
    }

    /// Learn that features `x` have target `y`.
    ///
    /// Ignored (the model is unchanged and the call is not counted) unless `x` has exactly
    /// `dim` values and `x` and `y` are finite with magnitude ≤ 1e100.
    pub fn learn_one(&mut self, x: &[f64], y: f64) {
        if x.len() != self.dim() || !valid_inputs(x) || !valid_value(y) {
            return;
        }
        self.state.learn(x, y);
    }

    /// Number of accepted [`learn_one`](Self::learn_one) calls (survives state round-trips).
    pub fn updates(&self) -> u64 {
        self.state.updates
    }

    /// Feature weights in scaled units (`dim` values; all zero before learning).
    pub fn weights(&self) -> &[f64] {
        let dim = self.dim();
        self.state
            .weights
            .as_slice()
            .and_then(|weights| weights.get(..dim))
            .unwrap_or(&[])
    }

    /// Intercept in scaled units: prediction = Σ weightᵢ·zᵢ + intercept.
    pub fn intercept(&self) -> f64 {
        self.state.intercept()
    }

    /// Residual standard deviation σ of the interval; `None` before the first a priori error.
    pub fn residual_std(&self) -> Option<f64> {
        (self.state.residuals > 0).then(|| self.state.mean_sq_error.sqrt())
    }

    /// The feature scaler (statistics are only updated when `params.scale`).
    pub fn scaler(&self) -> &StandardScaler {
        &self.state.scaler
    }

    /// The model in original units: writes `wᵢ/σᵢ` into `coefficients` (up to `dim` values)
    /// and returns the intercept `intercept − Σ wᵢ·meanᵢ/σᵢ`, so that
    /// prediction = Σ coefficientᵢ·xᵢ + returned intercept.
    pub fn original_coefficients(&self, coefficients: &mut [f64]) -> f64 {
        let state = &self.state;
        original_coefficients(
            &state.scaler,
            self.weights(),
            state.intercept(),
            coefficients,
        )
    }

    /// Contributions `wᵢ·zᵢ` of every feature to the prediction for `x`, the `k` largest by
    /// `|scaled|` (ties by feature index), largest first, written into `out` (cleared first;
    /// its capacity is reused, so a caller that keeps `out` allocates once). Features are
    /// imputed as in [`predict_one`](Self::predict_one): with `k ≥ dim` the `scaled` terms plus
    /// [`intercept`](Self::intercept) sum to the prediction.
    pub fn explain(&self, x: &[f64], k: usize, out: &mut Vec<Contribution>) {
        let state = &self.state;
        explain_into(&state.scaler, self.weights(), x, k, out);
    }
}

impl OnlineModel for LinearRegression {
    /// [`LinearRegression::predict_one`]; `None` before the first learnt reading and when `x`
    /// does not have `dim` values.
    fn predict_one(&self, x: &[f64]) -> Option<Prediction> {
        (self.state.updates > 0 && x.len() == self.dim())
            .then(|| LinearRegression::predict_one(self, x))
    }

    /// [`LinearRegression::learn_one`].
    fn learn_one(&mut self, x: &[f64], y: f64) {
        LinearRegression::learn_one(self, x, y);
    }

    fn updates(&self) -> u64 {
        self.state.updates
    }
}

impl LinearState {
    fn dim(&self) -> usize {
        self.scaler.dim()
    }

    fn intercept(&self) -> f64 {
        let offset = self.weights.get(self.dim()).copied().unwrap_or(0.0);
        match self.params.algorithm {
            LinearAlgorithm::Rls => offset,
            LinearAlgorithm::Sgd | LinearAlgorithm::Adagrad => self.target_mean + offset,
        }
    }

    /// Feature weights without the intercept term.
    fn feature_weights(&self) -> &[f64] {
        let dim = self.dim();
        self.weights
            .as_slice()
            .and_then(|weights| weights.get(..dim))
            .unwrap_or(&[])
    }

    /// The point prediction for `x` with the current scaler (missing features imputed).
    fn value(&self, x: &[f64]) -> f64 {
        scaled_dot(self.feature_weights(), x, &self.scaler) + self.intercept()
    }

    fn learn(&mut self, x: &[f64], y: f64) {
        if self.params.scale {
            self.scaler.learn_unchecked(x);
        }
        self.updates += 1;
        let delta = y - self.target_mean;
        self.target_mean += delta / self.updates as f64;
        self.target_m2 += delta * (y - self.target_mean);

        let error = match self.params.algorithm {
            LinearAlgorithm::Sgd => self.sgd_update(x, y),
            LinearAlgorithm::Adagrad => self.adagrad_update(x, y),
            LinearAlgorithm::Rls => self.rls_update(x, y),
        };
        // The first reading's error says nothing: it meets a model that has seen nothing.
        if self.updates > 1 && error.is_finite() {
            self.residuals += 1;
            let alpha = self.averaging_weight(self.residuals);
            self.mean_sq_error += alpha * (error * error - self.mean_sq_error);
        }
    }

    /// Weight for running averages over `n` samples: Welford until the forgetting memory is
    /// reached, exponential afterwards.
    fn averaging_weight(&self, n: u64) -> f64 {
        (1.0 / n as f64).max(1.0 - self.params.forgetting)
    }

    /// One SGD step; returns the a priori error.
    fn sgd_update(&mut self, x: &[f64], y: f64) -> f64 {
        let error = y - self.value(x);
        let params = &self.params;
        let rate = match params.power_t {
            0.0 => params.learning_rate,
            0.5 => params.learning_rate / (self.updates as f64).sqrt(),
            power => params.learning_rate / (self.updates as f64).powf(power),
        };
        let step = rate * error;
        let decay = rate * params.l2;
        let (Some(weights), mean, inv_std) = (
            self.weights.as_slice_mut(),
            self.scaler.mean(),
            self.scaler.inverse_divisors(),
        ) else {
            return error;
        };
        if !step.is_finite() || weights.is_empty() {
            return error;
        }
        let (feature_weights, intercept) = weights.split_at_mut(weights.len() - 1);
        let mut check = 0.0;
        for (((w, &xi), &m), &inv) in feature_weights.iter_mut().zip(x).zip(mean).zip(inv_std) {
            let zi = (xi - m) * inv;
            *w += step * zi - decay * *w;
            check += *w;
        }
        if let Some(b) = intercept.first_mut() {
            *b += step;
            check += *b;
        }
        if !check.is_finite() {
            self.reset_weights();
        }
        error
    }

    /// One Adagrad step; returns the a priori error.
    fn adagrad_update(&mut self, x: &[f64], y: f64) -> f64 {
        let error = y - self.value(x);
        // Gradients in target standard deviations (dimensionless), steps back in target units.
        let target_std = (self.target_m2 / self.updates as f64).sqrt();
        if target_std <= 0.0 {
            // Every target so far is the same: ȳ predicts it exactly and there is nothing to learn.
            return error;
        }
        let normalised_error = error / target_std;
        let params = &self.params;
        let step = params.learning_rate * target_std;
        let l2 = params.l2 / target_std;
        let (Some(weights), Some(accumulators), mean, inv_std) = (
            self.weights.as_slice_mut(),
            self.accumulators.as_slice_mut(),
            self.scaler.mean(),
            self.scaler.inverse_divisors(),
        ) else {
            return error;
        };
        if !normalised_error.is_finite()
            || weights.is_empty()
            || accumulators.len() != weights.len()
        {
            return error;
        }
        let features = weights.len() - 1;
        let (feature_weights, intercept) = weights.split_at_mut(features);
        let (feature_accumulators, intercept_accumulator) = accumulators.split_at_mut(features);
        let mut check = 0.0;
        for ((((w, g2), &xi), &m), &inv) in feature_weights
            .iter_mut()
            .zip(feature_accumulators.iter_mut())
            .zip(x)
            .zip(mean)
            .zip(inv_std)
        {
            // d(½e² + ½l2·w²)/dw = −e·z + l2·w.
            let gradient = l2 * *w - normalised_error * ((xi - m) * inv);
            *g2 += gradient * gradient;
            *w -= step * gradient / (g2.sqrt() + ADAGRAD_EPSILON);
            check += *w + *g2;
        }
        // The intercept (input 1) is not penalised.
        if let (Some(b), Some(g2)) = (intercept.first_mut(), intercept_accumulator.first_mut()) {
            let gradient = -normalised_error;
            *g2 += gradient * gradient;
            *b -= step * gradient / (g2.sqrt() + ADAGRAD_EPSILON);
            check += *b + *g2;
        }
        if !check.is_finite() {
            self.reset_weights();
        }
        error
    }

    /// One RLS step on the scaled input `z` (trailing 1 for the intercept); returns the a priori
    /// error.
    fn rls_update(&mut self, x: &[f64], y: f64) -> f64 {
        let inputs = self.dim() + 1;
        let mut z_buffer = [0.0; MAX_INPUTS];
        let z = &mut z_buffer[..inputs];
        self.scaler.transform_into(x, z);
        z[inputs - 1] = 1.0;
        let z = &*z;
        let lambda = self.params.forgetting;
        let (Some(weights), Some(p)) =
            (self.weights.as_slice_mut(), self.covariance.as_slice_mut())
        else {
            return f64::NAN;
        };
        if weights.len() != inputs || p.len() != inputs * inputs {
            return f64::NAN;
        }
        if self.updates == 1 {
            // Start the intercept at the first target: RLS is ridge regression towards its
            // initial weights, and a prior intercept of 0 would bias a target at 1e5 for
            // thousands of readings. The first error is then 0 (scaled features are 0 for the
            // first reading; unscaled ones meet zero weights), so only P learns from it.
            if let Some(intercept) = weights.last_mut() {
                *intercept = y;
            }
        }
        let error = y - dot(weights, z);

        let mut gain_buffer = [0.0; MAX_INPUTS];
        let g = &mut gain_buffer[..inputs];
        // g = P z, d = λ + zᵀ P z
        let mut denominator = lambda;
        for ((gi, row), zi) in g.iter_mut().zip(p.chunks_exact(inputs)).zip(z) {
            let acc = dot(row, z);
            *gi = acc;
            denominator += zi * acc;
        }
        let step = error / denominator;
        if !(denominator.is_finite() && denominator > 0.0 && step.is_finite()) {
            self.reset_covariance();
            return error;
        }

        // w += P z e / d
        let mut check = 0.0;
        for (wi, gi) in weights.iter_mut().zip(g.iter()) {
            *wi += gi * step;
            check += *wi;
        }
        if !check.is_finite() {
            self.reset_weights();
            return error;
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
        for (i, (row, hi)) in p.chunks_exact_mut(inputs).zip(h).enumerate() {
            for (pij, hj) in row.iter_mut().zip(h) {
                *pij = *pij * inv_lambda - hi * hj;
            }
            let diagonal = row[i];
            trace += diagonal;
            min_diagonal = min_diagonal.min(diagonal);
        }

        let cap = RLS_INITIAL_COVARIANCE * inputs as f64;
        if !(trace.is_finite() && min_diagonal > 0.0) {
            self.reset_covariance();
        } else if trace > cap {
            let shrink = cap / trace;
            for pij in p.iter_mut() {
                *pij *= shrink;
            }
        }
        error
    }

    /// Back to a fresh model's weights (after a divergence that would otherwise leave them
    /// non-finite); the statistics are kept.
    fn reset_weights(&mut self) {
        self.weights.fill(0.0);
        self.accumulators.fill(0.0);
        if !self.covariance.is_empty() {
            self.reset_covariance();
        }
    }

    fn reset_covariance(&mut self) {
        self.covariance.fill(0.0);
        self.covariance.diag_mut().fill(RLS_INITIAL_COVARIANCE);
    }

    /// Whether a deserialised state is one [`LinearRegression`] can run on without panicking
    /// or producing non-finite predictions.
    fn check(&self) -> Result<(), ModelError> {
        self.params
            .validate()
            .map_err(|error| ModelError::InvalidState(error.to_string()))?;
        let dim = self.dim();
        check_dim(dim).map_err(|error| ModelError::InvalidState(error.to_string()))?;
        let inputs = dim + 1;
        let invalid = |what: String| Err(ModelError::InvalidState(what));
        if self.weights.len() != inputs || !self.weights.is_standard_layout() {
            return invalid(format!("{} weights, expected {inputs}", self.weights.len()));
        }
        let expected_accumulators = match self.params.algorithm {
            LinearAlgorithm::Adagrad => inputs,
            _ => 0,
        };
        if self.accumulators.len() != expected_accumulators
            || !self.accumulators.is_standard_layout()
        {
            return invalid(format!(
                "{} accumulators, expected {expected_accumulators}",
                self.accumulators.len()
            ));
        }
        let expected_covariance = match self.params.algorithm {
            LinearAlgorithm::Rls => (inputs, inputs),
            _ => (0, 0),
        };
        if self.covariance.dim() != expected_covariance || !self.covariance.is_standard_layout() {
            return invalid(format!(
                "covariance is {:?}, expected {expected_covariance:?}",
                self.covariance.dim()
            ));
        }
        let scalars = [self.target_mean, self.target_m2, self.mean_sq_error];
        let all_finite = self
            .weights
            .iter()
            .chain(&self.accumulators)
            .chain(&self.covariance)
            .chain(&scalars)
            .all(|value| value.is_finite());
        if !all_finite {
            return invalid("a number is not finite".into());
        }
        if self.target_m2 < 0.0
            || self.mean_sq_error < 0.0
            || self.accumulators.iter().any(|&g2| g2 < 0.0)
        {
            return invalid("a sum of squares is negative".into());
        }
        if self.covariance.diag().iter().any(|&pii| pii <= 0.0) {
            return invalid("covariance has a non-positive diagonal".into());
        }
        if self.covariance != self.covariance.t() {
            return invalid("covariance is not symmetric".into());
        }
        let scaler_count = if self.params.scale { self.updates } else { 0 };
        if self.scaler.count() != scaler_count || self.residuals > self.updates {
            return invalid(format!(
                "counts disagree: {} updates, {} residuals, scaler has {} readings",
                self.updates,
                self.residuals,
                self.scaler.count()
            ));
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for LinearRegression {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let state = LinearState::deserialize(deserializer)?;
        state.check().map_err(serde::de::Error::custom)?;
        Ok(Self { state })
    }
}

// ---- helpers shared with logistic regression ----

/// `dim` must be in `1..=MAX_FEATURES`.
pub(super) fn check_dim(dim: usize) -> Result<(), ModelError> {
    if (1..=MAX_FEATURES).contains(&dim) {
        Ok(())
    } else {
        Err(ModelError::InvalidParams(format!(
            "dim (number of features) must be between 1 and {MAX_FEATURES} (got {dim})"
        )))
    }
}

/// A value a model may learn: finite with magnitude ≤ 1e100.
pub(super) fn valid_value(value: f64) -> bool {
    value.abs() <= MAX_ABS_VALUE
}

/// Every value of `x` is one a model may learn.
pub(super) fn valid_inputs(x: &[f64]) -> bool {
    // One pass, no early exit (vectorises): NaN fails the comparison.
    x.iter().fold(true, |ok, &v| ok & valid_value(v))
}

/// Dot product with four partial sums (a fixed order, so results are reproducible, and four
/// times the throughput of a single running sum). Extra elements of the longer slice are
/// ignored.
#[inline]
pub(super) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut sums = [0.0; 4];
    let mut a_chunks = a.chunks_exact(4);
    let mut b_chunks = b.chunks_exact(4);
    for (ca, cb) in (&mut a_chunks).zip(&mut b_chunks) {
        for ((sum, x), y) in sums.iter_mut().zip(ca).zip(cb) {
            *sum += x * y;
        }
    }
    let mut tail = 0.0;
    for (x, y) in a_chunks.remainder().iter().zip(b_chunks.remainder()) {
        tail += x * y;
    }
    (sums[0] + sums[1]) + (sums[2] + sums[3]) + tail
}

/// `Σ wᵢ·zᵢ` with `zᵢ = (xᵢ − meanᵢ)/σᵢ` by `scaler` (the identity for a scaler that has not
/// learnt, as when scaling is off), computed on the fly (no buffer) with four partial sums.
/// A missing or invalid `xᵢ` is imputed with `zᵢ = 0`.
#[inline]
pub(super) fn scaled_dot(weights: &[f64], x: &[f64], scaler: &StandardScaler) -> f64 {
    let (mean, inv_std) = (scaler.mean(), scaler.inverse_divisors());
    let n = weights.len();
    if x.len() != n || mean.len() != n || inv_std.len() != n {
        let mut z_buffer = [0.0; MAX_FEATURES];
        let z = &mut z_buffer[..n.min(MAX_FEATURES)];
        scale_imputing(scaler, x, z);
        return dot(weights, z);
    }
    let mut sums = [0.0; 4];
    let chunks = weights
        .chunks_exact(4)
        .zip(x.chunks_exact(4))
        .zip(mean.chunks_exact(4))
        .zip(inv_std.chunks_exact(4));
    for (((w, x), m), inv) in chunks {
        for k in 0..4 {
            sums[k] += w[k] * scale_one(x[k], m[k], inv[k]);
        }
    }
    let tail_start = n - n % 4;
    let mut tail = 0.0;
    for i in tail_start..n {
        tail += weights[i] * scale_one(x[i], mean[i], inv_std[i]);
    }
    (sums[0] + sums[1]) + (sums[2] + sums[3]) + tail
}

/// One standardised feature, 0 for an invalid value (a select, not a branch).
#[inline]
fn scale_one(value: f64, mean: f64, inv_std: f64) -> f64 {
    let z = (value - mean) * inv_std;
    if valid_value(value) {
        z
    } else {
        0.0
    }
}

/// Scaled features for prediction: `z` (length `dim`) from `x`, with a missing or invalid
/// value imputed as 0. Same arithmetic as [`scaled_dot`] and
/// [`StandardScaler::transform_into`].
pub(super) fn scale_imputing(scaler: &StandardScaler, x: &[f64], z: &mut [f64]) {
    let (mean, inv_std) = (scaler.mean(), scaler.inverse_divisors());
    for (i, zi) in z.iter_mut().enumerate() {
        *zi = match (x.get(i), mean.get(i), inv_std.get(i)) {
            (Some(&v), Some(&m), Some(&inv)) => scale_one(v, m, inv),
            _ => 0.0,
        };
    }
}

/// See [`LinearRegression::original_coefficients`]. A scaler that has not learnt (scaling
/// off) has mean 0 and divisor 1, so the coefficients are the weights.
pub(super) fn original_coefficients(
    scaler: &StandardScaler,
    weights: &[f64],
    intercept: f64,
    coefficients: &mut [f64],
) -> f64 {
    let mut original_intercept = intercept;
    for (i, (&w, &mean)) in weights.iter().zip(scaler.mean()).enumerate() {
        let coefficient = w / scaler.divisor(i);
        original_intercept -= coefficient * mean;
        if let Some(c) = coefficients.get_mut(i) {
            *c = coefficient;
        }
    }
    original_intercept
}

/// See [`LinearRegression::explain`].
pub(super) fn explain_into(
    scaler: &StandardScaler,
    weights: &[f64],
    x: &[f64],
    k: usize,
    out: &mut Vec<Contribution>,
) {
    out.clear();
    let dim = weights.len();
    let mut z_buffer = [0.0; MAX_FEATURES];
    let z = &mut z_buffer[..dim.min(MAX_FEATURES)];
    scale_imputing(scaler, x, z);
    out.reserve(dim);
    for (feature, ((&w, &zi), &mean)) in weights.iter().zip(z.iter()).zip(scaler.mean()).enumerate()
    {
        // The value the prediction used for the feature, in original units (the mean, z = 0,
        // for an imputed one).
        let value = match x.get(feature) {
            Some(&v) if valid_value(v) => v,
            _ => mean,
        };
        out.push(Contribution {
            feature,
            scaled: w * zi,
            original: w / scaler.divisor(feature) * value,
        });
    }
    out.sort_unstable_by(|a, b| {
        b.scaled
            .abs()
            .total_cmp(&a.scaled.abs())
            .then(a.feature.cmp(&b.feature))
    });
    out.truncate(k);
}

#[cfg(test)]
mod tests;
