//! The end-to-end restart test against a real Mosquitto broker.
//!
//! The broker address comes from `EDGEFLOW_TEST_MOSQUITTO` (`host:port`; `.ci/run` starts one).
//! Without it the test starts `mosquitto` itself on a free port if it is installed. With
//! `CI=true` an unreachable or missing broker fails the test instead of skipping it.

mod common;

use std::process::{Child, Command, Stdio};

use common::*;

const SENSORS: usize = 3;
const FIRST: usize = 20;
const SECOND: usize = 20;

struct OwnBroker(Child);

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The broker to test against, or None (skip) outside CI when there is none.
fn broker(dir: &std::path::Path) -> Option<(String, u16, Option<OwnBroker>)> {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if let Ok(addr) = std::env::var("EDGEFLOW_TEST_MOSQUITTO") {
        let (host, port) = addr
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("EDGEFLOW_TEST_MOSQUITTO={addr:?} is not host:port"));
        let port: u16 = port.parse().expect("port");
        if std::net::TcpStream::connect((host, port)).is_err() {
            assert!(
                !in_ci,
                "Mosquitto at {addr} is unreachable (CI=true: failing, not skipping)"
            );
            eprintln!("SKIP: Mosquitto at {addr} is unreachable");
            return None;
        }
        return Some((host.to_string(), port, None));
    }
    let port = edgeflow::mqtt::free_local_port().expect("free port");
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .expect("write mosquitto.conf");
    let child = match Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => OwnBroker(c),
        Err(e) => {
            assert!(
                !in_ci,
                "CI=true but no Mosquitto: set EDGEFLOW_TEST_MOSQUITTO or install mosquitto ({e})"
            );
            eprintln!("SKIP: no EDGEFLOW_TEST_MOSQUITTO and no mosquitto binary ({e}); apt-get install mosquitto to run this test");
            return None;
        }
    };
    // Wait for the listener (bounded): connection refused until mosquitto has bound the port.
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(("127.0.0.1".into(), port, Some(child)));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("mosquitto did not start listening on {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_end_to_end_restart_resumes_every_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((host, port, _own)) = broker(dir.path()) else {
        return;
    };
    let config = load(&write_config(
        dir.path(),
        &config_text(
            &host,
            port,
            &dir.path().join("data"),
            &format!("edgeflow-mosq-{}", std::process::id()),
        ),
    ));
    let mut client =
        TestClient::connect(&host, port, &format!("mosq-test-{}", std::process::id())).await;
    client.subscribe("edgeflow/temperature/#").await;

    let daemon = RunningDaemon::start(config.clone()).await;
    let first = readings(SENSORS, 0, FIRST);
    client.publish_all(&first).await;
    let mut got = client.receive(first.len()).await;
    daemon.shutdown().await;

    let daemon = RunningDaemon::start(config.clone()).await;
    let second = readings(SENSORS, FIRST, FIRST + SECOND);
    client.publish_all(&second).await;
    for (topic, msgs) in client.receive(second.len()).await {
        assert_eq!(msgs[0]["updates"], serde_json::json!(FIRST + 1), "{topic}");
        got.entry(topic).or_default().extend(msgs);
    }
    daemon.shutdown().await;

    let all: Vec<_> = first.iter().chain(second.iter()).cloned().collect();
    assert_eq!(got, replay_outputs(&config, &all));
}
