//! The daemon (`edgeflow run`): wires the store, the actor system, the MQTT connection, the
//! checkpointer and the stats line together, and takes them down again in order.
//!
//! Start-up order: embedded broker (if configured) → store (fails fast if locked or
//! unwritable) → pipelines → shards → MQTT (event-loop task, publisher task, ingest task) →
//! HTTP listener (fails fast if its port is taken) → checkpointer, stats and watchdog tasks →
//! simulator (if configured). [`run`] tells systemd `READY=1` once the subscriptions are
//! acknowledged.
//!
//! Shutdown order (SIGTERM/SIGINT or [`Daemon::shutdown`]): `STOPPING=1` → stop the simulator
//! and the MQTT event loop (no new input) → let the ingest task route what is already queued →
//! stop the HTTP listener → final checkpoint, which is queued behind every routed reading and
//! so also drains the mailboxes → flush the store → let the publisher send what is queued →
//! disconnect → stop the Arbiters. Everything after "stop input" runs under
//! `runtime.shutdown_deadline`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::actors::classifier::{ClassifierStats, ClassifierSupervisor, StopSupervisor};
use crate::actors::recommender::{
    RecommenderActor, RecommenderRegistry, ReplaceSettings, SaveAndStop,
};
use crate::actors::{CheckpointReport, OutputSink, Router};
use crate::codec::DropReason;
use crate::config::Config;
use crate::http::{DaemonCollector, HttpError, HttpServer, HttpState};
use crate::mqtt::{self, EmbeddedBroker, Incoming, MqttStatus, Publisher};
use crate::pipeline::stats::StatsSnapshot;
use crate::pipeline::{PipelineError, Pipelines};
use crate::store::{Store, StoreClock, StoreError, SweepCursor};

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
    /// The HTTP listener could not start.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The MQTT client could not be set up (a `[mqtt.tls]` file cannot be read or used).
    #[error("MQTT client: {0}")]
    Client(mqtt::MqttError),
}

