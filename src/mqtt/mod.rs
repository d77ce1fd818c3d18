//! MQTT: the broker connection, the hand-off to ingest, the publish queue and the embedded broker.
//!
//! The connection is plain TCP, or TLS with `[mqtt.tls]` ([`tls`]: rustls with the ring
//! provider, CA file or system roots, optional client certificate). Every connection failure
//! is logged with a reason an operator can act on and kept in [`MqttStatus`] as a
//! [`ConnectionFailure`] (refused credentials, TLS, network, protocol).
//!
//! # Tasks
//!
//! [`connect`] opens **two connections**: the input connection (`client_id`) subscribes and
//! reads; the output connection (`<client_id>-out`, [`output_options`]) only publishes. It
//! returns a [`Publisher`] handle and the task bodies the caller spawns:
//!
//! * an **event-loop task** per connection is the only code that polls its rumqttc
//!   `EventLoop`. The input loop hands received messages to ingest: with QoS 1 subscriptions
//!   it waits for room in the ingest queue (it stops reading, and the broker holds the
//!   messages), with QoS 0 a full queue is a counted drop. It subscribes with
//!   `try_subscribe_many` on every `ConnAck` that did not resume a persistent session (a clean
//!   session forgets them on each disconnect; a resumed one keeps them, and a SUBSCRIBE would
//!   only make the broker send its retained messages again). Both loops follow a connection
//!   error with an exponential back-off sleep (polling again at once would reconnect in a
//!   tight loop).
//! * the **publisher task** moves [`Outgoing`] messages from a bounded queue into the output
//!   connection's request channel with `AsyncClient::publish_bytes(..).await`. Awaiting that
//!   call from the polling task would deadlock when the request channel is full (only the
//!   poller drains it), which is why publishing lives in its own task. While the output
//!   connection is down the publisher holds messages back (rumqttc discards queued requests
//!   when a clean session starts), so the queue fills; the shards then drop and count
//!   ([`Publisher::publish_waiting`]), while it is up they wait for room.
//! * the **ack task**: with a **persistent session** (`[mqtt] clean_session`, persistent by
//!   default at QoS 1) rumqttc does not acknowledge QoS 1 messages by itself; the ingest side
//!   acknowledges them through an [`Acknowledger`] once they are in a shard's queue, and this
//!   task sends the PUBACKs on the input connection. A message the daemon never took over
//!   (read after input stopped, or lost in the ingest queue when the process died) is sent
//!   again by the broker at the next session.
//!
//! Why two connections: a shard waits for room in the publish queue, the ingest task waits for
//! the shard, and the input event loop waits for ingest. If that event loop also had to drain
//! the outputs, the chain would close into a cycle. With outputs on their own connection
//! nothing on the output side waits on the input side: the data path is one-way.
//!
//! # Graceful shutdown
//!
//! The daemon stops in this order:
//!
//! 1. **Stop input**: [`Publisher::stop_input`]. The event loop unsubscribes (clean session
//!    only: a persistent session keeps its subscriptions, so the broker queues for the next
//!    start) and drops its ingest sender: the ingest side drains what is queued, then `recv()`
//!    returns `None`. The connection stays up so outputs can still be published. (Dropping the
//!    `Receiver<Incoming>` has the same effect on the event loop, without the unsubscribe.)
//! 2. **Drain** the actors and **checkpoint** their state; outputs they emit are still queued.
//! 3. **Flush and disconnect**: [`Publisher::disconnect`] with a deadline. Everything queued before
//!    it is handed to the broker in order, then the output connection's DISCONNECT is sent;
//!    the ack task then sends the last PUBACKs and the input connection's DISCONNECT. Each event
//!    loop reads until the broker closes its connection (at most a second: closing a socket
//!    with unread data sends a TCP reset, and the broker would discard the last outputs); the
//!    tasks return by themselves.
//! 4. **Cancel `shutdown`** and await the tasks. If the deadline passed (broker down), this
//!    is what stops them; queued messages are lost and counted in the returned error.
//!
//! Cancelling `shutdown` alone is the hard stop: the tasks return at once, without DISCONNECT.

