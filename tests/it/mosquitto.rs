//! The end-to-end restart test against a real Mosquitto broker.
//!
//! The broker address comes from `EDGEFLOW_TEST_MOSQUITTO` (`host:port`; `.ci/run` starts one).
//! Without it the test starts `mosquitto` itself on a free port if it is installed. With
//! `CI=true` an unreachable or missing broker fails the test instead of skipping it.

use rumqttc::QoS;
use std::process::{Child, Command, Stdio};

use crate::common::*;

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

/// `config_text` for a test of its own on a shared broker: client id `{name}-{pid}`, input
/// topics `{name}{pid}/+/temperature` and outputs under `{name}{pid}/out/` (a shared CI broker
/// keeps retained messages between tests, and other tests publish under `edgeflow/`).
fn own_config_text(host: &str, port: u16, data_dir: &std::path::Path, name: &str) -> String {
    let id = std::process::id();
    config_text(host, port, data_dir, &format!("{name}-{id}"))
        .replace(
            "sensors/+/temperature",
            &format!("{name}{id}/+/temperature"),
        )
        .replace(
            "output = \"edgeflow/",
            &format!("output = \"{name}{id}/out/"),
        )
}

/// A `readings` topic moved to the topics of [`own_config_text`].
fn own_topic(topic: &str, name: &str) -> String {
    topic.replace("sensors/", &format!("{name}{}/", std::process::id()))
}

/// The value of the first `/metrics` sample whose line starts with `prefix` (name and labels).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {prefix} in\n{text}"))
}

/// Hostile input costs one counted drop per message and nothing else: a retained 1 MB message
/// on a subscribed topic (delivered at the subscription), a 300 KB message between readings,
/// and keys with control characters, noncharacters, wildcards or 2,000 bytes. The connection
/// never drops, every good reading is processed exactly as a replay of the good readings
/// alone, and each bad message is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_cost_one_counted_drop_each_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((host, port, _own)) = broker(dir.path()) else {
        return;
    };
    let id = std::process::id();
    // The default session at QoS 1 (persistent, manual acks): the oversize messages are
    // acknowledged in their turn, through the ingest queue, and routed nowhere.
    let text = own_config_text(&host, port, &dir.path().join("data"), "hostile")
        .replace("clean_session = true\n", "subscribe_qos = 1\n")
        + &format!(
            r#"
[[pipelines]]
name = "plant"
topics = ["hostile{id}/plant"]
format = "json"
key = "/sensor"
time = "/ts"
time_unit = "ms"
fields = {{ temp = "/value" }}
output = "hostile{id}/out/{{pipeline}}/{{key}}/{{field}}/forecast"
output_qos = 1

[pipelines.model]
kind = "forecast"
target = "temp"
"#
        );
    let config = load(&write_config(dir.path(), &text));
    let mut client = TestClient::connect(&host, port, &format!("hostile-test-{id}")).await;
    client.subscribe(&format!("hostile{id}/out/#")).await;
    let retained_topic = format!("hostile{id}/big/temperature");
    client
        .client
        .publish(
            &retained_topic,
            QoS::AtLeastOnce,
            true,
            vec![b'x'; 1_000_000],
        )
        .await
        .expect("publish retained");

    let daemon = RunningDaemon::start(config.clone()).await;
    let good: Vec<(String, String)> = readings(SENSORS, 0, 20)
        .into_iter()
        .map(|(t, p)| (own_topic(&t, "hostile"), p))
        .collect();
    let hostile_keys = [
        "a\u{1}b".to_string(),
        "a\tb".into(),
        "a\nb".into(),
        "a\u{1b}b".into(),
        "a\u{7f}b".into(),
        "a\u{85}b".into(),
        "a\u{fffe}b".into(),
        "a\u{ffff}b".into(),
        "a+b".into(),
        "a#b".into(),
        "k".repeat(2_000),
    ];
    let plant = format!("hostile{id}/plant");
    let mut good_plant = Vec::new();
    for (i, (topic, payload)) in good.iter().enumerate() {
        client
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload.clone().into_bytes())
            .await
            .expect("publish");
        if i == good.len() / 2 {
            client
                .client
                .publish(&good[0].0, QoS::AtLeastOnce, false, vec![b'{'; 300_000])
                .await
                .expect("publish large");
        }
        if let Some(key) = hostile_keys.get(i) {
            let payload = serde_json::json!({"sensor": key, "ts": 1_700_000_000_000i64 + i as i64, "value": 1.0});
            client
                .client
                .publish(
                    &plant,
                    QoS::AtLeastOnce,
                    false,
                    payload.to_string().into_bytes(),
                )
                .await
                .expect("publish hostile");
        }
        let payload = format!(
            "{{\"sensor\":\"p1\",\"ts\":{},\"value\":{}}}",
            1_700_000_000_000i64 + i as i64 * 1000,
            20.0 + (i % 5) as f64
        );
        good_plant.push((plant.clone(), payload.clone()));
        client
            .client
            .publish(&plant, QoS::AtLeastOnce, false, payload.into_bytes())
            .await
            .expect("publish good plant");
    }
    let got = client.receive(good.len() + good_plant.len()).await;

    let addr = daemon.handle.http.expect("http listener");
    let (status, metrics) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        metric(&metrics, "edgeflow_mqtt_oversize_dropped_total"),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "edgeflow_decode_errors_total{pipeline=\"plant\",reason=\"bad_key\"}"
        ),
        hostile_keys.len() as f64
    );
    assert_eq!(
        metric(&metrics, "edgeflow_mqtt_reconnects_total"),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "edgeflow_unknown_topic_messages_total"),
        0.0,
        "{metrics}"
    );
    daemon.shutdown().await;
    client
        .client
        .publish(&retained_topic, QoS::AtLeastOnce, true, Vec::new())
        .await
        .expect("clear retained");

    let all: Vec<_> = good.iter().chain(good_plant.iter()).cloned().collect();
    assert_eq!(got, replay_outputs(&config, &all));
}

