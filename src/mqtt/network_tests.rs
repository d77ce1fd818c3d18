//! Network tests: the embedded broker, `connect`, the publisher and the simulator, each against
//! a real rumqttd on a free port and plain rumqttc clients on the other side.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::{MqttConfig, SimulateConfig};

/// Safety net for awaited events; tests normally finish far below it.
const TIMEOUT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(TIMEOUT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Waits for a condition on shared atomics (which have no event to await).
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

fn config(port: u16) -> MqttConfig {
    MqttConfig {
        port,
        client_id: format!("edgeflow-test-{port}"),
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(200),
        ..MqttConfig::default()
    }
}

fn broker() -> EmbeddedBroker {
    let port = free_local_port().unwrap();
    start_embedded(port, 256 * 1024).unwrap()
}

/// A plain rumqttc client whose received publishes arrive on `messages`.
struct TestClient {
    client: AsyncClient,
    messages: mpsc::UnboundedReceiver<Publish>,
    subacks: mpsc::UnboundedReceiver<()>,
    task: JoinHandle<()>,
}

impl TestClient {
    fn new(port: u16, id: &str) -> TestClient {
        let options = MqttOptions::new(id, "127.0.0.1", port);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let (message_tx, messages) = mpsc::unbounded_channel();
        let (suback_tx, subacks) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = message_tx.send(p);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = suback_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        });
        TestClient {
            client,
            messages,
            subacks,
            task,
        }
    }

    /// A client subscribed to `filter` (the SubAck has arrived).
    async fn subscribed(port: u16, id: &str, filter: &str) -> TestClient {
        let mut client = TestClient::new(port, id);
        client
            .client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        within("the test client's SubAck", client.subacks.recv())
            .await
            .unwrap();
        client
    }

    async fn next(&mut self) -> Publish {
        within("a message at the test client", self.messages.recv())
            .await
            .unwrap()
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `connect` with its tasks spawned (the two event loops, the publisher, the ack task).
struct Connection {
    publisher: Publisher,
    status: Arc<MqttStatus>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

fn spawn_connection(
    cfg: &MqttConfig,
    subscriptions: Vec<(String, u8)>,
    ingest: mpsc::Sender<Incoming>,
) -> Connection {
    let status = Arc::new(MqttStatus::default());
    let shutdown = CancellationToken::new();
    let (publisher, tasks) = connect(
        cfg,
        subscriptions,
        ingest,
        Arc::clone(&status),
        shutdown.clone(),
    )
    .expect("plaintext options");
    Connection {
        publisher,
        status,
        shutdown,
        tasks: tasks.into_iter().map(tokio::spawn).collect(),
    }
}

impl Connection {
    async fn subscribed(&self) {
        let status = Arc::clone(&self.status);
        eventually("status.subscribed", move || {
            status.subscribed.load(Ordering::Relaxed)
        })
        .await;
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            within("the connection's tasks to stop", task)
                .await
                .unwrap();
        }
    }
}

/// `connect` without spawning anything: the publisher, its status, and what must stay alive
/// (the tasks, the ingest receiver).
fn unspawned(
    cfg: &MqttConfig,
) -> (
    Publisher,
    Arc<MqttStatus>,
    (Vec<Task>, mpsc::Receiver<Incoming>),
) {
    let status = Arc::new(MqttStatus::default());
    let (ingest_tx, ingest_rx) = mpsc::channel(1);
    let (publisher, tasks) = connect(
        cfg,
        Vec::new(),
        ingest_tx,
        Arc::clone(&status),
        CancellationToken::new(),
    )
    .expect("plaintext options");
    (publisher, status, (tasks, ingest_rx))
}

fn outgoing(topic: &str, payload: &str) -> Outgoing {
    Outgoing {
        topic: topic.into(),
        payload: payload.as_bytes().to_vec(),
        qos: 1,
        retain: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_relays_between_plain_clients() {
    let broker = broker();
    assert!(broker.is_running());
    let mut subscriber = TestClient::subscribed(broker.port(), "sub", "t/#").await;
    let publisher = TestClient::new(broker.port(), "pub");
    publisher
        .client
        .publish("t/1", QoS::AtLeastOnce, false, "hello")
        .await
        .unwrap();
    let message = subscriber.next().await;
    assert_eq!(message.topic, "t/1");
    assert_eq!(&message.payload[..], b"hello");
}

#[tokio::test]
async fn embedded_broker_reports_a_port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    match start_embedded(port, 1024) {
        Err(MqttError::PortInUse { addr }) => assert_eq!(addr.port(), port),
        other => panic!("expected PortInUse, got {other:?}"),
    }
    let broker = broker();
    let error = start_embedded(broker.port(), 1024).unwrap_err();
    assert!(
        error.to_string().contains("is already in use"),
        "message: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_delivers_to_ingest_and_subscribes() {
    let broker = broker();
    let (ingest_tx, mut ingest_rx) = mpsc::channel(16);
    let connection = spawn_connection(
        &config(broker.port()),
        vec![("sensors/+/temp".into(), 1), ("other/#".into(), 0)],
        ingest_tx,
    );
    connection.subscribed().await;
    assert!(connection.status.connected.load(Ordering::Relaxed));

    let source = TestClient::new(broker.port(), "source");
    for (i, sensor) in ["a", "b", "c"].iter().enumerate() {
        let topic = format!("sensors/{sensor}/temp");
        source
            .client
            .publish(topic, QoS::AtLeastOnce, false, format!("{i}"))
            .await
            .unwrap();
    }
    for (i, sensor) in ["a", "b", "c"].iter().enumerate() {
        let message = within("an ingest message", ingest_rx.recv()).await.unwrap();
        assert_eq!(message.topic, format!("sensors/{sensor}/temp"));
        assert_eq!(message.payload, format!("{i}").into_bytes());
    }
    let status = connection.status.snapshot();
    assert_eq!(status.received, 3);
    assert_eq!(status.dropped_queue_full, 0);
    assert_eq!(status.reconnects, 0);
    connection.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_and_resubscribes_when_the_broker_appears_late() {
    let port = free_local_port().unwrap();
    let (ingest_tx, mut ingest_rx) = mpsc::channel(16);
    let connection = spawn_connection(&config(port), vec![("late/#".into(), 1)], ingest_tx);

    // Queued while the broker is down: held back, then sent after the late ConnAck. Retained
    // so that the check below does not race the subscriber's own connection.
    assert!(connection.publisher.try_publish(Outgoing {
        retain: true,
        ..outgoing("held/1", "kept")
    }));

    let status = Arc::clone(&connection.status);
    eventually("two failed connection attempts", move || {
        status.reconnects.load(Ordering::Relaxed) >= 2
    })
    .await;
    let before = connection.status.snapshot();
    assert!(!before.connected && !before.subscribed);
    assert_eq!(
        before.published, 0,
        "nothing is handed over without a session"
    );

    let _broker = start_embedded(port, 256 * 1024).unwrap();
    connection.subscribed().await;
    assert!(connection.status.connected.load(Ordering::Relaxed));

    let source = TestClient::new(port, "late-source");
    source
        .client
        .publish("late/x", QoS::AtLeastOnce, false, "after")
        .await
        .unwrap();
    let message = within("an ingest message", ingest_rx.recv()).await.unwrap();
    assert_eq!(message.topic, "late/x");
    assert_eq!(&message.payload[..], b"after");

    let mut observer = TestClient::subscribed(port, "observer", "held/#").await;
    let held = observer.next().await;
    assert_eq!(
        (held.topic.as_str(), &held.payload[..]),
        ("held/1", &b"kept"[..])
    );
    connection.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_ingest_queue_drops_and_the_loop_keeps_running() {
    let broker = broker();
    // QoS 0 subscriptions: capacity 1 and nobody reads: the first message fills it, the rest
    // are dropped.
    let (ingest_tx, _ingest_rx) = mpsc::channel(1);
    let connection = spawn_connection(
        &MqttConfig {
            subscribe_qos: 0,
            ..config(broker.port())
        },
        vec![("load/#".into(), 0)],
        ingest_tx,
    );
    connection.subscribed().await;

    let source = TestClient::new(broker.port(), "load-source");
    for i in 0..10 {
        source
            .client
            .publish(format!("load/{i}"), QoS::AtLeastOnce, false, "x")
            .await
            .unwrap();
    }
    let status = Arc::clone(&connection.status);
    eventually("10 received messages", move || {
        status.received.load(Ordering::Relaxed) == 10
    })
    .await;
    assert_eq!(
        connection.status.dropped_queue_full.load(Ordering::Relaxed),
        9
    );

    // Still polling: more input is counted, and output still flows.
    let mut observer = TestClient::subscribed(broker.port(), "load-observer", "alive/#").await;
    assert!(connection.publisher.try_publish(outgoing("alive/1", "yes")));
    assert_eq!(&observer.next().await.payload[..], b"yes");
    source
        .client
        .publish("load/10", QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    let status = Arc::clone(&connection.status);
    eventually("the 11th message", move || {
        status.received.load(Ordering::Relaxed) == 11
    })
    .await;
    assert_eq!(
        connection.status.dropped_queue_full.load(Ordering::Relaxed),
        10
    );
    assert!(connection.status.connected.load(Ordering::Relaxed));
    connection.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_qos_1_a_full_ingest_queue_waits_and_loses_nothing() {
    let broker = broker();
    let (ingest_tx, mut ingest_rx) = mpsc::channel(1);
    let cfg = config(broker.port());
    assert_eq!(cfg.subscribe_qos, 1, "the default");
    let connection = spawn_connection(&cfg, vec![("load/#".into(), 1)], ingest_tx);
    connection.subscribed().await;
    let source = TestClient::new(broker.port(), "load-source-q1");
    for i in 0..50 {
        source
            .client
            .publish(format!("load/{i}"), QoS::AtLeastOnce, false, i.to_string())
            .await
            .unwrap();
    }
    // Nobody reads yet: the event loop holds one message in the queue and waits with the
    // next; the broker keeps the rest.
    let status = Arc::clone(&connection.status);
    eventually("the queue full", move || {
        status.received.load(Ordering::Relaxed) >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(connection.status.received.load(Ordering::Relaxed) < 50);
    // Reading resumes: every message arrives, in order, none dropped.
    for i in 0..50 {
        let msg = within("a queued message", ingest_rx.recv())
            .await
            .expect("message");
        assert_eq!(&msg.payload[..], i.to_string().as_bytes());
    }
    assert_eq!(
        connection.status.dropped_queue_full.load(Ordering::Relaxed),
        0
    );
    assert!(connection.status.connected.load(Ordering::Relaxed));
    connection.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_messages_arrive_in_order() {
    let broker = broker();
    let mut observer = TestClient::subscribed(broker.port(), "out-observer", "out/#").await;
    let (ingest_tx, _ingest_rx) = mpsc::channel(1);
    let connection = spawn_connection(&config(broker.port()), Vec::new(), ingest_tx);
    connection.subscribed().await; // no filters: true as soon as connected

    // Nobody subscribes to this topic: rumqttd without a matching filter would disconnect us.
    assert!(connection
        .publisher
        .try_publish(outgoing("nobody/listens", "x")));
    for i in 0..5 {
        assert!(connection
            .publisher
            .try_publish(outgoing(&format!("out/{i}"), &format!("m{i}"))));
    }
    for i in 0..5 {
        let message = observer.next().await;
        assert_eq!(message.topic, format!("out/{i}"));
        assert_eq!(message.payload, format!("m{i}").into_bytes());
    }
    let status = connection.status.snapshot();
    assert_eq!(status.published, 6);
    assert_eq!(status.publish_dropped, 0);
    assert_eq!(status.reconnects, 0);
    connection.stop().await;
}

#[tokio::test]
async fn try_publish_beyond_capacity_returns_false_and_counts() {
    let cfg = MqttConfig {
        publish_queue: 4,
        max_packet_bytes: 1024,
        ..config(free_local_port().unwrap())
    };
    // The tasks are not spawned: nothing drains the queue.
    let (publisher, status, _unspawned) = unspawned(&cfg);
    for i in 0..4 {
        assert!(publisher.try_publish(outgoing(&format!("q/{i}"), "x")));
    }
    assert_eq!(publisher.queue_depth(), 4);
    assert!(!publisher.try_publish(outgoing("q/4", "x")));
    assert!(!publisher.clone().try_publish(outgoing("q/5", "x")));
    assert_eq!(status.publish_dropped.load(Ordering::Relaxed), 2);

    // Invalid messages are refused before they reach the queue (and the connection).
    assert!(!publisher.try_publish(outgoing("q/+", "x")));
    assert!(!publisher.try_publish(outgoing("q/big", &"x".repeat(1024))));
    assert!(!publisher.try_publish(Outgoing {
        qos: 3,
        ..outgoing("q/6", "x")
    }));
    assert_eq!(status.publish_dropped.load(Ordering::Relaxed), 5);
    assert_eq!(publisher.queue_depth(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_disconnect_flushes_the_queue_after_ingest_stops() {
    let broker = broker();
    let mut observer = TestClient::subscribed(broker.port(), "bye-observer", "bye/#").await;
    let (ingest_tx, ingest_rx) = mpsc::channel(4);
    let connection = spawn_connection(&config(broker.port()), vec![("in/#".into(), 1)], ingest_tx);
    connection.subscribed().await;

    // Step 1: ingest stops. Input is discarded, the connection stays up.
    drop(ingest_rx);
    let source = TestClient::new(broker.port(), "bye-source");
    source
        .client
        .publish("in/1", QoS::AtLeastOnce, false, "late input")
        .await
        .unwrap();
    let status = Arc::clone(&connection.status);
    eventually("the discarded message", move || {
        status.received.load(Ordering::Relaxed) == 1
    })
    .await;
    assert!(connection.status.connected.load(Ordering::Relaxed));

    // Step 3: flush and disconnect.
    for i in 0..20 {
        assert!(connection
            .publisher
            .try_publish(outgoing(&format!("bye/{i}"), &i.to_string())));
    }
    within(
        "disconnect",
        connection.publisher.disconnect(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    for i in 0..20 {
        assert_eq!(observer.next().await.payload, i.to_string().into_bytes());
    }
    // Every task has returned by itself, without `shutdown`.
    for task in connection.tasks {
        within("the connection's tasks", task).await.unwrap();
    }
    let status = connection.status.snapshot();
    assert!(!status.connected);
    assert_eq!(status.published, 20);
    assert!(!connection.publisher.try_publish(outgoing("bye/late", "x")));
    // A second disconnect is a no-op.
    connection
        .publisher
        .disconnect(Duration::from_millis(10))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_does_not_wait_for_a_broker_that_is_down() {
    let (ingest_tx, _ingest_rx) = mpsc::channel(1);
    let connection = spawn_connection(&config(free_local_port().unwrap()), Vec::new(), ingest_tx);
    assert!(connection.publisher.try_publish(outgoing("never/1", "x")));
    // An hour of deadline: nothing can be sent, so it returns at once (the test would time out).
    connection
        .publisher
        .disconnect(Duration::from_secs(3600))
        .await
        .unwrap();
    let status = Arc::clone(&connection.status);
    connection.stop().await;
    assert_eq!(status.published.load(Ordering::Relaxed), 0);
    assert!(status.publish_dropped.load(Ordering::Relaxed) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_publishes_round_robin_until_the_limit() {
    let broker = broker();
    let mut observer = TestClient::subscribed(broker.port(), "sim-observer", "sim/#").await;
    let sim = SimulateConfig {
        sensors: 3,
        rate: 500.0,
        topic: "sim/{sensor}/t".into(),
        ..SimulateConfig::default()
    };
    let sent = within(
        "the simulator",
        crate::sim::run_simulator(
            &config(broker.port()),
            &sim,
            Some(12),
            CancellationToken::new(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(sent, 12);

    // Same values as a fleet with the same seed, in round-robin order.
    let mut fleet = crate::sim::Fleet::new(3, sim.seed, sim.spike_probability);
    for k in 0..12 {
        let message = observer.next().await;
        let i = k % 3;
        assert_eq!(message.topic, format!("sim/{}/t", fleet.sensor_id(i)));
        let json: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert!(json["ts"].as_i64().unwrap() > 1_600_000_000_000);
        let expected = (fleet.next_value(i) * 1000.0).round() / 1000.0;
        assert_eq!(json["value"].as_f64().unwrap(), expected);
    }
}

#[tokio::test]
async fn simulator_rejects_a_template_with_wildcards() {
    let sim = SimulateConfig {
        topic: "sim/+/{sensor}".into(),
        ..SimulateConfig::default()
    };
    let error = crate::sim::run_simulator(&config(1), &sim, Some(1), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(error, MqttError::InvalidTopic { .. }), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_input_ends_ingest_and_keeps_publishing() {
    let broker = broker();
    let mut observer = TestClient::subscribed(broker.port(), "stop-observer", "result/#").await;
    let (ingest_tx, mut ingest_rx) = mpsc::channel(16);
    let connection = spawn_connection(&config(broker.port()), vec![("in/#".into(), 1)], ingest_tx);
    connection.subscribed().await;
    let source = TestClient::new(broker.port(), "stop-source");
    source
        .client
        .publish("in/1", QoS::AtLeastOnce, false, "before")
        .await
        .unwrap();
    let status = Arc::clone(&connection.status);
    eventually("the first message", move || {
        status.received.load(Ordering::Relaxed) == 1
    })
    .await;

    connection.publisher.stop_input();
    // What was queued is still delivered, then the channel ends.
    let first = within("the queued message", ingest_rx.recv()).await;
    assert_eq!(&first.unwrap().payload[..], b"before");
    assert!(within("the end of ingest", ingest_rx.recv())
        .await
        .is_none());

    // Output still flows on the same connection.
    assert!(connection
        .publisher
        .try_publish(outgoing("result/1", "out")));
    assert_eq!(&observer.next().await.payload[..], b"out");
    assert!(connection.status.connected.load(Ordering::Relaxed));
    within("disconnect", connection.publisher.disconnect(TIMEOUT))
        .await
        .unwrap();
    connection.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_input_ends_ingest_while_the_broker_is_down() {
    let (ingest_tx, mut ingest_rx) = mpsc::channel(1);
    let connection = spawn_connection(
        &MqttConfig {
            // Long back-off: the event loop is asleep when input stops.
            reconnect_min: Duration::from_secs(60),
            reconnect_max: Duration::from_secs(60),
            ..config(free_local_port().unwrap())
        },
        vec![("in/#".into(), 1)],
        ingest_tx,
    );
    let status = Arc::clone(&connection.status);
    eventually("a failed connection attempt", move || {
        status.reconnects.load(Ordering::Relaxed) >= 1
    })
    .await;
    connection.publisher.stop_input();
    assert!(within("the end of ingest", ingest_rx.recv())
        .await
        .is_none());
    connection.stop().await;
}

/// A broker that acknowledges the connection but never a publish, then drops the output
/// connection (the client id ending in `-out`) once it has read `publishes` PUBLISH packets;
/// every connection gets a new session (`session_present = false`) and the others stay open.
async fn forgetful_broker(listener: tokio::net::TcpListener, publishes: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CONNACK_NEW_SESSION: [u8; 4] = [0x20, 0x02, 0x00, 0x00];
    let mut first = true;
    let mut open = Vec::new();
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let mut buf = vec![0u8; 64 << 10];
        // CONNECT: whatever the first read holds (the client sends nothing else before CONNACK).
        let n = socket.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            continue;
        }
        let output = buf[..n].windows(4).any(|w| w == b"-out");
        if socket.write_all(&CONNACK_NEW_SESSION).await.is_err() {
            continue;
        }
        if first && output {
            first = false;
            // Count PUBLISH headers (0x32: QoS 1) in what arrives, then hang up.
            let mut seen = 0;
            while seen < publishes {
                let n = socket.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                seen += buf[..n].iter().filter(|&&b| b == 0x32).count();
            }
            drop(socket);
        } else {
            open.push(socket);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_discarded_by_a_new_session_after_a_lost_connection_are_counted() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(forgetful_broker(listener, 3));
    let (ingest_tx, _ingest_rx) = mpsc::channel(1);
    let connection = spawn_connection(&config(port), Vec::new(), ingest_tx);
    let status = Arc::clone(&connection.status);
    let connected = Arc::clone(&status);
    eventually("connected", move || {
        connected.connected.load(Ordering::Relaxed)
    })
    .await;
    for i in 0..3 {
        assert!(connection
            .publisher
            .try_publish(outgoing("out/lost", &i.to_string())));
    }
    // Handed over (counted as published), never acknowledged, then the connection is lost and
    // the next ConnAck starts a new session: rumqttc discards them, and they are counted.
    let dropped = Arc::clone(&status);
    eventually("the discarded outputs counted as dropped", move || {
        dropped.publish_dropped.load(Ordering::Relaxed) >= 3
    })
    .await;
    connection.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_publish_queue_waits_while_the_output_connection_is_up() {
    let broker = broker();
    let cfg = MqttConfig {
        publish_queue: 2,
        ..config(broker.port())
    };
    let mut observer = TestClient::subscribed(broker.port(), "wait-observer", "wait/#").await;
    let status = Arc::new(MqttStatus::default());
    let (ingest_tx, _ingest_rx) = mpsc::channel(1);
    let shutdown = CancellationToken::new();
    let (publisher, mut tasks) = connect(
        &cfg,
        Vec::new(),
        ingest_tx,
        Arc::clone(&status),
        shutdown.clone(),
    )
    .expect("plaintext options");
    assert_eq!(tasks.len(), 4, "input loop, output loop, publisher, acks");
    // The publisher task is held back: nothing leaves the queue.
    let publisher_task = tasks.remove(2);
    let mut running: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
    let up = Arc::clone(&status);
    eventually("the output connection", move || {
        up.output_connected.load(Ordering::Relaxed)
    })
    .await;
    assert!(publisher.try_publish(outgoing("wait/0", "0")));
    assert!(publisher.try_publish(outgoing("wait/1", "1")));
    // Full: a key actor's publish waits (on its own thread) instead of dropping.
    let waiting = {
        let publisher = publisher.clone();
        std::thread::spawn(move || publisher.publish_waiting(outgoing("wait/2", "2")))
    };
    let waits = Arc::clone(&status);
    eventually("the wait counted", move || {
        waits.publish_waits.load(Ordering::Relaxed) == 1
    })
    .await;
    assert!(!waiting.is_finished(), "returned while the queue was full");
    assert_eq!(status.publish_dropped.load(Ordering::Relaxed), 0);
    // The publisher drains the queue: the wait ends with the message queued, in order.
    running.push(tokio::spawn(publisher_task));
    let queued = within(
        "the waiting publish",
        tokio::task::spawn_blocking(move || waiting.join().expect("no panic")),
    )
    .await
    .expect("joined");
    assert!(queued);
    for i in 0..3 {
        assert_eq!(observer.next().await.payload, i.to_string().into_bytes());
    }
    let status_now = status.snapshot();
    assert_eq!(status_now.publish_dropped, 0);
    assert_eq!(status_now.published, 3);
    shutdown.cancel();
    for task in running {
        within("the connection's tasks to stop", task)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_full_publish_queue_drops_at_once_while_the_output_connection_is_down() {
    let cfg = MqttConfig {
        publish_queue: 1,
        ..config(free_local_port().unwrap())
    };
    // Not spawned: never connected, nothing drains the queue.
    let (publisher, status, _unspawned) = unspawned(&cfg);
    assert!(publisher.publish_waiting(outgoing("down/0", "0")));
    // An outage: outputs wait in the queue up to its capacity, then are dropped and counted;
    // the shard goes on (no wait).
    assert!(!publisher.publish_waiting(outgoing("down/1", "1")));
    let status = status.snapshot();
    assert_eq!((status.publish_dropped, status.publish_waits), (1, 0));
}

/// Reads one MQTT packet: its first byte and its body (the remaining length decoded).
async fn read_packet(socket: &mut tokio::net::TcpStream) -> Option<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let first = socket.read_u8().await.ok()?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let byte = socket.read_u8().await.ok()?;
        len |= usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    socket.read_exact(&mut body).await.ok()?;
    Some((first, body))
}

/// A QoS 1 PUBLISH packet from the broker.
fn publish_packet(topic: &str, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&pkid.to_be_bytes());
    body.extend_from_slice(payload);
    let mut packet = vec![0x32];
    let mut len = body.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        packet.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

/// A broker that resumes every session (so nothing is subscribed), sends the input connection
/// `publishes` at QoS 1 and reports the packet id of every PUBACK it reads, in order.
async fn resuming_broker(
    listener: tokio::net::TcpListener,
    publishes: Vec<Vec<u8>>,
    pubacks: mpsc::UnboundedSender<u16>,
) {
    use tokio::io::AsyncWriteExt;
    const CONNACK_SESSION_PRESENT: [u8; 4] = [0x20, 0x02, 0x01, 0x00];
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let publishes = publishes.clone();
        let pubacks = pubacks.clone();
        tokio::spawn(async move {
            let Some((_, connect)) = read_packet(&mut socket).await else {
                return;
            };
            let output = connect.windows(4).any(|w| w == b"-out");
            if socket.write_all(&CONNACK_SESSION_PRESENT).await.is_err() {
                return;
            }
            if !output {
                for packet in &publishes {
                    if socket.write_all(packet).await.is_err() {
                        return;
                    }
                }
            }
            while let Some((first, body)) = read_packet(&mut socket).await {
                match first >> 4 {
                    4 if body.len() >= 2 && !output => {
                        let _ = pubacks.send(u16::from_be_bytes([body[0], body[1]]));
                    }
                    // PINGREQ
                    12 if socket.write_all(&[0xd0, 0x00]).await.is_err() => return,
                    _ => {}
                }
            }
        });
    }
}

/// With manual acks (persistent session), a QoS 1 message over `max_packet_bytes` is dropped
/// and counted, and its PUBACK goes out in its turn after those of the readings before it
/// (MQTT 3.1.1 §4.6): it travels the ingest queue as an ack marker, which the ingest side
/// acknowledges and does not route. Before, the event loop acknowledged it at once, ahead of
/// readings still waiting in the ingest queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_message_is_acknowledged_in_its_turn() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cfg = MqttConfig {
        subscribe_qos: 1,
        clean_session: Some(false),
        max_packet_bytes: 1024,
        ..config(port)
    };
    let publishes = vec![
        publish_packet("t/a", 1, b"1"),
        publish_packet("t/b", 2, &[b'x'; 4096]),
        publish_packet("t/c", 3, b"3"),
    ];
    let (pubacks_tx, mut pubacks) = mpsc::unbounded_channel();
    tokio::spawn(resuming_broker(listener, publishes, pubacks_tx));
    let (ingest_tx, mut ingest_rx) = mpsc::channel(16);
    let connection = spawn_connection(&cfg, vec![("t/#".into(), 1)], ingest_tx);
    let acks = connection.publisher.acknowledger();
    assert!(acks.is_manual());

    let mut routed = Vec::new();
    for _ in 0..3 {
        let message = within("ingest", ingest_rx.recv()).await.unwrap();
        routed.push((message.topic.clone(), is_ack_marker(&message), message.pkid));
    }
    assert_eq!(
        routed,
        [
            ("t/a".to_string(), false, 1),
            (String::new(), true, 2),
            ("t/c".to_string(), false, 3),
        ]
    );
    // Nothing acknowledged yet: the event loop leaves every PUBACK to the ingest side.
    assert!(pubacks.try_recv().is_err());
    assert_eq!(
        connection.status.dropped_too_large.load(Ordering::Relaxed),
        1
    );

    // The ingest side acknowledges in the order it took them.
    let messages = [1u16, 2, 3];
    for pkid in messages {
        acks.ack_packet(pkid);
    }
    let mut order = Vec::new();
    for _ in 0..3 {
        order.push(within("a PUBACK", pubacks.recv()).await.unwrap());
    }
    assert_eq!(order, messages);
    connection.stop().await;
}
