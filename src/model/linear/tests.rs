//! Tests of the linear regression model.

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

/// Feature offsets and scales of the test streams: from 0.01 to 50 wide, up to 1e3 off zero.
const OFFSETS: [f64; 8] = [0.0, 10.0, -5.0, 1.0e3, 0.5, 100.0, -20.0, 3.0];
const SCALES: [f64; 8] = [1.0, 2.0, 0.5, 50.0, 0.01, 10.0, 1.0, 3.0];
/// True coefficients in original units; times SCALES they are all of order 1.
const COEFFICIENTS: [f64; 8] = [1.0, -0.5, 2.0, 0.02, 30.0, -0.1, 0.7, 0.3];
const INTERCEPT: f64 = 5.0;

/// `y = INTERCEPT + Σ COEFFICIENTSᵢ·xᵢ + noise·ε` with `xᵢ ~ N(OFFSETSᵢ, SCALESᵢ²)`.
fn stream(steps: usize, noise: f64, seed: u64) -> Vec<([f64; 8], f64)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..steps)
        .map(|_| {
            let mut x = [0.0; 8];
            for (i, xi) in x.iter_mut().enumerate() {
                *xi = OFFSETS[i] + SCALES[i] * gaussian(&mut rng);
            }
            let y = INTERCEPT + dot(&COEFFICIENTS, &x) + noise * gaussian(&mut rng);
            (x, y)
        })
        .collect()
}

fn model(algorithm: LinearAlgorithm) -> LinearRegression {
    let params = LinearParams {
        algorithm,
        ..LinearParams::default()
    };
    LinearRegression::new(8, params).expect("valid params")
}

/// Largest |coefficient error| times the feature's scale: the error in the prediction per
/// standard deviation of the feature.
fn max_scaled_coefficient_error(model: &LinearRegression) -> f64 {
    let mut coefficients = [0.0; 8];
    model.original_coefficients(&mut coefficients);
    (0..8)
        .map(|i| ((coefficients[i] - COEFFICIENTS[i]) * SCALES[i]).abs())
        .fold(0.0, f64::max)
}

/// Solve `a·x = b` (n × n, row-major) by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))
            .expect("non-empty");
        for k in 0..n {
            a.swap(col * n + k, pivot * n + k);
        }
        b.swap(col, pivot);
        for row in col + 1..n {
            let factor = a[row * n + col] / a[col * n + col];
            for k in col..n {
                a[row * n + k] -= factor * a[col * n + k];
            }
            b[row] -= factor * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row * n + k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row * n + row];
    }
    x
}

#[test]
fn rls_matches_batch_least_squares() {
    // Noiseless data, features of unit order (RLS without scaling works in original units).
    let mut rng = SmallRng::seed_from_u64(41);
    let dim = 6;
    let truth = [1.5, -2.0, 0.25, 3.0, -0.75, 0.5];
    let rows: Vec<(Vec<f64>, f64)> = (0..2000)
        .map(|_| {
            let x: Vec<f64> = (0..dim).map(|i| i as f64 + gaussian(&mut rng)).collect();
            let y = 4.0 + dot(&truth, &x);
            (x, y)
        })
        .collect();
    let params = LinearParams {
        algorithm: LinearAlgorithm::Rls,
        forgetting: 1.0,
        scale: false,
        ..LinearParams::default()
    };
    let mut model = LinearRegression::new(dim, params).expect("valid");
    for (x, y) in &rows {
        model.learn_one(x, *y);
    }
    // Normal equations XᵀX θ = Xᵀy with X = [x, 1].
    let p = dim + 1;
    let (mut xtx, mut xty) = (vec![0.0; p * p], vec![0.0; p]);
    for (x, y) in &rows {
        let row: Vec<f64> = x.iter().copied().chain([1.0]).collect();
        for i in 0..p {
            xty[i] += row[i] * y;
            for j in 0..p {
                xtx[i * p + j] += row[i] * row[j];
            }
        }
    }
    let batch = solve(xtx, xty);
    for (i, (rls, batch)) in model.weights().iter().zip(&batch).enumerate() {
        assert!((rls - batch).abs() < 1e-6, "weight {i}: {rls} vs {batch}");
    }
    assert!(
        (model.intercept() - batch[dim]).abs() < 1e-6,
        "intercept {} vs {}",
        model.intercept(),
        batch[dim]
    );
    // The data are noiseless, so batch least squares is the truth.
    assert!((batch[0] - truth[0]).abs() < 1e-9);
}

