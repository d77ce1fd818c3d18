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

use actix::prelude::*;
use arc_swap::ArcSwap;
use compact_str::CompactString;
use smallvec::SmallVec;

use crate::codec::{DropReason, ReadingBuf};
use crate::config::RuntimeConfig;
use crate::pipeline::{Pipeline, Pipelines};
use crate::store::{Store, StoreError};
pub use key::KeyView;
pub use shard::{CheckpointReport, Shard, ShardInput, ShardSettings, ShardWiring};
use tokio::sync::{mpsc, oneshot};

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

/// Readings a shard's input queue holds, per batch of its capacity: `mailbox_capacity`
/// readings make `mailbox_capacity / QUEUE_BATCH_READINGS` batches (at least 2).
const QUEUE_BATCH_READINGS: usize = 64;

/// One shard as the router sees it: its ordered input queue and its actix address (for the
/// messages that need no order: inspection, profiles, pings).
#[derive(Clone)]
struct ShardHandle {
    input: mpsc::Sender<ShardInput>,
    addr: Addr<Shard>,
}

/// Hash of `(pipeline, key)` → shard; shared by the [`Router`] and the [`ChainSink`].
#[derive(Clone)]
struct RouteTable {
    shards: Vec<ShardHandle>,
    hasher: ahash::RandomState,
}

impl RouteTable {
    fn shard_index(&self, pipeline: usize, key: &str) -> usize {
        let mut h = self.hasher.build_hasher();
        pipeline.hash(&mut h);
        key.hash(&mut h);
        let count = self.shards.len().max(1) as u64;
        (h.finish() % count) as usize
    }

    /// Queue a batch of chained readings on shard `shard` without waiting — a shard must never
    /// wait for another shard — so a full queue drops them (counted as `mailbox_full`).
    fn send_now(&self, shard: usize, batch: Vec<Ingest>, pipelines: &Pipelines) {
        let Some(handle) = self.shards.get(shard) else {
            return;
        };
        if let Err(
            mpsc::error::TrySendError::Full(ShardInput::Batch(lost))
            | mpsc::error::TrySendError::Closed(ShardInput::Batch(lost)),
        ) = handle.input.try_send(ShardInput::Batch(batch))
        {
            for msg in &lost {
                if let Some(p) = pipelines.get(msg.pipeline) {
                    count_mailbox_full(p);
                }
            }
        }
    }
}

