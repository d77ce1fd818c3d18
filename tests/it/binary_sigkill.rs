//! End to end through the `edgeflow` binary: readings in, forecasts out, then SIGKILL. The
//! store must open afterwards and hold each key's state as of its last checkpoint (checked
//! against the outputs the daemon published), and a restarted binary continues from it.

use std::process::Command;

use crate::common::*;

const SENSORS: usize = 4;
const STEPS: usize = 20;

fn inspect(config: &std::path::Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_edgeflow"))
        .args(["inspect", "--config"])
        .arg(config)
        .output()
        .expect("run inspect");
    assert!(
        out.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("inspect line is JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_keeps_the_last_checkpoint_and_restart_resumes() {
    let port = edgeflow::mqtt::free_local_port().expect("free port");
    let _broker = edgeflow::mqtt::start_embedded(port, 1 << 20).expect("embedded broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &config_text(
            "127.0.0.1",
            port,
            &dir.path().join("data"),
            "edgeflow-sigkill",
        ),
    );
    let mut client = TestClient::connect("127.0.0.1", port, "sigkill-test-client").await;
    client.subscribe("edgeflow/#").await;

    let mut daemon = BinaryDaemon::spawn(&config);
    daemon.wait_for("subscribed").await;
    let first = readings(SENSORS, 0, STEPS);
    client.publish_all(&first).await;
    let outputs = client.receive(first.len()).await;
    // Two checkpoints after the last output arrived: the last state is very likely on disk,
    // but the assertions below hold for whichever checkpoint was the last.
    daemon.wait_for("checkpoint done").await;
    daemon.wait_for("checkpoint done").await;
    daemon.sigkill();

    let states = inspect(&config);
    assert_eq!(states.len(), SENSORS, "one state per key: {states:?}");
    let mut resume_from = Vec::new();
    for state in &states {
        let key = state["key"].as_str().expect("key");
        let updates = state["updates"].as_u64().expect("updates");
        assert!(
            updates >= 1,
            "{key}: a checkpoint after its first reading must be stored"
        );
        let topic = format!("edgeflow/temperature/{key}/temp/forecast");
        // The published message with the same update count carries the same model state.
        let published = outputs[&topic]
            .iter()
            .find(|m| m["updates"].as_u64() == Some(updates))
            .unwrap_or_else(|| panic!("{key}: no output with updates = {updates}"));
        for field in ["forecast", "lower", "upper", "mae", "rmse"] {
            assert_eq!(
                state[field], published[field],
                "{key}: stored {field} differs from the published one"
            );
        }
        assert_eq!(state["last_time"], published["time"], "{key}");
        resume_from.push((key.to_string(), updates));
    }

    // A restarted binary continues from the stored state.
    let mut daemon = BinaryDaemon::spawn(&config);
    daemon.wait_for("subscribed").await;
    let more = readings(SENSORS, STEPS, STEPS + 1);
    client.publish_all(&more).await;
    let after = client.receive(more.len()).await;
    for (key, updates) in resume_from {
        let topic = format!("edgeflow/temperature/{key}/temp/forecast");
        assert_eq!(
            after[&topic][0]["updates"].as_u64(),
            Some(updates + 1),
            "{key}"
        );
    }
    daemon.sigkill();
}

#[test]
fn second_daemon_on_a_locked_data_dir_exits_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &config_text("127.0.0.1", 1, &dir.path().join("data"), "edgeflow-locked"),
    );
    let _held =
        edgeflow::store::Store::open(&dir.path().join("data"), 1 << 20).expect("open store");
    let out = Command::new(env!("CARGO_BIN_EXE_edgeflow"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("locked by another edgeflow process"),
        "{stderr}"
    );
}

/// Keys of the churn test: many more than `max_resident_keys`, so nearly every reading
/// activates its key from the store and passivates another one.
const CHURN_KEYS: usize = 3000;

/// The sample `series` of the daemon's `/metrics` now.
async fn metric(addr: std::net::SocketAddr, series: &str) -> f64 {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    sample(&body, series)
}