mod acks;
pub(crate) mod connection;
pub mod embedded;
mod ends;
mod publisher;
mod subscriptions;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{ConnectionError, MqttOptions, StateError, TlsConfiguration, Transport};
use tokio::sync::watch;

use crate::config::MqttConfig;
use crate::tls::{self, TlsError};

pub use acks::{is_ack_marker, Acknowledger};
pub use connection::connect;
pub use embedded::{free_local_port, start_embedded, EmbeddedBroker};
pub use publisher::Publisher;

/// One message received from the broker, as handed to the ingest side.
///
/// `topic` is a `String` and `payload` a `bytes::Bytes` that shares the network buffer: handing
/// it over copies nothing.
pub type Incoming = rumqttc::Publish;

/// A task body [`connect`] returns for the caller to spawn (the event loops, the publisher).
pub type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

/// Capacity of rumqttc's internal request channel (publishes, subscribes, acks).
///
/// Kept small on purpose: requests still in this channel when a connection drops are discarded
/// by rumqttc when the next clean session starts; our own bounded queue in front of it is where
/// messages wait.
pub const REQUEST_CHANNEL_CAPACITY: usize = 64;

/// Errors of the MQTT layer. Each message says what went wrong and what to change.
#[derive(thiserror::Error, Debug)]
pub enum MqttError {
    /// The embedded broker's port is held by another process.
    #[error(
        "port {addr} is already in use: stop the process listening there or choose another \
         [mqtt] port"
    )]
    PortInUse {
        /// The address that could not be bound.
        addr: std::net::SocketAddr,
    },
    /// The embedded broker could not be started for another reason.
    #[error("cannot start the embedded MQTT broker on {addr}: {reason}")]
    EmbeddedStart {
        /// The listen address.
        addr: std::net::SocketAddr,
        /// What failed.
        reason: String,
    },
    /// The embedded broker was started but never accepted a TCP connection.
    #[error(
        "the embedded MQTT broker on {addr} did not accept connections within {}",
        humantime::format_duration(*waited)
    )]
    EmbeddedNotReady {
        /// The listen address.
        addr: std::net::SocketAddr,
        /// How long readiness was awaited.
        waited: Duration,
    },
    /// A topic filter that MQTT does not accept.
    #[error(
        "invalid MQTT topic filter {filter:?}: it must not be empty, `+` and `#` must fill a \
         whole level and `#` must be the last level (e.g. `sensors/+/temperature`, `sensors/#`)"
    )]
    InvalidFilter {
        /// The filter as given.
        filter: String,
    },
    /// A topic that cannot be published to.
    #[error(
        "invalid MQTT topic {topic:?} for publishing: it must not be empty, longer than 65,535 \
         bytes or contain the wildcards `+` or `#`, control characters or Unicode noncharacters"
    )]
    InvalidTopic {
        /// The topic as given (its first 200 bytes and `…` when longer).
        topic: String,
    },
    /// A QoS other than 0, 1 or 2.
    #[error("invalid MQTT QoS {qos}: accepted values are 0, 1 and 2")]
    InvalidQos {
        /// The value given.
        qos: u8,
    },
    /// A message too large for the configured `max_packet_bytes`.
    #[error(
        "MQTT message to {topic:?} is {size} bytes, more than max_packet_bytes = {max}: raise \
         [mqtt] max_packet_bytes (and the broker's limit) or send smaller messages"
    )]
    PacketTooLarge {
        /// The topic of the message.
        topic: String,
        /// Its encoded size in bytes.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// `[simulate]` settings the simulator cannot run with.
    #[error("invalid [simulate] settings: {reason}")]
    InvalidSimulation {
        /// What is wrong.
        reason: String,
    },
    /// The TLS client configuration cannot be built from `[mqtt.tls]`.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The connection tasks have stopped; nothing more can be published.
    #[error("the MQTT connection has been shut down; no more messages can be published")]
    Closed,
    /// A graceful disconnect did not finish in time (typically: the broker is unreachable).
    #[error(
        "graceful MQTT disconnect did not finish within {}: {unsent} queued messages were not \
         sent (is the broker reachable?)",
        humantime::format_duration(*deadline)
    )]
    DisconnectTimeout {
        /// The deadline given to `disconnect`.
        deadline: Duration,
        /// Messages still queued when it passed.
        unsent: usize,
    },
}