#[test]
fn sgd_recovers_known_weights_of_a_noisy_stream() {
    // River's setting: SGD at lr 0.01, constant rate. Weight noise at equilibrium is about
    // √(lr·σ²/2) ≈ 0.007 per unit feature; 0.03 is about four of those for the worst of 8.
    let params = LinearParams {
        algorithm: LinearAlgorithm::Sgd,
        learning_rate: 0.01,
        ..LinearParams::default()
    };
    let mut model = LinearRegression::new(8, params).expect("valid");
    for (x, y) in stream(20_000, 0.1, 43) {
        model.learn_one(&x, y);
    }
    let error = max_scaled_coefficient_error(&model);
    assert!(error < 0.03, "max scaled coefficient error {error}");
}

#[test]
fn adagrad_recovers_known_weights_of_a_noisy_stream() {
    // Default parameters (lr 0.1, decaying like 1/√t); the same 0.03 as SGD.
    let mut model = model(LinearAlgorithm::Adagrad);
    for (x, y) in stream(20_000, 0.1, 47) {
        model.learn_one(&x, y);
    }
    let error = max_scaled_coefficient_error(&model);
    assert!(error < 0.03, "max scaled coefficient error {error}");
}

#[test]
fn every_algorithm_predicts_near_the_noise_floor() {
    // Prequential MAE over readings 5000..20000 with σ = 0.1: the optimum is
    // σ·√(2/π) ≈ 0.080. Allow 10 %.
    for algorithm in [
        LinearAlgorithm::Sgd,
        LinearAlgorithm::Adagrad,
        LinearAlgorithm::Rls,
    ] {
        let params = LinearParams {
            algorithm,
            learning_rate: if algorithm == LinearAlgorithm::Sgd {
                0.01
            } else {
                0.1
            },
            ..LinearParams::default()
        };
        let mut model = LinearRegression::new(8, params).expect("valid");
        let mut sum_abs = 0.0;
        for (t, (x, y)) in stream(20_000, 0.1, 53).into_iter().enumerate() {
            let prediction = model.predict_one(&x);
            if t >= 5000 {
                sum_abs += (y - prediction.value).abs();
            }
            model.learn_one(&x, y);
        }
        let mae = sum_abs / 15_000.0;
        assert!(mae < 0.088, "{algorithm:?}: MAE {mae}");
    }
}

#[test]
fn target_offset_and_scale_do_not_change_accuracy() {
    // The same stream with y·1e-3 + 1e5: the relative error is the same within 1 %.
    for algorithm in [
        LinearAlgorithm::Sgd,
        LinearAlgorithm::Adagrad,
        LinearAlgorithm::Rls,
    ] {
        let params = LinearParams {
            algorithm,
            learning_rate: 0.01,
            ..LinearParams::default()
        };
        let mut plain = LinearRegression::new(8, params).expect("valid");
        let mut shifted = plain.clone();
        let (mut plain_error, mut shifted_error) = (0.0, 0.0);
        for (t, (x, y)) in stream(10_000, 0.1, 59).into_iter().enumerate() {
            let y_shifted = 1.0e-3 * y + 1.0e5;
            if t >= 2000 {
                plain_error += (y - plain.predict_one(&x).value).abs();
                shifted_error += (y_shifted - shifted.predict_one(&x).value).abs() * 1.0e3;
            }
            plain.learn_one(&x, y);
            shifted.learn_one(&x, y_shifted);
        }
        let ratio = shifted_error / plain_error;
        assert!((ratio - 1.0).abs() < 0.01, "{algorithm:?}: ratio {ratio}");
    }
}

