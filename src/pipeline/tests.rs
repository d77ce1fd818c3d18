//! Tests of the pipelines: state versions, outputs of every kind, operators, clock skew.

use super::*;
use crate::codec::{DropReason, ReadingBuf};

fn pipeline(model: &str, extra: &str) -> Pipeline {
    let text = format!(
        "[[pipelines]]\nname = \"p\"\ntopics = [\"t/+\"]\nkey = \"topic[1]\"\nfields = {{ a = \"/a\", b = \"/b\", y = \"/y\" }}\n{extra}\n[pipelines.model]\n{model}\n"
    );
    let config = crate::config::parse_str(std::path::Path::new("test.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}"));
    Pipeline::new(0, &config.pipelines[0]).unwrap()
}

#[test]
fn older_forecast_and_regression_states_start_afresh_and_other_kinds_are_read() {
    // The forecaster before the band-scored blend (versions 1 and 2) and the anomaly
    // detector before calibration (versions 1–3) cannot be carried over; whatever their
    // bytes, such keys start afresh.
    for model in [
        "kind = \"forecast\"\ntarget = \"y\"",
        "kind = \"regression\"\ntarget = \"y\"\nfeatures = [\"a\", \"b\"]",
    ] {
        let p = pipeline(model, "");
        let mut state = p.new_state();
        run_process(&p, &mut state, 50);
        let mut bytes = Vec::new();
        p.encode_state(&state, &mut bytes).expect("encodes");
        assert_eq!(bytes[0], crate::store::STATE_VERSION);
        for version in 1..4 {
            let mut old = bytes.clone();
            old[0] = version;
            assert_eq!(p.restore_state(&old).expect("reads"), None, "{model}");
        }
        // Version 4 differs only in the layout of the forecaster's covariance, which the
        // decoder reads in both layouts (tested in `model::forecast::ar`).
        let mut v4 = bytes.clone();
        v4[0] = 4;
        assert_eq!(p.restore_state(&v4).expect("reads"), Some(state.clone()));
        assert_eq!(p.restore_state(&bytes).expect("reads"), Some(state));
    }
    // A k-means state of versions 2 and 3 is the same bytes under another tag.
    let kmeans = pipeline("kind = \"kmeans\"\nfeatures = [\"a\", \"b\"]\nk = 2", "");
    let mut state = kmeans.new_state();
    run_process(&kmeans, &mut state, 50);
    let mut bytes = Vec::new();
    kmeans.encode_state(&state, &mut bytes).expect("encodes");
    for version in [2, 3] {
        bytes[0] = version;
        assert_eq!(
            kmeans.restore_state(&bytes).expect("reads older versions"),
            Some(state.clone())
        );
    }
}

#[test]
fn version_1_states_are_upgraded_with_fresh_operators() {
    let window = "[[pipelines.operators]]\nop = \"window\"\nsize = \"1m\"\naggregates = { a = \"mean\", b = \"mean\", y = \"mean\" }\n";
    let p = pipeline(
        "kind = \"kmeans\"\nfeatures = [\"a\", \"b\"]\nk = 2",
        window,
    );
    let mut state = p.new_state();
    run_process(&p, &mut state, 200);
    // What a build before operators wrote: version 1, model and last time only.
    let old = model::KeyStateV1 {
        model: state.model.clone(),
        last_time: state.last_time,
    };
    let mut bytes = vec![1u8];
    bytes.extend(postcard::to_stdvec(&old).expect("encodes"));
    let restored = p
        .restore_state(&bytes)
        .expect("reads v1")
        .expect("same model");
    assert_eq!(restored.model, state.model);
    assert_eq!(restored.last_time, state.last_time);
    assert_eq!(restored.operators, p.new_state().operators);
    assert_eq!(restored.operators_fingerprint, state.operators_fingerprint);
}

#[test]
fn changed_operators_keep_the_model_and_reset_the_operator_state() {
    let one =
        "[[pipelines.operators]]\nop = \"window\"\nsize = \"1m\"\naggregates = { y = \"mean\" }\n";
    let other = one.replace("1m", "2m");
    let (a, b) = (
        pipeline("kind = \"forecast\"\ntarget = \"y\"", one),
        pipeline("kind = \"forecast\"\ntarget = \"y\"", &other),
    );
    let mut state = a.new_state();
    run_process(&a, &mut state, 200);
    assert_ne!(state.operators, a.new_state().operators, "a window is open");
    let mut bytes = Vec::new();
    a.encode_state(&state, &mut bytes).expect("encodes");
    let restored = b
        .restore_state(&bytes)
        .expect("decodes")
        .expect("same model");
    assert_eq!(restored.model, state.model);
    assert_eq!(restored.operators, b.new_state().operators);
    assert_ne!(a.operators.fingerprint, b.operators.fingerprint);
}

