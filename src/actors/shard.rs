//! `Shard`: one per Arbiter (thread). It is the mailbox and the thread of the key actors
//! living on it ([`KeyActor`], virtual actors): it activates a key on its first reading
//! (loading its state from the store), runs the key's handler for each of its readings, and
//! passivates keys that are idle or over the resident budget (state written back, memory
//! freed), so memory stays bounded however many keys appear.
//!
//! **Input.** Everything that must be ordered with the readings comes through one bounded
//! queue of [`ShardInput`]: batches of readings (one per shard per drain of the MQTT ingest
//! queue), checkpoints (which therefore see every reading routed before them) and
//! reconfigurations. The router *waits* for room in it, so a busy shard slows the ingest
//! task, and the ingest task the MQTT event loop, instead of dropping readings. Inspection,
//! profile collection and liveness pings need no order and use the shard's actix mailbox.
//!
//! **Passivation is synchronous**: the key's state is written to the store (a sled insert,
//! a few µs: it lands in the page cache and reaches the disk at the next flush) before the
//! shard handles anything else, so no reading can reach a key whose state is in flight and
//! no backlog of keys waiting to be written can build up.

use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use compact_str::CompactString;
use lru::LruCache;
use tokio::sync::{mpsc, oneshot};

use super::key::{KeyActor, KeyBuffers, KeyView};
use super::{ChainRoute, EngineStats, Ingest, OutputSink};
use crate::memory::Budget;
use crate::pipeline::{KeyState, Pipelines};
use crate::store::Store;

type KeyId = (usize, CompactString);

/// What a shard's ordered input queue carries.
pub enum ShardInput {
    /// Readings for keys of this shard, in arrival order.
    Batch(Vec<Ingest>),
    /// Write every changed key state (after the readings queued before); answers what it did.
    Checkpoint(oneshot::Sender<CheckpointReport>),
    /// Serve these pipelines from now on; keys of pipelines no longer in them write their
    /// state and stop. Answers the number of keys stopped.
    Reconfigure(Arc<Pipelines>, oneshot::Sender<usize>),
}

struct Resident {
    actor: KeyActor,
    last_seen: Instant,
}

/// Settings of a shard, taken from `[runtime]`.
#[derive(Debug, Clone)]
pub struct ShardSettings {
    /// Resident keys allowed on this shard.
    pub max_resident: usize,
    /// Keys idle this long are passivated.
    pub idle_timeout: Duration,
    /// The heap budget (`[runtime] max_memory`): above it, keys are passivated.
    pub memory: Budget,
}

/// How a shard is connected to the router: its ordered input queue and the route of the
/// chained readings its outputs produce.
pub struct ShardWiring {
    /// The receiving end of the shard's input queue.
    pub input: mpsc::Receiver<ShardInput>,
    /// See [`ChainRoute`].
    pub chain: ChainRoute,
}

/// The key directory of one Arbiter.
pub struct Shard {
    pipelines: Arc<Pipelines>,
    recommenders: Arc<super::recommender::RecommenderRegistry>,
    store: Store,
    sink: Arc<dyn OutputSink>,
    stats: Arc<EngineStats>,
    settings: ShardSettings,
    resident: LruCache<KeyId, Resident, ahash::RandomState>,
    /// The key handlers' working memory (one handler runs at a time).
    buffers: KeyBuffers,
    /// The ordered input queue, until `started` turns it into the actor's stream.
    input: Option<mpsc::Receiver<ShardInput>>,
    /// Routes the readings chained pipelines decode from this shard's outputs.
    chain: ChainRoute,
}

