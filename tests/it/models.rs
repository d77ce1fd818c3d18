//! Every model kind, through the example configs in configs/: replayed over seeded synthetic
//! streams (quality checked through the summary and the output fields), and run by the daemon
//! over MQTT with outputs identical to the replay's.

use std::path::Path;

use crate::common::*;
use edgeflow::config::Config;
use edgeflow::model::adjusted_rand_index;
use edgeflow::replay::{ReplaySummary, Replayer};

fn example(name: &str) -> Config {
    load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("configs")
            .join(name),
    )
}

/// A tiny deterministic generator (SplitMix64) so the streams need no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next().max(1e-300), self.next());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn replay(config: &Config, lines: &[(String, String)]) -> (ReplaySummary, Vec<serde_json::Value>) {
    let mut replayer = Replayer::new(config).expect("replayer");
    let mut out = Vec::new();
    replayer
        .run(replay_input(lines).as_bytes(), &mut out)
        .expect("replay");
    let outputs = String::from_utf8(out)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    (replayer.summary(), outputs)
}

fn regression_stream(n: usize, spike_at: Option<usize>) -> Vec<(String, String)> {
    let mut rng = Rng(7);
    (0..n)
        .map(|i| {
            let boiler = ["b1", "b2"][i % 2];
            let outdoor = -5.0 + 20.0 * rng.next();
            let modulation = 20.0 + 80.0 * rng.next();
            let mut flow = 70.0 - 0.8 * outdoor + 0.15 * modulation + 0.3 * rng.normal();
            if Some(i) == spike_at {
                flow += 40.0;
            }
            let payload = if i % 10 == 9 {
                // No target: predicted, not learned.
                format!("{{\"ts\":{},\"outdoor\":{outdoor:.3},\"modulation\":{modulation:.2}}}", 1_764_000_000 + i)
            } else {
                format!("{{\"ts\":{},\"outdoor\":{outdoor:.3},\"modulation\":{modulation:.2},\"flow\":{flow:.3}}}", 1_764_000_000 + i)
            };
            (format!("site/{boiler}/telemetry"), payload)
        })
        .collect()
}

fn classification_stream(n: usize) -> Vec<(String, String)> {
    let mut rng = Rng(11);
    (0..n)
        .map(|i| {
            let machine = ["m1", "m2", "m3"][i % 3];
            let (vib, temp, load) = (rng.normal(), rng.normal(), rng.normal());
            let service = 1.5 * vib + 1.0 * temp - 0.5 * load > 0.0;
            let label = match i % 4 {
                0 => format!(",\"service\":{service}"),
                1 => format!(",\"service\":\"{}\"", if service { "yes" } else { "no" }),
                2 => format!(",\"service\":{}", u8::from(service)),
                _ => String::new(),
            };
            (
                "plant/line1/machine".to_string(),
                format!("{{\"machine_id\":\"{machine}\",\"vib_rms\":{vib:.4},\"temp\":{temp:.4},\"load\":{load:.4}{label}}}"),
            )
        })
        .collect()
}

fn energy_stream(n: usize, spikes: &[usize]) -> Vec<(String, String)> {
    let mut rng = Rng(3);
    (0..n)
        .map(|i| {
            let hour = (i % 24) as f64;
            let mut kwh =
                5.0 + 3.0 * (2.0 * std::f64::consts::PI * hour / 24.0).sin() + 0.2 * rng.normal();
            if spikes.contains(&i) {
                kwh += 6.0;
            }
            (
                "meters/m1/energy".to_string(),
                format!("{{\"ts\":{},\"kwh\":{kwh:.4}}}", 1_764_000_000 + 3600 * i),
            )
        })
        .collect()
}

/// Operating modes of a machine tool: means and standard deviations of (power kW, vibration
/// mm/s, spindle rpm). Idle, light cut, heavy cut, and a worn bearing (ordinary power and
/// speed, high vibration).
const MODES: [([f64; 3], [f64; 3]); 4] = [
    ([0.8, 0.3, 0.0], [0.1, 0.05, 5.0]),
    ([4.0, 1.5, 1500.0], [0.4, 0.2, 60.0]),
    ([9.0, 3.0, 2800.0], [0.6, 0.3, 80.0]),
    ([5.0, 7.0, 1500.0], [0.5, 0.6, 60.0]),
];

/// Machine readings and the truth behind them.
struct ModeStream {
    /// `(topic, payload)` lines.
    lines: Vec<(String, String)>,
    /// Per line, the machine and its true mode; `None` for a line that is dropped.
    truth: Vec<Option<(usize, usize)>>,
}