#[test]
fn prediction_interval_covers_about_95_percent() {
    for algorithm in [LinearAlgorithm::Adagrad, LinearAlgorithm::Rls] {
        let mut model = model(algorithm);
        let (mut inside, mut scored) = (0usize, 0usize);
        for (t, (x, y)) in stream(20_000, 0.5, 61).into_iter().enumerate() {
            let prediction = model.predict_one(&x);
            assert!(prediction.lower <= prediction.value);
            assert!(prediction.value <= prediction.upper);
            if t >= 2000 {
                scored += 1;
                inside += usize::from(prediction.lower <= y && y <= prediction.upper);
            }
            model.learn_one(&x, y);
        }
        let coverage = inside as f64 / scored as f64;
        assert!(
            (0.93..=0.97).contains(&coverage),
            "{algorithm:?}: {coverage}"
        );
    }
}

#[test]
fn fresh_model_predicts_zero_with_a_wide_finite_band() {
    let mut model = model(LinearAlgorithm::Adagrad);
    let first = model.predict_one(&[1.0; 8]);
    assert_eq!(first.value, 0.0);
    assert_eq!((first.lower, first.upper), (-1.96, 1.96));
    assert_eq!(OnlineModel::predict_one(&model, &[1.0; 8]), None);
    model.learn_one(&[1.0; 8], 250.0);
    // One reading: the prediction is that target, and no error has been seen yet.
    let second = OnlineModel::predict_one(&model, &[2.0; 8]).expect("learnt once");
    assert_eq!(second.value, 250.0);
    assert!((second.upper - second.value - 1.96 * 250.0).abs() < 1e-9);
    assert_eq!(OnlineModel::predict_one(&model, &[2.0; 7]), None);
}

#[test]
fn state_round_trip_gives_identical_predictions() {
    for algorithm in [
        LinearAlgorithm::Sgd,
        LinearAlgorithm::Adagrad,
        LinearAlgorithm::Rls,
    ] {
        let params = LinearParams {
            algorithm,
            learning_rate: 0.01,
            ..LinearParams::default()
        };
        let data = stream(3000, 0.1, 67);
        let mut original = LinearRegression::new(8, params).expect("valid");
        for (x, y) in &data[..1500] {
            original.learn_one(x, *y);
        }
        let bytes = postcard::to_stdvec(&original).expect("serialises");
        let mut restored: LinearRegression = postcard::from_bytes(&bytes).expect("deserialises");
        assert_eq!(restored, original);
        for (x, y) in &data[1500..] {
            let (a, b) = (original.predict_one(x), restored.predict_one(x));
            assert_eq!(a.value.to_bits(), b.value.to_bits());
            assert_eq!(a.upper.to_bits(), b.upper.to_bits());
            original.learn_one(x, *y);
            restored.learn_one(x, *y);
        }
        assert_eq!(restored.updates(), 3000);
        assert_eq!(restored, original);
    }
}

#[test]
fn corrupt_state_is_rejected_on_deserialise() {
    let mut model = model(LinearAlgorithm::Rls);
    for (x, y) in stream(100, 0.1, 71) {
        model.learn_one(&x, y);
    }
    let reject = |bad: &LinearRegression| {
        let bytes = postcard::to_stdvec(bad).expect("serialises");
        postcard::from_bytes::<LinearRegression>(&bytes).is_err()
    };
    let mut bad = model.clone();
    bad.state.weights = Array1::zeros(5);
    assert!(reject(&bad), "weights of the wrong length");
    let mut bad = model.clone();
    bad.state.covariance[(1, 2)] = f64::NAN;
    assert!(reject(&bad), "non-finite covariance");
    let mut bad = model.clone();
    bad.state.covariance[(1, 2)] += 1.0;
    assert!(reject(&bad), "asymmetric covariance");
    let mut bad = model.clone();
    bad.state.covariance = Array2::zeros((0, 0));
    assert!(reject(&bad), "RLS without covariance");
    let mut bad = model.clone();
    bad.state.mean_sq_error = -1.0;
    assert!(reject(&bad), "negative variance");
    let mut bad = model.clone();
    bad.state.updates = 7;
    assert!(reject(&bad), "scaler count disagrees");
    let mut bad = model.clone();
    bad.state.scaler = StandardScaler::new(3);
    assert!(reject(&bad), "scaler of another dimension");
    let mut bad = model.clone();
    bad.state.params.forgetting = 2.0;
    assert!(reject(&bad), "invalid params");
    let bytes = postcard::to_stdvec(&model).expect("serialises");
    assert!(postcard::from_bytes::<LinearRegression>(&bytes[..bytes.len() / 2]).is_err());
    assert!(postcard::from_bytes::<LinearRegression>(&bytes).is_ok());
}

