//! Persistent sessions through the binary against a real Mosquitto with `persistence true`:
//! the readings queued by the broker survive a broker restart, and the readings published
//! while the daemon is stopped are processed after it comes back.
//!
//! Each test starts its own `mosquitto` on a free port (it must be restarted on the same port
//! with the same persistence file, so `EDGEFLOW_TEST_MOSQUITTO` is not used). Without the
//! binary the tests are skipped, except with `CI=true`, where they fail.
//!
//! Readings are counted by sequence number: reading `n` has the event time
//! `1_700_000_000_000 + n * 1000` ms, which its output carries back as `time`. Every wait is
//! on a condition with a generous timeout, never on a sleep.
//!
//! With `EDGEFLOW_TEST_CLEAN_SESSION=true` the daemon runs with `clean_session = true`: both
//! tests must then fail (a check made by hand: the broker keeps nothing for a clean session).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rumqttc::{MqttOptions, QoS};

use crate::common::*;

/// Keys the readings are spread over.
const KEYS: usize = 20;
const BASE_TS: i64 = 1_700_000_000_000;

/// A Mosquitto process with persistence in `dir`, restartable on the same port.
struct Mosquitto {
    child: Option<Child>,
    conf: PathBuf,
    port: u16,
}

impl Mosquitto {
    /// Start one, or None (skip) when there is no `mosquitto` binary outside CI.
    fn start(dir: &Path) -> Option<Mosquitto> {
        let port = edgeflow::mqtt::free_local_port().expect("free port");
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\nmax_queued_messages 0\n{}",
                dir.display(),
                // Started as root, mosquitto becomes the user `mosquitto`, which cannot write
                // its persistence file in our directory (no effect for other users).
                "user root\n"
            ),
        )
        .expect("write mosquitto.conf");
        let mut broker = Mosquitto {
            child: None,
            conf,
            port,
        };
        match broker.spawn() {
            Ok(()) => Some(broker),
            Err(e) => {
                assert!(
                    !std::env::var("CI").is_ok_and(|v| v == "true"),
                    "CI=true but no mosquitto binary ({e})"
                );
                eprintln!("SKIP: no mosquitto binary ({e}); apt-get install mosquitto");
                None
            }
        }
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        // Bounded wait for the listener: refused until mosquitto has bound the port.
        for _ in 0..1000 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("mosquitto did not start listening on {}", self.port);
    }

    /// SIGTERM (Mosquitto writes its persistence file), wait for the exit.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            child.wait().expect("reap mosquitto");
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// Reading `seq`: key `s{seq % KEYS}`, event time from `seq`.
fn reading(seq: usize) -> (String, String) {
    let value = 20.0 + (seq as f64 / 7.0).sin();
    let ts = BASE_TS + seq as i64 * 1000;
    (
        format!("sensors/s{:02}/temperature", seq % KEYS),
        format!("{{\"ts\":{ts},\"value\":{value:.4}}}"),
    )
}

/// A daemon config on `port` with the default client id (stable across restarts: the same
/// file), and `clean_session = true` when asked for the manual check.
fn daemon_config(dir: &Path, port: u16) -> PathBuf {
    let mut text = config_text("127.0.0.1", port, &dir.join("data"), "unused")
        .replace("client_id = \"unused\"\n", "");
    // The common config forces a clean session (for rumqttd); these tests are about the
    // default, `"auto"` (persistent at QoS 1).
    let clean = "clean_session = true\n";
    assert!(text.contains(clean), "common config changed");
    if !std::env::var("EDGEFLOW_TEST_CLEAN_SESSION").is_ok_and(|v| v == "true") {
        text = text.replace(clean, "");
    }
    write_config(dir, &text)
}

/// Sees the readings the broker accepted and the daemon's outputs, by sequence number. Its
/// own session is persistent, so it misses nothing across a broker restart.
struct Watcher {
    client: TestClient,
    inputs: BTreeSet<usize>,
    outputs: BTreeSet<usize>,
}

impl Watcher {
    async fn start(port: u16) -> Watcher {
        let mut options = MqttOptions::new(
            format!("watcher-{}-{port}", std::process::id()),
            "127.0.0.1",
            port,
        );
        options.set_clean_session(false);
        let mut client = TestClient::connect_with(options).await;
        client.subscribe("sensors/+/temperature").await;
        client.subscribe("edgeflow/#").await;
        Watcher {
            client,
            inputs: BTreeSet::new(),
            outputs: BTreeSet::new(),
        }
    }

    /// Take messages until `done` holds; panics after [`EVENT_TIMEOUT`] without a message.
    async fn until(&mut self, what: &str, done: impl Fn(&Watcher) -> bool) {
        while !done(self) {
            let (topic, payload) = tokio::time::timeout(EVENT_TIMEOUT, self.client.messages.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{what}: nothing more arrived; {} inputs, {} outputs, outputs \
                             missing: {:?}",
                        self.inputs.len(),
                        self.outputs.len(),
                        self.missing(self.inputs.last().map_or(0, |l| l + 1))
                    )
                })
                .expect("watcher alive");
            let value: serde_json::Value = serde_json::from_slice(&payload).expect("JSON");
            let key = if topic.starts_with("sensors/") {
                "ts"
            } else {
                "time"
            };
            let ts = value[key].as_i64().expect("a time");
            let seq = usize::try_from((ts - BASE_TS) / 1000).expect("seq");
            if key == "ts" {
                self.inputs.insert(seq);
            } else {
                self.outputs.insert(seq);
            }
        }
    }

    /// Sequence numbers below `n` without an output (the first 20 at most).
    fn missing(&self, n: usize) -> Vec<usize> {
        (0..n)
            .filter(|s| !self.outputs.contains(s))
            .take(20)
            .collect()
    }
}

