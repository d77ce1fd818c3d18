use super::ar::INITIAL_COVARIANCE;
use super::members::{LEVEL_GAIN, SLOPE_GAIN};
use super::*;
// rand's SmallRng on 64-bit targets, by name: SmallRng itself is another algorithm on
// 32-bit ones (armv7), which would test the models on other data there.
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus as SmallRng;

/// Standard normal draw (Box–Muller; rand 0.9 without rand_distr).
pub(crate) fn gaussian(rng: &mut SmallRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// y_t = 1.2 y_{t−1} − 0.5 y_{t−2} + 10 + ε, ε ~ N(0, σ²); stationary mean 10 / 0.3.
fn ar2_series(steps: usize, sigma: f64, seed: u64) -> Vec<f64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mean = 10.0 / 0.3;
    let (mut previous, mut before) = (mean, mean);
    (0..steps)
        .map(|_| {
            let y = 1.2 * previous - 0.5 * before + 10.0 + sigma * gaussian(&mut rng);
            before = previous;
            previous = y;
            y
        })
        .collect()
}

fn seasonal_series(steps: usize, seed: u64) -> Vec<f64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..steps)
        .map(|t| {
            let phase = std::f64::consts::TAU * t as f64 / 24.0;
            20.0 + 5.0 * phase.sin() + 0.5 * gaussian(&mut rng)
        })
        .collect()
}

/// 20 + 0.01 t + 5 sin(2πt/48) + N(0, 0.5²).
pub(crate) fn seasonal_trend_series(steps: usize, seed: u64) -> Vec<f64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..steps)
        .map(|t| {
            let phase = std::f64::consts::TAU * t as f64 / 48.0;
            20.0 + 0.01 * t as f64 + 5.0 * phase.sin() + 0.5 * gaussian(&mut rng)
        })
        .collect()
}

fn random_walk(steps: usize, seed: u64) -> Vec<f64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut y = 100.0;
    (0..steps)
        .map(|_| {
            y += gaussian(&mut rng);
            y
        })
        .collect()
}

fn forecaster() -> Forecaster {
    Forecaster::new(ForecastParams::default()).expect("default params are valid")
}

fn with(params: ForecastParams) -> Forecaster {
    Forecaster::new(params).expect("valid params")
}

fn seasonal_params(steps: usize) -> ForecastParams {
    ForecastParams {
        season: Some(SeasonSpec::Steps(steps)),
        ..ForecastParams::default()
    }
}

#[derive(Default)]
struct Mae {
    count: usize,
    sum_abs: f64,
}

impl Mae {
    fn add(&mut self, error: f64) {
        self.count += 1;
        self.sum_abs += error.abs();
    }
    fn mae(&self) -> f64 {
        self.sum_abs / self.count as f64
    }
}

/// Prequential MAE of the model and of the naive last-value forecast over `scored`.
struct Scores {
    model: Mae,
    naive: Mae,
}

fn run(model: &mut Forecaster, series: &[f64], scored: std::ops::Range<usize>) -> Scores {
    let mut scores = Scores {
        model: Mae::default(),
        naive: Mae::default(),
    };
    for (t, &y) in series.iter().enumerate() {
        let prediction = model.predict_one(&[]);
        if scored.contains(&t) {
            let prediction = prediction.expect("warm after the warm-up");
            scores.model.add(y - prediction.value);
            scores.naive.add(y - series[t - 1]);
        }
        model.learn_one(&[], y);
    }
    scores
}

#[test]
fn forecaster_beats_naive_on_ar2() {
    let series = ar2_series(5000, 1.0, 7);
    let scores = run(&mut forecaster(), &series, 200..5000);
    let (model, naive) = (scores.model.mae(), scores.naive.mae());
    // Theory: optimal MAE = 0.80 (σ·√(2/π)), naive ≈ 0.97.
    assert!(model <= 0.9 * naive, "model MAE {model} vs naive {naive}");
    assert!(model < 0.86, "model MAE {model} not near the optimum 0.80");
}

#[test]
fn forecaster_beats_naive_on_seasonal_without_a_configured_season() {
    let series = seasonal_series(5000, 11);
    let scores = run(&mut forecaster(), &series, 200..5000);
    let (model, naive) = (scores.model.mae(), scores.naive.mae());
    // Margin: at least 30 % lower than naive. The noise floor is 0.40.
    assert!(model <= 0.7 * naive, "model MAE {model} vs naive {naive}");
}