/// Live connection state shared with metrics, health and tests.
///
/// Counters only grow; flags describe the current session. All accesses are `Relaxed`: these
/// are independent statistics, nothing is synchronised through them.
#[derive(Default, Debug)]
pub struct MqttStatus {
    /// A session with the broker is established (the last event was a ConnAck, no error since).
    /// The input connection's: it subscribes and reads the readings.
    pub connected: AtomicBool,
    /// The same for the output connection (outputs are published on a connection of their
    /// own, see the [module docs](self)). Equals `connected` when one connection does both.
    pub output_connected: AtomicBool,
    /// Connection errors so far (each one is followed by a back-off and a reconnect attempt).
    pub reconnects: AtomicU64,
    /// Messages received from the broker.
    pub received: AtomicU64,
    /// Received messages dropped because the ingest queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Received messages dropped because they are larger than `max_packet_bytes` (read up to
    /// [`read_limit`] and discarded, without closing the connection).
    pub dropped_too_large: AtomicU64,
    /// Messages handed to the MQTT client for sending.
    pub published: AtomicU64,
    /// Messages not published: queue full, invalid topic or too large, or connection closed.
    pub publish_dropped: AtomicU64,
    /// Outputs that found the publish queue full and waited for room (backpressure, see
    /// [`Publisher::publish_waiting`]) instead of being dropped.
    pub publish_waits: AtomicU64,
    /// True once the SubAcks of the current session have arrived (and while it lasts).
    pub subscribed: AtomicBool,
    /// The most recent connection failure (kept after a successful reconnect): see
    /// [`MqttStatus::last_failure`] and [`MqttStatus::watch_failures`].
    failure: watch::Sender<Option<ConnectionFailure>>,
}

/// Why a connection attempt or a session failed, for health checks and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The broker refused the credentials: CONNACK "bad user name or password" or "not
    /// authorized" (Mosquitto answers a wrong password with the latter).
    Unauthorized,
    /// The broker refused the connection for another reason (client id, protocol version,
    /// server unavailable).
    Refused,
    /// TLS: the handshake failed, a certificate was not trusted or not valid for the name,
    /// or the broker rejected the client certificate.
    Tls,
    /// TCP: connection refused, reset or timed out, name resolution failed.
    Network,
    /// The session broke for an MQTT reason (keep-alive, a malformed or too large packet).
    Protocol,
}

/// One connection failure: its kind, the message the daemon logged, and its number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionFailure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// The reason as logged (`broker rejected the user name or password ...`).
    pub message: String,
    /// How many connection failures there have been so far (equals
    /// [`MqttStatus::reconnects`] right after it was recorded); grows with each retry.
    pub count: u64,
}

impl MqttStatus {
    /// The most recent connection failure, if there was one.
    pub fn last_failure(&self) -> Option<ConnectionFailure> {
        self.failure.borrow().clone()
    }

    /// A receiver that sees every new failure (e.g. `wait_for(|f| ...)` in tests and health
    /// checks), starting with the current one.
    pub fn watch_failures(&self) -> watch::Receiver<Option<ConnectionFailure>> {
        self.failure.subscribe()
    }

    /// Count a failure and publish it to [`MqttStatus::watch_failures`].
    pub(crate) fn record_failure(&self, kind: FailureKind, message: String) {
        let count = self.reconnects.fetch_add(1, Ordering::Relaxed) + 1;
        self.failure.send_replace(Some(ConnectionFailure {
            kind,
            message,
            count,
        }));
    }

    /// A consistent-enough copy of all fields, for logs and tests.
    pub fn snapshot(&self) -> MqttStatusSnapshot {
        MqttStatusSnapshot {
            connected: self.connected.load(Ordering::Relaxed),
            output_connected: self.output_connected.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Ordering::Relaxed),
            dropped_too_large: self.dropped_too_large.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            publish_dropped: self.publish_dropped.load(Ordering::Relaxed),
            publish_waits: self.publish_waits.load(Ordering::Relaxed),
            subscribed: self.subscribed.load(Ordering::Relaxed),
        }
    }
}

