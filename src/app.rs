//! The daemon (`edgeflow run`): wires the store, the actor system, the MQTT connection, the
//! checkpointer and the stats line together, and takes them down again in order.
//!
//! Start-up order: embedded broker (if configured) → store (fails fast if locked or
//! unwritable) → pipelines → shards → MQTT (event-loop task, publisher task, ingest task) →
//! checkpointer and stats tasks → simulator (if configured).
//!
//! Shutdown order (SIGTERM/SIGINT or [`Daemon::shutdown`]): stop the simulator and the MQTT
//! event loop (no new input) → let the ingest task route what is already queued → final
//! checkpoint, which is queued behind every routed reading and so also drains the mailboxes →
//! flush the store → let the publisher send what is queued → disconnect → stop the Arbiters.
//! Everything after "stop input" runs under `runtime.shutdown_deadline`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::actors::{CheckpointReport, OutputSink, Router};
use crate::codec::{DropReason, ReadingBuf};
use crate::config::Config;
use crate::mqtt::{self, EmbeddedBroker, Incoming, MqttStatus, Outgoing, Publisher};
use crate::pipeline::stats::StatsSnapshot;
use crate::pipeline::{PipelineError, Pipelines};
use crate::store::{Store, StoreError};

/// Errors that stop the daemon from starting or from shutting down cleanly.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The store could not be opened or flushed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A pipeline could not be built.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The embedded broker could not start.
    #[error("embedded broker: {0}")]
    Broker(#[from] mqtt::MqttError),
    /// The MQTT client could not be set up (a `[mqtt.tls]` file cannot be read or used).
    #[error("MQTT client: {0}")]
    Client(mqtt::MqttError),
}

/// Sends key actors' outputs to the MQTT publisher queue.
struct MqttSink(Publisher);

impl OutputSink for MqttSink {
    fn emit(&self, _pipeline: usize, topic: &str, payload: &[u8], qos: u8) -> bool {
        self.0.try_publish(Outgoing {
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            qos,
            retain: false,
        })
    }
}

/// Milliseconds since the Unix epoch (arrival time of readings without an event time).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Shared views of a running daemon, for tests, metrics and health.
#[derive(Clone)]
pub struct DaemonHandle {
    /// The MQTT connection state.
    pub mqtt: Arc<MqttStatus>,
    /// The pipelines and their counters.
    pub pipelines: Arc<Pipelines>,
    /// Engine gauges and counters.
    pub engine: Arc<crate::actors::EngineStats>,
    /// The broker address the daemon connects to.
    pub broker: String,
}

/// A running daemon. Must live inside an actix `System`.
pub struct Daemon {
    config: Config,
    handle: DaemonHandle,
    router: Arc<Router>,
    publisher: Publisher,
    input_stop: CancellationToken,
    connection_stop: CancellationToken,
    background_stop: CancellationToken,
    event_loop: JoinHandle<()>,
    publisher_task: JoinHandle<()>,
    ingest_task: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    _broker: Option<EmbeddedBroker>,
}

