//! [`adjusted_rand_index`]: agreement of a clustering with known labels, corrected for chance.

use std::collections::BTreeMap;

/// The adjusted Rand index (Hubert and Arabie 1985) of the clustering `predicted` against the
/// labels `truth`: 1 when both put the same points together (whatever the label values: a
/// clustering is only defined up to renaming its clusters), about 0 for a clustering no better
/// than chance, negative for worse than chance.
///
/// It is what the tests and `replay`'s evaluation use to score k-means, because cluster ids
/// are arbitrary: accuracy would need a matching of ids to labels, the ARI does not. With `nᵢⱼ`
/// the number of points with label `i` and cluster `j`, `aᵢ`, `bⱼ` the row and column sums and
/// `C(m) = m(m − 1)/2` the number of pairs,
///
/// ```text
/// ARI = (Σ C(nᵢⱼ) − E) / (½(Σ C(aᵢ) + Σ C(bⱼ)) − E),   E = Σ C(aᵢ) · Σ C(bⱼ) / C(n)
/// ```
///
/// computed exactly in integers (up to 2³⁰ points; in `f64` beyond). Where the denominator is
/// 0 — fewer than two points, or both labelings putting every point in one cluster, or every
/// point in its own — the two labelings are the same partition and the result is 1 (as
/// scikit-learn's `adjusted_rand_score`). Labelings of different lengths have no index: `NaN`.
pub fn adjusted_rand_index(truth: &[usize], predicted: &[u32]) -> f64 {
    if truth.len() != predicted.len() {
        return f64::NAN;
    }
    let n = truth.len();
    if n < 2 {
        return 1.0;
    }
    let truth_index = dense_labels(truth);
    let predicted_index = dense_labels(predicted);
    let (rows, columns) = (truth_index.len(), predicted_index.len());
    let mut table = vec![0u64; rows * columns];
    let mut row_sums = vec![0u64; rows];
    let mut column_sums = vec![0u64; columns];
    for (t, p) in truth.iter().zip(predicted) {
        let (Some(&i), Some(&j)) = (truth_index.get(t), predicted_index.get(p)) else {
            continue;
        };
        table[i * columns + j] += 1;
        row_sums[i] += 1;
        column_sums[j] += 1;
    }
    let pairs = |m: &u64| u128::from(*m) * u128::from(m.saturating_sub(1)) / 2;
    let index: u128 = table.iter().map(pairs).sum();
    let a: u128 = row_sums.iter().map(pairs).sum();
    let b: u128 = column_sums.iter().map(pairs).sum();
    let total = pairs(&(n as u64));
    // ARI = (2·N·index − 2·A·B) / (N·(A + B) − 2·A·B), all terms exact when they fit.
    let exact = || -> Option<f64> {
        let numerator = i128::try_from(total.checked_mul(index)?.checked_mul(2)?).ok()?
            - i128::try_from(a.checked_mul(b)?.checked_mul(2)?).ok()?;
        let denominator = i128::try_from(total.checked_mul(a.checked_add(b)?)?).ok()?
            - i128::try_from(a.checked_mul(b)?.checked_mul(2)?).ok()?;
        Some(if denominator == 0 {
            1.0
        } else {
            numerator as f64 / denominator as f64
        })
    };
    exact().unwrap_or_else(|| {
        let (index, a, b, total) = (index as f64, a as f64, b as f64, total as f64);
        let expected = a * b / total;
        let denominator = 0.5 * (a + b) - expected;
        if denominator == 0.0 {
            1.0
        } else {
            (index - expected) / denominator
        }
    })
}

/// Dense indices `0..distinct` for the distinct labels, in label order.
fn dense_labels<T: Ord + Copy>(labels: &[T]) -> BTreeMap<T, usize> {
    let mut index = BTreeMap::new();
    for &label in labels {
        index.entry(label).or_insert(0);
    }
    for (dense, value) in index.values_mut().enumerate() {
        *value = dense;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SplitMix64;

    #[test]
    fn ari_matches_hand_computed_cases() {
        // truth {0,1,2 | 3,4,5}, predicted {0,1 | 2,3 | 4,5}: n₀₀ = 2, n₀₁ = 1, n₁₁ = 1,
        // n₁₂ = 2 → Σ C(nᵢⱼ) = 2; Σ C(aᵢ) = 3 + 3 = 6; Σ C(bⱼ) = 1 + 1 + 1 = 3; C(6) = 15;
        // E = 6·3/15 = 1.2; max = 4.5 → ARI = 0.8/3.3 = 8/33.
        let ari = adjusted_rand_index(&[0, 0, 0, 1, 1, 1], &[0, 0, 1, 1, 2, 2]);
        assert!((ari - 8.0 / 33.0).abs() < 1e-15, "{ari}");
        // scikit-learn's documented example: adjusted_rand_score([0, 0, 1, 2], [0, 0, 1, 1])
        // = 0.5714…: Σ C(nᵢⱼ) = 1, Σ C(aᵢ) = 1, Σ C(bⱼ) = 2, C(4) = 6, E = 1/3 → 4/7.
        let ari = adjusted_rand_index(&[0, 0, 1, 2], &[0, 0, 1, 1]);
        assert!((ari - 4.0 / 7.0).abs() < 1e-15, "{ari}");
        // Symmetric in its arguments (up to the label types).
        let ari = adjusted_rand_index(&[0, 0, 1, 1], &[0, 0, 1, 2]);
        assert!((ari - 4.0 / 7.0).abs() < 1e-15, "{ari}");
    }

    #[test]
    fn ari_is_one_for_identical_and_permuted_labelings() {
        let truth = [0, 0, 1, 1, 2, 2, 2, 3];
        assert_eq!(adjusted_rand_index(&truth, &[0, 0, 1, 1, 2, 2, 2, 3]), 1.0);
        // Renamed clusters, including large and unordered ids.
        assert_eq!(
            adjusted_rand_index(&truth, &[7, 7, 4_000_000_000, 4_000_000_000, 0, 0, 0, 9]),
            1.0
        );
        // One point moved: below 1.
        let moved = adjusted_rand_index(&truth, &[7, 7, 4, 4, 0, 0, 9, 9]);
        assert!(moved < 0.9, "{moved}");
    }

    #[test]
    fn ari_is_near_zero_for_independent_labelings() {
        let mut rng = SplitMix64::new(11);
        let truth: Vec<usize> = (0..20_000).map(|_| rng.below(4)).collect();
        let predicted: Vec<u32> = (0..20_000).map(|_| rng.below(5) as u32).collect();
        let ari = adjusted_rand_index(&truth, &predicted);
        // The ARI of independent labelings has mean 0 and a spread of order 1/n.
        assert!(ari.abs() < 1e-3, "{ari}");
    }

    #[test]
    fn ari_of_degenerate_labelings() {
        assert_eq!(adjusted_rand_index(&[], &[]), 1.0);
        assert_eq!(adjusted_rand_index(&[3], &[1]), 1.0);
        // Both one cluster; both all singletons: the same partition.
        assert_eq!(adjusted_rand_index(&[1, 1, 1], &[5, 5, 5]), 1.0);
        assert_eq!(adjusted_rand_index(&[0, 1, 2], &[2, 0, 1]), 1.0);
        // One cluster against all singletons: no agreement beyond chance.
        assert_eq!(adjusted_rand_index(&[0, 0, 0], &[0, 1, 2]), 0.0);
        assert!(adjusted_rand_index(&[0, 1], &[0]).is_nan());
    }
}
