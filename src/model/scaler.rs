//! Per-feature standardisation with running statistics (Welford).
//!
//! [`StandardScaler`] keeps, for every feature, the running mean and the sum of squared
//! deviations (Welford's update, numerically stable for large offsets) and maps a reading to
//! `z = (x − mean) / std`. The standard deviation is the population one (divide by n, as River's
//! and scikit-learn's scalers do). Where it is 0 (a constant feature, or fewer than two
//! readings) the divisor is 1, so `z = x − mean` stays finite.
//!
//! `1/std` is cached per feature and recomputed in [`learn_one`](StandardScaler::learn_one), so
//! the hot [`transform_into`](StandardScaler::transform_into) is a subtraction and a
//! multiplication per feature. The cache is not serialised: it is rebuilt from the statistics
//! when a scaler is deserialised, which also checks that the statistics are consistent.

use ndarray::Array1;
use serde::{Deserialize, Serialize};

use super::ModelError;

/// Running per-feature mean and standard deviation, and the standardisation they define.
///
/// Serialises as `(mean, m2, count)`; deserialising rejects mismatched lengths, non-finite
/// numbers and negative sums of squares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ScalerState")]
pub struct StandardScaler {
    /// Running mean of each feature.
    mean: Array1<f64>,
    /// Sum of squared deviations from the running mean of each feature (Welford's M2).
    m2: Array1<f64>,
    /// Readings folded in.
    count: u64,
    /// `1/std` per feature (1 where std is 0); derived from `m2` and `count`, not serialised.
    #[serde(skip_serializing)]
    inv_std: Array1<f64>,
}

/// The serialised fields of a [`StandardScaler`], in postcard order (append only).
#[derive(Deserialize)]
struct ScalerState {
    mean: Array1<f64>,
    m2: Array1<f64>,
    count: u64,
}

impl TryFrom<ScalerState> for StandardScaler {
    type Error = ModelError;

    fn try_from(state: ScalerState) -> Result<Self, ModelError> {
        let invalid = |what: String| Err(ModelError::InvalidState(format!("scaler: {what}")));
        if state.mean.len() != state.m2.len() {
            return invalid(format!(
                "{} means but {} sums of squares",
                state.mean.len(),
                state.m2.len()
            ));
        }
        if !state.mean.is_standard_layout() || !state.m2.is_standard_layout() {
            return invalid("statistics are not contiguous".into());
        }
        if !state.mean.iter().chain(&state.m2).all(|v| v.is_finite()) {
            return invalid("a statistic is not finite".into());
        }
        if state.m2.iter().any(|&m2| m2 < 0.0) {
            return invalid("a sum of squares is negative".into());
        }
        if state.count == 0 && state.mean.iter().chain(&state.m2).any(|&v| v != 0.0) {
            return invalid("statistics without any reading".into());
        }
        let dim = state.mean.len();
        let mut scaler = Self {
            mean: state.mean,
            m2: state.m2,
            count: state.count,
            inv_std: Array1::ones(dim),
        };
        scaler.refresh_inv_std();
        Ok(scaler)
    }
}

impl StandardScaler {
    /// A scaler for `dim` features with no reading yet (mean 0, divisor 1: the identity).
    pub fn new(dim: usize) -> Self {
        Self {
            mean: Array1::zeros(dim),
            m2: Array1::zeros(dim),
            count: 0,
            inv_std: Array1::ones(dim),
        }
    }

    /// Number of features.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Fold one reading into the statistics.
    ///
    /// The reading is ignored (the scaler is unchanged) unless it has exactly
    /// [`dim`](Self::dim) values, all finite: one `NaN` would poison a mean for good.
    pub fn learn_one(&mut self, x: &[f64]) {
        if x.len() != self.dim() || !x.iter().all(|v| v.is_finite()) {
            return;
        }
        self.learn_unchecked(x);
    }

