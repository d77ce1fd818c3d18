//! Device classification (`[[classifiers]]`, `configs/classifier.toml`): machines in three
//! behaviour groups are classified by their profiles in `replay` (event-time intervals) and in
//! the daemon over MQTT (classes retained, kept across a restart).

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;
use edgeflow::actors::classifier::ClassifyNow;
use edgeflow::model::{adjusted_rand_index, SplitMix64};

/// An interval boundary (a multiple of 5 minutes), so the intervals are easy to count.
const T0: i64 = 1_700_000_100_000;
const STEP_MS: i64 = 10_000;

fn example() -> edgeflow::config::Config {
    load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs/classifier.toml"
    )))
}

/// Machine `m`'s behaviour group (its true class).
fn group(m: usize) -> usize {
    m % 3
}

/// `(topic, payload)` of every machine's readings for steps `from..to`, interleaved; machine
/// `m` behaves like group `behaviour(m)`.
fn readings(
    machines: usize,
    from: usize,
    to: usize,
    behaviour: impl Fn(usize) -> usize,
    rng: &mut SplitMix64,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for step in from..to {
        for m in 0..machines {
            let g = behaviour(m) as f64;
            // idle: ~10 kW, calm; normal: ~50 kW; heavy: ~90 kW, shaking.
            let power = 10.0 + 40.0 * g + (1.0 + 2.0 * g) * rng.normal();
            let vibration = 0.5 + 2.0 * g + 0.2 * rng.normal();
            out.push((
                format!("factory/m{m:02}/machine"),
                format!(
                    "{{\"ts\":{},\"power\":{power:.3},\"vibration\":{vibration:.3}}}",
                    T0 + step as i64 * STEP_MS
                ),
            ));
        }
    }
    out
}

/// The class messages among `(topic, payload)` outputs: per machine, its classes in order.
fn classes(outputs: &[(String, serde_json::Value)]) -> BTreeMap<String, Vec<u64>> {
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (topic, payload) in outputs {
        if let Some(key) = topic.strip_prefix("edgeflow/classes/machine-modes/") {
            by_key
                .entry(key.to_string())
                .or_default()
                .push(payload["class"].as_u64().expect("class"));
        }
    }
    by_key
}

fn ari(classes: &BTreeMap<String, Vec<u64>>, truth: impl Fn(usize) -> usize) -> f64 {
    let (mut t, mut p) = (Vec::new(), Vec::new());
    for (key, list) in classes {
        let m: usize = key.trim_start_matches('m').parse().expect("machine number");
        t.push(truth(m));
        p.push(*list.last().expect("a class") as u32);
    }
    adjusted_rand_index(&t, &p)
}

fn replay(
    config: &edgeflow::config::Config,
    input: &[(String, String)],
) -> Vec<(String, serde_json::Value)> {
    let mut replayer = edgeflow::replay::Replayer::new(config).expect("replayer");
    let mut out = Vec::new();
    replayer
        .run(replay_input(input).as_bytes(), &mut out)
        .expect("replay");
    let summary = replayer.summary();
    assert_eq!(summary.classifiers.len(), 1);
    String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            (
                v["topic"].as_str().expect("topic").to_string(),
                v["payload"].clone(),
            )
        })
        .collect()
}

