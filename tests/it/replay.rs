//! `edgeflow replay` through the binary: byte-for-byte reproducible output, bad input counted
//! per reason and never learned, and the JSON summary.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::*;

fn replay(
    config: &std::path::Path,
    input: &str,
    summary: Option<&std::path::Path>,
) -> (Vec<u8>, String) {
    replay_with_tmpdir(config, input, summary, None)
}

/// [`replay`] with `TMPDIR` (where passivated keys go) set to `tmpdir`.
fn replay_with_tmpdir(
    config: &std::path::Path,
    input: &str,
    summary: Option<&std::path::Path>,
    tmpdir: Option<&std::path::Path>,
) -> (Vec<u8>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgeflow"));
    cmd.args(["replay", "--config"])
        .arg(config)
        .args(["--input", "-"]);
    if let Some(s) = summary {
        cmd.arg("--summary").arg(s);
    }
    if let Some(dir) = tmpdir {
        cmd.env("TMPDIR", dir);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn replay");
    // Written from another thread: a large input would otherwise block on a full stdin pipe
    // while replay blocks on a full stdout pipe.
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("replay output");
    writer
        .join()
        .expect("input writer thread")
        .expect("write input");
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn replay_is_byte_for_byte_reproducible() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &config_text("127.0.0.1", 1883, &dir.path().join("data"), "r"),
    );
    let input = replay_input(&readings(7, 0, 60));
    let (a, _) = replay(&config, &input, None);
    let (b, _) = replay(&config, &input, None);
    assert_eq!(a.len(), b.len());
    assert!(a == b, "two replays of the same input differ");
    assert_eq!(a.iter().filter(|&&c| c == b'\n').count(), 7 * 60);
    let first: serde_json::Value =
        serde_json::from_slice(a.split(|&c| c == b'\n').next().expect("a line")).expect("json");
    assert_eq!(first["topic"], "edgeflow/temperature/s00/temp/forecast");
    for field in [
        "pipeline", "key", "field", "time", "observed", "forecast", "lower", "upper", "updates",
        "mae", "rmse", "error",
    ] {
        assert!(
            first["payload"].get(field).is_some(),
            "output lacks {field}: {first}"
        );
    }
}

#[test]
fn bad_input_is_counted_per_reason_and_never_learned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &config_text("127.0.0.1", 1883, &dir.path().join("data"), "r"),
    );
    let good = readings(1, 0, 10);
    let mut input = replay_input(&good[..5]);
    for bad in [
        r#"{"topic":"sensors/s00/temperature","payload":"{not json"}"#,
        r#"{"topic":"sensors/s00/temperature","payload":{"ts":1,"value":"21.5"}}"#,
        r#"{"topic":"sensors/s00/temperature","payload":{"ts":1}}"#,
        r#"{"topic":"sensors/s00/temperature","payload":{"ts":1,"value":1e999}}"#,
        r#"{"topic":"sensors/s00/temperature","payload":{"value":3.0}}"#,
        r#"{"topic":"other/topic","payload":{"ts":1,"value":3.0}}"#,
        r#"this line is not JSON"#,
    ] {
        input.push_str(bad);
        input.push('\n');
    }
    input.push_str(&replay_input(&good[5..]));
    let summary_path = dir.path().join("summary.json");
    let (out, stderr) = replay(&config, &input, Some(&summary_path));
    let (clean, _) = replay(&config, &replay_input(&good), None);
    // The model never saw the bad readings: outputs equal those of the clean stream.
    assert!(out == clean, "bad input changed the outputs");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary_path).expect("summary file"))
            .expect("summary json");
    let p = &summary["pipelines"][0];
    assert_eq!(p["readings"], 10);
    assert_eq!(p["keys"], 1);
    let errors = &p["decode_errors"];
    for reason in [
        "malformed_json",
        "not_a_number",
        "missing_field",
        "non_finite",
        "bad_time",
    ] {
        assert_eq!(errors[reason], 1, "{reason} in {errors}");
    }
    assert_eq!(summary["unknown_topic"], 1);
    assert_eq!(summary["bad_lines"], 1);
    assert!(stderr.contains("pipeline temperature"), "{stderr}");
}

