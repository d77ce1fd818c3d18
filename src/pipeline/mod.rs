//! Pipelines built from config: topic matching, decoding, the per-key model step and the
//! output message. Shared by every driver (`run`, `replay`, tests), so they all behave alike.
//!
//! A [`Pipeline`] is compiled once from its [`PipelineConfig`] and then only read. The state
//! of one key is a [`KeyState`]; [`Pipeline::step`] runs test-then-train on it and renders the
//! output message into caller-owned buffers, so the hot path allocates nothing once warm.
//!
//! One concern per file: this file the [`Pipeline`] and its per-key step; `decode` the
//! counted decoding of a message; `state` a key's fresh, stored and restored state;
//! `pipelines` the set of pipelines, reload and dispatch; `inspect` the JSON view of a
//! state; `model`, `operators`, `output` the step's parts; `classifier`, `profile`,
//! `recommender` the supervisors' pure logic; `stats` the counters.

pub mod classifier;
mod decode;
mod inspect;
pub mod model;
pub mod operators;
pub(crate) mod output;
mod pipelines;
pub mod profile;
pub mod recommender;
mod state;
pub mod stats;

pub use crate::codec::request::{parse_request, Request};
use crate::codec::Decoder;
use crate::config::PipelineConfig;
use crate::topic::{TopicFilter, TopicTemplate};
pub use inspect::{describe_state, MergedMetrics};
pub use model::{KeyModel, KeyState, Scratch};
use model::{ModelSpec, Outcome};
use operators::{apply_one, MapBuffers, Operator, Operators, Stopped};
pub(crate) use output::write_json_str;
use output::{push_json_str, JsonObject};
pub use pipelines::{Pipelines, ReloadPlan};
pub use stats::{DropCounters, LogLimiter, PipelineStats};

/// Errors building a pipeline from a (validated) config.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The model's parameters or fields are not usable.
    #[error("pipeline {pipeline:?}: {message}")]
    Model {
        /// Pipeline name.
        pipeline: String,
        /// What is wrong.
        message: String,
    },
}

/// One pipeline, compiled from its config.
#[derive(Debug)]
pub struct Pipeline {
    /// Its name.
    pub name: String,
    /// Its position in the config (stable id within one process).
    pub index: usize,
    filters: Vec<TopicFilter>,
    decoder: Decoder,
    /// `max_skew` in ms: how far an event time may be ahead of the daemon's clock.
    max_skew_ms: i64,
    template: TopicTemplate,
    target: String,
    kind: &'static str,
    /// `from`: the index of the pipeline whose output this one reads.
    pub from: Option<usize>,
    operators: Operators,
    spec: ModelSpec,
    /// QoS of output messages.
    pub output_qos: u8,
    /// `kind = "recommend"`: where the weight is, and the request topics.
    recommend: Option<RecommendPlan>,
    /// The profiles of the classifiers that read this pipeline (`source`), in config order:
    /// each key keeps one accumulator per entry.
    pub profiles: Vec<profile::ProfileSpec>,
    /// Counters for metrics and the stats line.
    pub stats: PipelineStats,
    /// `{"pipeline":<name>,"key":`, escaped once.
    head: Vec<u8>,
    /// `,"field":<target or "cluster">`, escaped once.
    field: Vec<u8>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decoder")
    }
}

