//! The event-loop task: connect, resubscribe on every ConnAck, hand messages to ingest, back off
//! on errors.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, SubscribeFilter};
use rumqttc::{Outgoing as Sent, SubscribeReasonCode};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::acks::{ack_marker, Acknowledger, ACK_QUEUE};
use super::ends::{ConnectionEnds, Ends};
use super::publisher::{self, Publisher};
use super::subscriptions::{lock_filters, subscription_filters, SharedFilters};
use super::{
    broker_address, describe_connection_error, mqtt_options, output_options, publish_packet_size,
    Human, Incoming, MqttStatus, RateLimitedCount, Task,
};
use crate::config::MqttConfig;

/// Start the connections to the broker of `cfg`.
///
/// Returns the [`Publisher`] handle and the task bodies the caller spawns (e.g. with
/// `tokio::spawn`) and awaits at shutdown: the input connection's event loop, the output
/// connection's event loop and the publisher task. Nothing happens until they are polled; the
/// first connection attempts are made by the event-loop tasks, and a broker that is down is
/// not an error: it is retried with back-off from `reconnect_min` to `reconnect_max` until
/// `shutdown` is cancelled.
///
/// `subscriptions` are `(filter, qos)` pairs, subscribed to after every ConnAck. Invalid
/// filters or QoS values are logged and skipped (config validation rejects them earlier).
/// Received messages go to `ingest`; see the [module docs](super) for what happens when it is
/// full or closed, why outputs have a connection of their own, and for the shutdown order.
///
/// Every connection error is counted in `status` ([`MqttStatus::reconnects`]) and kept as its
/// [`MqttStatus::last_failure`], with the message that was logged.
///
/// # Errors
///
/// [`MqttError::Tls`](super::MqttError::Tls) when the files of `[mqtt.tls]` cannot be read or
/// used; nothing has been started then.
pub fn connect(
    cfg: &MqttConfig,
    subscriptions: Vec<(String, u8)>,
    ingest: mpsc::Sender<Incoming>,
    status: Arc<MqttStatus>,
    shutdown: CancellationToken,
) -> Result<(Publisher, Vec<Task>), super::MqttError> {
    Ok(connect_with_options(
        mqtt_options(cfg, None)?,
        Some(output_options(cfg)?),
        cfg,
        subscriptions,
        ingest,
        status,
        shutdown,
    ))
}

/// [`connect`] with prepared options (the simulator uses its own client id). With `output`,
/// outputs are published on a second connection made with those options; without, the one
/// connection reads and publishes (the simulator and the demo's monitor: they never wait
/// for room in the publish queue, see [`Publisher::publish_waiting`]).
pub(crate) fn connect_with_options(
    options: MqttOptions,
    output: Option<MqttOptions>,
    cfg: &MqttConfig,
    subscriptions: Vec<(String, u8)>,
    ingest: mpsc::Sender<Incoming>,
    status: Arc<MqttStatus>,
    shutdown: CancellationToken,
) -> (Publisher, Vec<Task>) {
    let persistent = !options.clean_session();
    let acks = options
        .manual_acks()
        .then(|| mpsc::channel::<u16>(ACK_QUEUE));
    let acknowledger = Acknowledger::new(acks.as_ref().map(|(tx, _)| tx.clone()));
    let manual_acks = acknowledger.is_manual();
    // Cancelled by `Publisher::stop_input`.
    let input_stop = CancellationToken::new();
    let filters: SharedFilters = Arc::new(Mutex::new(subscription_filters(subscriptions)));
    let role = if output.is_some() {
        Role::Input
    } else {
        Role::Both
    };
    let (input, input_task) = EventLoopTask::new(options, cfg, role, Arc::clone(&status));
    let input_task = EventLoopTask {
        filters: Arc::clone(&filters),
        ingest: Some(ingest),
        input_stop: input_stop.clone(),
        wait_for_ingest: cfg.subscribe_qos >= 1,
        persistent,
        manual_acks,
        ..input_task
    }
    .run(shutdown.clone(), input.stopped.clone());
    let mut tasks: Vec<Task> = vec![Box::pin(input_task)];
    let output = output.map(|options| {
        let (ends, task) = EventLoopTask::new(options, cfg, Role::Output, Arc::clone(&status));
        tasks.push(Box::pin(task.run(shutdown.clone(), ends.stopped.clone())));
        ends
    });

    let (publisher, publisher_tasks) = publisher::start(
        Ends { input, output },
        acks,
        filters,
        input_stop,
        (cfg.publish_queue, cfg.max_packet_bytes),
        status,
        shutdown,
    );
    tasks.extend(publisher_tasks);
    (publisher, tasks)
}