/// Plain copy of [`MqttStatus`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MqttStatusSnapshot {
    /// See [`MqttStatus::connected`].
    pub connected: bool,
    /// See [`MqttStatus::output_connected`].
    pub output_connected: bool,
    /// See [`MqttStatus::reconnects`].
    pub reconnects: u64,
    /// See [`MqttStatus::received`].
    pub received: u64,
    /// See [`MqttStatus::dropped_queue_full`].
    pub dropped_queue_full: u64,
    /// See [`MqttStatus::dropped_too_large`].
    pub dropped_too_large: u64,
    /// See [`MqttStatus::published`].
    pub published: u64,
    /// See [`MqttStatus::publish_dropped`].
    pub publish_dropped: u64,
    /// See [`MqttStatus::publish_waits`].
    pub publish_waits: u64,
    /// See [`MqttStatus::subscribed`].
    pub subscribed: bool,
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Topic (no wildcards).
    pub topic: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// QoS 0, 1 or 2.
    pub qos: u8,
    /// Ask the broker to retain the message for future subscribers.
    pub retain: bool,
}

/// The broker address the connection uses, as `host:port` (for messages).
///
/// With `embedded = true` this is always `127.0.0.1:port`.
pub fn broker_address(cfg: &MqttConfig) -> String {
    if cfg.embedded {
        format!("127.0.0.1:{}", cfg.port)
    } else if cfg.host.contains(':') && !cfg.host.starts_with('[') {
        // A bare IPv6 address: bracket it so the port stays readable.
        format!("[{}]:{}", cfg.host, cfg.port)
    } else {
        format!("{}:{}", cfg.host, cfg.port)
    }
}

/// Build rumqttc options from config.
///
/// Client id is `cfg.client_id`, or `"{client_id}-{suffix}"` with a suffix (the simulator uses
/// `Some("sim")`, so both can share one broker). Sets credentials, keep-alive, the packet size
/// limit in both directions (rumqttc's default of 10 KiB is too small for batches), the
/// session kind of [`MqttConfig::persistent_session`] (a persistent session also turns on
/// manual acknowledgements: a QoS 1 reading is acknowledged once it has been handed to its
/// shard, see [`Acknowledger`]), a small request channel
/// ([`REQUEST_CHANNEL_CAPACITY`]) and, with `[mqtt.tls]` (never with the embedded broker), the
/// TLS transport of [`tls::client_config`].
///
/// # Errors
///
/// [`MqttError::Tls`] when a file of `[mqtt.tls]` cannot be read or used.
pub fn mqtt_options(
    cfg: &MqttConfig,
    client_id_suffix: Option<&str>,
) -> Result<MqttOptions, MqttError> {
    let client_id = match client_id_suffix {
        Some(suffix) => format!("{}-{}", cfg.client_id, suffix),
        None => cfg.client_id.clone(),
    };
    let host = if cfg.embedded {
        "127.0.0.1"
    } else {
        cfg.host.as_str()
    };
    // Only the daemon's own connection keeps a session: the simulator and the demo's
    // monitor (the clients with a suffix) only publish or watch.
    let persistent = client_id_suffix.is_none() && cfg.persistent_session();
    let mut options = MqttOptions::new(client_id, host, cfg.port);
    // rumqttc panics on a non-zero keep-alive under one second; validation requires ≥ 5 s,
    // this keeps a hand-built config from panicking.
    let keep_alive = if cfg.keep_alive.is_zero() {
        Duration::ZERO
    } else {
        cfg.keep_alive.max(Duration::from_secs(1))
    };
    options
        .set_keep_alive(keep_alive)
        .set_max_packet_size(read_limit(cfg.max_packet_bytes), cfg.max_packet_bytes)
        .set_clean_session(!persistent)
        .set_manual_acks(persistent)
        .set_request_channel_capacity(REQUEST_CHANNEL_CAPACITY);
    if let Some(username) = &cfg.username {
        options.set_credentials(username.clone(), cfg.password.clone().unwrap_or_default());
    }
    if let Some(tls) = cfg.tls.as_ref().filter(|_| !cfg.embedded) {
        let config = tls::client_config(tls)?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    }
    Ok(options)
}

