//! Pipeline operators end to end: each through `replay` (filter, map, dedupe, windows with
//! lateness, aggregation across keys, chaining), window state across a restart of the key
//! state, and a chained pipeline through the daemon over MQTT.

use std::collections::BTreeMap;

use crate::common::*;
use edgeflow::config::Config;
use edgeflow::pipeline::{Pipelines, Scratch};
use edgeflow::replay::{ReplaySummary, Replayer};
use serde_json::Value;

/// A config with `pipelines` (TOML text of the `[[pipelines]]` tables) on an external broker.
fn config(dir: &std::path::Path, port: u16, pipelines: &str) -> Config {
    let text = format!(
        r#"
[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "edgeflow-operators"
reconnect_min = "50ms"
reconnect_max = "500ms"

[store]
data_dir = "{data}"
checkpoint_interval = "100ms"

[runtime]
shards = 2
shutdown_deadline = "2s"

[http]
listen = "127.0.0.1:0"
{pipelines}
"#,
        data = dir.join("data").display()
    );
    load(&write_config(dir, &text))
}

/// Replays `(topic, payload)` messages; returns the outputs (topic, payload) in order and the
/// summary.
fn run(config: &Config, messages: &[(String, String)]) -> (Vec<(String, Value)>, ReplaySummary) {
    let mut replayer = Replayer::new(config).expect("replayer");
    let mut out = Vec::new();
    replayer
        .run(replay_input(messages).as_bytes(), &mut out)
        .expect("replay");
    let outputs = String::from_utf8(out)
        .expect("utf8")
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("json");
            (
                v["topic"].as_str().expect("topic").to_owned(),
                v["payload"].clone(),
            )
        })
        .collect();
    (outputs, replayer.summary())
}

fn msg(topic: &str, payload: String) -> (String, String) {
    (topic.to_owned(), payload)
}

const CLIMATE: &str = r#"
[[pipelines]]
name = "climate"
topics = ["rooms/+/+/climate"]
key = "topic[2]"
time = "/ts"
time_unit = "s"
fields = { temp_f = "/temp_f", rh = "/rh" }
"#;

#[test]
fn filter_drops_and_counts_readings_whose_condition_is_false() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        1883,
        &format!(
            "{CLIMATE}
[[pipelines.operators]]
op = \"filter\"
expr = \"temp_f > -40 && temp_f < 257 && key != \\\"broken\\\"\"

[pipelines.model]
kind = \"forecast\"
target = \"temp_f\"
"
        ),
    );
    let values = [70.0, 999.0, 71.0, -60.0, 72.0];
    let mut messages: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            msg(
                "rooms/a/s1/climate",
                format!("{{\"ts\":{i},\"temp_f\":{v},\"rh\":40}}"),
            )
        })
        .collect();
    messages.push(msg(
        "rooms/a/broken/climate",
        "{\"ts\":9,\"temp_f\":70,\"rh\":40}".into(),
    ));
    let (outputs, summary) = run(&cfg, &messages);
    let observed: Vec<f64> = outputs
        .iter()
        .map(|(_, p)| p["observed"].as_f64().expect("observed"))
        .collect();
    assert_eq!(observed, [70.0, 71.0, 72.0]);
    assert_eq!(summary.pipelines[0].filtered, 3);
    assert_eq!(summary.pipelines[0].readings, 6);
}

