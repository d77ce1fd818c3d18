//! SIGHUP reloads the config of the running binary: an unchanged pipeline keeps its actors
//! and state, a changed one is rebuilt (its keys' state written and read back), a removed one
//! is checkpointed and stopped (and unsubscribed), a new one starts; an invalid file is
//! rejected with its errors and the old configuration keeps running.

use std::path::Path;
use std::process::Command;

use crate::common::*;

fn pipeline(name: &str, topic_level: &str, output: &str) -> String {
    format!(
        r#"
[[pipelines]]
name = "{name}"
topics = ["sensors/+/{topic_level}"]
key = "topic[1]"
time = "/ts"
time_unit = "ms"
fields = {{ value = "/value" }}
output = "{output}"

[pipelines.model]
kind = "forecast"
target = "value"
"#
    )
}

fn config_text(port: u16, data: &Path, pipelines: &[String]) -> String {
    format!(
        r#"
[mqtt]
embedded = true
port = {port}

[store]
data_dir = "{data}"
checkpoint_interval = "100ms"

[runtime]
shards = 2
shutdown_deadline = "5s"

[http]
listen = "127.0.0.1:0"
{pipelines}"#,
        data = data.display(),
        pipelines = pipelines.concat()
    )
}

fn hup(daemon: &BinaryDaemon) {
    let status = Command::new("kill")
        .args(["-HUP", &daemon.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

fn message(sensor: &str, level: &str, step: i64, value: f64) -> (String, String) {
    (
        format!("sensors/{sensor}/{level}"),
        format!(
            "{{\"ts\":{},\"value\":{value}}}",
            1_700_000_000_000 + step * 1000
        ),
    )
}

/// The `updates` of the single output on `topic` in `got`.
fn updates(got: &std::collections::BTreeMap<String, Vec<serde_json::Value>>, topic: &str) -> u64 {
    let messages = got
        .get(topic)
        .unwrap_or_else(|| panic!("no output on {topic}: {:?}", got.keys()));
    messages.last().expect("one")["updates"]
        .as_u64()
        .expect("updates")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_keeps_rebuilds_removes_and_adds_pipelines() {
    let port = edgeflow::mqtt::free_local_port().expect("free port");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let temperature = pipeline("temperature", "temperature", "out/temperature/{key}");
    let humidity = pipeline("humidity", "humidity", "out/humidity/{key}");
    let pressure = pipeline("pressure", "pressure", "out/pressure/{key}");
    let path = write_config(
        dir.path(),
        &config_text(
            port,
            &data,
            &[temperature.clone(), humidity.clone(), pressure.clone()],
        ),
    );
    let mut daemon = BinaryDaemon::spawn(&path);
    // Logged in this order: the listener starts before the subscriptions are acknowledged.
    let http_addr = daemon.http_address().await;
    daemon.wait_for("ready: subscribed").await;

    let mut client = TestClient::connect("127.0.0.1", port, "reload-client").await;
    client.subscribe("out/#").await;
    let mut first = Vec::new();
    for step in 0..5 {
        for level in ["temperature", "humidity", "pressure"] {
            first.push(message("a", level, step, 20.0 + step as f64));
        }
    }
    client.publish_all(&first).await;
    let got = client.receive(first.len()).await;
    assert_eq!(got["out/temperature/a"].len(), 5);

    // Reload: temperature unchanged, humidity's output changes (its model parameters do
    // not, so its state carries over), pressure removed, wind added.
    let humidity2 = pipeline("humidity", "humidity", "out/humidity2/{key}");
    let wind = pipeline("wind", "wind", "out/wind/{key}");
    std::fs::write(
        &path,
        config_text(
            port,
            &data,
            &[temperature.clone(), humidity2.clone(), wind.clone()],
        ),
    )
    .expect("rewrite config");
    hup(&daemon);
    let reloaded = daemon.wait_for("reloaded:").await;
    assert!(
        reloaded.contains(
            "kept: temperature; rebuilt: humidity; added: wind; removed: pressure; 2 keys checkpointed and stopped"
        ),
        "{reloaded}"
    );

    let second = vec![
        message("a", "temperature", 5, 25.0),
        message("a", "humidity", 5, 25.0),
        message("a", "wind", 5, 3.0),
    ];
    client.publish_all(&second).await;
    let got = client.receive(second.len()).await;
    // The kept pipeline's actor went on; the rebuilt one read its state back from the store.
    assert_eq!(updates(&got, "out/temperature/a"), 6);
    assert_eq!(updates(&got, "out/humidity2/a"), 6);
    assert_eq!(updates(&got, "out/wind/a"), 1);

    let (status, metrics) = http_get(http_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"edgeflow_readings_total{pipeline="temperature"} 6"#),
        "the kept pipeline's counters continue:\n{metrics}"
    );
    assert!(metrics.contains(r#"edgeflow_readings_total{pipeline="humidity"} 1"#));
    assert!(!metrics.contains(r#"pipeline="pressure""#));
    // The removed pipeline's topics are unsubscribed: a pressure reading is not even
    // delivered (not counted as unknown_topic).
    client
        .publish_all(&[
            message("a", "pressure", 6, 1.0),
            message("a", "temperature", 6, 26.0),
        ])
        .await;
    let got = client.receive(1).await;
    assert_eq!(updates(&got, "out/temperature/a"), 7);
    let (_, metrics) = http_get(http_addr, "/metrics").await;
    assert!(
        metrics.contains("edgeflow_unknown_topic_messages_total 0"),
        "{metrics}"
    );

    // An invalid file is rejected with its located errors; the running config stays.
    std::fs::write(
        &path,
        config_text(port, &data, std::slice::from_ref(&temperature))
            .replace("kind = \"forecast\"", "kind = \"oracle\""),
    )
    .expect("rewrite config");
    hup(&daemon);
    let error = daemon.wait_for("edgeflow.toml:").await;
    assert!(error.contains("kind"), "{error}");
    daemon.wait_for("reload rejected").await;
    client.publish_all(&[message("a", "wind", 7, 4.0)]).await;
    let got = client.receive(1).await;
    assert_eq!(updates(&got, "out/wind/a"), 2);

    let status = daemon.sigterm();
    assert!(status.success(), "{status:?}");
}