impl Shard {
    /// A shard reading `input`; start it with `Shard::start_in_arbiter`.
    pub fn new(
        pipelines: Arc<Pipelines>,
        store: Store,
        sink: Arc<dyn OutputSink>,
        stats: Arc<EngineStats>,
        recommenders: Arc<super::recommender::RecommenderRegistry>,
        settings: ShardSettings,
        wiring: ShardWiring,
    ) -> Shard {
        let ShardWiring { input, chain } = wiring;
        let cap = NonZeroUsize::new(settings.max_resident).unwrap_or(NonZeroUsize::MIN);
        Shard {
            pipelines,
            recommenders,
            store,
            sink,
            stats,
            settings,
            resident: LruCache::with_hasher(cap, ahash::RandomState::new()),
            buffers: KeyBuffers::default(),
            input: Some(input),
            chain,
        }
    }

    /// Load a key's state from the store, or start it fresh.
    fn load_state(&self, pipeline: usize, key: &str) -> Option<KeyState> {
        let p = self.pipelines.get(pipeline)?;
        match self.store.get(&p.name, key) {
            Ok(Some(bytes)) => match p.restore_state(&bytes) {
                Ok(Some(state)) => {
                    self.stats.restored.fetch_add(1, Ordering::Relaxed);
                    Some(state)
                }
                Ok(None) => {
                    tracing::info!(pipeline = %p.name, key, "stored state was made with other model parameters (or by an older forecaster); starting the key afresh");
                    Some(p.new_state())
                }
                Err(e) => {
                    tracing::warn!(pipeline = %p.name, key, "cannot read stored state ({e}); starting the key afresh");
                    Some(p.new_state())
                }
            },
            Ok(None) => Some(p.new_state()),
            Err(e) => {
                tracing::error!(pipeline = %p.name, key, "store read failed ({e}); starting the key afresh");
                Some(p.new_state())
            }
        }
    }

    /// Activate a key: its actor, from its stored state (or fresh), made resident; the least
    /// recently used key is passivated if the shard is full. False if its pipeline is gone.
    fn activate(&mut self, id: &KeyId, now: Instant) -> bool {
        let Some(pipeline) = self.pipelines.get_shared(id.0) else {
            return false;
        };
        let Some(state) = self.load_state(id.0, &id.1) else {
            return false;
        };
        let recommender = pipeline
            .is_recommend()
            .then(|| self.recommenders.get(&pipeline.name))
            .flatten();
        let actor = KeyActor::new(pipeline, id.1.clone(), state, recommender);
        self.stats.activated.fetch_add(1, Ordering::Relaxed);
        self.gauge(id.0, 1);
        let resident = Resident {
            actor,
            last_seen: now,
        };
        if let Some((old_id, old)) = self.resident.push(id.clone(), resident) {
            if old_id != *id {
                self.passivate(&old_id, old.actor);
            }
        }
        if self.settings.memory.exceeded() {
            self.shed_memory();
        }
        true
    }