/// Runs `edgeflow replay` on `input` with a config of `pipelines`; returns the output lines as
/// JSON and the summary.
fn replay_formats(pipelines: &str, input: &str) -> (Vec<serde_json::Value>, serde_json::Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
            "[store]\ndata_dir = \"{}\"\n{pipelines}",
            dir.path().join("data").display()
        ),
    );
    let summary_path = dir.path().join("summary.json");
    let (out, _) = replay(&config, input, Some(&summary_path));
    let lines = out
        .split(|&c| c == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).expect("output line is JSON"))
        .collect();
    let summary = serde_json::from_slice(&std::fs::read(&summary_path).expect("summary file"))
        .expect("summary json");
    (lines, summary)
}

#[test]
fn replay_reads_each_element_of_a_json_batch() {
    let pipelines = r#"
[[pipelines]]
name = "batch"
topics = ["gw/+/batch"]
key = "/id"
time = "/ts"
time_unit = "s"
fields = { temp = "/temp" }
[pipelines.model]
kind = "forecast"
target = "temp"
"#;
    let input = concat!(
        r#"{"topic":"gw/g1/batch","payload":[{"id":"a","ts":1,"temp":20},{"id":"b","ts":1,"temp":30}]}"#,
        "\n",
        r#"{"topic":"gw/g1/batch","payload":[{"id":"a","ts":2,"temp":21},{"id":"b","ts":2,"temp":"x"},{"ts":2,"temp":1}]}"#,
        "\n",
        r#"{"topic":"gw/g1/batch","payload":"[{\"id\":\"a\",\"ts\":3,\"temp\":22}"}"#,
        "\n",
    );
    let (outputs, summary) = replay_formats(pipelines, input);
    let seen: Vec<(String, i64, f64)> = outputs
        .iter()
        .map(|o| {
            let p = &o["payload"];
            (
                p["key"].as_str().expect("key").to_owned(),
                p["time"].as_i64().expect("time"),
                p["observed"].as_f64().expect("observed"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("a".into(), 1000, 20.0),
            ("b".into(), 1000, 30.0),
            ("a".into(), 2000, 21.0)
        ]
    );
    let p = &summary["pipelines"][0];
    assert_eq!(p["readings"], 3);
    assert_eq!(p["keys"], 2);
    // One bad element each; the truncated batch once, as a whole.
    assert_eq!(p["decode_errors"]["not_a_number"], 1);
    assert_eq!(p["decode_errors"]["missing_key"], 1);
    assert_eq!(p["decode_errors"]["malformed_json"], 1);
}

#[test]
fn replay_reads_each_line_of_a_csv_payload() {
    let pipelines = r#"
[[pipelines]]
name = "env"
topics = ["env/+/csv"]
format = "csv"
columns = ["ts", "sensor", "temp", "hum"]
header = true
key = "/sensor"
time = "/ts"
time_unit = "ms"
fields = { temp = "/temp", hum = "/hum" }
[pipelines.model]
kind = "regression"
target = "temp"
features = ["hum"]
"#;
    // String payloads are the message's bytes.
    let input = concat!(
        r#"{"topic":"env/g1/csv","payload":"ts,sensor,temp,hum\n1000,s1,20.5,40\r\n1000,\"s,2\",21,41\n"}"#,
        "\n",
        r#"{"topic":"env/g1/csv","payload":"2000,s1,,42\n2000,s1,22\n\n2000,\"s,2\",22.5,43"}"#,
        "\n",
    );
    let (outputs, summary) = replay_formats(pipelines, input);
    let seen: Vec<(String, i64, Option<f64>)> = outputs
        .iter()
        .map(|o| {
            let p = &o["payload"];
            (
                p["key"].as_str().expect("key").to_owned(),
                p["time"].as_i64().expect("time"),
                p["observed"].as_f64(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("s1".into(), 1000, Some(20.5)),
            ("s,2".into(), 1000, Some(21.0)),
            // An empty target cell: predicted, not learned.
            ("s1".into(), 2000, None),
            ("s,2".into(), 2000, Some(22.5)),
        ]
    );
    assert_eq!(outputs[1]["topic"], "edgeflow/env/s,2/temp/prediction");
    let p = &summary["pipelines"][0];
    assert_eq!(p["readings"], 4);
    assert_eq!(p["decode_errors"]["bad_csv"], 1);
}

#[test]
fn replay_reads_senml_packs_by_record_and_by_base_name() {
    let pipelines = r#"
[[pipelines]]
name = "quantity"
topics = ["meters/+/senml"]
format = "senml"
output = "edgeflow/{pipeline}/{key}/forecast"
[pipelines.model]
kind = "forecast"
target = "value"

[[pipelines]]
name = "meter"
topics = ["meters/+/senml"]
format = "senml"
key = "basename"
fields = { voltage = "/voltage", current = "/current" }
[pipelines.model]
kind = "regression"
target = "current"
features = ["voltage"]
"#;
    let input = concat!(
        // RFC 8428 §5.1.2 (its second example), on line 1.
        r#"{"topic":"meters/m1/senml","payload":[{"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,"bu":"A","bver":5,"n":"voltage","u":"V","v":120.1},{"n":"current","t":-5,"v":1.2},{"n":"current","v":1.7}]}"#,
        "\n",
        // Relative times on line 2: "now" is the line number (2 ms), so t = -1 s is -998 ms.
        r#"{"topic":"meters/m2/senml","payload":[{"bn":"m2:","n":"voltage","v":230,"t":-1},{"n":"current","v":2,"t":-1}]}"#,
        "\n",
        r#"{"topic":"meters/m2/senml","payload":{"n":"voltage","v":230}}"#,
        "\n",
    );
    let (outputs, summary) = replay_formats(pipelines, input);
    let seen: Vec<(String, i64)> = outputs
        .iter()
        .map(|o| {
            (
                o["topic"].as_str().expect("topic").to_owned(),
                o["payload"]["time"].as_i64().expect("time"),
            )
        })
        .collect();
    let bt = 1_276_020_076_001;
    let name = "urn:dev:ow:10e2073a0108006:";
    assert_eq!(
        seen,
        [
            (format!("edgeflow/quantity/{name}voltage/forecast"), bt),
            (
                format!("edgeflow/quantity/{name}current/forecast"),
                bt - 5000
            ),
            (format!("edgeflow/quantity/{name}current/forecast"), bt),
            (format!("edgeflow/meter/{name}/current/prediction"), bt),
            ("edgeflow/quantity/m2:voltage/forecast".into(), -998),
            ("edgeflow/quantity/m2:current/forecast".into(), -998),
            ("edgeflow/meter/m2:/current/prediction".into(), -998),
        ]
    );
    assert_eq!(outputs[3]["payload"]["observed"], 1.7);
    let (quantity, meter) = (&summary["pipelines"][0], &summary["pipelines"][1]);
    assert_eq!(quantity["readings"], 5);
    assert_eq!(quantity["keys"], 4);
    assert_eq!(meter["readings"], 2);
    // The reading at bt − 5 s has a current but no voltage.
    assert_eq!(meter["decode_errors"]["missing_field"], 1);
    // The object payload is not a pack: dropped once per pipeline.
    assert_eq!(quantity["decode_errors"]["bad_senml"], 1);
    assert_eq!(meter["decode_errors"]["bad_senml"], 1);
}

#[test]
fn replay_clusters_the_levels_of_a_bare_number_and_summarises_the_mean_distance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
            r#"[store]
data_dir = "{}"

[[pipelines]]
name = "meter"
topics = ["meters/+/power"]
format = "number"
key = "topic[1]"

[pipelines.model]
kind = "kmeans"
features = ["value"]
k = 2
"#,
            dir.path().join("data").display()
        ),
    );
    // A compressor's power: off (about 0.2 kW) and running (about 3 kW), alternating.
    let input: String = (0..100)
        .map(|i| {
            let level = if i % 2 == 0 { 0.2 } else { 3.0 };
            let jitter = ((i * 37) % 11) as f64 * 0.01;
            format!(
                "{{\"topic\":\"meters/m1/power\",\"payload\":\"{:.2}\"}}\n",
                level + jitter
            )
        })
        .collect();
    let summary_path = dir.path().join("summary.json");
    let (out, stderr) = replay(&config, &input, Some(&summary_path));
    let (again, _) = replay(&config, &input, None);
    assert!(out == again, "two replays of the same input differ");
    let outputs: Vec<serde_json::Value> = out
        .split(|&c| c == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).expect("output line is JSON"))
        .collect();
    assert_eq!(outputs.len(), 100);
    assert_eq!(outputs[0]["topic"], "edgeflow/meter/m1/cluster");
    // 8·k = 16 readings of warm-up, then the two levels get two clusters.
    assert!(outputs[..16]
        .iter()
        .all(|o| o["payload"]["cluster"].is_null()));
    let (off, on) = (&outputs[16]["payload"], &outputs[17]["payload"]);
    assert_ne!(off["cluster"], on["cluster"]);
    for (i, o) in outputs.iter().enumerate().skip(16) {
        let expected = if i % 2 == 0 { off } else { on };
        assert_eq!(
            o["payload"]["cluster"],
            expected["cluster"],
            "line {}",
            i + 1
        );
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary_path).expect("summary file"))
            .expect("summary json");
    let p = &summary["pipelines"][0];
    assert_eq!(p["kind"], "kmeans");
    assert_eq!(p["readings"], 100);
    assert_eq!(p["scored"], 84);
    let mean_distance = p["mean_distance"].as_f64().expect("mean_distance");
    let last = outputs[99]["payload"]["mean_distance"]
        .as_f64()
        .expect("mean_distance in the output");
    assert!(
        (mean_distance - last).abs() < 1e-9,
        "one key: the summary is its mean distance ({mean_distance} vs {last})"
    );
    assert!(
        mean_distance < 0.2,
        "the levels are far apart, each within 0.1 kW: {mean_distance}"
    );
    for absent in ["mae", "rmse", "accuracy", "log_loss"] {
        assert!(p.get(absent).is_none(), "{absent} in {p}");
    }
    assert!(
        stderr.contains("pipeline meter (kmeans): 100 readings, 1 keys, scored 84, mean distance"),
        "{stderr}"
    );
}