/// Bursts many times `publish_queue` at QoS 1 in and out: the shards wait for room in the
/// publish queue (outputs have a connection of their own, so nothing waits in a cycle), the
/// ingest path waits, the broker holds the readings, and every output arrives, in order per
/// key. Before outputs had their own connection, a full publish queue dropped outputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_publish_queue_loses_no_output_at_qos_1() {
    const KEYS: usize = 200;
    const STEPS: usize = 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((host, port, _own)) = broker(dir.path()) else {
        return;
    };
    let id = std::process::id();
    let text = own_config_text(&host, port, &dir.path().join("data"), "burst")
        // Mosquitto: the default (a persistent session at QoS 1), tiny queues.
        .replace("clean_session = true\n", "")
        .replace(
            "reconnect_min",
            "publish_queue = 8\ningest_queue = 16\nreconnect_min",
        );
    assert!(text.contains("publish_queue = 8") && !text.contains("clean_session = true"));
    let config = load(&write_config(dir.path(), &text));
    let daemon = RunningDaemon::start(config.clone()).await;
    let mut client = TestClient::connect(&host, port, &format!("burst-test-{id}")).await;
    client.subscribe(&format!("burst{id}/out/#")).await;
    let burst: Vec<(String, String)> = readings(KEYS, 0, STEPS)
        .into_iter()
        .map(|(t, p)| (own_topic(&t, "burst"), p))
        .collect();
    assert_eq!(burst.len(), KEYS * STEPS);
    // Waves of 500: far beyond the queues (24 messages), within what Mosquitto queues per
    // client by default (`max_queued_messages` 1000: beyond it the broker itself drops, for
    // the daemon's session as for this client's).
    let mut got: std::collections::BTreeMap<String, Vec<serde_json::Value>> = Default::default();
    for wave in burst.chunks(500) {
        client.publish_all(wave).await;
        for (topic, outputs) in client.receive(wave.len()).await {
            got.entry(topic).or_default().extend(outputs);
        }
    }
    assert_eq!(got.len(), KEYS, "one output topic per key");
    for (topic, outputs) in &got {
        assert_eq!(outputs.len(), STEPS, "{topic}");
    }
    // Exactly what a replay of the burst gives: nothing lost, nothing reordered per key.
    assert_eq!(got, replay_outputs(&config, &burst));

    let addr = daemon.handle.http.expect("http listener");
    let (status, metrics) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        metric(&metrics, "edgeflow_mqtt_publish_dropped_total"),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "edgeflow_mqtt_ingest_dropped_total"),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "edgeflow_mqtt_output_connected"),
        1.0,
        "{metrics}"
    );
    daemon.shutdown().await;
}

/// Two daemons in one shared-subscription group (`$share/{group}/{filter}`, issue 13 point 1,
/// issue 14 point 1): the filter is subscribed as written, Mosquitto spreads the readings over
/// the group (round robin), and each daemon matches them against the filter without its
/// prefix. Every reading is processed once, by one of them, and none is dropped as an unknown
/// topic. Before, the pipelines matched `$share/…` literally and dropped every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_in_one_share_group_each_process_a_part_and_none_is_unknown() {
    const SHARE_SENSORS: usize = 10;
    const STEPS: usize = 30;
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((host, port, _own)) = broker(dir.path()) else {
        return;
    };
    let id = std::process::id();
    let configs: Vec<_> = (0..2)
        .map(|i| {
            let data = dir.path().join(format!("data{i}"));
            let text = own_config_text(&host, port, &data, "share")
                .replace(
                    &format!("client_id = \"share-{id}\""),
                    &format!("client_id = \"share-{id}-{i}\""),
                )
                .replace(
                    &format!("\"share{id}/+/temperature\""),
                    &format!("\"$share/g{id}/share{id}/+/temperature\""),
                );
            let own = dir.path().join(format!("daemon{i}"));
            std::fs::create_dir_all(&own).expect("config dir");
            load(&write_config(&own, &text))
        })
        .collect();
    assert_eq!(
        configs[0].pipelines[0].topics[0].share_group(),
        Some(format!("g{id}").as_str())
    );
    let mut client = TestClient::connect(&host, port, &format!("share-test-{id}")).await;
    client.subscribe(&format!("share{id}/out/#")).await;
    let mut daemons = Vec::new();
    for config in &configs {
        daemons.push(RunningDaemon::start(config.clone()).await);
    }

    let sent: Vec<(String, String)> = readings(SHARE_SENSORS, 0, STEPS)
        .into_iter()
        .map(|(t, p)| (own_topic(&t, "share"), p))
        .collect();
    client.publish_all(&sent).await;
    let got = client.receive(sent.len()).await;
    assert_eq!(got.values().map(Vec::len).sum::<usize>(), sent.len());

    let mut processed = Vec::new();
    for daemon in &daemons {
        let addr = daemon.handle.http.expect("http listener");
        let (status, metrics) = http_get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert_eq!(
            metric(&metrics, "edgeflow_unknown_topic_messages_total"),
            0.0,
            "{metrics}"
        );
        processed.push(metric(
            &metrics,
            "edgeflow_readings_total{pipeline=\"temperature\"}",
        ));
    }
    assert_eq!(
        processed.iter().sum::<f64>(),
        sent.len() as f64,
        "{processed:?}"
    );
    assert!(processed.iter().all(|&n| n > 0.0), "{processed:?}");
    for daemon in daemons {
        daemon.shutdown().await;
    }
}