#[test]
fn non_finite_or_misshaped_readings_are_rejected() {
    for algorithm in [
        LinearAlgorithm::Sgd,
        LinearAlgorithm::Adagrad,
        LinearAlgorithm::Rls,
    ] {
        let params = LinearParams {
            algorithm,
            learning_rate: 0.01,
            ..LinearParams::default()
        };
        let mut model = LinearRegression::new(8, params).expect("valid");
        let data = stream(200, 0.1, 73);
        for (x, y) in &data {
            model.learn_one(x, *y);
        }
        let before = model.clone();
        let (x, y) = data[0];
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1.0e300] {
            model.learn_one(&x, bad);
            let mut bad_x = x;
            bad_x[3] = bad;
            model.learn_one(&bad_x, y);
        }
        model.learn_one(&x[..7], y);
        model.learn_one(&[1.0; 9], y);
        assert_eq!(model, before, "{algorithm:?}");
        assert_eq!(model.updates(), 200);
        // Prediction imputes a non-finite feature with its running mean (z = 0).
        let mut bad_x = x;
        bad_x[2] = f64::NAN;
        let mut mean_x = x;
        mean_x[2] = model.scaler().mean()[2];
        let (imputed, at_mean) = (model.predict_one(&bad_x), model.predict_one(&mean_x));
        assert!(imputed.value.is_finite() && imputed.upper.is_finite());
        assert!((imputed.value - at_mean.value).abs() < 1e-9);
    }
}

#[test]
fn diverging_sgd_is_reset_not_poisoned() {
    // Unscaled features of size 1e6 with lr 1: every step overshoots a millionfold.
    let params = LinearParams {
        algorithm: LinearAlgorithm::Sgd,
        learning_rate: 1.0,
        scale: false,
        ..LinearParams::default()
    };
    let mut model = LinearRegression::new(2, params).expect("valid");
    for t in 0..200 {
        let x = [1.0e6 * (t % 3) as f64, -1.0e6];
        model.learn_one(&x, 1.0);
        assert!(model.weights().iter().all(|w| w.is_finite()), "step {t}");
        assert!(model.predict_one(&x).value.is_finite(), "step {t}");
    }
    let bytes = postcard::to_stdvec(&model).expect("serialises");
    assert!(postcard::from_bytes::<LinearRegression>(&bytes).is_ok());
}

