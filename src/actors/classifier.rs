//! `ClassifierSupervisor`: one per `[[classifiers]]` section. Every `interval` it gathers the
//! profiles of the resident keys of its source pipeline (each key starts its next interval),
//! runs one streaming k-means update of its [`Classifier`], publishes the classes that changed
//! and the centres (retained), and writes the model and the changed classes to the store
//! (made durable by the next checkpoint's flush). At start it continues from the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::{OutputSink, ProfileCollector};
use crate::pipeline::classifier::Classifier;
use crate::store::Store;

/// Counters of one classifier, for `/metrics`.
#[derive(Debug, Default)]
pub struct ClassifierStats {
    /// Classifier name.
    pub name: String,
    /// k-means updates (intervals with at least one profile).
    pub updates: AtomicU64,
    /// Keys profiled in the last update.
    pub profiled: AtomicU64,
    /// Class changes published (first classifications included).
    pub changes: AtomicU64,
    /// Live classes after the last update.
    pub classes: AtomicU64,
}

/// The store namespace of a classifier (pipeline names cannot contain `:`).
pub fn store_tree(classifier: &str) -> String {
    format!("classifier:{classifier}")
}

/// Store key of the model in a classifier's namespace.
const MODEL_KEY: &str = "model";
/// Prefix of a key's class in a classifier's namespace.
const CLASS_PREFIX: &str = "class/";

/// The supervising actor of one classifier.
pub struct ClassifierSupervisor {
    classifier: Classifier,
    slot: usize,
    interval: Duration,
    collector: ProfileCollector,
    store: Store,
    sink: Arc<dyn OutputSink>,
    tree: String,
    /// A collection is in flight (a slow one is not overlapped by the next tick).
    busy: bool,
    buf: Vec<u8>,
    stats: Arc<ClassifierStats>,
}

impl ClassifierSupervisor {
    /// A supervisor for `classifier`, which is the classifier in slot `slot` of its source
    /// pipeline; restores its model and classes from `store`.
    pub fn new(
        mut classifier: Classifier,
        slot: usize,
        interval: Duration,
        collector: ProfileCollector,
        store: Store,
        sink: Arc<dyn OutputSink>,
    ) -> Self {
        let tree = store_tree(&classifier.name);
        match (store.get(&tree, MODEL_KEY), store.entries(&tree)) {
            (Ok(model), Ok(entries)) => {
                let classes = entries.iter().filter_map(|(key, bytes)| {
                    key.strip_prefix(CLASS_PREFIX).map(|k| (k, &bytes[..]))
                });
                if classifier.restore(model.as_deref(), classes) {
                    tracing::info!(
                        classifier = %classifier.name,
                        classes = classifier.model().ids().len(),
                        keys = classifier.keys(),
                        "classifier restored from the store"
                    );
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(classifier = %classifier.name, "cannot read the stored classifier ({e}); starting afresh")
            }
        }
        let stats = Arc::new(ClassifierStats {
            name: classifier.name.clone(),
            classes: AtomicU64::new(classifier.model().ids().len() as u64),
            ..ClassifierStats::default()
        });
        ClassifierSupervisor {
            classifier,
            slot,
            interval,
            collector,
            store,
            sink,
            tree,
            busy: false,
            buf: Vec::new(),
            stats,
        }
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<ClassifierStats> {
        Arc::clone(&self.stats)
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let (collector, source, slot) = (
            self.collector.clone(),
            self.classifier.source.clone(),
            self.slot,
        );
        let gather = async move { collector.collect(&source, slot).await };
        ctx.spawn(gather.into_actor(self).map(|mut profiles, act, _| {
            act.busy = false;
            act.apply(&mut profiles);
        }));
    }

    fn apply(&mut self, profiles: &mut Vec<(compact_str::CompactString, Vec<f64>)>) {
        if profiles.is_empty() {
            return;
        }
        let sink = &self.sink;
        let report = self.classifier.update(
            profiles,
            crate::clock::now_ms(),
            &mut |topic, payload, qos, retain| {
                sink.publish(topic, payload, qos, retain);
            },
        );
        self.stats.updates.fetch_add(1, Ordering::Relaxed);
        self.stats
            .profiled
            .store(report.profiled as u64, Ordering::Relaxed);
        self.stats
            .changes
            .fetch_add(report.changed.len() as u64, Ordering::Relaxed);
        self.stats
            .classes
            .store(report.classes as u64, Ordering::Relaxed);
        tracing::debug!(
            classifier = %self.classifier.name,
            profiled = report.profiled,
            changed = report.changed.len(),
            classes = report.classes,
            "classifier updated"
        );
        if let Err(e) = self.persist(&report.changed) {
            tracing::error!(classifier = %self.classifier.name, "cannot write the classifier's state: {e}");
        }
    }

    fn persist(
        &mut self,
        changed: &[(
            compact_str::CompactString,
            crate::pipeline::classifier::KeyClass,
        )],
    ) -> Result<(), crate::store::StoreError> {
        self.classifier.encode_model(&mut self.buf)?;
        self.store.put(&self.tree, MODEL_KEY, &self.buf)?;
        let mut name = String::new();
        for (key, class) in changed {
            Classifier::encode_class(class, &mut self.buf)?;
            name.clear();
            name.push_str(CLASS_PREFIX);
            name.push_str(key);
            self.store.put(&self.tree, &name, &self.buf)?;
        }
        Ok(())
    }
}

impl Actor for ClassifierSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.interval, |act, ctx| act.tick(ctx));
    }
}

/// Daemon → supervisor: stop (shutdown). Its state is already in the store.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopSupervisor;

impl Handler<StopSupervisor> for ClassifierSupervisor {
    type Result = ();

    fn handle(&mut self, _msg: StopSupervisor, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Collect now instead of waiting for the interval (tests, and an operator's future
/// "classify now" command); answers once the update is applied.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ClassifyNow;

impl Handler<ClassifyNow> for ClassifierSupervisor {
    type Result = ResponseActFuture<Self, usize>;

    fn handle(&mut self, _msg: ClassifyNow, _ctx: &mut Self::Context) -> Self::Result {
        let (collector, source, slot) = (
            self.collector.clone(),
            self.classifier.source.clone(),
            self.slot,
        );
        Box::pin(
            async move { collector.collect(&source, slot).await }
                .into_actor(self)
                .map(|mut profiles, act, _| {
                    let n = profiles.len();
                    act.apply(&mut profiles);
                    n
                }),
        )
    }
}
