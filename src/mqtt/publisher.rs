//! The publish queue and the task that feeds rumqttc from it.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, SubscribeFilter};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::connection::{lock_filters, subscription_filters, SharedFilters};
use super::{
    publish_packet_size, qos_from_u8, validate_topic, Incoming, MqttError, MqttStatus, Outgoing,
    RateLimitedCount,
};

/// Capacity of the queue of acknowledgements: one entry per QoS 1 message the broker has sent
/// and the daemon has not acknowledged yet, of which there are at most as many as packet ids.
pub(crate) const ACK_QUEUE: usize = 1 << 16;

/// A filter nobody subscribes to: with a persistent session, [`Publisher::stop_input`]
/// unsubscribes from it (and nothing else) only to wake the event loop.
const WAKE_FILTER: &str = "$edgeflow/stop-input";

/// Acknowledges QoS 1 messages once the daemon has taken them over (manual acks, used with a
/// persistent session). Cheap to clone; a no-op when rumqttc acknowledges by itself.
///
/// With a persistent session, an unacknowledged message is sent again by the broker at the
/// next session (of this daemon or of the next one started with the same client id), so a
/// reading is acknowledged only once it has been handed to its shard: a message read but
/// discarded at shutdown, or lost in the ingest queue when the process dies, is not lost.
/// The PUBACKs go through the publisher task, in order, ahead of queued outputs; the caller
/// never waits.
#[derive(Clone, Debug, Default)]
pub struct Acknowledger {
    tx: Option<mpsc::Sender<u16>>,
}

impl Acknowledger {
    pub(crate) fn new(tx: Option<mpsc::Sender<u16>>) -> Self {
        Self { tx }
    }

    /// Whether messages must be acknowledged through this (manual acks).
    pub fn is_manual(&self) -> bool {
        self.tx.is_some()
    }

    /// Acknowledge `message` (QoS 1 only; nothing for QoS 0 or automatic acks). Never waits:
    /// the queue holds one entry per unacknowledged packet id, so it is full only after a
    /// reconnect made the broker send messages again; a PUBACK not queued then is harmless
    /// (the broker sends the message once more at the next session).
    pub fn ack(&self, message: &Incoming) {
        if message.qos != rumqttc::QoS::AtMostOnce {
            self.ack_packet(message.pkid);
        }
    }

    /// Acknowledge the QoS 1 message with packet id `pkid` (see [`Acknowledger::ack`]).
    pub fn ack_packet(&self, pkid: u16) {
        if let Some(tx) = self.tx.as_ref().filter(|_| pkid != 0) {
            if let Err(e) = tx.try_send(pkid) {
                debug!("MQTT acknowledgement of packet {pkid} not queued: {e}");
            }
        }
    }
}

/// What the publisher task is asked to do, in queue order.
enum Command {
    Publish(Outgoing),
    /// Everything queued before has been handed over: send DISCONNECT and stop.
    Disconnect,
}

/// Handle to the bounded queue of outgoing messages. Cheap to clone; one per actor is fine.
///
/// Messages are sent in queue order by one publisher task. While the broker is unreachable
/// they wait in the queue; once it is full, [`try_publish`](Self::try_publish) drops and counts.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

struct Shared {
    status: Arc<MqttStatus>,
    /// For UNSUBSCRIBE on `stop_input` (only `try_*` calls: never blocks the caller).
    client: AsyncClient,
    /// A persistent session: `stop_input` must not UNSUBSCRIBE (the broker would stop
    /// queueing readings for the next start).
    persistent: bool,
    acknowledger: Acknowledger,
    /// The subscriptions, shared with the event loop.
    filters: SharedFilters,
    input_stop: CancellationToken,
    max_packet_bytes: usize,
    /// Cancelled when the event-loop task has returned.
    stopped: CancellationToken,
    queue_full: RateLimitedCount,
    rejected: RateLimitedCount,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("queue_depth", &self.queue_depth())
            .field("capacity", &self.tx.max_capacity())
            .finish()
    }
}

