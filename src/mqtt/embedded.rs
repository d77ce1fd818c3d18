//! An in-process rumqttd broker on 127.0.0.1: the zero-setup default and the broker of tests.
//!
//! rumqttd has no stop API: the broker's threads (one router thread, one server thread with
//! its own single-threaded tokio runtime) live until the process exits. rumqttd logs through
//! `tracing` and installs no subscriber of its own (only its binary does); its threads use the
//! global subscriber, so the daemon must install one with `set_global_default`/`init`.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc as std_mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rumqttd::{ConnectionSettings, LinkType, RouterConfig, Server, ServerSettings};
use tracing::info;

use super::MqttError;

/// Segment size of each in-memory commit log (one per subscribed filter, plus `#`).
const SEGMENT_BYTES: usize = 1024 * 1024;
/// Segments kept per commit log before the oldest is dropped.
const SEGMENT_COUNT: usize = 3;
/// How long `start_embedded` waits for the port to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// A running embedded broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    /// The address it listens on (`127.0.0.1:port`).
    pub addr: SocketAddr,
    /// The server thread; it only finishes if the listener fails.
    server_thread: thread::JoinHandle<()>,
}

impl EmbeddedBroker {
    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// False once the broker's server thread has stopped (it never does in normal operation).
    pub fn is_running(&self) -> bool {
        !self.server_thread.is_finished()
    }
}

/// Start an in-process rumqttd broker listening on `127.0.0.1:port` (MQTT 3.1.1).
///
/// Memory is bounded by small commit-log segments (1 MiB × 3 per filter); payloads up to
/// `max_packet_bytes` are accepted; up to 1000 connections, 100 in-flight messages each. A
/// catch-all `#` log is created up front so that publishing to a topic nobody subscribes to
/// neither creates a log per topic nor (rumqttd's behaviour without a matching filter)
/// disconnects the publisher. Returns once the port accepts TCP connections.
///
/// # Errors
///
/// [`MqttError::PortInUse`] when another process listens on the port,
/// [`MqttError::EmbeddedStart`] when the broker cannot start, [`MqttError::EmbeddedNotReady`]
/// when it does not accept connections within 5 s.
pub fn start_embedded(port: u16, max_packet_bytes: usize) -> Result<EmbeddedBroker, MqttError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    // rumqttd binds inside its own thread and only logs a failure there: check first, to
    // report a clear error. std sets SO_REUSEADDR on Unix, as tokio (and so rumqttd) does, so
    // connections of a previous run in TIME_WAIT do not count as "in use".
    match TcpListener::bind(addr) {
        Ok(probe) => drop(probe),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(MqttError::PortInUse { addr });
        }
        Err(e) => {
            return Err(MqttError::EmbeddedStart {
                addr,
                reason: e.to_string(),
            })
        }
    }

    let router_tx = rumqttd::Router::new(0, router_config(max_packet_bytes)).spawn();
    let mut server = Server::new(
        server_settings(addr, max_packet_bytes),
        router_tx,
        rumqttd::protocol::v4::V4,
    );
    let (failed_tx, failed_rx) = std_mpsc::channel::<String>();
    let server_thread = thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = failed_tx.send(format!("cannot create its runtime: {e}"));
                    return;
                }
            };
            // `start` only returns on an error (binding the port, in practice).
            if let Err(e) = runtime.block_on(server.start(LinkType::Remote)) {
                let reason = match std::error::Error::source(&e) {
                    Some(source) => source.to_string(),
                    None => e.to_string(),
                };
                let _ = failed_tx.send(reason);
            }
        })
        .map_err(|e| MqttError::EmbeddedStart {
            addr,
            reason: format!("cannot spawn its thread: {e}"),
        })?;

    let started = Instant::now();
    loop {
        // A failure report wins over a successful connect: something else may own the port.
        if let Ok(reason) = failed_rx.try_recv() {
            return Err(
                if reason.to_lowercase().contains("address already in use") {
                    MqttError::PortInUse { addr }
                } else {
                    MqttError::EmbeddedStart { addr, reason }
                },
            );
        }
        if mqtt_handshake(addr).is_ok() {
            if let Ok(reason) = failed_rx.try_recv() {
                return Err(MqttError::EmbeddedStart { addr, reason });
            }
            info!("embedded MQTT broker listening on {addr}");
            return Ok(EmbeddedBroker {
                addr,
                server_thread,
            });
        }
        if started.elapsed() >= READY_TIMEOUT {
            return Err(MqttError::EmbeddedNotReady {
                addr,
                waited: READY_TIMEOUT,
            });
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Connect as an MQTT client, expect a successful CONNACK, disconnect cleanly.
///
/// A bare TCP connect would do to see the port open, but rumqttd logs an ERROR for every
/// connection closed before its CONNECT; a real handshake also proves the router is up.
fn mqtt_handshake(addr: SocketAddr) -> std::io::Result<()> {
    const CLIENT_ID: &[u8] = b"edgeflow-embedded-probe";
    let timeout = Duration::from_millis(500);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;

    // CONNECT, MQTT 3.1.1: protocol name, level 4, clean session, keep-alive 10 s, client id.
    let mut variable = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0b0000_0010, 0, 10];
    variable.extend_from_slice(&(CLIENT_ID.len() as u16).to_be_bytes());
    variable.extend_from_slice(CLIENT_ID);
    let mut connect = vec![0x10, variable.len() as u8];
    connect.extend_from_slice(&variable);
    stream.write_all(&connect)?;

    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    if connack != [0x20, 0x02, 0x00, 0x00] {
        return Err(std::io::Error::other(format!(
            "unexpected CONNACK {connack:02x?}"
        )));
    }
    stream.write_all(&[0xE0, 0x00])?; // DISCONNECT
    Ok(())
}

fn router_config(max_packet_bytes: usize) -> RouterConfig {
    RouterConfig {
        max_connections: 1000,
        max_outgoing_packet_count: 200,
        // A segment must hold at least one message of the largest size.
        max_segment_size: SEGMENT_BYTES.max(max_packet_bytes),
        max_segment_count: SEGMENT_COUNT,
        custom_segment: None,
        initialized_filters: Some(vec!["#".to_owned()]),
        ..RouterConfig::default()
    }
}

fn server_settings(addr: SocketAddr, max_packet_bytes: usize) -> ServerSettings {
    ServerSettings {
        name: "edgeflow-embedded".into(),
        listen: addr,
        tls: None,
        // rumqttd sleeps this long after every accepted connection.
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: max_packet_bytes,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    }
}

/// A port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, release it).
///
/// # Errors
///
/// The I/O error of binding.
pub fn free_local_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}
