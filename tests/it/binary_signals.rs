//! The binary against an unreachable broker: it says so and keeps retrying with back-off, and
//! SIGTERM still stops it gracefully with exit status 0.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_is_retried_and_sigterm_exits_cleanly() {
    // A port nothing listens on.
    let port = edgeflow::mqtt::free_local_port().expect("free port");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &config_text(
            "127.0.0.1",
            port,
            &dir.path().join("data"),
            "edgeflow-unreachable",
        ),
    );
    let mut daemon = BinaryDaemon::spawn(&config);
    let first = daemon.wait_for("cannot reach MQTT broker").await;
    assert!(first.contains(&format!("127.0.0.1:{port}")), "{first}");
    assert!(first.contains("retrying in"), "{first}");
    // It keeps trying (a second attempt is logged too).
    daemon.wait_for("cannot reach MQTT broker").await;

    let status = daemon.sigterm();
    assert!(status.success(), "SIGTERM must exit 0, got {status:?}");
    let lines = daemon.remaining_lines();
    assert!(
        lines.iter().any(|l| l.contains("SIGTERM received")),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.contains("stopped")), "{lines:#?}");
}