/// Options of the daemon's output connection: [`mqtt_options`] with the client id
/// `<client_id>-out`, no subscriptions, and rumqttc acknowledging by itself (nothing is
/// received but acknowledgements). It keeps a session like the input connection does, so
/// QoS 1 outputs the broker has not acknowledged when the connection drops are sent again
/// when the session resumes.
///
/// # Errors
///
/// [`MqttError::Tls`] when a file of `[mqtt.tls]` cannot be read or used.
pub fn output_options(cfg: &MqttConfig) -> Result<MqttOptions, MqttError> {
    let mut options = mqtt_options(cfg, Some(OUTPUT_CLIENT_SUFFIX))?;
    options
        .set_clean_session(!cfg.persistent_session())
        .set_manual_acks(false);
    Ok(options)
}

/// Suffix of the output connection's client id (`<client_id>-out`).
pub const OUTPUT_CLIENT_SUFFIX: &str = "out";

/// The largest packet the client reads from the broker, for a `max_packet_bytes` limit.
///
/// rumqttc cannot skip a packet: one above its incoming limit closes the connection, and a
/// retained message is sent again at every resubscription, so an oversize retained message
/// would cut the connection for ever. The client therefore reads packets up to this larger
/// limit, and the event loop drops (and counts) every message above `max_packet_bytes`
/// without touching the connection. Only a packet above this limit still closes it (the
/// broker's own message size limit should be lower: see the README). 16 MiB, or 64 times
/// `max_packet_bytes` if more, bounds the one buffer such a packet needs; MQTT's maximum
/// packet size (256 MiB) caps it.
pub fn read_limit(max_packet_bytes: usize) -> usize {
    const MQTT_MAX: usize = 268_435_455;
    max_packet_bytes
        .saturating_mul(64)
        .clamp(16 << 20, MQTT_MAX)
        .max(max_packet_bytes)
}

/// Check a subscription filter the way MQTT (and rumqttc) does.
///
/// # Errors
///
/// [`MqttError::InvalidFilter`] for an empty filter or misplaced wildcards.
pub fn validate_filter(filter: &str) -> Result<(), MqttError> {
    if rumqttc::valid_filter(filter) {
        Ok(())
    } else {
        Err(MqttError::InvalidFilter {
            filter: filter.to_owned(),
        })
    }
}

/// Check a topic to publish to.
///
/// # Errors
///
/// [`MqttError::InvalidTopic`] for an empty topic, one with wildcards, one longer than MQTT's
/// 65,535 bytes (rumqttc would cut its length prefix and send a corrupt packet), or one with a
/// character brokers refuse (control characters, Unicode noncharacters: Mosquitto closes the
/// connection of a client that publishes one).
pub fn validate_topic(topic: &str) -> Result<(), MqttError> {
    let characters_ok = crate::topic::first_bad_character(topic).is_none();
    if !topic.is_empty() && topic.len() <= MAX_TOPIC_BYTES && characters_ok {
        Ok(())
    } else {
        let mut end = topic.len().min(200);
        while !topic.is_char_boundary(end) {
            end -= 1;
        }
        let ellipsis = if end < topic.len() { "…" } else { "" };
        Err(MqttError::InvalidTopic {
            topic: format!("{}{ellipsis}", &topic[..end]),
        })
    }
}

/// The longest topic MQTT can carry: its length is a 16-bit prefix (one constant with the
/// filter grammar's).
pub use crate::topic::MAX_TOPIC_BYTES;

/// Map a QoS number to rumqttc's type.
///
/// # Errors
///
/// [`MqttError::InvalidQos`] for values above 2.
pub fn qos_from_u8(qos: u8) -> Result<rumqttc::QoS, MqttError> {
    rumqttc::qos(qos).map_err(|_| MqttError::InvalidQos { qos })
}