#[test]
fn forecaster_beats_naive_on_seasonal_trend_noise() {
    for seed in [1, 2, 3] {
        let series = seasonal_trend_series(10_000, seed);
        let mut model = with(seasonal_params(48));
        let scores = run(&mut model, &series, 500..10_000);
        let (model_mae, naive) = (scores.model.mae(), scores.naive.mae());
        // Noise floor 0.40, naive ≈ 0.68: at least 30 % lower than naive (measured: 0.62–0.63
        // of naive for seeds 1–3).
        assert!(
            model_mae <= 0.7 * naive,
            "seed {seed}: model MAE {model_mae} vs naive {naive}"
        );
    }
}

#[test]
fn forecaster_within_3_percent_of_naive_on_random_walk() {
    // On a random walk the naive forecast is optimal: the blend must not be pulled away
    // (measured over seeds 1–10: 1.0008–1.0022 × naive).
    for seed in [1, 2, 3, 4, 5] {
        let series = random_walk(20_000, seed);
        let scores = run(&mut forecaster(), &series, 1..20_000);
        let (model, naive) = (scores.model.mae(), scores.naive.mae());
        assert!(
            model <= 1.03 * naive,
            "seed {seed}: model MAE {model} vs naive {naive}"
        );
    }
}

/// Prequential MAE of the blend and of each member over `scored` (members scored only where
/// they forecast).
fn member_scores(
    model: &mut Forecaster,
    series: &[f64],
    scored: std::ops::Range<usize>,
) -> (f64, [f64; MEMBERS]) {
    let mut blend = Mae::default();
    let mut members: [Mae; MEMBERS] = Default::default();
    for (t, &y) in series.iter().enumerate() {
        if scored.contains(&t) {
            let state = &model.state;
            let forecasts = state.member_forecasts_ahead(1, state.params.damping, 0.0);
            let prediction = model.predict_one(&[]).expect("warm");
            blend.add(y - prediction.value);
            for (mae, forecast) in members.iter_mut().zip(forecasts) {
                if let Some(value) = forecast {
                    mae.add(y - value);
                }
            }
        }
        model.learn_one(&[], y);
    }
    let mut member_mae = [f64::INFINITY; MEMBERS];
    for (out, mae) in member_mae.iter_mut().zip(&members) {
        if mae.count > 0 {
            *out = mae.mae();
        }
    }
    (blend.mae(), member_mae)
}

#[test]
fn blend_is_never_much_worse_than_its_best_member() {
    let cases: [(&str, Vec<f64>, ForecastParams); 4] = [
        (
            "ar2",
            ar2_series(10_000, 1.0, 41),
            ForecastParams::default(),
        ),
        (
            "random walk",
            random_walk(10_000, 42),
            ForecastParams::default(),
        ),
        (
            "seasonal trend",
            seasonal_trend_series(10_000, 43),
            seasonal_params(48),
        ),
        (
            "trend",
            (0..10_000).map(|t| 0.05 * t as f64).collect(),
            ForecastParams::default(),
        ),
    ];
    for (name, series, params) in cases {
        let (blend, members) = member_scores(&mut with(params), &series, 1000..10_000);
        let best = members.iter().copied().fold(f64::INFINITY, f64::min);
        // Bound from the weighting rule: ≤ 1.11 × best in MSE, ≈ 1.054 in MAE; measured
        // ≤ 1.0023 (random walk). On the noiseless ramp the `ar` member is all but exact
        // and takes the whole weight.
        assert!(
            blend <= 1.05 * best + 1e-12,
            "{name}: blend MAE {blend} vs members {members:?}"
        );
    }
}

#[test]
fn duration_season_with_jittered_sampling_beats_naive() {
    // A daily cycle sampled every 5 min ± 2 min; 96 bins of 15 min.
    let day_ms: i64 = 86_400_000;
    let params = ForecastParams {
        season: Some(SeasonSpec::Duration {
            period_ms: day_ms as u64,
            bins: 96,
        }),
        ..ForecastParams::default()
    };
    let mut model = with(params);
    let mut rng = SmallRng::seed_from_u64(5);
    let (mut time, mut previous) = (0i64, None);
    let (mut model_mae, mut naive_mae) = (Mae::default(), Mae::default());
    for step in 0..20_000 {
        time += 300_000 + rng.random_range(-120_000..=120_000);
        let phase = std::f64::consts::TAU * (time % day_ms) as f64 / day_ms as f64;
        let y = 10.0 + 8.0 * phase.sin() + 0.5 * gaussian(&mut rng);
        if let (Some(prediction), Some(previous)) = (model.predict_one(&[]), previous) {
            if step >= 3 * 288 {
                model_mae.add(y - prediction.value);
                naive_mae.add(y - previous);
            }
        }
        model.learn_at(time, y);
        previous = Some(y);
    }
    let (model, naive) = (model_mae.mae(), naive_mae.mae());
    // Noise floor 0.40; the slow daily wave makes naive hard to beat by much (≥ 0.71 × naive
    // even for a perfect forecast). Measured (seed 5): 0.428 vs 0.568, ratio 0.754.
    assert!(model <= 0.8 * naive, "model MAE {model} vs naive {naive}");
    assert!(
        model <= 0.45,
        "model MAE {model} not near the noise floor 0.40"
    );
}