/// What a connection's event loop does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Subscribes and reads; outputs go out on another connection.
    Input,
    /// Only publishes (no subscriptions): never waits on ingest, so the outputs the shards
    /// wait to queue always drain, whatever the input connection is waiting for.
    Output,
    /// Reads and publishes (the simulator and the monitor).
    Both,
}

/// Exponential back-off between reconnect attempts.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Floor for the delay: a zero delay would make the loop spin on a dead broker.
    const FLOOR: Duration = Duration::from_millis(10);

    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Self::FLOOR);
        let max = max.max(min);
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next attempt, `outage` into an outage (the time since the
    /// connection was lost, or since the first attempt): doubles from `min` up to `max`, but
    /// never exceeds a tenth of the outage so far (and never falls below `min`). Without that
    /// cap a broker back after 20 s would wait up to 16 s more for the next attempt; with it
    /// the daemon is back within 2 s, while a broker down for hours is still tried only every
    /// `max`. An attempt on a broker that is down costs one refused TCP connection.
    pub(crate) fn next_delay(&mut self, outage: Duration) -> Duration {
        let delay = self.next.min((outage / 10).max(self.min));
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Back to `min` (after a successful ConnAck).
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

/// With QoS 0 input, a read that brought fewer messages than this (rumqttc 0.25 reads at
/// most 9 packets per wake, `Network::readb`: fewer means the socket had no more) ...
const COALESCE_BELOW: usize = 9;
/// ... is followed by this pause before the next read, so the next one finds more (what
/// network cards call interrupt coalescing). Measured (BENCHMARKS.md, "Outputs on a
/// connection of their own"): without it the input connection, which does nothing else, read
/// ~2 messages per wake under load. Not at QoS 1: the broker's inflight window waits for the
/// acknowledgements, and a pause per read would cap the rate at one window per pause.
const COALESCE_PAUSE: Duration = Duration::from_millis(1);

/// How long the event loop reads after DISCONNECT, waiting for the broker to close the
/// connection (see `EventLoopTask::read_until_closed`).
const CLOSE_WAIT: Duration = Duration::from_secs(1);

struct EventLoopTask {
    eventloop: EventLoop,
    /// Used only with `try_*` calls: awaiting the bounded request channel from the task that
    /// drains it would deadlock.
    client: AsyncClient,
    filters: SharedFilters,
    /// `None` once input has stopped (receiver dropped or `stop_input`): dropping the sender
    /// is what tells the ingest side that no more messages will come.
    ingest: Option<mpsc::Sender<Incoming>>,
    input_stop: CancellationToken,
    status: Arc<MqttStatus>,
    connected: watch::Sender<bool>,
    broker: String,
    max_packet_bytes: usize,
    ingest_capacity: usize,
    /// With QoS 1 subscriptions, a full ingest queue makes the event loop wait for room
    /// instead of dropping: it stops reading the socket, TCP flow control stops the broker,
    /// and the broker queues the messages (they are acknowledged only once read). With QoS 0
    /// a full queue drops and counts (`queue_full`): a slow consumer must not make the broker
    /// disconnect it, and a newer reading is worth more than an old one.
    wait_for_ingest: bool,
    backoff: Backoff,
    /// Clean session off: the broker keeps the subscriptions and queues messages between
    /// sessions, so a resumed session is not subscribed again.
    persistent: bool,
    /// Manual acks: the ingest side acknowledges every QoS 1 message once routed, in the
    /// order they came; one this task drops (oversize) goes on as an [`ack_marker`].
    manual_acks: bool,
    /// The filters of the last SUBSCRIBE queued by this task: a resumed session with the
    /// same filters needs none (a SUBSCRIBE would make the broker send retained messages
    /// again).
    last_subscribed: Option<Vec<SubscribeFilter>>,
    quick_closes: QuickCloses,
    role: Role,
}

/// Notices a broker that closes the connection right after accepting it, again and again:
/// the usual cause is another client with the same client id (the broker closes the older
/// connection each time the other one connects, and both reconnect).
#[derive(Debug, Default)]
pub(crate) struct QuickCloses {
    /// When the last [`QuickCloses::REPEATS`] quick closes happened (a ring).
    recent: [Option<std::time::Instant>; QuickCloses::REPEATS],
    next: usize,
    last_warning: Option<std::time::Instant>,
}

impl QuickCloses {
    /// A session that ends sooner than this after its ConnAck counts as closed right away.
    pub(crate) const QUICK: Duration = Duration::from_secs(2);
    /// This many quick closes ...
    pub(crate) const REPEATS: usize = 3;
    /// ... within this window make the warning due ...
    pub(crate) const WINDOW: Duration = Duration::from_secs(60);
    /// ... at most once per this interval.
    pub(crate) const WARN_EVERY: Duration = Duration::from_secs(600);

    /// A session that lasted `lasted` ended at `now`: true when the warning should be logged.
    pub(crate) fn session_ended(&mut self, lasted: Duration, now: std::time::Instant) -> bool {
        if lasted >= Self::QUICK {
            return false;
        }
        self.recent[self.next] = Some(now);
        self.next = (self.next + 1) % Self::REPEATS;
        let repeated = self
            .recent
            .iter()
            .all(|t| t.is_some_and(|t| now.saturating_duration_since(t) <= Self::WINDOW));
        let quiet = self
            .last_warning
            .is_none_or(|w| now.saturating_duration_since(w) >= Self::WARN_EVERY);
        if repeated && quiet {
            self.last_warning = Some(now);
            true
        } else {
            false
        }
    }
}

/// Per-session subscription progress.
#[derive(Debug, Default)]
struct SubscriptionState {
    /// The SUBSCRIBE request still has to be queued (the request channel was full).
    request_pending: bool,
    /// SUBSCRIBE requests queued in this session whose SubAck has not arrived.
    awaiting_acks: usize,
}

impl EventLoopTask {
    /// A connection's event loop with no input (the caller sets the input fields) and the
    /// ends the publisher uses: the client, the session flag and the stop token.
    fn new(
        options: MqttOptions,
        cfg: &MqttConfig,
        role: Role,
        status: Arc<MqttStatus>,
    ) -> (ConnectionEnds, Self) {
        let capacity = options.request_channel_capacity();
        // Several clients share a process in the demo (daemon, simulator, monitor), and the
        // daemon has two: name them.
        let tls = if matches!(options.transport(), rumqttc::Transport::Tls(_)) {
            " over TLS"
        } else {
            ""
        };
        let broker = format!("{}{tls} as {:?}", broker_address(cfg), options.client_id());
        let (client, eventloop) = AsyncClient::new(options, capacity);
        let (connected_tx, connected_rx) = watch::channel(false);
        let ends = ConnectionEnds {
            client: client.clone(),
            connected: connected_rx,
            // Cancelled when the event-loop task returns, for whatever reason: lets the
            // publisher task and `Publisher::disconnect` stop waiting for a connection that
            // will never come back.
            stopped: CancellationToken::new(),
        };
        let task = Self {
            eventloop,
            client,
            filters: Arc::default(),
            ingest: None,
            input_stop: CancellationToken::new(),
            status,
            connected: connected_tx,
            broker,
            max_packet_bytes: cfg.max_packet_bytes,
            ingest_capacity: cfg.ingest_queue,
            wait_for_ingest: false,
            backoff: Backoff::new(cfg.reconnect_min, cfg.reconnect_max),
            persistent: false,
            manual_acks: false,
            last_subscribed: None,
            quick_closes: QuickCloses::default(),
            role,
        };
        (ends, task)
    }

    /// Publish the session state: the publisher's watch and the status flags of this role.
    fn set_connected(&self, up: bool) {
        if self.role != Role::Output {
            self.status.connected.store(up, Ordering::Relaxed);
            if !up {
                self.status.subscribed.store(false, Ordering::Relaxed);
            }
        }
        if self.role != Role::Input {
            self.status.output_connected.store(up, Ordering::Relaxed);
        }
        self.connected.send_replace(up);
    }

    async fn run(mut self, shutdown: CancellationToken, stopped: CancellationToken) {
        let _stopped_on_return = stopped.drop_guard();
        let mut ever_connected = false;
        let mut subscription = SubscriptionState::default();
        let ingest_drops = RateLimitedCount::new(RateLimitedCount::INTERVAL);
        let oversize = RateLimitedCount::new(RateLimitedCount::INTERVAL);
        // When the current outage began (the first failed attempt or the lost session).
        let mut outage_since: Option<tokio::time::Instant> = None;
        let mut last_oversize: Option<(usize, String)> = None;
        // When the current session's ConnAck arrived.
        let mut session_since: Option<std::time::Instant> = None;
        // Messages taken from the network since rumqttc's event queue was last empty.
        let mut burst = 0usize;
        let coalesce = self.role == Role::Input && !self.wait_for_ingest;

        'run: loop {
            let connected = *self.connected.borrow();
            // Publishes rumqttc took back from a lost connection (unacknowledged, or still in
            // its request channel): it sends them again if the broker resumes the session, and
            // discards them if it starts a new one. Counted here so a discarded output is a
            // counted drop, not one counted as published and lost.
            let retried = if connected {
                0
            } else {
                self.eventloop
                    .pending
                    .iter()
                    .filter(|r| matches!(r, rumqttc::Request::Publish(_)))
                    .count()
            };
            let polled = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                // Only while not connected: abandoning a connection attempt is harmless, while
                // abandoning `poll` mid-write could lose a packet. When connected,
                // `stop_input`'s UNSUBSCRIBE produces an event that wakes us instead.
                () = self.input_stop.cancelled(), if self.ingest.is_some() && !connected => {
                    self.stop_ingest();
                    continue;
                }
                polled = self.eventloop.poll() => polled,
            };
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    if !ack.session_present && retried > 0 {
                        self.status
                            .publish_dropped
                            .fetch_add(retried as u64, Ordering::Relaxed);
                        warn!("{retried} outputs handed to the broker connection before it was lost are dropped: the broker started a new session");
                    }
                    self.backoff.reset();
                    outage_since = None;
                    if ever_connected {
                        info!("reconnected to MQTT broker {}", self.broker);
                    } else {
                        info!("connected to MQTT broker {}", self.broker);
                    }
                    ever_connected = true;
                    session_since = Some(std::time::Instant::now());
                    // A resumed persistent session still has its subscriptions (and the
                    // broker has kept what they matched meanwhile).
                    let resumed = self.persistent
                        && ack.session_present
                        && self
                            .last_subscribed
                            .as_ref()
                            .is_some_and(|last| *last == *lock_filters(&self.filters));
                    if resumed {
                        debug!(
                            "MQTT session resumed by {}: not subscribing again",
                            self.broker
                        );
                    }
                    let none = lock_filters(&self.filters).is_empty() || resumed;
                    subscription = SubscriptionState {
                        request_pending: !none && self.ingest.is_some(),
                        awaiting_acks: 0,
                    };
                    if self.role != Role::Output {
                        self.status.subscribed.store(none, Ordering::Relaxed);
                    }
                    // Subscribe before announcing the connection: once the publisher task
                    // sees `connected` it may fill the request channel.
                    if subscription.request_pending {
                        self.try_subscribe(&mut subscription);
                    }
                    self.set_connected(true);
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    burst += 1;
                    self.status.received.fetch_add(1, Ordering::Relaxed);
                    let size = publish_packet_size(
                        &publish.topic,
                        publish.payload.len(),
                        u8::from(publish.qos != rumqttc::QoS::AtMostOnce),
                    );
                    let publish = if size <= self.max_packet_bytes {
                        Some(publish)
                    } else {
                        // Its QoS-1 acknowledgement was queued by rumqttc already (automatic
                        // acks): the broker does not send it again (a retained one comes again
                        // at the next subscription: dropped again, counted again).
                        self.status
                            .dropped_too_large
                            .fetch_add(1, Ordering::Relaxed);
                        oversize.add();
                        let marker = (self.manual_acks && publish.qos != rumqttc::QoS::AtMostOnce)
                            .then(|| ack_marker(publish.pkid));
                        last_oversize = Some((size, publish.topic));
                        // Manual acks: a counted drop, not to be sent again, acknowledged in
                        // its turn.
                        marker
                    };
                    let ingest = self.ingest.as_ref().zip(publish);
                    if let Some((ingest, publish)) = ingest {
                        let queued = if self.wait_for_ingest {
                            // Waits only while the queue is full; shutdown still wins.
                            tokio::select! {
                                biased;
                                () = shutdown.cancelled() => break,
                                sent = ingest.send(publish) => sent
                                    .map_err(|e| mpsc::error::TrySendError::Closed(e.0)),
                            }
                        } else {
                            ingest.try_send(publish)
                        };
                        match queued {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                self.status
                                    .dropped_queue_full
                                    .fetch_add(1, Ordering::Relaxed);
                                // Logged below, at most once per interval.
                                ingest_drops.add();
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => {
                                // Shutdown step 1: keep the connection for outgoing messages.
                                self.stop_ingest();
                            }
                        }
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => self.on_suback(&ack, &mut subscription),
                Ok(Event::Outgoing(Sent::Disconnect)) => {
                    info!("disconnected from MQTT broker {}", self.broker);
                    self.read_until_closed(&shutdown).await;
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    let was_connected = *self.connected.borrow();
                    self.set_connected(false);
                    let outage = *outage_since.get_or_insert_with(tokio::time::Instant::now);
                    let delay = self.backoff.next_delay(outage.elapsed());
                    let (kind, reason) = describe_connection_error(&e, self.max_packet_bytes);
                    self.status.record_failure(kind, reason.clone());
                    if let Some(since) = session_since.take() {
                        let now = std::time::Instant::now();
                        if self.quick_closes.session_ended(now - since, now) {
                            warn!(
                                "the broker closed the connection right after connect: another \
                                 client with the same client id? ({} closes within {}s of \
                                 connecting to {}; set a distinct [mqtt] client_id)",
                                QuickCloses::REPEATS,
                                QuickCloses::QUICK.as_secs(),
                                self.broker
                            );
                        }
                    }
                    if was_connected {
                        warn!(
                            "lost connection to MQTT broker {}: {reason}; reconnecting in {}",
                            self.broker,
                            Human(delay)
                        );
                    } else {
                        warn!(
                            "cannot reach MQTT broker {}: {reason}; retrying in {}",
                            self.broker,
                            Human(delay)
                        );
                    }
                    let sleep = tokio::time::sleep(delay);
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            biased;
                            () = shutdown.cancelled() => break 'run,
                            () = self.input_stop.cancelled(), if self.ingest.is_some() => {
                                self.stop_ingest();
                            }
                            () = &mut sleep => break,
                        }
                    }
                }
            }

            if self.ingest.is_some() && self.input_stop.is_cancelled() {
                self.stop_ingest();
            }
            if coalesce && self.eventloop.state.events.is_empty() {
                // The next poll reads the network.
                if burst > 0 && burst < COALESCE_BELOW && self.ingest.is_some() {
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => break,
                        () = self.input_stop.cancelled() => {}
                        () = tokio::time::sleep(COALESCE_PAUSE) => {}
                    }
                }
                burst = 0;
            }
            if subscription.request_pending {
                self.try_subscribe(&mut subscription);
            }
            if let Some(dropped) = oversize.due() {
                if let Some((size, topic)) = last_oversize.take() {
                    warn!(
                        "dropped {dropped} MQTT messages larger than max_packet_bytes = {} since \
                         the last report (last: {size} bytes on {:?}); the connection stays up",
                        self.max_packet_bytes,
                        topic.chars().take(200).collect::<String>()
                    );
                }
            }
            if let Some(dropped) = ingest_drops.due() {
                warn!(
                    "ingest queue full (capacity {}): dropped {dropped} MQTT messages since the \
                     last report; the pipelines are slower than the input",
                    self.ingest_capacity
                );
            }
        }

        self.set_connected(false);
        debug!("MQTT event loop of {} stopped", self.broker);
    }

    /// After DISCONNECT: read (and discard) what the broker still sends until it closes the
    /// connection, for at most [`CLOSE_WAIT`]. Closing a socket with unread data in it makes
    /// the kernel send a reset instead of a normal close, and a broker that has not read the
    /// last outputs and the DISCONNECT yet then throws them away (measured: the last few
    /// outputs of a stop under load, when the broker keeps sending readings to a persistent
    /// session). Messages read here are not acknowledged with manual acks: the broker sends
    /// them again at the next session.
    async fn read_until_closed(&mut self, shutdown: &CancellationToken) {
        let drain = async { while self.eventloop.poll().await.is_ok() {} };
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {}
            _ = tokio::time::timeout(CLOSE_WAIT, drain) => {}
        }
    }

    /// No more input: drop the ingest sender (the ingest side's `recv` returns `None` once it
    /// has drained the queue), discard later messages, keep the connection for publishing.
    fn stop_ingest(&mut self) {
        if self.ingest.take().is_some() {
            info!(
                "MQTT input stopped: incoming messages are discarded; the connection stays up \
                 for publishing until disconnect"
            );
        }
    }

    /// Queue one SUBSCRIBE with every filter, without waiting.
    fn try_subscribe(&mut self, subscription: &mut SubscriptionState) {
        let filters = lock_filters(&self.filters).clone();
        match self.client.try_subscribe_many(filters.clone()) {
            Ok(()) => {
                self.last_subscribed = Some(filters);
                subscription.request_pending = false;
                subscription.awaiting_acks += 1;
            }
            Err(rumqttc::ClientError::TryRequest(_)) => {
                // The filters were validated, and this task owns the receiving side, so the
                // request channel is full: retried after the next event, once the poller has
                // drained at least one request.
                debug!("MQTT request channel full; subscription retried after the next event");
            }
            Err(e) => {
                subscription.request_pending = false;
                error!("cannot subscribe: {e}");
            }
        }
    }

    fn on_suback(&self, ack: &rumqttc::SubAck, subscription: &mut SubscriptionState) {
        let filters = lock_filters(&self.filters);
        for (filter, code) in filters.iter().zip(&ack.return_codes) {
            if matches!(code, SubscribeReasonCode::Failure) {
                error!(
                    "MQTT broker {} refused the subscription to {:?}: check the broker's ACL for \
                     this client",
                    self.broker, filter.path
                );
            }
        }
        subscription.awaiting_acks = subscription.awaiting_acks.saturating_sub(1);
        if subscription.awaiting_acks == 0 && !subscription.request_pending {
            self.status.subscribed.store(true, Ordering::Relaxed);
            debug!(
                "subscribed to {} topic filters on {}",
                filters.len(),
                self.broker
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let long = Duration::from_secs(3600);
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(3));
        let delays: Vec<_> = (0..6)
            .map(|_| backoff.next_delay(long).as_millis())
            .collect();
        assert_eq!(delays, [500, 1000, 2000, 3000, 3000, 3000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(long), Duration::from_millis(500));
    }

    #[test]
    fn backoff_stays_within_a_tenth_of_the_outage() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        // Attempts at the times a real loop makes them: each after the previous delay.
        let mut outage = Duration::ZERO;
        let mut attempts = Vec::new();
        while outage < Duration::from_secs(600) {
            let delay = backoff.next_delay(outage);
            assert!(
                delay >= Duration::from_millis(500),
                "{delay:?} at {outage:?}"
            );
            assert!(
                delay <= (outage / 10).max(Duration::from_millis(500)),
                "{delay:?} at {outage:?}"
            );
            outage += delay;
            attempts.push(outage);
        }
        // A broker back after 20 s is tried again within 2.5 s; one down for 10 minutes is
        // tried every 30 s at the end, not more often.
        let after = attempts
            .iter()
            .find(|t| **t >= Duration::from_secs(20))
            .unwrap();
        assert!(*after <= Duration::from_millis(22_500), "{after:?}");
        let last = &attempts[attempts.len() - 2..];
        assert_eq!(last[1] - last[0], Duration::from_secs(30));
    }

    #[test]
    fn three_quick_closes_within_a_minute_warn_once() {
        let start = std::time::Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let quick = Duration::from_millis(300);
        let mut closes = QuickCloses::default();
        assert!(!closes.session_ended(quick, at(0)));
        assert!(!closes.session_ended(quick, at(1)));
        assert!(
            closes.session_ended(quick, at(2)),
            "the third quick close warns"
        );
        // Rate-limited: not again for WARN_EVERY, however often it happens.
        assert!(!closes.session_ended(quick, at(3)));
        assert!(!closes.session_ended(quick, at(4)));
        // Three more within the window, after WARN_EVERY: the third warns again.
        let later = 2 + QuickCloses::WARN_EVERY.as_secs() + 10;
        assert!(!closes.session_ended(quick, at(later)));
        assert!(!closes.session_ended(quick, at(later + 1)));
        assert!(closes.session_ended(quick, at(later + 2)));
    }

    #[test]
    fn long_sessions_or_spread_out_closes_do_not_warn() {
        let start = std::time::Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut closes = QuickCloses::default();
        // Sessions that lasted a while: a broker restart, a network cut.
        for s in 0..10 {
            assert!(!closes.session_ended(Duration::from_secs(30), at(s)));
        }
        // Quick closes, but further apart than the window.
        let mut closes = QuickCloses::default();
        let gap = QuickCloses::WINDOW.as_secs() / 2 + 1;
        for i in 0..10 {
            assert!(!closes.session_ended(Duration::from_millis(100), at(i * gap)));
        }
    }

    #[test]
    fn backoff_never_spins() {
        let mut backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(backoff.next_delay(Duration::ZERO), Backoff::FLOOR);
    }
}