impl Daemon {
    /// Start every part of the daemon (see the module doc for the order).
    ///
    /// # Errors
    /// [`AppError`] when the embedded broker, the store, a pipeline or the MQTT client (its TLS
    /// files) cannot start. An unreachable external broker is not an error, nor is one that
    /// refuses the connection: the event loop keeps retrying with back-off, says so in the log
    /// and records the reason in [`MqttStatus::last_failure`].
    pub async fn start(config: Config) -> Result<Daemon, AppError> {
        let broker = if config.mqtt.embedded {
            Some(mqtt::start_embedded(
                config.mqtt.port,
                config.mqtt.max_packet_bytes,
            )?)
        } else {
            None
        };
        let store = Store::open(&config.store.data_dir, config.store.cache_bytes)?;
        tracing::info!("store open at {}", config.store.data_dir.display());
        let pipelines = Arc::new(Pipelines::new(&config)?);

        let status = Arc::new(MqttStatus::default());
        let (ingest_tx, ingest_rx) = mpsc::channel::<Incoming>(config.mqtt.ingest_queue);
        let input_stop = CancellationToken::new();
        let subscriptions = pipelines.subscriptions(config.mqtt.subscribe_qos);
        let mqtt_cfg = effective_mqtt(&config);
        let connection_stop = CancellationToken::new();
        let (publisher, event_loop, publisher_body) = mqtt::connect(
            &mqtt_cfg,
            subscriptions,
            ingest_tx,
            status.clone(),
            connection_stop.clone(),
        )
        .map_err(AppError::Client)?;
        let sink: Arc<dyn OutputSink> = Arc::new(MqttSink(publisher.clone()));
        let router = Arc::new(Router::start(
            pipelines.clone(),
            store.clone(),
            sink,
            &config.runtime,
        ));
        tracing::info!(
            shards = router.shard_count(),
            pipelines = pipelines.len(),
            "actor system started"
        );

        let event_loop = actix_rt::spawn(event_loop);
        let publisher_task = actix_rt::spawn(publisher_body);
        let ingest_task = actix_rt::spawn(ingest(ingest_rx, pipelines.clone(), router.clone()));

        let background_stop = CancellationToken::new();
        let mut background = vec![
            actix_rt::spawn(checkpointer(
                router.clone(),
                config.store.checkpoint_interval,
                background_stop.clone(),
            )),
            actix_rt::spawn(stats_line(
                pipelines.clone(),
                config.runtime.stats_interval,
                background_stop.clone(),
            )),
        ];
        if let Some(sim) = config.simulate.clone() {
            let (m, stop) = (mqtt_cfg.clone(), input_stop.clone());
            background.push(actix_rt::spawn(async move {
                if let Err(e) = crate::sim::run_simulator(&m, &sim, None, stop).await {
                    tracing::error!("simulator stopped: {e}");
                }
            }));
            let mut filters: Vec<String> = config
                .pipelines
                .iter()
                .map(|p| output_filter(&p.output))
                .collect();
            filters.dedup();
            let (m, stop, every) = (
                mqtt_cfg.clone(),
                input_stop.clone(),
                config.runtime.stats_interval,
            );
            background.push(actix_rt::spawn(async move {
                crate::sim::run_output_monitor(&m, filters, every, stop).await;
            }));
        }
        let handle = DaemonHandle {
            mqtt: status,
            pipelines,
            engine: router.stats.clone(),
            broker: format!("{}:{}", mqtt_cfg.host, mqtt_cfg.port),
        };
        Ok(Daemon {
            config,
            handle,
            router,
            publisher,
            input_stop,
            connection_stop,
            background_stop,
            event_loop,
            publisher_task,
            ingest_task,
            background,
            _broker: broker,
        })
    }

    /// Shared views for tests, metrics and health.
    pub fn handle(&self) -> DaemonHandle {
        self.handle.clone()
    }