#[test]
fn horizon_k_forecasts_are_no_worse_than_naive_k_step() {
    const HORIZON: usize = 12;
    let series = seasonal_trend_series(12_000, 9);
    let mut model = with(ForecastParams {
        horizon: HORIZON,
        ..seasonal_params(48)
    });
    let mut out = [Prediction {
        value: 0.0,
        lower: 0.0,
        upper: 0.0,
    }; HORIZON];
    let mut model_mae: [Mae; HORIZON] = Default::default();
    let mut naive_mae: [Mae; HORIZON] = Default::default();
    for (t, &y) in series.iter().enumerate() {
        if t >= 1000 && t + HORIZON < series.len() {
            assert_eq!(model.forecast_into(&mut out), HORIZON);
            let one = model.predict_one(&[]).expect("warm");
            assert_eq!(one, out[0]);
            for (k, prediction) in out.iter().enumerate() {
                let target = series[t + k];
                assert!(
                    prediction.lower <= prediction.value && prediction.value <= prediction.upper
                );
                model_mae[k].add(target - prediction.value);
                naive_mae[k].add(target - series[t - 1]);
            }
            // Intervals widen as √k.
            let width = |p: &Prediction| p.upper - p.lower;
            let ratio = width(&out[3]) / width(&out[0]);
            assert!((ratio - 2.0).abs() < 1e-9, "{ratio}");
        }
        model.learn_one(&[], y);
    }
    for k in 0..HORIZON {
        let (model, naive) = (model_mae[k].mae(), naive_mae[k].mae());
        assert!(model <= naive, "step {}: {model} vs naive {naive}", k + 1);
    }
    // A season-aware forecast gains most where the naive one drifts most (measured: step 1
    // 0.417 vs 0.679, step 12 0.433 vs 4.53).
    assert!(model_mae[HORIZON - 1].mae() <= 0.2 * naive_mae[HORIZON - 1].mae());
}

#[test]
fn forecast_into_writes_min_of_horizon_and_buffer() {
    let mut model = with(ForecastParams {
        horizon: 5,
        ..ForecastParams::default()
    });
    let empty = Prediction {
        value: 0.0,
        lower: 0.0,
        upper: 0.0,
    };
    let mut out = [empty; 8];
    assert_eq!(model.forecast_into(&mut out), 0);
    for y in ar2_series(300, 1.0, 3) {
        model.learn_one(&[], y);
    }
    assert_eq!(model.forecast_into(&mut out), 5);
    assert_eq!(out[5], empty);
    assert_eq!(model.forecast_into(&mut out[..2]), 2);
}

#[test]
fn prediction_interval_covers_about_95_percent() {
    for (name, series, params) in [
        ("ar2", ar2_series(20_000, 1.0, 5), ForecastParams::default()),
        (
            "seasonal trend",
            seasonal_trend_series(20_000, 6),
            seasonal_params(48),
        ),
    ] {
        let mut model = with(params);
        let (mut inside, mut scored) = (0usize, 0usize);
        for (t, &y) in series.iter().enumerate() {
            if let Some(prediction) = model.predict_one(&[]) {
                assert!(
                    prediction.lower <= prediction.value && prediction.value <= prediction.upper
                );
                if t >= 500 {
                    scored += 1;
                    inside += usize::from(prediction.lower <= y && y <= prediction.upper);
                }
            }
            model.learn_one(&[], y);
        }
        let coverage = inside as f64 / scored as f64;
        assert!(
            (0.92..=0.97).contains(&coverage),
            "{name}: coverage {coverage}"
        );
    }
}

fn all_season_kinds() -> [ForecastParams; 3] {
    [
        ForecastParams {
            horizon: 4,
            ..ForecastParams::default()
        },
        seasonal_params(24),
        ForecastParams {
            season: Some(SeasonSpec::Duration {
                period_ms: 24_000,
                bins: 12,
            }),
            horizon: 3,
            ..ForecastParams::default()
        },
    ]
}