/// `n` readings of `machines` machines (`lathe-0`, …), interleaved; every reading's mode is
/// drawn at random and its features from that mode's Gaussian blob. The line at `missing_at`
/// lacks its vibration (dropped as `missing_field`).
fn mode_stream(n: usize, machines: usize, missing_at: Option<usize>) -> ModeStream {
    let mut rng = Rng(5);
    let mut truth = Vec::with_capacity(n);
    let lines = (0..n)
        .map(|i| {
            let machine = i % machines;
            let mode = ((rng.next() * MODES.len() as f64) as usize).min(MODES.len() - 1);
            let (mean, sd) = MODES[mode];
            let [power, vibration, speed] =
                [0, 1, 2].map(|f| mean[f] + sd[f] * rng.normal());
            let ts = 1_764_000_000 + i;
            let payload = if Some(i) == missing_at {
                truth.push(None);
                format!("{{\"machine\":\"lathe-{machine}\",\"ts\":{ts},\"power_kw\":{power:.3},\"spindle_rpm\":{speed:.1}}}")
            } else {
                truth.push(Some((machine, mode)));
                format!("{{\"machine\":\"lathe-{machine}\",\"ts\":{ts},\"power_kw\":{power:.3},\"vib_rms\":{vibration:.3},\"spindle_rpm\":{speed:.1}}}")
            };
            ("plant/line1/telemetry".to_string(), payload)
        })
        .collect();
    ModeStream { lines, truth }
}

#[test]
fn kmeans_example_recovers_the_operating_modes_of_every_machine() {
    let config = example("kmeans.toml");
    let machines = 3;
    let warm_up = 8 * 4;
    let ModeStream { lines, truth } = mode_stream(6000, machines, Some(500));
    let (summary, outputs) = replay(&config, &lines);
    let p = &summary.pipelines[0];
    assert_eq!(p.kind, "kmeans");
    assert_eq!(p.keys, machines as u64);
    assert_eq!(p.readings, 5999);
    assert_eq!(p.decode_errors.get("missing_field"), Some(&1));
    assert_eq!(
        p.scored,
        (5999 - machines * warm_up) as u64,
        "every reading after a machine's warm-up is assigned"
    );
    assert_eq!((p.mae, p.accuracy), (None, None));
    // Blobs are far apart in standardised units and tight within: readings lie about 0.2 from
    // their centre (half a blob's spread in each of 3 standardised features).
    let mean_distance = p.mean_distance.expect("kmeans has a mean distance");
    assert!(
        mean_distance > 0.05 && mean_distance < 0.5,
        "prequential mean distance {mean_distance}"
    );

    let readings: Vec<(usize, usize)> = truth.iter().flatten().copied().collect();
    assert_eq!(
        outputs.len(),
        readings.len(),
        "one output per accepted reading"
    );
    let mut seen = vec![0; machines];
    let mut true_modes = vec![Vec::new(); machines];
    let mut clusters = vec![Vec::new(); machines];
    for (output, &(machine, mode)) in outputs.iter().zip(&readings) {
        assert_eq!(
            output["topic"],
            format!("edgeflow/machine-modes/lathe-{machine}/cluster")
        );
        let payload = &output["payload"];
        assert_eq!(payload["key"], format!("lathe-{machine}"));
        assert_eq!(payload["field"], "cluster");
        seen[machine] += 1;
        assert_eq!(payload["updates"], seen[machine]);
        if seen[machine] <= warm_up {
            assert_eq!(payload["cluster"], serde_json::Value::Null, "{payload}");
            continue;
        }
        let cluster = payload["cluster"]
            .as_u64()
            .expect("a cluster after the warm-up");
        assert!(payload["distance"].as_f64().is_some_and(|d| d >= 0.0));
        true_modes[machine].push(mode);
        clusters[machine].push(u32::try_from(cluster).expect("ids are u32"));
    }
    for machine in 0..machines {
        let ari = adjusted_rand_index(&true_modes[machine], &clusters[machine]);
        assert!(
            ari >= 0.95,
            "lathe-{machine}: adjusted Rand index {ari} over {} readings",
            clusters[machine].len()
        );
    }
}

#[test]
fn regression_example_learns_predicts_flags_and_explains() {
    let config = example("regression.toml");
    let (summary, outputs) = replay(&config, &regression_stream(4000, Some(3001)));
    let p = &summary.pipelines[0];
    assert_eq!(p.kind, "regression");
    assert_eq!(p.keys, 2);
    // Noise σ = 0.3; prequential MAE includes the warm-up, so allow a margin.
    let mae = p.mae.expect("regression has an MAE");
    assert!(mae < 0.6, "prequential MAE {mae} (noise MAE ≈ 0.24)");
    assert!(p.anomalies >= 1, "the injected spike must be flagged");
    let spike = &outputs[3001]["payload"];
    assert_eq!(spike["anomaly"], true, "{spike}");
    let unlabelled = &outputs[3009]["payload"];
    assert_eq!(unlabelled["observed"], serde_json::Value::Null);
    assert!(unlabelled["prediction"].is_number());
    let explain = spike["explain"].as_array().expect("explain");
    assert_eq!(explain.len(), 2);
    assert_eq!(
        outputs[0]["topic"],
        "edgeflow/flow-temperature/b1/flow/prediction"
    );
}