/// Shared views of a running daemon, for tests, metrics and health.
#[derive(Clone)]
pub struct DaemonHandle {
    /// The MQTT connection state.
    pub mqtt: Arc<MqttStatus>,
    /// The pipelines and their counters (the current ones: a reload swaps them).
    pub pipelines: Arc<arc_swap::ArcSwap<Pipelines>>,
    /// Engine gauges and counters.
    pub engine: Arc<crate::actors::EngineStats>,
    /// The broker address the daemon connects to.
    pub broker: String,
    /// The address the HTTP listener is bound to (None when `[http] enabled = false`).
    pub http: Option<SocketAddr>,
    /// The classifiers' supervising actors, in config order.
    pub classifiers: Vec<actix::Addr<ClassifierSupervisor>>,
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
    /// The MQTT connections' tasks (see [`mqtt::connect`]).
    connection_tasks: Vec<JoinHandle<()>>,
    ingest_task: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    http: Option<HttpServer>,
    /// The store, for the flush after the recommenders' last snapshots.
    store: Store,
    /// The output sink (recommenders started by a reload publish through it).
    sink: Arc<dyn OutputSink>,
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
        Daemon::start_with_clock(config, StoreClock::running()).await
    }

    /// [`Daemon::start`] with the clock the store counts `[store] state_ttl` by (tests move
    /// a manual one instead of waiting).
    ///
    /// # Errors
    /// As [`Daemon::start`].
    pub async fn start_with_clock(config: Config, clock: StoreClock) -> Result<Daemon, AppError> {
        let broker = if config.mqtt.embedded {
            Some(mqtt::start_embedded(
                config.mqtt.port,
                config.mqtt.max_packet_bytes,
            )?)
        } else {
            None
        };
        let store =
            Store::open_with_clock(&config.store.data_dir, config.store.cache_bytes, clock)?;
        tracing::info!("store open at {}", config.store.data_dir.display());
        let pipelines = Arc::new(Pipelines::new(&config)?);

        let status = Arc::new(MqttStatus::default());
        let (ingest_tx, ingest_rx) = mpsc::channel::<Incoming>(config.mqtt.ingest_queue);
        let input_stop = CancellationToken::new();
        let subscriptions = pipelines.subscriptions(config.mqtt.subscribe_qos);
        let mqtt_cfg = effective_mqtt(&config);
        let connection_stop = CancellationToken::new();
        let (publisher, connection_tasks) = mqtt::connect(
            &mqtt_cfg,
            subscriptions,
            ingest_tx,
            status.clone(),
            connection_stop.clone(),
        )
        .map_err(AppError::Client)?;
        let sink: Arc<dyn OutputSink> = Arc::new(crate::ingest::MqttSink {
            publisher: publisher.clone(),
            wait: false,
        });
        let shard_sink: Arc<dyn OutputSink> = Arc::new(crate::ingest::MqttSink {
            publisher: publisher.clone(),
            wait: true,
        });
        let recommenders = Arc::new(RecommenderRegistry::default());
        for p in pipelines.iter().filter(|p| p.is_recommend()) {
            start_recommender(&config, &p.name, &recommenders, &store, &sink)?;
        }
        let router = Arc::new(Router::start(
            pipelines.clone(),
            store.clone(),
            shard_sink,
            recommenders,
            &config.runtime,
        ));
        let (classifiers, classifier_stats) = start_classifiers(&config, &router, &store, &sink)?;
        tracing::info!(
            shards = router.shard_count(),
            pipelines = pipelines.len(),
            "actor system started"
        );

        let http = if config.http.enabled {
            let state = HttpState {
                collector: DaemonCollector {
                    pipelines: router.shared_pipelines(),
                    engine: router.stats.clone(),
                    mqtt: status.clone(),
                    publisher: publisher.clone(),
                    classifiers: classifier_stats,
                    recommenders: router.recommenders().clone(),
                },
                router: Arc::downgrade(&router),
                store: store.clone(),
            };
            match HttpServer::start(config.http.listen, state).await {
                Ok(server) => Some(server),
                Err(e) => {
                    // Nothing has been read yet: take the actor system down before failing.
                    connection_stop.cancel();
                    if let Ok(router) = Arc::try_unwrap(router) {
                        let _ = router.stop(config.runtime.shutdown_deadline).await;
                    }
                    return Err(e.into());
                }
            }
        } else {
            None
        };

        // The event loops, the publisher and the ack task, on this (the System's) thread:
        // the shards, which may wait for room in the publish queue, run on their own.
        let connection_tasks = connection_tasks.into_iter().map(actix_rt::spawn).collect();
        let ingest_task = actix_rt::spawn(crate::ingest::run(
            ingest_rx,
            router.clone(),
            publisher.acknowledger(),
        ));

        let background_stop = CancellationToken::new();
        let mut background = vec![
            actix_rt::spawn(checkpointer(
                router.clone(),
                store.clone(),
                (config.store.checkpoint_interval, config.store.state_ttl),
                background_stop.clone(),
            )),
            actix_rt::spawn(stats_line(
                router.shared_pipelines(),
                config.runtime.stats_interval,
                background_stop.clone(),
            )),
        ];
        if let Some(every) = crate::systemd::watchdog_interval() {
            background.push(actix_rt::spawn(watchdog(
                router.clone(),
                every,
                background_stop.clone(),
            )));
        }
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
                .map(|p| p.output.covering_filter())
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
            pipelines: router.shared_pipelines(),
            engine: router.stats.clone(),
            broker: format!("{}:{}", mqtt_cfg.host, mqtt_cfg.port),
            http: http.as_ref().map(HttpServer::local_addr),
            classifiers,
        };
        Ok(Daemon {
            config,
            handle,
            router,
            publisher,
            input_stop,
            connection_stop,
            background_stop,
            connection_tasks,
            ingest_task,
            background,
            http,
            store,
            sink,
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

    /// Apply a new configuration (SIGHUP): unchanged pipelines keep their actors and state,
    /// changed ones are rebuilt (their keys write their state and are reactivated from the
    /// store under the new config: a model whose parameters changed starts afresh, one whose
    /// operators changed keeps its model), removed ones are checkpointed and stopped; the MQTT
    /// subscriptions follow. Sections other than `[[pipelines]]` (classifiers included) are
    /// read at start only:
    /// changes to them are reported in [`ReloadReport::needs_restart`] and not applied.
    ///
    /// # Errors
    /// [`AppError::Pipeline`] if a pipeline cannot be built (the old ones keep running) or
    /// [`AppError::Store`] if the checkpoint after the switch fails.
    pub async fn reload(&mut self, next: Config) -> Result<ReloadReport, AppError> {
        let current = self.router.pipelines();
        let (pipelines, plan) = current.reload(
            &self.config.pipelines,
            &next.pipelines,
            &self.config.classifiers,
        )?;
        let c = &self.config;
        let needs_restart: Vec<&'static str> = [
            ("[mqtt]", c.mqtt != next.mqtt),
            ("[store]", c.store != next.store),
            ("[runtime]", c.runtime != next.runtime),
            ("[http]", c.http != next.http),
            ("[simulate]", c.simulate != next.simulate),
            ("[[classifiers]]", c.classifiers != next.classifiers),
        ]
        .into_iter()
        .filter_map(|(section, changed)| changed.then_some(section))
        .collect();
        let pipelines = Arc::new(pipelines);
        // Recommenders of new recommend pipelines must exist before their keys appear; a
        // rebuilt one keeps its actor (and its similarities, if its parameters are the same).
        let registry = self.router.recommenders().clone();
        let mut retired = Vec::new();
        for name in plan.added.iter().chain(&plan.rebuilt) {
            let now_recommend = pipelines.by_name(name).is_some_and(|p| p.is_recommend());
            match (registry.get(name), now_recommend) {
                (None, true) => start_recommender(&next, name, &registry, &self.store, &self.sink)?,
                (Some(actor), true) => {
                    if let Some(cfg) = next.pipelines.iter().find(|p| &p.name == name) {
                        let settings = crate::pipeline::recommender::Recommender::new(cfg)?;
                        actor.do_send(ReplaceSettings(Box::new(settings)));
                    }
                }
                (Some(_), false) => retired.extend(registry.remove(name)),
                (None, false) => {}
            }
        }
        for name in &plan.removed {
            retired.extend(registry.remove(name));
        }
        // No await between building and publishing them (see `Router::reconfigure`).
        let keys_stopped = self.router.reconfigure(pipelines.clone()).await;
        for actor in retired {
            if let Ok(Err(e)) = actor.send(SaveAndStop).await {
                tracing::error!("reload: cannot save a removed recommender's similarities: {e}");
            }
        }
        let (subscribed, unsubscribed) = self
            .publisher
            .set_subscriptions(pipelines.subscriptions(self.config.mqtt.subscribe_qos));
        self.router.checkpoint().await?;
        self.config.pipelines = next.pipelines;
        Ok(ReloadReport {
            plan,
            keys_stopped,
            subscribed,
            unsubscribed,
            needs_restart,
        })
    }

    /// Graceful shutdown (see the module doc for the order).
    ///
    /// # Errors
    /// [`AppError::Store`] if the final checkpoint cannot be flushed.
    pub async fn shutdown(self) -> Result<CheckpointReport, AppError> {
        let deadline = self.config.runtime.shutdown_deadline;
        // One deadline for the whole shutdown, not one per step: each step gets what is left.
        // Draining the input gets at most half, so the final checkpoint always has time. The
        // steps end a twentieth early: `run` exits the process at the deadline itself.
        let end = tokio::time::Instant::now() + deadline - deadline / 20;
        let left = || end.saturating_duration_since(tokio::time::Instant::now());
        tracing::info!("shutting down: stopping input");
        self.input_stop.cancel();
        // Unsubscribes and drops the ingest sender, keeping the connection up for the outputs
        // still to come: the ingest task routes what is queued, then ends.
        self.publisher.stop_input();
        let ingest_abort = self.ingest_task.abort_handle();
        if tokio::time::timeout(deadline / 2, self.ingest_task)
            .await
            .is_err()
        {
            // It holds the router and may be waiting for room in a shard's queue.
            ingest_abort.abort();
            tracing::warn!(
                "ingest did not drain within half the shutdown deadline ({:?}): the readings \
                 still queued are not processed",
                deadline / 2
            );
        }
        self.background_stop.cancel();
        // The background tasks stop at their next await point (a checkpoint in progress is
        // abandoned: the final one below covers it); none may hold the shutdown.
        for t in self.background {
            let abort = t.abort_handle();
            if tokio::time::timeout(left(), t).await.is_err() {
                abort.abort();
            }
        }
        if let Some(http) = self.http {
            // Graceful: waits for requests in flight, but not past the deadline.
            let _ = tokio::time::timeout(left(), http.stop()).await;
        }
        for classifier in &self.handle.classifiers {
            let _ = tokio::time::timeout(left(), classifier.send(StopSupervisor)).await;
        }
        let recommenders = self.router.recommenders().clone();
        // The final checkpoint leaves a fifth of the deadline for the flush that follows it
        // when it does not finish in time (see `Router::stop`).
        let checkpoint_time = left().saturating_sub(deadline / 5);
        let report = match Arc::try_unwrap(self.router) {
            Ok(router) => router.stop(checkpoint_time).await?,
            // A background task that was aborted may still hold a handle: checkpoint through
            // it (the Arbiters stop when the process exits).
            Err(shared) => match tokio::time::timeout(checkpoint_time, shared.checkpoint()).await {
                Ok(report) => report?,
                Err(_) => {
                    tracing::warn!("shutdown deadline of {deadline:?} passed before every shard answered; flushing what was written");
                    self.store.flush().await?;
                    CheckpointReport::default()
                }
            },
        };
        // The key actors are stopped: every event they sent is queued ahead of this.
        let mut saved = false;
        for (name, recommender) in recommenders.all() {
            match tokio::time::timeout(left(), recommender.send(SaveAndStop)).await {
                Ok(Ok(Ok(wrote))) => saved |= wrote,
                Ok(Ok(Err(e))) => {
                    tracing::error!(pipeline = %name, "cannot save the similarities: {e}")
                }
                Ok(Err(_)) | Err(_) => {
                    tracing::warn!(pipeline = %name, "the recommender did not answer before the deadline")
                }
            }
        }
        if saved {
            self.store.flush().await?;
        }
        tracing::info!(
            written = report.written,
            "final checkpoint done; sending queued outputs and disconnecting"
        );
        if let Err(e) = self.publisher.disconnect(left()).await {
            tracing::warn!("disconnect: {e}");
        }
        self.connection_stop.cancel();
        for task in self.connection_tasks {
            let _ = task.await;
        }
        Ok(report)
    }
}