#[test]
fn state_round_trip_gives_identical_predictions() {
    let series = seasonal_series(3000, 13);
    for params in all_season_kinds() {
        let mut original = with(params);
        let time = |t: usize| t as i64 * 1000 + (t as i64 * 7919) % 300;
        for (t, &y) in series[..1500].iter().enumerate() {
            original.learn_at(time(t), y);
        }
        let bytes = postcard::to_stdvec(&original).expect("serialises");
        let mut restored: Forecaster = postcard::from_bytes(&bytes).expect("deserialises");
        assert_eq!(restored, original);
        let mut expected = [original.predict_one(&[]).expect("warm"); 4];
        let mut got = expected;
        for (t, &y) in series.iter().enumerate().skip(1500) {
            let n = original.forecast_into(&mut expected);
            assert_eq!(restored.forecast_into(&mut got), n);
            for (a, b) in got.iter().zip(&expected).take(n) {
                assert_eq!(a.value.to_bits(), b.value.to_bits());
                assert_eq!(a.lower.to_bits(), b.lower.to_bits());
                assert_eq!(a.upper.to_bits(), b.upper.to_bits());
            }
            original.learn_at(time(t), y);
            restored.learn_at(time(t), y);
        }
        assert_eq!(restored.updates(), 3000);
        assert_eq!(restored, original);
        assert_eq!(
            postcard::to_stdvec(&restored).expect("serialises"),
            postcard::to_stdvec(&original).expect("serialises")
        );
    }
}

#[test]
fn corrupt_state_is_rejected_on_deserialise() {
    for params in all_season_kinds() {
        let mut model = with(params);
        for (t, y) in ar2_series(100, 1.0, 1).into_iter().enumerate() {
            model.learn_at(t as i64 * 1000, y);
        }
        let rejected = |bad: &Forecaster| {
            let bytes = postcard::to_stdvec(bad).expect("serialises");
            postcard::from_bytes::<Forecaster>(&bytes).is_err()
        };
        let mut bad_shape = model.clone();
        bad_shape.state.ar.weights = ndarray::Array1::zeros(3);
        assert!(rejected(&bad_shape));

        let mut bad_number = model.clone();
        bad_number.state.ar.covariance[(1, 2)] = f64::NAN;
        assert!(rejected(&bad_number));

        let mut bad_weight = model.clone();
        bad_weight.state.member_weights[1] = -1.0;
        assert!(rejected(&bad_weight));

        let mut bad_season = model.clone();
        bad_season.state.season.values = ndarray::Array1::zeros(5);
        assert!(rejected(&bad_season));

        let mut bad_params = model.clone();
        bad_params.state.params.horizon = 0;
        assert!(rejected(&bad_params));

        if params.season.is_some() {
            let mut bad_index = model.clone();
            bad_index.state.season.indices[0] = f64::INFINITY;
            assert!(rejected(&bad_index));
        }

        let bytes = postcard::to_stdvec(&model).expect("serialises");
        assert!(postcard::from_bytes::<Forecaster>(&bytes[..bytes.len() / 2]).is_err());
        assert!(postcard::from_bytes::<Forecaster>(&bytes).is_ok());
    }
}

#[test]
fn constant_signal_for_100k_steps_stays_finite_and_forecasts_the_constant() {
    for params in all_season_kinds() {
        for value in [42.0, 0.0, -1.0e5, 3.0e-3] {
            let mut model = with(params);
            for t in 0..100_000 {
                model.learn_at(t * 1000, value);
            }
            let mut out = [model.predict_one(&[]).expect("warm"); 4];
            let n = model.forecast_into(&mut out);
            for prediction in &out[..n] {
                for number in [prediction.value, prediction.lower, prediction.upper] {
                    assert!(number.is_finite(), "{prediction:?}");
                }
                let tolerance = 1e-9 * f64::abs(value).max(1.0);
                assert!(
                    (prediction.value - value).abs() <= tolerance,
                    "{prediction:?}"
                );
                assert!(
                    prediction.upper - prediction.lower <= tolerance,
                    "{prediction:?}"
                );
            }
            let ar = &model.state.ar;
            let trace: f64 = ar.covariance.diag().sum();
            assert!(
                trace <= INITIAL_COVARIANCE * 5.0 * (1.0 + 1e-12),
                "trace {trace}"
            );
            assert!(ar.covariance.iter().all(|p| p.is_finite()));
            assert_eq!(ar.covariance, ar.covariance.t());
        }
    }
}

#[test]
fn model_learns_again_after_a_long_constant_stretch() {
    let mut model = forecaster();
    for _ in 0..100_000 {
        model.learn_one(&[], 33.0);
    }
    let series = ar2_series(3000, 1.0, 17);
    let scores = run(&mut model, &series, 500..3000);
    let (model_mae, naive) = (scores.model.mae(), scores.naive.mae());
    assert!(
        model_mae <= 0.9 * naive,
        "model MAE {model_mae} vs naive {naive}"
    );
}

