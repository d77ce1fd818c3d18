//! `/metrics`: the daemon's counters in the Prometheus text format (version 0.0.4).
//!
//! Nothing is counted twice: the counters already live in atomics next to the code that
//! counts (pipeline stats, engine stats, MQTT status), and [`DaemonCollector`] reads them at
//! scrape time through `prometheus-client`'s [`Collector`] interface, which also does the
//! exposition (names, `_total` suffixes, escaping, histogram buckets).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::actors::classifier::ClassifierStats;
use crate::actors::recommender::{RecommenderRegistry, RecommenderStats};
use crate::actors::EngineStats;
use crate::codec::DropReason;
use crate::mqtt::{MqttStatus, Publisher};
use crate::pipeline::Pipelines;

/// Reads every counter of a running daemon at scrape time.
#[derive(Clone)]
pub struct DaemonCollector {
    /// Pipelines and their counters (the current ones: a reload swaps them).
    pub pipelines: Arc<arc_swap::ArcSwap<Pipelines>>,
    /// Engine gauges and counters.
    pub engine: Arc<EngineStats>,
    /// MQTT connection state.
    pub mqtt: Arc<MqttStatus>,
    /// The outgoing queue (its depth).
    pub publisher: Publisher,
    /// The classifiers' counters.
    pub classifiers: Vec<Arc<ClassifierStats>>,
    /// The recommenders (read at scrape time: a reload may change them).
    pub recommenders: Arc<RecommenderRegistry>,
}

impl std::fmt::Debug for DaemonCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DaemonCollector")
    }
}

/// Whether a drop reason is a decoding problem (`edgeflow_decode_errors_total`) rather than
/// an overload or routing drop, or a decoded reading refused (`edgeflow_dropped_total`).
/// an overload or routing drop, or a decoded reading dropped (`edgeflow_dropped_total`).
fn is_decode_error(reason: DropReason) -> bool {
    !matches!(
        reason,
        DropReason::UnknownTopic
            | DropReason::QueueFull
            | DropReason::MailboxFull
            | DropReason::TimeSkew
            | DropReason::Implausible
    )
}

type Labels<'a> = [(&'static str, &'a str)];

/// One metric family: a descriptor and one sample per label set.
fn family<'a, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Vec<(&'static str, &'a str)>, M)>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        let labels: &Labels<'a> = &labels;
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A family without labels.
fn single<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    value: M,
) -> std::fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, kind)?;
    value.encode(metric)
}

