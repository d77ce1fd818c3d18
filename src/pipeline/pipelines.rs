//! All pipelines of a config: numbered slots that a reload keeps, replaces or adds to,
//! the subscriptions they need, and the dispatch of a message to every pipeline it matches.

use std::sync::Arc;

use super::{parse_request, profile, DropCounters, Pipeline, PipelineError, Request};
use crate::codec::{DropReason, ReadingBuf};
use crate::config::{ClassifierConfig, Config, PipelineConfig};
use crate::topic::TopicFilter;

/// All pipelines of a config, plus the counters of readings no pipeline took.
///
/// Pipelines live in numbered slots; a pipeline's index is its slot and never changes while
/// the process runs. A reload ([`Pipelines::reload`]) keeps the slot (and the very same
/// [`Pipeline`], with its counters) of every unchanged pipeline, empties the slots of removed
/// and changed ones, and gives changed and new pipelines fresh slots at the end. Slots are
/// never reused, so a reading routed before a reload can never reach another pipeline.
#[derive(Debug)]
pub struct Pipelines {
    slots: Vec<Option<Arc<Pipeline>>>,
    /// Per slot, the pipelines whose `from` names it, in config order.
    downstream: Vec<Vec<usize>>,
    /// Drops that belong to no pipeline (unknown topic); shared across reloads.
    pub unrouted: Arc<DropCounters>,
}

/// What a reload did to each pipeline, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Unchanged: same slot, same actors and state, counters continue.
    pub kept: Vec<String>,
    /// Changed (their config, or a pipeline they read `from`, changed): rebuilt in a new
    /// slot; their keys are checkpointed and reactivated from the store under the new config.
    pub rebuilt: Vec<String>,
    /// New in the config.
    pub added: Vec<String>,
    /// Gone from the config: checkpointed and stopped.
    pub removed: Vec<String>,
}

impl ReloadPlan {
    /// Whether the reload changes nothing.
    pub fn is_empty(&self) -> bool {
        self.rebuilt.is_empty() && self.added.is_empty() && self.removed.is_empty()
    }
}

impl std::fmt::Display for ReloadPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |names: &[String]| {
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        };
        write!(
            f,
            "kept: {}; rebuilt: {}; added: {}; removed: {}",
            list(&self.kept),
            list(&self.rebuilt),
            list(&self.added),
            list(&self.removed)
        )
    }
}

impl Pipelines {
    /// Compile every pipeline of a config.
    ///
    /// # Errors
    /// The first [`PipelineError`] (config validation normally catches them all first).
    pub fn new(config: &Config) -> Result<Pipelines, PipelineError> {
        let empty = Pipelines {
            slots: Vec::new(),
            downstream: Vec::new(),
            unrouted: Arc::default(),
        };
        Ok(empty.reload(&[], &config.pipelines, &config.classifiers)?.0)
    }

    /// The pipelines of `next`, reusing those of `self` (built from `current`) that did not
    /// change: a pipeline is kept when its config is equal and, if it reads `from` another,
    /// that one is kept too. See [`Pipelines`] for what happens to the slots. `classifiers`
    /// give the profiles new pipelines keep for them (they must be the ones `self` was built
    /// with: classifiers are not reloaded).
    ///
    /// # Errors
    /// The first [`PipelineError`]; `self` is untouched, so the caller can keep running it.
    pub fn reload(
        &self,
        current: &[PipelineConfig],
        next: &[PipelineConfig],
        classifiers: &[ClassifierConfig],
    ) -> Result<(Pipelines, ReloadPlan), PipelineError> {
        // Which pipelines are kept (their config is equal and so is their upstream's).
        fn kept(
            name: &str,
            current: &[PipelineConfig],
            next: &[PipelineConfig],
            depth: usize,
        ) -> bool {
            let (Some(old), Some(new)) = (
                current.iter().find(|p| p.name == name),
                next.iter().find(|p| p.name == name),
            ) else {
                return false;
            };
            // Loops are rejected at load; the depth bound only keeps a bad config finite.
            old == new
                && depth <= next.len()
                && new
                    .from
                    .as_deref()
                    .is_none_or(|up| kept(up, current, next, depth + 1))
        }
        let mut plan = ReloadPlan::default();
        let mut slots: Vec<Option<Arc<Pipeline>>> = vec![None; self.slots.len()];
        // First the slot of every pipeline of `next`: kept ones stay, the others get new ones.
        let mut index_of: Vec<usize> = Vec::with_capacity(next.len());
        for cfg in next {
            let old = self.iter().find(|p| p.name == cfg.name);
            match old {
                Some(p) if kept(&cfg.name, current, next, 0) => {
                    index_of.push(p.index);
                    plan.kept.push(cfg.name.clone());
                }
                _ => {
                    index_of.push(slots.len());
                    slots.push(None);
                    if old.is_some() {
                        plan.rebuilt.push(cfg.name.clone());
                    } else {
                        plan.added.push(cfg.name.clone());
                    }
                }
            }
        }
        plan.removed = self
            .iter()
            .filter(|p| !next.iter().any(|c| c.name == p.name))
            .map(|p| p.name.clone())
            .collect();
        let mut downstream = vec![Vec::new(); slots.len()];
        for (cfg, &index) in next.iter().zip(&index_of) {
            let from = match &cfg.from {
                Some(up) => {
                    let position = next.iter().position(|p| p.name == *up).ok_or_else(|| {
                        PipelineError::Model {
                            pipeline: cfg.name.clone(),
                            message: format!("from = {up:?} is not a pipeline"),
                        }
                    })?;
                    let upstream = index_of[position];
                    downstream[upstream].push(index);
                    Some(upstream)
                }
                None => None,
            };
            slots[index] = Some(match self.slots.get(index).and_then(Option::as_ref) {
                Some(same) if plan.kept.contains(&cfg.name) => Arc::clone(same),
                _ => {
                    let mut p = Pipeline::new(index, cfg)?;
                    p.from = from;
                    for classifier in classifiers.iter().filter(|c| c.source == cfg.name) {
                        let spec =
                            profile::ProfileSpec::new(classifier, cfg).map_err(|message| {
                                PipelineError::Model {
                                    pipeline: cfg.name.clone(),
                                    message: format!("classifier {}: {message}", classifier.name),
                                }
                            })?;
                        p.profiles.push(spec);
                    }
                    Arc::new(p)
                }
            });
        }
        Ok((
            Pipelines {
                slots,
                downstream,
                unrouted: Arc::clone(&self.unrouted),
            },
            plan,
        ))
    }