#[test]
fn large_offset_series_is_forecast_as_well_as_a_centred_one() {
    let centred = ar2_series(5000, 1.0, 19);
    let offset: Vec<f64> = centred.iter().map(|y| y + 1.0e5).collect();
    let scores_centred = run(&mut forecaster(), &centred, 200..5000);
    let scores_offset = run(&mut forecaster(), &offset, 200..5000);
    let (model, naive) = (scores_offset.model.mae(), scores_offset.naive.mae());
    assert!(model <= 0.9 * naive, "model MAE {model} vs naive {naive}");
    // Same series up to the offset: same accuracy within 1 %.
    let centred_mae = scores_centred.model.mae();
    assert!(
        (model - centred_mae).abs() <= 0.01 * centred_mae,
        "{model} vs {centred_mae}"
    );
}

#[test]
fn tiny_scale_series_is_forecast_as_well_as_a_unit_one() {
    let unit = ar2_series(5000, 1.0, 23);
    let tiny: Vec<f64> = unit.iter().map(|y| y * 1.0e-4).collect();
    let scores_unit = run(&mut forecaster(), &unit, 200..5000);
    let scores_tiny = run(&mut forecaster(), &tiny, 200..5000);
    let ratio = scores_tiny.model.mae() / (1.0e-4 * scores_unit.model.mae());
    assert!((ratio - 1.0).abs() < 0.01, "scaled MAE ratio {ratio}");
    assert!(scores_tiny.model.mae() <= 0.9 * scores_tiny.naive.mae());
}

#[test]
fn non_finite_target_is_ignored() {
    for params in all_season_kinds() {
        let series = ar2_series(500, 1.0, 29);
        let mut model = with(params);
        for (t, &y) in series.iter().enumerate() {
            model.learn_at(t as i64 * 1000, y);
        }
        let before = model.clone();
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1.0e300] {
            model.learn_at(600_000, bad);
            model.learn_one(&[], bad);
        }
        assert_eq!(model, before);
        assert_eq!(model.updates(), 500);
        let prediction = model.predict_one(&[]).expect("warm");
        assert!(prediction.value.is_finite() && prediction.upper.is_finite());

        let mut fresh = with(params);
        fresh.learn_one(&[], f64::NAN);
        assert_eq!(fresh.updates(), 0);
        assert_eq!(fresh.predict_one(&[]), None);
    }
}

#[test]
fn single_spike_barely_moves_the_model() {
    for params in [ForecastParams::default(), seasonal_params(24)] {
        let series = ar2_series(4000, 1.0, 31);
        let spike_at = 3000;
        let mut spiked = series.clone();
        spiked[spike_at] += 1000.0;

        let mut clean_model = with(params);
        let mut spiked_model = with(params);
        let (mut clean_errors, mut spiked_errors) = (0.0, 0.0);
        let scored = spike_at + 1..spike_at + 201;
        for (t, (&y_clean, &y_spiked)) in series.iter().zip(&spiked).enumerate() {
            let clean = clean_model.predict_one(&[]).map(|p| p.value);
            let with_spike = spiked_model.predict_one(&[]).map(|p| p.value);
            if scored.contains(&t) {
                clean_errors += (y_clean - clean.expect("warm")).abs();
                spiked_errors += (y_clean - with_spike.expect("warm")).abs();
            }
            clean_model.learn_one(&[], y_clean);
            spiked_model.learn_one(&[], y_spiked);
        }
        // Over the 200 readings after a 1000σ spike the MAE is within 10 % of the spike-free
        // run, and the AR coefficients end within 0.01 of it.
        assert!(
            spiked_errors <= 1.10 * clean_errors,
            "MAE after spike {} vs clean {}",
            spiked_errors / 200.0,
            clean_errors / 200.0
        );
        for (a, b) in spiked_model
            .lag_coefficients()
            .iter()
            .zip(clean_model.lag_coefficients())
        {
            assert!((a - b).abs() < 0.01, "{a} vs {b}");
        }
        let sigma = spiked_model.residual_std().expect("errors seen");
        assert!(sigma < 1.5, "residual std {sigma} inflated by the spike");
    }
}

#[test]
fn level_shift_is_followed_within_a_few_readings() {
    for params in [ForecastParams::default(), seasonal_params(24)] {
        let mut series = ar2_series(4000, 1.0, 37);
        for y in &mut series[3000..] {
            *y += 50.0;
        }
        let mut model = with(params);
        let mut late_errors = 0.0;
        for (t, &y) in series.iter().enumerate() {
            let prediction = model.predict_one(&[]).map(|p| p.value);
            if (3020..3220).contains(&t) {
                late_errors += (y - prediction.expect("warm")).abs();
            }
            model.learn_one(&[], y);
        }
        // 20 readings after a 50σ level shift the forecast is back near its usual accuracy.
        let mae = late_errors / 200.0;
        assert!(mae < 1.0, "{params}: MAE after level shift {mae}");
    }
}