thread_local! {
    /// Chained readings decoded on this shard thread from its keys' outputs, with their
    /// shard, waiting for the end of the batch that produced them (see `Shard`).
    static CHAINED: std::cell::RefCell<Vec<(usize, Ingest)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The chained readings this thread has produced since the last call.
fn take_chained() -> Vec<(usize, Ingest)> {
    CHAINED.with(|c| {
        c.try_borrow_mut()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    })
}

fn count_mailbox_full(pipeline: &Pipeline) {
    pipeline.stats.drops.record(DropReason::MailboxFull, |suppressed| {
        tracing::warn!(pipeline = %pipeline.name, reason = DropReason::MailboxFull.as_str(), suppressed, "dropped a reading: a shard's queue is full or closed (the actor system is overloaded or stopping)")
    });
}

/// How a shard routes the chained readings its keys' outputs produced.
pub struct ChainRoute {
    /// This shard's index.
    index: usize,
    /// Set once every shard has started.
    table: Arc<std::sync::OnceLock<RouteTable>>,
}

impl ChainRoute {
    /// Route the chained readings produced since the last call: this shard's own are
    /// returned (to deliver now, in order), the others queued on their shards.
    fn take(&self, pipelines: &Pipelines) -> Vec<Ingest> {
        let chained = take_chained();
        if chained.is_empty() {
            return Vec::new();
        }
        let Some(table) = self.table.get() else {
            return Vec::new();
        };
        let mut own = Vec::new();
        let mut others: Vec<Vec<Ingest>> = (0..table.shards.len()).map(|_| Vec::new()).collect();
        for (shard, msg) in chained {
            if shard == self.index {
                own.push(msg);
            } else if let Some(batch) = others.get_mut(shard) {
                batch.push(msg);
            }
        }
        for (shard, batch) in others.into_iter().enumerate() {
            if !batch.is_empty() {
                table.send_now(shard, batch, pipelines);
            }
        }
        own
    }
}

/// Readings on their way to the shards, one batch per shard: filled by
/// [`Batches::push`] while a drain of the ingest queue is decoded, sent by
/// [`Router::send`] at its end — one queue operation and one wake per shard per drain, not
/// per reading.
pub struct Batches {
    table: RouteTable,
    per_shard: Vec<Vec<Ingest>>,
}

impl Batches {
    /// Add a decoded reading to its key's shard's batch.
    pub fn push(&mut self, pipeline: &Pipeline, reading: &ReadingBuf, default_time: i64) {
        let shard = self.table.shard_index(pipeline.index, &reading.key);
        if let Some(batch) = self.per_shard.get_mut(shard) {
            batch.push(Ingest::reading(pipeline, reading, default_time));
        }
    }

    /// Add a user's request for their list (recommend pipelines): to the user's key actor,
    /// which has the history.
    pub fn push_user_request(&mut self, pipeline: &Pipeline, user: &str, time: i64) {
        let shard = self.table.shard_index(pipeline.index, user);
        if let Some(batch) = self.per_shard.get_mut(shard) {
            batch.push(Ingest {
                pipeline: pipeline.index,
                key: CompactString::from(user),
                time,
                values: SmallVec::new(),
                text: CompactString::default(),
                request: true,
            });
        }
    }

    /// Readings waiting to be sent.
    pub fn len(&self) -> usize {
        self.per_shard.iter().map(Vec::len).sum()
    }

    /// Whether no reading is waiting.
    pub fn is_empty(&self) -> bool {
        self.per_shard.iter().all(Vec::is_empty)
    }
}

/// The sink the key actors get: hands every output to the daemon's sink and, for a pipeline
/// other pipelines read (`from`), decodes the message for them; the shard that produced it
/// routes those readings at the end of its batch — its own keys' at once, other shards' as
/// one batch per shard.
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
        let arrival = crate::clock::now_ms();
        CHAIN_READING.with(|buf| {
            if let Ok(mut buf) = buf.try_borrow_mut() {
                pipelines.dispatch_chained(
                    pipeline,
                    topic,
                    payload,
                    arrival,
                    Some(arrival),
                    &mut buf,
                    |p, r| {
                        let shard = table.shard_index(p.index, &r.key);
                        let msg = Ingest::reading(p, r, arrival);
                        CHAINED.with(|c| {
                            if let Ok(mut c) = c.try_borrow_mut() {
                                c.push((shard, msg));
                            }
                        });
                    },
                );
            }
        });
        sent
    }
}

/// One decoded reading on its way to its key actor. Inline storage for the key and up to
/// eight values keeps the message off the heap in the common case.
#[derive(Debug)]
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

