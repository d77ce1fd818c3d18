//! Memory stays bounded however many keys appear: with a resident budget far below the number
//! of keys, least recently used keys are passivated (state written back, actor stopped) and
//! re-activated from the store on their next reading — and the outputs are exactly those of an
//! uninterrupted replay, so no state is lost on the way. Idle keys are passivated too.

mod common;

use std::sync::atomic::Ordering;

use common::*;

const KEYS: usize = 12;
const BUDGET: usize = 4;
const STEPS: usize = 15;

fn budget_config(port: u16, data_dir: &std::path::Path, idle: &str) -> String {
    config_text("127.0.0.1", port, data_dir, "edgeflow-passivation").replace(
        "[runtime]\nshards = 2\n",
        &format!(
            "[runtime]\nshards = 1\nmax_resident_keys = {BUDGET}\nidle_timeout = \"{idle}\"\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_over_the_resident_budget_are_passivated_without_losing_state() {
    let port = edgeflow::mqtt::free_local_port().expect("free port");
    let _broker = edgeflow::mqtt::start_embedded(port, 1 << 20).expect("embedded broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let text = budget_config(port, &dir.path().join("data"), "1h");
    assert!(
        text.contains("max_resident_keys = 4"),
        "runtime section not patched:\n{text}"
    );
    let config = load(&write_config(dir.path(), &text));

    let mut client = TestClient::connect("127.0.0.1", port, "passivation-client").await;
    client.subscribe("edgeflow/#").await;
    let daemon = RunningDaemon::start(config.clone()).await;
    let input = readings(KEYS, 0, STEPS);
    client.publish_all(&input).await;
    let got = client.receive(input.len()).await;

    let engine = &daemon.handle.engine;
    let resident = engine.resident.load(Ordering::Relaxed);
    let passivated = engine.passivated.load(Ordering::Relaxed);
    let restored = engine.restored.load(Ordering::Relaxed);
    let engine_activated = engine.activated.load(Ordering::Relaxed);
    daemon.shutdown().await;

    assert!(
        resident <= BUDGET as u64,
        "{resident} resident keys over a budget of {BUDGET}"
    );
    let activated = engine_activated;
    // The broker may batch messages by topic, so how often a key is evicted depends on the
    // arrival order; at the least every key beyond the budget displaced one.
    assert!(passivated >= (KEYS - BUDGET) as u64, "only {passivated} passivations ({activated} activations, {restored} restored, {resident} resident)");
    assert!(
        restored > 0,
        "passivated keys must be re-activated from the store"
    );
    assert_eq!(
        got,
        replay_outputs(&config, &input),
        "passivation must not change any output"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keys_are_passivated() {
    let port = edgeflow::mqtt::free_local_port().expect("free port");
    let _broker = edgeflow::mqtt::start_embedded(port, 1 << 20).expect("embedded broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = load(&write_config(
        dir.path(),
        &budget_config(port, &dir.path().join("data"), "200ms"),
    ));
    let mut client = TestClient::connect("127.0.0.1", port, "idle-client").await;
    client.subscribe("edgeflow/#").await;
    let daemon = RunningDaemon::start(config).await;
    let input = readings(3, 0, 2);
    client.publish_all(&input).await;
    client.receive(input.len()).await;

    // The idle sweep runs on its own timer; wait (bounded) for it to empty the shard. The
    // resident gauge drops when a passivation starts, the counter moves when it has written.
    let engine = daemon.handle.engine.clone();
    tokio::time::timeout(EVENT_TIMEOUT, async {
        while engine.resident.load(Ordering::Relaxed) > 0
            || engine.passivated.load(Ordering::Relaxed) < 3
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("idle keys passivated in time");
    assert_eq!(engine.passivated.load(Ordering::Relaxed), 3);
    daemon.shutdown().await;
}