    /// Wait until the subscriptions of the current MQTT session are acknowledged.
    pub async fn subscribed(&self) {
        while !self
            .handle
            .mqtt
            .subscribed
            .load(std::sync::atomic::Ordering::Acquire)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Checkpoint now (used by tests and `inspect`-style tooling).
    ///
    /// # Errors
    /// [`StoreError`] if the flush fails.
    pub async fn checkpoint(&self) -> Result<CheckpointReport, StoreError> {
        self.router.checkpoint().await
    }

    /// Graceful shutdown (see the module doc for the order).
    ///
    /// # Errors
    /// [`AppError::Store`] if the final checkpoint cannot be flushed.
    pub async fn shutdown(self) -> Result<CheckpointReport, AppError> {
        let deadline = self.config.runtime.shutdown_deadline;
        tracing::info!("shutting down: stopping input");
        self.input_stop.cancel();
        // Unsubscribes and drops the ingest sender, keeping the connection up for the outputs
        // still to come: the ingest task routes what is queued, then ends.
        self.publisher.stop_input();
        if tokio::time::timeout(deadline, self.ingest_task)
            .await
            .is_err()
        {
            tracing::warn!("ingest did not drain within {deadline:?}");
        }
        self.background_stop.cancel();
        for t in self.background {
            let _ = t.await;
        }
        let report = match Arc::try_unwrap(self.router) {
            Ok(router) => router.stop(deadline).await?,
            // Unreachable after the joins above; checkpoint through the shared handle anyway.
            Err(shared) => shared.checkpoint().await?,
        };
        tracing::info!(
            written = report.written,
            "final checkpoint done; sending queued outputs and disconnecting"
        );
        if let Err(e) = self.publisher.disconnect(deadline).await {
            tracing::warn!("disconnect: {e}");
        }
        self.connection_stop.cancel();
        let _ = self.event_loop.await;
        let _ = self.publisher_task.await;
        Ok(report)
    }
}

/// A topic filter covering every topic an output template can produce: its literal leading
/// levels, then `#` (a key may itself contain `/`).
fn output_filter(template: &str) -> String {
    let literal: Vec<&str> = template
        .split('/')
        .take_while(|level| !level.contains('{'))
        .collect();
    if literal.is_empty() {
        "#".into()
    } else {
        format!("{}/#", literal.join("/"))
    }
}

/// The MQTT settings actually used: the embedded broker is always on loopback.
fn effective_mqtt(config: &Config) -> crate::config::MqttConfig {
    let mut m = config.mqtt.clone();
    if m.embedded {
        m.host = "127.0.0.1".into();
    }
    m
}

/// Run the daemon until `shutdown` is cancelled, then shut it down gracefully.
///
/// # Errors
/// See [`Daemon::start`] and [`Daemon::shutdown`].
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AppError> {
    let daemon = Daemon::start(config).await?;
    shutdown.cancelled().await;
    daemon.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

/// The ingest task: decode each received message for every pipeline whose filters match and
/// route the readings to their shards. Ends when the event loop drops the sender.
async fn ingest(mut rx: mpsc::Receiver<Incoming>, pipelines: Arc<Pipelines>, router: Arc<Router>) {
    let mut buf = ReadingBuf::default();
    while let Some(msg) = rx.recv().await {
        let arrival = now_ms();
        pipelines.dispatch(&msg.topic, &msg.payload, arrival, &mut buf, |p, r| {
            router.route(p, r, arrival)
        });
    }
}

async fn checkpointer(router: Arc<Router>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = router.checkpoint().await {
                    tracing::error!("checkpoint failed: {e}");
                }
            }
        }
    }
}

/// The periodic stats line: per pipeline, resident keys, readings/s and the MAE of the
/// forecasts scored during the interval.
async fn stats_line(pipelines: Arc<Pipelines>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut last: Vec<StatsSnapshot> = pipelines.iter().map(|p| p.stats.snapshot()).collect();
    let mut last_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let secs = last_at.elapsed().as_secs_f64().max(1e-9);
        last_at = tokio::time::Instant::now();
        for (p, prev) in pipelines.iter().zip(last.iter_mut()) {
            let now = p.stats.snapshot();
            let rate = (now.readings - prev.readings) as f64 / secs;
            // The error measure of the model kind, over the readings scored in this interval.
            let quality = if p.kind() == "classification" {
                now.accuracy_since(prev)
                    .map_or_else(|| "accuracy=-".to_string(), |a| format!("accuracy={a:.4}"))
            } else {
                now.mae_since(prev)
                    .map_or_else(|| "mae=-".to_string(), |m| format!("mae={m:.4}"))
            };
            tracing::info!(
                "pipeline {}: keys={} readings/s={:.1} {} outputs={} dropped={} anomalies={}",
                p.name,
                p.stats
                    .resident_keys
                    .load(std::sync::atomic::Ordering::Relaxed),
                rate,
                quality,
                now.outputs,
                now.dropped,
                now.anomalies,
            );
            *prev = now;
        }
        let unrouted = pipelines.unrouted.get(DropReason::UnknownTopic);
        if unrouted > 0 {
            tracing::debug!(
                unknown_topic = unrouted,
                "messages on topics no pipeline reads"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::output_filter;

    #[test]
    fn output_filter_covers_every_rendered_topic() {
        assert_eq!(
            output_filter("edgeflow/{pipeline}/{key}/{field}/forecast"),
            "edgeflow/#"
        );
        assert_eq!(output_filter("a/b/x-{key}"), "a/b/#");
        assert_eq!(output_filter("{pipeline}/out"), "#");
        assert_eq!(output_filter("fixed/topic"), "fixed/topic/#");
    }
}