#[test]
fn absurd_readings_do_not_dominate_a_keys_metrics_or_the_pipelines() {
    // A daily series around 20, then 5 × 1e12 and 3 × 1e300 among 2000 more readings; one
    // pipeline sees the clean series, the other the spiked one.
    let config = "kind = \"forecast\"\ntarget = \"y\"\nseason = 24";
    let (p_clean, p) = (pipeline(config, ""), pipeline(config, ""));
    let series = |t: i64| 20.0 + 5.0 * (std::f64::consts::TAU * t as f64 / 24.0).sin();
    let (mut clean, mut spiked) = (p_clean.new_state(), p.new_state());
    let mut scratch = Scratch::default();
    for t in 0..4000 {
        let y = series(t) + 0.1 * ((t * 7919) % 13) as f64 / 13.0;
        let observed = match t {
            2000..=2004 => 1e12,
            2500..=2502 => 1e300,
            _ => y,
        };
        for (p, state, value) in [(&p_clean, &mut clean, y), (&p, &mut spiked, observed)] {
            p.process(
                state,
                "k1",
                t * 1000,
                &[0.0, 0.0, value],
                &mut scratch,
                &mut |_, _| {},
            );
        }
    }
    let mae = |state: &KeyState| match &state.model {
        KeyModel::Forecast { metrics, .. } => (metrics.mae(), metrics.rmse()),
        _ => panic!("a forecast key"),
    };
    let ((clean_mae, clean_rmse), (mae, rmse)) = (mae(&clean), mae(&spiked));
    // Each absurd reading counts at most 10σ over 4000 readings.
    assert!(mae.is_finite() && rmse.is_finite());
    assert!(
        mae < 1.1 * clean_mae,
        "MAE {mae} vs {clean_mae} without the spikes"
    );
    assert!(
        rmse < 2.0 * clean_rmse,
        "RMSE {rmse} vs {clean_rmse} without the spikes"
    );
    let pipeline_mae = |p: &Pipeline| {
        let stats = p.stats.snapshot();
        assert!(stats.abs_error_sum.is_finite() && stats.sq_error_sum.is_finite());
        stats.abs_error_sum / stats.scored as f64
    };
    let (clean_sums, sums) = (pipeline_mae(&p_clean), pipeline_mae(&p));
    assert!(
        sums < 1.1 * clean_sums,
        "pipeline MAE {sums} vs {clean_sums} without the spikes"
    );
}

/// `n` readings one second apart through `process`.
fn run_process(p: &Pipeline, state: &mut KeyState, n: i64) {
    let mut scratch = Scratch::default();
    for t in 0..n {
        let y = (t as f64 / 10.0).sin();
        p.process(
            state,
            "k1",
            t * 1000,
            &[0.0, 0.0, y],
            &mut scratch,
            &mut |_, _| {},
        );
    }
}

fn run(p: &Pipeline, state: &mut KeyState, payloads: &[&str]) -> Vec<serde_json::Value> {
    let mut buf = ReadingBuf::default();
    let mut scratch = Scratch::default();
    let mut out = Vec::new();
    for (i, payload) in payloads.iter().enumerate() {
        p.decode("t/k1", payload.as_bytes(), &mut buf)
            .unwrap_or_else(|e| panic!("{payload}: {e}"));
        p.step(state, &buf.key, i as i64, &buf.values, &mut scratch);
        let expected = match p.kind() {
            "forecast" => format!("edgeflow/p/k1/{}/forecast", p.target()),
            "regression" => format!("edgeflow/p/k1/{}/prediction", p.target()),
            "kmeans" => "edgeflow/p/k1/cluster".to_owned(),
            "anomaly" => "edgeflow/p/k1/anomaly".to_owned(),
            _ => format!("edgeflow/p/k1/{}/class", p.target()),
        };
        assert_eq!(scratch.topic, expected);
        out.push(serde_json::from_slice(&scratch.payload).expect("output is JSON"));
    }
    out
}