    /// The heap is over the budget: passivate least recently used keys (never the one just
    /// activated) until it is below the budget's low mark. Every shard does this for its own
    /// keys when it activates one, so the shards shrink together, and passivation is
    /// synchronous, so the memory is free when this returns — keys cannot arrive faster than
    /// they are written back.
    fn shed_memory(&mut self) {
        let mut shed = 0u64;
        while self.resident.len() > 1 && self.settings.memory.still_above_low() {
            let Some((id, r)) = self.resident.pop_lru() else {
                break;
            };
            self.passivate(&id, r.actor);
            shed += 1;
        }
        self.stats
            .passivated_for_memory
            .fetch_add(shed, Ordering::Relaxed);
        if shed == 0 {
            // Nothing left to free here: the memory is held elsewhere (another shard's keys
            // go next time it activates one; queues and the store's cache drain by themselves).
            self.stats.memory_pressure.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Move the resident-key gauges (engine-wide and per pipeline) by ±1.
    fn gauge(&self, pipeline: usize, up: i8) {
        let p = self.pipelines.get(pipeline).map(|p| &p.stats.resident_keys);
        for g in std::iter::once(&self.stats.resident).chain(p) {
            if up > 0 {
                g.fetch_add(1, Ordering::Relaxed);
            } else {
                g.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Write a key's state back and let its actor go.
    fn passivate(&mut self, id: &KeyId, mut actor: KeyActor) {
        self.gauge(id.0, -1);
        if let Err(e) = self.write_back(&mut actor) {
            tracing::error!(key = %id.1, "passivation could not write state: {e}");
        }
        if actor.is_dirty() {
            // Not written, and the actor goes: it no longer counts as waiting.
            self.stats.dirty_keys.fetch_sub(1, Ordering::Relaxed);
        }
        self.stats.passivated.fetch_add(1, Ordering::Relaxed);
    }

    /// [`KeyActor::write_back`], keeping the write-back gauges (`dirty_keys`,
    /// `unflushed_states`) in step.
    fn write_back(&mut self, actor: &mut KeyActor) -> Result<bool, crate::store::StoreError> {
        let wrote = actor.write_back(&self.store, &mut self.buffers)?;
        if wrote {
            self.stats.dirty_keys.fetch_sub(1, Ordering::Relaxed);
            self.stats.unflushed_states.fetch_add(1, Ordering::Relaxed);
        }
        Ok(wrote)
    }

    /// Run a key's handler for `msg`, counting the key in `dirty_keys` when it becomes dirty.
    fn run_handler(
        actor: &mut KeyActor,
        msg: &Ingest,
        buffers: &mut KeyBuffers,
        sink: &dyn OutputSink,
        stats: &EngineStats,
    ) {
        let was_dirty = actor.is_dirty();
        actor.ingest(msg, buffers, sink);
        if !was_dirty && actor.is_dirty() {
            stats.dirty_keys.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Hand a reading to its key's actor, activating the key if it is not resident.
    fn deliver(&mut self, msg: &Ingest, now: Instant) {
        let id: KeyId = (msg.pipeline, msg.key.clone());
        if let Some(r) = self.resident.get_mut(&id) {
            r.last_seen = now;
            Self::run_handler(
                &mut r.actor,
                msg,
                &mut self.buffers,
                &*self.sink,
                &self.stats,
            );
            return;
        }
        if self.activate(&id, now) {
            if let Some(r) = self.resident.peek_mut(&id) {
                Self::run_handler(
                    &mut r.actor,
                    msg,
                    &mut self.buffers,
                    &*self.sink,
                    &self.stats,
                );
            }
        }
    }

    fn sweep_idle(&mut self) {
        let now = Instant::now();
        while let Some((_, r)) = self.resident.peek_lru() {
            if now.duration_since(r.last_seen) < self.settings.idle_timeout {
                break;
            }
            if let Some((id, r)) = self.resident.pop_lru() {
                self.passivate(&id, r.actor);
            }
        }
    }

    fn checkpoint(&mut self) -> CheckpointReport {
        let mut report = CheckpointReport::default();
        let mut written = 0;
        for (_, r) in self.resident.iter_mut() {
            match r.actor.write_back(&self.store, &mut self.buffers) {
                Ok(true) => {
                    report.written += 1;
                    written += 1;
                }
                Ok(false) => {}
                Err(e) => {
                    report.failed += 1;
                    tracing::error!("checkpoint could not write a state: {e}");
                }
            }
        }
        // (`Shard::write_back` cannot be used while `resident` is borrowed.)
        self.stats.dirty_keys.fetch_sub(written, Ordering::Relaxed);
        self.stats
            .unflushed_states
            .fetch_add(written, Ordering::Relaxed);
        report
    }

    /// Serve `next`; passivate the resident keys of pipelines it no longer has (removed, or
    /// rebuilt under a new index). Returns the number of keys stopped.
    fn reconfigure(&mut self, next: Arc<Pipelines>) -> usize {
        let old = std::mem::replace(&mut self.pipelines, next);
        let gone: Vec<KeyId> = self
            .resident
            .iter()
            .filter(|(id, _)| self.pipelines.get(id.0).is_none())
            .map(|(id, _)| id.clone())
            .collect();
        let mut stopped = 0;
        for id in gone {
            if let Some(mut r) = self.resident.pop(&id) {
                if let Some(p) = old.get(id.0) {
                    p.stats.resident_keys.fetch_sub(1, Ordering::Relaxed);
                }
                self.stats.resident.fetch_sub(1, Ordering::Relaxed);
                self.stats.passivated.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = self.write_back(&mut r.actor) {
                    tracing::error!("reload: a key could not write its state: {e}");
                }
                if r.actor.is_dirty() {
                    self.stats.dirty_keys.fetch_sub(1, Ordering::Relaxed);
                }
                stopped += 1;
            }
        }
        stopped
    }
}

impl Actor for Shard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(input) = self.input.take() {
            ctx.add_stream(tokio_stream::wrappers::ReceiverStream::new(input));
        }
        let every = (self.settings.idle_timeout / 4).max(Duration::from_millis(100));
        ctx.run_interval(every, |act, _| act.sweep_idle());
        ctx.run_interval(crate::memory::TICK_EVERY, |act, _| {
            act.settings.memory.tick();
            act.stats
                .memory_heap_mark
                .store(act.settings.memory.high() as u64, Ordering::Relaxed);
        });
    }
}

impl StreamHandler<ShardInput> for Shard {
    fn handle(&mut self, input: ShardInput, _ctx: &mut Self::Context) {
        match input {
            ShardInput::Batch(batch) => {
                // One clock read per batch: `last_seen` only orders idle keys.
                let now = Instant::now();
                for msg in &batch {
                    self.deliver(msg, now);
                }
                // Readings of chained pipelines decoded from these outputs: this shard's own at
                // once (a chain is acyclic, so this ends), the others queued on their shards.
                loop {
                    let own = self.chain.take(&self.pipelines);
                    if own.is_empty() {
                        break;
                    }
                    for msg in &own {
                        self.deliver(msg, now);
                    }
                }
            }
            ShardInput::Checkpoint(reply) => {
                let _ = reply.send(self.checkpoint());
            }
            ShardInput::Reconfigure(next, reply) => {
                let _ = reply.send(self.reconfigure(next));
            }
        }
    }

    /// The queue closes when the router is dropped; the Arbiter's stop ends the actor.
    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

/// What a checkpoint did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointReport {
    /// States written.
    pub written: u64,
    /// States that could not be written.
    pub failed: u64,
}

/// Inspection: the state and last output of one resident key (None if it is not resident on
/// this shard).
#[derive(Message)]
#[rtype(result = "Option<KeyView>")]
pub struct Inspect {
    /// Pipeline index.
    pub pipeline: usize,
    /// Key.
    pub key: CompactString,
}

impl Handler<Inspect> for Shard {
    type Result = Option<KeyView>;

    fn handle(&mut self, msg: Inspect, _ctx: &mut Self::Context) -> Self::Result {
        self.resident
            .peek(&(msg.pipeline, msg.key))
            .map(|r| r.actor.view())
    }
}

/// Liveness probe (health endpoint, systemd watchdog): answered from the shard's mailbox, so
/// an answer means the Arbiter thread is alive and not stuck.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ping;

impl Handler<Ping> for Shard {
    type Result = ();

    fn handle(&mut self, _msg: Ping, _ctx: &mut Self::Context) {}
}

/// Classifier → shard: the profiles of this interval of the resident keys of pipeline
/// `pipeline`, for the classifier in slot `slot` of that pipeline.
#[derive(Message)]
#[rtype(result = "Vec<(CompactString, Vec<f64>)>")]
pub struct CollectProfiles {
    /// Pipeline index.
    pub pipeline: usize,
    /// Index into the pipeline's `profiles`.
    pub slot: usize,
}

impl Handler<CollectProfiles> for Shard {
    type Result = MessageResult<CollectProfiles>;

    fn handle(&mut self, msg: CollectProfiles, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.resident
                .iter_mut()
                .filter(|(id, _)| id.0 == msg.pipeline)
                .filter_map(|(id, r)| {
                    let profile = r.actor.take_profile(msg.slot)?;
                    Some((id.1.clone(), profile))
                })
                .collect(),
        )
    }
}