/// What [`Daemon::reload`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Pipelines kept, rebuilt, added and removed.
    pub plan: crate::pipeline::ReloadPlan,
    /// Resident keys of rebuilt and removed pipelines that wrote their state and stopped.
    pub keys_stopped: usize,
    /// Topic filters subscribed to and unsubscribed from.
    pub subscribed: usize,
    /// See `subscribed`.
    pub unsubscribed: usize,
    /// Sections that changed but are read at start only (not applied until a restart).
    pub needs_restart: Vec<&'static str>,
}

impl std::fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; {} keys checkpointed and stopped; {} topic filters subscribed, {} unsubscribed",
            self.plan, self.keys_stopped, self.subscribed, self.unsubscribed
        )
    }
}

/// Start (or restart, on a reload) the recommender of recommend pipeline `name` of `config`,
/// continuing from its last snapshot, and register it.
fn start_recommender(
    config: &Config,
    name: &str,
    registry: &RecommenderRegistry,
    store: &Store,
    sink: &Arc<dyn OutputSink>,
) -> Result<(), AppError> {
    use actix::Actor as _;
    let Some(cfg) = config.pipelines.iter().find(|p| p.name == name) else {
        return Ok(());
    };
    let crate::config::ModelConfig::Recommend(r) = &cfg.model else {
        return Ok(());
    };
    let actor = RecommenderActor::new(
        crate::pipeline::recommender::Recommender::new(cfg)?,
        store.clone(),
        Arc::clone(sink),
        r.snapshot_interval,
        config.runtime.mailbox_capacity,
    );
    let stats = actor.stats();
    registry.insert(name, actor.start(), stats);
    Ok(())
}