/// Create the queue and the publisher task body.
#[allow(clippy::too_many_arguments)] // internal wiring, called from `connect` only
pub(crate) fn start(
    client: AsyncClient,
    acks: Option<(mpsc::Sender<u16>, mpsc::Receiver<u16>)>,
    filters: SharedFilters,
    input_stop: CancellationToken,
    capacity: usize,
    max_packet_bytes: usize,
    status: Arc<MqttStatus>,
    connected: watch::Receiver<bool>,
    stopped: CancellationToken,
    shutdown: CancellationToken,
) -> (Publisher, impl Future<Output = ()> + Send + 'static) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let (ack_tx, ack_rx) = acks.unzip();
    let shared = Arc::new(Shared {
        status: Arc::clone(&status),
        client: client.clone(),
        persistent: ack_tx.is_some(),
        acknowledger: Acknowledger::new(ack_tx),
        filters,
        input_stop,
        max_packet_bytes,
        stopped: stopped.clone(),
        queue_full: RateLimitedCount::new(RateLimitedCount::INTERVAL),
        rejected: RateLimitedCount::new(RateLimitedCount::INTERVAL),
    });
    let task = run(rx, ack_rx, client, connected, status, stopped, shutdown);
    (Publisher { tx, shared }, task)
}

impl Publisher {
    /// Queue a message without waiting.
    ///
    /// Returns false, counts the message in `publish_dropped` and logs (at most one line per
    /// 5 s) when the queue is full, the connection has been shut down, or the message is
    /// invalid: a topic with wildcards, a QoS above 2, or larger than `max_packet_bytes`
    /// (rumqttc would otherwise fail the whole connection on it).
    pub fn try_publish(&self, msg: Outgoing) -> bool {
        if let Err(e) = self.check(&msg) {
            self.count_rejected(&e);
            return false;
        }
        match self.tx.try_send(Command::Publish(msg)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared
                    .status
                    .publish_dropped
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(dropped) = self.shared.queue_full.record() {
                    warn!(
                        "MQTT publish queue full (capacity {}): dropped {dropped} outgoing \
                         messages since the last report; is the broker reachable?",
                        self.tx.max_capacity()
                    );
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.count_rejected(&MqttError::Closed);
                false
            }
        }
    }