/// Encoded size of a PUBLISH packet, as rumqttc computes it against `max_packet_bytes`.
pub fn publish_packet_size(topic: &str, payload_len: usize, qos: u8) -> usize {
    let packet_id = if qos > 0 { 2 } else { 0 };
    let remaining = 2 + topic.len() + payload_len + packet_id;
    let length_bytes = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + length_bytes + remaining
}

/// A short, human description of a connection error and its kind, for the reconnect warning
/// and [`MqttStatus::last_failure`].
pub(crate) fn describe_connection_error(
    error: &ConnectionError,
    max_packet_bytes: usize,
) -> (FailureKind, String) {
    use rumqttc::ConnectReturnCode as Code;
    match error {
        // Reads surface I/O errors (TLS alerts included) through the packet decoder too.
        ConnectionError::Io(e)
        | ConnectionError::MqttState(
            StateError::Io(e) | StateError::Deserialization(rumqttc::Error::Io(e)),
        ) => describe_io(e),
        ConnectionError::Tls(rumqttc::TlsError::Io(e)) => match tls::rustls_cause(e) {
            Some(cause) => (FailureKind::Tls, tls::describe_tls(cause)),
            None => {
                let (kind, message) = describe_io(e);
                (
                    kind,
                    format!("{message} during the TLS handshake (is the port a TLS listener?)"),
                )
            }
        },
        ConnectionError::Tls(rumqttc::TlsError::TLS(cause)) => {
            (FailureKind::Tls, tls::describe_tls(cause))
        }
        ConnectionError::Tls(other) => (FailureKind::Tls, format!("TLS: {other}")),
        ConnectionError::NetworkTimeout => (FailureKind::Network, "connection timed out".into()),
        ConnectionError::FlushTimeout => (
            FailureKind::Network,
            "timed out writing to the broker".into(),
        ),
        ConnectionError::ConnectionRefused(code) => match code {
            Code::BadUserNamePassword => (
                FailureKind::Unauthorized,
                "broker rejected the user name or password ([mqtt] username/password)".into(),
            ),
            Code::NotAuthorized => (
                FailureKind::Unauthorized,
                "broker refused: not authorized (check [mqtt] username/password, and that the \
                 broker allows this user or anonymous clients)"
                    .into(),
            ),
            Code::BadClientId => (
                FailureKind::Refused,
                "broker rejected the client id ([mqtt] client_id)".into(),
            ),
            Code::RefusedProtocolVersion => (
                FailureKind::Refused,
                "broker refused MQTT 3.1.1 (protocol version not supported)".into(),
            ),
            Code::ServiceUnavailable => (FailureKind::Refused, "broker unavailable".into()),
            Code::Success => (FailureKind::Refused, "broker refused the connection".into()),
        },
        ConnectionError::MqttState(StateError::ConnectionAborted) => (
            FailureKind::Network,
            "connection closed by the broker".into(),
        ),
        ConnectionError::MqttState(StateError::AwaitPingResp) => (
            FailureKind::Protocol,
            "broker did not answer a ping (keep-alive)".into(),
        ),
        ConnectionError::MqttState(StateError::Deserialization(e)) => {
            let message = match e {
                rumqttc::Error::PayloadSizeLimitExceeded(size) => format!(
                    "received a packet of {size} bytes, more than the {} bytes the client \
                     reads (messages above max_packet_bytes = {max_packet_bytes} are dropped \
                     without closing the connection, up to that size; lower the broker's \
                     message size limit, e.g. Mosquitto's message_size_limit, to \
                     max_packet_bytes: a retained message this large is sent again at every \
                     reconnect)",
                    read_limit(max_packet_bytes)
                ),
                rumqttc::Error::OutgoingPacketTooLarge { pkt_size, max } => {
                    format!("a packet of {pkt_size} bytes exceeds max_packet_bytes = {max}")
                }
                other => format!("protocol error: {other}"),
            };
            (FailureKind::Protocol, message)
        }
        other => (FailureKind::Protocol, other.to_string()),
    }
}