#[test]
fn params_validation_rejects_each_bad_param() {
    let defaults = LinearParams::default();
    assert!(defaults.validate().is_ok());
    let bad = [
        (
            "learning_rate",
            LinearParams {
                learning_rate: 0.0,
                ..defaults
            },
        ),
        (
            "learning_rate",
            LinearParams {
                learning_rate: 11.0,
                ..defaults
            },
        ),
        (
            "learning_rate",
            LinearParams {
                learning_rate: f64::NAN,
                ..defaults
            },
        ),
        (
            "power_t",
            LinearParams {
                power_t: -0.1,
                ..defaults
            },
        ),
        (
            "power_t",
            LinearParams {
                power_t: 1.5,
                ..defaults
            },
        ),
        (
            "l2",
            LinearParams {
                l2: -1.0,
                ..defaults
            },
        ),
        (
            "l2",
            LinearParams {
                l2: f64::INFINITY,
                ..defaults
            },
        ),
        (
            "forgetting",
            LinearParams {
                forgetting: 0.89,
                ..defaults
            },
        ),
        (
            "forgetting",
            LinearParams {
                forgetting: 1.01,
                ..defaults
            },
        ),
        (
            "forgetting",
            LinearParams {
                forgetting: f64::NAN,
                ..defaults
            },
        ),
        (
            "interval_z",
            LinearParams {
                interval_z: 0.0,
                ..defaults
            },
        ),
        (
            "interval_z",
            LinearParams {
                interval_z: f64::INFINITY,
                ..defaults
            },
        ),
    ];
    for (name, params) in bad {
        match LinearRegression::new(8, params) {
            Err(ModelError::OutOfRange(errors)) => {
                assert_eq!(errors.len(), 1, "{errors:?}");
                assert_eq!(errors[0].key, name, "{errors:?}");
            }
            other => panic!("{params:?} accepted: {other:?}"),
        }
    }
    // Above 10 too: the one range the loader and the model share.
    let wide = LinearParams {
        interval_z: 11.0,
        ..defaults
    };
    assert!(matches!(wide.validate(), Err(ModelError::OutOfRange(_))));
    for dim in [0, MAX_FEATURES + 1] {
        match LinearRegression::new(dim, defaults) {
            Err(ModelError::InvalidParams(message)) => {
                assert!(message.starts_with("dim"), "{message}")
            }
            other => panic!("dim {dim} accepted: {other:?}"),
        }
    }
    assert!(LinearRegression::new(MAX_FEATURES, defaults).is_ok());
    // SGD on 8 scaled features diverges from 2/9 on.
    let sgd = LinearParams {
        algorithm: LinearAlgorithm::Sgd,
        learning_rate: 0.25,
        ..defaults
    };
    assert!(matches!(
        LinearRegression::new(8, sgd),
        Err(ModelError::InvalidParams(message)) if message.starts_with("learning_rate")
    ));
    assert!(LinearRegression::new(
        8,
        LinearParams {
            scale: false,
            ..sgd
        }
    )
    .is_ok());
    let all_bad = LinearParams {
        algorithm: LinearAlgorithm::Sgd,
        learning_rate: -1.0,
        power_t: 2.0,
        l2: -1.0,
        forgetting: 0.0,
        scale: true,
        interval_z: -1.0,
    };
    match all_bad.validate() {
        Err(ModelError::OutOfRange(errors)) => assert_eq!(errors.len(), 5, "{errors:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn explain_returns_top_k_and_contributions_sum_to_the_prediction() {
    for algorithm in [LinearAlgorithm::Adagrad, LinearAlgorithm::Rls] {
        let mut model = model(algorithm);
        let data = stream(2000, 0.1, 79);
        for (x, y) in &data {
            model.learn_one(x, *y);
        }
        let (x, _) = data[17];
        let prediction = model.predict_one(&x).value;
        let mut all = Vec::new();
        model.explain(&x, 8, &mut all);
        assert_eq!(all.len(), 8);
        let scaled_sum: f64 = all.iter().map(|c| c.scaled).sum();
        assert!((scaled_sum + model.intercept() - prediction).abs() < 1e-9);
        let mut coefficients = [0.0; 8];
        let original_intercept = model.original_coefficients(&mut coefficients);
        let original_sum: f64 = all.iter().map(|c| c.original).sum();
        // Original units carry the offsets (up to 1e3 · coefficients): relative 1e-12.
        assert!(
            (original_sum + original_intercept - prediction).abs()
                < 1e-12 * (original_sum.abs() + original_intercept.abs()).max(1.0),
            "{original_sum} + {original_intercept} vs {prediction}"
        );
        for c in &all {
            assert!((c.original - coefficients[c.feature] * x[c.feature]).abs() < 1e-9);
        }
        // Sorted by |scaled|, every feature once.
        assert!(all
            .windows(2)
            .all(|w| w[0].scaled.abs() >= w[1].scaled.abs()));
        let mut features: Vec<usize> = all.iter().map(|c| c.feature).collect();
        features.sort_unstable();
        assert_eq!(features, (0..8).collect::<Vec<_>>());

        let mut top = Vec::with_capacity(8);
        let buffer = top.as_ptr();
        model.explain(&x, 3, &mut top);
        assert_eq!(top, all[..3]);
        model.explain(&x, 3, &mut top);
        assert_eq!(top.as_ptr(), buffer, "capacity is reused");
        model.explain(&x, 0, &mut top);
        assert!(top.is_empty());
    }
}
