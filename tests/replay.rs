//! `edgeflow replay` through the binary: byte-for-byte reproducible output, bad input counted
//! per reason and never learned, and the JSON summary.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn replay(
    config: &std::path::Path,
    input: &str,
    summary: Option<&std::path::Path>,
) -> (Vec<u8>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgeflow"));
    cmd.args(["replay", "--config"])
        .arg(config)
        .args(["--input", "-"]);
    if let Some(s) = summary {
        cmd.arg("--summary").arg(s);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn replay");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write input");
    let out = child.wait_with_output().expect("replay output");
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