fn describe_io(e: &std::io::Error) -> (FailureKind, String) {
    use std::io::ErrorKind as Kind;
    // A TLS alert from the broker (e.g. it rejected the client certificate) arrives on the
    // first read after the handshake, as an I/O error.
    if let Some(cause) = tls::rustls_cause(e) {
        return (FailureKind::Tls, tls::describe_tls(cause));
    }
    let message = match e.kind() {
        Kind::ConnectionRefused
        | Kind::ConnectionReset
        | Kind::ConnectionAborted
        | Kind::TimedOut
        | Kind::UnexpectedEof
        | Kind::BrokenPipe => e.kind().to_string(),
        _ => e.to_string(),
    };
    (FailureKind::Network, message)
}

/// Counts events and says when a summary line is due: at most one per `interval`.
///
/// Lock-free so that cloned [`Publisher`]s on many threads can share it.
#[derive(Debug)]
pub(crate) struct RateLimitedCount {
    epoch: Instant,
    interval_ms: u64,
    /// Milliseconds since `epoch` of the last report, `u64::MAX` before the first.
    last_report_ms: AtomicU64,
    unreported: AtomicU64,
}

impl RateLimitedCount {
    /// Interval used for all drop warnings of this module.
    pub(crate) const INTERVAL: Duration = Duration::from_secs(5);

    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            interval_ms: interval.as_millis().try_into().unwrap_or(u64::MAX),
            last_report_ms: AtomicU64::new(u64::MAX),
            unreported: AtomicU64::new(0),
        }
    }

    /// Count one event; returns `Some(n)` when a line reporting `n` events should be logged now.
    pub(crate) fn record(&self) -> Option<u64> {
        self.add();
        self.due()
    }

    /// Count one event; the caller checks [`due`](Self::due) later.
    pub(crate) fn add(&self) {
        self.unreported.fetch_add(1, Ordering::Relaxed);
    }

    /// `Some(n)` when events are unreported and the interval has passed since the last line.
    pub(crate) fn due(&self) -> Option<u64> {
        if self.unreported.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.last_report_ms.load(Ordering::Relaxed);
        let is_due = last == u64::MAX || now.saturating_sub(last) >= self.interval_ms;
        if is_due
            && self
                .last_report_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.unreported.swap(0, Ordering::Relaxed))
        } else {
            None
        }
    }
}

