//! End to end through the `edgeflow` binary: readings in, forecasts out, then SIGKILL. The
//! store must open afterwards and hold each key's state as of its last checkpoint (checked
//! against the outputs the daemon published), and a restarted binary continues from it.

mod common;

use std::process::Command;

use common::*;

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
