//! Tail probabilities: how rare a statistic is under the key's normal behaviour.
//!
//! Every detector turns its statistic into a probability `p` of seeing something at least as
//! extreme in normal operation, and the published `anomaly_score` is `1 − p`. So one threshold
//! means one rarity on every key, whatever its units and noise level: `0.9999` is "one reading
//! in ten thousand, if nothing is wrong".

/// `erfc(x)`, Numerical Recipes' Chebyshev fit (`erfcc`): fractional error below 1.2e-7
/// everywhere, so tail probabilities keep their precision far out (a 6σ tail is 2e-9). A
/// closed form: no table, no iteration, the same result on every platform with IEEE floats.
pub(super) fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let tail = t * (-z * z + poly).exp();
    if x >= 0.0 {
        tail
    } else {
        2.0 - tail
    }
}

/// `P(|Z| ≥ z)` for a standard normal Z.
pub fn gaussian_tail(z: f64) -> f64 {
    if z.is_nan() {
        return 1.0;
    }
    erfc(z.abs() / std::f64::consts::SQRT_2).clamp(0.0, 1.0)
}

/// `P(χ²_ν / ν ≥ mean)`: the tail of a mean of ν squared standard normals, by the
/// Wilson–Hilferty cube-root approximation (good to a few percent of p down to 1e-8 for
/// ν ≥ 5).
pub(super) fn chi2_mean_tail(mean: f64, dof: f64) -> f64 {
    if mean.is_nan() || mean <= 0.0 {
        return 1.0;
    }
    let spread = 2.0 / (9.0 * dof);
    let z = (mean.cbrt() - (1.0 - spread)) / spread.sqrt();
    if z <= 0.0 {
        return 1.0;
    }
    (0.5 * erfc(z / std::f64::consts::SQRT_2)).clamp(0.0, 1.0)
}

/// `P(S ≥ s)` for a one-sided CUSUM `S ← max(0, S + z − k)` of standard normal increments
/// in its stationary regime: `e^{−2ks}` (Siegmund's approximation: the exponential tail of a
/// reflected random walk with drift −k).
pub(super) fn cusum_tail(statistic: f64, allowance: f64) -> f64 {
    if statistic.is_nan() || statistic <= 0.0 {
        return 1.0;
    }
    (-2.0 * allowance * statistic).exp().clamp(0.0, 1.0)
}

/// The anomaly score of a tail probability: `1 − p`, in [0, 1].
pub(super) fn score(p: f64) -> f64 {
    (1.0 - p).clamp(0.0, 1.0)
}

/// The z at which a Gaussian two-sided tail is `p`: the inverse of [`gaussian_tail`], by
/// bisection (called once per detector, not per reading).
pub(super) fn gaussian_quantile(p: f64) -> f64 {
    let (mut low, mut high) = (0.0, 40.0);
    for _ in 0..200 {
        let mid = 0.5 * (low + high);
        if gaussian_tail(mid) > p {
            low = mid;
        } else {
            high = mid;
        }
    }
    0.5 * (low + high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_tails_match_the_tables() {
        // Two-sided tails of 1.96, 3, 4 and 6 σ.
        for (z, p) in [
            (1.959_964, 0.05),
            (3.0, 2.699_796e-3),
            (4.0, 6.334_248e-5),
            (6.0, 1.973_175e-9),
        ] {
            let got = gaussian_tail(z);
            assert!((got - p).abs() <= 1e-6 * p.max(1e-3), "{z}: {got} vs {p}");
        }
        assert_eq!(gaussian_tail(0.0), 1.0);
        assert!((gaussian_quantile(0.05) - 1.959_964).abs() < 1e-4);
    }

    #[test]
    fn chi2_and_cusum_tails_are_probabilities() {
        // χ²_19 / 19 ≥ 2.0: p ≈ 0.0062 (tables).
        let p = chi2_mean_tail(2.0, 19.0);
        assert!((p - 0.0062).abs() < 0.0008, "{p}");
        assert_eq!(chi2_mean_tail(0.5, 19.0), 1.0);
        assert_eq!(cusum_tail(0.0, 0.5), 1.0);
        assert!((cusum_tail(10.0, 0.5) - (-10.0f64).exp()).abs() < 1e-15);
        assert_eq!(score(1.5), 0.0);
        assert_eq!(score(-1.0), 1.0);
    }
}