#[test]
fn replay_recovers_from_absurd_spikes_and_counts_the_implausible_ones() {
    // A daily series around 20 (hourly readings) read by two pipelines, one with bounds; five
    // readings of 1e12 at 1000 and three of 1e300 at 1200.
    let pipelines = r#"
[[pipelines]]
name = "open"
topics = ["sensors/+/temperature"]
key = "topic[1]"
time = "/ts"
fields = { temp = "/value" }
[pipelines.model]
kind = "forecast"
target = "temp"
season = 24

[[pipelines]]
name = "bounded"
topics = ["sensors/+/temperature"]
key = "topic[1]"
time = "/ts"
fields = { temp = "/value" }
bounds = { temp = { min = -50, max = 150 } }
[pipelines.model]
kind = "forecast"
target = "temp"
season = 24
"#;
    let n = 1500;
    let spike = |t: usize| match t {
        1000..=1004 => Some("1e12"),
        1200..=1202 => Some("1e300"),
        _ => None,
    };
    let mut input = String::new();
    for t in 0..n {
        let y = 20.0
            + 5.0 * (std::f64::consts::TAU * t as f64 / 24.0).sin()
            + 0.3 * ((t * 7919) % 17) as f64 / 17.0;
        let value = spike(t).map_or_else(|| format!("{y:.4}"), str::to_owned);
        let ts = 1_700_000_000_000i64 + t as i64 * 3_600_000;
        input.push_str(&format!(
            "{{\"topic\":\"sensors/s1/temperature\",\"payload\":{{\"ts\":{ts},\"value\":{value}}}}}\n"
        ));
    }
    let (lines, summary) = replay_formats(pipelines, &input);
    let outputs = |pipeline: &str| -> Vec<serde_json::Value> {
        let topic = format!("edgeflow/{pipeline}/s1/temp/forecast");
        lines
            .iter()
            .filter(|line| line["topic"] == topic.as_str())
            .map(|line| line["payload"].clone())
            .collect()
    };
    let number = |v: &serde_json::Value, field: &str| v[field].as_f64().expect(field);
    let half_width = |v: &serde_json::Value| (number(v, "upper") - number(v, "lower")) / 2.0;

    // Without bounds every reading is answered; three readings after each burst the interval
    // is the one before it, and the key's MAE is barely moved.
    let open = outputs("open");
    assert_eq!(open.len(), n);
    let before = &open[999];
    for after in [&open[1007], &open[1205], &open[n - 1]] {
        let ratio = half_width(after) / half_width(before);
        assert!(
            (0.67..1.5).contains(&ratio),
            "half-width {} vs {} before the spikes",
            half_width(after),
            half_width(before)
        );
        let mae_ratio = number(after, "mae") / number(before, "mae");
        assert!(
            (0.8..1.25).contains(&mae_ratio),
            "MAE {} vs {} before",
            after["mae"],
            before["mae"]
        );
        assert!(number(after, "rmse").is_finite());
    }
    let last = &open[n - 1];
    assert!((10.0..30.0).contains(&number(last, "forecast")), "{last}");

    // With bounds the spikes never reach the model: dropped and counted as implausible.
    let bounded = outputs("bounded");
    assert_eq!(bounded.len(), n - 8);
    let summaries = summary["pipelines"].as_array().expect("pipelines");
    let by_name = |name: &str| {
        summaries
            .iter()
            .find(|p| p["name"] == name)
            .expect("a summary per pipeline")
    };
    assert_eq!(by_name("bounded")["decode_errors"]["implausible"], 8);
    assert_eq!(by_name("bounded")["readings"], n - 8);
    assert!(by_name("open")["decode_errors"]
        .get("implausible")
        .is_none());
    assert_eq!(by_name("open")["readings"], n);
    let mae = |name: &str| by_name(name)["mae"].as_f64().expect("mae");
    assert!(
        mae("open") < 1.25 * mae("bounded"),
        "pipeline MAE {} with the spikes vs {} without",
        mae("open"),
        mae("bounded")
    );
}