#[test]
fn skipped_readings_keep_a_step_season_in_phase() {
    let series = seasonal_trend_series(6000, 21);
    let mut skipping = with(seasonal_params(48));
    let mut mae = Mae::default();
    for (t, &y) in series.iter().enumerate() {
        if t >= 2000 {
            mae.add(y - skipping.predict_one(&[]).expect("warm").value);
        }
        if t % 10 == 5 {
            skipping.skip();
        } else {
            skipping.learn_one(&[], y);
        }
    }
    assert_eq!(skipping.updates(), 6000 - 600);
    // Still season-aware (noise floor 0.40, naive ≈ 0.67).
    assert!(mae.mae() < 0.5, "MAE with skipped readings {}", mae.mae());
}

#[test]
fn first_value_gives_none_then_naive_forecast_with_finite_interval() {
    let mut model = forecaster();
    assert_eq!(model.predict_one(&[]), None);
    model.learn_one(&[], 20.0);
    let second = model.predict_one(&[]).expect("one value seen");
    assert_eq!(second.value, 20.0);
    assert!(second.lower.is_finite() && second.upper.is_finite());
    assert!(
        second.upper - second.value >= 20.0,
        "deliberately wide: {second:?}"
    );
    model.learn_one(&[], 21.0);
    let third = model.predict_one(&[]).expect("two values seen");
    assert_eq!(third.value, 21.0);
    assert!(
        (third.upper - third.value - 1.96).abs() < 1e-12,
        "{third:?}"
    );
    let weights = model.member_weights();
    assert_eq!(weights[0], ("last", 1.0));
}

#[test]
fn member_weights_sum_to_one_and_favour_the_better_member() {
    let mut model = with(seasonal_params(48));
    assert!(model.member_weights().iter().all(|&(_, w)| w == 0.0));
    for y in seasonal_trend_series(5000, 8) {
        model.learn_one(&[], y);
    }
    let weights = model.member_weights();
    let total: f64 = weights.iter().map(|&(_, w)| w).sum();
    assert!((total - 1.0).abs() < 1e-12, "{weights:?}");
    // Holt–Winters fits this series best; the naive forecasts are far behind.
    let weight = |name: &str| weights.iter().find(|(n, _)| *n == name).map(|&(_, w)| w);
    assert!(weight("trend") > Some(0.5), "{weights:?}");
    assert!(weight("last") < Some(0.05), "{weights:?}");
    assert!(model.member_rmse().iter().all(|(_, rmse)| rmse.is_some()));
}

