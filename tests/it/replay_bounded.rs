//! `replay` keeps `[runtime] max_resident_keys`: past it the least recently used keys are
//! passivated to a temporary store and restored on their next reading, and the outputs are
//! byte for byte those of a replay that keeps every key in memory — for forecasts, operators
//! (filter, map, dedupe, windows), chained pipelines with anomaly detection, a classifier, and
//! recommendations with requests — whatever the bound, with keys coming back after eviction.

use std::path::Path;

use crate::common::*;
use edgeflow::config::Config;
use edgeflow::replay::{ReplaySummary, Replayer};

fn example(name: &str) -> Config {
    load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("configs")
            .join(name),
    )
}

/// The raw output and the summary of a replay of `input` with at most `max_resident` keys.
fn replay(config: &Config, input: &str, max_resident: usize) -> (Vec<u8>, ReplaySummary) {
    let mut config = config.clone();
    config.runtime.max_resident_keys = max_resident;
    let mut replayer = Replayer::new(&config).expect("replayer");
    let mut out = Vec::new();
    replayer.run(input.as_bytes(), &mut out).expect("replay");
    (out, replayer.summary())
}

/// Replays `input` unbounded and with each of `bounds`: the same bytes out and the same
/// summary (but for the passivation counts), and keys were passivated and restored.
fn assert_bounded_like_unbounded(what: &str, config: &Config, input: &str, bounds: &[usize]) {
    let (expected, unbounded) = replay(config, input, usize::MAX);
    assert_eq!(
        unbounded.passivated, 0,
        "{what}: unbounded replay passivated"
    );
    assert!(unbounded.outputs > 0, "{what}: no outputs at all");
    let keys: u64 = unbounded.pipelines.iter().map(|p| p.keys).sum();
    for &bound in bounds {
        assert!((bound as u64) < keys, "{what}: {keys} keys fit in {bound}");
        let (out, mut summary) = replay(config, input, bound);
        assert!(
            summary.passivated > 0 && summary.restored > 0,
            "{what}, {bound} resident: {} passivated, {} restored",
            summary.passivated,
            summary.restored
        );
        assert!(
            summary.peak_resident_keys <= bound as u64,
            "{what}: {} resident over a bound of {bound}",
            summary.peak_resident_keys
        );
        if out != expected {
            let first_difference = String::from_utf8_lossy(&out)
                .lines()
                .zip(String::from_utf8_lossy(&expected).lines())
                .position(|(a, b)| a != b);
            panic!("{what}, {bound} resident: outputs differ (first at line {first_difference:?})");
        }
        summary.passivated = 0;
        summary.passivated_for_memory = 0;
        summary.restored = 0;
        summary.peak_resident_keys = 0;
        assert_eq!(
            summary, unbounded,
            "{what}, {bound} resident: summaries differ"
        );
    }
}

#[test]
fn bounded_forecast_replay_writes_the_outputs_of_an_unbounded_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = load(&write_config(
        dir.path(),
        &config_text("127.0.0.1", 1883, &dir.path().join("data"), "bounded"),
    ));
    // 7 sensors in turn, 60 steps: with fewer resident keys, every key is passivated and
    // restored again and again.
    let input = replay_input(&readings(7, 0, 60));
    assert_bounded_like_unbounded("forecast", &config, &input, &[1, 2, 6]);
}

/// configs/operators.toml with one key per sensor in `climate` (the example keys it on the
/// topic's last level, `climate`, which is one key for every sensor).
fn operators_config() -> Config {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/operators.toml"),
    )
    .expect("configs/operators.toml");
    let text = text.replacen("key = \"topic[3]\"", "key = \"/sensor\"", 1);
    assert!(text.contains("key = \"/sensor\""), "operators.toml changed");
    let dir = tempfile::tempdir().expect("tempdir");
    load(&write_config(dir.path(), &text))
}

/// Climate readings of `sensors` sensors in two rooms (`site/s1/{room}/climate`), one a
/// second for `seconds` s, with a duplicate every 13th reading, a late one every 29th and an
/// implausible one (filtered) every 31st.
fn climate_input(sensors: usize, seconds: usize) -> String {
    let mut lines = Vec::new();
    for t in 0..seconds {
        for s in 0..sensors {
            let n = t * sensors + s;
            let room = ["kitchen", "hall"][s % 2];
            let ts = 1_764_064_800 + t as i64;
            let temp_f = if n % 31 == 30 {
                400.0
            } else {
                68.0 + s as f64 + 4.0 * (t as f64 / 40.0).sin() + 0.1 * ((t * 7 + s) % 5) as f64
            };
            let rh = 40.0 + 10.0 * ((t + s) as f64 / 25.0).cos();
            let topic = format!("site/s1/{room}/climate");
            let payload = |ts: i64| {
                format!("{{\"sensor\":\"c{s}\",\"ts\":{ts},\"temp_f\":{temp_f:.2},\"rh\":{rh:.1}}}")
            };
            lines.push((topic.clone(), payload(ts)));
            if n % 13 == 0 {
                lines.push((topic.clone(), payload(ts)));
            }
            if n % 29 == 0 && t > 200 {
                lines.push((topic, payload(ts - 150)));
            }
        }
    }
    replay_input(&lines)
}