    /// [`learn_one`](Self::learn_one) for a reading the caller has already checked (length
    /// `dim`, finite values).
    pub(crate) fn learn_unchecked(&mut self, x: &[f64]) {
        self.count += 1;
        let inv_count = 1.0 / self.count as f64;
        let (Some(mean), Some(m2), Some(inv_std)) = (
            self.mean.as_slice_mut(),
            self.m2.as_slice_mut(),
            self.inv_std.as_slice_mut(),
        ) else {
            return;
        };
        welford_step(mean, m2, inv_std, x, inv_count);
    }

    /// Standardise `x` with the statistics so far: `out[i] = (x[i] − mean[i]) / std[i]`, with
    /// divisor 1 where `std[i]` is 0 or fewer than two readings were seen.
    ///
    /// Writes `min(x.len(), out.len(), dim)` values; callers pass both of length `dim`.
    pub fn transform_into(&self, x: &[f64], out: &mut [f64]) {
        let (Some(mean), Some(inv_std)) = (self.mean.as_slice(), self.inv_std.as_slice()) else {
            return;
        };
        for (((out, &value), &mean), &inv_std) in out.iter_mut().zip(x).zip(mean).zip(inv_std) {
            *out = (value - mean) * inv_std;
        }
    }

    /// Running mean of every feature (zeros before the first reading).
    pub fn mean(&self) -> &[f64] {
        self.mean.as_slice().unwrap_or(&[])
    }

    /// Population standard deviation of feature `i` (`0.0` before two readings, or for an
    /// index out of range).
    pub fn std(&self, i: usize) -> f64 {
        match self.m2.get(i) {
            Some(&m2) if self.count > 0 => (m2 / self.count as f64).sqrt(),
            _ => 0.0,
        }
    }

    /// The divisor [`transform_into`](Self::transform_into) uses for feature `i`: its standard
    /// deviation, or 1 where that is 0 (and for an index out of range).
    pub fn divisor(&self, i: usize) -> f64 {
        self.inv_std.get(i).map_or(1.0, |inv| 1.0 / inv)
    }

    /// `1/divisor` per feature, the factors [`transform_into`](Self::transform_into) uses.
    pub(crate) fn inverse_divisors(&self) -> &[f64] {
        self.inv_std.as_slice().unwrap_or(&[])
    }

    /// Number of readings folded in.
    pub fn count(&self) -> u64 {
        self.count
    }

    fn refresh_inv_std(&mut self) {
        if self.count == 0 {
            self.inv_std.fill(1.0);
            return;
        }
        let inv_count = 1.0 / self.count as f64;
        for (inv_std, &m2) in self.inv_std.iter_mut().zip(&self.m2) {
            *inv_std = inverse_std(m2, inv_count);
        }
    }
}

/// Fold `x` into the running statistics of every feature (one square root and one division
/// per feature: most of the scaler's cost).
#[inline]
fn welford_step(mean: &mut [f64], m2: &mut [f64], inv_std: &mut [f64], x: &[f64], inv_count: f64) {
    for (((mean, m2), inv_std), &value) in mean.iter_mut().zip(m2).zip(inv_std).zip(x) {
        let delta = value - *mean;
        *mean += delta * inv_count;
        *m2 += delta * (value - *mean);
        *inv_std = inverse_std(*m2, inv_count);
    }
}