#[test]
fn params_validation_rejects_each_bad_param() {
    assert!(ForecastParams::default().validate().is_ok());
    let defaults = ForecastParams::default();
    let bad = [
        (
            "lags",
            ForecastParams {
                lags: 0,
                ..defaults
            },
        ),
        (
            "lags",
            ForecastParams {
                lags: 33,
                ..defaults
            },
        ),
        (
            "forgetting",
            ForecastParams {
                forgetting: 0.89,
                ..defaults
            },
        ),
        (
            "forgetting",
            ForecastParams {
                forgetting: 1.01,
                ..defaults
            },
        ),
        (
            "forgetting",
            ForecastParams {
                forgetting: f64::NAN,
                ..defaults
            },
        ),
        (
            "interval_z",
            ForecastParams {
                interval_z: 0.0,
                ..defaults
            },
        ),
        (
            "interval_z",
            ForecastParams {
                interval_z: -1.0,
                ..defaults
            },
        ),
        (
            "interval_z",
            ForecastParams {
                interval_z: f64::INFINITY,
                ..defaults
            },
        ),
        (
            "horizon",
            ForecastParams {
                horizon: 0,
                ..defaults
            },
        ),
        (
            "horizon",
            ForecastParams {
                horizon: 65,
                ..defaults
            },
        ),
        (
            "damping",
            ForecastParams {
                damping: 0.0,
                ..defaults
            },
        ),
        (
            "damping",
            ForecastParams {
                damping: 1.01,
                ..defaults
            },
        ),
        (
            "damping",
            ForecastParams {
                damping: f64::NAN,
                ..defaults
            },
        ),
        ("season steps", seasonal_params(1)),
        ("season steps", seasonal_params(10_001)),
        (
            "season period_ms",
            ForecastParams {
                season: Some(SeasonSpec::Duration {
                    period_ms: 0,
                    bins: 24,
                }),
                ..defaults
            },
        ),
        (
            "season period_ms",
            ForecastParams {
                season: Some(SeasonSpec::Duration {
                    period_ms: u64::MAX,
                    bins: 24,
                }),
                ..defaults
            },
        ),
        (
            "season bins",
            ForecastParams {
                season: Some(SeasonSpec::Duration {
                    period_ms: 1000,
                    bins: 1,
                }),
                ..defaults
            },
        ),
        (
            "season bins",
            ForecastParams {
                season: Some(SeasonSpec::Duration {
                    period_ms: 1000,
                    bins: 1441,
                }),
                ..defaults
            },
        ),
    ];
    for (name, params) in bad {
        match Forecaster::new(params) {
            Err(ModelError::InvalidParams(message)) => {
                assert!(message.starts_with(name), "{message}")
            }
            other => panic!("{params:?} accepted: {other:?}"),
        }
    }
    let edges = [
        ForecastParams {
            lags: 1,
            ..defaults
        },
        ForecastParams {
            lags: 32,
            ..defaults
        },
        ForecastParams {
            forgetting: 0.9,
            ..defaults
        },
        ForecastParams {
            forgetting: 1.0,
            ..defaults
        },
        ForecastParams {
            horizon: 64,
            ..defaults
        },
        ForecastParams {
            damping: 1.0,
            ..defaults
        },
        ForecastParams {
            damping: 1e-9,
            ..defaults
        },
        seasonal_params(2),
        seasonal_params(10_000),
        ForecastParams {
            season: Some(SeasonSpec::Duration {
                period_ms: 1,
                bins: 2,
            }),
            ..defaults
        },
        ForecastParams {
            season: Some(SeasonSpec::Duration {
                period_ms: i64::MAX as u64,
                bins: 1440,
            }),
            ..defaults
        },
    ];
    for params in edges {
        assert!(Forecaster::new(params).is_ok(), "{params:?}");
    }
    let all_bad = ForecastParams {
        lags: 0,
        forgetting: 2.0,
        interval_z: 0.0,
        season: Some(SeasonSpec::Duration {
            period_ms: 0,
            bins: 0,
        }),
        horizon: 0,
        damping: 0.0,
    };
    match all_bad.validate() {
        Err(ModelError::InvalidParams(message)) => assert_eq!(message.matches("; ").count(), 6),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_lag_count_runs_and_keeps_p_symmetric() {
    for lags in 1..=MAX_LAGS {
        let mut model = with(ForecastParams {
            lags,
            horizon: MAX_HORIZON,
            ..ForecastParams::default()
        });
        for y in ar2_series(500, 1.0, lags as u64) {
            model.learn_one(&[], y);
        }
        let p = &model.state.ar.covariance;
        assert_eq!(p, &p.t(), "lags {lags}");
        let mut out = [model.predict_one(&[]).expect("warm"); MAX_HORIZON];
        assert_eq!(model.forecast_into(&mut out), MAX_HORIZON);
        assert!(out.iter().all(|p| p.value.is_finite()), "lags {lags}");
    }
}

#[test]
fn ar_member_recovers_ar2_coefficients() {
    // A memory of ~2000 readings: the estimates' standard error is about 0.02.
    for (lags, seed) in [(2, 51), (2, 52), (4, 53)] {
        let mut model = with(ForecastParams {
            lags,
            forgetting: 0.999,
            ..ForecastParams::default()
        });
        for y in ar2_series(10_000, 1.0, seed) {
            model.learn_one(&[], y);
        }
        let mut expected = vec![0.0; lags];
        expected[..2].copy_from_slice(&[1.2, -0.5]);
        for (got, want) in model.lag_coefficients().iter().zip(&expected) {
            assert!(
                (got - want).abs() <= 0.05,
                "lags {lags} seed {seed}: {:?} vs {expected:?}",
                model.lag_coefficients()
            );
        }
        assert!(
            (model.intercept() - 10.0).abs() <= 2.0,
            "intercept {}",
            model.intercept()
        );
    }
}

/// Cumulative counters (energy meters, odometers): `100 + slope·t`, plus N(0, noise²).
fn ramp(steps: usize, slope: f64, noise: f64, seed: u64) -> Vec<f64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..steps)
        .map(|t| 100.0 + slope * t as f64 + noise * gaussian(&mut rng))
        .collect()
}

/// The lag counts and seasons the ramp tests run with: a ramp must be followed whatever the
/// configuration (a configured season the series does not have included).
fn ramp_configurations() -> impl Iterator<Item = ForecastParams> {
    [1, 4, 8].into_iter().flat_map(|lags| {
        [None, Some(SeasonSpec::Steps(24))].map(|season| ForecastParams {
            lags,
            season,
            ..ForecastParams::default()
        })
    })
}