#[test]
fn classification_example_reaches_high_accuracy_and_learns_only_labels() {
    let config = example("classification.toml");
    let (summary, outputs) = replay(&config, &classification_stream(6000));
    let p = &summary.pipelines[0];
    assert_eq!(p.kind, "classification");
    assert_eq!(p.keys, 3);
    assert_eq!(p.scored, 4500, "three readings in four carry a label");
    let accuracy = p.accuracy.expect("accuracy");
    assert!(accuracy > 0.9, "prequential accuracy {accuracy}");
    assert!(p.log_loss.expect("log loss") < 0.35);
    let unlabelled = &outputs[3]["payload"];
    assert_eq!(unlabelled["observed"], serde_json::Value::Null);
    assert_eq!(
        unlabelled["updates"], outputs[0]["payload"]["updates"],
        "m1's second reading is its first unlabelled one"
    );
    assert!(unlabelled["explain"]
        .as_array()
        .is_some_and(|e| e.len() == 3));
}

#[test]
fn anomaly_example_flags_spikes_and_forecasts_the_horizon() {
    let config = example("anomaly.toml");
    let spikes = [500, 800, 1100, 1400];
    let (summary, outputs) = replay(&config, &energy_stream(1600, &spikes));
    let p = &summary.pipelines[0];
    assert_eq!(p.kind, "forecast");
    for &i in &spikes {
        assert_eq!(outputs[i]["payload"]["anomaly"], true, "spike at {i}");
    }
    assert!(
        p.anomalies <= spikes.len() as u64 + 8,
        "{} flags for {} spikes",
        p.anomalies,
        spikes.len()
    );
    let horizon = outputs[1000]["payload"]["horizon"]
        .as_array()
        .expect("horizon");
    assert_eq!(horizon.len(), 6);
    assert!(p.mae.expect("mae") < 0.5);
}

/// Readings of the example's `pump` pipeline: two pumps with noisy sensors around their own
/// operating points; pump `p2`'s flow drops by a third from reading `drop_at` on (a valve
/// closing).
fn pump_stream(n: usize, drop_at: usize) -> Vec<(String, String)> {
    let mut rng = Rng(11);
    let mut lines = Vec::new();
    for i in 0..n {
        for (pump, base) in [("p1", 1.0), ("p2", 1.3)] {
            let mut flow = 32.0 * base + 0.5 * rng.normal();
            if pump == "p2" && i >= drop_at {
                flow *= 2.0 / 3.0;
            }
            let payload = format!(
                "{{\"ts\":{},\"a1\":{:.4},\"a2\":{:.4},\"current\":{:.3},\"pressure\":{:.3},\"temp\":{:.2},\"thermo\":{:.2},\"voltage\":{:.1},\"flow\":{flow:.3}}}",
                1_583_749_479_000u64 + 1000 * i as u64,
                0.027 * base + 0.002 * rng.normal(),
                0.040 * base + 0.003 * rng.normal(),
                0.77 * base + 0.05 * rng.normal(),
                0.38 + 0.02 * rng.normal(),
                71.2 + 0.3 * rng.normal(),
                25.0 + 0.2 * rng.normal(),
                229.0 + 2.0 * rng.normal(),
            );
            lines.push((format!("plant/{pump}/pump"), payload));
        }
    }
    lines
}