#[test]
fn bounded_replay_keeps_operator_windows_chains_and_anomaly_detectors() {
    // Filter, map, dedupe and a 1-minute window per sensor (`climate`), its forecast errors
    // chained into an anomaly pipeline (`climate_errors`), and a sliding 5-minute window per
    // room (`rooms`).
    let config = operators_config();
    let input = climate_input(6, 900);
    let (_, unbounded) = replay(&config, &input, usize::MAX);
    let climate = &unbounded.pipelines[0];
    assert_eq!(climate.keys, 6, "{unbounded:?}");
    assert!(
        climate.filtered > 0 && climate.duplicates > 0 && climate.late > 0,
        "{climate:?}"
    );
    assert_eq!(unbounded.pipelines[1].keys, 6, "{unbounded:?}");
    assert_eq!(unbounded.pipelines[2].keys, 2, "{unbounded:?}");
    assert_bounded_like_unbounded("operators", &config, &input, &[1, 3, 7]);
}

#[test]
fn bounded_replay_keeps_classifier_profiles() {
    // configs/classifier.toml: forecasts per machine, profiled every 5 minutes (event time)
    // and clustered into 3 classes; profiles include the model's MAE, so they read the key
    // states, passivated or not.
    let config = example("classifier.toml");
    let mut lines = Vec::new();
    for i in 0..4000usize {
        let machine = i % 8;
        let ts = 1_764_064_800_000i64 + (i / 8) as i64 * 5_000;
        let base = [1.0, 5.0, 9.0][machine % 3];
        let power = base + 0.3 * ((i * 7919) % 100) as f64 / 100.0;
        let vibration = base / 3.0 + 0.1 * ((i * 104_729) % 100) as f64 / 100.0;
        lines.push((
            format!("factory/m{machine}/machine"),
            format!("{{\"ts\":{ts},\"power\":{power:.3},\"vibration\":{vibration:.3}}}"),
        ));
    }
    let input = replay_input(&lines);
    let (_, unbounded) = replay(&config, &input, usize::MAX);
    let classifier = &unbounded.classifiers[0];
    assert!(
        classifier.updates > 1 && classifier.keys == 8,
        "{classifier:?}"
    );
    assert_bounded_like_unbounded("classifier", &config, &input, &[1, 5]);
}

#[test]
fn bounded_replay_keeps_recommend_histories_and_answers_requests_from_them() {
    // configs/recommend.toml: `vending` publishes only on request, from the user's history,
    // so a request for a passivated user must read the history back.
    let config = example("recommend.toml");
    let mut lines = Vec::new();
    for i in 0..600usize {
        let user = format!("u{}", i % 9);
        let t = 1_764_064_800_000i64 + i as i64 * 1000;
        let sku = format!("sku-{}", (i * 31 + i / 9) % 17);
        let kind = ["view", "cart", "purchase", "wishlist"][(i / 3) % 4];
        lines.push((
            "shop/kiosk-1/events".to_string(),
            format!("{{\"user\":\"{user}\",\"ts\":{t},\"sku\":\"{sku}\",\"type\":\"{kind}\"}}"),
        ));
        let card = format!("c-{}", i % 7);
        lines.push((
            "vending/m7/sales".to_string(),
            format!(
                "{{\"card\":\"{card}\",\"ts\":{},\"product\":{},\"qty\":{}}}",
                t / 1000,
                3000 + (i * 13) % 11,
                1 + i % 3
            ),
        ));
        if i % 5 == 4 {
            lines.push((
                "vending/requests".to_string(),
                format!("{{\"user\":\"c-{}\"}}", (i / 5) % 7),
            ));
        }
    }
    let input = replay_input(&lines);
    let (_, unbounded) = replay(&config, &input, usize::MAX);
    let vending = unbounded.pipelines[1]
        .recommender
        .as_ref()
        .expect("vending recommender");
    assert!(vending.requests > 100 && vending.lists > 100, "{vending:?}");
    assert_bounded_like_unbounded("recommend", &config, &input, &[1, 4, 12]);
}

#[test]
fn a_passivated_key_state_reads_back_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = load(&write_config(
        dir.path(),
        &config_text("127.0.0.1", 1883, &dir.path().join("data"), "bounded"),
    ));
    let input = replay_input(&readings(5, 0, 30));
    let mut unbounded = Replayer::new(&config).expect("replayer");
    unbounded
        .run(input.as_bytes(), &mut std::io::sink())
        .expect("replay");
    config.runtime.max_resident_keys = 1;
    let mut bounded = Replayer::new(&config).expect("replayer");
    bounded
        .run(input.as_bytes(), &mut std::io::sink())
        .expect("replay");
    assert_eq!(bounded.key_counts().peak_resident, 1);
    for sensor in 0..5 {
        let key = format!("s{sensor:02}");
        let state = bounded.state(0, &key).expect("a passivated key");
        assert_eq!(Some(state), unbounded.state(0, &key), "{key}");
    }
    assert_eq!(bounded.state(0, "never-seen"), None);
}