#[test]
fn replay_passivates_keys_beyond_max_resident_keys_and_max_memory_with_the_same_outputs() {
    const KEYS: usize = 20_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let tmpdir = dir.path().join("tmp");
    std::fs::create_dir(&tmpdir).expect("tmp dir");
    let text = config_text("127.0.0.1", 1883, &dir.path().join("data"), "r")
        .replace("[store]\n", "[store]\ncache_bytes = 1048576\n");
    let with_runtime = |name: &str, runtime: &str| {
        let patched = text.replace(
            "[runtime]\nshards = 2\n",
            &format!("[runtime]\nshards = 2\n{runtime}\n"),
        );
        assert_ne!(patched, text, "runtime section not patched");
        let sub = dir.path().join(name);
        std::fs::create_dir(&sub).expect("config dir");
        write_config(&sub, &patched)
    };
    let unbounded = with_runtime(
        "unbounded",
        "max_resident_keys = 1000000\nmax_memory = \"4GiB\"",
    );
    let by_count = with_runtime("count", "max_resident_keys = 500\nmax_memory = \"4GiB\"");
    // The smallest budget, 16 MiB: a heap mark of ⅔ of it for 20,000 forecast keys of ~2 KB
    // each (about 1.5–2 KB per key in a debug build: at most ~7,000 fit).
    let by_memory = with_runtime("memory", "max_memory = \"16MiB\"");
    // Three rounds over every key: each key comes back after it was passivated.
    let input = replay_input(&readings(KEYS, 0, 3));
    let run = |config: &std::path::Path| {
        let summary_path = config.with_extension("summary.json");
        let (out, stderr) = replay_with_tmpdir(config, &input, Some(&summary_path), Some(&tmpdir));
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&summary_path).expect("summary file"))
                .expect("summary json");
        (out, stderr, summary)
    };
    let (expected, stderr, summary) = run(&unbounded);
    assert_eq!(expected.iter().filter(|&&c| c == b'\n').count(), 3 * KEYS);
    assert!(summary.get("passivated").is_none(), "{summary}");
    assert!(!stderr.contains("passivated"), "{stderr}");

    let (out, stderr, summary) = run(&by_count);
    assert!(
        out == expected,
        "outputs with max_resident_keys = 500 differ"
    );
    assert!(
        summary["passivated"].as_u64() >= Some(2 * KEYS as u64),
        "{summary}"
    );
    assert!(
        summary["restored"].as_u64() >= Some(KEYS as u64),
        "{summary}"
    );
    assert!(
        summary["peak_resident_keys"].as_u64() <= Some(500),
        "{summary}"
    );
    assert!(
        stderr.contains("key states passivated to a temporary store"),
        "{stderr}"
    );

    let (out, _, summary) = run(&by_memory);
    assert!(out == expected, "outputs with max_memory = 16MiB differ");
    let for_memory = summary["passivated_for_memory"].as_u64().unwrap_or(0);
    assert!(for_memory >= KEYS as u64, "{summary}");
    let peak = summary["peak_resident_keys"].as_u64().unwrap_or(u64::MAX);
    assert!(
        (1..KEYS as u64 / 2).contains(&peak),
        "{peak} keys resident at once within a heap mark of 10.7 MiB: {summary}"
    );
    // The temporary stores are gone.
    let left: Vec<_> = std::fs::read_dir(&tmpdir).expect("tmp dir").collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
}
