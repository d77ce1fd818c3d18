//! The README's run command: `configs/demo.toml` (embedded broker + simulated fleet) shows
//! forecasts flowing — the stats line and the demo monitor's received messages — and stops
//! cleanly on SIGTERM. Run here on a free port and a temporary data dir.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_config_shows_forecasts_flowing() {
    let demo = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/demo.toml"))
        .expect("demo.toml");
    let port = edgeflow::mqtt::free_local_port().expect("free port");
    let dir = tempfile::tempdir().expect("tempdir");
    let patched = demo
        .replace("port = 1883", &format!("port = {port}"))
        .replace(
            "data_dir = \"data/demo\"",
            &format!("data_dir = \"{}\"", dir.path().join("data").display()),
        )
        .replace("stats_interval = \"5s\"", "stats_interval = \"500ms\"")
        .replace("listen = \"127.0.0.1:9883\"", "listen = \"127.0.0.1:0\"");
    assert_ne!(patched, demo);
    assert!(
        patched.contains(&format!("port = {port}")),
        "demo.toml changed shape: update this test"
    );
    let config = write_config(dir.path(), &patched);

    let mut daemon = BinaryDaemon::spawn(&config);
    let stats = daemon.wait_for("pipeline temperature: keys=").await;
    assert!(stats.contains("readings/s="), "{stats}");
    let monitor = loop {
        let line = daemon.wait_for("demo monitor:").await;
        if line.contains("\"forecast\":") {
            break line;
        }
    };
    assert!(monitor.contains("edgeflow/temperature/s0"), "{monitor}");
    let status = daemon.sigterm();
    assert!(status.success(), "{status:?}");
}
