//! The actor system: a [`Router`] hashes each key to one of N shards (one actix Arbiter per
//! core); the [`Shard`](shard::Shard) on that thread activates a [`KeyActor`](key::KeyActor)
//! per key. Actors know nothing of wire formats: readings arrive decoded, outputs leave as
//! bytes through an [`OutputSink`].

pub mod classifier;
pub mod key;
pub mod recommender;
pub mod shard;

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::SendError;
use actix::prelude::*;
use arc_swap::ArcSwap;
use compact_str::CompactString;
use smallvec::SmallVec;

use crate::codec::{DropReason, ReadingBuf};
use crate::config::RuntimeConfig;
use crate::pipeline::{Pipeline, Pipelines};
use crate::store::{Store, StoreError};
pub use key::KeyView;
pub use shard::{CheckpointReport, Shard, ShardSettings};

/// Where key actors send their output messages (MQTT in the daemon, a collector in tests).
pub trait OutputSink: Send + Sync + 'static {
    /// Hand over one output message of pipeline `pipeline`. Must not block; returns false if
    /// it had to drop it.
    fn emit(&self, pipeline: usize, topic: &str, payload: &[u8], qos: u8) -> bool;

    /// Hand over a message that is not a pipeline output (a classifier's classes, a
    /// recommender's lists), with MQTT's retain flag. Must not block; returns false if it had
    /// to drop it.
    fn publish(&self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> bool;
}

/// Hash of `(pipeline, key)` → shard; shared by the [`Router`] and the [`ChainSink`].
#[derive(Clone)]
struct RouteTable {
    shards: Vec<Addr<Shard>>,
    hasher: ahash::RandomState,
}

impl RouteTable {
    fn shard_of(&self, pipeline: usize, key: &str) -> Option<&Addr<Shard>> {
        let mut h = self.hasher.build_hasher();
        pipeline.hash(&mut h);
        key.hash(&mut h);
        let count = self.shards.len().max(1) as u64;
        self.shards.get((h.finish() % count) as usize)
    }

    /// Send a decoded reading to its key's shard without waiting; a full mailbox drops it
    /// (counted as `mailbox_full`).
    fn route(&self, pipeline: &Pipeline, reading: &ReadingBuf, default_time: i64) {
        let Some(shard) = self.shard_of(pipeline.index, &reading.key) else {
            return;
        };
        let msg = Ingest {
            pipeline: pipeline.index,
            key: CompactString::from(reading.key.as_str()),
            time: reading.time_ms.unwrap_or(default_time),
            values: SmallVec::from_slice(&reading.values),
            text: CompactString::from(reading.text.as_str()),
            request: false,
        };
        self.send(pipeline, shard, msg);
    }

    /// A user's request for their list: to the user's key actor, which hands its history to
    /// the recommender.
    fn route_user_request(&self, pipeline: &Pipeline, user: &str, time: i64) {
        let Some(shard) = self.shard_of(pipeline.index, user) else {
            return;
        };
        let msg = Ingest {
            pipeline: pipeline.index,
            key: CompactString::from(user),
            time,
            values: SmallVec::new(),
            text: CompactString::default(),
            request: true,
        };
        self.send(pipeline, shard, msg);
    }

    fn send(&self, pipeline: &Pipeline, shard: &Addr<Shard>, msg: Ingest) {
        if let Err(SendError::Full(_) | SendError::Closed(_)) = shard.try_send(msg) {
            pipeline.stats.drops.record(DropReason::MailboxFull, |suppressed| {
                tracing::warn!(pipeline = %pipeline.name, reason = DropReason::MailboxFull.as_str(), suppressed, "dropped a reading: the shard's mailbox is full (the actor system is overloaded)")
            });
        }
    }
}

/// The sink the key actors get: hands every output to the daemon's sink and, for a pipeline
/// other pipelines read (`from`), decodes the message for them and routes the readings to
/// their keys' shards, in-process. Routing is `try_send` like MQTT input: a full mailbox
/// drops (and counts) rather than blocking a key actor.
struct ChainSink {
    inner: Arc<dyn OutputSink>,
    /// The current pipelines (swapped by a reload).
    pipelines: Arc<ArcSwap<Pipelines>>,
    /// Set once every shard has started (the shards hold this sink).
    table: Arc<std::sync::OnceLock<RouteTable>>,
}

