//! The publish queue and the task that feeds rumqttc from it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use rumqttc::{AsyncClient, SubscribeFilter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::acks::{self, Acknowledger};
use super::ends::{ConnectionEnds, Ends};
use super::subscriptions::{lock_filters, subscription_filters, SharedFilters};
use super::{
    publish_packet_size, qos_from_u8, validate_topic, MqttError, MqttStatus, Outgoing,
    RateLimitedCount, Task,
};

/// A filter nobody subscribes to: with a persistent session, [`Publisher::stop_input`]
/// unsubscribes from it (and nothing else) only to wake the event loop.
const WAKE_FILTER: &str = "$edgeflow/stop-input";

/// How long [`Publisher::publish_waiting`] sleeps at most before looking at the queue and the
/// connection again (a wake-up from the publisher task normally comes first).
const WAIT_SLICE: Duration = Duration::from_millis(20);

/// Wakes [`Publisher::publish_waiting`] callers when the publisher task has taken messages
/// from the queue. A std mutex and condvar, not an async wait: the callers are key actors in
/// a shard's synchronous handler on the shard's own thread, where nothing else would run
/// meanwhile anyway.
#[derive(Default)]
struct Room {
    /// Callers inside `send_or_wait`: the publisher task takes the lock only when there are.
    waiters: AtomicUsize,
    lock: Mutex<()>,
    freed: Condvar,
}