#[test]
fn forecast_output_has_the_documented_fields() {
    let p = pipeline("kind = \"forecast\"\ntarget = \"y\"\nhorizon = 3", "");
    let mut state = p.new_state();
    let out = run(
        &p,
        &mut state,
        &[
            "{\"a\":0,\"b\":0,\"y\":1}",
            "{\"a\":0,\"b\":0,\"y\":2}",
            "{\"a\":0,\"b\":0,\"y\":3}",
        ],
    );
    let last = &out[2];
    for field in [
        "pipeline", "key", "field", "time", "observed", "error", "forecast", "lower", "upper",
        "updates", "mae", "rmse",
    ] {
        assert!(last.get(field).is_some(), "{field} missing in {last}");
    }
    assert_eq!(last["updates"], 3);
    assert_eq!(last["observed"], 3.0);
    assert_eq!(last["horizon"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        out[0]["error"],
        serde_json::Value::Null,
        "nothing to score before the first value"
    );
    assert!(
        last.get("anomaly").is_none(),
        "no anomaly fields without [pipelines.anomaly]"
    );
}

fn sine_payloads(n: usize) -> Vec<String> {
    (0..n)
        .map(|t| {
            format!(
                "{{\"a\":0,\"b\":0,\"y\":{}}}",
                20.0 + (t as f64 / 4.0).sin()
            )
        })
        .collect()
}

#[test]
fn forecast_bounds_are_null_and_warming_up_until_calibrated() {
    let p = pipeline("kind = \"forecast\"\ntarget = \"y\"\nhorizon = 4", "");
    let mut state = p.new_state();
    let payloads = sine_payloads(300);
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    let out = run(&p, &mut state, &refs);
    let first = &out[0];
    assert_eq!(first["warming_up"], true);
    assert_eq!(first["lower"], serde_json::Value::Null);
    assert_eq!(first["upper"], serde_json::Value::Null);
    assert!(first["forecast"].is_number());
    for step in first["horizon"].as_array().expect("horizon") {
        assert_eq!(step["lower"], serde_json::Value::Null, "{step}");
    }
    let last = &out[299];
    assert_eq!(last["warming_up"], false, "{last}");
    for step in last["horizon"].as_array().expect("horizon") {
        let (lower, forecast, upper) = (
            step["lower"].as_f64().expect("lower"),
            step["forecast"].as_f64().expect("forecast"),
            step["upper"].as_f64().expect("upper"),
        );
        assert!(lower < forecast && forecast < upper, "{step}");
    }
    // The flag turns off once, when the last published step is calibrated.
    let flips = out
        .windows(2)
        .filter(|pair| pair[0]["warming_up"] != pair[1]["warming_up"])
        .count();
    assert_eq!(flips, 1);
}

#[test]
fn horizon_every_n_readings_keeps_the_one_step_fields_in_every_message() {
    let p = pipeline(
        "kind = \"forecast\"\ntarget = \"y\"\nhorizon = 6\nhorizon_every = 5",
        "",
    );
    let every = pipeline("kind = \"forecast\"\ntarget = \"y\"\nhorizon = 6", "");
    let (mut state, mut every_state) = (p.new_state(), every.new_state());
    let payloads = sine_payloads(40);
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    let out = run(&p, &mut state, &refs);
    let full = run(&every, &mut every_state, &refs);
    for (i, (message, reference)) in out.iter().zip(&full).enumerate() {
        let updates = message["updates"].as_u64().expect("updates");
        let has = message.get("horizon").is_some();
        assert_eq!(has, updates % 5 == 0, "message {i}: {message}");
        if has {
            assert_eq!(message["horizon"], reference["horizon"], "message {i}");
        }
        for field in ["forecast", "lower", "upper", "error", "mae"] {
            assert_eq!(message[field], reference[field], "message {i} {field}");
        }
    }
    // The model is the same whether the horizon is published or not.
    assert_eq!(state.model, every_state.model);
}

#[test]
fn horizon_every_interval_publishes_the_first_reading_of_each_interval() {
    let p = pipeline(
        "kind = \"forecast\"\ntarget = \"y\"\nhorizon = 3\nhorizon_every = \"10ms\"",
        "",
    );
    let mut state = p.new_state();
    let payloads = sine_payloads(35);
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    // `run` gives reading i the time i ms: readings 0, 10, 20 and 30 open an interval.
    let out = run(&p, &mut state, &refs);
    let with: Vec<usize> = out
        .iter()
        .enumerate()
        .filter(|(_, m)| m.get("horizon").is_some())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(with, [0, 10, 20, 30]);
}

#[test]
fn regression_predicts_before_learning_and_explains() {
    let p = pipeline(
        "kind = \"regression\"\ntarget = \"y\"\nfeatures = [\"a\", \"b\"]\nexplain = 2",
        "",
    );
    let mut state = p.new_state();
    let payloads: Vec<String> = (0..200)
        .map(|i| {
            let (a, b) = ((i % 7) as f64, (i % 5) as f64 * 0.5);
            format!("{{\"a\":{a},\"b\":{b},\"y\":{}}}", 2.0 * a - 3.0 * b + 1.0)
        })
        .collect();
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    let out = run(&p, &mut state, &refs);
    assert_eq!(out[0]["prediction"], serde_json::Value::Null);
    assert_eq!(out[0]["updates"], 1);
    let last = &out[199];
    let error = last["error"].as_f64().unwrap();
    let expected = last["observed"].as_f64().unwrap() - last["prediction"].as_f64().unwrap();
    assert!(
        (error - expected).abs() < 1e-12,
        "error is observed − prediction"
    );
    assert!(last["mae"].as_f64().unwrap() > 0.0);
    let explain = last["explain"].as_array().unwrap();
    assert_eq!(explain.len(), 2);
    assert!(explain
        .iter()
        .all(|c| c["feature"] == "a" || c["feature"] == "b"));
}

#[test]
fn regression_reading_without_target_is_predicted_not_learned() {
    let p = pipeline(
        "kind = \"regression\"\ntarget = \"y\"\nfeatures = [\"a\", \"b\"]",
        "",
    );
    let mut state = p.new_state();
    let out = run(
        &p,
        &mut state,
        &["{\"a\":1,\"b\":2,\"y\":3}", "{\"a\":1,\"b\":2}"],
    );
    assert_eq!(out[1]["observed"], serde_json::Value::Null);
    assert_eq!(out[1]["updates"], 1);
    assert!(out[1]["prediction"].is_number());
}

#[test]
fn classification_learns_only_labelled_readings() {
    let p = pipeline(
        "kind = \"classification\"\ntarget = \"y\"\nfeatures = [\"a\", \"b\"]",
        "",
    );
    let mut state = p.new_state();
    let out = run(
        &p,
        &mut state,
        &[
            "{\"a\":1,\"b\":0,\"y\":true}",
            "{\"a\":-1,\"b\":0,\"y\":\"no\"}",
            "{\"a\":1,\"b\":0}",
        ],
    );
    assert_eq!(out[0]["observed"], true);
    assert_eq!(out[1]["observed"], false);
    assert_eq!(out[2]["observed"], serde_json::Value::Null);
    assert_eq!(out[2]["updates"], 2);
    for o in &out {
        let prob = o["probability"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&prob));
        assert_eq!(o["label"], prob >= 0.5);
    }
    assert!(p.stats.snapshot().labelled == 2);
}

