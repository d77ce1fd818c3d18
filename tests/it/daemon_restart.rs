//! End to end, in-process: an embedded broker on a free port, the daemon in its own actix
//! System, readings published by an ordinary MQTT client, forecasts received; then a graceful
//! shutdown and a restart on the same data dir, after which every key's model resumes exactly:
//! the outputs of the two runs together equal those of an uninterrupted replay.

use crate::common::*;

const SENSORS: usize = 5;
const FIRST: usize = 30;
const SECOND: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_resumes_every_model_exactly() {
    let port = edgeflow::mqtt::free_local_port().expect("free port");
    let _broker = edgeflow::mqtt::start_embedded(port, 1 << 20).expect("embedded broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = load(&write_config(
        dir.path(),
        &config_text(
            "127.0.0.1",
            port,
            &dir.path().join("data"),
            "edgeflow-restart",
        ),
    ));

    let mut client = TestClient::connect("127.0.0.1", port, "restart-test-client").await;
    client.subscribe("edgeflow/#").await;

    // First run.
    let daemon = RunningDaemon::start(config.clone()).await;
    let first = readings(SENSORS, 0, FIRST);
    client.publish_all(&first).await;
    let mut got = client.receive(first.len()).await;
    let report = daemon.shutdown().await;
    assert_eq!(report.failed, 0);

    // Second run on the same data dir.
    let daemon = RunningDaemon::start(config.clone()).await;
    let second = readings(SENSORS, FIRST, FIRST + SECOND);
    client.publish_all(&second).await;
    let got_second = client.receive(second.len()).await;
    let restored = daemon
        .handle
        .engine
        .restored
        .load(std::sync::atomic::Ordering::Relaxed);
    daemon.shutdown().await;
    assert_eq!(
        restored, SENSORS as u64,
        "every key must be loaded from the store"
    );

    for (topic, msgs) in got_second {
        // The update count continues where the first run stopped.
        assert_eq!(msgs[0]["updates"], serde_json::json!(FIRST + 1), "{topic}");
        got.entry(topic).or_default().extend(msgs);
    }

    let all: Vec<_> = first.iter().chain(second.iter()).cloned().collect();
    let expected = replay_outputs(&config, &all);
    assert_eq!(got.len(), SENSORS);
    assert_eq!(
        got, expected,
        "restarted daemon must match an uninterrupted run"
    );
}

/// With the broker unreachable, a graceful shutdown does not wait for it: nothing can be sent,
/// so it ends at once instead of after `shutdown_deadline` (one hour here, far beyond the
/// test's timeout: a shutdown that waited would fail it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_the_broker_down_does_not_wait_for_the_deadline() {
    // A port no broker listens on: every connection attempt is refused.
    let port = edgeflow::mqtt::free_local_port().expect("free port");
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_text("127.0.0.1", port, &dir.path().join("data"), "down-test")
        .replace("shutdown_deadline = \"2s\"", "shutdown_deadline = \"1h\"");
    let daemon = RunningDaemon::start_connecting(load(&write_config(dir.path(), &text))).await;
    tokio::time::timeout(EVENT_TIMEOUT, daemon.shutdown())
        .await
        .expect("shutdown returned before the one-hour deadline");
}