    /// Queue a message, waiting for room in the queue (backpressure for load generators and
    /// tools; actors use [`try_publish`](Self::try_publish)).
    ///
    /// # Errors
    ///
    /// The message is invalid (see `try_publish`), or [`MqttError::Closed`] when the
    /// connection has been shut down. The message is counted in `publish_dropped`.
    pub async fn publish(&self, msg: Outgoing) -> Result<(), MqttError> {
        let checked = match self.check(&msg) {
            Ok(()) => self
                .tx
                .send(Command::Publish(msg))
                .await
                .map_err(|_| MqttError::Closed),
            Err(e) => Err(e),
        };
        if checked.is_err() {
            self.shared
                .status
                .publish_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
        checked
    }

    /// The handle that acknowledges received QoS 1 messages (see [`Acknowledger`]).
    pub fn acknowledger(&self) -> Acknowledger {
        self.shared.acknowledger.clone()
    }

    /// Stop input, keep the connection for publishing (shutdown step 1, see the
    /// [module docs](super)).
    ///
    /// The event loop drops its ingest sender, so the ingest side's `recv()` returns `None`
    /// once it has drained what was queued; messages arriving later are discarded. With a
    /// clean session the subscriptions are dropped (UNSUBSCRIBE now, none on later
    /// reconnects); with a persistent session they are kept, so the broker goes on queueing
    /// readings for the next start, and the discarded messages are not acknowledged (the
    /// broker sends them again then). Does not wait. Idempotent.
    pub fn stop_input(&self) {
        if self.shared.input_stop.is_cancelled() {
            return;
        }
        self.shared.input_stop.cancel();
        if self.shared.persistent {
            // Only to wake a connected, idle event loop (the UNSUBACK is an event).
            if let Err(e) = self.shared.client.try_unsubscribe(WAKE_FILTER) {
                debug!("cannot wake the MQTT event loop while stopping input: {e}");
            }
            return;
        }
        // Also wakes a connected, idle event loop: the UNSUBSCRIBE it writes is an event. If
        // the request channel is full, events are flowing anyway.
        let paths: Vec<String> = lock_filters(&self.shared.filters)
            .iter()
            .map(|f| f.path.clone())
            .collect();
        for filter in paths {
            if let Err(e) = self.shared.client.try_unsubscribe(filter.clone()) {
                debug!("cannot unsubscribe from {filter:?} while stopping input: {e}");
            }
        }
    }

    /// Replace the subscriptions (a reload): UNSUBSCRIBE from the filters no longer wanted
    /// and SUBSCRIBE to the new ones now, if connected, and use the new list after every later
    /// ConnAck. Does not wait for the broker's answers. Returns `(added, removed)`.
    pub fn set_subscriptions(&self, subscriptions: Vec<(String, u8)>) -> (usize, usize) {
        let next = subscription_filters(subscriptions);
        let (added, removed): (Vec<SubscribeFilter>, Vec<String>) = {
            let mut current = lock_filters(&self.shared.filters);
            let added = next
                .iter()
                .filter(|f| !current.iter().any(|c| c.path == f.path && c.qos == f.qos))
                .cloned()
                .collect();
            let removed = current
                .iter()
                .filter(|c| !next.iter().any(|f| f.path == c.path))
                .map(|c| c.path.clone())
                .collect();
            *current = next;
            (added, removed)
        };
        let live = self.shared.status.connected.load(Ordering::Relaxed)
            && !self.shared.input_stop.is_cancelled();
        if live {
            for filter in &removed {
                if let Err(e) = self.shared.client.try_unsubscribe(filter.clone()) {
                    warn!("cannot unsubscribe from {filter:?} now ({e}); it is dropped at the next reconnect");
                }
            }
            if !added.is_empty() {
                if let Err(e) = self.shared.client.try_subscribe_many(added.iter().cloned()) {
                    warn!("cannot subscribe to the new topic filters now ({e}); they are subscribed at the next reconnect");
                }
            }
        }
        (added.len(), removed.len())
    }

    /// Messages waiting in the queue.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Flush the queue and disconnect gracefully (shutdown step 3, see the [module docs](super)).
    ///
    /// Every message queued before this call is handed to the broker in order, then DISCONNECT
    /// is sent; returns once the event-loop task has stopped. QoS 1 messages are written before
    /// the DISCONNECT on the same stream, but their PubAcks are not awaited. Calling it after
    /// the connection has stopped returns `Ok` at once.
    ///
    /// # Errors
    ///
    /// [`MqttError::DisconnectTimeout`] when this did not finish within `deadline` (typically
    /// the broker is unreachable); the caller then cancels `shutdown` to stop the tasks.
    pub async fn disconnect(&self, deadline: Duration) -> Result<(), MqttError> {
        let stopped = &self.shared.stopped;
        if stopped.is_cancelled() {
            return Ok(());
        }
        if !self.shared.status.connected.load(Ordering::Relaxed) {
            // Nothing can be sent: waiting for the broker to come back would hold the
            // shutdown for the whole deadline. What is queued is counted as dropped when the
            // publisher task stops.
            let unsent = self.queue_depth();
            if unsent > 0 {
                warn!("not connected to the MQTT broker: {unsent} queued outputs are not sent");
            }
            return Ok(());
        }
        let flushed = tokio::time::timeout(deadline, async {
            // An error means the publisher task is gone; the event loop stops with it.
            let _ = self.tx.send(Command::Disconnect).await;
            stopped.cancelled().await;
        })
        .await;
        flushed.map_err(|_| MqttError::DisconnectTimeout {
            deadline,
            unsent: self.queue_depth(),
        })
    }

    fn check(&self, msg: &Outgoing) -> Result<(), MqttError> {
        validate_topic(&msg.topic)?;
        qos_from_u8(msg.qos)?;
        let size = publish_packet_size(&msg.topic, msg.payload.len(), msg.qos);
        if size > self.shared.max_packet_bytes {
            return Err(MqttError::PacketTooLarge {
                topic: msg.topic.clone(),
                size,
                max: self.shared.max_packet_bytes,
            });
        }
        Ok(())
    }

    fn count_rejected(&self, error: &MqttError) {
        self.shared
            .status
            .publish_dropped
            .fetch_add(1, Ordering::Relaxed);
        if let Some(dropped) = self.shared.rejected.record() {
            warn!("dropped {dropped} outgoing MQTT messages since the last report; last: {error}");
        }
    }
}

/// Messages the publisher task takes from the queue at once (at most).
const PUBLISH_DRAIN: usize = 256;

/// Receive queued acknowledgements into `buffer`; pending for ever without an ack queue, 0
/// once it is closed.
async fn recv_acks(acks: &mut Option<mpsc::Receiver<u16>>, buffer: &mut Vec<u16>) -> usize {
    match acks {
        Some(acks) => acks.recv_many(buffer, PUBLISH_DRAIN).await,
        None => std::future::pending().await,
    }
}

/// Hand the PUBACKs for `pkids` to rumqttc, in order, and clear the list.
async fn send_acks(client: &AsyncClient, pkids: &mut Vec<u16>) {
    for pkid in pkids.drain(..) {
        // Only the packet id and the QoS are read; an empty topic and payload allocate nothing.
        let message = rumqttc::Publish {
            dup: false,
            qos: rumqttc::QoS::AtLeastOnce,
            retain: false,
            topic: String::new(),
            pkid,
            payload: bytes::Bytes::new(),
        };
        if let Err(e) = client.ack(&message).await {
            debug!("MQTT acknowledgement of packet {pkid} failed: {e}");
        }
    }
}

/// The publisher task body. Takes what is queued (up to [`PUBLISH_DRAIN`] messages), waits
/// once for a session, and hands the messages to rumqttc in order: one wake, one session
/// check and one cancellation check per drain, not per message.
async fn run(
    mut rx: mpsc::Receiver<Command>,
    mut acks: Option<mpsc::Receiver<u16>>,
    client: AsyncClient,
    mut connected: watch::Receiver<bool>,
    status: Arc<MqttStatus>,
    stopped: CancellationToken,
    shutdown: CancellationToken,
) {
    let mut drained: Vec<Command> = Vec::with_capacity(PUBLISH_DRAIN);
    let mut pending: std::collections::VecDeque<Command> =
        std::collections::VecDeque::with_capacity(PUBLISH_DRAIN);
    let mut ack_buffer: Vec<u16> = Vec::with_capacity(PUBLISH_DRAIN);
    'run: loop {
        let received = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            n = recv_acks(&mut acks, &mut ack_buffer) => {
                if n == 0 {
                    acks = None;
                } else if *connected.borrow() {
                    // Waits only while rumqttc's request channel is full.
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => break,
                        () = stopped.cancelled() => break,
                        () = send_acks(&client, &mut ack_buffer) => {}
                    }
                } else {
                    // The broker sends these messages again when the session resumes: they
                    // are acknowledged then.
                    ack_buffer.clear();
                }
                continue;
            }
            n = rx.recv_many(&mut drained, PUBLISH_DRAIN) => n,
        };
        if received == 0 {
            break;
        }
        pending.extend(drained.drain(..));

        // Hold messages while there is no session: requests queued in rumqttc while it is
        // disconnected are discarded when the next clean session starts.
        let session = tokio::select! {
            biased;
            () = shutdown.cancelled() => false,
            () = stopped.cancelled() => false,
            up = connected.wait_for(|up| *up) => up.is_ok(),
        };
        if !session {
            break;
        }

        // Hand the drain over in order. `publish_bytes` moves the topic and the payload into
        // the packet (`publish` would copy the topic), and completes at once while rumqttc's
        // request channel has room.
        let handed_over = async {
            while let Some(command) = pending.pop_front() {
                // Acknowledgements first: they are small, and input waits for them.
                if let Some(acks) = acks.as_mut() {
                    while let Ok(pkid) = acks.try_recv() {
                        ack_buffer.push(pkid);
                    }
                    send_acks(&client, &mut ack_buffer).await;
                }
                match command {
                    Command::Publish(msg) => {
                        // Checked by `Publisher` already: the fallback is never used.
                        let qos = qos_from_u8(msg.qos).unwrap_or(rumqttc::QoS::AtMostOnce);
                        let payload = bytes::Bytes::from(msg.payload);
                        match client
                            .publish_bytes(msg.topic, qos, msg.retain, payload)
                            .await
                        {
                            Ok(()) => {
                                status.published.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                status.publish_dropped.fetch_add(1, Ordering::Relaxed);
                                debug!("MQTT publish failed: {e}");
                            }
                        }
                    }
                    Command::Disconnect => return true,
                }
            }
            false
        };
        let disconnect = tokio::select! {
            biased;
            () = shutdown.cancelled() => break 'run,
            () = stopped.cancelled() => break 'run,
            disconnect = handed_over => disconnect,
        };
        if disconnect {
            // Queued behind every publish handed over so far: the event loop writes them
            // first, then DISCONNECT, then returns.
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {}
                () = stopped.cancelled() => {}
                sent = client.disconnect() => {
                    if let Err(e) = sent {
                        debug!("MQTT disconnect request failed: {e}");
                    }
                }
            }
            break;
        }
    }

    // What was taken but not handed over, and whatever is still queued, will not be sent:
    // count it.
    for command in pending.drain(..).chain(drained.drain(..)) {
        if let Command::Publish(_) = command {
            status.publish_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    // Whatever is still queued will not be sent: count it.
    rx.close();
    while let Ok(command) = rx.try_recv() {
        if let Command::Publish(_) = command {
            status.publish_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    debug!("MQTT publisher stopped");
}