#[test]
fn a_spike_is_flagged_once_and_learnt_winsorised() {
    let p = pipeline(
        "kind = \"forecast\"\ntarget = \"y\"",
        "[pipelines.anomaly]\nthreshold = 0.9999\nwarmup = 20",
    );
    let mut state = p.new_state();
    let mut payloads: Vec<String> = (0..300)
        .map(|i| {
            format!(
                "{{\"a\":0,\"b\":0,\"y\":{}}}",
                10.0 + ((i * 7919) % 13) as f64 * 0.1
            )
        })
        .collect();
    payloads[250] = "{\"a\":0,\"b\":0,\"y\":1000}".into();
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    let out = run(&p, &mut state, &refs);
    let spike = &out[250];
    assert_eq!(spike["anomaly"], true);
    assert!(spike["anomaly_score"].as_f64().unwrap() > 0.9999, "{spike}");
    assert!(spike["anomaly_score"].as_f64().unwrap() <= 1.0, "{spike}");
    assert!(spike["anomaly_sigma"].as_f64().unwrap() > 100.0, "{spike}");
    assert_eq!(spike["anomaly_kind"], "spike");
    assert_eq!(spike["change"], false);
    assert_eq!(out[249]["anomaly"], false);
    assert_eq!(out[249]["anomaly_kind"], serde_json::Value::Null);
    // Learnt (the model never stops learning), but winsorised: the forecast barely moves.
    assert_eq!(
        out[250]["updates"].as_u64(),
        out[249]["updates"].as_u64().map(|u| u + 1)
    );
    assert!(
        out[251]["forecast"].as_f64().unwrap() < 12.0,
        "the spike moved the forecast: {}",
        out[251]
    );
    let later: Vec<_> = out[251..].iter().filter(|m| m["anomaly"] == true).collect();
    assert!(later.is_empty(), "{later:?}");
    assert_eq!(
        p.stats.anomalies.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn anomaly_kind_pipeline_flags_a_field_leaving_its_normal_state() {
    let p = pipeline(
        "kind = \"anomaly\"\nfeatures = [\"a\", \"b\", \"y\"]\nwarmup = 200",
        "",
    );
    let mut state = p.new_state();
    let payloads: Vec<String> = (0..600)
        .map(|i| {
            let noise = |k: usize| ((i * k) % 17) as f64 / 17.0 - 0.5;
            // b leaves its level at reading 400 and comes back at 500.
            let b = if (400..500).contains(&i) { 8.0 } else { 0.0 } + noise(7919);
            format!(
                "{{\"a\":{},\"b\":{},\"y\":{}}}",
                5.0 + noise(104_729),
                b,
                100.0 + 3.0 * noise(1_299_709)
            )
        })
        .collect();
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    let out = run(&p, &mut state, &refs);
    assert!(out[..200].iter().all(|m| m["warming_up"] == true));
    assert!(
        out[200..400].iter().all(|m| m["anomaly"] == false),
        "no false alarm"
    );
    let flagged: Vec<usize> = (0..600).filter(|&i| out[i]["anomaly"] == true).collect();
    let first = *flagged.first().expect("the shift is flagged");
    assert!((400..410).contains(&first), "flagged from {first}");
    assert_eq!(out[first]["anomaly_field"], "b");
    assert!(out[450]["anomaly"] == true, "a state, not a flicker");
    assert!(out[560..].iter().all(|m| m["anomaly"] == false), "and over");
    let changes: Vec<usize> = (0..600).filter(|&i| out[i]["change"] == true).collect();
    assert!(
        changes.iter().any(|&i| (400..410).contains(&i)),
        "{changes:?}"
    );
    assert!(
        changes.iter().any(|&i| (500..510).contains(&i)),
        "{changes:?}"
    );
    assert!(changes.len() <= 4, "{changes:?}");
    assert_eq!(
        p.stats.anomalies.load(std::sync::atomic::Ordering::Relaxed) as usize,
        flagged.len()
    );
}

#[test]
fn stored_state_of_another_configuration_is_not_restored() {
    let a = pipeline("kind = \"forecast\"\ntarget = \"y\"\nlags = 4", "");
    let b = pipeline("kind = \"forecast\"\ntarget = \"y\"\nlags = 5", "");
    let c = pipeline(
        "kind = \"regression\"\ntarget = \"y\"\nfeatures = [\"a\"]",
        "",
    );
    let mut state = a.new_state();
    run(&a, &mut state, &["{\"a\":0,\"b\":0,\"y\":1}"]);
    let mut bytes = Vec::new();
    a.encode_state(&state, &mut bytes).unwrap();
    assert_eq!(a.restore_state(&bytes).unwrap(), Some(state));
    assert_eq!(b.restore_state(&bytes).unwrap(), None);
    assert_eq!(c.restore_state(&bytes).unwrap(), None);
}

/// Payloads of two well separated blobs in (a, b), alternating, with a little noise.
fn blob_payloads(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let jitter = ((i * 7919) % 13) as f64 * 0.01;
            let (a, b) = if i % 2 == 0 { (0.0, 0.0) } else { (10.0, 5.0) };
            format!("{{\"a\":{},\"b\":{},\"y\":0}}", a + jitter, b - jitter)
        })
        .collect()
}