impl Pipeline {
    /// Compile a pipeline. The config is expected to be validated already; anything wrong is
    /// still reported as an error rather than a panic.
    ///
    /// # Errors
    /// [`PipelineError`] naming the pipeline and the problem.
    pub fn new(index: usize, cfg: &PipelineConfig) -> Result<Pipeline, PipelineError> {
        let filters = cfg.topics.clone();
        let template = cfg.output.clone();
        let names: Vec<String> = cfg.fields.iter().map(|f| f.name.clone()).collect();
        let operators =
            Operators::new(&cfg.operators, &names).map_err(|message| PipelineError::Model {
                pipeline: cfg.name.clone(),
                message,
            })?;
        let spec = ModelSpec::new(cfg, &operators.output_names).map_err(|message| {
            PipelineError::Model {
                pipeline: cfg.name.clone(),
                message,
            }
        })?;
        let target = cfg.model.output_field().to_string();
        let mut head = b"{\"pipeline\":".to_vec();
        push_json_str(&mut head, &cfg.name);
        head.extend_from_slice(b",\"key\":");
        let mut field = b",\"field\":".to_vec();
        push_json_str(&mut field, &target);
        Ok(Pipeline {
            name: cfg.name.clone(),
            index,
            filters,
            decoder: Decoder::new(cfg),
            max_skew_ms: i64::try_from(cfg.max_skew.as_millis()).unwrap_or(i64::MAX),
            template,
            target,
            kind: cfg.model.kind(),
            from: None,
            operators,
            spec,
            output_qos: cfg.output_qos,
            recommend: RecommendPlan::new(cfg),
            profiles: Vec::new(),
            stats: PipelineStats::default(),
            head,
            field,
        })
    }

    /// Whether a message on `topic` belongs to this pipeline.
    pub fn matches(&self, topic: &str) -> bool {
        self.filters.iter().any(|f| f.matches(topic))
    }

    /// The topic filters to subscribe to.
    pub fn filters(&self) -> impl Iterator<Item = &str> {
        self.filters.iter().map(|f| f.as_str())
    }

    /// The `field` of this pipeline's output messages (and `{field}` of its output topics): the
    /// field the model forecasts, predicts or classifies, or `"cluster"` for a clustering.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The model kind: `forecast`, `regression`, `classification`, `kmeans` or `recommend`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Whether this is a `kind = "recommend"` pipeline (its readings are events, see
    /// [`record_event`](Self::record_event)).
    pub fn is_recommend(&self) -> bool {
        self.recommend.is_some()
    }

    /// Whether `topic` is one of this recommend pipeline's request topics.
    pub fn matches_request(&self, topic: &str) -> bool {
        self.recommend
            .as_ref()
            .is_some_and(|r| r.requests.iter().any(|f| f.matches(topic)))
    }

    /// Record a recommend event (the key is the user, `item` the item, the weight from
    /// `values`, 1 when absent) in the user's history. Returns the change for the pipeline's
    /// recommender, `None` if the event changes nothing it must know (not a recommend state,
    /// or a name or weight the history refuses: the decoder drops those first).
    pub fn record_event(
        &self,
        state: &mut KeyState,
        time: i64,
        values: &[f64],
        item: &str,
    ) -> Option<crate::model::HistoryChange> {
        let plan = self.recommend.as_ref()?;
        let KeyModel::Recommend { history, events } = &mut state.model else {
            return None;
        };
        let weight = plan
            .weight
            .and_then(|i| values.get(i).copied())
            .filter(|w| w.is_finite())
            .unwrap_or(1.0);
        state.last_time = time;
        let change = history.record(item, weight)?;
        *events += 1;
        Some(change)
    }

    /// Processes one decoded reading of `key`: runs it through the operators, then each
    /// reading that comes out of them through the model ([`step`](Self::step)), calling
    /// `emit(topic, payload)` with every output message (rendered in `scratch`, whose
    /// buffers are reused: nothing is allocated once they have grown).
    ///
    /// Without operators this is exactly one step and one output. A filter, a dedupe or a
    /// window can swallow the reading (counted in [`PipelineStats`]); a window emits one
    /// reading of aggregates, at the window's end time, for each window the reading closes.
    pub fn process(
        &self,
        state: &mut KeyState,
        key: &str,
        time: i64,
        values: &[f64],
        scratch: &mut Scratch,
        emit: &mut dyn FnMut(&str, &[u8]),
    ) {
        if self.operators.list.is_empty() {
            self.step(state, key, time, values, scratch);
            emit(&scratch.topic, &scratch.payload);
            return;
        }
        if scratch.maps.len() < self.operators.maps {
            scratch
                .maps
                .resize_with(self.operators.maps, MapBuffers::default);
        }
        // Taken out for the walk (moving a Vec does not allocate) so that the operator
        // states, the map buffers and the rest of the key state can be borrowed separately.
        let mut states = std::mem::take(&mut state.operators);
        let mut maps = std::mem::take(&mut scratch.maps);
        self.flow(
            0,
            &mut states,
            &mut maps,
            state,
            key,
            time,
            values,
            scratch,
            emit,
        );
        state.operators = states;
        scratch.maps = maps;
    }

