//! `RecommenderActor`: one per `kind = "recommend"` pipeline. The user keys' actors send it
//! the changes their events make to their histories ([`RecommendEvent`]); it keeps the
//! pipeline's item-item similarities ([`Recommender`]), publishes the users' lists, answers
//! requests, and saves the similarities to the store every `snapshot_interval` (only when they
//! changed) and when it stops. At start it continues from the last snapshot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use actix::prelude::*;
use compact_str::CompactString;

use super::OutputSink;
use crate::model::{HistoryChange, HistoryEntry};
use crate::pipeline::recommender::Recommender;
use crate::store::{Store, StoreError};

/// The store namespace of a recommend pipeline's similarities (pipeline names cannot
/// contain `:`).
pub fn store_tree(pipeline: &str) -> String {
    format!("recommender:{pipeline}")
}

const SNAPSHOT_KEY: &str = "similarities";

/// Counters of one recommender, for `/metrics`.
#[derive(Debug, Default)]
pub struct RecommenderStats {
    /// Pipeline name.
    pub pipeline: String,
    /// History changes applied.
    pub events: AtomicU64,
    /// Requests answered.
    pub requests: AtomicU64,
    /// Lists published.
    pub lists: AtomicU64,
    /// Items tracked.
    pub items: AtomicU64,
    /// Heap bytes of the similarities (updated at each snapshot and every 1024 events).
    pub memory_bytes: AtomicU64,
    /// Snapshots written.
    pub snapshots: AtomicU64,
}

/// The recommenders of the running daemon, by pipeline name: key actors look theirs up when
/// they are activated (a reload may add, replace or remove one).
#[derive(Debug, Default)]
pub struct RecommenderRegistry {
    actors: RwLock<HashMap<String, Registered>>,
}

/// A registered recommender: its address and its counters.
type Registered = (Addr<RecommenderActor>, Arc<RecommenderStats>);

impl RecommenderRegistry {
    /// The recommender of pipeline `name`.
    pub fn get(&self, name: &str) -> Option<Addr<RecommenderActor>> {
        let actors = self.actors.read().unwrap_or_else(PoisonError::into_inner);
        actors.get(name).map(|(addr, _)| addr.clone())
    }

    /// Register (or replace) the recommender of pipeline `name`.
    pub fn insert(&self, name: &str, addr: Addr<RecommenderActor>, stats: Arc<RecommenderStats>) {
        let mut actors = self.actors.write().unwrap_or_else(PoisonError::into_inner);
        actors.insert(name.to_string(), (addr, stats));
    }

    /// Forget the recommender of pipeline `name`, returning it.
    pub fn remove(&self, name: &str) -> Option<Addr<RecommenderActor>> {
        let mut actors = self.actors.write().unwrap_or_else(PoisonError::into_inner);
        actors.remove(name).map(|(addr, _)| addr)
    }