/// Formats a duration the way the config is written (`500ms`, `1s`, `30s`).
pub(crate) struct Human(pub Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Whole milliseconds: back-off delays never need more precision in a log line.
        let millis = Duration::from_millis(self.0.as_millis().try_into().unwrap_or(u64::MAX));
        write!(f, "{}", humantime::format_duration(millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_carry_limits_and_identity() {
        let cfg = MqttConfig {
            username: Some("u".into()),
            password: Some("p".into()),
            max_packet_bytes: 123_456,
            ..MqttConfig::default()
        };
        let options = mqtt_options(&cfg, Some("sim")).unwrap();
        assert_eq!(options.client_id(), "edgeflow-sim");
        // Incoming: read well above the limit so larger messages are dropped, not fatal.
        assert_eq!(options.max_packet_size(), read_limit(123_456));
        // A client with a suffix (the simulator) never keeps a session.
        assert!(options.clean_session());
        assert_eq!(options.keep_alive(), Duration::from_secs(30));
        let login = options.credentials().expect("credentials set");
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("u", "p")
        );
        assert_eq!(options.broker_address(), ("127.0.0.1".to_string(), 1883));
    }

    #[test]
    fn a_persistent_session_at_qos_1_acknowledges_by_hand() {
        let qos1 = MqttConfig::default();
        let options = mqtt_options(&qos1, None).unwrap();
        assert!(!options.clean_session());
        assert!(options.manual_acks());
        // The simulator and the monitor never keep a session.
        let sim = mqtt_options(&qos1, Some("sim")).unwrap();
        assert!(sim.clean_session() && !sim.manual_acks());
        let qos0 = MqttConfig {
            subscribe_qos: 0,
            ..MqttConfig::default()
        };
        let options = mqtt_options(&qos0, None).unwrap();
        assert!(options.clean_session() && !options.manual_acks());
        let forced_clean = MqttConfig {
            clean_session: Some(true),
            ..MqttConfig::default()
        };
        assert!(mqtt_options(&forced_clean, None).unwrap().clean_session());
        let forced_persistent = MqttConfig {
            subscribe_qos: 0,
            clean_session: Some(false),
            ..MqttConfig::default()
        };
        assert!(!mqtt_options(&forced_persistent, None)
            .unwrap()
            .clean_session());
        let embedded = MqttConfig {
            embedded: true,
            ..MqttConfig::default()
        };
        assert!(mqtt_options(&embedded, None).unwrap().clean_session());
    }

    #[test]
    fn embedded_connects_to_loopback_whatever_the_host() {
        let cfg = MqttConfig {
            embedded: true,
            host: "broker.example".into(),
            port: 18830,
            ..MqttConfig::default()
        };
        assert_eq!(
            mqtt_options(&cfg, None).unwrap().broker_address(),
            ("127.0.0.1".to_string(), 18830)
        );
        assert_eq!(broker_address(&cfg), "127.0.0.1:18830");
    }

    #[test]
    fn packet_size_matches_rumqttc() {
        for (topic, len, qos) in [("a/b", 0, 0), ("t", 125, 1), ("x/y/z", 20_000, 0)] {
            let mut publish = rumqttc::Publish::new(topic, qos_from_u8(qos).unwrap(), vec![0; len]);
            publish.pkid = u16::from(qos > 0);
            let mut buf = bytes::BytesMut::new();
            let written = rumqttc::Packet::Publish(publish)
                .write(&mut buf, usize::MAX)
                .unwrap();
            assert_eq!(
                publish_packet_size(topic, len, qos),
                written,
                "{topic} {len}"
            );
        }
    }

    #[test]
    fn topics_and_filters_are_checked() {
        assert!(validate_filter("sensors/+/temp").is_ok());
        assert!(validate_filter("sensors/#").is_ok());
        assert!(validate_filter("sensors/#/x").is_err());
        assert!(validate_topic("edgeflow/p/k/forecast").is_ok());
        assert!(validate_topic("edgeflow/+/k").is_err());
        assert!(validate_topic("").is_err());
        assert!(qos_from_u8(3).is_err());
    }

    #[test]
    fn rate_limited_count_reports_first_then_waits() {
        let count = RateLimitedCount::new(Duration::from_secs(3600));
        assert_eq!(count.record(), Some(1));
        assert_eq!(count.record(), None);
        assert_eq!(count.record(), None);
        assert_eq!(count.due(), None);
        let count = RateLimitedCount::new(Duration::ZERO);
        assert_eq!(count.record(), Some(1));
        count.unreported.fetch_add(2, Ordering::Relaxed);
        assert_eq!(count.due(), Some(2));
    }
}

#[cfg(test)]
mod network_tests;

#[cfg(test)]
mod topic_tests {
    use super::*;

    #[test]
    fn topics_a_broker_refuses_are_never_published() {
        for bad in [
            "",
            "a/+/b",
            "a/#",
            "a/\u{0}",
            "a/\u{1}",
            "a/\tb",
            "a/\u{7f}",
            "a/\u{85}",
            "a/\u{fffe}",
        ] {
            assert!(validate_topic(bad).is_err(), "{bad:?}");
        }
        let too_long = "t".repeat(MAX_TOPIC_BYTES + 1);
        let error = validate_topic(&too_long).unwrap_err().to_string();
        // The message shows the start of the topic, not 64 KiB of it.
        assert!(error.len() < 500, "{error}");
        assert!(error.contains("65,535"), "{error}");
        for good in [
            "a/b",
            "edgeflow/température/salle 2/forecast",
            "$x/y",
            "a//b",
        ] {
            assert!(validate_topic(good).is_ok(), "{good:?}");
        }
        assert!(validate_topic(&"t".repeat(MAX_TOPIC_BYTES)).is_ok());
    }

    #[test]
    fn the_client_reads_well_above_the_message_limit_within_mqtt_maximum() {
        assert_eq!(read_limit(256 * 1024), 16 << 20);
        assert_eq!(read_limit(1024 * 1024), 64 << 20);
        assert_eq!(read_limit(268_435_455), 268_435_455);
        assert!(read_limit(10 << 20) >= 10 << 20);
    }
}
