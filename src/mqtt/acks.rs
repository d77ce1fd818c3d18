//! Acknowledging QoS 1 readings by hand (persistent session), and the task that sends the
//! PUBACKs and, at shutdown, the input connection's DISCONNECT.

use rumqttc::AsyncClient;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::ends::ConnectionEnds;
use super::Incoming;

/// Capacity of the queue of acknowledgements: one entry per QoS 1 message the broker has sent
/// and the daemon has not acknowledged yet, of which there are at most as many as packet ids.
pub(crate) const ACK_QUEUE: usize = 1 << 16;

/// PUBACKs the task takes from the queue at once (at most).
const ACK_DRAIN: usize = 256;

/// Acknowledges QoS 1 messages once the daemon has taken them over (manual acks, used with a
/// persistent session). Cheap to clone; a no-op when rumqttc acknowledges by itself.
///
/// With a persistent session, an unacknowledged message is sent again by the broker at the
/// next session (of this daemon or of the next one started with the same client id), so a
/// reading is acknowledged only once it has been handed to its shard: a message read but
/// discarded at shutdown, or lost in the ingest queue when the process dies, is not lost.
/// The PUBACKs go out in order through the ack task, on the input connection; the caller
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

/// A stand-in for a QoS 1 message the event loop dropped (oversize) with manual acks: it
/// carries the packet id through the ingest queue, so the PUBACKs go out in the order the
/// messages came (MQTT 3.1.1 §4.6.0-2: a client acknowledges QoS 1 messages in the order it
/// received them); ingest acknowledges it and routes nothing. A PUBLISH from a broker always
/// has a topic (§4.7.3-1), so the empty topic marks it. An empty topic and payload allocate
/// nothing.
pub(crate) fn ack_marker(pkid: u16) -> Incoming {
    rumqttc::Publish {
        dup: false,
        qos: rumqttc::QoS::AtLeastOnce,
        retain: false,
        topic: String::new(),
        pkid,
        payload: bytes::Bytes::new(),
    }
}

/// Whether `message` is an ack marker (see `ack_marker`): to be acknowledged, not routed.
pub fn is_ack_marker(message: &Incoming) -> bool {
    message.topic.is_empty()
}

/// Hand the PUBACKs for `pkids` to rumqttc, in order, and clear the list.
async fn send_acks(client: &AsyncClient, pkids: &mut Vec<u16>) {
    for pkid in pkids.drain(..) {
        // Only the packet id and the QoS are read.
        if let Err(e) = client.ack(&ack_marker(pkid)).await {
            debug!("MQTT acknowledgement of packet {pkid} failed: {e}");
        }
    }
}

/// The ack task body: sends queued PUBACKs on the input connection while it is up (the broker
/// sends again what was not acknowledged when a session resumes, so acks of a lost session are
/// discarded), and once `close` is cancelled (the publisher has handed over every output)
/// sends the PUBACKs still queued and then DISCONNECT.
///
/// It has a task of its own because `client.ack(..).await` waits while the input connection's
/// request channel is full, which lasts as long as that event loop waits for room in the
/// ingest queue: the publisher task must never wait for that (the shards wait for it).
pub(crate) async fn run(
    mut acks: Option<mpsc::Receiver<u16>>,
    input: ConnectionEnds,
    close: CancellationToken,
    shutdown: CancellationToken,
) {
    let ConnectionEnds {
        client,
        connected,
        stopped,
    } = input;
    let mut buffer: Vec<u16> = Vec::with_capacity(ACK_DRAIN);
    loop {
        let received = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = stopped.cancelled() => return,
            () = close.cancelled() => break,
            n = recv(&mut acks, &mut buffer) => n,
        };
        if received == 0 {
            acks = None;
            continue;
        }
        if !*connected.borrow() {
            // The broker sends these messages again when the session resumes: they are
            // acknowledged then.
            buffer.clear();
            continue;
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = stopped.cancelled() => return,
            () = send_acks(&client, &mut buffer) => {}
        }
    }
    // Close: what was acknowledged before goes out ahead of the DISCONNECT.
    if let Some(acks) = acks.as_mut() {
        while let Ok(pkid) = acks.try_recv() {
            buffer.push(pkid);
        }
    }
    tokio::select! {
        biased;
        () = shutdown.cancelled() => {}
        () = stopped.cancelled() => {}
        () = async {
            if *connected.borrow() {
                send_acks(&client, &mut buffer).await;
            }
            if let Err(e) = client.disconnect().await {
                debug!("MQTT disconnect request failed: {e}");
            }
        } => {}
    }
}

/// Receive queued acknowledgements into `buffer`; pending for ever without an ack queue, 0
/// once it is closed.
async fn recv(acks: &mut Option<mpsc::Receiver<u16>>, buffer: &mut Vec<u16>) -> usize {
    match acks {
        Some(acks) => acks.recv_many(buffer, ACK_DRAIN).await,
        None => std::future::pending().await,
    }
}