#[test]
fn replay_classifies_machines_by_their_behaviour_and_follows_a_change() {
    let config = example();
    let mut rng = SplitMix64::new(11);
    // 30 minutes (6 intervals of 5 minutes) of 24 machines, then 10 minutes in which the
    // idle machines (group 0) run like the heavy ones (group 2).
    let mut input = readings(24, 0, 180, group, &mut rng);
    input.extend(readings(
        24,
        180,
        240,
        |m| if group(m) == 0 { 2 } else { group(m) },
        &mut rng,
    ));
    let outputs = replay(&config, &input);

    let by_key = classes(&outputs);
    assert_eq!(by_key.len(), 24, "every machine is classified");
    // Before the change: the first class of every machine is its group (ARI on first classes).
    let first: BTreeMap<String, Vec<u64>> = by_key
        .iter()
        .map(|(k, v)| (k.clone(), vec![v[0]]))
        .collect();
    assert_eq!(ari(&first, group), 1.0);
    // Stable behaviour publishes nothing more: machines of groups 1 and 2 have one message.
    for (key, list) in &by_key {
        let m: usize = key.trim_start_matches('m').parse().expect("number");
        if group(m) != 0 {
            assert_eq!(list.len(), 1, "{key}: {list:?}");
        } else {
            assert_eq!(list.len(), 2, "{key} changed once: {list:?}");
        }
    }
    // After the change the former idle machines are in the heavy machines' class.
    let heavy_class = by_key["m02"][0];
    for m in (0..24).filter(|&m| group(m) == 0) {
        assert_eq!(by_key[&format!("m{m:02}")][1], heavy_class, "machine {m}");
    }
    // One centres message per update: 8 interval ends (5 min … 35 min) and the final one.
    let centres = outputs
        .iter()
        .filter(|(topic, _)| topic == "edgeflow/classes/machine-modes")
        .count();
    assert_eq!(centres, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_classifies_over_mqtt_and_keeps_its_classes_across_a_restart() {
    let port = edgeflow::mqtt::free_local_port().expect("free port");
    let _broker = edgeflow::mqtt::start_embedded(port, 1 << 20).expect("embedded broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = example();
    config.mqtt.port = port;
    config.store.data_dir = dir.path().join("data");
    config.http.listen = "127.0.0.1:0".parse().expect("address");
    // The test triggers each update itself (ClassifyNow): the timer must not interfere.
    config.classifiers[0].interval = std::time::Duration::from_secs(3600);
    let mut rng = SplitMix64::new(5);
    let machines = 24;

    let mut client = TestClient::connect("127.0.0.1", port, "classifier-client").await;
    client.subscribe("edgeflow/#").await;
    let daemon = RunningDaemon::start(config.clone()).await;
    let input = readings(machines, 0, 30, group, &mut rng);
    client.publish_all(&input).await;
    client.receive(input.len()).await; // every reading processed (one forecast each)
    let profiled = daemon.handle.classifiers[0]
        .send(ClassifyNow)
        .await
        .expect("classifier answers");
    assert_eq!(profiled, machines);
    let got = client.receive(machines + 1).await;
    let outputs: Vec<(String, serde_json::Value)> = got
        .into_iter()
        .flat_map(|(topic, list)| list.into_iter().map(move |v| (topic.clone(), v)))
        .collect();
    let by_key = classes(&outputs);
    assert_eq!(by_key.len(), machines);
    assert_eq!(ari(&by_key, group), 1.0);
    let ids_before = outputs
        .iter()
        .find(|(t, _)| t == "edgeflow/classes/machine-modes")
        .map(|(_, c)| c["classes"].clone())
        .expect("centres message");

    // Retained: a client that connects now still gets every machine's class.
    let mut late = TestClient::connect("127.0.0.1", port, "classifier-late").await;
    late.subscribe("edgeflow/classes/#").await;
    let retained = late.receive(machines + 1).await;
    assert_eq!(retained.len(), machines + 1);
    drop(late);
    daemon.shutdown().await;

    // After a restart the model, its ids and the classes come back from the store: the same
    // behaviour changes no class, so only the centres are published.
    let daemon = RunningDaemon::start(config).await;
    let input = readings(machines, 30, 60, group, &mut rng);
    client.publish_all(&input).await;
    client.receive(input.len()).await;
    let profiled = daemon.handle.classifiers[0]
        .send(ClassifyNow)
        .await
        .expect("classifier answers");
    assert_eq!(profiled, machines);
    let got = client.receive(1).await;
    let centres = &got
        .get("edgeflow/classes/machine-modes")
        .unwrap_or_else(|| panic!("{got:?}"))[0];
    let ids = |classes: &serde_json::Value| -> Vec<u64> {
        classes
            .as_array()
            .expect("classes")
            .iter()
            .map(|c| c["class"].as_u64().expect("id"))
            .collect()
    };
    assert_eq!(ids(&centres["classes"]), ids(&ids_before));
    assert_eq!(centres["keys"], machines as u64);
    daemon.shutdown().await;
}