/// The classifiers' actors and their counters.
type Classifiers = (
    Vec<actix::Addr<ClassifierSupervisor>>,
    Vec<Arc<ClassifierStats>>,
);

/// One supervising actor per `[[classifiers]]` section, on the daemon's own thread (a k-means
/// update of 10,000 profiles takes about a millisecond).
fn start_classifiers(
    config: &Config,
    router: &Router,
    store: &Store,
    sink: &Arc<dyn OutputSink>,
) -> Result<Classifiers, AppError> {
    use actix::Actor as _;
    let mut addrs = Vec::new();
    let mut stats = Vec::new();
    for (index, cfg) in config.classifiers.iter().enumerate() {
        let Some(source) = config.pipelines.iter().find(|p| p.name == cfg.source) else {
            return Err(AppError::Pipeline(crate::pipeline::PipelineError::Model {
                pipeline: format!("classifier {}", cfg.name),
                message: format!("source {:?} is not a pipeline", cfg.source),
            }));
        };
        // Its slot among the classifiers of the same source, as `Pipelines` numbers them.
        let slot = config.classifiers[..index]
            .iter()
            .filter(|c| c.source == cfg.source)
            .count();
        let classifier = crate::pipeline::classifier::Classifier::new(cfg, source)?;
        let supervisor = ClassifierSupervisor::new(
            classifier,
            slot,
            cfg.interval,
            router.profile_collector(),
            store.clone(),
            Arc::clone(sink),
        );
        stats.push(supervisor.stats());
        addrs.push(supervisor.start());
        tracing::info!(
            classifier = %cfg.name,
            source = %cfg.source,
            "classifier started: every {}",
            humantime::format_duration(cfg.interval)
        );
    }
    Ok((addrs, stats))
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
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    mut reloads: mpsc::Receiver<()>,
) -> Result<(), AppError> {
    // The deadline counts from the signal, also when it comes during a reload (which the
    // graceful shutdown then waits for).
    let deadline = config.runtime.shutdown_deadline;
    let signalled = shutdown.clone();
    actix_rt::spawn(async move {
        signalled.cancelled().await;
        exit_at_deadline(deadline);
    });
    let mut daemon = Daemon::start(config).await?;
    let ready = format!("subscribed on {}", daemon.handle.broker);
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = daemon.subscribed() => {
            tracing::info!("ready: {ready}");
            crate::systemd::ready(&ready);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    Some(()) = reloads.recv() => reload_from_file(&mut daemon, &ready).await,
                }
            }
        }
    }
    crate::systemd::stopping();
    daemon.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