impl Ingest {
    fn reading(pipeline: &Pipeline, reading: &ReadingBuf, default_time: i64) -> Ingest {
        Ingest {
            pipeline: pipeline.index,
            key: CompactString::from(reading.key.as_str()),
            time: reading.time_ms.unwrap_or(default_time),
            values: SmallVec::from_slice(&reading.values),
            text: CompactString::from(reading.text.as_str()),
            request: false,
        }
    }
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
#[derive(Debug)]
pub struct EngineStats {
    /// Key actors currently resident.
    pub resident: AtomicU64,
    /// Key actors activated since start.
    pub activated: AtomicU64,
    /// Activations that found a stored state.
    pub restored: AtomicU64,
    /// Key actors passivated since start.
    pub passivated: AtomicU64,
    /// Of those, passivated because the heap was over `[runtime] max_memory`'s budget.
    pub passivated_for_memory: AtomicU64,
    /// Activations that found the heap over the budget with no other key of their shard to
    /// passivate (memory held outside the keys).
    pub memory_pressure: AtomicU64,
    /// `[runtime] max_memory` in bytes (0 until the router starts).
    pub memory_limit: AtomicU64,
    /// The heap mark passivation keeps the heap under now (it follows the resident size:
    /// [`crate::memory::Budget`]); 0 until the first tick.
    pub memory_heap_mark: AtomicU64,
    /// Checkpoints completed.
    pub checkpoints: AtomicU64,
    /// States written by checkpoints.
    pub states_written: AtomicU64,
    /// How long checkpoints took (write + flush).
    pub checkpoint_seconds: DurationHistogram<{ CHECKPOINT_BUCKETS.len() }>,
    /// Per completed checkpoint: the time from the start of the checkpoint before it to the
    /// end of its flush — how old the oldest learning was that only this flush made durable
    /// (what a kill -9 just before it would have lost). About one checkpoint interval: the
    /// checkpointer starts each checkpoint early by the previous one's duration.
    pub checkpoint_lag: DurationHistogram<{ LAG_BUCKETS.len() }>,
    /// Key states removed by the `[store] state_ttl` sweep (not drops: idle keys forgotten).
    pub states_expired: AtomicU64,
    /// Checkpoints that held ingest while they ran: the one before took more than half of
    /// `checkpoint_interval` (the store was falling behind).
    pub checkpoints_holding_ingest: AtomicU64,
    /// Resident keys whose state changed since it was last written to the store.
    pub dirty_keys: AtomicU64,
    /// States written to the store (by passivations and checkpoints) since the start of the
    /// last completed flush: in the page cache, not yet durable.
    pub unflushed_states: AtomicU64,
    /// When the stats were created (the router's start): the origin of `durable_cut_nanos`.
    created: Instant,
    /// When the last completed checkpoint was queued, in nanoseconds since `created`:
    /// every reading routed before it is durable.
    durable_cut_nanos: AtomicU64,
}

impl Default for EngineStats {
    fn default() -> EngineStats {
        EngineStats {
            resident: AtomicU64::new(0),
            activated: AtomicU64::new(0),
            restored: AtomicU64::new(0),
            passivated: AtomicU64::new(0),
            passivated_for_memory: AtomicU64::new(0),
            memory_pressure: AtomicU64::new(0),
            memory_limit: AtomicU64::new(0),
            memory_heap_mark: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            states_written: AtomicU64::new(0),
            checkpoint_seconds: DurationHistogram::new(CHECKPOINT_BUCKETS),
            checkpoint_lag: DurationHistogram::new(LAG_BUCKETS),
            states_expired: AtomicU64::new(0),
            checkpoints_holding_ingest: AtomicU64::new(0),
            dirty_keys: AtomicU64::new(0),
            unflushed_states: AtomicU64::new(0),
            created: Instant::now(),
            durable_cut_nanos: AtomicU64::new(0),
        }
    }
}

impl EngineStats {
    /// Time since the last completed checkpoint was queued: readings routed since then are
    /// not yet durable, so a kill -9 now loses at most this much learning per key. Counted
    /// from the router's start until the first checkpoint completes.
    pub fn undurable_for(&self) -> Duration {
        let cut = Duration::from_nanos(self.durable_cut_nanos.load(Ordering::Relaxed));
        self.created.elapsed().saturating_sub(cut)
    }