#[test]
fn map_converts_derives_renames_and_drops_before_the_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        1883,
        &format!(
            "{CLIMATE}
[[pipelines.operators]]
op = \"map\"
convert = {{ temp_f = {{ scale = 0.5, offset = -16 }} }}
derive = {{ dew = \"temp_f - (100 - rh) / 5\" }}
rename = {{ temp_f = \"temp\" }}
drop = [\"rh\"]

[pipelines.model]
kind = \"regression\"
target = \"dew\"
features = [\"temp\"]
"
        ),
    );
    let messages = vec![
        msg(
            "rooms/a/s1/climate",
            "{\"ts\":1,\"temp_f\":70,\"rh\":40}".into(),
        ),
        msg(
            "rooms/a/s1/climate",
            "{\"ts\":2,\"temp_f\":80,\"rh\":50}".into(),
        ),
    ];
    let (outputs, _) = run(&cfg, &messages);
    assert_eq!(outputs.len(), 2);
    // temp = 70·0.5 − 16 = 19; dew is derived from the converted value: 19 − 60/5 = 7.
    assert_eq!(outputs[0].1["observed"], serde_json::json!(7.0));
    // 80·0.5 − 16 = 24; 24 − 50/5 = 14.
    assert_eq!(outputs[1].1["observed"], serde_json::json!(14.0));
    assert_eq!(outputs[0].1["field"], serde_json::json!("dew"));
}

/// One reading per second for `seconds` seconds of sensor `sensor` in room `room`.
fn seconds(room: &str, sensor: &str, from: i64, seconds: i64) -> Vec<(String, String)> {
    (from..from + seconds)
        .map(|t| {
            let temp = 60.0 + (t % 60) as f64 / 10.0;
            msg(
                &format!("rooms/{room}/{sensor}/climate"),
                format!("{{\"ts\":{t},\"temp_f\":{temp},\"rh\":40}}"),
            )
        })
        .collect()
}

const WINDOWED: &str = "
[[pipelines.operators]]
op = \"window\"
size = \"1m\"
lateness = \"5s\"
aggregates = { temp_f = \"mean\", hi = \"max(temp_f)\", n = \"count(temp_f)\" }

[pipelines.model]
kind = \"forecast\"
target = \"temp_f\"
";

#[test]
fn tumbling_window_feeds_the_model_one_mean_per_minute() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 1883, &format!("{CLIMATE}{WINDOWED}"));
    // 3 minutes and 10 s of readings: the first three windows close (the watermark passes
    // 3:00 + 5 s of lateness only at 3:05), the fourth stays open.
    let (outputs, summary) = run(&cfg, &seconds("a", "s1", 0, 190));
    assert_eq!(outputs.len(), 3, "{outputs:?}");
    for (minute, (_, payload)) in outputs.iter().enumerate() {
        // The mean of 60.0, 60.1, ..., 65.9.
        let mean = payload["observed"].as_f64().expect("observed");
        assert!((mean - 62.95).abs() < 1e-9, "minute {minute}: {mean}");
        // A window's reading carries the window's end (ms).
        assert_eq!(
            payload["time"],
            serde_json::json!((minute as i64 + 1) * 60_000)
        );
    }
    assert_eq!(summary.pipelines[0].readings, 190);
    assert_eq!(summary.pipelines[0].late, 0);
}

#[test]
fn late_readings_beyond_the_allowed_lateness_are_counted_and_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 1883, &format!("{CLIMATE}{WINDOWED}"));
    let mut messages = seconds("a", "s1", 0, 70);
    // t = 58 s arrives after t = 69 s: 11 s late, but [0, 60) is only closed at 65 s.
    messages.push(msg(
        "rooms/a/s1/climate",
        "{\"ts\":58,\"temp_f\":100,\"rh\":40}".into(),
    ));
    // Within the lateness of the open window [60, 120): counted.
    messages.push(msg(
        "rooms/a/s1/climate",
        "{\"ts\":66,\"temp_f\":100,\"rh\":40}".into(),
    ));
    messages.extend(seconds("a", "s1", 70, 60));
    let (outputs, summary) = run(&cfg, &messages);
    assert_eq!(summary.pipelines[0].late, 1);
    assert_eq!(outputs.len(), 2);
    let second = &outputs[1].1;
    // [60, 120) got its 60 readings plus the one at 66 s (100 °F).
    let expected = (62.95 * 60.0 + 100.0) / 61.0;
    assert!((second["observed"].as_f64().expect("mean") - expected).abs() < 1e-9);
}

#[test]
fn sliding_windows_count_each_reading_in_size_over_slide_windows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        1883,
        &format!(
            "{CLIMATE}
[[pipelines.operators]]
op = \"window\"
size = \"1m\"
slide = \"20s\"
aggregates = {{ n = \"count(temp_f)\" }}

[pipelines.model]
kind = \"forecast\"
target = \"n\"
"
        ),
    );
    let (outputs, _) = run(&cfg, &seconds("a", "s1", 0, 300));
    // Windows start every 20 s: [-40 s, 20 s) holds the readings of 0..20 s, [-20 s, 40 s)
    // those of 0..40 s, then every window holds 60. With no lateness, the windows ending at
    // or before the newest reading (299 s) have closed: ends 20 s, 40 s, ..., 280 s.
    let counts: Vec<f64> = outputs
        .iter()
        .map(|(_, p)| p["observed"].as_f64().expect("count"))
        .collect();
    let mut expected = vec![20.0, 40.0];
    expected.extend([60.0; 12]);
    assert_eq!(counts, expected);
    let ends: Vec<i64> = outputs
        .iter()
        .map(|(_, p)| p["time"].as_i64().expect("time"))
        .collect();
    assert_eq!(ends, (1..=14).map(|i| i * 20_000).collect::<Vec<_>>());
}

#[test]
fn dedupe_drops_a_redelivered_reading() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        1883,
        &format!(
            "{CLIMATE}
[[pipelines.operators]]
op = \"dedupe\"

[pipelines.model]
kind = \"forecast\"
target = \"temp_f\"
"
        ),
    );
    let mut messages = seconds("a", "s1", 0, 5);
    messages.insert(3, messages[2].clone());
    messages.push(messages[4].clone());
    // Another key with the same time is not a duplicate.
    messages.push(msg(
        "rooms/a/s2/climate",
        "{\"ts\":4,\"temp_f\":61,\"rh\":40}".into(),
    ));
    let (outputs, summary) = run(&cfg, &messages);
    assert_eq!(summary.pipelines[0].duplicates, 2);
    assert_eq!(outputs.len(), 6);
}

