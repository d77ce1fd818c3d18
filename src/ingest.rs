//! The daemon's data path between the MQTT connections and the shards, both ways: the ingest
//! task (messages from the input connection's queue, matched and decoded for every pipeline,
//! batched per shard into the shards' queues, acknowledged once there) and the sink the key
//! actors publish their outputs through (the publisher's queue). `app` starts them; it is not
//! on the data path itself.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::actors::{OutputSink, Router};
use crate::clock::now_ms;
use crate::codec::ReadingBuf;
use crate::mqtt::{self, Acknowledger, Incoming, Outgoing, Publisher};

/// Messages the ingest task takes from the MQTT queue per drain (at most).
const INGEST_DRAIN: usize = 256;

/// The ingest task body: take what the MQTT event loop has queued (up to [`INGEST_DRAIN`]
/// messages at once), decode each message for every pipeline whose filters match, batch the
/// readings per shard and queue the batches — one clock read, one routing lock and one queue
/// operation per shard per drain. Waits when a shard's queue is full (backpressure: the MQTT
/// queue then fills, and with `subscribe_qos = 1` the event loop stops reading from the
/// broker). Ends when the event loop drops the sender, after routing everything queued.
///
/// With a persistent session (manual acks) the QoS 1 messages of a drain are acknowledged
/// once its batches are in the shards' queues: a reading still in the ingest queue when the
/// process dies is sent again by the broker at the next start.
pub(crate) async fn run(mut rx: mpsc::Receiver<Incoming>, router: Arc<Router>, acks: Acknowledger) {
    let mut buf = ReadingBuf::default();
    let mut drained = Vec::with_capacity(INGEST_DRAIN);
    let mut packet_ids: Vec<u16> = Vec::with_capacity(INGEST_DRAIN);
    let mut batches = router.batches();
    while rx.recv_many(&mut drained, INGEST_DRAIN).await > 0 {
        // Not with manual acks: the broker's inflight window (Mosquitto: 20 messages) waits
        // for our PUBACKs, so a linger would cap the rate at that window per millisecond.
        if drained.len() < INGEST_LINGER_BELOW && !acks.is_manual() {
            linger(&mut rx, &mut drained).await;
        }
        if acks.is_manual() {
            packet_ids.extend(
                drained
                    .iter()
                    .filter(|m| m.qos != rumqttc::QoS::AtMostOnce)
                    .map(|m| m.pkid),
            );
        }
        let _routing = router.routing().await;
        let arrival = now_ms();
        {
            let pipelines = router.current_pipelines();
            for msg in drained.drain(..) {
                if mqtt::is_ack_marker(&msg) {
                    // Dropped and counted by the event loop; acknowledged in its turn above.
                    continue;
                }
                let requested = pipelines.dispatch_request(
                    &msg.topic,
                    &msg.payload,
                    |p, request| match request {
                        crate::pipeline::Request::User(user) => {
                            batches.push_user_request(p, &user, arrival)
                        }
                        crate::pipeline::Request::Item(item) => {
                            router.request_similar(p, item, arrival)
                        }
                    },
                );
                if requested {
                    continue;
                }
                pipelines.dispatch(
                    &msg.topic,
                    &msg.payload,
                    arrival,
                    Some(arrival),
                    &mut buf,
                    |p, r| batches.push(p, r, arrival),
                );
            }
        }
        router.send(&mut batches).await;
        for pkid in packet_ids.drain(..) {
            acks.ack_packet(pkid);
        }
    }
}

/// A batch smaller than this waits up to [`INGEST_LINGER`] for more readings (see [`linger`]).
const INGEST_LINGER_BELOW: usize = INGEST_DRAIN / 4;

/// How long a small batch waits for more readings before it goes to the shards.
const INGEST_LINGER: Duration = Duration::from_millis(1);

/// Wait up to [`INGEST_LINGER`] for the batch in `drained` to grow to [`INGEST_DRAIN`].
///
/// Measured (BENCHMARKS.md, "Outputs on a connection of their own"): with outputs on their
/// own connection the input event loop reads as soon as a few bytes arrive, ~2 readings per
/// read under load, and every such batch woke a parked shard thread and, through the outputs,
/// the main thread: 8 times the context switches, twice the CPU per reading. Waiting 1 ms for
/// a fuller batch (what Kafka producers call linger) costs a reading at most 1 ms of latency.
async fn linger(rx: &mut mpsc::Receiver<Incoming>, drained: &mut Vec<Incoming>) {
    let fill = async {
        while drained.len() < INGEST_DRAIN {
            if rx.recv_many(drained, INGEST_DRAIN - drained.len()).await == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(INGEST_LINGER, fill).await;
}

/// Sends outputs to the MQTT publisher queue.
pub(crate) struct MqttSink {
    pub(crate) publisher: Publisher,
    /// Wait for room in a full queue ([`Publisher::publish_waiting`]): the shards' sink. The
    /// supervisors (classifiers, recommenders) run on the thread of the MQTT tasks and must
    /// never block it: theirs drops and counts.
    pub(crate) wait: bool,
}

impl OutputSink for MqttSink {
    fn emit(&self, _pipeline: usize, topic: &str, payload: &[u8], qos: u8) -> bool {
        self.publish(topic, payload, qos, false)
    }

    fn publish(&self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> bool {
        let msg = Outgoing {
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            qos,
            retain,
        };
        if self.wait {
            self.publisher.publish_waiting(msg)
        } else {
            self.publisher.try_publish(msg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(pkid: u16) -> Incoming {
        let mut publish = rumqttc::Publish::new("t", rumqttc::QoS::AtMostOnce, vec![]);
        publish.pkid = pkid;
        publish
    }

    /// Paused time: a small batch waits for readings arriving within `INGEST_LINGER`, and no
    /// longer. The clock only moves when every task waits, so this is exact, not a race.
    #[tokio::test(start_paused = true)]
    async fn a_small_batch_lingers_one_millisecond_for_more_readings() {
        let (tx, mut rx) = mpsc::channel(INGEST_DRAIN);
        // Runs once the linger waits: the first reading comes within it (tokio's timers have a
        // resolution of 1 ms, so "within" is "before any time passes"), the second after it.
        let sender = tokio::spawn(async move {
            tx.send(message(2)).await.unwrap();
            tokio::time::sleep(2 * INGEST_LINGER).await;
            tx.send(message(3)).await.unwrap();
            tx
        });
        let mut drained = vec![message(1)];
        let start = tokio::time::Instant::now();
        linger(&mut rx, &mut drained).await;
        assert_eq!(start.elapsed(), INGEST_LINGER);
        let ids: Vec<u16> = drained.iter().map(|m| m.pkid).collect();
        assert_eq!(
            ids,
            [1, 2],
            "the reading sent after the linger waits for the next drain"
        );
        let _tx = sender.await.unwrap();
        assert_eq!(rx.recv().await.map(|m| m.pkid), Some(3));
    }

    /// A full batch does not wait at all.
    #[tokio::test(start_paused = true)]
    async fn a_full_batch_goes_at_once() {
        let (tx, mut rx) = mpsc::channel(INGEST_DRAIN);
        for i in 0..INGEST_DRAIN {
            tx.send(message(i as u16)).await.unwrap();
        }
        let mut drained = Vec::new();
        let start = tokio::time::Instant::now();
        linger(&mut rx, &mut drained).await;
        assert_eq!(drained.len(), INGEST_DRAIN);
        assert_eq!(start.elapsed(), std::time::Duration::ZERO);
    }
}