/// One histogram without labels, from a [`DurationHistogram`](crate::actors::DurationHistogram)
/// snapshot.
fn histogram<const N: usize>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    (sum, count, cumulative): (f64, u64, [(f64, u64); N]),
) -> std::fmt::Result {
    let buckets: Vec<(f64, u64)> = cumulative
        .into_iter()
        .chain(std::iter::once((f64::INFINITY, count)))
        .collect();
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    metric.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

impl Collector for DaemonCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let current = self.pipelines.load_full();
        let pipelines: Vec<_> = current.iter().collect();
        let per_pipeline_counter = |get: &dyn Fn(&crate::pipeline::Pipeline) -> u64| {
            pipelines
                .iter()
                .map(|p| {
                    (
                        vec![("pipeline", p.name.as_str())],
                        ConstCounter::new(get(p)),
                    )
                })
                .collect::<Vec<_>>()
        };
        family(
            &mut e,
            "edgeflow_readings",
            "Readings decoded and accepted, by pipeline",
            MetricType::Counter,
            per_pipeline_counter(&|p| p.stats.readings.load(Relaxed)),
        )?;
        family(
            &mut e,
            "edgeflow_outputs",
            "Output messages produced, by pipeline",
            MetricType::Counter,
            per_pipeline_counter(&|p| p.stats.outputs.load(Relaxed)),
        )?;
        family(
            &mut e,
            "edgeflow_anomalies",
            "Readings flagged as anomalies, by pipeline",
            MetricType::Counter,
            per_pipeline_counter(&|p| p.stats.anomalies.load(Relaxed)),
        )?;
        family(
            &mut e,
            "edgeflow_scored",
            "Readings whose prediction was scored against their target (prequential), by pipeline",
            MetricType::Counter,
            per_pipeline_counter(&|p| match p.kind() {
                "classification" => p.stats.labelled.load(Relaxed),
                "kmeans" => p.stats.clustered.load(Relaxed),
                _ => p.stats.scored.load(Relaxed),
            }),
        )?;

        let mut decode = Vec::new();
        let mut dropped = Vec::new();
        for p in &pipelines {
            for reason in DropReason::ALL {
                let n = p.stats.drops.get(reason);
                let labels = vec![("pipeline", p.name.as_str()), ("reason", reason.as_str())];
                if is_decode_error(reason) {
                    decode.push((labels, ConstCounter::new(n)));
                } else if matches!(
                    reason,
                    DropReason::MailboxFull | DropReason::TimeSkew | DropReason::Implausible
                ) {
                    dropped.push((labels, ConstCounter::new(n)));
                }
            }
            let operator_drops = [
                ("filtered", p.stats.filtered.load(Relaxed)),
                ("late", p.stats.late.load(Relaxed)),
                ("duplicate", p.stats.duplicates.load(Relaxed)),
            ];
            for (reason, n) in operator_drops {
                dropped.push((
                    vec![("pipeline", p.name.as_str()), ("reason", reason)],
                    ConstCounter::new(n),
                ));
            }
        }
        family(
            &mut e,
            "edgeflow_decode_errors",
            "Readings (or whole payloads) dropped because they could not be decoded, by pipeline and reason",
            MetricType::Counter,
            decode,
        )?;
        family(
            &mut e,
            "edgeflow_dropped",
            "Decoded readings dropped, by pipeline and reason: mailbox_full (overload), time_skew (event time too far ahead), implausible (outside the field's bounds), filtered, late, duplicate (operators)",
            MetricType::Counter,
            dropped,
        )?;
        single(
            &mut e,
            "edgeflow_unknown_topic_messages",
            "Messages on topics no pipeline reads",
            MetricType::Counter,
            ConstCounter::new(current.unrouted.get(DropReason::UnknownTopic)),
        )?;

        let mut mae = Vec::new();
        let mut rmse = Vec::new();
        let mut accuracy = Vec::new();
        let mut log_loss = Vec::new();
        let mut mean_distance = Vec::new();
        for p in &pipelines {
            let s = p.stats.snapshot();
            let labels = vec![("pipeline", p.name.as_str())];
            if p.kind() == "classification" {
                if s.labelled > 0 {
                    let n = s.labelled as f64;
                    accuracy.push((labels.clone(), ConstGauge::new(s.correct as f64 / n)));
                    log_loss.push((labels, ConstGauge::new(p.stats.log_loss_sum.get() / n)));
                }
            } else if p.kind() == "kmeans" {
                if s.clustered > 0 {
                    let n = s.clustered as f64;
                    mean_distance.push((labels, ConstGauge::new(s.distance_sum / n)));
                }
            } else if s.scored > 0 {
                let n = s.scored as f64;
                mae.push((labels.clone(), ConstGauge::new(s.abs_error_sum / n)));
                rmse.push((labels, ConstGauge::new((s.sq_error_sum / n).sqrt())));
            }
        }
        family(
            &mut e,
            "edgeflow_prequential_mae",
            "Mean absolute error of every prediction scored since start (test-then-train), by pipeline",
            MetricType::Gauge,
            mae,
        )?;
        family(
            &mut e,
            "edgeflow_prequential_rmse",
            "Root mean square error of every prediction scored since start, by pipeline",
            MetricType::Gauge,
            rmse,
        )?;
        family(
            &mut e,
            "edgeflow_prequential_accuracy",
            "Accuracy of every labelled reading scored since start (classification), by pipeline",
            MetricType::Gauge,
            accuracy,
        )?;
        family(
            &mut e,
            "edgeflow_prequential_log_loss",
            "Mean log loss of every labelled reading scored since start (classification), by pipeline",
            MetricType::Gauge,
            log_loss,
        )?;
        family(
            &mut e,
            "edgeflow_prequential_mean_distance",
            "Mean distance (standardised units) of every reading clustered since start to the cluster it was assigned before being learnt (kmeans), by pipeline",
            MetricType::Gauge,
            mean_distance,
        )?;

        family(
            &mut e,
            "edgeflow_keys_active",
            "Key actors resident in memory, by pipeline",
            MetricType::Gauge,
            pipelines.iter().map(|p| {
                (
                    vec![("pipeline", p.name.as_str())],
                    ConstGauge::new(p.stats.resident_keys.load(Relaxed) as i64),
                )
            }),
        )?;
        let engine = &self.engine;
        single(
            &mut e,
            "edgeflow_keys_activated",
            "Key actors activated (on a reading for a key not in memory)",
            MetricType::Counter,
            ConstCounter::new(engine.activated.load(Relaxed)),
        )?;
        single(
            &mut e,
            "edgeflow_keys_restored",
            "Activations that found the key's state in the store",
            MetricType::Counter,
            ConstCounter::new(engine.restored.load(Relaxed)),
        )?;
        single(
            &mut e,
            "edgeflow_keys_passivated",
            "Key actors passivated (idle or over the resident budget): state written back, actor stopped",
            MetricType::Counter,
            ConstCounter::new(engine.passivated.load(Relaxed)),
        )?;
        single(
            &mut e,
            "edgeflow_keys_passivated_for_memory",
            "Key actors passivated because the heap was over the [runtime] max_memory budget (included in edgeflow_keys_passivated)",
            MetricType::Counter,
            ConstCounter::new(engine.passivated_for_memory.load(Relaxed)),
        )?;
        single(
            &mut e,
            "edgeflow_memory_pressure",
            "Key activations that found the heap over budget and no other key of their shard to passivate (memory held outside the key actors)",
            MetricType::Counter,
            ConstCounter::new(engine.memory_pressure.load(Relaxed)),
        )?;
        single(
            &mut e,
            "edgeflow_memory_limit_bytes",
            "[runtime] max_memory: passivation keeps the heap under edgeflow_memory_heap_mark_bytes",
            MetricType::Gauge,
            ConstGauge::new(engine.memory_limit.load(Relaxed) as i64),
        )?;
        single(
            &mut e,
            "edgeflow_memory_heap_mark_bytes",
            "Heap bytes above which keys are passivated: two thirds of max_memory, lowered while the resident size is above 85 % of it",
            MetricType::Gauge,
            ConstGauge::new(engine.memory_heap_mark.load(Relaxed) as i64),
        )?;
        if let Some(heap) = crate::memory::heap_bytes() {
            single(
                &mut e,
                "edgeflow_heap_bytes",
                "Bytes allocated on the heap now (the counting allocator)",
                MetricType::Gauge,
                ConstGauge::new(heap as i64),
            )?;
        }
        if let Some(rss) = crate::memory::resident_bytes() {
            single(
                &mut e,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                MetricType::Gauge,
                ConstGauge::new(rss as i64),
            )?;
        }
        single(
            &mut e,
            "edgeflow_checkpoints",
            "Checkpoints completed (changed states written, store flushed)",
            MetricType::Counter,
            ConstCounter::new(engine.checkpoints.load(Relaxed)),
        )?;
        single(
            &mut e,
            "edgeflow_store_expired",
            "Key states removed from the store because they were not written for longer than [store] state_ttl",
            MetricType::Counter,
            ConstCounter::new(engine.states_expired.load(Relaxed)),
        )?;
        single(
            &mut e,
            "edgeflow_checkpoint_states_written",
            "Key states written by checkpoints",
            MetricType::Counter,
            ConstCounter::new(engine.states_written.load(Relaxed)),
        )?;
        histogram(
            &mut e,
            "edgeflow_checkpoint_duration_seconds",
            "Time a checkpoint took: writing changed states and flushing the store",
            engine.checkpoint_seconds.snapshot(),
        )?;
        histogram(
            &mut e,
            "edgeflow_checkpoint_lag_seconds",
            "Per checkpoint, time from the start of the previous checkpoint to the end of this one's flush: the age of the oldest learning only this flush made durable (about checkpoint_interval: checkpoints are paced for it)",
            engine.checkpoint_lag.snapshot(),
        )?;
        single(
            &mut e,
            "edgeflow_checkpoint_age_seconds",
            "Time since the last completed checkpoint started: readings routed since are not yet durable, so a kill -9 now loses at most this much learning per key",
            MetricType::Gauge,
            ConstGauge::new(engine.undurable_for().as_secs_f64()),
        )?;
        single(
            &mut e,
            "edgeflow_checkpoints_holding_ingest",
            "Checkpoints that held ingest while they ran because the one before took more than half of checkpoint_interval (the store was falling behind)",
            MetricType::Counter,
            ConstCounter::new(engine.checkpoints_holding_ingest.load(Relaxed)),
        )?;
        single(
            &mut e,
            "edgeflow_keys_dirty",
            "Resident keys whose state changed since it was last written to the store (written at the next checkpoint or at passivation)",
            MetricType::Gauge,
            ConstGauge::new(engine.dirty_keys.load(Relaxed) as i64),
        )?;
        single(
            &mut e,
            "edgeflow_store_unflushed_states",
            "Key states written to the store (by passivations and checkpoints) and not yet flushed to disk (durable after the next checkpoint's flush)",
            MetricType::Gauge,
            ConstGauge::new(engine.unflushed_states.load(Relaxed) as i64),
        )?;

        let mqtt = self.mqtt.snapshot();
        single(
            &mut e,
            "edgeflow_mqtt_connected",
            "1 while a session with the broker is established",
            MetricType::Gauge,
            ConstGauge::new(i64::from(mqtt.connected)),
        )?;
        single(
            &mut e,
            "edgeflow_mqtt_output_connected",
            "1 while the output connection (client id <client_id>-out) has a session with the broker",
            MetricType::Gauge,
            ConstGauge::new(i64::from(mqtt.output_connected)),
        )?;
        single(
            &mut e,
            "edgeflow_mqtt_reconnects",
            "Connection errors, each followed by a back-off and a reconnect attempt",
            MetricType::Counter,
            ConstCounter::new(mqtt.reconnects),
        )?;
        single(
            &mut e,
            "edgeflow_mqtt_received",
            "Messages received from the broker",
            MetricType::Counter,
            ConstCounter::new(mqtt.received),
        )?;
        single(
            &mut e,
            "edgeflow_mqtt_ingest_dropped",
            "Received messages dropped because the ingest queue was full",
            MetricType::Counter,
            ConstCounter::new(mqtt.dropped_queue_full),
        )?;
        single(
            &mut e,
            "edgeflow_mqtt_oversize_dropped",
            "Received messages dropped because they are larger than max_packet_bytes \
             (the connection stays up)",
            MetricType::Counter,
            ConstCounter::new(mqtt.dropped_too_large),
        )?;
        single(
            &mut e,
            "edgeflow_mqtt_published",
            "Messages handed to the MQTT client for sending",
            MetricType::Counter,
            ConstCounter::new(mqtt.published),
        )?;
        single(
            &mut e,
            "edgeflow_mqtt_publish_dropped",
            "Output messages not published: queue full, rejected, or connection closed",
            MetricType::Counter,
            ConstCounter::new(mqtt.publish_dropped),
        )?;
        single(
            &mut e,
            "edgeflow_mqtt_publish_waits",
            "Outputs that found the publish queue full and waited for room (backpressure on the shards) instead of being dropped",
            MetricType::Counter,
            ConstCounter::new(mqtt.publish_waits),
        )?;
        single(
            &mut e,
            "edgeflow_mqtt_publish_queue_depth",
            "Output messages waiting in the bounded publish queue",
            MetricType::Gauge,
            ConstGauge::new(self.publisher.queue_depth() as i64),
        )?;
        let per_classifier = |get: &dyn Fn(&ClassifierStats) -> u64| {
            self.classifiers
                .iter()
                .map(|c| (vec![("classifier", c.name.as_str())], get(c)))
                .collect::<Vec<_>>()
        };
        family(
            &mut e,
            "edgeflow_classifier_updates",
            "k-means updates (intervals with at least one key profiled), by classifier",
            MetricType::Counter,
            per_classifier(&|c| c.updates.load(Relaxed))
                .into_iter()
                .map(|(l, v)| (l, ConstCounter::new(v))),
        )?;
        family(
            &mut e,
            "edgeflow_classifier_class_changes",
            "Class messages published because a key's class changed (first classifications included), by classifier",
            MetricType::Counter,
            per_classifier(&|c| c.changes.load(Relaxed))
                .into_iter()
                .map(|(l, v)| (l, ConstCounter::new(v))),
        )?;
        family(
            &mut e,
            "edgeflow_classifier_keys_profiled",
            "Keys profiled in the last update, by classifier",
            MetricType::Gauge,
            per_classifier(&|c| c.profiled.load(Relaxed))
                .into_iter()
                .map(|(l, v)| (l, ConstGauge::new(v as i64))),
        )?;
        family(
            &mut e,
            "edgeflow_classifier_classes",
            "Live classes (k-means clusters), by classifier",
            MetricType::Gauge,
            per_classifier(&|c| c.classes.load(Relaxed))
                .into_iter()
                .map(|(l, v)| (l, ConstGauge::new(v as i64))),
        )?;
        let recommenders = self.recommenders.stats();
        let per_recommender = |get: &dyn Fn(&RecommenderStats) -> u64| {
            recommenders
                .iter()
                .map(|r| (vec![("pipeline", r.pipeline.as_str())], get(r)))
                .collect::<Vec<_>>()
        };
        for (name, help, get) in [
            (
                "edgeflow_recommender_events",
                "History changes applied to the item similarities, by pipeline",
                &(|r: &RecommenderStats| r.events.load(Relaxed))
                    as &dyn Fn(&RecommenderStats) -> u64,
            ),
            (
                "edgeflow_recommender_requests",
                "User and item requests answered, by pipeline",
                &|r: &RecommenderStats| r.requests.load(Relaxed),
            ),
            (
                "edgeflow_recommender_lists",
                "Recommendation and similar-item lists published, by pipeline",
                &|r: &RecommenderStats| r.lists.load(Relaxed),
            ),
            (
                "edgeflow_recommender_snapshots",
                "Snapshots of the item similarities written to the store, by pipeline",
                &|r: &RecommenderStats| r.snapshots.load(Relaxed),
            ),
        ] {
            family(
                &mut e,
                name,
                help,
                MetricType::Counter,
                per_recommender(get)
                    .into_iter()
                    .map(|(l, v)| (l, ConstCounter::new(v))),
            )?;
        }
        family(
            &mut e,
            "edgeflow_recommender_items",
            "Items tracked by the item similarities, by pipeline",
            MetricType::Gauge,
            per_recommender(&|r| r.items.load(Relaxed))
                .into_iter()
                .map(|(l, v)| (l, ConstGauge::new(v as i64))),
        )?;
        family(
            &mut e,
            "edgeflow_recommender_memory_bytes",
            "Heap bytes of the item similarities, by pipeline",
            MetricType::Gauge,
            per_recommender(&|r| r.memory_bytes.load(Relaxed))
                .into_iter()
                .map(|(l, v)| (l, ConstGauge::new(v as i64))),
        )?;
        family(
            &mut e,
            "edgeflow_build_info",
            "Always 1; the version label says which edgeflow is running",
            MetricType::Gauge,
            [(
                vec![("version", env!("CARGO_PKG_VERSION"))],
                ConstGauge::new(1i64),
            )],
        )?;
        Ok(())
    }
}

/// The whole exposition as text.
///
/// # Errors
/// Only if formatting into a `String` fails, which it does not.
pub fn render(collector: &DaemonCollector) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector.clone()));
    let mut out = String::with_capacity(8 * 1024);
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}