    /// The pipelines that read the output of pipeline `index` (`from`), in config order.
    pub fn downstream(&self, index: usize) -> &[usize] {
        self.downstream.get(index).map_or(&[], Vec::as_slice)
    }

    /// Decode an output message of pipeline `from` for every pipeline chained to it, calling
    /// `f` with each decoded reading; bad messages are counted like MQTT input, and `clock`
    /// bounds event times as in [`Pipelines::dispatch`]. Returns the readings accepted.
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch_chained(
        &self,
        from: usize,
        topic: &str,
        payload: &[u8],
        now_ms: i64,
        clock: Option<i64>,
        buf: &mut ReadingBuf,
        mut f: impl FnMut(&Pipeline, &ReadingBuf),
    ) -> usize {
        let mut accepted = 0;
        for p in self.downstream(from).iter().filter_map(|&d| self.get(d)) {
            accepted += p.decode_counted(topic, payload, now_ms, clock, buf, &mut f);
        }
        accepted
    }

    /// The pipelines, in slot order (config order until a reload adds or rebuilds one).
    pub fn iter(&self) -> impl Iterator<Item = &Pipeline> + '_ {
        self.slots.iter().flatten().map(|p| &**p)
    }

    /// The pipeline in slot `index` (None if there is none, or it was removed by a reload).
    pub fn get(&self, index: usize) -> Option<&Pipeline> {
        self.slots.get(index)?.as_deref()
    }

    /// A shared handle to the pipeline in slot `index` (what a key actor keeps).
    pub fn get_shared(&self, index: usize) -> Option<Arc<Pipeline>> {
        self.slots.get(index)?.clone()
    }

    /// The pipeline called `name`.
    pub fn by_name(&self, name: &str) -> Option<&Pipeline> {
        self.iter().find(|p| p.name == name)
    }

    /// Number of pipelines.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every `(filter, qos)` to subscribe to, without duplicates (request topics included).
    pub fn subscriptions(&self, qos: u8) -> Vec<(String, u8)> {
        let mut out: Vec<(String, u8)> = Vec::new();
        let requests = self
            .iter()
            .filter_map(|p| p.recommend.as_ref())
            .flat_map(|r| r.requests.iter().map(TopicFilter::as_str));
        for f in self.iter().flat_map(|p| p.filters()).chain(requests) {
            if !out.iter().any(|(g, _)| g == f) {
                out.push((f.to_string(), qos));
            }
        }
        out
    }

    /// Hand a message on a recommend pipeline's request topic to `f`, for every pipeline whose
    /// request filters match (a bad request is counted as `bad_event` and logged). Returns
    /// whether any did: then the message is not a reading.
    pub fn dispatch_request(
        &self,
        topic: &str,
        payload: &[u8],
        mut f: impl FnMut(&Pipeline, Request),
    ) -> bool {
        let mut matched = false;
        for p in self.iter().filter(|p| p.matches_request(topic)) {
            matched = true;
            match parse_request(payload) {
                Ok(request) => f(p, request),
                Err(problem) => p.stats.drops.record(DropReason::BadEvent, |suppressed| {
                    tracing::warn!(pipeline = %p.name, reason = DropReason::BadEvent.as_str(), suppressed, "dropped a request on {topic}: {problem}")
                }),
            }
        }
        matched
    }

    /// Decode one message for every pipeline whose filters match `topic`, calling `f` once per
    /// decoded reading (a payload may hold several: a JSON batch, CSV lines, a SenML pack).
    /// `now_ms` is the time relative SenML times count from (the arrival time in `run`). Bad
    /// input is counted per pipeline and reason, once per reading dropped (or once for a
    /// payload dropped as a whole), and logged (rate-limited); a topic no pipeline takes is
    /// counted as `unknown_topic`.
    ///
    /// `clock` is the daemon's clock (ms): a reading whose event time is more than its
    /// pipeline's `max_skew` ahead of it is dropped and counted as `time_skew`, so it cannot
    /// move its key's watermark there for good. `replay` passes `None`: it has no clock, and
    /// no event-time reference that a gap in the recording could not be mistaken for.
    /// Returns the readings accepted.
    pub fn dispatch(
        &self,
        topic: &str,
        payload: &[u8],
        now_ms: i64,
        clock: Option<i64>,
        buf: &mut ReadingBuf,
        mut f: impl FnMut(&Pipeline, &ReadingBuf),
    ) -> usize {
        let mut matched = false;
        let mut accepted = 0;
        for p in self.iter() {
            if !p.matches(topic) {
                continue;
            }
            matched = true;
            accepted += p.decode_counted(topic, payload, now_ms, clock, buf, &mut f);
        }
        if !matched {
            self.unrouted
                .record(DropReason::UnknownTopic, |suppressed| {
                    tracing::warn!(
                        reason = DropReason::UnknownTopic.as_str(),
                        suppressed,
                        "dropped a message on {topic}: no pipeline's topic filter matches it"
                    )
                });
        }
        accepted
    }
}
