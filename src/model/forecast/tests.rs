use super::ar::INITIAL_COVARIANCE;
use super::members::{LEVEL_GAIN, SLOPE_GAIN};
use super::*;
use crate::model::OnlineModel;
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
        seasons: Seasons::one(SeasonSpec::Steps(steps)),
        ..ForecastParams::default()
    }
}

fn prediction() -> Prediction {
    Prediction {
        value: 0.0,
        lower: 0.0,
        upper: 0.0,
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
        // Noise floor 0.40, naive ≈ 0.68: at least 30 % lower than naive.
        assert!(
            model_mae <= 0.7 * naive,
            "seed {seed}: model MAE {model_mae} vs naive {naive}"
        );
    }
}

#[test]
fn forecaster_within_3_percent_of_naive_on_random_walk() {
    // On a random walk the naive forecast is optimal: the blend must not be pulled away.
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

/// Prequential MAE of the blend and of each member at step 1 over `scored` (members scored
/// only where they forecast).
fn member_scores(
    model: &mut Forecaster,
    series: &[f64],
    scored: std::ops::Range<usize>,
) -> (f64, [f64; MEMBERS]) {
    let mut blend = Mae::default();
    let mut members: [Mae; MEMBERS] = Default::default();
    for (t, &y) in series.iter().enumerate() {
        if scored.contains(&t) {
            let forecasts = model.members_at(1);
            let prediction = model.predict_one(&[]).expect("warm");
            blend.add(y - prediction.value);
            for (mae, (_, forecast, _)) in members.iter_mut().zip(forecasts) {
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
        // Bound from the weighting rule; measured ≤ 1.01 (random walk). On the noiseless ramp
        // the `ar` members are all but exact and take the whole weight.
        assert!(
            blend <= 1.05 * best + 1e-9,
            "{name}: blend MAE {blend} vs members {members:?}"
        );
    }
}

#[test]
fn duration_season_with_jittered_sampling_beats_naive() {
    // A daily cycle sampled every 5 min ± 2 min; 96 bins of 15 min.
    let day_ms: i64 = 86_400_000;
    let params = ForecastParams {
        seasons: Seasons::one(SeasonSpec::Duration {
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
    // even for a perfect forecast).
    assert!(model <= 0.8 * naive, "model MAE {model} vs naive {naive}");
    assert!(
        model <= 0.45,
        "model MAE {model} not near the noise floor 0.40"
    );
}

/// Per-step MAE of the model, of the naive forecast and of the seasonal naive forecast
/// (season `m`) over the origins `from..`, and the per-step share of targets inside the
/// interval.
struct StepScores {
    model: Vec<Mae>,
    naive: Vec<Mae>,
    seasonal_naive: Vec<Mae>,
    inside: Vec<(usize, usize)>,
}

fn step_scores(model: &mut Forecaster, series: &[f64], from: usize, m: usize) -> StepScores {
    let horizon = model.params().horizon;
    let mut out = vec![prediction(); horizon];
    let mut scores = StepScores {
        model: (0..horizon).map(|_| Mae::default()).collect(),
        naive: (0..horizon).map(|_| Mae::default()).collect(),
        seasonal_naive: (0..horizon).map(|_| Mae::default()).collect(),
        inside: vec![(0, 0); horizon],
    };
    for (t, &y) in series.iter().enumerate() {
        if t >= from && t + horizon < series.len() {
            assert_eq!(model.forecast_into(&mut out), horizon);
            assert_eq!(model.calibrated_steps(), horizon, "calibrated by {from}");
            for (k, p) in out.iter().enumerate() {
                let target = series[t + k];
                assert!(p.lower <= p.value && p.value <= p.upper, "{p:?}");
                scores.model[k].add(target - p.value);
                scores.naive[k].add(target - series[t - 1]);
                let back = m * (k + 1).div_ceil(m);
                scores.seasonal_naive[k].add(target - series[t + k - back]);
                scores.inside[k].1 += 1;
                scores.inside[k].0 += usize::from(p.lower <= target && target <= p.upper);
            }
        }
        model.learn_one(&[], y);
    }
    scores
}

#[test]
fn every_step_of_a_seasonal_series_beats_naive_and_seasonal_naive() {
    // Far steps follow the seasonal members, near steps the short-term ones: each step is
    // better than both naive forecasts, which the one-step weights reused for every step were
    // not (the far steps of the old blend were last-value forecasts).
    const HORIZON: usize = 48;
    let series = seasonal_trend_series(12_000, 9);
    let mut model = with(ForecastParams {
        horizon: HORIZON,
        ..seasonal_params(48)
    });
    let scores = step_scores(&mut model, &series, 2000, 48);
    for k in 0..HORIZON {
        let (model, naive, seasonal) = (
            scores.model[k].mae(),
            scores.naive[k].mae(),
            scores.seasonal_naive[k].mae(),
        );
        assert!(
            model <= naive && model <= seasonal,
            "step {}: {model} vs naive {naive}, seasonal naive {seasonal}",
            k + 1
        );
    }
    // Noise floor 0.40; seasonal naive ≈ √2 × that. Measured: 0.43 at every step, against
    // naive 0.68 (step 1) to 6.4 (step 24, half a season) and seasonal naive 0.69.
    assert!(scores.model[23].mae() <= 0.1 * scores.naive[23].mae());
    for k in 0..HORIZON {
        assert!(scores.model[k].mae() <= 0.7 * scores.seasonal_naive[k].mae());
    }
}

#[test]
fn far_steps_of_a_daily_series_are_weighted_to_the_seasonal_members() {
    const HORIZON: usize = 24;
    let mut model = with(ForecastParams {
        horizon: HORIZON,
        ..seasonal_params(24)
    });
    for y in seasonal_series(5000, 3) {
        model.learn_one(&[], y);
    }
    let weight = |k: usize, name: &str| {
        model
            .members_at(k)
            .iter()
            .find(|(n, _, _)| *n == name)
            .map_or(0.0, |&(_, _, w)| w)
    };
    // Step 24 is a day ahead: the last value says nothing about it.
    assert!(
        weight(HORIZON, "last") < 0.01,
        "{:?}",
        model.members_at(HORIZON)
    );
    assert!(
        weight(HORIZON, "drift") < 0.01,
        "{:?}",
        model.members_at(HORIZON)
    );
    let seasonal: f64 = ["seasonal", "trend", "ar", "ar_log"]
        .iter()
        .map(|name| weight(HORIZON, name))
        .sum();
    assert!(seasonal > 0.99, "{:?}", model.members_at(HORIZON));
}

#[test]
fn forecast_into_writes_min_of_horizon_and_buffer() {
    let mut model = with(ForecastParams {
        horizon: 5,
        ..ForecastParams::default()
    });
    let mut out = [prediction(); 8];
    assert_eq!(model.forecast_into(&mut out), 0);
    for y in ar2_series(300, 1.0, 3) {
        model.learn_one(&[], y);
    }
    assert_eq!(model.forecast_into(&mut out), 5);
    assert_eq!(out[5], prediction());
    assert_eq!(model.forecast_into(&mut out[..2]), 2);
    // learn_forecast_at fills what forecast_into would have.
    let mut shared = [prediction(); 5];
    let mut separate = [prediction(); 5];
    let mut twin = model.clone();
    assert_eq!(model.learn_forecast_at(400_000, 33.0, &mut shared), 5);
    twin.learn_at(400_000, 33.0);
    twin.forecast_into(&mut separate);
    assert_eq!(shared, separate);
    assert_eq!(model, twin);
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
            (0.93..=0.97).contains(&coverage),
            "{name}: coverage {coverage}"
        );
    }
}

#[test]
fn every_step_of_the_horizon_covers_95_percent_of_heavy_tailed_errors() {
    // Student-t-like noise (a Gaussian scale mixture: 1 in 10 readings 3× the spread): a
    // Gaussian ±1.96σ interval would cover ~97 % of it; the calibrated one covers 95 ± 2 % at
    // every step.
    const HORIZON: usize = 12;
    let mut rng = SmallRng::seed_from_u64(77);
    let series: Vec<f64> = (0..40_000)
        .map(|t| {
            let phase = std::f64::consts::TAU * t as f64 / 24.0;
            let scale = if rng.random::<f64>() < 0.1 { 3.0 } else { 1.0 };
            50.0 + 10.0 * phase.sin() + scale * gaussian(&mut rng)
        })
        .collect();
    let mut model = with(ForecastParams {
        horizon: HORIZON,
        ..seasonal_params(24)
    });
    let scores = step_scores(&mut model, &series, 2000, 24);
    for (k, &(inside, scored)) in scores.inside.iter().enumerate() {
        let coverage = inside as f64 / scored as f64;
        assert!(
            (0.93..=0.97).contains(&coverage),
            "step {}: coverage {coverage}",
            k + 1
        );
    }
}

#[test]
fn intervals_are_withheld_until_calibrated_then_published_for_every_step() {
    const HORIZON: usize = 16;
    let mut model = with(ForecastParams {
        horizon: HORIZON,
        ..ForecastParams::default()
    });
    let series = ar2_series(400, 1.0, 12);
    let mut first_calibrated = None;
    for (t, &y) in series.iter().enumerate() {
        model.learn_one(&[], y);
        let calibrated = model.calibrated_steps();
        if t < 15 {
            // Too few errors: no interval at any step (the old first interval was
            // 1013 ± 1986 hPa, and two equal readings gave lower = upper).
            assert_eq!(calibrated, 0, "after {} readings", t + 1);
            let p = model.predict_one(&[]).expect("a value seen");
            assert_eq!((p.lower, p.upper), (p.value, p.value));
        }
        if calibrated > 0 && first_calibrated.is_none() {
            first_calibrated = Some(t);
        }
    }
    // The one-step interval after about 20 readings, every step's after two cycles of the
    // longest band.
    let first = first_calibrated.expect("calibrated");
    assert!((18..=30).contains(&first), "first interval after {first}");
    assert_eq!(model.calibrated_steps(), HORIZON);
}

#[test]
fn min_keeps_forecasts_and_bounds_of_a_non_negative_series_at_or_above_it() {
    // Counts of events per minute: mostly 0–3, never negative.
    let mut rng = SmallRng::seed_from_u64(8);
    let series: Vec<f64> = (0..5000)
        .map(|_| f64::from(u8::from(rng.random::<f64>() < 0.3)) * rng.random_range(1..4) as f64)
        .collect();
    let mut bounded = with(ForecastParams {
        horizon: 8,
        min: Some(0.0),
        ..ForecastParams::default()
    });
    let mut free = with(ForecastParams {
        horizon: 8,
        ..ForecastParams::default()
    });
    let (mut out, mut free_out) = ([prediction(); 8], [prediction(); 8]);
    let mut free_negative = 0;
    for &y in &series {
        bounded.learn_one(&[], y);
        free.learn_one(&[], y);
        let n = bounded.forecast_into(&mut out);
        for p in &out[..n] {
            assert!(p.value >= 0.0 && p.lower >= 0.0, "{p:?}");
        }
        free.forecast_into(&mut free_out);
        free_negative += free_out.iter().filter(|p| p.lower < 0.0).count();
    }
    // Without the bound the intervals do reach below zero.
    assert!(free_negative > 1000, "{free_negative}");
    let bad = ForecastParams {
        min: Some(5.0),
        max: Some(1.0),
        ..ForecastParams::default()
    };
    assert!(Forecaster::new(bad).is_err());
}

fn all_season_kinds() -> [ForecastParams; 4] {
    [
        ForecastParams {
            horizon: 4,
            ..ForecastParams::default()
        },
        seasonal_params(24),
        ForecastParams {
            seasons: Seasons::new(&[SeasonSpec::Steps(12), SeasonSpec::Steps(36)])
                .expect("two seasons"),
            horizon: 40,
            ..ForecastParams::default()
        },
        ForecastParams {
            seasons: Seasons::one(SeasonSpec::Duration {
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
        let horizon = params.horizon;
        let mut expected = vec![prediction(); horizon];
        let mut got = vec![prediction(); horizon];
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
fn state_of_an_hourly_key_with_two_seasons_and_a_48_step_horizon_fits_in_12_kb() {
    // Measured: 9.3 KB, and 1.1 KB with the defaults.
    // What the README states as the memory per key at horizon 48: the serialised state (what
    // the store writes) and the heap the model holds.
    let params = ForecastParams {
        seasons: Seasons::new(&[SeasonSpec::Steps(24), SeasonSpec::Steps(168)]).expect("valid"),
        horizon: 48,
        ..ForecastParams::default()
    };
    let mut model = with(params);
    for y in seasonal_series(2000, 2) {
        model.learn_one(&[], y);
    }
    let bytes = postcard::to_stdvec(&model).expect("serialises").len();
    assert!(bytes <= 12 * 1024, "{bytes} bytes");
    let default = {
        let mut model = forecaster();
        for y in ar2_series(500, 1.0, 1) {
            model.learn_one(&[], y);
        }
        postcard::to_stdvec(&model).expect("serialises").len()
    };
    assert!(default <= 1280, "{default} bytes with the defaults");
}

#[test]
fn corrupt_state_is_rejected_on_deserialise() {
    for params in all_season_kinds() {
        let mut model = with(params);
        for (t, y) in ar2_series(300, 1.0, 1).into_iter().enumerate() {
            model.learn_at(t as i64 * 1000, y);
        }
        let rejected = |bad: &Forecaster| {
            let bytes = postcard::to_stdvec(bad).expect("serialises");
            postcard::from_bytes::<Forecaster>(&bytes).is_err()
        };
        let mut bad_shape = model.clone();
        bad_shape.state.ar.weights = ndarray::Array1::zeros(3);
        assert!(rejected(&bad_shape));

        let mut bad_ring = model.clone();
        bad_ring.state.ar.history = ndarray::Array1::zeros(1);
        assert!(rejected(&bad_ring));

        let mut bad_log = model.clone();
        bad_log.state.ar_log = match bad_log.state.ar_log {
            Some(_) => None,
            None => Some(Box::new(ArMember::new(&bad_log.state.derived.lags))),
        };
        assert!(rejected(&bad_log));

        let mut bad_number = model.clone();
        bad_number.state.ar.covariance[(1, 2)] = f64::NAN;
        assert!(rejected(&bad_number));

        let mut bad_rate = model.clone();
        bad_rate.state.shift_rate = 1.5;
        assert!(rejected(&bad_rate));

        let mut bad_scoring = model.clone();
        bad_scoring.state.scoring = Scoring::new(&Bands::new(params.horizon + 7), 1.96);
        assert!(rejected(&bad_scoring));

        let mut bad_params = model.clone();
        bad_params.state.params.horizon = 0;
        assert!(rejected(&bad_params));

        if !params.seasons.is_empty() {
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
            let mut out = vec![prediction(); params.horizon];
            let n = model.forecast_into(&mut out);
            assert_eq!(model.calibrated_steps(), params.horizon);
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
            let inputs = ar.weights.len() as f64;
            let trace: f64 = ar.covariance.diag().sum();
            assert!(
                trace <= INITIAL_COVARIANCE * inputs * (1.0 + 1e-12),
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
    // Same series up to the offset: same accuracy within 2 % (the `ar_log` member sees
    // another series at a large offset).
    let centred_mae = scores_centred.model.mae();
    assert!(
        (model - centred_mae).abs() <= 0.02 * centred_mae,
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
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            model.learn_at(600_000, bad);
            model.learn_one(&[], bad);
        }
        assert_eq!(model, before);
        assert_eq!(model.updates(), 500);
        let prediction = model.predict_one(&[]).expect("warm");
        assert!(prediction.value.is_finite() && prediction.upper.is_finite());
        // A finite value too large to square is a reading that happened: moved past, not
        // learnt (a step season stays in phase).
        let mut skipped = before.clone();
        skipped.skip_at(600_000);
        model.learn_at(600_000, 1.0e300);
        assert_eq!(model, skipped);
        assert_eq!(model.updates(), 500);

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
        // The forecast published right after the spike assumes it may be a new level (this
        // key has never had an outlier, so the shift rate is at its prior); from the next
        // reading on the spike is known for one.
        let scored = spike_at + 2..spike_at + 202;
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
        assert!(sigma < 2.0, "residual std {sigma} inflated by the spike");
        // Resolved as a spike: the next spike's following forecast is not moved.
        assert!(spiked_model.state.shift_rate < 0.5);
    }
}

/// Half-width of the one-step interval of a warm model.
fn half_width(model: &Forecaster) -> f64 {
    let p = model.predict_one(&[]).expect("warm");
    (p.upper - p.lower) / 2.0
}

#[test]
fn bursts_of_absurd_values_leave_the_forecast_and_its_interval_as_they_were() {
    // A daily series around 20 (hourly readings); at 3000 a burst of faulty readings.
    let series = seasonal_series(4000, 43);
    let spike_at = 3000;
    for (value, burst) in [
        (1e12, 1),
        (1e12, 5),
        (-1e12, 5),
        (1e300, 3),
        (1e12, MAX_ABSURD_RUN),
    ] {
        for params in [seasonal_params(24), ForecastParams::default()] {
            let mut clean = with(params);
            let mut spiked = with(params);
            let mut width_before = 0.0;
            let (mut clean_errors, mut spiked_errors) = (0.0, 0.0);
            for (t, &y) in series.iter().enumerate() {
                if t == spike_at {
                    width_before = half_width(&spiked);
                }
                if (spike_at + burst..spike_at + burst + 200).contains(&t) {
                    let truth =
                        |m: &Forecaster| (y - m.predict_one(&[]).expect("warm").value).abs();
                    clean_errors += truth(&clean);
                    spiked_errors += truth(&spiked);
                }
                if t == spike_at + burst + 3 {
                    // Three readings after the burst the interval is the one before it.
                    let width = half_width(&spiked);
                    assert!(
                        width < 1.5 * width_before && width > 0.5 * width_before,
                        "{params}: {burst} × {value}: half-width {width} vs {width_before} before"
                    );
                }
                clean.learn_one(&[], y);
                let observed = if (spike_at..spike_at + burst).contains(&t) {
                    value
                } else {
                    y
                };
                spiked.learn_one(&[], observed);
            }
            assert!(
                spiked_errors <= 1.05 * clean_errors,
                "{params}: {burst} × {value}: MAE after the burst {} vs {} without it",
                spiked_errors / 200.0,
                clean_errors / 200.0
            );
            let sigma = spiked.residual_std().expect("errors seen");
            let clean_sigma = clean.residual_std().expect("errors seen");
            assert!(
                sigma < 1.2 * clean_sigma,
                "{params}: σ {sigma} vs {clean_sigma}"
            );
        }
    }
}

#[test]
fn a_level_shift_far_beyond_the_range_is_learnt_after_max_absurd_run_readings() {
    // 20 ± 5 → 10 000 (a sensor switched to other units): absurd for MAX_ABSURD_RUN readings,
    // then a new level.
    let mut series = seasonal_series(4000, 47);
    let shift_at = 3000;
    for y in &mut series[shift_at..] {
        *y += 10_000.0;
    }
    for params in [seasonal_params(24), ForecastParams::default()] {
        let mut model = with(params);
        for &y in &series[..shift_at + MAX_ABSURD_RUN] {
            model.learn_one(&[], y);
        }
        // Still the old level: a burst this long may be a fault.
        let forecast = model.predict_one(&[]).expect("warm").value;
        assert!(
            forecast < 100.0,
            "{params}: forecast {forecast} during the run"
        );
        let mut late_errors = 0.0;
        let late = shift_at + MAX_ABSURD_RUN + 5..shift_at + MAX_ABSURD_RUN + 205;
        for (t, &y) in series.iter().enumerate().skip(shift_at + MAX_ABSURD_RUN) {
            let prediction = model.predict_one(&[]).expect("warm");
            if t == shift_at + MAX_ABSURD_RUN + 1 {
                // The reading after the one that confirmed the shift is forecast at the new
                // level (within the seasonal swing of ±5 and the noise).
                assert!(
                    (prediction.value - y).abs() < 10.0,
                    "{params}: forecast {} for {y} after the shift was confirmed",
                    prediction.value
                );
            }
            if late.contains(&t) {
                late_errors += (y - prediction.value).abs();
            }
            model.learn_one(&[], y);
        }
        let mae = late_errors / late.len() as f64;
        assert!(
            mae < 3.0,
            "{params}: MAE {mae} after the shift to a new level"
        );
    }
}

#[test]
fn level_shift_is_learnt_at_its_second_reading() {
    for params in [ForecastParams::default(), seasonal_params(24)] {
        let mut series = ar2_series(4000, 1.0, 37);
        for y in &mut series[3000..] {
            *y += 50.0;
        }
        let mut model = with(params);
        for &y in &series[..3002] {
            model.learn_one(&[], y);
        }
        // Two readings at the new level: the next forecast is at it (the AR(2)'s own
        // forecast error is about 1).
        let forecast = model.predict_one(&[]).expect("warm").value;
        let target = series[3002];
        assert!(
            (forecast - target).abs() < 4.0,
            "{params}: forecast {forecast} for {target} after a 50σ shift"
        );
        let mut late_errors = 0.0;
        for (t, &y) in series.iter().enumerate().skip(3002) {
            let prediction = model.predict_one(&[]).map(|p| p.value);
            if (3010..3210).contains(&t) {
                late_errors += (y - prediction.expect("warm")).abs();
            }
            model.learn_one(&[], y);
        }
        let mae = late_errors / 200.0;
        assert!(mae < 1.0, "{params}: MAE after level shift {mae}");
    }
}

#[test]
fn after_shifts_the_forecast_following_an_outlier_assumes_the_new_level() {
    // A series of steps (a valve opening and closing): once the key's outliers have been
    // shifts, the forecast after the first reading at a new level is at it.
    let mut rng = SmallRng::seed_from_u64(4);
    let mut level = 20.0;
    let mut series = Vec::new();
    for block in 0..40 {
        for _ in 0..100 {
            series.push(level + 0.2 * gaussian(&mut rng));
        }
        level = if block % 2 == 0 { 60.0 } else { 20.0 };
    }
    let mut model = forecaster();
    let mut misses = Vec::new();
    for (t, &y) in series.iter().enumerate() {
        if t > 100 && t % 100 == 1 {
            let forecast = model.predict_one(&[]).expect("warm").value;
            misses.push((forecast - y).abs());
        }
        model.learn_one(&[], y);
    }
    // The reading after each 40-unit step (200σ) is forecast within 3 (the members have
    // learnt the clipped first reading; the rest is the shift's offset). Without the shift
    // rate the miss would be the step itself.
    assert!(misses.iter().all(|&miss| miss < 3.0), "{misses:?}");
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
fn a_short_series_has_a_trend_from_its_third_reading() {
    // Growth curves of a dozen readings per key (ChickWeights): the last value lags the
    // growth, the `drift` member follows it from the third reading on.
    let mut model_mae = Mae::default();
    let mut naive_mae = Mae::default();
    for chick in 0..20 {
        let rate = 1.1 + 0.01 * chick as f64;
        let series: Vec<f64> = (0..12).map(|t| 40.0 * rate.powi(t)).collect();
        let mut model = forecaster();
        for (t, &y) in series.iter().enumerate() {
            if t >= 2 {
                model_mae.add(y - model.predict_one(&[]).expect("two values").value);
                naive_mae.add(y - series[t - 1]);
            }
            model.learn_one(&[], y);
        }
    }
    let (model, naive) = (model_mae.mae(), naive_mae.mae());
    // Measured: 0.45 × naive (the differences of a 10 % growth grow 10 % a step, and the
    // drift's three-reading memory lags them a little).
    assert!(model <= 0.5 * naive, "model MAE {model} vs naive {naive}");
}

#[test]
fn first_value_gives_none_then_the_value_without_an_interval() {
    let mut model = forecaster();
    assert_eq!(model.predict_one(&[]), None);
    model.learn_one(&[], 1013.0);
    let second = model.predict_one(&[]).expect("one value seen");
    assert_eq!(
        (second.value, second.lower, second.upper),
        (1013.0, 1013.0, 1013.0)
    );
    assert_eq!(model.calibrated_steps(), 0);
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
    let rmse = model.member_rmse();
    assert!(rmse.iter().all(|(_, rmse)| rmse.is_some()));
    // The member with the smallest error has the largest weight; the naive ones are far
    // behind on a noisy seasonal series.
    let best = rmse
        .iter()
        .enumerate()
        .min_by(|a, b| a.1 .1.partial_cmp(&b.1 .1).expect("finite"))
        .map(|(m, _)| m)
        .expect("members");
    let heaviest = weights
        .iter()
        .enumerate()
        .max_by(|a, b| a.1 .1.partial_cmp(&b.1 .1).expect("finite"))
        .map(|(m, _)| m)
        .expect("members");
    assert_eq!(best, heaviest, "{weights:?} {rmse:?}");
    let weight = |name: &str| weights.iter().find(|(n, _)| *n == name).map(|&(_, w)| w);
    assert!(weight("last") < Some(0.05), "{weights:?}");
}

#[test]
fn a_multiplicative_season_gets_intervals_that_scale_with_the_level() {
    // A daily swing and noise proportional to the level (a load, a flow): the relative error
    // model wins the interval score, so the interval at the daily trough is far narrower than
    // at the peak; with additive noise the two are alike. Coverage holds either way.
    let mut rng = SmallRng::seed_from_u64(14);
    let multiplicative: Vec<f64> = (0..6000)
        .map(|t| {
            let phase = std::f64::consts::TAU * t as f64 / 24.0;
            50.0 * (1.0 + 0.8 * phase.sin()) * (1.0 + 0.05 * gaussian(&mut rng))
        })
        .collect();
    let additive: Vec<f64> = (0..6000)
        .map(|t| {
            let phase = std::f64::consts::TAU * t as f64 / 24.0;
            50.0 + 40.0 * phase.sin() + 1.5 * gaussian(&mut rng)
        })
        .collect();
    for (name, series, ratio_range) in [
        ("multiplicative", multiplicative, 0.0..0.3),
        ("additive", additive, 0.8..1.25),
    ] {
        let mut model = with(seasonal_params(24));
        let (mut trough, mut peak) = (Mae::default(), Mae::default());
        let (mut inside, mut scored) = (0usize, 0usize);
        for (t, &y) in series.iter().enumerate() {
            let p = model.predict_one(&[]);
            if t >= 2000 {
                let p = p.expect("warm");
                let width = p.upper - p.lower;
                match t % 24 {
                    18 => trough.add(width),
                    6 => peak.add(width),
                    _ => {}
                }
                scored += 1;
                inside += usize::from(p.lower <= y && y <= p.upper);
            }
            model.learn_one(&[], y);
        }
        let ratio = trough.mae() / peak.mae();
        assert!(
            ratio_range.contains(&ratio),
            "{name}: trough/peak width {ratio}"
        );
        let coverage = inside as f64 / scored as f64;
        assert!(
            (0.93..=0.97).contains(&coverage),
            "{name}: coverage {coverage}"
        );
    }
}

/// Hourly readings with a daily cycle and lower weekends (an office's power draw).
fn office_series(steps: usize, seed: u64) -> Vec<f64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..steps)
        .map(|t| {
            let hour = t % 24;
            let day = (t / 24) % 7;
            let working = if day >= 5 { 0.3 } else { 1.0 };
            let daily = if (8..18).contains(&hour) { 1.0 } else { 0.2 };
            20.0 + 60.0 * working * daily + 2.0 * gaussian(&mut rng)
        })
        .collect()
}

#[test]
fn two_seasons_forecast_a_weekly_pattern_that_one_season_cannot() {
    const HORIZON: usize = 48;
    let series = office_series(24 * 7 * 30, 6);
    let mut daily = with(ForecastParams {
        horizon: HORIZON,
        ..seasonal_params(24)
    });
    let mut weekly = with(ForecastParams {
        horizon: HORIZON,
        seasons: Seasons::new(&[SeasonSpec::Steps(168), SeasonSpec::Steps(24)]).expect("valid"),
        ..ForecastParams::default()
    });
    let from = 24 * 7 * 8;
    let one = step_scores(&mut daily, &series, from, 24);
    let two = step_scores(&mut weekly, &series, from, 24);
    let mean = |scores: &[Mae]| scores.iter().map(Mae::mae).sum::<f64>() / scores.len() as f64;
    let (one, two) = (mean(&one.model), mean(&two.model));
    // Noise floor 1.6. Measured: the weekly model about a third of the daily one's error.
    assert!(two < 0.6 * one, "two seasons {two} vs one {one}");
    assert!(two < 3.0, "two seasons {two} vs a noise floor of 1.6");
}

#[test]
fn seasons_are_sorted_and_checked() {
    let two = Seasons::new(&[SeasonSpec::Steps(168), SeasonSpec::Steps(24)]).expect("valid");
    assert_eq!(
        two.as_slice(),
        [SeasonSpec::Steps(24), SeasonSpec::Steps(168)]
    );
    assert_eq!(two.primary(), Some(SeasonSpec::Steps(24)));
    assert!(Seasons::new(&[SeasonSpec::Steps(24), SeasonSpec::Steps(24)]).is_err());
    let mixed = [
        SeasonSpec::Steps(24),
        SeasonSpec::Duration {
            period_ms: 1000,
            bins: 4,
        },
    ];
    assert!(Seasons::new(&mixed).is_err());
    let four = [
        SeasonSpec::Steps(2),
        SeasonSpec::Steps(3),
        SeasonSpec::Steps(4),
        SeasonSpec::Steps(5),
    ];
    assert!(Seasons::new(&four).is_err());
    // The AR lags of [24, 168]: the short ones, then each season's neighbourhood.
    let lags = LagSet::new(4, &two);
    assert_eq!(
        lags.as_slice(),
        [1, 2, 3, 4, 23, 24, 25, 47, 48, 49, 167, 168, 169]
    );
}

#[test]
fn bands_double_and_hold_few_cycles() {
    let shape = |horizon: usize| {
        let bands = Bands::new(horizon);
        (0..bands.len()).map(|b| bands.get(b)).collect::<Vec<_>>()
    };
    assert_eq!(shape(1), [(1, 1)]);
    assert_eq!(shape(4), [(1, 1), (2, 4)]);
    assert_eq!(
        shape(48),
        [(1, 1), (2, 3), (4, 7), (8, 15), (16, 31), (32, 48)]
    );
    assert_eq!(
        shape(64),
        [(1, 1), (2, 3), (4, 7), (8, 15), (16, 31), (32, 64)]
    );
    for horizon in 1..=MAX_HORIZON {
        let bands = Bands::new(horizon);
        assert_eq!(bands.get(bands.len() - 1).1, horizon);
        for k in 1..=horizon {
            let (start, end) = bands.get(bands.band_of(k));
            assert!((start..=end).contains(&k));
            // A band of L steps ending at e holds ⌈e / L⌉ ≤ 3 cycles.
            assert!(end.div_ceil(end + 1 - start) <= 3, "horizon {horizon}");
        }
    }
}

#[test]
fn params_validation_rejects_each_bad_param() {
    assert!(ForecastParams::default().validate().is_ok());
    let defaults = ForecastParams::default();
    let duration = |period_ms: u64, bins: usize| ForecastParams {
        seasons: Seasons::one(SeasonSpec::Duration { period_ms, bins }),
        ..defaults
    };
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
        ("season must be", seasonal_params(1)),
        ("season must be", seasonal_params(10_001)),
        ("season period_ms", duration(0, 24)),
        ("season period_ms", duration(u64::MAX, 24)),
        ("season_bins", duration(1000, 1)),
        ("season_bins", duration(1000, 1441)),
        (
            "min",
            ForecastParams {
                min: Some(f64::NAN),
                ..defaults
            },
        ),
        (
            "max",
            ForecastParams {
                max: Some(f64::INFINITY),
                ..defaults
            },
        ),
        (
            "min must be below max",
            ForecastParams {
                min: Some(1.0),
                max: Some(1.0),
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
        ForecastParams {
            min: Some(-1e9),
            max: Some(1e9),
            ..defaults
        },
        seasonal_params(2),
        seasonal_params(10_000),
        duration(1, 2),
        duration(i64::MAX as u64, 1440),
    ];
    for params in edges {
        assert!(Forecaster::new(params).is_ok(), "{params:?}");
    }
    let all_bad = ForecastParams {
        lags: 0,
        forgetting: 2.0,
        interval_z: 0.0,
        seasons: Seasons::one(SeasonSpec::Duration {
            period_ms: 0,
            bins: 0,
        }),
        horizon: 0,
        damping: 0.0,
        min: Some(f64::NAN),
        max: None,
    };
    match all_bad.validate() {
        Err(ModelError::InvalidParams(message)) => assert_eq!(message.matches("; ").count(), 7),
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
        let mut out = [prediction(); MAX_HORIZON];
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
        assert_eq!(model.lags().len(), lags);
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

/// Cumulative counters (energy meters, odometers): `start + slope·t`, plus N(0, noise²).
fn ramp(steps: usize, start: f64, slope: f64, noise: f64, seed: u64) -> Vec<f64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..steps)
        .map(|t| start + slope * t as f64 + noise * gaussian(&mut rng))
        .collect()
}

/// The lag counts and seasons the ramp tests run with: a ramp must be followed whatever the
/// configuration (a configured season the series does not have included).
fn ramp_configurations() -> impl Iterator<Item = ForecastParams> {
    [1, 4, 8].into_iter().flat_map(|lags| {
        [Seasons::NONE, Seasons::one(SeasonSpec::Steps(24))].map(|seasons| ForecastParams {
            lags,
            seasons,
            ..ForecastParams::default()
        })
    })
}

#[test]
fn forecaster_follows_a_noiseless_ramp() {
    let series = ramp(20_000, 100.0, 0.05, 0.0, 0);
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
        // Naive = the slope, 0.05.
        assert!(
            model_mae <= 0.1 * naive,
            "{params}: model MAE {model_mae} vs naive {naive}"
        );
        let ar = &model.state.ar;
        let trace: f64 = ar.covariance.diag().sum();
        assert!(
            trace <= INITIAL_COVARIANCE * ar.weights.len() as f64 * (1.0 + 1e-12),
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
        let series = ramp(20_000, 100.0, 0.05, NOISE, seed);
        for params in ramp_configurations() {
            let scores = run(&mut with(params), &series, 1000..20_000);
            let (model, naive) = (scores.model.mae(), scores.naive.mae());
            // Naive ≈ √2 × the floor (0.226).
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
    // by φb + αe = slope per step ⇒ e = slope (1 − φ) / (α(1 − φ) + αβφ). Undamped (φ = 1)
    // the error vanishes. The ramp starts below zero so that the member is additive.
    let slope = 0.05;
    let series = ramp(5000, -100.0, slope, 0.0, 0);
    for damping in [0.98, 0.9, 1.0] {
        let mut model = with(ForecastParams {
            damping,
            ..ForecastParams::default()
        });
        for &y in &series[..4999] {
            model.learn_one(&[], y);
        }
        let forecast = model.members_at(1)[TREND].1.expect("trend has a forecast");
        let trend_error = series[4999] - forecast;
        let (alpha, beta) = (LEVEL_GAIN, SLOPE_GAIN);
        let expected = slope * (1.0 - damping) / (alpha * (1.0 - damping) + alpha * beta * damping);
        assert!(
            (trend_error - expected).abs() <= 1e-6 + 1e-3 * expected,
            "φ = {damping}: trend error {trend_error} vs {expected}"
        );
    }
}

#[test]
fn is_absurd_says_which_readings_are_moved_past_unlearnt() {
    // Bursts of 1e12 and 1e300, a 7-long run of 1e4 (a far level shift), plausible readings.
    let mut series = seasonal_series(3000, 53);
    series[1000..1005].fill(1e12);
    series[1500..1503].fill(1e300);
    series[2000..2003].fill(-1e12);
    for y in &mut series[2500..] {
        *y += 1e4;
    }
    for params in [seasonal_params(24), ForecastParams::default()] {
        let mut model = with(params);
        let mut absurd = 0;
        for (t, &y) in series.iter().enumerate() {
            let predicted = model.is_absurd(y);
            let updates = model.updates();
            model.learn_one(&[], y);
            // Moved past without learning exactly when announced (a restart at the new
            // level learns, so it is not announced).
            let unlearnt = model.updates() == updates;
            assert_eq!(predicted, unlearnt, "{params}: reading {t} = {y}");
            absurd += usize::from(predicted);
        }
        assert_eq!(absurd, 5 + 3 + 3 + MAX_ABSURD_RUN, "{params}");
    }
}
