//! Memory stays bounded however many keys appear: with a resident budget far below the number
//! of keys, least recently used keys are passivated (state written back, actor stopped) and
//! re-activated from the store on their next reading — and the outputs are exactly those of an
//! uninterrupted replay, so no state is lost on the way. Idle keys are passivated too.

use std::sync::atomic::Ordering;

use crate::common::*;

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

/// Through the binary (the counting allocator is installed there): many more keys than a
/// small `max_memory` holds. Every reading is processed (QoS 1, nothing dropped), keys are
/// passivated for memory, and the heap stays within the budget's high mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_keeps_its_heap_within_max_memory_however_many_keys_arrive() {
    const KEYS: usize = 8_000;
    const LIMIT: u64 = 64 << 20;
    let port = edgeflow::mqtt::free_local_port().expect("free port");
    let _broker = edgeflow::mqtt::start_embedded(port, 1 << 20).expect("embedded broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_text(
        "127.0.0.1",
        port,
        &dir.path().join("data"),
        "edgeflow-memory",
    )
    .replace(
        "[runtime]\nshards = 2\n",
        "[runtime]\nshards = 2\nmax_memory = \"64MiB\"\n",
    );
    assert!(text.contains("max_memory"), "runtime section not patched");
    let path = write_config(dir.path(), &text);

    let mut daemon = BinaryDaemon::spawn(&path);
    let http = daemon.http_address().await;
    daemon.wait_for("ready: subscribed").await;
    let mut client = TestClient::connect("127.0.0.1", port, "memory-client").await;
    client.subscribe("edgeflow/#").await;

    // Three readings per key, so each key's model state grows towards its working size.
    let input: Vec<(String, String)> = (0..3)
        .flat_map(|step| (0..KEYS).map(move |k| reading(k, step)))
        .collect();
    // One wave per step: the embedded rumqttd keeps 3 MiB of log per filter, and a subscriber
    // (this client, reading 24,000 outputs while it publishes) that falls further behind than
    // that loses messages at the broker.
    let mut outputs = 0;
    for wave in input.chunks(KEYS) {
        client.publish_all(wave).await;
        outputs += client
            .receive(wave.len())
            .await
            .values()
            .map(Vec::len)
            .sum::<usize>();
    }

    let (status, text) = http_get(http, "/metrics").await;
    assert_eq!(status, 200);
    daemon.sigterm();

    assert_eq!(outputs, input.len(), "every reading gives its output");
    let heap = sample(&text, "edgeflow_heap_bytes");
    let budget = edgeflow::memory::Budget::for_limit(LIMIT);
    // The high mark is checked at each activation; between two checks a key's state and the
    // queues can add a little.
    // The mark may have gone down (it follows the resident size), never up.
    assert!(
        heap <= (budget.high() + (2 << 20)) as f64,
        "heap {heap} over the budget's high mark {}",
        budget.high()
    );
    let mark = sample(&text, "edgeflow_memory_heap_mark_bytes");
    assert!(
        mark <= budget.high() as f64 && mark >= (LIMIT / 4) as f64,
        "heap mark {mark}"
    );
    assert!(sample(&text, "edgeflow_keys_passivated_for_memory_total") > 0.0);
    assert!(sample(&text, "edgeflow_memory_limit_bytes") == LIMIT as f64);
    let active: f64 = text
        .lines()
        .filter_map(|l| l.strip_prefix("edgeflow_keys_active{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        active < KEYS as f64,
        "{active} keys resident: none passivated?"
    );
    // Keys passivated for memory come back from the store with their state.
    assert!(sample(&text, "edgeflow_keys_restored_total") > 0.0);
    for line in text
        .lines()
        .filter(|l| l.starts_with("edgeflow_dropped_total{"))
    {
        assert!(line.ends_with(" 0"), "a drop: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_back_gauges_count_dirty_keys_and_unflushed_passivations() {
    let port = edgeflow::mqtt::free_local_port().expect("free port");
    let _broker = edgeflow::mqtt::start_embedded(port, 1 << 20).expect("embedded broker");
    let dir = tempfile::tempdir().expect("tempdir");
    // No periodic checkpoint during the test: what is written stays unflushed.
    let text = budget_config(port, &dir.path().join("data"), "1h").replace(
        "checkpoint_interval = \"100ms\"",
        "checkpoint_interval = \"1h\"",
    );
    assert!(text.contains("checkpoint_interval = \"1h\""), "{text}");
    let config = load(&write_config(dir.path(), &text));

    let mut client = TestClient::connect("127.0.0.1", port, "write-back-client").await;
    client.subscribe("edgeflow/#").await;
    let daemon = RunningDaemon::start(config).await;
    let input = readings(KEYS, 0, STEPS);
    client.publish_all(&input).await;
    client.receive(input.len()).await;

    let engine = &daemon.handle.engine;
    let resident = engine.resident.load(Ordering::Relaxed);
    let passivated = engine.passivated.load(Ordering::Relaxed);
    let dirty = engine.dirty_keys.load(Ordering::Relaxed);
    let unflushed = engine.unflushed_states.load(Ordering::Relaxed);
    let checkpoints = engine.checkpoints.load(Ordering::Relaxed);
    daemon.shutdown().await;

    assert_eq!(checkpoints, 0, "no checkpoint may have run");
    assert!(passivated > 0, "the budget must passivate keys");
    // Every resident key was activated for a reading, so its state changed; every passivated
    // key was written back once, and nothing has been flushed since.
    assert_eq!(dirty, resident, "dirty keys");
    assert_eq!(unflushed, passivated, "unflushed states");
}
