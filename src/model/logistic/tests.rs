//! Tests of the logistic classification model.

use super::*;
// rand's SmallRng on 64-bit targets, by name: SmallRng itself is another algorithm on
// 32-bit ones (armv7), which would test the models on other data there.
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus as SmallRng;

/// Standard normal draw (Box–Muller; rand 0.9 without rand_distr).
fn gaussian(rng: &mut SmallRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

const OFFSETS: [f64; 8] = [0.0, 10.0, -5.0, 1.0e3, 0.5, 100.0, -20.0, 3.0];
const SCALES: [f64; 8] = [1.0, 2.0, 0.5, 50.0, 0.01, 10.0, 1.0, 3.0];
/// Logit weight per standard deviation of each feature.
const WEIGHTS: [f64; 8] = [1.0, -0.5, 0.8, 0.6, -1.2, 0.3, 0.0, 0.4];

/// Features `xᵢ ~ N(OFFSETSᵢ, SCALESᵢ²)` and their true logit `−0.5 + Σ WEIGHTSᵢ·standardised xᵢ`.
fn features(rng: &mut SmallRng) -> ([f64; 8], f64) {
    let mut x = [0.0; 8];
    let mut logit = -0.5;
    for (i, xi) in x.iter_mut().enumerate() {
        let standard = gaussian(rng);
        *xi = OFFSETS[i] + SCALES[i] * standard;
        logit += WEIGHTS[i] * standard;
    }
    (x, logit)
}

/// Labels drawn from the true logistic model.
fn logistic_stream(steps: usize, seed: u64) -> Vec<([f64; 8], bool)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..steps)
        .map(|_| {
            let (x, logit) = features(&mut rng);
            (x, rng.random::<f64>() < sigmoid(logit))
        })
        .collect()
}

/// Labels given by the sign of the logit: linearly separable.
fn separable_stream(steps: usize, seed: u64) -> Vec<([f64; 8], bool)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..steps)
        .map(|_| {
            let (x, logit) = features(&mut rng);
            (x, logit > 0.0)
        })
        .collect()
}

fn model(algorithm: LogisticAlgorithm) -> LogisticRegression {
    let params = LogisticParams {
        algorithm,
        ..LogisticParams::default()
    };
    LogisticRegression::new(8, params).expect("valid params")
}

const ALGORITHMS: [LogisticAlgorithm; 2] = [LogisticAlgorithm::Ftrl, LogisticAlgorithm::Adagrad];

#[test]
fn separable_stream_is_learnt_to_97_percent_accuracy() {
    for algorithm in ALGORITHMS {
        let mut model = model(algorithm);
        let data = separable_stream(10_000, 83);
        let mut late = crate::model::ClassificationMetrics::new();
        for (t, (x, y)) in data.iter().enumerate() {
            let p = model.predict_proba(x);
            if t >= data.len() / 2 {
                late.update(*y, p, 0.5);
            }
            model.learn_one(x, *y);
        }
        // Prequential accuracy over the last half.
        assert!(
            late.accuracy() >= 0.97,
            "{algorithm:?}: {}",
            late.accuracy()
        );
    }
}

#[test]
fn predict_learn_returns_predict_proba_and_learns_like_learn_one() {
    for algorithm in ALGORITHMS {
        let (mut fused, mut separate) = (model(algorithm), model(algorithm));
        for (x, y) in logistic_stream(2_000, 7) {
            let expected = fused.predict_proba(&x);
            let label = (x[0] > 0.0).then_some(y);
            assert_eq!(fused.predict_learn(&x, label).to_bits(), expected.to_bits());
            if let Some(y) = label {
                separate.learn_one(&x, y);
            }
        }
        assert_eq!(fused, separate, "{algorithm:?}");
        assert!(fused.updates() > 500 && fused.updates() < 1_500);
    }
}

#[test]
fn predicted_probabilities_are_calibrated() {
    for algorithm in ALGORITHMS {
        let mut model = model(algorithm);
        // (sum of predicted p, positives, count) per decile of p, prequential after 5000.
        let mut bins = [(0.0, 0.0, 0u32); 10];
        for (t, (x, y)) in logistic_stream(100_000, 89).into_iter().enumerate() {
            let p = model.predict_proba(&x);
            if t >= 5000 {
                let bin = &mut bins[((p * 10.0) as usize).min(9)];
                bin.0 += p;
                bin.1 += f64::from(u8::from(y));
                bin.2 += 1;
            }
            model.learn_one(&x, y);
        }
        let mut checked = 0;
        for (i, &(sum_p, positives, count)) in bins.iter().enumerate() {
            if count >= 200 {
                checked += 1;
                let gap = (sum_p - positives).abs() / f64::from(count);
                assert!(gap <= 0.05, "{algorithm:?} bin {i}: gap {gap} over {count}");
            }
        }
        assert!(checked >= 8, "{algorithm:?}: only {checked} bins populated");
    }
}