    /// Operator `index` onwards (past the last: the model step and the output).
    #[allow(clippy::too_many_arguments)]
    fn flow(
        &self,
        index: usize,
        states: &mut [operators::OperatorState],
        maps: &mut [MapBuffers],
        state: &mut KeyState,
        key: &str,
        time: i64,
        values: &[f64],
        scratch: &mut Scratch,
        emit: &mut dyn FnMut(&str, &[u8]),
    ) {
        use std::sync::atomic::Ordering::Relaxed;

        let Some(op) = self.operators.list.get(index) else {
            self.step(state, key, time, values, scratch);
            emit(&scratch.topic, &scratch.payload);
            return;
        };
        let (op_state, states) = match op {
            Operator::Window(_) | Operator::Dedupe(_) => match states.split_first_mut() {
                Some((first, rest)) => (Some(first), rest),
                None => (None, states),
            },
            Operator::Filter(_) | Operator::Map(_) => (None, states),
        };
        let (map_buffers, maps) = match op {
            Operator::Map(_) => match maps.split_first_mut() {
                Some((first, rest)) => (Some(first), rest),
                None => (None, maps),
            },
            _ => (None, maps),
        };
        let stopped = apply_one(op, op_state, map_buffers, key, time, values, |t, v| {
            self.flow(index + 1, states, maps, state, key, t, v, scratch, emit);
        });
        let counter = match stopped {
            None => return,
            Some(Stopped::Filtered) => &self.stats.filtered,
            Some(Stopped::Late) => &self.stats.late,
            Some(Stopped::Duplicate) => &self.stats.duplicates,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// One test-then-train step for `key` on a reading as the model sees it (after the
    /// operators; see [`model`]): predict, score, learn, then render the output message into
    /// `scratch.topic` and `scratch.payload` (cleared and overwritten, capacity reused).
    pub fn step(
        &self,
        state: &mut KeyState,
        key: &str,
        time: i64,
        values: &[f64],
        scratch: &mut Scratch,
    ) {
        use std::sync::atomic::Ordering::Relaxed;

        self.template
            .render(&self.name, key, &self.target, &mut scratch.topic);
        let payload = &mut scratch.payload;
        payload.clear();
        payload.extend_from_slice(&self.head);
        push_json_str(payload, key);
        let mut obj = JsonObject::resume(payload, &self.field);
        obj.i64("time", time);
        let outcome = self.spec.step(
            state,
            time,
            values,
            &mut scratch.buffers,
            &mut obj,
            &self.stats,
        );
        obj.end();
        match outcome {
            Outcome::Scored(error) => self.stats.record_error(error),
            Outcome::Classified { correct, log_loss } => self.stats.record_label(correct, log_loss),
            Outcome::Clustered(distance) => self.stats.record_distance(distance),
            Outcome::Unscored => {}
        }
        self.stats.outputs.fetch_add(1, Relaxed);
    }
}

/// What a `kind = "recommend"` pipeline needs besides its decoder.
#[derive(Debug)]
struct RecommendPlan {
    /// Index of the weight field (`None`: every event weighs 1).
    weight: Option<usize>,
    /// Topic filters of request messages.
    requests: Vec<TopicFilter>,
}

impl RecommendPlan {
    /// The plan of a `kind = "recommend"` pipeline (`None` for other kinds). Its request
    /// filters come parsed from the config, so nothing here can fail.
    fn new(cfg: &PipelineConfig) -> Option<Self> {
        let crate::config::ModelConfig::Recommend(r) = &cfg.model else {
            return None;
        };
        let weight = r
            .weight
            .as_ref()
            .and_then(|w| cfg.fields.iter().position(|f| f.name == *w));
        Some(RecommendPlan {
            weight,
            requests: r.requests.clone(),
        })
    }
}

#[cfg(test)]
mod tests;