/// Wait until the metric `series` is at least `at_least` (polled: the daemon's own counters
/// are the event).
async fn metric_reaches(addr: std::net::SocketAddr, series: &str, at_least: f64) -> f64 {
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let v = metric(addr, series).await;
        if v >= at_least {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{series} stayed at {v} (waited for {at_least})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_key_churn_keeps_every_key_checkpointed_before_it() {
    let port = edgeflow::mqtt::free_local_port().expect("free port");
    let _broker = edgeflow::mqtt::start_embedded(port, 1 << 20).expect("embedded broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_text(
        "127.0.0.1",
        port,
        &dir.path().join("data"),
        "edgeflow-churn-kill",
    )
    .replace("shards = 2", "shards = 2\nmax_resident_keys = 64");
    let config = write_config(dir.path(), &text);
    let mut client = TestClient::connect("127.0.0.1", port, "churn-kill-client").await;
    client.subscribe("edgeflow/#").await;

    let mut daemon = BinaryDaemon::spawn(&config);
    let http = daemon.http_address().await;
    daemon.wait_for("subscribed").await;

    // Phase 1: two readings per key, interleaved step by step, so each key is passivated
    // (written back) between its readings and activated again from the store.
    let old = readings(CHURN_KEYS, 0, 2);
    client.publish_all(&old).await;
    client.receive(old.len()).await;
    // Every output of phase 1 has been published, so its readings were handled. A checkpoint
    // that *started* after that covers them: the one completing after the one in progress.
    let done = metric(http, "edgeflow_checkpoints_total").await;
    metric_reaches(http, "edgeflow_checkpoints_total", done + 2.0).await;
    // Nothing is waiting for write-back any more, and the gauges say so.
    assert_eq!(metric(http, "edgeflow_keys_dirty").await, 0.0);
    assert_eq!(metric(http, "edgeflow_store_unflushed_states").await, 0.0);
    assert!(metric(http, "edgeflow_checkpoint_lag_seconds_count").await >= 2.0);
    let passivated = metric(http, "edgeflow_keys_passivated_total").await;
    assert!(
        passivated >= (2 * CHURN_KEYS - 2 * 64) as f64,
        "the churn must passivate keys between their readings (passivated {passivated})"
    );

    // Phase 2: new keys, killed while they are being learnt (not waited for).
    let fresh: Vec<(String, String)> = (0..CHURN_KEYS)
        .map(|s| reading(CHURN_KEYS + s, 0))
        .collect();
    client.publish_all(&fresh).await;
    daemon.sigkill();

    let states = inspect(&config);
    let mut updates = std::collections::BTreeMap::new();
    for state in &states {
        let key = state["key"].as_str().expect("key").to_string();
        assert!(state.get("error").is_none(), "corrupt state: {state}");
        updates.insert(key, state["updates"].as_u64().expect("updates"));
    }
    let missing: Vec<String> = (0..CHURN_KEYS)
        .map(|s| format!("s{s:02}"))
        .filter(|k| updates.get(k) != Some(&2))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {CHURN_KEYS} keys checkpointed before the kill are missing or behind, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // A key of phase 2 is stored with its one reading, or not at all.
    for s in CHURN_KEYS..2 * CHURN_KEYS {
        if let Some(&u) = updates.get(&format!("s{s:02}")) {
            assert_eq!(u, 1, "s{s:02}");
        }
    }
}

/// A TCP relay between the daemon and the broker whose daemon → broker direction can be
/// frozen: it stops reading what the daemon sends but keeps the connection open, like a hung
/// broker or a dead link without a reset. The daemon still receives, but its outputs back up.
struct FreezableRelay {
    port: u16,
    freeze: tokio_util::sync::CancellationToken,
}

impl FreezableRelay {
    async fn start(broker_port: u16) -> FreezableRelay {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        // Small buffers on the relay's side, so a backlog shows after a few KB.
        socket.set_recv_buffer_size(4096).expect("rcvbuf");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let listener = socket.listen(16).expect("listen");
        let port = listener.local_addr().expect("addr").port();
        let freeze = tokio_util::sync::CancellationToken::new();
        let frozen = freeze.clone();
        tokio::spawn(async move {
            while let Ok((daemon_side, _)) = listener.accept().await {
                let Ok(broker_side) =
                    tokio::net::TcpStream::connect(("127.0.0.1", broker_port)).await
                else {
                    continue;
                };
                let (mut from_daemon, mut to_daemon) = daemon_side.into_split();
                let (mut from_broker, mut to_broker) = broker_side.into_split();
                let frozen = frozen.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let n = tokio::select! {
                            () = frozen.cancelled() => {
                                // Hold the connection open, read nothing more.
                                std::future::pending::<()>().await;
                                return;
                            }
                            n = from_daemon.read(&mut buf) => n,
                        };
                        match n {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if to_broker.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_broker, &mut to_daemon).await;
                });
            }
        });
        FreezableRelay { port, freeze }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_an_output_backlog_exits_within_the_shutdown_deadline() {
    let port = edgeflow::mqtt::free_local_port().expect("free port");
    let _broker = edgeflow::mqtt::start_embedded(port, 1 << 20).expect("embedded broker");
    let relay = FreezableRelay::start(port).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let deadline = std::time::Duration::from_secs(2);
    let text = config_text(
        "127.0.0.1",
        relay.port,
        &dir.path().join("data"),
        "edgeflow-sigterm-backlog",
    )
    // Readings arrive at QoS 0 (the daemon owes the broker no acknowledgement for them), and
    // a small publish queue fills quickly once nothing leaves.
    .replace(
        "reconnect_min",
        "subscribe_qos = 0\npublish_queue = 64\nreconnect_min",
    );
    assert!(text.contains("shutdown_deadline = \"2s\""));
    let config = write_config(dir.path(), &text);
    let client = TestClient::connect("127.0.0.1", port, "sigterm-backlog-client").await;

    let mut daemon = BinaryDaemon::spawn(&config);
    let http = daemon.http_address().await;
    daemon.wait_for("subscribed").await;
    relay.freeze.cancel();
    // Until the publish queue is full and nothing leaves: outputs wait for room (the shards
    // are held back) or, once the keep-alive gave up on the frozen connection, are dropped.
    let mut step = 0;
    while metric(http, "edgeflow_mqtt_publish_waits_total").await
        + metric(http, "edgeflow_mqtt_publish_dropped_total").await
        < 1.0
    {
        client.publish_all(&readings(50, step, step + 20)).await;
        step += 20;
        assert!(step < 20_000, "no output backlog after {step} steps");
    }

    let sent = std::time::Instant::now();
    let status = daemon.sigterm();
    let took = sent.elapsed();
    assert!(status.code().is_some(), "killed by a signal: {status:?}");
    // The deadline is enforced by the daemon; the margin is for process start and reaping.
    assert!(
        took <= deadline + std::time::Duration::from_millis(750),
        "SIGTERM → exit took {took:?}, shutdown_deadline is {deadline:?}"
    );
    let lines = daemon.remaining_lines();
    assert!(
        lines.iter().any(|l| l.contains("final checkpoint done")),
        "the final checkpoint must run before the deadline: {lines:?}"
    );
    // The backlog was real: sending the queued outputs was cut off by the deadline.
    assert!(
        lines.iter().any(|l| l.contains("did not finish within")),
        "the queued outputs could not be sent, the disconnect must have hit the deadline: {lines:?}"
    );
}
