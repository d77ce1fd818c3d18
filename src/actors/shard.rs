//! `Shard`: one per Arbiter. It owns the directory of the key actors living on its thread:
//! it activates a key on its first reading (loading its state from the store), forwards each
//! reading to the key's bounded mailbox, and passivates keys that are idle or over the
//! resident budget (their state is written back and the actor stopped), so memory stays
//! bounded however many keys appear.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::SendError;
use actix::prelude::*;
use compact_str::CompactString;
use futures_util::future::join_all;
use lru::LruCache;

use super::key::{GetState, KeyActor, KeyView, Passivate, Snapshot, TakeProfile};
use super::{EngineStats, Ingest, OutputSink};
use crate::codec::DropReason;
use crate::pipeline::{KeyState, Pipelines};
use crate::store::Store;

type KeyId = (usize, CompactString);

struct Retiring {
    addr: Addr<KeyActor>,
    waiting: Vec<Ingest>,
}

struct Resident {
    addr: Addr<KeyActor>,
    last_seen: Instant,
}

/// Settings of a shard, taken from `[runtime]`.
#[derive(Debug, Clone, Copy)]
pub struct ShardSettings {
    /// Resident keys allowed on this shard.
    pub max_resident: usize,
    /// Keys idle this long are passivated.
    pub idle_timeout: Duration,
    /// Mailbox capacity of the shard and of each key actor.
    pub mailbox_capacity: usize,
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
    /// Keys being passivated, with the readings that arrived meanwhile (bounded): they are
    /// replayed into a fresh actor once the old one has written its state back.
    retiring: HashMap<KeyId, Retiring, ahash::RandomState>,
}

impl Shard {
    /// A shard; start it with `Shard::start_in_arbiter`.
    pub fn new(
        pipelines: Arc<Pipelines>,
        store: Store,
        sink: Arc<dyn OutputSink>,
        stats: Arc<EngineStats>,
        recommenders: Arc<super::recommender::RecommenderRegistry>,
        settings: ShardSettings,
    ) -> Shard {
        let cap = NonZeroUsize::new(settings.max_resident).unwrap_or(NonZeroUsize::MIN);
        Shard {
            pipelines,
            recommenders,
            store,
            sink,
            stats,
            settings,
            resident: LruCache::with_hasher(cap, ahash::RandomState::new()),
            retiring: HashMap::default(),
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

    fn activate(&mut self, id: &KeyId, ctx: &mut Context<Self>) -> Option<Addr<KeyActor>> {
        let pipeline = self.pipelines.get_shared(id.0)?;
        let state = self.load_state(id.0, &id.1)?;
        let recommender = pipeline
            .is_recommend()
            .then(|| self.recommenders.get(&pipeline.name))
            .flatten();
        let (store, sink) = (self.store.clone(), self.sink.clone());
        let (key, cap) = (id.1.clone(), self.settings.mailbox_capacity);
        let addr = KeyActor::create(move |kctx| {
            kctx.set_mailbox_capacity(cap);
            KeyActor::new(pipeline, key, state, store, sink, recommender)
        });
        self.stats.activated.fetch_add(1, Ordering::Relaxed);
        self.gauge(id.0, 1);
        let resident = Resident {
            addr: addr.clone(),
            last_seen: Instant::now(),
        };
        if let Some((old_id, old)) = self.resident.push(id.clone(), resident) {
            if old_id != *id {
                self.passivate(old_id, old.addr, ctx);
            }
        }
        Some(addr)
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

    fn passivate(&mut self, id: KeyId, addr: Addr<KeyActor>, ctx: &mut Context<Self>) {
        self.gauge(id.0, -1);
        let passivation = addr.send(Passivate);
        self.retiring.insert(
            id.clone(),
            Retiring {
                addr,
                waiting: Vec::new(),
            },
        );
        let fut = passivation.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(key = %id.1, "passivation could not write state: {e}")
                }
                Err(e) => tracing::error!(key = %id.1, "passivation failed: {e}"),
            }
            act.stats.passivated.fetch_add(1, Ordering::Relaxed);
            if let Some(retired) = act.retiring.remove(&id) {
                for msg in retired.waiting {
                    act.deliver(msg, ctx);
                }
            }
        });
        // Spawned, not awaited: the shard keeps serving other keys meanwhile, and readings
        // for this key wait in `retiring` until its state is safely in the store.
        ctx.spawn(fut);
    }

    fn deliver(&mut self, msg: Ingest, ctx: &mut Context<Self>) {
        let id: KeyId = (msg.pipeline, msg.key.clone());
        if let Some(Retiring { waiting, .. }) = self.retiring.get_mut(&id) {
            if waiting.len() < self.settings.mailbox_capacity {
                waiting.push(msg);
            } else {
                self.drop_reading(msg.pipeline, DropReason::MailboxFull);
            }
            return;
        }
        let addr = match self.resident.get_mut(&id) {
            Some(r) => {
                r.last_seen = Instant::now();
                r.addr.clone()
            }
            None => match self.activate(&id, ctx) {
                Some(addr) => addr,
                None => return,
            },
        };
        match addr.try_send(msg) {
            Ok(()) => {}
            Err(SendError::Full(m)) => self.drop_reading(m.pipeline, DropReason::MailboxFull),
            Err(SendError::Closed(m)) => {
                // The actor died (it should not: handlers do not panic on input). Forget it
                // so the next reading re-activates the key from the store.
                self.resident.pop(&id);
                self.gauge(id.0, -1);
                self.drop_reading(m.pipeline, DropReason::MailboxFull);
            }
        }
    }

    fn drop_reading(&self, pipeline: usize, reason: DropReason) {
        if let Some(p) = self.pipelines.get(pipeline) {
            p.stats.drops.record(reason, |suppressed| {
                tracing::warn!(pipeline = %p.name, reason = reason.as_str(), suppressed, "dropped a reading: the key's mailbox is full (the actor system is overloaded)")
            });
        }
    }

    fn sweep_idle(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        while let Some((_, r)) = self.resident.peek_lru() {
            if now.duration_since(r.last_seen) < self.settings.idle_timeout {
                break;
            }
            if let Some((id, r)) = self.resident.pop_lru() {
                self.passivate(id, r.addr, ctx);
            }
        }
    }
}

