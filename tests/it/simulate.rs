//! `edgeflow simulate` publishes the synthetic fleet to a broker: the requested number of
//! readings, round robin over the sensors, as `{"ts":…,"value":…}` JSON.

use std::process::Command;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_publishes_the_requested_fleet() {
    let port = edgeflow::mqtt::free_local_port().expect("free port");
    let _broker = edgeflow::mqtt::start_embedded(port, 1 << 20).expect("embedded broker");
    let mut client = TestClient::connect("127.0.0.1", port, "simulate-client").await;
    client.subscribe("sensors/#").await;

    let binary = env!("CARGO_BIN_EXE_edgeflow");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(binary)
            .args([
                "simulate",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .args(["--sensors", "3", "--rate", "500", "--count", "30"])
            .output()
            .expect("run simulate")
    })
    .await
    .expect("join");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour codes when stderr is not a terminal:\n{stderr}"
    );

    let got = client.receive(30).await;
    assert_eq!(got.len(), 3, "three sensors: {:?}", got.keys());
    for (topic, messages) in &got {
        assert!(
            topic.starts_with("sensors/s") && topic.ends_with("/temperature"),
            "{topic}"
        );
        assert_eq!(messages.len(), 10, "{topic}");
        for m in messages {
            assert!(m["ts"].is_i64() && m["value"].is_f64(), "{m}");
        }
    }
}