    /// Record a completed checkpoint that was queued at `queued`: moves the durable cut and
    /// observes the lag since the previous cut.
    fn checkpoint_completed(&self, queued: Instant) {
        let lag = self.undurable_for();
        self.checkpoint_lag.observe(lag);
        let cut = queued.saturating_duration_since(self.created).as_nanos();
        self.durable_cut_nanos
            .fetch_max(u64::try_from(cut).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// Upper bounds (seconds) of the checkpoint-duration histogram buckets: an SD card flush
/// takes from a few ms to about a second.
pub const CHECKPOINT_BUCKETS: [f64; 9] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

/// Upper bounds (seconds) of the checkpoint-lag histogram buckets: about one
/// `checkpoint_interval` (10 s by default, from 100 ms in tests).
pub const LAG_BUCKETS: [f64; 16] = [
    0.1, 0.25, 0.5, 1.0, 1.25, 1.5, 2.0, 2.5, 5.0, 6.0, 7.5, 10.0, 12.5, 15.0, 20.0, 30.0,
];

/// A lock-free histogram of durations with fixed bucket bounds (Prometheus semantics:
/// bucket `i` counts observations ≤ its bound; `+Inf` is `count`).
#[derive(Debug)]
pub struct DurationHistogram<const N: usize> {
    bounds: [f64; N],
    buckets: [AtomicU64; N],
    count: AtomicU64,
    /// Sum in nanoseconds (u64 overflows after 584 years of checkpoints).
    sum_nanos: AtomicU64,
}

impl<const N: usize> DurationHistogram<N> {
    /// An empty histogram with these bucket bounds (seconds, ascending).
    pub fn new(bounds: [f64; N]) -> Self {
        DurationHistogram {
            bounds,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
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

    /// `(sum in seconds, count, (bound, cumulative count) per bucket)`.
    pub fn snapshot(&self) -> (f64, u64, [(f64, u64); N]) {
        let buckets =
            std::array::from_fn(|i| (self.bounds[i], self.buckets[i].load(Ordering::Relaxed)));
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
    /// The current pipelines; a reload swaps them (readers take a snapshot per drain).
    pipelines: Arc<ArcSwap<Pipelines>>,
    /// Held from decoding a drain of readings until its batches are queued, and by a reload
    /// from swapping the pipelines until every shard has been told: so no batch decoded with
    /// one generation of the pipelines is queued behind a shard's switch to the next.
    routing: tokio::sync::Mutex<()>,
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
            memory: crate::memory::Budget::for_limit(runtime.max_memory),
        };
        let queue_batches = (runtime.mailbox_capacity / QUEUE_BATCH_READINGS).max(2);
        let stats = Arc::new(EngineStats::default());
        stats
            .memory_limit
            .store(runtime.max_memory, std::sync::atomic::Ordering::Relaxed);
        let table = Arc::new(std::sync::OnceLock::new());
        let current = Arc::new(ArcSwap::new(pipelines.clone()));
        let sink: Arc<dyn OutputSink> = Arc::new(ChainSink {
            inner: sink,
            pipelines: current.clone(),
            table: table.clone(),
        });
        let mut shards = Vec::with_capacity(n);
        let mut arbiters = Vec::with_capacity(n);
        for index in 0..n {
            let arbiter = Arbiter::new();
            let chain = ChainRoute {
                index,
                table: table.clone(),
            };
            let (input, rx) = mpsc::channel(queue_batches);
            let settings = settings.clone();
            let (p, st, si, sa, re) = (
                pipelines.clone(),
                store.clone(),
                sink.clone(),
                stats.clone(),
                recommenders.clone(),
            );
            let addr = Shard::start_in_arbiter(&arbiter.handle(), move |_| {
                Shard::new(
                    p,
                    st,
                    si,
                    sa,
                    re,
                    settings,
                    ShardWiring { input: rx, chain },
                )
            });
            shards.push(ShardHandle { input, addr });
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
            routing: tokio::sync::Mutex::new(()),
            store,
            stats,
        }
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.table.shards.len()
    }

    /// Empty batches, one per shard, for a driver to fill with [`Batches::push`] and hand to
    /// [`send`](Self::send) (reused: their buffers stay allocated).
    pub fn batches(&self) -> Batches {
        Batches {
            table: self.table.clone(),
            per_shard: (0..self.table.shards.len()).map(|_| Vec::new()).collect(),
        }
    }

    /// Take the routing lock, for one drain of input: decode into [`Batches`] and
    /// [`send`](Self::send) them while holding it (see `Router::routing`).
    pub async fn routing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.routing.lock().await
    }

    /// Queue every non-empty batch on its shard, *waiting* for room in a full queue
    /// (backpressure: the caller, the ingest task, stops taking input meanwhile). Readings
    /// are dropped only if a shard has stopped (counted as `mailbox_full`).
    pub async fn send(&self, batches: &mut Batches) {
        for (shard, batch) in self.table.shards.iter().zip(&mut batches.per_shard) {
            if batch.is_empty() {
                continue;
            }
            let capacity = batch.capacity();
            let full = std::mem::replace(batch, Vec::with_capacity(capacity.min(1024)));
            if let Err(mpsc::error::SendError(ShardInput::Batch(lost))) =
                shard.input.send(ShardInput::Batch(full)).await
            {
                let pipelines = self.pipelines.load();
                for msg in &lost {
                    if let Some(p) = pipelines.get(msg.pipeline) {
                        count_mailbox_full(p);
                    }
                }
            }
        }
    }

    /// A request for similar items of a recommend pipeline: straight to its recommender (a
    /// full mailbox drops it, counted as `mailbox_full`). A user's list goes through the
    /// user's key actor: [`Batches::push_user_request`].
    pub fn request_similar(&self, pipeline: &Pipeline, item: String, time: i64) {
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

    /// The recommenders of recommend pipelines.
    pub fn recommenders(&self) -> &Arc<recommender::RecommenderRegistry> {
        &self.recommenders
    }

    /// Ask every shard to write its changed key states, then flush the store. Queued behind
    /// the batches already routed, so it also waits for them to be processed.
    ///
    /// # Errors
    /// [`StoreError`] if the flush fails (single states that fail are logged and counted).
    pub async fn checkpoint(&self) -> Result<CheckpointReport, StoreError> {
        let started = Instant::now();
        let mut report = CheckpointReport::default();
        let mut answers = Vec::with_capacity(self.table.shards.len());
        for shard in &self.table.shards {
            let (reply, answer) = oneshot::channel();
            if shard
                .input
                .send(ShardInput::Checkpoint(reply))
                .await
                .is_ok()
            {
                answers.push(answer);
            }
        }
        for answer in answers {
            match answer.await {
                Ok(r) => {
                    report.written += r.written;
                    report.failed += r.failed;
                }
                Err(_) => report.failed += 1,
            }
        }
        // States written before this point are made durable by this flush; those written
        // while it runs may or may not be, and stay counted until the next one.
        let covered = self.stats.unflushed_states.load(Ordering::Relaxed);
        let bytes = self.store.flush().await?;
        // Saturating: a reload's checkpoint may run alongside the checkpointer's, and both
        // subtract what they saw.
        let _ =
            self.stats
                .unflushed_states
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(covered))
                });
        self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.stats.checkpoint_seconds.observe(started.elapsed());
        self.stats.checkpoint_completed(started);
        self.stats
            .states_written
            .fetch_add(report.written, Ordering::Relaxed);
        tracing::debug!(
            written = report.written,
            failed = report.failed,
            bytes,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            dirty_keys = self.stats.dirty_keys.load(Ordering::Relaxed),
            "checkpoint done"
        );
        Ok(report)
    }

    /// [`checkpoint`](Self::checkpoint), holding the routing lock throughout when
    /// `hold_ingest`: no reading is routed until it is flushed (backpressure while the store
    /// falls behind; see the checkpointer in `app`). Counted in
    /// [`EngineStats::checkpoints_holding_ingest`].
    ///
    /// # Errors
    /// As [`checkpoint`](Self::checkpoint).
    pub async fn checkpoint_paced(
        &self,
        hold_ingest: bool,
    ) -> Result<CheckpointReport, StoreError> {
        let _routing = if hold_ingest {
            self.stats
                .checkpoints_holding_ingest
                .fetch_add(1, Ordering::Relaxed);
            Some(self.routing.lock().await)
        } else {
            None
        };
        self.checkpoint().await
    }

    /// Whether every shard answers a [`Ping`](shard::Ping) within `timeout`: the actor
    /// system is alive and not stuck (health endpoint, systemd watchdog).
    pub async fn alive(&self, timeout: Duration) -> bool {
        let pings = futures_util::future::join_all(
            self.table.shards.iter().map(|s| s.addr.send(shard::Ping)),
        );
        match tokio::time::timeout(timeout, pings).await {
            Ok(answers) => answers.iter().all(Result::is_ok),
            Err(_) => false,
        }
    }

    /// A copy of a resident key's state and its last output (None if the key is not
    /// resident).
    pub async fn inspect(&self, pipeline: usize, key: &str) -> Option<KeyView> {
        let shard = self
            .table
            .shards
            .get(self.table.shard_index(pipeline, key))?;
        shard
            .addr
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
                tracing::warn!("shutdown deadline of {deadline:?} passed before every shard answered; flushing what was written");
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
    /// per-drain path).
    pub fn current_pipelines(&self) -> arc_swap::Guard<Arc<Pipelines>> {
        self.pipelines.load()
    }

    /// A handle the classifiers use to gather profiles without keeping the router alive.
    pub fn profile_collector(&self) -> ProfileCollector {
        ProfileCollector {
            shards: self.table.shards.iter().map(|s| s.addr.clone()).collect(),
            pipelines: Arc::clone(&self.pipelines),
        }
    }

    /// The swappable handle itself, for readers that outlive a reload (metrics, stats line).
    pub fn shared_pipelines(&self) -> Arc<ArcSwap<Pipelines>> {
        Arc::clone(&self.pipelines)
    }

    /// Serve `next` from now on (a reload): batches routed after this call use it; every
    /// shard switches to it behind the batches already in its queue, and stops (after writing
    /// their state) the keys of pipelines `next` no longer has. Returns once they have all
    /// written their state, with the number of keys stopped.
    pub async fn reconfigure(&self, next: Arc<Pipelines>) -> usize {
        let mut answers = Vec::with_capacity(self.table.shards.len());
        {
            let _routing = self.routing.lock().await;
            self.pipelines.store(next.clone());
            for shard in &self.table.shards {
                let (reply, answer) = oneshot::channel();
                if shard
                    .input
                    .send(ShardInput::Reconfigure(next.clone(), reply))
                    .await
                    .is_ok()
                {
                    answers.push(answer);
                }
            }
        }
        let mut stopped = 0;
        for answer in answers {
            stopped += answer.await.unwrap_or(0);
        }
        stopped
    }
}