thread_local! {
    /// Decode buffer of chained messages, one per shard thread (no allocation once warm).
    static CHAIN_READING: std::cell::RefCell<ReadingBuf> = std::cell::RefCell::new(ReadingBuf::default());
}

impl OutputSink for ChainSink {
    fn publish(&self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> bool {
        self.inner.publish(topic, payload, qos, retain)
    }

    fn emit(&self, pipeline: usize, topic: &str, payload: &[u8], qos: u8) -> bool {
        let sent = self.inner.emit(pipeline, topic, payload, qos);
        let pipelines = self.pipelines.load();
        if pipelines.downstream(pipeline).is_empty() {
            return sent;
        }
        let Some(table) = self.table.get() else {
            return sent;
        };
        let arrival = crate::app::now_ms();
        CHAIN_READING.with(|buf| {
            if let Ok(mut buf) = buf.try_borrow_mut() {
                pipelines.dispatch_chained(pipeline, topic, payload, arrival, &mut buf, |p, r| {
                    table.route(p, r, arrival)
                });
            }
        });
        sent
    }
}

/// One decoded reading on its way to its key actor. Inline storage for the key and up to
/// eight values keeps the message off the heap in the common case.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Ingest {
    /// Pipeline index.
    pub pipeline: usize,
    /// Key.
    pub key: CompactString,
    /// Event time (ms) or arrival time.
    pub time: i64,
    /// Field values in the pipeline's field order.
    pub values: SmallVec<[f64; 8]>,
    /// The item of a recommend event (empty otherwise).
    pub text: CompactString,
    /// A request for the user's recommendations, not a reading (recommend pipelines).
    pub request: bool,
}

/// Gathers the profiles of one interval from every shard (see [`Router::profile_collector`]).
#[derive(Clone)]
pub struct ProfileCollector {
    shards: Vec<Addr<Shard>>,
    pipelines: Arc<ArcSwap<Pipelines>>,
}

impl ProfileCollector {
    /// The profiles of the resident keys of pipeline `source` for its classifier `slot`
    /// (empty if the pipeline is gone). Each key starts its next interval.
    pub async fn collect(&self, source: &str, slot: usize) -> Vec<(CompactString, Vec<f64>)> {
        let Some(pipeline) = self.pipelines.load().by_name(source).map(|p| p.index) else {
            return Vec::new();
        };
        let answers = futures_util::future::join_all(
            self.shards
                .iter()
                .map(|s| s.send(shard::CollectProfiles { pipeline, slot })),
        )
        .await;
        answers.into_iter().flatten().flatten().collect()
    }
}

/// Engine-wide gauges and counters.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Key actors currently resident.
    pub resident: AtomicU64,
    /// Key actors activated since start.
    pub activated: AtomicU64,
    /// Activations that found a stored state.
    pub restored: AtomicU64,
    /// Key actors passivated since start.
    pub passivated: AtomicU64,
    /// Checkpoints completed.
    pub checkpoints: AtomicU64,
    /// States written by checkpoints.
    pub states_written: AtomicU64,
    /// How long checkpoints took (write + flush).
    pub checkpoint_seconds: DurationHistogram,
}

/// Upper bounds (seconds) of the checkpoint-duration histogram buckets: an SD card flush
/// takes from a few ms to about a second.
pub const CHECKPOINT_BUCKETS: [f64; 9] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

/// A lock-free histogram of durations with the [`CHECKPOINT_BUCKETS`] bounds (Prometheus
/// semantics: bucket `i` counts observations ≤ its bound; `+Inf` is `count`).
#[derive(Debug, Default)]
pub struct DurationHistogram {
    buckets: [AtomicU64; CHECKPOINT_BUCKETS.len()],
    count: AtomicU64,
    /// Sum in nanoseconds (u64 overflows after 584 years of checkpoints).
    sum_nanos: AtomicU64,
}

impl DurationHistogram {
    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, bucket) in CHECKPOINT_BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            d.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// `(sum in seconds, count, cumulative bucket counts)`.
    pub fn snapshot(&self) -> (f64, u64, [u64; CHECKPOINT_BUCKETS.len()]) {
        let buckets = std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        (
            self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            self.count.load(Ordering::Relaxed),
            buckets,
        )
    }
}