#[test]
fn ftrl_l1_zeroes_irrelevant_features_exactly() {
    // Feature 6 has no influence (WEIGHTS[6] = 0): with an L1 penalty its weight is 0.0.
    // z accumulates gradients (≈ −w·√n/α), so l1 is on that scale: 20 here, against |z| of
    // about 7 for the noise weight (−0.05 without l1) and about 140 for a weight of 1.
    let params = LogisticParams {
        l1: 20.0,
        ..LogisticParams::default()
    };
    let mut sparse = LogisticRegression::new(8, params).expect("valid");
    let mut dense = model(LogisticAlgorithm::Ftrl);
    for (x, y) in logistic_stream(20_000, 97) {
        sparse.learn_one(&x, y);
        dense.learn_one(&x, y);
    }
    assert_eq!(sparse.weights()[6], 0.0, "{:?}", sparse.weights());
    assert_ne!(dense.weights()[6], 0.0);
    // Strong features survive the penalty.
    assert!(
        sparse.weights()[0] > 0.5 && sparse.weights()[4] < -0.5,
        "{:?}",
        sparse.weights()
    );
}

#[test]
fn state_round_trip_gives_identical_predictions() {
    for algorithm in ALGORITHMS {
        let data = logistic_stream(3000, 101);
        let mut original = model(algorithm);
        for (x, y) in &data[..1500] {
            original.learn_one(x, *y);
        }
        let bytes = postcard::to_stdvec(&original).expect("serialises");
        let mut restored: LogisticRegression = postcard::from_bytes(&bytes).expect("deserialises");
        assert_eq!(restored, original);
        for (x, y) in &data[1500..] {
            assert_eq!(
                original.predict_proba(x).to_bits(),
                restored.predict_proba(x).to_bits()
            );
            original.learn_one(x, *y);
            restored.learn_one(x, *y);
        }
        assert_eq!(restored.updates(), 3000);
        assert_eq!(restored, original);
    }
}

#[test]
fn corrupt_state_is_rejected_on_deserialise() {
    let mut model = model(LogisticAlgorithm::Ftrl);
    for (x, y) in logistic_stream(100, 103) {
        model.learn_one(&x, y);
    }
    let reject = |bad: &LogisticRegression| {
        let bytes = postcard::to_stdvec(bad).expect("serialises");
        postcard::from_bytes::<LogisticRegression>(&bytes).is_err()
    };
    let mut bad = model.clone();
    bad.state.ftrl_z = Array1::zeros(4);
    assert!(reject(&bad), "z of the wrong length");
    let mut bad = model.clone();
    bad.state.root_sum_sq_gradients[2] = f64::INFINITY;
    assert!(reject(&bad), "non-finite n");
    let mut bad = model.clone();
    bad.state.root_sum_sq_gradients[2] = -1.0;
    assert!(reject(&bad), "negative n");
    let mut bad = model.clone();
    bad.state.weights[1] += 0.5;
    assert!(reject(&bad), "weights disagree with z and n");
    let mut bad = model.clone();
    bad.state.updates += 1;
    assert!(reject(&bad), "scaler count disagrees");
    let mut bad = model.clone();
    bad.state.params.alpha = 0.0;
    assert!(reject(&bad), "invalid params");
    let bytes = postcard::to_stdvec(&model).expect("serialises");
    assert!(postcard::from_bytes::<LogisticRegression>(&bytes[..bytes.len() - 3]).is_err());
    assert!(postcard::from_bytes::<LogisticRegression>(&bytes).is_ok());
}

#[test]
fn non_finite_or_misshaped_readings_are_rejected() {
    for algorithm in ALGORITHMS {
        let mut model = model(algorithm);
        let data = logistic_stream(200, 107);
        for (x, y) in &data {
            model.learn_one(x, *y);
        }
        let before = model.clone();
        let (x, y) = data[0];
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1.0e300] {
            let mut bad_x = x;
            bad_x[5] = bad;
            model.learn_one(&bad_x, y);
            let p = model.predict_proba(&bad_x);
            assert!((0.0..=1.0).contains(&p), "{p}");
        }
        model.learn_one(&x[..7], y);
        model.learn_one(&[0.0; 9], y);
        assert_eq!(model, before, "{algorithm:?}");
        assert_eq!(model.updates(), 200);
    }
}