/// `1/√(m2/n)`, or 1 for zero variance. Written as a select, not a branch, so the update loop
/// vectorises. For a variance > 0 (at least 5e-324) the result is finite (at most 4.5e161).
#[inline]
fn inverse_std(m2: f64, inv_count: f64) -> f64 {
    let variance = m2 * inv_count;
    let inv = 1.0 / variance.sqrt();
    if variance > 0.0 {
        inv
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn readings(count: usize, dim: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = SmallRng::seed_from_u64(seed);
        (0..count)
            .map(|_| {
                (0..dim)
                    .map(|i| 1.0e3 * i as f64 + (i as f64 + 0.5) * rng.random::<f64>())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn welford_statistics_equal_a_two_pass_computation() {
        let dim = 5;
        let data = readings(10_000, dim, 3);
        let mut scaler = StandardScaler::new(dim);
        for x in &data {
            scaler.learn_one(x);
        }
        assert_eq!(scaler.count(), 10_000);
        let n = data.len() as f64;
        for i in 0..dim {
            let mean: f64 = data.iter().map(|x| x[i]).sum::<f64>() / n;
            let variance: f64 = data.iter().map(|x| (x[i] - mean).powi(2)).sum::<f64>() / n;
            // Tolerance 1e-12 relative to the offset (up to 4e3) for the mean, absolute for std.
            assert!(
                (scaler.mean()[i] - mean).abs() <= 1e-12 * mean.abs().max(1.0),
                "mean {i}: {} vs {mean}",
                scaler.mean()[i]
            );
            assert!(
                (scaler.std(i) - variance.sqrt()).abs() <= 1e-12,
                "std {i}: {} vs {}",
                scaler.std(i),
                variance.sqrt()
            );
        }
    }

    #[test]
    fn transform_standardises_and_divides_by_one_for_zero_variance() {
        let mut scaler = StandardScaler::new(2);
        let mut out = [0.0; 2];
        scaler.transform_into(&[3.0, 4.0], &mut out);
        assert_eq!(out, [3.0, 4.0], "no reading: identity");
        scaler.learn_one(&[1.0, 7.0]);
        scaler.transform_into(&[3.0, 4.0], &mut out);
        assert_eq!(out, [2.0, -3.0], "one reading: centred, divisor 1");
        scaler.learn_one(&[3.0, 7.0]);
        // Feature 0: mean 2, population std 1; feature 1 constant: divisor 1.
        scaler.transform_into(&[5.0, 4.0], &mut out);
        assert!((out[0] - 3.0).abs() < 1e-15 && (out[1] + 3.0).abs() < 1e-15);
        assert_eq!(scaler.std(1), 0.0);
        assert_eq!(scaler.divisor(1), 1.0);
        assert!((scaler.divisor(0) - 1.0).abs() < 1e-15);
    }

    #[test]
    fn non_finite_or_misshaped_reading_is_ignored() {
        let mut scaler = StandardScaler::new(2);
        scaler.learn_one(&[1.0, 2.0]);
        let before = scaler.clone();
        scaler.learn_one(&[f64::NAN, 2.0]);
        scaler.learn_one(&[1.0, f64::INFINITY]);
        scaler.learn_one(&[1.0]);
        scaler.learn_one(&[1.0, 2.0, 3.0]);
        assert_eq!(scaler, before);
    }

    #[test]
    fn state_round_trips_and_corrupt_state_is_rejected() {
        let mut scaler = StandardScaler::new(3);
        for x in readings(100, 3, 5) {
            scaler.learn_one(&x);
        }
        let bytes = postcard::to_stdvec(&scaler).expect("serialises");
        let restored: StandardScaler = postcard::from_bytes(&bytes).expect("deserialises");
        assert_eq!(restored, scaler);

        let mut bad = scaler.clone();
        bad.m2 = Array1::zeros(2);
        let bytes = postcard::to_stdvec(&bad).expect("serialises");
        assert!(postcard::from_bytes::<StandardScaler>(&bytes).is_err());

        let mut bad = scaler.clone();
        bad.mean[1] = f64::NAN;
        let bytes = postcard::to_stdvec(&bad).expect("serialises");
        assert!(postcard::from_bytes::<StandardScaler>(&bytes).is_err());

        let mut bad = scaler;
        bad.m2[0] = -1.0;
        let bytes = postcard::to_stdvec(&bad).expect("serialises");
        assert!(postcard::from_bytes::<StandardScaler>(&bytes).is_err());
    }
}