fn kmeans_pipeline(k: usize) -> Pipeline {
    pipeline(
        &format!("kind = \"kmeans\"\nfeatures = [\"a\", \"b\"]\nk = {k}"),
        "",
    )
}

#[test]
fn kmeans_output_is_null_during_warm_up_then_assigns_before_learning() {
    let p = kmeans_pipeline(2);
    let warm_up = 16; // 8·k
    let payloads = blob_payloads(100);
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    let mut state = p.new_state();
    let mut buf = ReadingBuf::default();
    let mut scratch = Scratch::default();
    let mut out = Vec::new();
    let mut first_assigned = Vec::new();
    for (i, payload) in refs.iter().enumerate() {
        p.decode("t/k1", payload.as_bytes(), &mut buf).unwrap();
        // What the model predicts before this reading is learnt.
        let before = match &state.model {
            KeyModel::KMeans { model, .. } => model.predict_one(&[buf.values[0], buf.values[1]]),
            other => panic!("not a kmeans: {other:?}"),
        };
        p.step(&mut state, &buf.key, i as i64, &buf.values, &mut scratch);
        assert_eq!(scratch.topic, "edgeflow/p/k1/cluster");
        let o: serde_json::Value = serde_json::from_slice(&scratch.payload).unwrap();
        assert_eq!(
            o["cluster"].as_u64(),
            before.map(|a| u64::from(a.id)),
            "reading {i}: the published cluster is the one predicted before learning"
        );
        // serde_json (without `float_roundtrip`) may read the last digit 1 ulp off.
        let published = o["distance"].as_f64();
        assert_eq!(published.is_some(), before.is_some());
        if let (Some(published), Some(a)) = (published, before) {
            assert!((published - a.distance).abs() <= 1e-12 * a.distance.max(1.0));
        }
        if i == warm_up {
            first_assigned = scratch.payload.clone();
        }
        out.push(o);
    }
    for o in &out[..warm_up] {
        assert_eq!(o["cluster"], serde_json::Value::Null, "{o}");
        assert_eq!(o["distance"], serde_json::Value::Null);
        assert_eq!(o["mean_distance"], serde_json::Value::Null);
    }
    // The documented fields, in the documented order.
    let text = String::from_utf8(first_assigned).unwrap();
    assert!(
        text.starts_with(
            "{\"pipeline\":\"p\",\"key\":\"k1\",\"field\":\"cluster\",\"time\":16,\"cluster\":"
        ),
        "{text}"
    );
    let positions: Vec<usize> = ["\"distance\":", "\"updates\":", "\"mean_distance\":"]
        .iter()
        .map(|name| {
            text.find(name)
                .unwrap_or_else(|| panic!("{name} in {text}"))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert_eq!(out[warm_up].as_object().map(|o| o.len()), Some(8), "{text}");
    assert_eq!(out[warm_up]["field"], "cluster");
    assert_eq!(out[99]["updates"], 100);
    // The two blobs alternate: so do their clusters, and they differ.
    let even = out[warm_up]["cluster"].as_u64().unwrap();
    let odd = out[warm_up + 1]["cluster"].as_u64().unwrap();
    assert_ne!(even, odd);
    for (i, o) in out.iter().enumerate().skip(warm_up) {
        let expected = if i % 2 == 0 { even } else { odd };
        assert_eq!(o["cluster"].as_u64(), Some(expected), "reading {i}");
    }
    // The mean distance is the mean of the published distances.
    let distances: Vec<f64> = out[warm_up..]
        .iter()
        .map(|o| o["distance"].as_f64().unwrap())
        .collect();
    let mean = distances.iter().sum::<f64>() / distances.len() as f64;
    let published = out[99]["mean_distance"].as_f64().unwrap();
    assert!((published - mean).abs() < 1e-12, "{published} vs {mean}");
    let snapshot = p.stats.snapshot();
    assert_eq!(snapshot.clustered, (100 - warm_up) as u64);
    assert!((snapshot.distance_sum / snapshot.clustered as f64 - mean).abs() < 1e-12);
}

#[test]
fn kmeans_reading_without_a_feature_is_dropped_as_missing_field() {
    let p = kmeans_pipeline(2);
    let mut buf = ReadingBuf::default();
    let error = p
        .decode("t/k1", b"{\"a\":1,\"y\":0}", &mut buf)
        .expect_err("b is missing");
    assert_eq!(error.reason, DropReason::MissingField);
}

#[test]
fn kmeans_skips_a_non_finite_feature_an_operator_made() {
    let map = "[[pipelines.operators]]\nop = \"map\"\nderive = { r = \"sqrt(a)\" }\n";
    let p = pipeline("kind = \"kmeans\"\nfeatures = [\"r\", \"b\"]\nk = 1", map);
    let mut state = p.new_state();
    let payloads: Vec<String> = (0..20)
        .map(|i| format!("{{\"a\":{},\"b\":1,\"y\":0}}", if i == 12 { -1 } else { i }))
        .collect();
    let mut buf = ReadingBuf::default();
    let mut scratch = Scratch::default();
    let mut out = Vec::new();
    for (i, payload) in payloads.iter().enumerate() {
        p.decode("t/k1", payload.as_bytes(), &mut buf).unwrap();
        p.process(
            &mut state,
            "k1",
            i as i64,
            &buf.values,
            &mut scratch,
            &mut |_, payload| {
                out.push(serde_json::from_slice::<serde_json::Value>(payload).unwrap())
            },
        );
    }
    assert_eq!(out[11]["cluster"], 0, "seeded after 8 readings");
    assert_eq!(
        out[12]["cluster"],
        serde_json::Value::Null,
        "sqrt(-1) is NaN"
    );
    assert_eq!(out[12]["updates"], out[11]["updates"], "and is not learnt");
    assert_eq!(out[13]["cluster"], 0);
    assert_eq!(out[19]["updates"], 19);
}

#[test]
fn kmeans_state_round_trips_and_other_parameters_start_afresh() {
    let p = kmeans_pipeline(2);
    let payloads = blob_payloads(60);
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    let mut state = p.new_state();
    run(&p, &mut state, &refs[..40]);
    let mut bytes = Vec::new();
    p.encode_state(&state, &mut bytes).unwrap();
    let mut restored = p.restore_state(&bytes).unwrap().expect("same config");
    assert_eq!(restored, state);
    // The restored key continues exactly as the original.
    let (mut a, mut b) = (state.clone(), restored.clone());
    assert_eq!(run(&p, &mut a, &refs[40..]), run(&p, &mut b, &refs[40..]));
    run(&p, &mut restored, &refs[40..]);
    assert_eq!(restored.model, a.model);
    for other in [
        kmeans_pipeline(3),
        pipeline("kind = \"kmeans\"\nfeatures = [\"a\"]\nk = 2", ""),
        pipeline(
            "kind = \"kmeans\"\nfeatures = [\"a\", \"b\"]\nk = 2\nseed = 1",
            "",
        ),
        pipeline(
            "kind = \"classification\"\ntarget = \"y\"\nfeatures = [\"a\", \"b\"]",
            "",
        ),
    ] {
        assert_eq!(other.restore_state(&bytes).unwrap(), None);
    }
    // …and a kmeans pipeline does not take another kind's state.
    let forecast = pipeline("kind = \"forecast\"\ntarget = \"y\"", "");
    let mut forecast_state = forecast.new_state();
    run(&forecast, &mut forecast_state, &refs[..3]);
    let mut bytes = Vec::new();
    forecast.encode_state(&forecast_state, &mut bytes).unwrap();
    assert_eq!(p.restore_state(&bytes).unwrap(), None);
}

#[test]
fn kmeans_is_the_last_key_model_variant_so_older_states_keep_their_tags() {
    // postcard writes an enum variant as its index: the kinds that existed before kmeans
    // must keep 0, 1 and 2.
    for (model, tag) in [
        ("kind = \"forecast\"\ntarget = \"y\"", 0u8),
        (
            "kind = \"regression\"\ntarget = \"y\"\nfeatures = [\"a\"]",
            1,
        ),
        (
            "kind = \"classification\"\ntarget = \"y\"\nfeatures = [\"a\"]",
            2,
        ),
        ("kind = \"kmeans\"\nfeatures = [\"a\"]\nk = 2", 3),
    ] {
        let state = pipeline(model, "").new_state();
        let bytes = postcard::to_stdvec(&state.model).unwrap();
        assert_eq!(bytes[0], tag, "{model}");
    }
}

#[test]
fn kmeans_state_is_described_with_its_clusters_in_original_units() {
    let p = kmeans_pipeline(2);
    let payloads = blob_payloads(40);
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    let mut state = p.new_state();
    let fresh = describe_state("p", "k1", &state);
    assert_eq!(fresh["kind"], "kmeans");
    assert_eq!(fresh["warming_up"], true);
    assert_eq!(fresh["clusters"], serde_json::json!([]));
    assert_eq!(fresh["mean_distance"], serde_json::Value::Null);
    run(&p, &mut state, &refs);
    let v = describe_state("p", "k1", &state);
    assert_eq!(v["kind"], "kmeans");
    assert_eq!(v["updates"], 40);
    assert_eq!(v["scored"], 40 - 16);
    assert_eq!(v["warming_up"], false);
    assert!(v["mean_distance"].as_f64().unwrap() > 0.0);
    assert!(v["recent_mean_distance"].as_f64().is_some());
    let clusters = v["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 2);
    let mut centres: Vec<(f64, f64)> = clusters
        .iter()
        .map(|c| {
            let centre = c["centre"].as_array().unwrap();
            (centre[0].as_f64().unwrap(), centre[1].as_f64().unwrap())
        })
        .collect();
    centres.sort_by(|x, y| x.0.total_cmp(&y.0));
    // Blobs at (0, 0) and (10, 5), jittered by at most 0.12.
    assert!(
        centres[0].0.abs() < 0.2 && centres[0].1.abs() < 0.2,
        "{centres:?}"
    );
    assert!((centres[1].0 - 10.0).abs() < 0.2 && (centres[1].1 - 5.0).abs() < 0.2);
    let mut merged = MergedMetrics::default();
    merged.add(&state);
    assert_eq!(merged.clustering.count, 24);
}

/// A one-minute tumbling window over event times in seconds, feeding a forecaster.
fn windowed(max_skew: &str) -> Pipelines {
    let text = format!(
        "[[pipelines]]\nname = \"w\"\ntopics = [\"t/+\"]\nkey = \"topic[1]\"\ntime = \"/ts\"\ntime_unit = \"s\"\n{max_skew}\nfields = {{ y = \"/y\" }}\n[[pipelines.operators]]\nop = \"window\"\nsize = \"1m\"\naggregates = {{ y = \"mean\" }}\n[pipelines.model]\nkind = \"forecast\"\ntarget = \"y\"\n"
    );
    let config = crate::config::parse_str(std::path::Path::new("test.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}"));
    Pipelines::new(&config).unwrap_or_else(|e| panic!("{e}"))
}

/// Dispatches `(event time s, clock s)` readings of key `k` with the daemon's clock
/// (`None`: as replay does) and runs them through the window; returns the end times (ms)
/// of the windows emitted.
fn windows_emitted(pipelines: &Pipelines, readings: &[(i64, Option<i64>)]) -> Vec<i64> {
    let mut state = None;
    let mut buf = ReadingBuf::default();
    let mut scratch = Scratch::default();
    let mut ends = Vec::new();
    for &(time_s, clock_s) in readings {
        let payload = format!("{{\"ts\":{time_s},\"y\":1}}");
        let clock = clock_s.map(|c| c * 1000);
        let now = clock.unwrap_or(0);
        pipelines.dispatch("t/k", payload.as_bytes(), now, clock, &mut buf, |p, r| {
            let state = state.get_or_insert_with(|| p.new_state());
            let time = r.time_ms.unwrap_or(now);
            p.process(
                state,
                &r.key,
                time,
                &r.values,
                &mut scratch,
                &mut |_, payload| {
                    let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
                    ends.extend(v["time"].as_i64());
                },
            );
        });
    }
    ends
}

/// Unix seconds of 2026-01-01T00:00:00Z, the daemon's "now" in these tests.
const NOW_S: i64 = 1_767_225_600;
/// 9999-12-31T23:59:59Z.
const YEAR_9999_S: i64 = 253_402_300_799;

#[test]
fn one_year_9999_reading_does_not_stall_the_window() {
    // A reading a minute for five minutes, with one from year 9999 after the first.
    let mut readings: Vec<(i64, Option<i64>)> = (0..5)
        .map(|m| (NOW_S + 60 * m, Some(NOW_S + 60 * m)))
        .collect();
    readings.insert(1, (YEAR_9999_S, Some(NOW_S + 1)));
    let pipelines = windowed("");
    let ends = windows_emitted(&pipelines, &readings);
    // Each reading closes the window before it: four windows, the fifth is open.
    let expected: Vec<i64> = (1..5).map(|m| (NOW_S + 60 * m) * 1000).collect();
    assert_eq!(ends, expected);
    let p = pipelines.get(0).unwrap_or_else(|| panic!("no pipeline"));
    assert_eq!(p.stats.drops.get(DropReason::TimeSkew), 1);
    assert_eq!(
        p.stats.readings.load(std::sync::atomic::Ordering::Relaxed),
        5
    );

    // Without the bound (no clock, as in replay) the same reading closes the first
    // window and makes every later reading late: the window is stalled for good.
    let unbounded: Vec<(i64, Option<i64>)> = readings.iter().map(|&(t, _)| (t, None)).collect();
    let stalled = windows_emitted(&windowed(""), &unbounded);
    assert_eq!(stalled, [(NOW_S + 60) * 1000]);
}

#[test]
fn readings_within_max_skew_of_the_clock_or_in_the_past_are_kept() {
    let pipelines = windowed("max_skew = \"10m\"");
    // 1970, 2001 and last year: historic data (a backlog, a re-sent recording) is not
    // bounded; 9 min ahead of the clock is within max_skew, 11 min is not.
    let readings = [
        (0, Some(NOW_S)),
        (1_000_000_000, Some(NOW_S)),
        (NOW_S - 365 * 86_400, Some(NOW_S)),
        (NOW_S + 9 * 60, Some(NOW_S)),
        (NOW_S + 11 * 60, Some(NOW_S)),
    ];
    windows_emitted(&pipelines, &readings);
    let p = pipelines.get(0).unwrap_or_else(|| panic!("no pipeline"));
    assert_eq!(
        p.stats.readings.load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    assert_eq!(p.stats.drops.get(DropReason::TimeSkew), 1);
}

/// The operator fingerprint stored with every key's state is an FNV-1a hash of the operator
/// configs' `Debug` text: a change to how the config holds its operators (e.g. compiled
/// expressions instead of their text) must not change it, or every key's open windows and
/// dedupe memory would start afresh after an upgrade. Pinned on the shipped operators config.
#[test]
fn operator_fingerprints_of_the_shipped_config_do_not_change() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/operators.toml");
    let config = crate::config::load(&path).unwrap();
    let pipelines = Pipelines::new(&config).unwrap();
    let fingerprints: Vec<(String, u64)> = pipelines
        .iter()
        .map(|p| (p.name.clone(), p.operators.fingerprint))
        .collect();
    assert_eq!(
        fingerprints,
        PINNED_FINGERPRINTS.map(|(n, f)| (n.to_string(), f))
    );
}

/// As computed by main at a6eefb9 (operators held as text), before expressions were compiled
/// once by the loader.
const PINNED_FINGERPRINTS: [(&str, u64); 3] = [
    ("climate", 9_611_849_609_084_262_569),
    ("climate_errors", 675_868_731_199_239_589),
    ("rooms", 1_649_004_092_598_793_882),
];