/// The backstop of `shutdown_deadline`: a thread that ends the process once `deadline` has
/// passed, whatever the graceful shutdown is still waiting for (its steps are bounded and end
/// earlier; this covers what no timeout can: a blocked thread, a flush the disk does not
/// finish). The store is crash-safe, so this loses what a kill -9 would at that moment: at
/// most the learning since the last completed checkpoint.
fn exit_at_deadline(deadline: Duration) {
    let started = std::thread::Builder::new()
        .name("shutdown-deadline".into())
        .spawn(move || {
            std::thread::sleep(deadline);
            tracing::error!(
                "shutdown deadline of {deadline:?} passed before the graceful shutdown finished: \
                 exiting now (the store keeps every key as of its last completed checkpoint)"
            );
            std::process::exit(1);
        });
    if let Err(e) = started {
        tracing::warn!("cannot start the shutdown-deadline thread ({e}); the shutdown steps are still bounded by their own timeouts");
    }
}

/// SIGHUP: re-read the config file the daemon was started with and apply it. A file that does
/// not load is rejected with every error logged; the running configuration stays.
async fn reload_from_file(daemon: &mut Daemon, ready: &str) {
    let path = daemon.config.source.clone();
    crate::systemd::reloading();
    tracing::info!("reloading {}", path.display());
    match crate::config::load(&path) {
        Err(errors) => {
            for line in errors.to_string().lines() {
                tracing::error!("{line}");
            }
            tracing::error!(
                "reload rejected: {} has {} error(s); the running configuration stays",
                path.display(),
                errors.errors.len()
            );
        }
        Ok(next) => match daemon.reload(next).await {
            Ok(report) => {
                tracing::info!("reloaded: {report}");
                if !report.needs_restart.is_empty() {
                    tracing::warn!(
                        "changes to {} take effect after a restart (only [[pipelines]] reload)",
                        report.needs_restart.join(", ")
                    );
                }
            }
            Err(e) => tracing::error!("reload failed: {e}; the running configuration stays"),
        },
    }
    crate::systemd::ready(ready);
}