impl Actor for Shard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.settings.mailbox_capacity);
        let every = (self.settings.idle_timeout / 4).max(Duration::from_millis(100));
        ctx.run_interval(every, |act, ctx| act.sweep_idle(ctx));
    }
}

impl Handler<Ingest> for Shard {
    type Result = ();

    fn handle(&mut self, msg: Ingest, ctx: &mut Self::Context) {
        self.deliver(msg, ctx);
    }
}

/// Checkpointer → shard: have every resident key write its state if it changed.
/// Being queued behind the readings already in the mailboxes, it also drains them.
#[derive(Message)]
#[rtype(result = "CheckpointReport")]
pub struct Checkpoint;

/// What a checkpoint did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointReport {
    /// States written.
    pub written: u64,
    /// States that could not be written.
    pub failed: u64,
}

impl Handler<Checkpoint> for Shard {
    type Result = ResponseFuture<CheckpointReport>;

    fn handle(&mut self, _msg: Checkpoint, _ctx: &mut Self::Context) -> Self::Result {
        let sends: Vec<_> = self
            .resident
            .iter()
            .map(|(_, r)| r.addr.send(Snapshot))
            .collect();
        // A retiring key writes its state when it handles Passivate, which is ahead of this
        // Snapshot in its mailbox: waiting for the answer (or for the closed mailbox) means
        // its state is in the store too.
        let retiring: Vec<_> = self
            .retiring
            .values()
            .map(|r| r.addr.send(Snapshot))
            .collect();
        Box::pin(async move {
            let mut report = CheckpointReport::default();
            let _ = join_all(retiring).await;
            for res in join_all(sends).await {
                match res {
                    Ok(Ok(true)) => report.written += 1,
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => {
                        report.failed += 1;
                        tracing::error!("checkpoint could not write a state: {e}");
                    }
                    Err(_) => report.failed += 1,
                }
            }
            report
        })
    }
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
    type Result = ResponseFuture<Option<KeyView>>;

    fn handle(&mut self, msg: Inspect, _ctx: &mut Self::Context) -> Self::Result {
        let addr = self
            .resident
            .peek(&(msg.pipeline, msg.key))
            .map(|r| r.addr.clone());
        Box::pin(async move {
            match addr {
                Some(a) => a.send(GetState).await.ok(),
                None => None,
            }
        })
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

/// Reload → shard: serve `pipelines` from now on. Resident keys of pipelines that are no
/// longer in it (removed, or rebuilt under a new index) write their state back and stop; the
/// answer, the number of keys stopped, comes once every one of them has written its state.
///
/// The shard handles nothing else meanwhile (an atomic response): a reading for a rebuilt
/// pipeline queued behind this message must not activate its key from the store before the
/// old actor of that key has written its last state there.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Reconfigure(pub Arc<Pipelines>);

impl Handler<Reconfigure> for Shard {
    type Result = AtomicResponse<Self, usize>;

    fn handle(&mut self, msg: Reconfigure, _ctx: &mut Self::Context) -> Self::Result {
        let old = std::mem::replace(&mut self.pipelines, msg.0);
        let gone: Vec<KeyId> = self
            .resident
            .iter()
            .filter(|(id, _)| self.pipelines.get(id.0).is_none())
            .map(|(id, _)| id.clone())
            .collect();
        let mut passivations = Vec::with_capacity(gone.len());
        for id in gone {
            if let Some(r) = self.resident.pop(&id) {
                if let Some(p) = old.get(id.0) {
                    p.stats.resident_keys.fetch_sub(1, Ordering::Relaxed);
                }
                self.stats.resident.fetch_sub(1, Ordering::Relaxed);
                self.stats.passivated.fetch_add(1, Ordering::Relaxed);
                passivations.push(r.addr.send(Passivate));
            }
        }
        // Readings of those pipelines waiting for a retiring key have nowhere to go.
        let current = &self.pipelines;
        for r in self.retiring.values_mut() {
            r.waiting.retain(|m| current.get(m.pipeline).is_some());
        }
        let written = async move {
            let stopped = passivations.len();
            for result in join_all(passivations).await {
                match result {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!("reload: a key could not write its state: {e}"),
                    Err(e) => tracing::error!("reload: a key did not answer: {e}"),
                }
            }
            stopped
        };
        AtomicResponse::new(Box::pin(written.into_actor(self)))
    }
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
    type Result = ResponseFuture<Vec<(CompactString, Vec<f64>)>>;

    fn handle(&mut self, msg: CollectProfiles, _ctx: &mut Self::Context) -> Self::Result {
        let asks: Vec<_> = self
            .resident
            .iter()
            .filter(|(id, _)| id.0 == msg.pipeline)
            .map(|(id, r)| {
                let key = id.1.clone();
                let answer = r.addr.send(TakeProfile { slot: msg.slot });
                async move { answer.await.ok().flatten().map(|profile| (key, profile)) }
            })
            .collect();
        Box::pin(async move { join_all(asks).await.into_iter().flatten().collect() })
    }
}