#[test]
fn anomaly_example_flags_the_pump_whose_flow_drops_and_no_other() {
    let config = example("anomaly.toml");
    let (summary, outputs) = replay(&config, &pump_stream(2000, 1200));
    let p = &summary.pipelines[1];
    assert_eq!(p.kind, "anomaly");
    assert_eq!(p.keys, 2);
    let of = |pump: &str| -> Vec<&serde_json::Value> {
        outputs
            .iter()
            .map(|m| &m["payload"])
            .filter(|m| m["key"] == pump)
            .collect()
    };
    let (p1, p2) = (of("p1"), of("p2"));
    assert_eq!((p1.len(), p2.len()), (2000, 2000));
    assert!(
        p1.iter().all(|m| m["anomaly"] == false),
        "the healthy pump is never flagged"
    );
    assert!(
        p2[..1200].iter().all(|m| m["anomaly"] == false),
        "no flag before the drop"
    );
    let onset = p2
        .iter()
        .position(|m| m["anomaly"] == true)
        .expect("the drop is flagged");
    assert!((1200..1210).contains(&onset), "flagged at {onset}");
    assert_eq!(p2[onset]["anomaly_field"], "flow");
    assert!(
        p2[1200..1210].iter().any(|m| m["change"] == true),
        "a change point at the drop"
    );
    assert!(
        p2[1300]["anomaly"] == true,
        "still anomalous 100 readings on"
    );
    assert!(p2[..300].iter().all(|m| m["warming_up"] == true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_runs_every_model_kind_like_replay() {
    let port = edgeflow::mqtt::free_local_port().expect("free port");
    let _broker = edgeflow::mqtt::start_embedded(port, 1 << 20).expect("embedded broker");
    let mut client = TestClient::connect("127.0.0.1", port, "models-client").await;
    client.subscribe("edgeflow/#").await;
    for (name, stream) in [
        ("regression.toml", regression_stream(60, Some(50))),
        ("classification.toml", classification_stream(60)),
        ("anomaly.toml", energy_stream(60, &[55])),
        // Past the warm-up (32 readings per machine), with a reading dropped for a missing
        // feature.
        ("kmeans.toml", mode_stream(240, 3, Some(100)).lines),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = example(name);
        config.mqtt.host = "127.0.0.1".into();
        config.mqtt.port = port;
        config.mqtt.client_id = format!("edgeflow-models-{name}");
        config.store.data_dir = dir.path().join("data");
        config.http.listen = "127.0.0.1:0".parse().expect("address");
        let daemon = RunningDaemon::start(config.clone()).await;
        client.publish_all(&stream).await;
        let mut expected = replay_outputs(&config, &stream);
        let mut got = client.receive(expected.values().map(Vec::len).sum()).await;
        if config.pipelines[0].model.kind() == "kmeans" {
            kmeans_metrics_and_key_match_replay(&daemon, &config, &stream, &got).await;
        }
        daemon.shutdown().await;
        if config.pipelines[0].model.kind() == "kmeans" {
            let assigned = expected
                .values()
                .flatten()
                .filter(|m| m["cluster"].is_u64())
                .count();
            assert_eq!(assigned, 239 - 3 * 32, "{name}: readings past the warm-up");
        }
        if config.pipelines[0].time.is_none() {
            // Without an event time the daemon stamps arrival time and replay the line
            // number; everything else must be equal.
            for messages in got.values_mut().chain(expected.values_mut()) {
                for m in messages.iter_mut() {
                    m.as_object_mut().map(|o| o.remove("time"));
                }
            }
        }
        assert_eq!(got, expected, "{name}: daemon and replay differ");
    }
}

/// The running daemon's `/metrics` report the replay's prequential mean distance and scored
/// readings for the kmeans example, and `/keys` describes a machine's clusters.
async fn kmeans_metrics_and_key_match_replay(
    daemon: &RunningDaemon,
    config: &Config,
    stream: &[(String, String)],
    got: &std::collections::BTreeMap<String, Vec<serde_json::Value>>,
) {
    let addr = daemon.handle.http.expect("http listener on");
    let (status, metrics) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    let sample = |name: &str| -> f64 {
        let prefix = format!("{name}{{pipeline=\"machine-modes\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    let (summary, _) = replay(config, stream);
    let p = &summary.pipelines[0];
    assert_eq!(sample("edgeflow_scored_total"), p.scored as f64);
    let expected = p.mean_distance.expect("mean distance");
    let exposed = sample("edgeflow_prequential_mean_distance");
    // Summed in another order than the replay's per-key merge: equal up to round-off.
    assert!(
        (exposed - expected).abs() < 1e-9 * expected.max(1.0),
        "metric {exposed}, replay {expected}"
    );
    assert!(!metrics.contains("edgeflow_prequential_mae{pipeline=\"machine-modes\"}"));

    let (status, key) = http_get(addr, "/keys/machine-modes/lathe-0").await;
    assert_eq!(status, 200, "{key}");
    let key: serde_json::Value = serde_json::from_str(&key).expect("json");
    assert_eq!(key["kind"], "kmeans");
    assert_eq!(key["warming_up"], false);
    let clusters = key["clusters"].as_array().expect("clusters");
    assert_eq!(clusters.len(), 4, "{key}");
    for cluster in clusters {
        assert!(cluster["id"].is_u64(), "{cluster}");
        let centre = cluster["centre"].as_array().expect("centre");
        // power, vibration, speed in original units: each centre is near one mode's mean.
        let centre: Vec<f64> = centre
            .iter()
            .filter_map(serde_json::Value::as_f64)
            .collect();
        assert!(
            MODES
                .iter()
                .any(|(mean, sd)| (0..3).all(|f| (centre[f] - mean[f]).abs() < 3.0 * sd[f])),
            "centre {centre:?} is near no mode"
        );
    }
    let last = got["edgeflow/machine-modes/lathe-0/cluster"]
        .last()
        .expect("outputs of lathe-0");
    assert_eq!(&key["last_output"], last);
}