/// Spreads keys over the shards by hash and owns the Arbiters.
pub struct Router {
    table: RouteTable,
    /// The recommenders of recommend pipelines, by pipeline name.
    recommenders: Arc<recommender::RecommenderRegistry>,
    arbiters: Vec<Arbiter>,
    /// The current pipelines; a reload swaps them (readers take a snapshot per message).
    pipelines: Arc<ArcSwap<Pipelines>>,
    store: Store,
    /// Gauges and counters.
    pub stats: Arc<EngineStats>,
}

impl Router {
    /// Start one Arbiter per shard (`runtime.shards`, 0 = one per core) with a [`Shard`] on
    /// each. Must be called inside an actix `System`.
    pub fn start(
        pipelines: Arc<Pipelines>,
        store: Store,
        sink: Arc<dyn OutputSink>,
        recommenders: Arc<recommender::RecommenderRegistry>,
        runtime: &RuntimeConfig,
    ) -> Router {
        let n = if runtime.shards == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            runtime.shards
        };
        let settings = ShardSettings {
            max_resident: runtime.max_resident_keys.div_ceil(n).max(1),
            idle_timeout: runtime.idle_timeout,
            mailbox_capacity: runtime.mailbox_capacity,
        };
        let stats = Arc::new(EngineStats::default());
        let table = Arc::new(std::sync::OnceLock::new());
        let current = Arc::new(ArcSwap::new(pipelines.clone()));
        let sink: Arc<dyn OutputSink> = Arc::new(ChainSink {
            inner: sink,
            pipelines: current.clone(),
            table: table.clone(),
        });
        let mut shards = Vec::with_capacity(n);
        let mut arbiters = Vec::with_capacity(n);
        for _ in 0..n {
            let arbiter = Arbiter::new();
            let (p, st, si, sa, re) = (
                pipelines.clone(),
                store.clone(),
                sink.clone(),
                stats.clone(),
                recommenders.clone(),
            );
            let addr = Shard::start_in_arbiter(&arbiter.handle(), move |_| {
                Shard::new(p, st, si, sa, re, settings)
            });
            shards.push(addr);
            arbiters.push(arbiter);
        }
        let route_table = RouteTable {
            shards,
            // Fixed seeds: a key always lands on the same shard in this process and the next.
            hasher: ahash::RandomState::with_seeds(
                0x6564_6765,
                0x666c_6f77,
                0x6b65_7973,
                0x7368_6172,
            ),
        };
        // Only this function sets it, once.
        let _ = table.set(route_table.clone());
        Router {
            table: route_table,
            recommenders,
            arbiters,
            pipelines: current,
            store,
            stats,
        }
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.table.shards.len()
    }

    /// Send a decoded reading to its key's shard without waiting. A full shard mailbox drops
    /// the reading (counted as `mailbox_full`).
    pub fn route(&self, pipeline: &Pipeline, reading: &ReadingBuf, default_time: i64) {
        self.table.route(pipeline, reading, default_time);
    }

    /// A request to a recommend pipeline: a user's list goes through the user's key actor
    /// (which has the history), similar items straight to the pipeline's recommender. A full
    /// mailbox drops the request (counted as `mailbox_full`).
    pub fn request(&self, pipeline: &Pipeline, request: crate::pipeline::Request, time: i64) {
        match request {
            crate::pipeline::Request::User(user) => {
                self.table.route_user_request(pipeline, &user, time)
            }
            crate::pipeline::Request::Item(item) => {
                let sent = self
                    .recommenders
                    .get(&pipeline.name)
                    .is_some_and(|r| r.try_send(recommender::SimilarItems { item, time }).is_ok());
                if !sent {
                    pipeline.stats.drops.record(DropReason::MailboxFull, |suppressed| {
                        tracing::warn!(pipeline = %pipeline.name, reason = DropReason::MailboxFull.as_str(), suppressed, "dropped a request: the recommender's mailbox is full")
                    });
                }
            }
        }
    }

    /// The recommenders of recommend pipelines.
    pub fn recommenders(&self) -> &Arc<recommender::RecommenderRegistry> {
        &self.recommenders
    }

    /// Ask every shard to write its changed key states, then flush the store. Being queued
    /// behind the readings already routed, it also waits for them to be processed.
    ///
    /// # Errors
    /// [`StoreError`] if the flush fails (single states that fail are logged and counted).
    pub async fn checkpoint(&self) -> Result<CheckpointReport, StoreError> {
        let started = Instant::now();
        let mut report = CheckpointReport::default();
        let answers = futures_util::future::join_all(
            self.table.shards.iter().map(|s| s.send(shard::Checkpoint)),
        )
        .await;
        for r in answers.into_iter().flatten() {
            report.written += r.written;
            report.failed += r.failed;
        }
        let bytes = self.store.flush().await?;
        self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.stats.checkpoint_seconds.observe(started.elapsed());
        self.stats
            .states_written
            .fetch_add(report.written, Ordering::Relaxed);
        tracing::debug!(
            written = report.written,
            failed = report.failed,
            bytes,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "checkpoint done"
        );
        Ok(report)
    }

    /// Whether every shard answers a [`Ping`](shard::Ping) within `timeout`: the actor
    /// system is alive and not stuck (health endpoint, systemd watchdog).
    pub async fn alive(&self, timeout: Duration) -> bool {
        let pings =
            futures_util::future::join_all(self.table.shards.iter().map(|s| s.send(shard::Ping)));
        match tokio::time::timeout(timeout, pings).await {
            Ok(answers) => answers.iter().all(Result::is_ok),
            Err(_) => false,
        }
    }

    /// A copy of a resident key's state and its last output (None if the key is not
    /// resident).
    pub async fn inspect(&self, pipeline: usize, key: &str) -> Option<KeyView> {
        let shard = self.table.shard_of(pipeline, key)?;
        shard
            .send(shard::Inspect {
                pipeline,
                key: CompactString::from(key),
            })
            .await
            .ok()
            .flatten()
    }

    /// Final checkpoint (with a deadline), then stop the Arbiters.
    ///
    /// # Errors
    /// [`StoreError`] if the final flush fails.
    pub async fn stop(self, deadline: Duration) -> Result<CheckpointReport, StoreError> {
        let report = match tokio::time::timeout(deadline, self.checkpoint()).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!("shutdown deadline of {deadline:?} passed before every key answered; flushing what was written");
                self.store
                    .flush()
                    .await
                    .map(|_| CheckpointReport::default())
            }
        };
        for a in &self.arbiters {
            a.stop();
        }
        // Join the threads so every actor (and its store handle) is dropped before we return:
        // a restart in the same process must be able to take the store's lock again.
        let arbiters = self.arbiters;
        let _ = tokio::task::spawn_blocking(move || {
            for a in arbiters {
                let _ = a.join();
            }
        })
        .await;
        report
    }

    /// The pipelines this router serves now.
    pub fn pipelines(&self) -> Arc<Pipelines> {
        self.pipelines.load_full()
    }

    /// The pipelines this router serves now, without touching a reference count (for the
    /// per-message path).
    pub fn current_pipelines(&self) -> arc_swap::Guard<Arc<Pipelines>> {
        self.pipelines.load()
    }

    /// A handle the classifiers use to gather profiles without keeping the router alive.
    pub fn profile_collector(&self) -> ProfileCollector {
        ProfileCollector {
            shards: self.table.shards.clone(),
            pipelines: Arc::clone(&self.pipelines),
        }
    }

    /// The swappable handle itself, for readers that outlive a reload (metrics, stats line).
    pub fn shared_pipelines(&self) -> Arc<ArcSwap<Pipelines>> {
        Arc::clone(&self.pipelines)
    }

    /// Serve `next` from now on (a reload): readings routed after this call use it; every
    /// shard switches to it behind the readings already in its mailbox, and stops (after
    /// writing their state) the keys of pipelines `next` no longer has. Returns once they
    /// have all written their state, with the number of keys stopped.
    ///
    /// Call it from the task that routes MQTT input (the daemon's main task), with no await
    /// between building `next` and this call, so no reading is routed with indices of `next`
    /// before the shards have been told.
    pub async fn reconfigure(&self, next: Arc<Pipelines>) -> usize {
        self.pipelines.store(next.clone());
        // Control messages bypass the mailbox bound (`do_send` semantics) on purpose: a full
        // mailbox must not lose a reconfiguration. Queued synchronously, before any await.
        let answers: Vec<_> = self
            .table
            .shards
            .iter()
            .map(|s| s.send(shard::Reconfigure(next.clone())))
            .collect();
        futures_util::future::join_all(answers)
            .await
            .into_iter()
            .map(|r| r.unwrap_or(0))
            .sum()
    }
}