    /// Every recommender, by pipeline name (sorted).
    pub fn all(&self) -> Vec<(String, Addr<RecommenderActor>)> {
        let actors = self.actors.read().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = actors
            .iter()
            .map(|(name, (addr, _))| (name.clone(), addr.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Every recommender's counters (for `/metrics`), sorted by pipeline.
    pub fn stats(&self) -> Vec<Arc<RecommenderStats>> {
        let actors = self.actors.read().unwrap_or_else(PoisonError::into_inner);
        let mut stats: Vec<_> = actors.values().map(|(_, s)| Arc::clone(s)).collect();
        stats.sort_by(|a, b| a.pipeline.cmp(&b.pipeline));
        stats
    }
}

/// The supervising actor of one recommend pipeline.
pub struct RecommenderActor {
    recommender: Recommender,
    store: Store,
    sink: Arc<dyn OutputSink>,
    tree: String,
    snapshot_interval: Duration,
    mailbox_capacity: usize,
    buf: Vec<u8>,
    stats: Arc<RecommenderStats>,
}

impl RecommenderActor {
    /// An actor for `recommender`, restored from its last snapshot in `store` if there is one
    /// made with the same parameters.
    pub fn new(
        mut recommender: Recommender,
        store: Store,
        sink: Arc<dyn OutputSink>,
        snapshot_interval: Duration,
        mailbox_capacity: usize,
    ) -> Self {
        let tree = store_tree(&recommender.pipeline);
        match store.get(&tree, SNAPSHOT_KEY) {
            Ok(Some(bytes)) => {
                if recommender.restore(&bytes) {
                    tracing::info!(
                        pipeline = %recommender.pipeline,
                        items = recommender.similarity().len(),
                        "recommender restored from the store"
                    );
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(pipeline = %recommender.pipeline, "cannot read the stored similarities ({e}); starting empty")
            }
        }
        let stats = Arc::new(RecommenderStats {
            pipeline: recommender.pipeline.clone(),
            ..RecommenderStats::default()
        });
        let actor = RecommenderActor {
            recommender,
            store,
            sink,
            tree,
            snapshot_interval,
            mailbox_capacity,
            buf: Vec::new(),
            stats,
        };
        actor.update_gauges();
        actor
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<RecommenderStats> {
        Arc::clone(&self.stats)
    }

    fn update_gauges(&self) {
        let similarity = self.recommender.similarity();
        self.stats
            .items
            .store(similarity.len() as u64, Ordering::Relaxed);
        self.stats
            .memory_bytes
            .store(similarity.memory_bytes() as u64, Ordering::Relaxed);
    }

    fn count(&self) {
        let counts = self.recommender.counts;
        self.stats.events.store(counts.events, Ordering::Relaxed);
        self.stats
            .requests
            .store(counts.requests, Ordering::Relaxed);
        self.stats.lists.store(counts.lists, Ordering::Relaxed);
    }

    /// Write the similarities if they changed since the last snapshot. Returns whether it
    /// wrote (durable after the next checkpoint's flush).
    fn save(&mut self) -> Result<bool, StoreError> {
        if !self.recommender.is_dirty() {
            return Ok(false);
        }
        self.recommender.encode(&mut self.buf)?;
        self.store.put(&self.tree, SNAPSHOT_KEY, &self.buf)?;
        self.stats.snapshots.fetch_add(1, Ordering::Relaxed);
        self.update_gauges();
        tracing::debug!(pipeline = %self.recommender.pipeline, bytes = self.buf.len(), "similarities saved");
        // A snapshot can be megabytes: do not keep the buffer between snapshots.
        self.buf = Vec::new();
        Ok(true)
    }

    fn publish(sink: &Arc<dyn OutputSink>) -> impl FnMut(&str, &[u8], u8, bool) + '_ {
        move |topic, payload, qos, retain| {
            sink.publish(topic, payload, qos, retain);
        }
    }
}

impl Actor for RecommenderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        ctx.run_interval(self.snapshot_interval, |act, _| {
            if let Err(e) = act.save() {
                tracing::error!(pipeline = %act.recommender.pipeline, "cannot save the similarities: {e}");
            }
        });
    }
}

/// Key → recommender: an event of `user` changed their history.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecommendEvent {
    /// The user (the key).
    pub user: CompactString,
    /// What the event did to the user's history.
    pub change: HistoryChange,
    /// The event's time.
    pub time: i64,
}

impl Handler<RecommendEvent> for RecommenderActor {
    type Result = ();

    fn handle(&mut self, msg: RecommendEvent, _ctx: &mut Self::Context) {
        let sink = Arc::clone(&self.sink);
        self.recommender
            .on_event(&msg.user, &msg.change, msg.time, &mut Self::publish(&sink));
        self.count();
        if self.recommender.counts.events % 1024 == 0 {
            self.update_gauges();
        }
    }
}

/// Key → recommender: `user` asked for their list (a request message); `items` is their
/// history, most recent first.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UserList {
    /// The user.
    pub user: CompactString,
    /// The user's history.
    pub items: Vec<HistoryEntry>,
    /// Arrival time of the request.
    pub time: i64,
}

impl Handler<UserList> for RecommenderActor {
    type Result = ();

    fn handle(&mut self, msg: UserList, _ctx: &mut Self::Context) {
        let sink = Arc::clone(&self.sink);
        let items = msg.items.iter().map(|e| (e.item.as_str(), e.weight));
        self.recommender
            .on_user_request(&msg.user, items, msg.time, &mut Self::publish(&sink));
        self.count();
    }
}

/// Ingest → recommender: the items most similar to `item` (a request message).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SimilarItems {
    /// The item.
    pub item: String,
    /// Arrival time of the request.
    pub time: i64,
}

impl Handler<SimilarItems> for RecommenderActor {
    type Result = ();

    fn handle(&mut self, msg: SimilarItems, _ctx: &mut Self::Context) {
        let sink = Arc::clone(&self.sink);
        self.recommender
            .on_item_request(&msg.item, msg.time, &mut Self::publish(&sink));
        self.count();
    }
}

/// Reload → recommender: serve with the settings of `recommender` from now on (its pipeline
/// was rebuilt). The similarities carry over when the parameters are the same.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReplaceSettings(pub Box<Recommender>);

impl Handler<ReplaceSettings> for RecommenderActor {
    type Result = ();

    fn handle(&mut self, msg: ReplaceSettings, _ctx: &mut Self::Context) {
        let old = std::mem::replace(&mut self.recommender, *msg.0);
        if !self.recommender.adopt(old) {
            tracing::info!(pipeline = %self.recommender.pipeline, "recommend parameters changed: the similarities start afresh");
        }
        self.update_gauges();
    }
}

/// Shutdown or reload → recommender: save the similarities (behind every event already
/// queued) and stop.
#[derive(Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct SaveAndStop;

impl Handler<SaveAndStop> for RecommenderActor {
    type Result = Result<bool, StoreError>;

    fn handle(&mut self, _msg: SaveAndStop, ctx: &mut Self::Context) -> Self::Result {
        let saved = self.save();
        ctx.stop();
        saved
    }
}
