//! Shared helpers of the integration tests: a plain MQTT client, a daemon in its own actix
//! System thread, config files in temporary directories, and synthetic readings.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use edgeflow::app::{Daemon, DaemonHandle};
use edgeflow::config::Config;

/// A safety net for awaiting events that should happen quickly; tests never sleep for timing.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A config for a daemon on an external broker, with a fast checkpoint.
pub fn config_text(host: &str, port: u16, data_dir: &Path, client_id: &str) -> String {
    format!(
        r#"
[mqtt]
host = "{host}"
port = {port}
client_id = "{client_id}"
# The brokers of these tests are in-process rumqttd 0.20: with a persistent session and
# manual acks it stalls under bursts of QoS 1 messages (README, clean_session). The
# persistent session is tested against Mosquitto (tests/broker_outage.rs).
clean_session = true
reconnect_min = "50ms"
reconnect_max = "500ms"

[store]
data_dir = "{data_dir}"
checkpoint_interval = "100ms"

[runtime]
shards = 2
stats_interval = "1s"
shutdown_deadline = "2s"

[http]
listen = "127.0.0.1:0"

[[pipelines]]
name = "temperature"
topics = ["sensors/+/temperature"]
format = "json"
key = "topic[1]"
time = "/ts"
time_unit = "ms"
fields = {{ temp = "/value" }}
output = "edgeflow/{{pipeline}}/{{key}}/{{field}}/forecast"
output_qos = 1

[pipelines.model]
kind = "forecast"
target = "temp"
lags = 3
"#,
        data_dir = data_dir.display()
    )
}

/// Write `text` as `edgeflow.toml` in `dir` and return its path.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("edgeflow.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Load a config file, panicking with every error on failure.
pub fn load(path: &Path) -> Config {
    match edgeflow::config::load(path) {
        Ok(c) => c,
        Err(e) => panic!("config {} rejected:\n{e}", path.display()),
    }
}

/// `(topic, payload)` of reading `step` of sensor `sensor`: an AR-like deterministic signal.
pub fn reading(sensor: usize, step: usize) -> (String, String) {
    let t = step as f64;
    let value =
        20.0 + sensor as f64 + 3.0 * (t / 7.0).sin() + 0.5 * ((t * 1.7 + sensor as f64).sin());
    let ts = 1_700_000_000_000i64 + step as i64 * 1000;
    (
        format!("sensors/s{sensor:02}/temperature"),
        format!("{{\"ts\":{ts},\"value\":{value:.4}}}"),
    )
}

/// The readings of `sensors` sensors for steps `from..to`, interleaved step by step.
pub fn readings(sensors: usize, from: usize, to: usize) -> Vec<(String, String)> {
    (from..to)
        .flat_map(|step| (0..sensors).map(move |s| reading(s, step)))
        .collect()
}

/// The same readings as replay input lines.
pub fn replay_input(readings: &[(String, String)]) -> String {
    readings
        .iter()
        .map(|(t, p)| format!("{{\"topic\":\"{t}\",\"payload\":{p}}}\n"))
        .collect()
}

/// Outputs of a replay of `readings` under `config`, grouped by topic, in order.
pub fn replay_outputs(
    config: &Config,
    readings: &[(String, String)],
) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut replayer = edgeflow::replay::Replayer::new(config).expect("replayer");
    let mut out = Vec::new();
    replayer
        .run(replay_input(readings).as_bytes(), &mut out)
        .expect("replay");
    let mut by_topic: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for line in String::from_utf8(out).expect("utf8").lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        let topic = v["topic"].as_str().expect("topic").to_string();
        by_topic
            .entry(topic)
            .or_default()
            .push(v["payload"].clone());
    }
    by_topic
}

/// A plain MQTT client for the other side of the tests.
pub struct TestClient {
    pub client: AsyncClient,
    pub messages: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    suback: mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl TestClient {
    /// Connect to `host:port` (retrying until the broker answers).
    pub async fn connect(host: &str, port: u16, id: &str) -> TestClient {
        TestClient::connect_with(MqttOptions::new(id, host, port)).await
    }

    /// Connect with prepared options (credentials, TLS), retrying until the broker answers.
    pub async fn connect_with(mut opts: MqttOptions) -> TestClient {
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 1024);
        let (tx, messages) = mpsc::unbounded_channel();
        let (stx, suback) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = stx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        TestClient {
            client,
            messages,
            suback,
            task,
        }
    }