async fn publish_range(client: &TestClient, range: std::ops::Range<usize>) {
    for seq in range {
        let (topic, payload) = reading(seq);
        client
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload.into_bytes())
            .await
            .expect("publish");
    }
}

/// Readings warmed up through a running daemon: its broker (persistent), the watcher, a
/// publisher, the daemon (ready and subscribed) and the config it runs.
struct Running {
    broker: Mosquitto,
    watcher: Watcher,
    publisher: TestClient,
    daemon: BinaryDaemon,
    /// The daemon's HTTP address (its log line comes before `ready`).
    http: std::net::SocketAddr,
    config: PathBuf,
}

/// Outputs for the first readings of a warm-up.
const WARM: usize = 40;

/// Start Mosquitto, a watcher, a publisher named `publisher_id` and the daemon, and wait for
/// the outputs of [`WARM`] readings (the daemon is subscribed then). None: no mosquitto
/// binary outside CI.
async fn start_and_warm_up(dir: &Path, publisher_id: &str) -> Option<Running> {
    let broker = Mosquitto::start(dir)?;
    let port = broker.port;
    let config = daemon_config(dir, port);
    let mut watcher = Watcher::start(port).await;
    let publisher = TestClient::connect("127.0.0.1", port, publisher_id).await;
    let mut daemon = BinaryDaemon::spawn(&config);
    let http = daemon.http_address().await;
    daemon.wait_for("ready").await;
    publish_range(&publisher, 0..WARM).await;
    watcher
        .until("warm-up outputs", |w| w.outputs.len() == WARM)
        .await;
    Some(Running {
        broker,
        watcher,
        publisher,
        daemon,
        http,
        config,
    })
}

/// (a) The broker is stopped while it holds readings queued for the daemon (the daemon is
/// frozen with SIGSTOP, so it reads nothing meanwhile) and restarted on the same port and
/// persistence file: after the daemon reconnects, every queued reading produces an output,
/// and the outputs the daemon made while the broker was down (from readings already in its
/// socket) are sent after the return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_queued_by_the_broker_survive_a_broker_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(Running {
        mut broker,
        mut watcher,
        publisher,
        mut daemon,
        http,
        ..
    }) = start_and_warm_up(dir.path(), "outage-publisher-a").await
    else {
        return;
    };

    const TOTAL: usize = 1_000;
    signal(daemon.child.id(), "STOP");
    publish_range(&publisher, WARM..TOTAL).await;
    // The watcher sees a reading once the broker has accepted it (and queued it for the
    // frozen daemon).
    watcher
        .until("the broker accepted every reading", |w| {
            w.inputs.len() == TOTAL
        })
        .await;
    broker.stop();
    // Thawed with the broker down, the daemon still reads what the broker had written to its
    // socket: the outputs of those readings (more than the warm-up's) wait in its publish
    // queue for the broker's return.
    signal(daemon.child.id(), "CONT");
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let (_, metrics) = http_get(http, "/metrics").await;
        if sample(&metrics, "edgeflow_mqtt_connected") == 0.0
            && sample(&metrics, "edgeflow_outputs_total{pipeline=\"temperature\"}") > WARM as f64
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no output queued while the broker is down:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker.spawn().expect("restart mosquitto");

    watcher
        .until("an output for every reading", |w| {
            (0..TOTAL).all(|s| w.outputs.contains(&s))
        })
        .await;
    let status = daemon.sigterm();
    assert!(status.success(), "{status:?}");
}

/// (b) The daemon is stopped (SIGTERM) while a publisher keeps sending at QoS 1, and started
/// again with the same file (so the same default client id): every reading, those sent while
/// it was stopping and while it was away included, produces an output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_sent_while_the_daemon_is_away_are_processed_after_its_return() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(Running {
        broker,
        mut watcher,
        publisher,
        mut daemon,
        config,
        ..
    }) = start_and_warm_up(dir.path(), "outage-publisher-b").await
    else {
        return;
    };

    // A publisher that keeps sending, paced so that the stop falls in the middle of it.
    const TOTAL: usize = 2_000;
    let sender = tokio::spawn(async move {
        for chunk in (WARM..TOTAL).step_by(20) {
            publish_range(&publisher, chunk..(chunk + 20).min(TOTAL)).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        publisher
    });
    watcher
        .until("outputs while publishing", |w| w.outputs.len() >= 200)
        .await;
    let status = daemon.sigterm();
    assert!(status.success(), "{status:?}");
    // Readings sent while it is away: the broker accepted more after the exit.
    let at_exit = watcher.inputs.len();
    watcher
        .until("readings published while the daemon is away", |w| {
            w.inputs.len() >= (at_exit + 100).min(TOTAL)
        })
        .await;

    let mut daemon = BinaryDaemon::spawn(&config);
    daemon.wait_for("ready").await;
    let _publisher = sender.await.expect("publisher task");
    watcher
        .until("an output for every reading", |w| {
            w.inputs.len() == TOTAL && (0..TOTAL).all(|s| w.outputs.contains(&s))
        })
        .await;
    let status = daemon.sigterm();
    assert!(status.success(), "{status:?}");
    drop(broker);
}