#[test]
fn extreme_unscaled_inputs_keep_probabilities_finite() {
    let params = LogisticParams {
        scale: false,
        ..LogisticParams::default()
    };
    let mut model = LogisticRegression::new(2, params).expect("valid");
    for t in 0..1000 {
        let x = [1.0e100 * f64::from(t % 3) - 1.0e100, 1.0e-100];
        model.learn_one(&x, t % 2 == 0);
        let p = model.predict_proba(&x);
        assert!((0.0..=1.0).contains(&p), "step {t}: {p}");
    }
    let bytes = postcard::to_stdvec(&model).expect("serialises");
    assert!(postcard::from_bytes::<LogisticRegression>(&bytes).is_ok());
}

#[test]
fn params_validation_rejects_each_bad_param() {
    let defaults = LogisticParams::default();
    assert!(defaults.validate().is_ok());
    let bad = [
        (
            "alpha",
            LogisticParams {
                alpha: 0.0,
                ..defaults
            },
        ),
        (
            "alpha",
            LogisticParams {
                alpha: f64::NAN,
                ..defaults
            },
        ),
        (
            "alpha",
            LogisticParams {
                alpha: 11.0,
                ..defaults
            },
        ),
        (
            "beta",
            LogisticParams {
                beta: -1.0,
                ..defaults
            },
        ),
        (
            "beta",
            LogisticParams {
                beta: f64::INFINITY,
                ..defaults
            },
        ),
        (
            "l1",
            LogisticParams {
                l1: -0.1,
                ..defaults
            },
        ),
        (
            "l1",
            LogisticParams {
                l1: f64::NAN,
                ..defaults
            },
        ),
        (
            "l2",
            LogisticParams {
                l2: -0.1,
                ..defaults
            },
        ),
        (
            "learning_rate",
            LogisticParams {
                learning_rate: 0.0,
                ..defaults
            },
        ),
        (
            "learning_rate",
            LogisticParams {
                learning_rate: 100.0,
                ..defaults
            },
        ),
    ];
    for (name, params) in bad {
        match LogisticRegression::new(8, params) {
            Err(ModelError::OutOfRange(errors)) => {
                assert_eq!(errors.len(), 1, "{errors:?}");
                assert_eq!(errors[0].key, name, "{errors:?}");
            }
            other => panic!("{params:?} accepted: {other:?}"),
        }
    }
    for dim in [0, MAX_FEATURES + 1] {
        assert!(matches!(
            LogisticRegression::new(dim, defaults),
            Err(ModelError::InvalidParams(message)) if message.starts_with("dim")
        ));
    }
    let all_bad = LogisticParams {
        algorithm: LogisticAlgorithm::Ftrl,
        alpha: -1.0,
        beta: -1.0,
        l1: -1.0,
        l2: -1.0,
        learning_rate: -1.0,
        scale: true,
    };
    match all_bad.validate() {
        Err(ModelError::OutOfRange(errors)) => assert_eq!(errors.len(), 5, "{errors:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn explain_returns_top_k_and_contributions_sum_to_the_logit() {
    for algorithm in ALGORITHMS {
        let mut model = model(algorithm);
        let data = logistic_stream(2000, 109);
        for (x, y) in &data {
            model.learn_one(x, *y);
        }
        let (x, _) = data[23];
        let mut all = Vec::new();
        model.explain(&x, 8, &mut all);
        let sum: f64 = all.iter().map(|c| c.scaled).sum();
        assert!((sum + model.intercept() - model.logit(&x)).abs() < 1e-9);
        assert!(all
            .windows(2)
            .all(|w| w[0].scaled.abs() >= w[1].scaled.abs()));
        let mut coefficients = [0.0; 8];
        let intercept = model.original_coefficients(&mut coefficients);
        let original: f64 = all.iter().map(|c| c.original).sum();
        let logit = model.logit(&x);
        assert!(
            (original + intercept - logit).abs()
                < 1e-9 * (original.abs() + intercept.abs()).max(1.0),
            "{original} + {intercept} vs {logit}"
        );
        let mut top = Vec::new();
        model.explain(&x, 2, &mut top);
        assert_eq!(top, all[..2]);
    }
}