#[test]
fn forecaster_follows_a_noiseless_ramp() {
    let series = ramp(20_000, 0.05, 0.0, 0);
    for params in ramp_configurations() {
        let mut model = with(params);
        let mut scores = Scores {
            model: Mae::default(),
            naive: Mae::default(),
        };
        for (t, &y) in series.iter().enumerate() {
            if t >= 1000 {
                scores
                    .model
                    .add(y - model.predict_one(&[]).expect("warm").value);
                scores.naive.add(y - series[t - 1]);
            }
            model.learn_one(&[], y);
            let coefficients = model.lag_coefficients();
            assert!(
                coefficients.iter().all(|c| c.abs() < 1e6) && model.intercept().is_finite(),
                "{params} at {t}: coefficients {coefficients:?}, intercept {}",
                model.intercept()
            );
        }
        let (model_mae, naive) = (scores.model.mae(), scores.naive.mae());
        // Naive = the slope, 0.05. Measured: 0.006–0.016 × naive (the ridge of the `ar`
        // member costs about 5e-4).
        assert!(
            model_mae <= 0.1 * naive,
            "{params}: model MAE {model_mae} vs naive {naive}"
        );
        let ar = &model.state.ar;
        let trace: f64 = ar.covariance.diag().sum();
        assert!(
            trace <= INITIAL_COVARIANCE * (params.lags + 1) as f64 * (1.0 + 1e-12),
            "{params}: trace {trace}"
        );
        assert!(ar.covariance.iter().all(|p| p.is_finite()), "{params}");
    }
}

#[test]
fn forecaster_follows_a_noisy_ramp() {
    const NOISE: f64 = 0.2;
    // MAE of the noise itself: the error of the true line.
    let noise_floor = NOISE * (2.0 / std::f64::consts::PI).sqrt();
    for seed in [1, 2] {
        let series = ramp(20_000, 0.05, NOISE, seed);
        for params in ramp_configurations() {
            let scores = run(&mut with(params), &series, 1000..20_000);
            let (model, naive) = (scores.model.mae(), scores.naive.mae());
            // Naive ≈ √2 × the floor (0.226). Measured: 1.08 (8 lags) to 1.26 (1 lag) × the
            // floor, 0.74–0.87 × naive.
            assert!(
                model <= 0.9 * naive,
                "{params} seed {seed}: model MAE {model} vs naive {naive}"
            );
            assert!(
                model <= 1.3 * noise_floor,
                "{params} seed {seed}: model MAE {model} vs noise floor {noise_floor}"
            );
        }
    }
}

#[test]
fn damped_trend_lags_a_ramp_by_its_steady_state_error() {
    // Why the blend needs `ar` on a ramp: with fixed gains the damped slope only holds up
    // under a standing error e (b = φb + αβe ⇒ b = αβe / (1 − φ)), and the level then moves
    // by φb + αe = slope per step ⇒ e = slope (1 − φ) / (α(1 − φ) + αβφ), 2.9 × the slope
    // at the defaults: worse than naive. Undamped (φ = 1) the error vanishes.
    let slope = 0.05;
    let series = ramp(5000, slope, 0.0, 0);
    for damping in [0.98, 0.9, 1.0] {
        let mut model = with(ForecastParams {
            damping,
            ..ForecastParams::default()
        });
        for &y in &series {
            model.learn_one(&[], y);
        }
        let trend_error = model.member_rmse()[1].1.expect("trend has forecast");
        let (alpha, beta) = (LEVEL_GAIN, SLOPE_GAIN);
        let expected = slope * (1.0 - damping) / (alpha * (1.0 - damping) + alpha * beta * damping);
        assert!(
            (trend_error - expected).abs() <= 1e-6 + 1e-3 * expected,
            "φ = {damping}: trend RMSE {trend_error} vs {expected}"
        );
    }
}

/// `cargo test --release -- --ignored --nocapture forecaster_update_throughput`
#[test]
#[ignore = "timing; run in release"]
fn forecaster_update_throughput() {
    let series = ar2_series(1 << 16, 1.0, 99);
    for params in [ForecastParams::default(), seasonal_params(48)] {
        let mut model = with(params);
        let rounds = 80;
        let start = std::time::Instant::now();
        let mut sink = 0.0;
        for _ in 0..rounds {
            for &y in &series {
                if let Some(prediction) = model.predict_one(&[]) {
                    sink += prediction.value;
                }
                model.learn_one(&[], y);
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        let rate = (rounds * series.len()) as f64 / elapsed;
        println!("{params}: {:.2} M updates/s (sink {sink:e})", rate / 1e6);
    }
}