impl Room {
    /// Queue `command`, sleeping once (at most [`WAIT_SLICE`]) if the queue is full.
    fn send_or_wait(
        &self,
        tx: &mpsc::Sender<Command>,
        command: Command,
    ) -> Result<(), mpsc::error::TrySendError<Command>> {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        // Tried again under the lock: the publisher task notifies under it, so room made
        // after this try wakes the wait below.
        let guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let sent = match tx.try_send(command) {
            Err(mpsc::error::TrySendError::Full(command)) => {
                let (guard, _) = self
                    .freed
                    .wait_timeout(guard, WAIT_SLICE)
                    .unwrap_or_else(PoisonError::into_inner);
                drop(guard);
                tx.try_send(command)
            }
            other => other,
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        sent
    }

    /// Wake the waiting callers, if any (one atomic load otherwise).
    fn notify(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.freed.notify_all();
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
/// they wait in the queue; once it is full, [`try_publish`](Self::try_publish) drops and
/// counts, and [`publish_waiting`](Self::publish_waiting) waits while the output connection
/// is up (backpressure) and drops and counts while it is down.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

struct Shared {
    status: Arc<MqttStatus>,
    /// The input connection's client, for UNSUBSCRIBE on `stop_input` and the subscriptions
    /// of a reload (only `try_*` calls: never blocks the caller).
    input_client: AsyncClient,
    /// A persistent session: `stop_input` must not UNSUBSCRIBE (the broker would stop
    /// queueing readings for the next start).
    persistent: bool,
    acknowledger: Acknowledger,
    /// The subscriptions, shared with the event loop.
    filters: SharedFilters,
    input_stop: CancellationToken,
    max_packet_bytes: usize,
    /// Cancelled when the input connection's event loop has returned.
    input_stopped: CancellationToken,
    /// Cancelled when the event loop that publishes has returned.
    output_stopped: CancellationToken,
    /// Outputs have a connection of their own: waiting for room in the queue cannot stop
    /// the input connection's event loop (see [`Publisher::publish_waiting`]).
    may_wait: bool,
    room: Room,
    shutdown: CancellationToken,
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

/// Create the queue, the publisher task body and the ack task body.
pub(crate) fn start(
    ends: Ends,
    acks: Option<(mpsc::Sender<u16>, mpsc::Receiver<u16>)>,
    filters: SharedFilters,
    input_stop: CancellationToken,
    (capacity, max_packet_bytes): (usize, usize),
    status: Arc<MqttStatus>,
    shutdown: CancellationToken,
) -> (Publisher, [Task; 2]) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let (ack_tx, ack_rx) = acks.unzip();
    let Ends { input, output } = ends;
    let separate = output.is_some();
    let output = output.unwrap_or_else(|| input.clone());
    let shared = Arc::new(Shared {
        status: Arc::clone(&status),
        input_client: input.client.clone(),
        persistent: ack_tx.is_some(),
        acknowledger: Acknowledger::new(ack_tx),
        filters,
        input_stop,
        max_packet_bytes,
        input_stopped: input.stopped.clone(),
        output_stopped: output.stopped.clone(),
        may_wait: separate,
        room: Room::default(),
        shutdown: shutdown.clone(),
        queue_full: RateLimitedCount::new(RateLimitedCount::INTERVAL),
        rejected: RateLimitedCount::new(RateLimitedCount::INTERVAL),
    });
    // Cancelled by the publisher task once every output is handed over: the ack task then
    // sends the last PUBACKs and the input connection's DISCONNECT.
    let close_input = CancellationToken::new();
    let publisher = run(
        rx,
        Arc::clone(&shared),
        output,
        separate,
        close_input.clone(),
        shutdown.clone(),
    );
    let acks = acks::run(ack_rx, input, close_input, shutdown);
    (
        Publisher { tx, shared },
        [Box::pin(publisher), Box::pin(acks)],
    )
}

impl Publisher {
    /// Queue a message without waiting.
    ///
    /// Returns false, counts the message in `publish_dropped` and logs (at most one line per
    /// 5 s) when the queue is full, the connection has been shut down, or the message is
    /// invalid: a topic with wildcards, a QoS above 2, or larger than `max_packet_bytes`
    /// (rumqttc would otherwise fail the whole connection on it).
    pub fn try_publish(&self, msg: Outgoing) -> bool {
        self.queue(msg, false)
    }

    /// Queue a message; while the queue is full and the output connection is up, wait for
    /// room (blocking the calling thread) instead of dropping. The key actors publish with
    /// this: a burst of outputs slows the shard down, which fills the ingest queue, which
    /// (at QoS 1) stops the input connection from reading, and the broker keeps the readings.
    /// Nothing in that chain waits on the shard in turn, because outputs go out on a
    /// connection of their own; with one connection for both (the simulator), this is
    /// [`try_publish`](Self::try_publish).
    ///
    /// Drops and counts like `try_publish` when the queue is full and the output connection
    /// is down (outputs of an outage wait in the queue, up to its capacity, and the shards go
    /// on learning), once input has stopped (shutdown: the drain must not wait on a broker
    /// that takes nothing), or when the message is invalid. A connection that stays open but
    /// takes nothing ends the wait when rumqttc's keep-alive gives up on it.
    /// Must not be called from the thread that runs the MQTT tasks.
    pub fn publish_waiting(&self, msg: Outgoing) -> bool {
        self.queue(msg, self.shared.may_wait)
    }

    /// Check and queue `msg`; on a full queue wait for room (when `may_wait` and
    /// [`Publisher::can_wait`]) or drop and count.
    fn queue(&self, msg: Outgoing, may_wait: bool) -> bool {
        if let Err(e) = self.check(&msg) {
            self.count_rejected(&e);
            return false;
        }
        let mut sent = self.tx.try_send(Command::Publish(msg));
        let mut waited = false;
        loop {
            match sent {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.count_rejected(&MqttError::Closed);
                    return false;
                }
                Err(mpsc::error::TrySendError::Full(command)) => {
                    if !(may_wait && self.can_wait()) {
                        return self.count_full();
                    }
                    if !waited {
                        waited = true;
                        // Counted when the wait begins: a shard held back shows at once.
                        self.shared
                            .status
                            .publish_waits
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    sent = self.shared.room.send_or_wait(&self.tx, command);
                }
            }
        }
    }

    /// Whether a full queue may be waited on now: the output connection is up, and the daemon
    /// is not stopping (the drain and the final checkpoint must finish within
    /// `shutdown_deadline` even when nothing leaves).
    fn can_wait(&self) -> bool {
        let shared = &self.shared;
        shared.status.output_connected.load(Ordering::Relaxed)
            && !shared.input_stop.is_cancelled()
            && !shared.output_stopped.is_cancelled()
            && !shared.shutdown.is_cancelled()
    }

    /// A full queue: count, and log at most once per interval.
    fn count_full(&self) -> bool {
        self.shared
            .status
            .publish_dropped
            .fetch_add(1, Ordering::Relaxed);
        if let Some(dropped) = self.shared.queue_full.record() {
            warn!(
                "MQTT publish queue full (capacity {}): dropped {dropped} outgoing messages \
                 since the last report; is the broker reachable?",
                self.tx.max_capacity()
            );
        }
        false
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
            if let Err(e) = self.shared.input_client.try_unsubscribe(WAKE_FILTER) {
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
            if let Err(e) = self.shared.input_client.try_unsubscribe(filter.clone()) {
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
                if let Err(e) = self.shared.input_client.try_unsubscribe(filter.clone()) {
                    warn!("cannot unsubscribe from {filter:?} now ({e}); it is dropped at the next reconnect");
                }
            }
            if !added.is_empty() {
                if let Err(e) = self
                    .shared
                    .input_client
                    .try_subscribe_many(added.iter().cloned())
                {
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
        let shared = &self.shared;
        if shared.output_stopped.is_cancelled() {
            return Ok(());
        }
        if !shared.status.output_connected.load(Ordering::Relaxed) {
            // Nothing can be sent: waiting for the broker to come back would hold the
            // shutdown for the whole deadline. What is queued is counted as dropped when the
            // publisher task stops.
            let unsent = self.queue_depth();
            if unsent > 0 {
                warn!("not connected to the MQTT broker: {unsent} queued outputs are not sent");
            }
            return Ok(());
        }
        // The input connection is closed after the outputs (by the ack task); it is waited
        // for only while it is up (the caller's hard stop ends a reconnect attempt).
        let input_up = shared.status.connected.load(Ordering::Relaxed);
        let flushed = tokio::time::timeout(deadline, async {
            // An error means the publisher task is gone; the event loop stops with it.
            let _ = self.tx.send(Command::Disconnect).await;
            shared.output_stopped.cancelled().await;
            if input_up {
                shared.input_stopped.cancelled().await;
            }
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

/// After a drain of fewer than [`PUBLISH_DRAIN`] messages the publisher task sleeps this long
/// before it takes the next: an output waits at most this much longer, and the shards' sends
/// wake this thread once per pause instead of once per few outputs (measured in BENCHMARKS.md,
/// "Outputs on a connection of their own"). A full drain is followed at once by the next.
const PUBLISH_PACE: Duration = Duration::from_millis(1);

/// The publisher task body. Takes what is queued (up to [`PUBLISH_DRAIN`] messages), wakes
/// the callers waiting for room, waits once for a session of the output connection, and hands
/// the messages to rumqttc in order: one wake, one session check and one cancellation check
/// per drain, not per message. On [`Command::Disconnect`] it sends the output connection's
/// DISCONNECT (when it has one of its own) and cancels `close_input`.
async fn run(
    mut rx: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    output: ConnectionEnds,
    separate: bool,
    close_input: CancellationToken,
    shutdown: CancellationToken,
) {
    let ConnectionEnds {
        client,
        mut connected,
        stopped,
    } = output;
    let status = &shared.status;
    let mut drained: Vec<Command> = Vec::with_capacity(PUBLISH_DRAIN);
    let mut pending: std::collections::VecDeque<Command> =
        std::collections::VecDeque::with_capacity(PUBLISH_DRAIN);
    'run: loop {
        let received = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            n = rx.recv_many(&mut drained, PUBLISH_DRAIN) => n,
        };
        if received == 0 {
            break;
        }
        shared.room.notify();
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
        if !disconnect && received < PUBLISH_DRAIN {
            // A short drain: let outputs gather for a moment. While this task sleeps, a
            // shard's send wakes nobody (no waiter is registered on the queue), so a busy
            // shard thread no longer wakes this thread for every few outputs.
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break 'run,
                () = stopped.cancelled() => break 'run,
                () = tokio::time::sleep(PUBLISH_PACE) => {}
            }
        }
        if disconnect {
            // Queued behind every publish handed over so far: the event loop writes them
            // first, then DISCONNECT, then returns. With one connection for both, the ack
            // task sends it after the last PUBACKs.
            if separate {
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
            }
            break;
        }
    }
    close_input.cancel();

    // What was taken but not handed over, and whatever is still queued, will not be sent:
    // count it.
    for command in pending.drain(..).chain(drained.drain(..)) {
        if let Command::Publish(_) = command {
            status.publish_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    rx.close();
    shared.room.notify();
    while let Ok(command) = rx.try_recv() {
        if let Command::Publish(_) = command {
            status.publish_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    debug!("MQTT publisher stopped");
}