/// Pings systemd's watchdog every half interval, but only while every shard answers: a stuck
/// or dead actor system stops the pings and systemd restarts the service.
async fn watchdog(router: Arc<Router>, every: Duration, stop: CancellationToken) {
    let period = (every / 2).max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!("systemd watchdog every {period:?}");
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if router.alive(period).await {
            crate::systemd::watchdog();
        } else {
            tracing::warn!(
                "actor system did not answer within {period:?}: not pinging the watchdog"
            );
        }
    }
}

/// Entries the `state_ttl` sweep looks at after each checkpoint: a few ms of sled reads on a
/// gateway, so a checkpoint is never held up, and a million keys are all looked at within
/// about 250 checkpoints (21 minutes at the default 5 s interval).
pub const SWEEP_ENTRIES_PER_CHECKPOINT: usize = 4096;

/// Checkpoints so that learning is durable within `timing.0` (`checkpoint_interval`); after
/// each, with a `[store] state_ttl` (`timing.1`), one bounded sweep of expired key states (off
/// the async threads: sled reads block).
///
/// **Pacing.** A reading routed just after a checkpoint started is made durable by the end of
/// the next one, so the next checkpoint starts one interval after this one *minus this one's
/// duration*: the lag from a reading to its durability stays within about one interval
/// however long checkpoints take. When a checkpoint takes more than half the interval the
/// store is falling behind (a churn of keys, a slow SD card): checkpoints then run back to
/// back and each holds the ingest task while it runs (backpressure: QoS 1 input waits at the
/// broker, QoS 0 input beyond the queues is dropped and counted), until one takes less than
/// half the interval again.
async fn checkpointer(
    router: Arc<Router>,
    store: Store,
    timing: (Duration, Option<Duration>),
    stop: CancellationToken,
) {
    let (every, ttl) = timing;
    let mut next = tokio::time::Instant::now() + every;
    let mut behind = false;
    let mut cursor = SweepCursor::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        let started = tokio::time::Instant::now();
        // Abandoned when the daemon stops (the final checkpoint covers what this one would
        // have written), so a checkpoint queued behind a backlog cannot hold the shutdown.
        tokio::select! {
            _ = stop.cancelled() => return,
            done = router.checkpoint_paced(behind) => {
                if let Err(e) = done {
                    tracing::error!("checkpoint failed: {e}");
                }
            }
        }
        let took = started.elapsed();
        let now_behind = took > every / 2;
        if now_behind != behind {
            if now_behind {
                tracing::warn!(
                    "a checkpoint took {took:?}, more than half of checkpoint_interval ({every:?}): \
                     the store is falling behind; ingest waits during checkpoints until it keeps up"
                );
            } else {
                tracing::info!(
                    "checkpoints keep up again ({took:?}); ingest no longer waits for them"
                );
            }
            behind = now_behind;
        }
        next = (started + every.saturating_sub(took)).max(tokio::time::Instant::now());
        if let Some(ttl) = ttl {
            sweep_expired(&router, &store, ttl, &mut cursor).await;
        }
    }
}