#[test]
fn a_topic_level_key_aggregates_many_sensors_into_one_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Key = the room (topic level 1): every sensor of a room feeds one derived key, whose
    // window aggregates the readings of all of them.
    let rooms = CLIMATE
        .replace("name = \"climate\"", "name = \"rooms\"")
        .replace("topic[2]", "topic[1]");
    let cfg = config(
        dir.path(),
        1883,
        &format!(
            "{rooms}
[[pipelines.operators]]
op = \"window\"
size = \"1m\"
aggregates = {{ n = \"count(temp_f)\" }}

[pipelines.model]
kind = \"forecast\"
target = \"n\"
"
        ),
    );
    let mut messages = Vec::new();
    for t in 0..130 {
        for sensor in ["s1", "s2", "s3"] {
            messages.extend(seconds("kitchen", sensor, t, 1));
        }
        messages.extend(seconds("hall", "s9", t, 1));
    }
    let (outputs, summary) = run(&cfg, &messages);
    assert_eq!(summary.pipelines[0].keys, 2);
    let counts = |room: &str| -> Vec<f64> {
        outputs
            .iter()
            .filter(|(topic, _)| topic.contains(&format!("/{room}/")))
            .map(|(_, p)| p["observed"].as_f64().expect("count"))
            .collect()
    };
    assert_eq!(counts("kitchen"), [180.0, 180.0]);
    assert_eq!(counts("hall"), [60.0, 60.0]);
}

#[test]
fn chained_pipeline_reads_the_upstream_outputs_in_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        1883,
        &format!(
            "{CLIMATE}
[pipelines.model]
kind = \"forecast\"
target = \"temp_f\"

[[pipelines]]
name = \"errors\"
from = \"climate\"
fields = {{ error = \"/error\" }}
output = \"alerts/{{key}}/{{field}}\"

[pipelines.model]
kind = \"forecast\"
target = \"error\"
"
        ),
    );
    let (outputs, summary) = run(&cfg, &seconds("a", "s1", 0, 50));
    let upstream: Vec<&Value> = outputs
        .iter()
        .filter(|(t, _)| t.starts_with("edgeflow/climate/"))
        .map(|(_, p)| p)
        .collect();
    let chained: Vec<&Value> = outputs
        .iter()
        .filter(|(t, _)| t.starts_with("alerts/s1/error"))
        .map(|(_, p)| p)
        .collect();
    assert_eq!(upstream.len(), 50);
    let with_error: Vec<&&Value> = upstream.iter().filter(|p| p["error"].is_f64()).collect();
    // Every upstream output with an error became a chained reading, in order, same key/time.
    assert_eq!(chained.len(), with_error.len());
    for (c, u) in chained.iter().zip(&with_error) {
        assert_eq!(c["observed"], u["error"]);
        assert_eq!(c["time"], u["time"]);
        assert_eq!(c["key"], serde_json::json!("s1"));
    }
    // The outputs without an error (warm-up) were counted as not_a_number drops.
    let errors = &summary.pipelines[1];
    assert_eq!(
        errors
            .decode_errors
            .get("not_a_number")
            .copied()
            .unwrap_or(0) as usize,
        50 - with_error.len()
    );
}

#[test]
fn window_state_survives_a_restart_mid_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), 1883, &format!("{CLIMATE}{WINDOWED}"));
    let messages = seconds("a", "s1", 0, 200);
    let pipelines = Pipelines::new(&cfg).expect("pipelines");
    let p = pipelines.get(0).expect("pipeline");
    let decode = |(topic, payload): &(String, String)| {
        let mut buf = edgeflow::codec::ReadingBuf::default();
        p.decode(topic, payload.as_bytes(), &mut buf)
            .expect("decodes");
        buf
    };
    let collect = |state: &mut edgeflow::pipeline::KeyState,
                   msgs: &[(String, String)],
                   out: &mut Vec<String>| {
        let mut scratch = Scratch::default();
        for m in msgs {
            let r = decode(m);
            p.process(
                state,
                &r.key,
                r.time_ms.expect("time"),
                &r.values,
                &mut scratch,
                &mut |_, payload| out.push(String::from_utf8_lossy(payload).into_owned()),
            );
        }
    };
    let mut uninterrupted = Vec::new();
    let mut state = p.new_state();
    collect(&mut state, &messages, &mut uninterrupted);

    // Stop at 90 s (in the middle of the second window), store, restore, go on.
    let mut resumed = Vec::new();
    let mut first = p.new_state();
    collect(&mut first, &messages[..90], &mut resumed);
    let mut bytes = Vec::new();
    p.encode_state(&first, &mut bytes).expect("encode");
    let mut restored = p
        .restore_state(&bytes)
        .expect("decodes")
        .expect("same config");
    assert_eq!(restored, first);
    collect(&mut restored, &messages[90..], &mut resumed);
    assert_eq!(resumed, uninterrupted);
    assert_eq!(uninterrupted.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_pipeline_over_mqtt_matches_replay() {
    let port = edgeflow::mqtt::free_local_port().expect("free port");
    let _broker = edgeflow::mqtt::start_embedded(port, 1 << 20).expect("embedded broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        port,
        &format!(
            "{CLIMATE}
[[pipelines.operators]]
op = \"filter\"
expr = \"temp_f < 65\"

[pipelines.model]
kind = \"forecast\"
target = \"temp_f\"

[[pipelines]]
name = \"errors\"
from = \"climate\"
fields = {{ error = \"/error\" }}
output = \"alerts/{{key}}/{{field}}\"

[pipelines.model]
kind = \"forecast\"
target = \"error\"
"
        ),
    );
    // One sensor: the chained outputs of one key arrive in order in both drivers.
    let messages = seconds("a", "s1", 0, 60);
    let (expected, _) = run(&cfg, &messages);
    let expected_alerts: Vec<&Value> = expected
        .iter()
        .filter(|(t, _)| t.starts_with("alerts/"))
        .map(|(_, p)| p)
        .collect();
    assert!(expected_alerts.len() > 30);

    let mut client = TestClient::connect("127.0.0.1", port, "operators-test-client").await;
    client.subscribe("alerts/#").await;
    let daemon = RunningDaemon::start(cfg.clone()).await;
    client.publish_all(&messages).await;
    let got: BTreeMap<String, Vec<Value>> = client.receive(expected_alerts.len()).await;
    daemon.shutdown().await;
    let alerts = got
        .get("alerts/s1/error")
        .expect("chained outputs over MQTT");
    assert_eq!(alerts.len(), expected_alerts.len());
    for (a, e) in alerts.iter().zip(&expected_alerts) {
        assert_eq!(a, *e);
    }
}