    /// Subscribe and wait for the SubAck.
    pub async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        tokio::time::timeout(EVENT_TIMEOUT, self.suback.recv())
            .await
            .expect("suback in time");
    }

    /// Publish every reading with QoS 1, in order.
    pub async fn publish_all(&self, readings: &[(String, String)]) {
        for (topic, payload) in readings {
            self.client
                .publish(
                    topic.clone(),
                    QoS::AtLeastOnce,
                    false,
                    payload.clone().into_bytes(),
                )
                .await
                .expect("publish");
        }
    }

    /// Receive `n` messages (grouped by topic, in arrival order).
    pub async fn receive(&mut self, n: usize) -> BTreeMap<String, Vec<serde_json::Value>> {
        let mut by_topic: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
        for i in 0..n {
            let (topic, payload) = tokio::time::timeout(EVENT_TIMEOUT, self.messages.recv())
                .await
                .unwrap_or_else(|_| panic!("only {i} of {n} messages arrived"))
                .expect("client alive");
            let v: serde_json::Value = serde_json::from_slice(&payload).expect("output is JSON");
            by_topic.entry(topic).or_default().push(v);
        }
        by_topic
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A daemon running in-process in its own actix System thread.
pub struct RunningDaemon {
    pub handle: DaemonHandle,
    stop: CancellationToken,
    thread: std::thread::JoinHandle<Result<edgeflow::actors::CheckpointReport, String>>,
}

impl RunningDaemon {
    /// Start the daemon and wait until its subscriptions are acknowledged.
    pub async fn start(config: Config) -> RunningDaemon {
        Self::start_then(config, true).await
    }

    /// Start the daemon without waiting for a broker session (for brokers that refuse it).
    pub async fn start_connecting(config: Config) -> RunningDaemon {
        Self::start_then(config, false).await
    }

    async fn start_then(config: Config, wait_subscribed: bool) -> RunningDaemon {
        let stop = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let token = stop.clone();
        let thread = std::thread::spawn(move || {
            let system = actix_rt::System::new();
            system.block_on(async move {
                let daemon = Daemon::start(config).await.map_err(|e| e.to_string())?;
                if wait_subscribed {
                    daemon.subscribed().await;
                }
                let _ = tx.send(daemon.handle());
                token.cancelled().await;
                daemon.shutdown().await.map_err(|e| e.to_string())
            })
        });
        let handle = tokio::time::timeout(EVENT_TIMEOUT, rx)
            .await
            .expect("daemon ready in time")
            .expect("daemon started");
        RunningDaemon {
            handle,
            stop,
            thread,
        }
    }

    /// Graceful shutdown; returns the final checkpoint's report.
    pub async fn shutdown(self) -> edgeflow::actors::CheckpointReport {
        self.stop.cancel();
        tokio::task::spawn_blocking(move || self.thread.join())
            .await
            .expect("join")
            .expect("daemon thread")
            .expect("clean shutdown")
    }
}

/// The `edgeflow` binary running `run`, with its log lines as an event stream.
pub struct BinaryDaemon {
    pub child: Child,
    lines: std_mpsc::Receiver<String>,
}

impl BinaryDaemon {
    /// Start `edgeflow run --config <config>` with debug logs for edgeflow.
    pub fn spawn(config: &std::path::Path) -> BinaryDaemon {
        Self::spawn_with_env(config, &[])
    }

    /// Like [`spawn`](Self::spawn), with extra environment variables.
    pub fn spawn_with_env(config: &std::path::Path, env: &[(&str, &str)]) -> BinaryDaemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgeflow"))
            .args(["run", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .env("RUST_LOG", "edgeflow=debug,info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn edgeflow");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[edgeflow] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        BinaryDaemon { child, lines }
    }

    /// Wait for a log line containing `needle` (the daemon's own log is the event stream).
    pub async fn wait_for(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            match self.lines.try_recv() {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(std_mpsc::TryRecvError::Empty) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "no log line with {needle:?}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(std_mpsc::TryRecvError::Disconnected) => {
                    panic!("daemon exited before logging {needle:?}")
                }
            }
        }
    }

    /// Wait for the HTTP listener's log line and return its address.
    pub async fn http_address(&mut self) -> std::net::SocketAddr {
        let line = self.wait_for("http listener on http://").await;
        line.split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    /// Kill it with SIGKILL and reap it.
    pub fn sigkill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        self.child.wait().expect("reap")
    }

    /// The log lines received so far and until the process exits.
    pub fn remaining_lines(self) -> Vec<String> {
        self.lines.iter().collect()
    }
}

/// `GET path` over plain HTTP/1.0 (the tests need no HTTP client crate): `(status, body)`.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(EVENT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect to the http listener");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("send request");
    let mut response = Vec::new();
    tokio::time::timeout(EVENT_TIMEOUT, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read response");
    let response = String::from_utf8(response).expect("utf-8 response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_string())
}

/// The value of the `/metrics` sample `name{labels}` (labels written exactly as exposed).
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse::<f64>().ok())?
        })
        .unwrap_or_else(|| panic!("no sample {series} in\n{metrics}"))
}