/// One bounded `state_ttl` sweep of the current pipelines' key states, counted in
/// [`EngineStats::states_expired`](crate::actors::EngineStats) and logged when it removed
/// something.
async fn sweep_expired(router: &Router, store: &Store, ttl: Duration, cursor: &mut SweepCursor) {
    let names: Vec<String> = router
        .current_pipelines()
        .iter()
        .map(|p| p.name.clone())
        .collect();
    let (store, mut moved) = (store.clone(), std::mem::take(cursor));
    let swept = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let report = store.sweep_expired(&refs, ttl, SWEEP_ENTRIES_PER_CHECKPOINT, &mut moved);
        (moved, report)
    })
    .await;
    match swept {
        Ok((moved, Ok(report))) => {
            *cursor = moved;
            if report.expired > 0 {
                router
                    .stats
                    .states_expired
                    .fetch_add(report.expired, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    expired = report.expired,
                    examined = report.examined,
                    "store: removed {} key states not written for longer than state_ttl ({})",
                    report.expired,
                    humantime::format_duration(ttl)
                );
            }
        }
        Ok((moved, Err(e))) => {
            *cursor = moved;
            tracing::error!("state_ttl sweep failed: {e}");
        }
        // The blocking task did not finish (it does not panic on store errors): start over.
        Err(e) => tracing::error!("state_ttl sweep stopped: {e}"),
    }
}

/// The periodic stats line: per pipeline, resident keys, readings/s and the MAE of the
/// forecasts scored during the interval (pipelines added by a reload start from their first
/// interval).
async fn stats_line(
    pipelines: Arc<arc_swap::ArcSwap<Pipelines>>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let snapshot_all = |p: &Pipelines| -> Vec<(usize, StatsSnapshot)> {
        p.iter().map(|p| (p.index, p.stats.snapshot())).collect()
    };
    let mut last = snapshot_all(&pipelines.load());
    let mut last_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let secs = last_at.elapsed().as_secs_f64().max(1e-9);
        last_at = tokio::time::Instant::now();
        let current = pipelines.load_full();
        for p in current.iter() {
            let now = p.stats.snapshot();
            let prev = last
                .iter()
                .find(|(index, _)| *index == p.index)
                .map_or_else(StatsSnapshot::default, |(_, s)| *s);
            let rate = (now.readings - prev.readings) as f64 / secs;
            // The error measure of the model kind, over the readings scored in this interval.
            let quality = match p.kind() {
                "classification" => now
                    .accuracy_since(&prev)
                    .map_or_else(|| "accuracy=-".to_string(), |a| format!("accuracy={a:.4}")),
                "kmeans" => now.mean_distance_since(&prev).map_or_else(
                    || "mean_distance=-".to_string(),
                    |d| format!("mean_distance={d:.4}"),
                ),
                _ => now
                    .mae_since(&prev)
                    .map_or_else(|| "mae=-".to_string(), |m| format!("mae={m:.4}")),
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
        }
        last = snapshot_all(&current);
        let unrouted = current.unrouted.get(DropReason::UnknownTopic);
        if unrouted > 0 {
            tracing::debug!(
                unknown_topic = unrouted,
                "messages on topics no pipeline reads"
            );
        }
    }
}
